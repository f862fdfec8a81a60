//! The status snapshot (`GET /api/status`, the first event of `/api/events`): the one shape the
//! gateway writes and the terminal (`understudy status`), the tray and the dashboard read.

use serde::{Deserialize, Serialize};

/// What a token-free check of a cloud provider (its model list) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    /// It answered, and took the configured key (or has none configured: the clients' own
    /// credentials pass through).
    Reachable,
    /// It answered 401/403 (Gemini: 400 `API_KEY_INVALID`) to the configured key.
    KeyRejected,
    /// It has no key it can send (the configured one cannot be read, or none is configured
    /// and clients' own do not pass through): requests are refused before they leave.
    KeyMissing,
    /// No answer: refused, no route, no name, TLS failed, or nothing within the probe's time.
    Unreachable,
}

impl Reach {
    /// A short stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Reachable => "reachable",
            Reach::KeyRejected => "key_rejected",
            Reach::KeyMissing => "key_missing",
            Reach::Unreachable => "unreachable",
        }
    }
}

/// The latest check of a provider (as `/api/status` shows it, under `check`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Check {
    /// What it found.
    pub reach: Reach,
    /// When (Unix ms).
    pub at_ms: u64,
    /// What it saw, in words (`GET /v1/models answered 200`, `the key was rejected (401): …`).
    pub detail: String,
}

/// What the gateway is doing now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The gateway's version.
    pub version: String,
    /// When it was taken (Unix ms): what "resets in …" is counted from.
    #[serde(default)]
    pub at_ms: u64,
    /// `auto`, `local-only` or `cloud-only`.
    pub mode: String,
    /// Whether the network looks down.
    pub offline: bool,
    /// Every configured provider, in config order.
    pub providers: Vec<ProviderStatus>,
    /// The first local provider's engine again, for a glance.
    pub local: Option<serde_json::Value>,
    /// Requests, failovers, tokens and spend since the gateway started.
    #[serde(default)]
    pub totals: crate::telemetry::observe::Totals,
    /// The Claude Code settings file's state (whether it points here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claude_code: Option<ClaudeCode>,
    /// Paused: requests go to their route's first backend only, as if Understudy were not
    /// there (no failover, continuation or local fallback); notifications are off.
    #[serde(default)]
    pub paused: bool,
    /// The latest live reload of the config (none yet: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigState>,
}

/// How the latest live reload of the config went (`server::reload`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigState {
    /// When (Unix ms).
    pub at_ms: u64,
    /// Applied (`true`), or the file is invalid and the running configuration stays.
    pub ok: bool,
    /// What changed, or why it was not applied, in words.
    pub message: String,
    /// Each issue of an invalid file: its TOML path and what is wrong.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<(String, String)>,
}

/// Claude Code's connection as the snapshot, the tray and the dashboard show it (read by
/// `desktop::claude_code::state`, which names this type `State`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaudeCode {
    /// The settings point at Understudy (we wrote the key and it still holds our URL).
    pub connected: bool,
    /// The URL they point at, if any.
    pub url: Option<String>,
    /// The settings file.
    pub settings: String,
}

/// One provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderStatus {
    /// Its name in the config.
    pub name: String,
    /// `anthropic`, `openai`, `gemini` or `local`.
    pub kind: String,
    /// The backends (`provider/model`) used so far, with their breakers.
    pub backends: Vec<BackendStatus>,
    /// A local provider's engine ([`crate::providers::local::LocalStatus`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<serde_json::Value>,
    /// What is known of it, in one word ([`Health`]).
    #[serde(default)]
    pub health: Health,
    /// Its latest token-free check (a cloud provider's model list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
    /// Its latest real request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<LastRequest>,
    /// What its answers' rate-limit headers said, per credential (the configured key first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quota: Vec<crate::quota::Quota>,
    /// What its own status page declares (a cloud provider with one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_page: Option<PageStatus>,
}

/// A provider's statuspage.io page as last read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageStatus {
    /// The summary's URL.
    pub url: String,
    /// When it was last read (Unix ms), well or not.
    pub at_ms: u64,
    /// The page's own one-line verdict (`All Systems Operational`), when read.
    #[serde(default)]
    pub description: String,
    /// `none`, `minor`, `major` or `critical`.
    #[serde(default)]
    pub indicator: String,
    /// The incidents it declares, unresolved, newest first.
    #[serde(default)]
    pub incidents: Vec<Incident>,
    /// Why it could not be read, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PageStatus {
    /// The declared incidents that touch the components the provider's routes use.
    pub fn relevant(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.iter().filter(|i| i.relevant)
    }
}

