//! The one stream state machine, for passthrough and translated answers alike: the commit
//! point and the hold before it, keep-alives while the upstream is silent, the call's deadline
//! and its idle and first-content limits, the break after content (continued elsewhere, or
//! ended with the client dialect's explicit error), the client that leaves, and the outcome
//! told to the breaker and the trace exactly once per attempt.
//!
//! What differs between the two ways is only the [`Pipe`]: a passthrough forwards the
//! upstream's exact bytes while an inspector judges them ([`super::inspected::Inspected`]);
//! a translation runs them through a [`Pipeline`].

use super::attempt::{stream_limit, timeout_failure, Exchange};
use super::inspected::{Ending, Inspected};
use super::pipeline::{encode_response, Format, Pipeline};
use crate::canonical::{Collector, Event, StreamFault};
use crate::client_api::{Dialect, Usage};
use crate::error::{FailureKind, GatewayError, ProviderError};
use crate::providers::Provider;
use crate::routing::health::Report;
use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_json::Value;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One piece of an upstream's answer.
#[derive(Debug)]
pub(crate) enum Piece {
    /// Bytes off the wire.
    Bytes(Bytes),
    /// Canonical events from a source that yields them (the local engine).
    Events(Vec<Event>),
    /// Such a source's own failure, which ends the answer.
    Fault(StreamFault),
}

/// An upstream's answer, whoever sends it; a broken connection is already a classified
/// failure.
pub(crate) type Upstream = BoxStream<'static, Result<Piece, ProviderError>>;

/// An HTTP response body as an [`Upstream`].
pub(crate) fn http_upstream(provider: &Arc<Provider>, resp: reqwest::Response) -> Upstream {
    let p = provider.clone();
    resp.bytes_stream()
        .map(move |r| {
            r.map(Piece::Bytes).map_err(|e| {
                let c = p.classify(&e);
                p.failure(
                    FailureKind::Transport,
                    format!("the connection broke mid-stream: {}", c.detail),
                )
            })
        })
        .boxed()
}

/// What a stream does with the upstream's pieces.
#[derive(Debug)]
pub(crate) enum Pipe {
    /// The upstream speaks the client's API: its exact bytes, judged on the side.
    Passthrough(Box<Inspected>),
    /// Another API: through the canonical model.
    Translated(Box<Pipeline>),
}

/// Where a stream that breaks after its commit point can be finished (the continuation
/// module's plan): handed what the client has, it returns the stream that carries on and the
/// bytes to send before it.
pub(crate) trait Resume: Send + std::fmt::Debug {
    /// Continues the answer, or says why it cannot be.
    fn resume(
        self: Box<Self>,
        delivered: Collector,
        why: GatewayError,
    ) -> BoxFuture<'static, Result<(Stream, BytesMut), GatewayError>>;
}

impl Pipe {
    fn feed(
        &mut self,
        piece: Piece,
        out: &mut BytesMut,
        provider: &Provider,
    ) -> Result<(), ProviderError> {
        match self {
            Pipe::Passthrough(p) => match piece {
                Piece::Bytes(b) => p.feed(&b, out, provider),
                _ => Err(provider.failure(
                    FailureKind::Malformed,
                    "a passthrough upstream sent events instead of bytes".into(),
                )),
            },
            Pipe::Translated(p) => {
                let dialect = p.dialect();
                let r = match piece {
                    Piece::Bytes(b) => {
                        let r = p.feed(&b, out);
                        if let Some(d) = p.decoder_mut() {
                            provider.api().observe(d);
                        }
                        r
                    }
                    Piece::Events(evs) => p.feed_events(evs, out),
                    Piece::Fault(f) => Err(f),
                };
                r.map_err(|f| fault_failure(provider, dialect, f))
            }
        }
    }

    fn end(&mut self, out: &mut BytesMut, provider: &Provider) -> Result<Ending, ProviderError> {
        match self {
            Pipe::Passthrough(p) => p.end(out, provider),
            Pipe::Translated(p) => {
                let dialect = p.dialect();
                p.finish(out)
                    .map(|()| Ending::Complete)
                    .map_err(|f| fault_failure(provider, dialect, f))
            }
        }
    }

