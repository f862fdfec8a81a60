//! Resilience: which failures move a request to the next backend of its chain, a circuit
//! breaker and a retry budget per backend, and the events their changes publish.
//!
//! One place classifies what fails over ([`fails_over`], [`status_fails_over`]; whether the
//! same backend is retried is `relay::chain`'s `transient`, a narrower rule): transport, timeouts,
//! truncation, malformed answers and 408/409/429/5xx/529 move on; a client's own mistake
//! (400/401/403/404/413) goes straight back, except a context overflow, which another backend
//! with a longer context may serve.

use super::breaker::{self, Admission, Breaker, State};
use super::retry::RetryBudget;
use crate::config::BreakerConfig;
use crate::error::GatewayError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// True when an upstream HTTP status means "try elsewhere".
pub fn status_fails_over(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || status >= 500
}

/// True when an error means "try elsewhere" (and counts against the backend's breaker).
pub fn fails_over(err: &GatewayError) -> bool {
    match err {
        GatewayError::Upstream(_) => status_fails_over(err.status()),
        GatewayError::PromptTooLong { .. } | GatewayError::MissingKey { .. } => true,
        _ => false,
    }
}

/// A published change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthEvent {
    /// The network looks down (a provider's name did not resolve, or no route) or back up.
    Network {
        /// True when it went offline.
        offline: bool,
    },
    /// A token-free check of a cloud provider found something new ([`Reach`]).
    Reach {
        /// The provider's name.
        provider: String,
        /// What it found.
        reach: Reach,
        /// In words, with what to do about it.
        detail: String,
    },
    /// A provider's status page declared an incident (first read), or one it declared is
    /// resolved (gone from the page).
    Incident {
        /// The provider.
        provider: String,
        /// The incident (as last read).
        incident: crate::telemetry::status::Incident,
        /// True when it is resolved.
        resolved: bool,
    },
    /// A backend's breaker changed state.
    Breaker {
        /// `provider/model`.
        backend: String,
        /// Before.
        from: &'static str,
        /// After.
        to: &'static str,
    },
}

pub use crate::telemetry::status::{Check, Reach};

/// The latest real request to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Used {
    /// When it ended (monotonic).
    pub at: Instant,
    /// When it ended (Unix ms).
    pub at_ms: u64,
    /// Whether it went well.
    pub ok: bool,
}

#[derive(Debug)]
struct BackendHealth {
    breaker: Breaker,
    budget: RetryBudget,
}

/// Breakers and budgets for every backend, shared by all requests.
#[derive(Debug)]
pub struct Health {
    cfg: BreakerConfig,
    backends: Mutex<HashMap<String, BackendHealth>>,
    events: broadcast::Sender<HealthEvent>,
    /// Claude Code session id → the backend that last served it, with when.
    sessions: Mutex<HashMap<String, (String, Instant)>>,
    /// The network looked down at this instant (cleared by any upstream answer).
    offline_since: Mutex<Option<Instant>>,
    /// Backends (`provider/model`) whose model refused an assistant prefill: a continuation
    /// asks them by instruction from then on, for the life of the process.
    no_prefill: Mutex<std::collections::HashSet<String>>,
    /// Each cloud provider's latest token-free check.
    checks: Mutex<HashMap<String, Check>>,
    /// Each provider's latest real request.
    used: Mutex<HashMap<String, Used>>,
    /// Providers served from this machine (Ollama and the like): their answers are no
    /// evidence that the network is up.
    here: Mutex<std::collections::HashSet<String>>,
    /// Bumped to wake the provider checkers now (a breaker opened, the network changed).
    wake: tokio::sync::watch::Sender<u64>,
    /// When each backend's breaker last closed after being open: a conversation moved off it
    /// before then goes back to it (automatic switch-back).
    recovered: Mutex<HashMap<String, Instant>>,
    /// Each provider's status page as last read.
    pages: Mutex<HashMap<String, crate::telemetry::status::PageStatus>>,
    /// Since when each provider's requests have been failing (Unix ms), in the current run of
    /// failures (cleared by one that goes well).
    failing_since: Mutex<HashMap<String, u64>>,
}

