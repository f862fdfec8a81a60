//! The mock cloud's whole fault list × both client dialects × streaming and not. Every cell
//! ends in either a complete, well-formed answer or the dialect's explicit error: the checkers
//! panic on a silent truncation.

use crate::support::*;
use serde_json::Value;
use understudy::testing::{
    anthropic, html_page, openai, Chunk, End, MockBody, Reply, DEFAULT_PARTS,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Overloaded,
    RateLimited,
    DelayBeforeHeaders,
    SlowChunks,
    StallMidStream,
    ResetMidStream,
    CloseMidStream,
    ErrorEventMidStream,
    EofWithoutCompletion,
    MalformedChunk,
    Html502,
}

const ALL: &[Fault] = &[
    Fault::Overloaded,
    Fault::RateLimited,
    Fault::DelayBeforeHeaders,
    Fault::SlowChunks,
    Fault::StallMidStream,
    Fault::ResetMidStream,
    Fault::CloseMidStream,
    Fault::ErrorEventMidStream,
    Fault::EofWithoutCompletion,
    Fault::MalformedChunk,
    Fault::Html502,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Anthropic,
    OpenAi,
}

/// Text delivered before a mid-stream fault: the first two parts.
fn prefix() -> String {
    DEFAULT_PARTS[..2].concat()
}

fn stream_events(d: Dialect) -> (Vec<String>, usize) {
    match d {
        // message_start, block_start, ping, then deltas: cut after two deltas.
        Dialect::Anthropic => (
            anthropic::text_stream("claude-sonnet-4-5", DEFAULT_PARTS, "end_turn"),
            5,
        ),
        // role chunk, then content chunks: cut after two.
        Dialect::OpenAi => (openai::text_stream("gpt-5", DEFAULT_PARTS, "stop"), 3),
    }
}

fn whole_body(d: Dialect) -> Value {
    match d {
        Dialect::Anthropic => anthropic::message("claude-sonnet-4-5", &DEFAULT_PARTS.concat()),
        Dialect::OpenAi => openai::completion("gpt-5", &DEFAULT_PARTS.concat()),
    }
}

fn error_body(d: Dialect, status: u16) -> Value {
    match (d, status) {
        (Dialect::Anthropic, 429) => anthropic::error(
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
        ),
        (Dialect::Anthropic, _) => anthropic::error("overloaded_error", "Overloaded"),
        (Dialect::OpenAi, 429) => openai::error("rate_limit_error", "Rate limit reached"),
        (Dialect::OpenAi, _) => openai::error("server_error", "The server is overloaded"),
    }
}

/// A non-streaming body sent as two chunks, then `end`.
fn split_body(text: String, end: End) -> Reply {
    let (a, b) = text.split_at(text.len() / 2);
    Reply {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        delay_ms: 0,
        body: MockBody::Chunks {
            chunks: [a, b]
                .iter()
                .map(|t| Chunk {
                    delay_ms: 0,
                    gate: None,
                    text: (*t).into(),
                })
                .collect(),
            end,
        },
    }
}

