//! The canonical model every translation goes through: one request shape, one content-block
//! shape, one stream-event shape. Client dialects decode into it and encode out of it; providers
//! encode it into their requests and decode their streams into its events (`crate::wire`).
//!
//! The [`Guard`] sits between a provider's decoder and a client's encoder and is the one place
//! the stream invariants live: block indices are sequential and never reused, no delta reaches a
//! block that is not open, a thinking block always gets a `signature_delta` before its stop, and
//! a stream counts as finished only when the upstream said so.

use serde_json::Value;
use std::collections::HashMap;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenKind {
    Text,
    Thinking,
    Redacted,
    Tool,
}

/// Makes a loose event stream strict (see the module docs).
#[derive(Debug)]
pub struct Guard {
    provider: String,
    names: ToolNames,
    started: bool,
    /// The open block: (upstream index, client index, kind, signature seen).
    open: Option<(usize, usize, OpenKind, bool)>,
    /// Upstream indices already closed.
    closed: std::collections::HashSet<usize>,
    next: usize,
    finished: bool,
    saw_tool: bool,
    /// Usage so far.
    pub usage: Usage,
}

impl Guard {
    /// A guard for a stream from `provider`, restoring tool names through `names`.
    pub fn new(provider: &str, names: ToolNames) -> Guard {
        Guard {
            provider: provider.to_owned(),
            names,
            started: false,
            open: None,
            closed: Default::default(),
            next: 0,
            finished: false,
            saw_tool: false,
            usage: Usage::default(),
        }
    }

    /// True once the upstream's completion signal passed.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// True once any content block opened (the resilience issue's commit point).
    pub fn has_content(&self) -> bool {
        self.next > 0
    }

    fn start_if_needed(&mut self, out: &mut Vec<Event>) {
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: format!("msg_understudy_{:016x}", rand::random::<u64>()),
                model: String::new(),
                usage: Usage::default(),
            });
        }
    }

    fn close_open(&mut self, out: &mut Vec<Event>) {
        if let Some((up, index, kind, signed)) = self.open.take() {
            if kind == OpenKind::Thinking && !signed {
                out.push(Event::Delta {
                    index,
                    delta: Delta::Signature(foreign_signature(&self.provider)),
                });
            }
            self.closed.insert(up);
            out.push(Event::BlockStop { index });
        }
    }

    /// Takes one loose event and appends the strict events it becomes.
    pub fn push(&mut self, ev: Event, out: &mut Vec<Event>) -> Result<(), StreamFault> {
        if self.finished {
            // Anthropic may send more than one message_delta; later usage still counts.
            if let Event::Finish { usage, .. } = ev {
                self.usage.merge(usage);
            }
            return Ok(());
        }
        match ev {
            Event::Start { id, model, usage } => {
                if !self.started {
                    self.started = true;
                    self.usage.merge(usage);
                    out.push(Event::Start { id, model, usage });
                }
            }
            Event::Ping => {
                if self.started {
                    out.push(Event::Ping);
                }
            }
            Event::BlockStart { index: up, block } => {
                self.start_if_needed(out);
                if self.closed.contains(&up) || self.open.is_some_and(|o| o.0 == up) {
                    return Err(StreamFault::malformed(format!(
                        "the upstream started content block {up} twice"
                    )));
                }
                self.close_open(out);
                let index = self.next;
                self.next += 1;
                let (kind, block) = match block {
                    StartBlock::Text => (OpenKind::Text, StartBlock::Text),
                    StartBlock::Thinking => (OpenKind::Thinking, StartBlock::Thinking),
                    StartBlock::RedactedThinking(d) => {
                        (OpenKind::Redacted, StartBlock::RedactedThinking(d))
                    }
                    StartBlock::ToolUse { id, name } => {
                        self.saw_tool = true;
                        (
                            OpenKind::Tool,
                            StartBlock::ToolUse {
                                id: sanitize_id(&id),
                                name: self.names.client(&name).to_owned(),
                            },
                        )
                    }
                };
                self.open = Some((up, index, kind, false));
                out.push(Event::BlockStart { index, block });
            }
            Event::Delta { index: up, delta } => {
                let Some((open_up, index, kind, signed)) = self.open.as_mut() else {
                    return Err(StreamFault::malformed(format!(
                        "the upstream sent a delta for content block {up}, which is not open"
                    )));
                };
                if *open_up != up {
                    return Err(StreamFault::malformed(format!(
                        "the upstream sent a delta for content block {up} while block {open_up} is open"
                    )));
                }
                let fits = matches!(
                    (&delta, *kind),
                    (Delta::Text(_), OpenKind::Text)
                        | (Delta::Thinking(_) | Delta::Signature(_), OpenKind::Thinking)
                        | (Delta::InputJson(_), OpenKind::Tool)
                );
                if !fits {
                    return Err(StreamFault::malformed(format!(
                        "the upstream sent a {delta:?} delta into a {kind:?} block"
                    )));
                }
                if matches!(delta, Delta::Signature(_)) {
                    *signed = true;
                }
                let index = *index;
                let empty = matches!(&delta, Delta::Text(t) | Delta::Thinking(t) | Delta::InputJson(t) if t.is_empty());
                if !empty {
                    out.push(Event::Delta { index, delta });
                }
            }
            Event::BlockStop { index: up } => {
                if self.open.is_some_and(|o| o.0 == up) {
                    self.close_open(out);
                }
                // A stop for a block that is not open (already closed, never started) is
                // dropped: forwarding it would make Claude Code stop reading.
            }
            Event::Finish {
                stop_reason,
                stop_sequence,
                usage,
            } => {
                self.start_if_needed(out);
                self.close_open(out);
                self.usage.merge(usage);
                self.finished = true;
                // protocol.md §3.5: if tool calls were emitted the reason is tool_use.
                let stop_reason = if self.saw_tool && stop_reason == StopReason::EndTurn {
                    StopReason::ToolUse
                } else {
                    stop_reason
                };
                out.push(Event::Finish {
                    stop_reason,
                    stop_sequence,
                    usage: self.usage,
                });
            }
        }
        Ok(())
    }

    /// The upstream ended: fine only after its completion signal.
    pub fn end(&self) -> Result<(), StreamFault> {
        if self.finished {
            return Ok(());
        }
        Err(StreamFault::truncated(match self.open {
            Some((_, i, ..)) => format!(
                "the upstream stream ended with content block {i} still open and no completion signal"
            ),
            None if self.started => {
                "the upstream stream ended before its completion signal".to_owned()
            }
            None => "the upstream stream ended before it sent anything".to_owned(),
        }))
    }
}

