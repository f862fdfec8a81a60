//! Gemini `generateContent` ↔ canonical (provider side only): a canonical request encoded for
//! `streamGenerateContent?alt=sse`, and its stream decoded into events (protocol.md §3).
//!
//! Gemini 3 wants each `functionCall` part sent back with the `thoughtSignature` it came with.
//! Clients never see those signatures: the decoder hands them out keyed by tool-call id, the
//! provider keeps them ([`SignatureStore`]), and the encoder puts them back.

use super::{image_url, text_of};
use crate::canonical::{
    new_tool_id, Block, Delta, Event, ImageSource, Request, Role, StartBlock, StopReason,
    StreamFault, Thinking, ToolChoice, ToolNames, Usage,
};
use crate::error::FailureKind;
use crate::sse::Frame;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Gemini's function-name limit.
pub const TOOL_NAME_LIMIT: usize = 64;

/// Google's documented placeholder for a function call whose signature is unknown (a
/// conversation that began on another provider); it disables the check for that part.
pub const UNKNOWN_SIGNATURE: &str = "skip_thought_signature_validator";

/// Thought signatures by tool-call id, bounded (oldest dropped first).
#[derive(Debug, Default)]
pub struct SignatureStore {
    inner: Mutex<(HashMap<String, String>, VecDeque<String>)>,
}

impl SignatureStore {
    const CAP: usize = 4096;

    /// Remembers a signature.
    pub fn put(&self, id: String, signature: String) {
        let mut g = self.inner.lock().expect("signature store lock");
        if g.0.insert(id.clone(), signature).is_none() {
            g.1.push_back(id);
        }
        while g.1.len() > Self::CAP {
            if let Some(old) = g.1.pop_front() {
                g.0.remove(&old);
            }
        }
    }

    /// The signature for a call, if we saw it.
    pub fn get(&self, id: &str) -> Option<String> {
        self.inner
            .lock()
            .expect("signature store lock")
            .0
            .get(id)
            .cloned()
    }
}

/// Gemini takes an OpenAPI subset in `parameters`; `parametersJsonSchema` takes JSON Schema, but
/// still not `$schema` (protocol.md §3.2).
fn schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "$schema")
                .map(|(k, v)| (k.clone(), schema(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(schema).collect()),
        other => other.clone(),
    }
}

fn image_part(src: &ImageSource) -> Value {
    match src {
        ImageSource::Base64 { media_type, data } => {
            json!({"inlineData": {"mimeType": media_type, "data": data}})
        }
        ImageSource::Url(u) => {
            let mime = match u.rsplit('.').next().map(str::to_ascii_lowercase).as_deref() {
                Some("png") => "image/png",
                Some("gif") => "image/gif",
                Some("webp") => "image/webp",
                _ => "image/jpeg",
            };
            json!({"fileData": {"mimeType": mime, "fileUri": image_url(src)}})
        }
    }
}

/// Appends a turn, merged into the previous one of the same role: one content per turn, so a
/// turn's functionResponse parts travel together.
fn contents_push(contents: &mut Vec<Value>, role: &str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    if let Some(last) = contents.last_mut().filter(|c| c["role"] == role) {
        if let Some(p) = last["parts"].as_array_mut() {
            p.extend(parts);
            return;
        }
    }
    contents.push(json!({"role": role, "parts": parts}));
}

