//! A whole answer rebuilt from its stream, in the dialect's own non-streaming shape. A client's
//! non-streaming request is sent upstream as a stream (so it can be judged, timed out, failed
//! over and continued as it arrives); when the stream completes, the client gets the body the
//! upstream's non-streaming answer would have been: the same fields in the same order, fields
//! we do not model kept as they came.
//!
//! Anthropic (protocol.md §1.4–1.5): the `message` of `message_start`, each block as its
//! `content_block_start` gave it with its deltas applied (`text_delta` → `text`,
//! `thinking_delta` → `thinking`, `signature_delta` → `signature`, `input_json_delta` →
//! `input` parsed at the block's stop, `citations_delta` → `citations`), then `message_delta`'s
//! `delta` fields and `usage` merged in. OpenAI (§2.3–2.4): the first chunk's fields with
//! `object: chat.completion`, each choice's deltas folded into its `message` (content, refusal,
//! reasoning, tool calls by index with their arguments joined), its `finish_reason` and
//! `logprobs`, and the usage chunk's `usage`.

use crate::sse::Frame;
use crate::wire::anthropic::DeltaPiece;
use crate::wire::{Object, Text};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Rebuilds one whole answer from its stream's events.
#[derive(Debug)]
pub enum Assembler {
    /// An Anthropic Message.
    Anthropic(AnthropicMessage),
    /// An OpenAI chat completion.
    OpenAi(ChatCompletion),
}

impl Assembler {
    /// Takes one event of the stream, read as a JSON tree (in order; events that do not parse
    /// are ignored: the inspector judges the stream, this only records it). Nearly every event
    /// of an answer is not: an Anthropic delta comes through [`Assembler::take`], already read
    /// by the inspector, and an OpenAI chunk of only text is read into borrowed strings.
    pub fn frame(&mut self, f: &Frame) {
        let Some(data) = f.data.as_deref() else {
            return;
        };
        let taken = match self {
            Assembler::Anthropic(_) => f.event.as_deref() == Some("ping"),
            Assembler::OpenAi(a) => a.text_chunk(data),
        };
        if taken {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        match self {
            Assembler::Anthropic(a) => a.event(v),
            Assembler::OpenAi(a) => a.chunk(&v),
        }
    }

    /// Takes one event of the stream with what the inspector read of it: a delta's `piece`
    /// is applied as it is, any other event is read here ([`Assembler::frame`]).
    pub fn take(&mut self, f: &Frame, piece: Option<DeltaPiece>) {
        match (self, piece) {
            (Assembler::Anthropic(a), Some(p)) => a.apply(p.index, p.ty, &p.text),
            (a, _) => a.frame(f),
        }
    }

    /// The whole answer, once the stream is complete.
    pub fn finish(self) -> Option<Value> {
        match self {
            Assembler::Anthropic(a) => a.finish(),
            Assembler::OpenAi(a) => a.finish(),
        }
    }
}

/// An Anthropic Message being rebuilt.
#[derive(Debug, Default)]
pub struct AnthropicMessage {
    message: Option<Map<String, Value>>,
    blocks: Vec<Value>,
    /// A tool call's `input` as streamed, by block index, parsed at its stop.
    partial_json: BTreeMap<usize, String>,
}

impl AnthropicMessage {
    /// One event read as a tree; what is kept of it is moved out, not copied.
    fn event(&mut self, mut v: Value) {
        let index = v["index"].as_u64().map(|i| i as usize);
        let ty = match v.get_mut("type").map(Value::take) {
            Some(Value::String(t)) => t,
            _ => String::new(),
        };
        match ty.as_str() {
            "message_start" => {
                self.message = match v.get_mut("message").map(Value::take) {
                    Some(Value::Object(m)) => Some(m),
                    _ => None,
                }
            }
            "content_block_start" => {
                let Some(i) = index else { return };
                if self.blocks.len() <= i {
                    self.blocks.resize(i + 1, Value::Null);
                }
                let block = v.get_mut("content_block").map_or(Value::Null, Value::take);
                if block.get("input").is_some() {
                    self.partial_json.insert(i, String::new());
                }
                self.blocks[i] = block;
            }
            "content_block_delta" => {
                if let Some(i) = index {
                    self.delta(i, &v["delta"]);
                }
            }
            "content_block_stop" => {
                let Some(i) = index else { return };
                if let (Some(json), Some(block)) =
                    (self.partial_json.remove(&i), self.blocks.get_mut(i))
                {
                    // An empty input streams no fragment at all.
                    let input = if json.trim().is_empty() {
                        Value::Object(Map::new())
                    } else {
                        serde_json::from_str(&json).unwrap_or(Value::String(json))
                    };
                    block["input"] = input;
                }
            }
            "message_delta" => {
                let Some(m) = self.message.as_mut() else {
                    return;
                };
                if let Some(Value::Object(delta)) = v.get_mut("delta").map(Value::take) {
                    m.extend(delta);
                }
                if let Some(Value::Object(usage)) = v.get_mut("usage").map(Value::take) {
                    let u = m
                        .entry("usage")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Some(u) = u.as_object_mut() {
                        u.extend(usage);
                    }
                }
            }
            _ => {}
        }
    }

