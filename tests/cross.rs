//! Any client to any provider over real HTTP: Anthropic, OpenAI and Ollama clients served by
//! Anthropic, OpenAI-compatible and Gemini mocks, including truncation, error mapping,
//! keep-alives and bad input.

use crate::support::{
    check_anthropic_stream, check_openai_stream, client, post, AnthropicEnd, Harness, OpenAiEnd,
};
use serde_json::{json, Value};
use understudy::testing::{anthropic, gemini, openai, MockCloud, Reply};

/// The key the translated calls use (translation never forwards the client's credentials).
const KEY_VAR: &str = "UNDERSTUDY_TEST_CROSS_KEY";
const KEY: &str = "sk-cross-test-key-4242";

/// Each provider alone on its routes, not going on from its own broken answers: a break is
/// the dialect's explicit error.
fn config(mock: &MockCloud, extra_server: &str) -> String {
    std::env::set_var(KEY_VAR, KEY);
    format!(
        r#"
[server]
{extra_server}

[providers.anthropic]
kind = "anthropic"
base_url = "{url}"
api_key_env = "{KEY_VAR}"
continuation = "off"
timeouts = {{ first_byte = "2s", idle = "2s" }}

[providers.openai]
kind = "openai"
base_url = "{url}/v1"
api_key_env = "{KEY_VAR}"
continuation = "off"
timeouts = {{ first_byte = "2s", idle = "2s" }}

[providers.gemini]
kind = "gemini"
base_url = "{url}"
api_key_env = "{KEY_VAR}"
continuation = "off"
timeouts = {{ first_byte = "2s", idle = "2s" }}

[[routes]]
model = "claude-via-openai"
backends = ["openai/gpt-4o"]

[[routes]]
model = "claude-via-gemini"
backends = ["gemini/gemini-2.5-pro"]

[[routes]]
model = "sonnet"
backends = ["anthropic/claude-sonnet-4-5"]

[[routes]]
model = "claude-checked"
backends = ["openai/gpt-4o", "anthropic/claude-sonnet-4-5"]

[[routes]]
model = "claude-*"
backends = ["anthropic"]
"#,
        url = mock.url()
    )
}

async fn start(extra_server: &str) -> Harness {
    let mock = MockCloud::start().await;
    let toml = config(&mock, extra_server);
    crate::support::start_config(mock, &toml).await
}

