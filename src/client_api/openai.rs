//! OpenAI Chat Completions on the wire: error bodies, the mid-stream `{"error":…}` chunk, the
//! model list, and completeness (protocol.md §5: a `finish_reason` **and** `data: [DONE]`).

use super::{BodyProblem, Ending, Usage, Verdict};
use crate::error::{FailureKind, GatewayError};
use crate::sse::Frame;
use serde::Deserialize;
use serde_json::json;

/// OpenAI's `error.type` and `error.code` for a gateway error.
fn type_and_code(err: &GatewayError) -> (&'static str, Option<&'static str>) {
    match err {
        GatewayError::InvalidRequest(_)
        | GatewayError::Unsupported(_)
        | GatewayError::LoopDetected => ("invalid_request_error", None),
        GatewayError::UnknownModel { .. } => ("invalid_request_error", Some("model_not_found")),
        GatewayError::NotFound(_) => ("invalid_request_error", Some("unknown_url")),
        GatewayError::MissingKey { .. } => ("authentication_error", Some("invalid_api_key")),
        GatewayError::Forbidden(_) => ("permission_error", None),
        GatewayError::Unauthorized(_) => ("authentication_error", Some("invalid_api_key")),
        GatewayError::TooLarge { .. } => ("invalid_request_error", Some("request_too_large")),
        GatewayError::PromptTooLong { .. } => {
            ("invalid_request_error", Some("context_length_exceeded"))
        }
        GatewayError::Unavailable(_) => ("server_error", Some("service_unavailable")),
        GatewayError::QuotaExhausted { .. } => ("rate_limit_error", Some("rate_limit_exceeded")),
        GatewayError::Upstream(e) if e.kind.is_timeout() => ("server_error", Some("timeout")),
        GatewayError::Upstream(e) if e.kind == FailureKind::Status(429) => {
            ("rate_limit_error", Some("rate_limit_exceeded"))
        }
        GatewayError::Upstream(_) => ("server_error", None),
    }
}

pub(super) fn error_body(err: &GatewayError) -> String {
    let (ty, code) = type_and_code(err);
    json!({"error": {"message": err.to_string(), "type": ty, "param": null, "code": code}})
        .to_string()
}

pub(super) fn stream_error(err: &GatewayError) -> Frame {
    let (_, code) = type_and_code(err);
    // protocol.md §2.4: the shape the OpenAI SDK, vLLM and SGLang understand mid-stream.
    let data = json!({"error": {"message": err.to_string(), "type": "server_error", "code": code}})
        .to_string();
    Frame::data_only(&data)
}

/// OpenAI's model list shape.
pub fn model_list(ids: &[String], owner: impl Fn(&str) -> String) -> serde_json::Value {
    let data: Vec<_> = ids
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": owner(id)}))
        .collect();
    json!({"object": "list", "data": data})
}

#[derive(Deserialize)]
struct ChunkPeek<'a> {
    #[serde(default, borrow)]
    choices: Vec<ChoicePeek<'a>>,
    usage: Option<UsagePeek>,
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct ChoicePeek<'a> {
    finish_reason: Option<String>,
    #[serde(default, borrow)]
    delta: Option<DeltaPeek<'a>>,
}

/// The text is borrowed from the chunk (it was copied, an allocation per chunk of every
/// inspected stream, to be looked at once).
#[derive(Deserialize)]
struct DeltaPeek<'a> {
    #[serde(borrow)]
    content: Option<crate::wire::Text<'a>>,
    #[serde(borrow)]
    reasoning_content: Option<crate::wire::Text<'a>>,
    tool_calls: Option<serde::de::IgnoredAny>,
}

impl DeltaPeek<'_> {
    /// Some text or reasoning (not empty).
    fn has_text(&self) -> bool {
        self.content.as_ref().is_some_and(|c| !c.0.is_empty())
            || self
                .reasoning_content
                .as_ref()
                .is_some_and(|c| !c.0.is_empty())
    }

    fn has_content(&self) -> bool {
        self.has_text() || self.tool_calls.is_some()
    }
}

