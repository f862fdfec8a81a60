//! `understudy-load`: the benchmark harness's load generator. Unlike wrk it reads every answer:
//! for a stream, the time to its first token and to its end, and whether what arrived was the
//! whole answer, an explicit error, or a truncated answer dressed up as a complete one.
//!
//! Open loop (`--rate`): request i is sent at start + i/rate whatever happened before, each its
//! own task, so a slow gateway cannot slow the load down (no coordinated omission); its times
//! count from its actual send. Closed loop (`--conns`): that many workers back to back, for the
//! most requests a second.
//!
//! Prints one JSON object (the summary); `--samples FILE` also writes one CSV row per request.

mod answer;

use answer::{Api, Outcome, Reader};
use bytes::Bytes;
use clap::Parser;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Parser, Debug, Clone)]
#[command(version, about)]
struct Args {
    /// The endpoint: `…/v1/chat/completions` or `…/v1/messages`.
    #[arg(long)]
    url: String,
    /// The request and answer shape.
    #[arg(long, value_enum, default_value = "openai")]
    api: Api,
    /// The model field.
    #[arg(long, default_value = "bench")]
    model: String,
    /// Ask for a stream.
    #[arg(long)]
    stream: bool,
    /// Open loop at this many requests a second.
    #[arg(long, conflicts_with = "conns")]
    rate: Option<f64>,
    /// Closed loop with this many concurrent connections.
    #[arg(long)]
    conns: Option<usize>,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Give up on a request after this many seconds (counted as a timeout).
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// The whole answer's text; an answer that ends without an error but differs is counted
    /// as truncated-as-complete. Without it, a stop reason is taken as complete.
    #[arg(long)]
    expect: Option<String>,
    /// An extra request header, `name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Write one CSV row per request here: start_ms,ttft_ms,total_ms,outcome.
    #[arg(long)]
    samples: Option<std::path::PathBuf>,
}

/// One request's fate.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Milliseconds from the run's start to the send.
    start_ms: f64,
    /// To the first content token (streams), or to the whole body.
    ttft_ms: Option<f64>,
    total_ms: f64,
    outcome: Outcome,
}

#[derive(Serialize)]
struct Quantiles {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

impl Quantiles {
    fn of(mut v: Vec<f64>) -> Option<Quantiles> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        Some(Quantiles {
            p50: q(0.5),
            p95: q(0.95),
            p99: q(0.99),
            max: v[v.len() - 1],
        })
    }
}

#[derive(Serialize)]
struct Summary {
    sent: usize,
    complete: usize,
    errors: usize,
    truncated_as_complete: usize,
    timeouts: usize,
    /// Requests sent a second (open loop: the rate held).
    sent_per_sec: f64,
    /// Complete answers a second.
    complete_per_sec: f64,
    /// Send to the end of a complete answer.
    latency_ms: Option<Quantiles>,
    /// Send to the first token of a complete stream.
    ttft_ms: Option<Quantiles>,
    /// The status and first bytes of the first error seen, to tell a misconfigured run.
    first_error: Option<String>,
}

fn body(args: &Args) -> String {
    let mut b = serde_json::json!({
        "model": args.model,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Say the benchmark words."}],
    });
    if args.stream {
        b["stream"] = true.into();
    }
    b.to_string()
}

/// The headers every request carries: the dialect's, then `--header`s, which replace a default
/// of the same name (a gateway's own key, say). Built once, not per request.
fn headers(args: &Args) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::new();
    let mut set = |n: &str, v: &str| -> Result<(), String> {
        let name = HeaderName::from_bytes(n.trim().as_bytes())
            .map_err(|_| format!("--header {n:?}: not a header name"))?;
        let value = HeaderValue::from_str(v.trim())
            .map_err(|_| format!("--header {n}: value {v:?} is not a header value"))?;
        h.insert(name, value);
        Ok(())
    };
    set("content-type", "application/json")?;
    match args.api {
        Api::Anthropic => {
            set("x-api-key", "sk-bench")?;
            set("anthropic-version", "2023-06-01")?;
        }
        Api::Openai => set("authorization", "Bearer sk-bench")?,
    }
    for extra in &args.headers {
        let (n, v) = extra
            .split_once(':')
            .ok_or_else(|| format!("--header {extra:?}: expected `name: value`"))?;
        set(n, v)?;
    }
    Ok(h)
}

