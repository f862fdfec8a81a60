//! Passthrough fidelity, headers, routing and the localhost guard.

use crate::support::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use understudy::testing::{anthropic, openai, MockCloud, Reply, DEFAULT_PARTS};

#[tokio::test]
async fn a_complete_anthropic_stream_reaches_the_client_byte_for_byte() {
    let h = start().await;
    let events = anthropic::text_stream("claude-sonnet-4-5", DEFAULT_PARTS, "end_turn");
    // Cut the upstream's bytes at awkward places: mid-line, mid-JSON, between \n and \n.
    let joined = events.concat();
    let pieces: Vec<String> = joined
        .as_bytes()
        .chunks(37)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    h.mock.push(Reply::sse(pieces));
    let resp = post(&h.url, "/v1/messages?beta=true", &anthropic_body(true)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-understudy-served-by"], "anthropic");
    let body = resp.bytes().await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&body),
        joined,
        "passthrough must not change a byte"
    );
    assert_eq!(
        check_anthropic_stream(&body),
        (DEFAULT_PARTS.concat(), AnthropicEnd::Complete)
    );
}

#[tokio::test]
async fn a_complete_openai_stream_reaches_the_client_byte_for_byte() {
    let h = start().await;
    let events = openai::text_stream("gpt-5", DEFAULT_PARTS, "stop");
    h.mock.push(Reply::sse(events.clone()));
    let body = client()
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth("k")
        .json(&openai_body(true))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&body), events.concat());
    assert_eq!(
        check_openai_stream(&body),
        (DEFAULT_PARTS.concat(), OpenAiEnd::Complete)
    );
}

#[tokio::test]
async fn a_final_message_delta_without_message_stop_is_completed_with_message_stop() {
    let h = start().await;
    let mut events = anthropic::text_stream("claude-sonnet-4-5", DEFAULT_PARTS, "end_turn");
    events.pop();
    h.mock.push(Reply::sse(events));
    let body = post(&h.url, "/v1/messages", &anthropic_body(true))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(check_anthropic_stream(&body).1, AnthropicEnd::Complete);
}

/// Events are forwarded as they arrive, not buffered until the upstream finishes: the mock
/// holds the rest of the stream behind a gate that opens only after the client saw the start.
#[tokio::test]
async fn streams_are_forwarded_as_they_arrive() {
    let h = start_with("").await;
    let events = anthropic::text_stream("claude-sonnet-4-5", DEFAULT_PARTS, "end_turn");
    h.mock.push(Reply::sse(events).gate(4, "rest"));
    let resp = post(&h.url, "/v1/messages", &anthropic_body(true)).await;
    let mut stream = resp.bytes_stream();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\"Hello\"") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
            .await
            .expect("the first delta must arrive while the upstream is still holding the rest")
            .unwrap()
            .unwrap();
        seen.extend_from_slice(&chunk);
    }
    h.mock.open_gate("rest");
    while let Some(c) = stream.next().await {
        seen.extend_from_slice(&c.unwrap());
    }
    assert_eq!(check_anthropic_stream(&seen).1, AnthropicEnd::Complete);
}

#[tokio::test]
async fn claude_code_headers_travel_verbatim_and_upstream_headers_come_back() {
    let h = start().await;
    h.mock.push(
        Reply::json(200, &anthropic::message("claude-sonnet-4-5", "ok"))
            .header("request-id", "req_abc")
            .header("anthropic-ratelimit-unified-status", "allowed"),
    );
    let resp = client()
        .post(format!("{}/v1/messages?beta=true", h.url))
        .header("x-api-key", "client-key")
        .header("anthropic-version", "2023-06-01")
        .header(
            "anthropic-beta",
            "claude-code-20250219,context-management-2025-06-27",
        )
        .header("x-claude-code-session-id", "sess-1")
        .header("accept-encoding", "gzip, br")
        .json(&anthropic_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["request-id"], "req_abc");
    assert_eq!(
        resp.headers()["anthropic-ratelimit-unified-status"],
        "allowed"
    );
    let req = &h.mock.requests()[0];
    assert_eq!(req.path, "/v1/messages?beta=true");
    assert_eq!(
        req.header("anthropic-beta"),
        Some("claude-code-20250219,context-management-2025-06-27")
    );
    assert_eq!(req.header("x-claude-code-session-id"), Some("sess-1"));
    assert_eq!(
        req.header("x-api-key"),
        Some("client-key"),
        "passthrough of the client's own key"
    );
    assert_eq!(req.header("x-understudy-hop"), Some("1"));
    assert_eq!(
        req.header("accept-encoding"),
        None,
        "bodies must arrive uncompressed to be inspected"
    );
    // A whole answer is asked of the upstream as a stream (and rebuilt); nothing else in the
    // body changes, not even the order of its fields.
    assert_eq!(
        req.body,
        anthropic_body(false)
            .to_string()
            .replace("\"stream\":false", "\"stream\":true"),
        "the body travels unchanged but for stream"
    );
}

