//! The worker process (`understudy worker`): llama.cpp, in a child process of the gateway so a
//! `GGML_ASSERT` abort takes down only the worker. One model, one context, one thread that owns
//! them (a `LlamaContext` is not `Send`); a reader thread takes commands from stdin so a cancel
//! arrives while a request runs. Answers go to stdout as [`Line`]s.
//!
//! The prompt is the model's own chat template (`tokenizer.chat_template`) rendered with
//! minijinja. A prefill (a partial assistant answer) is appended after the generation prompt
//! with no end token, so generation continues exactly where it stopped.
//!
//! The context is sized by [`crate::fit::plan`] (what the model was trained for, at least
//! Claude Code's 32k, what free memory holds, f16 or q8_0). The KV cache holds [`SLOTS`]
//! conversations side by side in one unified cache of that size (llama.cpp's sequences), so
//! Claude Code's main conversation, its side requests and its subagents each keep their own
//! prefix: a prompt goes to the slot it shares the most with unless that would throw away most
//! of a conversation ([`choose_slot`]); the least recently used slot makes room.

mod prompt;

use super::protocol::{ChatMessage, Command, Line, ToolSpec};
use super::slots::{choose_slot, Slot};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use prompt::{
    forced_call_grammar, lazy_call_grammar, render, writes_hermes_calls, CALL_TRIGGER, CHATML,
};
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

/// Prompt tokens decoded per batch (a cancel is checked between batches).
const BATCH: usize = 512;

/// Conversations whose KV cache is kept side by side: Claude Code's main conversation, its
/// title and summary requests and a subagent or two.
pub const SLOTS: usize = 4;

fn emit(line: &Line) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, line);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// How the worker runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The GGUF file.
    pub model: std::path::PathBuf,
    /// Context size in tokens; `None`: sized to the model and free memory
    /// ([`crate::fit::plan`]).
    pub n_ctx: Option<u32>,
    /// CPU threads.
    pub threads: u32,
    /// Layers on the GPU; `None`: as many as fit.
    pub gpu_layers: Option<u32>,
    /// Where llama.cpp's backend libraries are ([`super::cpu::Ladder`]); `None`: llama.cpp
    /// looks beside the binary and in its build directory.
    pub backends: Option<std::path::PathBuf>,
    /// The CPU backend to run (`haswell`, `zen4`, …); `None`: the best this CPU supports,
    /// as llama.cpp scores them.
    pub cpu_variant: Option<String>,
}

/// Memory left free on each GPU when fitting layers (for the KV cache's growth, the desktop,
/// other programs).
const GPU_MARGIN: usize = 1 << 30;

/// Model parameters that report loading progress (every 5 %, so the gateway can show
/// "loading n %").
fn model_params() -> LlamaModelParams {
    let mut shown = -1i32;
    LlamaModelParams::default().with_progress_callback(move |p: f32| {
        let step = (p * 20.0) as i32;
        if step > shown {
            shown = step;
            emit(&Line::Loading { progress: p });
        }
        true
    })
}

/// Runs the worker until stdin closes.
pub fn run(settings: &Settings) -> anyhow::Result<()> {
    let threads = settings.threads;
    load_backends(settings)?;
    let mut backend = LlamaBackend::init()?;
    backend.void_logs();
    // Free memory is read before the weights are: they count against it in full.
    let free = crate::fit::Free::here();
    let Loaded {
        model,
        n_layers,
        gpu_layers,
        device,
        params: _params,
        plan,
    } = load_model(&backend, settings, free)?;
    let n_ctx = plan.n_ctx;
    let ctx = model.new_context(&backend, ctx_params(&plan, threads))?;
    let template = model
        .meta_val_str("tokenizer.chat_template")
        .unwrap_or_else(|_| CHATML.to_owned());
    let template_takes_tools = template.contains("tools");
    let hermes = writes_hermes_calls(&template, template_takes_tools);
    let mut env = minijinja::Environment::new();
    env.add_template_owned("chat", template)?;

    let cancelled: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let commands = read_commands(cancelled.clone());
    let cpu_backend = mapped_cpu_backend();
    let sigill = sigill_asked(cpu_backend.as_deref());
    eprintln!(
        "understudy worker: {n_ctx} tokens of context, {} KV cache in {SLOTS} conversation slots: {}",
        plan.kv_type.name(),
        plan.why
    );
    emit(&Line::Ready {
        n_ctx,
        kv_type: plan.kv_type.name().to_owned(),
        kv_bytes: plan.kv_bytes,
        context_why: plan.why,
        slots: SLOTS as u32,
        threads,
        device,
        gpu_layers,
        n_layers,
        model_bytes: model.size(),
        cpu_backend,
    });

    let mut engine = Engine {
        model: &model,
        ctx,
        env,
        template_takes_tools,
        hermes,
        recurrent: model.is_recurrent() || model.is_hybrid(),
        n_ctx,
        cancelled,
        slots: (0..SLOTS).map(|_| Slot::empty()).collect(),
        tick: 0,
        sigill,
    };
    while let Ok(cmd) = commands.recv() {
        engine.generate(cmd);
    }
    Ok(())
}

