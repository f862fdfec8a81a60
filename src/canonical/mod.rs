//! The canonical model every translation goes through: one request shape, one content-block
//! shape, one stream-event shape. Client dialects decode into it and encode out of it; providers
//! encode it into their requests and decode their streams into its events (`crate::wire`).
//!
//! The [`Guard`] sits between a provider's decoder and a client's encoder and is the one place
//! the stream invariants live: block indices are sequential and never reused, no delta reaches a
//! block that is not open, a thinking block always gets a `signature_delta` before its stop, and
//! a stream counts as finished only when the upstream said so.
//!
//! This file holds the shapes and their small helpers (ids, tool names, [`StreamFault`]); the
//! machinery over events lives beside it: `guard.rs` ([`Guard`]), `collect.rs` ([`Collector`],
//! [`Response`], [`Delivered`]) and `splice.rs` ([`Splice`], for continuations).

use serde_json::Value;
use std::collections::HashMap;

mod collect;
mod guard;
mod splice;

pub use collect::{Collector, Delivered, Response};
pub use guard::Guard;
pub use splice::{Seam, Splice};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The user (tool results travel as user content, as in Anthropic's API).
    User,
    /// The model.
    Assistant,
    /// Instructions in the middle of the conversation (Claude Code sends its environment block
    /// as a `system` message after the first user turn).
    System,
}

/// Where an image's bytes are.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    /// Inline, base64-encoded.
    Base64 {
        /// e.g. `image/png`.
        media_type: String,
        /// The base64 text.
        data: String,
    },
    /// A URL the upstream fetches.
    Url(String),
}

/// One content block.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// Text.
    Text(String),
    /// An image.
    Image(ImageSource),
    /// A document (PDF or plain text), as Anthropic's `document` block.
    Document(Value),
    /// A call the model made.
    ToolUse {
        /// The call's id (`^[a-zA-Z0-9_-]+$` toward Anthropic, see [`sanitize_id`]).
        id: String,
        /// The tool's name as the client knows it.
        name: String,
        /// The arguments (a JSON object).
        input: Value,
    },
    /// The result of a call, sent back by the client.
    ToolResult {
        /// The id of the call it answers.
        tool_use_id: String,
        /// Text and images.
        content: Vec<Block>,
        /// The tool failed.
        is_error: bool,
    },
    /// The model's reasoning. `signature` is Anthropic's, or one of ours ([`foreign_signature`]).
    Thinking {
        /// The reasoning text.
        thinking: String,
        /// Opaque proof of origin.
        signature: String,
    },
    /// Anthropic's encrypted reasoning.
    RedactedThinking(String),
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// What it holds, in order.
    pub content: Vec<Block>,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// The client's name for it.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// JSON Schema of its input.
    pub schema: Value,
}

/// Which tools the model must or may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// Some tool must be called.
    Any,
    /// This tool must be called.
    Tool(String),
    /// No tool may be called.
    None,
}

/// The thinking the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thinking {
    /// With a token budget.
    Enabled {
        /// Tokens the model may think for.
        budget: u32,
    },
    /// The model decides how much.
    Adaptive,
}

/// A request in canonical form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    /// The client's model name (the route decides what the upstream is asked for).
    pub model: String,
    /// System prompt pieces, in order. Claude Code's attribution block is already gone.
    pub system: Vec<String>,
    /// The conversation.
    pub messages: Vec<Message>,
    /// The client's output limit, if it gave one.
    pub max_tokens: Option<u32>,
    /// Sampling temperature as the client gave it.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Top-k sampling.
    pub top_k: Option<u32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// The client wants a stream.
    pub stream: bool,
    /// Tools offered.
    pub tools: Vec<Tool>,
    /// Tool choice, if the client set one.
    pub tool_choice: Option<ToolChoice>,
    /// `false` forbids parallel tool calls.
    pub parallel_tool_calls: Option<bool>,
    /// Thinking, if asked for.
    pub thinking: Option<Thinking>,
    /// OpenAI's `reasoning_effort`, if the client sent it.
    pub reasoning_effort: Option<String>,
    /// Sampling seed.
    pub seed: Option<i64>,
    /// An end-user id for the upstream's abuse tracking.
    pub user: Option<String>,
}

