//! The embedded engine against llama.cpp's own `llama-bench`, same model file, same threads,
//! one run: prompt processing and generation tokens/s, time to first token cold, and warm
//! (a second request sharing a ~4k-token prefix, which the worker reuses from its KV cache).
//!
//! `cargo bench --bench local` (env: BENCH_MODEL the GGUF, default models/SmolLM2;
//! BENCH_THREADS, default the physical cores; BENCH_REPS, default 3; LLAMA_BENCH the
//! `llama-bench` binary from scripts/build-llama-bench, skipped when unset;
//! BENCH_CPU_VARIANTS=zen4,haswell,… measures each CPU variant instead). Our side talks to
//! `understudy worker` (the release binary) over its pipes, as the gateway does, so the
//! numbers are the engine's: the worker's own prompt and generation timings, and TTFT measured
//! here from the request line to the first text line.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: std::io::Lines<BufReader<ChildStdout>>,
    next: u64,
}

/// One answer, as timed.
struct Answer {
    prompt_tokens: u64,
    cached: u64,
    prompt_ms: f64,
    completion_tokens: u64,
    gen_ms: f64,
    ttft: Duration,
}

impl Worker {
    /// `understudy worker` on `model`, in CPU `variant` (`None`: the best this CPU runs).
    fn start(model: &str, threads: u32, variant: Option<&str>) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_understudy"))
            .args(["worker", "--model", model, "--context", "8192"])
            .args(["--threads", &threads.to_string()])
            .args(variant.map(|v| ["--cpu-variant", v]).into_iter().flatten())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the understudy binary runs");
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for l in lines.by_ref() {
            let v: Value = serde_json::from_str(&l.unwrap()).unwrap();
            if v["event"] == "ready" {
                eprintln!("worker ready: {v}");
                break;
            }
        }
        Worker {
            child,
            stdin,
            lines,
            next: 1,
        }
    }

    fn ask(&mut self, messages: Value, prefill: Option<&str>, max_tokens: u32) -> Answer {
        let id = self.next;
        self.next += 1;
        let cmd = json!({"op": "generate", "id": id, "messages": messages, "prefill": prefill,
            "max_tokens": max_tokens, "temperature": 0.0});
        let t0 = Instant::now();
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let mut ttft = None;
        for l in self.lines.by_ref() {
            let v: Value = serde_json::from_str(&l.unwrap()).unwrap();
            match v["event"].as_str() {
                Some("text") if ttft.is_none() => ttft = Some(t0.elapsed()),
                Some("done") => {
                    return Answer {
                        prompt_tokens: v["prompt_tokens"].as_u64().unwrap(),
                        cached: v["cached_tokens"].as_u64().unwrap(),
                        prompt_ms: v["prompt_ms"].as_f64().unwrap(),
                        completion_tokens: v["completion_tokens"].as_u64().unwrap(),
                        gen_ms: v["gen_ms"].as_f64().unwrap(),
                        ttft: ttft.unwrap_or_else(|| t0.elapsed()),
                    }
                }
                Some("error") => panic!("the worker failed: {v}"),
                _ => {}
            }
        }
        panic!("the worker exited");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Text of roughly `words` words that never repeats exactly (so no cache reuse across calls
/// unless asked for), tagged with `tag`.
fn filler(tag: &str, words: usize) -> String {
    let vocab = [
        "river", "stone", "lantern", "orbit", "copper", "meadow", "signal", "harbor", "pencil",
        "glacier", "violet", "engine", "thunder", "saddle", "marble", "canyon",
    ];
    let mut out = format!("[{tag}] ");
    for i in 0..words {
        out.push_str(vocab[(i * 7 + i / 16) % vocab.len()]);
        out.push(if i % 12 == 11 { '.' } else { ' ' });
    }
    out
}

/// Prompt processing (~512 fresh tokens, one out) and generation (128 tokens, greedy) speeds,
/// medians of `reps`, and the prompt's token count.
fn throughput(w: &mut Worker, reps: usize) -> (f64, u64, f64) {
    // Prompt processing: ~512 fresh tokens, one token out.
    let mut pp = Vec::new();
    let mut pp_tokens = 0;
    for r in 0..reps {
        let a = w.ask(
            json!([{"role": "user", "content": filler(&format!("pp{r}"), 400)}]),
            None,
            1,
        );
        // The chat template's opening is shared with the previous prompt and reused.
        pp_tokens = a.prompt_tokens - a.cached;
        pp.push(pp_tokens as f64 * 1000.0 / a.prompt_ms.max(1.0));
    }
    // Generation: 128 tokens, greedy, an answer that does not end early.
    let mut tg = Vec::new();
    for r in 0..reps {
        let a = w.ask(
            json!([{"role": "user", "content": format!("Count from 1 to 1000, separated by commas. ({r})")}]),
            Some("1, 2, 3, 4, 5,"),
            128,
        );
        assert!(
            a.completion_tokens >= 100,
            "ended early: {}",
            a.completion_tokens
        );
        tg.push(a.completion_tokens as f64 * 1000.0 / a.gen_ms.max(1.0));
    }
    (median(pp), pp_tokens, median(tg))
}

fn main() {
    let model = std::env::var("BENCH_MODEL").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
        )
        .to_owned()
    });
    let threads: u32 = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(understudy::config::physical_cores);
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    eprintln!("model {model}, {threads} threads, {reps} repetitions");

    if let Ok(variants) = std::env::var("BENCH_CPU_VARIANTS") {
        cpu_variants(&model, threads, reps, &variants);
        return;
    }
    let mut w = Worker::start(&model, threads, None);
    let (pp, pp_tokens, tg) = throughput(&mut w, reps);
    // TTFT: a ~4k-token conversation, cold; then the same prefix with a new question, warm.
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut prefix_tokens = 0;
    let mut reused = 0;
    for r in 0..reps {
        let system = filler(&format!("ctx{r}"), 3000);
        let ask = |q: &str| {
            json!([{"role": "system", "content": system},
                   {"role": "user", "content": q}])
        };
        let a = w.ask(ask("Summarize the notes above in one line."), None, 8);
        assert!(a.cached < 64, "cold: only the template's opening reused");
        prefix_tokens = a.prompt_tokens;
        cold.push(a.ttft.as_secs_f64() * 1000.0);
        let b = w.ask(ask("Which word comes up most often above?"), None, 8);
        reused = b.cached;
        warm.push(b.ttft.as_secs_f64() * 1000.0);
    }
    let (cold, warm) = (median(cold), median(warm));
    println!("| engine | prompt tokens/s (pp{pp_tokens}) | generation tokens/s (tg128) | TTFT cold, {prefix_tokens}-token prompt | TTFT warm, {reused} reused |");
    println!("|---|---|---|---|---|");
    println!(
        "| understudy worker | {pp:.0} | {tg:.1} | {cold:.0} ms | {warm:.0} ms ({:.1}x faster) |",
        cold / warm
    );
    drop(w);

    let Ok(bench) = std::env::var("LLAMA_BENCH") else {
        eprintln!("LLAMA_BENCH unset: run scripts/build-llama-bench for the side-by-side numbers");
        return;
    };
    let out = Command::new(&bench)
        .args(["-m", &model, "-t", &threads.to_string()])
        .args([
            "-p",
            &pp_tokens.to_string(),
            "-n",
            "128",
            "-r",
            &reps.to_string(),
        ])
        .args(["-ngl", "0", "-o", "json"])
        .output()
        .expect("llama-bench runs");
    assert!(
        out.status.success(),
        "llama-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("llama-bench JSON");
    let speed = |prompt: bool| {
        rows.iter()
            .find(|r| (r["n_prompt"].as_u64().unwrap_or(0) > 0) == prompt)
            .and_then(|r| r["avg_ts"].as_f64())
            .expect("a row")
    };
    let (lpp, ltg) = (speed(true), speed(false));
    println!("| llama.cpp llama-bench | {lpp:.0} | {ltg:.1} | | |");
    println!(
        "| ratio (understudy / llama.cpp) | {:.1} % | {:.1} % | | |",
        pp / lpp * 100.0,
        tg / ltg * 100.0
    );
}

/// `BENCH_CPU_VARIANTS=zen4,icelake,haswell,x64`: prompt and generation speed in each CPU
/// variant, the first as the reference: what a compatible mode costs.
fn cpu_variants(model: &str, threads: u32, reps: usize, variants: &str) {
    println!("| CPU variant | prompt tokens/s | generation tokens/s | prompt vs first | generation vs first |");
    println!("|---|---|---|---|---|");
    let mut first = None;
    for v in variants.split(',') {
        let mut w = Worker::start(model, threads, Some(v));
        let (pp, pp_tokens, tg) = throughput(&mut w, reps);
        let (fpp, ftg) = *first.get_or_insert((pp, tg));
        println!(
            "| {v} | {pp:.0} (pp{pp_tokens}) | {tg:.1} | {:.0} % | {:.0} % |",
            pp / fpp * 100.0,
            tg / ftg * 100.0
        );
    }
}
