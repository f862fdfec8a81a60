//! The embedded local engine, gateway side: the `local` provider. llama.cpp runs in a child
//! process of this same binary (`understudy worker`, see [`worker`]); the gateway starts it on
//! first use, talks to it over pipes ([`protocol`]), restarts it after a crash (with backoff)
//! and turns its lines into an Anthropic event stream, so the local model goes through the
//! same translation, continuation and completeness machinery as any cloud.

pub mod protocol;
pub mod tools;
#[cfg(feature = "engine")]
pub mod worker;

use crate::canonical::{Block, Event, Request, Role, StartBlock, StopReason, Usage};
use crate::error::{FailureKind, ProviderError};
use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use protocol::{ChatMessage, Command, Line, ToolSpec};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};

impl Worker {
    fn stop(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
    }
}

/// Owns the worker process: waits for its exit (or kills it when asked, or when the gateway
/// drops its handle) and reports the exit status.
fn watch(
    mut child: Child,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::sync::oneshot::Receiver<std::process::ExitStatus>,
) {
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let (exit_tx, exit_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let status = tokio::select! {
            s = child.wait() => s,
            _ = kill_rx => {
                let _ = child.start_kill();
                child.wait().await
            }
        };
        if let Ok(s) = status {
            let _ = exit_tx.send(s);
        }
    });
    (kill_tx, exit_rx)
}

/// Why a worker process ended, in words a user can act on.
fn exit_reason(status: Option<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match s.signal() {
            Some(9) => "it was killed (SIGKILL): most likely the system ran out of memory; \
                        try a smaller model or context_size"
                .to_owned(),
            Some(6) => "it aborted (SIGABRT): a llama.cpp assertion failed".to_owned(),
            Some(11) => "it crashed (SIGSEGV)".to_owned(),
            Some(n) => format!("it was stopped by signal {n}"),
            None => format!("it exited with status {}", s.code().unwrap_or(-1)),
        },
        None => "it stopped answering".to_owned(),
    }
}
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How the local engine runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    /// The GGUF file.
    pub model: PathBuf,
    /// Context size in tokens (capped by the model's own).
    pub context: u32,
    /// CPU threads.
    pub threads: u32,
    /// Load the model as soon as a cloud backend's breaker opens or the network goes down, so
    /// the first local answer does not wait for it.
    pub warm: bool,
    /// Stop the worker (freeing its memory) after this long without a request; `None`: never.
    pub unload_after: Option<Duration>,
    /// Model layers to put on the GPU; `None`: as many as fit (none without a GPU build).
    pub gpu_layers: Option<u32>,
}

/// How long the local model stays loaded without requests, unless configured.
pub const DEFAULT_UNLOAD_AFTER: Duration = Duration::from_secs(15 * 60);

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

/// A process's resident memory, from /proc.
fn rss_of(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The number of physical cores (llama.cpp runs best with one thread per core), at least 1.
pub fn physical_cores() -> u32 {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut cores = std::collections::HashSet::new();
    let mut phys = String::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("physical id") {
            phys = v.trim_start_matches([' ', '\t', ':']).to_owned();
        } else if let Some(v) = line.strip_prefix("core id") {
            cores.insert((
                phys.clone(),
                v.trim_start_matches([' ', '\t', ':']).to_owned(),
            ));
        }
    }
    let n = if cores.is_empty() {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        cores.len()
    };
    n.max(1) as u32
}

type Routes = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Line>>>>;

