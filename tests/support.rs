//! A gateway in-process on `127.0.0.1:0`, wired to a mock cloud, and checkers for what clients get.

use understudy::config::{Config, ConfigSource};
use understudy::sse::{Frame, Splitter};
use understudy::testing::MockCloud;

pub struct Harness {
    pub mock: MockCloud,
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Providers `anthropic` and `openai`, both at the mock; short timeouts so faults show quickly.
pub fn config_for(mock: &MockCloud, extra: &str) -> String {
    format!(
        r#"
# One backend per API, which does not go on from its own broken answers: a fault reaches the
# client as the explicit error (tests/continuity.rs covers continuing).
[providers.anthropic]
kind = "anthropic"
base_url = "{url}"
passthrough_auth = "{url}"
continuation = "off"
timeouts = {{ first_byte = "400ms", idle = "400ms" }}

[providers.openai]
kind = "openai"
base_url = "{url}/v1"
passthrough_auth = "{url}"
continuation = "off"
timeouts = {{ first_byte = "400ms", idle = "400ms" }}

{extra}

[[routes]]
model = "claude-*"
backends = ["anthropic"]

[[routes]]
model = "gpt-*"
backends = ["openai"]
"#,
        url = mock.url()
    )
}

pub async fn start() -> Harness {
    start_with("").await
}

pub async fn start_with(extra: &str) -> Harness {
    let mock = MockCloud::start().await;
    let toml = config_for(&mock, extra);
    start_config(mock, &toml).await
}

/// The admin token every gateway the tests start uses (its file: [`admin_token_file`]), sent
/// by [`client`].
pub const ADMIN_TOKEN: &str = "understudy-tests-admin-token-0123456789abcdef0123456789";

/// A private file holding [`ADMIN_TOKEN`] (0600), for gateways in-process
/// (`server.admin_token_file`) and as subprocesses (`UNDERSTUDY_ADMIN_TOKEN_FILE`).
pub fn admin_token_file() -> std::path::PathBuf {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("understudy-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("admin-token");
        let _ = std::fs::remove_file(&f);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&f)
            .unwrap();
        std::io::Write::write_all(&mut out, ADMIN_TOKEN.as_bytes()).unwrap();
        f
    })
    .clone()
}

pub async fn start_config(mock: MockCloud, toml: &str) -> Harness {
    let mut config =
        Config::from_toml(toml, ConfigSource::ZeroConfig).expect("test config is valid");
    config.server.admin_token_file = Some(admin_token_file());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(understudy::server::run(listener, config, async move {
        let _ = rx.await;
    }));
    Harness {
        mock,
        url,
        stop: Some(tx),
    }
}

