//! The real `understudy` binary as a subprocess: config checking, zero config, graceful
//! shutdown, and keys that never reach the log.

use crate::support::*;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use understudy::testing::{anthropic, html_page, End, MockCloud, Reply, DEFAULT_PARTS};

const BIN: &str = env!("CARGO_BIN_EXE_understudy");

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    f
}

/// Starts `understudy serve` with a clean environment and returns it with its URL.
pub(crate) fn spawn_serve(
    args: &[&str],
    env: &[(&str, &str)],
    home: &std::path::Path,
) -> (Child, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env(
            "UNDERSTUDY_ADMIN_TOKEN_FILE",
            crate::support::admin_token_file(),
        )
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // No probing this machine's Ollama, LM Studio or llama-server unless a test asks.
        .env("UNDERSTUDY_LOCAL_SERVERS", "")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("understudy listening on ")
        .unwrap_or_else(|| {
            let mut err = String::new();
            child
                .stderr
                .as_mut()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("no listening line; stdout {line:?}, stderr {err}")
        })
        .to_owned();
    (child, url)
}

pub(crate) fn terminate(mut child: Child) -> (std::process::ExitStatus, String) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, err)
}

fn config_check(f: &tempfile::NamedTempFile) -> std::process::Output {
    Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(f.path())
        .output()
        .unwrap()
}

#[test]
fn config_check_reports_every_problem_with_its_toml_path() {
    let f = write_config(
        "[providers.a]\nkind = \"gpt\"\n[providers.b]\nkind = \"openai\"\nbase_url = \"ftp://x\"\napi_key_env = \"B_KEY\"\n\
         [[routes]]\nmodel = \"m\"\nbackends = [\"c/model\"]\n",
    );
    let out = config_check(&f);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for path in [
        "providers.a.kind:",
        "providers.b.base_url:",
        "routes[0].backends[0]:",
    ] {
        assert!(err.contains(path), "missing {path} in {err}");
    }
    assert!(
        err.contains(&f.path().display().to_string()),
        "names the file: {err}"
    );

    let f = write_config("[providers.a]\nkind = \"anthropic\"\npassthrough_auth = true\n[[routes]]\nmodel = \"claude-*\"\nbackends = [\"a\"]\n");
    let out = config_check(&f);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("OK (1 providers, 1 routes)") && text.contains("route claude-* -> a"),
        "{text}"
    );
}

#[test]
fn serve_refuses_an_invalid_config_and_says_how_to_check_it() {
    let f = write_config("[server]\nlisten = \"nowhere\"\n");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(f.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.listen") && err.contains("understudy config check"),
        "{err}"
    );
}

