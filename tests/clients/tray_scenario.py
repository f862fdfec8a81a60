"""Run inside a private D-Bus session: the tray app under Xvfb with its dashboard window, a
request through its in-process gateway, a screenshot of the window, and a second launch that
must hand over to the first (single instance). Prints the findings as JSON."""

import json
import os
import signal
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
        # Its own user, as far as the app can tell: the data dir (the single-instance lock)
        # follows HOME.
        base = {k: v for k, v in os.environ.items() if k not in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR")}
        env = dict(base, DISPLAY=x.display, HOME=home, UNDERSTUDY_TEST_KEY="sk-test",
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
            # The window is its own process: the tray app never loads WebKit, its dashboard
            # child does.
            dash = dashboards(tray.pid)
            out["dashboards"] = len(dash)
            out["tray_maps_webkit"] = maps_webkit(tray.pid)
            out["dashboard_maps_webkit"] = bool(dash) and maps_webkit(dash[0])
            # Its one-time sign-in code came over its stdin, not its command line (which every
            # local user can read).
            out["dashboard_argv"] = [open(f"/proc/{p}/cmdline").read().replace("\0", " ") for p in dash]
            # The window closed as a window manager closes it (WM_DELETE_WINDOW): its process
            # ends. Then a second launch hands over to the first, which opens a new one, and
            # exits.
            out["closed_windows"] = close_windows(x.display, "Understudy")
            out["dashboard_gone"] = wait_until(lambda: not dashboards(tray.pid), 15) is not None
            for pid in dashboards(tray.pid):
                os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not dashboards(tray.pid), 15)
            second = start_tray(env, "--config", cfg, "--listen", "127.0.0.1:0")
            try:
                out["second_exit"] = second.wait(30)
            except Exception:
                second.kill()
                out["second_exit"] = "still running"
            out["second_stdout"] = second.stdout.read()
            out["first_alive"] = tray.poll() is None
            reopened = wait_until(lambda: dashboards(tray.pid), 30) or []
            out["reopened"] = len(reopened) == 1 and reopened[0] not in dash
        finally:
            left = dashboards(tray.pid)
            tray.terminate()
            try:
                out["tray_exit"] = tray.wait(15)
            except Exception:
                out["tray_exit"] = "still running 15 s after SIGTERM"
                tray.kill()
            # Quitting the tray app closes its window.
            out["dashboards_at_quit"] = len(left)
            out["dashboard_left_running"] = wait_until(lambda: not any(alive(p) for p in left), 15) is None
            mock_proc.terminate()
            mock_proc.wait(10)
    print(json.dumps(out))


def proc_stat(pid):
    """(command name, state, parent pid) of `pid` from /proc, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    rest = stat[stat.rindex(")") + 2:].split()
    return stat[stat.index("(") + 1:stat.rindex(")")], rest[0], int(rest[1])


def dashboards(parent):
    """The running `understudy-dashboard` children of `parent` (their pids)."""
    found = []
    for d in os.listdir("/proc"):
        st = d.isdigit() and proc_stat(d)
        if st and st[2] == parent and st[0].startswith("understudy-dash") and st[1] != "Z":
            found.append(int(d))
    return found


def close_windows(display, title):
    """Asks every top-level window named `title` to close, as a window manager does (a
    WM_DELETE_WINDOW client message; Xvfb runs none). Returns how many were asked."""
    from Xlib import X, display as xdisplay
    from Xlib.protocol import event
    d = xdisplay.Display(display)
    protocols, delete = d.intern_atom("WM_PROTOCOLS"), d.intern_atom("WM_DELETE_WINDOW")
    asked = 0

    def walk(w):
        nonlocal asked
        for child in w.query_tree().children:
            try:
                name = child.get_wm_name()
                wants = delete in (child.get_wm_protocols() or [])
            except Exception:
                continue
            if name == title and wants:
                child.send_event(event.ClientMessage(window=child, client_type=protocols,
                                                     data=(32, [delete, X.CurrentTime, 0, 0, 0])))
                asked += 1
            walk(child)
    walk(d.screen().root)
    d.flush()
    d.close()
    return asked


def maps_webkit(pid):
    with open(f"/proc/{pid}/maps") as f:
        return "libwebkit2gtk" in f.read()


def alive(pid):
    st = proc_stat(pid)
    return st is not None and st[1] != "Z"


def wait_until(fn, timeout):
    """`fn()` once it is truthy, polling; None at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


if __name__ == "__main__":
    shots = os.path.join(ROOT, "target", "screenshots")
    os.makedirs(shots, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        main(home, shots)