/// The request body for `streamGenerateContent`.
pub fn encode_request(
    r: &Request,
    max_tokens: Option<u32>,
    names: &ToolNames,
    signatures: &SignatureStore,
) -> Value {
    let mut contents: Vec<Value> = Vec::new();
    for m in &r.messages {
        let role = match m.role {
            Role::User | Role::System => "user",
            Role::Assistant => "model",
        };
        let mut parts = Vec::new();
        if m.role == Role::System {
            // Gemini has no system turns mid-conversation: the text goes in as marked context.
            contents_push(
                &mut contents,
                role,
                vec![
                    json!({"text": format!("<system-reminder>\n{}\n</system-reminder>", text_of(&m.content))}),
                ],
            );
            continue;
        }
        for b in &m.content {
            match b {
                Block::Text(t) if !t.is_empty() => parts.push(json!({"text": t})),
                Block::Image(src) => parts.push(image_part(src)),
                Block::Document(raw) => match raw["source"]["type"].as_str() {
                    Some("text") => parts.push(json!({"text": raw["source"]["data"]})),
                    Some("base64") => parts.push(json!({"inlineData": {"mimeType": raw["source"]["media_type"], "data": raw["source"]["data"]}})),
                    _ => {}
                },
                Block::ToolUse { id, name, input } => {
                    let sig = signatures.get(id).unwrap_or_else(|| UNKNOWN_SIGNATURE.to_owned());
                    parts.push(json!({"functionCall": {"name": names.upstream(name), "args": input}, "thoughtSignature": sig}));
                }
                Block::ToolResult { tool_use_id, content, is_error } => {
                    let name = r.tool_name_of(tool_use_id).unwrap_or(tool_use_id);
                    let key = if *is_error { "error" } else { "content" };
                    parts.push(json!({"functionResponse": {"name": names.upstream(name), "response": {key: text_of(content)}}}));
                    parts.extend(content.iter().filter_map(|c| match c {
                        Block::Image(src) => Some(image_part(src)),
                        _ => None,
                    }));
                }
                // Thinking from any provider stays out: Gemini's own lives in thoughtSignature.
                _ => {}
            }
        }
        contents_push(&mut contents, role, parts);
    }
    let mut body = Map::new();
    body.insert("contents".into(), Value::Array(contents));
    if !r.system.is_empty() {
        body.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": r.system.join("\n\n")}]}),
        );
    }
    if !r.tools.is_empty() {
        let decls: Vec<Value> = r.tools.iter().map(|t| {
            let mut d = json!({"name": names.upstream(&t.name), "parametersJsonSchema": schema(&t.schema)});
            if let Some(desc) = &t.description {
                d["description"] = json!(desc);
            }
            d
        }).collect();
        body.insert("tools".into(), json!([{"functionDeclarations": decls}]));
        if let Some(tc) = &r.tool_choice {
            let cfg = match tc {
                ToolChoice::Auto => json!({"mode": "AUTO"}),
                ToolChoice::Any => json!({"mode": "ANY"}),
                ToolChoice::None => json!({"mode": "NONE"}),
                ToolChoice::Tool(n) => {
                    json!({"mode": "ANY", "allowedFunctionNames": [names.upstream(n)]})
                }
            };
            body.insert("toolConfig".into(), json!({"functionCallingConfig": cfg}));
        }
    }
    let mut g = Map::new();
    if let Some(n) = max_tokens {
        g.insert("maxOutputTokens".into(), json!(n));
    }
    if let Some(t) = r.temperature {
        g.insert("temperature".into(), json!(t));
    }
    if let Some(p) = r.top_p {
        g.insert("topP".into(), json!(p));
    }
    if let Some(k) = r.top_k {
        g.insert("topK".into(), json!(k));
    }
    if !r.stop.is_empty() {
        g.insert("stopSequences".into(), json!(r.stop));
    }
    if let Some(s) = r.seed {
        g.insert("seed".into(), json!(s));
    }
    match r.thinking {
        Some(Thinking::Enabled { budget }) => {
            g.insert(
                "thinkingConfig".into(),
                json!({"includeThoughts": true, "thinkingBudget": budget}),
            );
        }
        Some(Thinking::Adaptive) => {
            g.insert("thinkingConfig".into(), json!({"includeThoughts": true}));
        }
        None => {}
    }
    if !g.is_empty() {
        body.insert("generationConfig".into(), Value::Object(g));
    }
    Value::Object(body)
}

/// The message and status of a Gemini error body (`{"error":{"code","message","status"}}`).
pub fn error_message(body: &Value) -> Option<String> {
    let e = if body.is_array() {
        &body[0]["error"]
    } else {
        &body["error"]
    };
    e.get("message").and_then(Value::as_str).map(str::to_owned)
}

/// True when a Gemini error says the prompt did not fit.
pub fn is_context_overflow(body: &Value) -> bool {
    error_message(body).is_some_and(|m| {
        let m = m.to_lowercase();
        m.contains("exceeds the maximum number of tokens")
            || (m.contains("token") && m.contains("exceed") && m.contains("input"))
    })
}

fn usage_of(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cachedContentTokenCount");
    Usage {
        input: n("promptTokenCount").saturating_sub(cached),
        cache_read: cached,
        cache_creation: 0,
        output: n("candidatesTokenCount") + n("thoughtsTokenCount"),
    }
}

/// Decodes a `streamGenerateContent?alt=sse` stream.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    started: bool,
    open: Option<(usize, bool)>,
    next: usize,
    usage: Usage,
    /// (tool id, thought signature) pairs seen, for the provider's [`SignatureStore`].
    pub signatures: Vec<(String, String)>,
}

impl StreamDecoder {
    fn close(&mut self, out: &mut Vec<Event>) {
        if let Some((index, _)) = self.open.take() {
            out.push(Event::BlockStop { index });
        }
    }

    fn block(&mut self, block: StartBlock, out: &mut Vec<Event>) -> usize {
        self.close(out);
        let index = self.next;
        self.next += 1;
        out.push(Event::BlockStart { index, block });
        index
    }

