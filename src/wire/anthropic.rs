//! Anthropic Messages ↔ canonical: a client's request decoded (when its route leads elsewhere),
//! a canonical request encoded for an Anthropic upstream, an upstream SSE stream decoded into
//! events, and events encoded as the SSE stream a client such as Claude Code reads (§1.5).

use super::{
    bad, kind_of, object_with_model, opt_bool, opt_f64, opt_str, opt_u32, stop_list, Object, Text,
    ATTRIBUTION_PREFIX,
};
use crate::canonical::{
    foreign_origin, sanitize_id, Block, Delta, Event, ImageSource, Message, Request, Response,
    Role, StartBlock, StopReason, StreamFault, Thinking, Tool, ToolChoice, Usage,
};
use crate::error::{FailureKind, GatewayError};
use crate::sse::Frame;
use bytes::{BufMut, BytesMut};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;

/// Decodes a client's Messages request.
pub fn decode_request(v: &Value) -> Result<Request, GatewayError> {
    let (obj, model) = object_with_model(v)?;
    let mut r = Request {
        model,
        max_tokens: opt_u32(v, "max_tokens", "body")?,
        temperature: opt_f64(v, "temperature", "body")?,
        top_p: opt_f64(v, "top_p", "body")?,
        top_k: opt_u32(v, "top_k", "body")?,
        stop: stop_list(obj.get("stop_sequences"), "body.stop_sequences")?,
        stream: opt_bool(v, "stream", "body")?.unwrap_or(false),
        user: v
            .pointer("/metadata/user_id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        ..Request::default()
    };
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => push_system(&mut r.system, s),
        Some(Value::Array(blocks)) => {
            for (i, b) in blocks.iter().enumerate() {
                match b.get("text").and_then(Value::as_str) {
                    Some(t) => push_system(&mut r.system, t),
                    None => return Err(bad(&format!("body.system[{i}]"), "expected a text block")),
                }
            }
        }
        Some(other) => {
            return Err(bad(
                "body.system",
                format!(
                    "expected a string or an array of text blocks, got {}",
                    kind_of(other)
                ),
            ))
        }
    }
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("body.messages", "is required and must be an array"))?;
    for (i, m) in messages.iter().enumerate() {
        let path = format!("body.messages[{i}]");
        let role = match m.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("system") => Role::System,
            other => {
                return Err(bad(
                    &format!("{path}.role"),
                    format!("expected \"user\", \"assistant\" or \"system\", got {other:?}"),
                ))
            }
        };
        let content = match m.get("content") {
            Some(Value::String(s)) => vec![Block::Text(s.clone())],
            Some(Value::Array(blocks)) => {
                let mut out = Vec::with_capacity(blocks.len());
                for (j, b) in blocks.iter().enumerate() {
                    if let Some(b) = decode_block(b, &format!("{path}.content[{j}]"))? {
                        out.push(b);
                    }
                }
                out
            }
            _ => {
                return Err(bad(
                    &format!("{path}.content"),
                    "expected a string or an array of content blocks",
                ))
            }
        };
        r.messages.push(Message { role, content });
    }
    if let Some(tools) = obj.get("tools").and_then(Value::as_array) {
        for (i, t) in tools.iter().enumerate() {
            // Server tools (web search, code execution) carry a `type` and run at Anthropic;
            // no other upstream can run them.
            if t.get("type")
                .and_then(Value::as_str)
                .is_some_and(|ty| ty != "custom")
            {
                tracing::debug!(tool = ?t.get("name"), "dropping an Anthropic server tool toward another provider");
                continue;
            }
            let name = opt_str(t, "name", &format!("body.tools[{i}]"))?
                .ok_or_else(|| bad(&format!("body.tools[{i}].name"), "is required"))?;
            r.tools.push(Tool {
                name,
                description: opt_str(t, "description", &format!("body.tools[{i}]"))?,
                schema: t
                    .get("input_schema")
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object"})),
            });
        }
    }
    if let Some(tc) = obj.get("tool_choice").filter(|v| !v.is_null()) {
        r.tool_choice = Some(match tc.get("type").and_then(Value::as_str) {
            Some("auto") => ToolChoice::Auto,
            Some("any") => ToolChoice::Any,
            Some("none") => ToolChoice::None,
            Some("tool") => {
                ToolChoice::Tool(opt_str(tc, "name", "body.tool_choice")?.ok_or_else(|| {
                    bad("body.tool_choice.name", "is required with type \"tool\"")
                })?)
            }
            other => {
                return Err(bad(
                    "body.tool_choice.type",
                    format!("expected auto, any, tool or none, got {other:?}"),
                ))
            }
        });
        if tc.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
            r.parallel_tool_calls = Some(false);
        }
    }
    if let Some(t) = obj.get("thinking").filter(|v| !v.is_null()) {
        r.thinking = match t.get("type").and_then(Value::as_str) {
            Some("enabled") => Some(Thinking::Enabled {
                budget: opt_u32(t, "budget_tokens", "body.thinking")?.unwrap_or(4096),
            }),
            Some("adaptive") => Some(Thinking::Adaptive),
            _ => None,
        };
    }
    if let Some(e) = v.pointer("/output_config/effort").and_then(Value::as_str) {
        r.reasoning_effort = Some(e.to_owned());
    }
    Ok(r)
}

