//! What the gateway has done, for the people watching it: per-backend rolling statistics
//! (latency to first content and in total, p50/p95; errors by failure class; streams broken
//! after their first content; tokens; estimated spend), the recent requests, and the request
//! journal ([`crate::telemetry::journal`]). The relay only *reports* here through a [`Trace`]; the status
//! snapshot, `/metrics`, `/api/requests`, the tray and the dashboard only *read*.
//!
//! One [`Trace`] follows one client request: the chain walk opens an attempt per backend it
//! tries, each attempt's `Exchange` reports how it ended, and when the last handle is dropped
//! (the response, or the stream the client read, is gone) the request is folded into the
//! statistics, published on [`Recorder::subscribe`] and written to the journal. Nothing about a
//! request's content is kept: no prompt text, no answer text, no headers.

use crate::config::Price;
use crate::telemetry::entry::{unix_ms, Attempt, Entry};
use crate::telemetry::journal::Journal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Latency samples kept per backend (and no older than [`WINDOW`]).
const SAMPLES: usize = 512;
/// The rolling window of the latency and error-rate figures.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Recent requests kept in memory for the live feed.
const RECENT: usize = 200;
/// Points in a backend's latency sparkline.
const SPARK: usize = 40;

/// Published list prices (USD per million tokens) used when the config's `[prices]` does not
/// name a model; matched by prefix of the upstream model name, longest first. Estimates: they
/// ignore cache discounts and batch pricing.
const BUILT_IN_PRICES: &[(&str, f64, f64)] = &[
    ("claude-opus-4", 15.0, 75.0),
    ("claude-opus-4-5", 5.0, 25.0),
    ("claude-sonnet-4", 3.0, 15.0),
    ("claude-haiku-4", 1.0, 5.0),
    ("claude-3-5-haiku", 0.8, 4.0),
    ("gpt-4o", 2.5, 10.0),
    ("gpt-4o-mini", 0.15, 0.6),
    ("gpt-4.1", 2.0, 8.0),
    ("gpt-4.1-mini", 0.4, 1.6),
    ("gpt-5", 1.25, 10.0),
    ("gpt-5-mini", 0.25, 2.0),
    ("gemini-2.5-pro", 1.25, 10.0),
    ("gemini-2.5-flash", 0.3, 2.5),
];

/// The price table: the config's entries (exact upstream model names or globs), then the
/// built-in prefixes. Local models cost nothing.
#[derive(Debug, Clone, Default)]
pub struct Prices {
    configured: Vec<(globset::GlobMatcher, Price)>,
}

impl Prices {
    /// From the config's `[prices]` (model glob → price); globs are checked by the config.
    pub fn new(table: &BTreeMap<String, Price>) -> Prices {
        let configured = table
            .iter()
            .filter_map(|(k, p)| Some((globset::Glob::new(k).ok()?.compile_matcher(), *p)))
            .collect();
        Prices { configured }
    }

    /// The price of an upstream model, if known.
    pub fn of(&self, model: &str) -> Option<Price> {
        if let Some((_, p)) = self.configured.iter().find(|(g, _)| g.is_match(model)) {
            return Some(*p);
        }
        BUILT_IN_PRICES
            .iter()
            .filter(|(prefix, _, _)| model.starts_with(prefix))
            .max_by_key(|(prefix, _, _)| prefix.len())
            .map(|&(_, input, output)| Price { input, output })
    }

    fn cost(&self, model: &str, input: u64, output: u64) -> f64 {
        self.of(model).map_or(0.0, |p| {
            (input as f64 * p.input + output as f64 * p.output) / 1_000_000.0
        })
    }
}

