//! The worker's lines for one request as canonical events, which go through the same `Guard`,
//! client encoders, continuation and completeness rules as any provider's stream. A worker
//! error ends the answer with a fault (an overflow worded as Anthropic words it, so Claude
//! Code compacts); a worker that dies mid-answer, or a line channel that closes without a
//! finish, is an `api_error` fault: nothing broken ever looks finished.

use super::protocol::Line;
use super::{tools, CancelOnDrop};
use crate::canonical::{Delta, Event, StartBlock, StopReason, StreamFault, Usage};
use crate::error::FailureKind;
use futures_util::stream::BoxStream;
use tokio::sync::mpsc;

/// The local engine's answer: canonical events as they come, or the fault that ends it.
pub type EventStream = BoxStream<'static, Result<Vec<Event>, StreamFault>>;

struct Answer {
    rx: mpsc::UnboundedReceiver<Line>,
    guard: CancelOnDrop,
    model: String,
    started: bool,
    open: bool,
    ended: bool,
    /// With tools offered the text is held until the end: it may be a tool call, which is
    /// sent whole or not at all.
    held: Option<String>,
}

/// A fault worded as the worker's error type says (`api_error`: 500, `invalid_request_error`:
/// 400).
fn fault(ty: &str, message: &str) -> StreamFault {
    let status = if ty == "invalid_request_error" {
        400
    } else {
        500
    };
    StreamFault {
        kind: FailureKind::Status(status),
        detail: format!("the upstream reported {ty} mid-stream: {message}"),
    }
}

/// The answer to one request, read from the worker's lines.
pub fn into_events(
    rx: mpsc::UnboundedReceiver<Line>,
    guard: CancelOnDrop,
    model: String,
    tools_offered: bool,
) -> EventStream {
    let answer = Answer {
        rx,
        guard,
        model,
        started: false,
        open: false,
        ended: false,
        held: tools_offered.then(String::new),
    };
    let stream = futures_util::stream::unfold(answer, |mut a| async move {
        if a.ended {
            return None;
        }
        let line = a.rx.recv().await;
        let mut out = Vec::new();
        if !a.started {
            a.started = true;
            out.push(Event::Start {
                id: format!("msg_local_{:016x}", rand::random::<u64>()),
                model: a.model.clone(),
                usage: Usage::default(),
            });
        }
        match a.line(line, &mut out) {
            Ok(true) => Some((Ok(out), a)),
            Ok(false) => None,
            Err(f) => Some((Err(f), a)),
        }
    });
    futures_util::StreamExt::boxed(stream)
}

impl Answer {
    /// Appends what `line` means; `Ok(false)` when the answer ends with nothing more to say
    /// (a cancelled one).
    fn line(&mut self, line: Option<Line>, out: &mut Vec<Event>) -> Result<bool, StreamFault> {
        match line {
            None => {
                self.ended = true;
                return Err(fault("api_error", "the local worker stopped answering"));
            }
            Some(Line::Progress { .. } | Line::Ready { .. } | Line::Loading { .. }) => {
                out.push(Event::Ping)
            }
            Some(Line::Replace { text, .. }) => {
                if let Some(held) = self.held.as_mut() {
                    *held = text;
                }
                out.push(Event::Ping);
            }
            Some(Line::Text { text, .. }) => match self.held.as_mut() {
                Some(held) => {
                    held.push_str(&text);
                    out.push(Event::Ping);
                }
                None => {
                    if !self.open {
                        self.open = true;
                        out.push(Event::BlockStart {
                            index: 0,
                            block: StartBlock::Text,
                        });
                    }
                    let delta = Delta::Text(text);
                    out.push(Event::Delta { index: 0, delta });
                }
            },
            Some(Line::Done {
                reason,
                stop_sequence,
                prompt_tokens,
                cached_tokens,
                completion_tokens,
                ..
            }) => {
                self.guard.done();
                self.ended = true;
                if reason == "cancelled" {
                    return Ok(false);
                }
                let usage = Usage {
                    input: u64::from(prompt_tokens.saturating_sub(cached_tokens)),
                    cache_read: u64::from(cached_tokens),
                    cache_creation: 0,
                    output: u64::from(completion_tokens),
                };
                self.finish(&reason, stop_sequence, usage, out);
            }
            Some(Line::Error { kind, message, .. }) => {
                self.guard.done();
                self.ended = true;
                return Err(if kind == "context_overflow" {
                    fault(
                        "invalid_request_error",
                        &format!("prompt is too long: {message}"),
                    )
                } else if kind == "crashed" {
                    // The worker died: told as that, not as an API error (the feed, the
                    // journal and the notification say "local model crashed (SIGILL)").
                    StreamFault {
                        kind: FailureKind::Crashed,
                        detail: message,
                    }
                } else {
                    fault("api_error", &message)
                });
            }
        }
        Ok(true)
    }

