//! The entry for every request: peek at the model, route, then either translate (the backend
//! speaks another API: `crate::translate`) or pass through with inspection. When the client and
//! the upstream speak the same API, the upstream's bytes are forwarded unchanged as they
//! arrive — whole SSE events at a time, so a client never receives half an event — while an
//! [`Inspector`] follows the protocol on the side. A stream that ends without its completion
//! signal (or stalls, breaks, or turns malformed) is ended with the client dialect's explicit
//! error event, never a clean end.
use crate::client_api::{snippet, BodyProblem, Dialect, Ending, Inspector, Usage, Verdict};
use crate::config::ProviderKind;
use crate::error::{FailureKind, GatewayError, ProviderError};
use crate::observe::Trace;
use crate::providers::{response_headers, Operation, Provider};
use crate::resilience::{self, breaker::Admission, Report};
use crate::routing::{Backend, Router};
use crate::sse::{Frame, Splitter};
use crate::translate::{translate, ContinuationPlan, Format, Original, Pipeline, Translated};
use crate::wire;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Upstream error bodies larger than this are cut when read (they are quoted, not relayed whole).
pub(crate) const MAX_ERROR_BODY: usize = 1024 * 1024;

/// One client request to relay.
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
    /// Keep-alive interval for translated streams (`server.keepalive`).
    pub keepalive: Duration,
}

#[derive(Deserialize)]
struct RequestPeek {
    model: String,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptionsPeek>,
}

#[derive(Deserialize)]
struct StreamOptionsPeek {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// What the request log line says about an exchange.
#[derive(Debug)]
pub(crate) struct Exchange {
    dialect: Dialect,
    model: String,
    provider: String,
    upstream_model: String,
    stream: bool,
    pub(crate) started: Instant,
    trace: Trace,
}

impl Exchange {
    pub(crate) fn new(
        dialect: Dialect,
        model: &str,
        provider: &str,
        upstream_model: &str,
        stream: bool,
        trace: Trace,
    ) -> Exchange {
        Exchange {
            dialect,
            model: model.to_owned(),
            provider: provider.to_owned(),
            upstream_model: upstream_model.to_owned(),
            stream,
            started: Instant::now(),
            trace,
        }
    }

    /// Logs how this attempt ended and tells the request's trace.
    pub(crate) fn log(&self, status: u16, outcome: &str, usage: Usage, detail: Option<&str>) {
        // An upstream's own error answer is classed by its status, as the chain walk does.
        let class = match outcome {
            "upstream_error" => format!("http_{status}"),
            o => o.to_owned(),
        };
        self.trace.ended(
            &format!("{}/{}", self.provider, self.upstream_model),
            &class,
            usage.input_tokens,
            usage.output_tokens,
        );
        self.write_log(status, outcome, usage, detail);
    }

    /// Logs a stream that broke with `failure` (its class) and was continued elsewhere.
    pub(crate) fn log_continued(
        &self,
        status: u16,
        failure: &str,
        usage: Usage,
        detail: Option<&str>,
    ) {
        self.trace.ended(
            &format!("{}/{}", self.provider, self.upstream_model),
            failure,
            usage.input_tokens,
            usage.output_tokens,
        );
        self.trace.continued();
        self.write_log(status, "continued", usage, detail);
    }

    fn write_log(&self, status: u16, outcome: &str, usage: Usage, detail: Option<&str>) {
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        if outcome == "complete" {
            tracing::info!(
                dialect = self.dialect.as_str(), model = %self.model, provider = %self.provider,
                upstream_model = %self.upstream_model, stream = self.stream, status, outcome,
                input_tokens = usage.input_tokens, output_tokens = usage.output_tokens,
                duration_ms = format_args!("{ms:.1}"), "request"
            );
        } else {
            tracing::warn!(
                dialect = self.dialect.as_str(), model = %self.model, provider = %self.provider,
                upstream_model = %self.upstream_model, stream = self.stream, status, outcome,
                input_tokens = usage.input_tokens, output_tokens = usage.output_tokens,
                duration_ms = format_args!("{ms:.1}"), detail = detail.unwrap_or(""), "request"
            );
        }
    }
}

/// Parses the body as JSON, with the path of the problem when it is not what was expected.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
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
    let peek: RequestPeek = parse_json(&call.body)?;
    let chain = router.resolve(&peek.model)?;
    let chain = router.allowed(chain, &peek.model)?;
    let chain = candidates(chain, call.op, &peek.model)?;
    let stream = peek.stream.unwrap_or(false)
        && !matches!(call.op, Operation::CountTokens | Operation::Embeddings);
    let session = call
        .headers
        .get("x-claude-code-session-id")
        .and_then(|v| v.to_str().ok());
    let job = Job::Client {
        call: &call,
        peek: &peek,
    };
    walk(router, &chain, stream, session, &job).await
}

