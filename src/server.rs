//! The HTTP server: the axum router, the localhost guard (loop, Host, Origin, body size), the
//! endpoints of each client dialect, and graceful shutdown.

use crate::client_api::{anthropic, openai, Dialect, ErrorNote};
use crate::config::Config;
use crate::error::GatewayError;
use crate::providers::{Operation, HOP_HEADER};
use crate::relay::{relay, relay_ollama, Call};
use crate::routing::Router;
use crate::wire::ollama;
use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Json;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long in-flight requests (streams) get to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Model names → providers.
    pub router: Router,
    /// The port actually bound (the gateway's own origin).
    pub port: u16,
    /// Claude Code's settings, for the connect toggle (None without a home directory).
    pub claude: Option<crate::claude_code::Paths>,
    /// Model pulls started from the dashboard, by name: their last progress.
    pub pulls: std::sync::Mutex<std::collections::BTreeMap<String, serde_json::Value>>,
    /// The dashboard's own events (`model_pull`, `pause`, `claude_code`) for `/api/events`.
    pub ui_events: tokio::sync::broadcast::Sender<(String, serde_json::Value)>,
}

impl AppState {
    /// Publishes an event to `/api/events` listeners.
    pub fn publish(&self, name: &str, v: serde_json::Value) {
        let _ = self.ui_events.send((name.to_owned(), v));
    }
}

/// Builds the application for a bound port.
pub async fn app(config: Config, port: u16) -> axum::Router {
    build(config, port).await.0
}

/// Builds the application for a bound port, and hands out its state (for an app around the
/// gateway: the tray reads the router's events and status from it).
pub async fn build(config: Config, port: u16) -> (axum::Router, Arc<AppState>) {
    let router = Router::new(&config).await;
    let state = Arc::new(AppState {
        config: Arc::new(config),
        router,
        port,
        claude: crate::claude_code::Paths::current(),
        pulls: Default::default(),
        ui_events: tokio::sync::broadcast::channel(64).0,
    });
    tokio::spawn(on_health_events(Arc::downgrade(&state)));
    let app = axum::Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/api/chat", post(ollama_chat))
        .route("/api/generate", post(ollama_generate))
        .route("/api/tags", get(ollama_tags))
        .route("/api/show", post(ollama_show))
        .route("/api/version", get(ollama_version))
        .route("/", get(root).head(root))
        .route("/api/hello", get(hello).head(hello))
        .route("/healthz", get(healthz))
        .route("/api/mode", get(get_mode).put(put_mode))
        .route("/api/status", get(status))
        .route("/api/events", get(events))
        .route("/metrics", get(metrics))
        .merge(crate::dashboard::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state.clone());
    (app, state)
}

/// Acts on the health events: a backend whose breaker opens gets a prober
/// ([`probe_until_recovered`]), and a failing cloud warms the local engines ([`warm_local`]).
/// Holds the application weakly: it ends with it.
async fn on_health_events(state: std::sync::Weak<AppState>) {
    let mut events = match state.upgrade() {
        Some(st) => st.router.health().subscribe(),
        None => return,
    };
    loop {
        let ev = match events.recv().await {
            Ok(ev) => ev,
            // Missed events (a burst): the next open breaker still gets its prober.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(st) = state.upgrade() else { return };
        warm_local(&st, &ev);
        if let crate::resilience::HealthEvent::Breaker { backend, to, .. } = ev {
            if to == "open" {
                tokio::spawn(probe_until_recovered(state.clone(), backend));
            }
        }
    }
}

/// Probes a backend whose breaker is open until it recovers: a probe that gets any answer but
/// an overload moves the breaker to half-open, so the next request is its trial at once.
async fn probe_until_recovered(state: std::sync::Weak<AppState>, backend: String) {
    loop {
        let (provider, health) = {
            let Some(st) = state.upgrade() else { return };
            let name = backend.split_once('/').map_or(backend.as_str(), |(p, _)| p);
            let Some(provider) = st.router.provider(name).cloned() else {
                return;
            };
            (provider, st.router.health().clone())
        };
        tokio::time::sleep(health.probe_interval()).await;
        if !matches!(
            health.state(&backend),
            crate::resilience::breaker::State::Open { .. }
        ) {
            return;
        }
        match provider.probe().await {
            Ok(status) if !crate::resilience::status_fails_over(status) => {
                tracing::info!(backend = %backend, status, "probe answered; the next request is the trial");
                health.probe_ok(&backend);
                return;
            }
            Ok(status) => {
                tracing::debug!(backend = %backend, status, "probe: still failing")
            }
            Err(e) => tracing::debug!(backend = %backend, error = %e, "probe: unreachable"),
        }
    }
}

/// The warm fallback: when a cloud backend's breaker opens or the network goes down, every
/// local engine configured `warm` loads its model now, so the answer that comes its way next
/// does not wait for the load.
fn warm_local(st: &AppState, ev: &crate::resilience::HealthEvent) {
    let cloud_failing = match ev {
        crate::resilience::HealthEvent::Network { offline } => *offline,
        crate::resilience::HealthEvent::Breaker { backend, to, .. } => {
            let name = backend.split_once('/').map_or(backend.as_str(), |(p, _)| p);
            *to == "open" && st.router.provider(name).is_some_and(|p| p.local.is_none())
        }
    };
    if !cloud_failing {
        return;
    }
    for p in &st.config.providers {
        if let Some(engine) = st.router.provider(&p.name).and_then(|p| p.local.clone()) {
            if engine.warm() {
                tokio::spawn(async move { engine.preload().await });
            }
        }
    }
}

/// Serves on `listener` until `shutdown` resolves, then lets in-flight requests finish for at
/// most [`SHUTDOWN_GRACE`].
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    let ollama_listen = config.server.ollama_listen;
    let app = app(config, port).await;
    serve_app(listener, app, ollama_listen, shutdown).await
}

