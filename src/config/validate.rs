//! From the file as written ([`RawConfig`]) to a [`Config`]: one function per section, each
//! filling in the defaults and reporting what is wrong at its TOML path. Every problem is
//! collected (in file order: server, providers, breaker, routes, journal, prices), so one run
//! reports them all.

use super::paths::expand_home;
use super::raw::{
    RawBreaker, RawConfig, RawContinuation, RawJournal, RawKeychain, RawPassthrough, RawProvider,
    RawRoute, RawServer, RawTimeouts,
};
use super::zero::{zero_config_providers, zero_config_routes};
use super::{
    BackendRef, BreakerConfig, Config, ConfigError, ConfigIssue, ConfigSource, Continuation,
    JournalConfig, LocalConfig, Price, ProviderConfig, ProviderKind, Retention, Route,
    ServerConfig, Timeouts, UpstreamLimits, DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEPALIVE, DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_REQUEST_MEMORY, DEFAULT_MAX_UPSTREAM_BODY,
    DEFAULT_MAX_UPSTREAM_EVENT, DEFAULT_UNLOAD_AFTER,
};
use crate::secret::KeySource;
use http::{HeaderName, HeaderValue};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

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

/// The problems found so far, in the order found.
#[derive(Default)]
struct Issues(Vec<ConfigIssue>);

