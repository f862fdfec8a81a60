//! Anthropic's Messages API as a provider: `x-api-key`, `anthropic-version`, `/v1/messages`.

use super::{Api, Encoded, Limits, Operation};
use crate::canonical::{Request, ToolNames};
use crate::wire::{self, anthropic};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

/// Anthropic (or anything that speaks its Messages API).
#[derive(Debug, Default)]
pub struct Anthropic;

impl Api for Anthropic {
    fn path(&self, op: Operation, _model: &str) -> String {
        match op {
            Operation::CountTokens => "/v1/messages/count_tokens".into(),
            _ => "/v1/messages".into(),
        }
    }

    fn key_header(&self, key: &str) -> Option<(HeaderName, String)> {
        Some((HeaderName::from_static("x-api-key"), key.to_owned()))
    }

    fn own_headers(&self, h: &mut HeaderMap) {
        h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    }

    fn probe_path(&self) -> Option<&'static str> {
        Some("/v1/models")
    }

    fn passes_through(&self, op: Operation) -> bool {
        matches!(op, Operation::Messages | Operation::CountTokens)
    }

    fn has_embeddings(&self) -> bool {
        false
    }

    fn encode(&self, req: &Request, model: &str, limits: Limits, _provider: &str) -> Encoded {
        let body = anthropic::encode_request(req, model, limits.required());
        Encoded::http(ToolNames::default(), Operation::Messages, &body)
    }

    fn decoder(&self) -> Option<wire::Decoder> {
        Some(wire::Decoder::Anthropic(Default::default()))
    }

    fn error_message(&self, body: &Value) -> Option<String> {
        anthropic::error_message(body)
    }

    fn context_overflow(&self, _body: &Value, message: Option<&str>) -> bool {
        message.is_some_and(|m| m.to_lowercase().contains("prompt is too long"))
    }
}
