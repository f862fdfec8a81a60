//! Whole answers out of strict events: the [`Collector`] builds a [`Response`] for
//! non-streaming clients, and a [`Delivered`] snapshot of what a client has received when an
//! answer breaks (the ground a continuation stands on).

use super::{Block, Delta, Event, StartBlock, StopReason, StreamFault, Usage};
use serde_json::Value;

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