impl Issues {
    /// Records one problem at a TOML path.
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Validates a whole file (zero config: an empty one), reporting every problem at once.
pub(super) fn from_raw(raw: RawConfig, source: ConfigSource) -> Result<Config, ConfigError> {
    let mut issues = Issues::default();
    let server = server(raw.server, &mut issues);
    // Zero config: local model servers running on this machine come before the embedded one.
    // Never this gateway itself (its Ollama front answers as Ollama does).
    let servers = if raw.providers.is_empty() && server.local_servers {
        let own = [Some(server.listen), server.ollama_listen];
        let addresses: Vec<_> = crate::discover::server_addresses()
            .into_iter()
            .filter(|(_, a)| {
                let a = a.parse::<std::net::SocketAddr>().ok();
                !own.iter().flatten().any(|o| Some(*o) == a)
            })
            .collect();
        crate::discover::servers(&addresses)
    } else {
        Vec::new()
    };
    let mut providers = providers(raw.providers, &servers, &mut issues);
    for p in &mut providers {
        p.limits = server.upstream;
    }
    let breaker = breaker(&raw.breaker, &mut issues);
    let routes = routes(raw.routes, &providers, &servers, &mut issues);
    let journal = journal(&raw.journal, &mut issues);
    prices(&raw.prices, &mut issues);
    if issues.0.is_empty() {
        Ok(Config {
            server,
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
            issues: issues.0,
        })
    }
}

/// `[server]`.
fn server(raw: RawServer, issues: &mut Issues) -> ServerConfig {
    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|_| {
        issues.add(
            "server.listen",
            format!(
                "{listen_text:?} is not an IP address and port; write e.g. \"{DEFAULT_LISTEN}\""
            ),
        );
        DEFAULT_LISTEN.parse().expect("the default parses")
    });
    for (i, h) in raw.allowed_hosts.iter().enumerate() {
        if h.trim().is_empty() || h.contains(['/', ' ']) {
            issues.add(
                format!("server.allowed_hosts[{i}]"),
                format!("{h:?} is not a host name"),
            );
        }
    }
    let keepalive = raw.keepalive.unwrap_or(DEFAULT_KEEPALIVE);
    if keepalive.is_zero() {
        issues.add(
            "server.keepalive",
            "must be longer than zero (e.g. \"10s\")",
        );
    }
    let ollama_listen = raw.ollama_listen.as_deref().and_then(|t| {
        t.parse::<SocketAddr>()
            .map_err(|_| {
                issues.add(
                    "server.ollama_listen",
                    format!("{t:?} is not an IP address and port; write e.g. \"127.0.0.1:11434\""),
                )
            })
            .ok()
    });
    let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes < 1024 {
        issues.add(
            "server.max_body_bytes",
            format!("{max_body_bytes} bytes is too small for any real request; the default is {DEFAULT_MAX_BODY_BYTES}"),
        );
    }
    let mut at_least = |field: &str, value: u64, min: u64, default: u64| -> u64 {
        if value < min {
            issues.add(
                format!("server.{field}"),
                format!("{value} is too small (at least {min}); the default is {default}"),
            );
        }
        value
    };
    let body = raw
        .max_upstream_body_bytes
        .unwrap_or(DEFAULT_MAX_UPSTREAM_BODY);
    let event = raw
        .max_upstream_event_bytes
        .unwrap_or(DEFAULT_MAX_UPSTREAM_EVENT);
    let upstream = UpstreamLimits {
        body: at_least(
            "max_upstream_body_bytes",
            body,
            64 * 1024,
            DEFAULT_MAX_UPSTREAM_BODY,
        ) as usize,
        event: at_least(
            "max_upstream_event_bytes",
            event,
            16 * 1024,
            DEFAULT_MAX_UPSTREAM_EVENT,
        ) as usize,
    };
    let in_flight = raw.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
    at_least(
        "max_in_flight",
        in_flight as u64,
        1,
        DEFAULT_MAX_IN_FLIGHT as u64,
    );
    let connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    at_least(
        "max_connections",
        connections as u64,
        1,
        DEFAULT_MAX_CONNECTIONS as u64,
    );
    let request_memory = raw.max_request_memory.unwrap_or(DEFAULT_MAX_REQUEST_MEMORY);
    if request_memory < max_body_bytes * super::REQUEST_MEMORY_FACTOR {
        issues.add(
            "server.max_request_memory",
            format!("{request_memory} bytes cannot hold even one request of server.max_body_bytes ({max_body_bytes}), counted {}×", super::REQUEST_MEMORY_FACTOR),
        );
    }
    let positive = |field: &str, d: Option<Duration>, default: Duration, issues: &mut Issues| {
        let d = d.unwrap_or(default);
        if d.is_zero() {
            issues.add(
                format!("server.{field}"),
                format!("must be longer than zero (the default is {default:?})"),
            );
        }
        d
    };
    ServerConfig {
        listen,
        allowed_hosts: raw.allowed_hosts,
        max_body_bytes,
        keepalive,
        ollama_listen,
        upstream,
        max_in_flight: in_flight,
        max_request_memory: request_memory,
        max_connections: connections,
        header_timeout: positive(
            "header_timeout",
            raw.header_timeout,
            DEFAULT_HEADER_TIMEOUT,
            issues,
        ),
        body_timeout: positive(
            "body_timeout",
            raw.body_timeout,
            DEFAULT_BODY_TIMEOUT,
            issues,
        ),
        require_token: raw.require_token.unwrap_or(false),
        local_servers: raw.local_servers.unwrap_or(true),
        admin_token_file: None,
    }
}

/// How often a status page is read unless `status_poll` says otherwise.
pub const DEFAULT_STATUS_POLL: Duration = Duration::from_secs(60);

/// The statuspage.io pages of the providers whose APIs have one, by API host, with the
/// components their APIs are (Anthropic's "Claude API (api.anthropic.com)" and "Claude Code";
/// OpenAI's "API"): an incident of claude.ai alone is not one of ours.
const STATUS_PAGES: [(&str, &str, &[&str]); 2] = [
    (
        "api.anthropic.com",
        "https://status.anthropic.com/api/v2/summary.json",
        &["Claude API", "Claude Code"],
    ),
    (
        "api.openai.com",
        "https://status.openai.com/api/v2/summary.json",
        &["API"],
    ),
];

