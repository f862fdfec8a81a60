//! OpenAI Chat Completions (and legacy Completions) ↔ canonical: a client's request decoded, a
//! canonical request encoded for an OpenAI-compatible upstream, an upstream chunk stream decoded
//! by the state machine of protocol.md §3.7, and events encoded as chunks for a client.

use super::{
    bad, image_from_url, image_url, kind_of, object_with_model, opt_bool, opt_f64, opt_str,
    opt_u32, stop_list, text_of, ATTRIBUTION_PREFIX,
};
use super::{Object, Text};
use crate::canonical::{
    foreign_origin, new_tool_id, Block, Delta, Event, Message, Request, Response, Role, StartBlock,
    StopReason, StreamFault, Tool, ToolChoice, ToolNames, Usage,
};
use crate::error::{FailureKind, GatewayError};
use crate::sse::Frame;
use bytes::BytesMut;
use serde::de::{Deserializer, IgnoredAny};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Tool names OpenAI accepts: `^[a-zA-Z0-9_-]{1,64}$`.
pub const TOOL_NAME_LIMIT: usize = 64;

/// Decodes a client's chat request; also says whether it asked for a usage chunk.
pub fn decode_request(v: &Value) -> Result<(Request, bool), GatewayError> {
    let (obj, model) = object_with_model(v)?;
    if opt_u32(v, "n", "body")?.is_some_and(|n| n > 1) {
        return Err(bad(
            "body.n",
            "only one choice (n = 1) can be served through a translating route",
        ));
    }
    let mut r = Request {
        model,
        max_tokens: match opt_u32(v, "max_completion_tokens", "body")? {
            Some(n) => Some(n),
            None => opt_u32(v, "max_tokens", "body")?,
        },
        temperature: opt_f64(v, "temperature", "body")?,
        top_p: opt_f64(v, "top_p", "body")?,
        stop: stop_list(obj.get("stop"), "body.stop")?,
        stream: opt_bool(v, "stream", "body")?.unwrap_or(false),
        parallel_tool_calls: opt_bool(v, "parallel_tool_calls", "body")?,
        reasoning_effort: opt_str(v, "reasoning_effort", "body")?,
        seed: obj.get("seed").and_then(Value::as_i64),
        user: opt_str(v, "user", "body")?,
        ..Request::default()
    };
    let include_usage = v
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("body.messages", "is required and must be an array"))?;
    for (i, m) in messages.iter().enumerate() {
        let path = format!("body.messages[{i}]");
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        match role {
            "system" | "developer" => {
                let text = text_of(&content_blocks(
                    m.get("content"),
                    &format!("{path}.content"),
                )?);
                if !text.trim_start().starts_with(ATTRIBUTION_PREFIX) {
                    r.system.push(text);
                }
            }
            "user" => r.push(
                Role::User,
                content_blocks(m.get("content"), &format!("{path}.content"))?,
            ),
            "assistant" => {
                let mut blocks = content_blocks(m.get("content"), &format!("{path}.content"))?;
                if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                    for (k, c) in calls.iter().enumerate() {
                        let cp = format!("{path}.tool_calls[{k}]");
                        let f = c
                            .get("function")
                            .ok_or_else(|| bad(&format!("{cp}.function"), "is required"))?;
                        let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
                        let input: Value = if args.trim().is_empty() {
                            json!({})
                        } else {
                            serde_json::from_str(args).map_err(|e| {
                                bad(
                                    &format!("{cp}.function.arguments"),
                                    format!("is not valid JSON ({e})"),
                                )
                            })?
                        };
                        blocks.push(Block::ToolUse {
                            id: opt_str(c, "id", &cp)?.unwrap_or_else(new_tool_id),
                            name: opt_str(f, "name", &format!("{cp}.function"))?.ok_or_else(
                                || bad(&format!("{cp}.function.name"), "is required"),
                            )?,
                            input,
                        });
                    }
                }
                r.push(Role::Assistant, blocks);
            }
            "tool" => {
                let id = opt_str(m, "tool_call_id", &path)?
                    .ok_or_else(|| bad(&format!("{path}.tool_call_id"), "is required"))?;
                let content = content_blocks(m.get("content"), &format!("{path}.content"))?;
                r.push(
                    Role::User,
                    vec![Block::ToolResult {
                        tool_use_id: id,
                        content,
                        is_error: false,
                    }],
                );
            }
            other => {
                return Err(bad(
                    &format!("{path}.role"),
                    format!("expected system, developer, user, assistant or tool, got {other:?}"),
                ))
            }
        }
    }
    r.tools = decode_tools(obj.get("tools"))?;
    r.tool_choice = match obj.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Any,
            "none" => ToolChoice::None,
            other => {
                return Err(bad(
                    "body.tool_choice",
                    format!("expected auto, required or none, got {other:?}"),
                ))
            }
        }),
        Some(o) => Some(ToolChoice::Tool(
            o.pointer("/function/name")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| bad("body.tool_choice.function.name", "is required"))?,
        )),
    };
    Ok((r, include_usage))
}