    /// Bytes of an unfinished server-sent event held (capped by `max_upstream_event_bytes`).
    fn buffered(&self) -> usize {
        match self {
            Pipe::Passthrough(p) => p.buffered(),
            Pipe::Translated(p) => p.buffered(),
        }
    }

    /// The answer is under way: the first-content limit no longer applies.
    fn has_started(&self) -> bool {
        match self {
            Pipe::Passthrough(p) => p.has_started(),
            Pipe::Translated(p) => p.has_content(),
        }
    }

    /// A passthrough's tool call held until it is whole, in bytes.
    fn held(&self) -> usize {
        match self {
            Pipe::Passthrough(p) => p.held(),
            Pipe::Translated(_) => 0,
        }
    }

    /// Content has started (the commit point, for a passthrough).
    fn has_content(&self) -> bool {
        match self {
            Pipe::Passthrough(p) => p.has_content(),
            Pipe::Translated(p) => p.has_content(),
        }
    }

    /// The client may be answered: content began (or, translated, the answer is finished).
    fn committed(&self) -> bool {
        match self {
            Pipe::Passthrough(p) => p.has_content(),
            Pipe::Translated(p) => p.committed(),
        }
    }

    fn dialect(&self) -> Dialect {
        match self {
            Pipe::Passthrough(p) => p.dialect(),
            Pipe::Translated(p) => p.dialect(),
        }
    }

    fn usage(&self) -> Usage {
        match self {
            Pipe::Passthrough(p) => p.usage(),
            Pipe::Translated(p) => {
                let u = p.usage();
                Usage {
                    input_tokens: u.total_input(),
                    output_tokens: u.output,
                }
            }
        }
    }

    /// What the client has received, in canonical form, if it is known (a passthrough knows
    /// it only when it kept a shadow pipeline for a continuation).
    fn take_delivered(&mut self) -> Option<Collector> {
        match self {
            Pipe::Passthrough(p) => p.take_delivered(),
            Pipe::Translated(p) => Some(p.take_delivered()),
        }
    }

    /// A break after content can be continued from what was delivered.
    fn continuable(&self) -> bool {
        match self {
            Pipe::Passthrough(p) => p.continuable(),
            Pipe::Translated(_) => true,
        }
    }
}

/// A fault of a translated stream as this provider's failure; an upstream status is the one
/// the client's dialect uses for it (overload is 529 to Anthropic clients, 503 to others).
fn fault_failure(provider: &Provider, dialect: Dialect, f: StreamFault) -> ProviderError {
    let kind = match f.kind {
        FailureKind::Status(s) => FailureKind::Status(dialect.upstream_status(s)),
        k => k,
    };
    provider.failure(kind, f.detail)
}

/// Marks a whole answer read through a [`Stream`], whose `Report` told the breaker how it
/// ended (the chain walk records the others).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reported;

/// What one read of the upstream gave.
enum Step {
    /// Bytes for the client (possibly none), or the clean end.
    Progress,
    /// The upstream was silent for a keep-alive interval.
    KeepAlive,
}

/// One answer in flight. Dropping it (the client went away) drops the upstream response too,
/// which closes that connection.
pub(crate) struct Stream {
    upstream: Upstream,
    pipe: Pipe,
    provider: Arc<Provider>,
    exchange: Exchange,
    /// The whole call's limit (`timeouts.total`).
    deadline: Instant,
    /// The first content must have started by then (`timeouts.first_content`).
    first_content_by: Instant,
    keepalive: Duration,
    last_upstream: Instant,
    last_sent: Instant,
    finished: bool,
    /// Tells the backend's breaker how a committed stream ended (set at the commit point:
    /// before it, the chain walk records the outcome).
    report: Option<Report>,
    /// Where to continue the answer if it breaks after its first content.
    plan: Option<Box<dyn Resume>>,
    /// A break seen while bytes before it were still to be sent.
    pending: Option<ProviderError>,
    /// Upstream bytes read since the client was last sent any: what is held (before the
    /// commit point, a tool call, a whole answer), capped by `max_upstream_body_bytes`.
    unsent: usize,
    /// The stream's one timer (idle, first content, the deadline, the next keep-alive) and
    /// when it is set to fire.
    timer: Pin<Box<tokio::time::Sleep>>,
    timer_at: Instant,
}