/// A whole answer, collected from strict events (non-streaming clients).
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Message id.
    pub id: String,
    /// The answering model.
    pub model: String,
    /// The blocks, in order.
    pub content: Vec<Block>,
    /// Why it stopped.
    pub stop_reason: StopReason,
    /// Which stop sequence.
    pub stop_sequence: Option<String>,
    /// Token counts.
    pub usage: Usage,
}

/// What a client has received of an answer that broke: the ground a continuation stands on.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    /// The message id the client knows.
    pub id: String,
    /// Blocks the client received whole.
    pub closed: Vec<Block>,
    /// The block that was open when the answer broke, as far as the client has it.
    pub open: Option<Block>,
    /// Usage reported so far.
    pub usage: Usage,
}

impl Delivered {
    /// Tool calls the client has (OpenAI numbers them).
    pub fn tool_calls(&self) -> usize {
        self.closed
            .iter()
            .filter(|b| matches!(b, Block::ToolUse { .. }))
            .count()
    }
}

/// Maps a continuation's strict events into the client's answer that broke (protocol: one
/// message, indices never reused): the continuation's `Start` is dropped; its first text block
/// continues the client's open text block at the same index (minus any whitespace the prefill
/// had to trim, when the continuation repeats it); other blocks take the next indices; the
/// finish carries the summed usage.
#[derive(Debug)]
pub struct Splice {
    open_text: Option<usize>,
    next_index: usize,
    strip: String,
    map: HashMap<usize, usize>,
    merged: bool,
    prior: Usage,
}

impl Splice {
    /// A splice after `delivered`, whose client-side indices run up to `next_index`
    /// (exclusive) with the open text block, if any, at `open_text`. `trimmed` is the
    /// whitespace cut from the end of the prefill.
    pub fn new(
        open_text: Option<usize>,
        next_index: usize,
        trimmed: String,
        prior: Usage,
    ) -> Splice {
        Splice {
            open_text,
            next_index,
            strip: trimmed,
            map: HashMap::new(),
            merged: false,
            prior,
        }
    }

    fn close_unmerged(&mut self, out: &mut Vec<Event>) {
        if !self.merged {
            if let Some(i) = self.open_text.take() {
                out.push(Event::BlockStop { index: i });
            }
        }
    }