/// A backend's figures, as the status snapshot shows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackendStats {
    /// Attempts since the gateway started.
    pub requests: u64,
    /// Attempts that failed (any class) since the start.
    pub errors: u64,
    /// Failures by class (`http_529`, `truncated`, `first_byte_timeout`, …) since the start.
    pub errors_by_class: BTreeMap<String, u64>,
    /// Streams that broke after content had reached the client (continued or not).
    pub truncations: u64,
    /// Share of attempts that failed in the last [`WINDOW`] (0 with none).
    pub error_rate: f64,
    /// Milliseconds to first content over the window, median and 95th percentile.
    pub ttft_p50_ms: Option<f64>,
    /// 95th percentile of the same.
    pub ttft_p95_ms: Option<f64>,
    /// Milliseconds to the end of the answer over the window, median.
    pub total_p50_ms: Option<f64>,
    /// 95th percentile of the same.
    pub total_p95_ms: Option<f64>,
    /// The last attempt's latency to first content (or to failure).
    pub last_ms: Option<f64>,
    /// The last failure's class.
    pub last_error: Option<String>,
    /// When it was last tried (Unix ms).
    pub last_at_ms: Option<u64>,
    /// Tokens in and out of its answers.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Estimated spend in USD.
    pub spend_usd: f64,
    /// The latest latencies to first content (ms, oldest first; failures as 0), for a sparkline.
    pub spark: Vec<f64>,
}

/// The gateway's totals since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    /// Requests answered (any outcome).
    pub requests: u64,
    /// Requests where some backend failed before another served.
    pub failovers: u64,
    /// Broken streams finished by another backend.
    pub continued: u64,
    /// Requests the client got as a failure.
    pub failed: u64,
    /// Tokens in.
    pub input_tokens: u64,
    /// Tokens out.
    pub output_tokens: u64,
    /// Estimated spend in USD.
    pub spend_usd: f64,
    /// Journal writes that failed (a full disk); the feed and statistics go on.
    pub journal_errors: u64,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    ttft_ms: Option<f64>,
    total_ms: Option<f64>,
    failed: bool,
}

#[derive(Debug, Default)]
struct Backend {
    stats: BackendStats,
    samples: VecDeque<Sample>,
}

impl Backend {
    /// Folds one attempt into the backend's figures and latency samples.
    fn count(&mut self, a: &AttemptRecord, prices: &Prices, at_ms: u64) {
        let failed = !is_success_or_client(&a.outcome);
        self.stats.requests += 1;
        if failed {
            self.stats.errors += 1;
            *self
                .stats
                .errors_by_class
                .entry(a.outcome.clone())
                .or_default() += 1;
            self.stats.last_error = Some(a.outcome.clone());
        }
        if a.broke_after_content {
            self.stats.truncations += 1;
        }
        self.stats.input_tokens += a.input_tokens;
        self.stats.output_tokens += a.output_tokens;
        self.stats.spend_usd += prices.cost(model_of(&a.backend), a.input_tokens, a.output_tokens);
        self.stats.last_ms = a.ttft_ms.or(Some(a.ms));
        self.stats.last_at_ms = Some(at_ms);
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at: a.at,
            ttft_ms: if failed && !a.broke_after_content {
                None
            } else {
                a.ttft_ms.or(Some(a.ms))
            },
            total_ms: (!failed).then_some(a.ms),
            failed,
        });
    }
}

#[derive(Debug, Default)]
struct State {
    backends: HashMap<String, Backend>,
    recent: VecDeque<Arc<Entry>>,
    totals: Totals,
    next_id: u64,
}

/// Collects what every request did. Shared by the router (through each request's [`Trace`]).
#[derive(Debug)]
pub struct Recorder {
    prices: Prices,
    state: Mutex<State>,
    events: broadcast::Sender<Arc<Entry>>,
    journal: Option<Journal>,
}

impl Recorder {
    /// A recorder with this price table, writing to `journal` when given (its last entries
    /// seed the live feed, and ids go on from its last).
    pub fn new(prices: Prices, journal: Option<Journal>) -> Recorder {
        let mut state = State::default();
        if let Some(j) = &journal {
            let recent = j.recent(RECENT).unwrap_or_default();
            state.next_id = j.last_id().unwrap_or(0) + 1;
            state.recent = recent.into_iter().rev().map(Arc::new).collect();
        } else {
            state.next_id = 1;
        }
        Recorder {
            prices,
            state: Mutex::new(state),
            events: broadcast::channel(256).0,
            journal,
        }
    }