fn push_system(system: &mut Vec<String>, text: &str) {
    if !text.trim_start().starts_with(ATTRIBUTION_PREFIX) {
        system.push(text.to_owned());
    }
}

/// One Anthropic content block; `None` for block types no other provider can take (server tool
/// blocks, search results without text), which are dropped, never a crash.
pub(crate) fn decode_block(b: &Value, path: &str) -> Result<Option<Block>, GatewayError> {
    let ty = b.get("type").and_then(Value::as_str).unwrap_or("");
    Ok(Some(match ty {
        "text" => Block::Text(opt_str(b, "text", path)?.unwrap_or_default()),
        "image" => Block::Image(decode_image_source(
            b.get("source"),
            &format!("{path}.source"),
        )?),
        "document" => Block::Document(b.clone()),
        "tool_use" => Block::ToolUse {
            id: opt_str(b, "id", path)?.ok_or_else(|| bad(&format!("{path}.id"), "is required"))?,
            name: opt_str(b, "name", path)?
                .ok_or_else(|| bad(&format!("{path}.name"), "is required"))?,
            input: b.get("input").cloned().unwrap_or_else(|| json!({})),
        },
        "tool_result" => {
            let content = match b.get("content") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::String(s)) => vec![Block::Text(s.clone())],
                Some(Value::Array(items)) => {
                    let mut out = Vec::new();
                    for (k, item) in items.iter().enumerate() {
                        if let Some(blk @ (Block::Text(_) | Block::Image(_) | Block::Document(_))) =
                            decode_block(item, &format!("{path}.content[{k}]"))?
                        {
                            out.push(blk)
                        }
                    }
                    out
                }
                Some(other) => {
                    return Err(bad(
                        &format!("{path}.content"),
                        format!("expected a string or an array, got {}", kind_of(other)),
                    ))
                }
            };
            Block::ToolResult {
                tool_use_id: opt_str(b, "tool_use_id", path)?
                    .ok_or_else(|| bad(&format!("{path}.tool_use_id"), "is required"))?,
                content,
                is_error: opt_bool(b, "is_error", path)?.unwrap_or(false),
            }
        }
        "thinking" => Block::Thinking {
            thinking: opt_str(b, "thinking", path)?.unwrap_or_default(),
            signature: opt_str(b, "signature", path)?.unwrap_or_default(),
        },
        "redacted_thinking" => {
            Block::RedactedThinking(opt_str(b, "data", path)?.unwrap_or_default())
        }
        other => {
            tracing::debug!(
                block_type = other,
                "dropping a content block type other providers cannot take"
            );
            return Ok(None);
        }
    }))
}

fn decode_image_source(src: Option<&Value>, path: &str) -> Result<ImageSource, GatewayError> {
    let src = src.ok_or_else(|| bad(path, "is required"))?;
    match src.get("type").and_then(Value::as_str) {
        Some("base64") => Ok(ImageSource::Base64 {
            media_type: opt_str(src, "media_type", path)?.unwrap_or_else(|| "image/png".into()),
            data: opt_str(src, "data", path)?.ok_or_else(|| bad(&format!("{path}.data"), "is required"))?,
        }),
        Some("url") => Ok(ImageSource::Url(
            opt_str(src, "url", path)?.ok_or_else(|| bad(&format!("{path}.url"), "is required"))?,
        )),
        other => Err(bad(
            &format!("{path}.type"),
            format!("image source {other:?} cannot be sent to a non-Anthropic provider; send the image as base64 or a URL"),
        )),
    }
}