fn fixture(path: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/upstream/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

async fn send(h: &Harness, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", h.url))
        .header("x-api-key", "client-own-key")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .json(body)
        .send()
        .await
        .unwrap()
}

fn claude_code_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 32000, "stream": stream,
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.330; cc_entrypoint=cli"},
                   {"type": "text", "text": "You are Claude Code."}],
        "tools": [{"name": "Read", "description": "Read a file", "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]}},
                  {"name": understudy::testing::transcript::LONG_TOOL_NAME, "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "read main.rs", "cache_control": {"type": "ephemeral"}}]}]})
}

#[tokio::test]
async fn claude_code_gets_parallel_tool_calls_from_an_openai_upstream() {
    let h = start("").await;
    h.mock
        .push(Reply::sse([fixture("openai/tools_parallel.sse")]));
    let r = send(
        &h,
        "/v1/messages?beta=true",
        &claude_code_body("claude-via-openai", true),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-understudy-served-by"], "openai");
    let body = r.bytes().await.unwrap();
    let (_, end) = check_anthropic_stream(&body);
    assert_eq!(end, AnthropicEnd::Complete);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains(r#""name":"Read""#)
            && text.contains(understudy::testing::transcript::LONG_TOOL_NAME),
        "{text}"
    );
    assert!(text.contains(r#""stop_reason":"tool_use""#), "{text}");

    let req = &h.mock.requests()[0];
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert!(
        req.header("anthropic-beta").is_none() && req.header("x-api-key").is_none(),
        "client headers must not travel to another API"
    );
    let up: Value = serde_json::from_str(&req.body).unwrap();
    assert_eq!(up["model"], "gpt-4o");
    assert_eq!(
        up["max_tokens"], 16_384,
        "32000 is clamped to gpt-4o's limit"
    );
    assert_eq!(up["stream_options"]["include_usage"], true);
    assert_eq!(
        up["messages"][0],
        json!({"role": "system", "content": "You are Claude Code."}),
        "attribution block dropped"
    );
    let short = up["tools"][1]["function"]["name"].as_str().unwrap();
    assert!(short.len() <= 64 && short != understudy::testing::transcript::LONG_TOOL_NAME);
}

/// An upstream's tool call that does not match the schema the client sent (here `Read`
/// without its required `file_path`) is an upstream fault, never a call Claude Code runs:
/// alone on its route it is an explicit error; with another backend behind it, that backend
/// answers.
#[tokio::test]
async fn a_tool_call_that_violates_its_schema_is_an_upstream_fault() {
    let h = start("").await;
    let bad = fixture("openai/tools_parallel.sse").replace(r#"\"file_path\":"#, r#"\"path\":"#);
    assert_ne!(bad, fixture("openai/tools_parallel.sse"));
    h.mock.push(Reply::sse([bad.clone()]));
    let r = send(
        &h,
        "/v1/messages",
        &claude_code_body("claude-via-openai", true),
    )
    .await;
    let body = String::from_utf8_lossy(&r.bytes().await.unwrap()).into_owned();
    assert!(!body.contains("tool_use"), "no call delivered: {body}");
    assert!(
        body.contains("tool `Read` does not match its input schema: the required property `file_path` is missing"),
        "{body}"
    );

    h.mock.push(Reply::sse([bad]));
    h.mock
        .push(Reply::sse([fixture("anthropic/tools_parallel.sse")]));
    let r = send(
        &h,
        "/v1/messages",
        &claude_code_body("claude-checked", true),
    )
    .await;
    assert_eq!(r.headers()["x-understudy-served-by"], "anthropic");
    let body = r.bytes().await.unwrap();
    let (_, end) = check_anthropic_stream(&body);
    assert_eq!(end, AnthropicEnd::Complete);
    assert!(String::from_utf8_lossy(&body).contains("tool_use"));
}

#[tokio::test]
async fn claude_code_gets_tool_calls_from_gemini_and_the_signature_goes_back() {
    let h = start("").await;
    h.mock
        .push(Reply::sse([fixture("gemini/tools_parallel.sse")]));
    let r = send(
        &h,
        "/v1/messages",
        &claude_code_body("claude-via-gemini", false),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["stop_reason"], "tool_use");
    let call = &v["content"][1];
    assert_eq!(
        (call["type"].as_str(), call["name"].as_str()),
        (Some("tool_use"), Some("Read"))
    );
    assert_eq!(call["input"], json!({"file_path": "main.rs"}));
    let req = &h.mock.requests()[0];
    assert_eq!(
        req.path,
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    );
    assert_eq!(req.header("x-goog-api-key"), Some(KEY));

    // The next turn sends the call back: Gemini must get its thought signature with it.
    let id = call["id"].as_str().unwrap();
    let mut next = claude_code_body("claude-via-gemini", false);
    next["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": [v["content"][0].clone(), call.clone()]}),
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "fn main() {}"}]}),
    ]);
    let r = send(&h, "/v1/messages", &next).await;
    assert_eq!(r.status(), 200);
    let up: Value = serde_json::from_str(&h.mock.requests()[1].body).unwrap();
    let model_turn = &up["contents"][1];
    assert_eq!(model_turn["role"], "model");
    assert_eq!(model_turn["parts"][1]["thoughtSignature"], "CiQBcsjafQ==");
    assert_eq!(
        up["contents"][2]["parts"][0]["functionResponse"]["name"],
        "Read"
    );
}

