//! The models a developer already has: GGUF files in other tools' stores (Ollama, LM Studio,
//! the Hugging Face cache, llama.cpp's cache), usable without a copy, and local model servers
//! already running (Ollama, LM Studio, llama-server), which zero config puts before the embedded
//! model. Each store's layout and each server's fingerprint are in ARCHITECTURE.md with their
//! sources.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Whose store a model was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Store {
    /// Ollama's manifests and blobs.
    Ollama,
    /// LM Studio's models folder.
    LmStudio,
    /// The Hugging Face hub cache (also llama.cpp's cache since it moved there).
    HuggingFace,
    /// llama.cpp's older flat `-hf` cache.
    LlamaCpp,
}

impl Store {
    /// The prefix of its models' names (`ollama:qwen3:8b`).
    pub fn prefix(self) -> &'static str {
        match self {
            Store::Ollama => "ollama",
            Store::LmStudio => "lmstudio",
            Store::HuggingFace => "hf",
            Store::LlamaCpp => "llama.cpp",
        }
    }
}

/// A GGUF model found in another tool's store.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Found {
    /// Its name for `models use`: the store's prefix and its own name there
    /// (`ollama:qwen3:8b`, `lmstudio:lmstudio-community/Qwen3-8B-GGUF/Qwen3-8B-Q4_K_M.gguf`,
    /// `hf:unsloth/Qwen3-8B-GGUF/Qwen3-8B-Q4_K_M.gguf`, `llama.cpp:ggml-org_x_y.gguf`).
    pub name: String,
    /// The file (a blob, a snapshot's link target…), used in place.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Where it was found.
    pub store: Store,
}

impl Found {
    /// Whether `spec` names it: the whole name, or the store's own name (`qwen3:8b`).
    pub fn is(&self, spec: &str) -> bool {
        self.name == spec
            || self
                .name
                .strip_prefix(self.store.prefix())
                .and_then(|n| n.strip_prefix(':'))
                == Some(spec)
    }
}

/// Where each store is looked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roots {
    /// Ollama's models directories (holding `manifests/` and `blobs/`).
    pub ollama: Vec<PathBuf>,
    /// LM Studio's models folders (`<publisher>/<repo>/<file>.gguf`).
    pub lmstudio: Vec<PathBuf>,
    /// Hugging Face hub caches (`models--<org>--<repo>/`).
    pub hf: Vec<PathBuf>,
    /// llama.cpp's flat caches.
    pub llama_cpp: Vec<PathBuf>,
}