#[derive(Debug)]
struct Worker {
    /// Dropping or firing it stops the process (its waiter task owns the `Child`).
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    pid: Option<u32>,
    stdin: ChildStdin,
    routes: Routes,
    alive: Arc<std::sync::atomic::AtomicBool>,
    /// Set before the gateway stops it on purpose (idle unload): its exit is no crash.
    retiring: Arc<std::sync::atomic::AtomicBool>,
    /// Which start this is (an idle timer only ever stops its own worker).
    generation: u64,
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

/// The supervised worker and the requests in flight.
#[derive(Debug)]
pub struct LocalEngine {
    cfg: LocalConfig,
    worker: tokio::sync::Mutex<Option<Worker>>,
    next_id: AtomicU64,
    /// When the worker last died, and how many times in a row (for the restart backoff).
    crashes: Mutex<(Option<Instant>, u32)>,
    status: Arc<Mutex<LocalStatus>>,
    /// When each cancel in flight was sent.
    cancels: Arc<Mutex<HashMap<u64, Instant>>>,
    /// When the last request came or ended (the idle unload's clock).
    last_used: Arc<Mutex<Instant>>,
    events: tokio::sync::broadcast::Sender<LocalEvent>,
    generation: AtomicU64,
}

/// Why the worker could not take a request.
fn failure(detail: String) -> ProviderError {
    ProviderError {
        provider: "local".into(),
        kind: FailureKind::Transport,
        detail,
    }
}

impl LocalEngine {
    /// An engine for `cfg`; nothing starts until the first request.
    pub fn new(cfg: LocalConfig) -> LocalEngine {
        LocalEngine {
            worker: tokio::sync::Mutex::new(None),
            status: Arc::new(Mutex::new(LocalStatus {
                model: cfg.model.display().to_string(),
                state: "not_loaded",
                ..LocalStatus::default()
            })),
            cfg,
            next_id: AtomicU64::new(1),
            crashes: Mutex::new((None, 0)),
            cancels: Arc::default(),
            last_used: Arc::new(Mutex::new(Instant::now())),
            events: tokio::sync::broadcast::channel(64).0,
            generation: AtomicU64::new(0),
        }
    }

    /// What the engine does from now on: loading progress, ready, crashed, unloaded.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<LocalEvent> {
        self.events.subscribe()
    }

    /// Whether it should load as soon as a cloud fails.
    pub fn warm(&self) -> bool {
        self.cfg.warm
    }

    /// Loads the model now if it is not loaded (the warm fallback: a cloud is failing, so the
    /// next request may well come here).
    pub async fn preload(self: &Arc<Self>) {
        let mut slot = self.worker.lock().await;
        if slot
            .as_ref()
            .is_some_and(|w| w.alive.load(Ordering::Relaxed))
        {
            return;
        }
        tracing::info!(model = %self.cfg.model.display(), "preloading the local model: a cloud is failing");
        if let Err(e) = self.ensure(&mut slot).await {
            tracing::warn!(error = %e, "preloading the local model failed");
        }
    }

    /// Stops the worker if it has been idle long enough; true when this timer is done (the
    /// worker it watched is gone).
    async fn unload_if_idle(&self, generation: u64, after: Duration) -> bool {
        let mut slot = self.worker.lock().await;
        let Some(w) = slot.as_mut() else { return true };
        if w.generation != generation || !w.alive.load(Ordering::Relaxed) {
            return true;
        }
        let busy = !w.routes.lock().expect("routes lock").is_empty();
        if busy || self.last_used.lock().expect("last used lock").elapsed() < after {
            return false;
        }
        w.retiring.store(true, Ordering::Relaxed);
        w.stop();
        *slot = None;
        tracing::info!(
            idle_s = after.as_secs(),
            "unloaded the local model after being idle"
        );
        self.set_state("not_loaded", None);
        let _ = self.events.send(LocalEvent::Unloaded);
        true
    }

    /// A snapshot of what the engine is doing.
    pub fn status(&self) -> LocalStatus {
        let mut st = self.status.lock().expect("status lock").clone();
        st.rss_bytes = match (st.state, st.pid) {
            ("ready", Some(pid)) => rss_of(pid),
            _ => None,
        };
        st
    }

    fn set_state(&self, state: &'static str, error: Option<String>) {
        let mut st = self.status.lock().expect("status lock");
        st.state = state;
        st.error = error;
        st.progress = None;
    }

