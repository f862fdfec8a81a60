//! Finishing a broken answer elsewhere. When a committed stream breaks (reset, close, stall,
//! malformed, the upstream's own error event, no completion signal), what the client has
//! received is known exactly (the translated pipeline records the events it delivered; the
//! passthrough keeps a shadow pipeline of the bytes it forwarded). The remaining backends of
//! the chain with `continuation = true` whose breakers admit them are tried in order with the
//! original request plus an assistant prefill of what the client has; the first that starts
//! answering is spliced into the same message (`canonical::Splice`).

use super::attempt::Exchange;
use super::attempt::{error_class, unix_now};
use super::pipeline::{Format, Pipeline};
use super::stream::{Pipe, Resume, Stream};
use super::translated::{open, Opened};
use crate::canonical::{self, Collector};
use crate::error::{FailureKind, GatewayError, ProviderError};
use crate::routing::breaker::Admission;
use crate::routing::health::{status_fails_over, Health, Report};
use crate::routing::Backend;
use crate::telemetry::observe::Trace;
use bytes::BytesMut;
use std::sync::Arc;
use std::time::Duration;

/// What a stream needs to be continued on another backend after it broke.
#[derive(Debug)]
pub struct ContinuationPlan {
    /// The request being answered (decoded once, shared with the chain walk).
    pub request: Arc<super::Request>,
    /// The backends after the one serving, in chain order.
    pub candidates: Vec<Backend>,
    /// Breakers.
    pub health: Arc<Health>,
    /// What the client reads.
    pub format: Format,
    /// The client's model name.
    pub model: String,
    /// Keep-alive interval while a continuation's upstream is silent.
    pub keepalive: Duration,
    /// The request's trace (statistics and the journal).
    pub trace: Trace,
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

impl Resume for ContinuationPlan {
    fn resume(
        self: Box<Self>,
        delivered: Collector,
        why: GatewayError,
    ) -> futures_util::future::BoxFuture<'static, Result<(Stream, BytesMut), GatewayError>> {
        Box::pin(async move { continue_stream(*self, delivered, &why).await })
    }
}

/// Why a break was not continued: the break's own failure, with the reason added.
fn not_continued(why: &GatewayError, reason: String) -> GatewayError {
    let (provider, kind, detail) = match why {
        GatewayError::Upstream(p) => (p.provider.clone(), p.kind, p.detail.clone()),
        other => ("upstream".into(), FailureKind::Transport, other.to_string()),
    };
    GatewayError::Upstream(ProviderError {
        provider,
        kind,
        detail: format!("{detail}; it was not continued: {reason}"),
    })
}

/// A continuation attempt that failed: what was delivered (handed back for the next one),
/// its failure class, what the breaker hears, and why in words.
struct Failed {
    delivered: Collector,
    class: String,
    ok: bool,
    why: String,
}

/// Continues an answer that broke after `delivered` on the first of the plan's candidates
/// that accepts a prefill, is admitted by its breaker and starts answering. Returns the
/// stream to read from (carrying the plan on, so a continuation that breaks can be continued
/// again) and the bytes to send before it (e.g. closing the open block).
pub(crate) async fn continue_stream(
    mut plan: ContinuationPlan,
    mut delivered: Collector,
    why: &GatewayError,
) -> Result<(Stream, BytesMut), GatewayError> {
    let position = Position::of(&delivered);
    let snapshot = delivered.snapshot();
    let original = plan
        .request
        .canonical()
        .map_err(|e| not_continued(why, e.to_string()))?;
    let (req, trimmed) =
        continuation_request(&original, &snapshot).map_err(|r| not_continued(why, r))?;
    let mut tried = Vec::new();
    while !plan.candidates.is_empty() {
        let backend = plan.candidates.remove(0);
        let key = backend.key();
        if !backend.provider.config.continuation {
            continue;
        }
        if let Admission::Rejected { .. } = plan.health.admit(&key, false) {
            tried.push(format!("{key}: circuit open"));
            continue;
        }
        let splice = canonical::Splice::new(
            position.open_text,
            position.next_index,
            trimmed.clone(),
            snapshot.usage,
        );
        match attempt(&plan, &backend, &req, delivered, splice, &snapshot.id).await {
            Ok((mut stream, head)) => {
                plan.trace.committed(&key);
                tracing::warn!(to = stream.provider_name(), error = %why, "continuing a broken stream on another backend");
                let report = Report::new(plan.health.clone(), key);
                let keepalive = plan.keepalive;
                stream.carry_on(Box::new(plan), keepalive, report);
                return Ok((stream, head));
            }
            Err(f) => {
                plan.trace.failed(&key, &f.class, false);
                plan.health.record(&key, f.ok);
                tried.push(format!("{key}: {}", f.why));
                delivered = f.delivered;
            }
        }
    }
    Err(not_continued(
        why,
        if tried.is_empty() {
            "no later backend of the route accepts a prefill (set continuation = true on a provider whose models do)".into()
        } else {
            format!(
                "every backend that could continue failed too ({})",
                tried.join("; ")
            )
        },
    ))
}

/// One continuation attempt: the prefilled request sent to `backend`, its answer held until
/// it starts (no keep-alives meanwhile: the client is still reading the broken stream's).
async fn attempt(
    plan: &ContinuationPlan,
    backend: &Backend,
    req: &canonical::Request,
    delivered: Collector,
    splice: canonical::Splice,
    id: &str,
) -> Result<(Stream, BytesMut), Failed> {
    let key = backend.key();
    let provider = &backend.provider;
    let enc = provider.encode(req, &backend.model);
    plan.trace.begin(&key);
    let exchange = Exchange::new(
        plan.format.dialect(),
        &plan.model,
        provider.name(),
        &backend.model,
        true,
        plan.trace.clone(),
    );
    let deadline = exchange.started + provider.config.timeouts.total;
    let upstream = match open(backend, &enc, deadline).await {
        Ok(Opened::Stream(u)) => u,
        Ok(Opened::Status(r)) => {
            let status = r.status().as_u16();
            return Err(Failed {
                delivered,
                class: format!("http_{status}"),
                ok: !status_fails_over(status),
                why: format!("HTTP {status}"),
            });
        }
        Err(e) => {
            return Err(Failed {
                delivered,
                class: error_class(&e),
                ok: false,
                why: e.to_string(),
            })
        }
    };
    let pipeline = Pipeline::new(
        provider.api().decoder(),
        provider.name(),
        enc.names,
        plan.format,
        &plan.model,
        unix_now(),
        true,
    )
    .continuing(delivered, splice, id);
    let pipe = Pipe::Translated(Box::new(pipeline));
    let quiet = Duration::from_secs(3600);
    let mut stream = Stream::new(upstream, pipe, provider.clone(), exchange, quiet, None);
    match stream.commit(None).await {
        Ok(head) => Ok((stream, BytesMut::from(&head[..]))),
        Err(e) => Err(Failed {
            delivered: stream.take_delivered().unwrap_or_default(),
            class: error_class(&e),
            ok: false,
            why: e.to_string(),
        }),
    }
}
