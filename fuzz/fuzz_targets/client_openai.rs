//! A client's OpenAI request (chat and legacy completions). The checks are `common::client_openai`.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::client_openai(data));
