"""The engine as users get it: the release build (release optimisation, every CPU variant
built, the best chosen at start), not the debug build the other tests run. With no keys and
no network, its first request is answered by the local model: on an AMX host whose AMX
kernels fault, after one step down."""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(__file__)
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
RELEASE = os.environ.get("UNDERSTUDY_RELEASE_BIN", os.path.join(ROOT, "target", "release", "understudy"))


def test_the_release_build_answers_a_first_request_offline_from_the_local_model(tmp_path):
    assert os.access(RELEASE, os.X_OK), "scripts/test builds it: cargo build --release --bin understudy"
    done = subprocess.run(["unshare", "-rn", sys.executable, os.path.join(HERE, "release_scenario.py"), RELEASE],
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