/// A gateway built in-process from `config` (its admin token [`ADMIN_TOKEN`]), with its state
/// at hand and the desktop notifications it would show collected.
pub struct App {
    pub url: String,
    pub state: std::sync::Arc<understudy::server::AppState>,
    pub notices: std::sync::Arc<std::sync::Mutex<Vec<understudy::desktop::notify::Notice>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl App {
    pub async fn start(mut config: Config) -> App {
        use std::sync::{Arc, Mutex};
        config.server.admin_token_file = Some(admin_token_file());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conn = understudy::server::Connections::of(&config);
        let (app, state) = understudy::server::build(config, addr.port()).await;
        let notices = Arc::new(Mutex::new(Vec::new()));
        let sink = notices.clone();
        tokio::spawn(understudy::desktop::notifications(
            Arc::downgrade(&state),
            Default::default(),
            Arc::new(move |n| sink.lock().unwrap().push(n)),
        ));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(understudy::server::serve_app(
            listener,
            app,
            None,
            conn,
            async move {
                let _ = rx.await;
            },
        ));
        App {
            url: format!("http://{addr}"),
            state,
            notices,
            _stop: tx,
        }
    }

    /// The body of the first notification shown with this title, if one was.
    pub fn notice(&self, title: &str) -> Option<String> {
        self.notices
            .lock()
            .unwrap()
            .iter()
            .find(|n| n.title == title)
            .map(|n| n.body.clone())
    }
}

/// Who served a response (`x-understudy-served-by`).
pub fn served_by(r: &reqwest::Response) -> String {
    r.headers()["x-understudy-served-by"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Waits (up to 15 s) until `f` holds.
pub async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..150 {
        if f().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A client that carries the admin token (so the admin API answers it).
pub fn client() -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-understudy-token", ADMIN_TOKEN.parse().unwrap());
    reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap()
}

/// POSTs `body` to the gateway as a client with API key `k` would (sent both as `x-api-key` and
/// as a bearer token, so it passes through to either kind of provider).
/// `GET base + path` as JSON.
pub async fn get_json(base: &str, path: &str) -> serde_json::Value {
    client()
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn post(base: &str, path: &str, body: &serde_json::Value) -> reqwest::Response {
    client()
        .post(format!("{base}{path}"))
        .header("x-api-key", "k")
        .bearer_auth("k")
        .json(body)
        .send()
        .await
        .unwrap()
}

pub fn anthropic_body(stream: bool) -> serde_json::Value {
    serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]})
}

pub fn openai_body(stream: bool) -> serde_json::Value {
    serde_json::json!({"model": "gpt-5", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

pub fn frames(body: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut s = Splitter::new();
    s.feed(body, &mut out);
    s.finish(&mut out);
    assert!(
        !s.has_partial(),
        "the client received half an SSE event: {:?}",
        String::from_utf8_lossy(body)
    );
    out
}

pub fn json(f: &Frame) -> serde_json::Value {
    serde_json::from_str(f.data.as_deref().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {f:?}"))
}

/// What an Anthropic stream told the client.
#[derive(Debug, PartialEq, Eq)]
pub enum AnthropicEnd {
    /// Ended by message_delta(stop_reason) + message_stop.
    Complete,
    /// Ended by an `event: error` of this type.
    Error(String),
}

/// Checks the event order of protocol.md §1.5 strictly and returns the text and how it ended.
/// Panics on anything Claude Code would choke on, or on a stream that ends without either a
/// finish or an explicit error (a silent truncation).
pub fn check_anthropic_stream(body: &[u8]) -> (String, AnthropicEnd) {
    let fs = frames(body);
    let mut text = String::new();
    let mut open: Option<u64> = None;
    // The open block's type, and whether a thinking block got its signature.
    let mut open_type = String::new();
    let mut signed = false;
    let mut next_index = 0;
    let mut started = false;
    let mut stop_reason = None;
    for (i, f) in fs.iter().enumerate() {
        if f.data.is_none() {
            continue;
        }
        let v = json(f);
        let ty = v["type"].as_str().unwrap().to_owned();
        assert_eq!(
            f.event.as_deref(),
            Some(ty.as_str()),
            "event name and data type differ"
        );
        match ty.as_str() {
            "message_start" => {
                assert!(!started, "a second message_start");
                started = true;
            }
            "content_block_start" => {
                assert!(
                    started && open.is_none(),
                    "block started while another is open"
                );
                assert_eq!(
                    v["index"].as_u64(),
                    Some(next_index),
                    "block index out of order"
                );
                open = Some(next_index);
                open_type = v["content_block"]["type"].as_str().unwrap().to_owned();
                signed = false;
                next_index += 1;
            }
            "content_block_delta" => {
                assert_eq!(
                    v["index"].as_u64(),
                    open,
                    "delta for a block that is not open"
                );
                let want = match v["delta"]["type"].as_str().unwrap() {
                    "text_delta" => "text",
                    "thinking_delta" => "thinking",
                    "signature_delta" => {
                        signed = true;
                        "thinking"
                    }
                    "input_json_delta" => "tool_use",
                    other => panic!("unknown delta type {other}"),
                };
                assert_eq!(want, open_type, "a delta of the wrong kind for its block");
                if let Some(t) = v["delta"]["text"].as_str() {
                    text.push_str(t);
                }
            }
            "content_block_stop" => {
                assert_eq!(
                    v["index"].as_u64(),
                    open,
                    "stop for a block that is not open"
                );
                assert!(
                    open_type != "thinking" || signed,
                    "a thinking block closed without a signature_delta"
                );
                open = None;
            }
            "message_delta" => {
                assert!(open.is_none(), "message_delta with a block open");
                stop_reason = v["delta"]["stop_reason"].as_str().map(str::to_owned);
            }
            "message_stop" => {
                assert!(stop_reason.is_some(), "message_stop without a stop_reason");
                assert_eq!(i, fs.len() - 1, "events after message_stop");
                return (text, AnthropicEnd::Complete);
            }
            "error" => {
                assert_eq!(i, fs.len() - 1, "events after an error event");
                return (
                    text,
                    AnthropicEnd::Error(v["error"]["type"].as_str().unwrap().to_owned()),
                );
            }
            "ping" => {}
            other => panic!("unexpected event type {other}"),
        }
    }
    panic!(
        "SILENT TRUNCATION: the stream ended with neither message_stop nor an error event: {}",
        String::from_utf8_lossy(body)
    );
}

/// What an OpenAI stream told the client.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenAiEnd {
    /// finish_reason then `[DONE]`.
    Complete,
    /// An `{"error":…}` chunk, and no `[DONE]`.
    Error(String),
}

pub fn check_openai_stream(body: &[u8]) -> (String, OpenAiEnd) {
    let fs = frames(body);
    let mut text = String::new();
    let mut finish = None;
    for (i, f) in fs.iter().enumerate() {
        let Some(d) = f.data.as_deref() else { continue };
        if d == "[DONE]" {
            assert!(finish.is_some(), "[DONE] without finish_reason");
            assert_eq!(i, fs.len() - 1, "chunks after [DONE]");
            return (text, OpenAiEnd::Complete);
        }
        let v = json(f);
        if let Some(e) = v.get("error") {
            assert_eq!(i, fs.len() - 1, "chunks after the error chunk");
            return (
                text,
                OpenAiEnd::Error(e["message"].as_str().unwrap_or("").to_owned()),
            );
        }
        for c in v["choices"].as_array().unwrap() {
            if let Some(t) = c["delta"]["content"].as_str() {
                text.push_str(t);
            }
            if let Some(r) = c["finish_reason"].as_str() {
                finish = Some(r.to_owned());
            }
        }
    }
    panic!(
        "SILENT TRUNCATION: the stream ended with neither [DONE] nor an error chunk: {}",
        String::from_utf8_lossy(body)
    );
}
