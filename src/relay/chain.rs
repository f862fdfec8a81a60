//! The chain walk: the route's backends tried in order until one answers or a failure must go
//! back to the client (`routing::health::fails_over` decides), with session affinity, offline
//! routing, pause, breakers, retries of the last backend, and the `x-understudy-failed-over`
//! header. Every attempt here ends before the commit point: the client never sees a failed
//! attempt.

use super::attempt::{error_class, Exchange};
use super::continuation::ContinuationPlan;
use super::stream::{Reported, Resume};
use super::{passthrough, translated, Request};
use crate::error::{FailureKind, GatewayError};
use crate::routing::breaker::Admission;
use crate::routing::health::{self, Report};
use crate::routing::{Backend, Router};
use crate::telemetry::observe::Trace;
use axum::response::Response;
use http::HeaderValue;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Retries of the chain's last backend after a transport failure.
const MAX_RETRIES: u32 = 2;
/// Backoff before them (the official SDKs' defaults).
const RETRY_BASE: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(8);

/// The order the chain is walked in: a Claude Code session goes back to the backend that
/// served it while that one is healthy, until a backend ahead of it in the route recovers;
/// while the network looks down, a route with a local backend goes straight to it; paused,
/// the route's first backend only, as if the client called it directly (no session
/// affinity, offline routing or breaker in the way).
fn order<'a>(
    router: &Router,
    chain: &'a [Backend],
    session: Option<&str>,
    headers: &http::HeaderMap,
) -> Vec<&'a Backend> {
    if router.paused() {
        return chain.iter().take(1).collect();
    }
    let health = router.health();
    let mut order: Vec<&Backend> = chain.iter().collect();
    if let Some((key, at)) = session.and_then(|s| health.session_backend(s)) {
        if let Some(pos) = order.iter().position(|b| b.key() == key) {
            // Automatic switch-back: once a backend ahead of it in the route has recovered
            // (its breaker closed again since the conversation was last served, or a quota
            // that held it back reset since), the conversation goes back to the route's
            // order; a blip that never opened a breaker does not move it off the backend
            // whose prompt cache is warm. A backend whose quota holds it back is never put
            // first: the conversation is not pinned where it cannot go.
            let now = crate::quota::now_ms();
            let at_ms = now.saturating_sub(at.elapsed().as_millis() as u64);
            let back = order[..pos].iter().any(|b| {
                usable(health, b)
                    && (health.recovered_since(b.key(), at)
                        || b.provider.quota_released_since(headers, at_ms))
            }) || order[pos].provider.holds_back(headers, now).is_some();
            if !back {
                let b = order.remove(pos);
                order.insert(0, b);
            }
        }
    }
    if health.offline() && chain.iter().any(|b| b.is_local()) {
        order.retain(|b| b.is_local());
    }
    order
}

/// True when `b` can be expected to serve: its breaker is closed and its provider's latest
/// check did not find it unreachable or its key rejected.
fn usable(health: &crate::routing::health::Health, b: &Backend) -> bool {
    use crate::routing::health::Reach;
    health.closed(b.key())
        && health
            .check(b.provider.name())
            .is_none_or(|c| c.reach == Reach::Reachable)
}

/// Walks the chain for one request and records its final status in the trace.
pub(super) async fn walk(
    router: &Router,
    chain: &[Backend],
    req: &Arc<Request>,
) -> Result<Response, GatewayError> {
    let session = req
        .headers
        .get("x-claude-code-session-id")
        .and_then(|v| v.to_str().ok());
    let order = order(router, chain, session, &req.headers);
    let trace = router
        .recorder()
        .trace(req.dialect.as_str(), &req.model, req.stream);
    let result = walk_chain(router, &order, session, req, &trace).await;
    trace.status(match &result {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.status(),
    });
    result
}

