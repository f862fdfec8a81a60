//! Failover cost, client-side: how much later the first byte arrives when the primary fails
//! (before content: a 529; after content: a close mid-stream, continued) than when the
//! fallback is asked directly; the gap the client sees at the splice for each way of
//! continuing (a fallback that takes a prefill, one asked by instruction that restates three
//! words, the backend that broke going on itself) and what an instruction costs in request
//! size; and how many attempts a dead primary still gets once its breaker opens.
//!
//! `cargo bench --features testing --bench failover` (env: BENCH_N samples per case,
//! BENCH_UPSTREAM_MS the fallback's latency before headers). The gateway is the release binary
//! as a subprocess; the mock clouds run in this process.

mod common;

use common::{median, pct, spawn};
use serde_json::json;
use std::io::Write;
use std::time::{Duration, Instant};
use understudy::testing::{anthropic, End, MockCloud, Reply};

fn config(primary: &str, fallback: &str, breaker: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    write!(
        f,
        r#"
{breaker}

[providers.primary]
kind = "anthropic"
base_url = "{primary}"
api_key_env = "UNDERSTUDY_BENCH_KEY"
continuation = "off"

# The same upstream, going on from its own broken answers.
[providers.itself]
kind = "anthropic"
base_url = "{primary}"
api_key_env = "UNDERSTUDY_BENCH_KEY"

[providers.fallback]
kind = "anthropic"
base_url = "{fallback}"
api_key_env = "UNDERSTUDY_BENCH_KEY"

[[routes]]
model = "fb"
backends = ["fallback/claude-sonnet-4-5"]

[[routes]]
model = "chain"
backends = ["primary/claude-opus-4-5", "fallback/claude-sonnet-4-5"]

[[routes]]
model = "chain-instruct"
backends = ["primary/claude-opus-4-5", "fallback/claude-opus-4-6"]

[[routes]]
model = "same"
backends = ["itself/claude-opus-4-5"]
"#
    )
    .unwrap();
    f
}

/// Requests the primary got (its health probes are GETs, not attempts).
fn posts(m: &MockCloud) -> usize {
    m.requests().iter().filter(|r| r.method == "POST").count()
}