fn reply(f: Fault, d: Dialect, stream: bool) -> Reply {
    let status = if d == Dialect::Anthropic { 529 } else { 503 };
    match f {
        Fault::Overloaded => Reply::json(status, &error_body(d, status))
            .header("retry-after", "3")
            .header("x-should-retry", "true")
            .header("request-id", "req_upstream_42"),
        Fault::RateLimited => Reply::json(429, &error_body(d, 429)).header("retry-after", "7"),
        Fault::DelayBeforeHeaders => Reply::json(200, &whole_body(d)).delay(1500),
        Fault::Html502 => Reply::raw(502, "text/html", html_page(502)),
        _ if !stream => {
            let body = whole_body(d).to_string();
            match f {
                Fault::SlowChunks => split_body(body, End::Clean).chunk_delay(50),
                Fault::StallMidStream => split_body(body, End::Stall),
                Fault::ResetMidStream => split_body(body, End::Reset),
                Fault::CloseMidStream => split_body(body, End::Close),
                // The non-streaming shape of an error inside a 200: an error body with status 200.
                Fault::ErrorEventMidStream => Reply::json(200, &error_body(d, 529)),
                Fault::EofWithoutCompletion => {
                    let mut v = whole_body(d);
                    match d {
                        Dialect::Anthropic => v["stop_reason"] = Value::Null,
                        Dialect::OpenAi => v["choices"][0]["finish_reason"] = Value::Null,
                    }
                    Reply::json(200, &v)
                }
                Fault::MalformedChunk => Reply::raw(
                    200,
                    "application/json",
                    "{\"id\": \"msg_01\", \"content\": [{\"type\"",
                ),
                _ => unreachable!(),
            }
        }
        _ => {
            let (events, cut) = stream_events(d);
            let r = Reply::sse(events);
            match f {
                Fault::SlowChunks => r.chunk_delay(30),
                Fault::StallMidStream => r.truncate(cut).end(End::Stall),
                Fault::ResetMidStream => r.truncate(cut).end(End::Reset),
                Fault::CloseMidStream => r.truncate(cut).end(End::Close),
                Fault::ErrorEventMidStream => r.truncate(cut).insert(
                    cut,
                    match d {
                        Dialect::Anthropic => anthropic::error_event("overloaded_error", "Overloaded"),
                        Dialect::OpenAi => openai::error_chunk("The server is overloaded"),
                    },
                ),
                Fault::EofWithoutCompletion => r.truncate(cut),
                Fault::MalformedChunk => r.truncate(cut).insert(
                    cut,
                    match d {
                        Dialect::Anthropic => "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_d\n\n",
                        Dialect::OpenAi => "data: {\"id\":\"chatcmpl-mock01\",\"choices\":[{\"index\":0,\"delta\":{\"cont\n\n",
                    },
                ),
                _ => unreachable!(),
            }
        }
    }
}

async fn run_cell(f: Fault, d: Dialect, stream: bool) -> String {
    let h = start().await;
    // Failures that never reached HTTP, or broke a body nobody has seen yet, are retried
    // twice on the same (only) backend: script the fault for every attempt.
    let attempts = if f == Fault::DelayBeforeHeaders
        || (!stream && matches!(f, Fault::ResetMidStream | Fault::CloseMidStream))
    {
        3
    } else {
        1
    };
    for _ in 0..attempts {
        h.mock.push(reply(f, d, stream));
    }
    let (path, body) = match d {
        Dialect::Anthropic => ("/v1/messages?beta=true", anthropic_body(stream)),
        Dialect::OpenAi => ("/v1/chat/completions", openai_body(stream)),
    };
    let resp = client()
        .post(format!("{}{path}", h.url))
        .header("x-api-key", "test-key")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp
        .bytes()
        .await
        .expect("the gateway itself never breaks the connection");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let cell = format!("{f:?} × {d:?} × stream={stream}");
    assert_eq!(
        h.mock.requests().len(),
        attempts,
        "{cell}: attempts (retries of transport failures included)"
    );

    match f {
        Fault::Overloaded | Fault::RateLimited => {
            let want = if f == Fault::RateLimited {
                429
            } else if d == Dialect::Anthropic {
                529
            } else {
                503
            };
            assert_eq!(status, want, "{cell}");
            let got: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(
                got,
                error_body(d, want),
                "{cell}: the upstream's error body is forwarded unmodified"
            );
            let ra = if f == Fault::RateLimited { "7" } else { "3" };
            assert_eq!(headers["retry-after"], ra, "{cell}");
            if f == Fault::Overloaded {
                assert_eq!(headers["x-should-retry"], "true", "{cell}");
                assert_eq!(headers["request-id"], "req_upstream_42", "{cell}");
            }
            return format!("{cell}: {status} forwarded");
        }
        Fault::DelayBeforeHeaders => {
            assert_eq!(status, 504, "{cell}");
            assert_eq!(
                h.mock.requests().len(),
                3,
                "{cell}: one attempt and two retries"
            );
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            match d {
                Dialect::Anthropic => assert_eq!(v["error"]["type"], "timeout_error", "{cell}"),
                Dialect::OpenAi => assert_eq!(v["error"]["code"], "timeout", "{cell}"),
            }
            return format!("{cell}: 504");
        }
        Fault::Html502 => {
            assert_eq!(status, 502, "{cell}");
            let v: Value = serde_json::from_slice(&bytes)
                .expect("an HTML page becomes the dialect's JSON error");
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(
                msg.contains("502 Bad Gateway") && !msg.contains('<'),
                "{cell}: {msg}"
            );
            if d == Dialect::Anthropic {
                assert_eq!(v["type"], "error", "{cell}");
            }
            return format!("{cell}: 502 as JSON");
        }
        _ => {}
    }

    if !stream {
        if f == Fault::SlowChunks {
            assert_eq!(status, 200, "{cell}");
            assert_eq!(
                serde_json::from_slice::<Value>(&bytes).unwrap(),
                whole_body(d),
                "{cell}"
            );
            return format!("{cell}: complete");
        }
        let want = if f == Fault::StallMidStream { 504 } else { 502 };
        assert_eq!(status, want, "{cell}: {text}");
        let v: Value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("{cell}: not JSON: {text}"));
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("provider '")),
            "{cell}: {text}"
        );
        return format!("{cell}: {status} error");
    }

    assert_eq!(status, 200, "{cell}");
    match d {
        Dialect::Anthropic => {
            let (got, end) = check_anthropic_stream(&bytes);
            if f == Fault::SlowChunks {
                assert_eq!(
                    (got, end),
                    (DEFAULT_PARTS.concat(), AnthropicEnd::Complete),
                    "{cell}"
                );
                return format!("{cell}: complete");
            }
            assert_eq!(
                got,
                prefix(),
                "{cell}: what was sent before the fault arrives, nothing more"
            );
            let want = match f {
                Fault::StallMidStream => "timeout_error",
                Fault::ErrorEventMidStream => "overloaded_error",
                _ => "api_error",
            };
            assert_eq!(end, AnthropicEnd::Error(want.into()), "{cell}");
            if f == Fault::MalformedChunk {
                assert!(
                    !text.contains("text_d\n"),
                    "{cell}: the malformed event must not be forwarded"
                );
            }
            format!("{cell}: explicit error event ({want})")
        }
        Dialect::OpenAi => {
            let (got, end) = check_openai_stream(&bytes);
            if f == Fault::SlowChunks {
                assert_eq!(
                    (got, end),
                    (DEFAULT_PARTS.concat(), OpenAiEnd::Complete),
                    "{cell}"
                );
                return format!("{cell}: complete");
            }
            assert_eq!(got, prefix(), "{cell}");
            assert!(matches!(end, OpenAiEnd::Error(_)), "{cell}: {end:?}");
            assert!(
                frames(&bytes)
                    .iter()
                    .all(|f| f.data.as_deref() != Some("[DONE]")),
                "{cell}"
            );
            format!("{cell}: explicit error chunk, no [DONE]")
        }
    }
}

