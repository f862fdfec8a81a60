//! A client's Anthropic Messages request. The checks are `common::client_anthropic`.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::client_anthropic(data));
