//! The mock cloud server. It speaks HTTP/1.1 by hand over TCP, or over TLS as every cloud serves
//! ([`MockCloud::start_tls`]), so that it can fail the way real upstreams do: a reset (RST) or a
//! plain close mid-body, a stall, a clean end of a body whose protocol never finished, a delay
//! before headers, an HTML page instead of JSON.
//!
//! Replies are queued (first in, first out); with the queue empty it answers like a healthy
//! provider. Control over HTTP, for tests written in other languages:
//! `POST /_mock/replies` (a JSON array of [`Reply`]), `GET /_mock/requests`,
//! `GET /_mock/hits` (requests per `METHOD /path`, model lists included),
//! `POST /_mock/gates/NAME` (opens a gate), `POST /_mock/restate` (a [`Restate`]),
//! `POST /_mock/keys` (`{"reject": [KEY, …]}`), `POST /_mock/reset`.
//!
//! Keys and model lists are answered as the real APIs answer them: a key on the rejected list
//! gets the dialect's own refusal on every path (Anthropic 401 `authentication_error`
//! "invalid x-api-key", protocol.md §1.6; OpenAI 401 `invalid_api_key`; Gemini 400
//! `INVALID_ARGUMENT` with reason `API_KEY_INVALID`, which is not a 401), and a model list
//! asked without any credential gets the 401 those APIs give. Model lists (what health checks
//! ask, at any time) never take a scripted reply and are not in `requests`, only in `hits`.
//!
//! Unscripted chat answers behave as today's providers do with a continuation (protocol.md
//! §1.9): Claude 4.6+ and the Claude 5 family refuse an assistant prefill with Anthropic's
//! exact 400, older Claude models go on from it; OpenAI's API takes a final assistant turn as
//! context and starts a new message (Mistral's refuses it with its own 400); a model asked in
//! words to continue a cut answer goes on from it after restating what the profile's
//! [`Restate`] says.

use super::{anthropic, gemini, openai, DEFAULT_PARTS};
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// One scripted reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// The HTTP status.
    #[serde(default = "ok")]
    pub status: u16,
    /// Extra response headers.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Wait this long before sending the status line.
    #[serde(default)]
    pub delay_ms: u64,
    /// The body.
    pub body: MockBody,
}

fn ok() -> u16 {
    200
}

/// How the body is sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MockBody {
    /// All at once, with `content-length`.
    Full {
        /// The body.
        text: String,
        /// Send only this many bytes of it, then close (a body cut short of its declared length).
        #[serde(default)]
        cut_at: Option<usize>,
    },
    /// Chunked transfer encoding, one HTTP chunk per entry, then `end`.
    Chunks {
        /// The pieces.
        chunks: Vec<Chunk>,
        /// What happens after the last piece.
        #[serde(default)]
        end: End,
    },
}

/// One piece of a chunked body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunk {
    /// Wait this long before sending it.
    #[serde(default)]
    pub delay_ms: u64,
    /// Wait until this gate is opened before sending it.
    #[serde(default)]
    pub gate: Option<String>,
    /// The bytes.
    pub text: String,
}

/// How a chunked body ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// The terminating zero-length chunk: a clean end at the HTTP level (whatever the SSE said).
    #[default]
    Clean,
    /// Close the connection without the terminating chunk.
    Close,
    /// Reset the connection (TCP RST).
    Reset,
    /// Send nothing more and hold the connection open until the client leaves.
    Stall,
}

impl Reply {
    /// A JSON body with this status.
    pub fn json(status: u16, body: &serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            delay_ms: 0,
            body: MockBody::Full {
                text: body.to_string(),
                cut_at: None,
            },
        }
    }

    /// A raw body with a content type.
    pub fn raw(status: u16, content_type: &str, text: impl Into<String>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            delay_ms: 0,
            body: MockBody::Full {
                text: text.into(),
                cut_at: None,
            },
        }
    }

    /// An SSE stream, one HTTP chunk per event, clean end.
    pub fn sse<S: Into<String>>(events: impl IntoIterator<Item = S>) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            delay_ms: 0,
            body: MockBody::Chunks {
                chunks: events
                    .into_iter()
                    .map(|e| Chunk {
                        delay_ms: 0,
                        gate: None,
                        text: e.into(),
                    })
                    .collect(),
                end: End::Clean,
            },
        }
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Waits before the status line.
    pub fn delay(mut self, ms: u64) -> Reply {
        self.delay_ms = ms;
        self
    }

    /// Keeps only the first `n` chunks (or, for a full body, the first `n` bytes, then closes).
    pub fn truncate(mut self, n: usize) -> Reply {
        match &mut self.body {
            MockBody::Chunks { chunks, .. } => chunks.truncate(n),
            MockBody::Full { cut_at, .. } => *cut_at = Some(n),
        }
        self
    }

    /// Sets how a chunked body ends.
    pub fn end(mut self, how: End) -> Reply {
        if let MockBody::Chunks { end, .. } = &mut self.body {
            *end = how;
        }
        self
    }

    /// Makes chunk `i` wait for `gate`.
    pub fn gate(mut self, i: usize, gate: &str) -> Reply {
        if let MockBody::Chunks { chunks, .. } = &mut self.body {
            chunks[i].gate = Some(gate.into());
        }
        self
    }

    /// Inserts a chunk at position `i`.
    pub fn insert(mut self, i: usize, text: impl Into<String>) -> Reply {
        if let MockBody::Chunks { chunks, .. } = &mut self.body {
            chunks.insert(
                i,
                Chunk {
                    delay_ms: 0,
                    gate: None,
                    text: text.into(),
                },
            );
        }
        self
    }

    /// Delays every chunk by `ms`.
    pub fn chunk_delay(mut self, ms: u64) -> Reply {
        if let MockBody::Chunks { chunks, .. } = &mut self.body {
            for c in chunks {
                c.delay_ms = ms;
            }
        }
        self
    }
}

/// A request the mock received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// `POST`, `GET`, …
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl RecordedRequest {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct Inner {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<RecordedRequest>>,
    gates: Mutex<HashSet<String>>,
    gate_opened: Notify,
    /// How unscripted replies behave.
    profile: Mutex<Profile>,
    /// What unscripted replies did (benchmarks).
    stats: Mutex<Stats>,
    /// Unscripted requests seen, and unscripted stream requests seen: what picks the failing
    /// and the truncated ones.
    seen: Mutex<(u64, u64)>,
    /// Requests per `METHOD /path` (no query), model lists and refused keys included.
    hits: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Keys refused as invalid.
    rejected_keys: Mutex<HashSet<String>>,
    /// The statuspage.io summary served at `/api/v2/summary.json` (`None`: all operational).
    status_page: Mutex<Option<serde_json::Value>>,
    /// A usage plan, with what each credential has spent of it.
    plan: Mutex<Option<(Plan, std::collections::HashMap<String, PlanUse>)>>,
    /// Shaped like a local model server instead of a cloud ([`MockCloud::act_as`]).
    local: Mutex<Option<LocalShape>>,
    /// With HTTPS: the ALPN protocols each TLS client offered, in order of connection.
    alpn_offered: Mutex<Vec<Vec<String>>>,
}

/// A local model server the mock can be shaped like, with the models it has (the first
/// loaded): each answers the requests Understudy's discovery makes as the real one does
/// (docs/sources in ARCHITECTURE.md, "Models you already have"), and serves chat on
/// `/v1/messages` as the mock always does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalShape {
    /// Ollama: `GET /` "Ollama is running"; `/api/tags` (pulled, newest first, an embedding
    /// model among them), `/api/ps` (loaded).
    Ollama(Vec<String>),
    /// LM Studio 0.4: `/api/v1/models` with `loaded_instances`; `/v1/models` `owned_by`
    /// "organization_owner".
    LmStudio(Vec<String>),
    /// llama-server: `Server: llama.cpp` on every answer, `/health`, one model in `/v1/models`
    /// `owned_by` "llamacpp"; an unknown path is its JSON 404.
    LlamaServer(String),
}

