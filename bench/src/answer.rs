//! Reading an answer the way a client would, to judge it: complete, an explicit error, or
//! truncated yet delivered as if complete. Written from protocol.md independently of the
//! gateway's own decoders, so a bug there cannot hide itself here.

use serde_json::Value;

/// The request and answer shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Api {
    /// OpenAI Chat Completions.
    Openai,
    /// Anthropic Messages.
    Anthropic,
}

/// What the client got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The whole answer, with its stop reason.
    Complete,
    /// The client was told: an error status, an error event, a broken connection.
    Error,
    /// The answer ended as if finished, without an error, but is not the whole answer.
    Truncated,
    /// No end within the time limit.
    Timeout,
}

impl Outcome {
    /// The CSV name.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Error => "error",
            Outcome::Truncated => "truncated",
            Outcome::Timeout => "timeout",
        }
    }
}

/// Reads one answer as it arrives.
pub struct Reader {
    api: Api,
    stream: bool,
    expect: Option<String>,
    buf: Vec<u8>,
    text: String,
    stopped: bool,
    error_event: bool,
    malformed: bool,
}

impl Reader {
    /// A reader for one answer.
    pub fn new(api: Api, stream: bool, expect: Option<String>) -> Reader {
        Reader {
            api,
            stream,
            expect,
            buf: Vec::new(),
            text: String::new(),
            stopped: false,
            error_event: false,
            malformed: false,
        }
    }

    /// Takes the next bytes; true once any content has arrived (the first token's time).
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        self.buf.extend_from_slice(bytes);
        if self.stream {
            while let Some((end, skip)) = event_end(&self.buf) {
                let event: Vec<u8> = self.buf.drain(..end + skip).take(end).collect();
                self.event(&String::from_utf8_lossy(&event));
            }
        }
        !self.text.is_empty()
    }

    fn event(&mut self, event: &str) {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if data.is_empty() {
            return;
        }
        let data = data.join("\n");
        if data == "[DONE]" {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            self.malformed = true;
            return;
        };
        match self.api {
            Api::Openai => {
                if v.get("error").is_some() {
                    self.error_event = true;
                }
                if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                    self.text.push_str(c);
                }
                if v["choices"][0]["finish_reason"].is_string() {
                    self.stopped = true;
                }
            }
            Api::Anthropic => match v["type"].as_str() {
                Some("content_block_delta") => {
                    if let Some(t) = v["delta"]["text"].as_str() {
                        self.text.push_str(t);
                    }
                }
                Some("message_delta") if v["delta"]["stop_reason"].is_string() => {
                    self.stopped = true;
                }
                Some("error") => self.error_event = true,
                _ => {}
            },
        }
    }

    /// The first bytes of a body, for a report of what went wrong.
    pub fn head_of_body(&self) -> String {
        String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)]).into_owned()
    }

    /// Judges the answer once its body has ended (`broken`: the connection failed first).
    pub fn finish(&mut self, status: u16, broken: bool) -> Outcome {
        if !(200..300).contains(&status) || broken || self.error_event {
            return Outcome::Error;
        }
        if !self.stream {
            let Ok(v) = serde_json::from_slice::<Value>(&self.buf) else {
                // A client cannot parse it: it knows something went wrong.
                return Outcome::Error;
            };
            match self.api {
                Api::Openai => {
                    self.text = v["choices"][0]["message"]["content"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                    self.stopped = v["choices"][0]["finish_reason"].is_string();
                }
                Api::Anthropic => {
                    self.text = v["content"]
                        .as_array()
                        .map(|blocks| blocks.iter().filter_map(|b| b["text"].as_str()).collect())
                        .unwrap_or_default();
                    self.stopped = v["stop_reason"].is_string();
                }
            }
        } else if !self.buf.iter().all(u8::is_ascii_whitespace) {
            // An unfinished last event: the same as an answer cut short.
            self.malformed = true;
        }
        let whole = self.expect.as_ref().is_none_or(|e| *e == self.text);
        if self.stopped && whole {
            Outcome::Complete
        } else {
            Outcome::Truncated
        }
    }
}

