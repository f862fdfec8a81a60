//! The dashboard's page (`/ui`, the files in `ui/`, built into the binary) and the small JSON
//! API it and the tray use beside `/api/status` and `/api/events`: the request feed, the
//! Claude Code toggle, pause, the model manager and the settings file.
//!
//! The page talks to the gateway only through this API, so the tray's window and a browser on
//! a headless machine show the same thing. The localhost guard applies: another web page
//! cannot call any of it (its `Origin` is refused), and neither can a rebound DNS name.

use crate::client_api::Dialect;
use crate::config::{Config, ConfigSource};
use crate::error::GatewayError;
use crate::server::{read_body, AppState};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Json;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;

/// The dashboard's routes.
pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/app.js", get(app_js))
        .route("/ui/style.css", get(style_css))
        .route("/api/requests", get(requests))
        .route(
            "/api/claude-code",
            get(get_claude_code).put(put_claude_code),
        )
        .route("/api/pause", put(put_pause))
        .route("/api/models", get(models))
        .route("/api/models/pull", post(pull_model))
        .route("/api/models/default", put(default_model))
        .route("/api/config", get(get_config).put(put_config))
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (http::header::CONTENT_TYPE, content_type),
            (http::header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    page("text/html; charset=utf-8", include_str!("../ui/index.html"))
}

async fn app_js() -> Response {
    page(
        "text/javascript; charset=utf-8",
        include_str!("../ui/app.js"),
    )
}

async fn style_css() -> Response {
    page("text/css; charset=utf-8", include_str!("../ui/style.css"))
}

/// Errors of this API: `{"error": "..."}` with the status.
fn fail(e: GatewayError) -> Response {
    Dialect::Ollama.error_response(&e)
}

