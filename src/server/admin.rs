//! The admin API: what the gateway is doing (`/api/status`, `/api/events`, `/metrics`, the
//! request feed `/api/requests`), what it should do (`/api/mode`, `/api/pause`), and the
//! dashboard's settings (`/api/claude-code`, `/api/models…`, `/api/config`). The tray and the
//! page at `/ui` talk to the gateway only through it, so the tray's window and a browser on a
//! headless machine show the same thing. The localhost guard applies: another web page cannot
//! call any of it (its `Origin` is refused), and neither can a rebound DNS name.
//!
//! Its errors have one plain shape, [`error_response`]'s, whatever the path looks like: the
//! `/api/` prefix is Ollama's too, but Ollama's error body is for Ollama's endpoints only.

use crate::client_api::ErrorNote;
use crate::config::{Config, ConfigSource};
use crate::desktop::{claude_code, tray};
use crate::error::GatewayError;
use crate::routing::health::HealthEvent;
use crate::server::state::{json_body, AppState};
use crate::sse::Frame;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Json;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// The admin API's routes.
pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/api/status", get(status))
        .route("/api/events", get(events))
        .route("/metrics", get(metrics))
        .route("/api/requests", get(requests))
        .route("/api/timeline", get(timeline))
        .route("/api/mode", get(get_mode).put(put_mode))
        .route("/api/pause", put(put_pause))
        .route(
            "/api/claude-code",
            get(get_claude_code).put(put_claude_code),
        )
        .route("/api/models", get(models))
        .route("/api/models/pull", post(pull_model))
        .route("/api/models/default", put(default_model))
        .route("/api/config", get(get_config).put(put_config))
        .route("/api/session", post(new_session))
        .route("/ui/login", get(login))
}

/// The admin paths that need no token: read-only, no secret and no path in them.
pub fn open(path: &str) -> bool {
    matches!(path, "/metrics" | "/ui/login")
}

