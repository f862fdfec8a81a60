//! Quota awareness against a mock that keeps a usage plan as the real APIs do (protocol.md
//! §1.10): the unified headers on every answer, a 429 `rejected` once the window is spent,
//! until it resets. What the status, `/metrics`, the tray's view and the notifications show;
//! spill-over at a threshold and back after the reset; a refusal taking the backend out until
//! its reset, not for a breaker's seconds.

use crate::support::{client, get_json, served_by, until, App};
use serde_json::{json, Value};
use understudy::config::{Config, ConfigSource};
use understudy::desktop::tray;
use understudy::testing::{MockCloud, Plan, PlanHeaders};

const KEY_VAR: &str = "UNDERSTUDY_TEST_QUOTA_KEY";

/// A gateway whose `claude` provider passes the client's login through to `plan` (the mock
/// keeping the plan), with `fallback` next in the `claude-*` route; `solo-*` has `claude` alone.
async fn start(plan: &MockCloud, fallback: &MockCloud, claude_extra: &str) -> App {
    std::env::set_var(KEY_VAR, "sk-quota-fallback");
    let toml = format!(
        r#"
[providers.claude]
kind = "anthropic"
base_url = "{p}"
passthrough_auth = "{p}"
continuation = "off"
{claude_extra}

[providers.fallback]
kind = "anthropic"
base_url = "{f}"
api_key_env = "{KEY_VAR}"
continuation = "off"

[breaker]
consecutive_failures = 50

[[routes]]
model = "claude-*"
backends = ["claude", "fallback"]

[[routes]]
model = "solo-*"
backends = ["claude"]
"#,
        p = plan.url(),
        f = fallback.url()
    );
    App::start(Config::from_toml(&toml, ConfigSource::ZeroConfig).expect("valid config")).await
}

/// Claude Code's request with its subscription login (a bearer token), in a session.
async fn ask(g: &App, model: &str, session: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/messages", g.url))
        .bearer_auth("sk-ant-oat01-the-users-login")
        .header("anthropic-version", "2023-06-01")
        .header("x-claude-code-session-id", session)
        .json(&json!({"model": model, "max_tokens": 64, "stream": false,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

fn posts(mock: &MockCloud) -> usize {
    mock.hits()
        .iter()
        .filter(|(k, _)| k.starts_with("POST "))
        .map(|(_, n)| *n as usize)
        .sum()
}

fn quota_of(status: &Value, provider: &str) -> Value {
    status["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == provider)
        .unwrap()["quota"]
        .clone()
}

#[tokio::test]
async fn a_plan_nearing_its_limit_is_shown_and_told_then_spilled_over_and_back_after_the_reset() {
    let plan = MockCloud::start().await;
    let fallback = MockCloud::start().await;
    plan.set_plan(Some(Plan {
        per_request: 0.3,
        window_ms: 8_000,
        headers: PlanHeaders::Unified,
    }));
    let g = start(&plan, &fallback, "spill_over_at = 0.95").await;
    for _ in 0..3 {
        let r = ask(&g, "claude-sonnet-4-5", "s1").await;
        assert_eq!((r.status().as_u16(), served_by(&r)), (200, "claude".into()));
    }
    // 90 % of the 5-hour window: in the status, /metrics, the tray and one notification.
    let status = get_json(&g.url, "/api/status").await;
    let q = quota_of(&status, "claude");
    assert_eq!(q.as_array().unwrap().len(), 1, "{q}");
    let credential = q[0]["credential"].as_str().unwrap().to_owned();
    assert!(credential.starts_with("client "), "{credential}");
    assert!(
        !status.to_string().contains("the-users-login"),
        "the login never appears"
    );
    assert_eq!(q[0]["plan"], true);
    assert_eq!(q[0]["standing"], "warning");
    assert_eq!(q[0]["windows"][0]["name"], "5h");
    assert_eq!(q[0]["windows"][0]["utilization"], 0.9);
    assert_eq!(q[0]["windows"][1]["name"], "7d");
    let metrics = client()
        .get(format!("{}/metrics", g.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "understudy_quota_utilization{{provider=\"claude\",credential=\"{credential}\",window=\"5h\"}} 0.9\n"
        )),
        "{metrics}"
    );
    let view = tray::view(&g.state.snapshot(), tray::Local::default());
    let line = view
        .menu
        .iter()
        .flatten()
        .find(|i| i.id.starts_with("info:claude:quota:"))
        .expect("a quota line in the tray menu");
    assert!(
        line.label
            .starts_with("claude plan: 5-hour 90 %, resets in ")
            && line.label.contains("· week 9 %"),
        "{}",
        line.label
    );
    until("the 80 % notice", async || {
        g.notice("claude: plan 5-hour window at 90 %").is_some()
    })
    .await;
    let body = g.notice("claude: plan 5-hour window at 90 %").unwrap();
    assert!(
        body.contains("At 95 %, new requests go to the next backend"),
        "{body}"
    );

    // The fourth fills the window past 95 %: told, and new requests go to the fallback,
    // the Claude Code session too, without a request to the plan's provider.
    let r = ask(&g, "claude-sonnet-4-5", "s1").await;
    assert_eq!(served_by(&r), "claude");
    until("the 95 % notice", async || {
        g.notice("claude: plan 5-hour window at 100 %").is_some()
    })
    .await;
    let sent = posts(&plan);
    for session in ["s1", "s2"] {
        let r = ask(&g, "claude-sonnet-4-5", session).await;
        assert_eq!(
            (r.status().as_u16(), served_by(&r)),
            (200, "fallback".into())
        );
    }
    assert_eq!(
        posts(&plan),
        sent,
        "nothing went to the spilled-over backend"
    );
    // A route with nowhere else to go gets a 429 that says when, in Anthropic's shape.
    let r = ask(&g, "solo-model", "s3").await;
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=9).contains(&wait), "retry-after {wait}");
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["type"], "rate_limit_error");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("5-hour window at 100 % (spill_over_at 0.95)"),
        "{msg}"
    );
    assert_eq!(posts(&plan), sent);

    // The window resets (5 s after its first request): the session goes back, and it is told.
    until("the reset", async || {
        let s = get_json(&g.url, "/api/status").await;
        quota_of(&s, "claude")[0]["windows"][0]["utilization"] == 0.0
    })
    .await;
    let r = ask(&g, "claude-sonnet-4-5", "s1").await;
    assert_eq!(
        served_by(&r),
        "claude",
        "the session went back after the reset"
    );
    assert_eq!(posts(&plan), sent + 1);
    until("the reset notice", async || {
        g.notice("claude: quota reset").is_some()
    })
    .await;
}