    /// Rewrites one strict event of the continuation.
    pub fn map(&mut self, ev: Event, out: &mut Vec<Event>) {
        match ev {
            Event::Start { .. } => {}
            Event::BlockStart {
                index,
                block: StartBlock::Text,
            } if !self.merged && self.open_text.is_some() => {
                self.merged = true;
                self.map.insert(index, self.open_text.expect("checked"));
            }
            Event::BlockStart { index, block } => {
                self.close_unmerged(out);
                self.merged = true;
                let mapped = self.next_index;
                self.next_index += 1;
                self.map.insert(index, mapped);
                out.push(Event::BlockStart {
                    index: mapped,
                    block,
                });
            }
            Event::Delta { index, delta } => {
                let mapped = self.map.get(&index).copied().unwrap_or(index);
                let delta = match delta {
                    Delta::Text(t) if Some(mapped) == self.open_text && !self.strip.is_empty() => {
                        let common = t
                            .chars()
                            .zip(self.strip.chars())
                            .take_while(|(a, b)| a == b)
                            .count();
                        let rest: String = t.chars().skip(common).collect();
                        self.strip = if rest.is_empty() {
                            self.strip.chars().skip(common).collect()
                        } else {
                            String::new()
                        };
                        if rest.is_empty() {
                            return;
                        }
                        Delta::Text(rest)
                    }
                    d => d,
                };
                out.push(Event::Delta {
                    index: mapped,
                    delta,
                });
            }
            Event::BlockStop { index } => {
                let mapped = self.map.get(&index).copied().unwrap_or(index);
                out.push(Event::BlockStop { index: mapped });
            }
            Event::Finish {
                stop_reason,
                stop_sequence,
                usage,
            } => {
                self.close_unmerged(out);
                let p = self.prior;
                let usage = Usage {
                    input: p.input + usage.input,
                    cache_read: p.cache_read + usage.cache_read,
                    cache_creation: p.cache_creation + usage.cache_creation,
                    output: p.output + usage.output,
                };
                out.push(Event::Finish {
                    stop_reason,
                    stop_sequence,
                    usage,
                });
            }
            Event::Ping => out.push(Event::Ping),
        }
    }
}

