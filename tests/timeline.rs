//! The incident timeline: a primary that fails, is skipped while its breaker is open, and
//! answers again; the outage as `/api/timeline` tells it and as the recovery notification
//! says it, in one sentence with the right counts.

use crate::support::{get_json, until, App};
use serde_json::json;
use understudy::config::{Config, ConfigSource};
use understudy::testing::{anthropic, MockCloud, Reply};

const KEY_VAR: &str = "UNDERSTUDY_TEST_TIMELINE_KEY";

#[tokio::test]
async fn an_outage_is_one_sentence_in_the_timeline_and_in_the_recovery_notification() {
    std::env::set_var(KEY_VAR, "sk-timeline");
    let (primary, secondary) = (MockCloud::start().await, MockCloud::start().await);
    let toml = format!(
        r#"
[providers.primary]
kind = "anthropic"
base_url = "{p}"
api_key_env = "{KEY_VAR}"
continuation = "off"

[providers.secondary]
kind = "anthropic"
base_url = "{s}"
api_key_env = "{KEY_VAR}"
continuation = "off"

[breaker]
consecutive_failures = 1
open_base = "1s"
probe_interval = "200ms"

[[routes]]
model = "claude-*"
backends = ["primary", "secondary"]
"#,
        p = primary.url(),
        s = secondary.url()
    );
    let app = App::start(Config::from_toml(&toml, ConfigSource::ZeroConfig).unwrap()).await;
    let ask = async || {
        let r = crate::support::post(
            &app.url,
            "/v1/messages",
            &crate::support::anthropic_body(false),
        )
        .await;
        assert_eq!(r.status(), 200);
        r.headers()["x-understudy-served-by"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(ask().await, "primary");
    primary.push(Reply::json(
        529,
        &anthropic::error("overloaded_error", "Overloaded"),
    ));
    // Fails over; then skipped while its breaker is open, until its probe puts it on trial
    // (at once here: the check that a breaker opening wakes finds the model list answering)
    // and the next request, which it answers, closes it.
    assert_eq!(ask().await, "secondary");
    let mut instead = 1;
    loop {
        let who = ask().await;
        if who == "primary" {
            break;
        }
        assert_eq!(who, "secondary");
        instead += 1;
        assert!(instead < 200, "the primary never came back");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let answered = format!(
        "(overloaded, HTTP 529); {instead} request{} answered by secondary, 0 continued mid-answer, 0 lost",
        if instead == 1 { "" } else { "s" }
    );
    until("the recovery notification", async || {
        app.notice("Recovered").is_some()
    })
    .await;
    let body = app.notice("Recovered").unwrap();
    assert!(
        body.starts_with("primary/claude-sonnet-4-5 answers again: primary failed for ")
            && body.ends_with(&answered),
        "{body}"
    );
    let t = get_json(&app.url, "/api/timeline?tz_offset_min=0").await;
    let o = &t["outages"][0];
    assert_eq!(o["provider"], "primary");
    assert_eq!(o["requests"], instead);
    assert_eq!(
        o["served_by"],
        json!({"secondary/claude-sonnet-4-5": instead})
    );
    assert!(o["ended_ms"].as_u64().unwrap() > o["started_ms"].as_u64().unwrap());
    let summary = o["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("primary failed ") && summary.ends_with(&answered),
        "{summary}"
    );
}
