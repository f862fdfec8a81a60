//! What we call: one [`Provider`] per configured upstream, with its own pooled HTTP client,
//! credentials and timeouts. It builds the outbound request (headers cleaned, key applied, hop
//! header added) and classifies transport failures; it knows nothing of client dialects.
//!
//! What differs between provider kinds is the [`Api`] trait, one implementation per file
//! (`anthropic.rs`, `openai.rs`, `gemini.rs`, `local/`), chosen once in [`api`]: nothing
//! outside this module matches on [`ProviderKind`].

pub mod anthropic;
pub mod gemini;
pub mod local;
pub mod openai;
pub mod transport;

use crate::canonical::{Request, ToolNames};
use crate::config::{ProviderConfig, ProviderKind};
use crate::error::{FailureKind, ProviderError};
use crate::secret::Secret;
use crate::wire;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The header that marks a request as having passed through an Understudy (loop protection).
pub const HOP_HEADER: &str = "x-understudy-hop";

/// Output tokens asked of an upstream that requires a limit (Anthropic, the local engine) when
/// the client set none, before clamping to the model's own limit.
pub const DEFAULT_MAX_TOKENS: u32 = 8192;

/// What a request asks a provider to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens`.
    CountTokens,
    /// OpenAI `POST /chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /completions` (legacy, autocomplete).
    Completions,
    /// OpenAI `POST /embeddings` (Gemini: its OpenAI-compatible endpoint).
    Embeddings,
    /// Gemini `POST /v1beta/models/MODEL:streamGenerateContent?alt=sse`.
    GeminiStream,
}

impl Operation {
    /// A model answers it (it can stream, break and be continued): everything but counting
    /// tokens and embeddings.
    pub fn answers(self) -> bool {
        !matches!(self, Operation::CountTokens | Operation::Embeddings)
    }
}

/// What one provider kind does differently: its URLs, its credentials header, which client
/// requests it can take unchanged, how a canonical request is written for it, how its stream
/// and its errors are read. Implemented once per kind, in the kind's own file.
pub trait Api: Send + Sync + std::fmt::Debug {
    /// The URL path of an operation, appended to the configured base URL.
    fn path(&self, op: Operation, model: &str) -> String;
    /// The query string to send (the client's, by default).
    fn query<'a>(&self, _op: Operation, client: Option<&'a str>) -> Option<&'a str> {
        client
    }
    /// The header that carries the configured key; `None` for a kind that takes none.
    fn key_header(&self, key: &str) -> Option<(HeaderName, String)>;
    /// Headers this API requires on requests the gateway writes (probes, translations).
    fn own_headers(&self, _h: &mut HeaderMap) {}
    /// The model list a health probe asks for; `None`: no probe (it answers for itself).
    fn probe_path(&self) -> Option<&'static str>;
    /// True when an answer (`status`, the start of its body) refuses the key that was sent:
    /// 401/403, unless the API says so otherwise.
    fn rejects_key(&self, status: u16, _body: &str) -> bool {
        matches!(status, 401 | 403)
    }
    /// True when a client request of this operation can be sent unchanged.
    fn passes_through(&self, op: Operation) -> bool;
    /// True when it serves embeddings.
    fn has_embeddings(&self) -> bool {
        true
    }
    /// The request written for this API.
    fn encode(&self, req: &Request, model: &str, limits: Limits, provider: &str) -> Encoded;
    /// A decoder for its event stream (`None`: it yields canonical events itself).
    fn decoder(&self) -> Option<wire::Decoder>;
    /// Called after each piece of its stream is decoded (Gemini keeps thought signatures).
    fn observe(&self, _decoder: &mut wire::Decoder) {}
    /// The message of one of its error bodies.
    fn error_message(&self, body: &Value) -> Option<String>;
    /// True when an error body says the prompt does not fit the context window.
    fn context_overflow(&self, body: &Value, message: Option<&str>) -> bool;
    /// The in-process engine that answers instead of an HTTP call (the local model).
    fn engine(&self) -> Option<&Arc<local::LocalEngine>> {
        None
    }
    /// True for the local model, the backend of last resort and of offline routing.
    fn is_local(&self) -> bool {
        false
    }
}