    /// Applies one delta's text to block `i`: appended in place (an answer of n deltas
    /// costs O(n), not a copy of the text so far per delta), a signature replaced.
    fn apply(&mut self, i: usize, ty: &str, piece: &str) {
        let Some(block) = self.blocks.get_mut(i) else {
            return;
        };
        match ty {
            "text_delta" => append(block, "text", piece),
            "thinking_delta" => append(block, "thinking", piece),
            "signature_delta" => block["signature"] = Value::String(piece.to_owned()),
            "input_json_delta" => {
                if let Some(p) = self.partial_json.get_mut(&i) {
                    p.push_str(piece);
                }
            }
            _ => {}
        }
    }

    fn delta(&mut self, i: usize, d: &Value) {
        let Some(block) = self.blocks.get_mut(i) else {
            return;
        };
        let ty = d["type"].as_str().unwrap_or("");
        match ty {
            "text_delta" | "thinking_delta" | "input_json_delta" => {
                let key = match ty {
                    "text_delta" => "text",
                    "thinking_delta" => "thinking",
                    _ => "partial_json",
                };
                self.apply(i, ty, d[key].as_str().unwrap_or(""));
            }
            "signature_delta" => block["signature"] = d["signature"].clone(),
            "citations_delta" => {
                if !block["citations"].is_array() {
                    block["citations"] = Value::Array(Vec::new());
                }
                if let Some(c) = block["citations"].as_array_mut() {
                    c.push(d["citation"].clone());
                }
            }
            _ => {}
        }
    }

    fn finish(self) -> Option<Value> {
        let mut m = self.message?;
        m.insert("content".into(), Value::Array(self.blocks));
        Some(Value::Object(m))
    }
}

/// Appends `piece` to the string at `block[key]` in place (a missing or non-string field
/// becomes the piece).
fn append(block: &mut Value, key: &str, piece: &str) {
    match block.get_mut(key) {
        Some(Value::String(text)) => text.push_str(piece),
        _ => block[key] = Value::String(piece.to_owned()),
    }
}

/// An OpenAI chat completion being rebuilt.
#[derive(Debug, Default)]
pub struct ChatCompletion {
    /// The first chunk's fields but `choices` (and `usage`, taken from the usage chunk).
    head: Option<Map<String, Value>>,
    choices: BTreeMap<u64, Choice>,
    usage: Option<Value>,
}

#[derive(Debug, Default)]
struct Choice {
    /// The message's fields in the order they first arrived (role, content, reasoning…).
    message: Map<String, Value>,
    tool_calls: BTreeMap<u64, Map<String, Value>>,
    finish_reason: Value,
    logprobs: Option<Value>,
}

/// A chunk after the first whose every choice carries only a piece of text: nearly every
/// chunk of an answer, read with borrowed strings. Anything else in a choice or its delta (a
/// role, a tool call, a finish reason, logprobs, a null) and any usage is the tree's to read.
#[derive(Deserialize)]
struct TextChunk<'a> {
    #[serde(default)]
    usage: Option<IgnoredAny>,
    #[serde(borrow)]
    choices: Vec<Object<TextChoice<'a>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextChoice<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow)]
    delta: Object<TextDelta<'a>>,
    #[serde(default)]
    finish_reason: Option<IgnoredAny>,
    #[serde(default)]
    logprobs: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextDelta<'a> {
    #[serde(borrow)]
    content: Text<'a>,
}

