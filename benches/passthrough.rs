//! Passthrough overhead: the same requests straight to the mock cloud and through the gateway,
//! measured client-side, in interleaved rounds of one run.
//!
//! `cargo bench --features testing --bench passthrough` (env: BENCH_RATE, BENCH_SECS,
//! BENCH_ROUNDS, BENCH_UPSTREAM_MS, BENCH_PIN=0 to leave scheduling to the OS,
//! BENCH_ROUTE=translate for the translated path, BENCH_STREAM_WHOLE=0 to pass the non-streaming
//! request through as it is instead of asking the upstream for a stream; BENCH_WHOLE=compare
//! for both ways of answering a non-streaming request side by side, with BENCH_CONNS,
//! BENCH_TOKENS and BENCH_TPS). The mock and the gateway are real subprocesses (the release
//! binary); where `taskset` exists the gateway is pinned to CPU 1, the mock and the load
//! generator to CPU 0.

use std::io::Write;
use std::time::{Duration, Instant};

mod common;
use common::{env_or, median, pct, rss_kib, spawn};

const BODY: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hello"}]}"#;

async fn one(client: &reqwest::Client, url: &str) -> bool {
    match client
        .post(url)
        .header("x-api-key", "bench")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
    {
        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
        Err(_) => false,
    }
}

/// Open loop: request i is sent at start + i/rate whatever happened before (each request is
/// its own task, so a slow answer never delays the next send: no coordinated omission). Its
/// latency counts from the actual send, which keeps the generator's own timer wake-up lag (up
/// to 1 ms on tokio's timer wheel) out of the numbers.
async fn open_loop(client: &reqwest::Client, url: &str, rate: f64, secs: f64) -> (Vec<f64>, usize) {
    let n = (rate * secs) as usize;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let (client, url) = (client.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let ok = one(&client, &url).await;
            (sent.elapsed().as_secs_f64() * 1000.0, ok)
        }));
    }
    let mut lat = Vec::with_capacity(n);
    let mut failed = 0;
    for t in tasks {
        let (ms, ok) = t.await.unwrap();
        if ok {
            lat.push(ms);
        } else {
            failed += 1;
        }
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (lat, failed)
}