/// The one dispatch on the provider kind.
pub fn api(kind: ProviderKind, local: Option<crate::config::LocalConfig>) -> Box<dyn Api> {
    match kind {
        ProviderKind::Anthropic => Box::new(anthropic::Anthropic),
        ProviderKind::OpenAi => Box::new(openai::OpenAi),
        ProviderKind::Gemini => Box::new(gemini::Gemini::default()),
        ProviderKind::Local => Box::new(local::Local::new(local)),
    }
}

/// The output limit of one request: what the client asked for (clamped to the model's limit)
/// and the model's limit, when known.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The client's `max_tokens`, clamped.
    pub asked: Option<u32>,
    /// The model's output limit (`max_output_tokens`, else the built-in table).
    pub model: Option<u32>,
}

impl Limits {
    /// For an API that requires a limit: the client's, else the default within the model's.
    pub fn required(self) -> u32 {
        self.asked.unwrap_or_else(|| {
            self.model
                .unwrap_or(DEFAULT_MAX_TOKENS)
                .min(DEFAULT_MAX_TOKENS)
        })
    }
}

/// A request written for one provider.
#[derive(Debug)]
pub struct Encoded {
    /// Tool names as this provider sees them (shortened where it limits them).
    pub names: ToolNames,
    /// What is sent.
    pub body: EncodedBody,
}

/// The bytes of an HTTP call, or the request itself for an in-process engine.
#[derive(Debug)]
pub enum EncodedBody {
    /// An HTTP call.
    Http {
        /// Which endpoint.
        op: Operation,
        /// The JSON body.
        bytes: Bytes,
    },
    /// The local engine's request.
    Local {
        /// The canonical request.
        request: Box<Request>,
        /// The output limit.
        max_tokens: u32,
    },
}

impl Encoded {
    /// An HTTP call's body.
    pub fn http(names: ToolNames, op: Operation, body: &Value) -> Encoded {
        let mut v = serde_json::to_vec(body).expect("a JSON value always serializes");
        // The buffer grew by doubling: a large request would keep up to twice its size for as
        // long as the answer takes.
        v.shrink_to_fit();
        let bytes = Bytes::from(v);
        Encoded {
            names,
            body: EncodedBody::Http { op, bytes },
        }
    }
}

/// What a probe got back ([`Provider::probe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The path it asked (`/v1/models`).
    pub path: String,
    /// The start of the body (at most [`PROBE_BODY`] bytes), secrets redacted.
    pub body: String,
    /// Whether it carried the configured key.
    pub key_sent: bool,
    /// It carried the key, and the answer refused it ([`Api::rejects_key`]).
    pub key_rejected: bool,
}

/// A probe's answer is due within this (or `timeouts.first_byte`, if shorter).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The bytes of a probe's answer read at most.
const PROBE_BODY: usize = 4096;

/// A configured upstream, ready to call.
#[derive(Debug)]
pub struct Provider {
    /// Its configuration.
    pub config: ProviderConfig,
    client: transport::Transport,
    key: Result<Secret, String>,
    api: Box<dyn Api>,
    /// What its answers' rate-limit headers said, per credential.
    quota: crate::quota::Book,
}

/// Request headers never forwarded upstream: hop-by-hop headers (RFC 9110 §7.6.1), those the
/// HTTP client sets itself, browser context, and our own hop marker (added back explicitly).
/// `accept-encoding` is dropped so bodies arrive uncompressed and can be inspected.
const DROP_REQUEST: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "accept-encoding",
    "origin",
    "referer",
    "cookie",
    // The gateway's own token (`server.require_token`) is for the gateway, never an upstream.
    "x-understudy-token",
    HOP_HEADER,
];

/// Response headers never passed back: hop-by-hop, framing (the gateway frames its own body),
/// and those that would bind the client to the upstream's host.
const DROP_RESPONSE: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-encoding",
    "set-cookie",
    "alt-svc",
    "strict-transport-security",
    "date",
    "server",
];

/// Idle connections kept per upstream host: far more than one developer's tools keep busy
/// at once (Claude Code with its subagents runs a handful of requests in parallel); a burst
/// beyond it opens new connections, which is what a burst costs anyway.
const MAX_IDLE_PER_HOST: usize = 64;