impl ChatCompletion {
    /// Takes a chunk of only text without a JSON tree (the head is the first chunk's, read as
    /// a tree); false, having taken nothing, for any other chunk.
    fn text_chunk(&mut self, data: &str) -> bool {
        if self.head.is_none() {
            return false;
        }
        let Ok(Object(c)) = serde_json::from_str::<Object<TextChunk>>(data) else {
            return false;
        };
        let plain =
            |Object(ch): &Object<TextChoice>| ch.finish_reason.is_none() && ch.logprobs.is_none();
        if c.usage.is_some() || !c.choices.iter().all(plain) {
            return false;
        }
        for Object(ch) in c.choices {
            let choice = self.choices.entry(ch.index.unwrap_or(0)).or_default();
            choice.append("content", &ch.delta.0.content.0);
        }
        true
    }

    fn chunk(&mut self, v: &Value) {
        let Some(obj) = v.as_object() else { return };
        if self.head.is_none() {
            let mut head = obj.clone();
            head.remove("choices");
            head.remove("usage");
            head.insert("object".into(), Value::String("chat.completion".into()));
            self.head = Some(head);
        }
        if let Some(u) = obj.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(u.clone());
        }
        for c in obj
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let choice = self
                .choices
                .entry(c["index"].as_u64().unwrap_or(0))
                .or_default();
            choice.delta(&c["delta"]);
            if !c["finish_reason"].is_null() {
                choice.finish_reason = c["finish_reason"].clone();
            }
            if let Some(lp) = c.get("logprobs").filter(|l| !l.is_null()) {
                choice.logprobs(lp);
            }
        }
    }

    fn finish(self) -> Option<Value> {
        let mut out = self.head?;
        let choices: Vec<Value> = self
            .choices
            .into_iter()
            .map(|(index, c)| c.whole(index))
            .collect();
        out.insert("choices".into(), Value::Array(choices));
        if let Some(u) = self.usage {
            out.insert("usage".into(), u);
        }
        Some(Value::Object(out))
    }
}

impl Choice {
    /// Appends a piece of the text field `k` (a missing or non-string field becomes it).
    fn append(&mut self, k: &str, piece: &str) {
        match self.message.get_mut(k) {
            Some(Value::String(text)) => text.push_str(piece),
            Some(slot) => *slot = Value::String(piece.to_owned()),
            None => {
                self.message
                    .insert(k.to_owned(), Value::String(piece.to_owned()));
            }
        }
    }

    fn delta(&mut self, d: &Value) {
        let Some(d) = d.as_object() else { return };
        for (k, v) in d {
            match (k.as_str(), v) {
                (_, Value::Null) => {
                    self.message.entry(k.clone()).or_insert(Value::Null);
                }
                ("tool_calls", Value::Array(calls)) => {
                    self.message.entry(k.clone()).or_insert(Value::Null);
                    for call in calls {
                        self.tool_call(call);
                    }
                }
                // Text fields arrive in pieces: content, refusal, reasoning_content, reasoning.
                (_, Value::String(piece)) if k != "role" => self.append(k, piece),
                _ => {
                    self.message.insert(k.clone(), v.clone());
                }
            }
        }
    }

    fn tool_call(&mut self, call: &Value) {
        let entry = self
            .tool_calls
            .entry(call["index"].as_u64().unwrap_or(0))
            .or_default();
        for (k, v) in call.as_object().into_iter().flatten() {
            match k.as_str() {
                "index" => {}
                "function" => {
                    let f = entry
                        .entry("function")
                        .or_insert_with(|| Value::Object(Map::new()));
                    for (fk, fv) in v.as_object().into_iter().flatten() {
                        match (fk.as_str(), fv) {
                            ("arguments", Value::String(piece)) => append(f, "arguments", piece),
                            (_, Value::Null) => {}
                            _ => f[fk.as_str()] = fv.clone(),
                        }
                    }
                }
                _ if v.is_null() => {}
                _ => {
                    entry.insert(k.clone(), v.clone());
                }
            }
        }
    }

    fn logprobs(&mut self, lp: &Value) {
        let acc = self
            .logprobs
            .get_or_insert_with(|| serde_json::json!({"content": []}));
        for key in ["content", "refusal"] {
            if let Some(items) = lp[key].as_array() {
                if !acc[key].is_array() {
                    acc[key] = Value::Array(Vec::new());
                }
                if let Some(a) = acc[key].as_array_mut() {
                    a.extend(items.iter().cloned());
                }
            }
        }
    }