#[tokio::test]
async fn a_configured_key_replaces_the_clients_and_never_travels_elsewhere() {
    std::env::set_var("UNDERSTUDY_IT_KEY", "sk-ant-configured");
    let mock = MockCloud::start().await;
    let toml = format!(
        "[providers.anthropic]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key_env = \"UNDERSTUDY_IT_KEY\"\n\
         [[routes]]\nmodel = \"claude-*\"\nbackends = [\"anthropic\"]\n",
        mock.url()
    );
    let h = start_config(mock, &toml).await;
    let resp = client()
        .post(format!("{}/v1/messages", h.url))
        .header("x-api-key", "client-key")
        .header("authorization", "Bearer client-oauth")
        .json(&anthropic_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let req = &h.mock.requests()[0];
    assert_eq!(req.header("x-api-key"), Some("sk-ant-configured"));
    assert_eq!(req.header("authorization"), None);
}

#[tokio::test]
async fn a_provider_without_credentials_says_which_variable_to_set() {
    let mock = MockCloud::start().await;
    let toml = format!(
        "[providers.openai]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key_env = \"UNDERSTUDY_IT_SURELY_UNSET\"\n\
         [[routes]]\nmodel = \"gpt-*\"\nbackends = [\"openai\"]\n",
        mock.url()
    );
    let h = start_config(mock, &toml).await;
    let resp = client()
        .post(format!("{}/v1/chat/completions", h.url))
        .header("authorization", "Bearer client-key")
        .json(&openai_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("UNDERSTUDY_IT_SURELY_UNSET is not set"),
        "{v}"
    );
    assert!(
        h.mock.requests().is_empty(),
        "nothing is sent without credentials"
    );
}

#[tokio::test]
async fn an_alias_rewrites_only_the_model_field() {
    let h =
        start_with("[[routes]]\nmodel = \"fast\"\nbackends = [\"anthropic/claude-haiku-4-5\"]\n")
            .await;
    let mut body = anthropic_body(false);
    body["model"] = json!("fast");
    body["zzz_unknown_field"] = json!({"kept": true});
    let resp = post(&h.url, "/v1/messages", &body).await;
    assert_eq!(resp.status(), 200);
    let sent: Value = serde_json::from_str(&h.mock.requests()[0].body).unwrap();
    let keys: Vec<&String> = sent.as_object().unwrap().keys().collect();
    let want: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, want, "field order is kept");
    assert_eq!(sent["model"], "claude-haiku-4-5");
    assert_eq!(sent["zzz_unknown_field"], json!({"kept": true}));

    // Every other byte as the client wrote it: spacing, escapes, numbers' spelling.
    let raw = "{ \"model\" : \"fast\",\n  \"max_tokens\": 64,\"messages\":[{\"role\":\"user\",\
               \"content\":\"caf\\u00e9 \\\"q\\\" 1.0e2\"}], \"temperature\": 1.0 }";
    let resp = client()
        .post(format!("{}/v1/messages", h.url))
        .header("x-api-key", "k")
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A whole answer is asked for as a stream (`stream_whole_answers`): `stream` is added last.
    let want = raw
        .replace("\"fast\"", "\"claude-haiku-4-5\"")
        .replace("1.0 }", "1.0 ,\"stream\":true}");
    assert_eq!(h.mock.requests()[1].body, want, "only the model changed");
}

