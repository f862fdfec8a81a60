//! Whole answers streamed upstream: a client's non-streaming request is asked of the provider
//! as a stream, read through the stream engine (first-content and idle timeouts, failover
//! before content, continuation after it) and answered as the one body the upstream's own
//! non-streaming answer would have been.
use crate::support::{client, post, start_config};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use understudy::testing::{anthropic, End, MockCloud, Reply, DEFAULT_PARTS};

/// A primary and a fallback (which accepts a prefill) for each client API; the primary's
/// timeouts as Claude Code's non-streaming retry would meet them: `first_byte` long (the
/// default is two minutes), idle and first content short.
async fn two_mocks(extra: &str) -> (MockCloud, crate::support::Harness) {
    // A continuation is a request the gateway writes, so it goes with a configured key only.
    std::env::set_var("UNDERSTUDY_TEST_WHOLE_KEY", "sk-whole");
    let primary = MockCloud::start().await;
    let fallback = MockCloud::start().await;
    let toml = format!(
        r#"
[providers.primary]
kind = "anthropic"
base_url = "{p}"
passthrough_auth = "{p}"
continuation = "off"
timeouts = {{ first_byte = "60s", idle = "1s", first_content = "2s" }}
{extra}

[providers.primary_openai]
kind = "openai"
base_url = "{p}/v1"
passthrough_auth = "{p}"
continuation = "off"
timeouts = {{ first_byte = "60s", idle = "1s", first_content = "2s" }}
{extra}

[providers.fallback]
kind = "anthropic"
base_url = "{f}"
api_key_env = "UNDERSTUDY_TEST_WHOLE_KEY"
continuation = true

[providers.fallback_openai]
kind = "openai"
base_url = "{f}/v1"
api_key_env = "UNDERSTUDY_TEST_WHOLE_KEY"
continuation = true

[[routes]]
model = "claude-*"
backends = ["primary", "fallback"]

[[routes]]
model = "gpt-*"
backends = ["primary_openai", "fallback_openai"]
"#,
        p = primary.url(),
        f = fallback.url()
    );
    (primary, start_config(fallback, &toml).await)
}

fn ask_anthropic() -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]})
}

fn ask_openai() -> Value {
    json!({"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]})
}

/// Thinking, text and a tool call, with cache usage and a field of the message we do not
/// model (`container`), as Anthropic streams them (protocol.md §1.5).
fn anthropic_events() -> Vec<String> {
    let e = |v: Value| anthropic::event(&v);
    vec![
        e(
            json!({"type": "message_start", "message": {"id": "msg_w1", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5", "content": [], "stop_reason": null, "stop_sequence": null, "container": null,
            "usage": {"input_tokens": 10, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 2048, "output_tokens": 1}}}),
        ),
        e(
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ),
        e(
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "The file "}}),
        ),
        e(
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "first."}}),
        ),
        e(
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2ln"}}),
        ),
        e(json!({"type": "content_block_stop", "index": 0})),
        e(
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        ),
        e(json!({"type": "ping"})),
        e(
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Reading "}}),
        ),
        e(
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "it."}}),
        ),
        e(json!({"type": "content_block_stop", "index": 1})),
        e(
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_w1", "name": "Read", "input": {}}}),
        ),
        e(
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"file_path\":"}}),
        ),
        e(
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "\"src/a.rs\"}"}}),
        ),
        e(json!({"type": "content_block_stop", "index": 2})),
        e(
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"output_tokens": 37}}),
        ),
        e(json!({"type": "message_stop"})),
    ]
}

/// What Anthropic answers to the same request without streaming.
fn anthropic_whole() -> Value {
    json!({"id": "msg_w1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "The file first.", "signature": "c2ln"},
            {"type": "text", "text": "Reading it."},
            {"type": "tool_use", "id": "toolu_w1", "name": "Read", "input": {"file_path": "src/a.rs"}}],
        "stop_reason": "tool_use", "stop_sequence": null, "container": null,
        "usage": {"input_tokens": 10, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 2048, "output_tokens": 37}})
}