/// The answer a local server shaped `shape` gives to `GET path`, if it is one of its own.
fn local_reply(shape: &LocalShape, method: &str, path: &str) -> Option<Reply> {
    use serde_json::json;
    let get = method == "GET";
    match shape {
        LocalShape::Ollama(models) => {
            let entry = |m: &String| {
                json!({"name": m, "model": m, "size": 5_000_000_000u64,
                "digest": "0".repeat(64), "details": {"format": "gguf", "family": "qwen3"},
                "capabilities": ["completion", "tools"]})
            };
            match (get, path) {
                (true, "/") => Some(Reply::raw(
                    200,
                    "text/plain; charset=utf-8",
                    "Ollama is running",
                )),
                (true, "/api/version") => Some(Reply::json(200, &json!({"version": "0.14.2"}))),
                (true, "/api/tags") => {
                    let mut list: Vec<_> = models.iter().map(entry).collect();
                    list.insert(0, json!({"name": "nomic-embed-text:latest", "model": "nomic-embed-text:latest",
                        "details": {"family": "nomic-bert"}, "capabilities": ["embedding"]}));
                    Some(Reply::json(200, &json!({"models": list})))
                }
                // Loaded at Ollama's default context (4,096 unless OLLAMA_CONTEXT_LENGTH says more).
                (true, "/api/ps") => {
                    let loaded: Vec<_> = models
                        .first()
                        .map(|m| {
                            let mut e = entry(m);
                            e["context_length"] = json!(4096);
                            e["size_vram"] = json!(0);
                            e
                        })
                        .into_iter()
                        .collect();
                    Some(Reply::json(200, &json!({"models": loaded})))
                }
                _ => None,
            }
        }
        LocalShape::LmStudio(models) => match (get, path) {
            (true, "/api/v1/models") => {
                let list: Vec<_> = models.iter().enumerate().map(|(i, m)| json!({"type": "llm",
                    "publisher": "lmstudio-community", "key": m, "display_name": m, "format": "gguf",
                    "loaded_instances": if i == 1 { json!([{"id": m, "config": {"context_length": 8192}}]) } else { json!([]) }}))
                    .chain([json!({"type": "embedding", "key": "text-embedding-nomic-embed-text-v1.5", "loaded_instances": []})])
                    .collect();
                Some(Reply::json(200, &json!({"models": list})))
            }
            (true, "/v1/models") => Some(Reply::json(
                200,
                &json!({"object": "list", "data":
                models.iter().map(|m| json!({"id": m, "object": "model", "owned_by": "organization_owner"})).collect::<Vec<_>>()}),
            )),
            _ => None,
        },
        LocalShape::LlamaServer(model) => {
            let reply = match (get, path) {
                (true, "/health" | "/v1/health") => Reply::json(200, &json!({"status": "ok"})),
                (true, "/v1/models" | "/models") => Reply::json(
                    200,
                    &json!({"object": "list", "data": [{
                    "id": model, "object": "model", "created": 1, "owned_by": "llamacpp",
                    "meta": {"n_ctx_train": 32768, "n_params": 4_000_000_000u64}}]}),
                ),
                (true, "/") | (_, "/v1/messages") => return None,
                (_, p) if p.starts_with("/v1/") => return None,
                _ => Reply::json(
                    404,
                    &json!({"error": {"message": "File Not Found", "type": "not_found_error", "code": 404}}),
                ),
            };
            Some(reply.header("server", "llama.cpp"))
        }
    }
}

/// A usage quota the mock keeps per credential, reported in every chat answer's headers as
/// the real API reports it (protocol.md §1.10), and enforced as it is enforced.
///
/// `unified` (a Claude subscription login, what Claude Code passes through): each answered
/// request spends `per_request` of the 5-hour window and a tenth of that of the week;
/// `anthropic-ratelimit-unified-status` is `allowed`, `allowed_warning` from 80 %, and at
/// 100 % every request is refused until the window resets: HTTP 429 `rate_limit_error`,
/// status `rejected`, the reset in `-reset` and `retry-after`. `openai`: the same window as
/// `x-ratelimit-{limit,remaining,reset}-requests` (limit `1 / per_request` requests), and a
/// 429 `rate_limit_exceeded` at zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The share of the window one answered request spends.
    pub per_request: f64,
    /// How long a window lasts from its first request (real plans: 5 hours).
    pub window_ms: u64,
    /// `unified` (default) or `openai`.
    #[serde(default)]
    pub headers: PlanHeaders,
}

/// Which provider's headers a [`Plan`] speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanHeaders {
    /// Anthropic's `anthropic-ratelimit-unified-*`.
    #[default]
    Unified,
    /// OpenAI's `x-ratelimit-*-requests`.
    Openai,
}

/// What one credential spent of a [`Plan`].
#[derive(Debug, Clone)]
struct PlanUse {
    used: f64,
    started: std::time::SystemTime,
}

fn unix_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs_f64().ceil() as u64)
}

/// The incidents `POST /_mock/statuspage` declares.
#[derive(Debug, Deserialize)]
struct PageIncidents {
    incidents: Vec<PageIncident>,
}

#[derive(Debug, Deserialize)]
struct PageIncident {
    id: String,
    name: String,
    impact: String,
    created_at: String,
    #[serde(default)]
    components: Vec<String>,
}

/// A statuspage.io summary with every component operational and no incident.
pub fn operational_page() -> serde_json::Value {
    status_page(&[])
}

