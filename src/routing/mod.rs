//! The routing table: a client's model name → an ordered chain of backends (provider + model).
//! Routes are tried in config order (first glob match wins); a name written `provider/model`
//! with a configured provider reaches that provider directly.

pub mod breaker;
pub mod health;
pub mod retry;

use crate::config::{Config, Route};
use crate::error::GatewayError;
use crate::providers::Provider;
use crate::routing::health::Health;
use std::sync::Arc;

/// One backend in a chain.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Who to call.
    pub provider: Arc<Provider>,
    /// The model to ask it for.
    pub model: String,
    /// `provider/model`, built once: the chain walk, the breaker and the trace look it up
    /// several times a request.
    key: String,
}

/// Which backends may serve, switchable at runtime (the tray's menu, `PUT /api/mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every backend of a route, in order (the local engine last).
    Auto,
    /// Only the local engine.
    LocalOnly,
    /// Only cloud backends.
    CloudOnly,
}

impl Mode {
    /// The name used by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::LocalOnly => "local-only",
            Mode::CloudOnly => "cloud-only",
        }
    }

    /// From the API's name.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "auto" => Some(Mode::Auto),
            "local-only" => Some(Mode::LocalOnly),
            "cloud-only" => Some(Mode::CloudOnly),
            _ => None,
        }
    }
}

impl Backend {
    /// True for a model on this machine: the embedded engine, or a model server marked
    /// `on_this_machine` (Ollama, LM Studio, llama-server; zero config marks those it finds). These answer offline, `local-only` keeps
    /// them, and their answers say nothing of the network.
    pub fn is_local(&self) -> bool {
        self.provider.api().is_local() || self.provider.config.on_this_machine
    }

    /// The backend `model` of `provider`.
    pub fn new(provider: Arc<Provider>, model: String) -> Backend {
        let name = provider.name();
        let mut key = String::with_capacity(name.len() + 1 + model.len());
        key.push_str(name);
        key.push('/');
        key.push_str(&model);
        Backend {
            provider,
            model,
            key,
        }
    }

    /// `provider/model`: the key of its breaker and budget.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// The routes and the providers they name, replaced whole by a reload ([`Router::reload`]):
/// a request resolves against one table and holds its backends' providers to its end.
#[derive(Debug)]
struct Table {
    routes: Vec<Route>,
    providers: Vec<Arc<Provider>>,
}

impl Table {
    fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.name() == name)
    }
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Providers whose settings changed (rebuilt: new client, key read again).
    pub changed: Vec<String>,
    /// Providers added.
    pub added: Vec<String>,
    /// Providers removed.
    pub removed: Vec<String>,
    /// The routes changed.
    pub routes: bool,
}

impl Reloaded {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.added.is_empty() && self.removed.is_empty() && !self.routes
    }
}

/// Model names → backends.
#[derive(Debug)]
pub struct Router {
    table: std::sync::RwLock<Arc<Table>>,
    health: Arc<Health>,
    recorder: Arc<crate::telemetry::observe::Recorder>,
    quota_events: tokio::sync::broadcast::Sender<crate::quota::Event>,
    config_events: tokio::sync::broadcast::Sender<crate::telemetry::status::ConfigState>,
    mode: std::sync::atomic::AtomicU8,
    paused: std::sync::atomic::AtomicBool,
}

/// The names of the providers served from this machine.
fn here(config: &Config) -> Vec<String> {
    config
        .providers
        .iter()
        .filter(|p| p.on_this_machine)
        .map(|p| p.name.clone())
        .collect()
}

impl Router {
    /// Builds the providers (clients, keys) and the table.
    pub async fn new(config: &Config) -> Router {
        let quota_events = tokio::sync::broadcast::channel(64).0;
        let mut providers = Vec::with_capacity(config.providers.len());
        for p in &config.providers {
            providers.push(Arc::new(
                Provider::new(p.clone(), quota_events.clone()).await,
            ));
        }
        // The journal only where a file is named (the CLI and the tray name the default one):
        // a journal that cannot be opened is logged, and the gateway runs without it.
        let journal = config.journal.file(None).and_then(|path| {
            crate::telemetry::journal::Journal::open(&path, config.journal.retention)
                .map_err(|e| tracing::warn!(error = %e, "running without a request journal"))
                .ok()
        });
        let recorder = crate::telemetry::observe::Recorder::new(
            crate::telemetry::observe::Prices::new(&config.prices),
            journal,
        );
        let health = Health::new(config.breaker);
        health.set_on_this_machine(here(config));
        Router {
            table: std::sync::RwLock::new(Arc::new(Table {
                routes: config.routes.clone(),
                providers,
            })),
            health,
            recorder: Arc::new(recorder),
            quota_events,
            config_events: tokio::sync::broadcast::channel(8).0,
            paused: std::sync::atomic::AtomicBool::new(false),
            mode: std::sync::atomic::AtomicU8::new(Mode::Auto as u8),
        }
    }