async fn json_body(st: &AppState, body: Body) -> Result<Value, GatewayError> {
    let bytes = read_body(st, body).await?;
    crate::relay::parse_json(&bytes)
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
                return fail(GatewayError::Unavailable(format!(
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

fn claude_paths(st: &AppState) -> Result<&crate::claude_code::Paths, GatewayError> {
    st.claude.as_ref().ok_or_else(|| {
        GatewayError::Unavailable("no home directory, so no Claude Code settings to change".into())
    })
}

async fn get_claude_code(State(st): State<Arc<AppState>>) -> Response {
    match claude_paths(&st) {
        Ok(p) => Json(crate::claude_code::state(p)).into_response(),
        Err(e) => fail(e),
    }
}

/// `{"connected": true}` points Claude Code's user settings at this gateway until it is turned
/// off or the gateway stops; `false` puts them back.
async fn put_claude_code(State(st): State<Arc<AppState>>, body: Body) -> Response {
    let result = async {
        let v = json_body(&st, body).await?;
        let Some(connected) = v.get("connected").and_then(Value::as_bool) else {
            return Err(GatewayError::InvalidRequest(
                "send {\"connected\": true} or {\"connected\": false}".into(),
            ));
        };
        let p = claude_paths(&st)?;
        let r = if connected {
            crate::claude_code::connect(
                p,
                &format!("http://127.0.0.1:{}", st.port),
                Some(std::process::id()),
            )
        } else {
            crate::claude_code::disconnect(p).map(|_| ())
        };
        r.map_err(|e| GatewayError::InvalidRequest(e.to_string()))?;
        Ok(Json(crate::claude_code::state(p)).into_response())
    }
    .await;
    result.unwrap_or_else(fail)
}

/// `{"paused": true}`: requests go to their route's first backend only (see
/// [`crate::routing::Router::paused`]).
async fn put_pause(State(st): State<Arc<AppState>>, body: Body) -> Response {
    let result = async {
        let v = json_body(&st, body).await?;
        let paused = v.get("paused").and_then(Value::as_bool).ok_or_else(|| {
            GatewayError::InvalidRequest("send {\"paused\": true} or {\"paused\": false}".into())
        })?;
        st.router.set_paused(paused);
        st.publish("pause", json!({ "paused": paused }));
        Ok::<_, GatewayError>(Json(json!({ "paused": paused })).into_response())
    }
    .await;
    result.unwrap_or_else(fail)
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
    match models_dir() {
        Ok(dir) => Json(json!({
            "dir": dir.display().to_string(),
            "installed": crate::models::installed(&dir),
            "catalog": crate::models::catalog(),
            "pulls": *st.pulls.lock().expect("pulls lock"),
        }))
        .into_response(),
        Err(e) => fail(e),
    }
}

/// `{"name": SPEC}` starts a pull (a catalog name, `hf:owner/repo/file.gguf` or a URL);
/// progress comes as `model_pull` events on `/api/events` and in `GET /api/models`.
async fn pull_model(State(st): State<Arc<AppState>>, body: Body) -> Response {
    let result = async {
        let v = json_body(&st, body).await?;
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                GatewayError::InvalidRequest("send {\"name\": MODEL} with a catalog name".into())
            })?
            .to_owned();
        let src = crate::models::resolve(&name)
            .map_err(|e| GatewayError::InvalidRequest(e.to_string()))?;
        let dir = models_dir()?;
        {
            let mut pulls = st.pulls.lock().expect("pulls lock");
            if pulls.get(&name).is_some_and(|p| p["state"] == "pulling") {
                return Err(GatewayError::InvalidRequest(format!("{name} is already being pulled")));
            }
            pulls.insert(name.clone(), json!({"name": name, "state": "pulling", "done": 0}));
        }
        let weak = Arc::downgrade(&st);
        tokio::spawn(async move {
            let mut last = std::time::Instant::now();
            let progress_name = name.clone();
            let progress_weak = weak.clone();
            let mut on_progress = move |p: crate::models::Progress| {
                if last.elapsed() < std::time::Duration::from_millis(250) {
                    return;
                }
                last = std::time::Instant::now();
                if let Some(st) = progress_weak.upgrade() {
                    let v = json!({"name": progress_name, "state": "pulling", "done": p.done, "total": p.total});
                    st.pulls.lock().expect("pulls lock").insert(progress_name.clone(), v.clone());
                    st.publish("model_pull", v);
                }
            };
            let result = crate::models::pull(&src, &dir, &mut on_progress).await;
            let Some(st) = weak.upgrade() else { return };
            let v = match result {
                Ok(path) => {
                    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    json!({"name": name, "state": "done", "done": size, "total": size, "file": src.file})
                }
                Err(e) => json!({"name": name, "state": "failed", "error": e.to_string()}),
            };
            st.pulls.lock().expect("pulls lock").insert(name.clone(), v.clone());
            st.publish("model_pull", v);
        });
        Ok((StatusCode::ACCEPTED, Json(json!({"pulling": true}))).into_response())
    }
    .await;
    result.unwrap_or_else(fail)
}

/// `{"name": SPEC}` makes an installed model the local engine's default (from its next load).
async fn default_model(State(st): State<Arc<AppState>>, body: Body) -> Response {
    let result = async {
        let v = json_body(&st, body).await?;
        let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
        let dir = models_dir()?;
        let m = crate::models::choose(&dir, name)
            .map_err(|e| GatewayError::InvalidRequest(e.to_string()))?;
        Ok::<_, GatewayError>(
            Json(json!({"default": m.file, "applies": "from the local model's next load"}))
                .into_response(),
        )
    }
    .await;
    result.unwrap_or_else(fail)
}

fn config_path(st: &AppState) -> Option<PathBuf> {
    match &st.config.source {
        ConfigSource::File(p) => Some(p.clone()),
        ConfigSource::ZeroConfig => crate::config::default_path(),
    }
}

/// The config file's text (it holds no secret: keys come from env vars or the keychain, and
/// credential headers are refused), where it is, and whether the gateway runs from it.
async fn get_config(State(st): State<Arc<AppState>>) -> Response {
    let path = config_path(&st);
    let text = path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    Json(json!({
        "path": path.map(|p| p.display().to_string()),
        "source": st.config.source.to_string(),
        "text": text,
        "zero_config": st.config.source == ConfigSource::ZeroConfig,
    }))
    .into_response()
}

/// `{"text": TOML}`: validated exactly as at start (every issue with its TOML path, 400), then
/// saved atomically (temp file + rename) with the previous version kept as `FILE.bak`. It
/// applies from the next start. `{"text": ..., "check": true}` only validates.
async fn put_config(State(st): State<Arc<AppState>>, body: Body) -> Response {
    let result = async {
        let v = json_body(&st, body).await?;
        let text = v.get("text").and_then(Value::as_str).ok_or_else(|| {
            GatewayError::InvalidRequest("send {\"text\": \"...the TOML...\"}".into())
        })?;
        let path = config_path(&st).ok_or_else(|| {
            GatewayError::Unavailable(
                "no config directory on this system; start with --config FILE".into(),
            )
        })?;
        if let Err(e) = Config::from_toml(text, ConfigSource::File(path.clone())) {
            let issues: Vec<Value> = e
                .issues
                .iter()
                .map(|i| json!({"path": i.path, "message": i.message}))
                .collect();
            return Ok((
                StatusCode::BAD_REQUEST,
                Json(json!({"error": e.to_string().trim_end(), "issues": issues})),
            )
                .into_response());
        }
        if v.get("check").and_then(Value::as_bool) == Some(true) {
            return Ok(Json(json!({"valid": true})).into_response());
        }
        let backup = path.with_extension("toml.bak");
        let had = path.exists();
        if had {
            std::fs::copy(&path, &backup).map_err(|e| {
                GatewayError::Unavailable(format!(
                    "cannot keep the previous version as {}: {e}; nothing was saved",
                    backup.display()
                ))
            })?;
        }
        crate::claude_code::write_atomically(&path, text.as_bytes()).map_err(|e| {
            GatewayError::Unavailable(format!(
                "cannot save {}: {e}; the previous file is unchanged",
                path.display()
            ))
        })?;
        Ok(Json(json!({
            "saved": path.display().to_string(),
            "backup": had.then(|| backup.display().to_string()),
            "restart_required": true,
        }))
        .into_response())
    }
    .await;
    result.unwrap_or_else(fail)
}