    /// Decodes one frame.
    pub fn frame(&mut self, f: &Frame, out: &mut Vec<Event>) -> Result<(), StreamFault> {
        let Some(data) = &f.data else { return Ok(()) };
        let v: Value = serde_json::from_str(data).map_err(|e| {
            StreamFault::malformed(format!(
                "the upstream sent an event that is not valid JSON ({e})"
            ))
        })?;
        if let Some(e) = v.get("error") {
            return Err(StreamFault {
                kind: FailureKind::Status(
                    e.get("code").and_then(Value::as_u64).unwrap_or(500) as u16
                ),
                detail: format!(
                    "the upstream reported an error mid-stream: {}",
                    e["message"].as_str().unwrap_or("")
                ),
            });
        }
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: v["responseId"].as_str().map_or_else(
                    || format!("msg_{:016x}", rand::random::<u64>()),
                    |s| format!("msg_{s}"),
                ),
                model: v["modelVersion"].as_str().unwrap_or_default().to_owned(),
                usage: Usage::default(),
            });
        }
        if let Some(u) = v.get("usageMetadata") {
            self.usage.merge(usage_of(u));
        }
        let cand = &v["candidates"][0];
        if let Some(parts) = cand.pointer("/content/parts").and_then(Value::as_array) {
            for p in parts {
                if let Some(fc) = p.get("functionCall") {
                    let id = fc["id"]
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .map_or_else(new_tool_id, str::to_owned);
                    if let Some(sig) = p.get("thoughtSignature").and_then(Value::as_str) {
                        self.signatures.push((id.clone(), sig.to_owned()));
                    }
                    let name = fc["name"].as_str().unwrap_or_default().to_owned();
                    let args = fc.get("args").cloned().unwrap_or_else(|| json!({}));
                    let index = self.block(StartBlock::ToolUse { id, name }, out);
                    out.push(Event::Delta {
                        index,
                        delta: Delta::InputJson(args.to_string()),
                    });
                    out.push(Event::BlockStop { index });
                    self.open = None;
                    continue;
                }
                let Some(t) = p.get("text").and_then(Value::as_str) else {
                    continue;
                };
                let thought = p.get("thought").and_then(Value::as_bool) == Some(true);
                if t.is_empty() {
                    continue;
                }
                let index = match self.open {
                    Some((i, th)) if th == thought => i,
                    _ => {
                        let i = self.block(
                            if thought {
                                StartBlock::Thinking
                            } else {
                                StartBlock::Text
                            },
                            out,
                        );
                        self.open = Some((i, thought));
                        i
                    }
                };
                out.push(Event::Delta {
                    index,
                    delta: if thought {
                        Delta::Thinking(t.to_owned())
                    } else {
                        Delta::Text(t.to_owned())
                    },
                });
            }
        }
        let reason = cand.get("finishReason").and_then(Value::as_str);
        let blocked = v
            .pointer("/promptFeedback/blockReason")
            .and_then(Value::as_str);
        if reason.is_some()
            || (blocked.is_some() && v["candidates"].as_array().is_none_or(|c| c.is_empty()))
        {
            self.close(out);
            let stop_reason = match reason.unwrap_or("SAFETY") {
                "MAX_TOKENS" => StopReason::MaxTokens,
                "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII"
                | "IMAGE_SAFETY" | "LANGUAGE" => StopReason::Refusal,
                "MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL" => {
                    return Err(StreamFault::malformed(format!(
                        "the model produced an unusable function call (finishReason {})",
                        reason.unwrap_or("")
                    )))
                }
                _ => StopReason::EndTurn,
            };
            out.push(Event::Finish {
                stop_reason,
                stop_sequence: None,
                usage: self.usage,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::{Message, Tool};

    #[test]
    fn results_carry_the_call_name_and_calls_their_signature() {
        let store = SignatureStore::default();
        store.put("toolu_1".into(), "sig-abc".into());
        let r = Request {
            messages: vec![
                Message {
                    role: Role::User,
                    content: vec![Block::Text("go".into())],
                },
                Message {
                    role: Role::Assistant,
                    content: vec![
                        Block::ToolUse {
                            id: "toolu_1".into(),
                            name: "Read".into(),
                            input: json!({"p": 1}),
                        },
                        Block::ToolUse {
                            id: "toolu_2".into(),
                            name: "Grep".into(),
                            input: json!({}),
                        },
                    ],
                },
                Message {
                    role: Role::User,
                    content: vec![
                        Block::ToolResult {
                            tool_use_id: "toolu_1".into(),
                            content: vec![Block::Text("a".into())],
                            is_error: false,
                        },
                        Block::ToolResult {
                            tool_use_id: "toolu_2".into(),
                            content: vec![Block::Text("b".into())],
                            is_error: true,
                        },
                    ],
                },
            ],
            tools: vec![Tool {
                name: "Read".into(),
                description: None,
                schema: json!({"$schema": "x", "type": "object"}),
            }],
            ..Request::default()
        };
        let body = encode_request(&r, Some(100), &ToolNames::default(), &store);
        let c = &body["contents"];
        assert_eq!(c[1]["parts"][0]["thoughtSignature"], "sig-abc");
        assert_eq!(c[1]["parts"][1]["thoughtSignature"], UNKNOWN_SIGNATURE);
        assert_eq!(c[2]["parts"][0]["functionResponse"]["name"], "Read");
        assert_eq!(
            c[2]["parts"][1]["functionResponse"]["response"]["error"],
            "b"
        );
        assert!(
            body["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]
                .get("$schema")
                .is_none()
        );
    }
}
