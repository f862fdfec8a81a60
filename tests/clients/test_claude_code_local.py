"""Claude Code answered by the embedded model (SmolLM2-135M from models/): with every cloud
backend failing, and with no network at all. Slow on purpose: a cold ~7k-token Claude Code
prompt on a CPU. What the answer says does not matter (a 135M model); that Claude Code gets
one, from the local model, does."""

import json
import os
import shutil
import subprocess
import sys

from conftest import BIN, ROOT
import local_scenario

MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"


def models_dir(tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    src = os.path.join(ROOT, "models", MODEL)
    assert os.path.exists(src), "scripts/test fetches the model into models/"
    os.symlink(src, d / MODEL)
    return str(d)


def test_claude_code_is_answered_locally_when_every_cloud_fails(dead_mock, tmp_path):
    dead_mock.reset()
    overloaded = {"status": 529, "headers": [["content-type", "application/json"]],
                  "body": {"kind": "full", "text": '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'}}
    dead_mock.push(*[overloaded] * 50)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""
[providers.anthropic]
kind = "anthropic"
base_url = "{dead_mock.url}"
passthrough_auth = "{dead_mock.url}"

[providers.local]
kind = "local"
model_file = "{os.path.join(ROOT, "models", MODEL)}"

[[routes]]
model = "claude-*"
backends = ["anthropic", "local"]
""")
    home = tmp_path / "home"
    home.mkdir()
    r = local_scenario.run(BIN, str(home), models_dir(tmp_path), "say hello", config=str(cfg))
    assert r["returncode"] == 0, r
    assert r["stdout"].strip(), "Claude Code printed an answer"
    local = r["status"]["local"]
    assert local["answers"] >= 1 and local["completion_tokens"] > 0, r["status"]
    assert any(x["method"] == "POST" for x in dead_mock.requests()), "the clouds were tried first"
    dead_mock.reset()


def test_claude_code_is_answered_locally_with_no_network_at_all(tmp_path):
    """Zero config (no keys, no config file) in a network namespace with only loopback: the
    Anthropic host does not resolve, the gateway marks the network down and goes local."""
    home = tmp_path / "home"
    home.mkdir()
    args = {"bin_path": BIN, "home": str(home), "models_dir": models_dir(tmp_path), "prompt": "say hello",
            "bring_up_loopback": True}
    (tmp_path / "in.json").write_text(json.dumps(args))
    cmd = [sys.executable, local_scenario.__file__, str(tmp_path / "in.json"), str(tmp_path / "out.json")]
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    assert probe.returncode == 0 and shutil.which("ip"), (
        "this test needs `unshare -rn` (user and network namespaces) and `ip` (iproute2): "
        f"{probe.stderr!r}")
    done = subprocess.run(["unshare", "-rn"] + cmd, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    r = json.loads((tmp_path / "out.json").read_text())
    assert r["returncode"] == 0, r
    assert r["stdout"].strip(), "Claude Code printed an answer"
    status = r["status"]
    assert status["offline"] is True, status
    assert status["local"]["answers"] >= 1, status
    assert "the network looks down" in done.stderr, done.stderr[-4000:]