/// Tool definitions in OpenAI's shape (`[{type: "function", function: {name, description,
/// parameters}}]`), which Ollama uses too.
pub(crate) fn decode_tools(tools: Option<&Value>) -> Result<Vec<Tool>, GatewayError> {
    let Some(tools) = tools.and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let path = format!("body.tools[{i}].function");
            let f = t.get("function").ok_or_else(|| bad(&path, "is required"))?;
            Ok(Tool {
                name: opt_str(f, "name", &path)?
                    .ok_or_else(|| bad(&format!("{path}.name"), "is required"))?,
                description: opt_str(f, "description", &path)?,
                schema: f
                    .get("parameters")
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            })
        })
        .collect()
}

/// Message content: a string, or parts (OpenAI's, or Anthropic-style blocks as Cursor sends).
fn content_blocks(c: Option<&Value>, path: &str) -> Result<Vec<Block>, GatewayError> {
    match c {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![Block::Text(s.clone())]),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                let pp = format!("{path}[{i}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") | Some("input_text") => {
                        out.push(Block::Text(opt_str(p, "text", &pp)?.unwrap_or_default()))
                    }
                    Some("image_url") => {
                        let url = p
                            .pointer("/image_url/url")
                            .and_then(Value::as_str)
                            .or_else(|| p.get("image_url").and_then(Value::as_str))
                            .ok_or_else(|| bad(&format!("{pp}.image_url.url"), "is required"))?;
                        out.push(Block::Image(image_from_url(url)));
                    }
                    _ => {
                        if let Some(b) = super::anthropic::decode_block(p, &pp)? {
                            out.push(b);
                        }
                    }
                }
            }
            Ok(out)
        }
        Some(other) => Err(bad(
            path,
            format!(
                "expected a string or an array of parts, got {}",
                kind_of(other)
            ),
        )),
    }
}