/// A canonical block as Anthropic JSON; `None` for blocks Anthropic must not get (thinking
/// produced by another provider: its signature would fail verification).
pub(crate) fn encode_block(b: &Block) -> Option<Value> {
    Some(match b {
        Block::Text(t) => json!({"type": "text", "text": t}),
        Block::Image(ImageSource::Base64 { media_type, data }) => {
            json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}})
        }
        Block::Image(ImageSource::Url(u)) => {
            json!({"type": "image", "source": {"type": "url", "url": u}})
        }
        Block::Document(raw) => raw.clone(),
        Block::ToolUse { id, name, input } => {
            json!({"type": "tool_use", "id": sanitize_id(id), "name": name, "input": input})
        }
        Block::ToolResult {
            tool_use_id,
            content,
            is_error,
        } => {
            let content: Vec<Value> = content.iter().filter_map(encode_block).collect();
            let mut v = json!({"type": "tool_result", "tool_use_id": sanitize_id(tool_use_id), "content": content});
            if *is_error {
                v["is_error"] = json!(true);
            }
            v
        }
        Block::Thinking {
            thinking,
            signature,
        } => {
            if signature.is_empty() || foreign_origin(signature).is_some() {
                return None;
            }
            json!({"type": "thinking", "thinking": thinking, "signature": signature})
        }
        Block::RedactedThinking(d) => json!({"type": "redacted_thinking", "data": d}),
    })
}

/// The request for an Anthropic upstream (always streamed: a non-streaming client gets the
/// collected stream).
pub fn encode_request(r: &Request, model: &str, max_tokens: u32) -> Value {
    let mut messages: Vec<Value> = Vec::new();
    let mut last_role = None;
    for m in &r.messages {
        let blocks: Vec<Value> = m.content.iter().filter_map(encode_block).collect();
        if blocks.is_empty() {
            continue;
        }
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        };
        // protocol.md §3.1: merge consecutive same-role messages.
        if last_role == Some(role) {
            if let Some(Value::Array(prev)) = messages.last_mut().and_then(|p| p.get_mut("content"))
            {
                prev.extend(blocks);
                continue;
            }
        }
        last_role = Some(role);
        messages.push(json!({"role": role, "content": blocks}));
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("max_tokens".into(), json!(max_tokens));
    if !r.system.is_empty() {
        let blocks: Vec<Value> = r
            .system
            .iter()
            .map(|t| json!({"type": "text", "text": t}))
            .collect();
        body.insert("system".into(), Value::Array(blocks));
    }
    body.insert("messages".into(), Value::Array(messages));
    body.insert("stream".into(), json!(true));
    let thinking_budget = match r.thinking {
        Some(Thinking::Enabled { budget }) => Some(budget),
        Some(Thinking::Adaptive) => Some(max_tokens / 2),
        None => None,
    }
    .map(|b| b.min(max_tokens.saturating_sub(1)))
    .filter(|&b| b >= 1024);
    if let Some(budget) = thinking_budget {
        body.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
    } else {
        // Anthropic's range is 0–1; OpenAI clients may send up to 2. Thinking allows neither.
        if let Some(t) = r.temperature {
            body.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
        }
        if let Some(k) = r.top_k {
            body.insert("top_k".into(), json!(k));
        }
    }
    if let Some(p) = r.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if !r.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(r.stop));
    }
    if !r.tools.is_empty() {
        let tools: Vec<Value> = r
            .tools
            .iter()
            .map(|t| {
                let mut v = json!({"name": t.name, "input_schema": t.schema});
                if let Some(d) = &t.description {
                    v["description"] = json!(d);
                }
                v
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        let mut choice = match &r.tool_choice {
            None | Some(ToolChoice::Auto) => json!({"type": "auto"}),
            Some(ToolChoice::Any) => json!({"type": "any"}),
            Some(ToolChoice::None) => json!({"type": "none"}),
            Some(ToolChoice::Tool(n)) => json!({"type": "tool", "name": n}),
        };
        if r.parallel_tool_calls == Some(false) {
            choice["disable_parallel_tool_use"] = json!(true);
        }
        body.insert("tool_choice".into(), choice);
    }
    if let Some(u) = &r.user {
        body.insert("metadata".into(), json!({"user_id": u}));
    }
    Value::Object(body)
}

fn usage_of(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input: n("input_tokens"),
        cache_read: n("cache_read_input_tokens"),
        cache_creation: n("cache_creation_input_tokens"),
        output: n("output_tokens"),
    }
}

