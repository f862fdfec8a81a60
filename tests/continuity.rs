//! The resilience fault matrix: every fault of the mock cloud × where it strikes × both client
//! dialects × a primary that speaks the client's API (passthrough) or the other one
//! (translated) × who continues a break after content: a fallback that takes a prefill, one
//! that refuses prefills as Claude 4.6+ does (so it is asked by instruction) or has none
//! (OpenAI), restating 0, 3 or all of the words it was given, or after a newline, and the
//! primary itself. Each cell must end in a complete answer with exactly the text the backends
//! hold (no gap, no duplicate at the splice) or in the dialect's explicit error; the strict
//! checkers panic on a silent truncation. The table is printed (`cargo test ... continuity --
//! --nocapture`).

use crate::support::{check_anthropic_stream, check_openai_stream, post, AnthropicEnd, OpenAiEnd};
use serde_json::{json, Value};
use understudy::testing::{anthropic, openai, End, MockCloud, Profile, Reply, Restate};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Anthropic,
    OpenAi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Primary {
    /// The client's own API: passthrough.
    Same,
    /// The other API: translated.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strike {
    BeforeContent,
    InThinking,
    MidText,
    InToolCall,
    AfterLastBlock,
}

const STRIKES: [Strike; 5] = [
    Strike::BeforeContent,
    Strike::InThinking,
    Strike::MidText,
    Strike::InToolCall,
    Strike::AfterLastBlock,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Reset,
    Close,
    CleanEof,
    Stall,
    ErrorEvent,
    Malformed,
}

const FAULTS: [Fault; 6] = [
    Fault::Reset,
    Fault::Close,
    Fault::CleanEof,
    Fault::Stall,
    Fault::ErrorEvent,
    Fault::Malformed,
];

/// Who finishes a break after content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Continuer {
    /// A fallback whose model takes a prefill (Claude Sonnet 4.5).
    Prefill,
    /// A fallback asked by instruction, restating `words` words first, after a newline if
    /// `newline`: Claude Opus 4.6 (known to refuse a prefill), a Claude model whose name says
    /// it takes one but which refuses it (so the prefill tried first is refused and the same
    /// attempt goes on by instruction), or OpenAI's gpt-4o (no prefill at all).
    Instruct {
        model: &'static str,
        words: usize,
        newline: bool,
    },
    /// The primary itself (its fallback does not continue): only a transient break.
    Same,
}

const CONTINUERS: [Continuer; 6] = [
    Continuer::Prefill,
    Continuer::Instruct {
        model: "claude-sonnet-4-5-noprefill",
        words: 0,
        newline: false,
    },
    Continuer::Instruct {
        model: "gpt-4o",
        words: 3,
        newline: false,
    },
    Continuer::Instruct {
        model: "claude-opus-4-6",
        words: usize::MAX,
        newline: false,
    },
    Continuer::Instruct {
        model: "gpt-4o",
        words: 3,
        newline: true,
    },
    Continuer::Same,
];

/// The answer every backend of the matrix holds; the primary breaks somewhere in it, inside
/// the word "fox" when it breaks mid-text.
const ANSWER: &str = "The quick brown fox jumps over the lazy dog. That is all.";
const CUT: &str = "The quick brown fo";
const REST_OF_BLOCK: &str = "x jumps over the lazy dog.";

fn answer_parts() -> Vec<String> {
    ANSWER.split_inclusive(' ').map(str::to_owned).collect()
}

fn anthropic_script() -> Vec<String> {
    let e = |v: Value| anthropic::event(&v);
    vec![
        anthropic::text_stream("claude-opus-4-5", &[], "end_turn")[0].clone(),
        e(
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ),
        e(
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Considering."}}),
        ),
        e(
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2lnbmF0dXJl"}}),
        ),
        e(json!({"type": "content_block_stop", "index": 0})),
        e(
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        ),
        e(
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": CUT}}),
        ),
        e(
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": REST_OF_BLOCK}}),
        ),
        e(json!({"type": "content_block_stop", "index": 1})),
        e(
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_p1", "name": "Read", "input": {}}}),
        ),
        e(
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"file_path\":"}}),
        ),
        e(
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "\"a.rs\"}"}}),
        ),
        e(json!({"type": "content_block_stop", "index": 2})),
        e(
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 30}}),
        ),
        e(json!({"type": "message_stop"})),
    ]
}