/// What each attempt of a chain walk sends.
enum Job<'a> {
    /// An Anthropic or OpenAI request: passed through or translated per backend.
    Client {
        call: &'a Call,
        peek: &'a RequestPeek,
    },
    /// An Ollama request (always translated).
    Ollama {
        endpoint: wire::ollama::Endpoint,
        request: &'a crate::canonical::Request,
        keepalive: Duration,
    },
}

impl Job<'_> {
    /// The request's trace: the client's dialect and model.
    fn trace(&self, router: &Router, stream: bool) -> Trace {
        let (dialect, model) = match self {
            Job::Client { call, peek } => (call.dialect.as_str(), peek.model.as_str()),
            Job::Ollama { request, .. } => ("ollama", request.model.as_str()),
        };
        router.recorder().trace(dialect, model, stream)
    }

    /// The client's format, for a continuation.
    fn format(&self) -> Format {
        match self {
            Job::Client { call, peek } => match (call.dialect, call.op) {
                (Dialect::Anthropic, _) => Format::Anthropic,
                (_, Operation::Completions) => Format::OpenAiCompletions,
                _ => Format::OpenAiChat {
                    include_usage: peek
                        .stream_options
                        .as_ref()
                        .and_then(|o| o.include_usage)
                        .unwrap_or(false),
                },
            },
            Job::Ollama { endpoint, .. } => Format::Ollama(*endpoint),
        }
    }

    fn plan(&self, router: &Router, later: &[&Backend], trace: &Trace) -> Option<ContinuationPlan> {
        if !later.iter().any(|b| b.provider.config.continuation) {
            return None;
        }
        let (original, model) = match self {
            Job::Client { call, peek } => (
                Original::Raw {
                    dialect: call.dialect,
                    body: call.body.clone(),
                },
                peek.model.clone(),
            ),
            Job::Ollama { request, .. } => (
                Original::Canonical(Box::new((*request).clone())),
                request.model.clone(),
            ),
        };
        Some(ContinuationPlan {
            original,
            candidates: later.iter().map(|b| (*b).clone()).collect(),
            health: router.health().clone(),
            format: self.format(),
            model,
            keepalive: match self {
                Job::Client { call, .. } => call.keepalive,
                Job::Ollama { keepalive, .. } => *keepalive,
            },
            trace: trace.clone(),
        })
    }

    async fn attempt(
        &self,
        backend: &Backend,
        report: Option<Report>,
        plan: Option<ContinuationPlan>,
        trace: &Trace,
    ) -> Result<Response, GatewayError> {
        trace.begin(&backend.key());
        let trace = trace.clone();
        match self {
            Job::Client { call, peek } if speaks(backend, call.dialect, call.op) => {
                passthrough(backend, call, peek, report, plan, trace).await
            }
            Job::Client { call, .. } => translate_call(backend, call, report, plan, trace).await,
            Job::Ollama {
                endpoint,
                request,
                keepalive,
            } => {
                let t = Translated {
                    format: Format::Ollama(*endpoint),
                    request: (*request).clone(),
                    keepalive: *keepalive,
                    report,
                    continuation: plan,
                    trace,
                };
                translate(backend, t).await
            }
        }
    }
}

/// Retries of the chain's last backend after a transport failure.
const MAX_RETRIES: u32 = 2;
/// Backoff before them (the official SDKs' defaults).
const RETRY_BASE: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(8);

/// A failure that never reached HTTP: worth a retry of the same backend after a pause. An
/// overloaded provider's 429/529 is not: with no other backend it goes to the client with its
/// `retry-after`, whose own retries honour it (retrying here too would multiply the load).
fn transient(result: &Result<Response, GatewayError>) -> bool {
    matches!(
        result,
        Err(GatewayError::Upstream(p)) if matches!(
            p.kind,
            FailureKind::Connect | FailureKind::FirstByteTimeout | FailureKind::Transport
        )
    )
}