#[tokio::test]
async fn zero_config_starts_with_no_file_and_no_keys_and_stops_cleanly_on_sigterm() {
    let home = tempfile::tempdir().unwrap();
    let token_file = home.path().join("config/understudy/admin-token");
    let env = [("UNDERSTUDY_ADMIN_TOKEN_FILE", token_file.to_str().unwrap())];
    let (child, url) = spawn_serve(&[], &env, home.path());
    let v = get_json(&url, "/healthz").await;
    assert_eq!(v["status"], "ok");
    // An OpenAI model with no OPENAI_API_KEY in the environment: no route, and the error says so.
    let r = client()
        .post(format!("{url}/v1/chat/completions"))
        .json(&openai_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // `understudy status` reads the running gateway, with the admin token the gateway made in
    // the user's config dir (0600); without it, the admin API refuses the same call.
    let token_file = home.path().join("config/understudy/admin-token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the admin token is private");
    let out = Command::new(BIN)
        .args(["status", "--url", &url])
        .env_remove("UNDERSTUDY_ADMIN_TOKEN_FILE")
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = reqwest::get(format!("{url}/api/status")).await.unwrap();
    assert_eq!(refused.status(), 401);
    // Whether api.anthropic.com can be reached from here is this machine's business (the
    // start-up check finds out): the line says what it found, and never "healthy" unused.
    assert!(
        text.starts_with(&format!(
            "Understudy {} at {url}: mode auto, network ",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("  anthropic        anthropic  "))
        .unwrap_or_else(|| panic!("{text}"));
    let state = &line["  anthropic        anthropic  ".len()..];
    assert!(
        [
            "not checked yet",
            "reachable, no requests yet",
            "unreachable",
            "unreachable (offline)"
        ]
        .iter()
        .any(|w| state.starts_with(w)),
        "{text}"
    );
    let (status, log) = terminate(child);
    assert!(status.success(), "exit {status:?}: {log}");
    assert!(
        log.contains("zero config") && log.contains("stopped"),
        "{log}"
    );
    // With nothing running there, it says so and how to start it.
    let out = Command::new(BIN)
        .args(["status", "--url", &url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("Understudy is not answering at {url}"))
            && err.contains("scripts/run"),
        "{err}"
    );
}

/// API keys, the configured one and the client's own, appear nowhere in a debug log of a run
/// that exercises success, upstream errors, an HTML page, truncation and a missing key.
#[tokio::test]
async fn keys_never_reach_the_log() {
    const CONFIGURED: &str = "sk-ant-CONFIGURED-SECRET-0123456789";
    const CLIENT: &str = "sk-client-CLIENT-SECRET-9876543210";
    let mock = MockCloud::start().await;
    let cfg = write_config(&format!(
        "[providers.anthropic]\nkind = \"anthropic\"\nbase_url = \"{url}\"\napi_key_env = \"UNDERSTUDY_LOG_TEST_KEY\"\n\
         [providers.passthru]\nkind = \"anthropic\"\nbase_url = \"{url}\"\npassthrough_auth = \"{url}\"\n\
         [providers.nokey]\nkind = \"openai\"\nbase_url = \"{url}/v1\"\napi_key_env = \"UNDERSTUDY_LOG_TEST_UNSET\"\n\
         [[routes]]\nmodel = \"claude-*\"\nbackends = [\"anthropic\"]\n\
         [[routes]]\nmodel = \"pt-*\"\nbackends = [\"passthru\"]\n\
         [[routes]]\nmodel = \"gpt-*\"\nbackends = [\"nokey\"]\n",
        url = mock.url()
    ));
    let home = tempfile::tempdir().unwrap();
    let (child, url) = spawn_serve(
        &["--config", cfg.path().to_str().unwrap()],
        &[
            ("UNDERSTUDY_LOG_TEST_KEY", CONFIGURED),
            ("RUST_LOG", "trace"),
        ],
        home.path(),
    );
    mock.push(Reply::json(
        529,
        &anthropic::error("overloaded_error", "Overloaded"),
    ));
    mock.push(Reply::raw(502, "text/html", html_page(502)));
    mock.push(
        Reply::sse(anthropic::text_stream(
            "claude-sonnet-4-5",
            DEFAULT_PARTS,
            "end_turn",
        ))
        .truncate(5)
        .end(End::Reset),
    );
    let c = client();
    for model in [
        "claude-sonnet-4-5",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5",
        "pt-model",
        "gpt-5",
    ] {
        let mut body = anthropic_body(true);
        body["model"] = model.into();
        let path = if model.starts_with("gpt") {
            "/v1/chat/completions"
        } else {
            "/v1/messages"
        };
        let r = c
            .post(format!("{url}{path}"))
            .header("x-api-key", CLIENT)
            .bearer_auth(CLIENT)
            .json(&body)
            .send()
            .await
            .unwrap();
        let _ = r.bytes().await;
    }
    let sent: Vec<_> = mock
        .requests()
        .iter()
        .map(|r| {
            let model = serde_json::from_str::<serde_json::Value>(&r.body).unwrap_or_default()
                ["model"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            (model, r.header("x-api-key").unwrap_or("").to_owned())
        })
        .collect();
    assert_eq!(sent[0].1, CONFIGURED, "the configured key was used");
    // The truncated stream was continued on the same backend, with the configured key too.
    assert!(sent.len() >= 5, "{sent:?}");
    let passed = sent
        .iter()
        .find(|(m, _)| m == "pt-model")
        .expect("pt-model sent");
    assert_eq!(
        passed.1, CLIENT,
        "the passthrough provider got the client's key"
    );
    let (status, log) = terminate(child);
    assert!(status.success());
    assert!(
        log.contains("outcome=\"truncated\"")
            || log.contains("outcome=\"transport\"")
            || log.contains("the connection broke mid-stream"),
        "the log records the failures: {log}"
    );
    assert!(
        log.contains("UNDERSTUDY_LOG_TEST_UNSET"),
        "the log names the missing variable"
    );
    for secret in [CONFIGURED, CLIENT, "CONFIGURED-SECRET", "CLIENT-SECRET"] {
        assert!(!log.contains(secret), "a key leaked into the log:\n{log}");
    }
}

/// The README's complete config example stays a valid config.
#[test]
fn the_readme_config_example_is_valid() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- config-example")
        .expect("marker in README");
    let block = &readme[start..];
    let body = &block[block.find("```toml\n").unwrap() + 8..];
    let toml = &body[..body.find("```").unwrap()];
    let f = write_config(toml);
    let out = config_check(&f);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("OK (6 providers, 3 routes)"), "{text}");
}

fn kill9(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

async fn requests_of(url: &str) -> Vec<serde_json::Value> {
    let v = get_json(url, "/api/requests?limit=1000").await;
    v["requests"].as_array().unwrap().clone()
}

/// The journal (in the platform data dir by default) survives a clean restart, and a
/// `kill -9` in the middle of a burst of writes leaves a file SQLite finds intact, whose ids go
/// on where they stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_survives_a_restart_and_a_kill_in_the_middle_of_writing() {
    let mock = MockCloud::start().await;
    let home = tempfile::tempdir().unwrap();
    let cfg = write_config(&format!(
        "[providers.anthropic]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key_env = \"UNDERSTUDY_J_KEY\"\n",
        mock.url()
    ));
    let args = ["--config", cfg.path().to_str().unwrap()];
    let env = [("UNDERSTUDY_J_KEY", "sk-test")];
    let (child, url) = spawn_serve(&args, &env, home.path());
    // The key's plan, as the unified headers report it (shown by `status` below).
    mock.set_plan(Some(understudy::testing::Plan {
        per_request: 0.3,
        window_ms: 3_600_000,
        headers: understudy::testing::PlanHeaders::Unified,
    }));
    for _ in 0..3 {
        let r = post(&url, "/v1/messages", &anthropic_body(false)).await;
        assert_eq!(r.status(), 200);
    }
    mock.set_plan(None);
    // The terminal view has the figures too, and the plan's windows.
    let out = Command::new(BIN)
        .args(["status", "--url", &url])
        .env("UNDERSTUDY_ADMIN_TOKEN_FILE", admin_token_file())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("  3 requests, 0 failed over, 0 continued, 0 failed")
            && text.contains("anthropic/claude-sonnet-4-5 closed (ttft p50/p95 ")
            && text.contains("ms, 3 requests, 0 % errors, 0 truncated)")
            && text.contains("plan: 5-hour 90 %, resets in ")
            && text.contains(" · week 9 %"),
        "{text}"
    );
    let (status, log) = terminate(child);
    assert!(status.success(), "{log}");
    let journal = home.path().join(".local/share/understudy/journal.sqlite3");
    assert!(journal.exists(), "the default journal file: {log}");

    let (child, url) = spawn_serve(&args, &env, home.path());
    let before = requests_of(&url).await;
    assert_eq!(before.len(), 3, "the feed comes back from the journal");
    assert_eq!(before[0]["id"], 3);
    assert_eq!(before[0]["served_by"], "anthropic/claude-sonnet-4-5");
    assert_eq!(before[0]["outcome"], "complete");

    // A burst of requests, and the gateway killed while it answers and journals them.
    let mut tasks = Vec::new();
    // (Fewer than a listen backlog's 128 at once, so none waits on a dropped SYN.)
    for _ in 0..100 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            post(&url, "/v1/messages", &anthropic_body(false))
                .await
                .status()
        }));
    }
    let written = async {
        while requests_of(&url).await.len() < 30 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), written)
        .await
        .expect("30 requests answered and journaled within a minute");
    kill9(child);
    for t in tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), t)
            .await
            .expect("a request to a killed gateway ends");
    }

    let conn = rusqlite::Connection::open(&journal).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let kept: i64 = conn
        .query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0))
        .unwrap();
    assert!(kept >= 3, "what was written before stays: {kept}");
    drop(conn);

    let (child, url) = spawn_serve(&args, &env, home.path());
    let last = requests_of(&url).await[0]["id"].as_u64().unwrap();
    assert_eq!(last as i64, kept, "ids are dense: nothing half-written");
    let r = post(&url, "/v1/messages", &anthropic_body(false)).await;
    assert_eq!(r.status(), 200);
    let mut after = Vec::new();
    for _ in 0..100 {
        after = requests_of(&url).await;
        if after[0]["id"].as_u64() == Some(last + 1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        after[0]["id"].as_u64(),
        Some(last + 1),
        "ids go on after the crash"
    );
    let (status, log) = terminate(child);
    assert!(status.success(), "{log}");
}