#[derive(Deserialize)]
struct UsagePeek {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

/// Follows an OpenAI chunk stream and decides whether it finished.
#[derive(Debug, Default)]
pub struct StreamInspector {
    finish_reason: Option<String>,
    saw_done: bool,
    saw_error: bool,
    /// Content (text, reasoning, a tool call) or a finish has arrived (the commit point).
    pub content: bool,
    /// Tool-call fragments arrived and no finish or text has closed them yet.
    pub tool_open: bool,
    /// Tokens reported so far (only when the client asked for `include_usage`).
    pub usage: Usage,
}

impl StreamInspector {
    /// Judges one frame.
    pub fn frame(&mut self, f: &Frame) -> Verdict {
        let Some(data) = &f.data else {
            return Verdict::Forward; // `: keep-alive` comments (OpenRouter sends them)
        };
        if self.saw_error {
            // Nothing may follow the error chunk, least of all a `[DONE]` that would read as success.
            return Verdict::Drop;
        }
        if data.trim() == "[DONE]" {
            if self.finish_reason.is_none() {
                return Verdict::Fail(
                    FailureKind::Truncated,
                    "the upstream sent [DONE] without any finish_reason".into(),
                );
            }
            self.saw_done = true;
            return Verdict::Forward;
        }
        let chunk: ChunkPeek = match serde_json::from_str(data) {
            Ok(c) => c,
            Err(e) => {
                return Verdict::Fail(
                    FailureKind::Malformed,
                    format!("the upstream sent a chunk that is not valid JSON ({e})"),
                )
            }
        };
        if chunk.error.is_some() {
            self.saw_error = true;
            return Verdict::ForwardError;
        }
        for c in chunk.choices {
            if c.finish_reason.is_some() || c.delta.as_ref().is_some_and(DeltaPeek::has_content) {
                self.content = true;
            }
            let tools = c.delta.as_ref().is_some_and(|d| d.tool_calls.is_some());
            let text = c.delta.as_ref().is_some_and(DeltaPeek::has_text);
            if tools {
                self.tool_open = true;
            } else if text || c.finish_reason.is_some() {
                self.tool_open = false;
            }
            match c.finish_reason.as_deref() {
                Some("error") => {
                    return Verdict::Fail(
                        FailureKind::Truncated,
                        "the upstream ended the choice with finish_reason \"error\"".into(),
                    )
                }
                Some(r) => self.finish_reason = Some(r.to_owned()),
                None => {}
            }
        }
        if let Some(u) = chunk.usage {
            self.usage = Usage {
                input_tokens: u.prompt_tokens.unwrap_or(0),
                output_tokens: u.completion_tokens.unwrap_or(0),
            };
        }
        Verdict::Forward
    }

    /// Judges the end of the stream.
    pub fn end(&mut self) -> Ending {
        if self.saw_error {
            Ending::UpstreamError
        } else if self.saw_done {
            Ending::Complete { append: None }
        } else if self.finish_reason.is_some() {
            Ending::Truncated(
                "the upstream stream ended after its finish_reason but without data: [DONE]".into(),
            )
        } else {
            Ending::Truncated(
                "the upstream stream ended without a finish_reason or data: [DONE]".into(),
            )
        }
    }
}

#[derive(Deserialize)]
struct BodyPeek<'a> {
    #[serde(borrow)]
    choices: Option<Vec<ChoicePeek<'a>>>,
    usage: Option<UsagePeek>,
}

pub(super) fn check_body(body: &[u8]) -> Result<Usage, BodyProblem> {
    let b: BodyPeek = serde_json::from_slice(body).map_err(|e| {
        BodyProblem::Malformed(format!("the upstream's body is not valid JSON ({e})"))
    })?;
    let choices = b
        .choices
        .filter(|c| !c.is_empty())
        .ok_or_else(|| BodyProblem::Incomplete("the upstream's body has no choices".into()))?;
    if choices
        .iter()
        .any(|c| c.finish_reason.is_none() || c.finish_reason.as_deref() == Some("error"))
    {
        return Err(BodyProblem::Incomplete(
            "a choice in the upstream's body has no finish_reason".into(),
        ));
    }
    Ok(b.usage
        .map(|u| Usage {
            input_tokens: u.prompt_tokens.unwrap_or(0),
            output_tokens: u.completion_tokens.unwrap_or(0),
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::Splitter;

    fn judge(stream: &str) -> (Vec<Verdict>, Ending) {
        let mut frames = Vec::new();
        Splitter::new().feed(stream.as_bytes(), &mut frames);
        let mut i = StreamInspector::default();
        let v = frames.iter().map(|f| i.frame(f)).collect();
        (v, i.end())
    }

    const C1: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n";
    const FIN: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
    const USAGE: &str = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    #[test]
    fn finish_reason_and_done_make_a_complete_stream() {
        let (v, end) = judge(&format!(": keep-alive\n\n{C1}{FIN}{USAGE}{DONE}"));
        assert!(v.iter().all(|v| *v == Verdict::Forward));
        assert_eq!(end, Ending::Complete { append: None });
    }

    #[test]
    fn eof_without_done_is_truncation_even_after_finish_reason() {
        assert!(matches!(
            judge(&format!("{C1}{FIN}")).1,
            Ending::Truncated(_)
        ));
        assert!(matches!(judge(C1).1, Ending::Truncated(_)));
    }

    #[test]
    fn done_without_finish_reason_is_refused() {
        let (v, _) = judge(&format!("{C1}{DONE}"));
        assert!(matches!(
            v.last(),
            Some(Verdict::Fail(FailureKind::Truncated, _))
        ));
    }

    #[test]
    fn an_error_chunk_is_forwarded_and_nothing_after_it_reads_as_success() {
        let (v, end) = judge(&format!(
            "{C1}data: {{\"error\":{{\"message\":\"boom\"}}}}\n\n{DONE}"
        ));
        assert_eq!(v[1], Verdict::ForwardError);
        assert_eq!(
            v[2],
            Verdict::Drop,
            "a [DONE] after an error must not reach the client"
        );
        assert_eq!(end, Ending::UpstreamError);
    }

    #[test]
    fn finish_reason_error_is_truncation() {
        let bad =
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"error\"}]}\n\n";
        let (v, _) = judge(&format!("{C1}{bad}"));
        assert!(matches!(
            v.last(),
            Some(Verdict::Fail(FailureKind::Truncated, _))
        ));
    }
}
