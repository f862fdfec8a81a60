//! Same-protocol passthrough: the client and the backend speak the same API, so the request
//! goes as the client wrote it (only `model` rewritten when the backend names another) and the
//! answer comes back byte for byte — whole SSE events at a time, so a client never receives
//! half an event — while an [`Inspector`] follows the protocol on the side. A stream that
//! ends without its completion signal (or stalls, breaks, or turns malformed) is ended with
//! the client dialect's explicit error event, never a clean end.

use super::attempt::{content_type, read_body, relay_error_status, served_by, Exchange};
use super::inspected::Inspected;
use super::pipeline::Pipeline;
use super::stream::{http_upstream, stream_body, Pipe, Resume, Stream};
use super::{Request, MAX_ERROR_BODY};
use crate::client_api::{snippet, BodyProblem, Usage};
use crate::error::{FailureKind, GatewayError};
use crate::providers::{Operation, Provider};
use crate::routing::health::Report;
use crate::routing::Backend;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// Passes one request through to `backend`.
pub(crate) async fn call(
    backend: &Backend,
    req: &Request,
    report: Option<Report>,
    plan: Option<Box<dyn Resume>>,
    exchange: Exchange,
) -> Result<Response, GatewayError> {
    let provider = backend.provider.clone();
    let body = if backend.model == req.model {
        req.body.clone()
    } else {
        rewrite_model(&req.body, &backend.model)?
    };
    tracing::debug!(provider = provider.name(), model = %backend.model, stream = req.stream, "sending upstream");
    let resp = provider
        .send(req.op, req.query.as_deref(), &req.headers, body)
        .await?;
    let deadline = exchange.started + provider.config.timeouts.total;
    let status = resp.status();
    if !status.is_success() {
        return relay_error_status(&provider, req.dialect, resp, deadline, &exchange).await;
    }
    let headers = crate::providers::response_headers(resp.headers());
    if !req.stream {
        let body = read_body(&provider, resp, deadline, usize::MAX)
            .await
            .map_err(GatewayError::Upstream)?;
        let usage = check_whole(&provider, req, &body)?;
        exchange.log(status.as_u16(), "complete", usage, None);
        return Ok(served_by(
            (status, headers, body).into_response(),
            provider.name(),
        ));
    }
    let ct = content_type(resp.headers());
    if !ct.starts_with("text/event-stream") {
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
    let inspected = Inspected::new(req.dialect, shadow);
    let name = provider.name().to_owned();
    let upstream = http_upstream(&provider, resp);
    let pipe = Pipe::Passthrough(Box::new(inspected));
    let mut stream = Stream::new(upstream, pipe, provider, exchange, req.keepalive, plan);
    let head = stream.commit(report).await?;
    let body = stream_body(head, stream);
    Ok(served_by((status, headers, body).into_response(), &name))
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
