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


def run_offline(tmp_path, args):
    """`local_scenario.py` with `args` in a network namespace with only loopback."""
    (tmp_path / "in.json").write_text(json.dumps(args))
    cmd = [sys.executable, local_scenario.__file__, str(tmp_path / "in.json"), str(tmp_path / "out.json")]
    done = subprocess.run(["unshare", "-rn"] + cmd, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((tmp_path / "out.json").read_text()), done.stderr


def feed_of(turn):
    """The request feed after a turn, oldest first."""
    feed = turn["requests"]
    entries = feed["requests"] if isinstance(feed, dict) else feed
    return sorted(entries, key=lambda e: e["id"])


def test_claude_code_continues_its_session_offline_from_the_cache(tmp_path):
    """Zero config, no network: `claude -p`, a side request (a title, under a Haiku model id,
    another system prompt), then `claude -p --continue`. Both turns complete on the local
    model, and the second turn's main request reads the first turn's whole prompt from the
    KV cache: the side request took a slot of its own. The measurements go to
    target/claude-code-turns.json (BENCHMARKS.md quotes them)."""
    home = tmp_path / "home"
    home.mkdir()
    r, log = run_offline(tmp_path, {"bin_path": BIN, "home": str(home), "models_dir": models_dir(tmp_path),
                                    "prompt": ["say hello", "now say it again, shorter"], "side": True,
                                    "bring_up_loopback": True})
    first, second = r["turns"]
    for n, t in enumerate(r["turns"]):
        assert t["returncode"] == 0 and t["stdout"].strip(), (n, t["stdout"], t["stderr"][-2000:])
    assert second["status"]["offline"] is True
    before = first["status"]["local"]["recent"]
    after = second["status"]["local"]["recent"]
    assert after[:len(before)] == before, "the answers are kept oldest first"
    new = after[len(before):]
    main1 = max(before, key=lambda a: a["prompt_tokens"])
    main2 = max(new, key=lambda a: a["prompt_tokens"])
    side = [a for a in new if a["prompt_tokens"] < 1000]
    assert side, f"the side request was answered locally: {new}"
    assert main1["prompt_tokens"] > 4000, main1
    assert main2["prompt_tokens"] > main1["prompt_tokens"], (main1, main2)
    assert main2["cached_tokens"] >= 0.9 * main1["prompt_tokens"], (
        f"the second turn re-read its first turn's prompt: {main1} then {main2}; all: {after}")
    # The feed's time to first token, paired with the worker's answers in order.
    feed1, feed2 = feed_of(first), feed_of(second)
    new_feed = [e for e in feed2 if e["id"] not in {x["id"] for x in feed1}]
    ttft = lambda answers, entries, a: entries[answers.index(a)]["attempts"][-1]["ttft_ms"]
    measured = {
        "turn1": {**main1, "ttft_ms": ttft(before, feed1, main1) if len(feed1) == len(before) else None},
        "turn2": {**main2, "ttft_ms": ttft(new, new_feed, main2) if len(new_feed) == len(new) else None},
        "side_requests": side,
        "feed": [{k: e.get(k) for k in ("id", "model", "stream", "input_tokens", "output_tokens", "duration_ms")}
                 | {"ttft_ms": e["attempts"][-1].get("ttft_ms") if e.get("attempts") else None} for e in feed2],
        "local": {k: second["status"]["local"].get(k) for k in ("n_ctx", "kv_type", "kv_bytes", "slots", "context_why", "device", "cpu_backend")},
    }
    os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
    with open(os.path.join(ROOT, "target", "claude-code-turns.json"), "w") as f:
        json.dump(measured, f, indent=2)
