//! The worker process (`understudy worker`): llama.cpp, in a child process of the gateway so a
//! `GGML_ASSERT` abort takes down only the worker. One model, one context, one thread that owns
//! them (a `LlamaContext` is not `Send`); a reader thread takes commands from stdin so a cancel
//! arrives while a request runs. Answers go to stdout as [`Line`]s.
//!
//! The prompt is the model's own chat template (`tokenizer.chat_template`) rendered with
//! minijinja. A prefill (a partial assistant answer) is appended after the generation prompt
//! with no end token, so generation continues exactly where it stopped. The KV cache of the
//! previous prompt is kept and its longest common prefix with the next one is reused.

use super::protocol::{ChatMessage, Command, Line, ToolSpec};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::num::NonZeroU32;
use std::sync::{mpsc, Arc, Mutex};

/// Prompt tokens decoded per batch (a cancel is checked between batches).
const BATCH: usize = 512;

/// A chat template for models that ship none: ChatML.
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

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
    /// Context size in tokens (capped by the model's own).
    pub n_ctx: u32,
    /// CPU threads.
    pub threads: u32,
    /// Layers on the GPU; `None`: as many as fit.
    pub gpu_layers: Option<u32>,
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
    let model_path = settings.model.as_path();
    let threads = settings.threads;
    let mut backend = LlamaBackend::init()?;
    backend.void_logs();
    let ctx_params = |n_ctx: u32| {
        LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(BATCH as u32)
            .with_n_threads(threads as i32)
            .with_n_threads_batch(threads as i32)
    };
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
    // Layers on the GPU: as configured; else llama.cpp's fit (as many as the free memory
    // holds, less a margin); a model that fits nowhere on the GPU runs on the CPU.
    let mut params = std::pin::pin!(match settings.gpu_layers {
        Some(n) if offload => model_params().with_n_gpu_layers(n),
        _ if !offload => model_params().with_n_gpu_layers(0),
        _ => model_params(),
    });
    if offload && settings.gpu_layers.is_none() {
        let path = std::ffi::CString::new(model_path.as_os_str().as_encoded_bytes())?;
        let mut margins = vec![GPU_MARGIN; llama_cpp_2::max_devices().max(gpus.len())];
        let mut cp = ctx_params(settings.n_ctx);
        if params
            .as_mut()
            .fit_params(&path, &mut cp, &mut margins, settings.n_ctx, 3)
            .is_err()
        {
            eprintln!("understudy worker: the model does not fit on the GPU; running on the CPU");
            params.set(model_params().with_n_gpu_layers(0));
        }
    }
    let model = LlamaModel::load_from_file(&backend, model_path, &params)
        .map_err(|e| anyhow::anyhow!("cannot load {}: {e}", model_path.display()))?;
    let n_layers = model.n_layer();
    let gpu_layers = if offload {
        u32::try_from(params.n_gpu_layers()).map_or(n_layers, |n| n.min(n_layers))
    } else {
        0
    };
    let device = match gpus.first() {
        Some(g) if gpu_layers > 0 => format!("{} ({})", g.name, g.description),
        _ => "CPU".to_owned(),
    };
    let n_ctx = settings.n_ctx.min(model.n_ctx_train()).max(256);
    let params = ctx_params(n_ctx);
    let mut ctx = model.new_context(&backend, params)?;
    let template = model
        .meta_val_str("tokenizer.chat_template")
        .unwrap_or_else(|_| CHATML.to_owned());
    let template_takes_tools = template.contains("tools");
    let mut env = minijinja::Environment::new();
    env.add_template_owned("chat", template)?;

    let cancelled: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let (tx, rx) = mpsc::channel::<Command>();
    {
        let cancelled = cancelled.clone();
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
    }
    emit(&Line::Ready {
        n_ctx,
        threads,
        device,
        gpu_layers,
        n_layers,
        model_bytes: model.size(),
    });

    let mut cached: Vec<LlamaToken> = Vec::new();
    while let Ok(cmd) = rx.recv() {
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
            continue;
        };
        let is_cancelled = || cancelled.lock().expect("cancel lock").remove(&id);
        let vocab = model.vocab();
        let tokenize = |prompt: &str| {
            let mut tokens = vocab.tokenize(prompt.as_bytes(), false, true);
            if vocab.should_add_bos() && tokens.first() != Some(&vocab.bos()) {
                tokens.insert(0, vocab.bos());
            }
            tokens
        };
        let rendered = render(
            &env,
            &messages,
            &tools,
            template_takes_tools,
            prefill.as_deref(),
        )
        .map(|p| tokenize(&p));
        // Tools that leave no room for the answer are left out: the model answers in words
        // (a forced call keeps them: without them it cannot be made).
        let room = (n_ctx as usize).saturating_sub(max_tokens.min(1024) as usize);
        let (tokens, tools) = match rendered {
            Ok(t) if t.len() > room && !tools.is_empty() && force_tool.is_none() => {
                eprintln!(
                    "understudy worker: {} prompt tokens with {} tools leave no room in a {n_ctx}-token context; answering without tools",
                    t.len(),
                    tools.len()
                );
                (
                    render(
                        &env,
                        &messages,
                        &[],
                        template_takes_tools,
                        prefill.as_deref(),
                    )
                    .map(|p| tokenize(&p)),
                    Vec::new(),
                )
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
                continue;
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
            continue;
        }
        let max_tokens = max_tokens.min(n_ctx - tokens.len() as u32);
        // Reuse the longest common prefix of the previous prompt's KV cache; at least the last
        // prompt token is decoded again, for its logits.
        let common = cached
            .iter()
            .zip(&tokens)
            .take_while(|(a, b)| a == b)
            .count()
            .min(tokens.len() - 1);
        if !matches!(
            ctx.clear_kv_cache_seq(Some(0), Some(common as u32), None),
            Ok(true)
        ) {
            ctx.clear_kv_cache();
            cached.clear();
        }
        let reused = common.min(cached.len());
        cached.truncate(reused);
        let mut batch = LlamaBatch::new(BATCH.max(1), 1);
        let prompt_started = std::time::Instant::now();
        let mut stopped_by_cancel = false;
        let mut failed = None;
        for (chunk_no, chunk) in tokens[reused..].chunks(BATCH).enumerate() {
            if is_cancelled() {
                stopped_by_cancel = true;
                break;
            }
            batch.clear();
            let base = reused + chunk_no * BATCH;
            for (i, t) in chunk.iter().enumerate() {
                let pos = base + i;
                let _ = batch.add(*t, pos as i32, &[0], pos == tokens.len() - 1);
            }
            if let Err(e) = ctx.decode(&mut batch) {
                failed = Some(format!("decoding the prompt failed: {e}"));
                break;
            }
            cached.extend_from_slice(chunk);
            emit(&Line::Progress {
                id,
                done: (base + chunk.len()) as u32,
                total: tokens.len() as u32,
            });
        }
        if let Some(message) = failed {
            // The cache may hold half a batch: start clean.
            ctx.clear_kv_cache();
            cached.clear();
            internal_error(id, message, tokens.len(), n_ctx);
            continue;
        }
        if stopped_by_cancel {
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
            continue;
        }
        let mut chain = Vec::new();
        // A forced call: only a well-formed call to an allowed tool can be sampled.
        if let (Some(force), None) = (&force_tool, &prefill) {
            match LlamaSampler::grammar(&model, &forced_call_grammar(&tools, force), "root") {
                Ok(g) => chain.push(g),
                Err(e) => eprintln!(
                    "understudy worker: the tool-call grammar failed ({e}); sampling freely"
                ),
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
        let mut sampler = LlamaSampler::chain_simple(chain);
        let prompt_ms = prompt_started.elapsed().as_millis() as u64;
        let gen_started = std::time::Instant::now();
        let mut text = TextOut::new(id, &stop);
        let mut reason = "max_tokens";
        let mut generated = 0u32;
        let mut pos = tokens.len();
        let mut logits_at = batch.n_tokens() - 1;
        while generated < max_tokens {
            if is_cancelled() {
                reason = "cancelled";
                break;
            }
            let t = sampler.sample(&ctx, logits_at);
            // `sample` has accepted it already (a second accept would advance a grammar twice).
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
            let _ = batch.add(t, pos as i32, &[0], true);
            cached.push(t);
            pos += 1;
            logits_at = 0;
            if let Err(e) = ctx.decode(&mut batch) {
                failed = Some(format!("decoding failed: {e}"));
                break;
            }
        }
        if let Some(message) = failed {
            // The cache may hold half a batch: start clean.
            ctx.clear_kv_cache();
            cached.clear();
            internal_error(id, message, tokens.len(), n_ctx);
            continue;
        }
        let stop_sequence = text.finish();
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
    Ok(())
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

/// The prompt: the template with the generation prompt, then the prefill as is. Tools go to
/// a template that takes them (as `tools`, the Hugging Face convention); for one that does not,
/// they are described in the system message in Hermes form, which the answer parser reads.
fn render(
    env: &minijinja::Environment<'_>,
    messages: &[ChatMessage],
    tools: &[ToolSpec],
    template_takes_tools: bool,
    prefill: Option<&str>,
) -> Result<String, minijinja::Error> {
    let mut messages: Vec<ChatMessage> = messages.to_vec();
    if !tools.is_empty() && !template_takes_tools {
        let block = hermes_tools(tools);
        match messages.first_mut() {
            Some(m) if m.role == "system" => m.content = format!("{}\n\n{block}", m.content),
            _ => messages.insert(
                0,
                ChatMessage {
                    role: "system".into(),
                    content: block,
                },
            ),
        }
    }
    let messages: Vec<minijinja::Value> = messages
        .iter()
        .map(|m| {
            minijinja::Value::from_pairs([
                ("role", minijinja::Value::from(m.role.as_str())),
                ("content", minijinja::Value::from(m.content.as_str())),
            ])
        })
        .collect();
    let tools: Option<Vec<serde_json::Value>> = (template_takes_tools && !tools.is_empty())
        .then(|| tools.iter().map(function_json).collect());
    let mut prompt = env.get_template("chat")?.render(minijinja::context! {
        messages => messages,
        tools => minijinja::Value::from(minijinja::value::Serde(&tools)),
        add_generation_prompt => true,
        bos_token => "",
        eos_token => "",
    })?;
    if let Some(p) = prefill {
        prompt.push_str(p);
    }
    Ok(prompt)
}

/// A tool as chat templates and Hermes prompts describe it.
fn function_json(t: &ToolSpec) -> serde_json::Value {
    serde_json::json!({"type": "function", "function": {
        "name": t.name, "description": t.description, "parameters": t.parameters}})
}

/// The tools, and how to call them, in the Hermes form (`<tool_call>` JSON) that Qwen, Hermes
/// and many other instruct models were trained on.
fn hermes_tools(tools: &[ToolSpec]) -> String {
    let mut out = String::from(
        "# Tools\n\nYou may call one or more of these functions to help with the request. \
         Their signatures are inside <tools></tools>:\n<tools>\n",
    );
    for t in tools {
        out.push_str(&function_json(t).to_string());
        out.push('\n');
    }
    out.push_str(
        "</tools>\n\nTo call one, answer with a JSON object holding its name and arguments \
         inside <tool_call></tool_call> tags, one per call:\n<tool_call>\n\
         {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    out
}

/// The grammar for a forced call: the arguments follow the tool's own JSON Schema (llama.cpp's
/// schema-to-grammar, properties and required keys included, nothing else), else any JSON
/// object ([`tool_call_grammar`]) when the schema uses what the converter does not handle.
fn forced_call_grammar(tools: &[ToolSpec], force: &str) -> String {
    let calls: Vec<serde_json::Value> = tools
        .iter()
        .filter(|t| force == "*" || t.name == force)
        .map(|t| {
            serde_json::json!({"type": "object", "additionalProperties": false,
                "required": ["name", "arguments"],
                "properties": {"name": {"const": t.name}, "arguments": t.parameters}})
        })
        .collect();
    if calls.is_empty() {
        return tool_call_grammar(tools, force);
    }
    let schema = serde_json::json!({"oneOf": calls}).to_string();
    match llama_cpp_2::json_schema_to_grammar(&schema) {
        Ok(g) if g.lines().any(|l| l.starts_with("root ::= ")) => {
            let body: String = g
                .lines()
                .map(|l| match l.strip_prefix("root ::= ") {
                    Some(rest) => format!("call ::= {rest}\n"),
                    None => format!("{l}\n"),
                })
                .collect();
            format!("root ::= \"<tool_call>\\n\" call \"\\n</tool_call>\"\n{body}")
        }
        _ => tool_call_grammar(tools, force),
    }
}

/// A GBNF grammar that admits exactly one Hermes tool call to `force` (`*`: any of `tools`)
/// with a JSON object for arguments.
fn tool_call_grammar(tools: &[ToolSpec], force: &str) -> String {
    let quote = |s: &str| {
        let mut q = String::from("\"\\\"");
        for c in s.chars() {
            match c {
                '"' => q.push_str("\\\\\\\""),
                '\\' => q.push_str("\\\\\\\\"),
                c => q.push(c),
            }
        }
        q.push_str("\\\"\"");
        q
    };
    let names: Vec<String> = tools
        .iter()
        .filter(|t| force == "*" || t.name == force)
        .map(|t| quote(&t.name))
        .collect();
    let names = if names.is_empty() {
        quote(force)
    } else {
        names.join(" | ")
    };
    format!(
        r#"root ::= "<tool_call>\n{{\"name\": " name ", \"arguments\": " object "}}\n</tool_call>"
name ::= {names}
value ::= object | array | string | number | "true" | "false" | "null"
object ::= "{{" ws ( string ":" ws value ( "," ws string ":" ws value )* )? "}}" ws
array ::= "[" ws ( value ( "," ws value )* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{{4}} ) )* "\"" ws
number ::= "-"? ( [0-9] | [1-9] [0-9]{{0,15}} ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]{{1,3}} )? ws
ws ::= | " " | "\n" [ \t]{{0,20}}
"#
    )
}

/// Turns token pieces into text lines: whole UTF-8 characters only, and nothing that may be
/// the start of a stop sequence until it is known not to be one.
struct TextOut<'a> {
    id: u64,
    stop: &'a [String],
    bytes: Vec<u8>,
    pending: String,
    hit: Option<String>,
}

impl<'a> TextOut<'a> {
    fn new(id: u64, stop: &'a [String]) -> TextOut<'a> {
        TextOut {
            id,
            stop,
            bytes: Vec::new(),
            pending: String::new(),
            hit: None,
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
        emit(&Line::Text { id: self.id, text });
    }

    /// Sends what is left; the stop sequence that ended the answer, if one did.
    fn finish(mut self) -> Option<String> {
        if self.hit.is_none() {
            let rest = String::from_utf8_lossy(&self.bytes).into_owned();
            self.pending.push_str(&rest);
            self.flush(self.pending.len());
        }
        self.hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(template: &str) -> minijinja::Environment<'static> {
        let mut env = minijinja::Environment::new();
        env.add_template_owned("chat", template.to_owned()).unwrap();
        env
    }

    fn read_tool() -> ToolSpec {
        ToolSpec {
            name: "Read".into(),
            description: "Reads a file.".into(),
            parameters: serde_json::json!({"type": "object", "properties": {"file_path": {"type": "string"}}}),
        }
    }

    fn user(text: &str) -> ChatMessage {
        ChatMessage {
            role: "user".into(),
            content: text.into(),
        }
    }

    #[test]
    fn a_template_without_tools_gets_them_in_the_system_message_in_hermes_form() {
        let p = render(&env(CHATML), &[user("hi")], &[read_tool()], false, None).unwrap();
        assert!(
            p.starts_with("<|im_start|>system\n# Tools"),
            "a system message was added: {p}"
        );
        assert!(
            p.contains(r#"{"type":"function","function":{"name":"Read","#),
            "{p}"
        );
        assert!(p.contains("<tool_call>"), "{p}");
        assert!(
            p.ends_with("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"),
            "{p}"
        );
        // An existing system message is extended, not duplicated.
        let sys = ChatMessage {
            role: "system".into(),
            content: "Be brief.".into(),
        };
        let p = render(
            &env(CHATML),
            &[sys, user("hi")],
            &[read_tool()],
            false,
            None,
        )
        .unwrap();
        assert!(
            p.starts_with("<|im_start|>system\nBe brief.\n\n# Tools"),
            "{p}"
        );
        assert_eq!(p.matches("<|im_start|>system").count(), 1, "{p}");
        // No tools, no tool prompt.
        let p = render(&env(CHATML), &[user("hi")], &[], false, None).unwrap();
        assert!(!p.contains("Tools"), "{p}");
    }

    #[test]
    fn a_template_that_takes_tools_renders_them_itself() {
        let t = "{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }}={{ t.function.parameters | tojson }};{% endfor %}{% endif %}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}";
        let p = render(&env(t), &[user("hi")], &[read_tool()], true, Some("Sure")).unwrap();
        assert_eq!(
            p,
            r#"TOOLS:Read={"properties": {"file_path": {"type": "string"}}, "type": "object"};[user]hiSure"#
        );
        assert!(!p.contains("# Tools"));
    }

    #[test]
    fn a_forced_call_grammar_follows_the_tools_schema() {
        let g = forced_call_grammar(&[read_tool()], "Read");
        assert!(
            g.starts_with("root ::= \"<tool_call>\\n\" call \"\\n</tool_call>\"\n"),
            "{g}"
        );
        assert!(g.contains("call ::= "), "{g}");
        assert!(
            g.contains("file_path"),
            "the argument names come from the schema: {g}"
        );
        assert_eq!(g.matches("root ::=").count(), 1, "{g}");
    }

    #[test]
    fn the_forced_call_grammar_names_the_allowed_tools() {
        let mut other = read_tool();
        other.name = "say \"hi\"".into();
        let g = tool_call_grammar(&[read_tool(), other.clone()], "Read");
        assert!(g.contains(r#"name ::= "\"Read\"""#), "{g}");
        let g = tool_call_grammar(&[read_tool(), other], "*");
        assert!(
            g.contains(r#"name ::= "\"Read\"" | "\"say \\\"hi\\\"\"""#),
            "{g}"
        );
    }
}