fn var(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

impl Roots {
    /// This user's: each tool's environment variables, else its defaults under `HOME`.
    pub fn here() -> Roots {
        let home = var("HOME").unwrap_or_default();
        let cache = var("XDG_CACHE_HOME").unwrap_or_else(|| home.join(".cache"));
        let ollama = match var("OLLAMA_MODELS") {
            Some(d) => vec![d],
            // A user install, and the systemd service's (its user's home is /usr/share/ollama).
            None => vec![
                home.join(".ollama/models"),
                PathBuf::from("/usr/share/ollama/.ollama/models"),
            ],
        };
        let hf = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
            .unwrap_or_else(|| cache.join("huggingface/hub"));
        let mut hf = vec![hf];
        let mut llama_cpp = vec![cache.join("llama.cpp")];
        // LLAMA_CACHE is llama.cpp's one cache: flat before March 2026, the hub layout since.
        if let Some(l) = var("LLAMA_CACHE") {
            hf.push(l.clone());
            llama_cpp.insert(0, l);
        }
        Roots {
            ollama,
            lmstudio: vec![lmstudio_models(&home)],
            hf,
            llama_cpp,
        }
    }
}

/// LM Studio's models folder: `downloadsFolder` in its home's settings.json, else the home's
/// `models/`. The home: `LMSTUDIO_HOME`, else the path in `~/.lmstudio-home-pointer`, else
/// `~/.cache/lm-studio` where it exists (the old home), else `~/.lmstudio`.
fn lmstudio_models(home: &Path) -> PathBuf {
    let studio = var("LMSTUDIO_HOME")
        .or_else(|| {
            let p = std::fs::read_to_string(home.join(".lmstudio-home-pointer")).ok()?;
            Some(PathBuf::from(p.trim())).filter(|p| !p.as_os_str().is_empty())
        })
        .or_else(|| Some(home.join(".cache/lm-studio")).filter(|p| p.is_dir()))
        .unwrap_or_else(|| home.join(".lmstudio"));
    std::fs::read(studio.join("settings.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["downloadsFolder"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| studio.join("models"))
}

/// Every model in every store of `roots`, by name.
pub fn scan(roots: &Roots) -> Vec<Found> {
    let mut out = Vec::new();
    for d in &roots.ollama {
        ollama(d, &mut out);
    }
    for d in &roots.lmstudio {
        lmstudio(d, &mut out);
    }
    for d in &roots.hf {
        hub(d, &mut out);
    }
    for d in &roots.llama_cpp {
        flat(d, &mut out);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    // The same file reached twice (LLAMA_CACHE also the hub cache): once.
    out.dedup_by(|a, b| a.name == b.name);
    out
}

/// The model `spec` names (its whole name or the store's own), if any store has it.
pub fn find(roots: &Roots, spec: &str) -> Option<Found> {
    scan(roots).into_iter().find(|f| f.is(spec))
}

/// A file worth offering: a GGUF that is not a vision projector and not a later shard of a
/// split model (llama.cpp loads the `-00001-of-` shard and finds the rest).
fn is_model_file(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".gguf") else {
        return false;
    };
    if name.to_ascii_lowercase().contains("mmproj") {
        return false;
    }
    match stem.rsplit_once("-of-") {
        Some((head, total)) if total.len() == 5 && total.bytes().all(|b| b.is_ascii_digit()) => {
            head.ends_with("-00001")
        }
        _ => true,
    }
}

fn size_of(path: &Path) -> Option<u64> {
    // Followed: hub snapshots are links into blobs/.
    std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

/// The entries of `path` that are folders (`folders`), or that are not, in name order.
fn entries(path: &Path, folders: bool) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() == folders)
        .collect();
    out.sort();
    out
}

fn dirs(path: &Path) -> Vec<PathBuf> {
    entries(path, true)
}

fn files(path: &Path) -> Vec<PathBuf> {
    entries(path, false)
}

fn file_name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

/// Ollama: `manifests/<host>/<namespace>/<model>/<tag>` (exactly four levels), each naming its
/// weights layer (`application/vnd.ollama.image.model`) by digest, stored as
/// `blobs/sha256-<64 hex>`. Models without such a layer (cloud models, tensor layers) are not
/// single GGUF files and are left out.
fn ollama(root: &Path, out: &mut Vec<Found>) {
    for host in dirs(&root.join("manifests")) {
        for ns in dirs(&host) {
            for model in dirs(&ns) {
                for tag in files(&model) {
                    let Some(path) = ollama_blob(root, &tag) else {
                        continue;
                    };
                    let Some(size) = size_of(&path) else { continue };
                    let (h, n, m, t) = (
                        file_name(&host),
                        file_name(&ns),
                        file_name(&model),
                        file_name(&tag),
                    );
                    // As Ollama shows it: the default host and `library` namespace dropped.
                    let shown = match (h, n) {
                        ("registry.ollama.ai", "library") => format!("{m}:{t}"),
                        ("registry.ollama.ai", _) => format!("{n}/{m}:{t}"),
                        _ => format!("{h}/{n}/{m}:{t}"),
                    };
                    out.push(Found {
                        name: format!("ollama:{shown}"),
                        path,
                        size,
                        store: Store::Ollama,
                    });
                }
            }
        }
    }
}

/// The weights blob a manifest names, if it is there.
fn ollama_blob(root: &Path, manifest: &Path) -> Option<PathBuf> {
    let text = std::fs::read(manifest).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let digest = v["layers"]
        .as_array()?
        .iter()
        .find(|l| l["mediaType"] == "application/vnd.ollama.image.model")?["digest"]
        .as_str()?;
    let hex = digest.strip_prefix("sha256:")?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(root.join("blobs").join(format!("sha256-{hex}")))
}

/// LM Studio: `<publisher>/<repo>/<file>.gguf`.
fn lmstudio(root: &Path, out: &mut Vec<Found>) {
    for publisher in dirs(root) {
        for repo in dirs(&publisher) {
            for f in files(&repo) {
                let name = file_name(&f);
                if !is_model_file(name) {
                    continue;
                }
                let Some(size) = size_of(&f) else { continue };
                out.push(Found {
                    name: format!(
                        "lmstudio:{}/{}/{name}",
                        file_name(&publisher),
                        file_name(&repo)
                    ),
                    path: f.clone(),
                    size,
                    store: Store::LmStudio,
                });
            }
        }
    }
}

/// The hub cache: `models--<org>--<repo>/snapshots/<commit>/…`, the commit `refs/main` names
/// (else every snapshot there is).
fn hub(root: &Path, out: &mut Vec<Found>) {
    for repo in dirs(root) {
        let Some(id) = file_name(&repo).strip_prefix("models--") else {
            continue;
        };
        let id = id.replacen("--", "/", 1);
        let main = std::fs::read_to_string(repo.join("refs/main"))
            .ok()
            .map(|s| repo.join("snapshots").join(s.trim()))
            .filter(|p| p.is_dir());
        let snapshots = match main {
            Some(m) => vec![m],
            None => dirs(&repo.join("snapshots")),
        };
        for snap in snapshots {
            let mut stack = vec![snap.clone()];
            while let Some(d) = stack.pop() {
                stack.extend(dirs(&d));
                for f in files(&d) {
                    if !is_model_file(file_name(&f)) {
                        continue;
                    }
                    let Some(size) = size_of(&f) else { continue };
                    let rel = f.strip_prefix(&snap).unwrap_or(&f).to_string_lossy();
                    out.push(Found {
                        name: format!("hf:{id}/{rel}"),
                        path: f.clone(),
                        size,
                        store: Store::HuggingFace,
                    });
                }
            }
        }
    }
}

/// llama.cpp's flat cache: `<owner>_<repo>_<file>.gguf` beside `.etag` files.
fn flat(root: &Path, out: &mut Vec<Found>) {
    for f in files(root) {
        let name = file_name(&f);
        if !is_model_file(name) {
            continue;
        }
        let Some(size) = size_of(&f) else { continue };
        out.push(Found {
            name: format!("llama.cpp:{name}"),
            path: f.clone(),
            size,
            store: Store::LlamaCpp,
        });
    }
}

/// Which kind of local server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerKind {
    /// Ollama (`GET /` says "Ollama is running").
    Ollama,
    /// LM Studio (`/api/v1/models`, or models `owned_by` "organization_owner").
    LmStudio,
    /// llama.cpp's llama-server (models `owned_by` "llamacpp").
    LlamaServer,
}

impl ServerKind {
    /// Its provider name in zero config.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Ollama => "ollama",
            ServerKind::LmStudio => "lmstudio",
            ServerKind::LlamaServer => "llama-server",
        }
    }

    /// The product, as people name it.
    pub fn product(self) -> &'static str {
        match self {
            ServerKind::Ollama => "Ollama",
            ServerKind::LmStudio => "LM Studio",
            ServerKind::LlamaServer => "llama.cpp's llama-server",
        }
    }
}