fn openai_script() -> Vec<String> {
    let c = |delta: Value, finish: Option<&str>| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-p1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    vec![
        c(json!({"role": "assistant", "content": ""}), None),
        c(json!({"reasoning_content": "Considering."}), None),
        c(json!({"content": CUT}), None),
        c(json!({"content": REST_OF_BLOCK}), None),
        c(
            json!({"tool_calls": [{"index": 0, "id": "call_p1", "type": "function", "function": {"name": "Read", "arguments": ""}}]}),
            None,
        ),
        c(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"file_path\":"}}]}),
            None,
        ),
        c(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"a.rs\"}"}}]}),
            None,
        ),
        c(json!({}), Some("tool_calls")),
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-p1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [],
            "usage": {"prompt_tokens": 10, "completion_tokens": 30, "total_tokens": 40}})
        ),
        "data: [DONE]\n\n".into(),
    ]
}

/// Events sent before the fault strikes.
fn strike_at(anthropic_primary: bool, s: Strike) -> usize {
    match (anthropic_primary, s) {
        (_, Strike::BeforeContent) => 1,
        (true, Strike::InThinking) => 3,
        (false, Strike::InThinking) => 2,
        (true, Strike::MidText) => 7,
        (false, Strike::MidText) => 3,
        (true, Strike::InToolCall) => 11,
        (false, Strike::InToolCall) => 6,
        (true, Strike::AfterLastBlock) => 13,
        (false, Strike::AfterLastBlock) => 7,
    }
}

fn primary_reply(anthropic_primary: bool, strike: Strike, fault: Fault) -> Reply {
    let script = if anthropic_primary {
        anthropic_script()
    } else {
        openai_script()
    };
    let mut events: Vec<String> = script[..strike_at(anthropic_primary, strike)].to_vec();
    let end = match fault {
        Fault::Reset => End::Reset,
        Fault::Close => End::Close,
        Fault::Stall => End::Stall,
        Fault::CleanEof => End::Clean,
        Fault::ErrorEvent => {
            events.push(if anthropic_primary {
                anthropic::error_event("overloaded_error", "Overloaded")
            } else {
                openai::error_chunk("The server had an error")
            });
            End::Clean
        }
        Fault::Malformed => {
            events.push(if anthropic_primary {
                "event: content_block_delta\ndata: {\"type\":\"content_bl\n\n".into()
            } else {
                "data: {\"choices\":[{\"delta\":\n\n".into()
            });
            End::Clean
        }
    };
    Reply::sse(events).end(end)
}

/// What the client must end with: `Ok(text)` for a complete answer, `Err(())` for the explicit error.
fn expected(
    anthropic_primary: bool,
    strike: Strike,
    fault: Fault,
    by: Continuer,
) -> Result<&'static str, ()> {
    match strike {
        // Failed over: the fallback's whole answer.
        Strike::BeforeContent => Ok(ANSWER),
        // A thinking block's signature cannot be recreated by another backend.
        Strike::InThinking => Err(()),
        // Anthropic's tool block stopped, so the client has a whole tool call, which nothing
        // but its result may follow; OpenAI's call is still held (no finish_reason yet), so it
        // goes on.
        Strike::AfterLastBlock if anthropic_primary => Err(()),
        // The primary's own error event (overloaded) is not a break it is asked to mend.
        _ if by == Continuer::Same && fault == Fault::ErrorEvent => Err(()),
        Strike::MidText | Strike::InToolCall | Strike::AfterLastBlock => Ok(ANSWER),
    }
}