    /// Every finished request, as it finishes.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Entry>> {
        self.events.subscribe()
    }

    /// The journal, if one is kept.
    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// Opens the trace of one request.
    pub fn trace(self: &Arc<Self>, dialect: &str, model: &str, stream: bool) -> Trace {
        Trace(Some(Arc::new(TraceInner {
            recorder: self.clone(),
            record: Mutex::new(Record {
                at_ms: unix_ms(),
                started: Instant::now(),
                dialect: dialect.to_owned(),
                model: model.to_owned(),
                stream,
                attempts: Vec::new(),
                continued: false,
                status: 0,
            }),
        })))
    }

    /// The newest `limit` requests, newest first (from memory: the journal seeds it at start).
    pub fn recent(&self, limit: usize) -> Vec<Arc<Entry>> {
        let st = self.state.lock().expect("recorder lock");
        st.recent.iter().rev().take(limit).cloned().collect()
    }

    /// The newest `limit` requests, oldest first: the journal's, with the ones still in
    /// memory and not yet written (the journal gathers its writes) added.
    pub fn history(&self, limit: usize) -> Vec<Entry> {
        let mut out: Vec<Entry> = self
            .journal
            .as_ref()
            .and_then(|j| j.recent(limit).ok())
            .unwrap_or_default();
        let known: std::collections::HashSet<u64> = out.iter().map(|e| e.id).collect();
        out.extend(
            self.recent(limit)
                .into_iter()
                .filter(|e| !known.contains(&e.id))
                .map(|e| (*e).clone()),
        );
        out.sort_by_key(|e| e.id);
        let skip = out.len().saturating_sub(limit);
        out.drain(..skip);
        out
    }

    /// Every backend's figures, and the totals.
    pub fn stats(&self) -> (BTreeMap<String, BackendStats>, Totals) {
        let now = Instant::now();
        let mut st = self.state.lock().expect("recorder lock");
        let mut out = BTreeMap::new();
        for (key, b) in st.backends.iter_mut() {
            while b
                .samples
                .front()
                .is_some_and(|s| now.duration_since(s.at) > WINDOW)
            {
                b.samples.pop_front();
            }
            let mut s = b.stats.clone();
            let ttft: Vec<f64> = b.samples.iter().filter_map(|s| s.ttft_ms).collect();
            let total: Vec<f64> = b.samples.iter().filter_map(|s| s.total_ms).collect();
            s.ttft_p50_ms = percentile(&ttft, 0.50);
            s.ttft_p95_ms = percentile(&ttft, 0.95);
            s.total_p50_ms = percentile(&total, 0.50);
            s.total_p95_ms = percentile(&total, 0.95);
            let n = b.samples.len();
            s.error_rate = if n == 0 {
                0.0
            } else {
                b.samples.iter().filter(|s| s.failed).count() as f64 / n as f64
            };
            s.spark = b
                .samples
                .iter()
                .skip(n.saturating_sub(SPARK))
                .map(|s| {
                    if s.failed {
                        0.0
                    } else {
                        s.ttft_ms.unwrap_or(0.0)
                    }
                })
                .collect();
            out.insert(key.clone(), s);
        }
        let mut totals = st.totals.clone();
        totals.journal_errors = self.journal.as_ref().map_or(0, Journal::errors);
        (out, totals)
    }

    fn finish(&self, r: Record) {
        let duration_ms = ms(r.started.elapsed());
        let served = r.attempts.iter().rev().find(|a| a.outcome == "complete");
        let last = r.attempts.last();
        let outcome = match (served, last) {
            (Some(_), _) => "complete".to_owned(),
            (None, Some(a)) => a.outcome.clone(),
            (None, None) => "unavailable".to_owned(),
        };
        let served_by = served
            .or(last.filter(|a| a.served))
            .map(|a| a.backend.clone());
        let (mut input, mut output, mut spend) = (0, 0, 0.0);
        for a in &r.attempts {
            input += a.input_tokens;
            output += a.output_tokens;
            spend += self
                .prices
                .cost(model_of(&a.backend), a.input_tokens, a.output_tokens);
        }
        // A continuation's usage is the sum of both attempts (its prefill counted as input by
        // the second); the request's output is what the client got, which the last reports.
        let mut st = self.state.lock().expect("recorder lock");
        for a in &r.attempts {
            // The key is copied only the first time a backend is seen.
            match st.backends.get_mut(&a.backend) {
                Some(b) => b.count(a, &self.prices, r.at_ms),
                None => st.backends.entry(a.backend.clone()).or_default().count(
                    a,
                    &self.prices,
                    r.at_ms,
                ),
            }
        }
        let entry = Entry {
            id: st.next_id,
            at_ms: r.at_ms,
            dialect: r.dialect,
            model: r.model,
            stream: r.stream,
            attempts: r
                .attempts
                .iter()
                .map(|a| Attempt {
                    backend: a.backend.clone(),
                    outcome: a.outcome.clone(),
                    ttft_ms: a.ttft_ms.map(round1),
                    ms: round1(a.ms),
                    broke_after_content: a.broke_after_content,
                    continuation: a.continuation.map(str::to_owned),
                    detail: a.detail.clone(),
                })
                .collect(),
            served_by,
            continued: r.continued,
            status: r.status,
            outcome,
            input_tokens: input,
            output_tokens: output,
            duration_ms: round1(duration_ms),
            spend_usd: spend,
        };
        st.next_id += 1;
        st.totals.requests += 1;
        st.totals.failovers += u64::from(entry.failed_over() && entry.served_by.is_some());
        st.totals.continued += u64::from(entry.continued);
        st.totals.failed += u64::from(entry.outcome != "complete");
        st.totals.input_tokens += input;
        st.totals.output_tokens += output;
        st.totals.spend_usd += spend;
        let entry = Arc::new(entry);
        if st.recent.len() == RECENT {
            st.recent.pop_front();
        }
        st.recent.push_back(entry.clone());
        drop(st);
        if let Some(j) = &self.journal {
            j.write(entry.clone());
        }
        let _ = self.events.send(entry);
    }
}

