//! Health known without traffic: one checker per cloud provider asks its model list (a GET
//! that spends no tokens) at start, every `breaker.check_interval` (jittered) while the
//! provider has had no real request in that time, at once when the network changes, and every
//! `breaker.probe_interval` while one of its breakers is open. What it finds ([`judge`]) is
//! the provider's [`Check`]: reachable, key rejected or unreachable, with evidence and a time.
//! A check never runs on a request's path.
//!
//! An answer to a probe closes a breaker that opened because the provider could not be
//! reached, and lets an overloaded one try early (`Breaker::probe_ok`); a probe that finds no
//! route or no name says the network is down, and routes go to the local tier at once.

use crate::error::{FailureKind, ProviderError};
use crate::providers::{ProbeAnswer, Provider};
use crate::routing::health::{status_fails_over, Check, Health, Reach};
use crate::server::AppState;
use std::sync::Weak;
use std::time::Duration;

/// While the network looks down, a provider is checked at least this often, so coming back
/// is noticed within seconds without a request.
const OFFLINE_CHECK: Duration = Duration::from_secs(5);

/// What one probe says: the provider's check, and what it says about the network
/// (`Some(true)`: down, `Some(false)`: an upstream answered) and the breakers (`true`: an
/// answer that is not an overload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The provider's state.
    pub reach: Reach,
    /// In words, with what to do about it.
    pub detail: String,
    /// The network: down, up, or nothing learned.
    pub offline: Option<bool>,
    /// The provider answered in a way that lets its open breakers close or try again.
    pub answered: bool,
}

/// Judges a probe of `provider`.
pub fn judge(provider: &Provider, r: &Result<ProbeAnswer, ProviderError>) -> Verdict {
    let key = provider
        .config
        .key
        .as_ref()
        .map(|k| k.to_string())
        .unwrap_or_else(|| "the configured key".into());
    judge_answer(&key, r)
}

/// [`judge`] without a provider: `key` names where the key comes from.
pub fn judge_answer(key: &str, r: &Result<ProbeAnswer, ProviderError>) -> Verdict {
    match r {
        Err(e) => Verdict {
            reach: Reach::Unreachable,
            detail: match e.kind {
                FailureKind::Offline => format!("offline: {}", e.detail),
                _ => e.detail.clone(),
            },
            offline: (e.kind == FailureKind::Offline).then_some(true),
            answered: false,
        },
        Ok(a) => {
            let said = said(&a.body);
            if a.key_rejected {
                return Verdict {
                    reach: Reach::KeyRejected,
                    detail: format!(
                        "the key from {key} was rejected (HTTP {}{}): set a valid key there and restart Understudy",
                        a.status,
                        said.map(|s| format!(": {s}")).unwrap_or_default()
                    ),
                    offline: Some(false),
                    answered: true,
                };
            }
            let detail = match (a.status, a.key_sent) {
                (401 | 403, false) => format!(
                    "GET {} answered {} without a key: reachable; clients' own credentials pass through",
                    a.path, a.status
                ),
                (s, _) if status_fails_over(s) => format!(
                    "GET {} answered {s}{}: reachable, but not well",
                    a.path,
                    said.map(|s| format!(" ({s})")).unwrap_or_default()
                ),
                (s, _) => format!("GET {} answered {s}", a.path),
            };
            Verdict {
                reach: Reach::Reachable,
                detail,
                offline: Some(false),
                answered: !status_fails_over(a.status),
            }
        }
    }
}

/// The error message in an API's error body (`{"error": {"message": …}}`, Gemini's and
/// OpenAI's, or Anthropic's `{"type": "error", "error": {…}}`), shortened.
fn said(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let full = v["error"]["message"].as_str().or(v["message"].as_str())?;
    let mut m: String = full.chars().take(160).collect();
    if m.len() < full.len() {
        m.push('…');
    }
    Some(m)
}

/// Probes `provider` once and records what it found.
pub async fn check_once(provider: &Provider, health: &Health) -> Verdict {
    let r = provider.probe().await;
    let v = judge(provider, &r);
    health.checked(
        provider.name(),
        Check {
            reach: v.reach,
            at_ms: crate::telemetry::entry::unix_ms(),
            detail: v.detail.clone(),
        },
    );
    if let Some(offline) = v.offline {
        health.network(offline);
    }
    if v.answered {
        health.probe_ok(provider.name());
    }
    v
}

/// `every` with a third either way, so many gateways (or providers) do not check in step.
fn jittered(every: Duration) -> Duration {
    every.mul_f64(rand::random::<f64>() * 2.0 / 3.0 + 2.0 / 3.0)
}

/// Checks one cloud provider for the life of the application (held weakly).
pub async fn watch(state: Weak<AppState>, name: String) {
    let Some(mut wakes) = state.upgrade().map(|st| st.router.health().wakes()) else {
        return;
    };
    let mut first = true;
    loop {
        let (provider, health, every) = {
            let Some(st) = state.upgrade() else { return };
            let Some(p) = st.router.provider(&name).cloned() else {
                return;
            };
            (
                p,
                st.router.health().clone(),
                st.config.breaker.check_interval,
            )
        };
        let failing = health.provider_failing(&name);
        let wait = if failing {
            Some(health.probe_interval())
        } else if every.is_zero() {
            None
        } else if first {
            Some(Duration::ZERO)
        } else if health.offline() {
            Some(jittered(every).min(OFFLINE_CHECK))
        } else {
            Some(jittered(every))
        };
        first = false;
        wakes.borrow_and_update();
        let woken = match wait {
            Some(wait) => tokio::select! {
                _ = tokio::time::sleep(wait) => false,
                r = wakes.changed() => if r.is_err() { return } else { true },
            },
            None => {
                if wakes.changed().await.is_err() {
                    return;
                }
                true
            }
        };
        if woken {
            if health.provider_failing(&name) {
                // A breaker just opened: give it the probe interval before asking, as a
                // request would have to wait out part of its open time.
                tokio::time::sleep(health.probe_interval()).await;
            } else if every.is_zero() {
                // Checks are off, and nothing of this provider is open: nothing is due.
                continue;
            }
        }
        // A request that ended since is fresher evidence than a probe would be.
        let failing = health.provider_failing(&name);
        if !failing && !health.offline() && !every.is_zero() {
            if let Some(u) = health.last_used(&name) {
                if u.at.elapsed() < every && u.ok {
                    continue;
                }
            }
        }
        check_once(&provider, &health).await;
    }
}
