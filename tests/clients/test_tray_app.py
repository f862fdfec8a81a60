"""The tray app as built by the test run: it starts under Xvfb, serves through its in-process
gateway, shows the dashboard in its window (a second process, Tauri 2; a screenshot is saved as
target/screenshots/tray-window.png), and stays a single instance."""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(__file__)


def test_the_tray_app_starts_serves_and_shows_the_dashboard():
    out = subprocess.run(
        ["dbus-run-session", "--", sys.executable, os.path.join(HERE, "tray_scenario.py")],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=HERE),
    )
    assert out.returncode == 0, out.stderr[-4000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["request_status"] == 200
    # The dashboard's dark header band fills the window's top, with the green "healthy" badge
    # the page filled in from the gateway's status.
    assert r["header_share"] > 0.3, f"the window did not show the dashboard: {r}"
    assert r["badge_share"] > 0.02, f"the dashboard shows no healthy badge: {r}"
    assert r["status"]["totals"]["requests"] == 1
    assert r["status"]["summary"]["state"] == "healthy"
    # The second instance handed over (it prints no listening line, binds nothing) and left.
    assert r["second_exit"] == 0, r
    assert "listening" not in r["second_stdout"]
    assert r["first_alive"]
    # The dashboard is a child process with WebKit; the tray app itself never loads it.
    assert r["dashboards"] == 1 and r["dashboard_maps_webkit"], r
    assert r["tray_maps_webkit"] is False, r
    assert not any("code=" in a for a in r["dashboard_argv"]), r["dashboard_argv"]
    # Closing its window ends it; then a second launch made the first open a new one.
    assert r["closed_windows"] >= 1 and r["dashboard_gone"], r
    assert r["reopened"], r
    # SIGTERM quits the tray app cleanly, and its window with it.
    assert r["tray_exit"] == 0, r
    assert r["dashboards_at_quit"] == 1 and r["dashboard_left_running"] is False, r


def test_the_tray_app_started_offline_says_so_without_a_request(tmp_path):
    """Zero config in a network namespace with only loopback: the window's badge is blue
    ("offline, answering from the local model") before anything was asked (screenshot:
    target/screenshots/tray-window-offline-at-start.png)."""
    from test_claude_code_local import models_dir
    out = subprocess.run(
        ["unshare", "-rn", "dbus-run-session", "--", sys.executable, os.path.join(HERE, "tray_offline_scenario.py"),
         models_dir(tmp_path)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=HERE),
    )
    assert out.returncode == 0, out.stderr[-4000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["header_share"] > 0.3, f"the window did not show the dashboard: {r}"
    assert r["badge_share"] > 0.02, f"the window shows no blue offline badge: {r}"
    s = r["status"]
    assert s["offline"] is True and s["totals"]["requests"] == 0, s
    assert s["summary"] == {"state": "local", "text": "Understudy: offline, answering from the local model"}, s
