//! The models a developer already has (issue 15): GGUF files in folders shaped like Ollama's
//! store, LM Studio's models folder, the Hugging Face cache and llama.cpp's cache, listed with
//! the context this machine gives each, used in place by `models use` and answering; and local
//! model servers (mocks shaped like Ollama, LM Studio and llama-server) that zero config puts
//! before the embedded model.

use crate::cli::{spawn_serve, terminate};
use crate::support::{get_json, post};
use serde_json::{json, Value};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use understudy::testing::{anthropic, LocalShape, MockCloud, Reply};

const BIN: &str = env!("CARGO_BIN_EXE_understudy");
/// SmolLM2's SHA-256 (models/catalog.toml): its name as an Ollama blob.
const SMOL_SHA: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

fn smol() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(understudy::config::DEFAULT_MODEL_FILE)
}

fn put(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn link(target: &Path, at: &Path) {
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    symlink(target, at).unwrap();
}

/// A HOME holding SmolLM2 in each store's layout, with what each store also holds that is not
/// a model to offer: a cloud model's manifest, a vision projector, an older snapshot, an ETag.
fn stores(home: &Path) {
    let ollama = home.join(".ollama/models");
    let manifest = json!({"schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": format!("sha256:{}", "1".repeat(64)), "size": 483},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": format!("sha256:{SMOL_SHA}"), "size": 98362432},
            {"mediaType": "application/vnd.ollama.image.template", "digest": format!("sha256:{}", "2".repeat(64)), "size": 136}]});
    put(
        &ollama.join("manifests/registry.ollama.ai/library/smol/latest"),
        &manifest.to_string(),
    );
    put(
        &ollama.join("manifests/registry.ollama.ai/library/gpt-oss/120b-cloud"),
        &json!({"schemaVersion": 2, "layers": []}).to_string(),
    );
    link(&smol(), &ollama.join(format!("blobs/sha256-{SMOL_SHA}")));

    let studio = home.join(".lmstudio/models/lmstudio-community/SmolLM2-135M-Instruct-GGUF");
    link(&smol(), &studio.join("SmolLM2-135M-Instruct-Q4_1.gguf"));
    put(&studio.join("mmproj-SmolLM2-f16.gguf"), "GGUF");

    let repo =
        home.join(".cache/huggingface/hub/models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF");
    put(&repo.join("refs/main"), "abc123\n");
    link(&smol(), &repo.join(format!("blobs/{SMOL_SHA}")));
    link(
        Path::new(&format!("../../blobs/{SMOL_SHA}")),
        &repo.join("snapshots/abc123/smollm2-135m-instruct-q4_1.gguf"),
    );
    link(&smol(), &repo.join("snapshots/0ld000/old-q4_1.gguf"));

    let flat = home.join(".cache/llama.cpp");
    link(
        &smol(),
        &flat.join("ggml-org_SmolLM2-GGUF_smollm2-q4_1.gguf"),
    );
    put(
        &flat.join("ggml-org_SmolLM2-GGUF_smollm2-q4_1.gguf.etag"),
        "\"abc\"",
    );
}

fn models_cmd(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("models")
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("UNDERSTUDY_MODELS_DIR", home.join("models"))
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap()
}