impl Request {
    /// Every `tool_result` must answer a `tool_use` of an earlier assistant turn: a dangling one
    /// would be rejected upstream with a message about some other provider's format, so it is
    /// refused here with one about the client's request.
    pub fn check_tool_results(&self) -> Result<(), String> {
        let mut calls: HashMap<&str, &str> = HashMap::new();
        for (i, m) in self.messages.iter().enumerate() {
            for (j, b) in m.content.iter().enumerate() {
                match b {
                    Block::ToolUse { id, name, .. } => {
                        calls.insert(id, name);
                    }
                    Block::ToolResult { tool_use_id, .. }
                        if !calls.contains_key(tool_use_id.as_str()) =>
                    {
                        return Err(format!(
                            "messages[{i}].content[{j}]: tool_result refers to tool_use_id '{tool_use_id}', \
                             which no earlier assistant tool_use has; send the assistant turn with the call before its result"
                        ));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Appends blocks as a message, merged into the previous one when the role repeats (the
    /// tool results of one turn become one user message; protocol.md §3.1).
    pub fn push(&mut self, role: Role, content: Vec<Block>) {
        if let Some(last) = self.messages.last_mut().filter(|m| m.role == role) {
            last.content.extend(content);
        } else {
            self.messages.push(Message { role, content });
        }
    }

    /// The name of the tool a call id belongs to (Gemini needs names on results).
    pub fn tool_name_of(&self, id: &str) -> Option<&str> {
        self.messages
            .iter()
            .flat_map(|m| &m.content)
            .find_map(|b| match b {
                Block::ToolUse { id: i, name, .. } if i == id => Some(name.as_str()),
                _ => None,
            })
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A natural end.
    EndTurn,
    /// The output limit.
    MaxTokens,
    /// A stop sequence.
    StopSequence,
    /// It called tools.
    ToolUse,
    /// A long turn paused (Anthropic server tools).
    PauseTurn,
    /// The model or a filter refused.
    Refusal,
    /// The context window filled up mid-answer.
    ContextWindowExceeded,
}

impl StopReason {
    /// Anthropic's name.
    pub fn as_anthropic(self) -> &'static str {
        match self {
            StopReason::EndTurn => "end_turn",
            StopReason::MaxTokens => "max_tokens",
            StopReason::StopSequence => "stop_sequence",
            StopReason::ToolUse => "tool_use",
            StopReason::PauseTurn => "pause_turn",
            StopReason::Refusal => "refusal",
            StopReason::ContextWindowExceeded => "model_context_window_exceeded",
        }
    }

    /// From Anthropic's name (unknown names read as a natural end).
    pub fn from_anthropic(s: &str) -> StopReason {
        match s {
            "max_tokens" => StopReason::MaxTokens,
            "stop_sequence" => StopReason::StopSequence,
            "tool_use" => StopReason::ToolUse,
            "pause_turn" => StopReason::PauseTurn,
            "refusal" => StopReason::Refusal,
            "model_context_window_exceeded" => StopReason::ContextWindowExceeded,
            _ => StopReason::EndTurn,
        }
    }

    /// OpenAI's `finish_reason` (protocol.md §3.5).
    pub fn as_openai(self) -> &'static str {
        match self {
            StopReason::EndTurn | StopReason::StopSequence | StopReason::PauseTurn => "stop",
            StopReason::MaxTokens | StopReason::ContextWindowExceeded => "length",
            StopReason::ToolUse => "tool_calls",
            StopReason::Refusal => "content_filter",
        }
    }
}

/// Token counts, split the way Anthropic reports them (protocol.md §3.6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens that were neither read from nor written to a cache.
    pub input: u64,
    /// Input tokens read from a cache.
    pub cache_read: u64,
    /// Input tokens written to a cache.
    pub cache_creation: u64,
    /// Output tokens (thinking included).
    pub output: u64,
}

impl Usage {
    /// All input tokens.
    pub fn total_input(&self) -> u64 {
        self.input + self.cache_read + self.cache_creation
    }

    /// Takes every count `other` reports (non-zero), keeping the rest: upstreams report usage
    /// cumulatively and piecemeal.
    pub fn merge(&mut self, other: Usage) {
        for (mine, theirs) in [
            (&mut self.input, other.input),
            (&mut self.cache_read, other.cache_read),
            (&mut self.cache_creation, other.cache_creation),
            (&mut self.output, other.output),
        ] {
            if theirs != 0 {
                *mine = theirs;
            }
        }
    }
}

/// The kind of block a `BlockStart` opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartBlock {
    /// Text.
    Text,
    /// Thinking.
    Thinking,
    /// Redacted thinking, whole.
    RedactedThinking(String),
    /// A tool call.
    ToolUse {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
    },
}

/// A piece of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// Text.
    Text(String),
    /// Reasoning text.
    Thinking(String),
    /// The thinking block's signature.
    Signature(String),
    /// A fragment of a tool call's arguments (JSON text, parsed only at the block's stop).
    InputJson(String),
}

/// One stream event. Decoders may emit them loosely (upstream indices, missing signatures); the
/// [`Guard`] makes them strict before an encoder sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The message began.
    Start {
        /// The upstream's message id.
        id: String,
        /// The model that answers.
        model: String,
        /// Input usage known at the start.
        usage: Usage,
    },
    /// A block opened.
    BlockStart {
        /// Its index.
        index: usize,
        /// What it is.
        block: StartBlock,
    },
    /// A block grew.
    Delta {
        /// The block's index.
        index: usize,
        /// The piece.
        delta: Delta,
    },
    /// A block closed.
    BlockStop {
        /// Its index.
        index: usize,
    },
    /// The model finished: the upstream's completion signal.
    Finish {
        /// Why.
        stop_reason: StopReason,
        /// Which stop sequence, if one.
        stop_sequence: Option<String>,
        /// Cumulative usage.
        usage: Usage,
    },
    /// Keep-alive.
    Ping,
}

/// The prefix of signatures we give thinking blocks that did not come from Anthropic. Such
/// blocks are never sent to Anthropic (their signatures would fail verification); they go back
/// as reasoning only to the provider named in the signature.
pub const FOREIGN_SIGNATURE_PREFIX: &str = "understudy-foreign:";

/// The signature for a thinking block produced by `provider` (not Anthropic).
pub fn foreign_signature(provider: &str) -> String {
    format!("{FOREIGN_SIGNATURE_PREFIX}{provider}")
}

/// The provider that produced a thinking block, when it was not Anthropic.
pub fn foreign_origin(signature: &str) -> Option<&str> {
    signature.strip_prefix(FOREIGN_SIGNATURE_PREFIX)
}

/// A tool-call id safe for every API (`^[a-zA-Z0-9_-]+$`, at most 64 characters). Ids already
/// in that shape are kept; others get their bad characters replaced and a hash of the original
/// appended, so the mapping is deterministic (a call and its result map to the same id) and two
/// different ids never collide.
pub fn sanitize_id(id: &str) -> String {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !id.is_empty() && id.len() <= 64 && id.chars().all(ok) {
        return id.to_owned();
    }
    if id.is_empty() {
        return new_tool_id();
    }
    let clean: String = id
        .chars()
        .map(|c| if ok(c) { c } else { '_' })
        .take(40)
        .collect();
    format!("{clean}_{:08x}", fnv1a(id.as_bytes()) as u32)
}

/// A fresh id for a call the upstream gave none (Gemini, Ollama).
pub fn new_tool_id() -> String {
    format!("toolu_{:024x}", rand::random::<u128>() >> 32)
}

/// 64-bit FNV-1a: a stable, dependency-free hash for ids and tool names.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Tool names as an upstream with a name limit sees them, and the way back. OpenAI allows
/// `^[a-zA-Z0-9_-]{1,64}$`; MCP tool names can be longer or hold other characters. A name that
/// does not fit is shortened deterministically (a prefix plus a hash) and mapped back on the
/// answer, so the client sees only its own names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolNames {
    to_upstream: HashMap<String, String>,
    to_client: HashMap<String, String>,
}