/// One incident a status page declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// The page's id for it.
    pub id: String,
    /// Its title (`Elevated errors on Claude Opus`).
    pub name: String,
    /// `none`, `minor`, `major` or `critical`.
    pub impact: String,
    /// `investigating`, `identified`, `monitoring`.
    pub status: String,
    /// The components it names.
    #[serde(default)]
    pub components: Vec<String>,
    /// It names a component the provider's routes use (or none at all).
    pub relevant: bool,
    /// When the page declared it (its `created_at`, Unix ms).
    pub declared_ms: u64,
    /// When Understudy first read it (Unix ms).
    pub seen_ms: u64,
    /// When Understudy's own requests to the provider began failing, in the run of failures it
    /// was in when the incident was declared, if it was (Unix ms): `declared_ms` minus this is
    /// how long before the page Understudy knew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_failure_ms: Option<u64>,
    /// Its page (`shortlink`), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl Incident {
    /// Who knew first, in words: `Understudy saw failures 4 m before the page` (or after).
    pub fn lead_words(&self) -> Option<String> {
        let first = self.first_failure_ms?;
        // To the nearest second, then minute: a lead is a length, not a countdown.
        let words = |ms: u64| {
            let s = (ms + 500) / 1000;
            match s {
                0..=59 => format!("{s} s"),
                60..=3599 => format!("{} m", (s + 30) / 60),
                _ => format!("{} h {} m", s / 3600, (s % 3600 + 30) / 60),
            }
        };
        Some(if first <= self.declared_ms {
            format!(
                "Understudy saw failures {} before the page",
                words(self.declared_ms - first)
            )
        } else {
            format!(
                "the page declared it {} before Understudy saw failures",
                words(first - self.declared_ms)
            )
        })
    }
}

/// A provider's latest real request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRequest {
    /// When it ended (Unix ms).
    pub at_ms: u64,
    /// Whether it went well.
    pub ok: bool,
}

/// What is known of a provider, from the strongest evidence down: its breakers (real
/// traffic), the network, then whichever is newer of its latest real request and its latest
/// check. Never `healthy` on no evidence: a provider nothing has checked is `unknown`, one
/// whose model list answered but that has served nothing yet is `reachable`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not checked and never used.
    #[default]
    Unknown,
    /// Its check answered; no request has gone there yet.
    Reachable,
    /// It served real requests, and its breakers are closed.
    Healthy,
    /// Its check found the configured key rejected.
    KeyRejected,
    /// It has no key it can send: requests needing one are refused before they leave.
    KeyMissing,
    /// Its check got no answer (refused, TLS, no answer in time).
    Unreachable,
    /// The network looks down.
    Offline,
    /// A breaker of it is open: requests skip it.
    Failing,
    /// A breaker of it is on trial.
    Recovering,
    /// The embedded engine (its own state is in `local`).
    Local,
}

impl Health {
    /// A short stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Reachable => "reachable",
            Health::Healthy => "healthy",
            Health::KeyRejected => "key_rejected",
            Health::KeyMissing => "key_missing",
            Health::Unreachable => "unreachable",
            Health::Offline => "offline",
            Health::Failing => "failing",
            Health::Recovering => "recovering",
            Health::Local => "local",
        }
    }

    /// In words, for a menu or a card: `not checked yet`, `reachable`, `key rejected`, …
    pub fn words(self) -> &'static str {
        match self {
            Health::Unknown => "not checked yet",
            Health::Reachable => "reachable",
            Health::Healthy => "healthy",
            Health::KeyRejected => "key rejected",
            Health::KeyMissing => "key missing",
            Health::Unreachable => "unreachable",
            Health::Offline => "unreachable (offline)",
            Health::Failing => "failing",
            Health::Recovering => "on trial",
            Health::Local => "local",
        }
    }

    /// Judges a provider ([`Health`]'s rules).
    pub fn of(
        local: bool,
        backends: &[BackendStatus],
        offline: bool,
        check: Option<&Check>,
        last: Option<&LastRequest>,
    ) -> Health {
        if local {
            return Health::Local;
        }
        if backends.iter().any(|b| b.breaker == "open") {
            return Health::Failing;
        }
        if backends.iter().any(|b| b.breaker == "half_open") {
            return Health::Recovering;
        }
        if offline {
            return Health::Offline;
        }
        let served = last.is_some_and(|l| l.ok);
        let request_newer = last.is_some_and(|l| check.is_none_or(|c| l.at_ms >= c.at_ms));
        match check {
            // A request that went well, since the last check: the best evidence there is.
            _ if request_newer && served => Health::Healthy,
            Some(c) => match c.reach {
                Reach::Reachable if served => Health::Healthy,
                Reach::Reachable => Health::Reachable,
                Reach::KeyRejected => Health::KeyRejected,
                Reach::KeyMissing => Health::KeyMissing,
                Reach::Unreachable => Health::Unreachable,
            },
            // Unchecked (checks off): only a request that went well says anything good.
            None if served => Health::Healthy,
            None => Health::Unknown,
        }
    }
}