/// Tries the chain's backends in order until one answers or a failure must go back to the
/// client (resilience::fails_over decides). A backend whose breaker is open is skipped. Every
/// attempt here ends before the commit point: a passthrough stream commits with its 2xx
/// headers, a translated one at its first content, so the client never sees a failed attempt.
async fn walk(
    router: &Router,
    chain: &[Backend],
    stream: bool,
    session: Option<&str>,
    job: &Job<'_>,
) -> Result<Response, GatewayError> {
    let chain_all = chain;
    let health = router.health();
    // A Claude Code session goes back to the backend that served it while that one is healthy.
    let mut order: Vec<&Backend> = chain.iter().collect();
    if let Some(key) = session.and_then(|s| health.session_backend(s)) {
        if let Some(pos) = order.iter().position(|b| b.key() == key) {
            let b = order.remove(pos);
            order.insert(0, b);
        }
    }
    // While the network looks down, a route with a local backend goes straight to it.
    let chain: Vec<&Backend> = if health.offline() && chain.iter().any(|b| b.is_local()) {
        order.into_iter().filter(|b| b.is_local()).collect()
    } else {
        order
    };
    // Paused: the route's first backend only, as if the client called it directly (no
    // session affinity, offline routing or breaker in the way).
    let chain: Vec<&Backend> = if router.paused() {
        chain_all.iter().take(1).collect()
    } else {
        chain
    };
    let trace = job.trace(router, stream);
    let result = walk_chain(router, &chain, stream, session, job, &trace).await;
    trace.status(match &result {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.status(),
    });
    result
}

async fn walk_chain(
    router: &Router,
    chain: &[&Backend],
    stream: bool,
    session: Option<&str>,
    job: &Job<'_>,
    trace: &Trace,
) -> Result<Response, GatewayError> {
    let health = router.health();
    let mut last = None;
    let mut refused = Vec::new();
    // The backends that failed before the one that answers, and why (for the client's
    // `x-understudy-failed-over` header and the log).
    let mut tried: Vec<String> = Vec::new();
    for (i, backend) in chain.iter().enumerate() {
        let key = backend.key();
        if router.paused() {
            // Not judged either: the outcome still reaches the breaker, the breaker does not
            // stand in the way.
        } else if let Admission::Rejected { retry_at } = health.admit(&key, true) {
            let secs = retry_at
                .saturating_duration_since(Instant::now())
                .as_secs_f64();
            refused.push(format!("{key} (circuit open, next trial in {secs:.0} s)"));
            continue;
        }
        let report = stream.then(|| Report::new(health.clone(), key.clone()));
        let plan = if stream && !router.paused() {
            job.plan(router, &chain[i + 1..], trace)
        } else {
            None
        };
        let mut result = job.attempt(backend, report, plan, trace).await;
        // The last backend gets retries with backoff for failures that never reached HTTP
        // (refused, no headers in time, broken before them), within its retry budget.
        let mut retries = 0;
        while i + 1 == chain.len()
            && !router.paused()
            && retries < MAX_RETRIES
            && transient(&result)
            && health.try_retry(&key)
        {
            let wait =
                resilience::retry::backoff(retries, RETRY_BASE, RETRY_CAP, rand::random::<f64>());
            tracing::warn!(backend = %key, retry = retries + 1, wait_ms = wait.as_millis() as u64, "retrying the same backend");
            health.record(&key, false);
            trace.failed(&key, &failure_class(&result), false);
            tokio::time::sleep(wait).await;
            retries += 1;
            let report = stream.then(|| Report::new(health.clone(), key.clone()));
            result = job.attempt(backend, report, None, trace).await;
        }
        let (failed, streaming) = match &result {
            Ok(r) if r.status().is_success() => (false, stream),
            Ok(r) => (resilience::status_fails_over(r.status().as_u16()), false),
            Err(e) => (resilience::fails_over(e), false),
        };
        match &result {
            Ok(r) if r.status().is_success() => {
                if streaming {
                    trace.committed(&key);
                }
            }
            _ => trace.failed(
                &key,
                &failure_class(&result),
                !failed || i + 1 == chain.len(),
            ),
        }
        // A committed stream reports its own outcome when it ends.
        if !streaming {
            health.record(&key, !failed);
        }
        if !backend.is_local() {
            match &result {
                Err(GatewayError::Upstream(p)) if p.kind == FailureKind::Offline => {
                    health.network(true)
                }
                Ok(_) => health.network(false),
                _ => {}
            }
        }
        if !failed {
            if let Some(s) = session {
                health.remember_session(s, &key);
            }
        }
        if failed && i + 1 < chain.len() {
            let why = match &result {
                Ok(r) => format!("HTTP {}", r.status().as_u16()),
                Err(e) => e.to_string(),
            };
            tracing::warn!(backend = %key, next = %chain[i + 1].key(), why = %why, "failing over");
            tried.push(format!("{key}={}", failure_class(&result)));
            last = Some(result);
            continue;
        }
        return result.map(|mut r| {
            if !tried.is_empty() {
                if let Ok(v) = HeaderValue::from_str(&tried.join(", ")) {
                    r.headers_mut().insert("x-understudy-failed-over", v);
                }
            }
            r
        });
    }
    last.unwrap_or_else(|| {
        Err(GatewayError::Unavailable(format!(
            "no backend can take this request now: {}",
            refused.join(", ")
        )))
    })
}