/// Registers llama.cpp's backends: the CPU variant `settings` names (alone: a directory of
/// links holding only it and any GPU backend, so llama.cpp's own choice cannot pick another),
/// else the best one in the directory.
fn load_backends(settings: &Settings) -> anyhow::Result<()> {
    use anyhow::Context;
    use llama_cpp_2::llama_backend::{load_backends, load_backends_from_path};
    let found = settings.backends.clone().or_else(|| {
        let exe = std::env::current_exe().ok()?;
        Some(
            super::cpu::Ladder::find(&exe, &super::cpu::Cpu::here())
                .ok()?
                .dir,
        )
    });
    let Some(dir) = found.as_deref() else {
        load_backends();
        return ensure_cpu_device(settings, Path::new("llama.cpp's build directory"));
    };
    match settings.cpu_variant.as_deref() {
        None => load_backends_from_path(dir),
        Some(variant) => {
            // The links must point at absolute paths: they live in another directory.
            let dir = std::fs::canonicalize(dir)
                .with_context(|| format!("the backends directory {}", dir.display()))?;
            let chosen = format!("libggml-cpu-{variant}.so");
            anyhow::ensure!(
                dir.join(&chosen).is_file(),
                "the CPU backend {} is missing; reinstall Understudy (or rebuild it: cargo build puts the backends next to the binary)",
                dir.join(&chosen).display()
            );
            // A private directory (mkdtemp, 0700): ggml loads every backend library in it.
            let only = tempfile::Builder::new()
                .prefix("understudy-backends-")
                .tempdir()
                .context("creating a private directory for the CPU backend's link")?;
            for entry in std::fs::read_dir(&dir)
                .with_context(|| format!("reading the backends directory {}", dir.display()))?
            {
                let name = entry?.file_name();
                let Some(n) = name.to_str() else { continue };
                let backend = n.starts_with("libggml-") && n.ends_with(".so");
                let other_cpu = n.starts_with("libggml-cpu") && n != chosen;
                let core = n == "libggml-base.so";
                if backend && !other_cpu && !core {
                    std::os::unix::fs::symlink(dir.join(n), only.path().join(n))
                        .with_context(|| format!("linking {n} into {}", only.path().display()))?;
                }
            }
            load_backends_from_path(only.path());
        }
    }
    ensure_cpu_device(settings, dir)
}

/// An error unless llama.cpp has a CPU device now (a backend loaded from `dir`).
fn ensure_cpu_device(settings: &Settings, dir: &Path) -> anyhow::Result<()> {
    let cpu = llama_cpp_2::list_llama_ggml_backend_devices()
        .iter()
        .any(|d| d.device_type == llama_cpp_2::LlamaBackendDeviceType::Cpu);
    match settings.cpu_variant.as_deref() {
        Some(v) => anyhow::ensure!(
            cpu,
            "the {v} CPU backend in {} did not load: this CPU lacks instructions it needs (or the file is damaged)",
            dir.display()
        ),
        None => anyhow::ensure!(
            cpu,
            "no CPU backend loaded from {}: its libggml-cpu-*.so files are missing or none runs on this CPU",
            dir.display()
        ),
    }
    Ok(())
}

/// The CPU backend library mapped into this process (`libggml-cpu-zen4.so`), from
/// /proc/self/maps: what runs, whatever was asked for.
fn mapped_cpu_backend() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|l| {
        let name = l.rsplit('/').next()?;
        (name.starts_with("libggml-cpu-") && name.ends_with(".so")).then(|| name.to_owned())
    })
}

/// Context parameters for `plan`: its context and KV cache type, [`SLOTS`] sequences in one
/// unified cache (each may use all of it), prompt batches of [`BATCH`], `threads` CPU threads.
fn ctx_params(plan: &crate::fit::Plan, threads: u32) -> LlamaContextParams {
    use llama_cpp_2::context::params::KvCacheType;
    let kv = match plan.kv_type {
        crate::fit::KvType::F16 => KvCacheType::F16,
        crate::fit::KvType::Q8_0 => KvCacheType::Q8_0,
    };
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(plan.n_ctx))
        .with_n_batch(BATCH as u32)
        .with_n_seq_max(SLOTS as u32)
        .with_kv_unified(true)
        .with_type_k(kv)
        .with_type_v(kv)
        .with_n_threads(threads as i32)
        .with_n_threads_batch(threads as i32);
    match plan.kv_type {
        // A quantized V cache needs flash attention.
        crate::fit::KvType::Q8_0 => {
            params.with_flash_attention_policy(llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED)
        }
        crate::fit::KvType::F16 => params,
    }
}