fn part(b: &Block) -> Option<Value> {
    match b {
        Block::Text(t) => Some(json!({"type": "text", "text": t})),
        Block::Image(src) => {
            Some(json!({"type": "image_url", "image_url": {"url": image_url(src)}}))
        }
        Block::Document(raw) => {
            let src = &raw["source"];
            match src["type"].as_str() {
                Some("text") => Some(json!({"type": "text", "text": src["data"]})),
                Some("base64") => Some(json!({"type": "file", "file": {
                    "filename": raw.get("title").and_then(Value::as_str).unwrap_or("document.pdf"),
                    "file_data": format!("data:{};base64,{}", src["media_type"].as_str().unwrap_or("application/pdf"), src["data"].as_str().unwrap_or(""))}})),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The request for an OpenAI-compatible upstream, streamed with a usage chunk.
pub fn encode_request(
    r: &Request,
    model: &str,
    max_tokens: Option<u32>,
    names: &ToolNames,
    provider: &str,
) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert(
        "messages".into(),
        Value::Array(encode_messages(r, names, provider)),
    );
    body.insert("stream".into(), json!(true));
    body.insert("stream_options".into(), json!({"include_usage": true}));
    insert_sampling(&mut body, r, model, max_tokens);
    insert_tools(&mut body, r, names);
    Value::Object(body)
}

/// The conversation as OpenAI messages: the system prompt first, then each turn.
fn encode_messages(r: &Request, names: &ToolNames, provider: &str) -> Vec<Value> {
    let mut messages = Vec::new();
    if !r.system.is_empty() {
        messages.push(json!({"role": "system", "content": r.system.join("\n\n")}));
    }
    for m in &r.messages {
        match m.role {
            Role::System => {
                messages.push(json!({"role": "system", "content": text_of(&m.content)}))
            }
            Role::User => encode_user(m, &mut messages),
            Role::Assistant => messages.push(encode_assistant(m, names, provider)),
        }
    }
    messages
}

/// A user turn: protocol.md §3.3: tool messages come first, one per result, right after the
/// assistant message with the calls; then the turn's other content, if it has any.
fn encode_user(m: &Message, messages: &mut Vec<Value>) {
    let mut rest = Vec::new();
    let mut tool_images = Vec::new();
    for b in &m.content {
        match b {
            Block::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => {
                let mut text = text_of(content);
                if *is_error {
                    text = format!("Error: {text}");
                }
                tool_images.extend(
                    content
                        .iter()
                        .filter(|c| matches!(c, Block::Image(_)))
                        .filter_map(part),
                );
                messages
                    .push(json!({"role": "tool", "tool_call_id": tool_use_id, "content": text}));
            }
            other => rest.extend(part(other)),
        }
    }
    // Tool messages take text only: images a tool returned follow as user content.
    rest.extend(tool_images);
    if rest.is_empty() {
        return;
    }
    let content = if rest.iter().all(|p| p["type"] == "text") {
        json!(rest
            .iter()
            .map(|p| p["text"].as_str().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n"))
    } else {
        Value::Array(rest)
    };
    messages.push(json!({"role": "user", "content": content}));
}

/// An assistant turn: its text, its tool calls, and the reasoning `provider` itself wrote.
fn encode_assistant(m: &Message, names: &ToolNames, provider: &str) -> Value {
    let mut msg = Map::new();
    msg.insert("role".into(), json!("assistant"));
    let text = text_of(&m.content);
    let mut calls = Vec::new();
    let mut reasoning = String::new();
    for b in &m.content {
        match b {
            Block::ToolUse { id, name, input } => calls.push(json!({"id": id, "type": "function",
                "function": {"name": names.upstream(name), "arguments": input.to_string()}})),
            // Reasoning goes back only to the provider that wrote it (DeepSeek wants
            // it replayed, protocol.md §3.9); Anthropic's signed thinking never does.
            Block::Thinking {
                thinking,
                signature,
            } if foreign_origin(signature) == Some(provider) => reasoning.push_str(thinking),
            _ => {}
        }
    }
    msg.insert(
        "content".into(),
        if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            json!(text)
        },
    );
    if !reasoning.is_empty() {
        msg.insert("reasoning_content".into(), json!(reasoning));
    }
    if !calls.is_empty() {
        msg.insert("tool_calls".into(), Value::Array(calls));
    }
    Value::Object(msg)
}

/// The output limit and the sampling fields the client set.
fn insert_sampling(
    body: &mut Map<String, Value>,
    r: &Request,
    model: &str,
    max_tokens: Option<u32>,
) {
    if let Some(n) = max_tokens {
        // OpenAI's reasoning models refuse `max_tokens`; other servers may not know the new name.
        let key = if is_reasoning_model(model) {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        body.insert(key.into(), json!(n));
    }
    if let Some(t) = r.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = r.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if !r.stop.is_empty() {
        body.insert("stop".into(), json!(r.stop));
    }
    if let Some(s) = r.seed {
        body.insert("seed".into(), json!(s));
    }
    if let Some(u) = &r.user {
        body.insert("user".into(), json!(u));
    }
    if let Some(e) = &r.reasoning_effort {
        body.insert("reasoning_effort".into(), json!(e));
    }
}

/// The tools offered, and (only with tools) the tool choice and parallel-call setting.
fn insert_tools(body: &mut Map<String, Value>, r: &Request, names: &ToolNames) {
    if r.tools.is_empty() {
        return;
    }
    let tools: Vec<Value> = r
        .tools
        .iter()
        .map(|t| {
            let mut f = json!({"name": names.upstream(&t.name), "parameters": t.schema});
            if let Some(d) = &t.description {
                f["description"] = json!(d);
            }
            json!({"type": "function", "function": f})
        })
        .collect();
    body.insert("tools".into(), Value::Array(tools));
    if let Some(tc) = &r.tool_choice {
        body.insert("tool_choice".into(), tool_choice(tc, names));
    }
    if let Some(p) = r.parallel_tool_calls {
        body.insert("parallel_tool_calls".into(), json!(p));
    }
}

/// OpenAI's `tool_choice` for a canonical one.
fn tool_choice(tc: &ToolChoice, names: &ToolNames) -> Value {
    match tc {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::Any => json!("required"),
        ToolChoice::None => json!("none"),
        ToolChoice::Tool(n) => json!({"type": "function", "function": {"name": names.upstream(n)}}),
    }
}

fn is_reasoning_model(model: &str) -> bool {
    let name = model.rsplit('/').next().unwrap_or(model);
    ["o1", "o3", "o4", "gpt-5"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// The message of an OpenAI-shaped error body.
pub fn error_message(body: &Value) -> Option<String> {
    let e = if body.is_array() {
        &body[0]["error"]
    } else {
        &body["error"]
    };
    e.get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| e.as_str().map(str::to_owned))
}

/// True when an OpenAI-shaped error says the prompt did not fit the context window.
pub fn is_context_overflow(body: &Value) -> bool {
    let e = if body.is_array() {
        &body[0]["error"]
    } else {
        &body["error"]
    };
    e.get("code").and_then(Value::as_str) == Some("context_length_exceeded")
}

fn usage_of(u: &Value) -> Usage {
    let n = |p: &str| u.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("/prompt_tokens_details/cached_tokens");
    Usage {
        input: n("/prompt_tokens").saturating_sub(cached),
        cache_read: cached,
        cache_creation: 0,
        output: n("/completion_tokens"),
    }
}

#[derive(Debug)]
struct PendingCall {
    id: String,
    name: String,
    args: String,
}

/// Decodes an upstream chunk stream (protocol.md §3.7). Tool calls are buffered and emitted
/// whole, each as one block: fragments of parallel calls may interleave, and a block must never
/// be written to after it closed.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    started: bool,
    /// The open text/thinking block: (our index, is thinking).
    open: Option<(usize, bool)>,
    next: usize,
    calls: BTreeMap<u64, PendingCall>,
    flushed: std::collections::HashSet<u64>,
    finish: Option<StopReason>,
    usage: Usage,
}

impl StreamDecoder {
    fn close(&mut self, out: &mut Vec<Event>) {
        if let Some((index, _)) = self.open.take() {
            out.push(Event::BlockStop { index });
        }
    }

    fn open(&mut self, thinking: bool, out: &mut Vec<Event>) -> usize {
        match self.open {
            Some((i, t)) if t == thinking => i,
            _ => {
                self.close(out);
                self.flush_calls(out);
                let index = self.next;
                self.next += 1;
                self.open = Some((index, thinking));
                out.push(Event::BlockStart {
                    index,
                    block: if thinking {
                        StartBlock::Thinking
                    } else {
                        StartBlock::Text
                    },
                });
                index
            }
        }
    }

    fn flush_calls(&mut self, out: &mut Vec<Event>) {
        for (k, c) in std::mem::take(&mut self.calls) {
            self.flushed.insert(k);
            let index = self.next;
            self.next += 1;
            out.push(Event::BlockStart {
                index,
                block: StartBlock::ToolUse {
                    id: c.id,
                    name: c.name,
                },
            });
            out.push(Event::Delta {
                index,
                delta: Delta::InputJson(c.args),
            });
            out.push(Event::BlockStop { index });
        }
    }

    /// Decodes one frame.
    pub fn frame(&mut self, f: &Frame, out: &mut Vec<Event>) -> Result<(), StreamFault> {
        let Some(data) = &f.data else { return Ok(()) };
        if data.trim() == "[DONE]" {
            let Some(stop_reason) = self.finish else {
                return Err(StreamFault::truncated(
                    "the upstream sent [DONE] without a finish_reason",
                ));
            };
            out.push(Event::Finish {
                stop_reason,
                stop_sequence: None,
                usage: self.usage,
            });
            return Ok(());
        }
        if self.started {
            if let Some(text) = text_chunk(data) {
                if let Some(t) = text.filter(|t| !t.is_empty()) {
                    let index = self.open(false, out);
                    out.push(Event::Delta {
                        index,
                        delta: Delta::Text(t.into_owned()),
                    });
                }
                return Ok(());
            }
        }
        self.frame_tree(data, out)
    }

    /// Decodes one chunk read as a JSON tree: whatever [`text_chunk`] leaves.
    fn frame_tree(&mut self, data: &str, out: &mut Vec<Event>) -> Result<(), StreamFault> {
        let v: Value = serde_json::from_str(data).map_err(|e| {
            StreamFault::malformed(format!(
                "the upstream sent a chunk that is not valid JSON ({e})"
            ))
        })?;
        if let Some(e) = v.get("error") {
            let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
            return Err(StreamFault {
                kind: FailureKind::Status(stream_error_status(e)),
                detail: format!("the upstream reported an error mid-stream: {msg}"),
            });
        }
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: v["id"].as_str().unwrap_or_default().to_owned(),
                model: v["model"].as_str().unwrap_or_default().to_owned(),
                usage: Usage::default(),
            });
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage.merge(usage_of(u));
        }
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
            return Ok(());
        };
        let d = &choice["delta"];
        for key in ["reasoning_content", "reasoning"] {
            if let Some(t) = d.get(key).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                let index = self.open(true, out);
                out.push(Event::Delta {
                    index,
                    delta: Delta::Thinking(t.to_owned()),
                });
                break;
            }
        }
        if let Some(t) = d
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            let index = self.open(false, out);
            out.push(Event::Delta {
                index,
                delta: Delta::Text(t.to_owned()),
            });
        }
        if let Some(calls) = d.get("tool_calls").and_then(Value::as_array) {
            self.close(out);
            for (pos, c) in calls.iter().enumerate() {
                let k = c.get("index").and_then(Value::as_u64).unwrap_or(pos as u64);
                if self.flushed.contains(&k) {
                    return Err(StreamFault::malformed(format!(
                        "the upstream sent more of tool call {k} after other content followed it"
                    )));
                }
                let f = &c["function"];
                let entry = self.calls.entry(k).or_insert_with(|| PendingCall {
                    id: String::new(),
                    name: String::new(),
                    args: String::new(),
                });
                if let Some(id) = c.get("id").and_then(Value::as_str) {
                    entry.id = id.to_owned();
                }
                if let Some(n) = f.get("name").and_then(Value::as_str) {
                    entry.name.push_str(n);
                }
                if let Some(a) = f.get("arguments").and_then(Value::as_str) {
                    entry.args.push_str(a);
                }
            }
        }
        if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
            self.close(out);
            for c in self.calls.values_mut().filter(|c| c.id.is_empty()) {
                c.id = new_tool_id();
            }
            self.flush_calls(out);
            self.finish = Some(match r {
                "stop" => StopReason::EndTurn,
                "length" => StopReason::MaxTokens,
                "tool_calls" | "function_call" => StopReason::ToolUse,
                "content_filter" => StopReason::Refusal,
                "error" => {
                    return Err(StreamFault {
                        kind: FailureKind::Status(500),
                        detail: "the upstream ended the answer with finish_reason \"error\"".into(),
                    })
                }
                _ => StopReason::EndTurn,
            });
        }
        Ok(())
    }
}

