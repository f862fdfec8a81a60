//! How requests leave for a provider (src/providers/transport.rs), through the real binary:
//! HTTPS with the mock's CA trusted by `UNDERSTUDY_EXTRA_CA_CERTS` and refused without it, a
//! bad CA file refused at start-up, and a proxy named in the environment honoured.

use crate::cli::{spawn_serve, terminate};
use crate::support::*;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use understudy::testing::MockCloud;

const BIN: &str = env!("CARGO_BIN_EXE_understudy");

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

/// `understudy serve` on a config for `mock`, with `env` added.
fn serve_on(
    mock: &MockCloud,
    home: &std::path::Path,
    env: &[(&str, &str)],
) -> (std::process::Child, String) {
    let config = write(home, "config.toml", &config_for(mock, ""));
    spawn_serve(&["--config", &config], env, home)
}

/// A streamed request answered whole: its text.
async fn streamed_whole(url: &str) -> String {
    let r = ask(url, true).await;
    assert_eq!(r.status(), 200);
    let (text, end) = check_anthropic_stream(&r.bytes().await.unwrap());
    assert_eq!(end, AnthropicEnd::Complete);
    text
}

/// An Anthropic request with the client's own key, as Claude Code sends one.
async fn ask(url: &str, stream: bool) -> reqwest::Response {
    client()
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", "sk-ant-client-key")
        .header("anthropic-version", "2023-06-01")
        .json(&anthropic_body(stream))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_provider_is_served_with_its_ca_trusted_and_refused_by_name_without_it() {
    let mock = MockCloud::start_tls().await;
    assert!(mock.url().starts_with("https://127.0.0.1:"));
    let home = tempfile::tempdir().unwrap();
    let ca = write(home.path(), "ca.pem", mock.ca_pem().unwrap());

    let (child, url) = serve_on(&mock, home.path(), &[("UNDERSTUDY_EXTRA_CA_CERTS", &ca)]);
    assert!(!streamed_whole(&url).await.is_empty());
    let whole = ask(&url, false).await;
    assert_eq!(whole.status(), 200);
    let v: serde_json::Value = whole.json().await.unwrap();
    assert_eq!(v["type"], "message", "{v}");
    // Both answers came over TLS from the mock, which saw the client's key and our agent.
    let sent = mock.requests();
    assert!(sent.len() >= 2, "{sent:?}");
    let agent = sent[0]
        .headers
        .iter()
        .find(|(n, _)| n == "user-agent")
        .map(|(_, v)| v.clone());
    assert_eq!(
        agent.as_deref(),
        Some(concat!("understudy/", env!("CARGO_PKG_VERSION")))
    );
    // Offered as reqwest offered it, and as the clouds' HTTP/2 wants: h2 first.
    let offered = mock.alpn_offered();
    assert!(!offered.is_empty());
    for o in &offered {
        assert_eq!(o, &["h2", "http/1.1"], "{offered:?}");
    }
    let (status, log) = terminate(child);
    assert!(status.success(), "{log}");

    // Without the CA, the handshake fails and the client hears why, in its own format.
    let before = mock.requests().len();
    let (child, url) = serve_on(&mock, home.path(), &[]);
    let r = ask(&url, false).await;
    assert!(r.status().is_server_error(), "{}", r.status());
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("cannot connect to https://127.0.0.1")
            && message.contains("certificate")
            && message.contains("UnknownIssuer"),
        "{message}"
    );
    assert_eq!(mock.requests().len(), before, "nothing was sent untrusted");
    let (status, log) = terminate(child);
    assert!(status.success(), "{log}");
}

#[test]
fn a_bad_extra_ca_file_stops_serve_and_config_check_with_the_variable_named() {
    let home = tempfile::tempdir().unwrap();
    let junk = write(home.path(), "junk.pem", "this is not PEM\n");
    for args in [
        &["config", "check"][..],
        &["serve", "--listen", "127.0.0.1:0"][..],
    ] {
        let out = std::process::Command::new(BIN)
            .args(args)
            .env_clear()
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("UNDERSTUDY_LOCAL_SERVERS", "")
            .env("UNDERSTUDY_EXTRA_CA_CERTS", &junk)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("UNDERSTUDY_EXTRA_CA_CERTS=")
                && err.contains("junk.pem")
                && err.contains("no CERTIFICATE block"),
            "{args:?}: {err}"
        );
    }
}

/// An HTTP forward proxy for one upstream host: records every request line, sends each request
/// on in origin form, and relays the answers back.
async fn forward_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            tokio::spawn(relay(sock, record.clone()));
        }
    });
    (format!("http://{addr}"), seen)
}

async fn relay(sock: tokio::net::TcpStream, record: Arc<Mutex<Vec<String>>>) {
    let (mut from_client, to_client) = sock.into_split();
    let mut to_client = Some(to_client);
    let mut to_upstream: Option<tokio::net::tcp::OwnedWriteHalf> = None;
    loop {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            if from_client.read(&mut b).await.unwrap_or(0) == 0 {
                return;
            }
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let (line, rest) = head.split_once("\r\n").unwrap();
        record.lock().unwrap().push(line.to_owned());
        // `POST http://host:port/path HTTP/1.1` goes to host:port as `POST /path HTTP/1.1`.
        let mut parts = line.splitn(3, ' ');
        let (method, target, version) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let after = target.strip_prefix("http://").unwrap();
        let (host, path) = after.split_at(after.find('/').unwrap());
        let len: usize = rest
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.trim().parse().unwrap());
        let mut body = vec![0u8; len];
        from_client.read_exact(&mut body).await.unwrap();
        if to_upstream.is_none() {
            let (mut from_up, up) = tokio::net::TcpStream::connect(host)
                .await
                .unwrap()
                .into_split();
            to_upstream = Some(up);
            let mut to_client = to_client.take().unwrap();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_up, &mut to_client).await;
            });
        }
        let up = to_upstream.as_mut().unwrap();
        up.write_all(format!("{method} {path} {version}\r\n{rest}").as_bytes())
            .await
            .unwrap();
        up.write_all(&body).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_in_the_environment_carries_the_requests() {
    let mock = MockCloud::start().await;
    let (proxy, seen) = forward_proxy().await;
    let home = tempfile::tempdir().unwrap();
    // Lower case, as most shells' users set it.
    let (child, url) = serve_on(&mock, home.path(), &[("http_proxy", &proxy)]);
    streamed_whole(&url).await;
    let lines = seen.lock().unwrap().clone();
    let want = format!("POST {}/v1/messages HTTP/1.1", mock.url());
    assert!(lines.contains(&want), "{want} not in {lines:?}");
    let (status, log) = terminate(child);
    assert!(status.success(), "{log}");
    assert!(
        log.contains("requests go through the proxy the environment names"),
        "{log}"
    );
}