/// A one-time dashboard link (`POST /api/session`, with the token): `{"url": "/ui/login?code=…"}`,
/// good once within a minute. `understudy dashboard` opens it.
async fn new_session(State(st): State<Arc<AppState>>) -> Response {
    let code = st.admin.one_time_code();
    Json(json!({
        "url": format!("/ui/login?code={code}"),
        "expires_in_s": crate::server::auth::CODE_LIFETIME.as_secs(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct Login {
    code: Option<String>,
}

/// Spends a one-time code: a session cookie (`HttpOnly`, `SameSite=Strict`) and a redirect to
/// the page; an unknown, used or expired code is a 403 page that says how to get a new one.
async fn login(
    State(st): State<Arc<AppState>>,
    method: http::Method,
    Query(q): Query<Login>,
) -> Response {
    // A HEAD (a link preview, a prefetch) must not spend the code.
    if method == http::Method::HEAD {
        return StatusCode::NO_CONTENT.into_response();
    }
    let Some(session) = q.code.as_deref().and_then(|c| st.admin.redeem(c)) else {
        let mut resp = (
            StatusCode::FORBIDDEN,
            [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "This dashboard link was already used or has expired (links work once, within a minute).\n\
             Run `understudy dashboard`, or use the tray's \"Open dashboard\", for a new one.\n",
        )
            .into_response();
        resp.extensions_mut().insert(ErrorNote(
            "a dashboard link was used twice, expired or forged".into(),
        ));
        return resp;
    };
    let cookie = format!(
        "{}={session}; HttpOnly; SameSite=Strict; Path=/",
        crate::server::auth::SESSION_COOKIE
    );
    (
        StatusCode::SEE_OTHER,
        [
            (http::header::SET_COOKIE, cookie),
            (http::header::LOCATION, "/ui/".to_owned()),
            (http::header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

/// True for a path of [`routes`]: its refusals (the localhost guard's included) take the admin
/// error shape.
pub fn serves(path: &str) -> bool {
    matches!(
        path,
        "/api/status"
            | "/api/events"
            | "/metrics"
            | "/api/requests"
            | "/api/timeline"
            | "/api/mode"
            | "/api/pause"
            | "/api/claude-code"
            | "/api/models"
            | "/api/models/pull"
            | "/api/models/default"
            | "/api/config"
            | "/api/session"
            | "/ui/login"
    )
}

/// An admin endpoint's error, the one shape they all answer with:
/// `{"error": {"type": TYPE, "message": TEXT}}` and the error's status. `TYPE` is a stable
/// snake-case name of the kind of error (`invalid_request`, `unavailable`, `forbidden`, …),
/// `TEXT` says what to do about it.
pub fn error_response(err: &GatewayError) -> Response {
    error_with(err, None)
}

/// [`error_response`]'s shape, with the config validator's `issues` (each `{path, message}`)
/// inside the error object.
fn error_with(err: &GatewayError, issues: Option<Vec<Value>>) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut error = json!({"type": error_type(err), "message": err.to_string()});
    if let Some(issues) = issues {
        error["issues"] = Value::Array(issues);
    }
    let mut resp = (status, Json(json!({ "error": error }))).into_response();
    resp.extensions_mut().insert(ErrorNote(err.to_string()));
    resp
}

/// The `type` of an admin error.
fn error_type(err: &GatewayError) -> &'static str {
    match err {
        GatewayError::InvalidRequest(_) => "invalid_request",
        GatewayError::UnknownModel { .. } => "unknown_model",
        GatewayError::MissingKey { .. } => "missing_key",
        GatewayError::Forbidden(_) => "forbidden",
        GatewayError::Unauthorized(_) => "unauthorized",
        GatewayError::TooLarge { .. } => "too_large",
        GatewayError::LoopDetected => "loop_detected",
        GatewayError::Unsupported(_) => "unsupported",
        GatewayError::NotFound(_) => "not_found",
        GatewayError::Upstream(_) => "upstream",
        GatewayError::Unavailable(_) => "unavailable",
        GatewayError::QuotaExhausted { .. } => "quota_exhausted",
        GatewayError::PromptTooLong { .. } => "prompt_too_long",
    }
}

/// A handler's result as its response.
fn answer(result: Result<Response, GatewayError>) -> Response {
    result.unwrap_or_else(|e| error_response(&e))
}

/// The status snapshot as JSON (`GET /api/status`).
async fn status(State(st): State<Arc<AppState>>) -> Response {
    Json(status_json(&st)).into_response()
}

/// The status snapshot `GET /api/status` serves and `/api/events` opens with:
/// [`AppState::snapshot`], and the one-line summary the tray shows (`summary`: its icon's
/// state and its tooltip), for the page and the terminal too.
pub fn status_json(st: &AppState) -> Value {
    let snap = st.snapshot();
    let local = tray::Local {
        paused: snap.paused,
        ..Default::default()
    };
    let view = tray::view(&snap, local);
    let mut v = json!(snap);
    v["summary"] = json!({"state": view.icon.as_str(), "text": view.tooltip});
    v
}

/// The snapshot in Prometheus's text format: the routing mode, the network, each backend's
/// breaker and figures, and each local engine's state and counters.
async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::status::prometheus(&st.snapshot()),
    )
        .into_response()
}

/// What changes, as it happens (Server-Sent Events): first `status` with the snapshot, then
/// `breaker` ({backend, from, to}), `network` ({offline}), `request` (each finished request),
/// `quota` ({event: crossed|refused|reset, provider, credential, …}),
/// `local` ({provider, event, …}) and the dashboard's own events; a comment every 15 s keeps
/// idle connections open. The tray and the dashboard listen here instead of polling.
async fn events(State(st): State<Arc<AppState>>) -> Response {
    let first = Frame::named("status", &status_json(&st).to_string()).raw;
    let body = futures_util::stream::once(async move { first })
        .chain(futures_util::stream::select_all(event_streams(&st)))
        .map(Ok::<_, std::convert::Infallible>);
    Response::builder()
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .expect("a valid response")
}

/// Every source of `/api/events` after the first snapshot, each as SSE frames.
fn event_streams(st: &AppState) -> Vec<BoxStream<'static, Bytes>> {
    let health = stream_of(st.router.health().subscribe()).map(|ev| {
        let (name, v) = match ev {
            HealthEvent::Breaker { backend, from, to } => (
                "breaker",
                json!({"backend": backend, "from": from, "to": to}),
            ),
            HealthEvent::Network { offline } => ("network", json!({ "offline": offline })),
            HealthEvent::Incident {
                provider,
                incident,
                resolved,
            } => (
                "incident",
                json!({"provider": provider, "incident": incident, "resolved": resolved}),
            ),
            HealthEvent::Reach {
                provider,
                reach,
                detail,
            } => (
                "check",
                json!({"provider": provider, "reach": reach, "detail": detail}),
            ),
        };
        Frame::named(name, &v.to_string()).raw
    });
    let requests = stream_of(st.router.recorder().subscribe())
        .map(|e| Frame::named("request", &json!(*e).to_string()).raw);
    let ui = stream_of(st.ui_events.subscribe())
        .map(|(name, v)| Frame::named(&name, &v.to_string()).raw);
    let quota = stream_of(st.router.quota_events())
        .map(|ev| Frame::named("quota", &json!(ev).to_string()).raw);
    let mut streams = vec![health.boxed(), requests.boxed(), ui.boxed(), quota.boxed()];
    for (name, engine) in st.local_engines() {
        let local = stream_of(engine.subscribe()).map(move |ev| {
            let mut v = json!(ev);
            v["provider"] = json!(name);
            Frame::named("local", &v.to_string()).raw
        });
        streams.push(local.boxed());
    }
    let ticks = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_secs(15)).await;
        Some((Bytes::from_static(b": keep-alive\n\n"), ()))
    });
    streams.push(ticks.boxed());
    streams
}

/// A broadcast receiver as a stream; a listener that falls behind skips what it missed.
fn stream_of<T: Clone + Send + 'static>(
    rx: tokio::sync::broadcast::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    use tokio::sync::broadcast::error::RecvError;
    futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(v) => return Some((v, rx)),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

#[derive(Deserialize)]
struct TimelineQuery {
    /// The browser's offset from UTC in minutes (`-new Date().getTimezoneOffset()`), so the
    /// summaries say its clock times.
    tz_offset_min: Option<i32>,
}

/// Requests read back for the timeline at most: a day of steady use.
const TIMELINE_REQUESTS: usize = 20_000;

/// Each provider's outages out of the journal (`telemetry::timeline`), newest first, each with
/// its summary sentence.
async fn timeline(State(st): State<Arc<AppState>>, Query(q): Query<TimelineQuery>) -> Response {
    let recorder = st.router.recorder().clone();
    let entries = tokio::task::spawn_blocking(move || recorder.history(TIMELINE_REQUESTS))
        .await
        .unwrap_or_default();
    let mut outages = crate::telemetry::timeline::outages(&entries);
    outages.reverse();
    let out: Vec<Value> = outages
        .iter()
        .map(|o| {
            let mut v = json!(o);
            v["summary"] = json!(o.summary(q.tz_offset_min));
            v
        })
        .collect();
    Json(json!({ "outages": out })).into_response()
}

#[derive(Deserialize)]
struct Page {
    limit: Option<usize>,
    before: Option<u64>,
}

/// The newest requests, newest first: `?limit=N` (default 50, at most 1000) and `?before=ID`
/// for older pages, which come from the journal.
async fn requests(State(st): State<Arc<AppState>>, Query(q): Query<Page>) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let recorder = st.router.recorder();
    let entries: Vec<Value> = match (q.before, recorder.journal()) {
        (Some(before), Some(j)) => match j.page(limit, Some(before)) {
            Ok(rows) => rows.into_iter().map(|e| json!(e)).collect(),
            Err(e) => {
                return error_response(&GatewayError::Unavailable(format!(
                    "cannot read the request journal {}: {e}",
                    j.path().display()
                )))
            }
        },
        (Some(before), None) => recorder
            .recent(usize::MAX)
            .into_iter()
            .filter(|e| e.id < before)
            .take(limit)
            .map(|e| json!(*e))
            .collect(),
        (None, _) => recorder
            .recent(limit)
            .into_iter()
            .map(|e| json!(*e))
            .collect(),
    };
    Json(json!({
        "requests": entries,
        "journal": recorder.journal().map(|j| j.path().display().to_string()),
    }))
    .into_response()
}

async fn get_mode(State(st): State<Arc<AppState>>) -> Response {
    Json(json!({"mode": st.router.mode().as_str()})).into_response()
}

/// Switches the routing mode: `{"mode": "auto" | "local-only" | "cloud-only"}`.
async fn put_mode(State(st): State<Arc<AppState>>, body: Body) -> Response {
    answer(
        async {
            let v = json_body(&st, body).await?;
            let name = v.get("mode").and_then(Value::as_str).unwrap_or("");
            let mode = crate::routing::Mode::parse(name).ok_or_else(|| {
                GatewayError::InvalidRequest(format!(
                    "mode {name:?} is not one of \"auto\", \"local-only\", \"cloud-only\""
                ))
            })?;
            st.router.set_mode(mode);
            Ok(Json(json!({"mode": mode.as_str()})).into_response())
        }
        .await,
    )
}

/// `{"paused": true}`: requests go to their route's first backend only (see
/// [`crate::routing::Router::paused`]).
async fn put_pause(State(st): State<Arc<AppState>>, body: Body) -> Response {
    answer(
        async {
            let v = json_body(&st, body).await?;
            let paused = v.get("paused").and_then(Value::as_bool).ok_or_else(|| {
                GatewayError::InvalidRequest(
                    "send {\"paused\": true} or {\"paused\": false}".into(),
                )
            })?;
            st.router.set_paused(paused);
            st.publish("pause", json!({ "paused": paused }));
            Ok(Json(json!({ "paused": paused })).into_response())
        }
        .await,
    )
}

fn claude_paths(st: &AppState) -> Result<&claude_code::Paths, GatewayError> {
    st.claude.as_ref().ok_or_else(|| {
        GatewayError::Unavailable("no home directory, so no Claude Code settings to change".into())
    })
}

async fn get_claude_code(State(st): State<Arc<AppState>>) -> Response {
    answer(claude_paths(&st).map(|p| Json(claude_code::state(p)).into_response()))
}

/// `{"connected": true}` points Claude Code's user settings at this gateway until it is turned
/// off or the gateway stops; `false` puts them back.
async fn put_claude_code(State(st): State<Arc<AppState>>, body: Body) -> Response {
    answer(
        async {
            let v = json_body(&st, body).await?;
            let Some(connected) = v.get("connected").and_then(Value::as_bool) else {
                return Err(GatewayError::InvalidRequest(
                    "send {\"connected\": true} or {\"connected\": false}".into(),
                ));
            };
            let p = claude_paths(&st)?;
            let r = if connected {
                let url = format!("http://127.0.0.1:{}", st.port);
                let header = st.server.require_token.then(|| st.admin.client_header());
                claude_code::connect_with(p, &url, Some(std::process::id()), header.as_deref())
            } else {
                claude_code::disconnect(p).map(|_| ())
            };
            r.map_err(|e| GatewayError::InvalidRequest(e.to_string()))?;
            Ok(Json(claude_code::state(p)).into_response())
        }
        .await,
    )
}

fn models_dir() -> Result<PathBuf, GatewayError> {
    crate::config::models_dir().ok_or_else(|| {
        GatewayError::Unavailable(
            "no models directory: set UNDERSTUDY_MODELS_DIR or a home directory".into(),
        )
    })
}

/// The models directory: what is installed (and which is the default), the catalog, and the
/// pulls under way.
async fn models(State(st): State<Arc<AppState>>) -> Response {
    answer(models_dir().map(|dir| {
        Json(json!({
            "dir": dir.display().to_string(),
            "installed": crate::models::installed(&dir),
            "catalog": crate::models::catalog(),
            "pulls": *st.pulls.lock().expect("pulls lock"),
        }))
        .into_response()
    }))
}

/// `{"name": SPEC}` starts a pull (a catalog name, `hf:owner/repo/file.gguf` or a URL);
/// progress comes as `model_pull` events on `/api/events` and in `GET /api/models`.
async fn pull_model(State(st): State<Arc<AppState>>, body: Body) -> Response {
    answer(
        async {
            let v = json_body(&st, body).await?;
            let name = v
                .get("name")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    GatewayError::InvalidRequest(
                        "send {\"name\": MODEL} with a catalog name".into(),
                    )
                })?
                .to_owned();
            let src = crate::models::resolve(&name)
                .map_err(|e| GatewayError::InvalidRequest(e.to_string()))?;
            let dir = models_dir()?;
            {
                let mut pulls = st.pulls.lock().expect("pulls lock");
                if pulls.get(&name).is_some_and(|p| p["state"] == "pulling") {
                    return Err(GatewayError::InvalidRequest(format!(
                        "{name} is already being pulled"
                    )));
                }
                pulls.insert(
                    name.clone(),
                    json!({"name": name, "state": "pulling", "done": 0}),
                );
            }
            tokio::spawn(run_pull(Arc::downgrade(&st), name, src, dir));
            Ok((StatusCode::ACCEPTED, Json(json!({"pulling": true}))).into_response())
        }
        .await,
    )
}

