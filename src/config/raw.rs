//! The config file exactly as written: serde types with `deny_unknown_fields`, no validation.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    /// Providers by name; when empty, the zero-config set from the environment is used.
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    /// Model routes, first match wins; when empty, the zero-config routes are used.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// Circuit-breaker settings for every backend.
    #[serde(default)]
    pub breaker: RawBreaker,
    /// The request journal.
    #[serde(default)]
    pub journal: RawJournal,
    /// Prices for the spend estimate: upstream model glob → USD per million tokens.
    #[serde(default)]
    pub prices: BTreeMap<String, super::Price>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJournal {
    pub enabled: Option<bool>,
    pub path: Option<String>,
    pub max_rows: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub consecutive_failures: Option<u32>,
    pub failure_rate: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
    pub min_requests: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub open_base: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub open_max: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub probe_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub check_interval: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    pub max_body_bytes: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    pub keepalive: Option<Duration>,
    pub ollama_listen: Option<String>,
    pub max_upstream_body_bytes: Option<u64>,
    pub max_upstream_event_bytes: Option<u64>,
    pub max_in_flight: Option<usize>,
    pub max_request_memory: Option<u64>,
    pub max_connections: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub header_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub body_timeout: Option<Duration>,
    pub require_token: Option<bool>,
    pub local_servers: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub kind: String,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub api_key_keychain: Option<RawKeychain>,
    pub passthrough_auth: Option<RawPassthrough>,
    pub max_output_tokens: Option<u32>,
    pub continuation: Option<RawContinuation>,
    /// A model server on this machine (answers offline; `local-only` keeps it).
    pub on_this_machine: Option<bool>,
    /// Ask the upstream for a stream when a client wants a whole answer (default true).
    pub stream_whole_answers: Option<bool>,
    /// New requests go to the route's next backend while a quota window is past this share
    /// (0–1), until it resets (off when absent).
    pub spill_over_at: Option<f64>,
    /// The shares of a quota window told once each by a notification (default 0.8, 0.95).
    pub quota_alerts: Option<Vec<f64>>,
    /// The provider's statuspage.io summary (`…/api/v2/summary.json`); `"off"` for none.
    pub status_page: Option<String>,
    /// The status page's components this provider's routes use (names, matched in part).
    pub status_components: Option<Vec<String>>,
    /// How often the status page is read while online.
    #[serde(default, with = "humantime_serde")]
    pub status_poll: Option<Duration>,
    /// `kind = "local"`: the GGUF file, the context size, the CPU threads.
    pub model_file: Option<String>,
    pub context_size: Option<u32>,
    pub threads: Option<u32>,
    /// `kind = "local"`: load when a cloud starts failing; unload after this long idle ("0s":
    /// never); model layers on the GPU (absent: as many as fit).
    pub warm: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pub unload_after: Option<Duration>,
    pub gpu_layers: Option<u32>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// Extra headers sent on every request to this provider (e.g. OpenRouter's `HTTP-Referer`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeychain {
    pub service: String,
    pub account: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    #[serde(default, with = "humantime_serde")]
    pub connect: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub first_byte: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub first_content: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub idle: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub total: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub model: String,
    pub backends: Vec<String>,
}

/// `continuation = true | false | "auto" | "prefill" | "instruct" | "off"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawContinuation {
    /// `true` (auto) or `false` (off), as before the methods had names.
    Bool(bool),
    /// A method's name.
    Name(String),
}

/// `passthrough_auth = true | false | "ORIGIN"`: `true` for the kind's own API origin, an
/// origin string to confirm any other.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawPassthrough {
    /// On (for the kind's own API) or off.
    Bool(bool),
    /// On, for this origin, which must be `base_url`'s.
    Origin(String),
}