#[tokio::test]
async fn an_openai_client_gets_tool_calls_from_an_anthropic_upstream() {
    let h = start("").await;
    h.mock
        .push(Reply::sse([fixture("anthropic/tools_parallel.sse")]));
    let body = json!({"model": "sonnet", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "read both"}],
        "tools": [{"type": "function", "function": {"name": "Read", "parameters": {"type": "object"}}}]});
    let r = client()
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth("ide-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    let (text, end) = check_openai_stream(&bytes);
    assert_eq!(end, OpenAiEnd::Complete);
    assert_eq!(text, "Reading both files.");
    let s = String::from_utf8_lossy(&bytes);
    assert!(
        s.contains(r#""tool_calls":[{"index":1,"id":"toolu_01B""#),
        "{s}"
    );
    assert!(
        s.contains(r#""finish_reason":"tool_calls""#) && s.contains(r#""cached_tokens":4000"#),
        "{s}"
    );
    let req = &h.mock.requests()[0];
    assert_eq!(req.path, "/v1/messages");
    assert_eq!(req.header("x-api-key"), Some(KEY));
    assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));
    assert!(req.header("authorization").is_none());
    let up: Value = serde_json::from_str(&req.body).unwrap();
    assert_eq!(up["system"], json!([{"type": "text", "text": "Be brief."}]));
    assert_eq!(
        up["max_tokens"], 8192,
        "Anthropic needs a limit; the default is used"
    );
}

#[tokio::test]
async fn an_ollama_client_chats_and_discovers_models() {
    let h = start("").await;
    h.mock
        .push(Reply::sse([fixture("anthropic/thinking_tool.sse")]));
    let body = json!({"model": "sonnet", "messages": [{"role": "user", "content": "list files"}],
        "tools": [{"type": "function", "function": {"name": "Bash", "parameters": {"type": "object"}}}]});
    let r = post(&h.url, "/api/chat", &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.last().unwrap()["done"], true);
    let call = lines
        .iter()
        .find_map(|l| l["message"]["tool_calls"].get(0))
        .expect("a tool call line");
    assert_eq!(
        call["function"],
        json!({"name": "Bash", "arguments": {"command": "ls"}})
    );

    let tags: Value = client()
        .get(format!("{}/api/tags", h.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"sonnet"), "{tags}");
    let show: Value = post(&h.url, "/api/show", &json!({"model": "sonnet"}))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        show["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("tools")),
        "{show}"
    );
    assert_eq!(show["model_info"]["understudy.context_length"], 200_000);
    let version: Value = client()
        .get(format!("{}/api/version", h.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(version["version"]
        .as_str()
        .unwrap()
        .split('.')
        .all(|p| p.parse::<u32>().is_ok()));
    let models: Value = client()
        .get(format!("{}/v1/models", h.url))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"claude-sonnet") && ids.contains(&"claude-via-openai"),
        "Claude Code keeps only ids with 'claude': {ids:?}"
    );
}

