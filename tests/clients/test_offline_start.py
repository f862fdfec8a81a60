"""Offline from the first second: zero config started in a network namespace with only
loopback says `offline` and warms the local model within seconds, with no request; the
dashboard's badge and card say so (screenshot: target/screenshots/dashboard-offline-at-start.png);
the settings editor shows the configuration it runs on as a file `understudy config check`
accepts; a request is answered locally without trying the cloud first."""

import json
import os
import shutil
import subprocess
import sys

from conftest import BIN, ROOT
from test_claude_code_local import models_dir
from test_dashboard import SHOTS

HERE = os.path.dirname(os.path.abspath(__file__))


def test_offline_at_start_is_known_without_a_request(tmp_path):
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    assert probe.returncode == 0 and shutil.which("ip"), (
        f"this test needs `unshare -rn` and `ip` (iproute2): {probe.stderr!r}")
    home = tmp_path / "home"
    home.mkdir()
    os.makedirs(SHOTS, exist_ok=True)
    done = subprocess.run(
        ["unshare", "-rn", sys.executable, os.path.join(HERE, "offline_start_scenario.py"), BIN,
         models_dir(tmp_path), str(home), SHOTS],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONPATH=HERE))
    assert done.returncode == 0, done.stderr[-4000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])

    # Offline within 5 s, with no request at all, and the local model warming.
    assert r["status"]["offline"] is True, r["status"]
    assert r["offline_after_s"] < 5, r["offline_after_s"]
    assert r["requests_before"] == 0, r["status"]["totals"]
    assert r["local_state"] in ("loading", "ready"), r["local_state"]
    anthropic = next(p for p in r["status"]["providers"] if p["name"] == "anthropic")
    assert anthropic["health"] == "offline", anthropic
    assert anthropic["check"]["reach"] == "unreachable", anthropic
    assert anthropic["check"]["detail"].startswith("offline:"), anthropic
    assert r["status"]["summary"] == {"state": "local", "text": "Understudy: offline, answering from the local model"}
    assert "the network looks down" in r["log"], r["log"]

    # The dashboard says the same.
    assert r["badge"] == "offline, answering from the local model", r["badge"]
    assert "offline" in r["card"] and "offline: cannot reach https://api.anthropic.com" in r["card"], r["card"]
    assert os.path.getsize(os.path.join(SHOTS, "dashboard-offline-at-start.png")) > 10_000

    # The settings editor starts from what runs: a valid file with the same providers and routes.
    cfg = r["config"]
    assert cfg["zero_config"] is True
    assert r["settings"] == cfg["text"]
    assert r["config_check"]["code"] == 0, r["config_check"]
    # `config check` lists the same providers (a file lists them by name) and the same routes,
    # in order, for the file as for the zero config it was shown from.
    def listed(out, what):
        return [line for line in out.splitlines() if line.startswith(f"  {what} ")]
    file_out, zero_out = r["config_check"]["stdout"], r["zero_check"]["stdout"]
    assert r["zero_check"]["code"] == 0 and zero_out.startswith("zero config"), r["zero_check"]
    assert sorted(listed(file_out, "provider")) == sorted(listed(zero_out, "provider")), (file_out, zero_out)
    assert listed(file_out, "route") == listed(zero_out, "route"), (file_out, zero_out)
    assert len(listed(zero_out, "route")) >= 2, zero_out
    text = cfg["text"]
    assert '[providers.anthropic]' in text and 'passthrough_auth = true' in text, text
    assert '[providers.local]' in text and 'SmolLM2-135M-Instruct.Q4_1.gguf' in text, text
    assert 'model = "claude-*"\nbackends = ["anthropic", "local"]' in text, text

    # A request goes straight to the local model: no cloud attempt first.
    a = r["answer"]
    assert a["status"] == 200 and a["served_by"] == "local", a
    assert a["failed_over"] is None, a
    assert a["body"]["content"][0]["text"].strip(), a
