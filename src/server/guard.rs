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
use crate::server::state::AppState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::net::IpAddr;
use std::sync::Arc;

/// The middleware: refuses what [`verdict`] refuses, serves the rest, and logs every error
/// response with its reason.
pub async fn guard(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let dialect = Dialect::of_request(&path, req.headers());
    let admin = admin::serves(&path);
    let resp = match verdict(&st, &req) {
        Ok(()) => next.run(req).await,
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
        if !host_allowed(&host, &st.config.server.allowed_hosts) {
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
        Some(n) if n > st.config.server.max_body_bytes => Err(GatewayError::TooLarge {
            limit: st.config.server.max_body_bytes,
        }),
        _ => Ok(()),
    }
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
