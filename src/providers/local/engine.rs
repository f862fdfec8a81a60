//! The worker's supervisor: starts `understudy worker` on first use, routes its lines by
//! request id, restarts it after a crash (with backoff), unloads it when idle, and cancels an
//! answer whose client left.

use super::protocol::{Command, Line};
use super::request::{to_chat, tools_for};
use super::{LastAnswer, LocalEvent, LocalStatus};
use crate::canonical::Request;
use crate::config::LocalConfig;
use crate::error::{FailureKind, ProviderError};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio::time::Instant;

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
        tokio::time::sleep(self.restart_backoff()).await;
        let mut child = self.spawn_worker()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let tail = stderr_tail(child.stderr.take().expect("piped"));
        let pid = child.id();
        let (kill, mut exited) = watch(child);
        let mut lines = BufReader::new(stdout).lines();
        let started = Instant::now();
        self.set_state("loading", None);
        let Some(ready) = self.wait_ready(&mut lines).await else {
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
        self.mark_ready(ready, pid, started);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.start_idle_timer(generation);
        let lines_to = LineRouter {
            routes: Routes::default(),
            alive: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            retiring: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            tail,
            status: self.status.clone(),
            cancels: self.cancels.clone(),
            last_used: self.last_used.clone(),
            events: self.events.clone(),
        };
        *slot = Some(Worker {
            kill: Some(kill),
            pid,
            stdin,
            routes: lines_to.routes.clone(),
            alive: lines_to.alive.clone(),
            retiring: lines_to.retiring.clone(),
            generation,
        });
        tokio::spawn(lines_to.run(lines, exited));
        Ok(())
    }

    /// How long to wait before a restart: doubling with each crash in a row (0.1 s to 6.4 s).
    fn restart_backoff(&self) -> Duration {
        let c = self.crashes.lock().expect("crash lock");
        match c.0 {
            Some(at) => {
                let backoff = Duration::from_millis(100 * 2u64.pow(c.1.min(6)));
                (at + backoff).saturating_duration_since(Instant::now())
            }
            None => Duration::ZERO,
        }
    }

    /// Starts `understudy worker` for the configured model, its pipes open.
    fn spawn_worker(&self) -> Result<Child, ProviderError> {
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
        tokio::process::Command::new(exe)
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
            .map_err(|e| failure(format!("cannot start the local worker: {e}")))
    }

    /// Reads the worker's lines until its model is loaded (progress published on the way);
    /// `None` if it dies or takes over five minutes.
    async fn wait_ready(&self, lines: &mut Lines<BufReader<ChildStdout>>) -> Option<Line> {
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
        ready.ok().flatten()
    }

    /// The model is loaded: the status says how, and the world hears it.
    fn mark_ready(&self, ready: Line, pid: Option<u32>, started: Instant) {
        let Line::Ready {
            n_ctx,
            threads,
            device,
            gpu_layers,
            n_layers,
            model_bytes,
        } = ready
        else {
            return;
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
    }

    /// Unloads worker start `generation` after `unload_after` without requests.
    fn start_idle_timer(self: &Arc<Self>, generation: u64) {
        let Some(after) = self.cfg.unload_after else {
            return;
        };
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

/// The last stderr lines of a worker (what it said before it died).
fn stderr_tail(stderr: ChildStderr) -> Arc<Mutex<Vec<String>>> {
    let tail: Arc<Mutex<Vec<String>>> = Arc::default();
    let keep = tail.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let mut t = keep.lock().expect("tail lock");
            t.push(l);
            if t.len() > 20 {
                t.remove(0);
            }
        }
    });
    tail
}

/// Routes a loaded worker's lines to the requests they answer, keeps the status's answer
/// figures, and tells every request in flight when the worker dies, with the reason.
struct LineRouter {
    routes: Routes,
    alive: Arc<std::sync::atomic::AtomicBool>,
    retiring: Arc<std::sync::atomic::AtomicBool>,
    tail: Arc<Mutex<Vec<String>>>,
    status: Arc<Mutex<LocalStatus>>,
    cancels: Arc<Mutex<HashMap<u64, Instant>>>,
    last_used: Arc<Mutex<Instant>>,
    events: tokio::sync::broadcast::Sender<LocalEvent>,
}

impl LineRouter {
    async fn run(
        self,
        mut lines: Lines<BufReader<ChildStdout>>,
        exited: tokio::sync::oneshot::Receiver<std::process::ExitStatus>,
    ) {
        while let Ok(Some(l)) = lines.next_line().await {
            let Ok(line) = serde_json::from_str::<Line>(&l) else {
                continue;
            };
            self.route(line);
        }
        // The worker is gone: every request in flight hears it, with the reason.
        self.alive.store(false, Ordering::Relaxed);
        if self.retiring.load(Ordering::Relaxed) {
            return; // Unloaded on purpose, with nothing in flight.
        }
        let exit = tokio::time::timeout(Duration::from_secs(2), exited)
            .await
            .ok()
            .and_then(Result::ok);
        // The last stderr lines may trail the exit by a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.died(exit);
    }

    fn route(&self, line: Line) {
        let id = match &line {
            Line::Progress { id, .. }
            | Line::Text { id, .. }
            | Line::Done { id, .. }
            | Line::Error { id, .. } => *id,
            Line::Ready { .. } | Line::Loading { .. } => return,
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
            let cancel_ms = self
                .cancels
                .lock()
                .expect("cancels lock")
                .remove(&id)
                .map(|at| at.elapsed().as_millis() as u64);
            let mut st = self.status.lock().expect("status lock");
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
                tokens_per_second: f64::from(*completion_tokens) * 1000.0 / (*gen_ms).max(1) as f64,
            });
        }
        let done = matches!(line, Line::Done { .. } | Line::Error { .. });
        if done {
            *self.last_used.lock().expect("last used lock") = Instant::now();
        }
        let mut r = self.routes.lock().expect("routes lock");
        if let Some(tx) = r.get(&id) {
            let _ = tx.send(line);
        }
        if done {
            r.remove(&id);
        }
    }

    fn died(&self, exit: Option<std::process::ExitStatus>) {
        let why = self.tail.lock().expect("tail lock").join(" | ");
        let reason = exit_reason(exit);
        let message = if why.is_empty() {
            format!("the local worker died: {reason}")
        } else {
            format!("the local worker died: {reason}: {why}")
        };
        tracing::error!(%message, "local worker crashed; it restarts on the next request");
        {
            let mut st = self.status.lock().expect("status lock");
            st.state = "crashed";
            st.error = Some(message.clone());
        }
        let _ = self.events.send(LocalEvent::Crashed {
            message: message.clone(),
        });
        for (id, tx) in self.routes.lock().expect("routes lock").drain() {
            let _ = tx.send(Line::Error {
                id,
                kind: "crashed".into(),
                message: message.clone(),
                prompt_tokens: 0,
                n_ctx: 0,
            });
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

    /// A guard for request `id` of `engine`, for tests that feed an answer's lines by hand.
    #[cfg(test)]
    pub(super) fn for_test(engine: &Arc<LocalEngine>, id: u64) -> CancelOnDrop {
        CancelOnDrop {
            engine: Arc::downgrade(engine),
            id,
            done: false,
        }
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
