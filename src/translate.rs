//! The translating relay: when a request's backend speaks another API than the client (or the
//! client speaks Ollama), the request is decoded into the canonical model, encoded for the
//! provider, and the provider's stream comes back through a [`Pipeline`]:
//!
//! upstream bytes → `sse::Splitter` → provider decoder → `canonical::Guard` → client encoder.
//!
//! The upstream is always asked for a stream; a non-streaming client gets the collected stream.
//! Nothing reaches the client before the first content block (the commit point): a failure
//! before it is a real HTTP error in the client's dialect. After it, a failure is the client
//! dialect's explicit in-stream error, never a clean end.

use crate::canonical::{self, Collector, Event, Guard, StreamFault, ToolNames};
use crate::client_api::Dialect;
use crate::config::ProviderKind;
use crate::error::{FailureKind, GatewayError};
use crate::providers::{response_headers, Operation, Provider};
use crate::relay::{read_body, served_by, timeout_failure, Exchange, MAX_ERROR_BODY};
use crate::routing::Backend;
use crate::sse::{Frame, Splitter};
use crate::wire::{self, anthropic, gemini, ollama, openai};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Output tokens asked of an Anthropic upstream when the client set no limit (Anthropic
/// requires one), before clamping to the model's own limit.
pub const DEFAULT_MAX_TOKENS: u32 = 8192;

/// What the client reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Anthropic Messages.
    Anthropic,
    /// OpenAI chat completions; `include_usage` adds the usage chunk.
    OpenAiChat {
        /// The client asked for `stream_options.include_usage`.
        include_usage: bool,
    },
    /// OpenAI legacy completions.
    OpenAiCompletions,
    /// Ollama NDJSON.
    Ollama(ollama::Endpoint),
}

impl Format {
    /// The dialect of its errors.
    pub fn dialect(self) -> Dialect {
        match self {
            Format::Anthropic => Dialect::Anthropic,
            Format::OpenAiChat { .. } | Format::OpenAiCompletions => Dialect::OpenAi,
            Format::Ollama(_) => Dialect::Ollama,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Ollama(_) => "application/x-ndjson",
            _ => "text/event-stream",
        }
    }
}

#[derive(Debug)]
enum Decoder {
    Anthropic(anthropic::StreamDecoder),
    OpenAi(openai::StreamDecoder),
    Gemini(gemini::StreamDecoder),
}

#[derive(Debug)]
enum Encoder {
    Anthropic(anthropic::StreamEncoder),
    Chat(openai::ChatEncoder),
    Completions(openai::CompletionsEncoder),
    Ollama(ollama::Encoder),
    Collect(Collector),
}

impl Encoder {
    fn event(&mut self, ev: &Event, out: &mut BytesMut) -> Result<(), StreamFault> {
        match self {
            Encoder::Anthropic(e) => e.event(ev, out),
            Encoder::Chat(e) => e.event(ev, out),
            Encoder::Completions(e) => e.event(ev, out),
            Encoder::Ollama(e) => return e.event(ev, out),
            Encoder::Collect(c) => return c.push(ev),
        }
        Ok(())
    }

    fn complete(&mut self, out: &mut BytesMut) {
        match self {
            Encoder::Anthropic(e) => e.complete(out),
            Encoder::Chat(e) => e.complete(out),
            Encoder::Completions(_) => out.extend_from_slice(b"data: [DONE]\n\n"),
            Encoder::Ollama(e) => e.complete(out),
            Encoder::Collect(_) => {}
        }
    }
}

/// Upstream bytes in, client bytes out, for one answer. Pure: no I/O, no clock, so the
/// transcripts in `tests/fixtures` run through exactly what the server runs.
#[derive(Debug)]
pub struct Pipeline {
    format: Format,
    splitter: Splitter,
    frames: Vec<Frame>,
    decoder: Decoder,
    guard: Guard,
    encoder: Encoder,
    loose: Vec<Event>,
    strict: Vec<Event>,
    /// The finish is written only once the upstream's stream ended cleanly after it.
    held_finish: Option<Event>,
    /// A tool_use block's events, held until its stop: a client never gets half a call.
    held_tool: Option<Vec<Event>>,
    /// What the client has received, in canonical form (for a continuation).
    delivered: Collector,
    /// Set when this pipeline continues an answer another backend broke.
    splice: Option<canonical::Splice>,
}