/// Serves a built application on `listener` (and on `ollama_listen`) until `shutdown`
/// resolves, then lets in-flight requests finish for at most [`SHUTDOWN_GRACE`].
pub async fn serve_app(
    listener: TcpListener,
    app: axum::Router,
    ollama_listen: Option<SocketAddr>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = ollama_listen {
        // Tools that only know Ollama's port reach the same application there.
        let second = TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {addr} (server.ollama_listen): {e}; is Ollama itself running there?"),
            )
        })?;
        tracing::info!(%addr, "also serving on the Ollama port");
        let mut stop = rx.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let serve = axum::serve(
                second.tap_io(set_nodelay),
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|&v| v).await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "the Ollama-port listener failed");
            }
        });
    }
    let serve = axum::serve(
        listener.tap_io(set_nodelay),
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let serve = std::future::IntoFuture::into_future(serve);
    tokio::pin!(serve);
    let mut rx = rx;
    tokio::select! {
        r = &mut serve => return r,
        _ = rx.wait_for(|&v| v) => {}
    }
    tracing::info!(grace = ?SHUTDOWN_GRACE, "shutting down; waiting for in-flight requests");
    match tokio::time::timeout(SHUTDOWN_GRACE, serve).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(
                "in-flight requests did not finish within the grace period; closing them"
            );
            Ok(())
        }
    }
}

/// Streams are many small writes: without `TCP_NODELAY` each event after the first can wait
/// for the client's delayed ACK (40 ms on Linux), which is most of a token's time.
fn set_nodelay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY on a client connection");
    }
}