/// Pulls `src` into `dir`, recording its progress (at most every 250 ms) and its end under
/// `name`.
async fn run_pull(state: Weak<AppState>, name: String, src: crate::models::Source, dir: PathBuf) {
    let mut last = Instant::now();
    let progress_state = state.clone();
    let progress_name = name.clone();
    let mut on_progress = move |p: crate::models::Progress| {
        if last.elapsed() < Duration::from_millis(250) {
            return;
        }
        last = Instant::now();
        if let Some(st) = progress_state.upgrade() {
            let v = json!({"name": progress_name, "state": "pulling", "done": p.done, "total": p.total});
            record_pull(&st, &progress_name, v);
        }
    };
    let result = crate::models::pull(&src, &dir, &mut on_progress).await;
    let Some(st) = state.upgrade() else { return };
    let v = match result {
        Ok(path) => {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            json!({"name": name, "state": "done", "done": size, "total": size, "file": src.file})
        }
        Err(e) => json!({"name": name, "state": "failed", "error": e.to_string()}),
    };
    record_pull(&st, &name, v);
}

/// A pull's progress, kept for `GET /api/models` and published as a `model_pull` event.
fn record_pull(st: &AppState, name: &str, v: Value) {
    st.pulls
        .lock()
        .expect("pulls lock")
        .insert(name.to_owned(), v.clone());
    st.publish("model_pull", v);
}