/// One backend: its breaker and its figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// `provider/model`.
    pub backend: String,
    /// `closed`, `open` or `half_open`.
    pub breaker: String,
    /// Latency, errors, tokens and spend ([`crate::telemetry::observe`]).
    #[serde(default)]
    pub stats: crate::telemetry::observe::BackendStats,
}

impl ProviderStatus {
    /// True for the embedded engine.
    pub fn is_local(&self) -> bool {
        self.kind == "local"
    }

    /// Its [`Health`] in words, with `no requests yet` said of a reachable provider that has
    /// served none.
    pub fn state_words(&self) -> String {
        match (self.health, &self.last_request) {
            (Health::Reachable, None) => "reachable, no requests yet".to_owned(),
            (h, _) => h.words().to_owned(),
        }
    }

    /// True when some backend of it is failing (its breaker open or on trial).
    pub fn failing(&self) -> bool {
        self.backends.iter().any(|b| b.breaker != "closed")
    }

    /// A credential of it refused by the provider until a reset at this time (Unix ms), the
    /// earliest, if any is still ahead of `now_ms`.
    pub fn refused_until(&self, now_ms: u64) -> Option<u64> {
        self.quota
            .iter()
            .filter_map(|q| q.out_until_ms)
            .filter(|u| *u > now_ms)
            .min()
    }

    /// The local engine's state (`not_loaded`, `loading`, `ready`, `crashed`, `failed`).
    pub fn local_state(&self) -> Option<&str> {
        self.local.as_ref().and_then(|l| l["state"].as_str())
    }
}

/// A label value, escaped as the Prometheus text format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The snapshot in Prometheus's text exposition format.
pub fn prometheus(s: &Snapshot) -> String {
    let mut out = String::new();
    let modes = ["auto", "local-only", "cloud-only"]
        .iter()
        .map(|m| format!("{{mode=\"{m}\"}} {}", u8::from(s.mode == *m)))
        .collect();
    family(
        &mut out,
        "understudy_mode",
        "gauge",
        "The routing mode in force (1 for the current one).",
        modes,
    );
    family(
        &mut out,
        "understudy_offline",
        "gauge",
        "1 while the network looks down.",
        vec![format!(" {}", u8::from(s.offline))],
    );
    const HEALTHS: [Health; 10] = [
        Health::Unknown,
        Health::Reachable,
        Health::Healthy,
        Health::KeyRejected,
        Health::KeyMissing,
        Health::Unreachable,
        Health::Offline,
        Health::Failing,
        Health::Recovering,
        Health::Local,
    ];
    let mut healths = Vec::new();
    for p in &s.providers {
        for h in HEALTHS {
            healths.push(format!(
                "{{provider=\"{}\",state=\"{}\"}} {}",
                label(&p.name),
                h.as_str(),
                u8::from(p.health == h)
            ));
        }
    }
    family(
        &mut out,
        "understudy_provider_health",
        "gauge",
        "What is known of each provider, from its checks and its traffic (1 for the current state).",
        healths,
    );
    let mut checked = Vec::new();
    for p in &s.providers {
        if let Some(c) = &p.check {
            checked.push(format!(
                "{{provider=\"{}\"}} {:.3}",
                label(&p.name),
                c.at_ms as f64 / 1000.0
            ));
        }
    }
    family(
        &mut out,
        "understudy_provider_checked_seconds",
        "gauge",
        "When each cloud provider's model list was last checked (Unix time).",
        checked,
    );
    let mut breakers = Vec::new();
    for p in &s.providers {
        for b in &p.backends {
            for state in ["closed", "open", "half_open"] {
                breakers.push(format!(
                    "{{provider=\"{}\",backend=\"{}\",state=\"{state}\"}} {}",
                    label(&p.name),
                    label(&b.backend),
                    u8::from(b.breaker == state)
                ));
            }
        }
    }
    family(
        &mut out,
        "understudy_breaker_state",
        "gauge",
        "Each backend's circuit breaker (1 for its current state).",
        breakers,
    );
    quota_families(&mut out, s);
    local_families(&mut out, s);
    backend_families(&mut out, s);
    out
}

