//! The status snapshot (`GET /api/status`, the first event of `/api/events`): the one shape the
//! gateway writes and the terminal (`understudy status`), the tray and the dashboard read.

use serde::{Deserialize, Serialize};

/// What the gateway is doing now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The gateway's version.
    pub version: String,
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

    /// True when some backend of it is failing (its breaker open or on trial).
    pub fn failing(&self) -> bool {
        self.backends.iter().any(|b| b.breaker != "closed")
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
    local_families(&mut out, s);
    backend_families(&mut out, s);
    out
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
    fn the_snapshot_reads_as_prometheus_text() {
        let s: Snapshot = serde_json::from_value(serde_json::json!({
            "version": "0", "mode": "auto", "offline": true,
            "providers": [
                {"name": "anthropic", "kind": "anthropic",
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
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
        assert!(
            !text.contains("understudy_local_gpu_layers{"),
            "absent values are left out"
        );
    }
}