/// `{"name": SPEC}` makes an installed model the local engine's default (from its next load).
async fn default_model(State(st): State<Arc<AppState>>, body: Body) -> Response {
    answer(
        async {
            let v = json_body(&st, body).await?;
            let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
            let dir = models_dir()?;
            let m = crate::models::choose(&dir, name)
                .map_err(|e| GatewayError::InvalidRequest(e.to_string()))?;
            Ok(
                Json(json!({"default": m.file, "applies": "from the local model's next load"}))
                    .into_response(),
            )
        }
        .await,
    )
}

fn config_path(st: &AppState) -> Option<PathBuf> {
    match &st.config().source {
        ConfigSource::File(p) => Some(p.clone()),
        ConfigSource::ZeroConfig => crate::config::default_path(),
    }
}

/// The config file's text (it holds no secret: keys come from env vars or the keychain, and
/// credential headers are refused), where it is, and whether the gateway runs from it. On
/// zero config there is no file: the text is the configuration the gateway runs on, written
/// out as a file would say it ([`crate::config::zero_config_text`]), to edit and save.
async fn get_config(State(st): State<Arc<AppState>>) -> Response {
    let path = config_path(&st);
    let text = match st.config().source {
        ConfigSource::ZeroConfig => crate::config::zero_config_text(&st.config()),
        ConfigSource::File(_) => path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default(),
    };
    Json(json!({
        "path": path.map(|p| p.display().to_string()),
        "source": st.config().source.to_string(),
        "text": text,
        "zero_config": st.config().source == ConfigSource::ZeroConfig,
    }))
    .into_response()
}