fn listed(home: &Path) -> Value {
    let out = models_cmd(home, &["list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn models_in_other_tools_stores_are_listed_used_in_place_and_answer() {
    let home = tempfile::tempdir().unwrap();
    stores(home.path());
    let v = listed(home.path());
    let names: Vec<&str> = v["found"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q4_1.gguf",
            "llama.cpp:ggml-org_SmolLM2-GGUF_smollm2-q4_1.gguf",
            "lmstudio:lmstudio-community/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-Q4_1.gguf",
            "ollama:smol:latest",
        ],
        "{v}"
    );
    for f in v["found"].as_array().unwrap() {
        assert_eq!(f["size"], 98362432, "{f}");
        // SmolLM2 (trained for 8192) gets Claude Code's 32768 on a machine with the memory.
        assert_eq!(f["context"], 32768, "{f}");
        assert!(
            f["context_why"]
                .as_str()
                .unwrap()
                .contains("trained for 8192"),
            "{f}"
        );
    }

    // By the store's own name; recorded as the blob's path, not copied.
    let out = models_cmd(home.path(), &["use", "smol:latest"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("ollama:smol:latest") && said.contains("in place"),
        "{said}"
    );
    let v = listed(home.path());
    let chosen: Vec<&str> = v["found"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["default"] == true)
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(chosen, ["ollama:smol:latest"]);
    assert!(std::fs::read_dir(home.path().join("models"))
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".gguf")));
    let bad = models_cmd(home.path(), &["use", "nothing:here"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Ollama, LM Studio"));

    // Zero config now runs it as its local model.
    let (child, url) = spawn_serve(
        &[],
        &[
            (
                "UNDERSTUDY_MODELS_DIR",
                home.path().join("models").to_str().unwrap(),
            ),
            ("UNDERSTUDY_LOCAL_SERVERS", ""),
        ],
        home.path(),
    );
    let body = json!({"model": "local", "max_tokens": 8, "temperature": 0,
        "messages": [{"role": "user", "content": "Say hi."}]});
    let r = post(&url, "/v1/messages", &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-understudy-served-by"], "local");
    let status = get_json(&url, "/api/status").await;
    assert_eq!(
        status["local"]["model"],
        home.path()
            .join(format!(".ollama/models/blobs/sha256-{SMOL_SHA}"))
            .to_str()
            .unwrap(),
        "{status}"
    );
    terminate(child);

    // Ollama removes it: the models directory's own default serves, rather than nothing.
    link(
        &smol(),
        &home
            .path()
            .join("models")
            .join(understudy::config::DEFAULT_MODEL_FILE),
    );
    std::fs::remove_file(
        home.path()
            .join(format!(".ollama/models/blobs/sha256-{SMOL_SHA}")),
    )
    .unwrap();
    let check = Command::new(BIN)
        .args(["config", "check"])
        .env_clear()
        .env("HOME", home.path())
        .env("UNDERSTUDY_MODELS_DIR", home.path().join("models"))
        .env("UNDERSTUDY_LOCAL_SERVERS", "")
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success()
            && said.contains(&format!(
                "models/{}",
                understudy::config::DEFAULT_MODEL_FILE
            )),
        "{said} {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// The providers a gateway runs, by name.
async fn provider_names(url: &str) -> Vec<String> {
    get_json(url, "/api/status").await["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

// Multi-threaded: the gateway, started synchronously, probes the mock while the test waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_local_server_answers_before_the_embedded_model() {
    let home = tempfile::tempdir().unwrap();
    let models = home.path().join("models");
    link(
        &smol(),
        &models.join(understudy::config::DEFAULT_MODEL_FILE),
    );
    let models = models.to_str().unwrap().to_owned();
    for (shape, kind, model) in [
        (
            LocalShape::Ollama(vec!["qwen3:8b".into(), "llama3.2:3b".into()]),
            "ollama",
            "qwen3:8b",
        ),
        (
            LocalShape::LmStudio(vec!["qwen/qwen3-4b".into(), "qwen/qwen3-8b".into()]),
            "lmstudio",
            // The one loaded.
            "qwen/qwen3-8b",
        ),
        (
            LocalShape::LlamaServer("Qwen3-8B-Q4_K_M.gguf".into()),
            "llama-server",
            "Qwen3-8B-Q4_K_M.gguf",
        ),
    ] {
        let server = MockCloud::start().await;
        server.act_as(Some(shape));
        // Every kind is asked at this one address; only the matching one answers as itself.
        let addr = server.addr().to_string();
        let servers = format!("ollama={addr},lmstudio={addr},llama-server={addr}");
        let (child, url) = spawn_serve(
            &[],
            &[
                ("UNDERSTUDY_MODELS_DIR", &models),
                ("UNDERSTUDY_LOCAL_SERVERS", &servers),
            ],
            home.path(),
        );
        let names = provider_names(&url).await;
        assert!(
            names.contains(&kind.to_owned()) && names.contains(&"local".to_owned()),
            "{kind}: {names:?}"
        );
        assert_eq!(
            names
                .iter()
                .filter(|n| *n != "anthropic" && *n != "local")
                .count(),
            1,
            "{kind}: {names:?}"
        );
        let body = json!({"model": "local", "max_tokens": 8,
            "messages": [{"role": "user", "content": "Say hi."}]});
        let r = post(&url, "/v1/messages", &body).await;
        assert_eq!(r.status(), 200, "{kind}");
        if r.headers()["x-understudy-served-by"] != kind {
            let (_, log) = terminate(child);
            panic!(
                "{kind}: served by {:?}; the gateway's log:\n{log}",
                r.headers()["x-understudy-served-by"]
            );
        }
        let asked: Vec<Value> = server
            .requests()
            .iter()
            .filter(|q| q.path == "/v1/messages")
            .map(|q| serde_json::from_str(&q.body).unwrap())
            .collect();
        assert_eq!(asked.len(), 1, "{kind}");
        assert_eq!(asked[0]["model"], model, "{kind}");
        // Its own model's name routes to it too.
        let r = post(
            &url,
            "/v1/messages",
            &json!({"model": model, "max_tokens": 8,
            "messages": [{"role": "user", "content": "Hi."}]}),
        )
        .await;
        assert_eq!(r.headers()["x-understudy-served-by"], kind);

        if kind == "ollama" {
            // Its runner crashes: the embedded model answers.
            server.push(Reply::json(
                500,
                &anthropic::error("api_error", "model runner has unexpectedly stopped"),
            ));
            let r = post(&url, "/v1/messages", &body).await;
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["x-understudy-served-by"], "local");
        }
        let (_, log) = terminate(child);
        // Ollama's model runs at its default 4,096 tokens: the log says how to give it more.
        assert_eq!(
            log.contains("OLLAMA_CONTEXT_LENGTH"),
            kind == "ollama",
            "{kind}: {log}"
        );
    }

    // A file can turn it off.
    let server = MockCloud::start().await;
    server.act_as(Some(LocalShape::Ollama(vec!["qwen3:8b".into()])));
    let cfg = home.path().join("config.toml");
    std::fs::write(&cfg, "[server]\nlocal_servers = false\n").unwrap();
    let servers = format!("ollama={}", server.addr());
    let (child, url) = spawn_serve(
        &["--config", cfg.to_str().unwrap()],
        &[
            ("UNDERSTUDY_MODELS_DIR", &models),
            ("UNDERSTUDY_LOCAL_SERVERS", &servers),
        ],
        home.path(),
    );
    assert!(!provider_names(&url).await.contains(&"ollama".to_owned()));
    terminate(child);
}
