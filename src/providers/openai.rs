//! OpenAI-compatible services as a provider: `Authorization: Bearer`, a base URL that includes
//! `/v1`, `/chat/completions` (streamed with a usage chunk), `/completions`, `/embeddings`.

use super::{Api, Encoded, Limits, Operation};
use crate::canonical::{Request, ToolNames};
use crate::wire::{self, openai};
use http::HeaderName;
use serde_json::Value;

/// OpenAI, or any server that speaks its Chat Completions API.
#[derive(Debug, Default)]
pub struct OpenAi;

impl Api for OpenAi {
    fn path(&self, op: Operation, _model: &str) -> String {
        match op {
            Operation::Completions => "/completions".into(),
            Operation::Embeddings => "/embeddings".into(),
            _ => "/chat/completions".into(),
        }
    }

    fn key_header(&self, key: &str) -> Option<(HeaderName, String)> {
        Some((http::header::AUTHORIZATION, format!("Bearer {key}")))
    }

    fn probe_path(&self) -> Option<&'static str> {
        Some("/models")
    }

    fn passes_through(&self, op: Operation) -> bool {
        matches!(
            op,
            Operation::ChatCompletions | Operation::Completions | Operation::Embeddings
        )
    }

    fn encode(&self, req: &Request, model: &str, limits: Limits, provider: &str) -> Encoded {
        let names = ToolNames::new(&req.tools, openai::TOOL_NAME_LIMIT);
        let body = openai::encode_request(req, model, limits.asked, &names, provider);
        Encoded::http(names, Operation::ChatCompletions, &body)
    }

    fn decoder(&self) -> Option<wire::Decoder> {
        Some(wire::Decoder::OpenAi(Default::default()))
    }

    fn error_message(&self, body: &Value) -> Option<String> {
        openai::error_message(body)
    }

    fn context_overflow(&self, body: &Value, message: Option<&str>) -> bool {
        openai::is_context_overflow(body)
            || message.is_some_and(|m| m.contains("maximum context length"))
    }
}
