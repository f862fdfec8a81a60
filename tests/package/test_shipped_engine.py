"""The engine as users get it: llama.cpp built in Release with every CPU variant (every
profile builds it so: .cargo/config.toml sets LLAMA_LIB_PROFILE=Release), the best chosen at
start. With zero config, no keys and no network, the first request is answered by the local
model: on an AMX host whose AMX kernels fault, after one step down. The binary is the one
the tests built (target/debug; its llama.cpp libraries are the shipped ones);
UNDERSTUDY_ENGINE_BIN=target/release/understudy runs it against the release binary."""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(__file__)
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BIN = os.environ.get("UNDERSTUDY_ENGINE_BIN", os.path.join(ROOT, "target", "debug", "understudy"))


def test_the_shipped_engine_answers_a_first_request_offline_from_the_local_model(tmp_path):
    assert os.access(BIN, os.X_OK), "scripts/test builds it"
    done = subprocess.run(["unshare", "-rn", sys.executable, os.path.join(HERE, "offline_scenario.py"), BIN],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["code"] == 200, (r, done.stderr[-4000:])
    assert r["answer"]["stop_reason"] in ("end_turn", "max_tokens"), r
    assert r["answer"]["content"][0]["text"].strip(), r
    local = r["status"]["local"]
    assert local["state"] == "ready" and local["answers"] >= 1, local
    # It runs the best CPU kernels this machine has, chosen at start (runtime dispatch), and
    # that is the library actually mapped; or, on a host whose best kernels fault (an AMX
    # VM), one mode down after a SIGILL, the request answered all the same.
    cpu = local["cpu"]
    assert local["cpu_backend"] == f"libggml-cpu-{cpu['variant']}.so", local
    if cpu["variant"] != cpu["best"]:
        assert "SIGILL" in cpu["why"], local
    else:
        assert local["crashes"] == 0, local
    # The Anthropic host did not resolve: the gateway knows it is offline.
    assert r["status"]["offline"] is True, r["status"]
