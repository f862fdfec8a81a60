//! The translation pipeline, pure: upstream bytes (or the local engine's events) in, client
//! bytes out, for one answer. No I/O and no clock, so the transcripts in `tests/fixtures` run
//! through exactly what the server runs:
//!
//! upstream bytes → `sse::Splitter` → provider decoder → `canonical::Guard` → client encoder.

use crate::canonical::{self, Collector, Event, Guard, StreamFault, ToolNames};
use crate::client_api::Dialect;
use crate::sse::{Frame, Splitter};
use crate::wire::{self, anthropic, ollama, openai};
use bytes::BytesMut;
use serde_json::Value;

/// What the client reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Anthropic Messages.
    Anthropic,
    /// OpenAI chat completions; `include_usage` adds the usage chunk.
    OpenAiChat {
        /// The client asked for `stream_options.include_usage`.
        include_usage: bool,
    },
    /// OpenAI legacy completions.
    OpenAiCompletions,
    /// Ollama NDJSON.
    Ollama(ollama::Endpoint),
}

impl Format {
    /// The dialect of its errors.
    pub fn dialect(self) -> Dialect {
        match self {
            Format::Anthropic => Dialect::Anthropic,
            Format::OpenAiChat { .. } | Format::OpenAiCompletions => Dialect::OpenAi,
            Format::Ollama(_) => Dialect::Ollama,
        }
    }

    /// The content type of its streams.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Ollama(_) => "application/x-ndjson",
            _ => "text/event-stream",
        }
    }
}

#[derive(Debug)]
enum Encoder {
    Anthropic(anthropic::StreamEncoder),
    Chat(openai::ChatEncoder),
    Completions(openai::CompletionsEncoder),
    Ollama(ollama::Encoder),
    Collect(Collector),
}

impl Encoder {
    fn event(&mut self, ev: &Event, out: &mut BytesMut) -> Result<(), StreamFault> {
        match self {
            Encoder::Anthropic(e) => e.event(ev, out),
            Encoder::Chat(e) => e.event(ev, out),
            Encoder::Completions(e) => e.event(ev, out),
            Encoder::Ollama(e) => return e.event(ev, out),
            Encoder::Collect(c) => return c.push(ev),
        }
        Ok(())
    }

    fn complete(&mut self, out: &mut BytesMut) {
        match self {
            Encoder::Anthropic(e) => e.complete(out),
            Encoder::Chat(e) => e.complete(out),
            Encoder::Completions(_) => out.extend_from_slice(b"data: [DONE]\n\n"),
            Encoder::Ollama(e) => e.complete(out),
            Encoder::Collect(_) => {}
        }
    }
}

/// Upstream bytes in, client bytes out, for one answer. Pure: no I/O, no clock, so the
/// transcripts in `tests/fixtures` run through exactly what the server runs.
#[derive(Debug)]
pub struct Pipeline {
    format: Format,
    splitter: Splitter,
    frames: Vec<Frame>,
    /// `None`: the source yields canonical events itself (the local engine).
    decoder: Option<wire::Decoder>,
    guard: Guard,
    encoder: Encoder,
    loose: Vec<Event>,
    strict: Vec<Event>,
    /// The finish is written only once the upstream's stream ended cleanly after it.
    held_finish: Option<Event>,
    /// A tool_use block's events, held until its stop: a client never gets half a call.
    held_tool: Option<Vec<Event>>,
    /// What the client has received, in canonical form (for a continuation).
    delivered: Collector,
    /// Set when this pipeline continues an answer another backend broke.
    splice: Option<canonical::Splice>,
    /// The request whose tools each tool call is checked against before it is delivered
    /// ([`crate::schema::check_call`]); shared, not copied. `None` or no tools: not checked.
    checked_against: Option<std::sync::Arc<canonical::Request>>,
}

