//! Errors on the request path. They are values: each audience turns them into its own JSON body
//! and status in exactly one place (`client_api` for the client dialects, `server::admin` for
//! the admin API), and they never hold a key or a request body.

use std::fmt;

/// An error and its sources, outermost first.
pub fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// Why an upstream call failed. One classification serves logging now and failover later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// TCP/TLS: the provider could not be reached.
    Connect,
    /// The network itself looks down: the provider's name did not resolve, or there is no
    /// route to it.
    Offline,
    /// No response headers within `timeouts.first_byte`.
    FirstByteTimeout,
    /// Headers came, but no content block within `timeouts.first_content`.
    FirstContentTimeout,
    /// No body bytes within `timeouts.idle` (a stalled stream).
    IdleTimeout,
    /// The call outlived `timeouts.total`.
    TotalTimeout,
    /// The connection broke while the body was being read.
    Transport,
    /// The body ended cleanly but without its protocol's completion signal.
    Truncated,
    /// The upstream sent something that is not valid JSON where JSON was due.
    Malformed,
    /// The upstream sent an error status whose body is not its API's error shape (an HTML 502 page).
    Status(u16),
    /// The upstream sent more than the gateway holds for one answer (`server.max_upstream_*`).
    Oversize,
    /// The local model's worker process died (a signal, an abort) while answering.
    Crashed,
}

impl FailureKind {
    /// A short stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Offline => "offline",
            FailureKind::FirstByteTimeout => "first_byte_timeout",
            FailureKind::FirstContentTimeout => "first_content_timeout",
            FailureKind::IdleTimeout => "idle_timeout",
            FailureKind::TotalTimeout => "total_timeout",
            FailureKind::Transport => "transport",
            FailureKind::Truncated => "truncated",
            FailureKind::Malformed => "malformed",
            FailureKind::Status(_) => "status",
            FailureKind::Oversize => "oversize",
            FailureKind::Crashed => "crashed",
        }
    }

    /// True for the timeouts, which clients know as 504.
    pub fn is_timeout(self) -> bool {
        matches!(
            self,
            FailureKind::FirstByteTimeout
                | FailureKind::FirstContentTimeout
                | FailureKind::IdleTimeout
                | FailureKind::TotalTimeout
        )
    }
}

/// A failed upstream call: which provider, how it failed, and what we saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    /// The provider's configured name.
    pub provider: String,
    /// The classification.
    pub kind: FailureKind,
    /// A human sentence about what happened; may quote a truncated upstream body, never a key.
    pub detail: String,
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "provider '{}': {}", self.provider, self.detail)
    }
}

/// Everything that can go wrong between a client's request and its answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// The client's request is not acceptable (malformed JSON, missing field).
    #[error("{0}")]
    InvalidRequest(String),
    /// No route matches the requested model.
    #[error("model '{model}' is not routed by Understudy: {hint}")]
    UnknownModel {
        /// The client's model name.
        model: String,
        /// What is routed, and how to route more.
        hint: String,
    },
    /// The provider has no usable credentials.
    #[error("Understudy has no credentials for provider '{provider}': {reason}")]
    MissingKey {
        /// The provider's name.
        provider: String,
        /// What is missing and how to fix it.
        reason: String,
    },
    /// The request came from somewhere the gateway does not serve (a web page, a foreign Host).
    #[error("{0}")]
    Forbidden(String),
    /// An admin call (or, with `server.require_token`, any call) without the admin token.
    #[error("{0}")]
    Unauthorized(String),
    /// The body exceeds `server.max_body_bytes`.
    #[error("request body is larger than the {limit}-byte limit (server.max_body_bytes)")]
    TooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// The request already passed through an Understudy.
    #[error(
        "request loop: this request already passed through an Understudy gateway (header x-understudy-hop). \
         A provider's base_url points back at a gateway; point it at the real provider instead"
    )]
    LoopDetected,
    /// The route exists but this build cannot serve it.
    #[error("{0}")]
    Unsupported(String),
    /// No such endpoint.
    #[error("{0}")]
    NotFound(String),
    /// The upstream call failed.
    #[error("{0}")]
    Upstream(ProviderError),
    /// Every backend of the chain is refusing requests (circuit breakers open).
    #[error("{0}")]
    Unavailable(String),
    /// Every backend that could serve is out of quota until a reset (the provider refused
    /// the credential, or its window is past `spill_over_at`): 429 with the reset time in
    /// `retry-after`.
    #[error("{detail}")]
    QuotaExhausted {
        /// Which backends, why and until when, in words.
        detail: String,
        /// Seconds until the earliest reset.
        retry_after_secs: u64,
    },
    /// The prompt does not fit the upstream's context window. Worded as Anthropic words it,
    /// because Claude Code compacts the conversation when it reads "prompt is too long".
    #[error("prompt is too long: {detail}")]
    PromptTooLong {
        /// `N tokens > M maximum`, or the upstream's own words.
        detail: String,
    },
}

impl GatewayError {
    /// The HTTP status a client sees for this error.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::InvalidRequest(_)
            | GatewayError::Unsupported(_)
            | GatewayError::PromptTooLong { .. } => 400,
            GatewayError::UnknownModel { .. } | GatewayError::NotFound(_) => 404,
            GatewayError::MissingKey { .. } => 401,
            GatewayError::Forbidden(_) => 403,
            GatewayError::Unauthorized(_) => 401,
            GatewayError::TooLarge { .. } => 413,
            GatewayError::LoopDetected => 508,
            GatewayError::Unavailable(_) => 503,
            GatewayError::QuotaExhausted { .. } => 429,
            GatewayError::Upstream(e) => match e.kind {
                FailureKind::Status(s) => s,
                FailureKind::Crashed => 500,
                k if k.is_timeout() => 504,
                _ => 502,
            },
        }
    }
}