/// A chunk with nothing in it but text, read with borrowed strings: nearly every chunk of an
/// answer. As a JSON tree each field is an allocation and a hashed key (serde_json keeps key
/// order here), on every chunk of every translated stream. `Some(content)` (`None` when it
/// has none) for a chunk whose first choice has no finish reason, reasoning or tool call and
/// that carries no error or usage; `None` for any other chunk (and for one that is not
/// JSON), which [`StreamDecoder::frame_tree`] reads and judges.
fn text_chunk(data: &str) -> Option<Option<Cow<'_, str>>> {
    let Object(c): Object<TextChunk> = serde_json::from_str(data).ok()?;
    if c.error || c.usage.is_some() {
        return None;
    }
    let Some(Object(first)) = c.choices.unwrap_or_default().into_iter().next() else {
        return Some(None);
    };
    if first.finish_reason.is_some() {
        return None;
    }
    let Some(Object(d)) = first.delta else {
        return Some(None);
    };
    if d.reasoning_content || d.reasoning || d.tool_calls {
        return None;
    }
    Some(d.content.map(|t| t.0))
}

#[derive(Deserialize)]
struct TextChunk<'a> {
    #[serde(default, deserialize_with = "present")]
    error: bool,
    #[serde(default)]
    usage: Option<IgnoredAny>,
    #[serde(borrow, default)]
    choices: Option<Vec<Object<TextChoice<'a>>>>,
}

