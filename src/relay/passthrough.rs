//! Same-protocol passthrough: the client and the backend speak the same API, so the request
//! goes as the client wrote it (only `model` rewritten when the backend names another) and the
//! answer comes back byte for byte — whole SSE events at a time, so a client never receives
//! half an event — while an [`Inspector`] follows the protocol on the side. A stream that
//! ends without its completion signal (or stalls, breaks, or turns malformed) is ended with
//! the client dialect's explicit error event, never a clean end.

use super::attempt::{content_type, read_body, relay_error_status, served_by, Cap, Exchange};
use super::inspected::Inspected;
use super::pipeline::Pipeline;
use super::stream::{http_upstream, stream_body, Pipe, Reported, Resume, Stream};
use super::{Request, MAX_ERROR_BODY};
use crate::client_api::{snippet, BodyProblem, Usage};
use crate::error::{FailureKind, GatewayError};
use crate::providers::{Operation, Provider};
use crate::routing::health::Report;
use crate::routing::Backend;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// Passes one request through to `backend`. A non-streaming request is asked of the upstream
/// as a stream (unless the provider says `stream_whole_answers = false`) and answered whole
/// when the stream completes; an upstream that answers such a request with a whole body anyway
/// is judged as one.
pub(crate) async fn call(
    backend: &Backend,
    req: &Request,
    report: Option<Report>,
    plan: Option<Box<dyn Resume>>,
    exchange: Exchange,
) -> Result<Response, GatewayError> {
    let provider = backend.provider.clone();
    let whole_as_stream = !req.stream
        && provider.config.stream_whole_answers
        && matches!(req.op, Operation::Messages | Operation::ChatCompletions);
    let body = outbound_body(req, &backend.model, whole_as_stream)?;
    tracing::debug!(provider = provider.name(), model = %backend.model, stream = req.stream, whole_as_stream, "sending upstream");
    let resp = provider
        .send(req.op, req.query.as_deref(), &req.headers, body)
        .await?;
    let deadline = exchange.started + provider.config.timeouts.total;
    let status = resp.status();
    if !status.is_success() {
        return relay_error_status(&provider, req.dialect, resp, deadline, &exchange).await;
    }
    let mut headers = crate::providers::response_headers(resp.headers());
    let ct = content_type(resp.headers());
    let is_sse = ct.starts_with("text/event-stream");
    // Streamed to the client, or streamed upstream and rebuilt; anything else is a body.
    let streamed = req.stream || (whole_as_stream && is_sse);
    if !streamed {
        let body = read_body(
            &provider,
            resp,
            deadline,
            Cap::Whole(provider.config.limits.body),
        )
        .await
        .map_err(GatewayError::Upstream)?;
        let usage = check_whole(&provider, req, &body)?;
        exchange.log(status.as_u16(), "complete", usage, None);
        return Ok(served_by(
            (status, headers, body).into_response(),
            provider.name(),
        ));
    }
    if !is_sse {
        let body = read_body(&provider, resp, deadline, Cap::Cut(MAX_ERROR_BODY))
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
    // A shadow pipeline records what the client has received, so that a break can be
    // continued elsewhere: only when there is somewhere to continue.
    let shadow = plan.is_some().then(|| {
        let decoder = provider.api().decoder();
        Pipeline::new(
            decoder,
            provider.name(),
            Default::default(),
            req.format,
            &req.model,
            0,
            false,
        )
    });
    let inspected = Inspected::new(req.dialect, shadow, whole_as_stream);
    let name = provider.name().to_owned();
    let upstream = http_upstream(&provider, resp);
    let pipe = Pipe::Passthrough(Box::new(inspected));
    let mut stream = Stream::new(
        upstream,
        pipe,
        provider.clone(),
        exchange,
        req.keepalive,
        plan,
    );
    if whole_as_stream {
        let whole = stream.answer(report, req.format, &req.model).await?;
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers.remove(http::header::CACHE_CONTROL);
        let body = serde_json::to_vec(&whole).expect("a JSON value always serializes");
        let mut resp = served_by((status, headers, body).into_response(), &name);
        resp.extensions_mut().insert(Reported);
        return Ok(resp);
    }
    let head = stream.commit(report).await?;
    let body = stream_body(head, stream);
    Ok(served_by((status, headers, body).into_response(), &name))
}

/// The body sent upstream: the client's bytes unless the backend names another model (only
/// `model`'s value replaced, every other byte kept) or a whole answer is asked for as a stream
/// (`stream: true`, and for OpenAI the usage chunk a whole answer's `usage` comes from).
fn outbound_body(req: &Request, model: &str, as_stream: bool) -> Result<Bytes, GatewayError> {
    if model == req.model && !as_stream {
        return Ok(req.body.clone());
    }
    // The fields written in place, every other byte as the client sent it (no decode of a
    // 100 KB conversation to change one name).
    if let Some(top) = &req.top {
        let options = (as_stream && req.op == Operation::ChatCompletions)
            .then_some(r#"{"include_usage":true}"#);
        let model = (model != req.model).then_some(model);
        return Ok(Bytes::from(super::peek::splice(
            &req.body, top, model, as_stream, options,
        )));
    }
    let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&req.body)
        .map_err(|e| {
            GatewayError::InvalidRequest(format!("request body is not a JSON object: {e}"))
        })?;
    v.insert("model".into(), serde_json::Value::String(model.to_owned()));
    if as_stream {
        ask_stream(&mut v, req.op);
    }
    Ok(Bytes::from(
        serde_json::to_vec(&v).expect("a JSON map always serializes"),
    ))
}

/// Asks a client's body for a stream: `stream: true`, and for OpenAI the usage chunk (a whole
/// answer's `usage`, a continuation's token count).
pub(super) fn ask_stream(v: &mut serde_json::Map<String, serde_json::Value>, op: Operation) {
    v.insert("stream".into(), serde_json::Value::Bool(true));
    if op == Operation::ChatCompletions {
        v.insert(
            "stream_options".into(),
            serde_json::json!({"include_usage": true}),
        );
    }
}

/// Judges a whole answer: complete (a stop reason, choices with a finish reason; embeddings
/// with their data) or a failure like any other.
fn check_whole(provider: &Provider, req: &Request, body: &[u8]) -> Result<Usage, GatewayError> {
    match req.op {
        Operation::CountTokens => Ok(Usage::default()),
        Operation::Embeddings => {
            let ok = serde_json::from_slice::<serde_json::Value>(body)
                .is_ok_and(|v| v.get("data").is_some_and(serde_json::Value::is_array));
            if ok {
                Ok(Usage::default())
            } else {
                Err(GatewayError::Upstream(provider.failure(
                    FailureKind::Malformed,
                    format!(
                        "the upstream's embeddings body has no data array: {}",
                        snippet(body, 200)
                    ),
                )))
            }
        }
        _ => req.dialect.check_body(body).map_err(|p| {
            let (kind, detail) = match p {
                BodyProblem::Malformed(d) => (FailureKind::Malformed, d),
                BodyProblem::Incomplete(d) => (FailureKind::Truncated, d),
            };
            GatewayError::Upstream(
                provider.failure(kind, format!("{detail}: {}", snippet(body, 200))),
            )
        }),
    }
}