fn openai_chunk(delta: Value, finish: Value) -> String {
    let c = json!({"id": "chatcmpl-w1", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-5",
        "system_fingerprint": "fp_w1", "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
    format!("data: {c}\n\n")
}

/// Text and a tool call, then the usage chunk with cached tokens (protocol.md §2.4).
fn openai_events() -> Vec<String> {
    vec![
        openai_chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        openai_chunk(json!({"content": "Reading "}), Value::Null),
        openai_chunk(json!({"content": "it."}), Value::Null),
        openai_chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_w1", "type": "function", "function": {"name": "Read", "arguments": ""}}]}),
            Value::Null,
        ),
        openai_chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"file_path\":\"src/a.rs\"}"}}]}),
            Value::Null,
        ),
        openai_chunk(json!({}), json!("tool_calls")),
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-w1", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-5",
                "system_fingerprint": "fp_w1", "choices": [],
                "usage": {"prompt_tokens": 2100, "completion_tokens": 12, "total_tokens": 2112,
                    "prompt_tokens_details": {"cached_tokens": 2048}}})
        ),
        "data: [DONE]\n\n".to_owned(),
    ]
}

/// What OpenAI answers to the same request without streaming.
fn openai_whole() -> Value {
    json!({"id": "chatcmpl-w1", "object": "chat.completion", "created": 1700000000, "model": "gpt-5",
        "system_fingerprint": "fp_w1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Reading it.",
            "tool_calls": [{"id": "call_w1", "type": "function", "function": {"name": "Read", "arguments": "{\"file_path\":\"src/a.rs\"}"}}]},
            "logprobs": null, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 2100, "completion_tokens": 12, "total_tokens": 2112,
            "prompt_tokens_details": {"cached_tokens": 2048}}})
}

#[tokio::test]
async fn a_whole_answer_is_asked_as_a_stream_and_rebuilt_field_for_field() {
    let (primary, h) = two_mocks("").await;
    primary.push(
        Reply::sse(anthropic_events())
            .header("request-id", "req_w1")
            .header("anthropic-ratelimit-unified-status", "allowed"),
    );
    primary.push(Reply::sse(openai_events()).header("x-ratelimit-remaining-requests", "99"));

    let r = post(&h.url, "/v1/messages", &ask_anthropic()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["request-id"], "req_w1");
    assert_eq!(r.headers()["anthropic-ratelimit-unified-status"], "allowed");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, anthropic_whole());

    let r = post(&h.url, "/v1/chat/completions", &ask_openai()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "99");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, openai_whole());

    let sent = primary.requests();
    let a: Value = serde_json::from_str(&sent[0].body).unwrap();
    assert_eq!(a["stream"], true, "asked as a stream: {a}");
    assert_eq!(
        a["max_tokens"], 64,
        "the rest of the body as the client wrote it: {a}"
    );
    let o: Value = serde_json::from_str(&sent[1].body).unwrap();
    assert_eq!(o["stream"], true, "{o}");
    assert_eq!(o["stream_options"]["include_usage"], true, "{o}");
    assert!(h.mock.requests().is_empty(), "the fallback was not needed");
}

#[tokio::test]
async fn claude_codes_non_streaming_retry_on_a_stalled_primary_fails_over_in_seconds() {
    let (primary, h) = two_mocks("").await;
    // Claude Code's recovery from a stalled stream is the same request without streaming
    // (protocol.md §1.7); the primary stalls again, after message_start.
    primary.push(
        Reply::sse(anthropic::text_stream(
            "claude-sonnet-4-5",
            &["late"],
            "end_turn",
        ))
        .truncate(1)
        .end(End::Stall),
    );
    let started = Instant::now();
    let r = client()
        .post(format!("{}/v1/messages?beta=true", h.url))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "claude-code-20250219")
        .header("x-claude-code-session-id", "sess-whole")
        .json(&ask_anthropic())
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 200);
    let failed = r.headers()["x-understudy-failed-over"].to_str().unwrap();
    assert!(
        failed == "primary/claude-sonnet-4-5=idle_timeout"
            || failed == "primary/claude-sonnet-4-5=first_content_timeout",
        "{failed}"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["content"][0]["text"], DEFAULT_PARTS.concat(), "{v}");
    assert_eq!(v["stop_reason"], "end_turn");
    // timeouts.idle (1 s) or first_content (2 s), not first_byte (60 s).
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

