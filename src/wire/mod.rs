//! The wire formats, each to and from the canonical model (`crate::canonical`): requests
//! (decoded from clients, encoded for providers), streams (decoded from providers, encoded for
//! clients) and whole answers. One module per format, so a format's details live in one file
//! whichever side of the gateway speaks it.

pub mod anthropic;
pub mod gemini;
pub mod ollama;
pub mod openai;

use crate::canonical::{Block, Event, ImageSource, StreamFault};
use crate::error::GatewayError;
use crate::sse::Frame;
use serde_json::Value;

/// A string borrowed from an event's data unless it holds escapes (serde borrows a `Cow` only
/// when it is the field's whole type, not inside an `Option`).
#[derive(serde::Deserialize)]
#[serde(transparent)]
pub(crate) struct Text<'a>(#[serde(borrow)] pub std::borrow::Cow<'a, str>);

/// A JSON object read as `T`, and nothing else. serde's derive also reads a struct from an
/// array, field by field, where a JSON tree finds no fields in one; a typed reader that must
/// agree with a tree reads its objects through this.
pub(crate) struct Object<T>(pub T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Only<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Only<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Only(std::marker::PhantomData))
            .map(Object)
    }
}

/// A field read as a string when it is one, and accepted and skipped when it is any other
/// JSON value: a typed reader that judges a stream reads through this the fields it only
/// passes on, so reading them never makes it reject an event it accepted before.
#[derive(Default)]
pub(crate) struct Loose<'a>(pub Option<std::borrow::Cow<'a, str>>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Loose<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess};
        use std::borrow::Cow;
        struct Any;
        impl<'de> serde::de::Visitor<'de> for Any {
            type Value = Loose<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Loose<'de>, E> {
                Ok(Loose(Some(Cow::Borrowed(s))))
            }
            fn visit_str<E>(self, s: &str) -> Result<Loose<'de>, E> {
                Ok(Loose(Some(Cow::Owned(s.to_owned()))))
            }
            fn visit_string<E>(self, s: String) -> Result<Loose<'de>, E> {
                Ok(Loose(Some(Cow::Owned(s))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Loose<'de>, E> {
                Ok(Loose(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Loose<'de>, E> {
                Ok(Loose(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Loose<'de>, E> {
                Ok(Loose(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Loose<'de>, E> {
                Ok(Loose(None))
            }
            fn visit_unit<E>(self) -> Result<Loose<'de>, E> {
                Ok(Loose(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Loose<'de>, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Loose<'de>, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose(None))
            }
        }
        d.deserialize_any(Any)
    }
}

impl Loose<'_> {
    /// The string, if the field was one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// `s` with each byte in turn replaced by each of a few bytes JSON's grammar turns on, or
/// removed: the damaged events a decoder's direct path is checked against its tree on.
#[cfg(test)]
pub(crate) fn one_byte_changes(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    for at in 0..s.len() {
        for c in ["", "\"", "{", "}", "[", ",", ":", "\\", "n", "0", " "] {
            if s.is_char_boundary(at) && s.is_char_boundary(at + 1) {
                let mut m = s.to_owned();
                m.replace_range(at..at + 1, c);
                out.push(m);
            }
        }
    }
    out
}

/// Checks a decoder's direct path against its tree: each of `events`, between `before` and
/// `after`, gives the same events and results through `frame` (the decoder's, direct path
/// included) as through `tree` (its tree alone), and so the same state after; and more than a
/// hundred of them take the direct path (`direct`).
#[cfg(test)]
pub(crate) fn check_direct_path<D: Default>(
    before: &[&str],
    events: &[String],
    after: &[&str],
    frame: fn(&mut D, &Frame, &mut Vec<Event>) -> Result<(), StreamFault>,
    tree: fn(&mut D, &str, &mut Vec<Event>) -> Result<(), StreamFault>,
    direct: impl Fn(&str) -> bool,
) {
    let frame = |d: &mut D, data: &str, direct: bool, out: &mut Vec<Event>| {
        if direct {
            frame(d, &Frame::data_only(data), out)
        } else {
            tree(d, data, out)
        }
    };
    let run = |event: &str, direct: bool| {
        let mut d = D::default();
        let mut out = Vec::new();
        let mut results: Vec<_> = before
            .iter()
            .map(|e| frame(&mut d, e, true, &mut out))
            .collect();
        results.push(frame(&mut d, event, direct, &mut out));
        for a in after {
            results.push(frame(&mut d, a, true, &mut out));
        }
        (out, results)
    };
    let mut taken = 0;
    for e in events {
        assert_eq!(run(e, true), run(e, false), "{e}");
        taken += usize::from(direct(e));
    }
    assert!(taken > 100, "{taken}");
}

/// A provider's stream decoder, whichever API it speaks: whole SSE events in, loose canonical
/// events out (the `Guard` makes them strict).
#[derive(Debug)]
pub enum Decoder {
    /// Anthropic Messages SSE.
    Anthropic(anthropic::StreamDecoder),
    /// OpenAI chat-completion chunks.
    OpenAi(openai::StreamDecoder),
    /// Gemini `streamGenerateContent?alt=sse`.
    Gemini(gemini::StreamDecoder),
}

impl Decoder {
    /// Decodes one event, appending what it means to `out`.
    pub fn frame(&mut self, f: &Frame, out: &mut Vec<Event>) -> Result<(), StreamFault> {
        match self {
            Decoder::Anthropic(d) => d.frame(f, out),
            Decoder::OpenAi(d) => d.frame(f, out),
            Decoder::Gemini(d) => d.frame(f, out),
        }
    }
}

/// Claude Code's attribution block starts with this (protocol.md §1.3). It changes between
/// requests, so it is dropped toward every upstream but Anthropic (where the raw relay keeps it).
pub const ATTRIBUTION_PREFIX: &str = "x-anthropic-billing-header:";

/// An invalid client request, with where in the body.
pub(crate) fn bad(path: &str, msg: impl std::fmt::Display) -> GatewayError {
    GatewayError::InvalidRequest(format!("{path}: {msg}"))
}

/// The body as an object, and its required `model`.
pub(crate) fn object_with_model(
    v: &Value,
) -> Result<(&serde_json::Map<String, Value>, String), GatewayError> {
    let obj = v.as_object().ok_or_else(|| {
        bad(
            "body",
            format!("expected a JSON object, got {}", kind_of(v)),
        )
    })?;
    let model = opt_str(v, "model", "body")?.ok_or_else(|| bad("body.model", "is required"))?;
    Ok((obj, model))
}

pub(crate) fn opt_str(v: &Value, key: &str, path: &str) -> Result<Option<String>, GatewayError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(
            &format!("{path}.{key}"),
            format!("expected a string, got {}", kind_of(other)),
        )),
    }
}

pub(crate) fn opt_f64(v: &Value, key: &str, path: &str) -> Result<Option<f64>, GatewayError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(bad(
            &format!("{path}.{key}"),
            format!("expected a number, got {}", kind_of(other)),
        )),
    }
}

