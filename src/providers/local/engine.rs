//! The worker's supervisor: starts `understudy worker` on first use, routes its lines by
//! request id, restarts it after a crash (with backoff), unloads it when idle, and cancels an
//! answer whose client left.

use super::cpu::{exit_words, signal_of, Cpu, Ladder, Memory, Mode, SIGFPE, SIGILL, SIGSEGV};
use super::protocol::{Command, Line};
use super::request::{to_chat, tools_for};

/// Finished answers kept in the status, oldest first (how much of each prompt the KV cache
/// held: what tells a conversation kept its cache across side requests).
const RECENT_ANSWERS: usize = 32;
use super::{LastAnswer, LocalEvent, LocalStatus};
use crate::canonical::Request;
use crate::config::LocalConfig;
use crate::error::{FailureKind, ProviderError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
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

/// The worker binary: this same binary; `UNDERSTUDY_WORKER_BIN` names it when the gateway runs
/// inside another program (the integration tests, the tray app).
fn worker_exe() -> Result<PathBuf, ProviderError> {
    match std::env::var_os("UNDERSTUDY_WORKER_BIN") {
        Some(p) => Ok(PathBuf::from(p)),
        None => std::env::current_exe()
            .map_err(|e| failure(format!("cannot find the understudy binary: {e}"))),
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

/// The error line kind that tells a request's forwarder the worker died before its answer
/// began and was restarted (in a more conservative mode, or once as it was): it asks again
/// ([`LocalEngine::generate`]). Never reaches a client.
const RESTARTING: &str = "restarting";

/// At most this many times one request is asked again after the worker died under it.
const RETRIES_PER_REQUEST: u32 = 3;

/// How long a worker may take to load its model.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// At most this many worker starts for one request that finds no worker running (each crash
/// while loading may start it again, one mode down).
const STARTS_PER_LOAD: u32 = 8;

/// The CPU backends and the mode the worker runs in.
#[derive(Debug)]
struct Placed {
    ladder: Ladder,
    mode: Mode,
    /// Stepped down after a SIGILL and not yet written to the memory: written once a worker
    /// in this mode answers. (A mode stepped down for another crash is for this process only.)
    remember: bool,
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
    /// This machine's CPU.
    cpu: Cpu,
    /// The CPU backends beside the worker binary and the mode running now (found at the
    /// first start).
    ladder: Mutex<Option<Placed>>,
    /// Steps down taken for crashes other than SIGILL (at most one per process: a prompt
    /// that crashes llama.cpp every time must not walk the whole ladder).
    fault_steps: std::sync::atomic::AtomicU32,
    /// Where the mode that works is remembered.
    memory: Memory,
    /// Crashes in a row before a worker's first token (a second steps the mode down).
    early_crashes: std::sync::atomic::AtomicU32,
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
        let cfg_modes = cfg.modes_file.clone();
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
            cpu: Cpu::here(),
            ladder: Mutex::new(None),
            memory: Memory::new(cfg_modes),
            early_crashes: Default::default(),
            fault_steps: Default::default(),
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
    /// and waits until the model is loaded. A worker that crashes while loading is started
    /// again as [`LocalEngine::after_crash`] decides (one CPU mode down after a SIGILL).
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
        let exe = worker_exe()?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            tokio::time::sleep(self.restart_backoff()).await;
            let (ladder, mode) = self.placement(&exe)?;
            let variant = mode.as_ref().map(|m| m.variant.clone());
            let mut child = self.spawn_worker(&exe, &ladder, variant.as_deref())?;
            let stdin = child.stdin.take().expect("piped");
            let stdout = child.stdout.take().expect("piped");
            let tail = stderr_tail(child.stderr.take().expect("piped"));
            let pid = child.id();
            let (kill, mut exited) = watch(child);
            let mut lines = BufReader::new(stdout).lines();
            let started = Instant::now();
            self.set_state("loading", None);
            let waited = self.wait_ready(&mut lines).await;
            let timed_out = waited.is_none();
            let Some(ready) = waited.flatten() else {
                let _ = kill.send(());
                let status = tokio::time::timeout(Duration::from_secs(2), &mut exited)
                    .await
                    .ok()
                    .and_then(Result::ok);
                let tail = tail.lock().expect("tail lock").clone();
                let words = if timed_out {
                    // Our own kill, not the system's: not "out of memory".
                    format!(
                        "it did not finish loading in {} s and was stopped",
                        LOAD_TIMEOUT.as_secs()
                    )
                } else {
                    exit_words(status, variant.as_deref(), &tail)
                };
                // A crash while loading (repacking the weights runs the CPU kernels too) is
                // judged as one before a first token: another try, or a mode down.
                if timed_out || signal_of(status).is_none() {
                    self.crashed();
                } else if self.after_crash(status, false, &words, variant.as_deref())
                    && attempts < STARTS_PER_LOAD
                {
                    continue;
                }
                let message = format!(
                    "the local worker did not load the model ({words}): {}",
                    tail.join(" | ")
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
                engine: Arc::downgrade(self),
                variant,
                answered: false,
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
            return Ok(());
        }
    }

    /// The CPU backends and the mode to run in: found at the first start (the mode that
    /// worked here before, if it is still on the ladder, else the best), then kept.
    fn placement(&self, exe: &Path) -> Result<(Ladder, Option<Mode>), ProviderError> {
        let mut slot = self.ladder.lock().expect("ladder lock");
        if let Some(p) = slot.as_ref() {
            return Ok((p.ladder.clone(), Some(p.mode.clone())));
        }
        let ladder = Ladder::find(exe, &self.cpu).map_err(|e| {
            let message = e.to_string();
            self.set_state("failed", Some(message.clone()));
            failure(message)
        })?;
        // A remembered mode is rebuilt against today's ladder (the best may have changed).
        let remembered = self
            .memory
            .recall(&self.cpu, &self.cfg.model)
            .and_then(|m| Some(Mode::of(&ladder, ladder.get(&m.variant)?, m.why)));
        let mode = remembered.or_else(|| ladder.best().map(|b| Mode::of(&ladder, b, None)));
        if let Some(m) = &mode {
            tracing::info!(mode = %m.describe(), backends = %ladder.dir.display(), "local engine CPU mode");
            *slot = Some(Placed {
                ladder: ladder.clone(),
                mode: m.clone(),
                remember: false,
            });
        }
        self.status.lock().expect("status lock").cpu = mode.clone();
        Ok((ladder, mode))
    }

    /// Steps the CPU mode one variant down from `from`, the variant a worker crashed in
    /// (`why`, in words; `sigill`: of an illegal instruction). `Some` (the mode to run in now)
    /// when the requests should be asked again: also when another worker's crash has
    /// stepped past `from` already. `None` at the bottom of the ladder, or when a crash other
    /// than SIGILL has stepped down once already in this process.
    fn step_down(&self, from: &str, why: &str, sigill: bool) -> Option<Mode> {
        let mode = {
            let mut slot = self.ladder.lock().expect("ladder lock");
            let placed = slot.as_mut()?;
            if placed.mode.variant != from {
                return Some(placed.mode.clone());
            }
            if !sigill && self.fault_steps.fetch_add(1, Ordering::Relaxed) > 0 {
                return None;
            }
            let below = placed.ladder.below(from)?;
            placed.mode = Mode::of(&placed.ladder, below, Some(why.to_owned()));
            placed.remember = sigill;
            placed.mode.clone()
        };
        // A new mode is no repeat of the old crash: no backoff before trying it.
        *self.crashes.lock().expect("crash lock") = (None, 0);
        self.early_crashes.store(0, Ordering::Relaxed);
        tracing::warn!(mode = %mode.describe(), "the local engine steps down to a compatible CPU mode");
        self.status.lock().expect("status lock").cpu = Some(mode.clone());
        let _ = self
            .events
            .send(LocalEvent::Downgraded { mode: mode.clone() });
        Some(mode)
    }

    /// A worker running CPU `variant` gave its first token: the crash streak is over, and a
    /// mode stepped down after a SIGILL is remembered as the one that works on this machine.
    fn answered(&self, variant: Option<&str>) {
        self.early_crashes.store(0, Ordering::Relaxed);
        let mode = {
            let mut slot = self.ladder.lock().expect("ladder lock");
            match slot.as_mut() {
                Some(p) if p.remember && Some(p.mode.variant.as_str()) == variant => {
                    p.remember = false;
                    p.mode.clone()
                }
                _ => return,
            }
        };
        if let Err(e) = self.memory.remember(&self.cpu, &self.cfg.model, &mode) {
            tracing::warn!(error = %e, "could not remember the local engine's CPU mode");
        }
    }

    /// A worker running CPU `variant` died (`exit`, described as `words`); `answered`:
    /// whether it had given a token. Returns whether the requests it held should be asked
    /// again. A SIGILL is the CPU's: one mode down. A memory fault (SIGSEGV) or arithmetic
    /// fault (SIGFPE) before a first token may be: asked again as it was, and after a second
    /// in a row, one mode down (once per process, and not remembered). Anything else (memory:
    /// SIGKILL; assertions: SIGABRT; the model file: SIGBUS; outside stops) is not the CPU's
    /// and is not retried.
    fn after_crash(
        &self,
        exit: Option<std::process::ExitStatus>,
        answered: bool,
        words: &str,
        variant: Option<&str>,
    ) -> bool {
        self.crashed();
        self.status.lock().expect("status lock").crashes += 1;
        match signal_of(exit) {
            Some(SIGILL) => variant.is_some_and(|v| self.step_down(v, words, true).is_some()),
            Some(SIGSEGV | SIGFPE) if !answered => {
                if self.early_crashes.fetch_add(1, Ordering::Relaxed) == 0 {
                    return true;
                }
                self.early_crashes.store(0, Ordering::Relaxed);
                variant.is_some_and(|v| self.step_down(v, words, false).is_some())
            }
            _ => {
                self.early_crashes.store(0, Ordering::Relaxed);
                false
            }
        }
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

    /// Starts `understudy worker` (`exe`) for the configured model with the backends of
    /// `ladder` in CPU `variant`, its pipes open.
    fn spawn_worker(
        &self,
        exe: &Path,
        ladder: &Ladder,
        variant: Option<&str>,
    ) -> Result<Child, ProviderError> {
        if !self.cfg.model.exists() {
            return Err(failure(format!(
                "the local model file {} does not exist; run scripts/run (it fetches the default model) or `understudy models use`",
                self.cfg.model.display()
            )));
        }
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("worker").arg("--model").arg(&self.cfg.model);
        if let Some(n) = self.cfg.context {
            cmd.arg("--context").arg(n.to_string());
        }
        cmd.arg("--threads")
            .arg(self.cfg.threads.to_string())
            .arg("--backends")
            .arg(&ladder.dir);
        if let Some(n) = self.cfg.gpu_layers {
            cmd.arg("--gpu-layers").arg(n.to_string());
        }
        if let Some(v) = variant {
            cmd.arg("--cpu-variant").arg(v);
        }
        // ggml's abort handler would attach gdb for a backtrace: slow, and noise in the
        // reason we report.
        // A process group of its own: a Ctrl-C at the terminal is for the gateway, which stops
        // the worker itself; the worker dying of it would read as a crash.
        cmd.process_group(0);
        cmd.env("GGML_NO_BACKTRACE", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                failure(format!(
                    "cannot start the local worker {}: {e}",
                    exe.display()
                ))
            })
    }

    /// Reads the worker's lines until its model is loaded (progress published on the way):
    /// `Some(Some(ready))`; `Some(None)` if it dies first; `None` if it takes longer than
    /// [`LOAD_TIMEOUT`].
    async fn wait_ready(&self, lines: &mut Lines<BufReader<ChildStdout>>) -> Option<Option<Line>> {
        tokio::time::timeout(LOAD_TIMEOUT, async {
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
        .await
        .ok()
    }

    /// The model is loaded: the status says how, and the world hears it.
    fn mark_ready(&self, ready: Line, pid: Option<u32>, started: Instant) {
        let Line::Ready {
            n_ctx,
            kv_type,
            kv_bytes,
            context_why,
            slots,
            threads,
            device,
            gpu_layers,
            n_layers,
            model_bytes,
            cpu_backend,
        } = ready
        else {
            return;
        };
        tracing::info!(model = %self.cfg.model.display(), n_ctx, %kv_type, kv_bytes, slots, threads, %device, gpu_layers, n_layers, cpu_backend = cpu_backend.as_deref().unwrap_or("?"), load_ms = started.elapsed().as_millis() as u64, "local model ready");
        {
            let mut st = self.status.lock().expect("status lock");
            st.state = "ready";
            st.error = None;
            st.progress = None;
            st.n_ctx = Some(n_ctx);
            st.kv_type = (!kv_type.is_empty()).then_some(kv_type);
            st.kv_bytes = (kv_bytes > 0).then_some(kv_bytes);
            st.context_why = (!context_why.is_empty()).then_some(context_why);
            st.slots = (slots > 0).then_some(slots);
            st.threads = Some(threads);
            st.device = Some(device);
            st.gpu_layers = Some(gpu_layers);
            st.n_layers = Some(n_layers);
            st.model_bytes = Some(model_bytes);
            st.cpu_backend = cpu_backend;
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
        let first = self.send(id, &cmd).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(self.clone().forward(id, cmd, first, tx));
        Ok((
            rx,
            CancelOnDrop {
                engine: Arc::downgrade(self),
                id,
                done: false,
            },
        ))
    }

    /// Sends `cmd` (request `id`) to the worker, starting it if need be; its lines come back
    /// on the receiver.
    async fn send(
        self: &Arc<Self>,
        id: u64,
        cmd: &Command,
    ) -> Result<mpsc::UnboundedReceiver<Line>, ProviderError> {
        let mut slot = self.worker.lock().await;
        self.ensure(&mut slot).await?;
        *self.last_used.lock().expect("last used lock") = Instant::now();
        let w = slot.as_mut().expect("ensured");
        let (tx, rx) = mpsc::unbounded_channel();
        w.routes.lock().expect("routes lock").insert(id, tx);
        let mut line = serde_json::to_vec(cmd).expect("serializes");
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
        Ok(rx)
    }

    /// Passes request `id`'s lines on to `tx`; when the worker died before the answer began
    /// and was restarted ([`RESTARTING`]), asks again (the client sees only a delay), up to
    /// [`RETRIES_PER_REQUEST`] times.
    async fn forward(
        self: Arc<Self>,
        id: u64,
        cmd: Command,
        mut from: mpsc::UnboundedReceiver<Line>,
        tx: mpsc::UnboundedSender<Line>,
    ) {
        let mut began = false;
        let mut retries = 0;
        while let Some(line) = from.recv().await {
            match line {
                Line::Error { kind, message, .. } if kind == RESTARTING => {
                    if began || retries == RETRIES_PER_REQUEST || tx.is_closed() {
                        let _ = tx.send(Line::Error {
                            id,
                            kind: "crashed".into(),
                            message,
                            prompt_tokens: 0,
                            n_ctx: 0,
                        });
                        return;
                    }
                    retries += 1;
                    tracing::info!(id, retries, "asking the restarted local worker again");
                    match self.send(id, &cmd).await {
                        Ok(rx) => from = rx,
                        Err(e) => {
                            let _ = tx.send(Line::Error {
                                id,
                                kind: "crashed".into(),
                                message: e.detail,
                                prompt_tokens: 0,
                                n_ctx: 0,
                            });
                            return;
                        }
                    }
                }
                line => {
                    began |= matches!(line, Line::Text { .. });
                    let end = matches!(line, Line::Done { .. } | Line::Error { .. });
                    if tx.send(line).is_err() || end {
                        return;
                    }
                }
            }
        }
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
    /// The engine, which decides what a crash means.
    engine: std::sync::Weak<LocalEngine>,
    /// The CPU variant this worker runs.
    variant: Option<String>,
    /// Whether it has given a token yet.
    answered: bool,
}

impl LineRouter {
    async fn run(
        mut self,
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

    fn route(&mut self, line: Line) {
        if !self.answered && matches!(line, Line::Text { .. } | Line::Done { .. }) {
            self.answered = true;
            if let Some(engine) = self.engine.upgrade() {
                engine.answered(self.variant.as_deref());
            }
        }
        let id = match &line {
            Line::Progress { id, .. }
            | Line::Text { id, .. }
            | Line::Replace { id, .. }
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
            let answer = LastAnswer {
                reason: reason.clone(),
                prompt_tokens: *prompt_tokens,
                cached_tokens: *cached_tokens,
                completion_tokens: *completion_tokens,
                prompt_ms: *prompt_ms,
                cancel_ms,
                tokens_per_second: f64::from(*completion_tokens) * 1000.0 / (*gen_ms).max(1) as f64,
            };
            if st.recent.len() >= RECENT_ANSWERS {
                st.recent.remove(0);
            }
            st.recent.push(answer.clone());
            st.last = Some(answer);
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
        let tail = self.tail.lock().expect("tail lock").clone();
        let words = exit_words(exit, self.variant.as_deref(), &tail);
        let retry = self
            .engine
            .upgrade()
            .is_some_and(|e| e.after_crash(exit, self.answered, &words, self.variant.as_deref()));
        let message = if tail.is_empty() {
            format!("the local worker died: {words}")
        } else {
            format!("the local worker died: {words}: {}", tail.join(" | "))
        };
        {
            let mut st = self.status.lock().expect("status lock");
            st.state = "crashed";
            st.error = Some(message.clone());
        }
        if retry {
            tracing::warn!(%message, "local worker crashed before its answer began; restarting it and asking again");
        } else {
            tracing::error!(%message, "local worker crashed; it restarts on the next request");
            let _ = self.events.send(LocalEvent::Crashed {
                message: message.clone(),
            });
        }
        let kind = if retry { RESTARTING } else { "crashed" };
        for (id, tx) in self.routes.lock().expect("routes lock").drain() {
            let _ = tx.send(Line::Error {
                id,
                kind: kind.into(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    /// An engine on a Sapphire Rapids-like CPU whose backends are all there, placed at the top
    /// of its ladder, and a receiver for its events.
    fn engine() -> (
        Arc<LocalEngine>,
        tempfile::TempDir,
        tokio::sync::broadcast::Receiver<LocalEvent>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        for v in [
            "x64",
            "haswell",
            "skylakex",
            "icelake",
            "zen4",
            "sapphirerapids",
        ] {
            std::fs::write(dir.path().join(format!("libggml-cpu-{v}.so")), b"").unwrap();
        }
        let mut e = LocalEngine::new(LocalConfig {
            model: dir.path().join("m.gguf"),
            context: Some(8),
            threads: 1,
            warm: false,
            unload_after: None,
            gpu_layers: None,
            modes_file: Some(dir.path().join("modes.json")),
        });
        e.cpu = Cpu::parse(
            "model name : Xeon\nflags : sse4_2 avx f16c fma avx2 bmi2 avx512f avx512cd avx512vl \
             avx512dq avx512bw avx512vbmi avx512_vnni avx512_bf16 amx_tile amx_int8\n",
        );
        let e = Arc::new(e);
        let (ladder, mode) = e.placement(&dir.path().join("understudy")).unwrap();
        assert_eq!(ladder.steps.len(), 6);
        assert_eq!(mode.unwrap().variant, "sapphirerapids");
        let events = e.subscribe();
        (e, dir, events)
    }

    fn signal(n: i32) -> Option<std::process::ExitStatus> {
        Some(std::process::ExitStatus::from_raw(n))
    }

    fn variant(e: &LocalEngine) -> String {
        e.status().cpu.unwrap().variant
    }

    fn remembered(e: &LocalEngine, dir: &tempfile::TempDir) -> Option<String> {
        Memory::new(Some(dir.path().join("modes.json")))
            .recall(&e.cpu, &e.cfg.model)
            .map(|m| m.variant)
    }

    #[tokio::test]
    async fn a_sigill_steps_one_mode_down_asks_again_and_is_remembered_once_it_answers() {
        let (e, dir, mut events) = engine();
        assert!(e.after_crash(
            signal(SIGILL),
            false,
            "SIGILL in AMX",
            Some("sapphirerapids")
        ));
        assert_eq!(variant(&e), "zen4");
        let Ok(LocalEvent::Downgraded { mode }) = events.try_recv() else {
            panic!("a downgrade event")
        };
        assert_eq!(mode.without, ["AMX"]);
        assert!(mode.why.as_deref() == Some("SIGILL in AMX"));
        e.answered(Some("sapphirerapids"));
        assert_eq!(remembered(&e, &dir), None, "not before zen4 itself answers");
        e.answered(Some("zen4"));
        assert_eq!(remembered(&e, &dir).as_deref(), Some("zen4"));
        assert_eq!(e.status().crashes, 1);
    }

    #[tokio::test]
    async fn two_workers_dying_in_the_same_mode_step_down_once() {
        let (e, _dir, _events) = engine();
        assert!(e.after_crash(signal(SIGILL), false, "SIGILL", Some("sapphirerapids")));
        // The second worker was started before the first one's death was judged.
        assert!(
            e.after_crash(signal(SIGILL), false, "SIGILL", Some("sapphirerapids")),
            "asked again, in the mode already stepped to"
        );
        assert_eq!(variant(&e), "zen4", "zen4 is tried, not skipped");
    }

    #[tokio::test]
    async fn a_memory_fault_before_a_first_token_is_retried_then_steps_down_once_unremembered() {
        let (e, dir, _events) = engine();
        let segv = |v| e.after_crash(signal(SIGSEGV), false, "SIGSEGV", Some(v));
        assert!(segv("sapphirerapids"), "asked again, as it was");
        assert_eq!(variant(&e), "sapphirerapids");
        assert!(segv("sapphirerapids"));
        assert_eq!(variant(&e), "zen4", "the second in a row steps down");
        e.answered(Some("zen4"));
        assert_eq!(
            remembered(&e, &dir),
            None,
            "a fault's step is for this process only"
        );
        // A prompt that crashes every time does not walk the ladder: one such step per process.
        assert!(segv("zen4"));
        assert!(!segv("zen4"));
        assert_eq!(variant(&e), "zen4");
        // A crash after the worker answered is not the CPU mode's: not asked again.
        assert!(!e.after_crash(signal(SIGSEGV), true, "SIGSEGV", Some("zen4")));
    }

    #[tokio::test]
    async fn memory_assertions_the_model_file_and_outside_stops_never_step_down() {
        let (e, _dir, _events) = engine();
        for s in [9, 6, 7, 15, 2, 9, 6] {
            assert!(!e.after_crash(signal(s), false, "not the CPU", Some("sapphirerapids")));
        }
        assert_eq!(variant(&e), "sapphirerapids");
    }

    #[tokio::test]
    async fn at_the_bottom_of_the_ladder_a_sigill_is_an_error() {
        let (e, _dir, _events) = engine();
        let mut from = "sapphirerapids".to_owned();
        for want in ["zen4", "icelake", "skylakex", "haswell", "x64"] {
            assert!(e.after_crash(signal(SIGILL), false, "SIGILL", Some(&from)));
            assert_eq!(variant(&e), want);
            from = want.to_owned();
        }
        assert!(!e.after_crash(signal(SIGILL), false, "SIGILL", Some("x64")));
        assert_eq!(variant(&e), "x64");
    }
}