/// Outcomes that are not the backend's failure.
fn is_success_or_client(outcome: &str) -> bool {
    matches!(outcome, "complete" | "client_disconnected")
}

fn model_of(backend: &str) -> &str {
    backend.split_once('/').map_or(backend, |(_, m)| m)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// The `q` quantile by nearest rank, `None` for no samples.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(round1(v[rank - 1]))
}

#[derive(Debug)]
struct AttemptRecord {
    backend: String,
    at: Instant,
    outcome: String,
    ttft_ms: Option<f64>,
    ms: f64,
    input_tokens: u64,
    output_tokens: u64,
    broke_after_content: bool,
    /// Its answer (or error) is what the client got.
    served: bool,
    ended: bool,
    /// It finished another attempt's broken answer, by this method.
    continuation: Option<&'static str>,
    /// Why it failed, in words.
    detail: Option<String>,
}

#[derive(Debug)]
struct Record {
    at_ms: u64,
    started: Instant,
    dialect: String,
    model: String,
    stream: bool,
    attempts: Vec<AttemptRecord>,
    continued: bool,
    status: u16,
}

#[derive(Debug)]
struct TraceInner {
    recorder: Arc<Recorder>,
    record: Mutex<Record>,
}

impl Drop for TraceInner {
    fn drop(&mut self) {
        let record = std::mem::replace(
            self.record.get_mut().expect("trace lock"),
            Record {
                at_ms: 0,
                started: Instant::now(),
                dialect: String::new(),
                model: String::new(),
                stream: false,
                attempts: Vec::new(),
                continued: false,
                status: 0,
            },
        );
        self.recorder.finish(record);
    }
}

/// One request's trace; cloned into each attempt. Recorded when the last clone is dropped.
/// `Trace::default()` records nothing.
#[derive(Debug, Clone, Default)]
pub struct Trace(Option<Arc<TraceInner>>);

impl Trace {
    fn with<T>(&self, f: impl FnOnce(&mut Record) -> T) -> Option<T> {
        self.0
            .as_ref()
            .map(|t| f(&mut t.record.lock().expect("trace lock")))
    }

