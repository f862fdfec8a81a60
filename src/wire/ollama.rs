//! The Ollama API (client side only, protocol.md §4): `/api/chat` and `/api/generate` decoded
//! into canonical requests, answers encoded as NDJSON lines, and the discovery endpoints
//! (`/api/tags`, `/api/show`, `/api/version`) that VS Code, Continue and Zed call first.

use super::{
    bad, kind_of, object_with_model, opt_bool, opt_f64, opt_str, opt_u32, sniff_image, stop_list,
    text_of,
};
use crate::canonical::{
    fnv1a, Block, Delta, Event, ImageSource, Request, Response, Role, StartBlock, StopReason,
    StreamFault, Thinking, ToolChoice, Usage,
};
use crate::error::GatewayError;
use bytes::BytesMut;
use serde_json::{json, Value};
use std::collections::VecDeque;

/// The version `/api/version` reports: plain numeric semver, recent enough for clients that
/// check (VS Code's Ollama provider wants tool support).
pub const VERSION: &str = "0.11.0";

fn apply_options(r: &mut Request, v: &Value) -> Result<(), GatewayError> {
    let Some(o) = v.get("options").filter(|o| !o.is_null()) else {
        return Ok(());
    };
    r.temperature = opt_f64(o, "temperature", "body.options")?;
    r.top_p = opt_f64(o, "top_p", "body.options")?;
    r.top_k = opt_u32(o, "top_k", "body.options")?;
    r.seed = o.get("seed").and_then(Value::as_i64);
    r.stop = stop_list(o.get("stop"), "body.options.stop")?;
    // num_predict = -1 means "no limit".
    r.max_tokens = o
        .get("num_predict")
        .and_then(Value::as_i64)
        .filter(|&n| n > 0)
        .map(|n| n.min(u32::MAX as i64) as u32);
    Ok(())
}

fn images(m: &Value, path: &str) -> Result<Vec<Block>, GatewayError> {
    match m.get("images") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let data = d
                    .as_str()
                    .ok_or_else(|| bad(&format!("{path}.images[{i}]"), "expected base64 text"))?;
                Ok(Block::Image(ImageSource::Base64 {
                    media_type: sniff_image(data).to_owned(),
                    data: data.to_owned(),
                }))
            })
            .collect(),
        Some(other) => Err(bad(
            &format!("{path}.images"),
            format!("expected an array, got {}", kind_of(other)),
        )),
    }
}

/// Decodes `POST /api/chat`. Ollama streams unless told `"stream": false`. Its tool calls carry
/// no ids (newer versions may): they get ids here, and `tool` messages are matched to them by
/// `tool_call_id`, else `tool_name`, else order.
pub fn decode_chat(v: &Value) -> Result<Request, GatewayError> {
    let (_, model) = object_with_model(v)?;
    let mut r = Request {
        model,
        stream: opt_bool(v, "stream", "body")?.unwrap_or(true),
        ..Request::default()
    };
    apply_options(&mut r, v)?;
    if v.get("think")
        .is_some_and(|t| t.as_bool() == Some(true) || t.is_string())
    {
        r.thinking = Some(Thinking::Adaptive);
    }
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("body.messages", "is required and must be an array"))?;
    let mut pending: VecDeque<(String, String)> = VecDeque::new(); // (id, name) awaiting a result
    for (i, m) in messages.iter().enumerate() {
        let path = format!("body.messages[{i}]");
        let content = opt_str(m, "content", &path)?.unwrap_or_default();
        let mut blocks = Vec::new();
        if !content.is_empty() {
            blocks.push(Block::Text(content.clone()));
        }
        blocks.extend(images(m, &path)?);
        match m.get("role").and_then(Value::as_str) {
            Some("system") => r.system.push(content),
            Some("user") => r.push(Role::User, blocks),
            Some("assistant") => {
                if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                    for (k, c) in calls.iter().enumerate() {
                        let f = &c["function"];
                        let name = f["name"]
                            .as_str()
                            .ok_or_else(|| {
                                bad(
                                    &format!("{path}.tool_calls[{k}].function.name"),
                                    "is required",
                                )
                            })?
                            .to_owned();
                        let input = match &f["arguments"] {
                            Value::String(s) => {
                                serde_json::from_str(s).unwrap_or_else(|_| json!({}))
                            }
                            Value::Null => json!({}),
                            other => other.clone(),
                        };
                        let id = c["id"]
                            .as_str()
                            .map_or_else(|| format!("call_{i}_{k}"), str::to_owned);
                        pending.push_back((id.clone(), name.clone()));
                        blocks.push(Block::ToolUse { id, name, input });
                    }
                }
                r.push(Role::Assistant, blocks);
            }
            Some("tool") => {
                let by_id = m.get("tool_call_id").and_then(Value::as_str);
                let by_name = m
                    .get("tool_name")
                    .or_else(|| m.get("name"))
                    .and_then(Value::as_str);
                let pos = by_id
                    .and_then(|id| pending.iter().position(|(p, _)| p == id))
                    .or_else(|| by_name.and_then(|n| pending.iter().position(|(_, p)| p == n)))
                    .or(if pending.is_empty() { None } else { Some(0) });
                let Some(pos) = pos else {
                    return Err(bad(&path, "a tool message with no tool call before it to answer; send the assistant message with tool_calls first"));
                };
                let (id, _) = pending.remove(pos).expect("position is in range");
                r.push(
                    Role::User,
                    vec![Block::ToolResult {
                        tool_use_id: id,
                        content: blocks,
                        is_error: false,
                    }],
                );
            }
            other => {
                return Err(bad(
                    &format!("{path}.role"),
                    format!("expected system, user, assistant or tool, got {other:?}"),
                ))
            }
        }
    }
    r.tools = super::openai::decode_tools(v.get("tools"))?;
    if !r.tools.is_empty() {
        r.tool_choice = Some(ToolChoice::Auto);
    }
    Ok(r)
}

