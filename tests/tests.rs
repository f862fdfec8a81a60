//! Integration tests: real HTTP over loopback between a client, the gateway and the mock cloud.
//! One binary, a module per area (`cargo test --features testing --test tests MODULE::`).

/// Health known without traffic: model-list checks at start and while idle, a rejected key
/// and an unreachable provider before any request, recovery noticed with no client traffic.
mod checks;
/// The real `understudy` binary as a subprocess: config check, zero config, SIGTERM and
/// `kill -9` (journal, Claude Code's settings), keys absent from a trace log.
mod cli;
/// The fault matrix after the commit point: every fault × where it strikes × both dialects ×
/// passthrough and translated, continued on the fallback with no gap and no duplicate.
mod continuity;
/// Any client to any provider: translation over HTTP, error mapping, truncation, keep-alives,
/// bad input, completions, embeddings.
mod cross;
/// Models already on the machine: other tools' stores listed and used in place; local model
/// servers (Ollama, LM Studio, llama-server shapes) before the embedded model.
mod discover;
/// The chain walk before the commit point: what fails over and what does not, breakers,
/// retries, pause, routing modes, the retry storm that never happens.
mod failover;
/// The mock cloud's whole fault list × both dialects × streaming and not: a whole answer or
/// the dialect's explicit error, never a silent truncation.
mod faults;
/// The fuzz targets' checks on their seeds and on every input a fuzzer once crashed on.
mod fuzz;
/// Passthrough fidelity (bytes, headers), routing, the localhost guard, the admin API.
mod gateway;
/// Hostile upstreams and clients: endless bodies, lines and events; keys echoed back; faults
/// before the first text; slow headers and bodies, idle connections; forged log lines; the
/// admin API as another user; memory under large translated requests.
mod hostile;
/// The embedded engine with the real SmolLM2-135M: every dialect, cancellation, a killed
/// worker, an over-long prompt, a forced tool call, continuing a cloud's broken answer.
mod local;
/// The model manager's download code against a Hugging-Face-shaped local server: resume,
/// a killed pull, a corrupt file.
mod models;
/// Quota awareness against a mock keeping a usage plan: windows in the status, metrics, the
/// tray and notifications; spill-over and back after the reset; a refusal until its reset.
mod quota;
/// Config that applies live: an edit on disk during a stream, an invalid edit that keeps
/// serving, a dashboard save applied at once.
mod reload;
/// Providers' own status pages (statuspage.io's shape, from the mock): an incident shown,
/// told, warming the local model, journaled with who knew first; its resolution.
mod statuspage;
/// Shared: a gateway in-process wired to a mock cloud, and the strict stream checkers.
mod support;
/// The incident timeline: an outage told in one sentence by `/api/timeline` and by the
/// recovery notification.
mod timeline;
/// Recorded upstream transcripts through the pipeline into every client format, against
/// golden files, and independent of how TCP cut the bytes.
mod translation;
/// How requests leave for a provider: HTTPS with an extra CA (and refused without it), a bad CA
/// file refused at start-up, a proxy from the environment.
mod transport;
/// Whole answers streamed upstream: rebuilt field for field, failed over on a stall within the
/// idle time, continued into one body after a break, and the per-provider switch.
mod whole;
