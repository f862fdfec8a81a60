//! The localhost guard, before any handler:
//! - a request that already passed through an Understudy is a loop;
//! - a `Host` that is not a loopback name (or listed in `server.allowed_hosts`) is DNS rebinding;
//! - an `Origin` other than the gateway's own is a web page trying to spend the user's keys
//!   (CLI clients such as Claude Code send none);
//! - a declared body larger than the limit is refused before it is read.
//!
//! A refusal is answered in the client's dialect, or in the admin API's shape on its paths.
//! Every error response that passes through (refusals and the handlers' own) is logged with
//! its reason.

use crate::client_api::{Dialect, ErrorNote};
use crate::error::GatewayError;
use crate::providers::HOP_HEADER;
use crate::server::admin;
use crate::server::auth::TOKEN_HEADER;
use crate::server::state::AppState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The middleware: refuses what [`verdict`] refuses, serves the rest, and logs every error
/// response with its reason.
pub async fn guard(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let dialect = Dialect::of_request(&path, req.headers());
    let admin = admin::serves(&path);
    let admitted = verdict(&st, &req)
        .and_then(|()| authorized(&st, &path, admin, &req))
        .and_then(|()| admit(&st, &path, admin, &req));
    let resp = match admitted {
        Ok(None) => next.run(req).await,
        // The ticket lives as long as the response body: a stream holds its place to the end.
        Ok(Some(ticket)) => next.run(req).await.map(|inner| {
            axum::body::Body::new(Held {
                inner,
                _ticket: ticket,
            })
        }),
        Err(e) if admin => admin::error_response(&e),
        Err(e) => dialect.error_response(&e),
    };
    if let Some(ErrorNote(why)) = resp.extensions().get::<ErrorNote>() {
        let api = if admin { "admin" } else { dialect.as_str() };
        tracing::warn!(%method, %path, dialect = api, status = resp.status().as_u16(), error = %why, "request refused");
    }
    resp
}

/// Whether the request may reach a handler: not a loop, addressed to a loopback name, from
/// no web page but the gateway's own, and not declared larger than the limit.
fn verdict(st: &AppState, req: &Request) -> Result<(), GatewayError> {
    let h = req.headers();
    if h.contains_key(HOP_HEADER) {
        return Err(GatewayError::LoopDetected);
    }
    if let Some(host) = request_host(req) {
        if !host_allowed(&host, &st.server.allowed_hosts) {
            return Err(GatewayError::Forbidden(format!(
                "Host {host:?} is not a loopback name; Understudy answers only requests addressed to \
                 localhost/127.0.0.1/[::1] (add the name to server.allowed_hosts to accept it)"
            )));
        }
    }
    if let Some(o) = h.get(http::header::ORIGIN) {
        if !origin_allowed(o.to_str().unwrap_or("null"), st.port) {
            return Err(GatewayError::Forbidden(format!(
                "cross-origin request from {:?} refused: a web page may not use this gateway (and the keys behind it)",
                o.to_str().unwrap_or("?")
            )));
        }
    }
    let declared = h
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > st.server.max_body_bytes => Err(GatewayError::TooLarge {
            limit: st.server.max_body_bytes,
        }),
        _ => Ok(()),
    }
}

/// The admin API's calls (all but `/metrics`) need the admin token or a dashboard session;
/// with `server.require_token`, so do the inference endpoints (the token only). The page's
/// own files and its one-time login stay open.
fn authorized(st: &AppState, path: &str, admin: bool, req: &Request) -> Result<(), GatewayError> {
    let h = req.headers();
    if admin {
        if admin::open(path) || st.admin.allows(h, true) {
            return Ok(());
        }
        return Err(GatewayError::Unauthorized(format!(
            "the admin API needs the admin token: send it as {TOKEN_HEADER} (it is in {}, readable only by the user running Understudy), \
             or open the dashboard with `understudy dashboard` or the tray's \"Open dashboard\"",
            st.admin
                .file()
                .map_or_else(|| "the gateway's memory".to_owned(), |f| f.display().to_string())
        )));
    }
    if st.server.require_token && !path.starts_with("/ui") && !st.admin.allows_client(h) {
        return Err(GatewayError::Unauthorized(format!(
            "this gateway requires its client token (server.require_token): send it in the {TOKEN_HEADER} header \
             (it is in the client-token file beside the admin token); `understudy claude-code connect` and the \
             dashboard's Connect Claude Code set it up for Claude Code (ANTHROPIC_CUSTOM_HEADERS)"
        )));
    }
    Ok(())
}

