//! The model manager's real download code (`understudy models pull`, a subprocess) against a
//! local server shaped like Hugging Face: a `resolve/REV/FILE` URL that redirects to a CDN with
//! the LFS checksum and size in `x-linked-etag` / `x-linked-size`, and a CDN that honours
//! `Range`. Faults: a connection cut mid-file, a server that stalls (and a pull killed then),
//! and bytes that do not match the checksum.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::Digest;
use std::future::IntoFuture;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_understudy");
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// Cut the connection after this many bytes of the next response, once.
    CutOnce(usize),
    /// Send this many bytes, then nothing, forever.
    Stall(usize),
    /// Flip a byte in the middle.
    Corrupt,
}

/// A request as the hub saw it: path, `Range`, `Authorization`.
type Seen = (String, Option<String>, Option<String>);

struct Hub {
    /// The CDN's origin (another port: another origin, as Hugging Face's CDN is).
    cdn: Mutex<String>,
    data: Vec<u8>,
    sha: String,
    fault: Mutex<Fault>,
    /// (path, Range header, Authorization header) of every request.
    seen: Mutex<Vec<Seen>>,
}

async fn resolve(
    State(hub): State<Arc<Hub>>,
    Path((owner, repo, rev, file)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    record(
        &hub,
        &format!("/{owner}/{repo}/resolve/{rev}/{file}"),
        &headers,
    );
    if file != "m.gguf" {
        return StatusCode::NOT_FOUND.into_response();
    }
    (
        StatusCode::FOUND,
        [
            (
                "location",
                format!("{}/cdn/blob-1", hub.cdn.lock().unwrap()),
            ),
            ("x-linked-etag", format!("\"{}\"", hub.sha)),
            ("x-linked-size", hub.data.len().to_string()),
        ],
    )
        .into_response()
}

fn record(hub: &Hub, path: &str, headers: &HeaderMap) {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    hub.seen
        .lock()
        .unwrap()
        .push((path.to_owned(), h("range"), h("authorization")));
}

async fn cdn(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    record(&hub, "/cdn/blob-1", &headers);
    let len = hub.data.len();
    let start = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<usize>().ok());
    let mut body = hub.data.clone();
    let fault = std::mem::replace(&mut *hub.fault.lock().unwrap(), Fault::None);
    if fault == Fault::Corrupt {
        body[len / 2] ^= 0xff;
    }
    if matches!(fault, Fault::Stall(_)) {
        // Keep stalling for whoever comes next too, until the test says otherwise.
        *hub.fault.lock().unwrap() = fault;
    }
    let (status, from) = match start {
        Some(s) if s >= len => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [("content-range", format!("bytes */{len}"))],
            )
                .into_response()
        }
        Some(s) => (StatusCode::PARTIAL_CONTENT, s),
        None => (StatusCode::OK, 0),
    };
    let rest = body[from..].to_vec();
    let limit = match fault {
        Fault::CutOnce(n) | Fault::Stall(n) => Some(n),
        _ => None,
    };
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = rest
        .chunks(CHUNK)
        .scan(0usize, |sent, c| {
            if limit.is_some_and(|l| *sent >= l) {
                return None;
            }
            *sent += c.len();
            Some(Ok(bytes::Bytes::copy_from_slice(c)))
        })
        .collect();
    let head = futures_util::stream::iter(chunks);
    let tail: futures_util::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>> =
        match fault {
            Fault::CutOnce(_) => Box::pin(futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(std::io::Error::other("cut"))
            })),
            Fault::Stall(_) => Box::pin(futures_util::stream::pending()),
            _ => Box::pin(futures_util::stream::empty()),
        };
    let stream = futures_util::StreamExt::chain(head, tail);
    let mut resp = Response::new(axum::body::Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert("content-length", (len - from).to_string().parse().unwrap());
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            "content-range",
            format!("bytes {from}-{}/{len}", len - 1).parse().unwrap(),
        );
    }
    resp
}

/// A hub serving a GGUF-shaped file of `size` bytes (the magic, version 3, then filler).
async fn start_hub(size: usize) -> (Arc<Hub>, String) {
    let mut data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    data[..8].copy_from_slice(b"GGUF\x03\0\0\0");
    start_hub_serving(data).await
}