/// A local model server that answered, and the model it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// What it is.
    pub kind: ServerKind,
    /// Its base URL (`http://127.0.0.1:11434`); each serves Anthropic's `/v1/messages` there.
    pub url: String,
    /// The model to ask for: one loaded, else the first pulled.
    pub model: String,
}

/// Where local servers are looked for: each one's default port, or `UNDERSTUDY_LOCAL_SERVERS`
/// (`ollama=127.0.0.1:11434,lmstudio=…,llama-server=…`; only those named are asked).
pub fn server_addresses() -> Vec<(ServerKind, String)> {
    let kinds = [
        ServerKind::Ollama,
        ServerKind::LmStudio,
        ServerKind::LlamaServer,
    ];
    match std::env::var("UNDERSTUDY_LOCAL_SERVERS") {
        Ok(list) => {
            let mut out: Vec<(ServerKind, String)> = Vec::new();
            for item in list.split(',') {
                let Some((k, addr)) = item.trim().split_once('=') else {
                    continue;
                };
                let Some(kind) = kinds.into_iter().find(|kind| kind.name() == k.trim()) else {
                    continue;
                };
                // One of each kind (its provider's name): the first given.
                if !out.iter().any(|(seen, _)| *seen == kind) {
                    out.push((kind, addr.trim().to_owned()));
                }
            }
            out
        }
        Err(_) => vec![
            (ServerKind::Ollama, "127.0.0.1:11434".into()),
            (ServerKind::LmStudio, "127.0.0.1:1234".into()),
            (ServerKind::LlamaServer, "127.0.0.1:8080".into()),
        ],
    }
}