#[derive(Deserialize)]
struct TextChoice<'a> {
    #[serde(borrow, default)]
    delta: Option<Object<TextDelta<'a>>>,
    #[serde(default)]
    finish_reason: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct TextDelta<'a> {
    #[serde(borrow, default)]
    content: Option<Text<'a>>,
    #[serde(default, deserialize_with = "present")]
    reasoning_content: bool,
    #[serde(default, deserialize_with = "present")]
    reasoning: bool,
    #[serde(default, deserialize_with = "present")]
    tool_calls: bool,
}

/// The field is there, whatever its value (`null` included, as `Value::get` sees it).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

/// The status an in-stream `{"error":…}` stands for.
pub(crate) fn stream_error_status(e: &Value) -> u16 {
    if let Some(c) = e.get("code").and_then(Value::as_u64) {
        return c as u16;
    }
    let text = format!(
        "{} {}",
        e["type"].as_str().unwrap_or(""),
        e["code"].as_str().unwrap_or("")
    )
    .to_lowercase();
    if text.contains("rate_limit") {
        429
    } else if text.contains("overloaded") || text.contains("unavailable") {
        529
    } else {
        500
    }
}

/// Encodes strict events as chat completion chunks for a client.
#[derive(Debug)]
pub struct ChatEncoder {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    /// Client block index → tool call index.
    tool_index: BTreeMap<usize, usize>,
    /// Tool calls the client had before this encoder (a continuation).
    tool_offset: usize,
}

