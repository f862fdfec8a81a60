//! The top level of a request body, read without decoding it. A Claude Code request is
//! 50–200 KB (system prompt, tool schemas, the conversation) and the router needs three of its
//! fields: `model`, `stream` and `stream_options`. Finding them with serde's derive walked
//! every byte of every string to skip it: for a 97 KB body, 707k of the gateway's 847k
//! instructions per request (BENCHMARKS.md, "The paths users take"). Here the top level is
//! checked to be well-formed JSON, strings are skipped a word at a time, and the three values
//! come back as byte ranges.
//!
//! The scan is at least as strict as serde_json: whatever it cannot vouch for (malformed JSON,
//! a field given twice, an escaped key or model name, very deep nesting) is
//! `None`, and the caller parses the body with serde, which gives the error with its path (or,
//! for what was only unusual, the answer). So a body is accepted here only if serde would
//! accept it too, with the same three values.
//!
//! [`splice`] uses the same ranges to write a body for a backend that names another model or
//! is asked for a stream, with every other byte kept as the client sent it.

use std::ops::Range;

/// Nesting below the top level that the scan follows; deeper bodies go to serde. (serde skips
/// the fields it does not want without a depth limit, so this only bounds the scan's own
/// stack.)
const MAX_DEPTH: usize = 120;

/// Where the top-level fields the router reads are, in a body that is a well-formed JSON
/// object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TopLevel {
    /// The value of `model` (with its quotes), `stream` and `stream_options`, when present.
    pub model: Option<Range<usize>>,
    pub stream: Option<Range<usize>>,
    pub stream_options: Option<Range<usize>>,
    /// The offset of the object's closing brace.
    pub close: usize,
    /// The object has no fields.
    pub empty: bool,
}

impl TopLevel {
    /// `model`'s value as a string: `None` when absent, not a string, or escaped (serde then
    /// decodes it).
    pub fn model<'a>(&self, body: &'a [u8]) -> Option<&'a str> {
        let r = self.model.clone()?;
        let v = &body[r];
        if v.len() < 2 || v[0] != b'"' || v.contains(&b'\\') {
            return None;
        }
        std::str::from_utf8(&v[1..v.len() - 1]).ok()
    }

    /// `stream` as serde reads an `Option<bool>`: `Some(None)` when absent or null, `None`
    /// when it is not a boolean.
    pub fn stream(&self, body: &[u8]) -> Option<Option<bool>> {
        match self.stream.clone().map(|r| &body[r]) {
            None | Some(b"null") => Some(None),
            Some(b"true") => Some(Some(true)),
            Some(b"false") => Some(Some(false)),
            Some(_) => None,
        }
    }
}