/// A provider's status page and the components it uses: as written (`"off"`: none), else its
/// API's own page.
fn status_page(
    base_url: &Url,
    p: &RawProvider,
    at: &dyn Fn(&str) -> String,
    issues: &mut Issues,
) -> (Option<Url>, Vec<String>) {
    let known = STATUS_PAGES
        .iter()
        .find(|(host, _, _)| base_url.host_str() == Some(host));
    let page = match p.status_page.as_deref() {
        Some("off" | "") => None,
        Some(written) => match Url::parse(written) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            _ => {
                issues.add(
                    at("status_page"),
                    format!("{written:?} is not an http(s) URL: write the page's summary, e.g. \"https://status.example.com/api/v2/summary.json\", or \"off\""),
                );
                None
            }
        },
        None => known.map(|(_, url, _)| Url::parse(url).expect("the known pages parse")),
    };
    let components =
        p.status_components
            .clone()
            .unwrap_or_else(|| match (known, p.status_page.is_none()) {
                (Some((_, _, c)), true) => c.iter().map(|s| (*s).to_owned()).collect(),
                _ => Vec::new(),
            });
    (page, components)
}

/// The shares of a quota window told by a notification unless `quota_alerts` says otherwise.
pub const DEFAULT_QUOTA_ALERTS: [f64; 2] = [0.8, 0.95];

/// `[providers.*]`, in name order (zero config when there are none).
fn providers(
    raw: BTreeMap<String, RawProvider>,
    servers: &[crate::discover::Server],
    issues: &mut Issues,
) -> Vec<ProviderConfig> {
    let raw_providers: Vec<(String, RawProvider)> = if raw.is_empty() {
        zero_config_providers(servers)
    } else {
        raw.into_iter().collect()
    };
    raw_providers
        .into_iter()
        .filter_map(|(name, p)| provider(name, p, issues))
        .collect()
}

/// One `[providers.NAME]`; `None` when its kind or URL is unusable (the rest is not checked).
fn provider(name: String, p: RawProvider, issues: &mut Issues) -> Option<ProviderConfig> {
    let at = |field: &str| format!("providers.{name}.{field}");
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        issues.add(
            format!("providers.{name}"),
            "a provider name may hold only letters, digits, '-' and '_' (it is used as NAME/model in routes)",
        );
    }
    let kind = provider_kind(&p.kind, &at, issues)?;
    let base_url = base_url(kind, p.base_url.as_deref(), &at, issues)?;
    let key = key(
        p.api_key_env.as_deref(),
        p.api_key_keychain.as_ref(),
        &at,
        issues,
    );
    let passthrough_auth = passthrough(
        kind,
        &base_url,
        p.passthrough_auth.as_ref(),
        key.is_none(),
        &at,
        issues,
    );
    let timeouts = timeouts(kind, &p.timeouts, &at, issues);
    let headers = headers(&p.headers, &at, issues);
    let local = local(kind, &p, &at, issues);
    // A model server on this machine (Ollama and the like) takes no key.
    if key.is_none()
        && !passthrough_auth
        && kind != ProviderKind::Local
        && p.on_this_machine != Some(true)
        && matches!(p.passthrough_auth, None | Some(RawPassthrough::Bool(false)))
    {
        issues.add(
            at("api_key_env"),
            format!(
                "the provider has no key: set api_key_env or api_key_keychain, or {}",
                passthrough_advice(kind, &base_url)
            ),
        );
    }
    if p.max_output_tokens == Some(0) {
        issues.add(at("max_output_tokens"), "must be at least 1");
    }
    let continuation = continuation(p.continuation.as_ref(), local.as_ref(), &at, issues);
    let share = |field: &str, v: f64, issues: &mut Issues| {
        if !(v > 0.0 && v <= 1.0) {
            issues.add(
                at(field),
                format!("{v} is not a share of a quota window: write a number above 0 and at most 1 (0.95 is 95 %)"),
            );
        }
    };
    if let Some(v) = p.spill_over_at {
        share("spill_over_at", v, issues);
    }
    for v in p.quota_alerts.iter().flatten() {
        share("quota_alerts", *v, issues);
    }
    let (status_page, status_components) = status_page(&base_url, &p, &at, issues);
    let status_poll = p.status_poll.unwrap_or(DEFAULT_STATUS_POLL);
    if status_poll < Duration::from_millis(200) {
        issues.add(
            at("status_poll"),
            "must be at least 200ms (the default, 60s, is what a status page is good for)",
        );
    }
    Some(ProviderConfig {
        name,
        kind,
        base_url,
        key,
        passthrough_auth,
        on_this_machine: p.on_this_machine.unwrap_or(false),
        max_output_tokens: p.max_output_tokens,
        continuation,
        stream_whole_answers: p.stream_whole_answers.unwrap_or(true),
        spill_over_at: p.spill_over_at,
        quota_alerts: p
            .quota_alerts
            .unwrap_or_else(|| DEFAULT_QUOTA_ALERTS.to_vec()),
        status_page,
        status_components,
        status_poll,
        local,
        timeouts,
        headers,
        limits: UpstreamLimits::default(),
    })
}

