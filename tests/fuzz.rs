//! The fuzz targets' checks (`fuzz/fuzz_targets/common.rs`) on their seeds and on every input a
//! fuzzer crashed on (`fuzz/regressions/TARGET/`, kept there once fixed): what the fuzzers
//! found stays found, and the checks themselves build in every test run.

#[path = "../fuzz/fuzz_targets/common.rs"]
mod common;

use std::path::Path;

/// Every file in `dirs`, with a cut-pattern byte in front for the stream targets' transcripts.
fn inputs(dirs: &[&str], prefixed: bool) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(root.join(d)) else {
            continue;
        };
        for e in entries.flatten() {
            let bytes = std::fs::read(e.path()).expect("readable input");
            let bytes = if prefixed {
                [&[5u8][..], &bytes].concat()
            } else {
                bytes
            };
            out.push((e.path().display().to_string(), bytes));
        }
    }
    out
}

fn run(target: &str, check: fn(&[u8]), seeds: &[&str], prefixed: bool) {
    let regressions = format!("fuzz/regressions/{target}");
    let mut all = inputs(seeds, prefixed);
    all.extend(inputs(&[&regressions], false));
    assert!(!all.is_empty(), "{target}: no inputs");
    for (name, bytes) in all {
        let r = std::panic::catch_unwind(|| check(&bytes));
        assert!(r.is_ok(), "{target} fails on {name}");
    }
}

#[test]
fn sse_splitter() {
    run(
        "sse",
        common::sse,
        &[
            "tests/fixtures/upstream/anthropic",
            "tests/fixtures/upstream/openai",
            "tests/fixtures/upstream/gemini",
        ],
        true,
    );
}

#[test]
fn provider_streams() {
    run(
        "stream_anthropic",
        common::stream_anthropic,
        &["tests/fixtures/upstream/anthropic"],
        true,
    );
    run(
        "stream_openai",
        common::stream_openai,
        &["tests/fixtures/upstream/openai"],
        true,
    );
    run(
        "stream_gemini",
        common::stream_gemini,
        &["tests/fixtures/upstream/gemini"],
        true,
    );
}

#[test]
fn client_requests() {
    run(
        "client_anthropic",
        common::client_anthropic,
        &["fuzz/seeds/client_anthropic"],
        false,
    );
    run(
        "client_openai",
        common::client_openai,
        &["fuzz/seeds/client_openai"],
        false,
    );
    run(
        "client_ollama",
        common::client_ollama,
        &["fuzz/seeds/client_ollama"],
        false,
    );
}

#[test]
fn the_request_seeds_decode_so_the_encoders_are_reached() {
    use understudy::wire;
    for (name, bytes) in inputs(&["fuzz/seeds/client_anthropic"], false) {
        let v = serde_json::from_slice(&bytes).expect("seed is JSON");
        assert!(wire::anthropic::decode_request(&v).is_ok(), "{name}");
    }
    for (name, bytes) in inputs(&["fuzz/seeds/client_openai"], false) {
        let v = serde_json::from_slice(&bytes).expect("seed is JSON");
        let chat = wire::openai::decode_request(&v).is_ok();
        let legacy = wire::openai::decode_completions(&v).is_ok();
        assert!(chat || legacy, "{name}");
    }
    for (name, bytes) in inputs(&["fuzz/seeds/client_ollama"], false) {
        let v = serde_json::from_slice(&bytes).expect("seed is JSON");
        let chat = wire::ollama::decode_chat(&v).is_ok();
        let generate = wire::ollama::decode_generate(&v).is_ok();
        assert!(chat || generate, "{name}");
    }
}
