//! Config that applies live: the file edited on disk while a long stream is in flight (the
//! stream ends on the chain it started on, the next request takes the new chain, an unchanged
//! backend's open breaker stays open), an invalid edit that keeps the running configuration
//! and says why with its TOML path, and the dashboard's save applied at once.

use crate::support::{
    check_anthropic_stream, client, get_json, served_by, until, AnthropicEnd, App,
};
use serde_json::{json, Value};
use understudy::config::Config;
use understudy::testing::{anthropic, MockCloud, Reply};

const KEY_VAR: &str = "UNDERSTUDY_TEST_RELOAD_KEY";

/// Providers `a`, `b` and `c` at three mocks; `claude-*` goes to CHAIN; `c-only` to `c`.
fn config(a: &MockCloud, b: &MockCloud, c: &MockCloud, chain: &str, b_url: Option<&str>) -> String {
    format!(
        r#"
[providers.a]
kind = "anthropic"
base_url = "{a}"
api_key_env = "{KEY_VAR}"
continuation = "off"

[providers.b]
kind = "anthropic"
base_url = "{b}"
api_key_env = "{KEY_VAR}"
continuation = "off"

[providers.c]
kind = "anthropic"
base_url = "{c}"
api_key_env = "{KEY_VAR}"
continuation = "off"

[breaker]
consecutive_failures = 2
open_base = "5m"
probe_interval = "10m"
check_interval = "0s"

[[routes]]
model = "claude-*"
backends = [{chain}]

[[routes]]
model = "c-only"
backends = ["c"]
"#,
        a = a.url(),
        b = b_url.map_or_else(|| b.url(), str::to_owned),
        c = c.url(),
    )
}

/// The three mock clouds and a directory for the config file.
async fn mocks() -> (MockCloud, MockCloud, MockCloud, tempfile::TempDir) {
    std::env::set_var(KEY_VAR, "sk-reload");
    (
        MockCloud::start().await,
        MockCloud::start().await,
        MockCloud::start().await,
        tempfile::tempdir().unwrap(),
    )
}

async fn ask(app: &App, model: &str, stream: bool) -> reqwest::Response {
    client()
        .post(format!("{}/v1/messages", app.url))
        .json(&json!({"model": model, "max_tokens": 64, "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

fn breaker(status: &Value, backend: &str) -> String {
    status["providers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["backends"].as_array().unwrap())
        .find(|b| b["backend"] == backend)
        .map(|b| b["breaker"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Writes the file as an editor saves it: a new file renamed over the old one.
fn save(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn an_edit_on_disk_applies_live_and_an_invalid_one_keeps_serving() {
    let (a, b, c, dir) = mocks().await;
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config(&a, &b, &c, r#""a", "c""#, None)).unwrap();
    let app = App::start(Config::from_file(&path).unwrap()).await;

    // `c`'s breaker opens (two 529s), before the reload.
    for _ in 0..2 {
        c.push(Reply::json(
            529,
            &anthropic::error("overloaded_error", "Overloaded"),
        ));
        assert_eq!(ask(&app, "c-only", false).await.status(), 529);
    }
    assert_eq!(
        breaker(&get_json(&app.url, "/api/status").await, "c/c-only"),
        "open"
    );

    // A long stream in flight on `a`: its last events wait on a gate.
    let events = anthropic::text_stream("claude-sonnet-4-5", &["Hello", " from", " a"], "end_turn");
    a.push(Reply::sse(events).gate(4, "rest"));
    let r = ask(&app, "claude-sonnet-4-5", true).await;
    assert_eq!(served_by(&r), "a");
    let in_flight = tokio::spawn(async move { r.bytes().await.unwrap() });

    // The route now starts at `b`; `c` is unchanged.
    save(&path, &config(&a, &b, &c, r#""b", "c""#, None));
    until("the reload", async || {
        let s = get_json(&app.url, "/api/status").await;
        s["config"]["ok"] == true
    })
    .await;
    let s = get_json(&app.url, "/api/status").await;
    assert_eq!(s["config"]["message"], "applied (routes changed)", "{s}");
    let r = ask(&app, "claude-sonnet-4-5", false).await;
    assert_eq!((r.status().as_u16(), served_by(&r)), (200, "b".into()));
    assert_eq!(
        breaker(&get_json(&app.url, "/api/status").await, "c/c-only"),
        "open",
        "the unchanged backend's breaker is kept"
    );
    // The stream that started on `a` ends whole on `a`.
    a.open_gate("rest");
    let body = in_flight.await.unwrap();
    let (text, end) = check_anthropic_stream(&body);
    assert_eq!(
        (text.as_str(), end),
        ("Hello from a", AnthropicEnd::Complete)
    );

    // An invalid edit: the running configuration stays, and says why with the TOML path.
    save(&path, &config(&a, &b, &c, r#""b", "c""#, Some("not a url")));
    until("the refusal", async || {
        let s = get_json(&app.url, "/api/status").await;
        s["config"]["ok"] == false
    })
    .await;
    let s = get_json(&app.url, "/api/status").await;
    assert_eq!(s["config"]["issues"][0][0], "providers.b.base_url", "{s}");
    assert_eq!(served_by(&ask(&app, "claude-sonnet-4-5", false).await), "b");
    until("the notification", async || {
        app.notice("Config not applied").is_some()
    })
    .await;
    let body = app.notice("Config not applied").unwrap();
    assert!(body.contains(": providers.b.base_url: "), "{body}");
    // Reverted to the text it runs on: the report clears (nothing to change).
    save(&path, &config(&a, &b, &c, r#""b", "c""#, None));
    until("the revert", async || {
        let s = get_json(&app.url, "/api/status").await;
        s["config"]["ok"] == true
    })
    .await;
    let s = get_json(&app.url, "/api/status").await;
    assert_eq!(
        s["config"]["message"], "applied (no provider or route changed)",
        "{s}"
    );
    // Fixed: applied again; a provider's changed settings rebuild it.
    let d = MockCloud::start().await;
    save(&path, &config(&a, &b, &c, r#""b", "c""#, Some(&d.url())));
    until("the fix", async || {
        let s = get_json(&app.url, "/api/status").await;
        s["config"]["message"] == "applied (changed: b)"
    })
    .await;
    let s = get_json(&app.url, "/api/status").await;
    assert_eq!(s["config"]["message"], "applied (changed: b)", "{s}");
    let r = ask(&app, "claude-sonnet-4-5", false).await;
    assert_eq!(served_by(&r), "b");
    assert_eq!(
        d.requests().iter().filter(|r| r.method == "POST").count(),
        1
    );
}

#[tokio::test]
async fn a_save_from_the_dashboard_applies_at_once_and_says_what_waits_for_a_restart() {
    let (a, b, c, dir) = mocks().await;
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config(&a, &b, &c, r#""a""#, None)).unwrap();
    let app = App::start(Config::from_file(&path).unwrap()).await;
    assert_eq!(served_by(&ask(&app, "claude-sonnet-4-5", false).await), "a");
    let text = config(&a, &b, &c, r#""b""#, None)
        .replace("[breaker]", "[server]\nmax_in_flight = 7\n\n[breaker]");
    let r = client()
        .put(format!("{}/api/config", app.url))
        .json(&json!({ "text": text }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["applied"],
        "applied (routes changed); [server] changed and applies at the next start"
    );
    assert_eq!(v["restart_required"], true);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    // At once, without waiting for the file watcher.
    assert_eq!(served_by(&ask(&app, "claude-sonnet-4-5", false).await), "b");
}
