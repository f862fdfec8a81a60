"""What the dashboard says before any request, in a real browser (Chromium, Playwright): each
cloud provider's token-free check shows on its card and in the badge. A provider whose model
list has not answered yet is "not checked yet", one that answered is "reachable, no requests
yet" (never "healthy"), one that refused the configured key says so and what to fix. A
request then makes it "healthy". Screenshots go to target/screenshots/."""

import os
import socket
import threading

from playwright.sync_api import expect, sync_playwright

from admin import sign_in, token_file
from conftest import Mock, _spawn, anthropic_events, ask_stream, sse_reply
from test_dashboard import SHOTS, chromium


class Silent:
    """A server that accepts connections and never answers: a check of it waits."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


def start_gateway(tmp_path, name, providers, routes):
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(providers + routes)
    token = token_file(tmp_path / name)
    os.makedirs(tmp_path / name, exist_ok=True)
    env = dict(os.environ, UNDERSTUDY_GOOD_KEY="sk-ant-good-key", UNDERSTUDY_REVOKED_KEY="sk-ant-revoked-key",
               HOME=str(tmp_path / name), UNDERSTUDY_ADMIN_TOKEN_FILE=token)
    proc, url = _spawn(["serve", "--config", str(cfg), "--listen", "127.0.0.1:0"], "understudy listening on ", env=env)
    return proc, url, token


def test_the_dashboard_shows_what_the_checks_found_before_any_request(tmp_path):
    procs = []
    silent = Silent()
    try:
        good_proc, good_url = _spawn(["mock"], "mock cloud listening on ")
        bad_proc, bad_url = _spawn(["mock"], "mock cloud listening on ")
        procs += [good_proc, bad_proc]
        good, bad = Mock(good_url), Mock(bad_url)
        bad.reject_keys("sk-ant-revoked-key")
        providers = f"""
[providers.good]
kind = "anthropic"
base_url = "{good.url}"
api_key_env = "UNDERSTUDY_GOOD_KEY"

[providers.revoked]
kind = "anthropic"
base_url = "{bad.url}"
api_key_env = "UNDERSTUDY_REVOKED_KEY"

[providers.silent]
kind = "anthropic"
base_url = "{silent.url}"
api_key_env = "UNDERSTUDY_GOOD_KEY"
timeouts = {{ first_byte = "60s" }}
"""
        routes = """
[[routes]]
model = "claude-*"
backends = ["good"]
"""
        proc, url, token = start_gateway(tmp_path, "three", providers, routes)
        procs.append(proc)
        # A gateway whose one provider has not answered its check yet (it waits up to 10 s).
        lone, lone_url, lone_token = start_gateway(tmp_path, "lone", f"""
[providers.silent]
kind = "anthropic"
base_url = "{silent.url}"
api_key_env = "UNDERSTUDY_GOOD_KEY"
timeouts = {{ first_byte = "60s" }}
""", "")
        procs.append(lone)
        os.makedirs(SHOTS, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
            errors = []

            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("pageerror", lambda e: errors.append(str(e)))
            sign_in(page, lone_url, lone_token)
            expect(page.locator("#overall")).to_have_attribute("data-state", "unknown")
            expect(page.locator("#overall")).to_have_text("silent not checked yet")
            card = page.locator('[data-provider="silent"]')
            expect(card).to_have_attribute("data-health", "unknown")
            expect(card.locator(".state")).to_have_text("not checked yet")
            page.screenshot(path=os.path.join(SHOTS, "dashboard-not-checked-yet.png"), full_page=True)

            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("pageerror", lambda e: errors.append(str(e)))
            sign_in(page, url, token)
            good_card = page.locator('[data-provider="good"]')
            expect(good_card).to_have_attribute("data-health", "reachable")
            expect(good_card.locator(".state")).to_have_text("reachable, no requests yet")
            expect(good_card.locator(".check")).to_contain_text("GET /v1/models answered 200")
            bad_card = page.locator('[data-provider="revoked"]')
            expect(bad_card).to_have_attribute("data-health", "key_rejected")
            expect(bad_card.locator(".state")).to_have_text("key rejected")
            expect(bad_card.locator(".check")).to_contain_text("the key from environment variable UNDERSTUDY_REVOKED_KEY was rejected (HTTP 401")
            expect(bad_card.locator(".check")).to_contain_text("set a valid key there")
            expect(page.locator('[data-provider="silent"]')).to_have_attribute("data-health", "unknown")
            # The badge names the worst of it: the rejected key.
            expect(page.locator("#overall")).to_have_attribute("data-state", "degraded")
            expect(page.locator("#overall")).to_have_text("revoked: key rejected")
            assert "sk-ant-revoked-key" not in page.content()
            page.screenshot(path=os.path.join(SHOTS, "dashboard-checks.png"), full_page=True)

            # A real request: the provider that served it is healthy now.
            good.push(sse_reply(anthropic_events()))
            status, _, _ = ask_stream(url)
            assert status == 200
            expect(good_card).to_have_attribute("data-health", "healthy")
            expect(good_card.locator(".state")).to_have_text("healthy")
            # The silent one's check gives up after 10 s: unreachable, with why.
            silent_card = page.locator('[data-provider="silent"]')
            expect(silent_card).to_have_attribute("data-health", "unreachable", timeout=20000)
            expect(silent_card.locator(".check")).to_contain_text("no answer within")
            assert errors == [], errors
            browser.close()
        # Nothing but model lists was asked of the provider whose key was refused.
        assert set(bad.hits()) == {"GET /v1/models"}, bad.hits()
    finally:
        for p in procs:
            p.terminate()
            p.wait(15)
        silent.close()
