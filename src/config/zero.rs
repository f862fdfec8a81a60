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

/// The providers when the file declares none: the clouds, the local model servers found
/// running (`servers`; each serves Anthropic's Messages API), then `local` if its model is
/// there.
pub(super) fn zero_config_providers(
    servers: &[crate::discover::Server],
) -> Vec<(String, RawProvider)> {
    let mut out = zero_config_clouds();
    for s in servers {
        out.push((
            s.kind.name().to_owned(),
            RawProvider {
                kind: "anthropic".into(),
                base_url: Some(s.url.clone()),
                on_this_machine: Some(true),
                ..RawProvider::default()
            },
        ));
    }
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

/// The routes when the file declares none: `local` for the local models (the servers found
/// running, then the embedded model), each server's model by its own name, then each
/// provider's model globs, each ending in the local models.
pub(super) fn zero_config_routes(
    providers: &[ProviderConfig],
    servers: &[crate::discover::Server],
) -> Vec<RawRoute> {
    let local = providers.iter().any(|p| p.kind == ProviderKind::Local);
    let served = |s: &crate::discover::Server| format!("{}/{}", s.kind.name(), s.model);
    let servers: Vec<&crate::discover::Server> = servers
        .iter()
        .filter(|s| providers.iter().any(|p| p.name == s.kind.name()))
        .collect();
    let mut tail: Vec<String> = servers.iter().map(|s| served(s)).collect();
    if local {
        tail.push("local".into());
    }
    let mut out = Vec::new();
    if !tail.is_empty() {
        out.push(RawRoute {
            model: "local".into(),
            backends: tail.clone(),
        });
    }
    // Its model's own name routes to it, unless the name would be read as a pattern.
    for s in servers
        .iter()
        .filter(|s| !s.model.contains(['*', '?', '[', ']', '{', '}', '\\', '!']))
    {
        out.push(RawRoute {
            model: s.model.clone(),
            backends: vec![served(s)],
        });
    }
    for p in providers.iter().filter(|p| !p.on_this_machine) {
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
            // Every route ends in the local models when there are any.
            backends.extend(tail.iter().cloned());
            out.push(RawRoute {
                model: (*g).into(),
                backends,
            });
        }
    }
    out
}

/// A TOML string.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// What `config` (zero config) runs on, as a config file the user can edit and save: commented
/// TOML that validates to the same providers and routes (`understudy config check` passes on
/// it). What zero config left to defaults stays unwritten, so it keeps meaning the defaults.
pub fn render(config: &super::Config) -> String {
    use crate::secret::KeySource;
    use std::fmt::Write;
    let mut out = String::from(
        "# Understudy is running on zero config; this is what that means, as a config file.\n\
         # Edit it and save to make it yours (from then on, keys added to the environment are\n\
         # not picked up by themselves: add their providers here). README.md lists every key.\n",
    );
    for p in &config.providers {
        // Validated to letters, digits, '-' and '_': a bare key.
        let _ = writeln!(out, "\n[providers.{}]", p.name);
        let why = match (p.kind, &p.key) {
            (ProviderKind::Local, _) => {
                "# The local model: answers when the clouds cannot (offline, every cloud failing)."
                    .to_owned()
            }
            (_, _) if p.on_this_machine => {
                "# A local model server found running on this machine (its Anthropic-compatible \
                 /v1/messages); it answers before the embedded model."
                    .to_owned()
            }
            (ProviderKind::Anthropic, None) => "# Anthropic, with the clients' own credentials \
                 (Claude Code's login) passed through; no key of its own."
                .to_owned(),
            (_, Some(KeySource::Env(var))) => format!("# Found because {var} is set."),
            (_, _) => String::new(),
        };
        if !why.is_empty() {
            let _ = writeln!(out, "{why}");
        }
        let _ = writeln!(out, "kind = {}", quoted(p.kind.as_str()));
        if p.kind != ProviderKind::Local {
            let _ = writeln!(
                out,
                "base_url = {}",
                quoted(p.base_url.as_str().trim_end_matches('/'))
            );
        }
        match &p.key {
            Some(KeySource::Env(var)) => {
                let _ = writeln!(out, "api_key_env = {}", quoted(var));
            }
            Some(KeySource::Keychain { service, account }) => {
                let _ = writeln!(
                    out,
                    "api_key_keychain = {{ service = {}, account = {} }}",
                    quoted(service),
                    quoted(account)
                );
            }
            None => {}
        }
        if p.passthrough_auth {
            let _ = writeln!(out, "passthrough_auth = true");
        }
        if p.on_this_machine {
            let _ = writeln!(out, "on_this_machine = true");
        }
        if let Some(l) = &p.local {
            let _ = writeln!(out, "model_file = {}", quoted(&l.model.to_string_lossy()));
        }
    }
    let local = config
        .providers
        .iter()
        .any(|p| p.kind == ProviderKind::Local);
    if !config.routes.is_empty() {
        out.push_str("\n# Model names → backends, in order; the first route that matches wins.");
        if local {
            out.push_str(" Each ends in the local model.");
        }
        out.push('\n');
    }
    for r in &config.routes {
        let backends: Vec<String> = r.backends.iter().map(|b| quoted(&b.to_string())).collect();
        let _ = writeln!(
            out,
            "\n[[routes]]\nmodel = {}\nbackends = [{}]",
            quoted(&r.pattern),
            backends.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigSource};

    /// What two configs route and call: every provider (by name: a file lists them in name
    /// order, zero config Anthropic first) and every route, in order.
    fn effect(c: &Config) -> String {
        let mut providers: Vec<String> = c.providers.iter().map(|p| format!("{p:?}")).collect();
        providers.sort();
        format!("{providers:?}\n{:?}\n{:?}", c.routes, c.breaker)
    }

    #[test]
    fn the_zero_config_as_text_is_a_valid_config_with_the_same_effect() {
        let zero = Config::zero_config().unwrap();
        let text = render(&zero);
        let file = Config::from_toml(&text, ConfigSource::File("config.toml".into()))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(effect(&file), effect(&zero), "{text}");
        assert!(
            text.starts_with("# Understudy is running on zero config"),
            "{text}"
        );
    }

    #[test]
    fn every_kind_of_provider_and_key_survives_the_round_trip() {
        // What zero config can hold: a passed-through login, env keys, a keychain entry, the
        // local model, routes to a provider or a named model.
        let toml = r#"
[providers.anthropic]
kind = "anthropic"
passthrough_auth = true

[providers.openai]
kind = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"

[providers.gemini-work]
kind = "gemini"
base_url = "https://generativelanguage.googleapis.com"
api_key_keychain = { service = "understudy", account = "gemini \"work\"" }

[providers.local]
kind = "local"
model_file = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"

[[routes]]
model = "claude-*"
backends = ["anthropic", "local"]

[[routes]]
model = "fast"
backends = ["gemini-work/gemini-2.5-flash", "openai/gpt-4o-mini", "local"]
"#;
        let first = Config::from_toml(toml, ConfigSource::File("a.toml".into())).unwrap();
        let text = render(&first);
        let again = Config::from_toml(&text, ConfigSource::File("b.toml".into()))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(effect(&again), effect(&first), "{text}");
        assert!(
            text.contains("# Found because OPENAI_API_KEY is set."),
            "{text}"
        );
    }
}