/// How long an answer to [`servers`] is reused: config is read synchronously, also on a
/// reload inside the runtime, which should not wait on the probes each time.
const PROBE_REUSE: Duration = Duration::from_secs(30);

/// The local servers answering at `addresses` with a model to serve. A closed port costs a
/// refused connection; a port held by something else is given 300 ms. The same addresses asked
/// again within [`PROBE_REUSE`] get the same answer without asking.
pub fn servers(addresses: &[(ServerKind, String)]) -> Vec<Server> {
    type Seen = (std::time::Instant, Vec<(ServerKind, String)>, Vec<Server>);
    static LAST: std::sync::Mutex<Option<Seen>> = std::sync::Mutex::new(None);
    if let Some((at, asked, found)) = LAST.lock().expect("probe cache").as_ref() {
        if asked == addresses && at.elapsed() < PROBE_REUSE {
            return found.clone();
        }
    }
    let found = probe(addresses);
    *LAST.lock().expect("probe cache") =
        Some((std::time::Instant::now(), addresses.to_vec(), found.clone()));
    found
}

fn probe(addresses: &[(ServerKind, String)]) -> Vec<Server> {
    addresses
        .iter()
        .filter_map(|(kind, addr)| {
            let model = match kind {
                ServerKind::Ollama => ollama_model(addr),
                ServerKind::LmStudio => lmstudio_model(addr),
                ServerKind::LlamaServer => llama_server_model(addr),
            }?;
            Some(Server {
                kind: *kind,
                url: format!("http://{addr}"),
                model,
            })
        })
        .collect()
}