/// The end of the first SSE event in `buf` and the length of its blank-line terminator.
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    for i in 0..buf.len() {
        if buf[i..].starts_with(b"\r\n\r\n") {
            return Some((i, 4));
        }
        if buf[i..].starts_with(b"\n\n") || buf[i..].starts_with(b"\r\r") {
            return Some((i, 2));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openai_stream(parts: &[&str], finish: bool) -> String {
        let mut s = String::new();
        for p in parts {
            s += &format!(
                "data: {}\n\n",
                serde_json::json!({"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]})
            );
        }
        if finish {
            s += "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        }
        s
    }

    fn judge(api: Api, stream: bool, status: u16, body: &str, broken: bool) -> Outcome {
        let mut r = Reader::new(api, stream, Some("w0 w1".into()));
        // One byte at a time: events split anywhere.
        for b in body.as_bytes() {
            r.feed(std::slice::from_ref(b));
        }
        r.finish(status, broken)
    }

    #[test]
    fn a_whole_openai_stream_is_complete_and_a_cut_one_is_not() {
        let whole = openai_stream(&["w0", " w1"], true);
        assert_eq!(
            judge(Api::Openai, true, 200, &whole, false),
            Outcome::Complete
        );
        // Stopped halfway with a clean end: delivered as if complete.
        let cut = openai_stream(&["w0"], false);
        assert_eq!(
            judge(Api::Openai, true, 200, &cut, false),
            Outcome::Truncated
        );
        // A stop reason after half the text is still half the text.
        let short = openai_stream(&["w0"], true);
        assert_eq!(
            judge(Api::Openai, true, 200, &short, false),
            Outcome::Truncated
        );
        // The client saw the break: an explicit error, not a silent truncation.
        assert_eq!(judge(Api::Openai, true, 200, &cut, true), Outcome::Error);
        let err = cut + "data: {\"error\":{\"message\":\"upstream\"}}\n\n";
        assert_eq!(judge(Api::Openai, true, 200, &err, false), Outcome::Error);
    }

    #[test]
    fn anthropic_streams_need_their_stop_reason() {
        let ev = |v: serde_json::Value| format!("event: x\r\ndata: {v}\r\n\r\n");
        let mut s = String::new();
        for t in ["w0", " w1"] {
            s += &ev(
                serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}),
            );
        }
        let cut = s.clone();
        s +=
            &ev(serde_json::json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}));
        s += &ev(serde_json::json!({"type": "message_stop"}));
        assert_eq!(
            judge(Api::Anthropic, true, 200, &s, false),
            Outcome::Complete
        );
        assert_eq!(
            judge(Api::Anthropic, true, 200, &cut, false),
            Outcome::Truncated
        );
        let err =
            cut + &ev(serde_json::json!({"type": "error", "error": {"type": "overloaded_error"}}));
        assert_eq!(
            judge(Api::Anthropic, true, 200, &err, false),
            Outcome::Error
        );
    }

    #[test]
    fn whole_bodies_are_judged_by_text_and_status() {
        let ok = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"w0 w1"},"finish_reason":"stop"}]}"#;
        assert_eq!(judge(Api::Openai, false, 200, ok, false), Outcome::Complete);
        let half = ok.replace("w0 w1", "w0");
        assert_eq!(
            judge(Api::Openai, false, 200, &half, false),
            Outcome::Truncated
        );
        assert_eq!(
            judge(Api::Openai, false, 200, &ok[..40], false),
            Outcome::Error
        );
        assert_eq!(judge(Api::Openai, false, 529, ok, false), Outcome::Error);
        let msg = r#"{"content":[{"type":"text","text":"w0 w1"}],"stop_reason":"end_turn"}"#;
        assert_eq!(
            judge(Api::Anthropic, false, 200, msg, false),
            Outcome::Complete
        );
    }

    #[test]
    fn the_first_token_is_seen_when_it_arrives() {
        let mut r = Reader::new(Api::Openai, true, None);
        assert!(!r.feed(
            b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"
        ));
        assert!(r.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"w0\"}}]}\n\n"));
    }
}