/// A loaded model and where it runs.
struct Loaded {
    model: LlamaModel,
    /// The model's layers.
    n_layers: u32,
    /// Of which on the GPU.
    gpu_layers: u32,
    /// The GPU's name, or `CPU`.
    device: String,
    /// The parameters it was loaded with, kept alive as long as the model (as they were when
    /// loading happened inline).
    params: std::pin::Pin<Box<LlamaModelParams>>,
    /// The context it gets ([`crate::fit::plan`], adjusted by llama.cpp's fit on a GPU).
    plan: crate::fit::Plan,
}

/// Loads the model. Layers on the GPU: as configured; else llama.cpp's fit (as many as the
/// free memory holds, less a margin, with at least Claude Code's context or the planned one
/// if smaller); a model that fits nowhere on the GPU runs on the CPU, with a context planned
/// for the RAM that is `free`.
fn load_model(
    backend: &LlamaBackend,
    settings: &Settings,
    free: Option<crate::fit::Free>,
) -> anyhow::Result<Loaded> {
    let model_path = settings.model.as_path();
    let shape = crate::gguf::Shape::read(model_path).unwrap_or_else(|e| {
        eprintln!("understudy worker: reading the model's header failed ({e}); planning its context without it");
        crate::gguf::Shape::default()
    });
    let file_bytes = std::fs::metadata(model_path).map_or(0, |m| m.len());
    let on_cpu = crate::fit::plan(&shape, file_bytes, settings.n_ctx, free);
    let gpus: Vec<_> = llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .filter(|d| {
            matches!(
                d.device_type,
                llama_cpp_2::LlamaBackendDeviceType::Gpu
                    | llama_cpp_2::LlamaBackendDeviceType::IntegratedGpu
            )
        })
        .collect();
    let offload = backend.supports_gpu_offload() && !gpus.is_empty();
    let mut params = Box::pin(match settings.gpu_layers {
        Some(n) if offload => model_params().with_n_gpu_layers(n),
        _ if !offload => model_params().with_n_gpu_layers(0),
        _ => model_params(),
    });
    let mut plan = on_cpu.clone();
    if offload && settings.gpu_layers.is_none() {
        // On a GPU the cache lives in its memory: aim for the whole plan and let llama.cpp's
        // fit trade layers and context for what the devices hold.
        let aim = crate::fit::plan(&shape, 0, settings.n_ctx, None);
        let path = std::ffi::CString::new(model_path.as_os_str().as_encoded_bytes())?;
        let mut margins = vec![GPU_MARGIN; llama_cpp_2::max_devices().max(gpus.len())];
        let mut cp = ctx_params(&aim, settings.threads);
        let least = aim.n_ctx.min(crate::fit::CLAUDE_CODE_CONTEXT);
        if params
            .as_mut()
            .fit_params(&path, &mut cp, &mut margins, least, 3)
            .is_err()
        {
            eprintln!("understudy worker: the model does not fit on the GPU; running on the CPU");
            params.set(model_params().with_n_gpu_layers(0));
        } else {
            let n_ctx = cp.n_ctx().map_or(aim.n_ctx, NonZeroU32::get);
            plan = crate::fit::Plan {
                n_ctx,
                kv_type: aim.kv_type,
                kv_bytes: aim
                    .kv_type
                    .bytes(shape.kv_elements_per_token() * u64::from(n_ctx)),
                why: format!("{}; llama.cpp's fit on the GPU gave {n_ctx}", aim.why),
            };
        }
    }
    let model = LlamaModel::load_from_file(backend, model_path, &params)
        .map_err(|e| anyhow::anyhow!("cannot load {}: {e}", model_path.display()))?;
    let n_layers = model.n_layer();
    let gpu_layers = if offload {
        u32::try_from(params.n_gpu_layers()).map_or(n_layers, |n| n.min(n_layers))
    } else {
        0
    };
    if gpu_layers == 0 {
        plan = on_cpu;
    }
    let device = match gpus.first() {
        Some(g) if gpu_layers > 0 => format!("{} ({})", g.name, g.description),
        _ => "CPU".to_owned(),
    };
    Ok(Loaded {
        model,
        n_layers,
        gpu_layers,
        device,
        params,
        plan,
    })
}

/// Reads commands from stdin on a thread of their own: a cancel is noted in `cancelled` at
/// once (so it arrives while a request runs); the rest come out of the returned channel,
/// which closes with stdin.
fn read_commands(cancelled: Arc<Mutex<HashSet<u64>>>) -> mpsc::Receiver<Command> {
    let (tx, rx) = mpsc::channel::<Command>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Command>(&line) {
                Ok(Command::Cancel { id }) => {
                    cancelled.lock().expect("cancel lock").insert(id);
                }
                Ok(cmd) => {
                    if tx.send(cmd).is_err() {
                        break;
                    }
                }
                Err(e) => eprintln!("understudy worker: ignoring a bad command ({e}): {line}"),
            }
        }
    });
    rx
}

