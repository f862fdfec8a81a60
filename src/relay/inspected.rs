//! The passthrough's pipe: the upstream's bytes cut into whole events, each judged by the
//! dialect's inspector and forwarded unchanged — or, for a client that asked for a whole
//! answer, recorded by an [`Assembler`] and sent as one body when the stream is complete.

use super::pipeline::Pipeline;
use crate::canonical::Collector;
use crate::client_api::whole::Assembler;
use crate::client_api::{Dialect, Inspector, Usage, Verdict};
use crate::error::{FailureKind, ProviderError};
use crate::providers::Provider;
use crate::sse::{Frame, Splitter};
use bytes::BytesMut;

/// How a stream that ended cleanly ended.
pub(crate) enum Ending {
    /// With its completion signal.
    Complete,
    /// With the upstream's own error event, forwarded as is.
    UpstreamError,
}

/// The bytes the client has received, kept as they went out and decoded only when a break
/// needs to know what the client has: a stream that ends well (nearly all of them) costs a
/// copy of its bytes, not a second decoding of every event.
#[derive(Debug)]
struct Shadow {
    pipeline: Pipeline,
    sent: BytesMut,
}

/// What a shadow keeps at most; a longer answer cannot be continued (it is read back at a
/// break, and an answer this long is not worth holding twice).
const MAX_SHADOW: usize = 8 * 1024 * 1024;

impl Shadow {
    /// What the client has, as the canonical answer so far (`None`: it cannot be read back).
    fn delivered(&mut self) -> Option<Collector> {
        let sent = std::mem::take(&mut self.sent);
        self.pipeline.feed(&sent, &mut BytesMut::new()).ok()?;
        Some(self.pipeline.take_delivered())
    }
}

/// A passthrough stream's pipe: the upstream's bytes cut into whole events, each judged by the
/// dialect's inspector and forwarded unchanged (a tool call's events held until it is whole).
#[derive(Debug)]
pub(crate) struct Inspected {
    splitter: Splitter,
    frames: Vec<Frame>,
    inspector: Inspector,
    dialect: Dialect,
    /// A tool call's frames, held until it is whole.
    held: Option<BytesMut>,
    /// What the client has received (only when it may be continued), read back into the
    /// canonical answer only if the stream breaks.
    shadow: Option<Shadow>,
    /// The upstream's own error event (its data), once it sent one.
    upstream_error: Option<String>,
    /// For a whole answer: what is rebuilt instead of forwarded.
    whole: Option<Assembler>,
}

impl Inspected {
    /// A pipe that forwards the stream (`whole: false`) or rebuilds the whole answer.
    pub(crate) fn new(dialect: Dialect, shadow: Option<Pipeline>, whole: bool) -> Inspected {
        Inspected {
            splitter: Splitter::new(),
            frames: Vec::new(),
            inspector: dialect.inspector(),
            dialect,
            held: None,
            shadow: shadow.map(|pipeline| Shadow {
                pipeline,
                sent: BytesMut::new(),
            }),
            upstream_error: None,
            whole: whole.then(|| dialect.assembler()),
        }
    }

    /// The whole answer, after a complete stream (`None` for a forwarding pipe).
    pub(crate) fn take_whole(&mut self) -> Option<serde_json::Value> {
        self.whole.take().and_then(Assembler::finish)
    }

    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Bytes of an unfinished event held by the splitter.
    pub(crate) fn buffered(&self) -> usize {
        self.splitter.buffered()
    }

    /// The answer is under way (the first-content timer stops).
    pub(crate) fn has_started(&self) -> bool {
        self.inspector.has_started()
    }

    /// Bytes of a tool call held until it is whole.
    pub(crate) fn held(&self) -> usize {
        self.held.as_ref().map_or(0, BytesMut::len)
    }

    pub(crate) fn has_content(&self) -> bool {
        self.inspector.has_content()
    }

    pub(crate) fn usage(&self) -> Usage {
        self.inspector.usage()
    }

    /// A break can be continued: what the client has is known.
    pub(crate) fn continuable(&self) -> bool {
        self.shadow.is_some()
    }

    pub(crate) fn take_delivered(&mut self) -> Option<Collector> {
        self.shadow.take().and_then(|mut s| s.delivered())
    }

    pub(crate) fn feed(
        &mut self,
        chunk: &[u8],
        out: &mut BytesMut,
        provider: &Provider,
    ) -> Result<(), ProviderError> {
        self.splitter.feed(chunk, &mut self.frames);
        self.judge_frames(out, provider)
    }