/// The provider's name in a backend key (`provider/model`).
pub use crate::telemetry::entry::provider_of;

/// Sessions remembered at most; the least recently used go first.
const MAX_SESSIONS: usize = 4096;

impl Health {
    /// A registry whose breakers use `cfg`.
    pub fn new(cfg: BreakerConfig) -> Arc<Health> {
        Arc::new(Health {
            cfg,
            backends: Mutex::new(HashMap::new()),
            events: broadcast::channel(256).0,
            sessions: Mutex::new(HashMap::new()),
            offline_since: Mutex::new(None),
            no_prefill: Mutex::default(),
            checks: Mutex::default(),
            used: Mutex::default(),
            here: Mutex::default(),
            wake: tokio::sync::watch::channel(0).0,
            recovered: Mutex::default(),
            pages: Mutex::default(),
            failing_since: Mutex::default(),
        })
    }

    /// Receives every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<HealthEvent> {
        self.events.subscribe()
    }

    fn with<T>(&self, key: &str, f: impl FnOnce(&mut BackendHealth) -> T) -> T {
        let mut map = self.backends.lock().expect("health lock");
        let h = map.entry(key.to_owned()).or_insert_with(|| BackendHealth {
            breaker: Breaker::new(self.cfg),
            budget: RetryBudget::default(),
        });
        f(h)
    }

    fn publish(&self, key: &str, t: Option<breaker::Transition>) {
        if let Some(t) = t {
            if matches!(t.to, State::Open { .. }) {
                self.wake();
            }
            if t.to == State::Closed {
                self.recovered
                    .lock()
                    .expect("recovered lock")
                    .insert(key.to_owned(), Instant::now());
            }
            tracing::warn!(
                backend = key,
                from = t.from.as_str(),
                to = t.to.as_str(),
                "circuit breaker"
            );
            let _ = self.events.send(HealthEvent::Breaker {
                backend: key.to_owned(),
                from: t.from.as_str(),
                to: t.to.as_str(),
            });
        }
    }

    /// May a request go to `key` now? Counts it for the retry budget when it may.
    pub fn admit(&self, key: &str, first_attempt: bool) -> Admission {
        let now = Instant::now();
        let (a, t) = self.with(key, |h| {
            let (a, t) = h.breaker.admit(now);
            if !matches!(a, Admission::Rejected { .. }) && first_attempt {
                h.budget.request(now);
            }
            (a, t)
        });
        self.publish(key, t);
        a
    }

    /// Takes a retry of `key` from its budget.
    pub fn try_retry(&self, key: &str) -> bool {
        let now = Instant::now();
        self.with(key, |h| h.budget.try_retry(now))
    }

    /// True once `key`'s model has refused an assistant prefill.
    pub fn refuses_prefill(&self, key: &str) -> bool {
        self.no_prefill.lock().expect("lock").contains(key)
    }

    /// `key`'s model refused an assistant prefill (HTTP 400): remembered.
    pub fn refused_prefill(&self, key: &str) {
        self.no_prefill.lock().expect("lock").insert(key.to_owned());
    }

    /// Records an admitted request's outcome.
    pub fn record(&self, key: &str, ok: bool) {
        let now = Instant::now();
        let t = self.with(key, |h| h.breaker.record(now, ok));
        self.used(key, now, ok);
        self.publish(key, t);
    }

    /// Records a request to `key` that failed without reaching HTTP (refused, no route, no
    /// name): a probe that gets an answer closes the breaker this opens.
    pub fn record_unreachable(&self, key: &str) {
        let now = Instant::now();
        let t = self.with(key, |h| h.breaker.record_unreachable(now));
        self.used(key, now, false);
        self.publish(key, t);
    }

    fn used(&self, key: &str, at: Instant, ok: bool) {
        let used = Used {
            at,
            at_ms: crate::telemetry::entry::unix_ms(),
            ok,
        };
        {
            let mut failing = self.failing_since.lock().expect("failing lock");
            if ok {
                failing.remove(provider_of(key));
            } else if !failing.contains_key(provider_of(key)) {
                failing.insert(provider_of(key).to_owned(), used.at_ms);
            }
        }
        let mut map = self.used.lock().expect("used lock");
        match map.get_mut(provider_of(key)) {
            Some(u) => *u = used,
            None => {
                map.insert(provider_of(key).to_owned(), used);
            }
        }
    }

    /// `provider`'s latest real request.
    pub fn last_used(&self, provider: &str) -> Option<Used> {
        self.used.lock().expect("used lock").get(provider).copied()
    }

    /// `provider`'s latest check.
    pub fn check(&self, provider: &str) -> Option<Check> {
        self.checks
            .lock()
            .expect("checks lock")
            .get(provider)
            .cloned()
    }

    /// Records a check of `provider`; a change of what it found is published.
    pub fn checked(&self, provider: &str, check: Check) {
        let before = self
            .checks
            .lock()
            .expect("checks lock")
            .insert(provider.to_owned(), check.clone())
            .map(|c| c.reach);
        if before != Some(check.reach) {
            match check.reach {
                Reach::Reachable => {
                    tracing::info!(provider, detail = %check.detail, "provider check: reachable")
                }
                _ => {
                    tracing::warn!(provider, reach = check.reach.as_str(), detail = %check.detail, "provider check")
                }
            }
            let _ = self.events.send(HealthEvent::Reach {
                provider: provider.to_owned(),
                reach: check.reach,
                detail: check.detail,
            });
        }
    }

    /// `provider`'s status page as last read.
    pub fn page(&self, provider: &str) -> Option<crate::telemetry::status::PageStatus> {
        self.pages
            .lock()
            .expect("pages lock")
            .get(provider)
            .cloned()
    }

    /// Records a read of `provider`'s status page: an incident read for the first time is
    /// stamped with when it was seen and, if requests to the provider were failing then, when
    /// that began; it and one gone from the page (resolved) are published. A page that could
    /// not be read keeps the incidents last read.
    pub fn read_page(&self, provider: &str, mut page: crate::telemetry::status::PageStatus) {
        let failing = self
            .failing_since
            .lock()
            .expect("failing lock")
            .get(provider)
            .copied();
        let mut events = Vec::new();
        {
            let mut pages = self.pages.lock().expect("pages lock");
            let before = pages.get(provider);
            if page.error.is_some() {
                page.incidents = before.map(|b| b.incidents.clone()).unwrap_or_default();
            } else {
                for i in &mut page.incidents {
                    match before.and_then(|b| b.incidents.iter().find(|o| o.id == i.id)) {
                        Some(o) => {
                            i.seen_ms = o.seen_ms;
                            i.first_failure_ms = o.first_failure_ms;
                        }
                        None => {
                            i.first_failure_ms = failing;
                            events.push((i.clone(), false));
                        }
                    }
                }
                for o in before.map(|b| b.incidents.as_slice()).unwrap_or_default() {
                    if page.incidents.iter().all(|i| i.id != o.id) {
                        events.push((o.clone(), true));
                    }
                }
            }
            pages.insert(provider.to_owned(), page);
        }
        for (incident, resolved) in events {
            tracing::warn!(provider, incident = %incident.name, impact = %incident.impact, resolved, lead = ?incident.lead_words(), "status page");
            let _ = self.events.send(HealthEvent::Incident {
                provider: provider.to_owned(),
                incident,
                resolved,
            });
        }
    }

    /// `provider` has no status page any more (a reload turned it off, changed it or removed
    /// the provider): what it declared goes, told as resolved.
    pub fn forget_page(&self, provider: &str) {
        let gone = self.pages.lock().expect("pages lock").remove(provider);
        for incident in gone.map(|p| p.incidents).unwrap_or_default() {
            let _ = self.events.send(HealthEvent::Incident {
                provider: provider.to_owned(),
                incident,
                resolved: true,
            });
        }
    }

    /// A receiver that changes when the provider checkers should look now.
    pub fn wakes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.wake.subscribe()
    }

    /// Wakes the provider checkers (a breaker opened, the network changed).
    pub fn wake(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// True while some backend of `provider` has its breaker open (not on trial: a trial is
    /// a real request's to decide).
    pub fn provider_open(&self, provider: &str) -> bool {
        let prefix = format!("{provider}/");
        self.backends
            .lock()
            .expect("health lock")
            .iter()
            .any(|(k, h)| k.starts_with(&prefix) && matches!(h.breaker.state(), State::Open { .. }))
    }

    /// True when another cloud provider than `provider` answered its check, or a request
    /// went well, within `window`: the network is up, whatever `provider`'s name does.
    pub fn others_answered(&self, provider: &str, window: std::time::Duration) -> bool {
        let since = crate::telemetry::entry::unix_ms().saturating_sub(window.as_millis() as u64);
        let here = self.here.lock().expect("here lock").clone();
        let elsewhere = |p: &String| p != provider && !here.contains(p);
        let checked = self
            .checks
            .lock()
            .expect("checks lock")
            .iter()
            .any(|(p, c)| elsewhere(p) && c.reach != Reach::Unreachable && c.at_ms >= since);
        let served = self
            .used
            .lock()
            .expect("used lock")
            .iter()
            .any(|(p, u)| elsewhere(p) && u.ok && u.at_ms >= since);
        checked || served
    }

    /// The providers served from this machine (`on_this_machine`), replacing those known
    /// before: their answers say nothing of the network.
    pub fn set_on_this_machine(&self, providers: impl IntoIterator<Item = String>) {
        *self.here.lock().expect("here lock") = providers.into_iter().collect();
    }

    /// True while the network looks down: routes go straight to a local backend instead of
    /// waiting on each cloud's timeouts.
    pub fn offline(&self) -> bool {
        self.offline_since.lock().expect("offline lock").is_some()
    }

    /// Records what an attempt said about the network: `Some(true)` it looks down,
    /// `Some(false)` an upstream answered. Publishes the change.
    pub fn network(&self, offline: bool) {
        let mut since = self.offline_since.lock().expect("offline lock");
        if since.is_some() == offline {
            return;
        }
        *since = offline.then(Instant::now);
        drop(since);
        if offline {
            tracing::warn!("the network looks down; routes with a local backend go straight to it");
        } else {
            tracing::info!("the network is back");
        }
        let _ = self.events.send(HealthEvent::Network { offline });
        self.wake();
    }

    /// The backend a session last used (and when), if its breaker is closed: a session stays
    /// where its prompt cache is warm while that backend is healthy.
    pub fn session_backend(&self, session: &str) -> Option<(String, Instant)> {
        let (key, at) = self
            .sessions
            .lock()
            .expect("sessions lock")
            .get(session)?
            .clone();
        self.closed(&key).then_some((key, at))
    }

    /// True when `key`'s breaker closed again, after being open, later than `since`.
    pub fn recovered_since(&self, key: &str, since: Instant) -> bool {
        self.recovered
            .lock()
            .expect("recovered lock")
            .get(key)
            .is_some_and(|t| *t > since)
    }

    /// Remembers that `backend` served `session`.
    pub fn remember_session(&self, session: &str, backend: &str) {
        let mut map = self.sessions.lock().expect("sessions lock");
        if map.len() >= MAX_SESSIONS && !map.contains_key(session) {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(session.to_owned(), (backend.to_owned(), Instant::now()));
    }

    /// True when `key`'s breaker is closed (or it has none yet), without making one.
    pub fn closed(&self, key: &str) -> bool {
        self.backends
            .lock()
            .expect("health lock")
            .get(key)
            .is_none_or(|h| h.breaker.state() == State::Closed)
    }

    /// The breaker state of one backend.
    pub fn state(&self, key: &str) -> State {
        self.with(key, |h| h.breaker.state())
    }

    /// A health probe of `provider` got an answer that is not an overload: each of its
    /// backends whose breaker is open closes (opened because it could not be reached) or lets
    /// its next request through as the trial.
    pub fn probe_ok(&self, provider: &str) {
        let prefix = format!("{provider}/");
        let moved: Vec<(String, breaker::Transition)> = {
            let mut map = self.backends.lock().expect("health lock");
            map.iter_mut()
                .filter(|(k, _)| k.starts_with(&prefix))
                .filter_map(|(k, h)| Some((k.clone(), h.breaker.probe_ok()?)))
                .collect()
        };
        for (key, t) in moved {
            self.publish(&key, Some(t));
        }
    }

    /// How often an open backend is probed.
    pub fn probe_interval(&self) -> std::time::Duration {
        self.cfg.probe_interval
    }

    /// Every known backend's breaker state.
    pub fn snapshot(&self) -> Vec<(String, State)> {
        let map = self.backends.lock().expect("health lock");
        let mut v: Vec<_> = map
            .iter()
            .map(|(k, h)| (k.clone(), h.breaker.state()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// The outcome of one streamed attempt, reported once, when the stream ends (a client that
/// leaves early reports nothing: that says nothing about the backend).
#[derive(Debug)]
pub struct Report {
    health: Arc<Health>,
    key: String,
}

impl Report {
    /// A report for `key`.
    pub fn new(health: Arc<Health>, key: String) -> Report {
        Report { health, key }
    }

    /// The stream ended: well (`true`) or not.
    pub fn done(self, ok: bool) {
        self.health.record(&self.key, ok);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{FailureKind, ProviderError};

    fn upstream(kind: FailureKind) -> GatewayError {
        GatewayError::Upstream(ProviderError {
            provider: "p".into(),
            kind,
            detail: String::new(),
        })
    }

    #[test]
    fn one_place_decides_what_fails_over() {
        for s in [408, 409, 429, 500, 502, 503, 504, 529] {
            assert!(status_fails_over(s), "{s}");
            assert!(fails_over(&upstream(FailureKind::Status(s))), "{s}");
        }
        for s in [400, 401, 403, 404, 413, 422] {
            assert!(!status_fails_over(s), "{s}");
        }
        for k in [
            FailureKind::Connect,
            FailureKind::FirstByteTimeout,
            FailureKind::IdleTimeout,
            FailureKind::Transport,
            FailureKind::Truncated,
            FailureKind::Malformed,
        ] {
            assert!(fails_over(&upstream(k)), "{k:?}");
        }
        assert!(fails_over(&GatewayError::PromptTooLong {
            detail: String::new()
        }));
        assert!(!fails_over(&GatewayError::InvalidRequest(String::new())));
    }

    #[tokio::test]
    async fn going_offline_and_back_is_published_once_each() {
        let h = Health::new(BreakerConfig::default());
        let mut rx = h.subscribe();
        assert!(!h.offline());
        h.network(true);
        h.network(true);
        assert!(h.offline());
        h.network(false);
        assert_eq!(
            rx.try_recv().unwrap(),
            HealthEvent::Network { offline: true }
        );
        assert_eq!(
            rx.try_recv().unwrap(),
            HealthEvent::Network { offline: false }
        );
        assert!(
            rx.try_recv().is_err(),
            "no event for a state that did not change"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn transitions_are_published() {
        let h = Health::new(BreakerConfig {
            consecutive_failures: 2,
            ..BreakerConfig::default()
        });
        let mut rx = h.subscribe();
        assert_eq!(h.admit("p/m", true), Admission::Allowed);
        h.record("p/m", false);
        h.record("p/m", false);
        assert_eq!(
            rx.try_recv().unwrap(),
            HealthEvent::Breaker {
                backend: "p/m".into(),
                from: "closed",
                to: "open"
            }
        );
        assert!(matches!(h.admit("p/m", true), Admission::Rejected { .. }));
        tokio::time::advance(BreakerConfig::default().open_base).await;
        assert_eq!(h.admit("p/m", true), Admission::Trial);
        assert_eq!(
            rx.try_recv().unwrap(),
            HealthEvent::Breaker {
                backend: "p/m".into(),
                from: "open",
                to: "half_open"
            }
        );
        h.record("p/m", true);
        assert_eq!(
            rx.try_recv().unwrap(),
            HealthEvent::Breaker {
                backend: "p/m".into(),
                from: "half_open",
                to: "closed"
            }
        );
    }
}