pub(crate) fn opt_u32(v: &Value, key: &str, path: &str) -> Result<Option<u32>, GatewayError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                bad(
                    &format!("{path}.{key}"),
                    format!("expected a non-negative integer, got {n}"),
                )
            }),
        Some(other) => Err(bad(
            &format!("{path}.{key}"),
            format!("expected an integer, got {}", kind_of(other)),
        )),
    }
}

pub(crate) fn opt_bool(v: &Value, key: &str, path: &str) -> Result<Option<bool>, GatewayError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(bad(
            &format!("{path}.{key}"),
            format!("expected true or false, got {}", kind_of(other)),
        )),
    }
}

/// Stop sequences: a string or an array of strings.
pub(crate) fn stop_list(v: Option<&Value>, path: &str) -> Result<Vec<String>, GatewayError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad(&format!("{path}[{i}]"), "expected a string"))
            })
            .collect(),
        Some(other) => Err(bad(
            path,
            format!("expected a string or an array, got {}", kind_of(other)),
        )),
    }
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A `data:<media type>;base64,<data>` URL as an image source; any other URL stays a URL.
pub(crate) fn image_from_url(url: &str) -> ImageSource {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((mt, data)) = rest.split_once(";base64,") {
            return ImageSource::Base64 {
                media_type: mt.to_owned(),
                data: data.to_owned(),
            };
        }
    }
    ImageSource::Url(url.to_owned())
}