/// The origin a kind's own API lives at (`https://api.anthropic.com` for Anthropic).
fn own_origin(kind: ProviderKind) -> url::Origin {
    Url::parse(kind.default_base_url())
        .expect("the default base URLs parse")
        .origin()
}

/// How to turn passthrough on for this `base_url`: `true` at the kind's own API, else the
/// origin written out.
fn passthrough_advice(kind: ProviderKind, base_url: &Url) -> String {
    if base_url.origin() == own_origin(kind) {
        "passthrough_auth = true to use the client's own credentials".to_owned()
    } else {
        format!(
            "passthrough_auth = \"{}\" to send the client's own credentials to that server",
            base_url.origin().ascii_serialization()
        )
    }
}

/// `passthrough_auth`: a client's own credentials go only where the user said. `true` means
/// the kind's own API origin (Anthropic's for `anthropic`); any other origin must be written
/// out, so a `base_url` changed later (by hand or from the dashboard) never silently takes
/// the clients' credentials along. Unset: on for an Anthropic provider with no key at
/// Anthropic's own API (a Claude Code subscription login).
fn passthrough(
    kind: ProviderKind,
    base_url: &Url,
    raw: Option<&RawPassthrough>,
    no_key: bool,
    at: &dyn Fn(&str) -> String,
    issues: &mut Issues,
) -> bool {
    let origin = base_url.origin();
    let own = origin == own_origin(kind);
    match raw {
        None => kind == ProviderKind::Anthropic && no_key && own,
        Some(RawPassthrough::Bool(false)) => false,
        Some(RawPassthrough::Bool(true)) if own || kind == ProviderKind::Local => true,
        Some(RawPassthrough::Bool(true)) => {
            issues.add(
                at("passthrough_auth"),
                format!(
                    "true sends clients' own credentials only to {} (this kind's own API), and base_url is on {}: \
                     to send them there, confirm that server: passthrough_auth = \"{}\"",
                    own_origin(kind).ascii_serialization(),
                    origin.ascii_serialization(),
                    origin.ascii_serialization()
                ),
            );
            false
        }
        Some(RawPassthrough::Origin(o)) => match Url::parse(o) {
            Ok(u) if u.origin() == origin => true,
            _ => {
                issues.add(
                    at("passthrough_auth"),
                    format!(
                        "{o:?} is not base_url's origin ({}): clients' credentials go only to the server named here; \
                         write passthrough_auth = \"{}\" if that server is meant to get them",
                        origin.ascii_serialization(),
                        origin.ascii_serialization()
                    ),
                );
                false
            }
        },
    }
}

