"""The dashboard in a real browser: Chromium from Debian's packages, driven by Playwright, loads
/ui from a headless gateway wired to the mock cloud. A failover, the breaker opening, the
recovery and the routing mode must show on the open page live (no reload). The page is opened
signed in, through a one-time link, as `understudy dashboard` opens it; opened without one it
says so and the admin API refuses it. Screenshots of each state are saved in
target/screenshots/."""

import json
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect, sync_playwright

from admin import admin_request, sign_in, sign_in_url, token_file
from conftest import OVERLOADED, ROOT, Mock, _spawn, anthropic_events, ask_stream, chain_config, sse_reply

SHOTS = os.path.join(ROOT, "target", "screenshots")


def chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("Chromium is not installed: scripts/test installs Debian's chromium package")


def _signed_in(p, url, token, height=1000):
    """Chromium with the dashboard open and signed in, and the page errors it collects."""
    browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
    page = browser.new_page(viewport={"width": 1280, "height": height})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, url, token)
    return browser, page, errors


@pytest.fixture()
def chain(tmp_path):
    """A gateway whose `claude-chain` route has a primary and a secondary mock cloud, and its
    admin token's file."""
    yield from _chain(tmp_path, 'open_base = "2s"\nprobe_interval = "500ms"')


@pytest.fixture()
def slow_chain(tmp_path):
    """The same, with breakers that stay open for minutes (nothing probes them shut), and the
    config file's path."""
    yield from _chain(tmp_path, 'open_base = "5m"\nprobe_interval = "5m"\ncheck_interval = "0s"', with_path=True)


@pytest.fixture()
def outage_chain(tmp_path):
    """The same, with breakers that reopen for at most 4 s, so a recovery is seen soon."""
    yield from _chain(tmp_path, 'open_base = "2s"\nopen_max = "4s"\nprobe_interval = "500ms"')


@pytest.fixture()
def paged_chain(tmp_path):
    """The same, with the primary's status page (statuspage.io's shape) served by its mock."""
    yield from _chain(tmp_path, 'open_base = "2s"', primary_extra=True)


def _chain(tmp_path, breaker, with_path=False, primary_extra=False):
    procs = []
    mocks = []
    for _ in range(2):
        proc, url = _spawn(["mock"], "mock cloud listening on ")
        procs.append(proc)
        mocks.append(Mock(url))
    primary, secondary = mocks
    cfg = tmp_path / "config.toml"
    extra = f'status_page = "{primary.url}/api/v2/summary.json"\nstatus_poll = "300ms"\nstatus_components = ["Claude API"]' if primary_extra else ""
    cfg.write_text(chain_config(primary, secondary, primary_extra=extra, head=f"""
[breaker]
consecutive_failures = 3
{breaker}

[journal]
path = "{tmp_path / 'journal.sqlite3'}"
"""))
    token = token_file(tmp_path)
    env = dict(os.environ, UNDERSTUDY_TEST_KEY="sk-test-configured-key", HOME=str(tmp_path),
               UNDERSTUDY_ADMIN_TOKEN_FILE=token)
    proc, url = _spawn(["serve", "--config", str(cfg), "--listen", "127.0.0.1:0"], "understudy listening on ", env=env)
    procs.append(proc)
    yield (url, primary, secondary, token, cfg) if with_path else (url, primary, secondary, token)
    for p in procs:
        p.terminate()
        p.wait(15)


