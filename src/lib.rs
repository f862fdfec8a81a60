//! Understudy: a localhost gateway that keeps Claude Code and IDE tools working when a cloud
//! model provider fails, and never hands a client a truncated answer dressed up as a whole one.
//!
//! The code map (ARCHITECTURE.md has the long form):
//! - [`config`]: the TOML file or zero config from the environment, validated with TOML paths.
//! - [`server`]: the axum router, the localhost guard, graceful shutdown.
//! - [`client_api`]: what clients speak (Anthropic, OpenAI, Ollama): error shapes, completeness
//!   rules for passthrough.
//! - [`routing`]: model name → ordered chain of backends.
//! - [`providers`]: what we call: pooled clients, credentials, header hygiene.
//! - [`relay`]: the entry for a request: same-protocol passthrough with inspection, or
//!   [`translate`] when the backend speaks another API.
//! - [`resilience`]: what fails over, circuit breakers, retry budgets, backoff.
//! - [`canonical`]: the one request/block/event model translation goes through; the stream guard.
//! - [`wire`]: each API's format to and from canonical (Anthropic, OpenAI, Gemini, Ollama).
//! - [`translate`]: the translating relay and its pure `Pipeline`.
//! - [`local`]: the embedded llama.cpp engine: the worker process and its supervisor.
//! - [`models`]: the model manager: catalog, pulls with resume and checksums, the default model.
//! - [`notify`]: which desktop notifications to send, debounced, as a pure state machine.
//! - [`observe`]: per-backend statistics, the live feed, spend; [`journal`]: the request
//!   journal in SQLite.
//! - [`status`]: the status snapshot the gateway writes and the terminal and tray read.
//! - [`claude_code`]: pointing Claude Code's settings at the gateway, and back.
//! - [`dashboard`]: the page at `/ui` and its JSON API (feed, toggles, models, settings).
//! - [`desktop`]: what an app around the gateway adds: notifications, Claude Code's settings.
//! - [`tray`]: the tray's icon, tooltip and menu for a snapshot, as a pure function.
//! - [`sse`]: SSE framing that keeps each event's exact bytes.
//! - [`secret`]: keys from env vars or the keychain, in a type that never prints them.
//! - `testing` (feature `testing`): the scripted mock cloud.

pub mod canonical;
pub mod claude_code;
pub mod client_api;
pub mod config;
pub mod dashboard;
pub mod desktop;
pub mod error;
pub mod journal;
pub mod local;
pub mod models;
pub mod notify;
pub mod observe;
pub mod providers;
pub mod relay;
pub mod resilience;
pub mod routing;
pub mod secret;
pub mod server;
pub mod sse;
pub mod status;
#[cfg(feature = "testing")]
pub mod testing;
pub mod translate;
pub mod tray;
pub mod wire;
