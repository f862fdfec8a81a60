//! What clients send us, per dialect: how each dialect's errors look (as a response and as a
//! terminal in-stream event), how its streams and bodies are judged complete, and how it lists
//! models. [`Dialect`] is the one switch; `anthropic` and `openai` hold the wire details.

pub mod anthropic;
pub mod openai;
pub mod whole;

use crate::error::GatewayError;
use crate::sse::Frame;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};

/// A client API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Anthropic Messages (Claude Code).
    Anthropic,
    /// OpenAI Chat Completions (IDE tools).
    OpenAi,
    /// Ollama's API (`/api/*`), for tools with built-in Ollama support. Always translated.
    Ollama,
}

impl Dialect {
    /// The dialect a request speaks, from its path; for the shared `GET /v1/models`, from its
    /// headers: `anthropic-version` or `x-api-key` mean Anthropic (its SDKs and Claude Code send
    /// them), anything else OpenAI.
    pub fn of_request(path: &str, headers: &HeaderMap) -> Dialect {
        if path.starts_with("/api/") && path != "/api/hello" {
            Dialect::Ollama
        } else if path.starts_with("/v1/messages") {
            Dialect::Anthropic
        } else if path.starts_with("/v1/chat/")
            || path.starts_with("/v1/completions")
            || path.starts_with("/v1/embeddings")
        {
            Dialect::OpenAi
        } else if headers.contains_key("anthropic-version") || headers.contains_key("x-api-key") {
            Dialect::Anthropic
        } else {
            Dialect::OpenAi
        }
    }

