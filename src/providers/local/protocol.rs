//! The lines the gateway and its local worker exchange over the worker's stdin and stdout:
//! one JSON object per line, requests tagged with an id so a cancel can name them.

use serde::{Deserialize, Serialize};

/// One chat message, already flattened to text (the local models here take no images).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Its text.
    pub content: String,
}

/// A tool the model may call, described for its prompt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolSpec {
    /// Its name.
    pub name: String,
    /// What it does (compacted for a small context).
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: serde_json::Value,
}

/// Gateway → worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Generate an answer.
    Generate {
        /// Request id.
        id: u64,
        /// The conversation.
        messages: Vec<ChatMessage>,
        /// A partial assistant answer to continue from exactly where it stops.
        #[serde(default)]
        prefill: Option<String>,
        /// Output limit.
        max_tokens: u32,
        /// Sampling temperature (0: greedy).
        #[serde(default)]
        temperature: Option<f32>,
        /// Nucleus sampling.
        #[serde(default)]
        top_p: Option<f32>,
        /// Top-k sampling.
        #[serde(default)]
        top_k: Option<i32>,
        /// Sampling seed.
        #[serde(default)]
        seed: Option<u32>,
        /// Stop sequences.
        #[serde(default)]
        stop: Vec<String>,
        /// Tools the model may call (rendered by the model's template when it takes tools,
        /// else described in the system prompt in Hermes form).
        #[serde(default)]
        tools: Vec<ToolSpec>,
        /// A tool call is required: `*` any tool, or the tool's name. Sampling is then
        /// constrained by a grammar to a well-formed call.
        #[serde(default)]
        force_tool: Option<String>,
    },
    /// Stop generating for this request (the client went away).
    Cancel {
        /// Request id.
        id: u64,
    },
}

/// Worker → gateway.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Line {
    /// Loading the model: how far, from 0 to 1.
    Loading {
        /// The share loaded.
        progress: f32,
    },
    /// The model is loaded.
    Ready {
        /// Context size in tokens.
        n_ctx: u32,
        /// The KV cache's type (`f16`, `q8_0`).
        #[serde(default)]
        kv_type: String,
        /// The KV cache's size at `n_ctx`.
        #[serde(default)]
        kv_bytes: u64,
        /// Why this context ([`crate::fit::Plan::why`]).
        #[serde(default)]
        context_why: String,
        /// Conversations the KV cache holds side by side.
        #[serde(default)]
        slots: u32,
        /// Threads used.
        threads: u32,
        /// Where the layers run: `CPU`, or the GPU's name (e.g. `CUDA0 (NVIDIA H100 80GB HBM3)`).
        #[serde(default)]
        device: String,
        /// Layers offloaded to the GPU.
        #[serde(default)]
        gpu_layers: u32,
        /// Layers in the model.
        #[serde(default)]
        n_layers: u32,
        /// The model's weights, in bytes.
        #[serde(default)]
        model_bytes: u64,
        /// The CPU backend library llama.cpp actually mapped (`libggml-cpu-zen4.so`), read
        /// from /proc/self/maps.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cpu_backend: Option<String>,
    },
    /// Prompt processing progress (the gateway keeps the client alive with it).
    Progress {
        /// Request id.
        id: u64,
        /// Prompt tokens processed.
        done: u32,
        /// Prompt tokens in all.
        total: u32,
    },
    /// Generated text.
    Text {
        /// Request id.
        id: u64,
        /// The text.
        text: String,
    },
    /// The text sent so far for this request is replaced by this (the answer held a tool call
    /// that did not match its schema and was sampled again under the grammar). Sent only when
    /// tools were offered, whose answers the gateway holds until the end.
    Replace {
        /// Request id.
        id: u64,
        /// The whole answer's text.
        text: String,
    },
    /// The answer ended.
    Done {
        /// Request id.
        id: u64,
        /// `end_turn`, `max_tokens`, `stop_sequence` or `cancelled`.
        reason: String,
        /// Which stop sequence.
        #[serde(default)]
        stop_sequence: Option<String>,
        /// Prompt tokens.
        prompt_tokens: u32,
        /// Prompt tokens reused from the previous request's cache.
        cached_tokens: u32,
        /// Generated tokens.
        completion_tokens: u32,
        /// Milliseconds spent on the prompt (the tokens not reused from the cache).
        #[serde(default)]
        prompt_ms: u64,
        /// Milliseconds spent generating.
        #[serde(default)]
        gen_ms: u64,
    },
    /// The request failed.
    Error {
        /// Request id.
        id: u64,
        /// `context_overflow` or `internal`.
        kind: String,
        /// What happened.
        message: String,
        /// Prompt tokens (for an overflow).
        #[serde(default)]
        prompt_tokens: u32,
        /// The context size (for an overflow).
        #[serde(default)]
        n_ctx: u32,
    },
}
