//! Anthropic Messages on the wire: error bodies, the `event: error` frame, the model list, and
//! the completeness rules of protocol.md §5 (a `message_delta` with a stop reason and every
//! started block stopped).

use super::{BodyProblem, Ending, Usage, Verdict};
use crate::error::{FailureKind, GatewayError};
use crate::sse::Frame;
use crate::wire::anthropic::DeltaPiece;
use crate::wire::Loose;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use std::borrow::Cow;
use std::collections::BTreeSet;

/// Anthropic's `error.type` for a gateway error (protocol.md §1.6 and §3.8).
pub fn error_type(err: &GatewayError) -> &'static str {
    match err.status() {
        400 | 508 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        409 => "conflict_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        502 | 503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

pub(super) fn error_body(err: &GatewayError, request_id: &str) -> String {
    json!({
        "type": "error",
        "error": {"type": error_type(err), "message": err.to_string()},
        "request_id": request_id,
    })
    .to_string()
}

pub(super) fn stream_error(err: &GatewayError) -> Frame {
    // Inside a stream the status is already 200: a broken stream is an `api_error` (Claude Code
    // reports "Server error mid-response"), a stall a `timeout_error`.
    let ty = match err {
        GatewayError::Upstream(e) if e.kind.is_timeout() => "timeout_error",
        GatewayError::Upstream(e) if matches!(e.kind, FailureKind::Status(_)) => error_type(err),
        _ => "api_error",
    };
    let data =
        json!({"type": "error", "error": {"type": ty, "message": err.to_string()}}).to_string();
    Frame::named("error", &data)
}

/// Anthropic's model list shape (protocol.md §1.1).
pub fn model_list(ids: &[String]) -> serde_json::Value {
    let data: Vec<_> = ids
        .iter()
        .map(|id| json!({"type": "model", "id": id, "display_name": id, "created_at": "2026-01-01T00:00:00Z"}))
        .collect();
    json!({
        "data": data,
        "has_more": false,
        "first_id": ids.first(),
        "last_id": ids.last(),
    })
}

/// An event as the inspector reads it; its `delta` as `D`: [`DeltaPeek`] to judge a stream,
/// [`DeltaFull`] to judge one whose whole answer is being rebuilt.
#[derive(Deserialize)]
#[serde(bound(deserialize = "D: Deserialize<'de>"))]
struct EventPeek<'a, D> {
    /// Borrowed: one allocation fewer on every event of every inspected stream.
    #[serde(rename = "type", borrow)]
    ty: std::borrow::Cow<'a, str>,
    index: Option<u64>,
    content_block: Option<BlockPeek>,
    message: Option<MessagePeek>,
    delta: Option<D>,
    usage: Option<UsagePeek>,
}

/// What the inspector reads of a delta.
trait Delta<'a> {
    /// Text or thinking the client can use (an empty delta is not content yet).
    fn has_text(&self) -> bool;
    /// A `message_delta`'s stop reason.
    fn stop_reason(self) -> Option<String>;
    /// What a whole answer takes from this delta of block `index`.
    fn piece(self, index: u64) -> Option<DeltaPiece<'a>>;
}

#[derive(Deserialize)]
struct BlockPeek {
    #[serde(rename = "type")]
    ty: String,
}

#[derive(Deserialize)]
struct MessagePeek {
    usage: Option<UsagePeek>,
}

#[derive(Deserialize)]
struct DeltaPeek<'a> {
    stop_reason: Option<String>,
    /// A `text_delta`'s text (borrowed: a copy of every delta's text was an allocation per
    /// event of every inspected stream).
    #[serde(borrow)]
    text: Option<crate::wire::Text<'a>>,
    /// A `thinking_delta`'s thinking.
    #[serde(borrow)]
    thinking: Option<crate::wire::Text<'a>>,
}

impl<'a> Delta<'a> for DeltaPeek<'a> {
    fn has_text(&self) -> bool {
        self.text.as_ref().is_some_and(|t| !t.0.is_empty())
            || self.thinking.as_ref().is_some_and(|t| !t.0.is_empty())
    }
    fn stop_reason(self) -> Option<String> {
        self.stop_reason
    }
    fn piece(self, _: u64) -> Option<DeltaPiece<'a>> {
        None
    }
}

