//! The HTTP server: the axum router over the client dialects' endpoints ([`api`]), the admin
//! API ([`admin`]) and the dashboard's page ([`dashboard`]), behind the localhost guard
//! ([`guard`]); what the handlers share ([`state`]); the reactions to health events (probes,
//! warming the local model); and serving with graceful shutdown.
//!
//! The submodules import [`state`] and nothing of this file, so the graph stays a tree:
//! `mod` → `api`, `admin`, `dashboard`, `guard` → `state`.

mod admin;
mod api;
pub mod auth;
pub mod checks;
mod dashboard;
mod guard;
pub mod reload;
mod state;
pub mod statuspage;

pub use admin::status_json;
pub use state::AppState;

use crate::config::Config;
use crate::routing::health::{provider_of, HealthEvent};
use axum::middleware;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;

/// How long in-flight requests (streams) get to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Builds the application for a bound port.
pub async fn app(config: Config, port: u16) -> axum::Router {
    build(config, port).await.0
}

/// Builds the application for a bound port, and hands out its state (for an app around the
/// gateway: the tray reads the router's events and status from it).
pub async fn build(config: Config, port: u16) -> (axum::Router, Arc<AppState>) {
    let router = crate::routing::Router::new(&config).await;
    let admin = auth::Admin::new(config.server.admin_token_file.as_deref());
    let in_flight = Arc::new(tokio::sync::Semaphore::new(config.server.max_in_flight));
    let request_memory = Arc::new(tokio::sync::Semaphore::new(
        usize::try_from(config.server.max_request_memory / 1024).unwrap_or(usize::MAX >> 4),
    ));
    let state = Arc::new(AppState {
        in_flight,
        request_memory,
        admin,
        server: config.server.clone(),
        config: std::sync::RwLock::new(Arc::new(config)),
        router,
        port,
        claude: crate::desktop::claude_code::Paths::current(),
        pulls: Default::default(),
        ui_events: tokio::sync::broadcast::channel(64).0,
        config_state: Default::default(),
        applied_text: Default::default(),
        reloading: Default::default(),
        watched: Default::default(),
    });
    tokio::spawn(on_health_events(Arc::downgrade(&state)));
    tokio::spawn(on_quota(Arc::downgrade(&state)));
    let names: Vec<String> = state
        .config()
        .providers
        .iter()
        .map(|p| p.name.clone())
        .collect();
    watch_providers(&state, &names);
    tokio::spawn(reload::watch_file(Arc::downgrade(&state)));
    let app = axum::Router::new()
        .merge(api::routes())
        .merge(admin::routes())
        .merge(dashboard::routes())
        .fallback(api::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        .with_state(state.clone());
    (app, state)
}

/// Starts a checker and a status-page reader for each of these providers that is a cloud one
/// and has none running (at start, and for providers a reload added).
pub(crate) fn watch_providers(st: &Arc<AppState>, names: &[String]) {
    for name in names {
        // The local engine restarts itself and has nothing to check over the network.
        let cloud = st
            .router
            .provider(name)
            .is_some_and(|p| p.local().is_none());
        if cloud
            && st
                .watched
                .lock()
                .expect("watched lock")
                .insert(name.clone())
        {
            tokio::spawn(checks::watch(Arc::downgrade(st), name.clone()));
        }
        let page = format!("page:{name}");
        if cloud && st.watched.lock().expect("watched lock").insert(page) {
            tokio::spawn(statuspage::watch(Arc::downgrade(st), name.clone()));
        }
    }
}

/// Acts on the health events: a failing cloud, or the network going down, warms the local
/// engines ([`warm_local`]). (Each cloud provider's checker, [`checks::watch`], wakes by itself
/// when one of its breakers opens.) Holds the application weakly: it ends with it.
async fn on_health_events(state: Weak<AppState>) {
    let mut events = match state.upgrade() {
        Some(st) => st.router.health().subscribe(),
        None => return,
    };
    loop {
        let ev = match events.recv().await {
            Ok(ev) => ev,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        let Some(st) = state.upgrade() else { return };
        warm_local(&st, &ev);
        if let HealthEvent::Incident {
            provider,
            incident,
            resolved,
        } = ev
        {
            // Who knew first, kept: the journal's `incidents` table.
            let recorder = st.router.recorder().clone();
            if recorder.journal().is_some() {
                let resolved_ms = resolved.then(crate::quota::now_ms);
                tokio::task::spawn_blocking(move || {
                    if let Some(journal) = recorder.journal() {
                        journal.record_incident(&provider, &incident, resolved_ms);
                    }
                });
            }
        }
    }
}

/// The warm fallback: when a cloud backend's breaker opens or the network goes down, every
/// local engine configured `warm` loads its model now, so the answer that comes its way next
/// does not wait for the load.
fn warm_local(st: &AppState, ev: &HealthEvent) {
    let cloud_failing = match ev {
        HealthEvent::Network { offline } => *offline,
        HealthEvent::Breaker { backend, to, .. } => {
            let provider = st.router.provider(provider_of(backend));
            *to == "open" && provider.is_some_and(|p| p.local().is_none())
        }
        HealthEvent::Reach { .. } => false,
        // A declared incident of a component the routes use: the local model is loaded before
        // the failures it announces reach requests.
        HealthEvent::Incident {
            incident, resolved, ..
        } => !resolved && incident.relevant,
    };
    if cloud_failing {
        warm_engines(st);
    }
}

/// Every local engine configured `warm` loads its model now.
fn warm_engines(st: &AppState) {
    for (_, engine) in st.local_engines() {
        if engine.warm() {
            tokio::spawn(async move { engine.preload().await });
        }
    }
}

/// Keeps the quotas current: a window whose reset time passed starts again (every second,
/// so a backend held back comes back at its reset without a request to tell), and a provider
/// refusing a credential until its reset warms the local engines as an open breaker does.
async fn on_quota(state: Weak<AppState>) {
    let mut events = match state.upgrade() {
        Some(st) => st.router.quota_events(),
        None => return,
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let refused = tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) => matches!(ev, crate::quota::Event::Refused { .. }),
                Err(RecvError::Lagged(_)) => false,
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => false,
        };
        let Some(st) = state.upgrade() else { return };
        if refused {
            warm_engines(&st);
        }
        st.router.expire_quotas();
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
    let conn = Connections::of(&config);
    let ollama_listen = config.server.ollama_listen;
    let app = app(config, port).await;
    serve_app(listener, app, ollama_listen, conn, shutdown).await
}

/// How client connections are held: at most `max` open at once (more wait in the kernel's
/// accept queue), and a request head due within `header_timeout` of the connection opening or
/// of its previous answer ending (a slow-headers client and an idle keep-alive connection are
/// closed then). Real clients are unaffected: their heads arrive at once, their pools
/// reconnect, and a stream in progress is not waiting for a head.
#[derive(Debug, Clone, Copy)]
pub struct Connections {
    /// Open connections at most.
    pub max: usize,
    /// The request head's deadline.
    pub header_timeout: Duration,
}

impl Connections {
    /// From `[server]`.
    pub fn of(config: &Config) -> Connections {
        Connections {
            max: config.server.max_connections,
            header_timeout: config.server.header_timeout,
        }
    }
}

/// Serves a built application on `listener` (and on `ollama_listen`) until `shutdown`
/// resolves, then lets in-flight requests finish for at most [`SHUTDOWN_GRACE`].
pub async fn serve_app(
    listener: TcpListener,
    app: axum::Router,
    ollama_listen: Option<SocketAddr>,
    conn: Connections,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = ollama_listen {
        serve_ollama_port(addr, app.clone(), conn, rx.clone()).await?;
    }
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    accept_loop(listener, app, conn, rx).await
}

/// Accepts connections until `stop` turns true, each served by hyper with the limits of
/// `conn`; then waits for open ones to finish for at most [`SHUTDOWN_GRACE`].
async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    conn: Connections,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(conn.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let slots = Arc::new(tokio::sync::Semaphore::new(conn.max));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut warned_full = false;
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            () = stopped(&mut stop) => break,
        };
        if slots.available_permits() == 0 && !warned_full {
            warned_full = true;
            tracing::warn!(
                max = conn.max,
                "client connections at server.max_connections; new ones wait until one closes"
            );
        }
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection reset before accept: wait
                    // a little instead of spinning, then go on.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        set_nodelay(&tcp);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let mut stop_waiting = stop.clone();
        tokio::spawn(async move {
            // Until a first byte arrives hyper is still telling HTTP/1 from HTTP/2, and no
            // header timer runs: a connection that never sends one is closed here, and at
            // once on shutdown (a browser's preconnect must not hold the shutdown up).
            let mut first = [0u8; 1];
            let spoke = tokio::select! {
                r = tokio::time::timeout(conn.header_timeout, tcp.peek(&mut first)) => {
                    matches!(r, Ok(Ok(1..)))
                }
                () = stopped(&mut stop_waiting) => false,
            };
            if !spoke {
                drop(slot);
                return;
            }
            let served = builder
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .into_owned();
            let served = watcher.watch(served);
            if let Err(e) = served.await {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!(grace = ?SHUTDOWN_GRACE, "shutting down; waiting for in-flight requests");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the grace period; closing them");
    }
    Ok(())
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|&v| v).await;
}

/// Serves the same application on Ollama's address too, for tools that only know Ollama's
/// port, until `stop` turns true. Binding it is the only part that can fail here.
async fn serve_ollama_port(
    addr: SocketAddr,
    app: axum::Router,
    conn: Connections,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let second = TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} (server.ollama_listen): {e}; is Ollama itself running there?"),
        )
    })?;
    tracing::info!(%addr, "also serving on the Ollama port");
    tokio::spawn(async move {
        if let Err(e) = accept_loop(second, app, conn, stop).await {
            tracing::error!(error = %e, "the Ollama-port listener failed");
        }
    });
    Ok(())
}

/// Streams are many small writes: without `TCP_NODELAY` each event after the first can wait
/// for the client's delayed ACK (40 ms on Linux), which is most of a token's time.
fn set_nodelay(tcp: &tokio::net::TcpStream) {
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