/// A plain HTTP/1.1 GET on loopback: the status, the headers (lower-cased names) and the body.
fn get(addr: &str, path: &str) -> Option<(u16, String, Vec<u8>)> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let limit = Duration::from_millis(300);
    let sock = addr.to_socket_addrs().ok()?.next()?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, limit).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    s.set_write_timeout(Some(limit)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    // Read until the body is whole (by its length, its last chunk, or the end): a server
    // that keeps the connection open anyway costs nothing. A model list is small; a server
    // that sends more is not one of these.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let (split, head) = loop {
        let n = s.read(&mut chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break (at, String::from_utf8_lossy(&buf[..at]).to_ascii_lowercase());
        }
        if buf.len() > 64 << 10 {
            return None;
        }
    };
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &buf[split + 4..];
        let whole = match length {
            Some(n) => body.len() >= n,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if whole || buf.len() > 4 << 20 {
            break;
        }
        match s.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = buf[split + 4..].to_vec();
    if let Some(n) = length {
        body.truncate(n);
    }
    if chunked {
        body = dechunk(&body)?;
    }
    Some((status, head, body))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

fn get_json(addr: &str, path: &str) -> Option<(String, serde_json::Value)> {
    let (status, head, body) = get(addr, path)?;
    (status == 200)
        .then(|| serde_json::from_slice(&body).ok().map(|v| (head, v)))
        .flatten()
}

/// Whether a model list entry is for chat (not an embedding model).
fn chats(id: &str, v: &serde_json::Value) -> bool {
    let caps = v["capabilities"].as_array();
    let embeds = id.to_ascii_lowercase().contains("embed")
        || v["type"] == "embedding"
        || v["type"] == "embeddings";
    !embeds && caps.is_none_or(|c| c.iter().any(|x| x == "completion"))
}

/// Ollama: it says "Ollama is running" at `/`; the model loaded (`/api/ps`), else the first
/// pulled (`/api/tags`, newest first) that is local (not a cloud model) and chats.
fn ollama_model(addr: &str) -> Option<String> {
    let (status, _, body) = get(addr, "/")?;
    if status != 200 || !String::from_utf8_lossy(&body).contains("Ollama is running") {
        return None;
    }
    let pick = |path: &str| -> Option<String> {
        let (_, v) = get_json(addr, path)?;
        v["models"].as_array()?.iter().find_map(|m| {
            let name = m["name"].as_str().or_else(|| m["model"].as_str())?;
            let local = m.get("remote_host").is_none_or(|h| h.is_null());
            (local && chats(name, m)).then(|| name.to_owned())
        })
    };
    let loaded =
        get_json(addr, "/api/ps").and_then(|(_, v)| v["models"].as_array()?.first().cloned());
    // Ollama gives a model 4,096 tokens of context unless told otherwise, less than Claude
    // Code's first prompt: say so where it can be seen.
    if let Some(n) = loaded.as_ref().and_then(|m| m["context_length"].as_u64()) {
        if n < u64::from(crate::fit::CLAUDE_CODE_CONTEXT) {
            tracing::warn!(server = addr, context = n, "Ollama runs its model with less context than Claude Code needs; set OLLAMA_CONTEXT_LENGTH=32768 (or more) for the Ollama service");
        }
    }
    pick("/api/ps").or_else(|| pick("/api/tags"))
}

/// LM Studio: its REST list (`/api/v1/models`, 0.4+), a model loaded first, else the first
/// LLM; older versions, its OpenAI list whose models are `owned_by` "organization_owner".
fn lmstudio_model(addr: &str) -> Option<String> {
    if let Some((_, v)) = get_json(addr, "/api/v1/models") {
        let models = v["models"].as_array()?;
        let llms: Vec<&serde_json::Value> = models
            .iter()
            .filter(|m| m["type"] == "llm" && m["key"].is_string())
            .collect();
        let loaded = llms.iter().find(|m| {
            m["loaded_instances"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
        });
        return loaded
            .or(llms.first())
            .and_then(|m| m["key"].as_str().map(str::to_owned));
    }
    let (_, v) = get_json(addr, "/v1/models")?;
    v["data"].as_array()?.iter().find_map(|m| {
        let id = m["id"].as_str()?;
        (m["owned_by"] == "organization_owner" && chats(id, m)).then(|| id.to_owned())
    })
}

/// llama-server: its one model (`/v1/models`, `owned_by` "llamacpp"), once `/health` says it
/// has loaded.
fn llama_server_model(addr: &str) -> Option<String> {
    let (head, v) = get_json(addr, "/v1/models")?;
    let first = v["data"].as_array()?.first()?;
    let ours = first["owned_by"] == "llamacpp" || head.contains("\r\nserver: llama.cpp");
    let (health, _, _) = get(addr, "/health")?;
    (ours && health == 200)
        .then(|| first["id"].as_str().map(str::to_owned))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_files_skip_projectors_and_later_shards() {
        assert!(is_model_file("Qwen3-8B-Q4_K_M.gguf"));
        assert!(is_model_file("big-00001-of-00003.gguf"));
        assert!(!is_model_file("big-00002-of-00003.gguf"));
        assert!(!is_model_file("mmproj-model-f16.gguf"));
        assert!(!is_model_file("model.gguf.etag"));
        assert!(!is_model_file("x.safetensors"));
    }

    #[test]
    fn chunked_bodies_are_read() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n6;x=1\r\n world\r\n0\r\n\r\n").unwrap(),
            b"hello world"
        );
        assert!(dechunk(b"5\r\nhel").is_none());
    }

    #[test]
    fn names_match_whole_or_as_the_store_says_them() {
        let f = Found {
            name: "ollama:qwen3:8b".into(),
            path: PathBuf::new(),
            size: 0,
            store: Store::Ollama,
        };
        assert!(f.is("ollama:qwen3:8b") && f.is("qwen3:8b"));
        assert!(!f.is("qwen3") && !f.is("8b"));
    }
}