/// The one thread's model, context and template, and the conversations its KV cache holds.
struct Engine<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    env: minijinja::Environment<'static>,
    template_takes_tools: bool,
    /// The model writes Hermes `<tool_call>`s (so `tool_choice: auto` gets the lazy grammar).
    hermes: bool,
    /// A recurrent or hybrid model (Mamba layers): its state cannot be cut at a position or
    /// copied in part, so a slot is reused only when the prompt extends it, and never copied.
    recurrent: bool,
    n_ctx: u32,
    cancelled: Arc<Mutex<HashSet<u64>>>,
    /// The conversations in the KV cache.
    slots: Vec<Slot<LlamaToken>>,
    /// Counts requests, for least-recently-used eviction.
    tick: u64,
    /// Testing only: die of SIGILL on the first token ([`sigill_asked`]).
    sigill: bool,
}

impl Engine<'_> {
    /// True (once) when request `id` has been cancelled.
    fn is_cancelled(&self, id: u64) -> bool {
        self.cancelled.lock().expect("cancel lock").remove(&id)
    }

    /// Empties the KV cache.
    fn reset(&mut self) {
        self.ctx.clear_kv_cache();
        for slot in &mut self.slots {
            slot.tokens.clear();
        }
    }

    /// Empties slot `i`.
    fn evict(&mut self, i: usize) {
        if !matches!(
            self.ctx.clear_kv_cache_seq(Some(i as u32), None, None),
            Ok(true)
        ) {
            self.reset();
        }
        self.slots[i].tokens.clear();
    }

    /// Evicts the least recently used slot other than `keep` that holds anything; false when
    /// there is none.
    fn evict_oldest_but(&mut self, keep: usize) -> bool {
        let oldest = self
            .slots
            .iter()
            .enumerate()
            .filter(|(i, s)| *i != keep && !s.tokens.is_empty())
            .min_by_key(|(_, s)| s.used)
            .map(|(i, _)| i);
        match oldest {
            Some(i) => {
                self.evict(i);
                true
            }
            None => false,
        }
    }

    /// Decodes `batch`; when the cache has no room, evicts the least recently used other
    /// conversation and tries again.
    fn decode(&mut self, batch: &mut LlamaBatch, slot: usize) -> Result<(), String> {
        loop {
            match self.ctx.decode(batch) {
                Ok(()) => return Ok(()),
                Err(llama_cpp_2::DecodeError::NoKvCacheSlot) if self.evict_oldest_but(slot) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Answers one `Generate` command with `Text` lines and a `Done` or an `Error`.
    fn generate(&mut self, cmd: Command) {
        let Command::Generate {
            id,
            messages,
            prefill,
            max_tokens,
            temperature,
            top_p,
            top_k,
            seed,
            stop,
            tools,
            force_tool,
        } = cmd
        else {
            return;
        };
        let forced = force_tool.is_some();
        let prefill = prefill.as_deref();
        let Some((tokens, tools)) = self.prompt(id, &messages, tools, prefill, max_tokens, forced)
        else {
            return;
        };
        let max_tokens = max_tokens.min(self.n_ctx - tokens.len() as u32);
        let (slot, reused) = self.take_slot(&tokens, max_tokens);
        let mut batch = LlamaBatch::new(BATCH.max(1), 1);
        let prompt_started = std::time::Instant::now();
        match self.decode_prompt(id, &tokens, slot, reused, &mut batch) {
            Ok(true) => {}
            Ok(false) => {
                emit(&Line::Done {
                    id,
                    reason: "cancelled".into(),
                    stop_sequence: None,
                    prompt_tokens: tokens.len() as u32,
                    cached_tokens: reused as u32,
                    completion_tokens: 0,
                    prompt_ms: prompt_started.elapsed().as_millis() as u64,
                    gen_ms: 0,
                });
                return;
            }
            Err(message) => {
                // The cache may hold half a batch: start clean.
                self.reset();
                internal_error(id, message, tokens.len(), self.n_ctx);
                return;
            }
        }
        // A forced call: only a well-formed call to an allowed tool can be sampled. With tools
        // offered freely, the same grammar takes over lazily at the model's first
        // `<tool_call>`: its words are free, its calls valid against their schemas.
        let grammar = match (&force_tool, prefill) {
            (Some(force), None) => Some((forced_call_grammar(&tools, force), false)),
            (None, None) if self.hermes && !tools.is_empty() => {
                lazy_call_grammar(&tools).map(|g| (g, true))
            }
            _ => None,
        };
        let sampling = Sampling {
            temperature,
            top_p,
            top_k,
            seed,
        };
        let mut sampler = sampler(
            self.model,
            grammar.as_ref().map(|(g, lazy)| (g.as_str(), *lazy)),
            sampling,
        );
        let prompt_ms = prompt_started.elapsed().as_millis() as u64;
        if self.sigill {
            raise_sigill();
        }
        let gen_started = std::time::Instant::now();
        let mut text = TextOut::new(id, &stop, true);
        let answer = self.decode_answer(
            id,
            &mut sampler,
            &mut batch,
            &mut text,
            (slot, tokens.len()),
            max_tokens,
        );
        let (reason, mut generated) = match answer {
            Ok(done) => done,
            Err(message) => {
                // The cache may hold half a batch: start clean.
                self.reset();
                internal_error(id, message, tokens.len(), self.n_ctx);
                return;
            }
        };
        let (stop_sequence, said) = text.finish();
        // Every call checked against its schema; one that fails is sampled again under the
        // forced grammar, after everything said before it (earlier valid calls included). An
        // answer continuing a prefill is left to the gateway's check (which fails it over).
        let mut reason = reason;
        if !tools.is_empty() && reason != "cancelled" && prefill.is_none() {
            if let Some((force, at)) = invalid_call(&said, &tools) {
                let words = &said[..at];
                let retry = Retry {
                    messages: &messages,
                    tools: &tools,
                    words,
                    force: &force,
                    max_tokens,
                    sampling,
                };
                match self.resample(id, retry) {
                    Some((text, n)) => {
                        generated += n;
                        reason = "end_turn";
                        emit(&Line::Replace { id, text });
                    }
                    None => eprintln!(
                        "understudy worker: a tool call that does not match its schema could not be sampled again; the gateway will not deliver it"
                    ),
                }
            }
        }
        emit(&Line::Done {
            id,
            reason: reason.into(),
            stop_sequence,
            prompt_tokens: tokens.len() as u32,
            cached_tokens: reused as u32,
            completion_tokens: generated,
            prompt_ms,
            gen_ms: gen_started.elapsed().as_millis() as u64,
        });
    }

    /// Samples a call again under the forced grammar for `retry.force`, after the answer's
    /// words: the whole new answer and the tokens it took, or `None` if it still does not
    /// match (or could not be made).
    fn resample(&mut self, id: u64, retry: Retry<'_>) -> Option<(String, u32)> {
        let prefill = Some(retry.words);
        let tokens = self
            .tokens(retry.messages, retry.tools, prefill)
            .ok()
            .filter(|t| t.len() < self.n_ctx as usize)?;
        let max_tokens = retry.max_tokens.min(self.n_ctx - tokens.len() as u32);
        let (slot, reused) = self.take_slot(&tokens, max_tokens);
        let mut batch = LlamaBatch::new(BATCH.max(1), 1);
        if !matches!(
            self.decode_prompt(id, &tokens, slot, reused, &mut batch),
            Ok(true)
        ) {
            self.reset();
            return None;
        }
        let grammar = forced_call_grammar(retry.tools, retry.force);
        let mut sampler = sampler(self.model, Some((&grammar, false)), retry.sampling);
        let mut text = TextOut::new(id, &[], false);
        let (_, n) = self
            .decode_answer(
                id,
                &mut sampler,
                &mut batch,
                &mut text,
                (slot, tokens.len()),
                max_tokens,
            )
            .map_err(|_| self.reset())
            .ok()?;
        let (_, call) = text.finish();
        let whole = format!("{}{call}", retry.words);
        invalid_call(&whole, retry.tools)
            .is_none()
            .then_some((whole, n))
    }

    /// The prompt's tokens and the tools it offers; `None` when it cannot be answered (the
    /// template failed, or the prompt does not fit the context), the error line sent.
    fn prompt(
        &self,
        id: u64,
        messages: &[ChatMessage],
        tools: Vec<ToolSpec>,
        prefill: Option<&str>,
        max_tokens: u32,
        forced: bool,
    ) -> Option<(Vec<LlamaToken>, Vec<ToolSpec>)> {
        let n_ctx = self.n_ctx;
        let rendered = self.tokens(messages, &tools, prefill);
        // Tools that leave no room for the answer are left out: the model answers in words
        // (a forced call keeps them: without them it cannot be made).
        let room = (n_ctx as usize).saturating_sub(max_tokens.min(1024) as usize);
        let (tokens, tools) = match rendered {
            Ok(t) if t.len() > room && !tools.is_empty() && !forced => {
                eprintln!(
                    "understudy worker: {} prompt tokens with {} tools leave no room in a {n_ctx}-token context; answering without tools",
                    t.len(),
                    tools.len()
                );
                (self.tokens(messages, &[], prefill), Vec::new())
            }
            r => (r, tools),
        };
        let tokens = match tokens {
            Ok(t) => t,
            Err(e) => {
                emit(&Line::Error {
                    id,
                    kind: "internal".into(),
                    message: format!("the chat template failed: {e}"),
                    prompt_tokens: 0,
                    n_ctx,
                });
                return None;
            }
        };
        if tokens.len() >= n_ctx as usize {
            emit(&Line::Error {
                id,
                kind: "context_overflow".into(),
                message: format!("{} tokens > {} maximum", tokens.len(), n_ctx),
                prompt_tokens: tokens.len() as u32,
                n_ctx,
            });
            return None;
        }
        Some((tokens, tools))
    }

    /// The rendered prompt ([`render`]) as tokens, with the BOS token the model wants.
    fn tokens(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolSpec],
        prefill: Option<&str>,
    ) -> Result<Vec<LlamaToken>, minijinja::Error> {
        let prompt = render(
            &self.env,
            messages,
            tools,
            self.template_takes_tools,
            prefill,
        )?;
        let vocab = self.model.vocab();
        let mut tokens = vocab.tokenize(prompt.as_bytes(), false, true);
        if vocab.should_add_bos() && tokens.first() != Some(&vocab.bos()) {
            tokens.insert(0, vocab.bos());
        }
        Ok(tokens)
    }

    /// The slot for `tokens` ([`choose_slot`]) with the longest prefix it can reuse in place
    /// (copied from another slot where that one shares more), and room made for the prompt
    /// and up to 1024 tokens of answer by evicting the least recently used other slots. At
    /// least the last prompt token is decoded again, for its logits. Returns the slot and how
    /// many tokens it reuses.
    fn take_slot(&mut self, tokens: &[LlamaToken], max_tokens: u32) -> (usize, usize) {
        self.tick += 1;
        let (slot, from, common) = choose_slot(&self.slots, tokens);
        let common = common.min(tokens.len() - 1);
        let own = self.slots[slot].common(tokens).min(tokens.len() - 1);
        // A recurrent state holds the whole sequence: it is reused only if the prompt extends
        // it, and another slot's cannot be copied in part.
        let own = if self.recurrent && own < self.slots[slot].tokens.len() {
            0
        } else {
            own
        };
        let reused = if from != slot && common > own && !self.recurrent {
            // Another conversation holds a longer prefix (a shared system prompt): copy it.
            self.evict(slot);
            self.ctx
                .copy_kv_cache_seq(from as i32, slot as i32, Some(0), Some(common as u32))
                .map_or(0, |()| {
                    self.slots[slot].tokens = self.slots[from].tokens[..common].to_vec();
                    common
                })
        } else {
            if !matches!(
                self.ctx
                    .clear_kv_cache_seq(Some(slot as u32), Some(own as u32), None),
                Ok(true)
            ) {
                self.evict(slot);
            }
            self.slots[slot].tokens.truncate(own);
            self.slots[slot].tokens.len()
        };
        self.slots[slot].used = self.tick;
        // Cells are shared by copied prefixes, so this overcounts: evictions err early.
        let room = tokens.len() + max_tokens.min(1024) as usize;
        while self
            .slots
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != slot)
            .map(|(_, s)| s.tokens.len())
            .sum::<usize>()
            + room
            > self.n_ctx as usize
            && self.evict_oldest_but(slot)
        {}
        (slot, reused)
    }

    /// Decodes the prompt after its `reused` tokens in batches, with a `Progress` line after
    /// each. `Ok(false)`: cancelled between batches.
    fn decode_prompt(
        &mut self,
        id: u64,
        tokens: &[LlamaToken],
        slot: usize,
        reused: usize,
        batch: &mut LlamaBatch,
    ) -> Result<bool, String> {
        for (chunk_no, chunk) in tokens[reused..].chunks(BATCH).enumerate() {
            if self.is_cancelled(id) {
                return Ok(false);
            }
            batch.clear();
            let base = reused + chunk_no * BATCH;
            for (i, t) in chunk.iter().enumerate() {
                let pos = base + i;
                let _ = batch.add(*t, pos as i32, &[slot as i32], pos == tokens.len() - 1);
            }
            if let Err(e) = self.decode(batch, slot) {
                return Err(format!("decoding the prompt failed: {e}"));
            }
            self.slots[slot].tokens.extend_from_slice(chunk);
            emit(&Line::Progress {
                id,
                done: (base + chunk.len()) as u32,
                total: tokens.len() as u32,
            });
        }
        Ok(true)
    }

    /// The decode loop: samples up to `max_tokens` tokens after a prompt of `prompt_len` in
    /// `slot` (whose logits are in `batch`), feeding the text to `text`. Returns why it
    /// stopped and how many tokens were generated.
    fn decode_answer(
        &mut self,
        id: u64,
        sampler: &mut LlamaSampler,
        batch: &mut LlamaBatch,
        text: &mut TextOut<'_>,
        (slot, prompt_len): (usize, usize),
        max_tokens: u32,
    ) -> Result<(&'static str, u32), String> {
        let vocab = self.model.vocab();
        let mut reason = "max_tokens";
        let mut generated = 0u32;
        let mut pos = prompt_len;
        let mut logits_at = batch.n_tokens() - 1;
        while generated < max_tokens {
            if self.is_cancelled(id) {
                reason = "cancelled";
                break;
            }
            // Chosen, then accepted through the shim that catches llama.cpp's exceptions: a
            // grammar that cannot take the token (a lazy grammar's trigger replayed with text
            // it rejects) throws, which across `llama_sampler_sample` would abort the worker.
            let mut candidates =
                LlamaTokenDataArray::from_iter(self.ctx.candidates_ith(logits_at), false);
            candidates.apply_sampler(sampler);
            let Some(t) = candidates.selected_token() else {
                return Err("the sampler chose no token".into());
            };
            if sampler.try_accept(t).is_err() {
                // The tool-call grammar broke: what was said so far is checked (and a call
                // sampled again under the forced grammar) as any answer is.
                reason = "end_turn";
                break;
            }
            generated += 1;
            if vocab.is_eog(t) {
                reason = "end_turn";
                break;
            }
            if text.push(&vocab.token_to_piece(t, false, None)) {
                reason = "stop_sequence";
                break;
            }
            batch.clear();
            let _ = batch.add(t, pos as i32, &[slot as i32], true);
            self.slots[slot].tokens.push(t);
            pos += 1;
            logits_at = 0;
            if let Err(e) = self.decode(batch, slot) {
                return Err(format!("decoding failed: {e}"));
            }
        }
        Ok((reason, generated))
    }
}