/// Scans `body`; `None` when it is not a well-formed JSON object or is one the scan leaves
/// to serde (see the module's note).
pub(crate) fn scan(body: &[u8]) -> Option<TopLevel> {
    let mut s = Scan { b: body, i: 0 };
    let mut top = TopLevel::default();
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        top.close = s.i;
        top.empty = true;
        s.i += 1;
    } else {
        loop {
            s.ws();
            let key = s.string()?;
            // serde decodes a top-level key to match it against the fields it wants.
            let name = &body[key.start + 1..key.end - 1];
            if name.contains(&b'\\') || std::str::from_utf8(name).is_err() {
                return None;
            }
            s.ws();
            s.eat(b':')?;
            s.ws();
            let start = s.i;
            s.value()?;
            let slot = match name {
                b"model" => &mut top.model,
                b"stream" => &mut top.stream,
                b"stream_options" => &mut top.stream_options,
                _ => &mut None,
            };
            if slot.replace(start..s.i).is_some() {
                // serde refuses a field given twice.
                return None;
            }
            s.ws();
            match s.peek()? {
                b',' => s.i += 1,
                b'}' => {
                    top.close = s.i;
                    s.i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    s.ws();
    (s.i == body.len()).then_some(top)
}

/// `body` with `model`'s value replaced by `model` (when given), and with `stream: true` (and
/// `stream_options` replaced by `options`, when given) set or added; everything else is kept
/// byte for byte. `top` is `scan(body)`.
pub(crate) fn splice(
    body: &[u8],
    top: &TopLevel,
    model: Option<&str>,
    stream: bool,
    options: Option<&str>,
) -> Vec<u8> {
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    let mut added: Vec<String> = Vec::new();
    let mut set = |at: &Option<Range<usize>>, name: &str, value: String| match at {
        Some(r) => edits.push((r.clone(), value)),
        None => added.push(format!("\"{name}\":{value}")),
    };
    if let Some(m) = model {
        set(
            &top.model,
            "model",
            serde_json::to_string(m).expect("a string always serializes"),
        );
    }
    if stream {
        set(&top.stream, "stream", "true".into());
    }
    if let Some(o) = options {
        set(&top.stream_options, "stream_options", o.to_owned());
    }
    if !added.is_empty() {
        let sep = if top.empty { "" } else { "," };
        edits.push((top.close..top.close, format!("{sep}{}", added.join(","))));
    }
    edits.sort_by_key(|(r, _)| r.start);
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut at = 0;
    for (r, v) in edits {
        out.extend_from_slice(&body[at..r.start]);
        out.extend_from_slice(v.as_bytes());
        at = r.end;
    }
    out.extend_from_slice(&body[at..]);
    out
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    /// A string at the cursor (its range, quotes included): escapes checked, no raw control
    /// characters, as serde_json reads one.
    fn string(&mut self) -> Option<Range<usize>> {
        let start = self.i;
        self.eat(b'"')?;
        loop {
            self.i = special(self.b, self.i);
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(start..self.i);
                }
                b'\\' => {
                    self.i += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let hex = self.b.get(self.i + 1..self.i + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.i += 5;
                        }
                        _ => return None,
                    }
                }
                // A raw control character.
                _ => return None,
            }
        }
    }

    fn digits(&mut self) -> Option<()> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        (self.i > start).then_some(())
    }

    /// `-? (0 | [1-9][0-9]*) (\.[0-9]+)? ([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits()?,
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.digits()?;
        }
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        (self.b.get(self.i..self.i + word.len())? == word).then(|| self.i += word.len())
    }

    /// An object's key and its colon.
    fn key(&mut self) -> Option<()> {
        self.ws();
        self.string()?;
        self.ws();
        self.eat(b':')
    }

    /// One value at the cursor, nested ones included (iteratively: a hostile body cannot
    /// exhaust the stack).
    fn value(&mut self) -> Option<()> {
        let mut open: Vec<u8> = Vec::new();
        loop {
            self.ws();
            match self.peek()? {
                c @ (b'{' | b'[') => {
                    self.i += 1;
                    self.ws();
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.i += 1;
                    } else {
                        if open.len() == MAX_DEPTH {
                            return None;
                        }
                        open.push(close);
                        if close == b'}' {
                            self.key()?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // After a value: close what ends here, or go on to the next element.
            loop {
                let Some(&close) = open.last() else {
                    return Some(());
                };
                self.ws();
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        if close == b'}' {
                            self.key()?;
                        }
                        break;
                    }
                    c if c == close => {
                        self.i += 1;
                        open.pop();
                    }
                    _ => return None,
                }
            }
        }
    }
}