/// A failed attempt in one word: the failure class, or `http_STATUS`.
fn failure_class(result: &Result<Response, GatewayError>) -> String {
    match result {
        Ok(r) => format!("http_{}", r.status().as_u16()),
        Err(e) => error_class(e),
    }
}

/// An error in one word: the upstream failure's class, or `http_STATUS`.
pub(crate) fn error_class(e: &GatewayError) -> String {
    match e {
        GatewayError::Upstream(p) => p.kind.as_str().to_owned(),
        e => format!("http_{}", e.status()),
    }
}

/// Same-protocol passthrough to one backend.
async fn passthrough(
    backend: &Backend,
    call: &Call,
    peek: &RequestPeek,
    report: Option<Report>,
    plan: Option<ContinuationPlan>,
    trace: Trace,
) -> Result<Response, GatewayError> {
    let provider = backend.provider.clone();
    let stream = peek.stream.unwrap_or(false)
        && !matches!(call.op, Operation::CountTokens | Operation::Embeddings);
    let exchange = Exchange::new(
        call.dialect,
        &peek.model,
        provider.name(),
        &backend.model,
        stream,
        trace,
    );
    let body = if backend.model == peek.model {
        call.body.clone()
    } else {
        rewrite_model(&call.body, &backend.model)?
    };
    tracing::debug!(provider = provider.name(), model = %backend.model, stream, "sending upstream");
    let resp = provider
        .send(call.op, call.query.as_deref(), &call.headers, body)
        .await?;
    let deadline = exchange.started + provider.config.timeouts.total;
    let status = resp.status();
    let headers = response_headers(resp.headers());

    if !status.is_success() {
        return relay_error_status(
            &provider,
            call.dialect,
            resp,
            status,
            headers,
            deadline,
            &exchange,
        )
        .await;
    }
    if stream {
        let is_sse = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            let ct = content_type(resp.headers());
            let body = read_body(&provider, resp, deadline, MAX_ERROR_BODY)
                .await
                .unwrap_or_default();
            return Err(GatewayError::Upstream(provider.failure(
                FailureKind::Malformed,
                format!(
                    "asked for a stream, the upstream answered HTTP {} with {ct} instead of text/event-stream: {}",
                    status.as_u16(),
                    snippet(&body, 200)
                ),
            )));
        }
        let name = provider.name().to_owned();
        let provider_timeouts = provider.config.timeouts;
        let mut state = RelayState {
            upstream: resp.bytes_stream().boxed(),
            splitter: Splitter::new(),
            inspector: call.dialect.inspector(),
            dialect: call.dialect,
            provider,
            deadline,
            frames: Vec::new(),
            finished: false,
            exchange,
            status: status.as_u16(),
            report: None,
            failure: None,
            upstream_error: None,
            shadow: plan.as_ref().map(|p| {
                let kind = match call.dialect {
                    Dialect::Anthropic => ProviderKind::Anthropic,
                    _ => ProviderKind::OpenAi,
                };
                Pipeline::new(
                    kind,
                    &name,
                    Default::default(),
                    p.format,
                    &peek.model,
                    0,
                    false,
                )
            }),
            plan,
            held: None,
            continue_from: None,
            handoff: None,
            keepalive: call.keepalive,
            last_sent: Instant::now(),
            last_upstream: Instant::now(),
            first_content_by: Instant::now() + provider_timeouts.first_content,
        };
        // The commit point: hold what arrives until the first content (or until a keep-alive
        // is due), so that a stream that fails before it is an HTTP error the chain can act on.
        let mut head = BytesMut::new();
        let hold_until = Instant::now() + call.keepalive;
        while !state.finished && !state.inspector.has_content() {
            // This attempt only: before the commit point a failure fails over (the walk), it is
            // not continued.
            match tokio::time::timeout_at(hold_until, state.next_chunk_inner()).await {
                Err(_) | Ok(None) => break,
                Ok(Some(b)) => head.extend_from_slice(&b),
            }
        }
        if state.finished && !state.inspector.has_content() {
            if let Some(e) = state.failure_before_content() {
                return Err(e);
            }
        }
        state.report = report;
        let body = stream_body(head.freeze(), state);
        return Ok(served_by((status, headers, body).into_response(), &name));
    }

    let body = read_body(&provider, resp, deadline, usize::MAX)
        .await
        .map_err(GatewayError::Upstream)?;
    let usage = if call.op == Operation::CountTokens {
        Usage::default()
    } else if call.op == Operation::Embeddings {
        let ok = serde_json::from_slice::<serde_json::Value>(&body)
            .is_ok_and(|v| v.get("data").is_some_and(serde_json::Value::is_array));
        if !ok {
            return Err(GatewayError::Upstream(provider.failure(
                FailureKind::Malformed,
                format!(
                    "the upstream's embeddings body has no data array: {}",
                    snippet(&body, 200)
                ),
            )));
        }
        Usage::default()
    } else {
        call.dialect.check_body(&body).map_err(|p| {
            let (kind, detail) = match p {
                BodyProblem::Malformed(d) => (FailureKind::Malformed, d),
                BodyProblem::Incomplete(d) => (FailureKind::Truncated, d),
            };
            GatewayError::Upstream(
                provider.failure(kind, format!("{detail}: {}", snippet(&body, 200))),
            )
        })?
    };
    exchange.log(status.as_u16(), "complete", usage, None);
    Ok(served_by(
        (status, headers, body).into_response(),
        provider.name(),
    ))
}

