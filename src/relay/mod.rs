//! The life of a request after the server has read it: [`relay`] (Anthropic and OpenAI
//! clients) and [`relay_ollama`] read the body once into a [`Request`], resolve the route, and
//! walk its chain of backends ([`chain`]). Each attempt either passes the request through
//! ([`passthrough`]: the backend speaks the client's API) or translates it ([`translated`]);
//! both stream through the one state machine in [`stream`]; a stream that breaks after its
//! first content is finished elsewhere ([`continuation`]). [`attempt`] holds what every
//! attempt shares; [`pipeline`] is the pure translation pipeline.

pub mod attempt;
mod chain;
pub mod continuation;
mod inspected;
mod passthrough;
mod peek;
pub mod pipeline;
mod stream;
mod translated;

use crate::canonical;
use crate::client_api::Dialect;
use crate::error::GatewayError;
use crate::providers::Operation;
use crate::routing::{Backend, Router};
use crate::wire;
use axum::response::Response;
use bytes::Bytes;
use http::HeaderMap;
use pipeline::Format;
use serde::Deserialize;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Upstream error bodies larger than this are cut when read (they are quoted, not relayed whole).
pub(crate) const MAX_ERROR_BODY: usize = 1024 * 1024;

/// One client request to relay, as the server read it.
#[derive(Debug)]
pub struct Call {
    /// The client's dialect.
    pub dialect: Dialect,
    /// What it asks for.
    pub op: Operation,
    /// The query string to keep (Claude Code's `beta=true`).
    pub query: Option<String>,
    /// The client's headers.
    pub headers: HeaderMap,
    /// The client's body.
    pub body: Bytes,
    /// Keep-alive interval for silent upstreams (`server.keepalive`).
    pub keepalive: Duration,
}

/// What the router needs of a body before anything else: its model and whether it streams.
#[derive(Deserialize, Debug, PartialEq)]
struct Peek {
    model: String,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptionsPeek>,
}

#[derive(Deserialize, Debug, PartialEq)]
struct StreamOptionsPeek {
    #[serde(default)]
    include_usage: Option<bool>,
}

impl Peek {
    /// Read from the body's top level without decoding the rest ([`peek`]), with the scan
    /// for the splice a backend may need; a body the scan leaves to serde is parsed whole,
    /// which also says what is wrong with it.
    fn read(body: &[u8]) -> Result<(Peek, Option<peek::TopLevel>), GatewayError> {
        let top = peek::scan(body);
        match top.as_ref().and_then(|t| Peek::from_scan(body, t)) {
            Some(p) => Ok((p, top)),
            None => Ok((parse_json(body)?, top)),
        }
    }

    /// The fields as serde would read them, or `None` where serde must decide (an escaped or
    /// missing model, a `stream` that is not a boolean, odd `stream_options`).
    fn from_scan(body: &[u8], top: &peek::TopLevel) -> Option<Peek> {
        let stream_options = match top.stream_options.clone().map(|r| &body[r]) {
            None | Some(b"null") => None,
            Some(v) => Some(serde_json::from_slice(v).ok()?),
        };
        Some(Peek {
            model: top.model(body)?.to_owned(),
            stream: top.stream(body)?,
            stream_options,
        })
    }
}

/// One client request, read once: every attempt of the chain walk and every continuation
/// works from it. The body stays bytes (a passthrough sends them as they are); it is decoded
/// into the canonical model at most once, when a translating backend or a continuation first
/// needs it.
#[derive(Debug)]
pub struct Request {
    /// The client's dialect.
    pub dialect: Dialect,
    /// What it asks for.
    pub op: Operation,
    /// The query string to keep.
    pub query: Option<String>,
    /// The client's headers.
    pub headers: HeaderMap,
    /// The client's body (empty for Ollama requests, which are decoded at once).
    pub body: Bytes,
    /// The model the client asked for.
    pub model: String,
    /// A streamed answer.
    pub stream: bool,
    /// What the client reads.
    pub format: Format,
    /// Keep-alive interval for silent upstreams.
    pub keepalive: Duration,
    canonical: OnceLock<Result<Arc<canonical::Request>, GatewayError>>,
    /// The body's top level as [`peek::scan`] found it (`None`: left to serde), for
    /// [`peek::splice`].
    top: Option<peek::TopLevel>,
}

