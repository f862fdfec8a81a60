//! What a desktop app around the gateway does beside serving, shared by the tray app and
//! `understudy serve --notify --connect-claude-code`: the journal in its default place, Claude
//! Code's settings recovered at start, connected on request and restored at the end, and
//! desktop notifications (`notify-rust`) for the changes that matter, debounced by
//! [`crate::desktop::notify::Notifier`].

pub mod claude_code;
pub mod notify;
pub mod tray;

use crate::config::Config;
use crate::desktop::notify::{Change, Notice, Notifier};
use crate::providers::local::LocalEvent;
use crate::routing::health::{HealthEvent, Reach};
use crate::routing::Router;
use crate::telemetry::entry::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::{self, error::RecvError};

/// Fills in what an app uses by default and a test-built gateway does not: the admin token's
/// file, the journal file in the platform data dir (unless the config names one or turns it
/// off), and the file that remembers the local engine's CPU mode.
pub fn app_defaults(cfg: &mut Config) {
    if cfg.server.admin_token_file.is_none() {
        cfg.server.admin_token_file = crate::config::default_admin_token_path();
    }
    if cfg.journal.path.is_none() {
        cfg.journal.path = crate::config::default_journal_path();
    }
    for p in &mut cfg.providers {
        if let Some(local) = &mut p.local {
            if local.modes_file.is_none() {
                local.modes_file = crate::config::default_engine_modes_path();
            }
        }
    }
}

/// At start: restores Claude Code's settings if an earlier run connected them and ended
/// without restoring (a crash, `kill -9`); then connects them to `url` if asked (with
/// `header`, the client token's line, for a gateway with `server.require_token`).
pub fn claude_code_start(url: &str, connect: bool, header: Option<&str>) {
    let Some(paths) = crate::desktop::claude_code::Paths::current() else {
        return;
    };
    if let Err(e) = crate::desktop::claude_code::recover(&paths) {
        tracing::warn!(error = %e, "could not restore Claude Code's settings");
    }
    if connect {
        match crate::desktop::claude_code::connect_with(
            &paths,
            url,
            Some(std::process::id()),
            header,
        ) {
            Ok(()) => {
                tracing::info!(settings = %paths.settings.display(), %url, "Claude Code now points here (restored when Understudy stops)")
            }
            Err(e) => tracing::warn!(error = %e, "could not connect Claude Code"),
        }
    }
}

/// At the end: restores Claude Code's settings if this process connected them.
pub fn claude_code_stop() {
    let Some(paths) = crate::desktop::claude_code::Paths::current() else {
        return;
    };
    if crate::desktop::claude_code::owned_by_me(&paths) {
        match crate::desktop::claude_code::disconnect(&paths) {
            Ok(_) => {
                tracing::info!(settings = %paths.settings.display(), "restored Claude Code's settings")
            }
            Err(e) => tracing::warn!(error = %e, "could not restore Claude Code's settings"),
        }
    }
}

/// Shows a notice on the desktop (the freedesktop notification service over D-Bus on Linux).
/// Blocking: call it off the async threads.
pub fn show(n: &Notice) -> Result<(), String> {
    notify_rust::Notification::new()
        .appname("Understudy")
        .summary(&n.title)
        .body(&n.body)
        .icon("network-transmit-receive")
        .timeout(notify_rust::Timeout::Milliseconds(8000))
        .show()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// What the notification loop reads of a running gateway. The server's `AppState` implements
/// it; the trait lets this module serve the app around the gateway without importing `server`
/// (which imports this module for Claude Code's settings and the tray's summary).
pub trait Gateway: Send + Sync + 'static {
    /// The router: its health and request events, its providers, whether it is paused.
    fn router(&self) -> &Router;
    /// The configuration in force now (the providers, in config order).
    fn config(&self) -> std::sync::Arc<Config>;
}

/// The event streams the notification loop listens to.
struct Feeds {
    health: broadcast::Receiver<HealthEvent>,
    quota: broadcast::Receiver<crate::quota::Event>,
    config: broadcast::Receiver<crate::telemetry::status::ConfigState>,
    requests: broadcast::Receiver<Arc<Entry>>,
    locals: Vec<broadcast::Receiver<LocalEvent>>,
}

impl Feeds {
    fn of(st: &impl Gateway) -> Feeds {
        let router = st.router();
        Feeds {
            health: router.health().subscribe(),
            quota: router.quota_events(),
            config: router.config_events(),
            requests: router.recorder().subscribe(),
            locals: Feeds::locals(st),
        }
    }

    /// The local engines' events (again after a reload, which may add or replace one).
    fn locals(st: &impl Gateway) -> Vec<broadcast::Receiver<LocalEvent>> {
        st.config()
            .providers
            .iter()
            .filter_map(|p| st.router().provider(&p.name)?.local().cloned())
            .map(|e| e.subscribe())
            .collect()
    }
}

/// Why each backend last failed and who served instead, for the breaker's notice.
type LastFailure = HashMap<String, (String, Option<String>)>;