/// The HTTP status an Anthropic `error.type` stands for.
pub fn status_of_error_type(ty: &str) -> u16 {
    match ty {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// An Anthropic error body's message.
pub fn error_message(body: &Value) -> Option<String> {
    body.pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// A `content_block_delta` of a known type as its readers take it: the block's index, the
/// delta's type and its text (text, thinking, a tool call's input fragment or a signature),
/// borrowed from the event where it holds no escapes.
#[derive(Debug, PartialEq)]
pub struct DeltaPiece<'a> {
    /// The block's index.
    pub index: usize,
    /// `text_delta`, `thinking_delta`, `input_json_delta` or `signature_delta`.
    pub ty: &'static str,
    /// Its text (`""` when it has none).
    pub text: Cow<'a, str>,
}

impl<'a> DeltaPiece<'a> {
    /// The piece of a delta of type `ty` with these fields, as a JSON tree reads it (a missing
    /// text is `""`). `None` for another delta type, and for a signature delta without its
    /// signature (a signature is replaced, not appended: one that is missing is the tree's to
    /// judge).
    pub(crate) fn of(
        index: usize,
        ty: &str,
        [text, thinking, signature, partial_json]: [Option<Cow<'a, str>>; 4],
    ) -> Option<DeltaPiece<'a>> {
        let (ty, text) = match ty {
            "text_delta" => ("text_delta", text),
            "thinking_delta" => ("thinking_delta", thinking),
            "signature_delta" => ("signature_delta", Some(signature?)),
            "input_json_delta" => ("input_json_delta", partial_json),
            _ => return None,
        };
        Some(DeltaPiece {
            index,
            ty,
            text: text.unwrap_or(Cow::Borrowed("")),
        })
    }
}

/// The piece of a `content_block_delta` (nearly every event of an answer) of a known type,
/// read into borrowed strings without building a JSON tree. `None` for anything else
/// (another event, another delta type, a signature delta without its signature, data that is
/// not JSON), which a caller reads as a tree.
pub(crate) fn delta_piece(data: &str) -> Option<DeltaPiece<'_>> {
    let Object(ev): Object<DeltaEvent> = serde_json::from_str(data).ok()?;
    if ev.ty.0 != "content_block_delta" {
        return None;
    }
    let Object(d) = ev.delta;
    let fields = [d.text, d.thinking, d.signature, d.partial_json].map(|t| t.map(|t| t.0));
    DeltaPiece::of(ev.index, &d.ty.0, fields)
}

/// A `content_block_delta` event, its strings borrowed from the event's data where they
/// hold no escapes.
#[derive(Deserialize)]
struct DeltaEvent<'a> {
    #[serde(rename = "type", borrow)]
    ty: Text<'a>,
    index: usize,
    #[serde(borrow)]
    delta: Object<DeltaBody<'a>>,
}

#[derive(Deserialize)]
struct DeltaBody<'a> {
    #[serde(rename = "type", borrow)]
    ty: Text<'a>,
    #[serde(borrow, default)]
    text: Option<Text<'a>>,
    #[serde(borrow, default)]
    thinking: Option<Text<'a>>,
    #[serde(borrow, default)]
    signature: Option<Text<'a>>,
    #[serde(borrow, default)]
    partial_json: Option<Text<'a>>,
}

/// Decodes an upstream Anthropic SSE stream into events.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    /// Upstream block indices of types no other client can take (server tool blocks).
    skipped: HashSet<usize>,
}