/// The offset of the first `"`, `\` or control character at or after `i` (or the end), eight
/// bytes at a time (a conversation's text has an escape every few dozen bytes, so what a hit
/// costs matters as much as the stride).
fn special(b: &[u8], mut i: usize) -> usize {
    while let Some(word) = b.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
        let hits = specials(u64::from_le_bytes(word));
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

/// The top bit of each byte of `x` that may be special. A borrow can also mark a byte above a
/// special one, never below it, so the lowest mark is always the first special byte.
fn specials(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & TOPS;
    let quote = zero(x ^ (ONES * u64::from(b'"')));
    let backslash = zero(x ^ (ONES * u64::from(b'\\')));
    let control = x.wrapping_sub(ONES * 0x20) & !x & TOPS;
    quote | backslash | control
}

#[cfg(test)]
mod tests {
    use super::super::Peek;
    use super::*;
    use serde_json::Value;

    /// The scan never accepts what serde refuses, and what the router reads from it is what
    /// serde reads (`Peek::from_scan` gives up where serde must decide).
    fn agrees(body: &[u8]) -> bool {
        let Some(fast) = scan(body).and_then(|top| Peek::from_scan(body, &top)) else {
            return true;
        };
        serde_json::from_slice::<Peek>(body).ok() == Some(fast)
    }

    const FUZZ: usize = 20_000;

    const BODY: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":256,"system":[{"type":"text","text":"You are \"Claude\" \u00e9\n\ttab","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":[{"type":"text","text":"héllo ✓ ∑ 🙂 — 1e5 -0.5e-3 0 [] {}"}]}],"tools":[{"name":"t","input_schema":{"type":"object","properties":{"a":{"type":["string","null"],"enum":[1,2.5,-3e+2,true,false,null]}}}}],"stream":true,"stream_options":{"include_usage":true}}"#;

    #[test]
    fn a_well_formed_body_gives_its_fields() {
        let b = BODY.as_bytes();
        let top = scan(b).expect("a well-formed body");
        assert_eq!(top.model(b), Some("claude-sonnet-4-5"));
        assert_eq!(top.stream(b), Some(Some(true)));
        assert_eq!(
            &b[top.stream_options.clone().unwrap()],
            br#"{"include_usage":true}"#
        );
        assert_eq!(b[top.close], b'}');
        assert!(agrees(b));
        let p = Peek::from_scan(b, &top).unwrap();
        assert_eq!(
            (p.model.as_str(), p.stream),
            ("claude-sonnet-4-5", Some(true))
        );
        assert_eq!(p.stream_options.and_then(|o| o.include_usage), Some(true));
        let spaced = " {\n \"model\" : \"m\" ,\r\n\t\"stream\" : null } \n";
        let top = scan(spaced.as_bytes()).unwrap();
        assert_eq!(top.model(spaced.as_bytes()), Some("m"));
        assert_eq!(top.stream(spaced.as_bytes()), Some(None));
        assert!(scan(b"{}").unwrap().empty);
    }

    #[test]
    fn what_the_scan_leaves_to_serde() {
        for bad in [
            &b""[..],
            b"[]",
            b"{",
            b"{\"model\":\"m\"",
            b"{\"model\":\"m\",}",
            b"{\"model\" \"m\"}",
            b"{\"model\":\"m\"} x",
            b"{\"model\":\"m\"}{}",
            b"{\"a\":01}",
            b"{\"a\":1.}",
            b"{\"a\":.5}",
            b"{\"a\":1e}",
            b"{\"a\":+1}",
            b"{\"a\":tru}",
            b"{\"a\":\"\x01\"}",
            b"{\"a\":\"\\x\"}",
            b"{\"a\":\"\\u12g4\"}",
            b"{\"a\":[1,]}",
            b"{\"a\":[1 2]}",
            b"{\"a\":{\"b\"}}",
            b"{\"a\":{\"b\":1,}}",
            b"{\"a\":{1:2}}",
            b"{\"model\":\"a\",\"model\":\"b\"}",
            b"{\"mod\\u0065l\":\"m\"}",
        ] {
            assert_eq!(scan(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(scan(deep.as_bytes()), None);
        let fine = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(scan(fine.as_bytes()).is_some());
        // An escaped model name is serde's to decode.
        let esc = br#"{"model":"claude\u002dx"}"#;
        assert_eq!(scan(esc).unwrap().model(esc), None);
    }

    /// Every prefix and thousands of one-byte changes of a real-shaped body: the scan accepts
    /// only what serde accepts, and reads the same fields.
    #[test]
    fn the_scan_agrees_with_serde_on_damaged_bodies() {
        let b = BODY.as_bytes();
        for n in 0..b.len() {
            assert!(agrees(&b[..n]), "prefix {n}");
        }
        let alphabet = b"{}[]\":,\\ ntfrue0-.e+E1\x00\x1fa\xc3";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut accepted = 0;
        for _ in 0..FUZZ {
            let mut m = b.to_vec();
            for _ in 0..1 + next() % 3 {
                let at = next() as usize % m.len();
                let c = alphabet[next() as usize % alphabet.len()];
                match next() % 3 {
                    0 => m[at] = c,
                    1 => m.insert(at, c),
                    _ => {
                        m.remove(at);
                    }
                }
            }
            assert!(agrees(&m), "{}", String::from_utf8_lossy(&m));
            accepted += usize::from(scan(&m).is_some());
        }
        // The damage lands in strings often enough that many still scan.
        assert!(accepted > FUZZ / 20, "{accepted}");
    }

    #[test]
    fn the_word_at_a_time_search_finds_the_first_special_byte() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..50_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|k| {
                    let r = (seed >> (k % 56)) as u8 ^ (k as u8).wrapping_mul(37);
                    [
                        b'"', b'\\', 0x1f, 0x20, 0x00, b'a', 0x7f, 0xff, 0x21, 0x5b, 0x5d,
                    ][r as usize % 11]
                })
                .collect();
            let start = (seed >> 8) as usize % (len + 1);
            let want = (start..len)
                .find(|&k| matches!(bytes[k], b'"' | b'\\') || bytes[k] < 0x20)
                .unwrap_or(len);
            assert_eq!(special(&bytes, start), want, "{bytes:?} from {start}");
        }
    }

    #[test]
    fn a_splice_changes_only_what_it_names() {
        let b = BODY.as_bytes();
        let top = scan(b).unwrap();
        let out = splice(
            b,
            &top,
            Some("gpt-\"4o\""),
            true,
            Some(r#"{"include_usage":true}"#),
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        let mut want: Value = serde_json::from_slice(b).unwrap();
        want["model"] = "gpt-\"4o\"".into();
        assert_eq!(v, want);
        // Field order and every other byte kept.
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with(r#"{"model":"gpt-\"4o\"","max_tokens":256,"system""#));

        let plain = br#"{ "messages": [], "model": "m" }"#;
        let top = scan(plain).unwrap();
        let out = splice(plain, &top, None, true, Some(r#"{"include_usage":true}"#));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{ "messages": [], "model": "m" ,"stream":true,"stream_options":{"include_usage":true}}"#
        );
        let out = splice(b"{}", &scan(b"{}").unwrap(), Some("m"), true, None);
        assert_eq!(out, br#"{"model":"m","stream":true}"#);
    }
}