/// `continuation`: as configured, else `auto`, except for the zero-config proof model
/// (SmolLM2-135M), which must not finish another backend's answer unless the user says so: a
/// 135M-parameter model spliced into an Opus answer would pass for it.
fn continuation(
    raw: Option<&RawContinuation>,
    local: Option<&LocalConfig>,
    at: &dyn Fn(&str) -> String,
    issues: &mut Issues,
) -> Continuation {
    match raw {
        Some(RawContinuation::Bool(true)) => Continuation::Auto,
        Some(RawContinuation::Bool(false)) => Continuation::Off,
        Some(RawContinuation::Name(n)) => Continuation::from_name(n).unwrap_or_else(|| {
            issues.add(
                at("continuation"),
                format!(
                    "unknown continuation '{n}': use one of {} (or true / false)",
                    Continuation::NAMES.join(", ")
                ),
            );
            Continuation::Off
        }),
        None if local.is_some_and(|l| l.is_proof_model()) => Continuation::Off,
        None => Continuation::Auto,
    }
}

/// A provider's `kind`.
fn provider_kind(
    kind: &str,
    at: &dyn Fn(&str) -> String,
    issues: &mut Issues,
) -> Option<ProviderKind> {
    let found = ProviderKind::from_name(kind);
    if found.is_none() {
        issues.add(
            at("kind"),
            format!("unknown provider kind {kind:?}; expected \"anthropic\", \"openai\" (any OpenAI-compatible server), \"gemini\" or \"local\""),
        );
    }
    found
}

/// A provider's `base_url`, else its kind's public endpoint.
fn base_url(
    kind: ProviderKind,
    written: Option<&str>,
    at: &dyn Fn(&str) -> String,
    issues: &mut Issues,
) -> Option<Url> {
    let base_text = written.unwrap_or(kind.default_base_url());
    match Url::parse(base_text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        Ok(_) => {
            issues.add(
                at("base_url"),
                format!("{base_text:?} must be an http:// or https:// URL with a host"),
            );
            None
        }
        Err(e) => {
            issues.add(at("base_url"), format!("{base_text:?} is not a URL: {e}"));
            None
        }
    }
}

/// A provider's `api_key_env` or `api_key_keychain` (at most one).
fn key(
    env: Option<&str>,
    keychain: Option<&RawKeychain>,
    at: &dyn Fn(&str) -> String,
    issues: &mut Issues,
) -> Option<KeySource> {
    match (env, keychain) {
        (Some(_), Some(_)) => {
            issues.add(
                at("api_key_env"),
                "set api_key_env or api_key_keychain, not both",
            );
            None
        }
        (Some(var), None) => {
            if var.trim().is_empty() || var.starts_with("sk-") || var.contains(' ') {
                issues.add(
                    at("api_key_env"),
                    "this names the environment variable that holds the key (e.g. \"OPENAI_API_KEY\"), never the key itself",
                );
            }
            Some(KeySource::Env(var.to_owned()))
        }
        (None, Some(k)) => Some(KeySource::Keychain {
            service: k.service.clone(),
            account: k.account.clone(),
        }),
        (None, None) => None,
    }
}

/// A provider's `timeouts`: the defaults (a longer first-content wait for `local`) where unset.
fn timeouts(
    kind: ProviderKind,
    raw: &RawTimeouts,
    at: &dyn Fn(&str) -> String,
    issues: &mut Issues,
) -> Timeouts {
    let mut d = Timeouts::default();
    if kind == ProviderKind::Local {
        // A long prompt on a slow CPU takes minutes before the first token, with progress
        // (and keep-alives) all along: that is work, not a stall.
        d.first_content = Duration::from_secs(600);
    }
    let timeouts = Timeouts {
        connect: raw.connect.unwrap_or(d.connect),
        first_byte: raw.first_byte.unwrap_or(d.first_byte),
        first_content: raw.first_content.unwrap_or(d.first_content),
        idle: raw.idle.unwrap_or(d.idle),
        total: raw.total.unwrap_or(d.total),
    };
    for (field, v) in [
        ("connect", timeouts.connect),
        ("first_byte", timeouts.first_byte),
        ("first_content", timeouts.first_content),
        ("idle", timeouts.idle),
        ("total", timeouts.total),
    ] {
        if v.is_zero() {
            issues.add(
                at(&format!("timeouts.{field}")),
                "must be longer than zero (e.g. \"30s\")",
            );
        }
    }
    timeouts
}