impl StreamDecoder {
    /// Decodes one frame.
    pub fn frame(&mut self, f: &Frame, out: &mut Vec<Event>) -> Result<(), StreamFault> {
        let Some(data) = &f.data else { return Ok(()) };
        if let Some(DeltaPiece { index, ty, text }) = delta_piece(data) {
            if !self.skipped.contains(&index) {
                let piece = text.into_owned();
                let delta = match ty {
                    "text_delta" => Delta::Text(piece),
                    "thinking_delta" => Delta::Thinking(piece),
                    "signature_delta" => Delta::Signature(piece),
                    _ => Delta::InputJson(piece),
                };
                out.push(Event::Delta { index, delta });
            }
            return Ok(());
        }
        self.frame_tree(data, out)
    }

    /// Decodes one event read as a JSON tree: whatever [`delta_piece`] leaves.
    fn frame_tree(&mut self, data: &str, out: &mut Vec<Event>) -> Result<(), StreamFault> {
        let v: Value = serde_json::from_str(data).map_err(|e| {
            StreamFault::malformed(format!(
                "the upstream sent an event whose data is not valid JSON ({e})"
            ))
        })?;
        let index = v.get("index").and_then(Value::as_u64).map(|i| i as usize);
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                let m = &v["message"];
                out.push(Event::Start {
                    id: m["id"].as_str().unwrap_or_default().to_owned(),
                    model: m["model"].as_str().unwrap_or_default().to_owned(),
                    usage: usage_of(&m["usage"]),
                });
            }
            "content_block_start" => {
                let index = index.ok_or_else(|| {
                    StreamFault::malformed("content_block_start without an index")
                })?;
                let b = &v["content_block"];
                let block = match b["type"].as_str().unwrap_or("") {
                    "text" => StartBlock::Text,
                    "thinking" => StartBlock::Thinking,
                    "redacted_thinking" => StartBlock::RedactedThinking(
                        b["data"].as_str().unwrap_or_default().to_owned(),
                    ),
                    "tool_use" => StartBlock::ToolUse {
                        id: b["id"].as_str().unwrap_or_default().to_owned(),
                        name: b["name"].as_str().unwrap_or_default().to_owned(),
                    },
                    _ => {
                        self.skipped.insert(index);
                        return Ok(());
                    }
                };
                out.push(Event::BlockStart { index, block });
                // A text block may start with text already in it.
                if let Some(t) = b
                    .get("text")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    out.push(Event::Delta {
                        index,
                        delta: Delta::Text(t.to_owned()),
                    });
                }
            }
            "content_block_delta" => {
                let index = index.ok_or_else(|| {
                    StreamFault::malformed("content_block_delta without an index")
                })?;
                if self.skipped.contains(&index) {
                    return Ok(());
                }
                let d = &v["delta"];
                let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
                let delta = match d["type"].as_str().unwrap_or("") {
                    "text_delta" => Delta::Text(s("text")),
                    "thinking_delta" => Delta::Thinking(s("thinking")),
                    "signature_delta" => Delta::Signature(s("signature")),
                    "input_json_delta" => Delta::InputJson(s("partial_json")),
                    _ => return Ok(()), // citations and future delta types
                };
                out.push(Event::Delta { index, delta });
            }
            "content_block_stop" => {
                let index = index
                    .ok_or_else(|| StreamFault::malformed("content_block_stop without an index"))?;
                if !self.skipped.contains(&index) {
                    out.push(Event::BlockStop { index });
                }
            }
            "message_delta" => {
                if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    out.push(Event::Finish {
                        stop_reason: StopReason::from_anthropic(r),
                        stop_sequence: v
                            .pointer("/delta/stop_sequence")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        usage: usage_of(&v["usage"]),
                    });
                }
            }
            "ping" => out.push(Event::Ping),
            "error" => {
                let ty = v
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("api_error");
                let msg = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                return Err(StreamFault {
                    kind: FailureKind::Status(status_of_error_type(ty)),
                    detail: format!("the upstream reported {ty} mid-stream: {msg}"),
                });
            }
            _ => {} // message_stop, and event types added later
        }
        Ok(())
    }
}

/// Encodes strict events as Anthropic SSE for a client.
#[derive(Debug)]
pub struct StreamEncoder {
    model: String,
}

impl StreamEncoder {
    /// An encoder that reports `model` (the name the client asked for).
    pub fn new(model: &str) -> StreamEncoder {
        StreamEncoder {
            model: model.to_owned(),
        }
    }

    fn put(out: &mut BytesMut, v: &Value) {
        let name = v["type"].as_str().unwrap_or("unknown");
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        serde_json::to_writer(out.writer(), v).expect("a JSON value always serializes");
        out.extend_from_slice(b"\n\n");
    }