impl Pipeline {
    /// A pipeline from a `kind` provider named `provider` to a `format` client that asked for
    /// `model`; `stream: false` collects the answer instead ([`Pipeline::response`]).
    pub fn new(
        kind: ProviderKind,
        provider: &str,
        names: ToolNames,
        format: Format,
        model: &str,
        created: u64,
        stream: bool,
    ) -> Pipeline {
        let decoder = match kind {
            // The local engine's lines arrive as an Anthropic event stream.
            ProviderKind::Anthropic | ProviderKind::Local => Decoder::Anthropic(Default::default()),
            ProviderKind::OpenAi => Decoder::OpenAi(Default::default()),
            ProviderKind::Gemini => Decoder::Gemini(Default::default()),
        };
        let encoder = if !stream {
            Encoder::Collect(Collector::default())
        } else {
            match format {
                Format::Anthropic => Encoder::Anthropic(anthropic::StreamEncoder::new(model)),
                Format::OpenAiChat { include_usage } => {
                    Encoder::Chat(openai::ChatEncoder::new(model, created, include_usage))
                }
                Format::OpenAiCompletions => {
                    Encoder::Completions(openai::CompletionsEncoder::new(model, created))
                }
                Format::Ollama(ep) => Encoder::Ollama(ollama::Encoder::new(ep, model, created)),
            }
        };
        Pipeline {
            format,
            splitter: Splitter::new(),
            frames: Vec::new(),
            decoder,
            guard: Guard::new(provider, names),
            encoder,
            loose: Vec::new(),
            strict: Vec::new(),
            held_finish: None,
            held_tool: None,
            delivered: Collector::default(),
            splice: None,
        }
    }

    /// Makes this pipeline continue an answer that broke: `delivered` is what the client has,
    /// `splice` maps this upstream's events into that answer.
    pub fn continuing(
        mut self,
        delivered: Collector,
        splice: canonical::Splice,
        id: &str,
    ) -> Pipeline {
        self.delivered = delivered;
        self.splice = Some(splice);
        if let Encoder::Chat(e) = &mut self.encoder {
            e.resume(id, self.delivered.snapshot().tool_calls());
        }
        if let Encoder::Completions(e) = &mut self.encoder {
            e.resume(id);
        }
        self
    }

    /// What the client has received so far.
    pub fn delivered(&self) -> canonical::Delivered {
        self.delivered.snapshot()
    }

    /// Hands over the record of what was delivered (to the pipeline that continues it).
    pub fn take_delivered(&mut self) -> Collector {
        std::mem::take(&mut self.delivered)
    }

    /// Sends one strict event on (mapped by the splice, tool calls held until whole).
    fn deliver(&mut self, ev: Event, out: &mut BytesMut) -> Result<(), StreamFault> {
        let mut mapped = Vec::with_capacity(2);
        match &mut self.splice {
            Some(sp) => sp.map(ev, &mut mapped),
            None => mapped.push(ev),
        }
        for ev in mapped {
            let starts_tool = matches!(
                ev,
                Event::BlockStart {
                    block: canonical::StartBlock::ToolUse { .. },
                    ..
                }
            );
            if self.held_tool.is_some() || starts_tool {
                let stop = matches!(ev, Event::BlockStop { .. });
                self.held_tool.get_or_insert_with(Vec::new).push(ev);
                if stop {
                    for e in self.held_tool.take().unwrap_or_default() {
                        self.encoder.event(&e, out)?;
                        self.delivered.push(&e)?;
                    }
                }
                continue;
            }
            self.encoder.event(&ev, out)?;
            self.delivered.push(&ev)?;
        }
        Ok(())
    }

    /// Takes the next upstream bytes, appending client bytes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) -> Result<(), StreamFault> {
        self.splitter.feed(chunk, &mut self.frames);
        self.drain(out)
    }

    fn drain(&mut self, out: &mut BytesMut) -> Result<(), StreamFault> {
        let frames = std::mem::take(&mut self.frames);
        let result = frames.iter().try_for_each(|f| {
            match &mut self.decoder {
                Decoder::Anthropic(d) => d.frame(f, &mut self.loose)?,
                Decoder::OpenAi(d) => d.frame(f, &mut self.loose)?,
                Decoder::Gemini(d) => d.frame(f, &mut self.loose)?,
            }
            for ev in self.loose.drain(..) {
                self.guard.push(ev, &mut self.strict)?;
            }
            for ev in std::mem::take(&mut self.strict) {
                if matches!(ev, Event::Finish { .. }) {
                    self.held_finish = Some(ev);
                } else {
                    self.deliver(ev, out)?;
                }
            }
            Ok(())
        });
        self.frames = frames;
        self.frames.clear();
        result
    }

    /// The upstream closed cleanly: complete only if it sent its completion signal.
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<(), StreamFault> {
        self.splitter.finish(&mut self.frames);
        self.drain(out)?;
        self.guard.end()?;
        if let Some(Event::Finish {
            stop_reason,
            stop_sequence,
            ..
        }) = self.held_finish.take()
        {
            let ev = Event::Finish {
                stop_reason,
                stop_sequence,
                usage: self.guard.usage,
            };
            self.deliver(ev, out)?;
        }
        self.encoder.complete(out);
        Ok(())
    }

    /// True once a content block has started.
    pub fn has_content(&self) -> bool {
        self.guard.has_content()
    }

    /// True once the client may be answered: content began, or the answer is finished.
    pub fn committed(&self) -> bool {
        self.guard.has_content() || self.guard.finished()
    }

    /// The client's keep-alive, if its format has one.
    pub fn ping(&self, out: &mut BytesMut) {
        match self.format {
            Format::Anthropic => {
                out.extend_from_slice(b"event: ping\ndata: {\"type\":\"ping\"}\n\n")
            }
            Format::OpenAiChat { .. } | Format::OpenAiCompletions => {
                out.extend_from_slice(b": ping\n\n")
            }
            Format::Ollama(_) => {}
        }
    }

    /// The client format's terminal in-stream error.
    pub fn error_frame(&self, err: &GatewayError) -> Bytes {
        match self.format {
            Format::Ollama(_) => ollama::error_line(&err.to_string()),
            f => f.dialect().stream_error(err).raw,
        }
    }

    /// Tokens so far.
    pub fn usage(&self) -> canonical::Usage {
        self.guard.usage
    }

    /// Gemini thought signatures seen since the last call.
    pub fn take_signatures(&mut self) -> Vec<(String, String)> {
        match &mut self.decoder {
            Decoder::Gemini(d) => std::mem::take(&mut d.signatures),
            _ => Vec::new(),
        }
    }

    /// The collected answer of a non-streaming pipeline, after a clean [`Pipeline::finish`].
    pub fn response(&mut self) -> Option<canonical::Response> {
        match &mut self.encoder {
            Encoder::Collect(c) => std::mem::take(c).finish(),
            _ => None,
        }
    }
}

