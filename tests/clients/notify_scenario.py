"""Run inside a private D-Bus session (`dbus-run-session`): owns org.freedesktop.Notifications
on that bus and records every Notify call, while a gateway started with `serve --notify` goes
through a failover, a recovery and a burst of 50 failures. Prints what was shown, as JSON."""

import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request

from dbus_next.aio import MessageBus
from dbus_next.service import ServiceInterface, method

sys.path.insert(0, os.path.dirname(__file__))
from admin import admin_request, token_file  # noqa: E402
from conftest import OVERLOADED, Mock, _spawn, anthropic_events, ask_stream, chain_config, sse_reply  # noqa: E402



class Notifications(ServiceInterface):
    def __init__(self):
        super().__init__("org.freedesktop.Notifications")
        self.seen = []

    @method()
    def Notify(self, app_name: "s", replaces_id: "u", app_icon: "s", summary: "s", body: "s",  # noqa: F821
               actions: "as", hints: "a{sv}", expire_timeout: "i") -> "u":  # noqa: F821
        self.seen.append({"at": time.monotonic(), "app": app_name, "summary": summary, "body": body})
        return len(self.seen)

    @method()
    def GetCapabilities(self) -> "as":  # noqa: F821
        return ["body"]

    @method()
    def GetServerInformation(self) -> "ssss":  # noqa: F821
        return ["understudy-tests", "understudy", "1.0", "1.2"]

    @method()
    def CloseNotification(self, id: "u"):  # noqa: F821
        pass


def ask(url, model):
    return ask_stream(url, model)[0]


def breaker(url, token, backend):
    with urllib.request.urlopen(admin_request(url + "/api/status", token)) as r:
        status = json.loads(r.read())
    for p in status["providers"]:
        for b in p["backends"]:
            if b["backend"] == backend:
                return b["breaker"]
    return None


async def wait_for(predicate, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return False


async def main(home):
    bus = await MessageBus().connect()
    service = Notifications()
    bus.export("/org/freedesktop/Notifications", service)
    await bus.request_name("org.freedesktop.Notifications")

    procs = []
    mocks = []
    for _ in range(3):
        proc, url = _spawn(["mock"], "mock cloud listening on ")
        procs.append(proc)
        mocks.append(Mock(url))
    primary, secondary, flaky = mocks
    cfg = os.path.join(home, "config.toml")
    with open(cfg, "w") as f:
        f.write(chain_config(primary, secondary, head="""
[breaker]
consecutive_failures = 3
open_base = "1s"
probe_interval = "300ms"
""", tail=f"""
[providers.flaky]
kind = "anthropic"
base_url = "{flaky.url}"
api_key_env = "UNDERSTUDY_TEST_KEY"

[[routes]]
model = "claude-burst"
backends = ["flaky/claude-sonnet-4-5", "secondary/claude-sonnet-4-5"]
"""))
    token = token_file(home)
    env = dict(os.environ, UNDERSTUDY_TEST_KEY="sk-test-configured-key", HOME=home, UNDERSTUDY_ADMIN_TOKEN_FILE=token)
    proc, url = _spawn(["serve", "--notify", "--config", cfg, "--listen", "127.0.0.1:0"], "understudy listening on ", env=env)
    procs.append(proc)
    loop = asyncio.get_running_loop()
    result = {"phases": {}}
    try:
        # Failover: the primary answers 529 three times; the secondary serves; the breaker opens.
        primary.push(*[OVERLOADED] * 3)
        for _ in range(3):
            secondary.push(sse_reply(anthropic_events()))
            assert await loop.run_in_executor(None, ask, url, "claude-chain") == 200
        await wait_for(lambda: len(service.seen) >= 1)
        await asyncio.sleep(0.5)
        result["phases"]["failover"] = len(service.seen)

        # Recovery: the probe lets a trial through, which succeeds and closes the breaker.
        assert await wait_for(lambda: breaker(url, token, "primary/claude-sonnet-4-5") == "half_open")
        primary.push(sse_reply(anthropic_events()))
        assert await loop.run_in_executor(None, ask, url, "claude-chain") == 200
        await wait_for(lambda: len(service.seen) >= 2)
        await asyncio.sleep(0.5)
        result["phases"]["recovery"] = len(service.seen)

        # A burst of 50 failures (every request fails over; the breaker flaps open and shut).
        for i in range(50):
            flaky.push(OVERLOADED)
            secondary.push(sse_reply(anthropic_events()))
            assert await loop.run_in_executor(None, ask, url, "claude-burst") == 200
            if i % 10 == 9:
                # Let a trial through now and then so it recovers and fails again.
                await asyncio.sleep(1.2)
        await asyncio.sleep(1.0)
        result["phases"]["burst"] = len(service.seen)
    finally:
        for p in procs:
            p.terminate()
            p.wait(15)
        result["notifications"] = [{k: v for k, v in n.items() if k != "at"} for n in service.seen]
        print(json.dumps(result))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as home:
        asyncio.run(main(home))