/// An image source as a URL (`data:` for inline images).
pub(crate) fn image_url(src: &ImageSource) -> String {
    match src {
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        ImageSource::Url(u) => u.clone(),
    }
}

/// The media type of base64 image data, from its first bytes (Ollama sends bare base64).
pub(crate) fn sniff_image(data: &str) -> &'static str {
    if data.starts_with("iVBOR") {
        "image/png"
    } else if data.starts_with("R0lG") {
        "image/gif"
    } else if data.starts_with("UklG") {
        "image/webp"
    } else {
        "image/jpeg"
    }
}

/// The text of blocks, joined (for formats whose tool results are text only).
pub(crate) fn text_of(blocks: &[Block]) -> String {
    let mut out = String::new();
    for b in blocks {
        if let Block::Text(t) = b {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(t);
        }
    }
    out
}

/// Known output-token limits by model name (prefix match, longest first), so a client's
/// `max_tokens` (Claude Code asks for 32000 on unknown ids) is clamped to what the upstream
/// accepts instead of being refused with a 400. `max_output_tokens` in a provider's config
/// overrides this table.
pub fn known_output_limit(model: &str) -> Option<u32> {
    const TABLE: &[(&str, u32)] = &[
        ("gpt-3.5", 4_096),
        ("gpt-4-turbo", 4_096),
        ("gpt-4o", 16_384),
        ("gpt-4.1", 32_768),
        ("gpt-4", 8_192),
        ("gpt-5", 128_000),
        ("o1-mini", 65_536),
        ("o1", 100_000),
        ("o3", 100_000),
        ("o4", 100_000),
        ("gemini-1.5", 8_192),
        ("gemini-2.0", 8_192),
        ("gemini-2.5", 65_536),
        ("gemini-3", 65_536),
        ("claude-3-haiku", 4_096),
        ("claude-3-opus", 4_096),
        ("claude-3-5", 8_192),
        ("claude-3-7", 64_000),
        ("claude-opus-4", 32_000),
        ("claude-sonnet-4", 64_000),
        ("claude-haiku-4", 64_000),
        ("deepseek-chat", 8_192),
        ("deepseek-reasoner", 64_000),
    ];
    let name = model.rsplit('/').next().unwrap_or(model);
    TABLE
        .iter()
        .filter(|(p, _)| name.starts_with(p))
        .max_by_key(|(p, _)| p.len())
        .map(|&(_, n)| n)
}

/// A model's context window, for Ollama clients that ask (`/api/show`); 128k when unknown.
pub fn known_context_length(model: &str) -> u64 {
    let name = model.rsplit('/').next().unwrap_or(model);
    if name.starts_with("claude") {
        200_000
    } else if name.starts_with("gemini") || name.starts_with("gpt-4.1") {
        1_048_576
    } else if name.starts_with("gpt-5") {
        400_000
    } else {
        128_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_match_the_longest_prefix_and_ignore_vendor_prefixes() {
        assert_eq!(known_output_limit("gpt-4o-mini"), Some(16_384));
        assert_eq!(known_output_limit("gpt-4-0613"), Some(8_192));
        assert_eq!(known_output_limit("openai/gpt-4.1"), Some(32_768));
        assert_eq!(known_output_limit("qwen3-coder"), None);
    }

    #[test]
    fn data_urls_become_inline_images() {
        assert_eq!(
            image_from_url("data:image/png;base64,AAAA"),
            ImageSource::Base64 {
                media_type: "image/png".into(),
                data: "AAAA".into()
            }
        );
        assert_eq!(
            image_from_url("https://x/y.png"),
            ImageSource::Url("https://x/y.png".into())
        );
    }
}