impl Stream {
    /// A stream reading `upstream` through `pipe`; the clock starts with the exchange.
    pub(crate) fn new(
        upstream: Upstream,
        pipe: Pipe,
        provider: Arc<Provider>,
        exchange: Exchange,
        keepalive: Duration,
        plan: Option<Box<dyn Resume>>,
    ) -> Stream {
        let timeouts = provider.config.timeouts;
        let deadline = exchange.started + timeouts.total;
        Stream {
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            timer_at: deadline,
            deadline,
            first_content_by: Instant::now() + timeouts.first_content,
            upstream,
            pipe,
            provider,
            exchange,
            keepalive,
            last_upstream: Instant::now(),
            last_sent: Instant::now(),
            finished: false,
            report: None,
            plan,
            pending: None,
            unsent: 0,
        }
    }

    /// Makes this continuation the stream the client reads on: it carries the plan (so a
    /// break can be continued again), the client's keep-alive interval, and the report.
    pub(crate) fn carry_on(&mut self, plan: Box<dyn Resume>, keepalive: Duration, report: Report) {
        self.plan = Some(plan);
        self.keepalive = keepalive;
        self.report = Some(report);
    }

    /// What the client has received, in canonical form, if it is known.
    pub(crate) fn take_delivered(&mut self) -> Option<Collector> {
        self.pipe.take_delivered()
    }

    /// The provider now serving.
    pub(crate) fn provider_name(&self) -> &str {
        self.provider.name()
    }

    /// Reads the upstream once (with `pings`, at most until a keep-alive is due). Sets
    /// `finished` at a clean end, which is reported and logged here.
    async fn step(&mut self, out: &mut BytesMut, pings: bool) -> Result<Step, ProviderError> {
        let idle = self.provider.config.timeouts.idle;
        let (limit_at, kind) = stream_limit(
            self.deadline,
            self.last_upstream,
            idle,
            (!self.pipe.has_started()).then_some(self.first_content_by),
        );
        let ping_at = self.last_sent + self.keepalive;
        let wait_until = if pings {
            limit_at.min(ping_at)
        } else {
            limit_at
        };
        let next = loop {
            // One timer per stream, moved only when it must fire sooner, or when it fired at
            // a deadline that has since moved on: not a timer armed and cancelled per piece.
            if wait_until < self.timer_at || self.timer.is_elapsed() {
                self.timer.as_mut().reset(wait_until);
                self.timer_at = wait_until;
            }
            tokio::select! {
                biased;
                next = self.upstream.next() => break Some(next),
                () = self.timer.as_mut() => {
                    if self.timer_at >= wait_until {
                        break None;
                    }
                }
            }
        };
        match next {
            // The upstream is silent: keep the client alive (Claude Code gives up after 300 s
            // without a byte).
            None if pings && ping_at <= limit_at => Ok(Step::KeepAlive),
            None => Err(timeout_failure(&self.provider, kind, idle)),
            Some(next) => self.take(next, out),
        }
    }

    /// What one read of the upstream gave: a piece through the pipe, a break, or the end.
    fn take(
        &mut self,
        next: Option<Result<Piece, ProviderError>>,
        out: &mut BytesMut,
    ) -> Result<Step, ProviderError> {
        match next {
            Some(Ok(piece)) => {
                self.last_upstream = Instant::now();
                if let Piece::Bytes(b) = &piece {
                    self.unsent += b.len();
                }
                self.pipe.feed(piece, out, &self.provider)?;
                self.check_limits()?;
                Ok(Step::Progress)
            }
            Some(Err(e)) => Err(e),
            None => {
                let ending = self.pipe.end(out, &self.provider)?;
                self.finished = true;
                let (ok, outcome) = match ending {
                    Ending::Complete => (true, "complete"),
                    Ending::UpstreamError => (false, "upstream_error_event"),
                };
                // A whole stream is the backend's success: without it its breaker would only
                // ever hear of failures and open on the fifth, however many succeeded between.
                self.report(ok);
                self.exchange.log(200, outcome, self.pipe.usage(), None);
                Ok(Step::Progress)
            }
        }
    }

