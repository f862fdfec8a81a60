//! What every upstream attempt shares: the [`Exchange`] (the request log line and the trace
//! entry of one attempt), reading a body under the idle and total limits, the stream limits and
//! their failures, and the upstream's error statuses turned into the client's.

use super::MAX_ERROR_BODY;
use crate::client_api::{snippet, Dialect, Usage};
use crate::error::{FailureKind, GatewayError, ProviderError};
use crate::providers::{response_headers, Provider};
use crate::routing::Backend;
use crate::telemetry::observe::Trace;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

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
    /// Its attempt in the trace (begun just before it).
    at: Option<usize>,
}

impl Exchange {
    pub(crate) fn new(
        dialect: Dialect,
        model: &str,
        backend: &Backend,
        stream: bool,
        trace: Trace,
    ) -> Exchange {
        let at = trace.latest(backend.key());
        Exchange {
            at,
            dialect,
            model: model.to_owned(),
            provider: backend.provider.name().to_owned(),
            upstream_model: backend.model.clone(),
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
        self.trace
            .ended(self.at, &class, usage.input_tokens, usage.output_tokens);
        if let Some(d) = detail {
            self.trace.why(self.at, d);
        }
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
        self.trace
            .ended(self.at, failure, usage.input_tokens, usage.output_tokens);
        if let Some(d) = detail {
            self.trace.why(self.at, d);
        }
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

/// Seconds since the epoch: the `created` of answers the gateway writes.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An error in one word: the upstream failure's class, or `http_STATUS`.
pub(crate) fn error_class(e: &GatewayError) -> String {
    match e {
        GatewayError::Upstream(p) => p.kind.as_str().to_owned(),
        e => format!("http_{}", e.status()),
    }
}

/// Marks who served the answer (`x-understudy-served-by`).
pub(crate) fn served_by(mut resp: Response, provider: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(provider) {
        resp.headers_mut().insert("x-understudy-served-by", v);
    }
    resp
}

/// The upstream's retry advice goes along with an error the gateway writes.
fn copy_retry_headers(from: &HeaderMap, to: &mut Response) {
    for name in ["retry-after", "retry-after-ms", "x-should-retry"] {
        if let Some(v) = from.get(name) {
            to.headers_mut().insert(name, v.clone());
        }
    }
}

/// The response's content type, for quoting.
pub(crate) fn content_type(h: &HeaderMap) -> String {
    h.get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no content-type")
        .to_owned()
}

/// An error answer's status, the headers a client may see, its content type, and its body up
/// to [`MAX_ERROR_BODY`] (read within the idle and total limits).
async fn read_error(
    provider: &Provider,
    resp: reqwest::Response,
    deadline: Instant,
) -> Result<(StatusCode, HeaderMap, String, Bytes), GatewayError> {
    let status = resp.status();
    let headers = response_headers(resp.headers());
    let ct = content_type(resp.headers());
    let body = read_body(provider, resp, deadline, Cap::Cut(MAX_ERROR_BODY))
        .await
        .map_err(GatewayError::Upstream)?;
    // An upstream that quotes the key it was sent ("invalid x-api-key: sk-…") must not hand
    // it to the client, the log or the journal.
    let body = match crate::secret::redact_bytes(&body) {
        Some(clean) => Bytes::from(clean),
        None => body,
    };
    Ok((status, headers, ct, body))
}

/// An upstream error status: its own API error body is forwarded unmodified (status, body and
/// headers such as `retry-after` and `x-should-retry`); anything else (an HTML 502 page from a
/// proxy) becomes the client dialect's error with the same status and the page quoted.
pub(crate) async fn relay_error_status(
    provider: &Provider,
    dialect: Dialect,
    resp: reqwest::Response,
    deadline: Instant,
    exchange: &Exchange,
) -> Result<Response, GatewayError> {
    let (status, headers, ct, body) = read_error(provider, resp, deadline).await?;
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
    copy_retry_headers(&headers, &mut resp);
    Ok(resp)
}

/// How much of a body [`read_body`] keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cap {
    /// Up to this many bytes, then the rest is not read: the connection is dropped and the
    /// body answered at once (an error body, which is only quoted).
    Cut(usize),
    /// The whole body, which past this many bytes is the upstream's failure
    /// (`server.max_upstream_body_bytes`).
    Whole(usize),
}

/// Reads a body within the idle and total limits, and within `cap`.
pub(crate) async fn read_body(
    provider: &Provider,
    resp: reqwest::Response,
    deadline: Instant,
    cap: Cap,
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
            Ok(Some(Ok(chunk))) => match cap {
                Cap::Cut(limit) => {
                    buf.extend_from_slice(&chunk[..chunk.len().min(limit - buf.len())]);
                    if buf.len() >= limit {
                        tracing::debug!(
                            provider = provider.name(),
                            limit,
                            "an error body was cut at its cap"
                        );
                        return Ok(buf.freeze());
                    }
                }
                Cap::Whole(limit) => {
                    if buf.len() + chunk.len() > limit {
                        return Err(oversize(
                            provider,
                            "whole body",
                            limit,
                            "max_upstream_body_bytes",
                        ));
                    }
                    buf.extend_from_slice(&chunk);
                }
            },
        }
    }
}

/// The upstream sent more than `limit` bytes of `what`: its failure, naming the setting.
pub(crate) fn oversize(
    provider: &Provider,
    what: &str,
    limit: usize,
    setting: &str,
) -> ProviderError {
    provider.failure(
        FailureKind::Oversize,
        format!("the upstream sent a {what} larger than {limit} bytes (server.{setting}); the rest was not read"),
    )
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

/// An upstream error status, in the client's dialect (protocol.md §3.8): context overflow
/// becomes "prompt is too long" so Claude Code compacts; overload becomes 529/503; the
/// upstream's `retry-after` and `x-should-retry` go along.
pub(crate) async fn upstream_error(
    provider: &Provider,
    dialect: Dialect,
    resp: reqwest::Response,
    deadline: Instant,
    exchange: &Exchange,
) -> Result<Response, GatewayError> {
    let (status, headers, _, body) = read_error(provider, resp, deadline).await?;
    let status = status.as_u16();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let api = provider.api();
    let message = parsed.as_ref().and_then(|v| api.error_message(v));
    let overflow = parsed
        .as_ref()
        .is_some_and(|v| api.context_overflow(v, message.as_deref()));
    let err = if overflow && matches!(status, 400 | 413) {
        GatewayError::PromptTooLong {
            detail: prompt_too_long_detail(message.as_deref().unwrap_or("")),
        }
    } else {
        let what = message
            .unwrap_or_else(|| format!("a body that is not an API error: {}", snippet(&body, 200)));
        GatewayError::Upstream(provider.failure(
            FailureKind::Status(dialect.upstream_status(status)),
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
    copy_retry_headers(&headers, &mut out);
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
    }
}
