//! The translated call: the backend speaks another API than the client (or the client speaks
//! Ollama). The request, decoded once into the canonical model, is written for the provider
//! (`Provider::encode`); the upstream is always asked for a stream, which comes back through
//! a [`Pipeline`] in the one stream state machine; a non-streaming client gets the collected
//! stream. Nothing reaches the client before the first content block (the commit point).

use super::attempt::{read_body, served_by, unix_now, upstream_error, Cap, Exchange};
use super::pipeline::{Format, Pipeline};
use super::stream::{http_upstream, stream_body, Piece, Pipe, Reported, Resume, Stream, Upstream};
use super::MAX_ERROR_BODY;
use crate::canonical;
use crate::error::{FailureKind, GatewayError};
use crate::providers::{Encoded, EncodedBody};
use crate::routing::health::Report;
use crate::routing::Backend;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode};
use std::time::Duration;
use tokio::time::Instant;

/// What the upstream answered to a translated request.
pub(crate) enum Opened {
    /// An event stream (2xx, or the local engine's events).
    Stream(Upstream),
    /// An error status (its body not read yet).
    Status(reqwest::Response),
}

/// Sends an encoded request (or hands it to the local engine) and checks that a success is an
/// event stream.
pub(crate) async fn open(
    backend: &Backend,
    enc: &Encoded,
    deadline: Instant,
) -> Result<Opened, GatewayError> {
    let provider = &backend.provider;
    let (op, bytes) = match &enc.body {
        EncodedBody::Local {
            request,
            max_tokens,
        } => {
            let Some(engine) = provider.local() else {
                return Err(GatewayError::Unsupported(format!(
                    "provider '{}' has no local model to answer with",
                    provider.name()
                )));
            };
            let (rx, guard) = engine
                .generate(request, *max_tokens)
                .await
                .map_err(|mut e| {
                    e.provider = provider.name().to_owned();
                    GatewayError::Upstream(e)
                })?;
            let tools = crate::providers::local::offers_tools(request);
            let events =
                crate::providers::local::into_events(rx, guard, backend.model.clone(), tools)
                    .map(|r| Ok(r.map_or_else(Piece::Fault, Piece::Events)))
                    .boxed();
            return Ok(Opened::Stream(events));
        }
        EncodedBody::Http { op, bytes } => (*op, bytes.clone()),
    };
    tracing::debug!(provider = provider.name(), model = %backend.model, kind = provider.config.kind.as_str(), "sending translated request upstream");
    let resp = provider.send_translated(op, &backend.model, bytes).await?;
    opened(provider, resp, deadline).await
}

/// The upstream's answer to a request asked as a stream: the stream, or its error status; a
/// success that is not an event stream is a malformed answer.
pub(crate) async fn opened(
    provider: &std::sync::Arc<crate::providers::Provider>,
    resp: reqwest::Response,
    deadline: Instant,
) -> Result<Opened, GatewayError> {
    let status = resp.status();
    if !status.is_success() {
        return Ok(Opened::Status(resp));
    }
    let ct = super::attempt::content_type(resp.headers());
    if !ct.starts_with("text/event-stream") {
        let body = read_body(provider, resp, deadline, Cap::Cut(MAX_ERROR_BODY))
            .await
            .unwrap_or_default();
        return Err(GatewayError::Upstream(provider.failure(FailureKind::Malformed, format!(
            "asked for a stream, the upstream answered HTTP {} with {ct} instead of text/event-stream: {}",
            status.as_u16(), crate::client_api::snippet(&body, 200)))));
    }
    Ok(Opened::Stream(http_upstream(provider, resp)))
}

/// Serves a translated request from `backend`.
pub(crate) async fn call(
    backend: &Backend,
    req: &std::sync::Arc<canonical::Request>,
    format: Format,
    keepalive: Duration,
    report: Option<Report>,
    plan: Option<Box<dyn Resume>>,
    exchange: Exchange,
) -> Result<Response, GatewayError> {
    let provider = backend.provider.clone();
    req.check_tool_results()
        .map_err(GatewayError::InvalidRequest)?;
    let dialect = format.dialect();
    let enc = provider.encode(req, &backend.model);
    let deadline = exchange.started + provider.config.timeouts.total;
    let opened = open(backend, &enc, deadline).await?;
    // Sent: the encoded copy of the request is not kept for the length of the answer.
    drop(enc.body);
    let upstream = match opened {
        Opened::Stream(r) => r,
        Opened::Status(r) => {
            return upstream_error(&provider, dialect, r, deadline, &exchange).await
        }
    };
    let created = unix_now();
    let pipeline = Pipeline::new(
        provider.api().decoder(),
        provider.name(),
        enc.names,
        format,
        &req.model,
        created,
        req.stream,
    )
    .validating(req.clone());
    let name = provider.name().to_owned();
    let pipe = Pipe::Translated(Box::new(pipeline));
    let mut stream = Stream::new(upstream, pipe, provider.clone(), exchange, keepalive, plan);
    if !req.stream {
        let answer = stream.answer(report, format, &req.model).await?;
        let mut resp = served_by(axum::Json(answer).into_response(), &name);
        resp.extensions_mut().insert(Reported);
        return Ok(resp);
    }
    let head = stream.commit(report).await?;
    let body = stream_body(head, stream);
    let mut resp = (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response();
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    Ok(served_by(resp, &name))
}
