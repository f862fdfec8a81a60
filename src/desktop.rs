//! What a desktop app around the gateway does beside serving, shared by the tray app and
//! `understudy serve --notify --connect-claude-code`: the journal in its default place, Claude
//! Code's settings recovered at start, connected on request and restored at the end, and
//! desktop notifications (`notify-rust`) for the changes that matter, debounced by
//! [`crate::notify::Notifier`].

use crate::config::Config;
use crate::notify::{Change, Notice, Notifier};
use crate::server::AppState;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Fills in what an app uses by default and a test-built gateway does not: the journal file
/// in the platform data dir (unless the config names one or turns it off).
pub fn app_defaults(cfg: &mut Config) {
    if cfg.journal.path.is_none() {
        cfg.journal.path = crate::config::default_journal_path();
    }
}

/// At start: restores Claude Code's settings if an earlier run connected them and ended
/// without restoring (a crash, `kill -9`); then connects them to `url` if asked.
pub fn claude_code_start(url: &str, connect: bool) {
    let Some(paths) = crate::claude_code::Paths::current() else {
        return;
    };
    if let Err(e) = crate::claude_code::recover(&paths) {
        tracing::warn!(error = %e, "could not restore Claude Code's settings");
    }
    if connect {
        match crate::claude_code::connect(&paths, url, Some(std::process::id())) {
            Ok(()) => {
                tracing::info!(settings = %paths.settings.display(), %url, "Claude Code now points here (restored when Understudy stops)")
            }
            Err(e) => tracing::warn!(error = %e, "could not connect Claude Code"),
        }
    }
}

/// At the end: restores Claude Code's settings if this process connected them.
pub fn claude_code_stop() {
    let Some(paths) = crate::claude_code::Paths::current() else {
        return;
    };
    if crate::claude_code::owned_by_me(&paths) {
        match crate::claude_code::disconnect(&paths) {
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

/// The gateway's events as the changes worth a notification, debounced; `send` gets each
/// notice to show (off the async threads). Ends with the application. `muted` is read before
/// each change (the tray's Pause and its menu can mute).
pub async fn notifications(
    state: Weak<AppState>,
    muted: Arc<std::sync::atomic::AtomicBool>,
    send: Arc<dyn Fn(Notice) + Send + Sync>,
) {
    let (mut health, mut requests, mut locals) = match state.upgrade() {
        Some(st) => {
            let locals: Vec<_> = st
                .config
                .providers
                .iter()
                .filter_map(|p| st.router.provider(&p.name)?.local.clone())
                .map(|e| e.subscribe())
                .collect();
            (
                st.router.health().subscribe(),
                st.router.recorder().subscribe(),
                locals,
            )
        }
        None => return,
    };
    let mut notifier = Notifier::default();
    // Why each backend last failed and who served instead, for the breaker's notice.
    let mut last_failure: HashMap<String, (String, Option<String>)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        let local_event = async {
            if locals.is_empty() {
                std::future::pending::<()>().await;
            }
            let futs = locals.iter_mut().map(|rx| Box::pin(rx.recv()));
            futures_util::future::select_all(futs).await.0
        };
        let changes: Vec<Change> = tokio::select! {
            ev = health.recv() => match ev {
                Ok(crate::resilience::HealthEvent::Breaker { backend, to, from }) => {
                    if to == "open" && from == "closed" {
                        let (why, next) = last_failure.get(&backend).cloned().unwrap_or_default();
                        vec![Change::Failing { backend, why: Some(why).filter(|w| !w.is_empty()), next }]
                    } else if to == "closed" {
                        vec![Change::Recovered { backend }]
                    } else {
                        Vec::new()
                    }
                }
                Ok(crate::resilience::HealthEvent::Network { offline }) => vec![Change::Network { offline }],
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Vec::new(),
                Err(_) => return,
            },
            entry = requests.recv() => match entry {
                Ok(e) => {
                    let Some(st) = state.upgrade() else { return };
                    let mut out = Vec::new();
                    let served = e.served_by.as_ref().map(|s| describe(&st, s));
                    for a in e.attempts.iter().filter(|a| a.outcome != "complete" && a.outcome != "client_disconnected") {
                        last_failure.insert(a.backend.clone(), (a.outcome.clone(), served.clone()));
                    }
                    if e.continued {
                        if let (Some(from), Some(to)) = (e.attempts.iter().find(|a| a.broke_after_content), served.clone()) {
                            out.push(Change::Continued { from: from.backend.clone(), to });
                        }
                    } else if e.served_by.is_some() && e.attempts.len() > 1 {
                        // Failover began: the first backend that failed, why, and who served.
                        let first = &e.attempts[0];
                        out.push(Change::Failing { backend: first.backend.clone(), why: Some(first.outcome.clone()), next: served });
                    }
                    out
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Vec::new(),
                Err(_) => return,
            },
            ev = local_event => match ev {
                Ok(crate::local::LocalEvent::Ready { .. }) => vec![Change::LocalReady],
                Ok(crate::local::LocalEvent::Crashed { message }) => vec![Change::LocalCrashed { reason: message }],
                _ => Vec::new(),
            },
            _ = tick.tick() => Vec::new(),
        };
        if state.upgrade().is_none_or(|st| st.router.paused()) {
            // Paused: Understudy is not intervening, so it says nothing.
            continue;
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

/// A backend for a notice: `local/model (the local model)` for the embedded engine.
fn describe(st: &AppState, backend: &str) -> String {
    let provider = backend.split_once('/').map_or(backend, |(p, _)| p);
    if st
        .router
        .provider(provider)
        .is_some_and(|p| p.local.is_some())
    {
        format!("{backend} (the local model)")
    } else {
        backend.to_owned()
    }
}
