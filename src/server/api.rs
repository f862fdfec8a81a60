//! The endpoints of each client dialect: Anthropic's and OpenAI's under `/v1`, Ollama's under
//! `/api`, Ollama's `GET /` probe, and the answer to a path nobody serves. Each answers its
//! errors in its client's dialect ([`Dialect::error_response`]).

use crate::client_api::{anthropic, openai, Dialect};
use crate::error::GatewayError;
use crate::providers::Operation;
use crate::relay::{relay, relay_ollama, Call};
use crate::server::state::{json_body, read_body, AppState};
use crate::wire::ollama;
use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use http::{HeaderMap, Method, StatusCode};
use std::sync::Arc;

/// The client dialects' routes (and the probes clients send: `GET /`, `/api/hello`,
/// `/healthz`).
pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/api/chat", post(ollama_chat))
        .route("/api/generate", post(ollama_generate))
        .route("/api/tags", get(ollama_tags))
        .route("/api/show", post(ollama_show))
        .route("/api/version", get(ollama_version))
        .route("/", get(root).head(root))
        .route("/api/hello", get(hello).head(hello))
        .route("/healthz", get(healthz))
}

/// Reads the body and relays the call; errors in `dialect`'s shape.
async fn relay_call(
    st: &AppState,
    dialect: Dialect,
    op: Operation,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = match read_body(st, body).await {
        Ok(body) => {
            let call = Call {
                dialect,
                op,
                query,
                headers,
                body,
                keepalive: st.server.keepalive,
            };
            relay(&st.router, call).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(resp) => resp,
        Err(GatewayError::Unsupported(why)) if op == Operation::CountTokens => {
            // Claude Code falls back to its own estimate on a 404 (protocol.md §1.1).
            dialect.error_response(&GatewayError::NotFound(format!(
                "count_tokens is not available here: {why}"
            )))
        }
        Err(e) => dialect.error_response(&e),
    }
}

async fn messages(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let op = Operation::Messages;
    relay_call(&st, Dialect::Anthropic, op, q, headers, body).await
}

async fn count_tokens(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let op = Operation::CountTokens;
    relay_call(&st, Dialect::Anthropic, op, q, headers, body).await
}

async fn chat_completions(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let op = Operation::ChatCompletions;
    relay_call(&st, Dialect::OpenAi, op, None, headers, body).await
}

async fn completions(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let op = Operation::Completions;
    relay_call(&st, Dialect::OpenAi, op, None, headers, body).await
}

async fn embeddings(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let op = Operation::Embeddings;
    relay_call(&st, Dialect::OpenAi, op, None, headers, body).await
}

/// The model list in the asking client's dialect.
async fn models(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match Dialect::of_request("/v1/models", &headers) {
        Dialect::Anthropic => {
            Json(anthropic::model_list(&st.router.anthropic_model_ids())).into_response()
        }
        Dialect::OpenAi | Dialect::Ollama => {
            let owner = |id: &str| {
                st.router
                    .resolve(id)
                    .ok()
                    .and_then(|chain| chain.first().map(|b| b.provider.name().to_owned()))
                    .unwrap_or_else(|| "understudy".into())
            };
            Json(openai::model_list(&st.router.model_ids(), owner)).into_response()
        }
    }
}

async fn ollama(st: &AppState, endpoint: ollama::Endpoint, body: Body) -> Response {
    let result = match read_body(st, body).await {
        Ok(body) => relay_ollama(&st.router, endpoint, &body, st.server.keepalive).await,
        Err(e) => Err(e),
    };
    result.unwrap_or_else(|e| Dialect::Ollama.error_response(&e))
}

async fn ollama_chat(State(st): State<Arc<AppState>>, body: Body) -> Response {
    ollama(&st, ollama::Endpoint::Chat, body).await
}

async fn ollama_generate(State(st): State<Arc<AppState>>, body: Body) -> Response {
    ollama(&st, ollama::Endpoint::Generate, body).await
}

async fn ollama_tags(State(st): State<Arc<AppState>>) -> Response {
    Json(ollama::tags(&st.router.model_ids())).into_response()
}

async fn ollama_show(State(st): State<Arc<AppState>>, body: Body) -> Response {
    let result = async {
        let v = json_body(&st, body).await?;
        let name = v
            .get("model")
            .or_else(|| v.get("name"))
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| GatewayError::InvalidRequest("body.model: is required".into()))?;
        let chain = st.router.resolve(name)?;
        let upstream = chain.first().map_or(name, |b| b.model.as_str());
        let context = crate::wire::known_context_length(upstream);
        Ok::<_, GatewayError>(Json(ollama::show(name, context)).into_response())
    }
    .await;
    result.unwrap_or_else(|e| Dialect::Ollama.error_response(&e))
}

async fn ollama_version() -> Response {
    Json(serde_json::json!({"version": ollama::VERSION})).into_response()
}

/// Ollama clients probe `GET /` for this exact text.
async fn root() -> &'static str {
    "Ollama is running"
}

async fn hello() -> StatusCode {
    StatusCode::OK
}

async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})).into_response()
}

/// No route: a 404 in the dialect the path and headers suggest, listing what is served.
pub async fn not_found(method: Method, req: Request) -> Response {
    let dialect = Dialect::of_request(req.uri().path(), req.headers());
    dialect.error_response(&GatewayError::NotFound(format!(
        "no endpoint {method} {}; Understudy serves POST /v1/messages, POST /v1/messages/count_tokens, \
         POST /v1/chat/completions, POST /v1/completions, POST /v1/embeddings, GET /v1/models, \
         and Ollama's POST /api/chat, POST /api/generate, GET /api/tags, POST /api/show, GET /api/version",
        req.uri().path()
    )))
}
