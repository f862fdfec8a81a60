//! An OpenAI upstream's stream. The checks are `common::stream_openai`.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::stream_openai(data));