/// The gateway's events as the changes worth a notification, debounced; `send` gets each
/// notice to show (off the async threads). Ends with the application. `muted` is read before
/// each change (the tray's Pause and its menu can mute).
pub async fn notifications<G: Gateway>(
    state: Weak<G>,
    muted: Arc<std::sync::atomic::AtomicBool>,
    send: Arc<dyn Fn(Notice) + Send + Sync>,
) {
    let Some(mut feeds) = state.upgrade().map(|st| Feeds::of(&*st)) else {
        return;
    };
    let mut notifier = Notifier::default();
    let mut last_failure = LastFailure::new();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        let locals = &mut feeds.locals;
        let local_event = async {
            if locals.is_empty() {
                std::future::pending::<()>().await;
            }
            let futs = locals.iter_mut().map(|rx| Box::pin(rx.recv()));
            futures_util::future::select_all(futs).await.0
        };
        let changes: Vec<Change> = tokio::select! {
            ev = feeds.health.recv() => match ev {
                Ok(ev) => health_changes(ev, &last_failure),
                Err(RecvError::Lagged(_)) => Vec::new(),
                Err(_) => return,
            },
            ev = feeds.config.recv() => match ev {
                Ok(c) => {
                    let Some(st) = state.upgrade() else { return };
                    feeds.locals = Feeds::locals(&*st);
                    config_change(&c).into_iter().collect()
                }
                Err(RecvError::Lagged(_)) => Vec::new(),
                Err(_) => return,
            },
            ev = feeds.quota.recv() => match ev {
                Ok(ev) => {
                    let Some(st) = state.upgrade() else { return };
                    quota_change(&*st, ev).into_iter().collect()
                }
                Err(RecvError::Lagged(_)) => Vec::new(),
                Err(_) => return,
            },
            entry = feeds.requests.recv() => match entry {
                Ok(e) => {
                    let Some(st) = state.upgrade() else { return };
                    request_changes(&*st, &e, &mut last_failure)
                }
                Err(RecvError::Lagged(_)) => Vec::new(),
                Err(_) => return,
            },
            ev = local_event => match ev {
                Ok(LocalEvent::Ready { .. }) => vec![Change::LocalReady],
                Ok(LocalEvent::Crashed { message }) => vec![Change::LocalCrashed { reason: message }],
                Ok(LocalEvent::Downgraded { mode }) => vec![Change::LocalCompatible { mode: mode.describe() }],
                _ => Vec::new(),
            },
            _ = tick.tick() => Vec::new(),
        };
        if state.upgrade().is_none_or(|st| st.router().paused()) {
            // Paused: Understudy is not intervening, so it says nothing.
            continue;
        }
        // A recovery tells the outage it ends, in one sentence.
        let mut changes = changes;
        for c in &mut changes {
            if let Change::Recovered { backend, summary } = c {
                if let Some(st) = state.upgrade() {
                    *summary =
                        outage_summary(&*st, crate::routing::health::provider_of(backend)).await;
                }
            }
        }
        notifier.muted = muted.load(std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        let mut notices = notifier.flush(now);
        for c in &changes {
            notices.extend(notifier.on(c, now));
        }
        for n in notices {
            let send = send.clone();
            tracing::info!(title = %n.title, body = %n.body, "notification");
            tokio::task::spawn_blocking(move || send(n));
        }
    }
}

/// A breaker that opens from closed is a backend failing (with why it last failed and who
/// served instead); one that closes is a recovery; the network going down or up is told as is.
fn health_changes(ev: HealthEvent, last_failure: &LastFailure) -> Vec<Change> {
    match ev {
        HealthEvent::Breaker { backend, to, from } => {
            if to == "open" && from == "closed" {
                let (why, next) = last_failure.get(&backend).cloned().unwrap_or_default();
                vec![Change::Failing {
                    backend,
                    why: Some(why).filter(|w| !w.is_empty()),
                    next,
                }]
            } else if to == "closed" {
                vec![Change::Recovered {
                    backend,
                    summary: None,
                }]
            } else {
                Vec::new()
            }
        }
        HealthEvent::Network { offline } => vec![Change::Network { offline }],
        // Told once per rejection (a check that finds it again is no change); reachable and
        // unreachable are the tray's and the dashboard's to show, as the breaker and the
        // network notices already tell what traffic meets.
        HealthEvent::Reach {
            provider,
            reach: reach @ (Reach::KeyRejected | Reach::KeyMissing),
            detail,
        } => vec![Change::Key {
            provider,
            missing: reach == Reach::KeyMissing,
            detail,
        }],
        HealthEvent::Reach { .. } => Vec::new(),
        HealthEvent::Incident {
            provider,
            incident,
            resolved,
        } if incident.relevant => vec![Change::Incident {
            provider,
            name: incident.name.clone(),
            impact: incident.impact.clone(),
            lead: incident.lead_words(),
            resolved,
        }],
        HealthEvent::Incident { .. } => Vec::new(),
    }
}