/// `{"text": TOML}`: validated exactly as at start (400, with every issue and its TOML path
/// as the error's `issues`), then saved atomically (temp file + rename) with the previous
/// version kept as `FILE.bak`, and applied at once (`server::reload`; the answer says what
/// changed, and which sections wait for the next start). `{"text": ..., "check": true}` only
/// validates.
async fn put_config(State(st): State<Arc<AppState>>, body: Body) -> Response {
    answer(
        async {
            let v = json_body(&st, body).await?;
            let text = v.get("text").and_then(Value::as_str).ok_or_else(|| {
                GatewayError::InvalidRequest("send {\"text\": \"...the TOML...\"}".into())
            })?;
            let path = config_path(&st).ok_or_else(|| {
                GatewayError::Unavailable(
                    "no config directory on this system; start with --config FILE".into(),
                )
            })?;
            let config = match Config::from_toml(text, ConfigSource::File(path.clone())) {
                Ok(c) => c,
                Err(e) => {
                    let issues = e
                        .issues
                        .iter()
                        .map(|i| json!({"path": i.path, "message": i.message}))
                        .collect();
                    let err = GatewayError::InvalidRequest(e.to_string().trim_end().to_owned());
                    return Ok(error_with(&err, Some(issues)));
                }
            };
            if v.get("check").and_then(Value::as_bool) == Some(true) {
                return Ok(Json(json!({"valid": true})).into_response());
            }
            let before = std::fs::read_to_string(&path).ok();
            // Applied now, not at the file watcher's next look (which then sees it applied):
            // marked before the file changes, so the watcher never applies it a second time.
            let marked = st.applied_text();
            st.set_applied_text(text.to_owned());
            let mut saved = match save_config(&path, text) {
                Ok(saved) => saved,
                Err(e) => {
                    *st.applied_text.lock().expect("applied lock") = marked;
                    return Err(e);
                }
            };
            let applied = crate::server::reload::apply(&st, config, before.as_deref()).await;
            saved["applied"] = json!(applied.words());
            saved["restart_required"] = json!(!applied.at_next_start.is_empty());
            saved["at_next_start"] = json!(applied.at_next_start);
            Ok(Json(saved).into_response())
        }
        .await,
    )
}

