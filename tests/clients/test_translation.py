"""Real clients served by a provider of another API: the official anthropic SDK by mock OpenAI
and Gemini upstreams, the official openai SDK by a mock Anthropic upstream, the official ollama
client by a mock Anthropic upstream. Each gets a well-formed tool-use answer, and an exception,
not a clean end, when the upstream truncates."""

import json

import anthropic
import ollama
import openai
import pytest

from conftest import fixture, sse_reply

READ = {"name": "Read", "description": "Read a file",
        "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]}}
LONG = "mcp__understudy_test_server__a_tool_name_that_is_longer_than_sixty_four_chars"
SEARCH = {"name": LONG, "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}


def claude(gateway):
    return anthropic.Anthropic(base_url=gateway, api_key="sk-test-client", max_retries=0)


def gpt(gateway):
    return openai.OpenAI(base_url=gateway + "/v1", api_key="sk-test-client", max_retries=0)


def ask_claude(gateway, model):
    with claude(gateway).messages.stream(
        model=model, max_tokens=32000, tools=[READ, SEARCH], messages=[{"role": "user", "content": "read main.rs"}]
    ) as stream:
        for _ in stream:
            pass
        return stream.get_final_message()


@pytest.mark.parametrize("model,transcript,upstream_path", [
    ("claude-via-openai", "openai/tools_parallel.sse", "/v1/chat/completions"),
    ("claude-via-gemini", "gemini/tools_parallel.sse", "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"),
])
def test_anthropic_sdk_streams_tool_calls_from_another_api(gateway, mock, model, transcript, upstream_path):
    mock.push(sse_reply([fixture(transcript)]))
    final = ask_claude(gateway, model)
    assert final.stop_reason == "tool_use"
    calls = [b for b in final.content if b.type == "tool_use"]
    assert [c.name for c in calls] == ["Read", LONG], "parallel calls, names restored after shortening"
    assert calls[0].input == {"file_path": "main.rs"}
    assert calls[1].input == {"q": "x"}
    assert len({c.id for c in calls}) == 2
    req = mock.requests()[0]
    assert req["path"] == upstream_path
    assert "sk-test-client" not in json.dumps(req["headers"]), "the client's key never travels to another API"


@pytest.mark.parametrize("model,transcript", [
    ("claude-via-openai", "openai/no_done.sse"),
    ("claude-via-gemini", "gemini/truncated.sse"),
])
def test_anthropic_sdk_raises_when_the_other_api_truncates(gateway, mock, model, transcript):
    mock.push(sse_reply([fixture(transcript)]))
    with pytest.raises(anthropic.APIError) as exc:
        ask_claude(gateway, model)
    assert "completion signal" in str(exc.value)


def test_openai_sdk_streams_tool_calls_from_anthropic(gateway, mock):
    mock.push(sse_reply([fixture("anthropic/tools_parallel.sse")]))
    chunks = gpt(gateway).chat.completions.create(
        model="sonnet", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "read both"}],
        tools=[{"type": "function", "function": {"name": "Read", "parameters": READ["input_schema"]}}],
    )
    text, calls, finish, usage = "", {}, None, None
    for c in chunks:
        usage = c.usage or usage
        if not c.choices:
            continue
        d = c.choices[0].delta
        text += d.content or ""
        for tc in d.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": None, "name": "", "args": ""})
            entry["id"] = tc.id or entry["id"]
            entry["name"] += (tc.function.name or "") if tc.function else ""
            entry["args"] += (tc.function.arguments or "") if tc.function else ""
        finish = c.choices[0].finish_reason or finish
    assert text == "Reading both files."
    assert finish == "tool_calls"
    assert [json.loads(calls[i]["args"]) for i in sorted(calls)] == [{"file_path": "src/main.rs"}, {"file_path": "Cargo.toml"}]
    assert [calls[i]["id"] for i in sorted(calls)] == ["toolu_01A", "toolu_01B"]
    assert usage.prompt_tokens == 4900 and usage.prompt_tokens_details.cached_tokens == 4000
    headers = dict(mock.requests()[0]["headers"])
    assert headers["x-api-key"] == "sk-test-configured-key"


def test_openai_sdk_raises_when_anthropic_truncates(gateway, mock):
    mock.push(sse_reply([fixture("anthropic/truncated_in_block.sse")]))
    received = ""
    with pytest.raises(openai.APIError):
        for c in gpt(gateway).chat.completions.create(model="sonnet", stream=True, messages=[{"role": "user", "content": "hi"}]):
            if c.choices:
                received += c.choices[0].delta.content or ""
    assert received == "Half an ans", "what arrived, nothing invented"


def test_ollama_client_streams_a_tool_call_from_anthropic(gateway, mock):
    mock.push(sse_reply([fixture("anthropic/thinking_tool.sse")]))
    client = ollama.Client(host=gateway)
    parts = list(client.chat(model="sonnet", stream=True, messages=[{"role": "user", "content": "list files"}],
                             tools=[{"type": "function", "function": {"name": "Bash", "description": "Run a command",
                                                                      "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}}]))
    assert parts[-1].done and parts[-1].done_reason == "stop"
    calls = [tc for p in parts for tc in (p.message.tool_calls or [])]
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [("Bash", {"command": "ls"})]
    assert "".join(p.message.thinking or "" for p in parts) == "The user wants a list. Use ls."
    assert "sonnet" in [m.model for m in client.list().models]
    assert "tools" in client.show("sonnet").capabilities


def test_ollama_client_raises_when_anthropic_truncates(gateway, mock):
    mock.push(sse_reply([fixture("anthropic/truncated_in_block.sse")]))
    got = ""
    with pytest.raises(ollama.ResponseError) as exc:
        for p in ollama.Client(host=gateway).chat(model="sonnet", stream=True, messages=[{"role": "user", "content": "hi"}]):
            got += p.message.content or ""
    assert got == "Half an ans"
    assert "completion signal" in str(exc.value)


def test_anthropic_sdk_accepts_an_answer_continued_on_another_backend(gateway, mock, dead_mock):
    from conftest import anthropic_events
    dead_mock.reset()
    # The primary streams "Hello", " from", then resets; the fallback continues from there.
    dead_mock.push(sse_reply(anthropic_events()[:4], end="reset"))
    mock.push(sse_reply(anthropic_events([" the", " mock", " cloud."])))
    with claude(gateway).messages.stream(model="claude-chain", max_tokens=64,
                                         messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from the mock cloud."
    assert final.stop_reason == "end_turn"
    assert [b.type for b in final.content] == ["text"], "one block, continued at its own index"
    prefill = json.loads(mock.requests()[0]["body"])["messages"][-1]
    assert prefill == {"role": "assistant", "content": [{"type": "text", "text": "Hello from"}]}


def test_openai_sdk_accepts_an_answer_continued_on_another_backend(gateway, mock, dead_mock):
    from conftest import anthropic_events
    dead_mock.reset()
    dead_mock.push(sse_reply(anthropic_events()[:4], end="close"))
    mock.push(sse_reply(anthropic_events([" the", " mock", " cloud."])))
    text, finish = "", None
    for c in gpt(gateway).chat.completions.create(model="claude-chain", stream=True,
                                                  messages=[{"role": "user", "content": "hi"}]):
        if c.choices:
            text += c.choices[0].delta.content or ""
            finish = c.choices[0].finish_reason or finish
    assert (text, finish) == ("Hello from the mock cloud.", "stop")