/// The gateway for one cell: primaries for both APIs at `primary`, then a fallback at a new
/// mock, configured for `by`; both mocks hold [`ANSWER`].
async fn harness(primary: &MockCloud, by: Continuer) -> crate::support::Harness {
    std::env::set_var("UNDERSTUDY_TEST_MATRIX_KEY", "sk-matrix");
    let (fallback_kind, fallback_url, fallback_model, restate) = match by {
        Continuer::Prefill | Continuer::Same => (
            "anthropic",
            "FALLBACK",
            "claude-sonnet-4-5",
            Restate::default(),
        ),
        Continuer::Instruct {
            model,
            words,
            newline,
        } => {
            let openai = model.starts_with("gpt");
            (
                if openai { "openai" } else { "anthropic" },
                if openai { "FALLBACK/v1" } else { "FALLBACK" },
                model,
                Restate { words, newline },
            )
        }
    };
    let (primary_continues, fallback_continues) = if by == Continuer::Same {
        ("auto", "off")
    } else {
        ("off", "auto")
    };
    let toml = format!(
        r#"
[providers.p_anthropic]
kind = "anthropic"
base_url = "{p}"
api_key_env = "UNDERSTUDY_TEST_MATRIX_KEY"
continuation = "{primary_continues}"
timeouts = {{ first_byte = "1s", idle = "300ms" }}

[providers.p_openai]
kind = "openai"
base_url = "{p}/v1"
api_key_env = "UNDERSTUDY_TEST_MATRIX_KEY"
continuation = "{primary_continues}"
timeouts = {{ first_byte = "1s", idle = "300ms" }}

[providers.fallback]
kind = "{fallback_kind}"
base_url = "{fallback_url}"
api_key_env = "UNDERSTUDY_TEST_MATRIX_KEY"
continuation = "{fallback_continues}"
timeouts = {{ first_byte = "2s", idle = "2s" }}

[[routes]]
model = "via-anthropic"
backends = ["p_anthropic/claude-opus-4-5", "fallback/{fallback_model}"]

[[routes]]
model = "via-openai"
backends = ["p_openai/gpt-4o", "fallback/{fallback_model}"]
"#,
        p = primary.url()
    );
    let fallback = MockCloud::start().await;
    fallback.set_profile(Profile {
        answer: answer_parts(),
        restate,
        ..Profile::default()
    });
    // The primary, asked to go on from its own break: Opus 4.5 takes a prefill; gpt-4o is
    // asked by instruction and restates three words.
    primary.set_profile(Profile {
        answer: answer_parts(),
        restate: Restate {
            words: 3,
            newline: false,
        },
        ..Profile::default()
    });
    let toml = toml.replace("FALLBACK", &fallback.url());
    crate::support::start_config(fallback, &toml).await
}