/// A provider's extra `headers`: valid HTTP, and no credential among them.
fn headers(
    raw: &BTreeMap<String, String>,
    at: &dyn Fn(&str) -> String,
    issues: &mut Issues,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::new();
    for (k, v) in raw {
        if CREDENTIAL_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
            issues.add(
                at(&format!("headers.{k}")),
                "carries a credential; put keys in api_key_env or api_key_keychain so the config file holds no secret",
            );
            continue;
        }
        match (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            (Ok(k), Ok(v)) => headers.push((k, v)),
            _ => issues.add(
                at(&format!("headers.{k}")),
                "is not a valid HTTP header name and value",
            ),
        }
    }
    headers
}

/// The local engine's settings for `kind = "local"`; for any other kind, none may be set.
fn local(
    kind: ProviderKind,
    p: &RawProvider,
    at: &dyn Fn(&str) -> String,
    issues: &mut Issues,
) -> Option<LocalConfig> {
    if kind != ProviderKind::Local {
        if p.model_file.is_some()
            || p.context_size.is_some()
            || p.threads.is_some()
            || p.warm.is_some()
            || p.unload_after.is_some()
            || p.gpu_layers.is_some()
        {
            issues.add(
                at("model_file"),
                "model_file, context_size, threads, warm, unload_after and gpu_layers are for kind = \"local\" only",
            );
        }
        return None;
    }
    let model = p
        .model_file
        .as_deref()
        .map(PathBuf::from)
        .or_else(super::paths::chosen_path);
    let Some(model) = model else {
        issues.add(
            at("model_file"),
            "no model file and no platform data dir to find the default in; set model_file",
        );
        return None;
    };
    Some(LocalConfig {
        model,
        context: p.context_size,
        threads: p.threads.unwrap_or_else(super::paths::physical_cores),
        warm: p.warm.unwrap_or(true),
        unload_after: match p.unload_after {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => Some(DEFAULT_UNLOAD_AFTER),
        },
        gpu_layers: p.gpu_layers,
        modes_file: None,
    })
}

/// `[breaker]`.
fn breaker(b: &RawBreaker, issues: &mut Issues) -> BreakerConfig {
    let d = BreakerConfig::default();
    let breaker = BreakerConfig {
        consecutive_failures: b.consecutive_failures.unwrap_or(d.consecutive_failures),
        failure_rate: b.failure_rate.unwrap_or(d.failure_rate),
        window: b.window.unwrap_or(d.window),
        min_requests: b.min_requests.unwrap_or(d.min_requests),
        open_base: b.open_base.unwrap_or(d.open_base),
        open_max: b.open_max.unwrap_or(d.open_max),
        probe_interval: b.probe_interval.unwrap_or(d.probe_interval),
        check_interval: b.check_interval.unwrap_or(d.check_interval),
    };
    if breaker.probe_interval < std::time::Duration::from_millis(10) {
        issues.add(
            "breaker.probe_interval",
            "must be at least 10ms (it is how often an open breaker's backend is asked)",
        );
    }
    if !breaker.check_interval.is_zero()
        && breaker.check_interval < std::time::Duration::from_millis(100)
    {
        issues.add(
            "breaker.check_interval",
            "must be \"0s\" (checks only while a breaker is open) or at least 100ms",
        );
    }
    if breaker.consecutive_failures == 0 {
        issues.add("breaker.consecutive_failures", "must be at least 1");
    }
    if !(breaker.failure_rate > 0.0 && breaker.failure_rate <= 1.0) {
        issues.add(
            "breaker.failure_rate",
            format!(
                "{} is not a share between 0 (exclusive) and 1",
                breaker.failure_rate
            ),
        );
    }
    if breaker.window.is_zero() || breaker.open_base.is_zero() {
        issues.add("breaker", "window and open_base must be longer than zero");
    }
    if breaker.open_max < breaker.open_base {
        issues.add("breaker.open_max", "must be at least open_base");
    }
    breaker
}