/// Resolves on SIGINT or SIGTERM.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    // The handlers are installed now, not at the first poll: a signal that arrives while the
    // application is still being built is not lost (nor fatal).
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        async fn wait(s: Option<Signal>) {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            tokio::select! {
                _ = wait(term) => {},
                _ = wait(int) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The localhost guard, before any handler:
/// - a request that already passed through an Understudy is a loop;
/// - a `Host` that is not a loopback name (or listed in `server.allowed_hosts`) is DNS rebinding;
/// - an `Origin` other than the gateway's own is a web page trying to spend the user's keys
///   (CLI clients such as Claude Code send none);
/// - a declared body larger than the limit is refused before it is read.
async fn guard(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let dialect = Dialect::of_request(req.uri().path(), req.headers());
    let h = req.headers();
    let verdict = if h.contains_key(HOP_HEADER) {
        Err(GatewayError::LoopDetected)
    } else if let Some(host) = request_host(&req) {
        if host_allowed(&host, &st.config.server.allowed_hosts) {
            Ok(())
        } else {
            Err(GatewayError::Forbidden(format!(
                "Host {host:?} is not a loopback name; Understudy answers only requests addressed to \
                 localhost/127.0.0.1/[::1] (add the name to server.allowed_hosts to accept it)"
            )))
        }
    } else {
        Ok(())
    };
    let verdict = verdict.and_then(|()| match h.get(http::header::ORIGIN) {
        Some(o) if !origin_allowed(o.to_str().unwrap_or("null"), st.port) => Err(GatewayError::Forbidden(format!(
            "cross-origin request from {:?} refused: a web page may not use this gateway (and the keys behind it)",
            o.to_str().unwrap_or("?")
        ))),
        _ => Ok(()),
    });
    let verdict = verdict.and_then(|()| {
        let declared = h
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(n) if n > st.config.server.max_body_bytes => Err(GatewayError::TooLarge {
                limit: st.config.server.max_body_bytes,
            }),
            _ => Ok(()),
        }
    });
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = match verdict {
        Ok(()) => next.run(req).await,
        Err(e) => dialect.error_response(&e),
    };
    if let Some(ErrorNote(why)) = resp.extensions().get::<ErrorNote>() {
        tracing::warn!(%method, %path, dialect = dialect.as_str(), status = resp.status().as_u16(), error = %why, "request refused");
    }
    resp
}

fn request_host(req: &Request) -> Option<String> {
    if let Some(h) = req.headers().get(http::header::HOST) {
        return Some(h.to_str().unwrap_or("").to_owned());
    }
    // HTTP/2 carries the host in :authority.
    req.uri().authority().map(|a| a.as_str().to_owned())
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

fn is_loopback_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = strip_port(host);
    is_loopback_name(name) || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

fn origin_allowed(origin: &str, port: u16) -> bool {
    let Some(rest) = origin.strip_prefix("http://") else {
        return false;
    };
    let name = strip_port(rest);
    let origin_port = rest
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(80);
    is_loopback_name(name) && origin_port == port
}

pub(crate) async fn read_body(st: &AppState, body: Body) -> Result<Bytes, GatewayError> {
    let limit = st.config.server.max_body_bytes;
    axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .await
        .map_err(|e| {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = source {
                if s.is::<http_body_util::LengthLimitError>() {
                    return GatewayError::TooLarge { limit };
                }
                source = s.source();
            }
            GatewayError::InvalidRequest(format!("could not read the request body: {e}"))
        })
}

async fn relay_call(
    st: &AppState,
    dialect: Dialect,
    op: Operation,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = match read_body(st, body).await {
        Ok(body) => {
            relay(
                &st.router,
                Call {
                    dialect,
                    op,
                    query,
                    headers,
                    body,
                    keepalive: st.config.server.keepalive,
                },
            )
            .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(resp) => resp,
        Err(GatewayError::Unsupported(why)) if op == Operation::CountTokens => {
            // Claude Code falls back to its own estimate on a 404 (protocol.md §1.1).
            dialect.error_response(&GatewayError::NotFound(format!(
                "count_tokens is not available here: {why}"
            )))
        }
        Err(e) => dialect.error_response(&e),
    }
}

async fn messages(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    relay_call(
        &st,
        Dialect::Anthropic,
        Operation::Messages,
        q,
        headers,
        body,
    )
    .await
}

async fn count_tokens(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    relay_call(
        &st,
        Dialect::Anthropic,
        Operation::CountTokens,
        q,
        headers,
        body,
    )
    .await
}

async fn chat_completions(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    relay_call(
        &st,
        Dialect::OpenAi,
        Operation::ChatCompletions,
        None,
        headers,
        body,
    )
    .await
}

async fn completions(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    relay_call(
        &st,
        Dialect::OpenAi,
        Operation::Completions,
        None,
        headers,
        body,
    )
    .await
}

async fn embeddings(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    relay_call(
        &st,
        Dialect::OpenAi,
        Operation::Embeddings,
        None,
        headers,
        body,
    )
    .await
}

async fn ollama(st: &AppState, endpoint: ollama::Endpoint, body: Body) -> Response {
    let result = match read_body(st, body).await {
        Ok(body) => relay_ollama(&st.router, endpoint, &body, st.config.server.keepalive).await,
        Err(e) => Err(e),
    };
    result.unwrap_or_else(|e| Dialect::Ollama.error_response(&e))
}

async fn ollama_chat(State(st): State<Arc<AppState>>, body: Body) -> Response {
    ollama(&st, ollama::Endpoint::Chat, body).await
}

async fn ollama_generate(State(st): State<Arc<AppState>>, body: Body) -> Response {
    ollama(&st, ollama::Endpoint::Generate, body).await
}

async fn ollama_tags(State(st): State<Arc<AppState>>) -> Response {
    Json(ollama::tags(&st.router.model_ids())).into_response()
}

async fn ollama_show(State(st): State<Arc<AppState>>, body: Body) -> Response {
    let result = async {
        let body = read_body(&st, body).await?;
        let v: serde_json::Value = crate::relay::parse_json(&body)?;
        let name = v
            .get("model")
            .or_else(|| v.get("name"))
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| GatewayError::InvalidRequest("body.model: is required".into()))?;
        let chain = st.router.resolve(name)?;
        let upstream = chain.first().map_or(name, |b| b.model.as_str());
        Ok::<_, GatewayError>(
            Json(ollama::show(
                name,
                crate::wire::known_context_length(upstream),
            ))
            .into_response(),
        )
    }
    .await;
    result.unwrap_or_else(|e| Dialect::Ollama.error_response(&e))
}

async fn ollama_version() -> Response {
    Json(serde_json::json!({"version": ollama::VERSION})).into_response()
}

/// Ollama clients probe `GET /` for this exact text.
async fn root() -> &'static str {
    "Ollama is running"
}

async fn models(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let ids = st.router.model_ids();
    match Dialect::of_request("/v1/models", &headers) {
        Dialect::Anthropic => {
            Json(anthropic::model_list(&st.router.anthropic_model_ids())).into_response()
        }
        Dialect::OpenAi | Dialect::Ollama => Json(openai::model_list(&ids, |id| {
            st.router
                .resolve(id)
                .ok()
                .and_then(|chain| chain.first().map(|b| b.provider.name().to_owned()))
                .unwrap_or_else(|| "understudy".into())
        }))
        .into_response(),
    }
}

async fn hello() -> StatusCode {
    StatusCode::OK
}

async fn get_mode(State(st): State<Arc<AppState>>) -> Response {
    Json(serde_json::json!({"mode": st.router.mode().as_str()})).into_response()
}

/// Switches the routing mode: `{"mode": "auto" | "local-only" | "cloud-only"}`.
async fn put_mode(State(st): State<Arc<AppState>>, body: Body) -> Response {
    let result = async {
        let body = read_body(&st, body).await?;
        let v: serde_json::Value = crate::relay::parse_json(&body)?;
        let name = v
            .get("mode")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        let mode = crate::routing::Mode::parse(name).ok_or_else(|| {
            GatewayError::InvalidRequest(format!(
                "mode {name:?} is not one of \"auto\", \"local-only\", \"cloud-only\""
            ))
        })?;
        st.router.set_mode(mode);
        Ok::<_, GatewayError>(Json(serde_json::json!({"mode": mode.as_str()})).into_response())
    }
    .await;
    result.unwrap_or_else(|e| Dialect::Ollama.error_response(&e))
}

/// A JSON snapshot: the routing mode, whether the network looks down, every provider with the
/// breaker state of each backend used so far (and its engine, for a local one), and the first
/// local engine again as `local`.
async fn status(State(st): State<Arc<AppState>>) -> Response {
    Json(status_json(&st)).into_response()
}

/// The status snapshot `GET /api/status` serves and `/api/events` opens with.
pub fn status_json(st: &AppState) -> serde_json::Value {
    use crate::status::{BackendStatus, ProviderStatus, Snapshot};
    let health = st.router.health();
    let breakers: std::collections::BTreeMap<String, _> = health.snapshot().into_iter().collect();
    let (stats, totals) = st.router.recorder().stats();
    let providers: Vec<ProviderStatus> = st
        .config
        .providers
        .iter()
        .map(|p| {
            let prefix = format!("{}/", p.name);
            ProviderStatus {
                name: p.name.clone(),
                kind: p.kind.as_str().to_owned(),
                backends: {
                    // Every backend with a breaker or figures, in name order.
                    let mut keys: Vec<&String> = breakers
                        .keys()
                        .chain(stats.keys())
                        .filter(|k| k.starts_with(&prefix))
                        .collect();
                    keys.sort();
                    keys.dedup();
                    keys.into_iter()
                        .map(|k| BackendStatus {
                            backend: k.clone(),
                            breaker: breakers.get(k).map_or("closed", |s| s.as_str()).to_owned(),
                            stats: stats.get(k).cloned().unwrap_or_default(),
                        })
                        .collect()
                },
                local: st
                    .router
                    .provider(&p.name)
                    .and_then(|p| p.local.as_ref())
                    .map(|e| serde_json::json!(e.status())),
            }
        })
        .collect();
    let local = providers.iter().find_map(|p| p.local.clone());
    let snap = Snapshot {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        mode: st.router.mode().as_str().to_owned(),
        offline: health.offline(),
        providers,
        local,
        totals,
        claude_code: st.claude.as_ref().map(crate::claude_code::state),
        paused: st.router.paused(),
    };
    // The one-line summary the tray shows, for the page and the terminal too.
    let view = crate::tray::view(
        &snap,
        crate::tray::Local {
            paused: snap.paused,
            ..Default::default()
        },
    );
    let mut v = serde_json::json!(snap);
    v["summary"] = serde_json::json!({"state": view.icon.as_str(), "text": view.tooltip});
    v
}

/// The snapshot in Prometheus's text format: the routing mode, the network, each backend's
/// breaker, and each local engine's state and counters.
async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let snap: crate::status::Snapshot =
        serde_json::from_value(status_json(&st)).expect("the snapshot parses as itself");
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::status::prometheus(&snap),
    )
        .into_response()
}