def test_the_dashboard_shows_a_failover_and_the_recovery_live(chain):
    url, primary, secondary, token = chain
    os.makedirs(SHOTS, exist_ok=True)
    with sync_playwright() as p:
        browser, page, errors = _signed_in(p, url, token)
        expect(page.locator("#live")).to_have_class("live on")
        expect(page.locator("#overall")).to_have_attribute("data-state", "healthy")
        expect(page.locator('[data-provider="primary"]')).to_be_visible()

        # A healthy request: served by the primary.
        primary.push(sse_reply(anthropic_events()))
        status, failed_over, _ = ask_stream(url)
        assert status == 200 and failed_over is None
        expect(page.locator('#feed tbody tr[data-served-by="primary/claude-sonnet-4-5"]')).to_have_count(1)
        page.screenshot(path=os.path.join(SHOTS, "dashboard-healthy.png"), full_page=True)

        # The primary is overloaded: every request fails over, live on the page.
        primary.push(*[OVERLOADED] * 3)
        for _ in range(3):
            secondary.push(sse_reply(anthropic_events()))
            status, failed_over, text = ask_stream(url)
            assert status == 200 and "message_stop" in text
            assert failed_over == "primary/claude-sonnet-4-5=http_529"
        rows = page.locator('#feed tbody tr[data-served-by="secondary/claude-sonnet-4-5"]')
        expect(rows).to_have_count(3)
        expect(rows.first.locator(".tag.failover")).to_have_text("failed over")
        expect(rows.first).to_contain_text("primary/claude-sonnet-4-5 (overloaded, HTTP 529)")
        # Three consecutive failures open the primary's breaker.
        expect(page.locator('[data-provider="primary"]')).to_have_attribute("data-health", "failing")
        expect(page.locator('[data-provider="primary"] [data-breaker]')).to_have_text("open")
        expect(page.locator("#overall")).to_have_attribute("data-state", "degraded")
        expect(page.locator("#total-failovers b")).to_have_text("3")
        expect(page.locator('[data-provider="primary"]')).to_contain_text("http_529 ×3")
        page.screenshot(path=os.path.join(SHOTS, "dashboard-failover.png"), full_page=True)

        # While it is open the primary is skipped; its probe (the model list, answered by the
        # healthy mock) lets a trial through, and the trial's success closes it.
        expect(page.locator('[data-provider="primary"] [data-breaker]')).to_have_text("half-open", timeout=15000)
        primary.push(sse_reply(anthropic_events()))
        status, failed_over, _ = ask_stream(url)
        assert status == 200 and failed_over is None
        expect(page.locator('[data-provider="primary"] [data-breaker]')).to_have_text("closed")
        expect(page.locator("#overall")).to_have_attribute("data-state", "healthy")
        page.screenshot(path=os.path.join(SHOTS, "dashboard-recovered.png"), full_page=True)

        # The primary breaks mid-answer, and overloads when asked to go on itself: the
        # secondary finishes it, and the feed says who wrote which part and how.
        primary.push(sse_reply(anthropic_events()[:4], end="reset"), OVERLOADED)
        status, _, text = ask_stream(url)
        assert status == 200 and "message_stop" in text
        row = page.locator("#feed tbody tr.continued").first
        expect(row.locator(".tag.continued")).to_have_text("continued")
        expect(row).to_contain_text("secondary/claude-sonnet-4-5 (continued from where it stopped)")
        expect(row).to_contain_text("primary/claude-sonnet-4-5 (overloaded, HTTP 529)")
        page.screenshot(path=os.path.join(SHOTS, "dashboard-continued.png"), full_page=True)

        # The routing mode, switched from the page, is what the gateway does.
        page.click('[data-mode="cloud-only"]')
        expect(page.locator('[data-mode="cloud-only"]')).to_have_attribute("aria-pressed", "true")
        with urllib.request.urlopen(admin_request(url + "/api/mode", token)) as r:
            assert json.loads(r.read())["mode"] == "cloud-only"
        page.click("#pause")
        expect(page.locator("#overall")).to_have_attribute("data-state", "paused")
        page.screenshot(path=os.path.join(SHOTS, "dashboard-paused.png"), full_page=True)
        assert errors == [], errors
        browser.close()