async fn walk_chain(
    router: &Router,
    chain: &[&Backend],
    session: Option<&str>,
    req: &Arc<Request>,
    trace: &Trace,
) -> Result<Response, GatewayError> {
    let health = router.health();
    let mut last = None;
    let mut refused = Vec::new();
    // The earliest reset of a backend skipped for its quota (Unix ms).
    let mut held: Option<u64> = None;
    let mut circuit_open = false;
    // The backends that failed before the one that answers, and why (for the client's
    // `x-understudy-failed-over` header and the log).
    let mut tried: Vec<String> = Vec::new();
    for (i, backend) in chain.iter().enumerate() {
        let key = backend.key();
        let is_last = i + 1 == chain.len();
        // Paused: not judged either (the outcome still reaches the breaker; the breaker does
        // not stand in the way).
        if !router.paused() {
            // Out of quota for this credential (refused until a reset, or past the
            // provider's `spill_over_at`): the next backend, at once.
            if let Some(hold) = backend
                .provider
                .holds_back(&req.headers, crate::quota::now_ms())
            {
                refused.push(format!("{key} ({})", hold.why));
                held = Some(held.map_or(hold.until_ms, |h: u64| h.min(hold.until_ms)));
                continue;
            }
            if let Admission::Rejected { retry_at } = health.admit(key, true) {
                let secs = retry_at
                    .saturating_duration_since(Instant::now())
                    .as_secs_f64();
                refused.push(format!("{key} (circuit open, next trial in {secs:.0} s)"));
                circuit_open = true;
                continue;
            }
        }
        // A whole answer is read as a stream too, so it can be continued as well.
        let plan = (req.op.answers() && !router.paused())
            .then(|| plan(router, req, backend, &chain[i + 1..], trace))
            .flatten()
            .map(|p| Box::new(p) as Box<dyn Resume>);
        let mut result = attempt(router, backend, req, plan, trace).await;
        if is_last {
            result = retry_last(router, backend, req, trace, result).await;
        }
        let failed = judge(router, backend, req, session, trace, &result, is_last);
        if failed && !is_last {
            let why = match &result {
                Ok(r) => format!("HTTP {}", r.status().as_u16()),
                Err(e) => e.to_string(),
            };
            tracing::warn!(backend = %key, next = %chain[i + 1].key(), why = %why, "failing over");
            tried.push(format!("{key}={}", failure_class(&result)));
            last = Some(result);
            continue;
        }
        return result.map(|mut r| {
            if !tried.is_empty() {
                if let Ok(v) = HeaderValue::from_str(&tried.join(", ")) {
                    r.headers_mut().insert("x-understudy-failed-over", v);
                }
            }
            r
        });
    }
    last.unwrap_or_else(|| {
        let detail = format!(
            "no backend can take this request now: {}",
            refused.join(", ")
        );
        // Only quotas stand in the way: the client is told when the first one resets (a
        // breaker's next trial is seconds away, and a 503 says so).
        Err(match held {
            Some(until) if !circuit_open => GatewayError::QuotaExhausted {
                detail,
                retry_after_secs: until
                    .saturating_sub(crate::quota::now_ms())
                    .div_ceil(1000)
                    .max(1),
            },
            _ => GatewayError::Unavailable(detail),
        })
    })
}

/// The last backend gets retries with backoff for failures that never reached HTTP (refused,
/// no headers in time, broken before them), within its retry budget.
async fn retry_last(
    router: &Router,
    backend: &Backend,
    req: &Arc<Request>,
    trace: &Trace,
    mut result: Result<Response, GatewayError>,
) -> Result<Response, GatewayError> {
    let health = router.health();
    let key = backend.key();
    let mut retries = 0;
    while !router.paused() && retries < MAX_RETRIES && transient(&result) && health.try_retry(key) {
        let wait =
            crate::routing::retry::backoff(retries, RETRY_BASE, RETRY_CAP, rand::random::<f64>());
        tracing::warn!(backend = %key, retry = retries + 1, wait_ms = wait.as_millis() as u64, "retrying the same backend");
        health.record(key, false);
        trace.failed(key, &failure_class(&result), false);
        tokio::time::sleep(wait).await;
        retries += 1;
        result = attempt(router, backend, req, None, trace).await;
    }
    result
}