/// What changes, as it happens (Server-Sent Events): first `status` with the snapshot, then
/// `breaker` ({backend, from, to}), `network` ({offline}) and `local` ({provider, event, …})
/// events; a comment every 15 s keeps idle connections open. The tray and the dashboard
/// listen here instead of polling.
async fn events(State(st): State<Arc<AppState>>) -> Response {
    use futures_util::StreamExt;
    let first = crate::sse::Frame::named("status", &status_json(&st).to_string()).raw;
    let health = tokio_stream_of(st.router.health().subscribe()).map(|ev| match ev {
        crate::resilience::HealthEvent::Breaker { backend, from, to } => crate::sse::Frame::named(
            "breaker",
            &serde_json::json!({"backend": backend, "from": from, "to": to}).to_string(),
        ),
        crate::resilience::HealthEvent::Network { offline } => crate::sse::Frame::named(
            "network",
            &serde_json::json!({"offline": offline}).to_string(),
        ),
    }.raw);
    let requests = tokio_stream_of(st.router.recorder().subscribe())
        .map(|e| crate::sse::Frame::named("request", &serde_json::json!(*e).to_string()).raw);
    let ui = tokio_stream_of(st.ui_events.subscribe())
        .map(|(name, v)| crate::sse::Frame::named(&name, &v.to_string()).raw);
    let mut streams = vec![health.boxed(), requests.boxed(), ui.boxed()];
    for p in &st.config.providers {
        if let Some(engine) = st.router.provider(&p.name).and_then(|p| p.local.clone()) {
            let name = p.name.clone();
            streams.push(
                tokio_stream_of(engine.subscribe())
                    .map(move |ev| {
                        let mut v = serde_json::json!(ev);
                        v["provider"] = serde_json::json!(name);
                        crate::sse::Frame::named("local", &v.to_string()).raw
                    })
                    .boxed(),
            );
        }
    }
    let ticks = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_secs(15)).await;
        Some((Bytes::from_static(b": keep-alive\n\n"), ()))
    });
    streams.push(ticks.boxed());
    let body = futures_util::stream::once(async move { first })
        .chain(futures_util::stream::select_all(streams))
        .map(Ok::<_, std::convert::Infallible>);
    Response::builder()
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .expect("a valid response")
}

