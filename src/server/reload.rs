//! Config that applies live: a config saved from the dashboard (`PUT /api/config`) or edited
//! on disk (the file is watched) is validated exactly as at start (`Config::from_toml`, the
//! function `understudy config check` runs) and, if valid, applied without a restart:
//! requests in flight finish on the providers they resolved; providers whose settings did not
//! change are kept with their connections, local engine and quota; breakers, statistics and
//! sessions, kept by backend name, carry over. `[server]`, `[journal]`, `[breaker]` and
//! `[prices]` are set up once and apply at the next start (the reload says so). An invalid
//! file leaves the running configuration in place and says why, with each issue's TOML path:
//! in the log, in `/api/status`' `config` (the dashboard's banner) and in one notification.

use super::AppState;
use crate::config::{Config, ConfigSource};
use crate::routing::Reloaded;
use crate::telemetry::status::ConfigState;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often the config file is looked at.
pub const POLL: Duration = Duration::from_millis(500);

/// What a reload did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The providers and routes that changed.
    pub changes: Reloaded,
    /// Sections that changed but apply at the next start.
    pub at_next_start: Vec<&'static str>,
}

impl Applied {
    /// In words, for the log, the dashboard and the save's answer.
    pub fn words(&self) -> String {
        let c = &self.changes;
        let mut parts = Vec::new();
        if c.routes {
            parts.push("routes changed".to_owned());
        }
        for (what, names) in [
            ("added", &c.added),
            ("changed", &c.changed),
            ("removed", &c.removed),
        ] {
            if !names.is_empty() {
                parts.push(format!("{what}: {}", names.join(", ")));
            }
        }
        if parts.is_empty() {
            parts.push("no provider or route changed".to_owned());
        }
        let mut s = format!("applied ({})", parts.join("; "));
        if !self.at_next_start.is_empty() {
            s.push_str(&format!(
                "; [{}] changed and applies at the next start",
                self.at_next_start.join("], [")
            ));
        }
        s
    }
}

/// Applies a validated configuration now. `before` is what the file said before the edit,
/// when it can be read: the sections set up once are compared with it, not with the running
/// configuration, which command-line flags (`--listen`) may have changed.
pub async fn apply(st: &Arc<AppState>, mut new: Config, before: Option<&str>) -> Applied {
    // One at a time: a dashboard save and a file edit applied at once could leave the routing
    // table from one and the configuration from the other.
    let _one = st.reloading.lock().await;
    let old = st.config();
    let before = before
        .and_then(|t| Config::from_toml(t, new.source.clone()).ok())
        .map_or_else(
            || (*old).clone(),
            |mut b| {
                b.server.admin_token_file = old.server.admin_token_file.clone();
                b
            },
        );
    let mut at_next_start = Vec::new();
    // Set up once: the listener and limits, the journal's file, the breakers' settings, the
    // price table. Kept as running; said when they differ.
    new.server.admin_token_file = old.server.admin_token_file.clone();
    if format!("{:?}", new.server) != format!("{:?}", before.server) {
        at_next_start.push("server");
    }
    if new.journal != before.journal {
        at_next_start.push("journal");
    }
    if new.breaker != before.breaker {
        at_next_start.push("breaker");
    }
    if new.prices != before.prices {
        at_next_start.push("prices");
    }
    new.server = old.server.clone();
    new.journal = old.journal.clone();
    new.breaker = old.breaker;
    new.prices = old.prices.clone();
    let changes = st.router.reload(&new).await;
    let added: Vec<String> = changes.added.clone();
    *st.config.write().expect("config lock") = Arc::new(new);
    super::watch_providers(st, &added);
    let applied = Applied {
        changes,
        at_next_start,
    };
    tracing::info!(what = %applied.words(), "configuration reloaded");
    st.set_config_state(ConfigState {
        at_ms: crate::quota::now_ms(),
        ok: true,
        message: applied.words(),
        issues: Vec::new(),
    });
    applied
}

/// Records an invalid file: the running configuration stays (and a revert to the text it
/// runs on is applied again, which clears the report).
fn rejected(st: &AppState, path: &Path, e: &crate::config::ConfigError) {
    *st.applied_text.lock().expect("applied lock") = None;
    for issue in &e.issues {
        tracing::warn!(file = %path.display(), path = %issue.path, message = %issue.message, "the edited config is invalid; the running configuration stays");
    }
    st.set_config_state(ConfigState {
        at_ms: crate::quota::now_ms(),
        ok: false,
        message: format!(
            "{} is invalid; the running configuration stays until it is fixed",
            path.display()
        ),
        issues: e
            .issues
            .iter()
            .map(|i| (i.path.clone(), i.message.clone()))
            .collect(),
    });
}

/// What a file held when it was last read: a change of any of it is an edit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    path: PathBuf,
    text: Option<String>,
}

/// Watches the config file (once the gateway runs from one: a zero-config gateway whose
/// dashboard saves a file runs from it from then on) and applies each edit, or says why not.
/// Polls: an editor's save replaces the file (a new inode), which inotify watches lose. An
/// edit is acted on once two polls in a row read the same text, so a file read in the middle
/// of being written (truncated, then filled) is never applied.
pub async fn watch_file(state: Weak<AppState>) {
    // What the gateway runs from (or last refused), and what the previous poll read.
    let mut acted: Option<Seen> = None;
    let mut previous: Option<Seen> = None;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(st) = state.upgrade() else { return };
        let ConfigSource::File(path) = st.config().source.clone() else {
            continue;
        };
        let now = Seen {
            path: path.clone(),
            text: std::fs::read_to_string(&path).ok(),
        };
        if acted.as_ref().is_none_or(|a| a.path != path) {
            // The file as the gateway started from it (or as the dashboard saved it).
            acted = Some(now.clone());
            previous = Some(now);
            continue;
        }
        let stable = previous.replace(now.clone()) == Some(now.clone());
        // What the gateway runs on now: the text applied last (by the dashboard or by this
        // watcher), else what this watcher last saw and acted on.
        let running = st
            .applied_text()
            .or_else(|| acted.as_ref().and_then(|a| a.text.clone()));
        if !stable || (now.text.is_none() && acted.as_ref() == Some(&now)) {
            // Being written, or gone and already said so.
            continue;
        }
        if now.text == running {
            acted = Some(now);
            continue;
        }
        let before = running;
        acted = Some(now.clone());
        let Some(text) = now.text else {
            tracing::warn!(file = %path.display(), "the config file is gone; the running configuration stays");
            continue;
        };
        match Config::from_toml(&text, ConfigSource::File(path.clone())) {
            Ok(config) => {
                st.set_applied_text(text);
                apply(&st, config, before.as_deref()).await;
            }
            Err(e) => rejected(&st, &path, &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_words_say_what_changed_and_what_waits_for_a_restart() {
        let a = Applied {
            changes: Reloaded {
                changed: vec!["openrouter".into()],
                added: vec![],
                removed: vec!["gemini".into()],
                routes: true,
            },
            at_next_start: vec!["server", "journal"],
        };
        assert_eq!(
            a.words(),
            "applied (routes changed; changed: openrouter; removed: gemini); [server], [journal] changed and applies at the next start"
        );
        assert_eq!(
            Applied::default().words(),
            "applied (no provider or route changed)"
        );
    }
}