/// A statuspage.io summary (`/api/v2/summary.json`, the shape status.anthropic.com and
/// status.openai.com serve) declaring these incidents: (id, name, impact, ISO 8601 creation,
/// affected component names). The page's components are "Claude API (api.anthropic.com)" and
/// "claude.ai".
pub fn status_page(incidents: &[(&str, &str, &str, &str, &[&str])]) -> serde_json::Value {
    let component = |name: &str| {
        serde_json::json!({"id": format!("c-{}", name.len()), "name": name, "status": "operational",
            "position": 1, "description": null, "showcase": false, "group_id": null, "group": false,
            "only_show_if_degraded": false})
    };
    let worst = incidents
        .iter()
        .map(|i| i.2)
        .max_by_key(|impact| {
            ["none", "minor", "major", "critical"]
                .iter()
                .position(|x| x == impact)
        })
        .unwrap_or("none");
    serde_json::json!({
        "page": {"id": "mockpage", "name": "Mock Cloud", "url": "http://status.mock", "time_zone": "Etc/UTC",
            "updated_at": "2026-12-01T00:00:00.000Z"},
        "components": [component("Claude API (api.anthropic.com)"), component("claude.ai")],
        "incidents": incidents.iter().map(|(id, name, impact, created, comps)| serde_json::json!({
            "id": id, "name": name, "status": "investigating", "impact": impact,
            "created_at": created, "updated_at": created, "monitoring_at": null, "resolved_at": null,
            "shortlink": format!("https://stspg.io/{id}"), "started_at": created, "page_id": "mockpage",
            "incident_updates": [{"id": format!("u-{id}"), "status": "investigating",
                "body": "We are currently investigating this issue.", "created_at": created}],
            "components": comps.iter().map(|c| component(c)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "scheduled_maintenances": [],
        "status": {"indicator": worst, "description": if incidents.is_empty() { "All Systems Operational" } else { "Partial System Outage" }},
    })
}

/// Spends a chat request of the plan for its credential: `Err` with the refusal when the
/// window is spent, else the headers the answer carries.
fn spend_plan(inner: &Inner, head: &Head) -> Result<Vec<(String, String)>, Reply> {
    let mut guard = inner.plan.lock().expect("lock");
    let Some((plan, uses)) = guard.as_mut() else {
        return Ok(Vec::new());
    };
    let now = std::time::SystemTime::now();
    let window = Duration::from_millis(plan.window_ms);
    let u = uses
        .entry(credential(head).unwrap_or_default())
        .or_insert(PlanUse {
            used: 0.0,
            started: now,
        });
    if now.duration_since(u.started).unwrap_or_default() >= window {
        *u = PlanUse {
            used: 0.0,
            started: now,
        };
    }
    let reset = u.started + window;
    let reset_secs = unix_secs(reset);
    let wait = reset
        .duration_since(now)
        .unwrap_or_default()
        .as_secs_f64()
        .ceil() as u64;
    let spent = u.used >= 1.0 - 1e-9;
    if !spent {
        u.used = (u.used + plan.per_request).min(1.0);
    }
    let used = u.used;
    let headers: Vec<(String, String)> = match plan.headers {
        PlanHeaders::Unified => {
            let status = if spent {
                "rejected"
            } else if used >= 0.8 {
                "allowed_warning"
            } else {
                "allowed"
            };
            let week_reset = unix_secs(now + Duration::from_secs(5 * 86_400));
            vec![
                ("anthropic-ratelimit-unified-status".into(), status.into()),
                (
                    "anthropic-ratelimit-unified-reset".into(),
                    reset_secs.to_string(),
                ),
                (
                    "anthropic-ratelimit-unified-5h-status".into(),
                    status.into(),
                ),
                (
                    "anthropic-ratelimit-unified-5h-utilization".into(),
                    format!("{used:.2}"),
                ),
                (
                    "anthropic-ratelimit-unified-5h-reset".into(),
                    reset_secs.to_string(),
                ),
                (
                    "anthropic-ratelimit-unified-7d-status".into(),
                    "allowed".into(),
                ),
                (
                    "anthropic-ratelimit-unified-7d-utilization".into(),
                    format!("{:.2}", used / 10.0),
                ),
                (
                    "anthropic-ratelimit-unified-7d-reset".into(),
                    week_reset.to_string(),
                ),
                (
                    "anthropic-ratelimit-unified-representative-claim".into(),
                    "five_hour".into(),
                ),
            ]
        }
        PlanHeaders::Openai => {
            let limit = (1.0 / plan.per_request).round().max(1.0) as u64;
            let remaining = ((1.0 - used) * limit as f64).round().max(0.0) as u64;
            vec![
                ("x-ratelimit-limit-requests".into(), limit.to_string()),
                (
                    "x-ratelimit-remaining-requests".into(),
                    remaining.to_string(),
                ),
                ("x-ratelimit-reset-requests".into(), format!("{wait}s")),
            ]
        }
    };
    if !spent {
        return Ok(headers);
    }
    let mut reply = match plan.headers {
        PlanHeaders::Unified => Reply::json(
            429,
            &anthropic::error(
                "rate_limit_error",
                "This request would exceed your account's rate limit. Please try again later.",
            ),
        ),
        PlanHeaders::Openai => Reply::json(
            429,
            &serde_json::json!({"error": {"message": format!("Rate limit reached for requests. Please try again in {wait}s."),
                "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
        ),
    };
    reply.headers.extend(headers);
    reply.headers.push(("retry-after".into(), wait.to_string()));
    Err(reply)
}

/// How the mock's unscripted replies behave: a healthy provider by default; for benchmarks a
/// fixed latency, a longer answer, paced streams and a share of faults (`understudy mock`'s
/// flags).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Wait this long before the status line.
    pub delay: Duration,
    /// The answer's length in tokens (`w0`, ` w1`, … see [`bench_parts`]); 0 answers
    /// [`DEFAULT_PARTS`](super::DEFAULT_PARTS).
    pub tokens: usize,
    /// Streams send this many content tokens a second (0: all at once).
    pub tokens_per_sec: f64,
    /// This share of requests (0..=1, spread evenly) is answered with `fail_status`.
    pub fail_rate: f64,
    /// The status a failed request gets, with the dialect's error body.
    pub fail_status: u16,
    /// This share of streams (spread evenly) stops after half the answer with a clean end of
    /// the HTTP body and no stop reason or terminator: the silent truncation.
    pub truncate_rate: f64,
    /// Keep every request for `GET /_mock/requests` (off for long benchmark runs).
    pub record: bool,
    /// The answer's pieces (empty: [`DEFAULT_PARTS`](super::DEFAULT_PARTS), or `tokens`).
    pub answer: Vec<String>,
    /// What a model asked to continue by instruction restates first.
    pub restate: Restate,
}

/// What a model asked in words to go on from a cut answer restates before going on, as real
/// ones do (protocol.md §1.9): the last `words` words of what it was given (`usize::MAX`: all
/// of it; 0: nothing, so it starts mid-word when the cut was), after a newline if `newline`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restate {
    /// Words restated.
    #[serde(default)]
    pub words: usize,
    /// Begin with a newline.
    #[serde(default)]
    pub newline: bool,
}

/// Anthropic's refusal of a prefill on Claude 4.6+ and the Claude 5 family (protocol.md §1.9,
/// from the migration guide): HTTP 400, `invalid_request_error`.
pub const PREFILL_REFUSAL: &str =
    "This model does not support assistant message prefill. The conversation must end with a user message.";

/// Anthropic's refusal of a final assistant turn (message `at`) that does not begin with a
/// thinking block while thinking is on.
fn thinking_prefill_refusal(at: usize) -> String {
    format!("messages.{at}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `text`. When `thinking` is enabled, a final `assistant` message must start with a thinking block. To avoid this requirement, disable `thinking`.")
}

/// The Claude models that refuse a prefill ("Prefilling assistant messages returns a 400 error
/// on Claude 4.6 models"; the 5 family too). Older ones, Haiku 4.5 included, take one. A model
/// whose name ends in `-noprefill` refuses one too, whatever it is called: an older model
/// behind a proxy, or a provider that changed its mind, as the gateway must expect.
const NO_PREFILL: [&str; 7] = [
    "claude-opus-4-6",
    "claude-sonnet-4-6",
    "claude-opus-4-7",
    "claude-sonnet-4-7",
    "claude-opus-5",
    "claude-sonnet-5",
    "claude-haiku-5",
];

/// How a chat request ends: a fresh question, a prefill (a final assistant turn), or a cut
/// answer then a user turn asking to continue it.
enum Asked {
    Fresh,
    Prefill(String),
    Instructed(String),
}

fn text_of(message: &serde_json::Value) -> String {
    match &message["content"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<String>(),
        _ => String::new(),
    }
}

fn asked(req: &serde_json::Value) -> Asked {
    let Some(messages) = req["messages"].as_array() else {
        return Asked::Fresh;
    };
    match messages.as_slice() {
        [.., last] if last["role"] == "assistant" => Asked::Prefill(text_of(last)),
        [.., cut, last]
            if cut["role"] == "assistant"
                && last["role"] == "user"
                && text_of(last).to_ascii_lowercase().contains("continue") =>
        {
            Asked::Instructed(text_of(cut))
        }
        _ => Asked::Fresh,
    }
}

/// What a model asked to continue `cut` by instruction says: the rest of `full` after it,
/// with the restatement `how` asks for first (the whole answer when `cut` is not a beginning of
/// it), in word-sized pieces.
fn instructed_parts(full: &str, cut: &str, how: Restate) -> Vec<String> {
    let Some(rest) = full.strip_prefix(cut) else {
        return vec![full.to_owned()];
    };
    // Where the last `words` words of `cut` begin (a word cut short counts as one).
    let starts: Vec<usize> = cut
        .char_indices()
        .filter(|&(i, c)| !c.is_whitespace() && (i == 0 || cut[..i].ends_with(char::is_whitespace)))
        .map(|(i, _)| i)
        .collect();
    let from = match how.words {
        0 => cut.len(),
        n if n >= starts.len() => 0,
        n => starts[starts.len() - n],
    };
    let text = format!(
        "{}{}{rest}",
        if how.newline { "\n" } else { "" },
        &cut[from..]
    );
    text.split_inclusive(' ').map(str::to_owned).collect()
}

impl Default for Profile {
    fn default() -> Profile {
        Profile {
            delay: Duration::ZERO,
            tokens: 0,
            tokens_per_sec: 0.0,
            fail_rate: 0.0,
            fail_status: 529,
            truncate_rate: 0.0,
            record: true,
            answer: Vec::new(),
            restate: Restate::default(),
        }
    }
}

/// The pieces of a benchmark answer of `n` tokens: `w0`, ` w1`, ` w2`, …
pub fn bench_parts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            if i == 0 {
                "w0".into()
            } else {
                format!(" w{i}")
            }
        })
        .collect()
}

/// Counts of what unscripted replies did: in all, and per second of the wall clock (unix
/// seconds), for a benchmark's timeline (`GET /_mock/stats`).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    /// Answered in full.
    pub answered: u64,
    /// Answered with the failure status.
    pub failed: u64,
    /// Streams cut short.
    pub truncated: u64,
    /// `[unix second, answered, failed, truncated]`, oldest first.
    pub per_second: Vec<[u64; 4]>,
}

#[derive(Clone, Copy)]
enum Outcome {
    Answered,
    Failed,
    Truncated,
}

impl Stats {
    fn count(&mut self, outcome: Outcome) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if self.per_second.last().map(|b| b[0]) != Some(now) {
            self.per_second.push([now, 0, 0, 0]);
        }
        let bucket = self.per_second.last_mut().expect("pushed above");
        let (total, slot) = match outcome {
            Outcome::Answered => (&mut self.answered, 1),
            Outcome::Failed => (&mut self.failed, 2),
            Outcome::Truncated => (&mut self.truncated, 3),
        };
        *total += 1;
        bucket[slot] += 1;
    }
}