/// A whole answer in the client's format.
pub fn encode_response(
    format: Format,
    r: &canonical::Response,
    model: &str,
    created: u64,
) -> Value {
    match format {
        Format::Anthropic => anthropic::encode_response(r, model),
        Format::OpenAiChat { .. } => openai::encode_response(r, model, created),
        Format::OpenAiCompletions => openai::encode_completions_response(r, model, created),
        Format::Ollama(ep) => ollama::encode_response(ep, r, model, created),
    }
}

/// A request to translate.
#[derive(Debug)]
pub struct Translated {
    /// What the client reads.
    pub format: Format,
    /// The decoded request.
    pub request: canonical::Request,
    /// Keep-alive interval while the upstream is silent.
    pub keepalive: Duration,
    /// Tells the backend's breaker how a committed stream ended.
    pub report: Option<crate::resilience::Report>,
    /// Where to continue the answer if it breaks after its first content.
    pub continuation: Option<ContinuationPlan>,
    /// The request's trace (statistics and the journal).
    pub trace: crate::observe::Trace,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The status a client sees for an upstream status (protocol.md §3.8): overload is 529 to an
/// Anthropic client and 503 to others.
fn client_status(dialect: Dialect, upstream: u16) -> u16 {
    match (dialect, upstream) {
        (Dialect::Anthropic, 502 | 503 | 529) => 529,
        (_, 502 | 503 | 529) => 503,
        (_, s) => s,
    }
}

fn fault_error(provider: &Provider, dialect: Dialect, f: StreamFault) -> GatewayError {
    let kind = match f.kind {
        FailureKind::Status(s) => FailureKind::Status(client_status(dialect, s)),
        k => k,
    };
    GatewayError::Upstream(provider.failure(kind, f.detail))
}

/// Serves a translated request from `backend`.
/// A request encoded for one backend.
struct Encoded {
    names: ToolNames,
    body: Bytes,
    op: Operation,
    /// For the local engine: the output limit and the request itself.
    max_tokens: u32,
    request: Option<Box<canonical::Request>>,
}

fn encode_for(backend: &Backend, req: &canonical::Request) -> Encoded {
    let provider = &backend.provider;
    let limit = provider
        .config
        .max_output_tokens
        .or_else(|| wire::known_output_limit(&backend.model));
    let max_tokens = match (req.max_tokens, limit) {
        (Some(r), Some(l)) => Some(r.min(l)),
        (r, _) => r,
    };
    let (names, body, op) = match provider.config.kind {
        ProviderKind::Anthropic => {
            let n = max_tokens
                .unwrap_or_else(|| limit.unwrap_or(DEFAULT_MAX_TOKENS).min(DEFAULT_MAX_TOKENS));
            (
                ToolNames::default(),
                anthropic::encode_request(req, &backend.model, n),
                Operation::Messages,
            )
        }
        ProviderKind::OpenAi => {
            let names = ToolNames::new(&req.tools, openai::TOOL_NAME_LIMIT);
            let body =
                openai::encode_request(req, &backend.model, max_tokens, &names, provider.name());
            (names, body, Operation::ChatCompletions)
        }
        ProviderKind::Gemini => {
            let names = ToolNames::new(&req.tools, gemini::TOOL_NAME_LIMIT);
            let body = gemini::encode_request(req, max_tokens, &names, &provider.signatures);
            (names, body, Operation::GeminiStream)
        }
        ProviderKind::Local => {
            // The worker gets the canonical request itself (see `open`).
            let n = max_tokens
                .unwrap_or_else(|| limit.unwrap_or(DEFAULT_MAX_TOKENS).min(DEFAULT_MAX_TOKENS));
            return Encoded {
                names: ToolNames::default(),
                body: Bytes::new(),
                op: Operation::Messages,
                max_tokens: n,
                request: Some(Box::new(req.clone())),
            };
        }
    };
    let body = Bytes::from(serde_json::to_vec(&body).expect("a JSON value always serializes"));
    Encoded {
        names,
        body,
        op,
        max_tokens: 0,
        request: None,
    }
}

/// What the upstream answered to a translated request.
enum Opened {
    /// An event stream (2xx, or the local engine's).
    Stream(Upstream),
    /// An error status (its body not read yet).
    Status(reqwest::Response),
}

/// Upstream bytes, whoever sends them; a broken connection is already a classified failure.
type Upstream = BoxStream<'static, Result<Bytes, crate::error::ProviderError>>;

fn http_stream(provider: &Arc<Provider>, resp: reqwest::Response) -> Upstream {
    let p = provider.clone();
    resp.bytes_stream()
        .map(move |r| {
            r.map_err(|e| {
                let c = p.classify(&e);
                p.failure(
                    FailureKind::Transport,
                    format!("the connection broke mid-stream: {}", c.detail),
                )
            })
        })
        .boxed()
}

/// Sends an encoded request and checks that a success is an event stream.
async fn open(backend: &Backend, enc: &Encoded, deadline: Instant) -> Result<Opened, GatewayError> {
    let provider = &backend.provider;
    if let (Some(engine), Some(req)) = (&provider.local, &enc.request) {
        let (rx, guard) = engine
            .generate(req, enc.max_tokens)
            .await
            .map_err(|mut e| {
                e.provider = provider.name().to_owned();
                GatewayError::Upstream(e)
            })?;
        return Ok(Opened::Stream(crate::local::into_sse(
            rx,
            guard,
            backend.model.clone(),
            crate::local::offers_tools(req),
        )));
    }
    tracing::debug!(provider = provider.name(), model = %backend.model, kind = provider.config.kind.as_str(), "sending translated request upstream");
    let resp = provider
        .send_translated(enc.op, &backend.model, enc.body.clone())
        .await?;
    let status = resp.status();
    if !status.is_success() {
        return Ok(Opened::Status(resp));
    }
    let ct = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if !ct.starts_with("text/event-stream") {
        let body = read_body(provider, resp, deadline, MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        return Err(GatewayError::Upstream(provider.failure(FailureKind::Malformed, format!(
            "asked for a stream, the upstream answered HTTP {} with {} instead of text/event-stream: {}",
            status.as_u16(), if ct.is_empty() { "no content-type" } else { &ct }, crate::client_api::snippet(&body, 200)))));
    }
    Ok(Opened::Stream(http_stream(provider, resp)))
}

/// Serves a translated request from `backend`.
pub async fn translate(backend: &Backend, t: Translated) -> Result<Response, GatewayError> {
    let provider = backend.provider.clone();
    let kind = provider.config.kind;
    let req = &t.request;
    req.check_tool_results()
        .map_err(GatewayError::InvalidRequest)?;
    let dialect = t.format.dialect();
    let enc = encode_for(backend, req);
    let exchange = Exchange::new(
        dialect,
        &req.model,
        provider.name(),
        &backend.model,
        req.stream,
        t.trace.clone(),
    );
    let deadline = exchange.started + provider.config.timeouts.total;
    let resp = match open(backend, &enc, deadline).await? {
        Opened::Stream(r) => r,
        Opened::Status(r) => {
            return upstream_error(&provider, dialect, r, deadline, &exchange).await
        }
    };
    let names = enc.names;
    let created = unix_now();
    let mut state = StreamState {
        upstream: resp,
        pipe: Pipeline::new(
            kind,
            provider.name(),
            names,
            t.format,
            &req.model,
            created,
            req.stream,
        ),
        provider: provider.clone(),
        dialect,
        deadline,
        keepalive: t.keepalive,
        last_upstream: Instant::now(),
        last_sent: Instant::now(),
        finished: false,
        exchange,
        report: t.report,
        plan: t.continuation,
        pending: None,
        first_content_by: Instant::now() + provider.config.timeouts.first_content,
    };
    if !req.stream {
        let mut sink = BytesMut::new();
        while !state.finished {
            if let Err(e) = state.step(&mut sink, false).await {
                state.fail_before_commit(&e);
                return Err(e);
            }
        }
        let model = req.model.clone();
        let answer = state.pipe.response();
        let answer = answer.ok_or_else(|| {
            GatewayError::Upstream(provider.failure(
                FailureKind::Truncated,
                "the upstream finished without an answer".into(),
            ))
        })?;
        return Ok(served_by(
            axum::Json(encode_response(t.format, &answer, &model, created)).into_response(),
            provider.name(),
        ));
    }
    // Hold everything until the commit point (or a keep-alive is due): a failure before it is
    // still a proper HTTP error.
    let mut head = BytesMut::new();
    loop {
        if state.finished || state.pipe.committed() {
            break;
        }
        match state.step(&mut head, true).await {
            Ok(true) => break, // a keep-alive is due: commit with it
            Ok(false) => {}
            Err(e) => {
                state.fail_before_commit(&e);
                return Err(e);
            }
        }
    }
    let name = provider.name().to_owned();
    let content_type = t.format.content_type();
    let body = crate::relay::stream_body(head.freeze(), state);
    let mut resp = (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, content_type)],
        body,
    )
        .into_response();
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    Ok(served_by(resp, &name))
}