/// Each provider's quota windows, per credential.
fn quota_families(out: &mut String, s: &Snapshot) {
    let (mut used, mut resets, mut refused) = (Vec::new(), Vec::new(), Vec::new());
    for p in &s.providers {
        for q in &p.quota {
            let who = format!(
                "provider=\"{}\",credential=\"{}\"",
                label(&p.name),
                label(&q.credential)
            );
            for w in &q.windows {
                used.push(format!(
                    "{{{who},window=\"{}\"}} {}",
                    label(&w.name),
                    w.utilization
                ));
                if let Some(at) = w.resets_at_ms {
                    resets.push(format!(
                        "{{{who},window=\"{}\"}} {:.3}",
                        label(&w.name),
                        at as f64 / 1000.0
                    ));
                }
            }
            let out_now = q.out_until_ms.is_some_and(|u| u > s.at_ms);
            refused.push(format!("{{{who}}} {}", u8::from(out_now)));
        }
    }
    family(
        out,
        "understudy_quota_utilization",
        "gauge",
        "How much of each quota window (a plan's 5h/7d, an API key's requests/tokens) is spent, 0-1, from the providers' rate-limit headers.",
        used,
    );
    family(
        out,
        "understudy_quota_reset_seconds",
        "gauge",
        "When each quota window resets (Unix time).",
        resets,
    );
    family(
        out,
        "understudy_quota_refused",
        "gauge",
        "1 while the provider refuses the credential until a quota reset.",
        refused,
    );
}

/// Each local engine's state and counters.
fn local_families(out: &mut String, s: &Snapshot) {
    let locals: Vec<(&str, &serde_json::Value)> = s
        .providers
        .iter()
        .filter_map(|p| p.local.as_ref().map(|l| (p.name.as_str(), l)))
        .collect();
    let mut states = Vec::new();
    for (name, l) in &locals {
        for state in ["not_loaded", "loading", "ready", "crashed", "failed"] {
            states.push(format!(
                "{{provider=\"{}\",state=\"{state}\"}} {}",
                label(name),
                u8::from(l["state"] == state)
            ));
        }
    }
    family(
        out,
        "understudy_local_state",
        "gauge",
        "Each local engine's state (1 for the current one).",
        states,
    );
    for (key, name, kind, help) in [
        (
            "loads",
            "understudy_local_loads_total",
            "counter",
            "Times the model was loaded.",
        ),
        (
            "answers",
            "understudy_local_answers_total",
            "counter",
            "Answers finished.",
        ),
        (
            "cancelled",
            "understudy_local_cancelled_total",
            "counter",
            "Answers cancelled because the client left.",
        ),
        (
            "completion_tokens",
            "understudy_local_completion_tokens_total",
            "counter",
            "Tokens generated.",
        ),
        (
            "rss_bytes",
            "understudy_local_rss_bytes",
            "gauge",
            "The worker's resident memory.",
        ),
        (
            "gpu_layers",
            "understudy_local_gpu_layers",
            "gauge",
            "Model layers on the GPU.",
        ),
    ] {
        let values = locals
            .iter()
            .filter_map(|(p, l)| {
                l[key]
                    .as_u64()
                    .map(|v| format!("{{provider=\"{}\"}} {v}", label(p)))
            })
            .collect();
        family(out, name, kind, help, values);
    }
}

