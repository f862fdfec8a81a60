//! Health known without traffic: each cloud provider's model list is checked at start and
//! while it is idle, never a token-spending endpoint; a rejected key and an unreachable
//! provider are known before any request; a provider that comes back is noticed, and its
//! breaker closed, with no client traffic.

use crate::support::{client, get_json, post, start_config};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use understudy::testing::MockCloud;

/// `/api/status`'s entry for `provider`.
async fn provider(url: &str, name: &str) -> Value {
    let s = get_json(url, "/api/status").await;
    s["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no provider {name} in {s}"))
}

/// Waits up to `within` for `provider`'s `health` to be `want`; its status entry.
async fn wait_health(url: &str, name: &str, want: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let p = provider(url, name).await;
        if p["health"] == want {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is not {want} after {within:?}: {p}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn body(model: &str) -> Value {
    json!({"model": model, "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]})
}

/// Every path a mock was asked, with how often; none of them may spend tokens.
fn only_model_lists(mock: &MockCloud) -> u64 {
    let hits = mock.hits();
    assert!(
        hits.keys()
            .all(|k| k.starts_with("GET ") && k.ends_with("/models")),
        "a check asked something other than a model list: {hits:?}"
    );
    hits.values().sum()
}

/// A `claude-*` route from `primary` to `fallback` (both Anthropic, keyed from
/// UNDERSTUDY_CHAIN_KEY), whose breakers open after two failures in a row and stay open ten
/// minutes unless a check closes them early; `breaker` adds to `[breaker]`.
fn chain(primary: &str, fallback: &str, breaker: &str) -> String {
    std::env::set_var("UNDERSTUDY_CHAIN_KEY", "sk-chain-key");
    format!(
        r#"
[breaker]
consecutive_failures = 2
open_base = "10m"
open_max = "10m"
probe_interval = "100ms"
{breaker}

[providers.primary]
kind = "anthropic"
base_url = "{primary}"
api_key_env = "UNDERSTUDY_CHAIN_KEY"

[providers.fallback]
kind = "anthropic"
base_url = "{fallback}"
api_key_env = "UNDERSTUDY_CHAIN_KEY"

[[routes]]
model = "claude-*"
backends = ["primary", "fallback"]
"#
    )
}

#[tokio::test]
async fn the_checks_ask_only_model_lists_and_say_reachable_not_healthy() {
    let anthropic = MockCloud::start().await;
    let openai = MockCloud::start().await;
    let gemini = MockCloud::start().await;
    std::env::set_var("UNDERSTUDY_CHECKS_KEY", "sk-checks-good-key");
    let toml = format!(
        r#"
[breaker]
check_interval = "150ms"

[providers.anthropic]
kind = "anthropic"
base_url = "{a}"
api_key_env = "UNDERSTUDY_CHECKS_KEY"

[providers.openai]
kind = "openai"
base_url = "{o}/v1"
api_key_env = "UNDERSTUDY_CHECKS_KEY"

[providers.gemini]
kind = "gemini"
base_url = "{g}"
api_key_env = "UNDERSTUDY_CHECKS_KEY"

[[routes]]
model = "claude-*"
backends = ["anthropic"]
"#,
        a = anthropic.url(),
        o = openai.url(),
        g = gemini.url()
    );
    let h = start_config(MockCloud::start().await, &toml).await;
    // Before any request: each is reachable (its model list answered), none "healthy".
    for name in ["anthropic", "openai", "gemini"] {
        let p = wait_health(&h.url, name, "reachable", Duration::from_secs(5)).await;
        assert_eq!(p["check"]["reach"], "reachable", "{p}");
        assert!(p["last_request"].is_null(), "{p}");
    }
    let s = get_json(&h.url, "/api/status").await;
    assert_eq!(s["summary"]["state"], "healthy", "{s}");
    assert_eq!(
        s["summary"]["text"], "Understudy: 3 cloud providers reachable",
        "{s}"
    );
    // Idle, they are checked again and again: only ever their model lists, with the key.
    tokio::time::sleep(Duration::from_millis(900)).await;
    for mock in [&anthropic, &openai, &gemini] {
        assert!(only_model_lists(mock) >= 3, "{:?}", mock.hits());
        assert!(mock.requests().is_empty());
    }
    // A real request: healthy; and while requests flow, that provider is not probed.
    let r = post(&h.url, "/v1/messages", &body("claude-sonnet-4-5")).await;
    assert_eq!(r.status(), 200);
    wait_health(&h.url, "anthropic", "healthy", Duration::from_secs(2)).await;
    let probes = anthropic.hits()["GET /v1/models"];
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            post(&h.url, "/v1/messages", &body("claude-sonnet-4-5"))
                .await
                .status(),
            200
        );
    }
    assert!(
        anthropic.hits()["GET /v1/models"] <= probes + 1,
        "traffic is evidence enough: {:?}",
        anthropic.hits()
    );
}

#[tokio::test]
async fn a_rejected_key_is_known_before_any_request() {
    let anthropic = MockCloud::start().await;
    let gemini = MockCloud::start().await;
    anthropic.reject_keys(&["sk-ant-revoked-key"]);
    gemini.reject_keys(&["sk-ant-revoked-key"]);
    std::env::set_var("UNDERSTUDY_REVOKED_KEY", "sk-ant-revoked-key");
    let toml = format!(
        r#"
[providers.anthropic]
kind = "anthropic"
base_url = "{a}"
api_key_env = "UNDERSTUDY_REVOKED_KEY"

[providers.gemini]
kind = "gemini"
base_url = "{g}"
api_key_env = "UNDERSTUDY_REVOKED_KEY"

[[routes]]
model = "claude-*"
backends = ["anthropic"]
"#,
        a = anthropic.url(),
        g = gemini.url()
    );
    let h = start_config(MockCloud::start().await, &toml).await;
    let p = wait_health(&h.url, "anthropic", "key_rejected", Duration::from_secs(5)).await;
    let detail = p["check"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("UNDERSTUDY_REVOKED_KEY") && detail.contains("401"),
        "it says which key and what to do: {detail}"
    );
    assert!(detail.contains("invalid x-api-key"), "{detail}");
    assert!(
        !detail.contains("sk-ant-revoked-key"),
        "never the key: {detail}"
    );
    // Gemini refuses a bad key with a 400 (API_KEY_INVALID), not a 401: still a rejected key.
    let g = wait_health(&h.url, "gemini", "key_rejected", Duration::from_secs(5)).await;
    assert!(
        g["check"]["detail"].as_str().unwrap().contains("HTTP 400"),
        "{g}"
    );
    let s = get_json(&h.url, "/api/status").await;
    assert_eq!(s["summary"]["state"], "degraded", "{s}");
    assert_eq!(
        s["summary"]["text"], "Understudy: anthropic, gemini: key rejected",
        "{s}"
    );
    // Prometheus sees it too.
    let metrics = reqwest::get(format!("{}/metrics", h.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "understudy_provider_health{provider=\"anthropic\",state=\"key_rejected\"} 1\n"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("understudy_provider_checked_seconds{provider=\"gemini\"} "),
        "{metrics}"
    );
    // Found by the model lists alone.
    only_model_lists(&anthropic);
    only_model_lists(&gemini);
}

#[tokio::test]
async fn a_provider_down_at_start_is_seen_coming_back_and_its_breaker_closes_without_traffic() {
    // A port with nothing behind it: connections are refused.
    let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = spare.local_addr().unwrap();
    drop(spare);
    let fallback = MockCloud::start().await;
    let toml = chain(
        &format!("http://{addr}"),
        &fallback.url(),
        r#"check_interval = "300ms""#,
    );
    let h = start_config(fallback, &toml).await;
    let p = wait_health(&h.url, "primary", "unreachable", Duration::from_secs(5)).await;
    assert!(
        p["check"]["detail"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{p}"
    );
    // Requests meanwhile fail over; two refused connections open the primary's breaker
    // (for ten minutes: only a check can close it early).
    // A Claude Code conversation meanwhile is remembered on the fallback.
    let in_session = || async {
        client()
            .post(format!("{}/v1/messages", h.url))
            .header("x-claude-code-session-id", "conversation-1")
            .json(&body("claude-sonnet-4-5"))
            .send()
            .await
            .unwrap()
    };
    for _ in 0..2 {
        let r = post(&h.url, "/v1/messages", &body("claude-sonnet-4-5")).await;
        assert_eq!(r.headers()["x-understudy-served-by"], "fallback");
    }
    wait_health(&h.url, "primary", "failing", Duration::from_secs(2)).await;
    let r = in_session().await;
    assert_eq!(r.headers()["x-understudy-served-by"], "fallback");
    // It comes back. No client sends anything: the checks notice, and its breaker closes.
    let primary = MockCloud::bind(addr).await.unwrap();
    let p = wait_health(&h.url, "primary", "reachable", Duration::from_secs(5)).await;
    assert!(
        p["backends"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["breaker"] == "closed"),
        "{p}"
    );
    assert!(
        primary.requests().is_empty(),
        "no client traffic reached it"
    );
    only_model_lists(&primary);
    // The conversation goes back to the first backend of its route (automatic switch-back).
    let r = in_session().await;
    assert_eq!(r.headers()["x-understudy-served-by"], "primary");
    let r = post(&h.url, "/v1/messages", &body("claude-sonnet-4-5")).await;
    assert_eq!(r.headers()["x-understudy-served-by"], "primary");
}

#[tokio::test]
async fn an_overloaded_provider_is_not_closed_by_a_model_list_answer() {
    // A model list answers while generation is overloaded: the check lets a trial through
    // early, but only a real request closes the breaker.
    let primary = MockCloud::start().await;
    let fallback = MockCloud::start().await;
    let toml = chain(&primary.url(), &fallback.url(), "");
    let h = start_config(fallback, &toml).await;
    for _ in 0..2 {
        primary.push(understudy::testing::Reply::json(
            529,
            &understudy::testing::anthropic::error("overloaded_error", "Overloaded"),
        ));
        let r = post(&h.url, "/v1/messages", &body("claude-sonnet-4-5")).await;
        assert_eq!(r.headers()["x-understudy-served-by"], "fallback");
    }
    let p = wait_health(&h.url, "primary", "recovering", Duration::from_secs(3)).await;
    assert!(
        p["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["breaker"] == "half_open"),
        "{p}"
    );
    // On trial, the next real request decides: no more probing every probe_interval (100 ms).
    let before = primary.hits()["GET /v1/models"];
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        primary.hits()["GET /v1/models"] <= before + 1,
        "{:?}",
        primary.hits()
    );
}

#[tokio::test]
async fn a_provider_with_no_key_to_send_says_so_before_any_request() {
    let mock = MockCloud::start().await;
    std::env::remove_var("UNDERSTUDY_NEVER_SET_KEY");
    let toml = format!(
        r#"
[providers.nokey]
kind = "openai"
base_url = "{u}/v1"
api_key_env = "UNDERSTUDY_NEVER_SET_KEY"

[[routes]]
model = "gpt-*"
backends = ["nokey"]
"#,
        u = mock.url()
    );
    let h = start_config(MockCloud::start().await, &toml).await;
    let p = wait_health(&h.url, "nokey", "key_missing", Duration::from_secs(5)).await;
    assert!(
        p["check"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("no key to send: "),
        "{p}"
    );
    assert!(
        p["check"]["detail"]
            .as_str()
            .unwrap()
            .contains("UNDERSTUDY_NEVER_SET_KEY"),
        "{p}"
    );
    let s = get_json(&h.url, "/api/status").await;
    assert_eq!(s["summary"]["state"], "degraded", "{s}");
}
