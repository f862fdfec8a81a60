"""The official Python SDKs as real clients of the gateway: well-formed answers, and an
exception — not a silently shortened text — when the upstream truncates a stream."""

import anthropic
import openai
import pytest

from conftest import TEXT, anthropic_events, openai_chunks, sse_reply

FULL = "".join(TEXT)


def claude(gateway):
    return anthropic.Anthropic(base_url=gateway, api_key="sk-test-client", max_retries=0)


def gpt(gateway):
    return openai.OpenAI(base_url=gateway + "/v1", api_key="sk-test-client", max_retries=0)


def test_anthropic_sdk_non_streaming(gateway, mock):
    msg = claude(gateway).messages.create(
        model="claude-opus-5-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.content[0].text == FULL
    assert msg.stop_reason == "end_turn"
    assert mock.requests()[0]["path"] == "/v1/messages"


def test_anthropic_sdk_streaming(gateway, mock):
    with claude(gateway).messages.stream(
        model="claude-opus-5-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == FULL
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5


@pytest.mark.parametrize("end", ["clean", "close", "reset"])
def test_anthropic_sdk_raises_on_a_truncated_stream(gateway, mock, end):
    mock.push(sse_reply(anthropic_events()[:4], end=end))
    received = []
    with pytest.raises(anthropic.APIError) as exc:
        with claude(gateway).messages.stream(
            model="claude-opus-5-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            for t in stream.text_stream:
                received.append(t)
    assert "".join(received) == "Hello from", "what arrived before the break, nothing invented"
    assert "provider 'anthropic'" in str(exc.value)


def test_anthropic_sdk_sees_the_upstream_status_and_retry_after(gateway, mock):
    mock.push({"status": 529, "headers": [["content-type", "application/json"], ["retry-after", "2"]],
               "body": {"kind": "full", "text": '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'}})
    with pytest.raises(anthropic.APIStatusError) as exc:
        claude(gateway).messages.create(model="claude-opus-5-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert exc.value.status_code == 529
    assert exc.value.response.headers["retry-after"] == "2"
    assert exc.value.body["error"]["type"] == "overloaded_error"


def test_anthropic_sdk_gets_a_typed_error_for_an_unknown_model(gateway, mock):
    with pytest.raises(anthropic.NotFoundError) as exc:
        claude(gateway).messages.create(model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert "no-such-model" in str(exc.value)


def test_openai_sdk_non_streaming(gateway, mock):
    r = gpt(gateway).chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == FULL
    assert r.choices[0].finish_reason == "stop"


def test_openai_sdk_streaming(gateway, mock):
    chunks = gpt(gateway).chat.completions.create(
        model="gpt-5", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage = "", None, None
    for c in chunks:
        if c.choices:
            text += c.choices[0].delta.content or ""
            finish = c.choices[0].finish_reason or finish
        usage = c.usage or usage
    assert (text, finish) == (FULL, "stop")
    assert usage.completion_tokens == 5


@pytest.mark.parametrize("end", ["clean", "close", "reset"])
def test_openai_sdk_raises_on_a_truncated_stream(gateway, mock, end):
    # Without the gateway the OpenAI SDK accepts a stream that ends without [DONE] silently.
    mock.push(sse_reply(openai_chunks()[:3], end=end))
    received = ""
    with pytest.raises(openai.APIError) as exc:
        for c in gpt(gateway).chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}], stream=True):
            received += c.choices[0].delta.content or ""
    assert received == "Hello from"
    assert "provider 'openai'" in str(exc.value)


def test_openai_sdk_raises_when_the_stream_stalls(gateway, mock):
    mock.push(sse_reply(openai_chunks()[:3], end="stall"))
    with pytest.raises(openai.APIError) as exc:
        for _ in gpt(gateway).chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}], stream=True):
            pass
    assert "timeouts.idle" in str(exc.value)


def test_anthropic_sdk_streams_a_whole_answer_continued_by_instruction(gateway, mock, dead_mock):
    """The primary resets after "Hello from"; the only other backend refuses prefills (Claude
    Opus 4.6), so it is asked in words and restates three words: the SDK reads one whole
    answer, one text block."""
    dead_mock.reset()
    mock.restate(3)
    dead_mock.push(sse_reply(anthropic_events()[:4], end="reset"))
    with claude(gateway).messages.stream(
        model="claude-cut", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == FULL
    assert final.stop_reason == "end_turn"
    assert [b.type for b in final.content] == ["text"]
    dead_mock.reset()


def test_openai_sdk_streams_a_whole_answer_continued_by_instruction(gateway, mock, dead_mock):
    """The same on OpenAI's API, which has no prefill at all."""
    dead_mock.reset()
    mock.restate(3, newline=True)
    dead_mock.push(sse_reply(openai_chunks()[:3], end="close"))
    text, finish = "", None
    for c in gpt(gateway).chat.completions.create(
        model="gpt-cut", stream=True, messages=[{"role": "user", "content": "hi"}]
    ):
        if c.choices:
            text += c.choices[0].delta.content or ""
            finish = c.choices[0].finish_reason or finish
    assert (text, finish) == (FULL, "stop")
    dead_mock.reset()