/// A hub serving exactly `data`.
async fn start_hub_serving(data: Vec<u8>) -> (Arc<Hub>, String) {
    let sha = format!("{:x}", sha2::Sha256::digest(&data));
    let hub = Arc::new(Hub {
        cdn: Mutex::default(),
        data,
        sha,
        fault: Mutex::new(Fault::None),
        seen: Mutex::default(),
    });
    let app = axum::Router::new()
        .route(
            "/{owner}/{repo}/resolve/{rev}/{file}",
            axum::routing::get(resolve),
        )
        .route("/cdn/blob-1", axum::routing::get(cdn))
        .with_state(hub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let cdn = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    *hub.cdn.lock().unwrap() = format!("http://{}", cdn.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app.clone()).into_future());
    tokio::spawn(axum::serve(cdn, app).into_future());
    (hub, url)
}

fn models_cmd(endpoint: &str, dir: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("models")
        .args(args)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_TOKEN", "hf_secret_token")
        .env("UNDERSTUDY_MODELS_DIR", dir)
        .env("RUST_LOG", "understudy=warn");
    cmd
}

async fn run(endpoint: &str, dir: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = models_cmd(endpoint, dir, args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout {}\nstderr {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn a_pull_that_breaks_off_resumes_with_a_range_request_and_is_verified() {
    let (hub, url) = start_hub(3 << 20).await;
    *hub.fault.lock().unwrap() = Fault::CutOnce(1 << 20);
    let dir = tempfile::tempdir().unwrap();
    let o = run(&url, dir.path(), &["pull", "acme/tiny-GGUF/m.gguf"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let path = dir.path().join("m.gguf");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        path.display().to_string()
    );
    assert_eq!(std::fs::read(&path).unwrap(), hub.data);
    assert!(!dir.path().join("m.gguf.part").exists());
    let seen = hub.seen.lock().unwrap().clone();
    let cdn: Vec<_> = seen.iter().filter(|s| s.0 == "/cdn/blob-1").collect();
    assert_eq!(cdn.len(), 2, "{seen:?}");
    assert_eq!(cdn[0].1, None);
    let resumed_at: u64 = cdn[1]
        .1
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("the second request resumes: {seen:?}"));
    assert!(resumed_at > 0 && resumed_at <= 1 << 20, "{seen:?}");
    // The token goes to the hub, never to the CDN it redirects to.
    assert!(seen
        .iter()
        .filter(|s| s.0.contains("/resolve/"))
        .all(|s| s.2.as_deref() == Some("Bearer hf_secret_token")));
    assert!(cdn.iter().all(|s| s.2.is_none()), "{seen:?}");
    // The record says where it came from and what it hashed to.
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("m.gguf.json")).unwrap()).unwrap();
    assert_eq!(record["sha256"], hub.sha.as_str());
    assert!(record["url"]
        .as_str()
        .unwrap()
        .ends_with("/acme/tiny-GGUF/resolve/main/m.gguf"));
}

#[tokio::test]
async fn a_pull_killed_mid_download_resumes_from_its_partial_file() {
    let (hub, url) = start_hub(2 << 20).await;
    *hub.fault.lock().unwrap() = Fault::Stall(512 * 1024);
    let dir = tempfile::tempdir().unwrap();
    let mut child = models_cmd(&url, dir.path(), &["pull", "acme/tiny-GGUF@0123abc/m.gguf"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let part = dir.path().join("m.gguf.part");
    let mut had = 0;
    for _ in 0..300 {
        had = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if had >= 512 * 1024 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(had, 512 * 1024, "the pull wrote what the server sent");
    // A second pull of the same file while the first runs would garble it: refused.
    let o = run(&url, dir.path(), &["pull", "acme/tiny-GGUF@0123abc/m.gguf"]).await;
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("another pull of m.gguf is running"),
        "{}",
        text(&o)
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !dir.path().join("m.gguf").exists(),
        "nothing half-done is a model"
    );
    *hub.fault.lock().unwrap() = Fault::None;
    let o = run(&url, dir.path(), &["pull", "acme/tiny-GGUF@0123abc/m.gguf"]).await;
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(dir.path().join("m.gguf")).unwrap(), hub.data);
    let seen = hub.seen.lock().unwrap().clone();
    assert!(seen
        .iter()
        .any(|s| s.0 == "/acme/tiny-GGUF/resolve/0123abc/m.gguf"));
    let last = seen.iter().rev().find(|s| s.0 == "/cdn/blob-1").unwrap();
    assert_eq!(last.1.as_deref(), Some("bytes=524288-"), "{seen:?}");
}

#[tokio::test]
async fn a_corrupted_download_is_rejected_and_deleted() {
    let (hub, url) = start_hub(1 << 20).await;
    *hub.fault.lock().unwrap() = Fault::Corrupt;
    let dir = tempfile::tempdir().unwrap();
    let o = run(&url, dir.path(), &["pull", "acme/tiny-GGUF/m.gguf"]).await;
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("SHA-256") && err.contains(&hub.sha) && err.contains("deleted"),
        "{err}"
    );
    assert!(!dir.path().join("m.gguf").exists());
    assert!(!dir.path().join("m.gguf.part").exists());
    // A missing file is a clear 404, and the token never shows in any message.
    let o = run(&url, dir.path(), &["pull", "acme/tiny-GGUF/other.gguf"]).await;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("HTTP 404"), "{err}");
    assert!(!text(&o).contains("hf_secret_token"));
}