fn outcome_of(e: &GatewayError) -> &'static str {
    match e {
        GatewayError::Upstream(p) => p.kind.as_str(),
        _ => "error",
    }
}

fn usage_of(p: &Pipeline) -> crate::client_api::Usage {
    let u = p.usage();
    crate::client_api::Usage {
        input_tokens: u.total_input(),
        output_tokens: u.output,
    }
}

/// An upstream error status, in the client's dialect (protocol.md §3.8): context overflow
/// becomes "prompt is too long" so Claude Code compacts; overload becomes 529/503; the
/// upstream's `retry-after` and `x-should-retry` go along.
async fn upstream_error(
    provider: &Provider,
    dialect: Dialect,
    resp: reqwest::Response,
    deadline: Instant,
    exchange: &Exchange,
) -> Result<Response, GatewayError> {
    let status = resp.status().as_u16();
    let headers = response_headers(resp.headers());
    let body = read_body(provider, resp, deadline, MAX_ERROR_BODY)
        .await
        .map_err(GatewayError::Upstream)?;
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let kind = provider.config.kind;
    let message = parsed.as_ref().and_then(|v| match kind {
        ProviderKind::Anthropic => anthropic::error_message(v),
        ProviderKind::OpenAi => openai::error_message(v),
        ProviderKind::Gemini => gemini::error_message(v),
        ProviderKind::Local => None,
    });
    let overflow = parsed.as_ref().is_some_and(|v| match kind {
        ProviderKind::Anthropic => message
            .as_deref()
            .is_some_and(|m| m.to_lowercase().contains("prompt is too long")),
        ProviderKind::OpenAi => {
            openai::is_context_overflow(v)
                || message
                    .as_deref()
                    .is_some_and(|m| m.contains("maximum context length"))
        }
        ProviderKind::Gemini => gemini::is_context_overflow(v),
        ProviderKind::Local => false,
    });
    let err = if overflow && matches!(status, 400 | 413) {
        GatewayError::PromptTooLong {
            detail: prompt_too_long_detail(message.as_deref().unwrap_or("")),
        }
    } else {
        let what = message.unwrap_or_else(|| {
            format!(
                "a body that is not an API error: {}",
                crate::client_api::snippet(&body, 200)
            )
        });
        GatewayError::Upstream(provider.failure(
            FailureKind::Status(client_status(dialect, status)),
            format!("answered HTTP {status}: {what}"),
        ))
    };
    exchange.log(
        err.status(),
        "upstream_error",
        Default::default(),
        Some(&err.to_string()),
    );
    let mut out = dialect.error_response(&err);
    for name in ["retry-after", "retry-after-ms", "x-should-retry"] {
        if let Some(v) = headers.get(name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    Ok(out)
}

/// `N tokens > M maximum` when the upstream's message has both numbers (OpenAI: "maximum
/// context length is M tokens. However, your messages resulted in N tokens"; Gemini: "input
/// token count (N) exceeds the maximum number of tokens allowed (M)"); else its message.
pub fn prompt_too_long_detail(message: &str) -> String {
    let numbers: Vec<u64> = message
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .filter(|&n| n >= 100)
        .collect();
    let lower = message.to_lowercase();
    match numbers.as_slice() {
        [a, b, ..] if lower.contains("maximum context length is") => {
            format!("{b} tokens > {a} maximum")
        }
        [a, b, ..] if lower.contains("input token count") => format!("{a} tokens > {b} maximum"),
        _ => message.to_owned(),
    }
}

/// The original request, as a continuation rebuilds it (a passthrough keeps the client's
/// bytes: they are decoded only if a continuation is needed).
#[derive(Debug)]
pub enum Original {
    /// The client's body, in its dialect.
    Raw {
        /// Its dialect.
        dialect: Dialect,
        /// Its body.
        body: Bytes,
    },
    /// Already decoded.
    Canonical(Box<canonical::Request>),
}

/// What a stream needs to be continued on another backend after it broke.
#[derive(Debug)]
pub struct ContinuationPlan {
    /// The request being answered.
    pub original: Original,
    /// The backends after the one serving, in chain order.
    pub candidates: Vec<Backend>,
    /// Breakers.
    pub health: Arc<crate::resilience::Health>,
    /// What the client reads.
    pub format: Format,
    /// The client's model name.
    pub model: String,
    /// Keep-alive interval while a continuation's upstream is silent.
    pub keepalive: Duration,
    /// The request's trace (statistics and the journal).
    pub trace: crate::observe::Trace,
}

impl ContinuationPlan {
    fn request(&self) -> Result<canonical::Request, GatewayError> {
        match &self.original {
            Original::Canonical(r) => Ok((**r).clone()),
            Original::Raw { dialect, body } => {
                let v: Value = crate::relay::parse_json(body)?;
                let mut r = match dialect {
                    Dialect::Anthropic => anthropic::decode_request(&v)?,
                    _ => openai::decode_request(&v)?.0,
                };
                r.stream = true;
                Ok(r)
            }
        }
    }
}

/// Where the client's answer stands, in the client's block indices.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    /// The next unused index.
    pub next_index: usize,
    /// The open text block, if the answer broke inside one.
    pub open_text: Option<usize>,
}

impl Position {
    /// The position after `delivered`, when the client's indices are its blocks in order.
    pub fn of(delivered: &Collector) -> Position {
        let d = delivered.snapshot();
        let n = d.closed.len() + usize::from(d.open.is_some());
        Position {
            next_index: n,
            open_text: matches!(d.open, Some(canonical::Block::Text(_))).then(|| n - 1),
        }
    }
}

/// The request a continuation sends: the original plus an assistant turn holding what the
/// client has, as a prefill. Thinking is off (a prefill and thinking do not mix) and thinking
/// blocks stay out of it. Returns the whitespace trimmed from the end of the prefill (APIs
/// refuse a prefill ending in whitespace); the splice drops it if the continuation repeats it.
pub fn continuation_request(
    original: &canonical::Request,
    delivered: &canonical::Delivered,
) -> Result<(canonical::Request, String), String> {
    use canonical::Block;
    if matches!(
        delivered.open,
        Some(Block::Thinking { .. } | Block::RedactedThinking(_))
    ) {
        return Err(
            "the answer broke inside a thinking block, whose signature cannot be recreated".into(),
        );
    }
    if delivered
        .closed
        .iter()
        .any(|b| matches!(b, Block::ToolUse { .. }))
    {
        return Err("the answer already holds a tool call, which a prefill cannot end with".into());
    }
    let mut blocks: Vec<Block> = delivered
        .closed
        .iter()
        .filter(|b| matches!(b, Block::Text(_)))
        .cloned()
        .collect();
    if let Some(Block::Text(t)) = &delivered.open {
        blocks.push(Block::Text(t.clone()));
    }
    let mut trimmed = String::new();
    if let Some(Block::Text(t)) = blocks.last_mut() {
        let kept = t.trim_end().len();
        trimmed = t[kept..].to_owned();
        t.truncate(kept);
    }
    blocks.retain(|b| !matches!(b, Block::Text(t) if t.is_empty()));
    let mut r = original.clone();
    r.stream = true;
    if !blocks.is_empty() {
        r.thinking = None;
        r.push(canonical::Role::Assistant, blocks);
    }
    Ok((r, trimmed))
}

/// Continues an answer that broke after `delivered` on the first of the plan's candidates
/// that accepts a prefill, is admitted by its breaker and starts answering. Returns the
/// stream state to read from and the bytes to send before it (e.g. closing the open block).
async fn resume(
    plan: &mut ContinuationPlan,
    mut delivered: Collector,
    position: Position,
    why: &GatewayError,
) -> Result<(StreamState, BytesMut), GatewayError> {
    let snapshot = delivered.snapshot();
    let explain = |reason: String| {
        let kind = match why {
            GatewayError::Upstream(p) => p.kind,
            _ => FailureKind::Transport,
        };
        let provider = match why {
            GatewayError::Upstream(p) => p.provider.clone(),
            _ => "upstream".into(),
        };
        GatewayError::Upstream(crate::error::ProviderError {
            provider,
            kind,
            detail: format!(
                "{}; it was not continued: {reason}",
                match why {
                    GatewayError::Upstream(p) => p.detail.clone(),
                    other => other.to_string(),
                }
            ),
        })
    };
    let original = plan.request().map_err(|e| explain(e.to_string()))?;
    let (req, trimmed) = continuation_request(&original, &snapshot).map_err(explain)?;
    let dialect = plan.format.dialect();
    let mut tried = Vec::new();
    while !plan.candidates.is_empty() {
        let backend = plan.candidates.remove(0);
        let key = backend.key();
        if !backend.provider.config.continuation {
            continue;
        }
        if let crate::resilience::breaker::Admission::Rejected { .. } =
            plan.health.admit(&key, false)
        {
            tried.push(format!("{key}: circuit open"));
            continue;
        }
        let enc = encode_for(&backend, &req);
        plan.trace.begin(&key);
        let exchange = Exchange::new(
            dialect,
            &plan.model,
            backend.provider.name(),
            &backend.model,
            true,
            plan.trace.clone(),
        );
        let deadline = exchange.started + backend.provider.config.timeouts.total;
        let resp = match open(&backend, &enc, deadline).await {
            Ok(Opened::Stream(r)) => r,
            Ok(Opened::Status(r)) => {
                plan.trace
                    .failed(&key, &format!("http_{}", r.status().as_u16()), false);
                plan.health.record(
                    &key,
                    !crate::resilience::status_fails_over(r.status().as_u16()),
                );
                tried.push(format!("{key}: HTTP {}", r.status().as_u16()));
                continue;
            }
            Err(e) => {
                plan.trace
                    .failed(&key, &crate::relay::error_class(&e), false);
                plan.health.record(&key, false);
                tried.push(format!("{key}: {e}"));
                continue;
            }
        };
        let splice = canonical::Splice::new(
            position.open_text,
            position.next_index,
            trimmed.clone(),
            snapshot.usage,
        );
        let pipe = Pipeline::new(
            backend.provider.config.kind,
            backend.provider.name(),
            enc.names,
            plan.format,
            &plan.model,
            unix_now(),
            true,
        )
        .continuing(delivered, splice, &snapshot.id);
        let mut state = StreamState {
            upstream: resp,
            pipe,
            provider: backend.provider.clone(),
            dialect,
            deadline,
            keepalive: Duration::from_secs(3600),
            last_upstream: Instant::now(),
            last_sent: Instant::now(),
            finished: false,
            exchange,
            report: None,
            plan: None,
            pending: None,
            first_content_by: Instant::now() + backend.provider.config.timeouts.first_content,
        };
        let mut head = BytesMut::new();
        let mut failed = None;
        while !state.finished && !state.pipe.committed() {
            if let Err(e) = state.step(&mut head, false).await {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            state.finished = true;
            plan.trace
                .failed(&key, &crate::relay::error_class(&e), false);
            plan.health.record(&key, false);
            tried.push(format!("{key}: {e}"));
            delivered = state.pipe.take_delivered();
            continue;
        }
        plan.trace.committed(&key);
        state.report = Some(crate::resilience::Report::new(plan.health.clone(), key));
        return Ok((state, head));
    }
    Err(explain(if tried.is_empty() {
        "no later backend of the route accepts a prefill (set continuation = true on a provider whose models do)".into()
    } else {
        format!(
            "every backend that could continue failed too ({})",
            tried.join("; ")
        )
    }))
}

/// Continues a stream that broke after `delivered` (see [`resume`]); the returned state
/// carries the plan on, so a continuation that breaks can be continued again.
pub(crate) async fn continue_stream(
    mut plan: ContinuationPlan,
    delivered: Collector,
    why: &GatewayError,
) -> Result<(Box<StreamState>, BytesMut), GatewayError> {
    let keepalive = plan.keepalive;
    let position = Position::of(&delivered);
    let (mut next, head) = resume(&mut plan, delivered, position, why).await?;
    tracing::warn!(to = next.provider.name(), error = %why, "continuing a broken stream on another backend");
    next.plan = Some(plan);
    next.keepalive = keepalive;
    Ok((Box::new(next), head))
}

/// One translated answer in flight.
pub(crate) struct StreamState {
    upstream: Upstream,
    pipe: Pipeline,
    provider: Arc<Provider>,
    dialect: Dialect,
    deadline: Instant,
    keepalive: Duration,
    last_upstream: Instant,
    last_sent: Instant,
    finished: bool,
    exchange: Exchange,
    report: Option<crate::resilience::Report>,
    plan: Option<ContinuationPlan>,
    /// A break seen while bytes before it were still to be sent.
    pending: Option<GatewayError>,
    /// The first content must have started by then (`timeouts.first_content`).
    first_content_by: Instant,
}

impl StreamState {
    /// Reads the upstream once (or until a keep-alive is due, when `pings`): `Ok(true)` when a
    /// keep-alive is due, `Ok(false)` after progress. Sets `finished` at a clean end.
    async fn step(&mut self, out: &mut BytesMut, pings: bool) -> Result<bool, GatewayError> {
        let idle = self.provider.config.timeouts.idle;
        let (limit_at, kind) = crate::relay::stream_limit(
            self.deadline,
            self.last_upstream,
            idle,
            (!self.pipe.has_content()).then_some(self.first_content_by),
        );
        let ping_at = self.last_sent + self.keepalive;
        let wait_until = if pings {
            limit_at.min(ping_at)
        } else {
            limit_at
        };
        match tokio::time::timeout_at(wait_until, self.upstream.next()).await {
            Err(_) if pings && ping_at <= limit_at => Ok(true),
            Err(_) => Err(GatewayError::Upstream(timeout_failure(
                &self.provider,
                kind,
                idle,
            ))),
            Ok(Some(Ok(chunk))) => {
                self.last_upstream = Instant::now();
                let r = self.pipe.feed(&chunk, out);
                for (id, sig) in self.pipe.take_signatures() {
                    self.provider.signatures.put(id, sig);
                }
                r.map_err(|f| fault_error(&self.provider, self.dialect, f))?;
                Ok(false)
            }
            Ok(Some(Err(e))) => Err(GatewayError::Upstream(e)),
            Ok(None) => {
                self.pipe
                    .finish(out)
                    .map_err(|f| fault_error(&self.provider, self.dialect, f))?;
                self.finished = true;
                // A whole stream is the backend's success: without it its breaker would only
                // ever hear of failures and open on the fifth, however many succeeded between.
                if let Some(r) = self.report.take() {
                    r.done(true);
                }
                self.exchange
                    .log(200, "complete", usage_of(&self.pipe), None);
                Ok(false)
            }
        }
    }

    /// The provider now serving.
    pub(crate) fn provider_name(&self) -> &str {
        self.provider.name()
    }

    /// Logs a failure that the client gets as an HTTP error (nothing was sent yet).
    fn fail_before_commit(&mut self, e: &GatewayError) {
        self.finished = true;
        // The chain walk records this one (the client gets an HTTP error, not a stream).
        self.report.take();
        self.exchange.log(
            e.status(),
            outcome_of(e),
            usage_of(&self.pipe),
            Some(&e.to_string()),
        );
    }

    pub(crate) async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if self.finished {
                return None;
            }
            let mut out = BytesMut::new();
            let step = match self.pending.take() {
                Some(e) => Err(e),
                None => self.step(&mut out, true).await,
            };
            match step {
                Ok(true) => self.pipe.ping(&mut out),
                Ok(false) => {}
                Err(e) if !out.is_empty() && self.plan.is_some() => {
                    // Send what arrived before the break first; continue on the next call.
                    self.pending = Some(e);
                }
                Err(e) => {
                    if let Some(r) = self.report.take() {
                        r.done(false);
                    }
                    match self.continue_elsewhere(&e, &mut out).await {
                        Ok(()) => {}
                        Err(why) => {
                            self.finished = true;
                            self.exchange.log(
                                200,
                                outcome_of(&e),
                                usage_of(&self.pipe),
                                Some(&why.to_string()),
                            );
                            out.extend_from_slice(&self.pipe.error_frame(&why));
                        }
                    }
                }
            }
            self.last_sent = Instant::now();
            if !out.is_empty() {
                return Some(out.freeze());
            }
        }
    }

    /// The stream broke after its first content: continue it on the next backend that can,
    /// or say why not (the error the client gets).
    async fn continue_elsewhere(
        &mut self,
        e: &GatewayError,
        out: &mut BytesMut,
    ) -> Result<(), GatewayError> {
        let Some(plan) = self.plan.take() else {
            return Err(e.clone());
        };
        let delivered = self.pipe.take_delivered();
        let (next, head) = continue_stream(plan, delivered, e).await?;
        self.exchange.log_continued(
            200,
            &crate::relay::error_class(e),
            usage_of(&self.pipe),
            Some(&format!("{e}; continued on {}", next.provider.name())),
        );
        out.extend_from_slice(&head);
        self.finished = true; // the old attempt is over; its Drop must not log
        *self = *next;
        Ok(())
    }
}

