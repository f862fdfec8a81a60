//! The SSE splitter. The checks are `common::sse`.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::sse(data));