    /// Starts the worker if it is not running (waiting out the restart backoff after a crash)
    /// and waits until the model is loaded.
    async fn ensure(self: &Arc<Self>, slot: &mut Option<Worker>) -> Result<(), ProviderError> {
        if slot
            .as_ref()
            .is_some_and(|w| w.alive.load(Ordering::Relaxed))
        {
            return Ok(());
        }
        if let Some(mut old) = slot.take() {
            old.stop();
        }
        let wait = {
            let c = self.crashes.lock().expect("crash lock");
            match c.0 {
                Some(at) => {
                    let backoff = Duration::from_millis(100 * 2u64.pow(c.1.min(6)));
                    (at + backoff).saturating_duration_since(Instant::now())
                }
                None => Duration::ZERO,
            }
        };
        tokio::time::sleep(wait).await;
        if !self.cfg.model.exists() {
            return Err(failure(format!(
                "the local model file {} does not exist; run scripts/run (it fetches the default model) or `understudy models use`",
                self.cfg.model.display()
            )));
        }
        // The worker is this same binary; `UNDERSTUDY_WORKER_BIN` names it when the gateway runs
        // inside another program (the integration tests, the tray app).
        let exe = match std::env::var_os("UNDERSTUDY_WORKER_BIN") {
            Some(p) => PathBuf::from(p),
            None => std::env::current_exe()
                .map_err(|e| failure(format!("cannot find the understudy binary: {e}")))?,
        };
        let mut child = tokio::process::Command::new(exe)
            .arg("worker")
            .arg("--model")
            .arg(&self.cfg.model)
            .arg("--context")
            .arg(self.cfg.context.to_string())
            .arg("--threads")
            .arg(self.cfg.threads.to_string())
            .args(
                self.cfg
                    .gpu_layers
                    .map(|n| vec!["--gpu-layers".to_owned(), n.to_string()])
                    .unwrap_or_default(),
            )
            // ggml's abort handler would attach gdb for a backtrace: slow, and noise in the
            // reason we report.
            .env("GGML_NO_BACKTRACE", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failure(format!("cannot start the local worker: {e}")))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let pid = child.id();
        let (kill, mut exited) = watch(child);
        let routes: Routes = Arc::default();
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let tail: Arc<Mutex<Vec<String>>> = Arc::default();
        {
            let tail = tail.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    let mut t = tail.lock().expect("tail lock");
                    t.push(l);
                    if t.len() > 20 {
                        t.remove(0);
                    }
                }
            });
        }
        let mut lines = BufReader::new(stdout).lines();
        let started = Instant::now();
        self.set_state("loading", None);
        let ready = tokio::time::timeout(Duration::from_secs(300), async {
            while let Ok(Some(l)) = lines.next_line().await {
                match serde_json::from_str::<Line>(&l) {
                    Ok(ready @ Line::Ready { .. }) => return Some(ready),
                    Ok(Line::Loading { progress }) => {
                        self.status.lock().expect("status lock").progress = Some(progress);
                        let _ = self.events.send(LocalEvent::Loading { progress });
                    }
                    _ => {}
                }
            }
            None
        })
        .await;
        let Ok(Some(Line::Ready {
            n_ctx,
            threads,
            device,
            gpu_layers,
            n_layers,
            model_bytes,
        })) = ready
        else {
            let _ = kill.send(());
            self.crashed();
            let status = tokio::time::timeout(Duration::from_secs(2), &mut exited)
                .await
                .ok()
                .and_then(Result::ok);
            let why = tail.lock().expect("tail lock").join(" | ");
            let message = format!(
                "the local worker did not load the model ({}): {why}",
                exit_reason(status)
            );
            self.set_state("failed", Some(message.clone()));
            let _ = self.events.send(LocalEvent::Failed {
                message: message.clone(),
            });
            return Err(failure(message));
        };
        tracing::info!(model = %self.cfg.model.display(), n_ctx, threads, %device, gpu_layers, n_layers, load_ms = started.elapsed().as_millis() as u64, "local model ready");
        {
            let mut st = self.status.lock().expect("status lock");
            st.state = "ready";
            st.error = None;
            st.progress = None;
            st.n_ctx = Some(n_ctx);
            st.threads = Some(threads);
            st.device = Some(device);
            st.gpu_layers = Some(gpu_layers);
            st.n_layers = Some(n_layers);
            st.model_bytes = Some(model_bytes);
            st.pid = pid;
            st.loads += 1;
        }
        let _ = self.events.send(LocalEvent::Ready {
            load_ms: started.elapsed().as_millis() as u64,
        });
        *self.last_used.lock().expect("last used lock") = Instant::now();
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let retiring = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Some(after) = self.cfg.unload_after {
            let engine = Arc::downgrade(self);
            tokio::spawn(async move {
                let tick = (after / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
                loop {
                    tokio::time::sleep(tick).await;
                    let Some(engine) = engine.upgrade() else {
                        return;
                    };
                    if engine.unload_if_idle(generation, after).await {
                        return;
                    }
                }
            });
        }
        {
            let routes = routes.clone();
            let alive = alive.clone();
            let tail = tail.clone();
            let status = self.status.clone();
            let cancels = self.cancels.clone();
            let last_used = self.last_used.clone();
            let events = self.events.clone();
            let retiring = retiring.clone();
            tokio::spawn(async move {
                while let Ok(Some(l)) = lines.next_line().await {
                    let Ok(line) = serde_json::from_str::<Line>(&l) else {
                        continue;
                    };
                    let id = match &line {
                        Line::Progress { id, .. }
                        | Line::Text { id, .. }
                        | Line::Done { id, .. }
                        | Line::Error { id, .. } => *id,
                        Line::Ready { .. } | Line::Loading { .. } => continue,
                    };
                    if let Line::Done {
                        reason,
                        prompt_tokens,
                        cached_tokens,
                        completion_tokens,
                        prompt_ms,
                        gen_ms,
                        ..
                    } = &line
                    {
                        let cancel_ms = cancels
                            .lock()
                            .expect("cancels lock")
                            .remove(&id)
                            .map(|at| at.elapsed().as_millis() as u64);
                        let mut st = status.lock().expect("status lock");
                        st.answers += 1;
                        st.cancelled += u64::from(reason == "cancelled");
                        st.completion_tokens += u64::from(*completion_tokens);
                        st.last = Some(LastAnswer {
                            reason: reason.clone(),
                            prompt_tokens: *prompt_tokens,
                            cached_tokens: *cached_tokens,
                            completion_tokens: *completion_tokens,
                            prompt_ms: *prompt_ms,
                            cancel_ms,
                            tokens_per_second: f64::from(*completion_tokens) * 1000.0
                                / (*gen_ms).max(1) as f64,
                        });
                    }
                    let done = matches!(line, Line::Done { .. } | Line::Error { .. });
                    if done {
                        *last_used.lock().expect("last used lock") = Instant::now();
                    }
                    let mut r = routes.lock().expect("routes lock");
                    if let Some(tx) = r.get(&id) {
                        let _ = tx.send(line);
                    }
                    if done {
                        r.remove(&id);
                    }
                }
                // The worker is gone: every request in flight hears it, with the reason.
                alive.store(false, Ordering::Relaxed);
                if retiring.load(Ordering::Relaxed) {
                    return; // Unloaded on purpose, with nothing in flight.
                }
                let exit = tokio::time::timeout(Duration::from_secs(2), exited)
                    .await
                    .ok()
                    .and_then(Result::ok);
                // The last stderr lines may trail the exit by a moment.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let why = tail.lock().expect("tail lock").join(" | ");
                let reason = exit_reason(exit);
                let message = if why.is_empty() {
                    format!("the local worker died: {reason}")
                } else {
                    format!("the local worker died: {reason}: {why}")
                };
                tracing::error!(%message, "local worker crashed; it restarts on the next request");
                {
                    let mut st = status.lock().expect("status lock");
                    st.state = "crashed";
                    st.error = Some(message.clone());
                }
                let _ = events.send(LocalEvent::Crashed {
                    message: message.clone(),
                });
                for (id, tx) in routes.lock().expect("routes lock").drain() {
                    let _ = tx.send(Line::Error {
                        id,
                        kind: "crashed".into(),
                        message: message.clone(),
                        prompt_tokens: 0,
                        n_ctx: 0,
                    });
                }
            });
        }
        *slot = Some(Worker {
            kill: Some(kill),
            pid,
            stdin,
            routes,
            alive,
            retiring,
            generation,
        });
        Ok(())
    }

    fn crashed(&self) {
        let mut c = self.crashes.lock().expect("crash lock");
        c.0 = Some(Instant::now());
        c.1 += 1;
    }

    /// The process id of the running worker (tests kill it).
    pub async fn worker_pid(&self) -> Option<u32> {
        self.worker.lock().await.as_ref().and_then(|w| w.pid)
    }

    /// Sends a request; its lines come back on the receiver. Dropping the returned guard
    /// cancels the request.
    pub async fn generate(
        self: &Arc<Self>,
        req: &Request,
        max_tokens: u32,
    ) -> Result<(mpsc::UnboundedReceiver<Line>, CancelOnDrop), ProviderError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (messages, prefill) = to_chat(req);
        let (tools, force_tool) = tools_for(req);
        let cmd = Command::Generate {
            id,
            messages,
            prefill,
            max_tokens,
            temperature: req.temperature.map(|t| t as f32),
            top_p: req.top_p.map(|p| p as f32),
            top_k: req.top_k.map(|k| k as i32),
            seed: req.seed.map(|s| s as u32),
            stop: req.stop.clone(),
            tools,
            force_tool,
        };
        let mut slot = self.worker.lock().await;
        self.ensure(&mut slot).await?;
        *self.last_used.lock().expect("last used lock") = Instant::now();
        let w = slot.as_mut().expect("ensured");
        let (tx, rx) = mpsc::unbounded_channel();
        w.routes.lock().expect("routes lock").insert(id, tx);
        let mut line = serde_json::to_vec(&cmd).expect("serializes");
        line.push(b'\n');
        if let Err(e) = w.stdin.write_all(&line).await {
            w.alive.store(false, Ordering::Relaxed);
            self.crashed();
            return Err(failure(format!(
                "the local worker is not taking requests: {e}"
            )));
        }
        let _ = w.stdin.flush().await;
        if self.crashes.lock().expect("crash lock").1 > 0 && w.alive.load(Ordering::Relaxed) {
            // It took a request after a restart: the crash streak is over.
            self.crashes.lock().expect("crash lock").1 = 0;
        }
        Ok((
            rx,
            CancelOnDrop {
                engine: Arc::downgrade(self),
                id,
                done: false,
            },
        ))
    }

    async fn cancel(&self, id: u64) {
        let mut slot = self.worker.lock().await;
        if let Some(w) = slot.as_mut() {
            if !w.routes.lock().expect("routes lock").contains_key(&id) {
                return; // It ended meanwhile.
            }
            let mut line = serde_json::to_vec(&Command::Cancel { id }).expect("serializes");
            line.push(b'\n');
            self.cancels
                .lock()
                .expect("cancels lock")
                .insert(id, Instant::now());
            let _ = w.stdin.write_all(&line).await;
            let _ = w.stdin.flush().await;
        }
    }
}