/// A request's sampling settings.
#[derive(Debug, Clone, Copy)]
struct Sampling {
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i32>,
    seed: Option<u32>,
}

/// A call to sample again: the request, the answer's words before its first call, and the
/// tool to force (`*`: any).
struct Retry<'a> {
    messages: &'a [ChatMessage],
    tools: &'a [ToolSpec],
    words: &'a str,
    force: &'a str,
    max_tokens: u32,
    sampling: Sampling,
}

/// The first call in `answer` that is not valid against `tools`' schemas: the tool to force
/// (the one it named if that was offered, else any, `*`) and where its `<tool_call>` starts.
/// `None`: every call is valid (or there is none).
fn invalid_call(answer: &str, tools: &[ToolSpec]) -> Option<(String, usize)> {
    let offered = || tools.iter().map(|t| (t.name.as_str(), &t.parameters));
    let starts: Vec<usize> = answer.match_indices(CALL_TRIGGER).map(|(i, _)| i).collect();
    match super::tools::parse(answer) {
        super::tools::Parsed::Calls { calls, .. } => calls.iter().enumerate().find_map(|(k, c)| {
            let why = crate::schema::check_call(offered(), &c.name, &c.arguments).err()?;
            eprintln!("understudy worker: {why}; sampling the call again under its grammar");
            let force = if tools.iter().any(|t| t.name == c.name) {
                c.name.clone()
            } else {
                "*".to_owned()
            };
            // Hermes calls start at their tags; other formats are one block from the start.
            Some((force, starts.get(k).copied().unwrap_or(0)))
        }),
        // Text that opens a call but is not one (cut short, malformed): sample it again.
        super::tools::Parsed::Text(_) => starts.first().map(|&at| ("*".to_owned(), at)),
    }
}

