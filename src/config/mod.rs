//! Configuration: the TOML file (or, with none, defaults from the environment), validated into
//! [`Config`]. Every error names the TOML path it is about; all errors are reported at once.
//!
//! The module sits at the bottom of the crate's import graph: it names no runtime module, and
//! the runtime types take their settings from here ([`BreakerConfig`], [`Retention`],
//! [`Price`], [`LocalConfig`]). `raw` is the file as written, `validate` turns it into a
//! [`Config`] one section at a time, `zero` supplies the providers and routes when the file
//! names none, and `paths` says where things live on this machine.

mod extra_ca;
pub use extra_ca::{extra_roots, EXTRA_CA_ENV};
mod paths;
mod raw;
mod validate;
mod zero;
pub use zero::render as zero_config_text;

pub use paths::{
    chosen_elsewhere, chosen_file, chosen_path, data_dir, default_admin_token_path,
    default_engine_modes_path, default_journal_path, default_model, default_path, models_dir,
    physical_cores, DEFAULT_MODEL_FILE, DEFAULT_MODEL_RECORD,
};

use crate::secret::KeySource;
use http::{HeaderName, HeaderValue};
use raw::RawConfig;
use serde::{Deserialize, Serialize};
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
/// The largest whole upstream answer read (a non-streaming body; Anthropic's own request
/// limit, 32 MB, is a fair bound on any answer's size).
pub const DEFAULT_MAX_UPSTREAM_BODY: u64 = 32 * 1024 * 1024;
/// The largest single server-sent event (one line or one event) read from an upstream: a
/// text delta is a few bytes, a whole tool call's arguments rarely past a few hundred KB.
pub const DEFAULT_MAX_UPSTREAM_EVENT: u64 = 8 * 1024 * 1024;
/// Requests the gateway works on at once; more are answered 529/503 at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;
/// Memory the requests in flight may take, each counted at [`REQUEST_MEMORY_FACTOR`] times
/// its body; a request past it is answered 503 (Anthropic: `overloaded_error`) at once.
pub const DEFAULT_MAX_REQUEST_MEMORY: u64 = 1024 * 1024 * 1024;
/// What a request holds at its peak, in multiples of its body: the body (kept for the next
/// backend), its decoded form, and the encoded request to a provider of another API (measured:
/// eight 31 MB translated requests peaked at about 4 × 248 MB; tests/hostile.rs).
pub const REQUEST_MEMORY_FACTOR: u64 = 4;
/// Open client connections; more wait in the kernel's accept queue.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// A connection must deliver a whole request head within this long of opening or of its
/// previous answer ending (slow headers and idle keep-alive connections are closed).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// A request body must arrive whole within this long of its head.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the gateway listens and what it accepts.
    pub server: ServerConfig,
    /// When a backend's circuit breaker trips and how long it stays open.
    pub breaker: BreakerConfig,
    /// Providers, in the order they were declared (zero config: Anthropic first).
    pub providers: Vec<ProviderConfig>,
    /// Model routes, first match wins.
    pub routes: Vec<Route>,
    /// Where this configuration came from.
    pub source: ConfigSource,
    /// The request journal.
    pub journal: JournalConfig,
    /// Prices for the spend estimate (upstream model glob → USD per million tokens).
    pub prices: std::collections::BTreeMap<String, Price>,
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
    pub retention: Retention,
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
    /// What one upstream answer may make the gateway hold (copied into every provider).
    pub upstream: UpstreamLimits,
    /// Requests worked on at once.
    pub max_in_flight: usize,
    /// Memory requests in flight may take (each counted at [`REQUEST_MEMORY_FACTOR`] × its body).
    pub max_request_memory: u64,
    /// Open client connections.
    pub max_connections: usize,
    /// A request head must arrive within this long (of the connection opening, or of the
    /// previous answer on it ending).
    pub header_timeout: Duration,
    /// A request body must arrive within this long of its head.
    pub body_timeout: Duration,
    /// The inference endpoints, too, require the admin token (`x-understudy-token`).
    pub require_token: bool,
    /// Zero config asks Ollama, LM Studio and llama-server on their default ports (or those
    /// `UNDERSTUDY_LOCAL_SERVERS` names) and puts one that serves a model before the embedded
    /// one; `false`: never.
    pub local_servers: bool,
    /// The admin token's file (not in the TOML): `understudy serve` and the tray app use
    /// [`default_admin_token_path`]; a gateway built in-process without one keeps a token in
    /// memory ([`crate::config`] readers: the server's `auth`).
    pub admin_token_file: Option<PathBuf>,
}