/// [`DeltaPeek`] and what a whole answer takes from a delta: its type, a signature and a tool
/// call's input fragment. Read by hand so that it accepts exactly what `DeltaPeek` accepts:
/// those three are not judged (any value, and a repeated key, is accepted as by `DeltaPeek`,
/// which skips them; the last one counts, as in the tree), and an array is read as
/// `DeltaPeek` reads one, with none of the three (the assembler's tree finds no fields in an
/// array). A stream that is forwarded reads the plain `DeltaPeek`.
struct DeltaFull<'a> {
    peek: DeltaPeek<'a>,
    ty: Loose<'a>,
    signature: Loose<'a>,
    partial_json: Loose<'a>,
}

impl<'de: 'a, 'a> Deserialize<'de> for DeltaFull<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use crate::wire::Text;
        use serde::de::{value::SeqAccessDeserializer, Error, IgnoredAny, MapAccess, SeqAccess};
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = DeltaFull<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("struct DeltaPeek")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<DeltaFull<'de>, A::Error> {
                Ok(DeltaFull {
                    peek: DeltaPeek::deserialize(SeqAccessDeserializer::new(seq))?,
                    ty: Loose(None),
                    signature: Loose(None),
                    partial_json: Loose(None),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DeltaFull<'de>, A::Error> {
                // As the derive: a repeated judged key is an error before its value is read.
                fn once<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
                    map: &mut A,
                    slot: &mut Option<T>,
                    key: &'static str,
                ) -> Result<(), A::Error> {
                    if slot.is_some() {
                        return Err(A::Error::duplicate_field(key));
                    }
                    *slot = Some(map.next_value()?);
                    Ok(())
                }
                let (mut stop_reason, mut text, mut thinking) = (None, None, None);
                let (mut ty, mut signature, mut partial_json) = Default::default();
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match key.0.as_ref() {
                        "stop_reason" => once(&mut map, &mut stop_reason, "stop_reason")?,
                        "text" => once(&mut map, &mut text, "text")?,
                        "thinking" => once(&mut map, &mut thinking, "thinking")?,
                        "type" => ty = map.next_value()?,
                        "signature" => signature = map.next_value()?,
                        "partial_json" => partial_json = map.next_value()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(DeltaFull {
                    peek: DeltaPeek {
                        stop_reason: stop_reason.flatten(),
                        text: text.flatten(),
                        thinking: thinking.flatten(),
                    },
                    ty,
                    signature,
                    partial_json,
                })
            }
        }
        d.deserialize_struct("DeltaPeek", &["stop_reason", "text", "thinking"], Fields)
    }
}

impl<'a> Delta<'a> for DeltaFull<'a> {
    fn has_text(&self) -> bool {
        self.peek.has_text()
    }
    fn stop_reason(self) -> Option<String> {
        self.peek.stop_reason
    }
    /// As [`crate::client_api::whole`] reads it from the event's tree: a missing or null text
    /// is `""`. `None` for what it must read as a tree (a signature that is not a string, a
    /// citation, a delta type it does not know).
    fn piece(self, index: u64) -> Option<DeltaPiece<'a>> {
        let fields = [
            self.peek.text.map(|t| t.0),
            self.peek.thinking.map(|t| t.0),
            self.signature.0,
            self.partial_json.0,
        ];
        DeltaPiece::of(usize::try_from(index).ok()?, self.ty.as_str()?, fields)
    }
}

#[derive(Deserialize, Default)]
struct UsagePeek {
    input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

impl UsagePeek {
    fn input(&self) -> Option<u64> {
        let parts = [
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ];
        parts
            .iter()
            .any(Option::is_some)
            .then(|| parts.iter().flatten().sum())
    }
}

/// Follows an Anthropic event stream and decides whether it finished.
#[derive(Debug, Default)]
pub struct StreamInspector {
    open_blocks: BTreeSet<u64>,
    stop_reason: Option<String>,
    saw_stop: bool,
    saw_error: bool,
    /// The client has content it can use (the commit point): a text or thinking delta that is
    /// not empty, or a whole block (a tool call is held until its block stops). An empty
    /// block start is not it: a stream that breaks after one can still go to another backend.
    pub content: bool,
    /// A block has started: the answer is under way (the first-content timer stops; a tool
    /// call's input may stream for minutes before its block is whole).
    pub started: bool,
    /// The index of the tool_use block in progress.
    pub tool_open: Option<u64>,
    /// Tokens reported so far.
    pub usage: Usage,
}

impl StreamInspector {
    /// Judges one frame.
    pub fn frame(&mut self, f: &Frame) -> Verdict {
        self.judge_as::<DeltaPeek>(f).0
    }