    /// An upstream that sends an endless line, an endless event or an endless answer fails
    /// at its cap, like any other fault, instead of growing the gateway without bound.
    fn check_limits(&self) -> Result<(), ProviderError> {
        let limits = self.provider.config.limits;
        if self.pipe.buffered() > limits.event {
            return Err(super::attempt::oversize(
                &self.provider,
                "server-sent event (or line)",
                limits.event,
                "max_upstream_event_bytes",
            ));
        }
        if self.unsent > limits.body || self.pipe.held() > limits.body {
            return Err(super::attempt::oversize(
                &self.provider,
                "answer held back from the client",
                limits.body,
                "max_upstream_body_bytes",
            ));
        }
        Ok(())
    }

    fn report(&mut self, ok: bool) {
        if let Some(r) = self.report.take() {
            r.done(ok);
        }
    }

    /// Holds what arrives until the commit point: the first content, a clean end, or a
    /// keep-alive due (then the client gets the headers and what was held). A failure before
    /// it is the error the client (or the chain walk) gets instead of a stream; nothing was
    /// sent. `report` hears how a committed stream ends (a stream whole before its commit
    /// point is reported at once; one that fails before it is the chain walk's to record).
    pub(crate) async fn commit(&mut self, report: Option<Report>) -> Result<Bytes, GatewayError> {
        self.report = report;
        let mut head = BytesMut::new();
        while !self.finished && !self.pipe.committed() {
            match self.step(&mut head, true).await {
                Ok(Step::KeepAlive) => break,
                Ok(Step::Progress) => {}
                Err(e) => return Err(self.fail_before_commit(e)),
            }
        }
        self.unsent = 0;
        Ok(head.freeze())
    }

    /// Reads a whole answer to its end (no keep-alives: nothing is sent until then). The
    /// client has received nothing, so any failure can still be mended: one after content is
    /// continued elsewhere when the plan allows (this stream becomes the continuation's), and
    /// any other is the error the chain walk judges and may fail over on.
    async fn collect(&mut self, report: Option<Report>) -> Result<(), GatewayError> {
        self.report = report;
        let mut sink = BytesMut::new();
        while !self.finished {
            sink.clear();
            let Err(e) = self.step(&mut sink, false).await else {
                continue;
            };
            if !(self.pipe.has_content() && self.plan.is_some() && self.pipe.continuable()) {
                return Err(self.fail_before_commit(e));
            }
            // The breaker hears of the break only if the answer goes on elsewhere; if it does
            // not, the error goes to the chain walk, which records it.
            let report = self.report.take();
            self.hand_over(e).await?;
            if let Some(r) = report {
                r.done(false);
            }
        }
        Ok(())
    }

    /// Reads a whole answer to its end ([`Stream::collect`]) and returns it in the client's
    /// format: the passthrough's rebuilt body, or the translated (or continued) answer encoded
    /// for the client. A stream that completed without an answer is truncated.
    pub(crate) async fn answer(
        &mut self,
        report: Option<Report>,
        format: Format,
        model: &str,
    ) -> Result<Value, GatewayError> {
        self.collect(report).await?;
        let whole = match &mut self.pipe {
            Pipe::Passthrough(p) => p.take_whole(),
            Pipe::Translated(p) => p
                .take_delivered()
                .finish()
                .map(|answer| encode_response(format, &answer, model, super::attempt::unix_now())),
        };
        whole.ok_or_else(|| {
            GatewayError::Upstream(self.provider.failure(
                FailureKind::Truncated,
                "the upstream's stream finished without an answer".into(),
            ))
        })
    }

