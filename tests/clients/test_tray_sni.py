"""The tray as a desktop sees it: on a private D-Bus session a small StatusNotifierItem host
(tray_sni_scenario.py) owns org.kde.StatusNotifierWatcher, receives the tray app's item and
reads its icon, title and com.canonical.dbusmenu menu, under Xvfb, with the tray app's debug
build. The icon turns degraded on a failover and healthy on the recovery; "Pause" activated
through the menu's Event call pauses the gateway."""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(__file__)


def test_the_tray_icon_and_menu_reach_a_desktops_tray_host_and_follow_the_gateway():
    out = subprocess.run(
        ["dbus-run-session", "--", sys.executable, os.path.join(HERE, "tray_sni_scenario.py")],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=HERE),
    )
    assert out.returncode == 0, out.stderr[-4000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["registered"]["path"].startswith("/"), r
    rest = r["at_rest"]
    assert rest["icon"] == "healthy" and rest["status"] == "Active", rest
    menu = rest["menu"]
    # The summary the tooltip would carry is the menu's first line (the item has no tooltip on
    # Linux), then a line per provider, the modes, Pause and the app's actions.
    assert menu[0] == "Understudy: 2 cloud providers reachable", menu
    assert any(m and m.startswith("primary: reachable") for m in menu), menu
    for label in ("Auto", "Local only", "Cloud only", "Pause", "Open dashboard", "Quit"):
        assert label in menu, (label, menu)
    assert r["failover"] == {"status": 200, "failed_over": "primary/claude-sonnet-4-5=http_529"}, r
    failing = r["failing"]
    assert failing["icon"] == "degraded" and failing["icon_name"] != rest["icon_name"], failing
    assert failing["menu"][0] == "Understudy: primary failing, the others serve", failing
    assert r["recovery"] == {"status": 200, "failed_over": None}, r
    assert r["recovered"]["icon"] == "healthy", r
    assert r["paused"]["icon"] == "paused" and r["paused"]["menu"][0] == "Understudy is paused", r