    /// Every provider's quota changes from now on (a window past an alert threshold, a
    /// refusal until a reset, a reset).
    pub fn quota_events(&self) -> tokio::sync::broadcast::Receiver<crate::quota::Event> {
        self.quota_events.subscribe()
    }

    fn table(&self) -> Arc<Table> {
        self.table.read().expect("routing table lock").clone()
    }

    /// Every provider, in config order.
    pub fn providers(&self) -> Vec<Arc<Provider>> {
        self.table().providers.clone()
    }

    /// Applies a new configuration's providers and routes: a provider whose settings did not
    /// change is kept as it is (its connections, its local engine, its quota), a changed or
    /// new one is built; breakers, budgets, statistics and sessions live outside the table
    /// and are kept for every backend that still exists. Requests already resolved finish on
    /// the providers they hold.
    pub async fn reload(&self, config: &Config) -> Reloaded {
        let old = self.table();
        let mut out = Reloaded::default();
        let mut providers = Vec::with_capacity(config.providers.len());
        for p in &config.providers {
            match old.provider(&p.name) {
                Some(kept) if kept.config == *p => providers.push(kept.clone()),
                before => {
                    if before.is_some() {
                        out.changed.push(p.name.clone());
                    } else {
                        out.added.push(p.name.clone());
                    }
                    providers.push(Arc::new(
                        Provider::new(p.clone(), self.quota_events.clone()).await,
                    ));
                }
            }
        }
        out.removed = old
            .providers
            .iter()
            .filter(|p| config.providers.iter().all(|n| n.name != p.name()))
            .map(|p| p.name().to_owned())
            .collect();
        out.routes = old.routes != config.routes;
        self.health.set_on_this_machine(here(config));
        *self.table.write().expect("routing table lock") = Arc::new(Table {
            routes: config.routes.clone(),
            providers,
        });
        out
    }

    /// Every live reload of the config from now on, applied or refused.
    pub fn config_events(
        &self,
    ) -> tokio::sync::broadcast::Receiver<crate::telemetry::status::ConfigState> {
        self.config_events.subscribe()
    }

    /// Tells the listeners how a live reload went.
    pub fn announce_config(&self, state: crate::telemetry::status::ConfigState) {
        let _ = self.config_events.send(state);
    }

    /// Windows whose reset time has passed start again (and say so); run every few seconds.
    pub fn expire_quotas(&self) {
        let now = crate::quota::now_ms();
        for p in &self.table().providers {
            p.quota().expire(now);
        }
    }

    /// What every request did (statistics, the live feed, the journal).
    pub fn recorder(&self) -> &Arc<crate::telemetry::observe::Recorder> {
        &self.recorder
    }