/// A stream the client reads chunk by chunk (a relayed or translated answer).
pub(crate) trait ChunkSource: Send + 'static {
    /// The next bytes for the client, or `None` when the stream is over.
    fn next_chunk(&mut self) -> impl std::future::Future<Output = Option<Bytes>> + Send;
}

/// The response body of a stream: the bytes held until the commit point, then the rest.
/// Dropping it (the client went away) drops the source, which closes the upstream.
pub(crate) fn stream_body(first: Bytes, source: impl ChunkSource) -> Body {
    let stream = futures_util::stream::unfold((source, Some(first)), |(mut s, first)| async move {
        if let Some(b) = first.filter(|b| !b.is_empty()) {
            return Some((Ok::<_, std::convert::Infallible>(b), (s, None)));
        }
        s.next_chunk().await.map(|b| (Ok(b), (s, None)))
    });
    Body::from_stream(stream)
}

/// Marks who served the answer (`x-understudy-served-by`).
pub(crate) fn served_by(mut resp: Response, provider: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(provider) {
        resp.headers_mut().insert("x-understudy-served-by", v);
    }
    resp
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
            .filter(|b| b.provider.config.kind != ProviderKind::Anthropic)
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

/// True when the backend speaks the client's API for this operation, so the request can pass
/// through unchanged.
fn speaks(backend: &Backend, dialect: Dialect, op: Operation) -> bool {
    let kind = backend.provider.config.kind;
    match op {
        Operation::Embeddings => true,
        _ => matches!(
            (dialect, kind),
            (Dialect::Anthropic, ProviderKind::Anthropic) | (Dialect::OpenAi, ProviderKind::OpenAi)
        ),
    }
}

/// Decodes the client's request into the canonical model and translates it.
async fn translate_call(
    backend: &Backend,
    call: &Call,
    report: Option<Report>,
    plan: Option<ContinuationPlan>,
    trace: Trace,
) -> Result<Response, GatewayError> {
    let v: serde_json::Value = parse_json(&call.body)?;
    let (format, request) = match call.op {
        Operation::Messages => (Format::Anthropic, wire::anthropic::decode_request(&v)?),
        Operation::ChatCompletions => {
            let (r, include_usage) = wire::openai::decode_request(&v)?;
            (Format::OpenAiChat { include_usage }, r)
        }
        Operation::Completions => (
            Format::OpenAiCompletions,
            wire::openai::decode_completions(&v)?,
        ),
        Operation::CountTokens | Operation::Embeddings | Operation::GeminiStream => {
            return Err(GatewayError::Unsupported(format!(
                "provider '{}' speaks the {} API, which has no such endpoint",
                backend.provider.name(),
                backend.provider.config.kind.as_str()
            )))
        }
    };
    let mut request = request;
    request.model = v["model"].as_str().unwrap_or_default().to_owned();
    translate(
        backend,
        Translated {
            format,
            request,
            keepalive: call.keepalive,
            report,
            continuation: plan,
            trace,
        },
    )
    .await
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
    let stream = request.stream;
    let job = Job::Ollama {
        endpoint,
        request: &request,
        keepalive,
    };
    walk(router, &chain, stream, None, &job).await
}

/// Replaces the body's `model`, keeping every other field and their order.
fn rewrite_model(body: &[u8], model: &str) -> Result<Bytes, GatewayError> {
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| {
            GatewayError::InvalidRequest(format!("request body is not a JSON object: {e}"))
        })?;
    v.insert("model".into(), serde_json::Value::String(model.to_owned()));
    Ok(Bytes::from(
        serde_json::to_vec(&v).expect("a JSON map always serializes"),
    ))
}

fn content_type(h: &HeaderMap) -> String {
    h.get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no content-type")
        .to_owned()
}