/// A broadcast receiver as a stream; a listener that falls behind skips what it missed.
fn tokio_stream_of<T: Clone + Send + 'static>(
    rx: tokio::sync::broadcast::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(v) => return Some((v, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})).into_response()
}

async fn not_found(method: Method, req: Request) -> Response {
    let dialect = Dialect::of_request(req.uri().path(), req.headers());
    dialect.error_response(&GatewayError::NotFound(format!(
        "no endpoint {method} {}; Understudy serves POST /v1/messages, POST /v1/messages/count_tokens, \
         POST /v1/chat/completions, POST /v1/completions, POST /v1/embeddings, GET /v1/models, \
         and Ollama's POST /api/chat, POST /api/generate, GET /api/tags, POST /api/show, GET /api/version",
        req.uri().path()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_allowed_and_others_are_not() {
        for h in [
            "localhost",
            "localhost:8723",
            "127.0.0.1:8723",
            "127.1.2.3",
            "[::1]:8723",
            "LOCALHOST",
        ] {
            assert!(host_allowed(h, &[]), "{h}");
        }
        for h in [
            "evil.example:8723",
            "192.168.1.2:8723",
            "localhost.evil.example",
            "[::2]:1",
        ] {
            assert!(!host_allowed(h, &[]), "{h}");
        }
        assert!(host_allowed("devbox:8723", &["devbox".into()]));
    }

    #[test]
    fn only_the_gateways_own_origin_is_allowed() {
        assert!(origin_allowed("http://127.0.0.1:8723", 8723));
        assert!(origin_allowed("http://localhost:8723", 8723));
        assert!(!origin_allowed("http://localhost:3000", 8723));
        assert!(!origin_allowed("https://evil.example", 8723));
        assert!(!origin_allowed("null", 8723));
    }
}