impl Provider {
    /// Builds the HTTP client and reads the key (once, at start-up). Its quota's changes go
    /// to `quota_events`.
    pub async fn new(
        config: ProviderConfig,
        quota_events: tokio::sync::broadcast::Sender<crate::quota::Event>,
    ) -> Provider {
        let client = transport::Transport::new(transport::Settings {
            connect_timeout: config.timeouts.connect,
            idle_timeout: Duration::from_secs(90),
            // After a burst, only this many connections per host wait for reuse; the rest
            // close as they come back, with their buffers (2,000 idle connections held
            // their memory for the 90 s: RSS stayed at 4 x idle, BENCHMARKS.md "memory").
            max_idle_per_host: MAX_IDLE_PER_HOST,
        });
        if client.is_proxied() {
            tracing::info!(
                provider = %config.name,
                "requests go through the proxy the environment names (HTTPS_PROXY, HTTP_PROXY or ALL_PROXY; NO_PROXY honoured)"
            );
        }
        let key = match &config.key {
            Some(src) => src.resolve().await,
            None => Err("no api_key_env or api_key_keychain is configured".into()),
        };
        Provider {
            api: api(config.kind, config.local.clone()),
            quota: crate::quota::Book::new(
                &config.name,
                config.quota_alerts.clone(),
                config.spill_over_at,
                quota_events,
            ),
            config,
            client,
            key,
        }
    }

    /// Why requests that need this provider's own key will be refused before they leave: the
    /// configured key cannot be read (an unset variable, a missing keychain entry). `None` when
    /// it has one, or none is configured (then clients' own pass through: the config check
    /// refuses a cloud provider with neither).
    pub fn key_problem(&self) -> Option<String> {
        match (&self.key, &self.config.key) {
            (Err(why), Some(_)) => Some(why.clone()),
            _ => None,
        }
    }

    /// What its answers' rate-limit headers said, per credential.
    pub fn quota(&self) -> &crate::quota::Book {
        &self.quota
    }

    /// The credential a request with these client headers is sent with, as the quota names
    /// it: `key` when the configured one resolved, else the client's own (hashed).
    fn credential(&self, headers: &HeaderMap) -> String {
        if self.key.is_ok() {
            return "key".to_owned();
        }
        client_credential_header(headers)
            .and_then(|v| v.to_str().ok().map(crate::quota::client_credential))
            .unwrap_or_else(|| "none".to_owned())
    }

    /// Why a request with these client headers should not come here now: its credential is
    /// refused until a reset, or (with `spill_over_at`) a window of it is past the threshold.
    pub fn holds_back(&self, client: &HeaderMap, now_ms: u64) -> Option<crate::quota::Hold> {
        if self.quota.is_empty() {
            return None;
        }
        self.quota.holds_back(&self.credential(client), now_ms)
    }

    /// True when a quota hold on the credential these client headers use ended after
    /// `since_ms`: a conversation moved off this provider before then comes back.
    pub fn quota_released_since(&self, client: &HeaderMap, since_ms: u64) -> bool {
        !self.quota.is_empty()
            && self
                .quota
                .released_since(&self.credential(client), since_ms)
    }

    /// What this provider's kind does differently.
    pub fn api(&self) -> &dyn Api {
        &*self.api
    }

    /// The local engine behind a `local` provider.
    pub fn local(&self) -> Option<&Arc<local::LocalEngine>> {
        self.api.engine()
    }

