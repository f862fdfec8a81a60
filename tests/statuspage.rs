//! A provider's own status page, served in statuspage.io's shape by the mock: an incident
//! declared after Understudy's requests began failing (and one of a component the routes do
//! not use), then resolved. What the status, the tray and the notifications say, the local
//! model warmed by the declaration, and the journal's record of who knew first.

use crate::support::{get_json, until, App};
use serde_json::Value;
use std::time::{Duration, SystemTime};
use understudy::config::{Config, ConfigSource};
use understudy::desktop::tray;
use understudy::testing::{anthropic, status_page, MockCloud, Reply};

const KEY_VAR: &str = "UNDERSTUDY_TEST_STATUSPAGE_KEY";

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn page_of(status: &Value, provider: &str) -> Value {
    status["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == provider)
        .unwrap()["status_page"]
        .clone()
}

#[tokio::test]
async fn an_incident_on_the_status_page_is_shown_warms_the_local_model_and_is_journaled_with_who_knew_first(
) {
    std::env::set_var(KEY_VAR, "sk-statuspage");
    std::env::set_var("UNDERSTUDY_WORKER_BIN", env!("CARGO_BIN_EXE_understudy"));
    let mock = MockCloud::start().await;
    let (_model_dir, model) = crate::local::model("statuspage");
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.sqlite3");
    let toml = format!(
        r#"
[providers.claude]
kind = "anthropic"
base_url = "{url}"
api_key_env = "{KEY_VAR}"
continuation = "off"
status_page = "{url}/api/v2/summary.json"
status_components = ["Claude API"]
status_poll = "200ms"

[providers.local]
kind = "local"
model_file = "{model}"
context_size = 512
threads = 1

[breaker]
consecutive_failures = 50
check_interval = "0s"

[journal]
path = "{journal}"

[[routes]]
model = "claude-*"
backends = ["claude"]
"#,
        url = mock.url(),
        journal = journal.display()
    );
    let app = App::start(Config::from_toml(&toml, ConfigSource::ZeroConfig).unwrap()).await;
    until("the page read as operational", async || {
        let p = page_of(&get_json(&app.url, "/api/status").await, "claude");
        p["description"] == "All Systems Operational"
    })
    .await;
    let s = get_json(&app.url, "/api/status").await;
    assert_eq!(s["local"]["state"], "not_loaded", "{s}");

    // Understudy's requests fail first...
    mock.push(Reply::json(
        529,
        &anthropic::error("overloaded_error", "Overloaded"),
    ));
    let r = crate::support::post(
        &app.url,
        "/v1/messages",
        &crate::support::anthropic_body(false),
    )
    .await;
    assert_eq!(r.status(), 529);
    let failed_at = SystemTime::now();
    // ...the page declares it two minutes later (by its clock), with a claude.ai incident too.
    let declared = failed_at + Duration::from_secs(120);
    mock.set_status_page(Some(status_page(&[
        (
            "inc-api",
            "Elevated errors on Claude Opus",
            "major",
            &rfc3339(declared),
            &["Claude API (api.anthropic.com)"],
        ),
        (
            "inc-web",
            "Login issues on claude.ai",
            "minor",
            &rfc3339(failed_at),
            &["claude.ai"],
        ),
    ])));
    until("the incidents", async || {
        page_of(&get_json(&app.url, "/api/status").await, "claude")["incidents"]
            .as_array()
            .is_some_and(|i| i.len() == 2)
    })
    .await;
    let page = page_of(&get_json(&app.url, "/api/status").await, "claude");
    let api = &page["incidents"][0];
    assert_eq!(
        (api["id"].as_str(), api["relevant"].as_bool()),
        (Some("inc-api"), Some(true))
    );
    assert_eq!(page["incidents"][1]["relevant"], false);
    let lead = api["declared_ms"].as_u64().unwrap() - api["first_failure_ms"].as_u64().unwrap();
    assert!((119_000..=121_000).contains(&lead), "lead {lead} ms");
    // The tray shows the incident that touches what the routes use, not the other one.
    let view = tray::view(&app.state.snapshot(), tray::Local::default());
    let lines: Vec<&str> = view
        .menu
        .iter()
        .flatten()
        .map(|i| i.label.as_str())
        .collect();
    assert!(
        lines
            .contains(&"claude status page: Elevated errors on Claude Opus (major, investigating)"),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("claude.ai")), "{lines:?}");
    // The local model loads though no request went to it.
    until("the local model to load", async || {
        let s = get_json(&app.url, "/api/status").await;
        matches!(s["local"]["state"].as_str(), Some("loading" | "ready"))
    })
    .await;
    until("the notification", async || {
        app.notice("claude: incident declared").is_some()
    })
    .await;
    let body = app.notice("claude: incident declared").unwrap();
    assert_eq!(
        body,
        "Elevated errors on Claude Opus (major); Understudy saw failures 2 m before the page"
    );

    // Resolved: gone from the page, the journal keeps the story.
    mock.set_status_page(None);
    until("the resolution", async || {
        page_of(&get_json(&app.url, "/api/status").await, "claude")["incidents"]
            .as_array()
            .is_some_and(|i| i.is_empty())
    })
    .await;
    until("the resolution in the journal", async || {
        let j =
            understudy::telemetry::journal::Journal::open(&journal, Default::default()).unwrap();
        let rows = j.incidents().unwrap();
        rows.iter()
            .any(|r| r.incident.id == "inc-api" && r.resolved_ms.is_some())
    })
    .await;
    let j = understudy::telemetry::journal::Journal::open(&journal, Default::default()).unwrap();
    let rows = j.incidents().unwrap();
    let api = rows.iter().find(|r| r.incident.id == "inc-api").unwrap();
    assert!(
        (119_000..=121_000).contains(&api.lead_ms.unwrap()),
        "{api:?}"
    );
    assert_eq!(api.provider, "claude");
    let web = rows.iter().find(|r| r.incident.id == "inc-web").unwrap();
    assert!(!web.incident.relevant);
    until("the resolved notification", async || {
        app.notice("claude: incident resolved").is_some()
    })
    .await;
}