/// The latest outage of `provider` out of the requests (the journal and memory), as ended now.
async fn outage_summary(st: &impl Gateway, provider: &str) -> Option<String> {
    let recorder = st.router().recorder().clone();
    let entries = tokio::task::spawn_blocking(move || recorder.history(5_000))
        .await
        .ok()?;
    let mut o = crate::telemetry::timeline::outages(&entries)
        .into_iter()
        .rev()
        .find(|o| o.provider == provider)?;
    o.ended_ms.get_or_insert_with(crate::quota::now_ms);
    Some(o.summary(None))
}

/// A reload that was refused, as the change to tell: the file, and the first issue with its
/// TOML path (the log and the dashboard have them all).
fn config_change(c: &crate::telemetry::status::ConfigState) -> Option<Change> {
    if c.ok {
        return None;
    }
    let first = c
        .issues
        .first()
        .map(|(path, message)| format!(": {path}: {message}"))
        .unwrap_or_default();
    let more = match c.issues.len() {
        0 | 1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    Some(Change::ConfigInvalid {
        detail: format!("{}{first}{more}", c.message),
    })
}

/// A quota event as the change to tell, with the provider's `spill_over_at`.
fn quota_change(st: &impl Gateway, ev: crate::quota::Event) -> Option<Change> {
    use crate::quota::{time_to, Event};
    let now = crate::quota::now_ms();
    let spill_at = |provider: &str| {
        st.config()
            .providers
            .iter()
            .find(|p| p.name == provider)
            .and_then(|p| p.spill_over_at)
            .map(|v| (v * 100.0).round() as u32)
    };
    Some(match ev {
        Event::Crossed {
            provider,
            credential,
            window,
            threshold,
            plan,
        } => Change::QuotaPassed {
            spill_at: spill_at(&provider),
            provider,
            credential,
            window: if plan {
                format!("plan {} window", window.label)
            } else {
                format!("{} limit", window.label)
            },
            percent: (window.utilization * 100.0).round() as u32,
            threshold: (threshold * 100.0).round() as u32,
            resets_in: window.resets_at_ms.map(|at| time_to(at, now)),
        },
        Event::Refused {
            provider,
            credential,
            until_ms,
        } => Change::QuotaRefused {
            provider,
            credential,
            resets_in: time_to(until_ms, now),
        },
        Event::Reset {
            provider,
            credential,
            window,
        } => Change::QuotaReset {
            provider,
            credential,
            window: window.map(|w| crate::quota::label(&w)),
        },
    })
}

/// A finished request: remembers why its backends failed, and tells a continuation, or the
/// start of a failover (the first backend that failed, why, and who served).
fn request_changes(st: &impl Gateway, e: &Entry, last_failure: &mut LastFailure) -> Vec<Change> {
    let served = e.served_by.as_ref().map(|s| describe(st, s));
    for a in e
        .attempts
        .iter()
        .filter(|a| a.outcome != "complete" && a.outcome != "client_disconnected")
    {
        let why = crate::telemetry::entry::outcome_words(&a.outcome, a.detail.as_deref());
        last_failure.insert(a.backend.clone(), (why, served.clone()));
    }
    if e.continued {
        match (e.attempts.iter().find(|a| a.broke_after_content), served) {
            (Some(from), Some(to)) => vec![Change::Continued {
                from: from.backend.clone(),
                to,
                how: e.attempts.iter().rev().find_map(|a| a.continuation.clone()),
            }],
            _ => Vec::new(),
        }
    } else if e.served_by.is_some() && e.attempts.len() > 1 {
        let first = &e.attempts[0];
        vec![Change::Failing {
            backend: first.backend.clone(),
            why: Some(crate::telemetry::entry::outcome_words(
                &first.outcome,
                first.detail.as_deref(),
            )),
            next: served,
        }]
    } else {
        Vec::new()
    }
}

/// A backend for a notice: `local/model (the local model)` for the embedded engine.
fn describe(st: &impl Gateway, backend: &str) -> String {
    let provider = crate::routing::health::provider_of(backend);
    if st
        .router()
        .provider(provider)
        .is_some_and(|p| p.local().is_some())
    {
        format!("{backend} (the local model)")
    } else {
        backend.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_key_is_one_notice_and_the_other_checks_none() {
        let ev = |reach| HealthEvent::Reach {
            provider: "anthropic".into(),
            reach,
            detail: "the key from environment variable ANTHROPIC_API_KEY was rejected (HTTP 401)"
                .into(),
        };
        let changes = health_changes(ev(Reach::KeyRejected), &LastFailure::new());
        assert_eq!(changes.len(), 1);
        let mut n = Notifier::default();
        let now = Instant::now();
        let shown = n.on(&changes[0], now);
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].title, "anthropic: key rejected");
        assert!(shown[0].body.contains("ANTHROPIC_API_KEY"));
        // Found again by the next checks: no second notice.
        assert!(n.on(&changes[0], now + Duration::from_secs(60)).is_empty());
        let missing = health_changes(ev(Reach::KeyMissing), &LastFailure::new());
        let shown = Notifier::default().on(&missing[0], now);
        assert_eq!(shown[0].title, "anthropic: key missing");
        for reach in [Reach::Reachable, Reach::Unreachable] {
            assert!(health_changes(ev(reach), &LastFailure::new()).is_empty());
        }
    }
}