    /// The request for this provider: the client's output limit clamped to the model's.
    pub fn encode(&self, req: &Request, model: &str) -> Encoded {
        let limit = self
            .config
            .max_output_tokens
            .or_else(|| wire::known_output_limit(model));
        let asked = match (req.max_tokens, limit) {
            (Some(r), Some(l)) => Some(r.min(l)),
            (r, _) => r,
        };
        let limits = Limits {
            asked,
            model: limit,
        };
        self.api.encode(req, model, limits, self.name())
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The URL for an operation: Anthropic's base URL has no `/v1` (like `ANTHROPIC_BASE_URL`);
    /// an OpenAI-compatible base URL includes it (like the OpenAI SDK's `base_url`); Gemini's is
    /// the API host (`/v1beta/...` is appended).
    pub fn url(&self, op: Operation, model: &str, query: Option<&str>) -> Url {
        // The base URL parsed at start-up, its path extended: parsing the whole URL again
        // (host, IDNA) was 1.7 % of the gateway's CPU per request in a passthrough profile.
        let mut url = self.config.base_url.clone();
        let base = url.path().trim_end_matches('/');
        let tail = self.api.path(op, model);
        let mut path = String::with_capacity(base.len() + tail.len());
        path.push_str(base);
        path.push_str(&tail);
        url.set_path(&path);
        url.set_query(self.api.query(op, query));
        url
    }

    /// Sends `body` upstream and waits for the response headers (at most `timeouts.first_byte`).
    /// Credentials: the configured key if it resolved; else, with `passthrough_auth`, the
    /// client's own `x-api-key` / `Authorization`; else `Err` saying what to configure.
    pub async fn send(
        &self,
        op: Operation,
        query: Option<&str>,
        client_headers: &HeaderMap,
        body: Bytes,
    ) -> Result<reqwest::Response, SendError> {
        let headers = self.outbound_headers(client_headers)?;
        self.post(self.url(op, "", query), headers, body).await
    }

    /// Sends a request the gateway wrote itself (a translation): none of the client's headers
    /// go along, and only the configured key is used, since the client's credentials belong to
    /// another API than this provider's.
    pub async fn send_translated(
        &self,
        op: Operation,
        model: &str,
        body: Bytes,
    ) -> Result<reqwest::Response, SendError> {
        let mut h = HeaderMap::new();
        match &self.key {
            Ok(key) => self.put_key(&mut h, key)?,
            // A model server on this machine takes no key.
            Err(_) if self.config.on_this_machine => {}
            Err(why) => {
                return Err(SendError::MissingKey {
                    provider: self.name().to_owned(),
                    reason: format!(
                        "{why}; a request translated from another API cannot use the client's own credentials, \
                         so set api_key_env or api_key_keychain for this provider"
                    ),
                })
            }
        }
        self.api.own_headers(&mut h);
        h.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        self.finish_headers(&mut h);
        self.post(self.url(op, model, None), h, body).await
    }

    /// What every outbound request carries: the configured extra headers, the JSON content
    /// type, and the hop marker.
    fn finish_headers(&self, h: &mut HeaderMap) {
        for (k, v) in &self.config.headers {
            h.insert(k.clone(), v.clone());
        }
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(HOP_HEADER, HeaderValue::from_static("1"));
    }

    /// A health probe that spends no tokens: the provider's model list (GET, with the
    /// configured key when there is one). `Ok` when it answered at all, with the start of the
    /// answer's body (what a rejected key is told by, for Gemini).
    pub async fn probe(&self) -> Result<ProbeAnswer, ProviderError> {
        let base = self.config.base_url.as_str().trim_end_matches('/');
        // The local engine restarts itself; an open breaker's trial is its probe.
        let Some(path) = self.api.probe_path() else {
            return Ok(ProbeAnswer {
                status: 200,
                path: String::new(),
                body: String::new(),
                key_sent: false,
                key_rejected: false,
            });
        };
        let mut h = HeaderMap::new();
        let key_sent = match &self.key {
            Ok(key) => self.put_key(&mut h, key).is_ok(),
            Err(_) => false,
        };
        self.api.own_headers(&mut h);
        h.insert(HOP_HEADER, HeaderValue::from_static("1"));
        let within = self.config.timeouts.first_byte.min(PROBE_TIMEOUT);
        let answer = async {
            let url = Url::parse(&format!("{base}{path}")).map_err(|e| {
                self.failure(FailureKind::Transport, format!("the probe's URL: {e}"))
            })?;
            let mut r = self
                .client
                .send(http::Method::GET, &url, h, Bytes::new())
                .await
                .map_err(|e| self.classify_send(&e))?;
            let status = r.status().as_u16();
            // Enough of the body to tell a rejected key by; never the whole model list.
            let mut body = Vec::new();
            while body.len() < PROBE_BODY {
                match r.chunk().await {
                    Ok(Some(c)) => body.extend_from_slice(&c),
                    _ => break,
                }
            }
            body.truncate(PROBE_BODY);
            let body = crate::secret::redact(&String::from_utf8_lossy(&body)).into_owned();
            Ok(ProbeAnswer {
                status,
                path: path.to_owned(),
                key_rejected: key_sent && self.api.rejects_key(status, &body),
                body,
                key_sent,
            })
        };
        match tokio::time::timeout(within, answer).await {
            Err(_) => Err(self.failure(
                FailureKind::FirstByteTimeout,
                format!("the probe got no answer within {within:?}"),
            )),
            Ok(r) => r,
        }
    }

    fn put_key(&self, h: &mut HeaderMap, key: &Secret) -> Result<(), SendError> {
        let Some((name, value)) = self.api.key_header(key.expose()) else {
            return Ok(());
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| SendError::MissingKey {
            provider: self.name().to_owned(),
            reason: "the configured key contains characters that cannot go in an HTTP header"
                .into(),
        })?;
        value.set_sensitive(true);
        h.insert(name, value);
        Ok(())
    }

    async fn post(
        &self,
        url: Url,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<reqwest::Response, SendError> {
        // The client credential sent, if it is one (a cheap clone): the quota names it.
        let passed = self
            .key
            .is_err()
            .then(|| client_credential_header(&headers))
            .flatten();
        let answer = tokio::time::timeout(
            self.config.timeouts.first_byte,
            self.client.send(http::Method::POST, &url, headers, body),
        )
        .await;
        if let Ok(Ok(resp)) = &answer {
            let now = crate::quota::now_ms();
            if let Some(r) = crate::quota::read(resp.headers(), resp.status().as_u16(), now) {
                let credential = match (&self.key, passed) {
                    (Ok(_), _) => "key".to_owned(),
                    (Err(_), Some(v)) => crate::quota::client_credential(v.to_str().unwrap_or("")),
                    (Err(_), None) => "none".to_owned(),
                };
                self.quota.observe(&credential, r, now);
            }
        }
        match answer {
            Err(_) => Err(SendError::Failed(self.failure(
                FailureKind::FirstByteTimeout,
                format!(
                    "no response headers within {:?} (timeouts.first_byte)",
                    self.config.timeouts.first_byte
                ),
            ))),
            Ok(Err(e)) => Err(SendError::Failed(self.classify_send(&e))),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    fn outbound_headers(&self, client: &HeaderMap) -> Result<HeaderMap, SendError> {
        let mut h = HeaderMap::with_capacity(client.len() + 4);
        for (name, value) in client {
            if !DROP_REQUEST.contains(&name.as_str()) {
                h.append(name.clone(), value.clone());
            }
        }
        match (&self.key, self.config.passthrough_auth) {
            (Ok(key), _) => {
                h.remove("x-api-key");
                h.remove(http::header::AUTHORIZATION);
                // An org/project header belongs to the client's key, not to ours.
                h.remove("openai-organization");
                h.remove("openai-project");
                self.put_key(&mut h, key)?;
            }
            (Err(_), true)
                if h.contains_key("x-api-key") || h.contains_key(http::header::AUTHORIZATION) =>
            {
                // The client's own credential goes upstream: an upstream that quotes it back
                // must not get it into a log or an error.
                for name in ["x-api-key", http::header::AUTHORIZATION.as_str()] {
                    if let Some(v) = h.get(name).and_then(|v| v.to_str().ok()) {
                        crate::secret::remember(v, crate::secret::Kind::Passed);
                    }
                }
            }
            // A model server on this machine takes no key: the client's is not its to see.
            (Err(_), false) if self.config.on_this_machine => {
                h.remove("x-api-key");
                h.remove(http::header::AUTHORIZATION);
            }
            (Err(why), passthrough) => {
                let reason = if passthrough {
                    format!("{why}, and the client sent no x-api-key or Authorization header to pass through")
                } else {
                    format!("{why}; set api_key_env or api_key_keychain for it, or passthrough_auth = true to use the client's own key")
                };
                return Err(SendError::MissingKey {
                    provider: self.name().to_owned(),
                    reason,
                });
            }
        }
        self.finish_headers(&mut h);
        Ok(h)
    }

    /// Turns a reqwest error (an answer's body breaking) into a classified failure.
    pub fn classify(&self, e: &reqwest::Error) -> ProviderError {
        self.classify_error(e, e.is_timeout(), e.is_connect())
    }

    /// Turns a failed send into a classified failure.
    pub fn classify_send(&self, e: &transport::SendFailure) -> ProviderError {
        self.classify_error(e.error(), e.is_timeout(), e.is_connect())
    }

    /// The message carries no URL query and no headers, so it cannot carry a key.
    fn classify_error(
        &self,
        e: &(dyn std::error::Error + 'static),
        timeout: bool,
        connect: bool,
    ) -> ProviderError {
        let kind = if timeout {
            FailureKind::FirstByteTimeout
        } else if connect && looks_offline(e) {
            FailureKind::Offline
        } else if connect {
            FailureKind::Connect
        } else {
            FailureKind::Transport
        };
        let mut detail = match kind {
            FailureKind::Connect => format!("cannot connect to {}", self.config.base_url),
            FailureKind::Offline => format!(
                "cannot reach {} (the network looks down: no name resolution or no route)",
                self.config.base_url
            ),
            _ => "the connection failed".to_owned(),
        };
        for s in crate::error::chain(e).skip(1) {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
        }
        self.failure(kind, detail)
    }

    /// A failure of this provider.
    pub fn failure(&self, kind: FailureKind, detail: String) -> ProviderError {
        // Much of a failure's text is the upstream's: it never carries a key on.
        let detail = match crate::secret::redact(&detail) {
            std::borrow::Cow::Borrowed(_) => detail,
            std::borrow::Cow::Owned(clean) => clean,
        };
        ProviderError {
            provider: self.name().to_owned(),
            kind,
            detail,
        }
    }
}

/// The credential header a client sent (`x-api-key`, else `Authorization`).
fn client_credential_header(h: &HeaderMap) -> Option<HeaderValue> {
    h.get("x-api-key")
        .or_else(|| h.get(http::header::AUTHORIZATION))
        .cloned()
}

/// True when a connect error says the network itself is down: the name did not resolve, or
/// the kernel has no route (as opposed to a refused connection or a TLS failure, which say
/// something about the provider).
fn looks_offline(e: &(dyn std::error::Error + 'static)) -> bool {
    crate::error::chain(e).skip(1).any(|s| {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::NetworkUnreachable | std::io::ErrorKind::HostUnreachable
            ) {
                return true;
            }
        }
        let text = s.to_string().to_ascii_lowercase();
        text.contains("dns error")
            || text.contains("failed to lookup address")
            || text.contains("name or service not known")
            || text.contains("temporary failure in name resolution")
    })
}

/// Why a request could not be sent or got no response headers.
#[derive(Debug)]
pub enum SendError {
    /// No credentials to send.
    MissingKey {
        /// The provider's name.
        provider: String,
        /// What to configure.
        reason: String,
    },
    /// The call failed.
    Failed(ProviderError),
}

impl From<SendError> for crate::error::GatewayError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::MissingKey { provider, reason } => {
                crate::error::GatewayError::MissingKey { provider, reason }
            }
            SendError::Failed(e) => crate::error::GatewayError::Upstream(e),
        }
    }
}

/// Copies the upstream's response headers that a client may see (`retry-after`,
/// `x-should-retry`, `request-id`, rate-limit headers, …).
pub fn response_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(upstream.len());
    for (name, value) in upstream {
        if !DROP_RESPONSE.contains(&name.as_str()) {
            h.append(name.clone(), redact_header(value));
        }
    }
    h
}