/// Each backend's figures ([`crate::telemetry::observe::BackendStats`]) and the totals.
fn backend_families(out: &mut String, s: &Snapshot) {
    let backends: Vec<(&str, &BackendStatus)> = s
        .providers
        .iter()
        .flat_map(|p| p.backends.iter().map(move |b| (p.name.as_str(), b)))
        .collect();
    let labels = |p: &str, b: &BackendStatus| {
        format!(
            "provider=\"{}\",backend=\"{}\"",
            label(p),
            label(&b.backend)
        )
    };
    let counter = |f: fn(&crate::telemetry::observe::BackendStats) -> f64| -> Vec<String> {
        backends
            .iter()
            .map(|(p, b)| format!("{{{}}} {}", labels(p, b), f(&b.stats)))
            .collect()
    };
    family(
        out,
        "understudy_backend_requests_total",
        "counter",
        "Attempts sent to each backend.",
        counter(|s| s.requests as f64),
    );
    let mut errors = Vec::new();
    for (p, b) in &backends {
        for (class, n) in &b.stats.errors_by_class {
            errors.push(format!(
                "{{{},class=\"{}\"}} {n}",
                labels(p, b),
                label(class)
            ));
        }
    }
    family(
        out,
        "understudy_backend_errors_total",
        "counter",
        "Failed attempts by failure class.",
        errors,
    );
    family(
        out,
        "understudy_backend_truncations_total",
        "counter",
        "Streams that broke after their first content.",
        counter(|s| s.truncations as f64),
    );
    let mut tokens = Vec::new();
    for (p, b) in &backends {
        tokens.push(format!(
            "{{{},direction=\"in\"}} {}",
            labels(p, b),
            b.stats.input_tokens
        ));
        tokens.push(format!(
            "{{{},direction=\"out\"}} {}",
            labels(p, b),
            b.stats.output_tokens
        ));
    }
    family(
        out,
        "understudy_backend_tokens_total",
        "counter",
        "Tokens in and out.",
        tokens,
    );
    family(
        out,
        "understudy_backend_spend_usd_total",
        "counter",
        "Estimated spend in USD (the price table).",
        counter(|s| s.spend_usd),
    );
    let mut latency = Vec::new();
    for (p, b) in &backends {
        for (what, q, v) in [
            ("first_content", "0.5", b.stats.ttft_p50_ms),
            ("first_content", "0.95", b.stats.ttft_p95_ms),
            ("total", "0.5", b.stats.total_p50_ms),
            ("total", "0.95", b.stats.total_p95_ms),
        ] {
            if let Some(v) = v {
                latency.push(format!(
                    "{{{},to=\"{what}\",quantile=\"{q}\"}} {}",
                    labels(p, b),
                    v / 1000.0
                ));
            }
        }
    }
    family(
        out,
        "understudy_backend_latency_seconds",
        "gauge",
        "Latency to first content and to the end, over the last 15 minutes.",
        latency,
    );
    total_families(out, &s.totals);
}

/// The totals since the start.
fn total_families(out: &mut String, t: &crate::telemetry::observe::Totals) {
    for (name, help, v) in [
        (
            "understudy_requests_total",
            "Client requests answered.",
            t.requests as f64,
        ),
        (
            "understudy_failovers_total",
            "Requests served after another backend failed.",
            t.failovers as f64,
        ),
        (
            "understudy_continuations_total",
            "Broken streams finished by another backend.",
            t.continued as f64,
        ),
        (
            "understudy_failed_requests_total",
            "Requests the client got as a failure.",
            t.failed as f64,
        ),
    ] {
        family(out, name, "counter", help, vec![format!(" {v}")]);
    }
}

