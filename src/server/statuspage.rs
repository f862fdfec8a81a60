//! Providers' own status pages: each cloud provider's statuspage.io summary
//! (`/api/v2/summary.json`: the page's verdict, its components, its unresolved incidents) is
//! read every `status_poll` (60 s) while the network is up, never on a request's path, by a
//! client of its own that sends nothing of the gateway's (no key, no client header). What it
//! declares is shown beside Understudy's own measured health ([`Health::read_page`]): an
//! incident of a component the provider's routes use (`status_components`) warms the local
//! model as an open breaker does, is told once, and is kept in the journal with when
//! Understudy's own requests began failing, so who knew first is on record.
//!
//! [`Health::read_page`]: crate::routing::health::Health::read_page

use super::AppState;
use crate::telemetry::status::{Incident, PageStatus};
use serde::Deserialize;
use std::sync::Weak;
use std::time::Duration;

/// How long one read of a page may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A summary page is small; one past this is not a status page.
const MAX_PAGE: usize = 1 << 20;

#[derive(Deserialize)]
struct Summary {
    #[serde(default)]
    status: Option<Verdict>,
    #[serde(default)]
    incidents: Vec<RawIncident>,
}

#[derive(Deserialize)]
struct Verdict {
    #[serde(default)]
    indicator: String,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
struct RawIncident {
    id: String,
    name: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    impact: String,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    shortlink: Option<String>,
    #[serde(default)]
    components: Vec<RawComponent>,
}

#[derive(Deserialize)]
struct RawComponent {
    name: String,
}

/// Reads a summary's body: its verdict and its unresolved incidents, each marked relevant
/// when it names one of `components` (in part, case aside; an empty list takes every
/// component) or names none at all (it cannot be told apart).
pub fn parse(
    body: &[u8],
    url: &str,
    components: &[String],
    now_ms: u64,
) -> Result<PageStatus, String> {
    let s: Summary =
        serde_json::from_slice(body).map_err(|e| format!("not a statuspage.io summary ({e})"))?;
    let wanted: Vec<String> = components.iter().map(|c| c.to_lowercase()).collect();
    let incidents = s
        .incidents
        .into_iter()
        .filter(|i| !matches!(i.status.as_str(), "resolved" | "postmortem"))
        .map(|i| {
            let names: Vec<String> = i.components.into_iter().map(|c| c.name).collect();
            let relevant = wanted.is_empty()
                || names.is_empty()
                || names
                    .iter()
                    .any(|n| wanted.iter().any(|w| n.to_lowercase().contains(w)));
            let declared_ms = i
                .created_at
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(now_ms, |d| d.as_millis() as u64);
            Incident {
                id: i.id,
                name: i.name,
                impact: i.impact,
                status: i.status,
                components: names,
                relevant,
                declared_ms,
                seen_ms: now_ms,
                first_failure_ms: None,
                link: i.shortlink,
            }
        })
        .collect();
    let (indicator, description) = s
        .status
        .map(|v| (v.indicator, v.description))
        .unwrap_or_default();
    Ok(PageStatus {
        url: url.to_owned(),
        at_ms: now_ms,
        description,
        indicator,
        incidents,
        error: None,
    })
}

/// Reads `name`'s status page every `status_poll` while the network is up, for as long as the
/// provider is configured with one (a reload may add, change or remove it).
pub async fn watch(state: Weak<AppState>, name: String) {
    let client = reqwest::Client::builder()
        .timeout(READ_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("understudy/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a client with these settings always builds");
    loop {
        let poll = {
            let Some(st) = state.upgrade() else { return };
            let Some(provider) = st.router.provider(&name) else {
                st.router.health().forget_page(&name);
                st.watched
                    .lock()
                    .expect("watched lock")
                    .remove(&format!("page:{name}"));
                return;
            };
            let cfg = &provider.config;
            // A reload that turned the page off or pointed it elsewhere: the old one's
            // incidents are not this provider's news any more.
            let stale = st
                .router
                .health()
                .page(&name)
                .is_some_and(|p| cfg.status_page.as_ref().is_none_or(|u| u.as_str() != p.url));
            if stale {
                st.router.health().forget_page(&name);
            }
            if let (Some(url), false) = (&cfg.status_page, st.router.health().offline()) {
                let (url, components) = (url.clone(), cfg.status_components.clone());
                drop(st);
                let page = read(&client, &url, &components).await;
                let Some(st) = state.upgrade() else { return };
                st.router.health().read_page(&name, page);
            }
            provider.config.status_poll
        };
        tokio::time::sleep(poll).await;
    }
}

async fn read(client: &reqwest::Client, url: &url::Url, components: &[String]) -> PageStatus {
    let now = crate::quota::now_ms();
    let failed = |why: String| PageStatus {
        url: url.to_string(),
        at_ms: now,
        description: String::new(),
        indicator: String::new(),
        incidents: Vec::new(),
        error: Some(why),
    };
    let mut resp = match client.get(url.clone()).send().await {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => return failed(format!("HTTP {}", r.status().as_u16())),
        Err(e) => {
            return failed(format!(
                "no answer ({})",
                crate::secret::redact(&e.to_string())
            ))
        }
    };
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) if body.len() + c.len() <= MAX_PAGE => body.extend_from_slice(&c),
            Ok(Some(_)) => return failed(format!("larger than {MAX_PAGE} bytes")),
            Ok(None) => break,
            Err(e) => return failed(format!("cut off ({e})")),
        }
    }
    parse(&body, url.as_str(), components, now).unwrap_or_else(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of status.anthropic.com's summary during an incident (trimmed).
    const PAGE: &str = r#"{
      "page": {"id": "tymt9n04zgry", "name": "Anthropic", "url": "https://status.anthropic.com"},
      "components": [{"id": "k8w3r06qmzrp", "name": "claude.ai", "status": "operational"},
                     {"id": "1v8wl0mxgx6b", "name": "Claude API (api.anthropic.com)", "status": "partial_outage"}],
      "incidents": [
        {"id": "abc", "name": "Elevated errors on Claude Opus", "status": "investigating", "impact": "major",
         "created_at": "2026-12-01T20:03:00.000Z", "shortlink": "https://stspg.io/abc",
         "components": [{"id": "1v8wl0mxgx6b", "name": "Claude API (api.anthropic.com)"}]},
        {"id": "def", "name": "Login issues on claude.ai", "status": "identified", "impact": "minor",
         "created_at": "2026-12-01T19:00:00Z", "components": [{"id": "k8w3r06qmzrp", "name": "claude.ai"}]},
        {"id": "old", "name": "Resolved one", "status": "resolved", "impact": "minor", "components": []}
      ],
      "scheduled_maintenances": [],
      "status": {"indicator": "major", "description": "Partial System Outage"}
    }"#;

    #[test]
    fn a_summary_reads_as_its_incidents_marked_by_the_components_the_routes_use() {
        let p = parse(
            PAGE.as_bytes(),
            "https://status.anthropic.com/api/v2/summary.json",
            &["Claude API".into(), "Claude Code".into()],
            1,
        )
        .unwrap();
        assert_eq!(
            (p.indicator.as_str(), p.description.as_str()),
            ("major", "Partial System Outage")
        );
        let ids: Vec<_> = p
            .incidents
            .iter()
            .map(|i| (i.id.as_str(), i.relevant))
            .collect();
        assert_eq!(
            ids,
            [("abc", true), ("def", false)],
            "resolved ones are not declared"
        );
        assert_eq!(p.incidents[0].declared_ms, 1_796_155_380_000);
        assert_eq!(p.incidents[0].link.as_deref(), Some("https://stspg.io/abc"));
        // No components configured: every incident counts.
        let all = parse(PAGE.as_bytes(), "u", &[], 1).unwrap();
        assert!(all.incidents.iter().all(|i| i.relevant));
        assert!(parse(b"<html>", "u", &[], 1)
            .unwrap_err()
            .contains("not a statuspage.io summary"));
    }
}