    fn attempt<T>(&self, backend: &str, f: impl FnOnce(&mut AttemptRecord) -> T) -> Option<T> {
        self.with(|r| {
            r.attempts
                .iter_mut()
                .rev()
                .find(|a| a.backend == backend)
                .map(f)
        })
        .flatten()
    }

    /// An attempt on `backend` starts.
    pub fn begin(&self, backend: &str) {
        self.with(|r| {
            r.attempts.push(AttemptRecord {
                backend: backend.to_owned(),
                at: Instant::now(),
                outcome: "incomplete".to_owned(),
                ttft_ms: None,
                ms: 0.0,
                input_tokens: 0,
                output_tokens: 0,
                broke_after_content: false,
                served: false,
                ended: false,
                continuation: None,
                detail: None,
            })
        });
    }

    /// Why the attempt `at` (from [`Trace::latest`]) failed, in words (the first reason
    /// given stays; secrets redacted): the feed and the journal show it beside the class.
    pub fn why(&self, at: Option<usize>, detail: &str) {
        let Some(at) = at else { return };
        self.with(|r| {
            if let Some(a) = r.attempts.get_mut(at) {
                if a.detail.is_none() && !detail.is_empty() {
                    let mut d: String = crate::secret::redact(detail).chars().take(500).collect();
                    d.shrink_to_fit();
                    a.detail = Some(d);
                }
            }
        });
    }

    /// The attempt on `backend` committed its stream (its first content is on the way).
    pub fn committed(&self, backend: &str) {
        self.attempt(backend, |a| {
            a.ttft_ms = Some(ms(a.at.elapsed()));
            a.served = true;
        });
    }

    /// The attempt on `backend` is a continuation of a broken answer, by `method`
    /// (`prefill` or `instruct`).
    pub fn continuing(&self, backend: &str, method: &'static str) {
        self.attempt(backend, |a| a.continuation = Some(method));
    }

    /// The attempt on `backend` failed before content with this class; `served` when that
    /// failure is what the client gets.
    pub fn failed(&self, backend: &str, class: &str, served: bool) {
        self.attempt(backend, |a| {
            if !a.ended {
                a.outcome = class.to_owned();
                a.ms = ms(a.at.elapsed());
                a.ended = true;
            }
            a.served = served;
        });
    }

    /// The latest attempt on `backend` (for [`Trace::ended`]: a continuation on the same
    /// backend begins another attempt before the broken one's end is recorded).
    pub fn latest(&self, backend: &str) -> Option<usize> {
        self.with(|r| r.attempts.iter().rposition(|a| a.backend == backend))
            .flatten()
    }

    /// The attempt `at` (from [`Trace::latest`]) ended (its `Exchange` logged it): `outcome`
    /// is `complete`, a failure class, or `client_disconnected`. A committed stream that ends
    /// in a failure broke after its first content.
    pub fn ended(&self, at: Option<usize>, outcome: &str, input: u64, output: u64) {
        let Some(at) = at else { return };
        self.with(|r| {
            let Some(a) = r.attempts.get_mut(at) else {
                return;
            };
            if a.ended {
                return;
            }
            a.outcome = outcome.to_owned();
            a.ms = ms(a.at.elapsed());
            a.input_tokens = input;
            a.output_tokens = output;
            a.broke_after_content =
                a.served && a.ttft_ms.is_some() && !is_success_or_client(outcome);
            a.ended = true;
            if outcome == "complete" && a.ttft_ms.is_none() {
                a.ttft_ms = Some(a.ms);
            }
        });
    }

    /// The stream was finished by another backend, spliced in.
    pub fn continued(&self) {
        self.with(|r| r.continued = true);
    }