    /// The end of a whole answer: the open block closed, held text read for tool calls (each
    /// sent as a whole `tool_use` block), the finish with its usage.
    fn finish(
        &mut self,
        reason: &str,
        stop_sequence: Option<String>,
        usage: Usage,
        out: &mut Vec<Event>,
    ) {
        if self.open {
            out.push(Event::BlockStop { index: 0 });
        }
        let mut stop_reason = match reason {
            "max_tokens" => StopReason::MaxTokens,
            "stop_sequence" => StopReason::StopSequence,
            _ => StopReason::EndTurn,
        };
        if let Some(held) = self.held.take() {
            let (text, calls) = match tools::parse(&held) {
                tools::Parsed::Text(t) => (t, Vec::new()),
                tools::Parsed::Calls { text, calls } => (text, calls),
            };
            let mut index = 0;
            if !text.is_empty() {
                out.push(Event::BlockStart {
                    index,
                    block: StartBlock::Text,
                });
                out.push(Event::Delta {
                    index,
                    delta: Delta::Text(text),
                });
                out.push(Event::BlockStop { index });
                index += 1;
            }
            for c in &calls {
                let block = StartBlock::ToolUse {
                    id: crate::canonical::new_tool_id(),
                    name: c.name.clone(),
                };
                out.push(Event::BlockStart { index, block });
                let delta = Delta::InputJson(c.arguments.to_string());
                out.push(Event::Delta { index, delta });
                out.push(Event::BlockStop { index });
                index += 1;
            }
            if !calls.is_empty() {
                stop_reason = StopReason::ToolUse;
            }
        }
        out.push(Event::Finish {
            stop_reason,
            stop_sequence,
            usage,
        });
    }
}
#[cfg(test)]
mod tests {
    use super::super::LocalEngine;
    use super::*;
    use crate::config::LocalConfig;
    use futures_util::StreamExt;
    use std::sync::Arc;

    /// The answer as an Anthropic client would read it: the events through the Anthropic
    /// encoder, a fault as the protocol's `event: error`.
    async fn sse_of(lines: Vec<Line>, tools: bool) -> String {
        let engine = Arc::new(LocalEngine::new(LocalConfig {
            model: "none".into(),
            context: Some(8),
            threads: 1,
            warm: false,
            unload_after: None,
            gpu_layers: None,
            modes_file: None,
        }));
        let (tx, rx) = mpsc::unbounded_channel();
        for l in lines {
            tx.send(l).unwrap();
        }
        drop(tx);
        let guard = CancelOnDrop::for_test(&engine, 1);
        let mut s = into_events(rx, guard, "m".into(), tools);
        let mut enc = crate::wire::anthropic::StreamEncoder::new("m");
        let mut out = bytes::BytesMut::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(events) => {
                    for ev in &events {
                        enc.event(ev, &mut out);
                        if matches!(ev, Event::Finish { .. }) {
                            enc.complete(&mut out);
                        }
                    }
                }
                Err(f) => out
                    .extend_from_slice(format!("event: error\ndata: {}\n\n", f.detail).as_bytes()),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn done() -> Line {
        Line::Done {
            id: 1,
            reason: "end_turn".into(),
            stop_sequence: None,
            prompt_tokens: 10,
            cached_tokens: 0,
            completion_tokens: 5,
            prompt_ms: 1,
            gen_ms: 2,
        }
    }

    #[tokio::test]
    async fn a_tool_call_in_the_output_becomes_a_whole_tool_use_block() {
        let text = |t: &str| Line::Text {
            id: 1,
            text: t.into(),
        };
        let out = sse_of(
            vec![
                text("<tool_call>\n{\"name\": \"Read\", "),
                text("\"arguments\": {\"file_path\": \"a.rs\"}}\n</tool_call>"),
                done(),
            ],
            true,
        )
        .await;
        assert!(
            out.contains(r#""content_block":{"type":"tool_use""#)
                && out.contains(r#""name":"Read""#),
            "{out}"
        );
        assert!(out.contains(r#"{\"file_path\":\"a.rs\"}"#), "{out}");
        assert!(out.contains(r#""stop_reason":"tool_use""#), "{out}");
        assert!(!out.contains("<tool_call>"), "{out}");
    }

    #[tokio::test]
    async fn a_malformed_tool_call_is_an_answer_in_words() {
        let out = sse_of(
            vec![
                Line::Text {
                    id: 1,
                    text: "<tool_call>{\"name\": \"Re".into(),
                },
                done(),
            ],
            true,
        )
        .await;
        assert!(
            out.contains(r#""type":"text_delta","text":"<tool_call>{\"name\": \"Re""#),
            "{out}"
        );
        assert!(
            out.contains(r#""stop_reason":"end_turn""#) && !out.contains("tool_use"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn a_worker_that_vanishes_is_an_error_never_a_clean_end() {
        let out = sse_of(
            vec![Line::Text {
                id: 1,
                text: "Hal".into(),
            }],
            false,
        )
        .await;
        assert!(
            out.ends_with("\n\n") && out.contains("event: error"),
            "{out}"
        );
        assert!(!out.contains("message_stop"), "{out}");
    }
}
