//! Finishing a broken answer. When a committed stream breaks (reset, close, stall, malformed,
//! the upstream's own error event, no completion signal), what the client has received is
//! known exactly (the translated pipeline records the events it delivered; the passthrough
//! keeps a shadow pipeline of the bytes it forwarded). The backend that broke is asked first
//! when the break looks transient (its retry budget and breaker permitting), then the rest of
//! the chain in order, each by the [`Method`] its model takes: a *prefill* (the partial answer
//! as the final assistant turn, which the model goes on from) or an *instruction* (the partial
//! answer, then a user turn asking to go on from the exact cut, [`INSTRUCTION`]). The first
//! that starts answering is spliced into the same message (`canonical::Splice`), its text
//! joined through a `canonical::Seam` that cuts what an instructed model restates.

use super::attempt::Exchange;
use super::attempt::{error_class, read_body, unix_now, Cap};
use super::pipeline::{Format, Pipeline};
use super::stream::{Pipe, Resume, Stream};
use super::translated::{open, opened, Opened};
use super::MAX_ERROR_BODY;
use crate::canonical::{self, Collector, Seam, ToolNames};
use crate::config::{Continuation, ProviderKind};
use crate::error::{FailureKind, GatewayError, ProviderError};
use crate::providers::{Encoded, EncodedBody, Operation};
use crate::routing::breaker::Admission;
use crate::routing::health::{status_fails_over, Health, Report};
use crate::routing::Backend;
use crate::telemetry::observe::Trace;
use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// The user turn a continuation by instruction ends with. Models asked this way still often
/// restate the last words, the whole answer, or start on a new line; the seam removes that,
/// so the wording aims at the cut, not at perfection.
pub const INSTRUCTION: &str = "Your previous reply was cut off by a network failure before it was finished. Continue it from exactly where it stopped, as if it had never been interrupted: do not repeat anything already written, and add no preamble, comment or apology. If it stopped in the middle of a word, finish that word first.";

/// How a continuation asks a model to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The partial answer as the final assistant turn.
    Prefill,
    /// The partial answer as an assistant turn, then [`INSTRUCTION`].
    Instruct,
}

impl Method {
    /// Its name in the journal, the feed and the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Prefill => "prefill",
            Method::Instruct => "instruct",
        }
    }
}

/// How `backend` is asked to continue, if it may: as configured, or for `auto` a prefill where
/// its model is known to take one (the local engine; Claude models before 4.6) and has not
/// refused one since the process started, else an instruction. OpenAI's Chat Completions has
/// no prefill (a trailing assistant turn is context and the model starts a new message), and
/// Gemini's is unverified (protocol.md §1.9).
pub fn method(backend: &Backend, health: &Health) -> Option<Method> {
    let config = &backend.provider.config;
    match config.continuation {
        Continuation::Off => None,
        Continuation::Prefill => Some(Method::Prefill),
        Continuation::Instruct => Some(Method::Instruct),
        Continuation::Auto => Some(
            if takes_prefill(config.kind, &backend.model) && !health.refuses_prefill(backend.key())
            {
                Method::Prefill
            } else {
                Method::Instruct
            },
        ),
    }
}

/// A model known to accept an assistant prefill: the local engine, and Claude models before
/// 4.6 ("Prefilling assistant messages returns a 400 error on Claude 4.6 models"; the Claude 5
/// family too; Haiku 4.5 and older still accept one). Any other name (a newer or unknown
/// model) is asked by instruction, which every model takes.
pub fn takes_prefill(kind: ProviderKind, model: &str) -> bool {
    match kind {
        ProviderKind::Local => true,
        ProviderKind::Anthropic => claude_version(model).is_some_and(|v| v < (4, 6)),
        ProviderKind::OpenAi | ProviderKind::Gemini => false,
    }
}