    /// Judges one frame, and hands back a `content_block_delta`'s piece for a whole answer
    /// being rebuilt: the event is read once, here, not again by the assembler.
    pub fn judge<'f>(&mut self, f: &'f Frame) -> (Verdict, Option<DeltaPiece<'f>>) {
        let (verdict, piece) = self.judge_as::<DeltaFull>(f);
        // serde's derive reads an event from an array too, field by field (as it always
        // has, to judge it); the assembler's tree finds no fields in one.
        let object = |d: &str| {
            d.trim_start_matches([' ', '\t', '\n', '\r'])
                .starts_with('{')
        };
        let piece = piece.filter(|_| f.data.as_deref().is_some_and(object));
        (verdict, piece)
    }

    fn judge_as<'f, D: Delta<'f> + Deserialize<'f>>(
        &mut self,
        f: &'f Frame,
    ) -> (Verdict, Option<DeltaPiece<'f>>) {
        let Some(data) = &f.data else {
            return (Verdict::Forward, None); // comment or keep-alive
        };
        let ev: EventPeek<D> = match serde_json::from_str(data) {
            Ok(ev) => ev,
            Err(e) => {
                let why = format!("the upstream sent an event whose data is not valid JSON ({e})");
                return (Verdict::Fail(FailureKind::Malformed, why), None);
            }
        };
        let mut piece = None;
        match ev.ty.as_ref() {
            "message_start" => {
                if let Some(n) = ev.message.and_then(|m| m.usage).and_then(|u| u.input()) {
                    self.usage.input_tokens = n;
                }
            }
            "content_block_start" => {
                self.started = true;
                if let Some(i) = ev.index {
                    self.open_blocks.insert(i);
                    if ev.content_block.is_some_and(|b| b.ty == "tool_use") {
                        self.tool_open = Some(i);
                    }
                }
            }
            "content_block_delta" => {
                if let Some(d) = ev.delta {
                    self.content |= d.has_text();
                    piece = ev.index.and_then(|i| d.piece(i));
                }
            }
            "content_block_stop" => {
                self.content = true;
                if let Some(i) = ev.index {
                    self.open_blocks.remove(&i);
                    if self.tool_open == Some(i) {
                        self.tool_open = None;
                    }
                }
            }
            "message_delta" => {
                if let Some(r) = ev.delta.and_then(Delta::stop_reason) {
                    self.stop_reason = Some(r);
                }
                if let Some(u) = ev.usage {
                    if let Some(n) = u.output_tokens {
                        self.usage.output_tokens = n;
                    }
                    if let Some(n) = u.input() {
                        self.usage.input_tokens = n;
                    }
                }
            }
            "message_stop" => self.saw_stop = true,
            "error" => {
                self.saw_error = true;
                return (Verdict::ForwardError, None);
            }
            _ => {}
        }
        (Verdict::Forward, piece)
    }

    /// Judges the end of the stream.
    pub fn end(&mut self) -> Ending {
        if self.saw_error {
            return Ending::UpstreamError;
        }
        match (&self.stop_reason, self.open_blocks.first()) {
            (Some(_), None) => Ending::Complete {
                // Claude Code treats a response as finished at the final message_delta
                // (protocol.md §1.7); strict clients also want message_stop, so supply it.
                append: (!self.saw_stop).then(|| Frame::named("message_stop", r#"{"type":"message_stop"}"#).raw),
            },
            (_, Some(i)) => Ending::Truncated(format!(
                "the upstream stream ended with content block {i} still open (no content_block_stop, no stop_reason)"
            )),
            (None, None) => {
                Ending::Truncated("the upstream stream ended before its final message_delta (no stop_reason)".into())
            }
        }
    }
}

/// What a whole Message is judged by, borrowed from the body where it can be (no copies on the
/// passthrough path).
#[derive(Deserialize)]
struct BodyPeek<'a> {
    #[serde(rename = "type", borrow)]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow)]
    stop_reason: Option<Cow<'a, str>>,
    usage: Option<UsagePeek>,
}