async fn one(
    client: &reqwest::Client,
    args: &Args,
    (headers, body): &(HeaderMap, Bytes),
    t0: Instant,
    first_error: &std::sync::Mutex<Option<String>>,
) -> Sample {
    let sent = Instant::now();
    let start_ms = ms(sent - t0);
    let req = client
        .post(&args.url)
        .headers(headers.clone())
        .body(body.clone());
    let run = async {
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return (None, Outcome::Error, Some(e.to_string())),
        };
        let status = resp.status();
        let mut reader = Reader::new(args.api, args.stream, args.expect.clone());
        let mut ttft = None;
        let mut stream = resp.bytes_stream();
        let mut transport = None;
        while let Some(piece) = stream.next().await {
            match piece {
                Ok(bytes) => {
                    if reader.feed(&bytes) && ttft.is_none() {
                        ttft = Some(ms(sent.elapsed()));
                    }
                }
                Err(e) => {
                    transport = Some(e.to_string());
                    break;
                }
            }
        }
        let outcome = reader.finish(status.as_u16(), transport.is_some());
        let why = (outcome == Outcome::Error).then(|| {
            transport.unwrap_or_else(|| format!("HTTP {status}: {}", reader.head_of_body()))
        });
        (ttft, outcome, why)
    };
    let (ttft, outcome, why) =
        match tokio::time::timeout(Duration::from_secs_f64(args.timeout), run).await {
            Ok(r) => r,
            Err(_) => (None, Outcome::Timeout, None),
        };
    if let Some(why) = why {
        first_error.lock().expect("lock").get_or_insert(why);
    }
    let total_ms = ms(sent.elapsed());
    Sample {
        start_ms,
        ttft_ms: if args.stream { ttft } else { Some(total_ms) },
        total_ms,
        outcome,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run(args: Args, request: (HeaderMap, Bytes)) -> (Vec<Sample>, f64, Option<String>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let args = std::sync::Arc::new(args);
    let body = std::sync::Arc::new(request);
    let first_error = std::sync::Arc::new(std::sync::Mutex::new(None));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    if let Some(rate) = args.rate {
        let n = (rate * args.secs).round() as usize;
        let start = tokio::time::Instant::now();
        for i in 0..n {
            tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
            let (c, a, b, e) = (
                client.clone(),
                args.clone(),
                body.clone(),
                first_error.clone(),
            );
            tasks.push(tokio::spawn(
                async move { vec![one(&c, &a, &b, t0, &e).await] },
            ));
        }
    } else {
        let conns = args.conns.unwrap_or(32);
        let until = Instant::now() + Duration::from_secs_f64(args.secs);
        for _ in 0..conns {
            let (c, a, b, e) = (
                client.clone(),
                args.clone(),
                body.clone(),
                first_error.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                while Instant::now() < until {
                    out.push(one(&c, &a, &b, t0, &e).await);
                }
                out
            }));
        }
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await.expect("request task"));
    }
    let secs = args.secs;
    let first = first_error.lock().expect("lock").take();
    (samples, secs, first)
}

fn summarize(samples: &[Sample], secs: f64, first_error: Option<String>) -> Summary {
    let count = |o| samples.iter().filter(|s| s.outcome == o).count();
    let complete: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.outcome == Outcome::Complete)
        .collect();
    Summary {
        sent: samples.len(),
        complete: complete.len(),
        errors: count(Outcome::Error),
        truncated_as_complete: count(Outcome::Truncated),
        timeouts: count(Outcome::Timeout),
        sent_per_sec: samples.len() as f64 / secs,
        complete_per_sec: complete.len() as f64 / secs,
        latency_ms: Quantiles::of(complete.iter().map(|s| s.total_ms).collect()),
        ttft_ms: Quantiles::of(complete.iter().filter_map(|s| s.ttft_ms).collect()),
        first_error,
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.rate.is_some_and(|r| r <= 0.0 || !r.is_finite()) {
        eprintln!("understudy-load: --rate must be a positive number of requests a second");
        return std::process::ExitCode::from(2);
    }
    let request = match headers(&args) {
        Ok(h) => (h, Bytes::from(body(&args))),
        Err(e) => {
            eprintln!("understudy-load: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let samples_path = args.samples.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (samples, secs, first_error) = rt.block_on(run(args, request));
    if let Some(path) = samples_path {
        let write = || -> std::io::Result<()> {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
            writeln!(f, "start_ms,ttft_ms,total_ms,outcome")?;
            for s in &samples {
                let ttft = s.ttft_ms.map(|t| format!("{t:.4}")).unwrap_or_default();
                writeln!(
                    f,
                    "{:.3},{ttft},{:.4},{}",
                    s.start_ms,
                    s.total_ms,
                    s.outcome.name()
                )?;
            }
            f.flush()
        };
        if let Err(e) = write() {
            eprintln!("understudy-load: cannot write {}: {e}", path.display());
            return std::process::ExitCode::from(1);
        }
    }
    let summary = summarize(&samples, secs, first_error);
    println!(
        "{}",
        serde_json::to_string(&summary).expect("summary serializes")
    );
    std::process::ExitCode::SUCCESS
}