def test_settings_are_validated_and_saved_with_the_previous_version_kept(chain):
    url, _, _, token = chain
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        sign_in(page, url, token)
        area = page.locator("#config-text")
        expect(area).not_to_have_value("")
        original = area.input_value()
        area.fill(original.replace('consecutive_failures = 3', 'consecutive_failures = 0'))
        page.click("#config-save")
        expect(page.locator("#config-issues li")).to_contain_text("breaker.consecutive_failures")
        with urllib.request.urlopen(admin_request(url + "/api/config", token)) as r:
            assert json.loads(r.read())["text"] == original, "an invalid config is not saved"
        area.fill(original.replace('consecutive_failures = 3', 'consecutive_failures = 5'))
        page.click("#config-save")
        expect(page.locator("#config-result")).to_contain_text("Saved")
        with urllib.request.urlopen(admin_request(url + "/api/config", token)) as r:
            saved = json.loads(r.read())
        assert "consecutive_failures = 5" in saved["text"]
        with open(saved["path"] + ".bak") as f:
            assert f.read() == original
        page.screenshot(path=os.path.join(SHOTS, "dashboard-settings.png"), full_page=True)
        browser.close()


def test_the_dashboard_needs_a_sign_in_and_a_link_works_once(chain):
    url, _, _, token = chain
    os.makedirs(SHOTS, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        # Opened without its one-time link (each page below is a context of its own, so no
        # cookie): the page says so, and the admin API refuses it.
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url + "/ui")
        expect(page.locator("#signin")).to_be_visible()
        expect(page.locator("#overall")).to_have_text("not signed in")
        refused = page.evaluate("() => fetch('/api/status').then(async r => [r.status, await r.json()])")
        assert refused[0] == 401, refused
        assert refused[1]["error"]["type"] == "unauthorized", refused
        page.screenshot(path=os.path.join(SHOTS, "dashboard-signed-out.png"), full_page=True)

        # The link signs a browser in and lands it on the page, which then reads the API.
        link = sign_in_url(url, token)
        signed = browser.new_page(viewport={"width": 1280, "height": 1000})
        signed.goto(link)
        assert signed.url == url + "/ui/", signed.url
        expect(signed.locator("#overall")).to_have_attribute("data-state", "healthy")
        expect(signed.locator("#signin")).to_be_hidden()
        assert signed.evaluate("() => fetch('/api/status').then(r => r.status)") == 200

        # A link works once: spent, it is refused.
        again = browser.new_page()
        answer = again.goto(link)
        assert answer.status == 403, answer.status
        expect(again.locator("body")).to_contain_text("already used or has expired")
        assert again.evaluate("() => fetch('/api/status').then(r => r.status)") == 401
        browser.close()


def _status(url, token):
    with urllib.request.urlopen(admin_request(url + "/api/status", token)) as r:
        return json.loads(r.read())


def _breaker(status, backend):
    for p in status["providers"]:
        for b in p["backends"]:
            if b["backend"] == backend:
                return b["breaker"]
    return None


def _last_model(mock):
    posts = [r for r in mock.requests() if r["method"] == "POST"]
    return json.loads(posts[-1]["body"])["model"], len(posts)