impl ChatEncoder {
    /// An encoder reporting `model`, created at `created` (Unix seconds).
    pub fn new(model: &str, created: u64, include_usage: bool) -> ChatEncoder {
        ChatEncoder {
            id: String::new(),
            model: model.to_owned(),
            created,
            include_usage,
            tool_index: BTreeMap::new(),
            tool_offset: 0,
        }
    }

    /// Continues an answer the client already has part of: no second role chunk, the same id,
    /// tool calls numbered after the `tools_sent` it has.
    pub fn resume(&mut self, id: &str, tools_sent: usize) {
        self.id = format!(
            "chatcmpl-{}",
            id.trim_start_matches("msg_")
                .trim_start_matches("chatcmpl-")
        );
        self.tool_offset = tools_sent;
    }

    fn chunk(&self, out: &mut BytesMut, delta: Value, finish: Option<&str>) {
        let c = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        out.extend_from_slice(format!("data: {c}\n\n").as_bytes());
    }

    /// Writes one event.
    pub fn event(&mut self, ev: &Event, out: &mut BytesMut) {
        match ev {
            Event::Start { id, .. } => {
                self.id = format!("chatcmpl-{}", id.trim_start_matches("msg_"));
                self.chunk(out, json!({"role": "assistant", "content": ""}), None);
            }
            Event::BlockStart {
                index,
                block: StartBlock::ToolUse { id, name },
            } => {
                let k = self.tool_offset + self.tool_index.len();
                self.tool_index.insert(*index, k);
                self.chunk(out, json!({"tool_calls": [{"index": k, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}), None);
            }
            Event::Delta { index, delta } => match delta {
                Delta::Text(t) => self.chunk(out, json!({"content": t}), None),
                Delta::Thinking(t) => self.chunk(out, json!({"reasoning_content": t}), None),
                Delta::InputJson(p) => {
                    let k = self.tool_index.get(index).copied().unwrap_or(0);
                    self.chunk(
                        out,
                        json!({"tool_calls": [{"index": k, "function": {"arguments": p}}]}),
                        None,
                    );
                }
                Delta::Signature(_) => {}
            },
            Event::Finish {
                stop_reason, usage, ..
            } => {
                self.chunk(out, json!({}), Some(stop_reason.as_openai()));
                if self.include_usage {
                    let c = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                        "choices": [], "usage": usage_json(usage)});
                    out.extend_from_slice(format!("data: {c}\n\n").as_bytes());
                }
            }
            Event::BlockStart { .. } | Event::BlockStop { .. } => {}
            Event::Ping => out.extend_from_slice(b": ping\n\n"),
        }
    }

    /// The upstream finished: `[DONE]`.
    pub fn complete(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({"prompt_tokens": u.total_input(), "completion_tokens": u.output, "total_tokens": u.total_input() + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cache_read}})
}