/// Cancels its request in the worker when dropped before the answer ended (the client left).
#[derive(Debug)]
pub struct CancelOnDrop {
    engine: std::sync::Weak<LocalEngine>,
    id: u64,
    done: bool,
}

impl CancelOnDrop {
    /// The answer ended: nothing to cancel.
    pub fn done(&mut self) {
        self.done = true;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(engine) = self.engine.upgrade() {
            let id = self.id;
            tokio::spawn(async move { engine.cancel(id).await });
        }
    }
}

/// Longest tool description a local model gets: the first paragraph, at most this long.
/// Claude Code's tool descriptions run to thousands of tokens; a local model has a few
/// thousand in all, and a small one cannot use the detail.
const TOOL_DESCRIPTION_MAX: usize = 300;

/// The first paragraph of `text`, cut at a character boundary to at most `max` bytes.
fn first_paragraph(text: &str, max: usize) -> String {
    let para = text.trim().split("\n\n").next().unwrap_or("").trim();
    if para.len() <= max {
        return para.to_owned();
    }
    let mut end = max;
    while !para.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", para[..end].trim_end())
}

/// A schema with every nested `description` cut to its first paragraph.
fn compact_schema(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, v)| match (k.as_str(), v) {
                ("description", serde_json::Value::String(d)) => (
                    k.clone(),
                    serde_json::Value::String(first_paragraph(d, 120)),
                ),
                ("$schema", _) => (k.clone(), serde_json::Value::Null),
                _ => (k.clone(), compact_schema(v)),
            })
            .filter(|(k, _)| k != "$schema")
            .collect(),
        serde_json::Value::Array(a) => a.iter().map(compact_schema).collect(),
        other => other.clone(),
    }
}

