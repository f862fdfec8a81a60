//! What every handler shares ([`AppState`]), reading a request body within the size limit,
//! and the typed status snapshot ([`AppState::snapshot`]) that in-process readers (the
//! `/metrics` handler, the tray app) take as it is, without a JSON round trip.

use crate::config::Config;
use crate::desktop::claude_code;
use crate::error::GatewayError;
use crate::providers::local::LocalEngine;
use crate::routing::Router;
use crate::telemetry::observe::BackendStats;
use crate::telemetry::status::{BackendStatus, Health, LastRequest, ProviderStatus, Snapshot};
use axum::body::Body;
use bytes::Bytes;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// Requests worked on now (`server.max_in_flight` permits).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Memory requests in flight hold now, in KiB (`server.max_request_memory`).
    pub request_memory: Arc<tokio::sync::Semaphore>,
    /// The admin token, and the dashboard's one-time codes and sessions.
    pub admin: crate::server::auth::Admin,
    /// The configuration in force, replaced whole by a live reload ([`AppState::config`]).
    pub(crate) config: std::sync::RwLock<Arc<Config>>,
    /// `[server]` as started: a reload never changes it (the listener, the limits and the
    /// tokens are set up once), so the request path reads it without a lock.
    pub server: crate::config::ServerConfig,
    /// Model names → providers.
    pub router: Router,
    /// The port actually bound (the gateway's own origin).
    pub port: u16,
    /// Claude Code's settings, for the connect toggle (None without a home directory).
    pub claude: Option<claude_code::Paths>,
    /// Model pulls started from the dashboard, by name: their last progress.
    pub pulls: std::sync::Mutex<BTreeMap<String, Value>>,
    /// The dashboard's own events (`model_pull`, `pause`, `claude_code`) for `/api/events`.
    pub ui_events: tokio::sync::broadcast::Sender<(String, Value)>,
    /// How the latest live reload went.
    pub(crate) config_state: std::sync::Mutex<Option<crate::telemetry::status::ConfigState>>,
    /// The config text applied last (the dashboard's save), so the file watcher does not
    /// apply it a second time.
    pub(crate) applied_text: std::sync::Mutex<Option<String>>,
    /// Held while a reload is applied ([`crate::server::reload::apply`]).
    pub(crate) reloading: tokio::sync::Mutex<()>,
    /// Cloud providers with a checker running ([`crate::server::checks::watch`]).
    pub(crate) watched: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl AppState {
    /// The configuration in force now (a reload replaces it; a request keeps the one it
    /// started with).
    pub fn config(&self) -> Arc<Config> {
        self.config.read().expect("config lock").clone()
    }

    /// Records how a live reload went: `/api/status`, the `config` event of `/api/events`,
    /// and (when invalid) a notification.
    pub fn set_config_state(&self, state: crate::telemetry::status::ConfigState) {
        self.publish("config", serde_json::json!(state));
        self.router.announce_config(state.clone());
        *self.config_state.lock().expect("config state lock") = Some(state);
    }

    /// The config text applied last, if the dashboard saved one.
    pub fn applied_text(&self) -> Option<String> {
        self.applied_text.lock().expect("applied lock").clone()
    }

    /// Remembers the config text just applied.
    pub fn set_applied_text(&self, text: String) {
        *self.applied_text.lock().expect("applied lock") = Some(text);
    }

    /// Publishes an event to `/api/events` listeners.
    pub fn publish(&self, name: &str, v: Value) {
        let _ = self.ui_events.send((name.to_owned(), v));
    }

    /// The local engines of the configured providers, in config order, with their providers'
    /// names.
    pub fn local_engines(&self) -> Vec<(String, Arc<LocalEngine>)> {
        self.config()
            .providers
            .iter()
            .filter_map(|p| {
                let engine = self.router.provider(&p.name)?.local()?.clone();
                Some((p.name.clone(), engine))
            })
            .collect()
    }

    /// What the gateway is doing now: the routing mode, whether the network looks down, every
    /// provider with the breaker state and figures of each backend used so far (and its engine,
    /// for a local one), the first local engine again as `local`, the totals, Claude Code's
    /// connection and whether it is paused. `GET /api/status` serves it as JSON (with the
    /// tray's one-line summary); the tray app and `/metrics` read it as it is.
    pub fn snapshot(&self) -> Snapshot {
        let health = self.router.health();
        let breakers: BTreeMap<String, String> = health
            .snapshot()
            .into_iter()
            .map(|(k, s)| (k, s.as_str().to_owned()))
            .collect();
        let (stats, totals) = self.router.recorder().stats();
        let offline = health.offline();
        let providers: Vec<ProviderStatus> = self
            .config()
            .providers
            .iter()
            .map(|p| {
                let backends = backends_of(&p.name, &breakers, &stats);
                let check = health.check(&p.name);
                let last_request = health.last_used(&p.name).map(|u| LastRequest {
                    at_ms: u.at_ms,
                    ok: u.ok,
                });
                let provider = self.router.provider(&p.name);
                let local = provider.as_ref().is_some_and(|p| p.local().is_some());
                ProviderStatus {
                    name: p.name.clone(),
                    kind: p.kind.as_str().to_owned(),
                    health: Health::of(
                        local,
                        &backends,
                        offline,
                        check.as_ref(),
                        last_request.as_ref(),
                    ),
                    backends,
                    local: provider
                        .as_ref()
                        .and_then(|p| p.local())
                        .map(|e| serde_json::json!(e.status())),
                    check,
                    last_request,
                    quota: provider
                        .as_ref()
                        .map(|p| p.quota().snapshot())
                        .unwrap_or_default(),
                    status_page: health.page(&p.name),
                }
            })
            .collect();
        let local = providers.iter().find_map(|p| p.local.clone());
        Snapshot {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            at_ms: crate::quota::now_ms(),
            mode: self.router.mode().as_str().to_owned(),
            offline,
            providers,
            local,
            totals,
            claude_code: self.claude.as_ref().map(claude_code::state),
            paused: self.router.paused(),
            config: self.config_state.lock().expect("config state lock").clone(),
        }
    }
}

