"""Run inside a private D-Bus session: a small StatusNotifierItem host (it owns
org.kde.StatusNotifierWatcher, as a desktop's tray does) receives the tray app's item and reads
what a desktop reads: its icon (IconName: the PNG tray-icon writes; its colour says which of
the six icons it is), its Title and its com.canonical.dbusmenu menu. Then a failover turns
the icon degraded, the recovery turns it back, and "Pause" activated through the menu's
`Event` call pauses the gateway. Prints the findings as JSON."""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from admin import admin_request, token_file  # noqa: E402
from conftest import OVERLOADED, ROOT, Mock, _spawn, anthropic_events, chain_config, sse_reply  # noqa: E402
from desktop import Xvfb  # noqa: E402

from dbus_next import Message, MessageType, Variant  # noqa: E402
from dbus_next.aio import MessageBus  # noqa: E402
from dbus_next.constants import PropertyAccess  # noqa: E402
from dbus_next.service import ServiceInterface, dbus_property, method, signal  # noqa: E402

TRAY = os.environ.get("UNDERSTUDY_TRAY_BIN", os.path.join(ROOT, "target", "debug", "understudy-tray"))
# The glyph colours of src-tauri/src/icons.rs.
COLOURS = {
    "healthy": (0x1a, 0x7f, 0x37), "degraded": (0xd9, 0x77, 0x06), "local": (0x1d, 0x4e, 0xd8),
    "down": (0xb4, 0x23, 0x18), "unknown": (0x47, 0x55, 0x69), "paused": (0x66, 0x70, 0x85),
}


class Watcher(ServiceInterface):
    """org.kde.StatusNotifierWatcher, as KDE's and GNOME's AppIndicator extension serve it."""

    def __init__(self):
        super().__init__("org.kde.StatusNotifierWatcher")
        self.items = []

    @method()
    def RegisterStatusNotifierItem(self, service: "s"):
        pass

    @method()
    def RegisterStatusNotifierHost(self, service: "s"):
        pass

    @dbus_property(access=PropertyAccess.READ)
    def RegisteredStatusNotifierItems(self) -> "as":
        return self.items

    @dbus_property(access=PropertyAccess.READ)
    def IsStatusNotifierHostRegistered(self) -> "b":
        return True

    @dbus_property(access=PropertyAccess.READ)
    def ProtocolVersion(self) -> "i":
        return 0

    @signal()
    def StatusNotifierItemRegistered(self, service) -> "s":
        return service


def icon_kind(path):
    """Which icon a PNG is, by the glyph colour most of its opaque pixels have."""
    rgba = subprocess.run(["convert", path, "-depth", "8", "rgba:-"], capture_output=True, check=True).stdout
    counts = {k: 0 for k in COLOURS}
    for i in range(0, len(rgba), 4):
        if rgba[i + 3] < 200:
            continue
        px = tuple(rgba[i:i + 3])
        for k, c in COLOURS.items():
            if all(abs(a - b) <= 8 for a, b in zip(px, c)):
                counts[k] += 1
    best = max(counts, key=counts.get)
    return best if counts[best] > 20 else None


async def call(bus, dest, path, iface, member, signature="", body=()):
    reply = await bus.call(Message(destination=dest, path=path, interface=iface, member=member,
                                   signature=signature, body=list(body)))
    if reply.message_type == MessageType.ERROR:
        raise RuntimeError(f"{member}: {reply.error_name} {reply.body}")
    return reply.body


def unpack(v):
    return v.value if isinstance(v, Variant) else v


def flatten(node):
    """A dbusmenu layout node (id, props, children) as [(id, label, enabled)] in order."""
    out = []
    for child in node[2]:
        cid, props, _ = unpack(child)
        props = {k: unpack(v) for k, v in props.items()}
        if props.get("type") == "separator":
            out.append((cid, None, False))
        else:
            out.append((cid, props.get("label", "").replace("_", ""), props.get("enabled", True)))
    return out


async def read_item(bus, sender, path):
    props = (await call(bus, sender, path, "org.freedesktop.DBus.Properties", "GetAll", "s",
                        ["org.kde.StatusNotifierItem"]))[0]
    props = {k: unpack(v) for k, v in props.items()}
    menu_path = props["Menu"]
    layout = await call(bus, sender, menu_path, "com.canonical.dbusmenu", "GetLayout", "iias", [0, -1, []])
    return props, menu_path, flatten(layout[1])


def http(url, token=None, body=None):
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 method="GET" if body is None else "POST", headers={"content-type": "application/json"})
    if token:
        req = admin_request(url, token) if body is None else req
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def ask(url):
    return http(url + "/v1/messages", body={"model": "claude-chain", "max_tokens": 32, "stream": True,
                                            "messages": [{"role": "user", "content": "hi"}]})