/// A whole answer as a `chat.completion`.
pub fn encode_response(r: &Response, model: &str, created: u64) -> Value {
    let text = text_of(&r.content);
    let reasoning = r.thinking_text();
    let calls: Vec<Value> = r.content.iter().filter_map(|b| match b {
        Block::ToolUse { id, name, input } => Some(json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}})),
        _ => None,
    }).collect();
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning);
    }
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    json!({"id": format!("chatcmpl-{}", r.id.trim_start_matches("msg_")), "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": r.stop_reason.as_openai()}],
        "usage": usage_json(&r.usage)})
}

/// Decodes a legacy `POST /v1/completions` request for a chat-only upstream: the prompt (and
/// `suffix`, for fill-in-the-middle) becomes one user turn with an instruction to answer with
/// the missing code only.
pub fn decode_completions(v: &Value) -> Result<Request, GatewayError> {
    let model = opt_str(v, "model", "body")?.ok_or_else(|| bad("body.model", "is required"))?;
    let prompt = match v.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or("").to_owned()
        }
        None => return Err(bad("body.prompt", "is required")),
        Some(_) => {
            return Err(bad(
                "body.prompt",
                "must be one string when the route translates to a chat model",
            ))
        }
    };
    let suffix = opt_str(v, "suffix", "body")?;
    completion_request(model, &prompt, suffix.as_deref(), v)
}

/// The chat request that stands in for a completion (shared with Ollama's `/api/generate`).
pub(crate) fn completion_request(
    model: String,
    prompt: &str,
    suffix: Option<&str>,
    v: &Value,
) -> Result<Request, GatewayError> {
    let (system, user) = match suffix.filter(|s| !s.is_empty()) {
        Some(s) => (
            "You complete code. The user sends the text before and after a gap, marked <PREFIX> and <SUFFIX>. \
             Answer with exactly the text that belongs in the gap: no explanation, no code fences, no repetition of the prefix or suffix.",
            format!("<PREFIX>{prompt}</PREFIX><SUFFIX>{s}</SUFFIX>"),
        ),
        None => (
            "You continue text. Answer with exactly the text that follows the user's text: no explanation, no code fences, no repetition.",
            prompt.to_owned(),
        ),
    };
    Ok(Request {
        model,
        system: vec![system.to_owned()],
        messages: vec![Message {
            role: Role::User,
            content: vec![Block::Text(user)],
        }],
        max_tokens: opt_u32(v, "max_tokens", "body")?,
        temperature: opt_f64(v, "temperature", "body")?,
        top_p: opt_f64(v, "top_p", "body")?,
        stop: stop_list(v.get("stop"), "body.stop")?,
        stream: opt_bool(v, "stream", "body")?.unwrap_or(false),
        seed: v.get("seed").and_then(Value::as_i64),
        ..Request::default()
    })
}

/// Encodes strict events as legacy `text_completion` chunks.
#[derive(Debug)]
pub struct CompletionsEncoder {
    id: String,
    model: String,
    created: u64,
}

impl CompletionsEncoder {
    /// An encoder reporting `model`.
    pub fn new(model: &str, created: u64) -> CompletionsEncoder {
        CompletionsEncoder {
            id: String::new(),
            model: model.to_owned(),
            created,
        }
    }

    /// Continues an answer the client already has part of.
    pub fn resume(&mut self, id: &str) {
        self.id = format!(
            "cmpl-{}",
            id.trim_start_matches("msg_").trim_start_matches("cmpl-")
        );
    }