async fn matrix(d: Dialect, stream: bool) {
    let cells = ALL.iter().map(|&f| run_cell(f, d, stream));
    for line in futures_util::future::join_all(cells).await {
        println!("{line}");
    }
}

#[tokio::test]
async fn anthropic_streaming_fault_matrix() {
    matrix(Dialect::Anthropic, true).await;
}

#[tokio::test]
async fn anthropic_non_streaming_fault_matrix() {
    matrix(Dialect::Anthropic, false).await;
}

#[tokio::test]
async fn openai_streaming_fault_matrix() {
    matrix(Dialect::OpenAi, true).await;
}

#[tokio::test]
async fn openai_non_streaming_fault_matrix() {
    matrix(Dialect::OpenAi, false).await;
}

/// A provider that cannot be reached at all: a clear 502 naming it, in each dialect.
#[tokio::test]
async fn an_unreachable_provider_is_a_502_naming_it() {
    // Port 1 (tcpmux, privileged): nothing listens there. A port bound and dropped could be
    // taken by another test's server in between (a run got 508 from another gateway).
    let port = 1;
    let mock = understudy::testing::MockCloud::start().await;
    let toml = format!(
        "[providers.anthropic]\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:{port}\"\npassthrough_auth = \"http://127.0.0.1:{port}\"\n\
         [[routes]]\nmodel = \"claude-*\"\nbackends = [\"anthropic\"]\n"
    );
    let h = start_config(mock, &toml).await;
    let resp = client()
        .post(format!("{}/v1/messages", h.url))
        .header("x-api-key", "k")
        .json(&anthropic_body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("provider 'anthropic'") && msg.contains("cannot connect"),
        "{msg}"
    );
}