impl Request {
    /// `provider` speaks the client's API for this operation: the request passes through
    /// (Ollama's requests are always translated).
    pub(crate) fn native_on(&self, provider: &crate::providers::Provider) -> bool {
        self.dialect != Dialect::Ollama && provider.api().passes_through(self.op)
    }

    /// The request in the canonical model, decoded on first use.
    pub fn canonical(&self) -> Result<Arc<canonical::Request>, GatewayError> {
        self.canonical.get_or_init(|| self.decode()).clone()
    }

    fn decode(&self) -> Result<Arc<canonical::Request>, GatewayError> {
        let v: serde_json::Value = parse_json(&self.body)?;
        let mut r = match self.op {
            Operation::Messages | Operation::CountTokens => wire::anthropic::decode_request(&v)?,
            Operation::Completions => wire::openai::decode_completions(&v)?,
            _ => wire::openai::decode_request(&v)?.0,
        };
        r.model = self.model.clone();
        Ok(Arc::new(r))
    }
}

/// Parses the body as JSON, with the path of the problem when it is not what was expected.
/// A body that parses costs one plain pass; only one that fails is read again to find where
/// (tracking the path of every value costs as much again, on every request).
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            GatewayError::InvalidRequest(format!("request body is not valid JSON: {inner}"))
        } else if path == "." {
            GatewayError::InvalidRequest(format!("invalid request body: {inner}"))
        } else {
            GatewayError::InvalidRequest(format!("invalid request body at {path}: {inner}"))
        }
    })
}

/// Relays one request and returns the client's response: passed through when the backend
/// speaks the client's API, translated otherwise.
pub async fn relay(router: &Router, call: Call) -> Result<Response, GatewayError> {
    let (peek, top) = Peek::read(&call.body)?;
    let chain = router.resolve(&peek.model)?;
    let chain = router.allowed(chain, &peek.model)?;
    let chain = candidates(chain, call.op, &peek.model)?;
    let format = match (call.dialect, call.op) {
        (Dialect::Anthropic, _) => Format::Anthropic,
        (_, Operation::Completions) => Format::OpenAiCompletions,
        _ => Format::OpenAiChat {
            include_usage: peek
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        },
    };
    let req = Arc::new(Request {
        stream: peek.stream.unwrap_or(false) && call.op.answers(),
        dialect: call.dialect,
        op: call.op,
        query: call.query,
        headers: call.headers,
        body: call.body,
        model: peek.model,
        format,
        keepalive: call.keepalive,
        canonical: OnceLock::new(),
        top,
    });
    chain::walk(router, &chain, &req).await
}

/// Serves an Ollama API request (always translated).
pub async fn relay_ollama(
    router: &Router,
    endpoint: wire::ollama::Endpoint,
    body: &[u8],
    keepalive: Duration,
) -> Result<Response, GatewayError> {
    let v: serde_json::Value = parse_json(body)?;
    let request = match endpoint {
        wire::ollama::Endpoint::Chat => wire::ollama::decode_chat(&v)?,
        wire::ollama::Endpoint::Generate => wire::ollama::decode_generate(&v)?,
    };
    let chain = router.resolve(&request.model)?;
    let chain = router.allowed(chain, &request.model)?;
    let chain = candidates(chain, Operation::ChatCompletions, &request.model)?;
    let req = Arc::new(Request {
        dialect: Dialect::Ollama,
        op: Operation::ChatCompletions,
        query: None,
        headers: HeaderMap::new(),
        body: Bytes::new(),
        model: request.model.clone(),
        stream: request.stream,
        format: Format::Ollama(endpoint),
        keepalive,
        canonical: OnceLock::from(Ok(Arc::new(request))),
        top: None,
    });
    chain::walk(router, &chain, &req).await
}

/// The backends that can serve the operation, in chain order (embeddings: those that have
/// them; Anthropic has none).
fn candidates(
    chain: Vec<Backend>,
    op: Operation,
    model: &str,
) -> Result<Vec<Backend>, GatewayError> {
    let found: Vec<Backend> = if op == Operation::Embeddings {
        chain
            .into_iter()
            .filter(|b| b.provider.api().has_embeddings())
            .collect()
    } else {
        chain
    };
    if found.is_empty() {
        return Err(GatewayError::Unsupported(if op == Operation::Embeddings {
            format!(
                "model '{model}' routes to no provider that has embeddings (Anthropic has none); \
                 route it to an OpenAI-compatible or Gemini provider"
            )
        } else {
            format!("model '{model}' routes to no usable backend")
        }));
    }
    Ok(found)
}