impl crate::desktop::Gateway for AppState {
    fn router(&self) -> &Router {
        &self.router
    }

    fn config(&self) -> Arc<Config> {
        AppState::config(self)
    }
}

/// A provider's backends with a breaker or figures, in name order.
fn backends_of(
    provider: &str,
    breakers: &BTreeMap<String, String>,
    stats: &BTreeMap<String, BackendStats>,
) -> Vec<BackendStatus> {
    let prefix = format!("{provider}/");
    let mut keys: Vec<&String> = breakers
        .keys()
        .chain(stats.keys())
        .filter(|k| k.starts_with(&prefix))
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| BackendStatus {
            backend: k.clone(),
            breaker: breakers.get(k).map_or("closed", String::as_str).to_owned(),
            stats: stats.get(k).cloned().unwrap_or_default(),
        })
        .collect()
}

/// The request body, refused as too large past `server.max_body_bytes`.
/// A body that does not arrive whole within `server.body_timeout` (a client trickling it) is
/// refused.
pub(crate) async fn read_body(st: &AppState, body: Body) -> Result<Bytes, GatewayError> {
    let limit = st.server.max_body_bytes;
    let timeout = st.server.body_timeout;
    let read = axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let Ok(read) = tokio::time::timeout(timeout, read).await else {
        return Err(GatewayError::InvalidRequest(format!(
            "the request body did not arrive within {timeout:?} (server.body_timeout)"
        )));
    };
    read.map_err(|e| {
        if crate::error::chain(&e).any(|s| s.is::<http_body_util::LengthLimitError>()) {
            return GatewayError::TooLarge { limit };
        }
        GatewayError::InvalidRequest(format!("could not read the request body: {e}"))
    })
}

/// The request body as JSON (malformed JSON is the client's error).
pub(crate) async fn json_body(st: &AppState, body: Body) -> Result<Value, GatewayError> {
    let bytes = read_body(st, body).await?;
    crate::relay::parse_json(&bytes)
}