/// A file that is not a model (an error page served as 200, the 27-byte reply of a stray
/// server) is refused and deleted, however well it downloaded and matched its checksum.
#[tokio::test]
async fn a_file_that_is_not_gguf_is_refused_and_deleted() {
    let (_hub, url) = start_hub_serving(b"<html>not a model</html>\n\n\n".to_vec()).await;
    let dir = tempfile::tempdir().unwrap();
    let o = run(&url, dir.path(), &["pull", "acme/tiny-GGUF/m.gguf"]).await;
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is not a model") && err.contains("GGUF magic") && err.contains("deleted"),
        "{err}"
    );
    assert!(!dir.path().join("m.gguf").exists());
    assert!(!dir.path().join("m.gguf.part").exists());
}

#[tokio::test]
async fn use_list_and_rm_choose_the_model_zero_config_loads() {
    let (_hub, url) = start_hub(256 * 1024).await;
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        &url,
        dir.path(),
        &["pull", "--use", "acme/tiny-GGUF/m.gguf"],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&url, dir.path(), &["list", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["installed"][0]["file"], "m.gguf", "{v}");
    assert_eq!(v["installed"][0]["default"], true, "{v}");
    assert!(v["catalog"].as_array().unwrap().len() >= 4);
    // Zero config's local provider now loads the chosen model.
    let home = tempfile::tempdir().unwrap();
    let check = Command::new(BIN)
        .args(["config", "check"])
        .env_clear()
        .env("HOME", home.path())
        .env("UNDERSTUDY_MODELS_DIR", dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        out.contains(&format!(
            "provider local (local) at model {}",
            dir.path().join("m.gguf").display()
        )),
        "{out}"
    );
    let o = run(&url, dir.path(), &["use", "nothing.gguf"]).await;
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("installed: m.gguf"),
        "{}",
        text(&o)
    );
    let o = run(&url, dir.path(), &["rm", "m.gguf"]).await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("the default is SmolLM2"),
        "{}",
        text(&o)
    );
    assert!(!dir.path().join("m.gguf").exists());
    assert!(!dir.path().join("m.gguf.json").exists());
    assert!(!dir.path().join("default-model").exists());
}

/// `models pull --recommended` asks for the catalog's best fit for this machine's memory (the
/// one `models list` marks), at its pinned revision. The hub here has no such file: the pull
/// fails, saying so, and leaves nothing behind.
#[tokio::test]
async fn the_recommended_pull_asks_for_the_best_fit_at_its_revision() {
    let (hub, url) = start_hub(1024).await;
    let dir = tempfile::tempdir().unwrap();
    let o = run(&url, dir.path(), &["pull", "--recommended"]).await;
    assert!(!o.status.success(), "{}", text(&o));
    let best = understudy::models::recommended(understudy::models::total_memory_gb());
    let seen: Vec<String> = hub
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.0.clone())
        .collect();
    match best {
        Some(e) => {
            let path = format!(
                "/{}/resolve/{}/{}",
                e.repo.as_deref().unwrap(),
                e.revision.as_deref().unwrap(),
                e.file
            );
            assert_eq!(seen.first(), Some(&path), "{}", text(&o));
            assert!(
                String::from_utf8_lossy(&o.stderr).contains(&e.name),
                "{}",
                text(&o)
            );
            let listed = run(&url, dir.path(), &["list", "--json"]).await;
            let v: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
            let marked: Vec<&str> = v["catalog"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["recommended"] == true)
                .map(|c| c["name"].as_str().unwrap())
                .collect();
            assert_eq!(marked, [e.name.as_str()]);
        }
        None => assert!(
            String::from_utf8_lossy(&o.stderr).contains("fits this machine's memory"),
            "{}",
            text(&o)
        ),
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|f| !f
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".gguf")));
}