    /// The status the client got.
    pub fn status(&self, status: u16) {
        self.with(|r| r.status = status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder() -> Arc<Recorder> {
        Arc::new(Recorder::new(Prices::default(), None))
    }

    #[test]
    fn a_failover_is_one_entry_with_both_attempts_and_per_backend_figures() {
        let r = recorder();
        let mut events = r.subscribe();
        let t = r.trace("anthropic", "claude-sonnet-4-5", true);
        t.begin("a/claude-sonnet-4-5");
        t.failed("a/claude-sonnet-4-5", "http_529", false);
        t.begin("b/gpt-4o");
        t.committed("b/gpt-4o");
        t.ended(t.latest("b/gpt-4o"), "complete", 1_000_000, 100_000);
        t.status(200);
        drop(t);
        let e = events.try_recv().expect("an entry");
        assert_eq!(e.served_by.as_deref(), Some("b/gpt-4o"));
        assert_eq!(e.outcome, "complete");
        assert!(e.failed_over());
        assert_eq!(e.attempts[0].outcome, "http_529");
        // gpt-4o at 2.5 / 10 USD per million.
        assert!((e.spend_usd - 3.5).abs() < 1e-9, "{}", e.spend_usd);
        let (stats, totals) = r.stats();
        assert_eq!(stats["a/claude-sonnet-4-5"].errors_by_class["http_529"], 1);
        assert_eq!(stats["a/claude-sonnet-4-5"].error_rate, 1.0);
        assert_eq!(stats["b/gpt-4o"].errors, 0);
        assert!(stats["b/gpt-4o"].ttft_p50_ms.is_some());
        assert_eq!(totals.failovers, 1);
        assert_eq!(totals.requests, 1);
    }

    #[test]
    fn a_continuation_on_the_same_backend_is_its_own_attempt() {
        let r = recorder();
        let t = r.trace("anthropic", "m", true);
        t.begin("a/m");
        t.committed("a/m");
        let broken = t.latest("a/m");
        // The continuation begins before the broken attempt's end is recorded.
        t.begin("a/m");
        let going_on = t.latest("a/m");
        t.committed("a/m");
        t.continuing("a/m", "instruct");
        t.ended(broken, "transport", 10, 5);
        t.continued();
        t.ended(going_on, "complete", 12, 7);
        drop(t);
        let e = &r.recent(1)[0];
        let got: Vec<_> = e
            .attempts
            .iter()
            .map(|a| (a.outcome.as_str(), a.continuation.as_deref()))
            .collect();
        assert_eq!(got, [("transport", None), ("complete", Some("instruct"))]);
        assert!(e.attempts[0].broke_after_content && e.continued);
    }

    #[test]
    fn a_continued_stream_counts_a_truncation_on_the_backend_that_broke() {
        let r = recorder();
        let t = r.trace("openai", "m", true);
        t.begin("a/m");
        t.committed("a/m");
        let t2 = t.clone();
        t.ended(t.latest("a/m"), "truncated", 10, 5);
        t.continued();
        drop(t);
        t2.begin("b/m");
        t2.committed("b/m");
        t2.ended(t2.latest("b/m"), "complete", 15, 20);
        drop(t2);
        let e = &r.recent(1)[0];
        assert!(e.continued);
        assert_eq!(e.served_by.as_deref(), Some("b/m"));
        assert_eq!((e.input_tokens, e.output_tokens), (25, 25));
        let (stats, _) = r.stats();
        assert_eq!(stats["a/m"].truncations, 1);
        assert_eq!(stats["b/m"].truncations, 0);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.95), Some(95.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7.0], 0.95), Some(7.0));
    }

    #[test]
    fn configured_prices_beat_the_built_in_ones_and_local_models_are_free() {
        let mut table = BTreeMap::new();
        table.insert(
            "gpt-4o*".to_owned(),
            Price {
                input: 1.0,
                output: 2.0,
            },
        );
        let p = Prices::new(&table);
        assert_eq!(p.of("gpt-4o-2024-08-06").map(|p| p.input), Some(1.0));
        assert_eq!(
            p.of("claude-opus-4-5-20251101").map(|p| p.output),
            Some(25.0)
        );
        assert_eq!(p.of("claude-opus-4-1").map(|p| p.output), Some(75.0));
        assert_eq!(p.of("SmolLM2-135M-Instruct"), None);
    }
}