pub(super) fn check_body(body: &[u8]) -> Result<Usage, BodyProblem> {
    let b: BodyPeek = serde_json::from_slice(body).map_err(|e| {
        BodyProblem::Malformed(format!("the upstream's body is not valid JSON ({e})"))
    })?;
    if b.ty.as_deref() != Some("message") {
        return Err(BodyProblem::Incomplete(format!(
            "the upstream's body is not a Message (type {:?})",
            b.ty.unwrap_or_default()
        )));
    }
    if b.stop_reason.is_none() {
        return Err(BodyProblem::Incomplete(
            "the upstream's Message has no stop_reason".into(),
        ));
    }
    let u = b.usage.unwrap_or_default();
    Ok(Usage {
        input_tokens: u.input().unwrap_or(0),
        output_tokens: u.output_tokens.unwrap_or(0),
    })
}

/// `message_stop` as bytes, for tests and the mock.
pub fn message_stop_frame() -> Bytes {
    Frame::named("message_stop", r#"{"type":"message_stop"}"#).raw
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::Splitter;

    fn judge(stream: &str) -> (Vec<Verdict>, Ending) {
        let mut frames = Vec::new();
        let mut s = Splitter::new();
        s.feed(stream.as_bytes(), &mut frames);
        let mut i = StreamInspector::default();
        let verdicts = frames.iter().map(|f| i.frame(f)).collect();
        (verdicts, i.end())
    }

    const START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n";
    const BLOCK: &str = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n";
    const STOP_BLOCK: &str =
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n";
    const DELTA: &str = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":7}}\n\n";
    const STOP: &str = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    #[test]
    fn a_whole_stream_is_complete_and_counts_tokens() {
        let mut frames = Vec::new();
        Splitter::new().feed(
            format!("{START}{BLOCK}{STOP_BLOCK}{DELTA}{STOP}").as_bytes(),
            &mut frames,
        );
        let mut i = StreamInspector::default();
        assert!(frames.iter().all(|f| i.frame(f) == Verdict::Forward));
        assert_eq!(i.end(), Ending::Complete { append: None });
        assert_eq!(
            i.usage,
            Usage {
                input_tokens: 15,
                output_tokens: 7
            }
        );
    }

    #[test]
    fn a_missing_message_stop_is_supplied_after_a_final_delta() {
        let (_, end) = judge(&format!("{START}{BLOCK}{STOP_BLOCK}{DELTA}"));
        assert_eq!(
            end,
            Ending::Complete {
                append: Some(message_stop_frame())
            }
        );
    }

    #[test]
    fn eof_inside_a_block_is_truncation() {
        let (_, end) = judge(&format!("{START}{BLOCK}"));
        assert!(matches!(end, Ending::Truncated(m) if m.contains("block 0 still open")));
    }

    #[test]
    fn eof_after_message_start_only_is_truncation() {
        assert!(matches!(judge(START).1, Ending::Truncated(_)));
    }

    #[test]
    fn an_error_event_is_forwarded_and_ends_the_stream() {
        let err = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let (v, end) = judge(&format!("{START}{BLOCK}{err}"));
        assert_eq!(v.last(), Some(&Verdict::ForwardError));
        assert_eq!(end, Ending::UpstreamError);
    }

    #[test]
    fn malformed_json_fails_the_frame() {
        let (v, _) = judge(&format!(
            "{START}event: content_block_delta\ndata: {{\"type\":\"content_bl\n\n"
        ));
        assert!(matches!(
            v.last(),
            Some(Verdict::Fail(FailureKind::Malformed, _))
        ));
    }

    #[test]
    fn bodies_without_stop_reason_are_incomplete() {
        assert!(check_body(br#"{"type":"message","content":[],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":4}}"#).is_ok());
        assert!(matches!(
            check_body(br#"{"type":"message","content":[],"stop_reason":null}"#),
            Err(BodyProblem::Incomplete(_))
        ));
        assert!(matches!(
            check_body(br#"{"type":"message","cont"#),
            Err(BodyProblem::Malformed(_))
        ));
    }
}