/// What one upstream answer may make the gateway hold: past a limit the answer is a failure
/// of that upstream like any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamLimits {
    /// A whole (non-streaming) body.
    pub body: usize,
    /// One server-sent event, or one line of one.
    pub event: usize,
}

impl Default for UpstreamLimits {
    fn default() -> UpstreamLimits {
        UpstreamLimits {
            body: DEFAULT_MAX_UPSTREAM_BODY as usize,
            event: DEFAULT_MAX_UPSTREAM_EVENT as usize,
        }
    }
}

/// How a provider may finish an answer that broke (`continuation = …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuation {
    /// A prefill where the model is known to take one, else by instruction; a model that
    /// refuses a prefill is asked by instruction at once, and remembered.
    Auto,
    /// Always a prefill (llama-server and vLLM-style servers, older Claude models): the
    /// partial answer as the final assistant turn, which the model goes on from.
    Prefill,
    /// Always by instruction: the partial answer as an assistant turn, then a user turn
    /// asking to go on from the exact cut; what the model repeats is cut at the seam.
    Instruct,
    /// Never: a break after content ends in an explicit error unless another backend
    /// continues it.
    Off,
}

impl Continuation {
    /// Every value, as the config spells it.
    pub const NAMES: [&'static str; 4] = ["auto", "prefill", "instruct", "off"];

    /// From the config's spelling (`true` and `false` mean `auto` and `off`).
    pub fn from_name(name: &str) -> Option<Continuation> {
        Some(match name {
            "auto" | "true" => Continuation::Auto,
            "prefill" => Continuation::Prefill,
            "instruct" => Continuation::Instruct,
            "off" | "false" => Continuation::Off,
            _ => return None,
        })
    }

    /// It may continue at all.
    pub fn on(self) -> bool {
        self != Continuation::Off
    }
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
    /// Every kind, in the order the config's error message lists them.
    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::Anthropic,
        ProviderKind::OpenAi,
        ProviderKind::Gemini,
        ProviderKind::Local,
    ];

    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenAi => "openai",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Local => "local",
        }
    }

    /// The kind a config file names (`openai-compatible` is another name for `openai`).
    pub fn from_name(name: &str) -> Option<ProviderKind> {
        match name {
            "openai-compatible" => Some(ProviderKind::OpenAi),
            n => Self::ALL.into_iter().find(|k| k.as_str() == n),
        }
    }

    /// Where a provider of this kind lives when the config names no `base_url`.
    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "https://api.anthropic.com",
            ProviderKind::OpenAi => "https://api.openai.com/v1",
            ProviderKind::Gemini => "https://generativelanguage.googleapis.com",
            ProviderKind::Local => "http://127.0.0.1",
        }
    }
}

/// One `[providers.NAME]` table.
#[derive(Debug, Clone, PartialEq)]
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
    /// A model server on this machine (Ollama, LM Studio, llama-server): it answers offline,
    /// `local-only` keeps it, and its answers say nothing of the network.
    pub on_this_machine: bool,
    /// The most output tokens to ask for; `None`: the built-in table of known models.
    pub max_output_tokens: Option<u32>,
    /// Whether and how it may finish an answer that broke after its first content (its own
    /// or another backend's): `auto` for every cloud provider and for a local model the user
    /// chose, `off` for the zero-config proof model.
    pub continuation: Continuation,
    /// A client's non-streaming request is asked of this provider as a stream and answered
    /// whole when the stream completes (so it can be timed, failed over and continued as it
    /// arrives); `stream_whole_answers = false` passes it through as it is.
    pub stream_whole_answers: bool,
    /// New requests of a route go to its next backend while one of this provider's quota
    /// windows (for the credential the request would use) is past this share, or its plan
    /// says `rejected`, until the window resets; `None`: off. A hard refusal (a 429 with the
    /// plan `rejected`) takes the backend out until its reset whatever this says.
    pub spill_over_at: Option<f64>,
    /// The shares of a quota window told once each per window period by a notification.
    pub quota_alerts: Vec<f64>,
    /// Its statuspage.io summary, read every `status_poll` while online (Anthropic's and
    /// OpenAI's by default at their own APIs); `None`: none.
    pub status_page: Option<Url>,
    /// The page's components its routes use (names matched in part, case aside); empty: all.
    pub status_components: Vec<String>,
    /// How often the status page is read.
    pub status_poll: Duration,
    /// `kind = "local"`: how the engine runs.
    pub local: Option<LocalConfig>,
    /// Time limits for each call.
    pub timeouts: Timeouts,
    /// Extra headers sent on every request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// What one answer may make the gateway hold (`server.max_upstream_*`).
    pub limits: UpstreamLimits,
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