    fn whole(mut self, index: u64) -> Value {
        if !self.tool_calls.is_empty() {
            let calls = self.tool_calls.into_values().map(Value::Object).collect();
            self.message
                .insert("tool_calls".into(), Value::Array(calls));
        } else {
            self.message.remove("tool_calls");
        }
        // A whole message always says its content, null when there is none (tool calls).
        self.message.entry("content").or_insert(Value::Null);
        let mut c = Map::new();
        c.insert("index".into(), Value::from(index));
        c.insert("message".into(), Value::Object(self.message));
        c.insert("logprobs".into(), self.logprobs.unwrap_or(Value::Null));
        c.insert("finish_reason".into(), self.finish_reason);
        Value::Object(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::Splitter;
    use serde_json::json;

    /// The whole answer rebuilt from `events`: with `named` events as the relay does it (each
    /// judged by the dialect's inspector, an Anthropic delta taken as the inspector read it),
    /// without as a JSON tree each.
    fn assemble(mut a: Assembler, events: &[Value], named: bool) -> Value {
        let mut text = String::new();
        for e in events {
            if named {
                text.push_str(&format!("event: {}\n", e["type"].as_str().unwrap()));
            }
            text.push_str(&format!("data: {e}\n\n"));
        }
        let mut frames = Vec::new();
        Splitter::new().feed(text.as_bytes(), &mut frames);
        let mut inspector = match a {
            Assembler::Anthropic(_) => crate::client_api::Dialect::Anthropic.inspector(),
            Assembler::OpenAi(_) => crate::client_api::Dialect::OpenAi.inspector(),
        };
        for f in &frames {
            if named {
                let (verdict, piece) = inspector.judge(f);
                assert_eq!(verdict, crate::client_api::Verdict::Forward);
                a.take(f, piece);
            } else {
                a.frame(f);
            }
        }
        a.finish().unwrap()
    }

    #[test]
    fn an_anthropic_stream_becomes_its_whole_message() {
        let events = [
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-opus-4-5",
                "content": [], "stop_reason": null, "stop_sequence": null, "container": null,
                "usage": {"input_tokens": 10, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 7, "output_tokens": 1, "service_tier": "standard"}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me "}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "look."}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig=="}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Reading "}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "it."}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"file_path\":"}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": " \"a.rs\"}"}}),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"output_tokens": 42}}),
            json!({"type": "message_stop"}),
        ];
        let whole = assemble(Assembler::Anthropic(Default::default()), &events, true);
        let expected = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-opus-4-5",
            "content": [
                {"type": "thinking", "thinking": "Let me look.", "signature": "sig=="},
                {"type": "text", "text": "Reading it."},
                {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "a.rs"}}],
            "stop_reason": "tool_use", "stop_sequence": null, "container": null,
            "usage": {"input_tokens": 10, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 7, "output_tokens": 42, "service_tier": "standard"}});
        assert_eq!(whole, expected);
        // The same order of fields as the non-streaming answer.
        assert_eq!(
            serde_json::to_string(&whole).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
    }

    #[test]
    fn deltas_read_without_a_json_tree_give_the_same_message() {
        // Escapes (the strings cannot be borrowed), a citation (another delta: the tree), and
        // the same events each read as a tree.
        let events = [
            json!({"type": "message_start", "message": {"id": "msg_2", "type": "message", "role": "assistant", "model": "m",
                "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 1, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "", "citations": null}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "say \"hi\"\n\u{e9} "}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "citations_delta", "citation": {"type": "char_location", "cited_text": "x"}}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "done"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "Edit", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"path\": \"a\\\\b\""}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "}"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 9}}),
            json!({"type": "message_stop"}),
        ];
        let named = assemble(Assembler::Anthropic(Default::default()), &events, true);
        let unnamed = assemble(Assembler::Anthropic(Default::default()), &events, false);
        assert_eq!(named, unnamed);
        assert_eq!(
            serde_json::to_string(&named).unwrap(),
            serde_json::to_string(&unnamed).unwrap()
        );
        assert_eq!(named["content"][0]["text"], "say \"hi\"\n\u{e9} done");
        assert_eq!(named["content"][0]["citations"][0]["cited_text"], "x");
        assert_eq!(named["content"][1]["input"], json!({"path": "a\\b"}));

        // A signature that is not a string is kept as it came, by either path.
        let odd = [
            events[0].clone(),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": null}}),
            json!({"type": "content_block_stop", "index": 0}),
        ];
        let named = assemble(Assembler::Anthropic(Default::default()), &odd, true);
        assert_eq!(
            named,
            assemble(Assembler::Anthropic(Default::default()), &odd, false)
        );
        assert_eq!(named["content"][0]["signature"], Value::Null);
    }

    #[test]
    fn a_long_answer_is_rebuilt_whole() {
        // 20,000 deltas: each appended in place (a copy of the text so far per delta made
        // this quadratic).
        let n = 20_000;
        let mut events = vec![
            json!({"type": "message_start", "message": {"id": "msg_3", "type": "message", "role": "assistant", "model": "m",
                "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 1, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ];
        events.extend((0..n).map(|i| {
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": format!("w{i} ")}})
        }));
        events.push(json!({"type": "content_block_stop", "index": 0}));
        events.push(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": n}}));
        let whole = assemble(Assembler::Anthropic(Default::default()), &events, true);
        let expected: String = (0..n).map(|i| format!("w{i} ")).collect();
        assert_eq!(whole["content"][0]["text"], expected);
        assert_eq!(whole["usage"]["output_tokens"], n);
    }

    /// A whole answer rebuilt from the inspector's pieces (each delta read once) is the one
    /// rebuilt from each event's tree, for every one-byte change of a real delta of each kind
    /// and for deltas the pieces must leave to the tree; and the inspector judges a stream
    /// the same whether it reads a delta's pieces or not.
    #[test]
    fn deltas_taken_from_the_inspector_give_the_same_message() {
        use crate::client_api::anthropic::StreamInspector;
        use crate::client_api::Verdict;
        let before = [
            r#"{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","model":"m","content":[],"stop_reason":null,"usage":{"input_tokens":3,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
            r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"t","name":"Read","input":{}}}"#,
        ];
        let after = [
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_stop","index":1}"#,
            r#"{"type":"content_block_stop","index":2}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}"#,
            r#"{"type":"message_stop"}"#,
        ];
        let real = [
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi \"q\" é"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"signature_delta","signature":"c2ln"}}"#,
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"a\":1}"}}"#,
        ];
        // Leniency the inspector must keep (any value where it reads only for the assembler)
        // and deltas the assembler must read as a tree.
        let odd = [
            r#"{"type":"content_block_delta","index":0,"delta":{"type":5,"text":"x"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"signature_delta","signature":5}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"signature_delta","signature":{"a":[1]}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"signature_delta","signature":null}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"signature_delta"}}"#,
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":[1]}}"#,
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","text":"x"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":null}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta"}}"#,
            r#"{"type":"content_block_delta","index":null,"delta":{"type":"text_delta","text":"x"}}"#,
            r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"x"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"citations_delta","citation":{"cited_text":"c"}}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"future_delta","text":"x"}}"#,
            r#"{"type":"content_block_delta","index":7,"delta":{"type":"text_delta","text":"x"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":["text_delta","x"]}"#,
            r#"{"type":"content_block_delta","index":0,"delta":[null,"x",null,"text_delta",null,null]}"#,
            r#"{"type":"content_block_delta","index":0,"delta":[null,"x",null]}"#,
            r#"{"type":"content_block_delta","index":0,"delta":[null,"x",null,"text_delta"]}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","type":"text_delta","text":"x"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"signature_delta","signature":"a","signature":"b"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x","text":"y"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":5}"#,
            r#"["content_block_delta",0,null,null,{"type":"text_delta","text":"x"},null]"#,
            r#" 	["content_block_delta",0,null,null,{"type":"text_delta","text":"x"},null]"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"text":"x","type":"text_delta"},"extra":[{}]}"#,
        ];
        for e in &odd[..7] {
            let mut i = StreamInspector::default();
            assert_eq!(i.judge(&Frame::data_only(e)).0, Verdict::Forward, "{e}");
        }
        let mut events: Vec<String> = real
            .iter()
            .flat_map(|e| crate::wire::one_byte_changes(e))
            .collect();
        events.extend(odd.iter().map(|e| e.to_string()));
        let run = |event: &str, pieces: bool| {
            let mut i = StreamInspector::default();
            let mut a = Assembler::Anthropic(Default::default());
            let mut verdicts = Vec::new();
            let mut taken = false;
            for e in before.iter().copied().chain([event]).chain(after) {
                let named = Frame::named("content_block_delta", e);
                // The inspector as it judges a forwarded stream, and the assembler reading
                // the event as a tree (no event name), against the two sharing one reading.
                let (verdict, piece) = match pieces {
                    true => i.judge(&named),
                    false => (i.frame(&named), None),
                };
                if verdict == Verdict::Forward {
                    if pieces {
                        taken |= piece.is_some();
                        a.take(&named, piece);
                    } else {
                        a.frame(&Frame::data_only(e));
                    }
                }
                verdicts.push(verdict);
            }
            ((verdicts, format!("{i:?}"), a.finish()), taken)
        };
        let mut taken = 0;
        for e in &events {
            let (with, took) = run(e, true);
            assert_eq!(with, run(e, false).0, "{e}");
            taken += usize::from(took);
        }
        assert!(taken > 100, "{taken}");
    }

    /// A chunk of only text read without a tree gives the completion its tree gives, for
    /// every one-byte change of real chunks and for chunks it must leave to the tree.
    #[test]
    fn openai_text_chunks_read_without_a_tree_give_the_same_completion() {
        let head = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#;
        let after = [
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
            "[DONE]",
        ];
        let real = [
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":"Hi \"q\" é"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b\n"}}]}"#,
        ];
        let odd = [
            r#"{"choices":[{"index":0,"delta":{"content":"a"}}],"usage":{"total_tokens":1}}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"}}],"usage":null}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"length"}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"logprobs":{"content":[]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":null}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"a"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"refusal":"no"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a","refusal":"no"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a","role":"tool"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a","reasoning_content":"r"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a","content":"b"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}"#,
            r#"{"choices":[{"index":"1","delta":{"content":"a"}}]}"#,
            r#"{"choices":[{"delta":{"content":"a"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"extra":1}]}"#,
            r#"{"choices":[{"index":0,"index":1,"delta":{"content":"a"}}]}"#,
            r#"{"choices":{"index":0,"delta":{"content":"a"}}}"#,
            r#"{"choices":[]}"#,
            r#"{"choices":[[0,{"content":"a"},null,null]]}"#,
            r#"{"choices":[{"index":0,"delta":["a"]}]}"#,
            r#"[[{"index":0,"delta":{"content":"a"}}]]"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"}}],"choices":[]}"#,
            r#"{"error":{"message":"x"},"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
        ];
        let mut events: Vec<String> = real
            .iter()
            .flat_map(|e| crate::wire::one_byte_changes(e))
            .collect();
        events.extend(real.iter().chain(&odd).map(|e| e.to_string()));
        let run = |event: &str, direct: bool| {
            let mut a = Assembler::OpenAi(Default::default());
            for e in [head, event].into_iter().chain(after) {
                if direct {
                    a.frame(&Frame::data_only(e));
                } else if let (Ok(v), Assembler::OpenAi(c)) =
                    (serde_json::from_str::<Value>(e), &mut a)
                {
                    c.chunk(&v);
                }
            }
            a.finish()
        };
        let mut taken = 0;
        for e in &events {
            assert_eq!(run(e, true), run(e, false), "{e}");
            let mut probe = ChatCompletion {
                head: Some(Map::new()),
                ..Default::default()
            };
            taken += usize::from(probe.text_chunk(e));
        }
        assert!(taken > 100, "{taken}");
    }

    #[test]
    fn an_openai_stream_becomes_its_whole_completion() {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "gpt-5",
                "system_fingerprint": "fp_1", "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        };
        let events = [
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Reading "}), Value::Null),
            chunk(json!({"content": "it."}), Value::Null),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "Read", "arguments": ""}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"file_path\": \"a.rs\"}"}}]}),
                Value::Null,
            ),
            chunk(json!({}), json!("tool_calls")),
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "gpt-5",
                "system_fingerprint": "fp_1", "choices": [],
                "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29, "prompt_tokens_details": {"cached_tokens": 16}}}),
        ];
        let whole = assemble(Assembler::OpenAi(Default::default()), &events, false);
        let expected = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "gpt-5",
            "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Reading it.",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "Read", "arguments": "{\"file_path\": \"a.rs\"}"}}]},
                "logprobs": null, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29, "prompt_tokens_details": {"cached_tokens": 16}}});
        assert_eq!(whole, expected);
    }
}