/// An upstream error status: its own API error body is forwarded unmodified (status, body and
/// headers such as `retry-after` and `x-should-retry`); anything else (an HTML 502 page from a
/// proxy) becomes the client dialect's error with the same status and the page quoted.
async fn relay_error_status(
    provider: &Provider,
    dialect: Dialect,
    resp: reqwest::Response,
    status: StatusCode,
    headers: HeaderMap,
    deadline: Instant,
    exchange: &Exchange,
) -> Result<Response, GatewayError> {
    let ct = content_type(resp.headers());
    let body = read_body(provider, resp, deadline, MAX_ERROR_BODY)
        .await
        .map_err(GatewayError::Upstream)?;
    if dialect.is_error_body(&body) {
        exchange.log(
            status.as_u16(),
            "upstream_error",
            Usage::default(),
            Some(&snippet(&body, 300)),
        );
        return Ok(served_by(
            (status, headers, body).into_response(),
            provider.name(),
        ));
    }
    let err = GatewayError::Upstream(provider.failure(
        FailureKind::Status(status.as_u16()),
        format!(
            "answered HTTP {} with a body that is not an API error ({ct}): {}",
            status.as_u16(),
            snippet(&body, 200)
        ),
    ));
    let mut resp = dialect.error_response(&err);
    for name in ["retry-after", "retry-after-ms", "x-should-retry"] {
        if let Some(v) = headers.get(name) {
            resp.headers_mut().insert(name, v.clone());
        }
    }
    Ok(resp)
}

/// Reads a whole body within the idle and total limits.
pub(crate) async fn read_body(
    provider: &Provider,
    resp: reqwest::Response,
    deadline: Instant,
    limit: usize,
) -> Result<Bytes, ProviderError> {
    let idle = provider.config.timeouts.idle;
    let mut stream = resp.bytes_stream();
    let mut buf = BytesMut::new();
    loop {
        let (wait_until, kind) = next_wait(deadline, idle);
        match tokio::time::timeout_at(wait_until, stream.next()).await {
            Err(_) => return Err(timeout_failure(provider, kind, idle)),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => {
                return Err(provider.failure(
                    FailureKind::Transport,
                    format!(
                        "the connection broke after {} bytes of the body: {}",
                        buf.len(),
                        provider.classify(&e).detail
                    ),
                ))
            }
            Ok(Some(Ok(chunk))) => {
                if buf.len() < limit {
                    buf.extend_from_slice(&chunk[..chunk.len().min(limit - buf.len())]);
                }
            }
        }
    }
}

pub(crate) fn next_wait(deadline: Instant, idle: Duration) -> (Instant, FailureKind) {
    let idle_at = Instant::now() + idle;
    if deadline <= idle_at {
        (deadline, FailureKind::TotalTimeout)
    } else {
        (idle_at, FailureKind::IdleTimeout)
    }
}

pub(crate) fn timeout_failure(
    provider: &Provider,
    kind: FailureKind,
    idle: Duration,
) -> ProviderError {
    let detail = match kind {
        FailureKind::TotalTimeout => format!(
            "the call outlived {:?} (timeouts.total)",
            provider.config.timeouts.total
        ),
        FailureKind::FirstContentTimeout => format!(
            "no content within {:?} of the response headers (timeouts.first_content)",
            provider.config.timeouts.first_content
        ),
        _ => format!("the upstream sent nothing for {idle:?} (timeouts.idle)"),
    };
    provider.failure(kind, detail)
}

/// How long a stream may wait for its next upstream bytes, and what it is if none come: the
/// idle limit since the last bytes, the whole call's limit, and, until content has started,
/// the first-content limit; whichever comes first.
pub(crate) fn stream_limit(
    deadline: Instant,
    last_upstream: Instant,
    idle: Duration,
    first_content_by: Option<Instant>,
) -> (Instant, FailureKind) {
    let idle_at = last_upstream + idle;
    let (at, kind) = if deadline <= idle_at {
        (deadline, FailureKind::TotalTimeout)
    } else {
        (idle_at, FailureKind::IdleTimeout)
    };
    match first_content_by {
        Some(fc) if fc < at => (fc, FailureKind::FirstContentTimeout),
        _ => (at, kind),
    }
}

/// The state of one relayed stream. Dropping it (the client went away) drops the upstream
/// response too, which closes that connection.
struct RelayState {
    upstream: BoxStream<'static, reqwest::Result<Bytes>>,
    splitter: Splitter,
    inspector: Inspector,
    dialect: Dialect,
    provider: Arc<Provider>,
    deadline: Instant,
    frames: Vec<Frame>,
    finished: bool,
    exchange: Exchange,
    status: u16,
    /// Tells the backend's breaker how the stream ended.
    report: Option<Report>,
    /// Why the stream failed, once it did.
    failure: Option<ProviderError>,
    /// The upstream's own error event (its data), once it sent one.
    upstream_error: Option<String>,
    /// Where to continue the answer if it breaks after its first content.
    plan: Option<ContinuationPlan>,
    /// What the client has received, decoded (only with a plan): a continuation's prefill.
    shadow: Option<Pipeline>,
    /// A tool call's frames, held until it is whole.
    held: Option<BytesMut>,
    /// A failure after the first content, waiting to be continued elsewhere.
    continue_from: Option<ProviderError>,
    /// The continuation that took over.
    handoff: Option<Box<crate::translate::StreamState>>,
    /// Keep-alive interval, and when bytes last went to the client / came from the upstream.
    keepalive: Duration,
    last_sent: Instant,
    last_upstream: Instant,
    /// The first content must have started by then (`timeouts.first_content`).
    first_content_by: Instant,
}

