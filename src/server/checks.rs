//! Health known without traffic: one checker per cloud provider asks its model list (a GET
//! that spends no tokens) at start, every `breaker.check_interval` (jittered) while the
//! provider has had no real request in that time, at once when the network is seen to go or
//! come back (by a request or another check), every 5 s while it is gone, and every
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

/// Another provider that answered within this long says the network is up.
const OFFLINE_EVIDENCE: Duration = Duration::from_secs(60);

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

/// Judges a probe of `provider`: what the answer says, unless the provider has no key it can
/// send, which no answer makes any better.
pub fn judge(provider: &Provider, r: &Result<ProbeAnswer, ProviderError>) -> Verdict {
    let key = provider
        .config
        .key
        .as_ref()
        .map(|k| k.to_string())
        .unwrap_or_else(|| "the configured key".into());
    let mut v = judge_answer(&key, provider.config.passthrough_auth, r);
    if let Some(why) = provider.key_problem() {
        if v.reach != Reach::Unreachable {
            v.reach = Reach::KeyMissing;
            v.detail = format!(
                "no key to send: {why}; requests that need this provider's key are refused \
                 (set api_key_env or api_key_keychain, then restart Understudy)"
            );
        }
    }
    v
}

/// [`judge`] without a provider: `key` names where the key comes from; `passthrough` says
/// whether clients' own credentials pass through.
pub fn judge_answer(
    key: &str,
    passthrough: bool,
    r: &Result<ProbeAnswer, ProviderError>,
) -> Verdict {
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
                (401 | 403, false) if passthrough => format!(
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
    // OpenAI quotes the refused key with its middle masked (`sk-proj-***…abcd`): what is left
    // of it is still not ours to show.
    let full: Vec<String> = full
        .split(' ')
        .map(|w| {
            if w.starts_with("sk-") || w.contains("***") {
                crate::secret::REDACTED.to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect();
    let full = full.join(" ");
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
    match v.offline {
        // A server on this machine says nothing of the network.
        _ if provider.config.on_this_machine => {}
        // One name that does not resolve is not the network being down while another
        // provider answers: only then would every checker wake and ask again, forever.
        Some(true) if health.others_answered(provider.name(), OFFLINE_EVIDENCE) => {}
        Some(offline) => health.network(offline),
        None => {}
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

/// Checks one cloud provider for the life of the application (held weakly: nothing of it is
/// held while waiting, so the task ends with the application).
pub async fn watch(state: Weak<AppState>, name: String) {
    let Some(mut wakes) = state.upgrade().map(|st| st.router.health().wakes()) else {
        return;
    };
    let mut first = true;
    // When the next check is due, and for which state (open, offline) it was set: a wake
    // that is not this checker's keeps it, so no stream of wakes can starve it.
    let mut due: Option<(tokio::time::Instant, bool, bool)> = None;
    loop {
        // Seen before reading the state below: a wake after this point is not lost.
        wakes.borrow_and_update();
        let (wait, open, offline, every, probe_every) = {
            let Some(st) = state.upgrade() else { return };
            let health = st.router.health();
            let every = st.config().breaker.check_interval;
            let open = health.provider_open(&name);
            let offline = health.offline();
            let wait = if open {
                Some(health.probe_interval())
            } else if every.is_zero() {
                None
            } else if first {
                Some(Duration::ZERO)
            } else if offline {
                Some(jittered(every).min(OFFLINE_CHECK))
            } else {
                Some(jittered(every))
            };
            (wait, open, offline, every, health.probe_interval())
        };
        first = false;
        let until = match (due, wait) {
            (Some((at, o, off)), Some(_)) if o == open && off == offline => Some(at),
            (_, w) => w.map(|w| tokio::time::Instant::now() + w),
        };
        due = until.map(|at| (at, open, offline));
        let woken = match until {
            Some(at) => tokio::select! {
                _ = tokio::time::sleep_until(at) => false,
                r = wakes.changed() => if r.is_err() { return } else { true },
            },
            None => {
                if wakes.changed().await.is_err() {
                    return;
                }
                true
            }
        };
        let Some(st) = state.upgrade() else { return };
        let Some(provider) = st.router.provider(&name) else {
            // Removed by a reload: this checker ends (a reload that adds it back starts one).
            st.watched.lock().expect("watched lock").remove(&name);
            return;
        };
        let health = st.router.health().clone();
        drop(st);
        if woken {
            // Wakes are for every checker: this one acts on a breaker of its own that opened,
            // or on the network going or coming back; anything else waits its turn.
            if health.provider_open(&name) && !open {
                // Give it the probe interval first, as a request waits out part of the open time.
                tokio::time::sleep(probe_every).await;
            } else if health.offline() == offline || every.is_zero() {
                continue;
            }
        }
        due = None;
        // A request that went well since is fresher evidence than a probe would be.
        if !health.provider_open(&name) && !health.offline() && !every.is_zero() {
            if let Some(u) = health.last_used(&name) {
                if u.at.elapsed() < every && u.ok {
                    continue;
                }
            }
        }
        check_once(&provider, &health).await;
    }
}
