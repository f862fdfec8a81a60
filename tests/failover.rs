//! The chain walk before the commit point: failures that fail over, failures that do not, the
//! breaker taking a dead primary out of the way, and a retry storm that never happens.

use crate::support::{check_anthropic_stream, post, AnthropicEnd, Harness};
use serde_json::{json, Value};
use understudy::testing::{anthropic, openai, MockCloud, Profile, Reply};

const KEY_VAR: &str = "UNDERSTUDY_TEST_FAILOVER_KEY";

/// `primary` (OpenAI-compatible, at `primary`) then `fallback` (Anthropic, at `fallback`).
async fn start(primary: &MockCloud, fallback: MockCloud) -> Harness {
    std::env::set_var(KEY_VAR, "sk-failover");
    let toml = format!(
        r#"
# The primaries do not finish their own broken answers here: these tests are about the
# fallback doing it (tests/continuity.rs covers the same backend going on).
[providers.primary]
kind = "openai"
base_url = "{p}/v1"
api_key_env = "{KEY_VAR}"
continuation = "off"
timeouts = {{ first_byte = "2s", idle = "2s" }}

[providers.fallback]
kind = "anthropic"
base_url = "{f}"
api_key_env = "{KEY_VAR}"
continuation = true
timeouts = {{ first_byte = "2s", idle = "2s" }}

[providers.primary_a]
kind = "anthropic"
base_url = "{p}"
api_key_env = "{KEY_VAR}"
continuation = "off"
timeouts = {{ first_byte = "2s", idle = "2s", first_content = "400ms" }}

[[routes]]
model = "chain_a"
backends = ["primary_a/claude-opus-4-5", "fallback/claude-sonnet-4-5"]

[[routes]]
model = "chain"
backends = ["primary/gpt-4o", "fallback/claude-sonnet-4-5"]

[[routes]]
model = "alone"
backends = ["primary/gpt-4o"]
"#,
        p = primary.url(),
        f = fallback.url()
    );
    crate::support::start_config(fallback, &toml).await
}

/// Requests the mock answered as an API call (its health probes are GETs).
fn posts_to(mock: &MockCloud) -> usize {
    mock.requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count()
}

