//! A client's Ollama request (`/api/chat`, `/api/generate`). The checks are `common::client_ollama`.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::client_ollama(data));