/// Whether the model is offered tools (some are given and `tool_choice` is not `none`): then
/// its answer is held to the end and read for tool calls.
pub fn offers_tools(req: &Request) -> bool {
    !req.tools.is_empty() && !matches!(req.tool_choice, Some(crate::canonical::ToolChoice::None))
}

/// The tools for the worker (compacted), and whether one must be called.
fn tools_for(req: &Request) -> (Vec<ToolSpec>, Option<String>) {
    use crate::canonical::ToolChoice;
    if !offers_tools(req) {
        return (Vec::new(), None);
    }
    let tools = req
        .tools
        .iter()
        .map(|t| ToolSpec {
            name: t.name.clone(),
            description: first_paragraph(
                t.description.as_deref().unwrap_or(""),
                TOOL_DESCRIPTION_MAX,
            ),
            parameters: compact_schema(&t.schema),
        })
        .collect();
    let force = match &req.tool_choice {
        Some(ToolChoice::Any) => Some("*".to_owned()),
        Some(ToolChoice::Tool(name)) => Some(name.clone()),
        _ => None,
    };
    (tools, force)
}

/// The conversation as text messages, and a final assistant turn as the prefill.
fn to_chat(req: &Request) -> (Vec<ChatMessage>, Option<String>) {
    let mut out = Vec::new();
    if !req.system.is_empty() {
        out.push(ChatMessage {
            role: "system".into(),
            content: req.system.join("\n\n"),
        });
    }
    for m in &req.messages {
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        };
        let mut text = String::new();
        for b in &m.content {
            let piece = match b {
                Block::Text(t) => t.clone(),
                // Calls and results in the Hermes form the tool prompt asks for, so the model
                // sees its own earlier calls the way it is told to make them.
                Block::ToolUse { name, input, .. } => format!(
                    "<tool_call>\n{}\n</tool_call>",
                    serde_json::json!({"name": name, "arguments": input})
                ),
                Block::ToolResult {
                    content, is_error, ..
                } => {
                    format!(
                        "<tool_response>\n{}{}\n</tool_response>",
                        if *is_error { "error: " } else { "" },
                        crate::wire::text_of(content)
                    )
                }
                Block::Image(_) | Block::Document(_) => {
                    "[an attachment this local model cannot see]".into()
                }
                Block::Thinking { .. } | Block::RedactedThinking(_) => continue,
            };
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&piece);
        }
        out.push(ChatMessage {
            role: role.into(),
            content: text,
        });
    }
    let prefill = match out.last() {
        Some(m) if m.role == "assistant" => out.pop().map(|m| m.content),
        _ => None,
    };
    (out, prefill)
}