async fn stream_cell(
    client: Client,
    primary_api: Primary,
    strike: Strike,
    fault: Fault,
    by: Continuer,
) -> String {
    let primary = MockCloud::start().await;
    let h = harness(&primary, by).await;
    let anthropic_primary = (client == Client::Anthropic) == (primary_api == Primary::Same);
    primary.push(primary_reply(anthropic_primary, strike, fault));
    let model = if anthropic_primary {
        "via-anthropic"
    } else {
        "via-openai"
    };
    let cell =
        format!("{client:?} client, {primary_api:?} API primary, {strike:?}, {fault:?}, {by:?}");
    let body = json!({"model": model, "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "go"}],
        "tools": [{"name": "Read", "input_schema": {"type": "object"}}]});
    let (path, body) = match client {
        Client::Anthropic => ("/v1/messages", body),
        Client::OpenAi => (
            "/v1/chat/completions",
            json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "go"}],
            "tools": [{"type": "function", "function": {"name": "Read", "parameters": {"type": "object"}}}]}),
        ),
    };
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        post(&h.url, path, &body).await.bytes().await.unwrap()
    })
    .await
    .unwrap_or_else(|_| panic!("{cell}: the client hung"));
    let got: Result<String, ()> = match client {
        Client::Anthropic => match check_anthropic_stream(&r) {
            (t, AnthropicEnd::Complete) => Ok(t),
            (_, AnthropicEnd::Error(_)) => Err(()),
        },
        Client::OpenAi => match check_openai_stream(&r) {
            (t, OpenAiEnd::Complete) => Ok(t),
            (_, OpenAiEnd::Error(_)) => Err(()),
        },
    };
    let want = expected(anthropic_primary, strike, fault, by).map(str::to_owned);
    assert_eq!(got, want, "{cell}: {}", String::from_utf8_lossy(&r));
    let text = String::from_utf8_lossy(&r);
    if client == Client::Anthropic && strike == Strike::MidText {
        assert_eq!(
            text.matches(r#""content_block":{"type":"text""#).count(),
            1,
            "{cell}: the broken text block must go on at its own index, not a new one"
        );
    }
    assert!(
        !text.contains("toolu_p1") && !text.contains("call_p1") || strike == Strike::AfterLastBlock,
        "{cell}: the primary's unfinished tool call reached the client"
    );
    // The continuation was asked the way its model takes it.
    let continued = got.is_ok() && strike != Strike::BeforeContent;
    if continued {
        let asked = match by {
            Continuer::Same => primary.requests(),
            _ => h.mock.requests(),
        };
        let bodies: Vec<Value> = asked
            .iter()
            .filter(|r| r.method == "POST")
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect();
        let last_turn = |v: &Value| v["messages"].as_array().unwrap().last().unwrap().clone();
        let by_instruction = match by {
            Continuer::Prefill => false,
            Continuer::Instruct { model, .. } => {
                if model.ends_with("noprefill") {
                    // The prefill tried first was refused; asked again at once.
                    assert_eq!(bodies.len(), 2, "{cell}: {bodies:?}");
                    assert_eq!(last_turn(&bodies[0])["role"], "assistant", "{cell}");
                } else {
                    assert_eq!(bodies.len(), 1, "{cell}: asked by instruction at once");
                }
                true
            }
            Continuer::Same => !anthropic_primary,
        };
        let last = last_turn(bodies.last().expect("a continuation request"));
        assert_eq!(
            last["role"],
            if by_instruction { "user" } else { "assistant" },
            "{cell}: {last}"
        );
    }
    match got {
        Ok(_) if strike == Strike::BeforeContent => format!("| {cell} | failed over, complete |"),
        Ok(_) => format!("| {cell} | continued, complete, exact text |"),
        Err(()) => format!("| {cell} | explicit error |"),
    }
}

#[tokio::test]
async fn every_fault_at_every_point_ends_complete_or_explicit() {
    let mut rows = Vec::new();
    for client in [Client::Anthropic, Client::OpenAi] {
        for primary in [Primary::Same, Primary::Other] {
            for strike in STRIKES {
                let cells = FAULTS.iter().flat_map(|&f| {
                    CONTINUERS
                        .iter()
                        .map(move |&by| stream_cell(client, primary, strike, f, by))
                });
                rows.extend(futures_util::future::join_all(cells).await);
            }
        }
    }
    assert_eq!(rows.len(), 2 * 2 * 5 * 6 * CONTINUERS.len());
    eprintln!(
        "| cell (streaming) | outcome |\n|---|---|\n{}",
        rows.join("\n")
    );
}