/// Two routes are the same when their pattern and chain are (the matcher follows the pattern).
impl PartialEq for Route {
    fn eq(&self, other: &Route) -> bool {
        self.pattern == other.pattern && self.backends == other.backends
    }
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

impl std::fmt::Display for BackendRef {
    /// As routes write it: `provider` or `provider/model`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.model {
            Some(m) => write!(f, "{}/{m}", self.provider),
            None => f.write_str(&self.provider),
        }
    }
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

/// When a breaker trips and for how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Trip after this many failures in a row.
    pub consecutive_failures: u32,
    /// Trip when at least this share of the window's requests failed…
    pub failure_rate: f64,
    /// …over this window…
    pub window: Duration,
    /// …once it holds at least this many requests.
    pub min_requests: u32,
    /// Open for this long the first time.
    pub open_base: Duration,
    /// Never open for longer than this.
    pub open_max: Duration,
    /// While open, probe the backend (a token-free model list) this often.
    pub probe_interval: Duration,
    /// Check each cloud provider (the same token-free model list) at start and about this
    /// often (a third either way) while it has no traffic; zero: only while a breaker is open.
    pub check_interval: Duration,
}

impl Default for BreakerConfig {
    fn default() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: Duration::from_secs(30),
            min_requests: 10,
            open_base: Duration::from_secs(5),
            open_max: Duration::from_secs(300),
            probe_interval: Duration::from_secs(2),
            check_interval: Duration::from_secs(45),
        }
    }
}

/// How much the journal keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// At most this many requests (the oldest go first).
    pub max_rows: u64,
    /// None older than this.
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            max_rows: 50_000,
            max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// USD per million tokens, in and out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Input tokens (cached ones included, at the same price: an estimate).
    pub input: f64,
    /// Output tokens.
    pub output: f64,
}

/// How the local engine runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    /// The GGUF file.
    pub model: PathBuf,
    /// Context size in tokens; `None`: sized by [`crate::fit::plan`] (what the model was
    /// trained for, at least 32k, what free memory holds).
    pub context: Option<u32>,
    /// CPU threads.
    pub threads: u32,
    /// Load the model as soon as a cloud backend's breaker opens or the network goes down, so
    /// the first local answer does not wait for it.
    pub warm: bool,
    /// Stop the worker (freeing its memory) after this long without a request; `None`: never.
    pub unload_after: Option<Duration>,
    /// Model layers to put on the GPU; `None`: as many as fit (none without a GPU build).
    pub gpu_layers: Option<u32>,
    /// Where the CPU mode that works on this machine is remembered
    /// ([`crate::providers::local::cpu::Memory`]); `None`: for this process only (a gateway a
    /// test builds in-process). The apps use [`default_engine_modes_path`].
    pub modes_file: Option<PathBuf>,
}

impl LocalConfig {
    /// The zero-config proof model (SmolLM2-135M): it shows the local path works; it cannot
    /// stand in for a cloud model's answer.
    pub fn is_proof_model(&self) -> bool {
        self.model.file_name().and_then(|n| n.to_str()) == Some(DEFAULT_MODEL_FILE)
    }
}

