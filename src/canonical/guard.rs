//! The [`Guard`]: the one place the stream invariants live. It sits between a provider's
//! decoder and a client's encoder and makes a loose event stream strict: block indices are
//! sequential and never reused, no delta reaches a block that is not open, a thinking block
//! always gets a `signature_delta` before its stop, and a stream counts as finished only when
//! the upstream said so.

use super::{
    foreign_signature, sanitize_id, Delta, Event, StartBlock, StopReason, StreamFault, ToolNames,
    Usage,
};

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
            Event::BlockStart { index: up, block } => self.open_block(up, block, out)?,
            Event::Delta { index: up, delta } => self.delta(up, delta, out)?,
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

    /// A block starts: upstream index `up` gets the next client index.
    fn open_block(
        &mut self,
        up: usize,
        block: StartBlock,
        out: &mut Vec<Event>,
    ) -> Result<(), StreamFault> {
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
        Ok(())
    }

    /// A delta for upstream block `up`: only into the open block, and only of its kind.
    fn delta(&mut self, up: usize, delta: Delta, out: &mut Vec<Event>) -> Result<(), StreamFault> {
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
}
