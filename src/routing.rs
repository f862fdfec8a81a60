//! The routing table: a client's model name → an ordered chain of backends (provider + model).
//! Routes are tried in config order (first glob match wins); a name written `provider/model`
//! with a configured provider reaches that provider directly.

use crate::config::{Config, Route};
use crate::error::GatewayError;
use crate::providers::Provider;
use crate::resilience::Health;
use std::sync::Arc;

/// One backend in a chain.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Who to call.
    pub provider: Arc<Provider>,
    /// The model to ask it for.
    pub model: String,
}

impl Backend {
    /// `provider/model`: the key of its breaker and budget.
    pub fn key(&self) -> String {
        format!("{}/{}", self.provider.name(), self.model)
    }
}

/// Model names → backends.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
    providers: Vec<Arc<Provider>>,
    health: Arc<Health>,
}

impl Router {
    /// Builds the providers (clients, keys) and the table.
    pub async fn new(config: &Config) -> Router {
        let mut providers = Vec::with_capacity(config.providers.len());
        for p in &config.providers {
            providers.push(Arc::new(Provider::new(p.clone()).await));
        }
        Router {
            routes: config.routes.clone(),
            providers,
            health: Health::new(config.breaker),
        }
    }

    /// The breakers and retry budgets of every backend.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The provider with this name.
    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.name() == name)
    }

    /// The chain for a client's model name. An alias (a route without wildcards) named exactly
    /// wins over globs; `claude-ALIAS` reaches an alias whose name lacks "claude" (that is the
    /// name Anthropic-shaped model lists give it, see [`Router::anthropic_model_ids`]); then the
    /// first matching glob; then `PROVIDER/MODEL`.
    pub fn resolve(&self, model: &str) -> Result<Vec<Backend>, GatewayError> {
        let exact = self
            .routes
            .iter()
            .find(|r| r.is_alias() && r.pattern == model);
        let prefixed = || {
            let alias = model.strip_prefix("claude-")?;
            self.routes
                .iter()
                .find(|r| r.is_alias() && r.pattern == alias && !mentions_claude(&r.pattern))
        };
        let route = exact
            .or_else(prefixed)
            .or_else(|| self.routes.iter().find(|r| r.matches(model)));
        if let Some(route) = route {
            return Ok(route
                .backends
                .iter()
                .filter_map(|b| {
                    let provider = self.provider(&b.provider)?.clone();
                    let model = b.model.clone().unwrap_or_else(|| model.to_owned());
                    Some(Backend { provider, model })
                })
                .collect());
        }
        if let Some((name, rest)) = model.split_once('/') {
            if let Some(p) = self.provider(name) {
                return Ok(vec![Backend {
                    provider: p.clone(),
                    model: rest.to_owned(),
                }]);
            }
        }
        let patterns: Vec<&str> = self.routes.iter().map(|r| r.pattern.as_str()).collect();
        let providers: Vec<&str> = self.providers.iter().map(|p| p.name()).collect();
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
        self.routes
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