/// The sampler chain: the tool-call `grammar` first, if any (lazy: from the model's first
/// `<tool_call>`); then greedy for a temperature of 0, else sampling.
fn sampler(model: &LlamaModel, grammar: Option<(&str, bool)>, s: Sampling) -> LlamaSampler {
    let Sampling {
        temperature,
        top_p,
        top_k,
        seed,
    } = s;
    let mut chain = Vec::new();
    if let Some((grammar, lazy)) = grammar {
        let made = if lazy {
            LlamaSampler::grammar_lazy(model, grammar, "root", [CALL_TRIGGER], &[])
        } else {
            LlamaSampler::grammar(model, grammar, "root")
        };
        match made {
            Ok(g) => chain.push(g),
            Err(e) => {
                eprintln!("understudy worker: the tool-call grammar failed ({e}); sampling freely")
            }
        }
    }
    match temperature {
        Some(t) if t <= 0.0 => chain.push(LlamaSampler::greedy()),
        // Sampling: a light repetition penalty over the last 64 tokens (llama.cpp's
        // long-time default) keeps small models out of loops. Greedy requests are left
        // exact.
        t => chain.extend([
            LlamaSampler::penalties(model.n_vocab(), 64, 1.1, 0.0, 0.0),
            LlamaSampler::top_k(top_k.unwrap_or(40)),
            LlamaSampler::top_p(top_p.unwrap_or(0.95), 1),
            LlamaSampler::temp(t.unwrap_or(0.7)),
            LlamaSampler::dist(seed.unwrap_or_else(rand::random)),
        ]),
    }
    LlamaSampler::chain_simple(chain)
}