/// `[[routes]]` (zero config when there are none), against the providers that validated.
fn routes(
    raw: Vec<RawRoute>,
    providers: &[ProviderConfig],
    servers: &[crate::discover::Server],
    issues: &mut Issues,
) -> Vec<Route> {
    let raw_routes = if raw.is_empty() {
        zero_config_routes(providers, servers)
    } else {
        raw
    };
    raw_routes
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| route(i, r, providers, issues))
        .collect()
}

/// `routes[i]`; `None` when its model glob is unusable.
fn route(
    i: usize,
    r: RawRoute,
    providers: &[ProviderConfig],
    issues: &mut Issues,
) -> Option<Route> {
    let at = |field: &str| format!("routes[{i}].{field}");
    let matcher = match globset::Glob::new(&r.model) {
        Ok(g) if !r.model.is_empty() => g.compile_matcher(),
        Ok(_) => {
            issues.add(at("model"), "must not be empty");
            return None;
        }
        Err(e) => {
            issues.add(
                at("model"),
                format!("{:?} is not a valid glob: {e}", r.model),
            );
            return None;
        }
    };
    if r.backends.is_empty() {
        issues.add(
            at("backends"),
            "lists no backend; write e.g. [\"anthropic\"] or [\"openrouter/some/model\"]",
        );
    }
    let backends = r
        .backends
        .iter()
        .enumerate()
        .map(|(j, b)| backend(format!("routes[{i}].backends[{j}]"), b, providers, issues))
        .collect();
    Some(Route {
        pattern: r.model,
        matcher,
        backends,
    })
}

/// One backend of a route, `PROVIDER` or `PROVIDER/MODEL`, naming a configured provider.
fn backend(path: String, b: &str, providers: &[ProviderConfig], issues: &mut Issues) -> BackendRef {
    let backend = BackendRef::parse(b);
    if !providers.iter().any(|p| p.name == backend.provider) {
        let known: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
        issues.add(
            path.clone(),
            format!(
                "{b:?} names provider {:?}, which is not configured (configured: {})",
                backend.provider,
                known.join(", ")
            ),
        );
    }
    if backend.model.as_deref() == Some("") {
        issues.add(path, format!("{b:?} has an empty model after '/'"));
    }
    backend
}

/// `[journal]`.
fn journal(raw: &RawJournal, issues: &mut Issues) -> JournalConfig {
    let d = Retention::default();
    let journal = JournalConfig {
        enabled: raw.enabled.unwrap_or(true),
        path: raw.path.as_deref().map(expand_home),
        retention: Retention {
            max_rows: raw.max_rows.unwrap_or(d.max_rows),
            max_age: raw.max_age.unwrap_or(d.max_age),
        },
    };
    if journal.retention.max_rows == 0 {
        issues.add(
            "journal.max_rows",
            "must be at least 1 (turn the journal off with enabled = false)",
        );
    }
    journal
}

/// `[prices]`: valid globs, and no negative price.
fn prices(raw: &BTreeMap<String, Price>, issues: &mut Issues) {
    for (glob, price) in raw {
        if globset::Glob::new(glob).is_err() {
            issues.add(format!("prices.{glob:?}"), "is not a valid model glob");
        }
        if !(price.input >= 0.0 && price.output >= 0.0) {
            issues.add(
                format!("prices.{glob:?}"),
                "prices must be zero or more (USD per million tokens)",
            );
        }
    }
}