/// Decodes `POST /api/generate` (a prompt, with `suffix` for fill-in-the-middle).
pub fn decode_generate(v: &Value) -> Result<Request, GatewayError> {
    let (_, model) = object_with_model(v)?;
    let prompt = opt_str(v, "prompt", "body")?.unwrap_or_default();
    let suffix = opt_str(v, "suffix", "body")?;
    let mut r = super::openai::completion_request(model, &prompt, suffix.as_deref(), &json!({}))?;
    if let Some(s) = opt_str(v, "system", "body")? {
        r.system = vec![s];
    }
    r.stream = opt_bool(v, "stream", "body")?.unwrap_or(true);
    apply_options(&mut r, v)?;
    r.messages[0].content.extend(images(v, "body")?);
    Ok(r)
}

/// Unix seconds as RFC 3339 UTC (Ollama's `created_at`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn done_reason(r: StopReason) -> &'static str {
    match r {
        StopReason::MaxTokens | StopReason::ContextWindowExceeded => "length",
        _ => "stop",
    }
}

/// Which Ollama endpoint the lines are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/api/chat`: `message` objects.
    Chat,
    /// `/api/generate`: `response` text.
    Generate,
}

/// Encodes strict events as NDJSON lines.
#[derive(Debug)]
pub struct Encoder {
    endpoint: Endpoint,
    model: String,
    created_at: String,
    tool: Option<(String, String, String)>,
    finish: Option<(StopReason, Usage)>,
}

impl Encoder {
    /// An encoder for `endpoint`, reporting `model`, created at `created` (Unix seconds).
    pub fn new(endpoint: Endpoint, model: &str, created: u64) -> Encoder {
        Encoder {
            endpoint,
            model: model.to_owned(),
            created_at: rfc3339(created),
            tool: None,
            finish: None,
        }
    }

    fn line(&self, out: &mut BytesMut, mut v: Value) {
        v["model"] = json!(self.model);
        v["created_at"] = json!(self.created_at);
        out.extend_from_slice(v.to_string().as_bytes());
        out.extend_from_slice(b"\n");
    }

    fn piece(&self, out: &mut BytesMut, text: &str, thinking: bool) {
        let v = match (self.endpoint, thinking) {
            (Endpoint::Chat, false) => {
                json!({"message": {"role": "assistant", "content": text}, "done": false})
            }
            (Endpoint::Chat, true) => {
                json!({"message": {"role": "assistant", "content": "", "thinking": text}, "done": false})
            }
            (Endpoint::Generate, false) => json!({"response": text, "done": false}),
            (Endpoint::Generate, true) => json!({"response": "", "thinking": text, "done": false}),
        };
        self.line(out, v);
    }

    /// Writes one event. A tool call goes out whole, as Ollama's clients expect, once its
    /// arguments parse.
    pub fn event(&mut self, ev: &Event, out: &mut BytesMut) -> Result<(), StreamFault> {
        match ev {
            Event::BlockStart {
                block: StartBlock::ToolUse { id, name },
                ..
            } => self.tool = Some((id.clone(), name.clone(), String::new())),
            Event::Delta {
                delta: Delta::Text(t),
                ..
            } => self.piece(out, t, false),
            Event::Delta {
                delta: Delta::Thinking(t),
                ..
            } => self.piece(out, t, true),
            Event::Delta {
                delta: Delta::InputJson(p),
                ..
            } => {
                if let Some(t) = self.tool.as_mut() {
                    t.2.push_str(p);
                }
            }
            Event::BlockStop { .. } => {
                if let Some((id, name, args)) = self.tool.take() {
                    let args: Value =
                        serde_json::from_str(if args.trim().is_empty() { "{}" } else { &args })
                            .map_err(|e| {
                                StreamFault::malformed(format!(
                            "the arguments of the call to '{name}' are not valid JSON ({e})"
                        ))
                            })?;
                    if self.endpoint == Endpoint::Chat {
                        self.line(out, json!({"message": {"role": "assistant", "content": "",
                            "tool_calls": [{"id": id, "function": {"name": name, "arguments": args}}]}, "done": false}));
                    }
                }
            }
            Event::Finish {
                stop_reason, usage, ..
            } => self.finish = Some((*stop_reason, *usage)),
            _ => {}
        }
        Ok(())
    }