#[tokio::test]
async fn a_whole_answer_broken_mid_text_is_continued_into_one_body_with_the_exact_text() {
    let (primary, h) = two_mocks("").await;
    // "Hello", " from", then the connection closes: the fallback is asked to go on from
    // "Hello from" and (the mock continuing a prefill with the rest) says " the mock cloud."
    let parts = &DEFAULT_PARTS[..2];
    let events = anthropic::text_stream("claude-sonnet-4-5", DEFAULT_PARTS, "end_turn");
    primary.push(Reply::sse(events).truncate(3 + parts.len()).end(End::Close));
    let chunks: Vec<String> = std::iter::once(openai_chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ))
    .chain(
        parts
            .iter()
            .map(|p| openai_chunk(json!({"content": p}), Value::Null)),
    )
    .collect();
    primary.push(Reply::sse(chunks).end(End::Close));

    let r = post(&h.url, "/v1/messages", &ask_anthropic()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["content"][0]["text"], DEFAULT_PARTS.concat(), "{v}");
    assert_eq!(v["content"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["stop_reason"], "end_turn", "{v}");
    assert_eq!(v["type"], "message");

    let r = post(&h.url, "/v1/chat/completions", &ask_openai()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        DEFAULT_PARTS.concat(),
        "{v}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");

    // Both were continued, not regenerated: Claude Sonnet 4.5 got the partial answer as a
    // prefill; gpt-5 (OpenAI has no prefill) got it, then the instruction to go on.
    let sent = h.mock.requests();
    assert_eq!(sent.len(), 2);
    for sent in sent {
        let up: Value = serde_json::from_str(&sent.body).unwrap();
        let turns = up["messages"].as_array().unwrap();
        let last = turns.last().unwrap().clone();
        if up["model"] == "gpt-5" {
            assert_eq!(last["role"], "user", "{up}");
            assert_eq!(
                last["content"],
                understudy::relay::continuation::INSTRUCTION
            );
            assert_eq!(turns[turns.len() - 2]["content"], "Hello from", "{up}");
        } else {
            assert_eq!(last["role"], "assistant", "{up}");
            assert!(last.to_string().contains("Hello from"), "{up}");
        }
    }
}

#[tokio::test]
async fn a_provider_can_keep_whole_answers_as_they_are() {
    let (primary, h) = two_mocks("stream_whole_answers = false").await;
    let whole = anthropic::message("claude-sonnet-4-5", "As it is.");
    primary.push(Reply::json(200, &whole));
    let r = post(&h.url, "/v1/messages", &ask_anthropic()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, whole);
    let up: Value = serde_json::from_str(&primary.requests()[0].body).unwrap();
    assert_eq!(up, ask_anthropic(), "sent as the client wrote it");
}

/// The stream's one timer is moved only when it fires (not re-armed per piece): an answer
/// whose pieces come every 150 ms must outlive an idle limit of 400 ms as often as it takes,
/// streamed or whole, while a stall after content still ends it at that limit.
#[tokio::test]
async fn a_slow_steady_answer_outlives_the_idle_limit_and_a_stall_still_meets_it() {
    let primary = MockCloud::start().await;
    let toml = format!(
        r#"
[providers.primary]
kind = "anthropic"
base_url = "{p}"
passthrough_auth = "{p}"
continuation = "off"
timeouts = {{ first_byte = "10s", idle = "400ms", first_content = "10s" }}

[[routes]]
model = "claude-*"
backends = ["primary"]
"#,
        p = primary.url()
    );
    let h = start_config(MockCloud::start().await, &toml).await;
    let parts = ["one", " two", " three", " four", " five", " six"];
    let events = anthropic::text_stream("claude-sonnet-4-5", &parts, "end_turn");
    for stream in [false, true] {
        primary.push(Reply::sse(events.clone()).chunk_delay(150));
        let started = Instant::now();
        let mut ask = ask_anthropic();
        ask["stream"] = json!(stream);
        let r = post(&h.url, "/v1/messages", &ask).await;
        assert_eq!(r.status(), 200);
        let body = r.bytes().await.unwrap();
        let took = started.elapsed();
        let text = if stream {
            crate::support::check_anthropic_stream(&body).0
        } else {
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["stop_reason"], "end_turn", "{v}");
            v["content"][0]["text"].as_str().unwrap().to_owned()
        };
        assert_eq!(text, parts.concat(), "stream: {stream}");
        // Eleven events 150 ms apart: the idle limit was pushed on several times over.
        assert!(
            took >= Duration::from_millis(1200),
            "stream: {stream}, took {took:?}"
        );
    }
    // Content, then silence: the idle limit ends it (a whole answer gets the error; nothing
    // else may serve this route).
    primary.push(
        Reply::sse(events.clone())
            .truncate(4)
            .chunk_delay(150)
            .end(End::Stall),
    );
    let started = Instant::now();
    let r = post(&h.url, "/v1/messages", &ask_anthropic()).await;
    let took = started.elapsed();
    assert!(r.status().is_server_error(), "{}", r.status());
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("idle"),
        "{v}"
    );
    assert!(
        took >= Duration::from_millis(850) && took < Duration::from_millis(2500),
        "four pieces 150 ms apart, then 400 ms of silence: took {took:?}"
    );
}
