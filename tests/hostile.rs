//! Hostile upstreams and hostile clients (issue 13), not the friendly mock: a scripted raw-TCP
//! server under test control that sends what a broken or malicious upstream would — endless
//! bodies, lines and events, error bodies that never end, keys echoed back in bodies, headers
//! and stream errors, streams that die right after an empty block start — and clients that
//! trickle headers and bodies, sit idle, forge log lines, or call the admin API without being
//! its owner. Memory is read from the real binary's `/proc/PID/status`.

use crate::cli::{spawn_serve, terminate};
use crate::support::*;
use serde_json::json;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use understudy::testing::MockCloud;

/// Reads one request (head and `content-length` body) off `s`; returns the head.
async fn read_request(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return String::new();
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < len {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        have += n;
    }
    head
}

/// A raw upstream on loopback: every connection's request is read, then `answer` writes
/// whatever it likes to the socket. Returns its base URL.
async fn hostile<F, Fut>(answer: F) -> String
where
    F: Fn(TcpStream, String) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let head = read_request(&mut s).await;
                answer(s, head).await;
            });
        }
    });
    url
}

/// Writes `head` and then `chunk` over and over (chunked encoding) until the peer goes away.
async fn endless(mut s: TcpStream, head: &str, chunk: &[u8]) {
    if s.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
    while s.write_all(&framed).await.is_ok() {}
}

const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
const JSON_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";

/// The gateway's resident memory, peak and now, in MB.
fn rss_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap()
    };
    (kb("VmHWM:") / 1024.0, kb("VmRSS:") / 1024.0)
}

/// A two-backend route per API: the hostile upstream first, the friendly mock second.
fn chain(hostile: &str, mock: &MockCloud, extra: &str) -> String {
    format!(
        r#"
[server]
{extra}

[providers.bad]
kind = "anthropic"
base_url = "{hostile}"
passthrough_auth = "{hostile}"
continuation = "off"
stream_whole_answers = false
timeouts = {{ first_byte = "2s", idle = "1s" }}

[providers.badoa]
kind = "openai"
base_url = "{hostile}/v1"
passthrough_auth = "{hostile}"
continuation = "off"
timeouts = {{ first_byte = "2s", idle = "1s" }}

[providers.good]
kind = "anthropic"
base_url = "{mock}"
passthrough_auth = "{mock}"
continuation = "off"

[providers.goodoa]
kind = "openai"
base_url = "{mock}/v1"
passthrough_auth = "{mock}"
continuation = "off"

[[routes]]
model = "claude-*"
backends = ["bad", "good"]

[[routes]]
model = "gpt-*"
backends = ["badoa", "goodoa"]
"#,
        mock = mock.url()
    )
}