def test_a_route_changed_in_the_settings_applies_live_while_a_stream_is_in_flight(slow_chain):
    url, primary, secondary, token, cfg = slow_chain
    os.makedirs(SHOTS, exist_ok=True)
    sonnet = 'backends = ["primary/claude-sonnet-4-5", "secondary/claude-sonnet-4-5"]'
    opus = 'backends = ["primary/claude-opus-4-5", "secondary/claude-sonnet-4-5"]'
    with sync_playwright() as p:
        browser, page, errors = _signed_in(p, url, token, height=1100)
        expect(page.locator("#live")).to_have_class("live on")

        # The secondary's breaker opens (three 529s asked of it directly); it stays open.
        secondary.push(*[OVERLOADED] * 3)
        for _ in range(3):
            with pytest.raises(urllib.error.HTTPError):
                ask_stream(url, model="secondary/claude-sonnet-4-5")
        expect(page.locator('[data-provider="secondary"] [data-breaker]')).to_have_text("open")

        # A long stream in flight on the old chain: the primary holds its last events on a gate.
        chunks = [{"text": c} for c in anthropic_events()]
        chunks[3]["gate"] = "rest"
        primary.push({"status": 200, "headers": [["content-type", "text/event-stream"]],
                      "body": {"kind": "chunks", "chunks": chunks, "end": "clean"}})
        done = {}
        t = threading.Thread(target=lambda: done.update(result=ask_stream(url)))
        t.start()
        for _ in range(100):
            if any(r["method"] == "POST" for r in primary.requests()):
                break
            time.sleep(0.05)
        assert _last_model(primary) == ("claude-sonnet-4-5", 1)

        # The chain is changed in the settings editor and saved: applied at once.
        area = page.locator("#config-text")
        expect(area).not_to_have_value("")
        area.fill(area.input_value().replace(sonnet, opus))
        page.click("#config-save")
        expect(page.locator("#config-result")).to_contain_text("applied (routes changed)")
        expect(page.locator("#config-state")).to_contain_text("Applied")
        # The next request takes the new chain...
        status, failed_over, text = ask_stream(url)
        assert status == 200 and failed_over is None and "message_stop" in text
        assert _last_model(primary) == ("claude-opus-4-5", 2)
        # ...the stream in flight ends whole on the old one...
        primary.open_gate("rest")
        t.join(30)
        status, _, text = done["result"]
        assert status == 200 and "message_stop" in text
        # ...and the unchanged backend's breaker is still open.
        assert _breaker(_status(url, token), "secondary/claude-sonnet-4-5") == "open"
        expect(page.locator('[data-provider="secondary"] [data-breaker]')).to_have_text("open")
        page.screenshot(path=os.path.join(SHOTS, "dashboard-settings-applied.png"), full_page=True)

        # An edit of the file on disk does the same.
        text = cfg.read_text()
        assert opus in text
        before = _status(url, token)["config"]["at_ms"]
        cfg.write_text(text.replace(opus, sonnet))
        for _ in range(100):
            if _status(url, token)["config"]["at_ms"] != before:
                break
            time.sleep(0.1)
        assert _status(url, token)["config"]["message"] == "applied (routes changed)"
        ask_stream(url)
        assert _last_model(primary)[0] == "claude-sonnet-4-5"
        assert _breaker(_status(url, token), "secondary/claude-sonnet-4-5") == "open"
        # The editor shows what is applied now (it held no unsaved change).
        expect(page.locator("#config-text")).to_have_value(cfg.read_text())

        # An invalid edit keeps serving, and the page says why with the TOML path.
        cfg.write_text(cfg.read_text().replace(f'base_url = "{primary.url}"', 'base_url = "not a url"'))
        state = page.locator('#config-state[data-ok="false"]')
        expect(state).to_contain_text("providers.primary.base_url", timeout=10000)
        expect(state).to_contain_text("Not applied")
        status, _, text = ask_stream(url)
        assert status == 200 and "message_stop" in text
        assert _last_model(primary)[0] == "claude-sonnet-4-5"
        page.screenshot(path=os.path.join(SHOTS, "dashboard-settings-invalid.png"), full_page=True)
        assert errors == [], errors
        browser.close()