impl Pipeline {
    /// A pipeline from a provider named `provider` whose stream `decoder` reads (`None`: it
    /// yields canonical events, [`Pipeline::feed_events`]) to a `format` client that asked for
    /// `model`; `stream: false` collects the answer instead ([`Pipeline::response`]).
    pub fn new(
        decoder: Option<wire::Decoder>,
        provider: &str,
        names: ToolNames,
        format: Format,
        model: &str,
        created: u64,
        stream: bool,
    ) -> Pipeline {
        let encoder = if !stream {
            Encoder::Collect(Collector::default())
        } else {
            match format {
                Format::Anthropic => Encoder::Anthropic(anthropic::StreamEncoder::new(model)),
                Format::OpenAiChat { include_usage } => {
                    Encoder::Chat(openai::ChatEncoder::new(model, created, include_usage))
                }
                Format::OpenAiCompletions => {
                    Encoder::Completions(openai::CompletionsEncoder::new(model, created))
                }
                Format::Ollama(ep) => Encoder::Ollama(ollama::Encoder::new(ep, model, created)),
            }
        };
        Pipeline {
            format,
            splitter: Splitter::new(),
            frames: Vec::new(),
            decoder,
            guard: Guard::new(provider, names),
            encoder,
            loose: Vec::new(),
            strict: Vec::new(),
            held_finish: None,
            held_tool: None,
            delivered: Collector::default(),
            splice: None,
            checked_against: None,
        }
    }

    /// Checks every tool call against the client's `tools` before it is delivered: a call to
    /// a tool not offered, or whose input does not match its schema, is an upstream fault
    /// (malformed), never something the client executes.
    pub fn validating(mut self, req: std::sync::Arc<canonical::Request>) -> Pipeline {
        self.checked_against = Some(req);
        self
    }