/// Saves a validated config, keeping the previous file as `FILE.toml.bak`.
fn save_config(path: &std::path::Path, text: &str) -> Result<Value, GatewayError> {
    let backup = path.with_extension("toml.bak");
    let had = path.exists();
    if had {
        std::fs::copy(path, &backup).map_err(|e| {
            GatewayError::Unavailable(format!(
                "cannot keep the previous version as {}: {e}; nothing was saved",
                backup.display()
            ))
        })?;
    }
    claude_code::write_atomically(path, text.as_bytes()).map_err(|e| {
        GatewayError::Unavailable(format!(
            "cannot save {}: {e}; the previous file is unchanged",
            path.display()
        ))
    })?;
    Ok(json!({
        "saved": path.display().to_string(),
        "backup": had.then(|| backup.display().to_string()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admin_errors_have_one_plain_shape() {
        let resp = error_response(&GatewayError::InvalidRequest(
            "mode \"x\" is not one".into(),
        ));
        assert_eq!(resp.status(), 400);
        assert!(resp.extensions().get::<ErrorNote>().is_some());
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"error": {"type": "invalid_request", "message": "mode \"x\" is not one"}})
        );
        let resp = error_with(
            &GatewayError::InvalidRequest("bad".into()),
            Some(vec![json!({"path": "a.b", "message": "no"})]),
        );
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["issues"][0]["path"], "a.b");
        assert_eq!(v["error"]["message"], "bad");
    }

    #[test]
    fn the_admin_paths_are_not_ollamas() {
        for p in [
            "/api/mode",
            "/api/status",
            "/api/models/default",
            "/metrics",
        ] {
            assert!(serves(p), "{p}");
        }
        for p in [
            "/api/chat",
            "/api/generate",
            "/api/tags",
            "/api/show",
            "/api/version",
        ] {
            assert!(!serves(p), "{p}");
        }
    }
}