fn body(model: &str) -> serde_json::Value {
    json!({"model": model, "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "hi"}]})
}

/// Milliseconds from sending to the first body byte; and from the first text delta to the next
/// (the splice gap, when the first attempt breaks after its first delta).
async fn timed(client: &reqwest::Client, url: &str, model: &str) -> (f64, f64) {
    let t0 = Instant::now();
    let mut resp = client
        .post(url)
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .json(&body(model))
        .send()
        .await
        .unwrap();
    let mut first = None;
    let mut seen = String::new();
    let mut first_delta = None;
    let mut gap = f64::NAN;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        let now = t0.elapsed().as_secs_f64() * 1000.0;
        if std::env::var_os("BENCH_TRACE").is_some() {
            eprintln!(
                "{now:.3} {}",
                String::from_utf8_lossy(&chunk)
                    .replace('\n', " ")
                    .chars()
                    .skip(40)
                    .take(110)
                    .collect::<String>()
            );
        }
        first.get_or_insert(now);
        seen.push_str(&String::from_utf8_lossy(&chunk));
        let deltas = seen.matches("text_delta").count();
        if deltas >= 1 && first_delta.is_none() {
            first_delta = Some(now);
        } else if deltas >= 2 && gap.is_nan() {
            gap = now - first_delta.unwrap();
        }
    }
    assert!(seen.contains("message_stop"), "incomplete answer: {seen}");
    (first.unwrap(), gap)
}

fn main() {
    let n: usize = common::env_or("BENCH_N", 300);
    let upstream_ms: u64 = common::env_or("BENCH_UPSTREAM_MS", 2);
    std::env::set_var("UNDERSTUDY_BENCH_KEY", "sk-bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let primary = MockCloud::start().await;
        let fallback = MockCloud::start().await;
        // Both answer "a" then "b" after `upstream_ms`; asked by instruction, a model restates
        // three words first (here: all of "a").
        let profile = understudy::testing::Profile {
            delay: Duration::from_millis(upstream_ms),
            answer: vec!["a".into(), "b".into()],
            restate: understudy::testing::Restate { words: 3, newline: false },
            ..Default::default()
        };
        fallback.set_profile(profile.clone());
        primary.set_profile(profile);
        // A breaker that never opens: every sample pays for the failed attempt.
        let cfg = config(&primary.url(), &fallback.url(), "[breaker]\nconsecutive_failures = 1000000\nmin_requests = 1000000");
        let (mut gw, gw_url) = spawn("1", &["serve", "--config", cfg.path().to_str().unwrap(), "--listen", "127.0.0.1:0"], "understudy listening on ");
        let client = reqwest::Client::builder().tcp_nodelay(true).build().unwrap();
        let direct = format!("{}/v1/messages", fallback.url());
        let through = format!("{gw_url}/v1/messages");
        let one_delta = anthropic::text_stream("claude-opus-4-5", &["a", "b"], "end_turn");
        let (mut d, mut g, mut f529, mut gap_direct, mut gap_splice) = (vec![], vec![], vec![], vec![], vec![]);
        let (mut gap_instruct, mut gap_same) = (vec![], vec![]);
        for i in 0..n + 20 {
            let (dt, dgap) = timed(&client, &direct, "claude-sonnet-4-5").await;
            let (gt, _) = timed(&client, &through, "fb").await;
            primary.push(Reply::json(529, &anthropic::error("overloaded_error", "Overloaded")));
            let (ft, _) = timed(&client, &through, "chain").await;
            // message_start, block start, ping, "a", then the connection closes (a FIN keeps
            // the bytes before it; a reset may drop them unread): continued on the fallback.
            primary.push(Reply::sse(one_delta[..4].to_vec()).end(End::Close));
            let (_, sgap) = timed(&client, &through, "chain").await;
            primary.push(Reply::sse(one_delta[..4].to_vec()).end(End::Close));
            let (_, igap) = timed(&client, &through, "chain-instruct").await;
            // The backend that broke is asked again only within its retry budget (a fifth of
            // its requests over 10 s): nine whole answers for each break keep well inside it.
            for _ in 0..9 {
                timed(&client, &through, "same").await;
            }
            primary.push(Reply::sse(one_delta[..4].to_vec()).end(End::Close));
            let (_, same_gap) = timed(&client, &through, "same").await;
            if i >= 20 {
                d.push(dt);
                g.push(gt);
                f529.push(ft);
                gap_direct.push(dgap);
                gap_splice.push(sgap);
                gap_instruct.push(igap);
                gap_same.push(same_gap);
            }
        }
        // What asking by instruction costs over a prefill: the continuation requests as sent.
        let sizes = |model: &str| {
            fallback
                .requests()
                .iter()
                .rev()
                .find(|r| r.method == "POST" && r.body.contains(&format!("\"model\":\"{model}\"")) && r.body.contains("\"assistant\""))
                .map(|r| r.body.len())
                .unwrap_or(0)
        };
        let (prefill_bytes, instruct_bytes) = (sizes("claude-sonnet-4-5"), sizes("claude-opus-4-6"));
        let instruction = understudy::relay::continuation::INSTRUCTION;
        if std::env::var_os("BENCH_TRACE").is_some() {
            eprintln!("splice gaps: {gap_splice:?}");
        }
        for v in [&mut d, &mut g, &mut f529, &mut gap_direct, &mut gap_splice, &mut gap_instruct, &mut gap_same] {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        }
        let row = |name: &str, v: &[f64]| println!("| {name} | {:.3} | {:.3} | {:.3} |", pct(v, 0.5), pct(v, 0.95), pct(v, 0.99));
        println!("\n### Failover cost ({n} samples per case, interleaved; fallback answers after {upstream_ms} ms)\n");
        println!("| time to first byte, ms | p50 | p95 | p99 |\n|---|---|---|---|");
        row("fallback asked directly", &d);
        row("through Understudy, fallback only", &g);
        row("through Understudy, primary 529 → fallback", &f529);
        println!("\n| gap at the splice, ms | p50 | p95 | p99 |\n|---|---|---|---|");
        row("direct stream, delta to delta (no fault)", &gap_direct);
        row("primary closes after its first delta → fallback goes on from a prefill", &gap_splice);
        row("… → fallback asked by instruction, restates, the seam cuts it", &gap_instruct);
        row("… → the same backend goes on from a prefill", &gap_same);
        println!(
            "\nAdded by a 529 before content (median, beyond the fallback through Understudy): {:.3} ms; beyond the fallback asked directly: {:.3} ms.",
            median(f529.clone()) - median(g.clone()),
            median(f529.clone()) - median(d.clone())
        );
        println!(
            "A break after content costs the client a gap of {:.3} ms at the splice (median), of which the fallback's own time to first byte is {:.3} ms.",
            median(gap_splice.clone()),
            median(d.clone())
        );
        println!(
            "An instruction makes the continuation request {} bytes larger than a prefill ({prefill_bytes} → {instruct_bytes}); the instruction itself is {} characters, about {} tokens at 4 characters a token, paid once per continuation on input, plus whatever the model restates on output (3 words here).",
            instruct_bytes as i64 - prefill_bytes as i64,
            instruction.len(),
            instruction.len().div_ceil(4)
        );
        let _ = gw.kill();

        // Breaker: a primary that answers 529 to everything, default breaker settings.
        let primary = MockCloud::start().await;
        for _ in 0..10_000 {
            primary.push(Reply::json(529, &anthropic::error("overloaded_error", "Overloaded")));
        }
        let cfg = config(&primary.url(), &fallback.url(), "");
        let (mut gw, gw_url) = spawn("1", &["serve", "--config", cfg.path().to_str().unwrap(), "--listen", "127.0.0.1:0"], "understudy listening on ");
        let through = format!("{gw_url}/v1/messages");
        let mut opened_after = None;
        let t0 = Instant::now();
        for i in 1..=1000 {
            timed(&client, &through, "chain").await;
            if opened_after.is_none() && posts(&primary) < i {
                opened_after = Some(i - 1);
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let attempts = posts(&primary);
        let opened = opened_after.unwrap_or(attempts);
        println!(
            "\nBreaker: 1000 sequential requests in {secs:.1} s against an always-529 primary, all answered by the fallback: the primary got {attempts} attempts ({opened} before its breaker opened, {} half-open trials after); wasted attempts per request after opening: {:.4}.",
            attempts - opened,
            (attempts - opened) as f64 / (1000 - opened) as f64
        );
        let _ = gw.kill();
    });
}