/// How long the local model stays loaded without requests, unless configured.
pub const DEFAULT_UNLOAD_AFTER: Duration = Duration::from_secs(15 * 60);

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
        .and_then(Config::with_environment)
    }

    /// This config, if what the environment adds to it is sound: the extra CA certificates
    /// (`UNDERSTUDY_EXTRA_CA_CERTS`) can be read.
    fn with_environment(self) -> Result<Config, ConfigError> {
        match extra_roots() {
            Ok(_) => Ok(self),
            Err(message) => Err(ConfigError {
                source_name: self.source.to_string(),
                issues: vec![ConfigIssue {
                    path: String::new(),
                    message,
                }],
            }),
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
                let inner = e.into_inner();
                // The parser's own text quotes the offending line, which may hold a header's
                // value (a credential): its message and where it is, never the line.
                let at = inner.span().map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line}, column {column}: ")
                });
                ConfigError {
                    source_name: source.to_string(),
                    issues: vec![ConfigIssue {
                        path: if path == "." { String::new() } else { path },
                        message: format!(
                            "{}{}",
                            at.unwrap_or_default(),
                            inner.message().trim().replace('\n', " ")
                        ),
                    }],
                }
            })?;
        validate::from_raw(raw, source)
    }

    /// No file: the Anthropic provider (its key from `ANTHROPIC_API_KEY`, or the client's own
    /// credentials passed through), plus each OpenAI-compatible provider whose key is in the
    /// environment.
    pub fn zero_config() -> Result<Config, ConfigError> {
        validate::from_raw(RawConfig::default(), ConfigSource::ZeroConfig)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, ConfigSource::File("test.toml".into()))
    }

    fn paths(err: ConfigError) -> Vec<String> {
        err.issues.into_iter().map(|i| i.path).collect()
    }

    /// A TOML syntax error says where and what, never the line it is on: that line may hold
    /// a header's value, and the issue reaches the log, `/api/status` and a notification.
    #[test]
    fn a_syntax_error_says_where_without_quoting_the_line() {
        let e = parse(
            "[providers.a]\nkind = \"anthropic\"\n[providers.a.headers]\nAuthorization = \"Bearer sk-ant-SECRET-1234\n",
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("SECRET"), "{text}");
        assert!(e.issues[0].message.starts_with("line 4, column "), "{text}");
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
            passthrough_auth = "http://127.0.0.1:8000"
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
    fn continuation_is_on_for_clouds_and_chosen_models_and_off_for_the_proof_model() {
        let c = parse(
            r#"
            [providers.a]
            kind = "anthropic"
            passthrough_auth = true
            [providers.local]
            kind = "local"
            model_file = "/m/SmolLM2-135M-Instruct.Q4_1.gguf"
            [providers.proof_on]
            kind = "local"
            model_file = "/m/SmolLM2-135M-Instruct.Q4_1.gguf"
            continuation = "instruct"
            [providers.chosen]
            kind = "local"
            model_file = "/m/Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf"
            [providers.old_on]
            kind = "anthropic"
            passthrough_auth = true
            continuation = true
            [providers.old_off]
            kind = "anthropic"
            passthrough_auth = true
            continuation = false
            [providers.pre]
            kind = "openai"
            base_url = "http://127.0.0.1:8080/v1"
            passthrough_auth = "http://127.0.0.1:8080"
            continuation = "prefill"
            "#,
        )
        .unwrap();
        let of = |n: &str| c.provider(n).unwrap().continuation;
        assert_eq!(of("a"), Continuation::Auto);
        assert_eq!(
            of("local"),
            Continuation::Off,
            "SmolLM2 must not finish an Opus answer"
        );
        assert_eq!(
            of("proof_on"),
            Continuation::Instruct,
            "unless configured to"
        );
        assert_eq!(of("chosen"), Continuation::Auto);
        assert_eq!(of("old_on"), Continuation::Auto);
        assert_eq!(of("old_off"), Continuation::Off);
        assert_eq!(of("pre"), Continuation::Prefill);
        let err = parse("[providers.a]\nkind = \"anthropic\"\npassthrough_auth = true\ncontinuation = \"sometimes\"\n")
            .unwrap_err();
        let text = err.to_string();
        assert_eq!(paths(err), vec!["providers.a.continuation"]);
        assert!(text.contains("auto, prefill, instruct, off"), "{text}");
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

    #[test]
    fn client_credentials_go_only_to_an_origin_the_file_names() {
        // `true` is the kind's own API; another server must be named, and must be base_url's.
        let own = parse("[providers.a]\nkind = \"anthropic\"\npassthrough_auth = true\n").unwrap();
        assert!(own.providers[0].passthrough_auth);
        let moved = parse("[providers.a]\nkind = \"anthropic\"\nbase_url = \"https://evil.example\"\npassthrough_auth = true\n")
            .unwrap_err()
            .to_string();
        assert!(
            moved.contains("providers.a.passthrough_auth")
                && moved.contains("passthrough_auth = \"https://evil.example\""),
            "{moved}"
        );
        let named = parse("[providers.a]\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:9/x\"\npassthrough_auth = \"http://127.0.0.1:9\"\n").unwrap();
        assert!(named.providers[0].passthrough_auth);
        let other = parse("[providers.a]\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:9\"\npassthrough_auth = \"http://127.0.0.1:10\"\n")
            .unwrap_err()
            .to_string();
        assert!(other.contains("not base_url's origin"), "{other}");
        // Unset, at another server and with no key: off, and the error says how to turn it on.
        let unset =
            parse("[providers.a]\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:9\"\n")
                .unwrap_err()
                .to_string();
        assert!(
            unset.contains("passthrough_auth = \"http://127.0.0.1:9\""),
            "{unset}"
        );
    }
}
