"""Run inside a private D-Bus session: the tray app from an unpacked .deb (a scratch root) under
Xvfb, with zero config and the default model in a scratch HOME. Checks that it serves, that
its window shows the dashboard, and that the local model answers through the packaged
`understudy` worker. Its admin API is called with the token the app made at its default place
(the scratch HOME's config dir). Prints the findings as JSON."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, "..", "clients"))
from admin import admin_headers, default_token_file  # noqa: E402
from desktop import Xvfb, share_of_color  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def call(url, method="GET", body=None, token=None):
    """A JSON call; with `token` (the admin token's file), an admin call."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    if token:
        headers = admin_headers(token, headers)
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.status, json.loads(r.read())


def main(scratch_root, home):
    out = {}
    models = os.path.join(home, ".local", "share", "understudy", "models")
    os.makedirs(models)
    shutil.copy(MODEL, models)
    bindir = os.path.join(scratch_root, "usr", "bin")
    token = default_token_file(home)
    with Xvfb() as x:
        env = {"PATH": bindir + ":" + os.environ["PATH"], "HOME": home, "DISPLAY": x.display,
               "DBUS_SESSION_BUS_ADDRESS": os.environ["DBUS_SESSION_BUS_ADDRESS"],
               "WEBKIT_DISABLE_COMPOSITING_MODE": "1", "NO_AT_BRIDGE": "1"}
        # Started the way the desktop entry starts it: by name, from the PATH.
        tray = subprocess.Popen(["understudy-tray", "--listen", "127.0.0.1:0", "--show"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = tray.stdout.readline().strip()
            assert line.startswith("understudy listening on "), (line, tray.stderr.read())
            url = line[len("understudy listening on "):]
            _, status = call(url + "/api/status", token=token)
            out["providers"] = [(p["name"], p["kind"]) for p in status["providers"]]
            # Every cloud is off (no keys): local-only, answered by the packaged worker.
            call(url + "/api/mode", "PUT", {"mode": "local-only"}, token)
            code, answer = call(url + "/v1/messages", "POST", {
                "model": "claude-sonnet-4-5", "max_tokens": 16,
                "messages": [{"role": "user", "content": "Say hello."}]})
            out["local_status"] = code
            out["local_finish"] = answer["stop_reason"]
            _, status = call(url + "/api/status", token=token)
            out["local_state"] = status["local"]["state"] if status.get("local") else None
            out["local_cpu"] = status["local"].get("cpu") if status.get("local") else None
            out["local_cpu_backend"] = status["local"].get("cpu_backend") if status.get("local") else None
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                time.sleep(1)
                shot = x.screenshot(os.path.join(ROOT, "target", "screenshots", "deb-tray-window.png"))
                out["header_share"] = share_of_color(shot, (0x11, 0x18, 0x27), range(8, 40))
                if out["header_share"] > 0.3:
                    break
        finally:
            tray.terminate()
            try:
                tray.wait(15)
            except subprocess.TimeoutExpired:
                tray.kill()
    print(json.dumps(out))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as home:
        main(sys.argv[1], home)
