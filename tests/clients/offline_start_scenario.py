"""Run under `unshare -rn` (a network namespace with only loopback): `understudy serve` on zero
config (no keys, no config file; the local model from UNDERSTUDY_MODELS_DIR) starts with no
route to any cloud. Without any client request it must say `offline` and warm the local model;
the dashboard (Chromium, in the same namespace) shows it, a screenshot is saved; the settings
editor shows the zero config as a file that `understudy config check` accepts; a request is
then answered locally at once. Prints the findings as JSON.

argv: BIN MODELS_DIR HOME SHOTS"""

import json
import os
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from admin import admin_request, sign_in, token_file  # noqa: E402
from local_scenario import stop  # noqa: E402


def status(url, token):
    with urllib.request.urlopen(admin_request(url + "/api/status", token), timeout=10) as r:
        return json.loads(r.read())


def main(bin_path, models_dir, home, shots):
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    token = token_file(home)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "UNDERSTUDY_ADMIN_TOKEN_FILE": token,
           "UNDERSTUDY_MODELS_DIR": models_dir, "UNDERSTUDY_WORKER_BIN": bin_path,
           "RUST_LOG": "understudy=info"}
    gw = subprocess.Popen([bin_path, "serve", "--listen", "127.0.0.1:0"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = {}
    try:
        line = gw.stdout.readline().strip()
        prefix = "understudy listening on "
        assert line.startswith(prefix), (line, gw.stderr.read())
        url = line[len(prefix):]
        started = time.monotonic()
        # No request: the start-up check finds no route and no name.
        while time.monotonic() - started < 15:
            s = status(url, token)
            if s["offline"]:
                break
            time.sleep(0.05)
        out["offline_after_s"] = time.monotonic() - started
        out["status"] = s
        # The local model warms without a request, as an open breaker would make it.
        while time.monotonic() - started < 60:
            s = status(url, token)
            if s["local"] and s["local"]["state"] in ("loading", "ready"):
                break
            time.sleep(0.1)
        out["local_state"] = s["local"]["state"] if s["local"] else None
        out["requests_before"] = s["totals"]["requests"]

        # The settings editor: the zero config as a file.
        with urllib.request.urlopen(admin_request(url + "/api/config", token)) as r:
            cfg = json.loads(r.read())
        out["config"] = cfg
        path = os.path.join(home, "shown.toml")
        with open(path, "w") as f:
            f.write(cfg["text"])
        check = subprocess.run([bin_path, "config", "check", "--config", path], env=env,
                               capture_output=True, text=True)
        out["config_check"] = {"code": check.returncode, "stdout": check.stdout, "stderr": check.stderr}
        zero = subprocess.run([bin_path, "config", "check"], env=env, capture_output=True, text=True)
        out["zero_check"] = {"code": zero.returncode, "stdout": zero.stdout, "stderr": zero.stderr}

        # The dashboard, in the same namespace.
        from playwright.sync_api import sync_playwright
        from test_dashboard import chromium
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            sign_in(page, url, token)
            page.wait_for_selector('#overall[data-state="local"]', timeout=15000)
            page.wait_for_selector('[data-provider="anthropic"][data-health="offline"]', timeout=15000)
            out["badge"] = page.locator("#overall").inner_text()
            out["card"] = page.locator('[data-provider="anthropic"]').inner_text()
            out["settings"] = page.locator("#config-text").input_value()
            page.screenshot(path=os.path.join(shots, "dashboard-offline-at-start.png"), full_page=True)
            browser.close()

        # A request now goes straight to the local model.
        body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 8, "temperature": 0,
                           "messages": [{"role": "user", "content": "Say hello."}]}).encode()
        req = urllib.request.Request(url + "/v1/messages", data=body, method="POST",
                                     headers={"content-type": "application/json", "anthropic-version": "2023-06-01"})
        t = time.monotonic()
        with urllib.request.urlopen(req, timeout=300) as r:
            out["answer"] = {"status": r.status, "served_by": r.headers.get("x-understudy-served-by"),
                             "failed_over": r.headers.get("x-understudy-failed-over"),
                             "body": json.loads(r.read()), "s": time.monotonic() - t}
    finally:
        out["log"] = stop(gw)
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:5])
