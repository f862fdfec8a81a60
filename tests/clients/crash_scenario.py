"""Run inside a private D-Bus session (`dbus-run-session`): `understudy serve --notify` with the
local model, whose worker is told (`UNDERSTUDY_TEST_SIGILL=best`, a testing-only switch) to die
of a real SIGILL on its first token whenever it runs this CPU's best CPU kernels, as an AMX
kernel does on a host that cannot run it. Asks once, restarts the gateway in the same HOME and
asks again. Prints what each run answered, its status, the remembered modes and the
notifications, as JSON."""

import asyncio
import json
import os
import sys
import tempfile
import urllib.request

from dbus_next.aio import MessageBus

sys.path.insert(0, os.path.dirname(__file__))
from admin import admin_headers, sign_in, token_file  # noqa: E402
from conftest import _spawn  # noqa: E402
from notify_scenario import Notifications  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def call(url, path, body=None, token=None):
    """A JSON call; with `token` (the admin token's file), an admin call."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    if token:
        headers = admin_headers(token, headers)
    req = urllib.request.Request(url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def dashboard(url, token):
    """The dashboard's local-engine panel in Chromium (signed in): its CPU mode row, and a
    screenshot."""
    from playwright.sync_api import sync_playwright
    from test_dashboard import SHOTS, chromium
    os.makedirs(SHOTS, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        sign_in(page, url, token)
        row = page.locator("#local-cpu")
        row.wait_for(timeout=15000)
        out = {"compatible": row.get_attribute("data-compatible"), "text": row.inner_text(),
               "context": page.locator("#local-context").inner_text()}
        page.screenshot(path=os.path.join(SHOTS, "dashboard-local-compatible-mode.png"), full_page=True)
        browser.close()
        return out


async def run_once(cfg, env, loop, look=False):
    proc, url = _spawn(["serve", "--notify", "--config", cfg, "--listen", "127.0.0.1:0"],
                       "understudy listening on ", env=env)
    try:
        code, answer = await loop.run_in_executor(None, call, url, "/v1/messages", {
            "model": "smol", "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": "Say hello."}]})
        token = env["UNDERSTUDY_ADMIN_TOKEN_FILE"]
        _, status = await loop.run_in_executor(None, call, url, "/api/status", None, token)
        shown = await loop.run_in_executor(None, dashboard, url, token) if look else None
        # Notifications go out from a task of their own: give them a moment.
        await asyncio.sleep(1.5)
        return {"code": code, "answer": answer, "local": status["local"], "dashboard": shown}
    finally:
        proc.terminate()
        proc.wait(15)


async def main(home):
    bus = await MessageBus().connect()
    service = Notifications()
    bus.export("/org/freedesktop/Notifications", service)
    await bus.request_name("org.freedesktop.Notifications")
    cfg = os.path.join(home, "config.toml")
    with open(cfg, "w") as f:
        f.write(f"""
[providers.local]
kind = "local"
model_file = "{MODEL}"
context_size = 1024
threads = 1

[[routes]]
model = "smol"
backends = ["local"]
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env.update(HOME=home, UNDERSTUDY_TEST_SIGILL="best", UNDERSTUDY_ADMIN_TOKEN_FILE=token_file(home))
    loop = asyncio.get_running_loop()
    result = {"first": await run_once(cfg, env, loop, look=True)}
    modes = os.path.join(home, ".local", "share", "understudy", "engine-modes.json")
    result["remembered"] = json.load(open(modes)) if os.path.exists(modes) else None
    result["second"] = await run_once(cfg, env, loop)
    result["notifications"] = [{k: v for k, v in n.items() if k != "at"} for n in service.seen]
    print(json.dumps(result))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as home:
        asyncio.run(main(home))