#[tokio::test]
async fn truncation_after_the_first_content_is_an_explicit_error_in_every_dialect() {
    let h = start("").await;
    // Anthropic client, OpenAI upstream that stops mid tool call after some text.
    let cut = openai::text_stream("gpt-4o", &["Hel", "lo"], "stop")[..3].concat();
    h.mock.push(Reply::sse([cut]));
    let body = send(
        &h,
        "/v1/messages",
        &claude_code_body("claude-via-openai", true),
    )
    .await
    .bytes()
    .await
    .unwrap();
    assert!(matches!(
        check_anthropic_stream(&body).1,
        AnthropicEnd::Error(_)
    ));
    // OpenAI client, Anthropic upstream cut inside a block.
    h.mock
        .push(Reply::sse([fixture("anthropic/truncated_in_block.sse")]));
    let r = post(
        &h.url,
        "/v1/chat/completions",
        &json!({"model": "sonnet", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let (text, end) = check_openai_stream(&r.bytes().await.unwrap());
    assert_eq!(text, "Half an ans");
    assert!(matches!(end, OpenAiEnd::Error(_)));
    // Ollama client, Gemini upstream without finishReason.
    let mut g = h.mock.requests().len();
    h.mock.push(Reply::sse([fixture("gemini/truncated.sse")]));
    let text = post(
        &h.url,
        "/api/chat",
        &json!({"model": "claude-via-gemini",
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .text()
    .await
    .unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains("completion signal"),
        "{text}"
    );
    g += 1;
    assert_eq!(h.mock.requests().len(), g);
}

#[tokio::test]
async fn a_failure_before_any_content_is_a_real_http_error() {
    let h = start("").await;
    h.mock
        .push(Reply::sse([openai::text_stream("gpt-4o", &["x"], "stop")
            [0]
        .clone()]));
    let r = send(
        &h,
        "/v1/messages",
        &claude_code_body("claude-via-openai", true),
    )
    .await;
    assert_eq!(
        r.status(),
        502,
        "nothing was committed, so the client can retry on a clean status"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
}

#[tokio::test]
async fn upstream_errors_map_to_each_clients_shape() {
    let h = start("").await;
    h.mock.push(Reply::json(400, &json!({"error": {"message": "This model's maximum context length is 128000 tokens. However, your messages resulted in 130532 tokens.",
        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})));
    let r = send(
        &h,
        "/v1/messages",
        &claude_code_body("claude-via-openai", true),
    )
    .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(
        v["error"]["message"],
        "prompt is too long: 130532 tokens > 128000 maximum"
    );

    h.mock.push(
        Reply::json(
            503,
            &openai::error("server_error", "The engine is currently overloaded"),
        )
        .header("retry-after", "7"),
    );
    let r = send(
        &h,
        "/v1/messages",
        &claude_code_body("claude-via-openai", true),
    )
    .await;
    assert_eq!(r.status(), 529);
    assert_eq!(r.headers()["retry-after"], "7");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "overloaded_error");

    h.mock.push(Reply::json(
        429,
        &gemini::error(429, "RESOURCE_EXHAUSTED", "Quota exceeded"),
    ));
    let r = post(
        &h.url,
        "/v1/chat/completions",
        &json!({"model": "claude-via-gemini",
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Quota exceeded"),
        "{v}"
    );

    h.mock.push(Reply::json(
        529,
        &anthropic::error("overloaded_error", "Overloaded"),
    ));
    let r = post(
        &h.url,
        "/api/chat",
        &json!({"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("Overloaded"), "{v}");
}

#[tokio::test]
async fn a_silent_upstream_gets_keepalive_pings() {
    let h = start("keepalive = \"100ms\"").await;
    let events = anthropic::text_stream("claude-sonnet-4-5", &["slow", " answer"], "end_turn");
    // The first content arrives, then the upstream goes quiet for 700 ms.
    h.mock.push(Reply::sse(events).gate(4, "quiet"));
    let mock = h.mock.url();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        client()
            .post(format!("{mock}/_mock/gates/quiet"))
            .send()
            .await
            .unwrap();
    });
    let r = post(
        &h.url,
        "/v1/chat/completions",
        &json!({"model": "sonnet", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let body = r.bytes().await.unwrap();
    let (text, end) = check_openai_stream(&body);
    assert_eq!((text.as_str(), end), ("slow answer", OpenAiEnd::Complete));
    let pings = String::from_utf8_lossy(&body).matches(": ping").count();
    assert!(
        pings >= 3,
        "expected keep-alives during 700 ms of silence, got {pings}"
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_or_is_handled() {
    let h = start("").await;
    // Malformed JSON, in each dialect's error shape.
    let r = client()
        .post(format!("{}/api/chat", h.url))
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("not valid JSON"),
        "{v}"
    );
    // A tool_result with no tool_use before it.
    let mut body = claude_code_body("claude-via-openai", false);
    body["messages"] = json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_nope", "content": "x"}]}]);
    let r = send(&h, "/v1/messages", &body).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("toolu_nope"),
        "{v}"
    );
    assert!(
        h.mock.requests().is_empty(),
        "a bad request never reaches the provider"
    );
    // Unknown content block types are dropped, not fatal.
    let mut body = claude_code_body("claude-via-openai", false);
    body["messages"][0]["content"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "hologram_2031", "data": 1}));
    let r = send(&h, "/v1/messages", &body).await;
    assert_eq!(r.status(), 200);
    // A 10 MB image reaches the upstream whole, as a data URL.
    let data = "A".repeat(10 * 1024 * 1024);
    let mut body = claude_code_body("claude-via-openai", false);
    body["messages"][0]["content"].as_array_mut().unwrap().push(json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}));
    let r = send(&h, "/v1/messages", &body).await;
    assert_eq!(r.status(), 200);
    let up: Value = serde_json::from_str(&h.mock.requests().last().unwrap().body).unwrap();
    let url = up["messages"][1]["content"][1]["image_url"]["url"]
        .as_str()
        .unwrap();
    assert_eq!(url.len(), "data:image/png;base64,".len() + data.len());
    // A body over the limit is refused in the client's dialect before it is read.
    let h = start("max_body_bytes = 65536").await;
    let r = client()
        .post(format!("{}/api/chat", h.url))
        .body(vec![b' '; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
}

#[tokio::test]
async fn autocomplete_and_embeddings_reach_a_provider_that_has_them() {
    let h = start("").await;
    // Legacy completions to a chat-only upstream: the suffix becomes a fill-in-the-middle turn.
    let r = post(
        &h.url,
        "/v1/completions",
        &json!({"model": "sonnet", "prompt": "fn main() {", "suffix": "}", "stream": true}),
    )
    .await;
    let body = r.bytes().await.unwrap();
    let (text, end) = check_openai_stream(&body);
    assert_eq!(end, OpenAiEnd::Complete);
    assert!(String::from_utf8_lossy(&body).contains("text_completion"));
    let _ = text;
    let up: Value = serde_json::from_str(&h.mock.requests()[0].body).unwrap();
    assert_eq!(
        up["messages"][0]["content"][0]["text"],
        "<PREFIX>fn main() {</PREFIX><SUFFIX>}</SUFFIX>"
    );
    // Legacy completions to an OpenAI-compatible upstream pass through.
    let r = post(
        &h.url,
        "/v1/completions",
        &json!({"model": "openai/gpt-3.5-turbo-instruct", "prompt": "a"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(h.mock.requests()[1].path, "/v1/completions");
    // Embeddings: OpenAI-compatible and Gemini have them, Anthropic does not.
    let r = post(
        &h.url,
        "/v1/embeddings",
        &json!({"model": "openai/text-embedding-3-small", "input": "hi"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["data"][0]["embedding"][1],
        -0.5
    );
    let r = post(
        &h.url,
        "/v1/embeddings",
        &json!({"model": "gemini/text-embedding-004", "input": "hi"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        h.mock.requests().last().unwrap().path,
        "/v1beta/openai/embeddings"
    );
    let r = post(
        &h.url,
        "/v1/embeddings",
        &json!({"model": "sonnet", "input": "hi"}),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("no provider that has embeddings"));
}

#[tokio::test]
async fn the_same_api_answers_on_the_ollama_port() {
    // A free port: bind, read it, let it go (the gateway binds it again at once).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let h = start(&format!("ollama_listen = \"127.0.0.1:{port}\"")).await;
    let ollama = format!("http://127.0.0.1:{port}");
    let mut version = None;
    for _ in 0..50 {
        if let Ok(r) = client().get(format!("{ollama}/api/version")).send().await {
            version = Some(r.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(version.expect("the Ollama port answers")["version"].is_string());
    assert_eq!(
        client()
            .get(&ollama)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "Ollama is running"
    );
    h.mock.push(Reply::sse([fixture("anthropic/text.sse")]));
    let r = client()
        .post(format!("{ollama}/api/chat"))
        .json(&json!({"model": "sonnet", "stream": false,
        "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["message"]["content"], "Hello, wörld — ☃");
    assert_eq!(
        (v["done"].as_bool(), v["eval_count"].as_u64()),
        (Some(true), Some(12))
    );
}

#[tokio::test]
async fn a_silent_passthrough_upstream_gets_keepalive_pings_too() {
    let h = start("keepalive = \"100ms\"").await;
    let events = openai::text_stream("gpt-4o", &["slow", " answer"], "stop");
    h.mock.push(Reply::sse(events).gate(2, "quiet"));
    let mock = h.mock.url();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        client()
            .post(format!("{mock}/_mock/gates/quiet"))
            .send()
            .await
            .unwrap();
    });
    let r = post(
        &h.url,
        "/v1/chat/completions",
        &json!({"model": "openai/gpt-4o", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.headers()["x-understudy-served-by"], "openai");
    let body = r.bytes().await.unwrap();
    let (text, end) = check_openai_stream(&body);
    assert_eq!((text.as_str(), end), ("slow answer", OpenAiEnd::Complete));
    let pings = String::from_utf8_lossy(&body).matches(": ping").count();
    assert!(
        pings >= 3,
        "expected keep-alives during 700 ms of silence, got {pings}"
    );
}