#[tokio::test]
async fn non_streaming_answers_fail_over_whole() {
    let mut rows = Vec::new();
    for client in [Client::Anthropic, Client::OpenAi] {
        for anthropic_primary in [true, false] {
            let faults: Vec<(&str, Reply)> = vec![
                (
                    "529",
                    Reply::json(529, &anthropic::error("overloaded_error", "Overloaded")),
                ),
                (
                    "429",
                    Reply::json(429, &openai::error("rate_limit_error", "slow down")),
                ),
                (
                    "HTML 502",
                    Reply::raw(502, "text/html", understudy::testing::html_page(502)),
                ),
                (
                    "headers late",
                    Reply::json(200, &anthropic::message("m", "late")).delay(1500),
                ),
                (
                    "body cut",
                    if anthropic_primary {
                        Reply::json(200, &anthropic::message("claude-opus-4-5", "cut")).truncate(40)
                    } else {
                        Reply::sse(openai_script()[..3].to_vec()).end(End::Close)
                    },
                ),
                (
                    "no stop_reason",
                    if anthropic_primary {
                        Reply::json(
                            200,
                            &json!({"type": "message", "content": [], "stop_reason": null}),
                        )
                    } else {
                        Reply::sse(openai_script()[..4].to_vec())
                    },
                ),
            ];
            for (name, reply) in faults {
                let primary = MockCloud::start().await;
                let h = harness(&primary, Continuer::Prefill).await;
                primary.push(reply);
                let model = if anthropic_primary {
                    "via-anthropic"
                } else {
                    "via-openai"
                };
                let (path, body) = match client {
                    Client::Anthropic => (
                        "/v1/messages",
                        json!({"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "go"}]}),
                    ),
                    Client::OpenAi => (
                        "/v1/chat/completions",
                        json!({"model": model, "messages": [{"role": "user", "content": "go"}]}),
                    ),
                };
                let cell = format!(
                    "{client:?} client, {} primary, {name}",
                    if anthropic_primary {
                        "Anthropic"
                    } else {
                        "OpenAI"
                    }
                );
                let r = post(&h.url, path, &body).await;
                assert_eq!(r.status(), 200, "{cell}");
                let v: Value = r.json().await.unwrap();
                // A break after content is continued (a thinking block the primary sent stays
                // before the text), anything else fails over: either way one whole answer.
                let text = match client {
                    Client::Anthropic => v["content"]
                        .as_array()
                        .and_then(|b| b.iter().find(|b| b["type"] == "text"))
                        .and_then(|b| b["text"].as_str())
                        .map(str::to_owned),
                    Client::OpenAi => v["choices"][0]["message"]["content"]
                        .as_str()
                        .map(str::to_owned),
                };
                // Failed over: the fallback's whole answer. Continued: what the primary sent,
                // then the rest after the fallback's prefill. Either way the whole answer.
                let asked = h.mock.requests();
                let up: Value = serde_json::from_str(&asked.last().unwrap().body).unwrap();
                let last = up["messages"].as_array().unwrap().last().unwrap().clone();
                let how = if last["role"] == "assistant" {
                    "continued"
                } else {
                    "failed over"
                };
                let expected = ANSWER;
                assert_eq!(text.as_deref(), Some(expected), "{cell}: {v}");
                rows.push(format!("| {cell} | {how}, complete |"));
            }
        }
    }
    eprintln!(
        "| cell (non-streaming) | outcome |\n|---|---|\n{}",
        rows.join("\n")
    );
}

#[tokio::test]
async fn under_load_with_30_percent_of_streams_broken_nothing_is_truncated_silently() {
    let primary = MockCloud::start().await;
    let h = harness(&primary, Continuer::Prefill).await;
    // 200 primary streams; 30 % break at a random point (seeded, so a failure reproduces).
    let script = anthropic::text_stream(
        "claude-opus-4-5",
        &["one ", "two ", "three ", "four ", "five."],
        "end_turn",
    );
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut broken = 0;
    for _ in 0..200 {
        if next() % 10 < 3 {
            broken += 1;
            let cut = 1 + (next() as usize % (script.len() - 1));
            let end = [End::Reset, End::Close, End::Clean][next() as usize % 3];
            primary.push(Reply::sse(script[..cut].to_vec()).end(end).chunk_delay(2));
        } else {
            primary.push(Reply::sse(script.clone()).chunk_delay(2));
        }
    }
    let url = h.url.clone();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let body = json!({"model": "via-anthropic", "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "go"}]});
                let r = tokio::time::timeout(std::time::Duration::from_secs(30), async {
                    let resp = post(&url, "/v1/messages", &body).await;
                    (resp.status().as_u16(), resp.bytes().await.unwrap())
                })
                .await
                .expect("a request hung");
                r
            })
        })
        .collect();
    let (mut complete, mut explicit) = (0, 0);
    for t in tasks {
        let (status, bytes) = t.await.unwrap();
        if status != 200 {
            explicit += 1; // an HTTP error is explicit too
            continue;
        }
        // Panics on a silent truncation.
        match check_anthropic_stream(&bytes) {
            (_, AnthropicEnd::Complete) => complete += 1,
            (_, AnthropicEnd::Error(_)) => explicit += 1,
        }
    }
    assert_eq!(complete + explicit, 200);
    assert!(
        broken >= 40,
        "the load really had broken streams ({broken})"
    );
    eprintln!("200 streams, {broken} broken upstream: {complete} complete, {explicit} explicit errors, 0 silent");
}

