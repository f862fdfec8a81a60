//! Upstream transcripts run through the translation pipeline exactly as the server runs them
//! (the golden tests in `tests/translation.rs` and the chunking property test).

use crate::canonical::{self, ToolNames};
use crate::error::GatewayError;
use crate::relay::pipeline::{encode_response, Format, Pipeline};
use crate::wire::openai;
use bytes::BytesMut;
use serde_json::Value;

/// Runs an upstream transcript through a pipeline in the given chunks and returns what the
/// client would read, ending with the client's error if the transcript is broken. The golden
/// tests and the chunking property test call this.
pub fn run_transcript(
    kind: crate::config::ProviderKind,
    format: Format,
    stream: bool,
    chunks: &[&[u8]],
) -> Vec<u8> {
    let tools = [canonical::Tool {
        name: LONG_TOOL_NAME.into(),
        description: None,
        schema: Value::Null,
    }];
    let names = ToolNames::new(&tools, openai::TOOL_NAME_LIMIT);
    let decoder = crate::providers::api(kind, None).decoder();
    let mut pipe = Pipeline::new(decoder, "mock", names, format, "client-model", 0, stream);
    let mut out = BytesMut::new();
    let mut result = chunks.iter().try_for_each(|c| pipe.feed(c, &mut out));
    if result.is_ok() {
        result = pipe.finish(&mut out);
    }
    if let Err(f) = result {
        let err = GatewayError::Upstream(crate::error::ProviderError {
            provider: "mock".into(),
            kind: f.kind,
            detail: f.detail,
        });
        out.extend_from_slice(&format.dialect().stream_error(&err).raw);
        return out.to_vec();
    }
    if !stream {
        let r = pipe.response().expect("a finished pipeline has an answer");
        let v = encode_response(format, &r, "client-model", 0);
        let text = serde_json::to_string_pretty(&v).expect("serializes");
        return pin_random_ids(&text).into_bytes();
    }
    pin_random_ids(&String::from_utf8_lossy(&out)).into_bytes()
}

/// A tool name longer than OpenAI's limit, used by the transcripts to check shortening.
pub const LONG_TOOL_NAME: &str =
    "mcp__understudy_test_server__a_tool_name_that_is_longer_than_sixty_four_chars";

/// Ids the gateway makes up (for calls the upstream did not name) are random: pinned here so
/// transcripts compare equal.
fn pin_random_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("toolu_") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 6..];
        let hex = tail.chars().take_while(char::is_ascii_hexdigit).count();
        if hex == 24 {
            out.push_str("toolu_RANDOM");
            rest = &tail[24..];
        } else {
            out.push_str("toolu_");
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}