async def wait_for(what, fn, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = await fn()
        if v:
            return v
        await asyncio.sleep(0.2)
    raise TimeoutError(what)


async def main(home):
    out = {}
    bus = await MessageBus().connect()
    registered = []

    def on_message(msg):
        if msg.message_type == MessageType.METHOD_CALL and msg.member == "RegisterStatusNotifierItem":
            registered.append((msg.sender, msg.body[0]))
        return None

    bus.add_message_handler(on_message)
    bus.export("/StatusNotifierWatcher", Watcher())
    await bus.request_name("org.kde.StatusNotifierWatcher")

    procs = []
    mocks = []
    for _ in range(2):
        proc, murl = _spawn(["mock"], "mock cloud listening on ")
        procs.append(proc)
        mocks.append(Mock(murl))
    primary, secondary = mocks
    cfg = os.path.join(home, "config.toml")
    with open(cfg, "w") as f:
        f.write(chain_config(primary, secondary, head='[breaker]\nconsecutive_failures = 1\nopen_base = "2s"\nprobe_interval = "500ms"\n'))
    token = token_file(home)
    with Xvfb() as x:
        env = dict(os.environ, DISPLAY=x.display, HOME=home, UNDERSTUDY_TEST_KEY="sk-test",
                   UNDERSTUDY_ADMIN_TOKEN_FILE=token, NO_AT_BRIDGE="1")
        tray = subprocess.Popen([TRAY, "--config", cfg, "--listen", "127.0.0.1:0"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(tray)
        try:
            line = tray.stdout.readline().strip()
            assert line.startswith("understudy listening on "), (line, tray.stderr.read())
            url = line[len("understudy listening on "):]

            await wait_for("the item to register", lambda: asyncio.sleep(0, result=bool(registered)))
            sender, service = registered[0]
            path = service if service.startswith("/") else "/StatusNotifierItem"
            out["registered"] = {"service": service, "path": path}

            async def current():
                props, _, menu = await read_item(bus, sender, path)
                return props, menu, icon_kind(props["IconName"]) if os.path.exists(props["IconName"]) else None

            # At rest: every cloud checked and reachable, the healthy icon.
            props, menu, kind = await wait_for("the healthy icon", lambda: _when(current, lambda r: r[2] == "healthy"))
            out["at_rest"] = {"icon": kind, "title": props.get("Title"), "status": props.get("Status"),
                              "icon_name": props["IconName"], "menu": [m[1] for m in menu]}

            # A failover: the primary is overloaded, the secondary answers, the breaker opens.
            primary.push(OVERLOADED)
            secondary.push(sse_reply(anthropic_events()))
            status, headers, _ = ask(url)
            out["failover"] = {"status": status, "failed_over": headers.get("x-understudy-failed-over")}
            props, menu, kind = await wait_for("the degraded icon", lambda: _when(current, lambda r: r[2] == "degraded"))
            out["failing"] = {"icon": kind, "icon_name": props["IconName"], "menu": [m[1] for m in menu]}

            # The recovery: its probe puts it on trial; the trial's success closes the breaker.
            async def on_trial():
                st = json.loads(http(url + "/api/status", token)[2])
                p = next(p for p in st["providers"] if p["name"] == "primary")
                return any(b["breaker"] == "half_open" for b in p["backends"])
            await wait_for("the trial", on_trial, timeout=30)
            status, headers, _ = ask(url)
            out["recovery"] = {"status": status, "failed_over": headers.get("x-understudy-failed-over")}
            props, menu, kind = await wait_for("the healthy icon again", lambda: _when(current, lambda r: r[2] == "healthy"))
            out["recovered"] = {"icon": kind, "menu": [m[1] for m in menu]}

            # "Pause", activated through the menu as a desktop's host activates it.
            _, menu_path, items = await read_item(bus, sender, path)
            pause = next(i for i in items if i[1] == "Pause")
            await call(bus, sender, menu_path, "com.canonical.dbusmenu", "Event", "isvu",
                       [pause[0], "clicked", Variant("s", ""), 0])

            async def paused():
                return json.loads(http(url + "/api/status", token)[2])["paused"]
            await wait_for("the gateway to pause", paused, timeout=20)
            props, menu, kind = await wait_for("the paused icon", lambda: _when(current, lambda r: r[2] == "paused"))
            out["paused"] = {"icon": kind, "api": True, "menu": [m[1] for m in menu]}
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(15)
                except Exception:
                    p.kill()
    print(json.dumps(out))


async def _when(fn, ok):
    r = await fn()
    return r if ok(r) else None


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as home:
        asyncio.run(main(home))
