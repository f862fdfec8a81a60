//! The [`Splice`]: a continuation's events mapped into the client's answer that broke.

use super::{Delta, Event, StartBlock, Usage};
use std::collections::HashMap;

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
