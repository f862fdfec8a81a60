//! The dashboard's page: `/ui`, the files in `ui/`, built into the binary. The page talks to
//! the gateway only through the admin API ([`crate::server::admin`]), so the tray's window and
//! a browser on a headless machine show the same thing.

use crate::server::state::AppState;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

/// The page's routes.
pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/app.js", get(app_js))
        .route("/ui/style.css", get(style_css))
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (http::header::CONTENT_TYPE, content_type),
            (http::header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    page(
        "text/html; charset=utf-8",
        include_str!("../../ui/index.html"),
    )
}

async fn app_js() -> Response {
    page(
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    )
}

async fn style_css() -> Response {
    page(
        "text/css; charset=utf-8",
        include_str!("../../ui/style.css"),
    )
}