impl Response {
    /// The reasoning text of all thinking blocks, joined.
    pub fn thinking_text(&self) -> String {
        self.content
            .iter()
            .filter_map(|b| match b {
                Block::Thinking { thinking, .. } => Some(thinking.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// Builds a [`Response`] from strict events.
#[derive(Debug, Default)]
pub struct Collector {
    id: String,
    model: String,
    content: Vec<Block>,
    partial_json: String,
    /// The last block of `content` has started and not stopped.
    open: bool,
    finish: Option<(StopReason, Option<String>)>,
    usage: Usage,
}

impl Collector {
    /// Takes one strict event.
    pub fn push(&mut self, ev: &Event) -> Result<(), StreamFault> {
        match ev {
            Event::Start { id, model, usage } => {
                self.id.clone_from(id);
                self.model.clone_from(model);
                self.usage.merge(*usage);
            }
            Event::BlockStart { block, .. } => {
                self.partial_json.clear();
                self.open = true;
                self.content.push(match block {
                    StartBlock::Text => Block::Text(String::new()),
                    StartBlock::Thinking => Block::Thinking {
                        thinking: String::new(),
                        signature: String::new(),
                    },
                    StartBlock::RedactedThinking(d) => Block::RedactedThinking(d.clone()),
                    StartBlock::ToolUse { id, name } => Block::ToolUse {
                        id: id.clone(),
                        name: name.clone(),
                        input: Value::Null,
                    },
                });
            }
            Event::Delta { delta, .. } => match (self.content.last_mut(), delta) {
                (Some(Block::Text(t)), Delta::Text(d)) => t.push_str(d),
                (Some(Block::Thinking { thinking, .. }), Delta::Thinking(d)) => {
                    thinking.push_str(d)
                }
                (Some(Block::Thinking { signature, .. }), Delta::Signature(d)) => {
                    signature.push_str(d)
                }
                (Some(Block::ToolUse { .. }), Delta::InputJson(d)) => self.partial_json.push_str(d),
                _ => {}
            },
            Event::BlockStop { .. } => {
                self.open = false;
                if let Some(Block::ToolUse { input, name, .. }) = self.content.last_mut() {
                    let text = if self.partial_json.trim().is_empty() {
                        "{}"
                    } else {
                        self.partial_json.as_str()
                    };
                    *input = serde_json::from_str(text).map_err(|e| {
                        StreamFault::malformed(format!(
                            "the arguments of the call to '{name}' are not valid JSON ({e})"
                        ))
                    })?;
                }
            }
            Event::Finish {
                stop_reason,
                stop_sequence,
                usage,
            } => {
                self.finish = Some((*stop_reason, stop_sequence.clone()));
                self.usage.merge(*usage);
            }
            Event::Ping => {}
        }
        Ok(())
    }

    /// What has been collected so far, for a continuation: the closed blocks, and the open
    /// one if there is one.
    pub fn snapshot(&self) -> Delivered {
        let (closed, open) = match (self.open, self.content.split_last()) {
            (true, Some((last, rest))) => (rest.to_vec(), Some(last.clone())),
            _ => (self.content.clone(), None),
        };
        Delivered {
            id: self.id.clone(),
            closed,
            open,
            usage: self.usage,
        }
    }

    /// The answer; `None` before the finish.
    pub fn finish(self) -> Option<Response> {
        let (stop_reason, stop_sequence) = self.finish?;
        Some(Response {
            id: self.id,
            model: self.model,
            content: self.content,
            stop_reason,
            stop_sequence,
            usage: self.usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(events: Vec<Event>) -> Result<Vec<Event>, StreamFault> {
        let mut g = Guard::new("p", ToolNames::default());
        let mut out = Vec::new();
        for e in events {
            g.push(e, &mut out)?;
        }
        g.end()?;
        Ok(out)
    }

    fn start() -> Event {
        Event::Start {
            id: "m".into(),
            model: "x".into(),
            usage: Usage::default(),
        }
    }

    fn finish() -> Event {
        Event::Finish {
            stop_reason: StopReason::EndTurn,
            stop_sequence: None,
            usage: Usage::default(),
        }
    }

    #[test]
    fn upstream_indices_become_sequential_and_thinking_gets_signed() {
        let out = run(vec![
            start(),
            Event::BlockStart {
                index: 5,
                block: StartBlock::Thinking,
            },
            Event::Delta {
                index: 5,
                delta: Delta::Thinking("hm".into()),
            },
            Event::BlockStart {
                index: 9,
                block: StartBlock::Text,
            },
            Event::Delta {
                index: 9,
                delta: Delta::Text("hi".into()),
            },
            finish(),
        ])
        .unwrap();
        assert_eq!(
            out[1],
            Event::BlockStart {
                index: 0,
                block: StartBlock::Thinking
            }
        );
        assert_eq!(
            out[3],
            Event::Delta {
                index: 0,
                delta: Delta::Signature(foreign_signature("p"))
            }
        );
        assert_eq!(out[4], Event::BlockStop { index: 0 });
        assert_eq!(
            out[5],
            Event::BlockStart {
                index: 1,
                block: StartBlock::Text
            }
        );
        assert_eq!(out[7], Event::BlockStop { index: 1 });
    }

    #[test]
    fn a_delta_for_a_closed_block_is_a_fault_not_an_event() {
        let err = run(vec![
            start(),
            Event::BlockStart {
                index: 0,
                block: StartBlock::Text,
            },
            Event::BlockStop { index: 0 },
            Event::Delta {
                index: 0,
                delta: Delta::Text("late".into()),
            },
        ])
        .unwrap_err();
        assert!(err.detail.contains("not open"), "{err:?}");
    }

    #[test]
    fn no_finish_is_truncation_and_tool_calls_force_tool_use() {
        let err = run(vec![
            start(),
            Event::BlockStart {
                index: 0,
                block: StartBlock::Text,
            },
        ])
        .unwrap_err();
        assert_eq!(err.kind, crate::error::FailureKind::Truncated);
        let out = run(vec![
            start(),
            Event::BlockStart {
                index: 0,
                block: StartBlock::ToolUse {
                    id: "call:1".into(),
                    name: "f".into(),
                },
            },
            finish(),
        ])
        .unwrap();
        assert!(
            matches!(&out[1], Event::BlockStart { block: StartBlock::ToolUse { id, .. }, .. } if !id.contains(':'))
        );
        assert!(matches!(
            out.last(),
            Some(Event::Finish {
                stop_reason: StopReason::ToolUse,
                ..
            })
        ));
    }

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