    /// The upstream finished: the `done: true` line.
    pub fn complete(&mut self, out: &mut BytesMut) {
        let (reason, usage) = self
            .finish
            .unwrap_or((StopReason::EndTurn, Usage::default()));
        let mut v = final_counts(reason, &usage);
        match self.endpoint {
            Endpoint::Chat => v["message"] = json!({"role": "assistant", "content": ""}),
            Endpoint::Generate => v["response"] = json!(""),
        }
        self.line(out, v);
    }
}

fn final_counts(reason: StopReason, usage: &Usage) -> Value {
    json!({"done": true, "done_reason": done_reason(reason), "total_duration": 0, "load_duration": 0,
        "prompt_eval_count": usage.total_input(), "prompt_eval_duration": 0, "eval_count": usage.output, "eval_duration": 0})
}

/// Ollama's mid-stream error line.
pub fn error_line(message: &str) -> bytes::Bytes {
    bytes::Bytes::from(format!("{}\n", json!({"error": message})))
}

/// A whole answer as one Ollama object (`"stream": false`).
pub fn encode_response(endpoint: Endpoint, r: &Response, model: &str, created: u64) -> Value {
    let mut v = final_counts(r.stop_reason, &r.usage);
    v["model"] = json!(model);
    v["created_at"] = json!(rfc3339(created));
    let thinking = r.thinking_text();
    match endpoint {
        Endpoint::Chat => {
            let mut m = json!({"role": "assistant", "content": text_of(&r.content)});
            if !thinking.is_empty() {
                m["thinking"] = json!(thinking);
            }
            let calls: Vec<Value> = r
                .content
                .iter()
                .filter_map(|b| match b {
                    Block::ToolUse { id, name, input } => {
                        Some(json!({"id": id, "function": {"name": name, "arguments": input}}))
                    }
                    _ => None,
                })
                .collect();
            if !calls.is_empty() {
                m["tool_calls"] = Value::Array(calls);
            }
            v["message"] = m;
        }
        Endpoint::Generate => v["response"] = json!(text_of(&r.content)),
    }
    v
}

fn digest(name: &str) -> String {
    format!(
        "{:016x}{:016x}",
        fnv1a(name.as_bytes()),
        fnv1a(format!("understudy:{name}").as_bytes())
    )
}

/// `GET /api/tags`: the routed model names.
pub fn tags(ids: &[String]) -> Value {
    let models: Vec<Value> = ids.iter().map(|id| json!({"name": id, "model": id, "modified_at": "2026-01-01T00:00:00Z",
        "size": 0, "digest": digest(id),
        "details": {"parent_model": "", "format": "remote", "family": "understudy", "families": ["understudy"], "parameter_size": "", "quantization_level": ""}})).collect();
    json!({"models": models})
}

/// `POST /api/show`: what a model can do. Clients decide from `capabilities` whether to offer
/// tools (VS Code needs `"tools"`).
pub fn show(id: &str, context_length: u64) -> Value {
    json!({"modelfile": "", "parameters": "", "template": "", "license": "",
        "details": {"parent_model": "", "format": "remote", "family": "understudy", "families": ["understudy"], "parameter_size": "", "quantization_level": ""},
        "model_info": {"general.architecture": "understudy", "general.basename": id, "understudy.context_length": context_length},
        "capabilities": ["completion", "tools", "vision", "thinking"],
        "modified_at": "2026-01-01T00:00:00Z"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_messages_are_matched_by_name_then_order() {
        let body = json!({"model": "m", "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "a", "arguments": {"x": 1}}}, {"function": {"name": "b", "arguments": {}}}]},
            {"role": "tool", "tool_name": "b", "content": "B"},
            {"role": "tool", "content": "A"}]});
        let r = decode_chat(&body).unwrap();
        assert!(r.stream, "Ollama streams by default");
        let ids: Vec<&str> = r.messages[2]
            .content
            .iter()
            .map(|b| match b {
                Block::ToolResult { tool_use_id, .. } => tool_use_id.as_str(),
                _ => "",
            })
            .collect();
        assert_eq!(ids, ["call_1_1", "call_1_0"]);
        r.check_tool_results().unwrap();
    }

    #[test]
    fn an_orphan_tool_message_is_a_clear_error() {
        let err =
            decode_chat(&json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}))
                .unwrap_err();
        assert!(err.to_string().contains("no tool call before it"), "{err}");
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