    /// A `content_block_delta`, nearly every event of an answer, written as it is sent: the
    /// bytes [`StreamEncoder::put`] would write for its JSON tree (same fields, same order,
    /// same escapes), without building the tree (an allocation and a hashed key per field,
    /// on every event of every translated stream).
    fn put_delta(out: &mut BytesMut, index: usize, delta: &Delta) {
        let (ty, field, text) = match delta {
            Delta::Text(t) => ("text_delta", "text", t),
            Delta::Thinking(t) => ("thinking_delta", "thinking", t),
            Delta::Signature(s) => ("signature_delta", "signature", s),
            Delta::InputJson(p) => ("input_json_delta", "partial_json", p),
        };
        let mut w = out.writer();
        write!(
            w,
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":{index},\"delta\":{{\"type\":\"{ty}\",\"{field}\":"
        )
        .expect("writing to memory");
        serde_json::to_writer(&mut w, text).expect("a string always serializes");
        w.write_all(b"}}\n\n").expect("writing to memory");
    }

    /// Writes one event.
    pub fn event(&mut self, ev: &Event, out: &mut BytesMut) {
        let v = match ev {
            Event::Start { id, usage, .. } => json!({"type": "message_start", "message": {
                "id": message_id(id), "type": "message", "role": "assistant", "model": self.model, "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": usage_json(usage, 0)}}),
            Event::BlockStart { index, block } => {
                let b = match block {
                    StartBlock::Text => json!({"type": "text", "text": ""}),
                    StartBlock::Thinking => {
                        json!({"type": "thinking", "thinking": "", "signature": ""})
                    }
                    StartBlock::RedactedThinking(d) => {
                        json!({"type": "redacted_thinking", "data": d})
                    }
                    StartBlock::ToolUse { id, name } => {
                        json!({"type": "tool_use", "id": id, "name": name, "input": {}})
                    }
                };
                json!({"type": "content_block_start", "index": index, "content_block": b})
            }
            Event::Delta { index, delta } => return Self::put_delta(out, *index, delta),
            Event::BlockStop { index } => json!({"type": "content_block_stop", "index": index}),
            Event::Finish {
                stop_reason,
                stop_sequence,
                usage,
            } => json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason.as_anthropic(), "stop_sequence": stop_sequence},
                "usage": usage_json(usage, usage.output)}),
            Event::Ping => json!({"type": "ping"}),
        };
        Self::put(out, &v);
    }

    /// The upstream finished: `message_stop`.
    pub fn complete(&mut self, out: &mut BytesMut) {
        Self::put(out, &json!({"type": "message_stop"}));
    }
}

/// An upstream's message id in Anthropic's shape (`msg_…`).
fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_owned()
    } else {
        format!("msg_{}", id.trim_start_matches("chatcmpl-"))
    }
}

fn usage_json(u: &Usage, output: u64) -> Value {
    json!({"input_tokens": u.input, "cache_creation_input_tokens": u.cache_creation,
        "cache_read_input_tokens": u.cache_read, "output_tokens": output})
}

