"""Desktop notifications over a real D-Bus: a private session bus (`dbus-run-session`), a
listener that owns org.freedesktop.Notifications, and `understudy serve --notify` sending
through notify-rust. A failover and a recovery are each told once; a burst of 50 failures
yields a few notifications, not fifty."""

import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(__file__)


def test_failover_and_recovery_are_notified_and_a_burst_is_folded():
    assert shutil.which("dbus-run-session"), "scripts/test installs the dbus package"
    out = subprocess.run(
        ["dbus-run-session", "--", sys.executable, os.path.join(HERE, "notify_scenario.py")],
        capture_output=True, text=True, timeout=240,
        env=dict(os.environ, PYTHONPATH=HERE),
    )
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    shown = result["notifications"]
    phases = result["phases"]
    assert all(n["app"] == "Understudy" for n in shown), shown

    # The failover: one notice that says who failed, why, and who answers now.
    assert phases["failover"] == 1, shown
    assert shown[0]["summary"] == "Failing over"
    assert shown[0]["body"] == ("primary/claude-sonnet-4-5 is failing: overloaded, HTTP 529; "
                                "secondary/claude-sonnet-4-5 answers now"), shown[0]
    # The recovery: one more.
    assert phases["recovery"] == 2, shown
    assert shown[1]["summary"] == "Recovered"
    assert "primary/claude-sonnet-4-5" in shown[1]["body"]
    # Fifty failures, each a failover, with the breaker opening and closing: a few at most.
    burst = shown[2:]
    assert 1 <= len(burst) <= 3, shown
    assert burst[0]["summary"] == "Failing over" and "flaky/claude-sonnet-4-5" in burst[0]["body"]
