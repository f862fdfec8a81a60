"""A local worker that dies of SIGILL in its CPU mode (the AMX kernels on a host that cannot
run them) costs the client nothing but a delay: the request that hit it is answered from one
CPU mode down, the status and one notification say which mode and why, and the mode that
works is remembered, so the next start does not crash first. The crash is real: a testing-only
switch makes the worker `kill -ILL` itself on its first token in the best mode."""

import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(__file__)


def test_a_sigill_steps_down_a_cpu_mode_answers_the_request_and_is_remembered():
    assert shutil.which("dbus-run-session"), "scripts/test installs the dbus package"
    out = subprocess.run(
        ["dbus-run-session", "--", sys.executable, os.path.join(HERE, "crash_scenario.py")],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, PYTHONPATH=HERE),
    )
    assert out.returncode == 0, out.stderr[-4000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])

    # The request that hit the crash is answered, whole.
    first = r["first"]
    assert first["code"] == 200, first
    assert first["answer"]["stop_reason"] in ("end_turn", "max_tokens"), first
    assert first["answer"]["content"][0]["text"].strip(), first
    # The status says it crashed once and runs one mode down, why, and without what.
    cpu = first["local"]["cpu"]
    assert first["local"]["crashes"] == 1, first["local"]
    assert first["local"]["state"] == "ready", first["local"]
    assert cpu["variant"] != cpu["best"], cpu
    assert "SIGILL" in cpu["why"] and cpu["best"] in cpu["why"], cpu
    assert cpu["without"] and cpu["cost"], cpu
    # The library the worker mapped is the stepped-down one (not merely the one asked for).
    assert first["local"]["cpu_backend"] == f"libggml-cpu-{cpu['variant']}.so", first["local"]

    # The dashboard says it too.
    shown = first["dashboard"]
    assert shown["compatible"] == "yes", shown
    assert shown["text"].startswith(f"compatible mode: {cpu['variant']} instead of {cpu['best']}"), shown
    # And the context the engine runs with: its size, KV cache type and memory, its slots.
    assert shown["context"].startswith("1,024 tokens · f16 KV cache 23 MB · 4 conversations"), shown

    # One notification, saying the same; the absorbed crash is not told as a crash.
    compatible = [n for n in r["notifications"] if n["summary"] == "Local model in compatible mode"]
    assert len(compatible) == 1, r["notifications"]
    assert not [n for n in r["notifications"] if n["summary"] == "Local model crashed"], r["notifications"]
    note = compatible[0]
    assert note["body"].startswith("The local model now runs in compatible mode: " + cpu["variant"]), note
    assert "SIGILL" in note["body"], note

    # Remembered for this machine and model, in the data dir.
    modes = list(r["remembered"]["modes"].items())
    assert len(modes) == 1, r["remembered"]
    key, mode = modes[0]
    assert key.endswith("| SmolLM2-135M-Instruct.Q4_1.gguf"), key
    assert mode["variant"] == cpu["variant"], mode

    # After a restart it starts in that mode: answered, and no crash at all.
    second = r["second"]
    assert second["code"] == 200, second
    assert second["local"]["crashes"] == 0, second["local"]
    assert second["local"]["loads"] == 1, second["local"]
    assert second["local"]["cpu"]["variant"] == cpu["variant"], second["local"]
    assert second["local"]["cpu_backend"] == f"libggml-cpu-{cpu['variant']}.so", second["local"]