/// A header value with any known secret in it replaced.
fn redact_header(value: &HeaderValue) -> HeaderValue {
    match crate::secret::redact_bytes(value.as_bytes()) {
        None => value.clone(),
        Some(clean) => HeaderValue::from_bytes(&clean)
            .unwrap_or_else(|_| HeaderValue::from_static(crate::secret::REDACTED)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigSource};

    async fn provider(toml: &str) -> Provider {
        let cfg = Config::from_toml(toml, ConfigSource::ZeroConfig).unwrap();
        Provider::new(
            cfg.providers[0].clone(),
            tokio::sync::broadcast::channel(4).0,
        )
        .await
    }

    fn client_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("client-key"));
        h.insert("anthropic-beta", HeaderValue::from_static("a,b"));
        h.insert("accept-encoding", HeaderValue::from_static("gzip"));
        h.insert("connection", HeaderValue::from_static("keep-alive"));
        h.insert(HOP_HEADER, HeaderValue::from_static("7"));
        h
    }

    #[tokio::test]
    async fn passthrough_keeps_the_client_key_and_betas_and_drops_hop_by_hop() {
        let p = provider("[providers.a]\nkind = \"anthropic\"\npassthrough_auth = true\n").await;
        let h = p.outbound_headers(&client_headers()).unwrap();
        assert_eq!(h["x-api-key"], "client-key");
        assert_eq!(h["anthropic-beta"], "a,b");
        assert_eq!(h[HOP_HEADER], "1");
        assert!(!h.contains_key("accept-encoding") && !h.contains_key("connection"));
    }

    #[tokio::test]
    async fn a_configured_key_replaces_the_client_key() {
        std::env::set_var("UNDERSTUDY_TEST_KEY_A", "sk-configured");
        let p =
            provider("[providers.o]\nkind = \"openai\"\napi_key_env = \"UNDERSTUDY_TEST_KEY_A\"\n")
                .await;
        let h = p.outbound_headers(&client_headers()).unwrap();
        assert_eq!(h["authorization"], "Bearer sk-configured");
        assert!(h["authorization"].is_sensitive());
        assert!(
            !h.contains_key("x-api-key"),
            "the client's key must not travel to another provider"
        );
    }

    #[tokio::test]
    async fn without_key_or_passthrough_the_error_says_what_to_set() {
        let p = provider(
            "[providers.o]\nkind = \"openai\"\napi_key_env = \"UNDERSTUDY_TEST_SURELY_UNSET\"\n",
        )
        .await;
        let Err(SendError::MissingKey { reason, .. }) = p.outbound_headers(&client_headers())
        else {
            panic!("expected MissingKey");
        };
        assert!(
            reason.contains("UNDERSTUDY_TEST_SURELY_UNSET is not set"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn an_unresolvable_name_reads_as_offline_and_a_refused_port_does_not() {
        let p = provider("[providers.a]\nkind = \"anthropic\"\nbase_url = \"http://understudy-test.invalid\"\npassthrough_auth = \"http://understudy-test.invalid\"\n").await;
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let settings = transport::Settings {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(1),
            max_idle_per_host: 1,
        };
        // Both clients' errors read the same way.
        for client in [
            transport::Transport::direct(settings),
            transport::Transport::proxied(settings),
        ] {
            let get = |url: &str| {
                let url = Url::parse(url).unwrap();
                let client = client.clone();
                async move {
                    client
                        .send(http::Method::GET, &url, HeaderMap::new(), Bytes::new())
                        .await
                        .unwrap_err()
                }
            };
            let e = get("http://understudy-test.invalid/").await;
            let failure = p.classify_send(&e);
            assert_eq!(failure.kind, FailureKind::Offline, "{client:?} {e:?}");
            assert!(failure.detail.contains("dns error"), "{}", failure.detail);
            let e = get(&format!("http://{free}/")).await;
            let failure = p.classify_send(&e);
            assert_eq!(failure.kind, FailureKind::Connect, "{client:?} {e:?}");
            assert!(
                failure.detail.to_lowercase().contains("connection refused"),
                "{}",
                failure.detail
            );
        }
    }

    #[tokio::test]
    async fn urls_follow_each_apis_base_url_convention() {
        let a = provider("[providers.a]\nkind = \"anthropic\"\nbase_url = \"http://h:1/proxy/\"\npassthrough_auth = \"http://h:1\"\n").await;
        assert_eq!(
            a.url(Operation::Messages, "", Some("beta=true")).as_str(),
            "http://h:1/proxy/v1/messages?beta=true"
        );
        let o = provider("[providers.o]\nkind = \"openai\"\nbase_url = \"http://h:1/v1\"\npassthrough_auth = \"http://h:1\"\n").await;
        assert_eq!(
            o.url(Operation::ChatCompletions, "", None).as_str(),
            "http://h:1/v1/chat/completions"
        );
        let g = provider("[providers.g]\nkind = \"gemini\"\nbase_url = \"http://h:1\"\npassthrough_auth = \"http://h:1\"\n").await;
        assert_eq!(
            g.url(Operation::GeminiStream, "gemini-2.5-pro", None)
                .as_str(),
            "http://h:1/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
        );
    }
}