impl ToolNames {
    /// The mapping for these tools under a `max`-character limit.
    pub fn new(tools: &[Tool], max: usize) -> ToolNames {
        let mut names = ToolNames::default();
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        for t in tools {
            if t.name.len() <= max && !t.name.is_empty() && t.name.chars().all(ok) {
                continue;
            }
            let hash = format!("_{:08x}", fnv1a(t.name.as_bytes()) as u32);
            let prefix: String = t
                .name
                .chars()
                .map(|c| if ok(c) { c } else { '_' })
                .take(max.saturating_sub(hash.len()))
                .collect();
            let short = format!("{prefix}{hash}");
            names.to_client.insert(short.clone(), t.name.clone());
            names.to_upstream.insert(t.name.clone(), short);
        }
        names
    }

    /// The name the upstream sees.
    pub fn upstream<'a>(&'a self, client: &'a str) -> &'a str {
        self.to_upstream.get(client).map_or(client, String::as_str)
    }

    /// The name the client sees.
    pub fn client<'a>(&'a self, upstream: &'a str) -> &'a str {
        self.to_client
            .get(upstream)
            .map_or(upstream, String::as_str)
    }
}

/// A stream failure found by a decoder or the guard: the kind and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFault {
    /// How it failed.
    pub kind: crate::error::FailureKind,
    /// What was seen.
    pub detail: String,
}

impl StreamFault {
    /// A malformed stream.
    pub fn malformed(detail: impl Into<String>) -> StreamFault {
        StreamFault {
            kind: crate::error::FailureKind::Malformed,
            detail: detail.into(),
        }
    }

    /// A stream that ended without its completion signal.
    pub fn truncated(detail: impl Into<String>) -> StreamFault {
        StreamFault {
            kind: crate::error::FailureKind::Truncated,
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_map_deterministically() {
        assert_eq!(sanitize_id("toolu_01A-b"), "toolu_01A-b");
        let a = sanitize_id("call.1/x");
        assert_eq!(a, sanitize_id("call.1/x"));
        assert_ne!(a, sanitize_id("call_1_x"));
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        let long = "mcp__a_very_long_server_name__and_an_even_longer_tool_name_that_goes_on";
        let tools = [Tool {
            name: long.into(),
            description: None,
            schema: Value::Null,
        }];
        let names = ToolNames::new(&tools, 64);
        let short = names.upstream(long);
        assert!(short.len() <= 64);
        assert_eq!(names.client(short), long);
        assert_eq!(names.client("other"), "other");
    }
}