    /// Logs a failure that the client gets as an HTTP error (nothing was sent yet); the chain
    /// walk records it with the breaker.
    fn fail_before_commit(&mut self, e: ProviderError) -> GatewayError {
        self.finished = true;
        self.report.take();
        let e = GatewayError::Upstream(e);
        self.exchange.log(
            e.status(),
            &super::attempt::error_class(&e),
            self.pipe.usage(),
            Some(&e.to_string()),
        );
        e
    }

    /// The next bytes for the client, or `None` when the stream is over.
    pub(crate) async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if self.finished {
                return None;
            }
            let mut out = BytesMut::new();
            let step = match self.pending.take() {
                Some(e) => Err(e),
                None => self.step(&mut out, true).await,
            };
            let keepalive = matches!(step, Ok(Step::KeepAlive));
            match step {
                Ok(Step::KeepAlive) => {
                    out.extend_from_slice(&self.pipe.dialect().keepalive());
                    // A dialect without keep-alives (Ollama) waits another interval.
                    self.last_sent = Instant::now();
                }
                Ok(Step::Progress) => {}
                Err(e) if !out.is_empty() && self.plan.is_some() && self.pipe.continuable() => {
                    // Send what arrived before the break first; continue on the next call.
                    self.pending = Some(e);
                }
                Err(e) => self.broke(e, &mut out).await,
            }
            if !out.is_empty() {
                self.last_sent = Instant::now();
                // Our own keep-alive sends nothing of what is held.
                if !keepalive {
                    self.unsent = 0;
                }
                return Some(out.freeze());
            }
        }
    }

    /// The stream broke after its commit point: continue it on the next backend that can
    /// (this stream becomes that one), or end it with the dialect's explicit error.
    async fn broke(&mut self, e: ProviderError, out: &mut BytesMut) {
        self.report(false);
        match self.hand_over(e).await {
            Ok(head) => out.extend_from_slice(&head),
            Err(why) => out.extend_from_slice(&self.pipe.dialect().stream_error(&why).raw),
        }
    }

    /// This attempt broke after content: the answer is continued elsewhere (this stream
    /// becomes the continuation's; the bytes to send before it come back) or the attempt ends
    /// with why it could not be.
    async fn hand_over(&mut self, e: ProviderError) -> Result<BytesMut, GatewayError> {
        let class = e.kind.as_str();
        match self.continue_elsewhere(&e).await {
            Ok((next, head)) => {
                self.exchange.log_continued(
                    200,
                    class,
                    self.pipe.usage(),
                    Some(&format!("{e}; continued on {}", next.provider_name())),
                );
                // The old attempt is over: its drop must not log.
                self.finished = true;
                *self = next;
                Ok(head)
            }
            Err(why) => {
                self.finished = true;
                self.exchange
                    .log(200, class, self.pipe.usage(), Some(&why.to_string()));
                Err(why)
            }
        }
    }

    async fn continue_elsewhere(
        &mut self,
        e: &ProviderError,
    ) -> Result<(Stream, BytesMut), GatewayError> {
        let why = GatewayError::Upstream(e.clone());
        let (Some(plan), Some(delivered)) = (self.plan.take(), self.pipe.take_delivered()) else {
            return Err(why);
        };
        plan.resume(delivered, why).await
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if !self.finished {
            self.exchange.log(
                200,
                "client_disconnected",
                self.pipe.usage(),
                Some("the client closed the connection before the stream ended"),
            );
        }
    }
}

/// The response body of a stream: the bytes held until the commit point, then the rest.
/// Dropping it (the client went away) drops the stream, which closes the upstream.
pub(crate) fn stream_body(first: Bytes, stream: Stream) -> Body {
    let body = futures_util::stream::unfold((stream, Some(first)), |(mut s, first)| async move {
        if let Some(b) = first.filter(|b| !b.is_empty()) {
            return Some((Ok::<_, std::convert::Infallible>(b), (s, None)));
        }
        s.next_chunk().await.map(|b| (Ok(b), (s, None)))
    });
    Body::from_stream(body)
}
