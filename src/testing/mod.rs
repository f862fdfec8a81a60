//! Test support (feature `testing`): [`MockCloud`], an Anthropic- and OpenAI-shaped upstream on
//! `127.0.0.1:0` that plays scripted replies, faults included; and builders for faithful
//! streams and bodies written from protocol.md.

mod mock;
pub mod transcript;

pub use mock::{
    bench_parts, operational_page, status_page, Chunk, End, LocalShape, MockBody, MockCloud, Plan,
    PlanHeaders, Profile, RecordedRequest, Reply, Restate, Stats, PREFILL_REFUSAL,
};

use serde_json::{json, Value};

/// The text a default (unscripted) reply carries, in the pieces it is streamed in.
pub const DEFAULT_PARTS: &[&str] = &["Hello", " from", " the", " mock", " cloud."];

/// Anthropic Messages shapes (protocol.md §1.4, §1.5).
pub mod anthropic {
    use super::*;

    /// One SSE event in Anthropic's framing.
    pub fn event(data: &Value) -> String {
        format!(
            "event: {}\ndata: {}\n\n",
            data["type"].as_str().unwrap_or("unknown"),
            data
        )
    }

    /// A complete text answer streamed in `parts`, in the exact event order of §1.5.
    pub fn text_stream(model: &str, parts: &[&str], stop_reason: &str) -> Vec<String> {
        let mut out = vec![
            event(
                &json!({"type": "message_start", "message": {"id": "msg_mock01", "type": "message", "role": "assistant",
                "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1}}}),
            ),
            event(
                &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            event(&json!({"type": "ping"})),
        ];
        for p in parts {
            out.push(event(&json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})));
        }
        out.push(event(&json!({"type": "content_block_stop", "index": 0})));
        out.push(event(&json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": parts.len()}})));
        out.push(event(&json!({"type": "message_stop"})));
        out
    }

    /// A complete non-streaming answer.
    pub fn message(model: &str, text: &str) -> Value {
        json!({"id": "msg_mock01", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 5}})
    }

    /// An error body (§1.6).
    pub fn error(ty: &str, message: &str) -> Value {
        json!({"type": "error", "error": {"type": ty, "message": message}, "request_id": "req_mock01"})
    }

    /// A mid-stream `event: error` (§1.5).
    pub fn error_event(ty: &str, message: &str) -> String {
        event(&json!({"type": "error", "error": {"type": ty, "message": message}}))
    }
}

/// OpenAI Chat Completions shapes (protocol.md §2.3, §2.4).
pub mod openai {
    use super::*;

    fn chunk(model: &str, delta: Value, finish: Option<&str>) -> String {
        let c = json!({"id": "chatcmpl-mock01", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    }

    /// A complete text answer streamed in `parts`, usage chunk and `[DONE]` included.
    pub fn text_stream(model: &str, parts: &[&str], finish_reason: &str) -> Vec<String> {
        let mut out = vec![chunk(
            model,
            json!({"role": "assistant", "content": ""}),
            None,
        )];
        for p in parts {
            out.push(chunk(model, json!({"content": p}), None));
        }
        out.push(chunk(model, json!({}), Some(finish_reason)));
        let usage = json!({"id": "chatcmpl-mock01", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": parts.len(), "total_tokens": 12 + parts.len()}});
        out.push(format!("data: {usage}\n\n"));
        out.push("data: [DONE]\n\n".into());
        out
    }

    /// A complete non-streaming answer.
    pub fn completion(model: &str, text: &str) -> Value {
        json!({"id": "chatcmpl-mock01", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}})
    }

    /// An error body (§2.4).
    pub fn error(ty: &str, message: &str) -> Value {
        json!({"error": {"message": message, "type": ty, "param": null, "code": null}})
    }

    /// A mid-stream error chunk (§2.4).
    pub fn error_chunk(message: &str) -> String {
        format!(
            "data: {}\n\n",
            json!({"error": {"message": message, "type": "server_error", "code": null}})
        )
    }
}

/// Gemini `streamGenerateContent?alt=sse` shapes (protocol.md §3.7).
pub mod gemini {
    use super::*;

    /// One SSE event of a Gemini stream: a `GenerateContentResponse`.
    pub fn chunk(parts: Value, finish: Option<&str>) -> String {
        let mut c = json!({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
            "modelVersion": "gemini-mock", "responseId": "gem-mock01"});
        if let Some(f) = finish {
            c["candidates"][0]["finishReason"] = json!(f);
            c["usageMetadata"] =
                json!({"promptTokenCount": 12, "candidatesTokenCount": 5, "totalTokenCount": 17});
        }
        format!("data: {c}\r\n\r\n")
    }

    /// A complete text answer streamed in `parts`.
    pub fn text_stream(parts: &[&str]) -> Vec<String> {
        let mut out: Vec<String> = parts
            .iter()
            .map(|p| chunk(json!([{"text": p}]), None))
            .collect();
        out.push(chunk(json!([]), Some("STOP")));
        out
    }

    /// An error body (`{"error":{"code","message","status"}}`).
    pub fn error(code: u16, status: &str, message: &str) -> Value {
        json!({"error": {"code": code, "message": message, "status": status}})
    }
}

/// An HTML error page, as a load balancer or proxy in front of a provider sends one.
pub fn html_page(status: u16) -> String {
    format!(
        "<html>\r\n<head><title>{status} Bad Gateway</title></head>\r\n<body>\r\n<center><h1>{status} Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
    )
}