/// Records how an attempt went (trace, breaker, network, session) and says whether it
/// failed in a way the next backend may fix. A committed stream reports its own outcome to
/// the breaker when it ends.
fn judge(
    router: &Router,
    backend: &Backend,
    req: &Request,
    session: Option<&str>,
    trace: &Trace,
    result: &Result<Response, GatewayError>,
    is_last: bool,
) -> bool {
    let health = router.health();
    let key = backend.key();
    // A stream, or a whole answer read through one, tells its breaker itself how it ended.
    let (failed, streaming) = match result {
        Ok(r) if r.status().is_success() => (
            false,
            req.stream || r.extensions().get::<Reported>().is_some(),
        ),
        Ok(r) => (health::status_fails_over(r.status().as_u16()), false),
        Err(e) => (health::fails_over(e), false),
    };
    match result {
        Ok(r) if r.status().is_success() => {
            if req.stream {
                trace.committed(key);
            }
        }
        _ => {
            trace.failed(key, &failure_class(result), !failed || is_last);
            if let Err(e) = result {
                trace.why(trace.latest(key), &e.to_string());
            }
        }
    }
    if !streaming {
        match result {
            // Never reached HTTP: a probe's answer will close the breaker this may open.
            Err(GatewayError::Upstream(p))
                if failed && matches!(p.kind, FailureKind::Connect | FailureKind::Offline) =>
            {
                health.record_unreachable(key)
            }
            _ => health.record(key, !failed),
        }
    }
    if !backend.is_local() {
        match result {
            Err(GatewayError::Upstream(p)) if p.kind == FailureKind::Offline => {
                health.network(true)
            }
            Ok(_) => health.network(false),
            _ => {}
        }
    }
    if !failed {
        if let Some(s) = session {
            health.remember_session(s, key);
        }
    }
    failed
}

/// Where a break after content could be continued: the backend serving (when the break
/// looks transient) and the later ones, when one of them may continue.
fn plan(
    router: &Router,
    req: &Arc<Request>,
    current: &Backend,
    later: &[&Backend],
    trace: &Trace,
) -> Option<ContinuationPlan> {
    let may = |b: &Backend| b.provider.config.continuation.on();
    if !may(current) && !later.iter().any(|b| may(b)) {
        return None;
    }
    Some(ContinuationPlan {
        request: req.clone(),
        current: may(current).then(|| current.clone()),
        candidates: later.iter().map(|b| (*b).clone()).collect(),
        health: router.health().clone(),
        format: req.format,
        model: req.model.clone(),
        keepalive: req.keepalive,
        trace: trace.clone(),
    })
}

/// One attempt on one backend: passed through when it speaks the client's API for this
/// operation, translated otherwise.
async fn attempt(
    router: &Router,
    backend: &Backend,
    req: &Arc<Request>,
    plan: Option<Box<dyn Resume>>,
    trace: &Trace,
) -> Result<Response, GatewayError> {
    let key = backend.key();
    trace.begin(key);
    let provider = &backend.provider;
    let exchange = Exchange::new(req.dialect, &req.model, backend, req.stream, trace.clone());
    // Every answer may be read through a stream, which then reports how it ended; a whole
    // answer that is not (a plain passthrough body) leaves it to `judge`.
    let report = req
        .op
        .answers()
        .then(|| Report::new(router.health().clone(), key.to_owned()));
    if req.native_on(provider) {
        return passthrough::call(backend, req, report, plan, exchange).await;
    }
    if !req.op.answers() {
        return Err(GatewayError::Unsupported(format!(
            "provider '{}' speaks the {} API, which has no such endpoint",
            provider.name(),
            provider.config.kind.as_str()
        )));
    }
    let canonical = req.canonical()?;
    translated::call(
        backend,
        &canonical,
        req.format,
        req.keepalive,
        report,
        plan,
        exchange,
    )
    .await
}

/// A failure that never reached HTTP: worth a retry of the same backend after a pause. An
/// overloaded provider's 429/529 is not: with no other backend it goes to the client with its
/// `retry-after`, whose own retries honour it (retrying here too would multiply the load).
fn transient(result: &Result<Response, GatewayError>) -> bool {
    matches!(
        result,
        Err(GatewayError::Upstream(p)) if matches!(
            p.kind,
            FailureKind::Connect | FailureKind::FirstByteTimeout | FailureKind::Transport
        )
    )
}

/// A failed attempt in one word: the failure class, or `http_STATUS`.
fn failure_class(result: &Result<Response, GatewayError>) -> String {
    match result {
        Ok(r) => format!("http_{}", r.status().as_u16()),
        Err(e) => error_class(e),
    }
}