impl crate::relay::ChunkSource for StreamState {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        StreamState::next_chunk(self).await
    }
}

impl Drop for StreamState {
    fn drop(&mut self) {
        if !self.finished {
            self.exchange.log(
                200,
                "client_disconnected",
                usage_of(&self.pipe),
                Some("the client closed the connection before the stream ended"),
            );
        }
    }
}

/// Runs an upstream transcript through a pipeline in the given chunks and returns what the
/// client would read, ending with the client's error if the transcript is broken. The golden
/// tests and the chunking property test call this.
pub fn run_transcript(
    kind: ProviderKind,
    format: Format,
    stream: bool,
    chunks: &[&[u8]],
) -> Vec<u8> {
    let tools = [canonical::Tool {
        name: LONG_TOOL_NAME.into(),
        description: None,
        schema: Value::Null,
    }];
    let names = ToolNames::new(&tools, openai::TOOL_NAME_LIMIT);
    let mut pipe = Pipeline::new(kind, "mock", names, format, "client-model", 0, stream);
    let mut out = BytesMut::new();
    let mut result = chunks.iter().try_for_each(|c| pipe.feed(c, &mut out));
    if result.is_ok() {
        result = pipe.finish(&mut out);
    }
    if let Err(f) = result {
        let err = GatewayError::Upstream(crate::error::ProviderError {
            provider: "mock".into(),
            kind: f.kind,
            detail: f.detail,
        });
        out.extend_from_slice(&pipe.error_frame(&err));
        return out.to_vec();
    }
    if !stream {
        let r = pipe.response().expect("a finished pipeline has an answer");
        let v = encode_response(format, &r, "client-model", 0);
        let text = serde_json::to_string_pretty(&v).expect("serializes");
        return pin_random_ids(&text).into_bytes();
    }
    pin_random_ids(&String::from_utf8_lossy(&out)).into_bytes()
}