/// Whether the `n`th event (from 0) is one of an evenly spread `rate` share.
fn picked(n: u64, rate: f64) -> bool {
    ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor()
}

/// A running mock cloud. It stops when dropped.
#[derive(Debug)]
pub struct MockCloud {
    addr: SocketAddr,
    /// With HTTPS: the PEM of the CA its certificate is signed by.
    ca_pem: Option<String>,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockCloud {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockCloud {
    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> MockCloud {
        MockCloud::bind("127.0.0.1:0".parse().expect("valid"))
            .await
            .expect("bind loopback")
    }

    /// Starts on `addr`.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<MockCloud> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner::default());
        let task = tokio::spawn(accept_loop(listener, inner.clone(), None));
        Ok(MockCloud {
            addr,
            ca_pem: None,
            inner,
            task,
        })
    }

    /// Starts on `127.0.0.1:0` serving HTTPS, as every cloud does: a certificate for
    /// `localhost` and `127.0.0.1` made now and signed by a CA of its own ([`MockCloud::ca_pem`]),
    /// TLS 1.2 and 1.3 by rustls, ALPN `http/1.1` only (the mock speaks HTTP/1.1 by hand; a
    /// client that offers h2 falls back to it, as it would with any HTTP/1.1 server).
    pub async fn start_tls() -> MockCloud {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound");
        let (ca_pem, config) = tls_identity();
        let inner = Arc::new(Inner::default());
        let task = tokio::spawn(accept_loop(listener, inner.clone(), Some(config)));
        MockCloud {
            addr,
            ca_pem: Some(ca_pem),
            inner,
            task,
        }
    }

    /// With HTTPS: the PEM of the CA to trust (`UNDERSTUDY_EXTRA_CA_CERTS`).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// With HTTPS: the ALPN protocols each TLS client offered, in order of connection.
    pub fn alpn_offered(&self) -> Vec<Vec<String>> {
        self.inner.alpn_offered.lock().expect("lock").clone()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (`https://` from [`MockCloud::start_tls`]).
    pub fn url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Queues a reply.
    pub fn push(&self, reply: Reply) {
        self.inner.replies.lock().expect("lock").push_back(reply);
    }

    /// Every request received so far, but model lists (see [`MockCloud::hits`]).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.requests.lock().expect("lock").clone()
    }

    /// Requests per `METHOD /path` (no query) so far, model lists included.
    pub fn hits(&self) -> std::collections::BTreeMap<String, u64> {
        self.inner.hits.lock().expect("lock").clone()
    }

    /// Refuses these keys from now on, as each API refuses an invalid key.
    pub fn reject_keys(&self, keys: &[&str]) {
        let mut set = self.inner.rejected_keys.lock().expect("lock");
        set.extend(keys.iter().map(|k| (*k).to_owned()));
    }

    /// Answers like this local model server from now on ([`LocalShape`]; `None`: a cloud).
    pub fn act_as(&self, shape: Option<LocalShape>) {
        *self.inner.local.lock().expect("lock") = shape;
    }

    /// Serves this statuspage.io summary from now on (`None`: all operational).
    pub fn set_status_page(&self, page: Option<serde_json::Value>) {
        *self.inner.status_page.lock().expect("lock") = page;
    }

    /// Keeps a usage plan from now on (`None`: none), every credential starting unspent.
    pub fn set_plan(&self, plan: Option<Plan>) {
        *self.inner.plan.lock().expect("lock") = plan.map(|p| (p, Default::default()));
    }

    /// Opens a gate: chunks waiting on it are sent.
    pub fn open_gate(&self, name: &str) {
        open_gate(&self.inner, name);
    }

    /// Sets how unscripted replies behave.
    pub fn set_profile(&self, profile: Profile) {
        *self.inner.profile.lock().expect("lock") = profile;
    }

    /// What unscripted replies did so far.
    pub fn stats(&self) -> Stats {
        self.inner.stats.lock().expect("lock").clone()
    }

    /// Serves until the process ends (for `understudy mock`).
    pub async fn serve_forever(self) {
        std::future::pending::<()>().await;
        drop(self);
    }
}

fn open_gate(inner: &Inner, name: &str) {
    inner.gates.lock().expect("lock").insert(name.to_owned());
    inner.gate_opened.notify_waiters();
}

async fn wait_gate(inner: &Inner, name: &str) {
    loop {
        let notified = inner.gate_opened.notified();
        if inner.gates.lock().expect("lock").contains(name) {
            return;
        }
        notified.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    inner: Arc<Inner>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let _ = sock.set_nodelay(true);
        match &tls {
            None => drop(tokio::spawn(serve_conn(sock, inner.clone()))),
            Some(config) => drop(tokio::spawn(serve_tls(sock, inner.clone(), config.clone()))),
        }
    }
}

/// A TLS handshake (the client's ALPN offer recorded), then the same HTTP/1.1 as over TCP. A
/// client that does not trust the CA ends the handshake with an alert; nothing is served.
async fn serve_tls(
    sock: TcpStream,
    inner: Arc<Inner>,
    config: Arc<tokio_rustls::rustls::ServerConfig>,
) {
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(
        tokio_rustls::rustls::server::Acceptor::default(),
        sock,
    );
    let Ok(start) = acceptor.await else {
        return;
    };
    let offered = start
        .client_hello()
        .alpn()
        .map(|protocols| {
            protocols
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect()
        })
        .unwrap_or_default();
    inner.alpn_offered.lock().expect("lock").push(offered);
    if let Ok(stream) = start.into_stream(config).await {
        serve_conn(stream, inner).await;
    }
}

/// A CA made now, a certificate for `localhost` and `127.0.0.1` signed by it, and the rustls
/// server settings that present it: the CA's PEM and the settings.
fn tls_identity() -> (String, Arc<tokio_rustls::rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("a key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Understudy mock cloud CA");
    let ca = ca_params.self_signed(&ca_key).expect("a CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("a key");
    let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("valid names");
    let cert = params.signed_by(&key, &issuer).expect("a certificate");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("default versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("the key fits the certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (ca.pem(), Arc::new(config))
}

/// A connection the mock serves: plain TCP, or TLS over it.
trait Wire: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {
    /// The TCP socket underneath (for a reset).
    fn tcp(&self) -> &TcpStream;
}

impl Wire for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Wire for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

struct Head {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

/// Reads one request; `None` when the peer closed.
async fn read_request(sock: &mut impl Wire, buf: &mut Vec<u8>) -> Option<(Head, Vec<u8>)> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
        let mut tmp = [0u8; 16 * 1024];
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head_text = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head_text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let body_start = head_end + 4;
    while buf.len() < body_start + len {
        let mut tmp = [0u8; 64 * 1024];
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let body = buf[body_start..body_start + len].to_vec();
    buf.drain(..body_start + len);
    Some((
        Head {
            method,
            path,
            headers,
        },
        body,
    ))
}

async fn serve_conn(mut sock: impl Wire, inner: Arc<Inner>) {
    let mut buf = Vec::new();
    while let Some((head, body)) = read_request(&mut sock, &mut buf).await {
        let body_text = String::from_utf8_lossy(&body).into_owned();
        if let Some(reply) = control(&inner, &head, &body_text) {
            if write_reply(&mut sock, &inner, reply).await.is_err() {
                return;
            }
            continue;
        }
        let path = head.path.split('?').next().unwrap_or("").to_owned();
        let shaped = inner.local.lock().expect("lock").clone();
        if let Some(reply) = shaped.and_then(|s| local_reply(&s, &head.method, &path)) {
            if write_reply(&mut sock, &inner, reply).await.is_err() {
                return;
            }
            continue;
        }
        *inner
            .hits
            .lock()
            .expect("lock")
            .entry(format!("{} {path}", head.method))
            .or_default() += 1;
        // The provider's status page (statuspage.io's shape), which needs no credential.
        if head.method == "GET" && path == "/api/v2/summary.json" {
            let page = inner.status_page.lock().expect("lock").clone();
            let reply = Reply::json(200, &page.unwrap_or_else(operational_page));
            if write_reply(&mut sock, &inner, reply).await.is_err() {
                return;
            }
            continue;
        }
        let listing = head.method == "GET" && path.ends_with("/models");
        if let Some(reply) = credentials_refused(&inner, &head, listing) {
            if write_reply(&mut sock, &inner, reply).await.is_err() {
                return;
            }
            continue;
        }
        if listing {
            if write_reply(&mut sock, &inner, model_list(&head))
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        let profile = inner.profile.lock().expect("lock").clone();
        if profile.record {
            inner.requests.lock().expect("lock").push(RecordedRequest {
                method: head.method.clone(),
                path: head.path.clone(),
                headers: head.headers.clone(),
                body: body_text.clone(),
            });
        }
        let chat = head.method == "POST"
            && (path.ends_with("/v1/messages") || path.ends_with("/chat/completions"));
        let plan_headers = if chat {
            match spend_plan(&inner, &head) {
                Ok(h) => h,
                Err(refusal) => {
                    if write_reply(&mut sock, &inner, refusal).await.is_err() {
                        return;
                    }
                    continue;
                }
            }
        } else {
            Vec::new()
        };
        let scripted = inner.replies.lock().expect("lock").pop_front();
        let reply = match scripted {
            Some(r) => r,
            None => {
                let (reply, outcome) = default_reply(&inner, &profile, &head, &body_text);
                if let Some(o) = outcome {
                    inner.stats.lock().expect("lock").count(o);
                }
                let generation = reply.delay_ms;
                reply.delay(generation + profile.delay.as_millis() as u64)
            }
        };
        let mut reply = reply;
        reply.headers.extend(plan_headers);
        if write_reply(&mut sock, &inner, reply).await.is_err() {
            return;
        }
    }
}

fn control(inner: &Inner, head: &Head, body: &str) -> Option<Reply> {
    let path = head.path.strip_prefix("/_mock/")?;
    let ok = || Reply::json(200, &serde_json::json!({"ok": true}));
    Some(match (head.method.as_str(), path) {
        ("POST", "replies") => match serde_json::from_str::<Vec<Reply>>(body) {
            Ok(rs) => {
                inner.replies.lock().expect("lock").extend(rs);
                ok()
            }
            Err(e) => Reply::json(400, &serde_json::json!({"error": e.to_string()})),
        },
        ("GET", "stats") => Reply::json(
            200,
            &serde_json::to_value(&*inner.stats.lock().expect("lock")).expect("serializes"),
        ),
        ("GET", "requests") => Reply::json(
            200,
            &serde_json::to_value(&*inner.requests.lock().expect("lock")).expect("serializes"),
        ),
        ("GET", "hits") => Reply::json(
            200,
            &serde_json::to_value(&*inner.hits.lock().expect("lock")).expect("serializes"),
        ),
        ("POST", "keys") => match serde_json::from_str::<serde_json::Value>(body) {
            Ok(v) => {
                let keys = v["reject"].as_array().cloned().unwrap_or_default();
                let mut set = inner.rejected_keys.lock().expect("lock");
                set.extend(keys.iter().filter_map(|k| k.as_str().map(str::to_owned)));
                ok()
            }
            Err(e) => Reply::json(400, &serde_json::json!({"error": e.to_string()})),
        },
        ("POST", "restate") => match serde_json::from_str::<Restate>(body) {
            Ok(r) => {
                inner.profile.lock().expect("lock").restate = r;
                ok()
            }
            Err(e) => Reply::json(400, &serde_json::json!({"error": e.to_string()})),
        },
        // `{"incidents": [{"id", "name", "impact", "created_at", "components": [...]}]}`
        // (built into the page's whole shape by [`status_page`]), or `null`: operational.
        ("POST", "statuspage") => match serde_json::from_str::<Option<PageIncidents>>(body) {
            Ok(p) => {
                *inner.status_page.lock().expect("lock") = p.map(|p| {
                    let comps: Vec<Vec<&str>> = p
                        .incidents
                        .iter()
                        .map(|i| i.components.iter().map(String::as_str).collect())
                        .collect();
                    let rows: Vec<(&str, &str, &str, &str, &[&str])> = p
                        .incidents
                        .iter()
                        .zip(&comps)
                        .map(|(i, c)| {
                            (
                                i.id.as_str(),
                                i.name.as_str(),
                                i.impact.as_str(),
                                i.created_at.as_str(),
                                c.as_slice(),
                            )
                        })
                        .collect();
                    status_page(&rows)
                });
                ok()
            }
            Err(e) => Reply::json(400, &serde_json::json!({"error": e.to_string()})),
        },
        // `{"rate": 1.0, "status": 529}`: this share of unscripted requests fails with the
        // dialect's error body (`rate: 0`: none), as the profile's `fail_rate` does.
        ("POST", "fail") => match serde_json::from_str::<serde_json::Value>(body) {
            Ok(v) => {
                let mut p = inner.profile.lock().expect("lock");
                p.fail_rate = v["rate"].as_f64().unwrap_or(0.0).clamp(0.0, 1.0);
                p.fail_status = v["status"].as_u64().map_or(p.fail_status, |s| s as u16);
                ok()
            }
            Err(e) => Reply::json(400, &serde_json::json!({"error": e.to_string()})),
        },
        ("POST", "plan") => match serde_json::from_str::<Option<Plan>>(body) {
            Ok(p) => {
                *inner.plan.lock().expect("lock") = p.map(|p| (p, Default::default()));
                ok()
            }
            Err(e) => Reply::json(400, &serde_json::json!({"error": e.to_string()})),
        },
        ("POST", "reset") => {
            inner.profile.lock().expect("lock").restate = Restate::default();
            inner.replies.lock().expect("lock").clear();
            inner.requests.lock().expect("lock").clear();
            inner.gates.lock().expect("lock").clear();
            *inner.stats.lock().expect("lock") = Stats::default();
            *inner.seen.lock().expect("lock") = (0, 0);
            inner.hits.lock().expect("lock").clear();
            inner.rejected_keys.lock().expect("lock").clear();
            *inner.plan.lock().expect("lock") = None;
            *inner.status_page.lock().expect("lock") = None;
            ok()
        }
        ("POST", p) if p.starts_with("gates/") => {
            open_gate(inner, &p["gates/".len()..]);
            ok()
        }
        _ => Reply::json(404, &serde_json::json!({"error": "unknown control path"})),
    })
}

/// What the profile's provider answers to an unscripted request, and what that counts as.
fn default_reply(
    inner: &Inner,
    profile: &Profile,
    head: &Head,
    body: &str,
) -> (Reply, Option<Outcome>) {
    let req: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let path = head.path.split('?').next().unwrap_or("");
    let chat = head.method == "POST"
        && (path.ends_with("/v1/messages") || path.ends_with("/chat/completions"));
    if !chat {
        return (healthy_reply(head, body), None);
    }
    let anthropic_api = path.ends_with("/v1/messages");
    let model = req["model"].as_str().unwrap_or("mock-model");
    let stream = req["stream"].as_bool().unwrap_or(false);
    let (fail, truncate) = {
        let mut seen = inner.seen.lock().expect("lock");
        let fail = picked(seen.0, profile.fail_rate);
        seen.0 += 1;
        let truncate = !fail && stream && picked(seen.1, profile.truncate_rate);
        if stream && !fail {
            seen.1 += 1;
        }
        (fail, truncate)
    };
    if fail {
        let status = profile.fail_status;
        let body = if anthropic_api {
            let ty = match status {
                529 => "overloaded_error",
                429 => "rate_limit_error",
                _ => "api_error",
            };
            anthropic::error(ty, "mock: failing as configured")
        } else {
            openai::error("server_error", "mock: failing as configured")
        };
        return (Reply::json(status, &body), Some(Outcome::Failed));
    }
    let all: Vec<String> = if !profile.answer.is_empty() {
        profile.answer.clone()
    } else if profile.tokens == 0 {
        DEFAULT_PARTS.iter().map(|p| p.to_string()).collect()
    } else {
        bench_parts(profile.tokens)
    };
    let parts = match asked(&req) {
        Asked::Fresh => all,
        Asked::Prefill(_)
            if anthropic_api
                && (NO_PREFILL.iter().any(|m| model.starts_with(m))
                    || model.ends_with("-noprefill")) =>
        {
            let body = anthropic::error("invalid_request_error", PREFILL_REFUSAL);
            return (Reply::json(400, &body), None);
        }
        // Mistral's OpenAI-compatible API refuses a final assistant turn without `prefix`.
        Asked::Prefill(_) if !anthropic_api && model.starts_with("mistral") => {
            let body = serde_json::json!({"object": "error", "message": "Expected last role User or Tool (or Assistant with prefix True) for serving but got assistant", "type": "invalid_request_message_order", "param": null, "code": "3230"});
            return (Reply::json(400, &body), None);
        }
        // Two more of Anthropic's refusals of a final assistant turn: with thinking on it must
        // begin with a thinking block, and it may not end in whitespace.
        Asked::Prefill(_)
            if anthropic_api
                && matches!(
                    req["thinking"]["type"].as_str(),
                    Some("enabled" | "adaptive")
                )
                && !matches!(
                    req["messages"].as_array().and_then(|m| m.last()).map(|m| &m["content"][0]["type"]),
                    Some(t) if t == "thinking" || t == "redacted_thinking"
                ) =>
        {
            let last = req["messages"].as_array().map_or(0, |m| m.len() - 1);
            let body = anthropic::error("invalid_request_error", &thinking_prefill_refusal(last));
            return (Reply::json(400, &body), None);
        }
        Asked::Prefill(cut) if anthropic_api && cut.ends_with(char::is_whitespace) => {
            let body = anthropic::error(
                "invalid_request_error",
                "messages: final assistant content cannot end with trailing whitespace",
            );
            return (Reply::json(400, &body), None);
        }
        Asked::Prefill(cut) if anthropic_api => remaining_parts(&all, &cut),
        // OpenAI's Chat Completions has no prefill: a final assistant turn is context, and
        // the model starts a new message.
        Asked::Prefill(_) => all,
        Asked::Instructed(cut) => instructed_parts(&all.concat(), &cut, profile.restate),
    };
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let text = parts.concat();
    // With pacing, each token takes its time whether it is streamed or not: a whole answer
    // comes when the last token would have.
    let token_ms = if profile.tokens_per_sec > 0.0 {
        ((1000.0 / profile.tokens_per_sec).round() as u64).max(1)
    } else {
        0
    };
    if !stream {
        let reply = if anthropic_api {
            Reply::json(200, &anthropic::message(model, &text))
        } else {
            Reply::json(200, &openai::completion(model, &text))
        };
        return (
            reply.delay(token_ms * parts.len() as u64),
            Some(Outcome::Answered),
        );
    }
    let mut events = if anthropic_api {
        anthropic::text_stream(model, &parts, "end_turn")
    } else {
        openai::text_stream(model, &parts, "stop")
    };
    // The content events: Anthropic's three opening events, OpenAI's role chunk come first.
    let first = if anthropic_api { 3 } else { 1 };
    if truncate {
        events.truncate(first + parts.len() / 2);
    }
    let mut reply = Reply::sse(events);
    if token_ms > 0 {
        if let MockBody::Chunks { chunks, .. } = &mut reply.body {
            for c in chunks.iter_mut().skip(first).take(parts.len()) {
                c.delay_ms = token_ms;
            }
        }
    }
    let outcome = if truncate {
        Outcome::Truncated
    } else {
        Outcome::Answered
    };
    (reply, Some(outcome))
}

/// The parts of the answer that come after `prefill` (the whole answer when the prefill is not
/// a beginning of it).
fn remaining_parts(all: &[String], prefill: &str) -> Vec<String> {
    let full: String = all.concat();
    let Some(rest) = full.strip_prefix(prefill) else {
        return all.to_vec();
    };
    // Keep the part boundaries where the prefill ends on one.
    let mut taken = 0;
    for (i, p) in all.iter().enumerate() {
        if taken == prefill.len() {
            return all[i..].to_vec();
        }
        taken += p.len();
    }
    if rest.is_empty() {
        Vec::new()
    } else {
        vec![rest.to_owned()]
    }
}

/// The credential a request carries: Anthropic's `x-api-key`, a bearer token (OpenAI, and
/// Anthropic's OAuth logins), Gemini's `x-goog-api-key` or `?key=`.
fn credential(head: &Head) -> Option<String> {
    let get = |n: &str| {
        head.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    get("x-api-key")
        .or_else(|| get("x-goog-api-key"))
        .or_else(|| {
            get("authorization").map(|v| v.strip_prefix("Bearer ").unwrap_or(&v).to_owned())
        })
        .or_else(|| {
            let query = head.path.split_once('?')?.1;
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix("key=").map(str::to_owned))
        })
        .filter(|k| !k.is_empty())
}

/// The API a request is for, by its path and headers: `anthropic`, `gemini` or `openai`.
fn api_of(head: &Head) -> &'static str {
    if head.path.contains("/v1beta/") {
        "gemini"
    } else if head.headers.iter().any(|(k, _)| k == "anthropic-version")
        || head
            .path
            .split('?')
            .next()
            .unwrap_or("")
            .ends_with("/v1/messages")
        || head.headers.iter().any(|(k, _)| k == "x-api-key")
    {
        "anthropic"
    } else {
        "openai"
    }
}

/// The refusal a request gets for its credential: a key on the rejected list, anywhere; no
/// credential at all, on a model list (chat without one is left to the scripts: the tests of
/// passed-through logins send their own).
fn credentials_refused(inner: &Inner, head: &Head, listing: bool) -> Option<Reply> {
    let key = credential(head);
    let rejected = key
        .as_ref()
        .is_some_and(|k| inner.rejected_keys.lock().expect("lock").contains(k));
    // A local server takes no key (Ollama's docs: "required but ignored").
    let missing = listing && key.is_none() && inner.local.lock().expect("lock").is_none();
    if !(rejected || missing) {
        return None;
    }
    Some(match (api_of(head), rejected) {
        ("anthropic", true) => Reply::json(
            401,
            &anthropic::error("authentication_error", "invalid x-api-key"),
        ),
        ("anthropic", false) => Reply::json(
            401,
            &anthropic::error("authentication_error", "x-api-key header is required"),
        ),
        ("gemini", true) => Reply::json(
            400,
            &serde_json::json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"}}]}}),
        ),
        ("gemini", false) => Reply::json(
            403,
            &serde_json::json!({"error": {"code": 403, "message": "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
                "status": "PERMISSION_DENIED"}}),
        ),
        (_, true) => Reply::json(
            401,
            &serde_json::json!({"error": {"message": "Incorrect API key provided: sk-***. You can find your API key at https://platform.openai.com/account/api-keys.",
                "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
        ),
        (_, false) => Reply::json(
            401,
            &serde_json::json!({"error": {"message": "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "type": "invalid_request_error", "param": null, "code": null}}),
        ),
    })
}

/// A model list in the API's own shape (Anthropic's `{data: [{type: "model", …}],
/// has_more}`, Gemini's `{models: […]}`, OpenAI's `{object: "list", …}`).
fn model_list(head: &Head) -> Reply {
    let v = match api_of(head) {
        "anthropic" => serde_json::json!({"data": [{"type": "model", "id": "claude-sonnet-4-5",
            "display_name": "Claude Sonnet 4.5", "created_at": "2025-09-29T00:00:00Z"}],
            "has_more": false, "first_id": "claude-sonnet-4-5", "last_id": "claude-sonnet-4-5"}),
        "gemini" => serde_json::json!({"models": [{"name": "models/gemini-2.5-flash",
            "displayName": "Gemini 2.5 Flash", "supportedGenerationMethods": ["generateContent"]}]}),
        _ => serde_json::json!({"object": "list", "data": [{"id": "mock-model", "object": "model",
            "created": 0, "owned_by": "mock"}]}),
    };
    Reply::json(200, &v)
}

/// What a healthy provider answers to everything but chat.
fn healthy_reply(head: &Head, body: &str) -> Reply {
    let req: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let model = req["model"].as_str().unwrap_or("mock-model");
    let stream = req["stream"].as_bool().unwrap_or(false);
    let path = head.path.split('?').next().unwrap_or("");
    let text: String = DEFAULT_PARTS.concat();
    match (head.method.as_str(), path) {
        ("POST", p) if p.ends_with("/v1/messages/count_tokens") => {
            Reply::json(200, &serde_json::json!({"input_tokens": body.len() / 4}))
        }
        ("POST", p) if p.ends_with(":streamGenerateContent") => {
            Reply::sse(gemini::text_stream(DEFAULT_PARTS))
        }
        ("POST", p) if p.ends_with("/embeddings") => Reply::json(
            200,
            &serde_json::json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5, 1.0]}],
                "model": model, "usage": {"prompt_tokens": 3, "total_tokens": 3}}),
        ),
        ("POST", p) if p.ends_with("/completions") => {
            let chunk = |text: &str, finish: Option<&str>| {
                let c = serde_json::json!({"id": "cmpl-mock01", "object": "text_completion", "created": 1, "model": model,
                    "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]});
                format!("data: {c}\n\n")
            };
            if stream {
                let mut events: Vec<String> =
                    DEFAULT_PARTS.iter().map(|p| chunk(p, None)).collect();
                events.push(chunk("", Some("stop")));
                events.push("data: [DONE]\n\n".into());
                Reply::sse(events)
            } else {
                Reply::json(
                    200,
                    &serde_json::json!({"id": "cmpl-mock01", "object": "text_completion", "created": 1, "model": model,
                    "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}),
                )
            }
        }
        _ => Reply::json(
            404,
            &anthropic::error("not_found_error", &format!("mock: no route {path}")),
        ),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Overloaded",
        _ => "Status",
    }
}

async fn write_reply(sock: &mut impl Wire, inner: &Inner, reply: Reply) -> std::io::Result<()> {
    if reply.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(reply.delay_ms)).await;
    }
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (n, v) in &reply.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    match reply.body {
        MockBody::Full { text, cut_at } => {
            head.push_str(&format!("content-length: {}\r\n\r\n", text.len()));
            sock.write_all(head.as_bytes()).await?;
            match cut_at {
                Some(n) => {
                    sock.write_all(&text.as_bytes()[..n.min(text.len())])
                        .await?;
                    sock.flush().await?;
                    // The body is shorter than declared: end the connection.
                    Err(std::io::Error::other("cut"))
                }
                None => sock.write_all(text.as_bytes()).await,
            }
        }
        MockBody::Chunks { chunks, end } => {
            head.push_str("transfer-encoding: chunked\r\n\r\n");
            sock.write_all(head.as_bytes()).await?;
            // Chunk delays are kept to a schedule from the first byte, not slept one after
            // another: each sleep on tokio's millisecond timer overshoots, and 200 tokens at
            // 1 ms each took 0.4 s instead of the 0.2 s a paced whole answer waits.
            let mut due = tokio::time::Instant::now();
            for c in chunks {
                if let Some(g) = &c.gate {
                    wait_gate(inner, g).await;
                    due = due.max(tokio::time::Instant::now());
                }
                if c.delay_ms > 0 {
                    due += Duration::from_millis(c.delay_ms);
                    tokio::time::sleep_until(due).await;
                }
                if c.text.is_empty() {
                    continue;
                }
                sock.write_all(format!("{:x}\r\n{}\r\n", c.text.len(), c.text).as_bytes())
                    .await?;
                sock.flush().await?;
            }
            match end {
                End::Clean => sock.write_all(b"0\r\n\r\n").await,
                End::Close => {
                    sock.shutdown().await?;
                    Err(std::io::Error::other("closed"))
                }
                End::Reset => {
                    // SO_LINGER 0 turns the close into a RST.
                    let _ = sock.tcp().set_zero_linger();
                    Err(std::io::Error::other("reset"))
                }
                End::Stall => {
                    // Hold the connection until the client gives up (or a minute passes).
                    let mut tmp = [0u8; 1024];
                    let _ = tokio::time::timeout(Duration::from_secs(60), async {
                        while let Ok(n) = sock.read(&mut tmp).await {
                            if n == 0 {
                                break;
                            }
                        }
                    })
                    .await;
                    Err(std::io::Error::other("stalled"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn chat(mock: &MockCloud, body: serde_json::Value) -> (u16, String) {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", mock.url()))
            .json(&body)
            .send()
            .await
            .expect("mock answers");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    fn ask(stream: bool) -> serde_json::Value {
        serde_json::json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
    }

    #[tokio::test]
    async fn a_fail_rate_fails_that_share_of_requests_evenly() {
        let mock = MockCloud::start().await;
        mock.set_profile(Profile {
            fail_rate: 0.3,
            ..Profile::default()
        });
        let mut statuses = Vec::new();
        for _ in 0..10 {
            let (status, body) = chat(&mock, ask(false)).await;
            if status != 200 {
                assert!(body.contains("server_error"), "{body}");
            }
            statuses.push(status);
        }
        assert_eq!(statuses.iter().filter(|s| **s == 529).count(), 3);
        let stats = mock.stats();
        assert_eq!((stats.answered, stats.failed, stats.truncated), (7, 3, 0));
        assert_eq!(stats.per_second.iter().map(|b| b[2]).sum::<u64>(), 3);
    }

    #[tokio::test]
    async fn truncated_streams_end_cleanly_halfway_and_prefills_are_continued() {
        let mock = MockCloud::start().await;
        mock.set_profile(Profile {
            tokens: 6,
            truncate_rate: 0.5,
            record: false,
            ..Profile::default()
        });
        let (_, whole) = chat(&mock, ask(true)).await;
        let (_, cut) = chat(&mock, ask(true)).await;
        assert!(whole.contains("\"finish_reason\":\"stop\"") && whole.contains("[DONE]"));
        assert!(whole.contains(" w5"));
        assert!(cut.contains(" w2") && !cut.contains(" w3"), "{cut}");
        assert!(!cut.contains("finish_reason\":\"stop") && !cut.contains("[DONE]"));
        assert_eq!(mock.stats().truncated, 1);
        assert!(mock.requests().is_empty(), "record: false keeps nothing");
        // OpenAI has no prefill: a final assistant turn is context, and the answer starts
        // anew.
        let mut cont = ask(false);
        cont["messages"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"role": "assistant", "content": "w0 w1 w2"}));
        let (_, rest) = chat(&mock, cont.clone()).await;
        let v: serde_json::Value = serde_json::from_str(&rest).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "w0 w1 w2 w3 w4 w5");
        // Asked in words, it goes on, restating what its profile says.
        cont["messages"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"role": "user", "content": "Continue from the cut."}));
        let (_, rest) = chat(&mock, cont.clone()).await;
        let v: serde_json::Value = serde_json::from_str(&rest).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], " w3 w4 w5");
        mock.set_profile(Profile {
            tokens: 6,
            restate: Restate {
                words: 2,
                newline: true,
            },
            ..Profile::default()
        });
        let (_, rest) = chat(&mock, cont).await;
        let v: serde_json::Value = serde_json::from_str(&rest).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "\nw1 w2 w3 w4 w5");
    }

    #[tokio::test]
    async fn claude_4_6_and_later_refuse_a_prefill_as_anthropic_does_and_older_models_go_on() {
        let mock = MockCloud::start().await;
        let ask = |model: &str| {
            serde_json::json!({"model": model, "max_tokens": 9, "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "text", "text": "Hello from"}]}]})
        };
        let post = |body: serde_json::Value| {
            let url = format!("{}/v1/messages", mock.url());
            async move {
                let r = reqwest::Client::new()
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                (
                    r.status().as_u16(),
                    r.json::<serde_json::Value>().await.unwrap(),
                )
            }
        };
        for model in [
            "claude-opus-4-6",
            "claude-sonnet-4-6-20260101",
            "claude-opus-5",
        ] {
            let (status, v) = post(ask(model)).await;
            assert_eq!(status, 400, "{model}");
            assert_eq!(v["error"]["type"], "invalid_request_error");
            assert_eq!(v["error"]["message"], PREFILL_REFUSAL);
        }
        for model in [
            "claude-sonnet-4-5",
            "claude-haiku-4-5",
            "claude-3-5-sonnet-latest",
        ] {
            let (status, v) = post(ask(model)).await;
            assert_eq!(status, 200, "{model}");
            assert_eq!(v["content"][0]["text"], " the mock cloud.", "{model}");
        }
        // Even those refuse a prefill that ends in whitespace, or one without a thinking block
        // while thinking is on.
        let mut spaced = ask("claude-sonnet-4-5");
        spaced["messages"][1]["content"][0]["text"] = "Hello from ".into();
        let (status, v) = post(spaced).await;
        assert_eq!(status, 400);
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("trailing whitespace"),
            "{v}"
        );
        let mut thinking = ask("claude-sonnet-4-5");
        thinking["thinking"] = serde_json::json!({"type": "enabled", "budget_tokens": 1024});
        let (status, v) = post(thinking).await;
        assert_eq!(status, 400);
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("messages.1.content.0.type"),
            "{v}"
        );
    }

    #[tokio::test]
    async fn paced_answers_take_their_generation_time_streamed_or_not() {
        let mock = MockCloud::start().await;
        mock.set_profile(Profile {
            tokens: 10,
            tokens_per_sec: 200.0,
            ..Profile::default()
        });
        let t = std::time::Instant::now();
        let (status, _) = chat(&mock, ask(false)).await;
        assert_eq!(status, 200);
        assert!(
            t.elapsed() >= Duration::from_millis(50),
            "{:?}",
            t.elapsed()
        );
    }
}
