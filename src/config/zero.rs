//! Zero config: with no `[providers]` in the file (or no file at all), the Anthropic provider
//! (its key from `ANTHROPIC_API_KEY`, or the client's own credentials passed through), each
//! OpenAI-compatible provider whose key is in the environment, and the local model when one is
//! installed; with no `[[routes]]`, a route per provider's model family. These are raw tables,
//! validated like a file's.

use super::paths::default_model;
use super::raw::{RawProvider, RawRoute};
use super::{ProviderConfig, ProviderKind};

/// Zero-config providers other than Anthropic: (name, kind, key variable, base URL, model globs).
const ENV_PROVIDERS: &[(&str, &str, &str, &str, &[&str])] = &[
    (
        "openai",
        "openai",
        "OPENAI_API_KEY",
        "https://api.openai.com/v1",
        &[
            "gpt-*",
            "o1*",
            "o3*",
            "o4*",
            "chatgpt-*",
            "text-embedding-*",
        ],
    ),
    (
        "gemini",
        "gemini",
        "GEMINI_API_KEY",
        "https://generativelanguage.googleapis.com",
        &["gemini-*"],
    ),
    (
        "openrouter",
        "openai",
        "OPENROUTER_API_KEY",
        "https://openrouter.ai/api/v1",
        &[],
    ),
];

/// True when the variable holds something.
fn env_is_set(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.trim().is_empty())
}

/// The providers when the file declares none: the clouds, then `local` if its model is there.
pub(super) fn zero_config_providers() -> Vec<(String, RawProvider)> {
    let mut out = zero_config_clouds();
    if let Some(model) = default_model() {
        out.push((
            "local".to_owned(),
            RawProvider {
                kind: "local".into(),
                model_file: Some(model.to_string_lossy().into_owned()),
                ..RawProvider::default()
            },
        ));
    }
    out
}

/// Anthropic (always), then each provider of [`ENV_PROVIDERS`] whose key is set.
fn zero_config_clouds() -> Vec<(String, RawProvider)> {
    let mut out = vec![(
        "anthropic".to_owned(),
        RawProvider {
            kind: "anthropic".into(),
            api_key_env: env_is_set("ANTHROPIC_API_KEY").then(|| "ANTHROPIC_API_KEY".into()),
            passthrough_auth: Some(super::raw::RawPassthrough::Bool(true)),
            ..RawProvider::default()
        },
    )];
    for (name, kind, var, url, _) in ENV_PROVIDERS {
        if env_is_set(var) {
            out.push((
                (*name).into(),
                RawProvider {
                    kind: (*kind).into(),
                    base_url: Some((*url).into()),
                    api_key_env: Some((*var).into()),
                    ..RawProvider::default()
                },
            ));
        }
    }
    out
}

/// The routes when the file declares none: `local` for the local model, then each provider's
/// model globs, each ending in the local model when there is one.
pub(super) fn zero_config_routes(providers: &[ProviderConfig]) -> Vec<RawRoute> {
    let local = providers.iter().any(|p| p.kind == ProviderKind::Local);
    let mut out = Vec::new();
    if local {
        out.push(RawRoute {
            model: "local".into(),
            backends: vec!["local".into()],
        });
    }
    for p in providers {
        let globs: &[&str] = if p.kind == ProviderKind::Anthropic {
            &["claude-*"]
        } else {
            ENV_PROVIDERS
                .iter()
                .find(|(name, ..)| *name == p.name)
                .map(|(.., globs)| *globs)
                .unwrap_or(&[])
        };
        for g in globs {
            let mut backends = vec![p.name.clone()];
            // Every route ends in the local model when there is one.
            if local {
                backends.push("local".into());
            }
            out.push(RawRoute {
                model: (*g).into(),
                backends,
            });
        }
    }
    out
}
