//! Understudy: a localhost gateway that keeps Claude Code and IDE tools working when a cloud
//! model provider fails, and never hands a client a truncated answer dressed up as a whole one.
//!
//! The code map, bottom of the import graph first (ARCHITECTURE.md has the long form;
//! `scripts/modgraph` prints the graph and fails on a cycle):
//! - [`error`], [`secret`], [`sse`]: what went wrong, keys that never print, SSE framing.
//! - [`quota`]: providers' rate-limit headers read into usage windows per credential; when a
//!   backend should be spilled over or is refused until its reset.
//! - [`config`]: the TOML file or zero config, validated with TOML paths; every settings type.
//! - [`canonical`]: the one request/block/event model; the stream guard, collector, splice.
//! - [`wire`]: each API's format to and from canonical (Anthropic, OpenAI, Gemini, Ollama).
//! - [`client_api`]: what clients speak: the one error, keep-alive and completeness mapping
//!   per dialect.
//! - [`providers`]: what we call: the [`providers::Api`] of each kind in its own file, pooled
//!   clients, credentials, header hygiene; the embedded llama.cpp engine (`providers::local`).
//! - [`telemetry`]: per-request traces, per-backend statistics, the journal, the status snapshot.
//! - [`routing`]: model name → chain of backends; breakers, retry budgets, health.
//! - [`relay`]: the life of a request: the chain walk, passthrough or translation through one
//!   stream state machine, continuation.
//! - [`models`]: the model manager: catalog, pulls with resume and checksums, the default model.
//! - [`desktop`]: notifications, the tray's view, Claude Code's settings.
//! - [`server`]: the axum router, the localhost guard, the admin API and dashboard.
//! - `testing` (feature `testing`): the scripted mock cloud and transcript runner.

pub mod canonical;
pub mod client_api;
pub mod config;
pub mod desktop;
pub mod discover;
pub mod error;
pub mod fit;
pub mod gguf;
pub mod models;
pub mod providers;
pub mod quota;
pub mod relay;
pub mod routing;
pub mod schema;
pub mod secret;
pub mod server;
pub mod sse;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wire;