fn body(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn an_overloaded_primary_is_skipped_and_the_client_never_sees_it() {
    let primary = MockCloud::start().await;
    let h = start(&primary, MockCloud::start().await).await;
    primary.push(Reply::json(
        529,
        &openai::error("server_error", "overloaded"),
    ));
    let r = post(&h.url, "/v1/messages", &body("chain", true)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-understudy-served-by"], "fallback");
    let (text, end) = check_anthropic_stream(&r.bytes().await.unwrap());
    assert_eq!(
        (text.as_str(), end),
        ("Hello from the mock cloud.", AnthropicEnd::Complete)
    );
    assert_eq!(primary.requests().len(), 1);
    assert_eq!(h.mock.requests().len(), 1);
}

#[tokio::test]
async fn a_translated_stream_that_breaks_before_content_fails_over() {
    let primary = MockCloud::start().await;
    let h = start(&primary, MockCloud::start().await).await;
    // The role chunk arrives, then the connection closes: nothing was committed.
    primary.push(Reply::sse([openai::text_stream("gpt-4o", &["x"], "stop")
        [0]
    .clone()]));
    let r = post(&h.url, "/v1/messages", &body("chain", true)).await;
    let bytes = r.bytes().await.unwrap();
    let (text, end) = check_anthropic_stream(&bytes);
    assert_eq!(
        (text.as_str(), end),
        ("Hello from the mock cloud.", AnthropicEnd::Complete)
    );
    assert_eq!(
        String::from_utf8_lossy(&bytes)
            .matches("event: message_start")
            .count(),
        1,
        "one message, never two"
    );
}

#[tokio::test]
async fn a_passthrough_stream_that_fails_before_content_fails_over() {
    let primary = MockCloud::start().await;
    let h = start(&primary, MockCloud::start().await).await;
    let events = anthropic::text_stream("claude-opus-4-5", &["never"], "end_turn");
    // message_start, then the upstream's own overloaded error, before any block.
    primary.push(Reply::sse([
        events[0].clone(),
        anthropic::error_event("overloaded_error", "Overloaded"),
    ]));
    // message_start, then the connection closes.
    primary.push(Reply::sse([events[0].clone()]).end(understudy::testing::End::Close));
    for _ in 0..2 {
        let r = post(&h.url, "/v1/messages", &body("chain_a", true)).await;
        assert_eq!(r.headers()["x-understudy-served-by"], "fallback");
        let bytes = r.bytes().await.unwrap();
        let (text, end) = check_anthropic_stream(&bytes);
        assert_eq!(
            (text.as_str(), end),
            ("Hello from the mock cloud.", AnthropicEnd::Complete)
        );
        assert!(
            !String::from_utf8_lossy(&bytes).contains("claude-opus-4-5"),
            "nothing of the failed attempt reaches the client"
        );
    }
    // Alone (no fallback), the same failure is retried twice on the primary, and then it is
    // an HTTP error the client can retry, not a 200.
    let before = primary.requests().len();
    for _ in 0..3 {
        primary.push(Reply::sse([events[0].clone()]).end(understudy::testing::End::Close));
    }
    let r = crate::support::client()
        .post(format!("{}/v1/messages", h.url))
        .json(&json!({"model": "primary_a/claude-opus-4-5", "max_tokens": 8, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(primary.requests().len() - before, 3);
}

#[tokio::test]
async fn a_claude_code_session_stays_where_it_was_served_while_that_backend_is_healthy() {
    let primary = MockCloud::start().await;
    let h = start(&primary, MockCloud::start().await).await;
    primary.push(Reply::json(
        529,
        &openai::error("server_error", "overloaded"),
    ));
    let ask = |session: &'static str| {
        let url = h.url.clone();
        async move {
            crate::support::client()
                .post(format!("{url}/v1/messages"))
                .header("x-claude-code-session-id", session)
                .json(&body("chain", false))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        ask("sess-a").await.headers()["x-understudy-served-by"],
        "fallback"
    );
    // The primary is healthy again, but sess-a's prompt cache is warm on the fallback.
    assert_eq!(
        ask("sess-a").await.headers()["x-understudy-served-by"],
        "fallback"
    );
    assert_eq!(primary.requests().len(), 1);
    // Another session starts at the head of the chain.
    assert_eq!(
        ask("sess-b").await.headers()["x-understudy-served-by"],
        "primary"
    );
    // When sess-a's backend fails it moves on, and stays where it lands.
    h.mock.push(Reply::json(
        529,
        &anthropic::error("overloaded_error", "Overloaded"),
    ));
    assert_eq!(
        ask("sess-a").await.headers()["x-understudy-served-by"],
        "primary"
    );
    assert_eq!(
        ask("sess-a").await.headers()["x-understudy-served-by"],
        "primary"
    );
}

#[tokio::test]
async fn a_client_error_goes_straight_back() {
    let primary = MockCloud::start().await;
    let h = start(&primary, MockCloud::start().await).await;
    primary.push(Reply::json(
        400,
        &openai::error("invalid_request_error", "messages: bad"),
    ));
    let r = post(&h.url, "/v1/messages", &body("chain", false)).await;
    assert_eq!(r.status(), 400);
    assert!(
        h.mock.requests().is_empty(),
        "a 400 is the client's problem: no failover"
    );
}

#[tokio::test]
async fn the_breaker_takes_a_dead_primary_out_of_the_way() {
    let primary = MockCloud::start().await;
    let h = start(&primary, MockCloud::start().await).await;
    for _ in 0..20 {
        primary.push(Reply::json(503, &openai::error("server_error", "down")));
    }
    for _ in 0..12 {
        let r = post(&h.url, "/v1/messages", &body("chain", false)).await;
        assert_eq!(r.status(), 200);
    }
    // Five failures in a row open the breaker; the other seven go straight to the fallback.
    let posts = || posts_to(&primary);
    assert_eq!(posts(), 5);
    assert_eq!(h.mock.requests().len(), 12);
    // With the only backend open, the client hears so at once, without an upstream call.
    let r = post(&h.url, "/v1/messages", &body("alone", false)).await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "overloaded_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("circuit open"),
        "{v}"
    );
    assert_eq!(primary.requests().len(), 5);
}

/// Paused, Understudy stands aside: the route's first backend answers, its error included,
/// with no failover, even with its breaker open; resumed, the chain is walked again.
#[tokio::test]
async fn paused_requests_go_to_the_first_backend_only() {
    let primary = MockCloud::start().await;
    let h = start(&primary, MockCloud::start().await).await;
    for _ in 0..8 {
        primary.push(Reply::json(503, &openai::error("server_error", "down")));
    }
    // Five failures open the primary's breaker (served by the fallback meanwhile).
    for _ in 0..5 {
        let r = post(&h.url, "/v1/messages", &body("chain", false)).await;
        assert_eq!(r.headers()["x-understudy-served-by"], "fallback");
    }
    let r = crate::support::client()
        .put(format!("{}/api/pause", h.url))
        .json(&json!({"paused": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let posts = || posts_to(&primary);
    assert_eq!(posts(), 5);
    let r = post(&h.url, "/v1/messages", &body("chain", false)).await;
    // The primary's 503, as an Anthropic client hears an overloaded upstream.
    assert_eq!(r.status(), 529);
    assert!(r.headers().get("x-understudy-failed-over").is_none());
    assert_eq!(posts(), 6, "the primary was asked despite its open breaker");
    assert_eq!(h.mock.requests().len(), 5, "the fallback was not asked");
    let status = crate::support::get_json(&h.url, "/api/status").await;
    assert_eq!(status["paused"], true);
    assert_eq!(status["summary"]["state"], "paused");
    crate::support::client()
        .put(format!("{}/api/pause", h.url))
        .json(&json!({"paused": false}))
        .send()
        .await
        .unwrap();
    let r = post(&h.url, "/v1/messages", &body("chain", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-understudy-served-by"], "fallback");
}

#[tokio::test]
async fn a_retry_storm_does_not_happen() {
    let primary = MockCloud::start().await;
    let h = start(&primary, MockCloud::start().await).await;
    for _ in 0..1000 {
        primary.push(Reply::json(
            529,
            &anthropic::error("overloaded_error", "Overloaded"),
        ));
    }
    let url = h.url.clone();
    let mut served = 0;
    for batch in 0..20 {
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move {
                    post(&url, "/v1/messages", &body("chain", false))
                        .await
                        .status()
                        .as_u16()
                })
            })
            .collect();
        for t in tasks {
            served += usize::from(t.await.unwrap() == 200);
        }
        let _ = batch;
    }
    assert_eq!(served, 1000, "every request is served by the fallback");
    let attempts = primary.requests().len();
    assert!(
        attempts <= 1200,
        "at most ~1.2 attempts per request, got {attempts}"
    );
    assert!(
        attempts < 100,
        "the breaker stops the attempts early, got {attempts}"
    );
}

/// What the client read of a spliced Anthropic stream: text, and the event types in order.
fn anthropic_text(bytes: &[u8]) -> String {
    let (text, end) = check_anthropic_stream(bytes);
    assert_eq!(
        end,
        AnthropicEnd::Complete,
        "{}",
        String::from_utf8_lossy(bytes)
    );
    text
}

#[tokio::test]
async fn a_translated_stream_broken_mid_text_is_continued_exactly() {
    let primary = MockCloud::start().await;
    let h = start(&primary, MockCloud::start().await).await;
    // "Hello, wor" then the connection drops (a 200 that stops halfway).
    let events = openai::text_stream("gpt-4o", &["Hello", ", wor", "NEVER"], "stop");
    primary.push(Reply::sse(events[..3].to_vec()).end(understudy::testing::End::Close));
    h.mock.push(Reply::sse(anthropic::text_stream(
        "claude-sonnet-4-5",
        &["ld", "!"],
        "end_turn",
    )));
    let r = post(&h.url, "/v1/messages", &body("chain", true)).await;
    let bytes = r.bytes().await.unwrap();
    assert_eq!(
        anthropic_text(&bytes),
        "Hello, world!",
        "no gap, no duplicate at the splice"
    );
    let s = String::from_utf8_lossy(&bytes);
    assert_eq!(s.matches("event: message_start").count(), 1);
    assert_eq!(
        s.matches("event: content_block_start").count(),
        1,
        "the open block goes on at the same index"
    );
    // The fallback was asked to continue from exactly what the client has.
    let up: Value = serde_json::from_str(&h.mock.requests()[0].body).unwrap();
    let last = up["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last,
        json!({"role": "assistant", "content": [{"type": "text", "text": "Hello, wor"}]})
    );
    assert!(up.get("thinking").is_none());
}

#[tokio::test]
async fn trailing_whitespace_is_trimmed_from_the_prefill_and_not_doubled() {
    let primary = MockCloud::start().await;
    let h = start(&primary, MockCloud::start().await).await;
    let events = openai::text_stream("gpt-4o", &["Hello ", "NEVER"], "stop");
    primary.push(Reply::sse(events[..2].to_vec()).end(understudy::testing::End::Reset));
    h.mock.push(Reply::sse(anthropic::text_stream(
        "claude-sonnet-4-5",
        &[" world."],
        "end_turn",
    )));
    let r = post(&h.url, "/v1/messages", &body("chain", true)).await;
    assert_eq!(anthropic_text(&r.bytes().await.unwrap()), "Hello world.");
    let up: Value = serde_json::from_str(&h.mock.requests()[0].body).unwrap();
    assert_eq!(up["messages"][1]["content"][0]["text"], "Hello");
}

#[tokio::test]
async fn without_a_backend_that_can_continue_the_client_gets_an_explicit_error() {
    let primary = MockCloud::start().await;
    let h = start(&primary, MockCloud::start().await).await;
    let events = openai::text_stream("gpt-4o", &["Hello", "NEVER"], "stop");
    primary.push(Reply::sse(events[..2].to_vec()).end(understudy::testing::End::Close));
    let r = post(&h.url, "/v1/messages", &body("alone", true)).await;
    let (text, end) = check_anthropic_stream(&r.bytes().await.unwrap());
    assert_eq!(text, "Hello");
    let AnthropicEnd::Error(_) = end else {
        panic!("must end in an error event")
    };
}

#[tokio::test]
async fn a_passthrough_stream_broken_mid_text_is_continued_exactly() {
    let primary = MockCloud::start().await;
    let h = start(&primary, MockCloud::start().await).await;
    let events =
        anthropic::text_stream("claude-opus-4-5", &["Hello", ", wor", "NEVER"], "end_turn");
    // message_start, block start, ping, "Hello", ", wor", then the connection resets.
    primary.push(Reply::sse(events[..5].to_vec()).end(understudy::testing::End::Reset));
    h.mock.push(Reply::sse(anthropic::text_stream(
        "claude-sonnet-4-5",
        &["ld", "!"],
        "end_turn",
    )));
    let r = post(&h.url, "/v1/messages", &body("chain_a", true)).await;
    let bytes = r.bytes().await.unwrap();
    assert_eq!(anthropic_text(&bytes), "Hello, world!");
    let s = String::from_utf8_lossy(&bytes);
    assert_eq!(s.matches("event: message_start").count(), 1);
    assert!(
        s.contains(r#""model":"claude-opus-4-5""#),
        "the client's stream began on the primary"
    );
    let up: Value = serde_json::from_str(&h.mock.requests()[0].body).unwrap();
    assert_eq!(up["messages"][1]["content"][0]["text"], "Hello, wor");
}

#[tokio::test]
async fn half_a_tool_call_never_reaches_the_client_and_the_continuation_supplies_it() {
    let primary = MockCloud::start().await;
    let h = start(&primary, MockCloud::start().await).await;
    let ev = |v: Value| anthropic::event(&v);
    let start_ev = anthropic::text_stream("claude-opus-4-5", &[], "end_turn")[0].clone();
    primary.push(Reply::sse([
        start_ev,
        ev(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
        ev(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Reading it."}})),
        ev(json!({"type": "content_block_stop", "index": 0})),
        ev(json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_half", "name": "Read", "input": {}}})),
        ev(json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"file_pa"}})),
    ]).end(understudy::testing::End::Close));
    h.mock.push(Reply::sse([
        anthropic::text_stream("claude-sonnet-4-5", &[], "end_turn")[0].clone(),
        ev(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_whole", "name": "Read", "input": {}}})),
        ev(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"file_path\":\"a.rs\"}"}})),
        ev(json!({"type": "content_block_stop", "index": 0})),
        ev(json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 9}})),
        ev(json!({"type": "message_stop"})),
    ]));
    let r = post(&h.url, "/v1/messages", &body("chain_a", true)).await;
    let bytes = r.bytes().await.unwrap();
    assert_eq!(anthropic_text(&bytes), "Reading it.");
    let s = String::from_utf8_lossy(&bytes);
    assert!(
        !s.contains("toolu_half"),
        "half a tool call reached the client: {s}"
    );
    assert!(
        s.contains(r#""index":1,"content_block":{"type":"tool_use","id":"toolu_whole""#),
        "{s}"
    );
    assert!(s.contains(r#""stop_reason":"tool_use""#));
}

#[tokio::test]
async fn an_openai_client_gets_a_continued_answer_in_its_own_dialect() {
    let primary = MockCloud::start().await;
    let h = start(&primary, MockCloud::start().await).await;
    let events = openai::text_stream("gpt-4o", &["Hello", ", wor", "NEVER"], "stop");
    primary.push(Reply::sse(events[..3].to_vec()).end(understudy::testing::End::Close));
    h.mock.push(Reply::sse(anthropic::text_stream(
        "claude-sonnet-4-5",
        &["ld", "!"],
        "end_turn",
    )));
    let r = post(
        &h.url,
        "/v1/chat/completions",
        &json!({"model": "chain", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let bytes = r.bytes().await.unwrap();
    let (text, end) = crate::support::check_openai_stream(&bytes);
    assert_eq!(
        (text.as_str(), end),
        ("Hello, world!", crate::support::OpenAiEnd::Complete)
    );
    assert_eq!(
        String::from_utf8_lossy(&bytes)
            .matches(r#""role":"assistant""#)
            .count(),
        1
    );
}

#[tokio::test]
async fn the_routing_mode_switches_at_runtime() {
    let primary = MockCloud::start().await;
    let h = start(&primary, MockCloud::start().await).await;
    let mode = |m: &'static str| {
        let url = h.url.clone();
        async move {
            crate::support::client()
                .put(format!("{url}/api/mode"))
                .json(&json!({"mode": m}))
                .send()
                .await
                .unwrap()
        }
    };
    let get: Value = crate::support::client()
        .get(format!("{}/api/mode", h.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(get["mode"], "auto");
    assert_eq!(mode("local-only").await.status(), 200);
    // This route has no local backend: every request says so at once, without calling anyone.
    let r = post(&h.url, "/v1/messages", &body("chain", false)).await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("local-only"),
        "{v}"
    );
    assert!(primary.requests().is_empty() && h.mock.requests().is_empty());
    assert_eq!(mode("cloud-only").await.status(), 200);
    assert_eq!(
        post(&h.url, "/v1/messages", &body("chain", false))
            .await
            .status(),
        200
    );
    let r = mode("sideways").await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("sideways"));
    // A web page cannot flip it.
    let r = crate::support::client()
        .put(format!("{}/api/mode", h.url))
        .header("origin", "https://evil.example")
        .json(&json!({"mode": "local-only"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn a_probe_notices_recovery_long_before_the_open_time_ends() {
    let primary = MockCloud::start().await;
    let fallback = MockCloud::start().await;
    std::env::set_var(KEY_VAR, "sk-failover");
    let toml = format!(
        r#"
[breaker]
consecutive_failures = 2
open_base = "30s"
probe_interval = "100ms"

[providers.primary]
kind = "openai"
base_url = "{p}/v1"
api_key_env = "{KEY_VAR}"

[providers.fallback]
kind = "anthropic"
base_url = "{f}"
api_key_env = "{KEY_VAR}"

[[routes]]
model = "chain"
backends = ["primary/gpt-4o", "fallback/claude-sonnet-4-5"]
"#,
        p = primary.url(),
        f = fallback.url()
    );
    let h = crate::support::start_config(fallback, &toml).await;
    for _ in 0..2 {
        primary.push(Reply::json(503, &openai::error("server_error", "down")));
        assert_eq!(
            post(&h.url, "/v1/messages", &body("chain", false))
                .await
                .headers()["x-understudy-served-by"],
            "fallback"
        );
    }
    // Open for 30 s; the primary's model list answers again, and a probe notices.
    let mut served_by = String::new();
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let r = post(&h.url, "/v1/messages", &body("chain", false)).await;
        served_by = r.headers()["x-understudy-served-by"]
            .to_str()
            .unwrap()
            .to_owned();
        if served_by == "primary" {
            break;
        }
    }
    assert_eq!(
        served_by, "primary",
        "the breaker went half-open after a probe, and the trial succeeded"
    );
    let hits = primary.hits();
    assert!(
        hits.get("GET /v1/models").is_some_and(|n| *n > 0),
        "{hits:?}"
    );
}

#[tokio::test]
async fn a_transport_failure_on_the_last_backend_is_retried_after_a_pause() {
    let primary = MockCloud::start().await;
    let h = start(&primary, MockCloud::start().await).await;
    // No headers within first_byte (2 s), then a healthy answer: the retry gets it.
    primary.push(Reply::json(200, &openai::completion("gpt-4o", "late")).delay(2500));
    let r = post(&h.url, "/v1/messages", &body("alone", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(primary.requests().len(), 2);
    // An overloaded answer is not retried here: the client gets it with its retry-after.
    primary.push(
        Reply::json(529, &openai::error("server_error", "overloaded")).header("retry-after", "4"),
    );
    let r = post(&h.url, "/v1/messages", &body("alone", false)).await;
    assert_eq!(r.status(), 529);
    assert_eq!(r.headers()["retry-after"], "4");
    assert_eq!(primary.requests().len(), 3);
}

#[tokio::test]
async fn a_primary_that_never_starts_content_is_abandoned_at_first_content() {
    let primary = MockCloud::start().await;
    let h = start(&primary, MockCloud::start().await).await;
    // message_start, then only pings (so the idle timeout never fires), then nothing.
    let start_ev = anthropic::text_stream("claude-opus-4-5", &[], "end_turn")[0].clone();
    let mut events = vec![start_ev];
    events.extend((0..20).map(|_| anthropic::event(&json!({"type": "ping"}))));
    primary.push(
        Reply::sse(events)
            .chunk_delay(100)
            .end(understudy::testing::End::Stall),
    );
    let r = post(&h.url, "/v1/messages", &body("chain_a", true)).await;
    assert_eq!(r.headers()["x-understudy-served-by"], "fallback");
    // Without first_content it would have waited out the pings and then the idle timeout.
    assert_eq!(
        r.headers()["x-understudy-failed-over"],
        "primary_a/claude-opus-4-5=first_content_timeout"
    );
    assert_eq!(
        anthropic_text(&r.bytes().await.unwrap()),
        "Hello from the mock cloud."
    );
}

/// Found by the peer benchmark: a translated stream that ended well was never reported to the
/// breaker, so a primary breaking one stream in four opened after its fifth break however many
/// streams it finished in between.
#[tokio::test]
async fn a_translated_stream_that_ends_well_is_a_success_for_the_breaker() {
    let primary = MockCloud::start().await;
    primary.set_profile(Profile {
        truncate_rate: 0.25,
        ..Profile::default()
    });
    let h = start(&primary, MockCloud::start().await).await;
    for _ in 0..24 {
        let r = post(&h.url, "/v1/messages", &body("chain", true)).await;
        assert_eq!(r.status(), 200);
        let (text, end) = check_anthropic_stream(&r.bytes().await.unwrap());
        assert_eq!(
            (text.as_str(), end),
            ("Hello from the mock cloud.", AnthropicEnd::Complete),
            "broken streams are continued on the fallback"
        );
    }
    // Six broken streams, each between three whole ones: never five failures in a row, and
    // 25 % is under the failure-rate threshold. The primary stays in the chain.
    assert_eq!(primary.stats().truncated, 6);
    assert_eq!(
        posts_to(&primary),
        24,
        "the primary's breaker stayed closed"
    );
}