/// Closed loop: `conns` workers back to back for `secs`; requests per second.
async fn closed_loop(client: &reqwest::Client, url: &str, conns: usize, secs: f64) -> f64 {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, url) = (client.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                if one(&client, &url).await {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / secs
}

/// A gateway config passing Anthropic requests through to the mock, with non-streaming
/// requests asked as a stream and rebuilt (`whole`) or passed through as they are.
fn passthrough_config(mock_url: &str, whole: bool) -> tempfile::NamedTempFile {
    let mut cfg = tempfile::NamedTempFile::new().unwrap();
    write!(
        cfg,
        "[providers.anthropic]\nkind = \"anthropic\"\nbase_url = \"{mock_url}\"\npassthrough_auth = \"{mock_url}\"\n\
         stream_whole_answers = {whole}\n\
         [[routes]]\nmodel = \"claude-*\"\nbackends = [\"anthropic\"]\n"
    )
    .unwrap();
    cfg
}

/// The gateway on `cfg`, pinned to CPU 1, and its URL.
fn serve(cfg: &tempfile::NamedTempFile) -> (std::process::Child, String) {
    spawn(
        "1",
        &[
            "serve",
            "--config",
            cfg.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        "understudy listening on ",
    )
}

/// CPU time (user + system) a process has used, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

/// `BENCH_WHOLE=compare`: what asking for a stream and rebuilding the whole answer costs
/// against passing the non-streaming answer through, in one run: two gateways on the same
/// mock (`stream_whole_answers` true and false), closed-loop rounds interleaved with the mock
/// asked directly. The mock answers `BENCH_TOKENS` tokens paced at `BENCH_TPS` a second
/// (0: at once, which makes the gateway's CPU the bottleneck); each gateway's CPU time per
/// answer comes from /proc.
fn compare_whole(secs: f64, rounds: usize, upstream_ms: u64) {
    let conns: usize = env_or("BENCH_CONNS", 32);
    let tokens: usize = env_or("BENCH_TOKENS", 0);
    let tps: f64 = env_or("BENCH_TPS", 0.0);
    let (mut mock, mock_url) = spawn(
        "0",
        &[
            "mock",
            "--no-record",
            "--delay-ms",
            &upstream_ms.to_string(),
            "--tokens",
            &tokens.to_string(),
            "--tokens-per-sec",
            &tps.to_string(),
        ],
        "mock cloud listening on ",
    );
    let gateway = |whole: bool| {
        let cfg = passthrough_config(&mock_url, whole);
        let (child, url) = serve(&cfg);
        (child, format!("{url}/v1/messages"), cfg)
    };
    let (mut streamed, streamed_url, _c1) = gateway(true);
    let (mut plain, plain_url, _c2) = gateway(false);
    std::thread::sleep(Duration::from_secs(1));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let direct = format!("{mock_url}/v1/messages");
    let (mut ratio, mut cpu_s, mut cpu_p) = (Vec::new(), Vec::new(), Vec::new());
    let (mut rate_d, mut rate_s, mut rate_p) = (Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        for url in [&direct, &streamed_url, &plain_url] {
            closed_loop(&client, url, conns, 1.0).await;
        }
        for r in 0..rounds {
            let d = closed_loop(&client, &direct, conns, secs).await;
            let c0 = cpu_secs(streamed.id());
            let s = closed_loop(&client, &streamed_url, conns, secs).await;
            let c1 = cpu_secs(plain.id());
            let p = closed_loop(&client, &plain_url, conns, secs).await;
            let per_s = (cpu_secs(streamed.id()) - c0) / (s * secs) * 1e6;
            let per_p = (cpu_secs(plain.id()) - c1) / (p * secs) * 1e6;
            eprintln!(
                "round {r}: direct {d:.0} req/s | streamed and rebuilt {s:.0} ({per_s:.0} µs CPU each) | plain {p:.0} ({per_p:.0} µs CPU each)"
            );
            ratio.push(s / p);
            cpu_s.push(per_s);
            cpu_p.push(per_p);
            rate_d.push(d);
            rate_s.push(s);
            rate_p.push(p);
        }
    });
    let spread = |v: &[f64], prec: usize| {
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        format!("{lo:.prec$} … {hi:.prec$}")
    };
    let pace = if tps > 0.0 {
        format!("paced at {tps} tokens/s")
    } else {
        "all at once".into()
    };
    let answer = if tokens == 0 {
        "\"Hello from the mock cloud.\" (5 deltas)".to_owned()
    } else {
        format!("{tokens} tokens")
    };
    println!("\n### Whole answers: streamed upstream and rebuilt, against passed through ({conns} connections, closed loop, {rounds} interleaved rounds of {secs} s; upstream {upstream_ms} ms to headers, {answer}, {pace})\n");
    println!("| | direct to the mock | streamed and rebuilt | passed through whole |");
    println!("|---|---|---|---|");
    println!(
        "| answers/s (median) | {:.0} | {:.0} | {:.0} |",
        median(rate_d.clone()),
        median(rate_s.clone()),
        median(rate_p.clone())
    );
    println!(
        "| gateway CPU per answer, µs (median; range) | | {:.0} ({}) | {:.0} ({}) |",
        median(cpu_s.clone()),
        spread(&cpu_s, 0),
        median(cpu_p.clone()),
        spread(&cpu_p, 0)
    );
    println!(
        "\nThroughput streamed / passed through: **{:.3}** (range over rounds {}).",
        median(ratio.clone()),
        spread(&ratio, 3)
    );
    for c in [&mut streamed, &mut plain, &mut mock] {
        let _ = c.kill();
    }
}

fn main() {
    let rate: f64 = env_or("BENCH_RATE", 500.0);
    let secs: f64 = env_or("BENCH_SECS", 5.0);
    let rounds: usize = env_or("BENCH_ROUNDS", 5);
    let upstream_ms: u64 = env_or("BENCH_UPSTREAM_MS", 2);
    if std::env::var("BENCH_WHOLE").as_deref() == Ok("compare") {
        return compare_whole(secs, rounds, upstream_ms);
    }

    let (mut mock, mock_url) = spawn(
        "0",
        &["mock", "--delay-ms", &upstream_ms.to_string()],
        "mock cloud listening on ",
    );
    // BENCH_ROUTE=translate serves the same Anthropic request from the mock's OpenAI endpoint:
    // decode, encode, stream upstream, translate the stream back, collect it.
    let translate = std::env::var("BENCH_ROUTE").as_deref() == Ok("translate");
    let cfg = if translate {
        std::env::set_var("UNDERSTUDY_BENCH_KEY", "sk-bench");
        let mut cfg = tempfile::NamedTempFile::new().unwrap();
        write!(
            cfg,
            "[providers.openai]\nkind = \"openai\"\nbase_url = \"{mock_url}/v1\"\napi_key_env = \"UNDERSTUDY_BENCH_KEY\"\n\
             [[routes]]\nmodel = \"claude-*\"\nbackends = [\"openai/gpt-4o\"]\n"
        )
        .unwrap();
        cfg
    } else {
        // BENCH_STREAM_WHOLE=0: the non-streaming request passes through as it is instead of
        // being asked as a stream and rebuilt (`stream_whole_answers = false`).
        passthrough_config(&mock_url, env_or("BENCH_STREAM_WHOLE", 1) == 1)
    };
    let (mut gw, gw_url) = serve(&cfg);
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = rss_kib(gw.id());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let direct = format!("{mock_url}/v1/messages");
    let through = format!("{gw_url}/v1/messages");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let (mut p50, mut p95, mut p99) = (Vec::new(), Vec::new(), Vec::new());
    let (mut d50, mut d99, mut g50, mut g99) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut failed = 0;
    let mut load_rss = 0;
    rt.block_on(async {
        // Warm-up: connections, caches, the gateway's pools.
        open_loop(&client, &direct, rate, 1.0).await;
        open_loop(&client, &through, rate, 1.0).await;
        for r in 0..rounds {
            let (d, fd) = open_loop(&client, &direct, rate, secs).await;
            let (g, fg) = open_loop(&client, &through, rate, secs).await;
            load_rss = load_rss.max(rss_kib(gw.id()));
            failed += fd + fg;
            eprintln!(
                "round {r}: direct p50 {:.3} p99 {:.3} | gateway p50 {:.3} p99 {:.3} ms",
                pct(&d, 0.5),
                pct(&d, 0.99),
                pct(&g, 0.5),
                pct(&g, 0.99)
            );
            p50.push(pct(&g, 0.5) - pct(&d, 0.5));
            p95.push(pct(&g, 0.95) - pct(&d, 0.95));
            p99.push(pct(&g, 0.99) - pct(&d, 0.99));
            d50.push(pct(&d, 0.5));
            d99.push(pct(&d, 0.99));
            g50.push(pct(&g, 0.5));
            g99.push(pct(&g, 0.99));
        }
    });
    let (tput_direct, tput_gw) = rt.block_on(async {
        let d = closed_loop(&client, &direct, 32, secs).await;
        let g = closed_loop(&client, &through, 32, secs).await;
        (d, g)
    });
    let spread = |v: &[f64]| {
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        format!("{lo:.3} … {hi:.3}")
    };
    let what = if translate {
        "Translation overhead (Anthropic request served from an OpenAI stream)"
    } else {
        "Passthrough overhead"
    };
    println!("\n### {what} ({rate} req/s open loop, {rounds} interleaved rounds of {secs} s, upstream latency {upstream_ms} ms)\n");
    println!(
        "| | direct | through Understudy | added (median of rounds) | added, range over rounds |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| p50 ms | {:.3} | {:.3} | **{:.3}** | {} |",
        median(d50),
        median(g50),
        median(p50.clone()),
        spread(&p50)
    );
    println!(
        "| p95 ms | | | **{:.3}** | {} |",
        median(p95.clone()),
        spread(&p95)
    );
    println!(
        "| p99 ms | {:.3} | {:.3} | **{:.3}** | {} |",
        median(d99),
        median(g99),
        median(p99.clone()),
        spread(&p99)
    );
    println!("\n| throughput, 32 connections, closed loop | direct | through Understudy | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| req/s | {tput_direct:.0} | {tput_gw:.0} | {:.2} |",
        tput_gw / tput_direct
    );
    println!(
        "\nGateway RSS: idle {:.1} MiB, peak under load {:.1} MiB. Failed requests: {failed}.",
        idle_rss as f64 / 1024.0,
        load_rss.max(rss_kib(gw.id())) as f64 / 1024.0
    );
    let _ = gw.kill();
    let _ = mock.kill();
}