impl RelayState {
    /// The failure of a stream that ended before any content, as the HTTP error the client
    /// gets instead of a 200 stream; `None` if it ended cleanly.
    fn failure_before_content(&mut self) -> Option<GatewayError> {
        if let Some(e) = self.failure.take() {
            return Some(GatewayError::Upstream(e));
        }
        self.upstream_error_failure().map(GatewayError::Upstream)
    }

    /// The upstream's own error event as a failure of this provider.
    fn upstream_error_failure(&mut self) -> Option<ProviderError> {
        let data = self.upstream_error.take()?;
        let v: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
        let (status, message) = match self.dialect {
            Dialect::Anthropic => (
                wire::anthropic::status_of_error_type(
                    v.pointer("/error/type")
                        .and_then(|t| t.as_str())
                        .unwrap_or("api_error"),
                ),
                v.pointer("/error/message")
                    .and_then(|m| m.as_str())
                    .unwrap_or(""),
            ),
            _ => (
                wire::openai::stream_error_status(&v["error"]),
                v.pointer("/error/message")
                    .and_then(|m| m.as_str())
                    .unwrap_or(""),
            ),
        };
        Some(self.provider.failure(
            FailureKind::Status(status),
            format!("the upstream reported an error: {message}"),
        ))
    }

    /// A failure can be continued elsewhere: there is a plan and a record of what was sent.
    /// Before any content a continuation is a plain retry spliced into the same message (the
    /// client may already have `message_start` and pings).
    fn can_continue(&self) -> bool {
        self.plan.is_some() && self.shadow.is_some()
    }

    /// Sends whole frames on, holding a tool call's frames until it is whole.
    fn release(&mut self, raw: &[u8], out: &mut BytesMut) {
        let in_tool = self.inspector.in_tool();
        if in_tool || self.held.is_some() {
            self.held
                .get_or_insert_with(BytesMut::new)
                .extend_from_slice(raw);
            if !in_tool {
                let held = self.held.take().unwrap_or_default();
                self.deliver(&held, out);
            }
        } else {
            self.deliver(raw, out);
        }
    }

    fn deliver(&mut self, bytes: &[u8], out: &mut BytesMut) {
        out.extend_from_slice(bytes);
        if let Some(shadow) = self.shadow.as_mut() {
            if shadow.feed(bytes, &mut BytesMut::new()).is_err() {
                // What was sent cannot be read back: no continuation for this stream.
                self.shadow = None;
            }
        }
    }

