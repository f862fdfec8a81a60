"""Run inside a private D-Bus session: the tray app under Xvfb with its dashboard window, a
request through its in-process gateway, a screenshot of the window, and a second launch that
must hand over to the first (single instance). Prints the findings as JSON."""

import json
import os
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from admin import admin_request, token_file  # noqa: E402
from conftest import ROOT, Mock, _spawn  # noqa: E402
from desktop import Xvfb, share_of_color  # noqa: E402

TRAY = os.environ.get("UNDERSTUDY_TRAY_BIN", os.path.join(ROOT, "target", "debug", "understudy-tray"))
HEADER = (0x11, 0x18, 0x27)  # the dashboard's header band (ui/style.css --head)
HEALTHY = (0x1a, 0x7f, 0x37)  # the "healthy" badge in it (--ok), filled in from /api/status


def start_tray(env, *args):
    import subprocess
    proc = subprocess.Popen([TRAY, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc


def main(home, shots):
    out = {}
    mock_proc, mock_url = _spawn(["mock"], "mock cloud listening on ")
    cfg = os.path.join(home, "config.toml")
    with open(cfg, "w") as f:
        f.write(f"""
[providers.anthropic]
kind = "anthropic"
base_url = "{mock_url}"
api_key_env = "UNDERSTUDY_TEST_KEY"
""")
    # The window signs itself in (in-process); the calls below send the token from its file.
    token = token_file(home)
    with Xvfb() as x:
        env = dict(os.environ, DISPLAY=x.display, HOME=home, UNDERSTUDY_TEST_KEY="sk-test",
                   UNDERSTUDY_ADMIN_TOKEN_FILE=token, WEBKIT_DISABLE_COMPOSITING_MODE="1", NO_AT_BRIDGE="1")
        tray = start_tray(env, "--config", cfg, "--listen", "127.0.0.1:0", "--show")
        try:
            line = tray.stdout.readline().strip()
            assert line.startswith("understudy listening on "), (line, tray.stderr.read())
            url = line[len("understudy listening on "):]
            body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 32,
                               "messages": [{"role": "user", "content": "hi"}]}).encode()
            req = urllib.request.Request(url + "/v1/messages", data=body, method="POST",
                                         headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                out["request_status"] = r.status
            # The window loads the dashboard from the gateway and renders it.
            deadline = time.monotonic() + 90
            share = 0.0
            while time.monotonic() < deadline:
                time.sleep(1)
                shot = x.screenshot(os.path.join(shots, "tray-window.png"))
                share = share_of_color(shot, HEADER, range(8, 40))
                if share > 0.3 and share_of_color(shot, HEALTHY, range(8, 40)) > 0.02:
                    time.sleep(2)  # let the feed and cards fill in, then keep that picture
                    shot = x.screenshot(os.path.join(shots, "tray-window.png"))
                    break
            out["header_share"] = share
            out["badge_share"] = share_of_color(shot, HEALTHY, range(8, 40))
            with urllib.request.urlopen(admin_request(url + "/api/status", token)) as r:
                out["status"] = json.loads(r.read())
            # A second launch hands over to the first and exits.
            second = start_tray(env, "--config", cfg, "--listen", "127.0.0.1:0")
            try:
                out["second_exit"] = second.wait(30)
            except Exception:
                second.kill()
                out["second_exit"] = "still running"
            out["second_stdout"] = second.stdout.read()
            out["first_alive"] = tray.poll() is None
        finally:
            tray.terminate()
            try:
                tray.wait(15)
            except Exception:
                tray.kill()
            mock_proc.terminate()
            mock_proc.wait(10)
    print(json.dumps(out))


if __name__ == "__main__":
    shots = os.path.join(ROOT, "target", "screenshots")
    os.makedirs(shots, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        main(home, shots)