/// What an inference request holds while it is worked on: its place among
/// `server.max_in_flight`, and its body's share of `server.max_request_memory` (a body of
/// unknown length, chunked, is counted at the largest a body may be).
struct Ticket {
    _place: tokio::sync::OwnedSemaphorePermit,
    _memory: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// A response body that holds its request's [`Ticket`] until it is dropped (size and end
/// passed through, so a `Content-Length` stays).
struct Held {
    inner: axum::body::Body,
    _ticket: Ticket,
}

impl axum::body::HttpBody for Held {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// An inference request gets a [`Ticket`], or, past a limit, a 503 at once (an Anthropic
/// client reads it as `overloaded_error` and retries; nothing was sent upstream).
fn admit(
    st: &AppState,
    path: &str,
    admin: bool,
    req: &Request,
) -> Result<Option<Ticket>, GatewayError> {
    if admin || path.starts_with("/ui") {
        return Ok(None);
    }
    let server = &st.server;
    let place = st.in_flight.clone().try_acquire_owned().map_err(|_| {
        GatewayError::Unavailable(format!(
            "Understudy is working on {} requests, its limit (server.max_in_flight); retry shortly",
            server.max_in_flight
        ))
    })?;
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let factor = crate::config::REQUEST_MEMORY_FACTOR;
    let kib = match declared {
        Some(n) => u32::try_from((n * factor).div_ceil(1024)).unwrap_or(u32::MAX),
        None if req.method() == http::Method::GET => 0,
        None => u32::try_from((server.max_body_bytes * factor).div_ceil(1024)).unwrap_or(u32::MAX),
    };
    let memory = if kib == 0 {
        None
    } else {
        Some(st.request_memory.clone().try_acquire_many_owned(kib).map_err(|_| {
            GatewayError::Unavailable(format!(
                "requests in flight hold their memory limit of {} bytes (server.max_request_memory); retry shortly",
                server.max_request_memory
            ))
        })?)
    };
    Ok(Some(Ticket {
        _place: place,
        _memory: memory,
    }))
}

fn request_host(req: &Request) -> Option<String> {
    if let Some(h) = req.headers().get(http::header::HOST) {
        return Some(h.to_str().unwrap_or("").to_owned());
    }
    // HTTP/2 carries the host in :authority.
    req.uri().authority().map(|a| a.as_str().to_owned())
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

fn is_loopback_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = strip_port(host);
    is_loopback_name(name) || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

fn origin_allowed(origin: &str, port: u16) -> bool {
    let Some(rest) = origin.strip_prefix("http://") else {
        return false;
    };
    let name = strip_port(rest);
    let origin_port = rest
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(80);
    is_loopback_name(name) && origin_port == port
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_allowed_and_others_are_not() {
        for h in [
            "localhost",
            "localhost:8723",
            "127.0.0.1:8723",
            "127.1.2.3",
            "[::1]:8723",
            "LOCALHOST",
        ] {
            assert!(host_allowed(h, &[]), "{h}");
        }
        for h in [
            "evil.example:8723",
            "192.168.1.2:8723",
            "localhost.evil.example",
            "[::2]:1",
        ] {
            assert!(!host_allowed(h, &[]), "{h}");
        }
        assert!(host_allowed("devbox:8723", &["devbox".into()]));
    }

    #[test]
    fn only_the_gateways_own_origin_is_allowed() {
        assert!(origin_allowed("http://127.0.0.1:8723", 8723));
        assert!(origin_allowed("http://localhost:8723", 8723));
        assert!(!origin_allowed("http://localhost:3000", 8723));
        assert!(!origin_allowed("https://evil.example", 8723));
        assert!(!origin_allowed("null", 8723));
    }
}