/// The worker's lines for one request as an Anthropic event stream (bytes), which the
/// translation pipeline reads like any provider's. A worker error ends the stream with the
/// protocol's `event: error` (an overflow as Anthropic words it, so Claude Code compacts); a
/// worker that dies mid-answer, or a line channel that closes without a finish, is an
/// `api_error`: nothing broken ever looks finished.
pub fn into_sse(
    rx: mpsc::UnboundedReceiver<Line>,
    guard: CancelOnDrop,
    model: String,
    tools_offered: bool,
) -> BoxStream<'static, Result<Bytes, ProviderError>> {
    struct St {
        rx: mpsc::UnboundedReceiver<Line>,
        guard: CancelOnDrop,
        enc: crate::wire::anthropic::StreamEncoder,
        model: String,
        started: bool,
        open: bool,
        ended: bool,
        /// With tools offered the text is held until the end: it may be a tool call, which is
        /// sent whole or not at all.
        held: Option<String>,
    }
    let st = St {
        rx,
        guard,
        enc: crate::wire::anthropic::StreamEncoder::new(&model),
        model,
        started: false,
        open: false,
        ended: false,
        held: tools_offered.then(String::new),
    };
    let stream = futures_util::stream::unfold(st, |mut s| async move {
        if s.ended {
            return None;
        }
        let line = s.rx.recv().await;
        let mut out = BytesMut::new();
        if !s.started {
            s.started = true;
            let start = Event::Start {
                id: format!("msg_local_{:016x}", rand::random::<u64>()),
                model: s.model.clone(),
                usage: Usage::default(),
            };
            s.enc.event(&start, &mut out);
        }
        let error = |out: &mut BytesMut, ty: &str, msg: &str| {
            let data = serde_json::json!({"type": "error", "error": {"type": ty, "message": msg}});
            out.extend_from_slice(format!("event: error\ndata: {data}\n\n").as_bytes());
        };
        match line {
            None => {
                s.ended = true;
                error(&mut out, "api_error", "the local worker stopped answering");
            }
            Some(Line::Progress { .. } | Line::Ready { .. } | Line::Loading { .. }) => {
                s.enc.event(&Event::Ping, &mut out)
            }
            Some(Line::Text { text, .. }) if s.held.is_some() => {
                s.held.as_mut().expect("checked").push_str(&text);
                s.enc.event(&Event::Ping, &mut out);
            }
            Some(Line::Text { text, .. }) => {
                if !s.open {
                    s.open = true;
                    s.enc.event(
                        &Event::BlockStart {
                            index: 0,
                            block: StartBlock::Text,
                        },
                        &mut out,
                    );
                }
                let delta = crate::canonical::Delta::Text(text);
                s.enc.event(&Event::Delta { index: 0, delta }, &mut out);
            }
            Some(Line::Done {
                reason,
                stop_sequence,
                prompt_tokens,
                cached_tokens,
                completion_tokens,
                ..
            }) => {
                s.guard.done();
                s.ended = true;
                if reason == "cancelled" {
                    return None;
                }
                if s.open {
                    s.enc.event(&Event::BlockStop { index: 0 }, &mut out);
                }
                let mut stop_reason = match reason.as_str() {
                    "max_tokens" => StopReason::MaxTokens,
                    "stop_sequence" => StopReason::StopSequence,
                    _ => StopReason::EndTurn,
                };
                if let Some(held) = s.held.take() {
                    let (text, calls) = match tools::parse(&held) {
                        tools::Parsed::Text(t) => (t, Vec::new()),
                        tools::Parsed::Calls { text, calls } => (text, calls),
                    };
                    let mut index = 0;
                    if !text.is_empty() {
                        s.enc.event(
                            &Event::BlockStart {
                                index,
                                block: StartBlock::Text,
                            },
                            &mut out,
                        );
                        let delta = crate::canonical::Delta::Text(text);
                        s.enc.event(&Event::Delta { index, delta }, &mut out);
                        s.enc.event(&Event::BlockStop { index }, &mut out);
                        index += 1;
                    }
                    for c in &calls {
                        let block = StartBlock::ToolUse {
                            id: crate::canonical::new_tool_id(),
                            name: c.name.clone(),
                        };
                        s.enc.event(&Event::BlockStart { index, block }, &mut out);
                        let delta = crate::canonical::Delta::InputJson(c.arguments.to_string());
                        s.enc.event(&Event::Delta { index, delta }, &mut out);
                        s.enc.event(&Event::BlockStop { index }, &mut out);
                        index += 1;
                    }
                    if !calls.is_empty() {
                        stop_reason = StopReason::ToolUse;
                    }
                }
                let usage = Usage {
                    input: u64::from(prompt_tokens.saturating_sub(cached_tokens)),
                    cache_read: u64::from(cached_tokens),
                    cache_creation: 0,
                    output: u64::from(completion_tokens),
                };
                s.enc.event(
                    &Event::Finish {
                        stop_reason,
                        stop_sequence,
                        usage,
                    },
                    &mut out,
                );
                s.enc.complete(&mut out);
            }
            Some(Line::Error { kind, message, .. }) => {
                s.guard.done();
                s.ended = true;
                if kind == "context_overflow" {
                    error(
                        &mut out,
                        "invalid_request_error",
                        &format!("prompt is too long: {message}"),
                    );
                } else {
                    error(&mut out, "api_error", &message);
                }
            }
        }
        Some((Ok(out.freeze()), s))
    });
    futures_util::StreamExt::boxed(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    async fn sse_of(lines: Vec<Line>, tools: bool) -> String {
        let engine = Arc::new(LocalEngine::new(LocalConfig {
            model: "none".into(),
            context: 8,
            threads: 1,
            warm: false,
            unload_after: None,
            gpu_layers: None,
        }));
        let (tx, rx) = mpsc::unbounded_channel();
        for l in lines {
            tx.send(l).unwrap();
        }
        drop(tx);
        let guard = CancelOnDrop {
            engine: Arc::downgrade(&engine),
            id: 1,
            done: false,
        };
        let mut s = into_sse(rx, guard, "m".into(), tools);
        let mut out = String::new();
        while let Some(b) = s.next().await {
            out.push_str(&String::from_utf8_lossy(&b.unwrap()));
        }
        out
    }

    fn done() -> Line {
        Line::Done {
            id: 1,
            reason: "end_turn".into(),
            stop_sequence: None,
            prompt_tokens: 10,
            cached_tokens: 0,
            completion_tokens: 5,
            prompt_ms: 1,
            gen_ms: 2,
        }
    }

    #[tokio::test]
    async fn a_tool_call_in_the_output_becomes_a_whole_tool_use_block() {
        let text = |t: &str| Line::Text {
            id: 1,
            text: t.into(),
        };
        let out = sse_of(
            vec![
                text("<tool_call>\n{\"name\": \"Read\", "),
                text("\"arguments\": {\"file_path\": \"a.rs\"}}\n</tool_call>"),
                done(),
            ],
            true,
        )
        .await;
        assert!(
            out.contains(r#""content_block":{"type":"tool_use""#)
                && out.contains(r#""name":"Read""#),
            "{out}"
        );
        assert!(out.contains(r#"{\"file_path\":\"a.rs\"}"#), "{out}");
        assert!(out.contains(r#""stop_reason":"tool_use""#), "{out}");
        assert!(!out.contains("<tool_call>"), "{out}");
    }

    #[tokio::test]
    async fn a_malformed_tool_call_is_an_answer_in_words() {
        let out = sse_of(
            vec![
                Line::Text {
                    id: 1,
                    text: "<tool_call>{\"name\": \"Re".into(),
                },
                done(),
            ],
            true,
        )
        .await;
        assert!(
            out.contains(r#""type":"text_delta","text":"<tool_call>{\"name\": \"Re""#),
            "{out}"
        );
        assert!(
            out.contains(r#""stop_reason":"end_turn""#) && !out.contains("tool_use"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn a_worker_that_vanishes_is_an_error_never_a_clean_end() {
        let out = sse_of(
            vec![Line::Text {
                id: 1,
                text: "Hal".into(),
            }],
            false,
        )
        .await;
        assert!(
            out.ends_with("\n\n") && out.contains("event: error"),
            "{out}"
        );
        assert!(!out.contains("message_stop"), "{out}");
    }
}