/// Endless bodies, lines and events from the first backend: each fails at its cap and the
/// route's second backend answers; the gateway's peak memory stays bounded by the caps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_upstream_bytes_fail_over_at_their_caps_with_bounded_memory() {
    let mock = MockCloud::start().await;
    let body = hostile(|s, _| async move { endless(s, JSON_HEAD, &[b'a'; 65536]).await }).await;
    // An endless `data:` line with no newline, and `data:` lines with no blank line.
    let no_newline = hostile(|mut s, _| async move {
        let _ = s.write_all(SSE_HEAD.as_bytes()).await;
        let first = b"6\r\ndata: \r\n";
        let _ = s.write_all(first).await;
        let x = [b'x'; 65536];
        let framed = [format!("{:x}\r\n", x.len()).as_bytes(), &x[..], b"\r\n"].concat();
        while s.write_all(&framed).await.is_ok() {}
    })
    .await;
    let no_blank = hostile(|s, _| async move {
        endless(
            s,
            SSE_HEAD,
            "data: {\"type\":\"ping\"}\n".repeat(2048).as_bytes(),
        )
        .await
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    for (name, url, stream) in [
        ("endless whole body", &body, false),
        ("endless SSE line", &no_newline, true),
        ("endless SSE event", &no_blank, true),
    ] {
        let cfg = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(cfg.path(), chain(url, &mock, "")).unwrap();
        cases.push((name, cfg, stream));
    }
    for (name, cfg, stream) in cases {
        let args = ["--config", cfg.path().to_str().unwrap()];
        let (child, gw) = spawn_serve(&args, &[], home.path());
        let (_, before) = rss_mb(child.id());
        let started = Instant::now();
        let r = post(&gw, "/v1/messages", &anthropic_body(stream)).await;
        let status = r.status();
        let failed_over = r
            .headers()
            .get("x-understudy-failed-over")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = r.text().await.unwrap();
        let took = started.elapsed();
        let (peak, _) = rss_mb(child.id());
        let (_, log) = terminate(child);
        assert_eq!(
            status, 200,
            "{name}: the second backend answers: {text}\n{log}"
        );
        assert!(
            failed_over.contains("bad/claude-sonnet-4-5=oversize"),
            "{name}: {failed_over}"
        );
        assert!(
            text.contains("Hello") || text.contains("w0"),
            "{name}: {text}"
        );
        assert!(
            log.contains("max_upstream_"),
            "{name}: the log names the cap\n{log}"
        );
        // The caps are 32 MiB (a whole body) and 8 MiB (one event): what is held is bounded
        // by them, whatever the upstream sends.
        assert!(
            peak - before < 120.0,
            "{name}: peak RSS {peak:.0} MB from {before:.0} MB"
        );
        assert!(took < Duration::from_secs(20), "{name}: took {took:?}");
        eprintln!("{name}: failed over in {took:?}, peak RSS {peak:.0} MB (from {before:.0} MB)");
    }
}

/// An error body that never ends is read up to its cap (1 MiB) and answered at once, not
/// after `timeouts.total`.
#[tokio::test]
async fn an_endless_error_body_is_answered_at_its_cap() {
    let url = hostile(|s, _| async move {
        endless(
            s,
            "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/html\r\ntransfer-encoding: chunked\r\n\r\n",
            &[b'<'; 16384],
        )
        .await
    })
    .await;
    let toml = format!(
        "[providers.bad]\nkind = \"anthropic\"\nbase_url = \"{url}\"\npassthrough_auth = \"{url}\"\n\
         [[routes]]\nmodel = \"claude-*\"\nbackends = [\"bad\"]\n"
    );
    let h = start_config(MockCloud::start().await, &toml).await;
    let started = Instant::now();
    let r = post(&h.url, "/v1/messages", &anthropic_body(false)).await;
    assert_eq!(r.status(), 500);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// The Anthropic events up to an empty text block: no text yet, so no commit.
const EMPTY_BLOCK: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"m\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\"}}\n\n";

/// Sends the SSE head and `EMPTY_BLOCK` (with `content-length` unknown: the stream is raw,
/// closed by the connection), then what `then` says.
async fn empty_block_then(mut s: TcpStream, then: &str) {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(EMPTY_BLOCK.as_bytes()).await;
    let _ = s.flush().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    match then {
        "reset" => {
            // SO_LINGER 0: the close sends a RST, not a FIN.
            #[allow(deprecated)]
            s.set_linger(Some(Duration::ZERO)).unwrap();
            drop(s);
        }
        "close" => drop(s),
        "stall" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        "malformed" => {
            let _ = s
                .write_all(b"event: content_block_delta\ndata: {\"type\":\"content_block_del\n\n")
                .await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        "error" => {
            let _ = s
                .write_all(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n")
                .await;
        }
        other => panic!("{other}"),
    }
}

/// A primary that sends `message_start` and an empty text block, then resets, closes,
/// stalls, turns malformed or sends `event: error`: nothing the client could use has come, so
/// the route's second backend answers, whole.
#[tokio::test]
async fn the_anthropic_route_fails_over_on_every_fault_before_the_first_text() {
    for fault in ["reset", "close", "stall", "malformed", "error"] {
        let url = hostile(move |s, _| async move { empty_block_then(s, fault).await }).await;
        let mock = MockCloud::start().await;
        let toml = chain(&url, &mock, "");
        let h = start_config(mock, &toml).await;
        let r = post(&h.url, "/v1/messages", &anthropic_body(true)).await;
        assert_eq!(r.status(), 200, "{fault}");
        let failed = r
            .headers()
            .get("x-understudy-failed-over")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(
            failed.as_deref().is_some_and(|f| f.starts_with("bad/")),
            "{fault}: {failed:?}"
        );
        let body = r.bytes().await.unwrap();
        let (text, end) = check_anthropic_stream(&body);
        assert!(matches!(end, AnthropicEnd::Complete), "{fault}: {end:?}");
        assert_eq!(text, "Hello from the mock cloud.", "{fault}");
        assert_eq!(
            String::from_utf8_lossy(&body)
                .matches("event: message_start")
                .count(),
            1,
            "{fault}: one message, the primary's start was discarded"
        );
    }
}

const KEY: &str = "sk-ant-hostile-test-key-7f3a9c1e5b";
const CLIENT_TOKEN: &str = "client-oauth-token-hostile-4d2e8a6b";

/// An upstream that quotes the credentials it was sent everywhere it can: a JSON 401 body, a
/// response header, an HTML 502, a non-JSON 200, a stream's error event. Which one depends on
/// the request's model.
async fn echoing_upstream() -> String {
    hostile(|mut s, head| async move {
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("x-api-key: ").or_else(|| l.strip_prefix("authorization: ")))
            .unwrap_or("none")
            .to_owned();
        // The model is in the body, which `read_request` skipped: the path tells the case.
        let case = if head.contains("/v1/messages") { "msg" } else { "oa" };
        let _ = case;
        let reply = |status: &str, ct: &str, body: String| {
            format!(
                "HTTP/1.1 {status}\r\ncontent-type: {ct}\r\nx-echo: {key}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        };
        let n = ECHO_CASE.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 4;
        let out = match n {
            0 => reply("401 Unauthorized", "application/json", format!(
                r#"{{"type":"error","error":{{"type":"authentication_error","message":"invalid x-api-key: {key}"}}}}"#
            )),
            1 => reply("502 Bad Gateway", "text/html", format!("<html>upstream saw Bearer {key}</html>")),
            2 => reply("200 OK", "text/plain", format!("not json, but your key is {key}")),
            _ => format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-echo: {key}\r\nconnection: close\r\n\r\n\
                 event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"authentication_error\",\"message\":\"bad key {key}\"}}}}\n\n"
            ),
        };
        let _ = s.write_all(out.as_bytes()).await;
    })
    .await
}

static ECHO_CASE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Keys echoed by an upstream (the configured one, and a client's own credential passed
/// through) never reach the client's body or headers, the log at trace level, the journal,
/// `/api/*` or `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_an_upstream_echoes_never_reach_the_client_the_log_or_the_journal() {
    let url = echoing_upstream().await;
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        cfg.path(),
        format!(
            "[providers.keyed]\nkind = \"anthropic\"\nbase_url = \"{url}\"\napi_key_env = \"HOSTILE_KEY\"\ncontinuation = \"off\"\n\
             [providers.passed]\nkind = \"anthropic\"\nbase_url = \"{url}\"\npassthrough_auth = \"{url}\"\ncontinuation = \"off\"\n\
             [[routes]]\nmodel = \"claude-keyed\"\nbackends = [\"keyed\"]\n\
             [[routes]]\nmodel = \"claude-passed\"\nbackends = [\"passed\"]\n"
        ),
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let args = ["--config", cfg.path().to_str().unwrap()];
    let env = [("HOSTILE_KEY", KEY), ("RUST_LOG", "trace")];
    let (child, gw) = spawn_serve(&args, &env, home.path());
    let mut seen = String::new();
    for model in ["claude-keyed", "claude-passed"] {
        for stream in [false, false, false, true] {
            let mut body = anthropic_body(stream);
            body["model"] = model.into();
            let r = client()
                .post(format!("{gw}/v1/messages"))
                .header("x-api-key", CLIENT_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            for (k, v) in r.headers() {
                seen.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("")));
            }
            seen.push_str(&r.text().await.unwrap());
        }
    }
    for path in [
        "/api/status",
        "/api/requests?limit=100",
        "/metrics",
        "/api/config",
    ] {
        seen.push_str(
            &client()
                .get(format!("{gw}{path}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    let (_, log) = terminate(child);
    let journal =
        std::fs::read(home.path().join(".local/share/understudy/journal.sqlite3")).unwrap();
    assert!(
        seen.contains("[redacted]"),
        "the echoes were there, redacted: {seen}"
    );
    for secret in [KEY, CLIENT_TOKEN] {
        assert!(!seen.contains(secret), "{secret} reached a client:\n{seen}");
        assert!(!log.contains(secret), "{secret} reached the log:\n{log}");
        let j = journal
            .windows(secret.len())
            .any(|w| w == secret.as_bytes());
        assert!(!j, "{secret} reached the journal");
    }
    assert!(
        log.contains("[redacted]"),
        "trace logs quoted the echoes, redacted"
    );
}

/// Slow and idle clients are cut off: headers trickled, a connection that never sends a byte,
/// a body trickled; and connections past `max_connections` wait until one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_idle_and_excess_connections_are_closed_at_their_limits() {
    let mock = MockCloud::start().await;
    let extra = "header_timeout = \"1s\"\nbody_timeout = \"1s\"\nmax_connections = 3";
    let toml = chain(&mock.url(), &mock, extra);
    let h = start_config(mock, &toml).await;
    let addr = h.url.strip_prefix("http://").unwrap().to_owned();
    // Closed: a read returns 0 bytes, or an error, within `within`.
    async fn closed_within(s: &mut TcpStream, within: Duration) -> (bool, Vec<u8>) {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let until = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(until.into(), s.read(&mut buf)).await {
                Err(_) => return (false, got),
                Ok(Ok(0)) | Ok(Err(_)) => return (true, got),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    }
    // Slowloris: a header byte every 200 ms never finishes in time.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    let trickle = async {
        for b in
            b"POST /v1/messages HTTP/1.1\r\nhost: localhost\r\nx-a: bbbbbbbbbbbbbbbbbbbbbbbbbbb"
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
        }
    };
    trickle.await;
    let (closed, _) = closed_within(&mut slow, Duration::from_secs(3)).await;
    assert!(
        closed,
        "slow headers: still open after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(6));
    // Idle: never a byte.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    let (closed, got) = closed_within(&mut idle, Duration::from_secs(3)).await;
    assert!(
        closed && got.is_empty(),
        "idle connection still open: {got:?}"
    );
    // A body trickled: the head is whole, the body never is.
    let mut body = TcpStream::connect(&addr).await.unwrap();
    body.write_all(b"POST /v1/messages HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{").await.unwrap();
    let started = Instant::now();
    let (closed, got) = tokio::join!(closed_within(&mut body, Duration::from_secs(4)), async {
        for _ in 0..15 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .0;
    let answer = String::from_utf8_lossy(&got).to_string();
    assert!(closed, "slow body: still open");
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("server.body_timeout"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    // Three connections held open (the cap): a fourth request waits until the header timeout
    // closes one of them, then is served.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let r = client()
        .get(format!("{}/healthz", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let waited = started.elapsed();
    assert!(
        waited > Duration::from_millis(600),
        "served at once past the cap: {waited:?}"
    );
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    drop(held);
}

/// A client's newline in a model name does not forge a log line.
#[tokio::test]
async fn a_newline_in_a_model_name_does_not_forge_a_log_line() {
    let mock = MockCloud::start().await;
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), config_for(&mock, "")).unwrap();
    let home = tempfile::tempdir().unwrap();
    let args = ["--config", cfg.path().to_str().unwrap()];
    let (child, gw) = spawn_serve(&args, &[], home.path());
    for model in [
        "claude-x\nFORGED INFO admin logged in",
        "no-such\r\nFORGED2 x",
    ] {
        let mut body = anthropic_body(false);
        body["model"] = model.into();
        let _ = post(&gw, "/v1/messages", &body).await;
    }
    let (_, log) = terminate(child);
    assert!(
        log.contains("FORGED INFO admin"),
        "the request was logged: {log}"
    );
    for line in log.lines() {
        assert!(
            !line.starts_with("FORGED"),
            "a forged line: {line:?}\n{log}"
        );
    }
    assert!(log.contains("claude-x\\nFORGED"), "{log}");
}

/// The admin API belongs to the user who runs the gateway: another Unix user (`nobody`, via
/// `setpriv`) can neither read the token file nor change the config, Claude Code's settings,
/// the models or the mode; the owner's CLI can. Without root (no second user to be) the
/// token-less calls are still made, as this user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_everyone_but_its_owner() {
    let mock = MockCloud::start().await;
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), config_for(&mock, "")).unwrap();
    let home = tempfile::tempdir().unwrap();
    let token_file = home.path().join("config/understudy/admin-token");
    let args = ["--config", cfg.path().to_str().unwrap()];
    let env = [("UNDERSTUDY_ADMIN_TOKEN_FILE", token_file.to_str().unwrap())];
    let (child, gw) = spawn_serve(&args, &env, home.path());
    let calls: [(&str, &str, &str); 8] = [
        (
            "PUT",
            "/api/config",
            r#"{"text": "[server]\n", "check": false}"#,
        ),
        ("PUT", "/api/claude-code", r#"{"connected": true}"#),
        (
            "POST",
            "/api/models/pull",
            r#"{"name": "https://example.invalid/x.gguf"}"#,
        ),
        ("PUT", "/api/models/default", r#"{"name": "x.gguf"}"#),
        ("PUT", "/api/mode", r#"{"mode": "local-only"}"#),
        ("PUT", "/api/pause", r#"{"paused": true}"#),
        ("GET", "/api/config", ""),
        ("POST", "/api/session", ""),
    ];
    // Each call as a plain local process without the token: 401, nothing changed.
    let bare = reqwest::Client::new();
    for (method, path, body) in calls {
        let r = bare
            .request(method.parse().unwrap(), format!("{gw}{path}"))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "unauthorized", "{method} {path}");
    }
    // Open: what reveals no secret and no path.
    assert_eq!(
        bare.get(format!("{gw}/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        bare.get(format!("{gw}/ui/")).send().await.unwrap().status(),
        200
    );
    let euid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    if euid == 0 {
        // As `nobody`: the token file cannot be read, `understudy status` fails, and a raw
        // PUT /api/config is refused.
        let as_nobody = |argv: &[&str]| {
            std::process::Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .args(argv)
                .env("UNDERSTUDY_ADMIN_TOKEN_FILE", &token_file)
                .output()
                .unwrap()
        };
        let cat = as_nobody(&["cat", token_file.to_str().unwrap()]);
        assert!(!cat.status.success(), "nobody read the token");
        let bin = env!("CARGO_BIN_EXE_understudy");
        let status = as_nobody(&[bin, "status", "--url", &gw]);
        let err = String::from_utf8_lossy(&status.stderr);
        assert!(
            !status.status.success() && err.contains("needs its token"),
            "{err}"
        );
        let put = format!(
            "import urllib.request as u\ntry:\n u.urlopen(u.Request('{gw}/api/config', data=b'{{\"text\": \"\"}}', method='PUT', headers={{'content-type': 'application/json'}}))\n print('accepted')\nexcept Exception as e:\n print(getattr(e, 'code', e))\n"
        );
        let out = as_nobody(&["/usr/bin/python3", "-c", &put]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "401",
            "{out:?}"
        );
    }
    // The owner's CLI reads the token and is answered.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["status", "--url", &gw, "--json"])
        .env("UNDERSTUDY_ADMIN_TOKEN_FILE", &token_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mode"], "auto", "no refused call changed the mode");
    assert_eq!(v["paused"], false);
    // `understudy dashboard --print`: a one-time link that signs a browser in once.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["dashboard", "--url", &gw, "--print"])
        .env("UNDERSTUDY_ADMIN_TOKEN_FILE", &token_file)
        .output()
        .unwrap();
    let link = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(link.starts_with(&format!("{gw}/ui/login?code=")), "{link}");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = browser.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    assert!(!session.contains(
        &std::fs::read_to_string(&token_file)
            .unwrap()
            .trim()
            .to_owned()
    ));
    let r = browser
        .get(format!("{gw}/api/status"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the session cookie opens the admin API");
    assert_eq!(
        browser.get(&link).send().await.unwrap().status(),
        403,
        "a link works once"
    );
    terminate(child);
}

/// Eight concurrent 31 MB requests translated (an Anthropic client to an OpenAI-compatible
/// provider) stay under a memory bound, and the memory goes back once they are done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_translated_requests_are_bounded_and_their_memory_returns() {
    let mock = MockCloud::start().await;
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        cfg.path(),
        format!(
            "[providers.oa]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key_env = \"HOSTILE_KEY\"\n\
             [[routes]]\nmodel = \"claude-*\"\nbackends = [\"oa/gpt-4o\"]\n",
            mock.url()
        ),
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let args = ["--config", cfg.path().to_str().unwrap()];
    let (child, gw) = spawn_serve(&args, &[("HOSTILE_KEY", KEY)], home.path());
    let pid = child.id();
    let (_, idle) = rss_mb(pid);
    // 31 MB of text in one user turn.
    let big = "lorem ipsum dolor sit amet ".repeat(31 * 1024 * 1024 / 27);
    let body = serde_json::to_vec(&json!({
        "model": "claude-sonnet-4-5", "max_tokens": 16, "stream": false,
        "messages": [{"role": "user", "content": big}]
    }))
    .unwrap();
    let body = bytes::Bytes::from(body);
    let sends = (0..8).map(|_| {
        let body = body.clone();
        let gw = gw.clone();
        async move {
            client()
                .post(format!("{gw}/v1/messages"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let sends: Vec<_> = sends.collect();
    let statuses = futures_util::future::join_all(sends).await;
    let (peak, _) = rss_mb(pid);
    // The allocator gives the burst back (jemalloc's background thread, 2 s decay).
    let ended = Instant::now();
    let mut after = rss_mb(pid).1;
    while after > idle * 2.0 + 40.0 && ended.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = rss_mb(pid).1;
    }
    let returned_in = ended.elapsed();
    terminate(child);
    eprintln!("idle {idle:.0} MB, peak {peak:.0} MB, {after:.0} MB {returned_in:?} after; statuses {statuses:?}");
    // Every request is answered: served, or refused at the body-memory limit (256 MB holds
    // eight 31 MB bodies, so all are served here).
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // The stated bound: the baseline plus server.max_request_memory (1 GiB: each request
    // counted at four times its body), with room for the runtime.
    assert!(peak < idle + 1024.0 + 150.0, "peak RSS {peak:.0} MB");
    assert!(
        after < idle * 2.0 + 40.0,
        "RSS {after:.0} MB after the burst (idle {idle:.0} MB)"
    );
}

/// Past `max_in_flight` requests, or past `max_request_memory`, a request is answered at once
/// with a 503 in its dialect (Anthropic: `overloaded_error`), and nothing is sent upstream.
#[tokio::test]
async fn requests_past_the_in_flight_limits_are_answered_503_at_once() {
    // The first request's answer stalls after its first text, holding its place.
    let url = hostile(|mut s, _| async move {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
        let _ = s.write_all(head.as_bytes()).await;
        let _ = s.write_all(EMPTY_BLOCK.as_bytes()).await;
        let _ = s.write_all(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    })
    .await;
    for (limits, big) in [
        ("max_in_flight = 1", false),
        ("max_body_bytes = 65536\nmax_request_memory = 262144", true),
    ] {
        let mock = MockCloud::start().await;
        let toml = chain(&url, &mock, limits);
        let h = start_config(mock, &toml).await;
        let mut body = anthropic_body(true);
        if big {
            // 40 KB, counted 160 KB: two do not fit in 256 KB.
            body["system"] = "x".repeat(40 * 1024).into();
        }
        let first = post(&h.url, "/v1/messages", &body).await;
        assert_eq!(first.status(), 200);
        let started = Instant::now();
        let second = post(&h.url, "/v1/messages", &body).await;
        assert_eq!(second.status(), 503, "{limits}");
        assert!(started.elapsed() < Duration::from_secs(1));
        let v: serde_json::Value = second.json().await.unwrap();
        assert_eq!(v["error"]["type"], "overloaded_error", "{limits}: {v}");
        let setting = if big {
            "max_request_memory"
        } else {
            "max_in_flight"
        };
        assert!(
            v["error"]["message"].as_str().unwrap().contains(setting),
            "{v}"
        );
        drop(first);
        // Its place is given back when the first answer's body is gone.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let third = post(&h.url, "/v1/messages", &body).await;
        assert_eq!(third.status(), 200, "{limits}: the place was freed");
    }
}

/// With `server.require_token`, the inference endpoints need the client token (in the
/// client's dialect: a 401 `authentication_error`); the token never goes upstream, and it
/// opens nothing of the admin API.
#[tokio::test]
async fn require_token_guards_inference_with_a_token_that_never_goes_upstream() {
    let mock = MockCloud::start().await;
    let toml = config_for(&mock, "[server]\nrequire_token = true");
    let h = start_config(mock, &toml).await;
    let plain = reqwest::Client::new();
    let r = plain
        .post(format!("{}/v1/messages", h.url))
        .header("x-api-key", "k")
        .json(&anthropic_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "authentication_error", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("server.require_token"));
    let client_token =
        std::fs::read_to_string(admin_token_file().with_file_name("client-token")).unwrap();
    let with = |req: reqwest::RequestBuilder| req.header("x-understudy-token", client_token.trim());
    let r = with(plain.post(format!("{}/v1/messages", h.url)))
        .header("x-api-key", "k")
        .json(&anthropic_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = h.mock.requests();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|r| r.headers.iter().all(|(k, _)| k != "x-understudy-token")),
        "the gateway's token went upstream"
    );
    let r = with(plain.get(format!("{}/api/status", h.url)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the client token is not the admin token");
}

/// An answer that opens with a tool call whose input streams for longer than
/// `timeouts.first_content` is not cut: the answer is under way once its block starts, though
/// the commit point is the whole tool call.
#[tokio::test]
async fn a_tool_call_streaming_past_the_first_content_limit_is_not_cut() {
    let url = hostile(|mut s, _| async move {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
        let ev = |name: &str, data: String| format!("event: {name}\ndata: {data}\n\n");
        let mut out = String::from(head);
        out += &ev("message_start", r#"{"type":"message_start","message":{"id":"msg_t","type":"message","role":"assistant","content":[],"model":"m","usage":{"input_tokens":5,"output_tokens":1}}}"#.into());
        out += &ev("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"write","input":{}}}"#.into());
        let _ = s.write_all(out.as_bytes()).await;
        let parts = ["{\"path\":", " \"a.txt\",", " \"text\":", " \"hello\"}"];
        for p in parts {
            tokio::time::sleep(Duration::from_millis(600)).await;
            let d = serde_json::json!({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":p}});
            let _ = s.write_all(ev("content_block_delta", d.to_string()).as_bytes()).await;
        }
        let mut end = ev("content_block_stop", r#"{"type":"content_block_stop","index":0}"#.into());
        end += &ev("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}"#.into());
        end += &ev("message_stop", r#"{"type":"message_stop"}"#.into());
        let _ = s.write_all(end.as_bytes()).await;
    })
    .await;
    let toml = format!(
        "[providers.slow]\nkind = \"anthropic\"\nbase_url = \"{url}\"\npassthrough_auth = \"{url}\"\ncontinuation = \"off\"\n\
         timeouts = {{ first_content = \"1s\", idle = \"2s\" }}\n\
         [[routes]]\nmodel = \"claude-*\"\nbackends = [\"slow\"]\n"
    );
    let h = start_config(MockCloud::start().await, &toml).await;
    let r = post(&h.url, "/v1/messages", &anthropic_body(true)).await;
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("\"stop_reason\":\"tool_use\"") && text.contains("hello"),
        "{text}"
    );
    assert!(!text.contains("event: error"), "{text}");
}

/// Open descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// After a burst of concurrent requests, only a bounded number of upstream connections stay
/// open for reuse: the rest close with their buffers (2,000 idle connections kept the
/// gateway at four times its idle memory for their 90 s idle timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_leaves_a_bounded_pool_of_upstream_connections() {
    let mock = MockCloud::start().await;
    // Every answer takes 400 ms, so the whole burst holds its upstream connections at once.
    mock.set_profile(understudy::testing::Profile {
        delay: Duration::from_millis(400),
        record: false,
        ..Default::default()
    });
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        cfg.path(),
        format!(
            "[providers.anthropic]\nkind = \"anthropic\"\nbase_url = \"{0}\"\npassthrough_auth = \"{0}\"\n\
             [[routes]]\nmodel = \"claude-*\"\nbackends = [\"anthropic\"]\n",
            mock.url()
        ),
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let (child, gw) = spawn_serve(
        &["--config", cfg.path().to_str().unwrap()],
        &[],
        home.path(),
    );
    let pid = child.id();
    let idle = open_fds(pid);
    assert!(
        idle > 0,
        "the gateway's descriptors are read from /proc/{pid}/fd"
    );
    // A client that closes each connection after its answer: what stays open afterwards is
    // the gateway's own (its upstream pool).
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    const BURST: usize = 200;
    let sends = (0..BURST).map(|_| {
        let (c, gw) = (c.clone(), gw.clone());
        async move {
            c.post(format!("{gw}/v1/messages"))
                .header("x-api-key", "sk-ant-burst")
                .header("content-type", "application/json")
                .body(r#"{"model":"claude-sonnet-4-5","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    });
    let answers = futures_util::future::join_all(sends).await;
    assert!(
        answers.iter().all(|a| a.contains("message_stop")),
        "every stream of the burst completes"
    );
    let peak_ended = Instant::now();
    let mut after = open_fds(pid);
    while after > idle + 64 + 8 && peak_ended.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = open_fds(pid);
    }
    terminate(child);
    assert!(
        after <= idle + 64 + 8,
        "{after} descriptors open after a burst of {BURST} (idle {idle}): at most 64 idle upstream connections should stay"
    );
}