/// A whole answer as an Anthropic Message (§1.4).
pub fn encode_response(r: &Response, model: &str) -> Value {
    let content: Vec<Value> = r
        .content
        .iter()
        .map(|b| match b {
            // Our own thinking blocks go to the client with their (foreign) signature.
            Block::Thinking {
                thinking,
                signature,
            } => {
                json!({"type": "thinking", "thinking": thinking, "signature": signature})
            }
            other => encode_block(other).unwrap_or(Value::Null),
        })
        .collect();
    json!({"id": message_id(&r.id), "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": r.stop_reason.as_anthropic(), "stop_sequence": r.stop_sequence,
        "usage": usage_json(&r.usage, r.usage.output)})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delta read directly decodes as the tree reads it: the same events and faults, and
    /// the same state after, for deltas of every type, for events it must leave to the tree,
    /// and for every one-byte change of a text delta.
    #[test]
    fn a_delta_read_directly_decodes_as_the_tree_does() {
        let before = [
            r#"{"type":"message_start","message":{"id":"msg_1","model":"m","usage":{"input_tokens":3}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"server_tool_use","id":"s","name":"web_search"}}"#,
        ];
        let text = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a \"b\" \u00e9\n"}}"#;
        let after = [
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"more"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":2}}"#,
            r#"{"type":"message_stop"}"#,
        ];
        let mut events: Vec<String> = [
            text,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":null}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":7}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"t"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"s"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"a\""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"citations_delta","citation":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#,
            r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"x"}}"#,
            r#"{"type":"content_block_delta","index":-1,"delta":{"type":"text_delta","text":"x"}}"#,
            r#"{"type":"content_block_delta","index":0.5,"delta":{"type":"text_delta","text":"x"}}"#,
            r#"{"type":"content_block_delta","index":0,"index":1,"delta":{"type":"text_delta","text":"x"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":"x"}"#,
            // Arrays: serde's derive would read a struct's fields from one, a tree finds none.
            r#"["content_block_delta",0,{"type":"text_delta","text":"x"}]"#,
            r#"{"type":"content_block_delta","index":0,"delta":["text_delta","x"]}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ]
        .map(String::from)
        .to_vec();
        events.extend(crate::wire::one_byte_changes(text));
        crate::wire::check_direct_path::<StreamDecoder>(
            &before,
            &events,
            &after,
            StreamDecoder::frame,
            StreamDecoder::frame_tree,
            |e| delta_piece(e).is_some(),
        );
    }

    /// A delta written directly is byte for byte the delta written from its JSON tree.
    #[test]
    fn a_delta_is_written_as_its_tree_would_be() {
        let texts = [
            "",
            "w0 ",
            "quote \" backslash \\ slash / newline \n tab \t",
            "control \u{1} \u{1f} del \u{7f} é ✓ 🙂 \u{2028}",
            "{\"a\": [1, 2]}",
        ];
        for (i, t) in texts.into_iter().enumerate() {
            for delta in [
                Delta::Text(t.into()),
                Delta::Thinking(t.into()),
                Delta::Signature(t.into()),
                Delta::InputJson(t.into()),
            ] {
                let (ty, field) = match &delta {
                    Delta::Text(_) => ("text_delta", "text"),
                    Delta::Thinking(_) => ("thinking_delta", "thinking"),
                    Delta::Signature(_) => ("signature_delta", "signature"),
                    Delta::InputJson(_) => ("input_json_delta", "partial_json"),
                };
                let mut tree = BytesMut::new();
                StreamEncoder::put(
                    &mut tree,
                    &json!({"type": "content_block_delta", "index": i * 7,
                        "delta": {"type": ty, field: t}}),
                );
                let mut direct = BytesMut::new();
                StreamEncoder::new("m").event(
                    &Event::Delta {
                        index: i * 7,
                        delta,
                    },
                    &mut direct,
                );
                assert_eq!(direct, tree, "{t:?}");
            }
        }
    }

    #[test]
    fn attribution_blocks_and_server_blocks_are_dropped_foreign_thinking_never_returns() {
        let body = json!({"model": "m", "max_tokens": 10,
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1"}, {"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "web_search_tool_result", "content": []}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "understudy-foreign:openai"}, {"type": "text", "text": "yo"}]}
        ]});
        let r = decode_request(&body).unwrap();
        assert_eq!(r.system, vec!["Be brief."]);
        assert_eq!(r.messages[0].content, vec![Block::Text("hi".into())]);
        let up = encode_request(&r, "claude-x", 100);
        assert_eq!(
            up["messages"][1]["content"],
            json!([{"type": "text", "text": "yo"}])
        );
    }

    #[test]
    fn bad_fields_say_where() {
        let err =
            decode_request(&json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}))
                .unwrap_err();
        assert!(err.to_string().contains("body.messages[0].role"), "{err}");
        let err = decode_request(&json!({"model": "m", "messages": [], "temperature": "hot"}))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("body.temperature: expected a number"),
            "{err}"
        );
    }

    #[test]
    fn thinking_budget_stays_below_max_tokens_and_drops_temperature() {
        let r = Request {
            thinking: Some(Thinking::Enabled { budget: 50_000 }),
            temperature: Some(0.2),
            ..Request::default()
        };
        let up = encode_request(&r, "m", 16_000);
        assert_eq!(up["thinking"]["budget_tokens"], 15_999);
        assert!(up.get("temperature").is_none());
    }
}