    fn chunk(&self, out: &mut BytesMut, text: &str, finish: Option<&str>) {
        let c = json!({"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]});
        out.extend_from_slice(format!("data: {c}\n\n").as_bytes());
    }

    /// Writes one event (only text reaches a completion client).
    pub fn event(&mut self, ev: &Event, out: &mut BytesMut) {
        match ev {
            Event::Start { id, .. } => self.id = format!("cmpl-{}", id.trim_start_matches("msg_")),
            Event::Delta {
                delta: Delta::Text(t),
                ..
            } => self.chunk(out, t, None),
            Event::Finish { stop_reason, .. } => self.chunk(out, "", Some(stop_reason.as_openai())),
            Event::Ping => out.extend_from_slice(b": ping\n\n"),
            _ => {}
        }
    }
}

/// A whole answer as a `text_completion`.
pub fn encode_completions_response(r: &Response, model: &str, created: u64) -> Value {
    json!({"id": format!("cmpl-{}", r.id.trim_start_matches("msg_")), "object": "text_completion", "created": created, "model": model,
        "choices": [{"text": text_of(&r.content), "index": 0, "logprobs": null, "finish_reason": r.stop_reason.as_openai()}],
        "usage": usage_json(&r.usage)})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text chunk read directly decodes as the tree reads it: the same events and faults,
    /// and the same state after (the chunks that follow decode alike), for text chunks, for
    /// the chunks it must leave to the tree, and for every one-byte change of a text chunk.
    #[test]
    fn a_text_chunk_read_directly_decodes_as_the_tree_does() {
        let start = r#"{"id":"chatcmpl-1","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
        let text = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"a \"b\" \u00e9\n"},"logprobs":null,"finish_reason":null}],"usage":null}"#;
        let after = [
            r#"{"choices":[{"index":0,"delta":{"content":"more"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            "[DONE]",
        ];
        let mut chunks: Vec<String> = [
            text,
            r#"{"choices":[{"delta":{"content":""}}]}"#,
            r#"{"choices":[{"delta":{"content":null}}]}"#,
            r#"{"choices":[{"delta":null}]}"#,
            r#"{"choices":[{}]}"#,
            r#"{"choices":[]}"#,
            r#"{"choices":null}"#,
            r#"{}"#,
            r#"{"choices":[{"delta":{"content":"x"}},{"delta":{"tool_calls":[]}}]}"#,
            r#"{"choices":[{"delta":{"content":"x","reasoning_content":"r"}}]}"#,
            r#"{"choices":[{"delta":{"content":"x","reasoning":null}}]}"#,
            r#"{"choices":[{"delta":{"reasoning_content":""}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"content":"x"},"finish_reason":"length"}]}"#,
            r#"{"choices":[{"delta":{"content":"x"},"finish_reason":7}]}"#,
            r#"{"choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":5}}"#,
            r#"{"choices":[{"delta":{"content":"x"}}],"usage":3}"#,
            r#"{"choices":[{"delta":{"content":"x"}}],"error":null}"#,
            r#"{"error":{"message":"overloaded","type":"overloaded_error"}}"#,
            r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
            r#"{"choices":[{"delta":{"content":7}}]}"#,
            r#"{"choices":[{"delta":"x"}]}"#,
            r#"{"choices":[3]}"#,
            // Arrays: serde's derive would read a struct's fields from one, a tree finds none.
            r#"[]"#,
            r#"[false,null,[{"delta":{"content":"x"}}]]"#,
            r#"{"choices":[[{"content":"x"}]]}"#,
            r#"{"choices":[{"delta":["x"]}]}"#,
        ]
        .map(String::from)
        .to_vec();
        chunks.extend(crate::wire::one_byte_changes(text));
        crate::wire::check_direct_path::<StreamDecoder>(
            &[start],
            &chunks,
            &after,
            StreamDecoder::frame,
            StreamDecoder::frame_tree,
            |c| text_chunk(c).is_some(),
        );
    }

    #[test]
    fn tool_messages_become_one_user_turn_and_come_back_in_order() {
        let body = json!({"model": "m", "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "Read", "arguments": "{\"p\":1}"}},
                {"id": "call_b", "type": "function", "function": {"name": "Read", "arguments": "{\"p\":2}"}}]},
            {"role": "tool", "tool_call_id": "call_a", "content": "one"},
            {"role": "tool", "tool_call_id": "call_b", "content": "two"}
        ]});
        let (r, _) = decode_request(&body).unwrap();
        assert_eq!(r.messages.len(), 3);
        assert_eq!(r.messages[2].content.len(), 2);
        r.check_tool_results().unwrap();
        let up = encode_request(&r, "gpt-4o", Some(10), &ToolNames::default(), "openai");
        let roles: Vec<&str> = up["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "tool"]);
        assert_eq!(
            up["messages"][2]["tool_calls"][1]["function"]["arguments"],
            "{\"p\":2}"
        );
    }

    #[test]
    fn reasoning_models_get_max_completion_tokens() {
        let r = Request::default();
        assert!(
            encode_request(&r, "o3-mini", Some(5), &ToolNames::default(), "o")
                .get("max_completion_tokens")
                .is_some()
        );
        assert!(
            encode_request(&r, "qwen", Some(5), &ToolNames::default(), "o")
                .get("max_tokens")
                .is_some()
        );
    }
}