/// `(major, minor)` of a Claude model id: `claude-3-5-sonnet-20241022` → (3, 5),
/// `claude-sonnet-4-20250514` → (4, 0), `claude-opus-4-6` → (4, 6); also inside a cloud
/// platform's id (`anthropic.claude-3-7-sonnet-…`).
fn claude_version(model: &str) -> Option<(u32, u32)> {
    let lower = model.to_ascii_lowercase();
    let rest = &lower[lower.find("claude-")? + "claude-".len()..];
    let small = |t: &str| (1..=2).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit());
    let tokens: Vec<&str> = rest.split(['-', '.', '@', ':']).collect();
    let at = tokens.iter().position(|t| small(t))?;
    let major = tokens[at].parse().ok()?;
    let minor = tokens
        .get(at + 1)
        .filter(|t| small(t))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    Some((major, minor))
}

/// An HTTP 400 that refuses a prefill: Anthropic's `This model does not support assistant
/// message prefill…` (or `Prefilling assistant messages is not supported…`), and an
/// OpenAI-compatible server's `Expected last role User or Tool (or Assistant with prefix
/// True)…` (Mistral).
pub fn refuses_prefill(status: u16, body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    status == 400 && (text.contains("prefill") || text.contains("expected last role"))
}

/// What a stream needs to be continued after it broke.
#[derive(Debug)]
pub struct ContinuationPlan {
    /// The request being answered (decoded once, shared with the chain walk).
    pub request: Arc<super::Request>,
    /// The backend serving, asked first when its break looks transient (once per request).
    pub current: Option<Backend>,
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

/// What the client has that a continuation goes on from: its text (the blocks in order), or
/// why it cannot be continued at all: a break inside a thinking block (its signature cannot
/// be recreated) or after a whole tool call (nothing but its result may follow one).
pub fn partial_text(delivered: &canonical::Delivered) -> Result<String, String> {
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
        return Err(
            "the answer already holds a whole tool call, which nothing but its result may follow"
                .into(),
        );
    }
    Ok(delivered
        .closed
        .iter()
        .chain(&delivered.open)
        .filter_map(|b| match b {
            Block::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect())
}

/// The request a continuation sends, in the canonical model: the original, then what the
/// client has as an assistant turn (trailing whitespace trimmed: APIs refuse a final assistant
/// turn ending in it), then for an instruction [`INSTRUCTION`] as a user turn. Thinking is off
/// (a prefill and thinking do not mix, and an answer that already began needs none).
pub fn continuation_request(
    original: &canonical::Request,
    partial: &str,
    method: Method,
) -> canonical::Request {
    let mut r = original.clone();
    r.stream = true;
    r.thinking = None;
    let kept = partial.trim_end();
    if !kept.is_empty() {
        r.push(
            canonical::Role::Assistant,
            vec![canonical::Block::Text(kept.to_owned())],
        );
        if method == Method::Instruct {
            r.push(
                canonical::Role::User,
                vec![canonical::Block::Text(INSTRUCTION.to_owned())],
            );
        }
    }
    r
}

/// The same continuation written into the client's own body, for a backend that speaks the
/// client's API: every field the client sent stays as it was, `cache_control` breakpoints
/// included, so the provider reads the conversation from its prompt cache.
pub fn continuation_body(
    req: &super::Request,
    model: &str,
    partial: &str,
    method: Method,
) -> Result<Bytes, String> {
    let mut v: serde_json::Map<String, Value> =
        serde_json::from_slice(&req.body).map_err(|e| format!("the request is not JSON: {e}"))?;
    v.insert("model".into(), Value::String(model.to_owned()));
    v.remove("thinking");
    super::passthrough::ask_stream(&mut v, req.op);
    let kept = partial.trim_end();
    let anthropic = req.op == Operation::Messages;
    let messages = v
        .get_mut("messages")
        .and_then(Value::as_array_mut)
        .ok_or("the request has no messages")?;
    if !kept.is_empty() {
        let text = |t: &str| {
            if anthropic {
                json!([{"type": "text", "text": t}])
            } else {
                Value::String(t.to_owned())
            }
        };
        match messages.last_mut() {
            // The client's own prefill: what it has goes on from it.
            Some(last) if last["role"] == "assistant" && anthropic => {
                let content = match last["content"].take() {
                    Value::String(s) => json!([{"type": "text", "text": s}]),
                    Value::Array(a) => Value::Array(a),
                    _ => json!([]),
                };
                let mut blocks = content.as_array().cloned().unwrap_or_default();
                blocks.push(json!({"type": "text", "text": kept}));
                last["content"] = Value::Array(blocks);
            }
            _ => messages.push(json!({"role": "assistant", "content": text(kept)})),
        }
        if method == Method::Instruct {
            messages.push(json!({"role": "user", "content": text(INSTRUCTION)}));
        }
    }
    Ok(Bytes::from(
        serde_json::to_vec(&v).expect("a JSON map always serializes"),
    ))
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

/// A break the same backend may well not repeat: the connection went (reset, close, a clean
/// end without the protocol's end), it stalled, or it sent one malformed event. Its own error
/// event (overloaded, an API error) is not: that goes elsewhere.
fn transient(why: &GatewayError) -> bool {
    matches!(why, GatewayError::Upstream(p) if matches!(
        p.kind,
        FailureKind::Transport | FailureKind::Truncated | FailureKind::IdleTimeout | FailureKind::Malformed
    ))
}

/// A continuation attempt that failed: what was delivered (handed back for the next one),
/// its failure class, what the breaker hears, why in words, and whether it was a refused
/// prefill.
struct Failed {
    delivered: Collector,
    class: String,
    ok: bool,
    why: String,
    refused_prefill: bool,
}

/// Continues an answer that broke after `delivered`: the backend that broke first when the
/// break looks transient, then the plan's candidates, each admitted by its breaker and asked
/// by its method; a model that refuses a prefill is asked again by instruction at once (no
/// failure counted) and remembered. Returns the stream to read from (carrying the plan on, so
/// a continuation that breaks can be continued again) and the bytes to send before it.
pub(crate) async fn continue_stream(
    mut plan: ContinuationPlan,
    mut delivered: Collector,
    why: &GatewayError,
) -> Result<(Stream, BytesMut), GatewayError> {
    let position = Position::of(&delivered);
    let snapshot = delivered.snapshot();
    let partial = partial_text(&snapshot).map_err(|r| not_continued(why, r))?;
    if let Some(current) = plan.current.take() {
        if transient(why) && method(&current, &plan.health).is_some() {
            if plan.health.try_retry(current.key()) {
                plan.candidates.insert(0, current);
            } else {
                tracing::warn!(backend = %current.key(), "not continuing on the backend that broke: its retry budget is spent");
            }
        }
    }
    let mut tried = Vec::new();
    while !plan.candidates.is_empty() {
        let backend = plan.candidates.remove(0);
        let key = backend.key();
        let Some(mut how) = method(&backend, &plan.health) else {
            continue;
        };
        // Out of quota for this credential: it would refuse; the next one, at once.
        if let Some(hold) = backend
            .provider
            .holds_back(&plan.request.headers, crate::quota::now_ms())
        {
            tried.push(format!("{key}: {}", hold.why));
            continue;
        }
        if let Admission::Rejected { .. } = plan.health.admit(key, false) {
            tried.push(format!("{key}: circuit open"));
            continue;
        }
        plan.trace.begin(key);
        loop {
            let splice = canonical::Splice::new(
                position.open_text,
                position.next_index,
                Seam::new(&partial, how == Method::Instruct),
                snapshot.usage,
            );
            match attempt(
                &plan,
                &backend,
                how,
                &partial,
                delivered,
                splice,
                &snapshot.id,
            )
            .await
            {
                Ok((mut stream, head)) => {
                    plan.trace.committed(key);
                    plan.trace.continuing(key, how.as_str());
                    tracing::warn!(to = %key, method = how.as_str(), error = %why, "continuing a broken stream");
                    let report = Report::new(plan.health.clone(), key.to_owned());
                    let keepalive = plan.keepalive;
                    stream.carry_on(Box::new(plan), keepalive, report);
                    return Ok((stream, head));
                }
                Err(f)
                    if f.refused_prefill
                        && backend.provider.config.continuation == Continuation::Auto =>
                {
                    tracing::info!(backend = %key, "its model refuses an assistant prefill: continuing by instruction, from now on");
                    plan.health.refused_prefill(key);
                    delivered = f.delivered;
                    how = Method::Instruct;
                }
                Err(f) => {
                    plan.trace.failed(key, &f.class, false);
                    plan.trace.why(plan.trace.latest(key), &f.why);
                    plan.health.record(key, f.ok);
                    tried.push(format!("{key}: {}", f.why));
                    delivered = f.delivered;
                    break;
                }
            }
        }
    }
    Err(not_continued(
        why,
        if tried.is_empty() {
            "no backend of the route may continue it (continuation = \"off\", or the zero-config local model, which only continues when configured to)".into()
        } else {
            format!(
                "every backend that could continue failed too ({})",
                tried.join("; ")
            )
        },
    ))
}

/// One continuation attempt: the request sent to `backend` (written into the client's own body
/// when it speaks the client's API, with the client's headers), its answer held until it
/// starts (no keep-alives meanwhile: the client is still reading the broken stream's).
async fn attempt(
    plan: &ContinuationPlan,
    backend: &Backend,
    how: Method,
    partial: &str,
    delivered: Collector,
    splice: canonical::Splice,
    id: &str,
) -> Result<(Stream, BytesMut), Failed> {
    let provider = &backend.provider;
    let fail = |delivered: Collector, class: String, ok: bool, why: String| Failed {
        delivered,
        class,
        ok,
        why,
        refused_prefill: false,
    };
    let req = &plan.request;
    let native = req.native_on(provider);
    let enc = if native {
        match continuation_body(req, &backend.model, partial, how) {
            Ok(bytes) => Encoded {
                names: ToolNames::default(),
                body: EncodedBody::Http { op: req.op, bytes },
            },
            Err(e) => return Err(fail(delivered, "invalid_request".into(), true, e)),
        }
    } else {
        match req.canonical() {
            Ok(original) => provider.encode(
                &continuation_request(&original, partial, how),
                &backend.model,
            ),
            Err(e) => {
                return Err(fail(
                    delivered,
                    "invalid_request".into(),
                    true,
                    e.to_string(),
                ))
            }
        }
    };
    let exchange = Exchange::new(
        plan.format.dialect(),
        &plan.model,
        backend,
        true,
        plan.trace.clone(),
    );
    let deadline = exchange.started + provider.config.timeouts.total;
    let sent = match (&enc.body, native) {
        (EncodedBody::Http { op, bytes }, true) => {
            match provider
                .send(*op, req.query.as_deref(), &req.headers, bytes.clone())
                .await
            {
                Ok(resp) => opened(provider, resp, deadline).await,
                Err(e) => Err(e.into()),
            }
        }
        _ => open(backend, &enc, deadline).await,
    };
    let upstream = match sent {
        Ok(Opened::Stream(u)) => u,
        Ok(Opened::Status(r)) => {
            let status = r.status().as_u16();
            let body = read_body(provider, r, deadline, Cap::Cut(MAX_ERROR_BODY))
                .await
                .unwrap_or_default();
            let mut f = fail(
                delivered,
                format!("http_{status}"),
                !status_fails_over(status),
                format!("HTTP {status}: {}", crate::client_api::snippet(&body, 200)),
            );
            f.refused_prefill = how == Method::Prefill && refuses_prefill(status, &body);
            return Err(f);
        }
        Err(e) => return Err(fail(delivered, error_class(&e), false, e.to_string())),
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
    let pipeline = match req.canonical() {
        Ok(c) => pipeline.validating(c),
        Err(_) => pipeline,
    };
    let pipe = Pipe::Translated(Box::new(pipeline));
    let quiet = Duration::from_secs(3600);
    let mut stream = Stream::new(upstream, pipe, provider.clone(), exchange, quiet, None);
    match stream.commit(None).await {
        Ok(head) => Ok((stream, BytesMut::from(&head[..]))),
        Err(e) => Err(fail(
            stream.take_delivered().unwrap_or_default(),
            error_class(&e),
            false,
            e.to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_models_before_4_6_take_a_prefill_and_later_or_unknown_ones_do_not() {
        for (model, takes) in [
            ("claude-3-5-sonnet-20241022", true),
            ("claude-3-7-sonnet-latest", true),
            ("claude-sonnet-4-20250514", true),
            ("claude-opus-4-1", true),
            ("claude-sonnet-4-5-20250929", true),
            ("claude-haiku-4-5", true),
            ("anthropic.claude-3-5-haiku-20241022-v1:0", true),
            ("claude-opus-4-6", false),
            ("claude-sonnet-4-6-20260101", false),
            ("claude-opus-5", false),
            ("claude-sonnet-5-1", false),
            ("my-proxy-model", false),
        ] {
            assert_eq!(
                takes_prefill(ProviderKind::Anthropic, model),
                takes,
                "{model}"
            );
        }
        assert!(takes_prefill(ProviderKind::Local, "anything"));
        assert!(!takes_prefill(ProviderKind::OpenAi, "gpt-4o"));
        assert!(!takes_prefill(ProviderKind::Gemini, "gemini-2.5-pro"));
    }

    #[test]
    fn both_wordings_of_a_prefill_refusal_are_recognized_and_nothing_else() {
        let anthropic = br#"{"type":"error","error":{"type":"invalid_request_error","message":"This model does not support assistant message prefill. The conversation must end with a user message."}}"#;
        let other = br#"{"type":"error","error":{"type":"invalid_request_error","message":"Prefilling assistant messages is not supported for this model."}}"#;
        let mistral = br#"{"object":"error","message":"Expected last role User or Tool (or Assistant with prefix True) for serving but got assistant","type":"invalid_request_message_order"}"#;
        assert!(refuses_prefill(400, anthropic));
        assert!(refuses_prefill(400, other));
        assert!(refuses_prefill(400, mistral));
        assert!(!refuses_prefill(529, anthropic));
        assert!(!refuses_prefill(
            400,
            br#"{"error":{"message":"max_tokens: must be at most 8192"}}"#
        ));
    }

    #[test]
    fn an_instruction_ends_with_a_user_turn_and_a_prefill_with_the_answer_so_far() {
        let original = canonical::Request {
            model: "m".into(),
            messages: vec![canonical::Message {
                role: canonical::Role::User,
                content: vec![canonical::Block::Text("Count to five.".into())],
            }],
            thinking: Some(canonical::Thinking::Adaptive),
            ..Default::default()
        };
        let r = continuation_request(&original, "One, two, ", Method::Prefill);
        assert_eq!(r.messages.len(), 2);
        assert_eq!(r.messages[1].role, canonical::Role::Assistant);
        assert_eq!(
            r.messages[1].content,
            vec![canonical::Block::Text("One, two,".into())]
        );
        assert!(r.thinking.is_none() && r.stream);
        let r = continuation_request(&original, "One, two, ", Method::Instruct);
        assert_eq!(r.messages.len(), 3);
        assert_eq!(r.messages[2].role, canonical::Role::User);
        assert_eq!(
            r.messages[2].content,
            vec![canonical::Block::Text(INSTRUCTION.into())]
        );
    }
}