    /// The held tool call checked against the offered tools.
    fn check_tool(&self, held: &[Event]) -> Result<(), StreamFault> {
        let Some(req) = self
            .checked_against
            .as_ref()
            .filter(|r| !r.tools.is_empty())
        else {
            return Ok(());
        };
        let mut name = "";
        let mut input = String::new();
        for ev in held {
            match ev {
                Event::BlockStart {
                    block: canonical::StartBlock::ToolUse { name: n, .. },
                    ..
                } => name = n,
                Event::Delta {
                    delta: canonical::Delta::InputJson(part),
                    ..
                } => input.push_str(part),
                _ => {}
            }
        }
        let value: serde_json::Value = if input.trim().is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            serde_json::from_str(&input).map_err(|e| {
                StreamFault::malformed(format!(
                    "the upstream's call to tool `{name}` carries input that is not JSON ({e})"
                ))
            })?
        };
        let tools = req.tools.iter().map(|t| (t.name.as_str(), &t.schema));
        crate::schema::check_call(tools, name, &value).map_err(|why| {
            StreamFault::malformed(format!("the upstream's tool call is invalid: {why}"))
        })
    }

    /// Makes this pipeline continue an answer that broke: `delivered` is what the client has,
    /// `splice` maps this upstream's events into that answer.
    pub fn continuing(
        mut self,
        delivered: Collector,
        splice: canonical::Splice,
        id: &str,
    ) -> Pipeline {
        self.delivered = delivered;
        self.splice = Some(splice);
        if let Encoder::Chat(e) = &mut self.encoder {
            e.resume(id, self.delivered.snapshot().tool_calls());
        }
        if let Encoder::Completions(e) = &mut self.encoder {
            e.resume(id);
        }
        self
    }

    /// What the client has received so far.
    pub fn delivered(&self) -> canonical::Delivered {
        self.delivered.snapshot()
    }

    /// Hands over the record of what was delivered (to the pipeline that continues it).
    pub fn take_delivered(&mut self) -> Collector {
        std::mem::take(&mut self.delivered)
    }

    /// Sends one strict event on (mapped by the splice, tool calls held until whole).
    fn deliver(&mut self, ev: Event, out: &mut BytesMut) -> Result<(), StreamFault> {
        let mut mapped = Vec::with_capacity(2);
        match &mut self.splice {
            Some(sp) => sp.map(ev, &mut mapped),
            None => mapped.push(ev),
        }
        for ev in mapped {
            let starts_tool = matches!(
                ev,
                Event::BlockStart {
                    block: canonical::StartBlock::ToolUse { .. },
                    ..
                }
            );
            if self.held_tool.is_some() || starts_tool {
                let stop = matches!(ev, Event::BlockStop { .. });
                self.held_tool.get_or_insert_with(Vec::new).push(ev);
                if stop {
                    let held = self.held_tool.take().unwrap_or_default();
                    self.check_tool(&held)?;
                    for e in held {
                        self.encoder.event(&e, out)?;
                        self.delivered.push(&e)?;
                    }
                }
                continue;
            }
            self.encoder.event(&ev, out)?;
            self.delivered.push(&ev)?;
        }
        Ok(())
    }

    /// Takes the next upstream bytes, appending client bytes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) -> Result<(), StreamFault> {
        self.splitter.feed(chunk, &mut self.frames);
        self.drain(out)
    }

    /// Takes events from a source that yields them itself (the local engine), through the
    /// same guard as decoded ones.
    pub fn feed_events(
        &mut self,
        events: Vec<Event>,
        out: &mut BytesMut,
    ) -> Result<(), StreamFault> {
        self.loose.extend(events);
        self.guard_loose(out)
    }

    /// The decoder, for a provider that keeps what its stream carried (Gemini's signatures).
    pub fn decoder_mut(&mut self) -> Option<&mut wire::Decoder> {
        self.decoder.as_mut()
    }

    fn drain(&mut self, out: &mut BytesMut) -> Result<(), StreamFault> {
        let frames = std::mem::take(&mut self.frames);
        let result = frames.iter().try_for_each(|f| {
            match &mut self.decoder {
                Some(d) => d.frame(f, &mut self.loose)?,
                None => {
                    return Err(StreamFault::malformed(
                        "an event source sent bytes instead of events",
                    ))
                }
            }
            self.guard_loose(out)
        });
        self.frames = frames;
        self.frames.clear();
        result
    }

    /// Loose events through the guard; the finish held until the stream ends cleanly.
    fn guard_loose(&mut self, out: &mut BytesMut) -> Result<(), StreamFault> {
        // Drained, not taken: the buffer keeps its capacity for the next event.
        for ev in self.loose.drain(..) {
            self.guard.push(ev, &mut self.strict)?;
        }
        for ev in std::mem::take(&mut self.strict) {
            if matches!(ev, Event::Finish { .. }) {
                self.held_finish = Some(ev);
            } else {
                self.deliver(ev, out)?;
            }
        }
        Ok(())
    }

    /// The upstream closed cleanly: complete only if it sent its completion signal.
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<(), StreamFault> {
        self.splitter.finish(&mut self.frames);
        self.drain(out)?;
        self.guard.end()?;
        if let Some(Event::Finish {
            stop_reason,
            stop_sequence,
            ..
        }) = self.held_finish.take()
        {
            let ev = Event::Finish {
                stop_reason,
                stop_sequence,
                usage: self.guard.usage,
            };
            self.deliver(ev, out)?;
        }
        self.encoder.complete(out);
        Ok(())
    }

    /// Bytes of an unfinished server-sent event held by the splitter.
    pub fn buffered(&self) -> usize {
        self.splitter.buffered()
    }

    /// True once a content block has started.
    pub fn has_content(&self) -> bool {
        self.guard.has_content()
    }

    /// True once the client may be answered: content began, or the answer is finished.
    pub fn committed(&self) -> bool {
        self.guard.has_content() || self.guard.finished()
    }

    /// The client's dialect (for its keep-alives and errors).
    pub fn dialect(&self) -> Dialect {
        self.format.dialect()
    }

    /// Tokens so far.
    pub fn usage(&self) -> canonical::Usage {
        self.guard.usage
    }

    /// The collected answer of a non-streaming pipeline, after a clean [`Pipeline::finish`].
    pub fn response(&mut self) -> Option<canonical::Response> {
        match &mut self.encoder {
            Encoder::Collect(c) => std::mem::take(c).finish(),
            _ => None,
        }
    }
}

/// A whole answer in the client's format.
pub fn encode_response(
    format: Format,
    r: &canonical::Response,
    model: &str,
    created: u64,
) -> Value {
    match format {
        Format::Anthropic => anthropic::encode_response(r, model),
        Format::OpenAiChat { .. } => openai::encode_response(r, model, created),
        Format::OpenAiCompletions => openai::encode_completions_response(r, model, created),
        Format::Ollama(ep) => ollama::encode_response(ep, r, model, created),
    }
}