    /// The next bytes for the client: from the continuation once one took over.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(h) = self.handoff.as_mut() {
            return h.next_chunk().await;
        }
        let out = self.next_chunk_sent().await;
        if out.as_ref().is_some_and(|b| !b.is_empty()) {
            self.last_sent = Instant::now();
        }
        out
    }

    async fn next_chunk_sent(&mut self) -> Option<Bytes> {
        let mut out = BytesMut::new();
        if self.continue_from.is_none() {
            out.extend_from_slice(&self.next_chunk_inner().await?);
            if self.continue_from.is_some() && !out.is_empty() {
                // What arrived before the break goes to the client now, not after the
                // continuation has started; the continuation is the next chunk.
                return Some(out.freeze());
            }
        }
        if let Some(e) = self.continue_from.take() {
            let plan = self.plan.take().expect("a continuation needs a plan");
            let delivered = self.shadow.as_mut().expect("and a shadow").take_delivered();
            let why = GatewayError::Upstream(e.clone());
            match crate::translate::continue_stream(plan, delivered, &why).await {
                Ok((next, head)) => {
                    self.exchange.log_continued(
                        self.status,
                        e.kind.as_str(),
                        self.inspector.usage(),
                        Some(&format!("{e}; continued on {}", next.provider_name())),
                    );
                    out.extend_from_slice(&head);
                    self.handoff = Some(next);
                }
                Err(why) => {
                    self.exchange.log(
                        self.status,
                        e.kind.as_str(),
                        self.inspector.usage(),
                        Some(&why.to_string()),
                    );
                    out.extend_from_slice(&self.dialect.stream_error(&why).raw);
                }
            }
        }
        Some(out.freeze())
    }

    fn report(&mut self, ok: bool) {
        if let Some(r) = self.report.take() {
            r.done(ok);
        }
    }

    /// The next bytes of this attempt, or `None` when it is over.
    async fn next_chunk_inner(&mut self) -> Option<Bytes> {
        if self.finished {
            return None;
        }
        let idle = self.provider.config.timeouts.idle;
        loop {
            let (wait_until, kind) = stream_limit(
                self.deadline,
                self.last_upstream,
                idle,
                (!self.inspector.has_content()).then_some(self.first_content_by),
            );
            let ping_at = self.last_sent + self.keepalive;
            let item = match tokio::time::timeout_at(wait_until.min(ping_at), self.upstream.next())
                .await
            {
                Ok(item) => item,
                Err(_) if ping_at < wait_until => {
                    // The upstream is silent: keep the client alive (Claude Code gives up
                    // after 300 s without a byte).
                    self.last_sent = Instant::now();
                    return Some(self.dialect.keepalive());
                }
                Err(_) => {
                    let e = timeout_failure(&self.provider, kind, idle);
                    return Some(self.fail(BytesMut::new(), e));
                }
            };
            self.last_upstream = Instant::now();
            let mut out = BytesMut::new();
            match item {
                Some(Ok(chunk)) => {
                    self.splitter.feed(&chunk, &mut self.frames);
                    self.judge_frames(&mut out);
                    if !out.is_empty() || self.finished {
                        return Some(out.freeze());
                    }
                }
                Some(Err(e)) => {
                    let detail = format!(
                        "the connection broke mid-stream: {}",
                        self.provider.classify(&e).detail
                    );
                    let e = self.provider.failure(FailureKind::Transport, detail);
                    return Some(self.fail(out, e));
                }
                None => {
                    self.splitter.finish(&mut self.frames);
                    self.judge_frames(&mut out);
                    if self.finished {
                        return Some(out.freeze());
                    }
                    self.finished = true;
                    match self.inspector.end() {
                        Ending::Complete { append } => {
                            self.report(true);
                            if let Some(a) = append {
                                out.extend_from_slice(&a);
                            }
                            self.exchange.log(
                                self.status,
                                "complete",
                                self.inspector.usage(),
                                None,
                            );
                        }
                        Ending::UpstreamError => {
                            self.report(false);
                            self.exchange.log(
                                self.status,
                                "upstream_error_event",
                                self.inspector.usage(),
                                None,
                            );
                        }
                        Ending::Truncated(why) => {
                            let e = self.provider.failure(FailureKind::Truncated, why);
                            return Some(self.fail(out, e));
                        }
                    }
                    return (!out.is_empty()).then(|| out.freeze());
                }
            }
        }
    }

    /// Judges the whole frames split so far, appending what may be forwarded to `out`.
    fn judge_frames(&mut self, out: &mut BytesMut) {
        let frames = std::mem::take(&mut self.frames);
        for f in &frames {
            match self.inspector.frame(f) {
                Verdict::Forward => self.release(&f.raw, out),
                Verdict::ForwardError => {
                    self.upstream_error = f.data.clone();
                    if self.can_continue() {
                        // The upstream's own error after content: continue the answer instead.
                        if let Some(e) = self.upstream_error_failure() {
                            let tail = self.fail(std::mem::take(out), e);
                            out.extend_from_slice(&tail);
                            break;
                        }
                    }
                    self.held = None;
                    out.extend_from_slice(&f.raw);
                }
                Verdict::Drop => {}
                Verdict::Fail(kind, why) => {
                    let e = self.provider.failure(kind, why);
                    let tail = self.fail(std::mem::take(out), e);
                    out.extend_from_slice(&tail);
                    break;
                }
            }
        }
        self.frames = frames;
        self.frames.clear();
    }

    /// Ends the stream with the dialect's explicit error after `out`.
    fn fail(&mut self, mut out: BytesMut, e: ProviderError) -> Bytes {
        self.finished = true;
        self.report(false);
        self.failure = Some(e.clone());
        // Never half a tool call.
        self.held = None;
        if self.can_continue() {
            self.continue_from = Some(e);
            return out.freeze();
        }
        let outcome = e.kind.as_str();
        self.exchange.log(
            self.status,
            outcome,
            self.inspector.usage(),
            Some(&e.detail),
        );
        out.extend_from_slice(&self.dialect.stream_error(&GatewayError::Upstream(e)).raw);
        out.freeze()
    }
}

impl ChunkSource for RelayState {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        self.next().await
    }
}

impl Drop for RelayState {
    fn drop(&mut self) {
        if !self.finished {
            self.exchange.log(
                self.status,
                "client_disconnected",
                self.inspector.usage(),
                Some("the client closed the connection before the stream ended"),
            );
        }
    }
}
