//! Google's Gemini API as a provider, called natively (`streamGenerateContent?alt=sse`, the
//! only endpoint that carries thought signatures): `x-goog-api-key`, embeddings through its
//! OpenAI-compatible endpoint. It keeps the thought signatures of the calls it made.

use super::{Api, Encoded, Limits, Operation};
use crate::canonical::{Request, ToolNames};
use crate::wire::{self, gemini};
use http::HeaderName;
use serde_json::Value;

/// Gemini, with the thought signatures its answers carried (sent back with the calls they
/// belong to, as Google requires).
#[derive(Debug, Default)]
pub struct Gemini {
    signatures: gemini::SignatureStore,
}

impl Api for Gemini {
    fn path(&self, op: Operation, model: &str) -> String {
        match op {
            Operation::Embeddings => "/v1beta/openai/embeddings".into(),
            _ => {
                let model = model.strip_prefix("models/").unwrap_or(model);
                format!("/v1beta/models/{model}:streamGenerateContent")
            }
        }
    }

    fn query<'a>(&self, op: Operation, client: Option<&'a str>) -> Option<&'a str> {
        match op {
            Operation::Embeddings => client,
            _ => Some("alt=sse"),
        }
    }

    fn key_header(&self, key: &str) -> Option<(HeaderName, String)> {
        Some((HeaderName::from_static("x-goog-api-key"), key.to_owned()))
    }

    fn probe_path(&self) -> Option<&'static str> {
        Some("/v1beta/models")
    }

    /// Gemini refuses a bad key with a 400 `INVALID_ARGUMENT` whose reason is
    /// `API_KEY_INVALID` ("API key not valid. Please pass a valid API key."), not a 401.
    fn rejects_key(&self, status: u16, body: &str) -> bool {
        matches!(status, 401 | 403)
            || (status == 400
                && (body.contains("API_KEY_INVALID") || body.contains("API key not valid")))
    }

    fn passes_through(&self, op: Operation) -> bool {
        op == Operation::Embeddings
    }

    fn encode(&self, req: &Request, _model: &str, limits: Limits, _provider: &str) -> Encoded {
        let names = ToolNames::new(&req.tools, gemini::TOOL_NAME_LIMIT);
        let body = gemini::encode_request(req, limits.asked, &names, &self.signatures);
        Encoded::http(names, Operation::GeminiStream, &body)
    }

    fn decoder(&self) -> Option<wire::Decoder> {
        Some(wire::Decoder::Gemini(Default::default()))
    }

    fn observe(&self, decoder: &mut wire::Decoder) {
        if let wire::Decoder::Gemini(d) = decoder {
            for (id, sig) in std::mem::take(&mut d.signatures) {
                self.signatures.put(id, sig);
            }
        }
    }

    fn error_message(&self, body: &Value) -> Option<String> {
        gemini::error_message(body)
    }

    fn context_overflow(&self, body: &Value, _message: Option<&str>) -> bool {
        gemini::is_context_overflow(body)
    }
}
