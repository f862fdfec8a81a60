//! Server-sent events framing: splits a byte stream into whole events, keeping each event's
//! exact bytes so a passthrough can forward them unchanged. Knows no provider.
//!
//! Framing follows the WHATWG EventSource rules: lines end in `\n`, `\r\n` or `\r`; an empty
//! line ends an event; `:` starts a comment; `data:` lines of one event are joined with `\n`.
//! The result never depends on where the transport cut the bytes.

use bytes::{Bytes, BytesMut};

/// One complete event as it came off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The exact bytes of the event, blank-line terminator included.
    pub raw: Bytes,
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`; `None` when the event had no data line.
    pub data: Option<String>,
}

impl Frame {
    /// Builds a frame in the `event: …\ndata: …\n\n` shape Anthropic streams use.
    pub fn named(event: &str, data: &str) -> Frame {
        let raw = format!("event: {event}\ndata: {data}\n\n");
        Frame {
            raw: Bytes::from(raw),
            event: Some(event.to_owned()),
            data: Some(data.to_owned()),
        }
    }

    /// Builds a data-only frame, the shape OpenAI streams use.
    pub fn data_only(data: &str) -> Frame {
        Frame {
            raw: Bytes::from(format!("data: {data}\n\n")),
            event: None,
            data: Some(data.to_owned()),
        }
    }
}

/// Incremental splitter: feed it chunks as they arrive, take whole frames out.
#[derive(Debug, Default)]
pub struct Splitter {
    buf: BytesMut,
    /// Bytes of `buf` already scanned for a line end, so each byte is scanned once.
    scanned: usize,
    /// Start of the current (unfinished) line within `buf`.
    line_start: usize,
    event: Option<String>,
    data: Option<String>,
}

impl Splitter {
    /// Creates an empty splitter.
    pub fn new() -> Splitter {
        Splitter::default()
    }

    /// Appends `chunk` and pushes every event it completes onto `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Frame>) {
        self.buf.extend_from_slice(chunk);
        self.scan(false, out);
    }

    /// The stream ended: a `\r` that was waiting to see whether a `\n` follows ends its line.
    pub fn finish(&mut self, out: &mut Vec<Frame>) {
        self.scan(true, out);
    }

    fn scan(&mut self, at_end: bool, out: &mut Vec<Frame>) {
        while self.scanned < self.buf.len() {
            let Some(found) = memchr::memchr2(b'\n', b'\r', &self.buf[self.scanned..]) else {
                self.scanned = self.buf.len();
                return;
            };
            let i = self.scanned + found;
            let b = self.buf[i];
            let mut next = i + 1;
            if b == b'\r' {
                if next == self.buf.len() && !at_end {
                    self.scanned = i;
                    // `\r\n` may be split across chunks: decide when the next byte arrives, so
                    // the frames never depend on where the transport cut the stream.
                    return;
                }
                if self.buf.get(next) == Some(&b'\n') {
                    next += 1;
                }
            }
            self.scanned = next;
            let line_start = self.line_start;
            self.line_start = next;
            if i == line_start {
                self.dispatch(next, out);
            } else {
                let buf = std::mem::take(&mut self.buf);
                let bytes = &buf[line_start..i];
                match std::str::from_utf8(bytes) {
                    Ok(line) => self.field(line),
                    Err(_) => self.field(&String::from_utf8_lossy(bytes)),
                }
                self.buf = buf;
            }
        }
    }

    /// How many bytes of an unfinished event are buffered (what an endless line or event
    /// would grow without bound; the stream caps it).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True when bytes of an unfinished event are buffered (a stream ending now is cut mid-event).
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    fn field(&mut self, line: &str) {
        if line.starts_with(':') {
            return;
        }
        // The two names that matter first, by their prefix: `split_once` goes through
        // `memchr`, which costs more than the whole line on lines this short (6.8k
        // instructions of a 20-token answer's 26 events).
        let (name, value) = if let Some(v) = line.strip_prefix("data:") {
            ("data", v)
        } else if let Some(v) = line.strip_prefix("event:") {
            ("event", v)
        } else {
            line.split_once(':').unwrap_or((line, ""))
        };
        let value = value.strip_prefix(' ').unwrap_or(value);
        match name {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
    }

    fn dispatch(&mut self, end: usize, out: &mut Vec<Frame>) {
        let raw = self.buf.split_to(end).freeze();
        self.scanned -= end;
        self.line_start -= end;
        out.push(Frame {
            raw,
            event: self.event.take(),
            data: self.data.take(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(input: &[u8], cuts: &[usize]) -> Vec<Frame> {
        let mut s = Splitter::new();
        let mut out = Vec::new();
        let mut prev = 0;
        for &c in cuts.iter().chain(std::iter::once(&input.len())) {
            s.feed(&input[prev..c], &mut out);
            prev = c;
        }
        s.finish(&mut out);
        out
    }

    const STREAM: &[u8] = b"event: message_start\ndata: {\"a\":1}\n\n: comment\n\nevent: ping\r\ndata: {}\r\n\r\ndata: line1\ndata: line2\n\ndata: [DONE]\r\r";

    #[test]
    fn splits_events_and_keeps_their_exact_bytes() {
        let frames = split_all(STREAM, &[]);
        assert_eq!(frames.len(), 5);
        assert_eq!(frames[0].event.as_deref(), Some("message_start"));
        assert_eq!(frames[0].data.as_deref(), Some("{\"a\":1}"));
        assert_eq!(
            &frames[0].raw[..],
            b"event: message_start\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(frames[1].data, None, "a comment-only event carries no data");
        assert_eq!(frames[2].event.as_deref(), Some("ping"));
        assert_eq!(frames[3].data.as_deref(), Some("line1\nline2"));
        assert_eq!(frames[4].data.as_deref(), Some("[DONE]"));
        let joined: Vec<u8> = frames.iter().flat_map(|f| f.raw.to_vec()).collect();
        assert_eq!(joined, STREAM, "no byte is lost or changed");
    }

    #[test]
    fn every_single_cut_point_gives_the_same_frames() {
        let whole = split_all(STREAM, &[]);
        for cut in 0..=STREAM.len() {
            assert_eq!(split_all(STREAM, &[cut]), whole, "cut at byte {cut}");
        }
    }

    #[test]
    fn byte_at_a_time_gives_the_same_frames() {
        let cuts: Vec<usize> = (1..STREAM.len()).collect();
        assert_eq!(split_all(STREAM, &cuts), split_all(STREAM, &[]));
    }

    /// The field rules of the SSE spec (WHATWG HTML, "Interpreting an event stream"): the
    /// name runs to the first colon, one space after it is dropped, a line without a colon
    /// is a name with an empty value, and unknown names are ignored.
    #[test]
    fn fields_are_read_as_the_spec_reads_them() {
        let cases: &[(&[u8], Option<&str>, Option<&str>)] = &[
            (b"data:x\n\n", None, Some("x")),
            (b"data:  two\n\n", None, Some(" two")),
            (b"data\n\n", None, Some("")),
            (b"data\ndata: b\n\n", None, Some("\nb")),
            (b"data:\n\n", None, Some("")),
            (b"dataX: y\ndata: z\n\n", None, Some("z")),
            (b"datum: y\n\n", None, None),
            (b"event:ping\ndata: 1\n\n", Some("ping"), Some("1")),
            (b"event\ndata: 1\n\n", Some(""), Some("1")),
            (b"events: no\ndata: 1\n\n", None, Some("1")),
            (b"event: a:b\ndata: c:d\n\n", Some("a:b"), Some("c:d")),
            (b"DATA: no\ndata: yes\n\n", None, Some("yes")),
        ];
        for (input, event, data) in cases {
            let frames = split_all(input, &[]);
            let shown = String::from_utf8_lossy(input);
            assert_eq!(frames.len(), 1, "{shown:?}");
            assert_eq!(frames[0].event.as_deref(), *event, "{shown:?}");
            assert_eq!(frames[0].data.as_deref(), *data, "{shown:?}");
        }
    }

    #[test]
    fn an_unfinished_event_is_held_back() {
        let mut s = Splitter::new();
        let mut out = Vec::new();
        s.feed(b"data: {\"x\":1}\n\ndata: {\"trunc", &mut out);
        assert_eq!(out.len(), 1);
        assert!(s.has_partial());
        s.feed(b"\"}\n\n", &mut out);
        assert_eq!(out.len(), 2);
        assert!(!s.has_partial());
    }
}