/// A tool name longer than OpenAI's limit, used by the transcripts to check shortening.
pub const LONG_TOOL_NAME: &str =
    "mcp__understudy_test_server__a_tool_name_that_is_longer_than_sixty_four_chars";

/// Ids the gateway makes up (for calls the upstream did not name) are random: pinned here so
/// transcripts compare equal.
fn pin_random_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("toolu_") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 6..];
        let hex = tail.chars().take_while(char::is_ascii_hexdigit).count();
        if hex == 24 {
            out.push_str("toolu_RANDOM");
            rest = &tail[24..];
        } else {
            out.push_str("toolu_");
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_messages_become_claude_codes_wording() {
        assert_eq!(
            prompt_too_long_detail("This model's maximum context length is 128000 tokens. However, your messages resulted in 130532 tokens."),
            "130532 tokens > 128000 maximum"
        );
        assert_eq!(
            prompt_too_long_detail("The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."),
            "1200000 tokens > 1048576 maximum"
        );
        assert_eq!(prompt_too_long_detail("too long"), "too long");
        assert_eq!(client_status(Dialect::Anthropic, 503), 529);
        assert_eq!(client_status(Dialect::OpenAi, 529), 503);
        assert_eq!(client_status(Dialect::Ollama, 429), 429);
    }
}