/// Testing only: whether `UNDERSTUDY_TEST_SIGILL` (CPU variant names, comma-separated, or
/// `best`: the top of this machine's ladder) names the CPU backend this worker has mapped
/// (`mapped`, from /proc/self/maps: what runs, not what was asked for), so that it dies of a
/// real SIGILL on its first token, as an AMX kernel does on a host that cannot run it.
#[cfg(feature = "testing")]
fn sigill_asked(mapped: Option<&str>) -> bool {
    use super::cpu::{Cpu, Ladder};
    let Ok(list) = std::env::var("UNDERSTUDY_TEST_SIGILL") else {
        return false;
    };
    let Some(running) = mapped.and_then(|m| m.strip_prefix("libggml-cpu-")?.strip_suffix(".so"))
    else {
        return false;
    };
    let best = std::env::current_exe()
        .ok()
        .and_then(|exe| Ladder::find(&exe, &Cpu::here()).ok())
        .and_then(|l| l.best().map(|v| v.name));
    list.split(',')
        .any(|x| x == running || (x == "best" && Some(running) == best))
}

#[cfg(not(feature = "testing"))]
fn sigill_asked(_mapped: Option<&str>) -> bool {
    false
}

/// Dies of a real SIGILL, delivered by the kernel (`kill -ILL`): the exit the gateway sees is
/// the one an illegal instruction gives.
fn raise_sigill() -> ! {
    let _ = std::process::Command::new("kill")
        .args(["-ILL", &std::process::id().to_string()])
        .status();
    std::thread::sleep(std::time::Duration::from_secs(60));
    std::process::exit(70)
}

