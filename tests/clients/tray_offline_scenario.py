"""Run under `unshare -rn` (a network namespace with only loopback), inside a private D-Bus
session: the tray app on zero config (no keys, no config file; the local model from
UNDERSTUDY_MODELS_DIR) with its window open. With no request at all, its window must show
the dashboard with the blue "offline, answering from the local model" badge; a screenshot is
saved as target/screenshots/tray-window-offline-at-start.png. Prints the findings as JSON.

argv: MODELS_DIR"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from admin import admin_request, token_file  # noqa: E402
from desktop import Xvfb, share_of_color  # noqa: E402
from tray_scenario import HEADER, ROOT, start_tray  # noqa: E402

LOCAL = (0x1d, 0x4e, 0xd8)  # the "local" badge (ui/style.css --local)


def main(home, shots, models_dir):
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    token = token_file(home)
    out = {}
    with Xvfb() as x:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "OPENAI_", "GEMINI_", "OPENROUTER_"))}
        env.update(DISPLAY=x.display, HOME=home, UNDERSTUDY_ADMIN_TOKEN_FILE=token, UNDERSTUDY_MODELS_DIR=models_dir,
                   WEBKIT_DISABLE_COMPOSITING_MODE="1", NO_AT_BRIDGE="1")
        tray = start_tray(env, "--listen", "127.0.0.1:0", "--show")
        try:
            line = tray.stdout.readline().strip()
            assert line.startswith("understudy listening on "), (line, tray.stderr.read())
            url = line[len("understudy listening on "):]
            path = os.path.join(shots, "tray-window-offline-at-start.png")
            deadline = time.monotonic() + 90
            shot = None
            while time.monotonic() < deadline:
                time.sleep(1)
                shot = x.screenshot(path)
                if share_of_color(shot, HEADER, range(8, 40)) > 0.3 and share_of_color(shot, LOCAL, range(8, 40)) > 0.02:
                    time.sleep(2)  # let the cards fill in, then keep that picture
                    shot = x.screenshot(path)
                    break
            out["header_share"] = share_of_color(shot, HEADER, range(8, 40))
            out["badge_share"] = share_of_color(shot, LOCAL, range(8, 40))
            with urllib.request.urlopen(admin_request(url + "/api/status", token)) as r:
                out["status"] = json.loads(r.read())
        finally:
            tray.terminate()
            try:
                tray.wait(15)
            except Exception:
                tray.kill()
    print(json.dumps(out))


if __name__ == "__main__":
    shots = os.path.join(ROOT, "target", "screenshots")
    os.makedirs(shots, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        main(home, shots, sys.argv[1])