fn settings_of(home: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(home.join(".claude/settings.json")).unwrap()).unwrap()
}

/// `serve --connect-claude-code` points Claude Code's user settings here, keeping everything
/// else; a clean stop restores them, and after a `kill -9` the next start does.
#[tokio::test]
async fn claude_code_settings_are_restored_when_the_gateway_stops_and_after_a_crash() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".claude")).unwrap();
    let original = serde_json::json!({
        "model": "opus",
        "env": {"DISABLE_TELEMETRY": "1"},
        "permissions": {"allow": ["Bash(git status)"]}
    });
    std::fs::write(
        home.path().join(".claude/settings.json"),
        serde_json::to_vec_pretty(&original).unwrap(),
    )
    .unwrap();

    let (child, url) = spawn_serve(&["--connect-claude-code"], &[], home.path());
    let s = settings_of(home.path());
    assert_eq!(s["env"]["ANTHROPIC_BASE_URL"], url.as_str());
    assert_eq!(s["env"]["DISABLE_TELEMETRY"], "1");
    assert_eq!(s["model"], "opus");
    assert_eq!(s["permissions"], original["permissions"]);
    assert!(home
        .path()
        .join(".claude/settings.json.understudy-backup")
        .exists());
    let status = get_json(&url, "/api/status").await;
    assert_eq!(status["claude_code"]["connected"], true);
    let (code, log) = terminate(child);
    assert!(code.success(), "{log}");
    assert_eq!(
        settings_of(home.path()),
        original,
        "restored on a clean stop"
    );

    // A crash in the middle of a session leaves the settings pointing at a dead gateway …
    let (child, url) = spawn_serve(&["--connect-claude-code"], &[], home.path());
    kill9(child);
    assert_eq!(
        settings_of(home.path())["env"]["ANTHROPIC_BASE_URL"],
        url.as_str()
    );
    // … until the next start, which restores them before it serves.
    let (child, _) = spawn_serve(&[], &[], home.path());
    assert_eq!(
        settings_of(home.path()),
        original,
        "restored at the next start"
    );
    assert!(!home
        .path()
        .join(".claude/understudy-connection.json")
        .exists());
    let (code, log) = terminate(child);
    assert!(code.success(), "{log}");
    assert!(log.contains("restored Claude Code's settings"), "{log}");

    // The dashboard's button does the same through the API, and the stop undoes it.
    let (child, url) = spawn_serve(&[], &[], home.path());
    let r = client()
        .put(format!("{url}/api/claude-code"))
        .json(&serde_json::json!({"connected": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        settings_of(home.path())["env"]["ANTHROPIC_BASE_URL"],
        url.as_str()
    );
    let (code, log) = terminate(child);
    assert!(code.success(), "{log}");
    assert_eq!(settings_of(home.path()), original);
}