    /// Paused: each request goes to its route's first backend only, as if Understudy were not
    /// there (no failover, no continuation, no retries, no local fallback).
    pub fn paused(&self) -> bool {
        self.paused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Pauses or resumes.
    pub fn set_paused(&self, paused: bool) {
        self.paused
            .store(paused, std::sync::atomic::Ordering::Relaxed);
    }

    /// The routing mode in force.
    pub fn mode(&self) -> Mode {
        match self.mode.load(std::sync::atomic::Ordering::Relaxed) {
            m if m == Mode::LocalOnly as u8 => Mode::LocalOnly,
            m if m == Mode::CloudOnly as u8 => Mode::CloudOnly,
            _ => Mode::Auto,
        }
    }

    /// Switches the routing mode; every request from now on follows it.
    pub fn set_mode(&self, mode: Mode) {
        self.mode
            .store(mode as u8, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(mode = mode.as_str(), "routing mode changed");
    }

    /// The part of a chain the routing mode allows.
    pub fn allowed(&self, chain: Vec<Backend>, model: &str) -> Result<Vec<Backend>, GatewayError> {
        let mode = self.mode();
        let kept: Vec<Backend> = chain
            .into_iter()
            .filter(|b| match mode {
                Mode::Auto => true,
                Mode::LocalOnly => b.is_local(),
                Mode::CloudOnly => !b.is_local(),
            })
            .collect();
        if kept.is_empty() {
            return Err(GatewayError::Unavailable(format!(
                "the routing mode is {} and model '{model}' routes to no backend it allows; \
                 switch the mode back with PUT /api/mode {{\"mode\": \"auto\"}} (or the tray menu)",
                mode.as_str()
            )));
        }
        Ok(kept)
    }

    /// The breakers and retry budgets of every backend.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The provider with this name.
    pub fn provider(&self, name: &str) -> Option<Arc<Provider>> {
        self.table().provider(name).cloned()
    }

    /// The chain for a client's model name. An alias (a route without wildcards) named exactly
    /// wins over globs; `claude-ALIAS` reaches an alias whose name lacks "claude" (that is the
    /// name Anthropic-shaped model lists give it, see [`Router::anthropic_model_ids`]); then the
    /// first matching glob; then `PROVIDER/MODEL`.
    pub fn resolve(&self, model: &str) -> Result<Vec<Backend>, GatewayError> {
        let table = self.table();
        let exact = table
            .routes
            .iter()
            .find(|r| r.is_alias() && r.pattern == model);
        let prefixed = || {
            let alias = model.strip_prefix("claude-")?;
            table
                .routes
                .iter()
                .find(|r| r.is_alias() && r.pattern == alias && !mentions_claude(&r.pattern))
        };
        let route = exact
            .or_else(prefixed)
            .or_else(|| table.routes.iter().find(|r| r.matches(model)));
        if let Some(route) = route {
            return Ok(route
                .backends
                .iter()
                .filter_map(|b| {
                    let provider = table.provider(&b.provider)?.clone();
                    let model = b.model.clone().unwrap_or_else(|| model.to_owned());
                    Some(Backend::new(provider, model))
                })
                .collect());
        }
        if let Some((name, rest)) = model.split_once('/') {
            if let Some(p) = table.provider(name) {
                return Ok(vec![Backend::new(p.clone(), rest.to_owned())]);
            }
        }
        let patterns: Vec<&str> = table.routes.iter().map(|r| r.pattern.as_str()).collect();
        let providers: Vec<&str> = table.providers.iter().map(|p| p.name()).collect();
        Err(GatewayError::UnknownModel {
            model: model.to_owned(),
            hint: format!(
                "routed model names are [{}]; any configured provider is also reachable as PROVIDER/MODEL \
                 (providers: {}); add a [[routes]] entry to the config to route more",
                patterns.join(", "),
                providers.join(", ")
            ),
        })
    }

    /// Model names a client can list: the aliases (routes without wildcards).
    pub fn model_ids(&self) -> Vec<String> {
        self.table()
            .routes
            .iter()
            .filter(|r| r.is_alias())
            .map(|r| r.pattern.clone())
            .collect()
    }

    /// The aliases as Anthropic-facing ids: Claude Code's discovery keeps only ids that contain
    /// "claude" or "anthropic", so any other alias is listed as `claude-ALIAS` (which
    /// [`Router::resolve`] maps back).
    pub fn anthropic_model_ids(&self) -> Vec<String> {
        self.model_ids()
            .into_iter()
            .map(|id| {
                if mentions_claude(&id) {
                    id
                } else {
                    format!("claude-{id}")
                }
            })
            .collect()
    }
}

fn mentions_claude(id: &str) -> bool {
    let l = id.to_ascii_lowercase();
    l.contains("claude") || l.contains("anthropic")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigSource;

    async fn router() -> Router {
        let cfg = Config::from_toml(
            r#"
            [providers.anthropic]
            kind = "anthropic"
            passthrough_auth = true
            [providers.openrouter]
            kind = "openai"
            passthrough_auth = true
            [[routes]]
            model = "claude-*"
            backends = ["anthropic"]
            [[routes]]
            model = "fast"
            backends = ["openrouter/meta-llama/llama-3.1-8b", "anthropic/claude-haiku-4-5"]
            "#,
            ConfigSource::ZeroConfig,
        )
        .unwrap();
        Router::new(&cfg).await
    }

    #[tokio::test]
    async fn globs_keep_the_client_model_and_aliases_map_to_a_chain() {
        let r = router().await;
        let chain = r.resolve("claude-sonnet-4-5").unwrap();
        assert_eq!(
            (chain[0].provider.name(), chain[0].model.as_str()),
            ("anthropic", "claude-sonnet-4-5")
        );
        let chain = r.resolve("fast").unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0].model, "meta-llama/llama-3.1-8b");
        assert_eq!(chain[1].model, "claude-haiku-4-5");
        assert_eq!(r.model_ids(), vec!["fast"]);
    }

    #[tokio::test]
    async fn anthropic_ids_carry_claude_and_map_back_before_globs() {
        let r = router().await;
        assert_eq!(r.anthropic_model_ids(), vec!["claude-fast"]);
        // "claude-fast" also matches the claude-* glob, but it is the alias's listed name.
        let chain = r.resolve("claude-fast").unwrap();
        assert_eq!(chain[0].provider.name(), "openrouter");
    }

    #[tokio::test]
    async fn provider_slash_model_reaches_a_provider_directly() {
        let r = router().await;
        let chain = r.resolve("openrouter/qwen/qwen3-coder").unwrap();
        assert_eq!(
            (chain[0].provider.name(), chain[0].model.as_str()),
            ("openrouter", "qwen/qwen3-coder")
        );
    }

    #[tokio::test]
    async fn an_unknown_model_says_what_is_routed() {
        let err = router().await.resolve("gpt-5").unwrap_err().to_string();
        assert!(
            err.contains("'gpt-5'") && err.contains("claude-*") && err.contains("PROVIDER/MODEL"),
            "{err}"
        );
    }
}
