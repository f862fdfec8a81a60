//! The embedded local engine, gateway side: the `local` provider. llama.cpp runs in a child
//! process of this same binary (`understudy worker`, see [`worker`]); the gateway starts it on
//! first use, talks to it over pipes ([`protocol`]), restarts it after a crash (with backoff)
//! and turns its lines into canonical events ([`into_events`]), so the local model goes
//! through the same guard, translation, continuation and completeness machinery as any cloud.
//! [`Local`] is the provider kind: it answers in-process instead of over HTTP.

pub mod cpu;
pub mod protocol;
pub mod slots;
pub mod tools;
#[cfg(feature = "engine")]
pub mod worker;

mod engine;
mod events;
mod request;

pub use engine::{CancelOnDrop, LocalEngine};
pub use events::into_events;
pub use request::offers_tools;

use super::{Api, Encoded, EncodedBody, Limits, Operation};
use crate::canonical::{Request, ToolNames};
use crate::config::LocalConfig;
use crate::wire;
use http::HeaderName;
use serde_json::Value;
use std::sync::Arc;

/// The `local` provider kind: the embedded engine (none when no model is configured).
#[derive(Debug)]
pub struct Local {
    engine: Option<Arc<LocalEngine>>,
}

impl Local {
    /// The provider for `cfg`; the engine starts on the first request.
    pub fn new(cfg: Option<LocalConfig>) -> Local {
        Local {
            engine: cfg.map(|c| Arc::new(LocalEngine::new(c))),
        }
    }
}

impl Api for Local {
    fn path(&self, _op: Operation, _model: &str) -> String {
        "/v1/messages".into()
    }

    fn key_header(&self, _key: &str) -> Option<(HeaderName, String)> {
        None
    }

    fn probe_path(&self) -> Option<&'static str> {
        None
    }

    fn passes_through(&self, op: Operation) -> bool {
        op == Operation::Embeddings
    }

    fn encode(&self, req: &Request, _model: &str, limits: Limits, _provider: &str) -> Encoded {
        // The worker gets the canonical request itself.
        Encoded {
            names: ToolNames::default(),
            body: EncodedBody::Local {
                request: Box::new(req.clone()),
                max_tokens: limits.required(),
            },
        }
    }

    fn decoder(&self) -> Option<wire::Decoder> {
        None
    }

    fn error_message(&self, _body: &Value) -> Option<String> {
        None
    }

    fn context_overflow(&self, _body: &Value, _message: Option<&str>) -> bool {
        false
    }

    fn engine(&self) -> Option<&Arc<LocalEngine>> {
        self.engine.as_ref()
    }

    fn is_local(&self) -> bool {
        true
    }
}

/// What the local engine did, for the tray's notifications and the event stream.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LocalEvent {
    /// Loading the model: the share loaded.
    Loading {
        /// 0 to 1.
        progress: f32,
    },
    /// The model is loaded and serving.
    Ready {
        /// How long the load took.
        load_ms: u64,
    },
    /// The worker crashed in its CPU mode and runs one mode down from now on (the request
    /// that hit it is asked again).
    Downgraded {
        /// The mode it runs in now, and why.
        mode: cpu::Mode,
    },
    /// The worker died; it restarts on the next request.
    Crashed {
        /// Why (its last stderr lines).
        message: String,
    },
    /// The model did not load.
    Failed {
        /// Why.
        message: String,
    },
    /// Unloaded after being idle.
    Unloaded,
}

/// What the local engine is doing and has done: the tray, `/api/status` and the tests read it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LocalStatus {
    /// The model file.
    pub model: String,
    /// `not_loaded`, `loading`, `ready`, `crashed` (restarts on the next request) or `failed`
    /// (the model did not load).
    pub state: &'static str,
    /// While loading: the share loaded, 0 to 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<f32>,
    /// Once loaded: the context size and threads in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_ctx: Option<u32>,
    /// The KV cache's type (`f16`, `q8_0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_type: Option<String>,
    /// The KV cache's size at `n_ctx`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_bytes: Option<u64>,
    /// Why this context: trained length, what free memory allowed, the type chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_why: Option<String>,
    /// Conversations the KV cache holds side by side (each reuses its own prefix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    /// CPU threads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// `CPU`, or the GPU the layers run on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Layers on the GPU, of `n_layers`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_layers: Option<u32>,
    /// Layers in the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_layers: Option<u32>,
    /// The weights' size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_bytes: Option<u64>,
    /// The worker's resident memory now (weights, KV cache, buffers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// The worker's process id.
    #[serde(skip)]
    pub pid: Option<u32>,
    /// Why it crashed or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The CPU mode: which of llama.cpp's CPU backends runs, the best this CPU could run,
    /// and, when it runs a lower one, why and without what (known from the first start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<cpu::Mode>,
    /// The CPU backend library the worker has mapped (`libggml-cpu-zen4.so`), once loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_backend: Option<String>,
    /// Times the worker crashed since the gateway started.
    pub crashes: u64,
    /// Times the model was loaded.
    pub loads: u64,
    /// Answers finished, in all.
    pub answers: u64,
    /// Answers cancelled because the client left.
    pub cancelled: u64,
    /// Tokens generated, in all.
    pub completion_tokens: u64,
    /// The last answer that finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<LastAnswer>,
    /// The last answers that finished (up to 32), oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<LastAnswer>,
}

/// One finished answer, as the worker reported it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LastAnswer {
    /// `end_turn`, `max_tokens`, `stop_sequence` or `cancelled`.
    pub reason: String,
    /// Prompt tokens, and how many of them came from the cache.
    pub prompt_tokens: u32,
    /// Prompt tokens reused from the previous prompt.
    pub cached_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Prompt processing time.
    pub prompt_ms: u64,
    /// For a cancelled answer: from the cancel leaving the gateway to the worker being free.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_ms: Option<u64>,
    /// Generation speed.
    pub tokens_per_second: f64,
}