    /// The upstream closed cleanly: complete only if the protocol's completion signal came.
    pub(crate) fn end(
        &mut self,
        out: &mut BytesMut,
        provider: &Provider,
    ) -> Result<Ending, ProviderError> {
        self.splitter.finish(&mut self.frames);
        self.judge_frames(out, provider)?;
        match self.inspector.end() {
            crate::client_api::Ending::Complete { append } => {
                if let Some(a) = append.filter(|_| self.whole.is_none()) {
                    out.extend_from_slice(&a);
                }
                Ok(Ending::Complete)
            }
            // Before any content the upstream's own error is an HTTP error the chain can act
            // on; after it, the event was forwarded and the client is told already.
            crate::client_api::Ending::UpstreamError
                if !self.has_content() || self.whole.is_some() =>
            {
                Err(self.upstream_error_failure(provider).unwrap_or_else(|| {
                    provider.failure(
                        FailureKind::Status(502),
                        "the upstream reported an error".into(),
                    )
                }))
            }
            crate::client_api::Ending::UpstreamError => Ok(Ending::UpstreamError),
            crate::client_api::Ending::Truncated(why) => {
                Err(provider.failure(FailureKind::Truncated, why))
            }
        }
    }

    /// The upstream's own error event as a failure of this provider.
    fn upstream_error_failure(&mut self, provider: &Provider) -> Option<ProviderError> {
        let data = self.upstream_error.take()?;
        let (status, message) = self.dialect.stream_error_status(&data);
        Some(provider.failure(
            FailureKind::Status(status),
            format!("the upstream reported an error: {message}"),
        ))
    }

    /// Judges the whole frames split so far, appending what may be forwarded to `out`.
    fn judge_frames(
        &mut self,
        out: &mut BytesMut,
        provider: &Provider,
    ) -> Result<(), ProviderError> {
        let frames = std::mem::take(&mut self.frames);
        let mut result = Ok(());
        for f in &frames {
            // Only a whole answer being rebuilt takes what the inspector read of a delta.
            let (verdict, piece) = match self.whole {
                Some(_) => self.inspector.judge(f),
                None => (self.inspector.frame(f), None),
            };
            match verdict {
                Verdict::Forward => {
                    if let Some(a) = self.whole.as_mut() {
                        a.take(f, piece);
                    }
                    self.release(&f.raw, out)
                }
                Verdict::ForwardError => {
                    self.upstream_error = f
                        .data
                        .as_deref()
                        .map(|d| crate::secret::redact(d).into_owned());
                    // A whole answer has nobody to forward the error to yet: it is a failure
                    // like any other (continued, or failed over).
                    if self.continuable() || self.whole.is_some() {
                        // The upstream's own error after content: continue the answer instead.
                        if let Some(e) = self.upstream_error_failure(provider) {
                            result = Err(e);
                            break;
                        }
                    }
                    // Never half a tool call.
                    self.held = None;
                    match crate::secret::redact_bytes(&f.raw) {
                        Some(clean) => out.extend_from_slice(&clean),
                        None => out.extend_from_slice(&f.raw),
                    }
                }
                Verdict::Drop => {}
                Verdict::Fail(kind, why) => {
                    result = Err(provider.failure(kind, why));
                    break;
                }
            }
        }
        self.frames = frames;
        self.frames.clear();
        result
    }

    /// Sends whole frames on, holding a tool call's frames until it is whole.
    fn release(&mut self, raw: &[u8], out: &mut BytesMut) {
        let in_tool = self.inspector.in_tool();
        if in_tool || self.held.is_some() {
            self.held
                .get_or_insert_with(BytesMut::new)
                .extend_from_slice(raw);
            if !in_tool {
                let held = self.held.take().unwrap_or_default();
                self.deliver(&held, out);
            }
        } else {
            self.deliver(raw, out);
        }
    }

    fn deliver(&mut self, bytes: &[u8], out: &mut BytesMut) {
        if self.whole.is_none() {
            out.extend_from_slice(bytes);
        }
        if let Some(shadow) = self.shadow.as_mut() {
            if shadow.sent.len() + bytes.len() > MAX_SHADOW {
                tracing::debug!("the answer is too long to keep for a continuation");
                self.shadow = None;
            } else {
                shadow.sent.extend_from_slice(bytes);
            }
        }
    }
}