/// One metric family: its help and type lines, then `name` + each of `samples` (labels and
/// value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: Vec<String>) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    for s in samples {
        out.push_str(name);
        out.push_str(&s);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_the_strongest_and_newest_evidence_and_never_healthy_on_none() {
        let check = |reach, at_ms| Check {
            reach,
            at_ms,
            detail: String::new(),
        };
        let req = |at_ms, ok| LastRequest { at_ms, ok };
        let breaker = |b: &str| {
            vec![BackendStatus {
                backend: "p/m".into(),
                breaker: b.into(),
                stats: Default::default(),
            }]
        };
        let of = |b: &[BackendStatus], offline, c: Option<Check>, l: Option<LastRequest>| {
            Health::of(false, b, offline, c.as_ref(), l.as_ref())
        };
        assert_eq!(of(&[], false, None, None), Health::Unknown);
        assert_eq!(
            of(&[], false, Some(check(Reach::Reachable, 5)), None),
            Health::Reachable
        );
        assert_eq!(
            of(&[], false, Some(check(Reach::KeyRejected, 5)), None),
            Health::KeyRejected
        );
        assert_eq!(
            of(&[], false, Some(check(Reach::Unreachable, 5)), None),
            Health::Unreachable
        );
        // A request that went well after the check outranks it; an older one does not.
        assert_eq!(
            of(
                &[],
                false,
                Some(check(Reach::KeyRejected, 5)),
                Some(req(6, true))
            ),
            Health::Healthy
        );
        assert_eq!(
            of(
                &[],
                false,
                Some(check(Reach::KeyRejected, 5)),
                Some(req(4, true))
            ),
            Health::KeyRejected
        );
        assert_eq!(
            of(
                &[],
                false,
                Some(check(Reach::Reachable, 5)),
                Some(req(4, true))
            ),
            Health::Healthy
        );
        assert_eq!(
            of(
                &[],
                false,
                Some(check(Reach::Reachable, 5)),
                Some(req(6, false))
            ),
            Health::Reachable
        );
        // The network and the breakers outrank everything.
        assert_eq!(
            of(
                &[],
                true,
                Some(check(Reach::Reachable, 5)),
                Some(req(6, true))
            ),
            Health::Offline
        );
        assert_eq!(
            of(&breaker("open"), true, None, Some(req(6, true))),
            Health::Failing
        );
        assert_eq!(
            of(&breaker("half_open"), false, None, None),
            Health::Recovering
        );
        assert_eq!(of(&[], false, None, Some(req(6, false))), Health::Unknown);
        assert_eq!(of(&[], false, None, Some(req(6, true))), Health::Healthy);
        assert_eq!(
            of(
                &[],
                false,
                Some(check(Reach::KeyMissing, 5)),
                Some(req(6, false))
            ),
            Health::KeyMissing
        );
        assert_eq!(Health::of(true, &[], true, None, None), Health::Local);
    }

    #[test]
    fn the_snapshot_reads_as_prometheus_text() {
        let s: Snapshot = serde_json::from_value(serde_json::json!({
            "version": "0", "mode": "auto", "offline": true,
            "providers": [
                {"name": "anthropic", "kind": "anthropic", "health": "failing",
                 "check": {"reach": "reachable", "at_ms": 1796000000500_u64, "detail": "GET /v1/models answered 200"},
                 "backends": [{"backend": "anthropic/claude-\"x\"", "breaker": "open",
                               "stats": {"requests": 9, "errors": 4, "errors_by_class": {"http_529": 4},
                                         "ttft_p95_ms": 250.0}}]},
                {"name": "local", "kind": "local", "backends": [],
                 "local": {"state": "ready", "loads": 2, "answers": 5, "cancelled": 1,
                           "completion_tokens": 300, "rss_bytes": 1000}}],
            "local": null, "totals": {"failovers": 3}}))
        .unwrap();
        let text = prometheus(&s);
        for want in [
            "# TYPE understudy_mode gauge\nunderstudy_mode{mode=\"auto\"} 1\n",
            "understudy_offline 1\n",
            "understudy_breaker_state{provider=\"anthropic\",backend=\"anthropic/claude-\\\"x\\\"\",state=\"open\"} 1\n",
            "understudy_breaker_state{provider=\"anthropic\",backend=\"anthropic/claude-\\\"x\\\"\",state=\"closed\"} 0\n",
            "understudy_local_state{provider=\"local\",state=\"ready\"} 1\n",
            "# TYPE understudy_local_answers_total counter\nunderstudy_local_answers_total{provider=\"local\"} 5\n",
            "understudy_local_rss_bytes{provider=\"local\"} 1000\n",
            "understudy_backend_errors_total{provider=\"anthropic\",backend=\"anthropic/claude-\\\"x\\\"\",class=\"http_529\"} 4\n",
            "understudy_backend_latency_seconds{provider=\"anthropic\",backend=\"anthropic/claude-\\\"x\\\"\",to=\"first_content\",quantile=\"0.95\"} 0.25\n",
            "understudy_failovers_total 3\n",
            "understudy_provider_health{provider=\"anthropic\",state=\"failing\"} 1\n",
            "understudy_provider_health{provider=\"anthropic\",state=\"healthy\"} 0\n",
            "understudy_provider_health{provider=\"local\",state=\"unknown\"} 1\n",
            "understudy_provider_checked_seconds{provider=\"anthropic\"} 1796000000.500\n",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
        assert!(
            !text.contains("understudy_local_gpu_layers{"),
            "absent values are left out"
        );
    }
}
