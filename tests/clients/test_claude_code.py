"""Claude Code itself (its native binary from npm, offline, print mode) as a client."""

import json
import os
import subprocess

import pytest

from conftest import TEXT, anthropic_events, claude_binary, sse_reply


def run_claude(gateway, home, prompt, model=None):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": gateway,
        "ANTHROPIC_API_KEY": "sk-ant-test-not-a-real-key",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
    }
    if model:
        env["ANTHROPIC_MODEL"] = model
        # Claude Code refuses model ids it does not know unless told their context window.
        env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] = "128000"
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


def test_claude_code_works_when_an_openai_compatible_provider_serves_it(gateway, mock, tmp_path):
    out = run_claude(gateway, tmp_path, "say hello", model="claude-via-openai")
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert "".join(TEXT) in out.stdout
    chats = [r for r in mock.requests() if r["path"] == "/v1/chat/completions"]
    assert chats, "the main request was translated to the OpenAI API"
    body = json.loads(chats[-1]["body"])
    assert body["model"] == "gpt-4o" and body["stream"] is True
    assert not body["messages"][0]["content"].startswith("x-anthropic-billing-header"), "attribution block dropped"
    assert any(m["role"] == "system" and "Environment" in m["content"] for m in body["messages"][1:]), \
        "Claude Code's mid-conversation system message stays a system message"
    assert dict(chats[-1]["headers"])["authorization"] == "Bearer sk-test-configured-key"


@pytest.mark.parametrize("failure", ["529", "breaks_after_message_start", "truncates_halfway"])
def test_claude_code_gets_a_whole_answer_while_its_primary_fails_every_request(gateway, mock, dead_mock, tmp_path, failure):
    dead_mock.reset()
    if failure == "529":
        reply = {"status": 529, "headers": [["content-type", "application/json"]],
                 "body": {"kind": "full", "text": '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'}}
    elif failure == "breaks_after_message_start":
        reply = sse_reply(anthropic_events()[:1], end="close")
    else:
        # message_start, block start, "Hello", " from", then the connection resets: the
        # fallback continues the answer from exactly there.
        reply = sse_reply(anthropic_events()[:4], end="reset")
        mock.push(*[sse_reply(anthropic_events([" the", " mock", " cloud."]))] * 10)
    dead_mock.push(*[reply] * 50)
    out = run_claude(gateway, tmp_path, "say hello", model="claude-chain")
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert "".join(TEXT) in out.stdout
    assert any(r["method"] == "POST" for r in dead_mock.requests()), "the primary was tried"
    served = [r for r in mock.requests() if r["path"].startswith("/v1/messages") and json.loads(r["body"]).get("model") == "claude-sonnet-4-5"]
    assert served, "the fallback answered"
    if failure == "truncates_halfway":
        last = json.loads(served[0]["body"])["messages"][-1]
        assert last == {"role": "assistant", "content": [{"type": "text", "text": "Hello from"}]}, last
    dead_mock.reset()


@pytest.mark.parametrize("restate", [(0, False), (3, True), (1000, False)], ids=["none", "3-words-newline", "all"])
def test_claude_code_prints_the_exact_answer_when_the_only_other_backend_refuses_prefills(gateway, mock, dead_mock, tmp_path, restate):
    """Its primary cuts the stream after "Hello from"; the one other backend is Claude Opus 4.6,
    which refuses a prefill (Anthropic's 400), so it is asked by instruction, and restates
    nothing, three words after a newline, or everything first: Claude Code prints the answer
    exactly, with no gap and nothing twice."""
    dead_mock.reset()
    words, newline = restate
    mock.restate(words, newline)
    dead_mock.push(*[sse_reply(anthropic_events()[:4], end="reset")] * 10)
    out = run_claude(gateway, tmp_path, "say hello", model="claude-cut")
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert out.stdout.strip() == "".join(TEXT)
    asked = [json.loads(r["body"]) for r in mock.requests()
             if r["path"].startswith("/v1/messages") and json.loads(r["body"]).get("model") == "claude-opus-4-6"]
    assert len(asked) == 1, "asked by instruction at once: Opus 4.6 is known to refuse a prefill"
    turns = asked[0]["messages"]
    assert turns[-2] == {"role": "assistant", "content": [{"type": "text", "text": "Hello from"}]}
    assert turns[-1]["role"] == "user" and "Continue it from exactly where it stopped" in turns[-1]["content"][0]["text"]
    assert "thinking" not in asked[0]
    assert "cache_control" in json.dumps(asked[0]), "Claude Code's cache breakpoints stay, so the prompt cache is read"
    dead_mock.reset()