#[tokio::test]
async fn unknown_models_and_bad_json_get_errors_in_the_clients_dialect() {
    let h = start().await;
    let c = client();
    let r = c
        .post(format!("{}/v1/messages", h.url))
        .json(&json!({"model": "nope", "max_tokens": 1, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["type"].as_str(), v["error"]["type"].as_str()),
        (Some("error"), Some("not_found_error"))
    );
    assert!(v["request_id"].as_str().unwrap().starts_with("req_"));

    let r = c
        .post(format!("{}/v1/chat/completions", h.url))
        .json(&json!({"model": "nope", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");

    let r = c
        .post(format!("{}/v1/messages", h.url))
        .body("{\"model\": \"claude-x\", ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{v}"
    );

    let r = c
        .post(format!("{}/v1/chat/completions", h.url))
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("model"),
        "{v}"
    );
    assert!(h.mock.requests().is_empty());
}

#[tokio::test]
async fn a_translated_route_never_sends_the_clients_own_key_to_another_api() {
    let h = start_with("[[routes]]\nmodel = \"cross\"\nbackends = [\"openai/gpt-5\"]\n").await;
    let mut body = anthropic_body(false);
    body["model"] = json!("cross");
    let r = post(&h.url, "/v1/messages", &body).await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot use the client's own credentials"),
        "{v}"
    );
    assert!(h.mock.requests().is_empty());
}

#[tokio::test]
async fn a_request_that_already_passed_through_an_understudy_is_refused() {
    let h = start().await;
    let r = client()
        .post(format!("{}/v1/messages", h.url))
        .header("x-understudy-hop", "1")
        .json(&anthropic_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 508);
    assert_eq!(r.headers()["x-should-retry"], "false");
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("request loop"));
}

/// The real loop: a provider whose base URL is the gateway itself. One hop, then a clear 508.
#[tokio::test]
async fn a_gateway_pointed_at_itself_stops_after_one_hop() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let toml = format!(
        "[providers.anthropic]\nkind = \"anthropic\"\nbase_url = \"{url}\"\npassthrough_auth = \"{url}\"\n\
         [[routes]]\nmodel = \"claude-*\"\nbackends = [\"anthropic\"]\n"
    );
    let config =
        understudy::config::Config::from_toml(&toml, understudy::config::ConfigSource::ZeroConfig)
            .unwrap();
    tokio::spawn(understudy::server::run(
        listener,
        config,
        std::future::pending(),
    ));
    let r = client()
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", "k")
        .json(&anthropic_body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 508);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request loop"),
        "{v}"
    );
}

#[tokio::test]
async fn web_pages_and_foreign_hosts_are_refused() {
    let h = start().await;
    let c = client();
    let r = c
        .post(format!("{}/v1/messages", h.url))
        .header("origin", "https://evil.example")
        .json(&anthropic_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "permission_error");

    let r = c
        .post(format!("{}/v1/chat/completions", h.url))
        .header("host", "attacker.example:8723")
        .json(&openai_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not a loopback name"));

    let port = h.url.rsplit(':').next().unwrap();
    let r = c
        .post(format!("{}/v1/messages", h.url))
        .header("origin", format!("http://localhost:{port}"))
        .header("x-api-key", "k")
        .json(&anthropic_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the gateway's own origin (its dashboard) is allowed"
    );
    assert_eq!(h.mock.requests().len(), 1);
}

#[tokio::test]
async fn an_oversized_body_gets_413_in_the_clients_dialect() {
    let h = start_with("[server]\nmax_body_bytes = 4096\n").await;
    let mut body = anthropic_body(false);
    body["messages"][0]["content"] = json!("x".repeat(10_000));
    let r = post(&h.url, "/v1/messages", &body).await;
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "request_too_large");

    // Chunked (no content-length): the limit still holds while reading.
    let big = body.to_string();
    let stream = futures_util::stream::iter(
        big.into_bytes()
            .chunks(1000)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let r = client()
        .post(format!("{}/v1/chat/completions", h.url))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "request_too_large");
    assert!(h.mock.requests().is_empty());
}

#[tokio::test]
async fn models_hello_and_count_tokens() {
    let h = start_with("[[routes]]\nmodel = \"claude-understudy-fast\"\nbackends = [\"anthropic/claude-haiku-4-5\"]\n").await;
    let c = client();
    let v: Value = c
        .get(format!("{}/v1/models?limit=1000", h.url))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][0]["id"], "claude-understudy-fast");
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["has_more"], false);
    let v: Value = c
        .get(format!("{}/v1/models", h.url))
        .bearer_auth("k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["object"], "model");
    assert_eq!(v["data"][0]["owned_by"], "anthropic");

    let r = c.head(format!("{}/api/hello", h.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let r = c
        .post(format!("{}/v1/messages/count_tokens?beta=true", h.url))
        .header("x-api-key", "k")
        .json(&json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hello there"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        h.mock.requests()[0].path,
        "/v1/messages/count_tokens?beta=true"
    );

    let r = c
        .post(format!("{}/v1/nothing", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn admin_errors_are_plain_json_and_ollamas_endpoints_keep_their_shape() {
    let h = start().await;
    let r = client()
        .put(format!("{}/api/mode", h.url))
        .json(&json!({"mode": "sideways"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("sideways"),
        "{v}"
    );
    // A web page refused on an admin path gets the admin shape too.
    let r = client()
        .put(format!("{}/api/pause", h.url))
        .header("origin", "https://evil.example")
        .json(&json!({"paused": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "forbidden", "{v}");
    // Ollama's own endpoint answers a bad body as Ollama does: a string.
    let r = client()
        .post(format!("{}/api/chat", h.url))
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].is_string(), "{v}");
}