#[tokio::test]
async fn a_rejected_429_takes_the_backend_out_until_its_reset_not_for_a_breakers_seconds() {
    let plan = MockCloud::start().await;
    let fallback = MockCloud::start().await;
    plan.set_plan(Some(Plan {
        per_request: 0.5,
        window_ms: 6_000,
        headers: PlanHeaders::Unified,
    }));
    // No spill-over: the plan is used to the end, and the provider's own refusal decides.
    let g = start(&plan, &fallback, "").await;
    for _ in 0..2 {
        assert_eq!(
            served_by(&ask(&g, "claude-sonnet-4-5", "s1").await),
            "claude"
        );
    }
    // Spent: the provider refuses with 429 `rejected`; the request fails over.
    let r = ask(&g, "claude-sonnet-4-5", "s1").await;
    assert_eq!(
        (r.status().as_u16(), served_by(&r)),
        (200, "fallback".into())
    );
    let sent = posts(&plan);
    until("the refusal notice", async || {
        g.notice("claude: out of quota").is_some()
    })
    .await;
    let status = get_json(&g.url, "/api/status").await;
    let q = &quota_of(&status, "claude")[0];
    assert_eq!(q["standing"], "rejected");
    assert!(q["out_until_ms"].as_u64().unwrap() > status["at_ms"].as_u64().unwrap());
    // The breaker did not open (50 failures needed): it is the quota that keeps requests away.
    let breakers: Vec<String> = status["providers"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["breaker"].as_str().unwrap().to_owned())
        .collect();
    assert!(breakers.iter().all(|b| b == "closed"), "{breakers:?}");
    let view = tray::view(&g.state.snapshot(), tray::Local::default());
    assert_eq!(view.icon, tray::Icon::Degraded);
    assert!(
        view.tooltip
            .starts_with("Understudy: claude out of quota until its reset in "),
        "{}",
        view.tooltip
    );
    for _ in 0..3 {
        assert_eq!(
            served_by(&ask(&g, "claude-sonnet-4-5", "s2").await),
            "fallback"
        );
    }
    let r = ask(&g, "solo-model", "s3").await;
    assert_eq!(r.status(), 429);
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            <= 7
    );
    let msg = r.text().await.unwrap();
    assert!(
        msg.contains("refused by the provider until its reset"),
        "{msg}"
    );
    assert_eq!(posts(&plan), sent, "nothing was sent while it was out");
    // After the reset it serves again.
    until("the refusal to end", async || {
        let s = get_json(&g.url, "/api/status").await;
        quota_of(&s, "claude")[0].get("out_until_ms").is_none()
    })
    .await;
    assert_eq!(
        served_by(&ask(&g, "claude-sonnet-4-5", "s4").await),
        "claude"
    );
    assert_eq!(posts(&plan), sent + 1);
    assert_eq!(
        tray::view(&g.state.snapshot(), tray::Local::default()).icon,
        tray::Icon::Healthy
    );
}

#[tokio::test]
async fn an_openai_compatible_providers_rate_limit_headers_are_its_windows() {
    std::env::set_var(KEY_VAR, "sk-quota-fallback");
    let mock = MockCloud::start().await;
    mock.set_plan(Some(Plan {
        per_request: 0.25,
        window_ms: 60_000,
        headers: PlanHeaders::Openai,
    }));
    let toml = format!(
        r#"
[providers.router]
kind = "openai"
base_url = "{url}/v1"
api_key_env = "{KEY_VAR}"
continuation = "off"

[[routes]]
model = "*"
backends = ["router/gpt-5"]
"#,
        url = mock.url()
    );
    let h = crate::support::start_config(mock, &toml).await;
    // Translated: an Anthropic client, an OpenAI-compatible provider.
    let r = crate::support::post(
        &h.url,
        "/v1/messages",
        &crate::support::anthropic_body(true),
    )
    .await;
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await.unwrap();
    let status = get_json(&h.url, "/api/status").await;
    let q = &quota_of(&status, "router")[0];
    assert_eq!(q["credential"], "key");
    assert_eq!(q["plan"], false);
    let w = &q["windows"][0];
    assert_eq!(
        (
            w["name"].as_str(),
            w["limit"].as_u64(),
            w["remaining"].as_u64()
        ),
        (Some("requests"), Some(4), Some(3))
    );
    assert_eq!(w["utilization"], 0.25);
    let resets_in = w["resets_at_ms"].as_u64().unwrap() - status["at_ms"].as_u64().unwrap();
    assert!((55_000..=61_000).contains(&resets_in), "{resets_in}");
}
