//! The fuzz targets' checks, one function per target, shared with `tests/fuzz.rs` (which runs
//! them on the seeds and on every input a fuzzer ever crashed on, in `fuzz/regressions/`).
//! The stream targets send a provider's bytes, cut into transport pieces, through the pipeline
//! (splitter → decoder → guard → every client encoder); the request targets decode a client's
//! body and encode it for every provider.
#![allow(dead_code)]

use bytes::BytesMut;
use understudy::canonical::{Event, Guard, Request, StreamFault, ToolNames};
use understudy::client_api::Dialect;
use understudy::sse::{Frame, Splitter};
use understudy::wire;

/// Cuts `data` into pieces: the first byte picks the cut sizes (1..=16 bytes, cycling), so
/// the fuzzer explores where TCP splits an event as well as what the event says.
pub fn pieces(data: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let Some((&seed, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let mut out = Vec::new();
    let mut at = 0;
    let mut step = seed as usize;
    while at < rest.len() {
        let n = (step % 16) + 1;
        let end = (at + n).min(rest.len());
        out.push(&rest[at..end]);
        at = end;
        step = step.wrapping_mul(31).wrapping_add(7);
    }
    (out, rest)
}

/// The frames of `data` fed whole and fed in pieces: they must be the same.
pub fn frames(data: &[u8]) -> Vec<Frame> {
    let (cut, whole) = pieces(data);
    let mut a = Vec::new();
    let mut s = Splitter::new();
    for p in &cut {
        s.feed(p, &mut a);
    }
    s.finish(&mut a);
    let mut b = Vec::new();
    let mut s = Splitter::new();
    s.feed(whole, &mut b);
    s.finish(&mut b);
    assert_eq!(a, b, "framing depends on where the bytes were cut");
    a
}

/// A provider's stream through the pipeline into every client format. `decode` is the
/// provider's decoder; a fault ends the stream as the relay would end it.
pub fn pipeline(
    data: &[u8],
    mut decode: impl FnMut(&Frame, &mut Vec<Event>) -> Result<(), StreamFault>,
) {
    let mut guard = Guard::new("fuzz", ToolNames::new(&[], 64));
    let mut anthropic = wire::anthropic::StreamEncoder::new("m");
    let mut openai = wire::openai::ChatEncoder::new("m", 1, true);
    let mut completions = wire::openai::CompletionsEncoder::new("m", 1);
    let mut ollama = wire::ollama::Encoder::new(wire::ollama::Endpoint::Chat, "m", 1);
    let mut out = BytesMut::new();
    for f in frames(data) {
        let mut loose = Vec::new();
        if decode(&f, &mut loose).is_err() {
            return;
        }
        for ev in loose {
            let mut strict = Vec::new();
            if guard.push(ev, &mut strict).is_err() {
                return;
            }
            for ev in &strict {
                anthropic.event(ev, &mut out);
                openai.event(ev, &mut out);
                completions.event(ev, &mut out);
                if ollama.event(ev, &mut out).is_err() {
                    return;
                }
            }
        }
        out.clear();
    }
    if guard.finished() {
        anthropic.complete(&mut out);
        openai.complete(&mut out);
        ollama.complete(&mut out);
    }
}

/// The SSE splitter: no panic, the same frames wherever the bytes were cut, and a frame's own
/// bytes frame again as that frame.
pub fn sse(data: &[u8]) {
    for f in frames(data) {
        let again = frames(&[&[0u8][..], &f.raw].concat());
        assert_eq!(again.len(), 1, "a frame's own bytes are one frame");
        assert_eq!(again[0].data, f.data);
        assert_eq!(again[0].event, f.event);
    }
}

fn inspect(dialect: Dialect, data: &[u8]) {
    let mut inspector = dialect.inspector();
    for f in frames(data) {
        inspector.frame(&f);
    }
    inspector.end();
}

/// An Anthropic upstream's stream, with the passthrough's stream judge beside the pipeline.
pub fn stream_anthropic(data: &[u8]) {
    inspect(Dialect::Anthropic, data);
    let mut d = wire::anthropic::StreamDecoder::default();
    pipeline(data, |f, out| d.frame(f, out));
}

/// An OpenAI upstream's stream, with the passthrough's stream judge beside the pipeline.
pub fn stream_openai(data: &[u8]) {
    inspect(Dialect::OpenAi, data);
    let mut d = wire::openai::StreamDecoder::default();
    pipeline(data, |f, out| d.frame(f, out));
}

/// A Gemini upstream's stream.
pub fn stream_gemini(data: &[u8]) {
    let mut d = wire::gemini::StreamDecoder::default();
    pipeline(data, |f, out| d.frame(f, out));
}

/// A decoded request encoded for every provider, as the router would for each backend.
fn encode_everywhere(r: &Request) {
    let names = ToolNames::new(&r.tools, 64);
    let _ = wire::anthropic::encode_request(r, "m", 1024);
    let _ = wire::openai::encode_request(r, "m", Some(1024), &names, "openai");
    let _ = wire::gemini::encode_request(r, Some(1024), &names, &Default::default());
}

fn json(data: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice(data).ok()
}

/// A client's Anthropic Messages request.
pub fn client_anthropic(data: &[u8]) {
    let Some(v) = json(data) else { return };
    if let Ok(r) = wire::anthropic::decode_request(&v) {
        encode_everywhere(&r);
    }
}

/// A client's OpenAI request: chat, and legacy completions.
pub fn client_openai(data: &[u8]) {
    let Some(v) = json(data) else { return };
    if let Ok((r, _)) = wire::openai::decode_request(&v) {
        encode_everywhere(&r);
    }
    if let Ok(r) = wire::openai::decode_completions(&v) {
        encode_everywhere(&r);
    }
}

/// A client's Ollama request: `/api/chat` and `/api/generate`.
pub fn client_ollama(data: &[u8]) {
    let Some(v) = json(data) else { return };
    if let Ok(r) = wire::ollama::decode_chat(&v) {
        encode_everywhere(&r);
    }
    if let Ok(r) = wire::ollama::decode_generate(&v) {
        encode_everywhere(&r);
    }
}