    /// A short stable name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Anthropic => "anthropic",
            Dialect::OpenAi => "openai",
            Dialect::Ollama => "ollama",
        }
    }

    /// The error as this dialect's JSON response.
    pub fn error_response(self, err: &GatewayError) -> Response {
        let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_GATEWAY);
        let request_id = new_request_id();
        let body = match self {
            Dialect::Anthropic => anthropic::error_body(err, &request_id),
            Dialect::OpenAi => openai::error_body(err),
            Dialect::Ollama => serde_json::json!({"error": err.to_string()}).to_string(),
        };
        let mut resp = (
            status,
            [(http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            h.insert("request-id", v);
        }
        if matches!(
            err,
            GatewayError::LoopDetected
                | GatewayError::MissingKey { .. }
                | GatewayError::Forbidden(_)
                | GatewayError::Unauthorized(_)
        ) {
            h.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if let GatewayError::QuotaExhausted {
            retry_after_secs, ..
        } = err
        {
            // Claude Code stops retrying past 60 s (protocol.md §1.7): a reset hours away is
            // an answer, not a wait; the SDKs read `x-should-retry`.
            h.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(*retry_after_secs),
            );
            if *retry_after_secs > 60 {
                h.insert("x-should-retry", HeaderValue::from_static("false"));
            }
        }
        resp.extensions_mut().insert(ErrorNote(err.to_string()));
        resp
    }

    /// The error as this dialect's terminal in-stream event: Anthropic's `event: error`, or
    /// OpenAI's `data: {"error":…}` (after which the stream closes without `[DONE]`).
    pub fn stream_error(self, err: &GatewayError) -> Frame {
        match self {
            Dialect::Anthropic => anthropic::stream_error(err),
            Dialect::OpenAi => openai::stream_error(err),
            Dialect::Ollama => {
                let line = crate::wire::ollama::error_line(&err.to_string());
                Frame {
                    raw: line,
                    event: None,
                    data: Some(err.to_string()),
                }
            }
        }
    }

    /// The status this dialect's clients see for an upstream status (protocol.md §3.8):
    /// overload is 529 to an Anthropic client and 503 to others.
    pub fn upstream_status(self, upstream: u16) -> u16 {
        match (self, upstream) {
            (Dialect::Anthropic, 502 | 503 | 529) => 529,
            (_, 502 | 503 | 529) => 503,
            (_, s) => s,
        }
    }

    /// The status and message of an upstream's own in-stream error event (its `data`) in this
    /// dialect.
    pub fn stream_error_status(self, data: &str) -> (u16, String) {
        let v: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
        let message = v
            .pointer("/error/message")
            .and_then(|m| m.as_str())
            .unwrap_or("")
            .to_owned();
        let status = match self {
            Dialect::Anthropic => crate::wire::anthropic::status_of_error_type(
                v.pointer("/error/type")
                    .and_then(|t| t.as_str())
                    .unwrap_or("api_error"),
            ),
            _ => crate::wire::openai::stream_error_status(&v["error"]),
        };
        (status, message)
    }

    /// A keep-alive in this dialect's stream: Anthropic's `ping` event, an SSE comment for
    /// OpenAI, nothing for Ollama's NDJSON.
    pub fn keepalive(self) -> Bytes {
        match self {
            Dialect::Anthropic => Bytes::from_static(b"event: ping\ndata: {\"type\":\"ping\"}\n\n"),
            Dialect::OpenAi => Bytes::from_static(b": ping\n\n"),
            Dialect::Ollama => Bytes::new(),
        }
    }

    /// A fresh rebuilder of a whole answer from a stream in this dialect (Ollama: see
    /// [`Dialect::inspector`]).
    pub fn assembler(self) -> whole::Assembler {
        match self {
            Dialect::Anthropic => whole::Assembler::Anthropic(Default::default()),
            Dialect::OpenAi | Dialect::Ollama => whole::Assembler::OpenAi(Default::default()),
        }
    }

    /// A fresh judge of a passthrough stream in this dialect. Ollama requests are always
    /// translated, never passed through, so they never need one; they get OpenAI's.
    pub fn inspector(self) -> Inspector {
        match self {
            Dialect::Anthropic => Inspector::Anthropic(anthropic::StreamInspector::default()),
            Dialect::OpenAi | Dialect::Ollama => {
                Inspector::OpenAi(openai::StreamInspector::default())
            }
        }
    }

    /// Judges a whole non-streaming passthrough body (Ollama: see [`Dialect::inspector`]).
    pub fn check_body(self, body: &[u8]) -> Result<Usage, BodyProblem> {
        match self {
            Dialect::Anthropic => anthropic::check_body(body),
            Dialect::OpenAi | Dialect::Ollama => openai::check_body(body),
        }
    }

    /// True when `body` is this dialect's own error shape, which is forwarded unmodified.
    pub fn is_error_body(self, body: &[u8]) -> bool {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return false;
        };
        match self {
            Dialect::Anthropic => {
                v.get("type").and_then(|t| t.as_str()) == Some("error") && v.get("error").is_some()
            }
            Dialect::OpenAi | Dialect::Ollama => v.get("error").is_some(),
        }
    }
}

/// The error text, kept in the response's extensions so the request log can say why.
#[derive(Debug, Clone)]
pub struct ErrorNote(pub String);

/// Token counts seen while inspecting a response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens, cache reads and writes included.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
}

/// Why a non-streaming body is not a complete answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyProblem {
    /// Not JSON at all (cut off, HTML, empty).
    Malformed(String),
    /// JSON, but not a finished answer (no stop reason).
    Incomplete(String),
}

/// What to do with one upstream frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send its bytes on unchanged.
    Forward,
    /// Send its bytes on: it is the upstream's own explicit error, so the client is told already.
    ForwardError,
    /// Do not send it, and go on: it follows the upstream's own error (a `[DONE]` there would
    /// read as success).
    Drop,
    /// Do not send it: the stream is broken (the reason says how); end with the explicit error.
    Fail(crate::error::FailureKind, String),
}

/// How a stream ended, as judged by its protocol signals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Complete; `append` holds a frame the upstream left off that the protocol requires
    /// (Anthropic's `message_stop` after a final `message_delta`).
    Complete {
        /// Bytes to send before closing.
        append: Option<Bytes>,
    },
    /// The upstream's own error event was forwarded; nothing more to send.
    UpstreamError,
    /// No completion signal: the client must get the explicit error.
    Truncated(String),
}