def test_an_incident_on_the_providers_status_page_and_its_plan_show_beside_its_measured_health(paged_chain):
    url, primary, secondary, token = paged_chain
    os.makedirs(SHOTS, exist_ok=True)
    with sync_playwright() as p:
        browser, page, errors = _signed_in(p, url, token)
        card = page.locator('[data-provider="primary"]')
        expect(card.locator(".status-page")).to_have_text("status page: All Systems Operational", timeout=10000)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        primary.status_page(
            {"id": "inc-api", "name": "Elevated errors on Claude Opus", "impact": "major", "created_at": created,
             "components": ["Claude API (api.anthropic.com)"]},
            {"id": "inc-web", "name": "Login issues on claude.ai", "impact": "minor", "created_at": created,
             "components": ["claude.ai"]},
        )
        api = card.locator('[data-incident="inc-api"]')
        expect(api).to_contain_text("status page: Elevated errors on Claude Opus (major, investigating)", timeout=10000)
        expect(api).to_have_attribute("data-relevant", "true")
        expect(card.locator('[data-incident="inc-web"]')).to_have_attribute("data-relevant", "false")
        # Understudy's own measured health is shown beside it, unchanged: nothing failed here.
        expect(card).to_have_attribute("data-health", "reachable")
        status = _status(url, token)
        page_status = next(p for p in status["providers"] if p["name"] == "primary")["status_page"]
        assert [i["id"] for i in page_status["incidents"]] == ["inc-api", "inc-web"]
        page.screenshot(path=os.path.join(SHOTS, "dashboard-incident.png"), full_page=True)
        # The plan's windows, from the rate-limit headers of its answers, on the same card.
        primary.plan(0.3, 3_600_000)
        for _ in range(3):
            primary.push(sse_reply(anthropic_events()))
            assert ask_stream(url)[0] == 200
        five = card.locator('.quota [data-window="5h"]')
        expect(five).to_contain_text("5-hour", timeout=10000)
        expect(five).to_contain_text("90 %")
        expect(five).to_contain_text("resets in")
        expect(card.locator('.quota [data-window="7d"]')).to_contain_text("9 %")
        page.screenshot(path=os.path.join(SHOTS, "dashboard-quota.png"), full_page=True)

        # Resolved: gone from the page, gone from the card.
        primary.status_page()
        expect(card.locator("[data-incident]")).to_have_count(0, timeout=10000)
        expect(card.locator(".status-page")).to_have_text("status page: All Systems Operational")
        assert errors == [], errors
        browser.close()


def _served_by(url):
    body = json.dumps({"model": "claude-chain", "max_tokens": 64, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = urllib.request.Request(url + "/v1/messages", data=body, method="POST",
                                 headers={"content-type": "application/json", "anthropic-version": "2023-06-01"})
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read().decode()
        assert r.status == 200 and "message_stop" in text
        return r.headers.get("x-understudy-served-by")


def test_the_incident_timeline_tells_a_scripted_outage_with_the_right_counts(outage_chain):
    """The primary overloaded for a minute while a client asks every second, then healthy
    again: the dashboard's incident view says when, why, who answered instead and that nothing
    was lost (screenshot: target/screenshots/dashboard-incident-timeline.png)."""
    url, primary, secondary, token = outage_chain
    os.makedirs(SHOTS, exist_ok=True)
    with sync_playwright() as p:
        browser, page, errors = _signed_in(p, url, token)
        assert _served_by(url) == "primary"
        primary.fail(1.0, 529)
        answered_instead = 0
        end = time.monotonic() + 60
        while time.monotonic() < end:
            assert _served_by(url) == "secondary"
            answered_instead += 1
            time.sleep(1)
        primary.fail(0)
        # Its probe puts it on trial; the first request it answers ends the outage.
        for _ in range(60):
            who = _served_by(url)
            if who == "primary":
                break
            answered_instead += 1
            time.sleep(0.5)
        assert who == "primary"
        outage = page.locator('.outage[data-provider="primary"][data-over="true"] .summary')
        expect(outage).to_have_count(1, timeout=10000)
        text = outage.inner_text()
        m = re.fullmatch(r"primary failed (\d\d):(\d\d)–(\d\d):(\d\d) \(overloaded, HTTP 529\); "
                         r"(\d+) requests answered by secondary, 0 continued mid-answer, 0 lost", text)
        assert m, text
        assert int(m.group(5)) == answered_instead, (text, answered_instead)
        start, stop = int(m.group(1)) * 60 + int(m.group(2)), int(m.group(3)) * 60 + int(m.group(4))
        assert (stop - start) % 1440 in (1, 2), text
        with urllib.request.urlopen(admin_request(url + "/api/timeline?tz_offset_min=0", token)) as r:
            t = json.loads(r.read())
        o = next(o for o in t["outages"] if o["provider"] == "primary")
        assert o["served_by"] == {"secondary/claude-sonnet-4-5": answered_instead} and o["lost"] == 0, o
        assert 60_000 <= o["ended_ms"] - o["started_ms"] <= 100_000, o
        page.locator("#outages").scroll_into_view_if_needed()
        page.screenshot(path=os.path.join(SHOTS, "dashboard-incident-timeline.png"), full_page=True)
        assert errors == [], errors
        browser.close()