fn internal_error(id: u64, message: String, prompt_tokens: usize, n_ctx: u32) {
    emit(&Line::Error {
        id,
        kind: "internal".into(),
        message,
        prompt_tokens: prompt_tokens as u32,
        n_ctx,
    });
}

/// Turns token pieces into text lines: whole UTF-8 characters only, and nothing that may be
/// the start of a stop sequence until it is known not to be one.
struct TextOut<'a> {
    id: u64,
    stop: &'a [String],
    bytes: Vec<u8>,
    pending: String,
    hit: Option<String>,
    /// Everything passed on so far.
    said: String,
    /// Send `Text` lines (else only keep the text).
    send: bool,
}

impl<'a> TextOut<'a> {
    fn new(id: u64, stop: &'a [String], send: bool) -> TextOut<'a> {
        TextOut {
            id,
            stop,
            bytes: Vec::new(),
            pending: String::new(),
            hit: None,
            said: String::new(),
            send,
        }
    }

    /// Adds a piece; true when a stop sequence has been reached.
    fn push(&mut self, piece: &[u8]) -> bool {
        self.bytes.extend_from_slice(piece);
        let valid = match std::str::from_utf8(&self.bytes) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            // Not UTF-8 at all: pass it on replaced rather than stall.
            Err(_) => self.bytes.len(),
        };
        let chunk: Vec<u8> = self.bytes.drain(..valid).collect();
        self.pending.push_str(&String::from_utf8_lossy(&chunk));
        if let Some((at, s)) = self
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.pending.find(s.as_str()).map(|i| (i, s)))
            .min_by_key(|(i, _)| *i)
        {
            self.pending.truncate(at);
            self.hit = Some(s.clone());
            self.flush(self.pending.len());
            return true;
        }
        // Hold back the longest suffix that could still grow into a stop sequence.
        let hold = self
            .stop
            .iter()
            .map(|s| {
                (1..s.len())
                    .rev()
                    .find(|&n| self.pending.ends_with(&s[..n]) && s.is_char_boundary(n))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        self.flush(self.pending.len() - hold);
        false
    }

    fn flush(&mut self, upto: usize) {
        if upto == 0 {
            return;
        }
        let text: String = self.pending.drain(..upto).collect();
        self.said.push_str(&text);
        if self.send {
            emit(&Line::Text { id: self.id, text });
        }
    }

    /// Sends what is left; the stop sequence that ended the answer, if one did, and the
    /// whole text passed on.
    fn finish(mut self) -> (Option<String>, String) {
        if self.hit.is_none() {
            let rest = String::from_utf8_lossy(&self.bytes).into_owned();
            self.pending.push_str(&rest);
            self.flush(self.pending.len());
        }
        (self.hit, self.said)
    }
}
