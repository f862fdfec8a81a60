"""Claude Code itself (its native binary from npm, offline, print mode) as a client."""

import os
import subprocess

from conftest import TEXT, claude_binary


def run_claude(gateway, home, prompt):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": gateway,
        "ANTHROPIC_API_KEY": "sk-ant-test-not-a-real-key",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
    }
    return subprocess.run([claude_binary(), "-p", prompt], env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_claude_code_prints_the_answer_served_through_the_gateway(gateway, mock, tmp_path):
    out = run_claude(gateway, tmp_path, "say hello")
    assert out.returncode == 0, out.stderr
    assert "".join(TEXT) in out.stdout
    posts = [r for r in mock.requests() if r["method"] == "POST"]
    assert posts, "Claude Code's request reached the upstream through the gateway"
    req = posts[-1]
    headers = dict(req["headers"])
    assert req["path"] == "/v1/messages?beta=true"
    assert "claude-code" in headers["anthropic-beta"], "anthropic-beta is forwarded verbatim"
    assert headers["x-api-key"] == "sk-ant-test-not-a-real-key", "the client's own key passes through"
    assert headers["x-understudy-hop"] == "1"
