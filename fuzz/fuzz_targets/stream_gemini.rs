//! A Gemini upstream's stream. The checks are `common::stream_gemini`.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::stream_gemini(data));