/// A per-dialect stream judge (a closed enum: two dialects, no dynamic dispatch).
#[derive(Debug)]
pub enum Inspector {
    /// Anthropic SSE.
    Anthropic(anthropic::StreamInspector),
    /// OpenAI SSE.
    OpenAi(openai::StreamInspector),
}

impl Inspector {
    /// Judges one frame, in order.
    pub fn frame(&mut self, f: &Frame) -> Verdict {
        match self {
            Inspector::Anthropic(i) => i.frame(f),
            Inspector::OpenAi(i) => i.frame(f),
        }
    }

    /// Judges one frame, in order, and hands back what a whole answer being rebuilt takes from
    /// it when the inspector's own reading has it (an Anthropic delta).
    pub fn judge<'f>(
        &mut self,
        f: &'f Frame,
    ) -> (Verdict, Option<crate::wire::anthropic::DeltaPiece<'f>>) {
        match self {
            Inspector::Anthropic(i) => i.judge(f),
            Inspector::OpenAi(i) => (i.frame(f), None),
        }
    }

    /// Judges the end of the stream (the upstream closed cleanly).
    pub fn end(&mut self) -> Ending {
        match self {
            Inspector::Anthropic(i) => i.end(),
            Inspector::OpenAi(i) => i.end(),
        }
    }

    /// True once content has started: before it, a failed stream can still become an HTTP
    /// error (and fail over); after it, the client has text it must keep.
    pub fn has_content(&self) -> bool {
        match self {
            Inspector::Anthropic(i) => i.content,
            Inspector::OpenAi(i) => i.content,
        }
    }

    /// True once the answer is under way (Anthropic: a block started; OpenAI: content): the
    /// first-content timer stops then, though the commit point may come later.
    pub fn has_started(&self) -> bool {
        match self {
            Inspector::Anthropic(i) => i.started || i.content,
            Inspector::OpenAi(i) => i.content,
        }
    }

    /// True while a tool call is in progress: its frames are held until it is whole.
    pub fn in_tool(&self) -> bool {
        match self {
            Inspector::Anthropic(i) => i.tool_open.is_some(),
            Inspector::OpenAi(i) => i.tool_open,
        }
    }

    /// Tokens seen so far.
    pub fn usage(&self) -> Usage {
        match self {
            Inspector::Anthropic(i) => i.usage,
            Inspector::OpenAi(i) => i.usage,
        }
    }
}

/// A request id in Anthropic's style, for errors the gateway itself answers.
pub fn new_request_id() -> String {
    format!("req_understudy_{:016x}", rand::random::<u64>())
}

/// The first `max` characters of an upstream body, tags and runs of whitespace removed, for
/// quoting in an error message.
pub fn snippet(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    let mut in_tag = false;
    let mut last_space = true;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                if !last_space {
                    out.push(' ');
                    last_space = true;
                }
            }
            _ if in_tag => {}
            c if c.is_whitespace() => {
                if !last_space {
                    out.push(' ');
                    last_space = true;
                }
            }
            c => {
                out.push(c);
                last_space = false;
            }
        }
        if out.chars().count() >= max {
            out.push('…');
            break;
        }
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_shape_is_chosen_by_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(Dialect::of_request("/v1/models", &h), Dialect::OpenAi);
        h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        assert_eq!(Dialect::of_request("/v1/models", &h), Dialect::Anthropic);
        assert_eq!(
            Dialect::of_request("/v1/chat/completions", &h),
            Dialect::OpenAi
        );
    }

    #[test]
    fn overload_is_529_to_anthropic_clients_and_503_to_others() {
        assert_eq!(Dialect::Anthropic.upstream_status(503), 529);
        assert_eq!(Dialect::OpenAi.upstream_status(529), 503);
        assert_eq!(Dialect::Ollama.upstream_status(429), 429);
    }

    #[test]
    fn snippet_strips_html() {
        let html = b"<html><head><title>502 Bad Gateway</title></head>\n<body><h1>502 Bad Gateway</h1></body></html>";
        assert_eq!(snippet(html, 200), "502 Bad Gateway 502 Bad Gateway");
    }
}