/// A model that refuses the prefill its name promised is asked by instruction in the same
/// attempt (the client sees one whole answer), and from then on straight away; which backend
/// wrote which part, and how, is in the request feed.
#[tokio::test]
async fn a_refused_prefill_is_learned_and_the_splice_is_visible_in_the_feed() {
    let by = Continuer::Instruct {
        model: "claude-sonnet-4-5-noprefill",
        words: 3,
        newline: false,
    };
    let primary = MockCloud::start().await;
    let h = harness(&primary, by).await;
    let body = json!({"model": "via-anthropic", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "go"}]});
    for round in 0..2 {
        primary.push(primary_reply(true, Strike::MidText, Fault::Reset));
        let r = post(&h.url, "/v1/messages", &body).await;
        let (text, end) = check_anthropic_stream(&r.bytes().await.unwrap());
        assert_eq!((text.as_str(), end), (ANSWER, AnthropicEnd::Complete));
        let roles: Vec<Value> = h
            .mock
            .requests()
            .iter()
            .map(|r| {
                let v: Value = serde_json::from_str(&r.body).unwrap();
                v["messages"].as_array().unwrap().last().unwrap()["role"].clone()
            })
            .collect();
        let want = if round == 0 {
            vec!["assistant", "user"]
        } else {
            vec!["assistant", "user", "user"]
        };
        assert_eq!(roles, want, "round {round}: refused once, remembered after");
    }
    let feed = crate::support::get_json(&h.url, "/api/requests").await;
    let last = &feed["requests"][0];
    assert_eq!(last["continued"], true, "{last}");
    let attempts = last["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{last}");
    assert_eq!(attempts[0]["backend"], "p_anthropic/claude-opus-4-5");
    assert_eq!(attempts[0]["broke_after_content"], true, "{last}");
    assert!(attempts[0].get("continuation").is_none(), "{last}");
    assert_eq!(
        attempts[1]["backend"],
        "fallback/claude-sonnet-4-5-noprefill"
    );
    assert_eq!(attempts[1]["continuation"], "instruct", "{last}");
    assert_eq!(attempts[1]["outcome"], "complete", "{last}");
}

/// The backend that broke is asked first when the break looks transient, and it goes on by
/// the method its model takes; a break by the upstream's own error event goes elsewhere.
#[tokio::test]
async fn a_transient_break_goes_on_at_the_same_backend_first() {
    // Both may continue (the default): the primary is asked first when its break is transient.
    let primary = MockCloud::start().await;
    std::env::set_var("UNDERSTUDY_TEST_MATRIX_KEY", "sk-matrix");
    primary.set_profile(Profile {
        answer: answer_parts(),
        ..Profile::default()
    });
    let fallback = MockCloud::start().await;
    fallback.set_profile(Profile {
        answer: answer_parts(),
        ..Profile::default()
    });
    let toml = format!(
        r#"
[providers.p]
kind = "anthropic"
base_url = "{p}"
api_key_env = "UNDERSTUDY_TEST_MATRIX_KEY"
timeouts = {{ idle = "300ms" }}

[providers.f]
kind = "anthropic"
base_url = "{f}"
api_key_env = "UNDERSTUDY_TEST_MATRIX_KEY"

[[routes]]
model = "m"
backends = ["p/claude-opus-4-5", "f/claude-sonnet-4-5"]
"#,
        p = primary.url(),
        f = fallback.url()
    );
    let h = crate::support::start_config(fallback, &toml).await;
    let body = json!({"model": "m", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "go"}]});
    for (fault, same) in [
        (Fault::Reset, true),
        (Fault::Stall, true),
        (Fault::Malformed, true),
        (Fault::ErrorEvent, false),
    ] {
        let before = (primary.requests().len(), h.mock.requests().len());
        primary.push(primary_reply(true, Strike::MidText, fault));
        let r = post(&h.url, "/v1/messages", &body).await;
        let (text, end) = check_anthropic_stream(&r.bytes().await.unwrap());
        assert_eq!(
            (text.as_str(), end),
            (ANSWER, AnthropicEnd::Complete),
            "{fault:?}"
        );
        let after = (primary.requests().len(), h.mock.requests().len());
        let by_primary = after.0 - before.0 == 2 && after.1 == before.1;
        assert_eq!(by_primary, same, "{fault:?}: {before:?} → {after:?}");
    }
}
