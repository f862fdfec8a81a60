//! Quota: what providers say, in the headers of every answer, about how much of a plan's usage
//! window or an API key's rate limits is spent, and when it comes back (protocol.md §1.10):
//!
//! - Claude subscription logins (what Claude Code passes through): `anthropic-ratelimit-unified-
//!   status` (`allowed`, `allowed_warning`, `rejected`), `-reset`, and per claim (`5h`, `7d`,
//!   per-model weekly claims such as `7ds`/`7do`) `-<claim>-utilization` (0–1), `-<claim>-reset`
//!   (Unix seconds) and `-<claim>-status`;
//! - Anthropic API keys: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
//!   {limit,remaining,reset}` (reset in RFC 3339);
//! - OpenAI-compatible: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (reset as a
//!   duration such as `6m0s`), or OpenRouter's unsuffixed `x-ratelimit-*` (reset in Unix ms);
//! - `retry-after` (seconds) on a 429, and `x-should-retry: false` (a 429 that will not clear
//!   in seconds, §1.10).
//!
//! A [`Book`] per provider keeps one [`Quota`] per credential (the configured key, or each
//! client credential passed through, known by a salted hash: never the credential), publishes
//! the crossings worth telling ([`Event`]), and says when the next request should not go
//! there ([`Book::holds_back`]): past a provider's `spill_over_at`, or out until its reset
//! after a hard quota signal (a 429 whose plan status is `rejected`). Pure but for the clock
//! passed in; imports nothing of the crate.

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// A 429 whose `retry-after` is at least this long is a quota, not a momentary limit: it
/// takes the backend out until then rather than for a breaker's seconds.
pub const HARD_RETRY_AFTER_SECS: u64 = 300;

/// How long a window without a reset time holds a backend back past the spill-over
/// threshold before a request may look again.
pub const UNKNOWN_RESET_HOLD_MS: u64 = 60_000;

/// The furthest ahead a reset is believed: a plan's longest window is a week; a header that
/// says more (or overflows) is capped here rather than holding a backend forever.
pub const LONGEST_RESET_MS: u64 = 8 * 86_400_000;

/// One usage window or rate limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// `5h`, `7d`, `7ds`, … for a plan; `requests`, `tokens`, `input-tokens`,
    /// `output-tokens` for an API key.
    pub name: String,
    /// As people say it ([`label`]): `5-hour`, `week`, `week (Sonnet)`, `requests`.
    #[serde(default)]
    pub label: String,
    /// How much of it is spent, 0–1.
    pub utilization: f64,
    /// When it resets (Unix ms), when said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at_ms: Option<u64>,
    /// An API key's limit, when said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// What is left of it, when said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
}

/// A window's name as people say it: `5h` is `5-hour`, `7d` is `week`, `7ds` is `week
/// (Sonnet)`; an API key's `input-tokens` is `input tokens`.
pub fn label(name: &str) -> String {
    match name {
        "5h" => "5-hour".into(),
        "7d" => "week".into(),
        "7ds" => "week (Sonnet)".into(),
        "7do" => "week (Opus)".into(),
        "7dh" => "week (Haiku)".into(),
        other => other.replace('-', " "),
    }
}

impl Window {
    /// The plan's windows first, by length, then an API key's limits.
    fn rank(&self) -> (u8, String) {
        let r = match self.name.as_str() {
            "5h" => 0,
            "7d" => 1,
            n if n.starts_with("7d") => 2,
            "requests" => 3,
            "tokens" => 4,
            _ => 5,
        };
        (r, self.name.clone())
    }
}

/// What the provider said of the credential as a whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Requests are served.
    #[default]
    Allowed,
    /// Served, with a warning that a window is nearly spent (`allowed_warning`).
    Warning,
    /// Refused until a reset (`rejected`).
    Rejected,
}

impl Standing {
    fn parse(s: &str) -> Option<Standing> {
        match s.trim() {
            "allowed" => Some(Standing::Allowed),
            "allowed_warning" => Some(Standing::Warning),
            "rejected" => Some(Standing::Rejected),
            _ => None,
        }
    }
}

/// What is known of one credential's quota at one provider (`/api/status`'s `quota`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quota {
    /// `key` (the configured one) or `client XXXXXXXX` (a client's credential passed through,
    /// by a hash salted per process).
    pub credential: String,
    /// A subscription plan's windows (the unified headers) rather than an API key's limits.
    pub plan: bool,
    /// What the provider said of it as a whole.
    pub standing: Standing,
    /// Its windows, the plan's first.
    pub windows: Vec<Window>,
    /// Refused (a hard quota signal) until then (Unix ms): no request goes there before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_until_ms: Option<u64>,
    /// When it was last heard of (Unix ms).
    pub seen_at_ms: u64,
    /// Thresholds already told, per window (told again only after the window resets).
    #[serde(skip)]
    alerted: Vec<(String, u32)>,
    /// When a hold on it last ended (a refusal ran out, a window past the spill-over
    /// threshold reset), Unix ms: a conversation moved off it before then goes back.
    #[serde(skip)]
    released_at_ms: Option<u64>,
}

impl Quota {
    /// One line: `plan: 5-hour 82 %, resets in 1 h 12 m · week 40 %` (the reset of the
    /// windows past half), `refused until …` first when out.
    pub fn line(&self, now_ms: u64) -> String {
        let mut parts = Vec::new();
        for w in &self.windows {
            let mut s = format!("{} {:.0} %", w.label, w.utilization * 100.0);
            if let Some(at) = w.resets_at_ms.filter(|_| w.utilization >= 0.5) {
                s.push_str(&format!(", resets in {}", time_to(at, now_ms)));
            }
            parts.push(s);
        }
        let mut line = if self.plan { "plan: " } else { "limits: " }.to_owned();
        if let Some(at) = self.out_until_ms.filter(|at| *at > now_ms) {
            line.push_str(&format!(
                "refused until the reset in {} · ",
                time_to(at, now_ms)
            ));
        } else if self.standing == Standing::Rejected {
            line.push_str("refused · ");
        }
        line.push_str(&parts.join(" · "));
        if self.credential != "key" {
            line.push_str(&format!(" ({})", self.credential));
        }
        line
    }

    /// The window most spent.
    pub fn fullest(&self) -> Option<&Window> {
        self.windows
            .iter()
            .max_by(|a, b| a.utilization.total_cmp(&b.utilization))
    }
}

/// `1 h 12 m`, `4 m`, `35 s`, `2 d 3 h` from now to `at`.
pub fn time_to(at_ms: u64, now_ms: u64) -> String {
    let s = at_ms.saturating_sub(now_ms).div_ceil(1000);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} m", s.div_ceil(60)),
        3600..=86_399 => format!("{} h {} m", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// What one answer's headers said.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reading {
    /// The unified (plan) headers.
    pub plan: bool,
    /// `…-unified-status`, when sent.
    pub standing: Option<Standing>,
    /// The windows it named.
    pub windows: Vec<Window>,
    /// A hard quota signal: nothing before then (Unix ms).
    pub out_until_ms: Option<u64>,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)?.to_str().ok().map(str::trim)
}

fn number<T: std::str::FromStr>(h: &HeaderMap, name: &str) -> Option<T> {
    header(h, name)?.parse().ok()
}

/// A reset time as believed: one already past (clock skew, a rollover in flight) is unknown,
/// one further than [`LONGEST_RESET_MS`] is capped there.
fn ahead(at_ms: u64, now_ms: u64) -> Option<u64> {
    (at_ms > now_ms).then(|| at_ms.min(now_ms.saturating_add(LONGEST_RESET_MS)))
}

/// Reads an answer's rate-limit headers; `None` when it carries none (and is no 429).
pub fn read(h: &HeaderMap, status: u16, now_ms: u64) -> Option<Reading> {
    // Most answers of most providers carry none: one pass over the names says so.
    if status != 429
        && !h.keys().any(|k| {
            let k = k.as_str();
            k.starts_with("anthropic-ratelimit-") || k.starts_with("x-ratelimit-")
        })
    {
        return None;
    }
    let mut r = Reading::default();
    const UNIFIED: &str = "anthropic-ratelimit-unified-";
    let mut claims: Vec<&str> = h
        .keys()
        .filter_map(|k| {
            k.as_str()
                .strip_prefix(UNIFIED)?
                .strip_suffix("-utilization")
        })
        .collect();
    claims.sort_unstable();
    claims.dedup();
    let standing = header(h, "anthropic-ratelimit-unified-status").and_then(Standing::parse);
    if standing.is_some() || !claims.is_empty() {
        r.plan = true;
        r.standing = standing;
        for claim in claims {
            let Some(u) = number::<f64>(h, &format!("{UNIFIED}{claim}-utilization")) else {
                continue;
            };
            let reset = number::<u64>(h, &format!("{UNIFIED}{claim}-reset"))
                .and_then(|s| ahead(s.saturating_mul(1000), now_ms));
            r.windows.push(Window {
                name: claim.to_owned(),
                label: label(claim),
                utilization: u.clamp(0.0, 1.0),
                resets_at_ms: reset,
                limit: None,
                remaining: None,
            });
        }
    }
    for kind in ["requests", "tokens", "input-tokens", "output-tokens"] {
        let limit = number::<u64>(h, &format!("anthropic-ratelimit-{kind}-limit"));
        let remaining = number::<u64>(h, &format!("anthropic-ratelimit-{kind}-remaining"));
        let reset = header(h, &format!("anthropic-ratelimit-{kind}-reset"))
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| ahead(d.as_millis() as u64, now_ms));
        push_limit(&mut r, kind, limit, remaining, reset);
    }
    for (kind, suffix) in [
        ("requests", "-requests"),
        ("tokens", "-tokens"),
        ("requests", ""),
    ] {
        if suffix.is_empty() && r.windows.iter().any(|w| w.name == "requests") {
            continue;
        }
        let limit = number::<u64>(h, &format!("x-ratelimit-limit{suffix}"));
        let remaining = number::<u64>(h, &format!("x-ratelimit-remaining{suffix}"));
        let reset = header(h, &format!("x-ratelimit-reset{suffix}")).and_then(|t| {
            match t.parse::<u64>() {
                // OpenRouter: Unix ms.
                Ok(ms) if ms > 1_000_000_000_000 => ahead(ms, now_ms),
                _ => duration_ms(t).and_then(|d| ahead(now_ms.saturating_add(d), now_ms)),
            }
        });
        push_limit(&mut r, kind, limit, remaining, reset);
    }
    let retry_after = number::<u64>(h, "retry-after")
        .and_then(|s| ahead(now_ms.saturating_add(s.saturating_mul(1000)), now_ms));
    if status == 429 {
        let rejected_windows = r
            .windows
            .iter()
            .filter(|w| w.utilization >= 1.0)
            .filter_map(|w| w.resets_at_ms)
            .max();
        let overall = number::<u64>(h, "anthropic-ratelimit-unified-reset")
            .and_then(|s| ahead(s.saturating_mul(1000), now_ms));
        let claim_rejected = h.iter().any(|(k, v)| {
            k.as_str().starts_with(UNIFIED)
                && k.as_str().ends_with("-status")
                && v.to_str().is_ok_and(|v| v.trim() == "rejected")
        });
        let final_429 = header(h, "x-should-retry") == Some("false");
        if r.standing == Some(Standing::Rejected) || claim_rejected || final_429 {
            r.out_until_ms = overall
                .or(rejected_windows)
                .or(retry_after)
                .or(Some(now_ms.saturating_add(UNKNOWN_RESET_HOLD_MS)));
        } else if let Some(at) =
            retry_after.filter(|at| at.saturating_sub(now_ms) >= HARD_RETRY_AFTER_SECS * 1000)
        {
            r.out_until_ms = Some(at);
        }
    }
    (r.plan || !r.windows.is_empty() || r.out_until_ms.is_some()).then_some(r)
}

fn push_limit(
    r: &mut Reading,
    kind: &str,
    limit: Option<u64>,
    remaining: Option<u64>,
    reset: Option<u64>,
) {
    let (Some(limit), Some(remaining)) = (limit, remaining) else {
        return;
    };
    if limit == 0 {
        return;
    }
    r.windows.push(Window {
        name: kind.to_owned(),
        label: label(kind),
        utilization: (1.0 - remaining as f64 / limit as f64).clamp(0.0, 1.0),
        resets_at_ms: reset,
        limit: Some(limit),
        remaining: Some(remaining),
    });
}

/// OpenAI's reset durations: `6m0s`, `1s`, `20ms`, `1h2m3.5s`, `0.5s`.
pub fn duration_ms(s: &str) -> Option<u64> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ms" => 1.0,
            "s" | "" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            _ => return None,
        };
        total += value * unit;
        rest = &rest[u..];
    }
    Some(total.round() as u64)
}

/// A change worth telling (`/api/events`' `quota` event: `{"event": "crossed", …}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A window passed an alert threshold.
    Crossed {
        /// The provider.
        provider: String,
        /// Whose ([`Quota::credential`]).
        credential: String,
        /// Which window.
        window: Window,
        /// The threshold passed (0–1).
        threshold: f64,
        /// A plan's window (not an API key's limit).
        plan: bool,
    },
    /// The provider refused the credential until a reset (a hard quota signal).
    Refused {
        /// The provider.
        provider: String,
        /// Whose.
        credential: String,
        /// Until when (Unix ms).
        until_ms: u64,
    },
    /// A window that had been told about reset, or a refusal ran out.
    Reset {
        /// The provider.
        provider: String,
        /// Whose.
        credential: String,
        /// Which window (`None`: the refusal ended).
        window: Option<String>,
    },
}

/// Why a request should not go to a backend now.
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    /// Until when (Unix ms).
    pub until_ms: u64,
    /// In words: `plan 5-hour window at 96 % (spill_over_at 0.95)`, `refused by the provider
    /// (plan quota rejected)`.
    pub why: String,
    /// The provider refused (not our own threshold).
    pub refused: bool,
}

/// One provider's quotas, per credential.
#[derive(Debug)]
pub struct Book {
    provider: String,
    alerts: Vec<f64>,
    spill_over_at: Option<f64>,
    entries: Mutex<HashMap<String, Quota>>,
    any: AtomicBool,
    events: tokio::sync::broadcast::Sender<Event>,
}

impl Book {
    /// `alerts`: the thresholds (0–1) each told once per window period; `spill_over_at`: the
    /// share past which requests go elsewhere until the window resets (`None`: only a
    /// provider's refusal holds them back).
    pub fn new(
        provider: &str,
        alerts: Vec<f64>,
        spill_over_at: Option<f64>,
        events: tokio::sync::broadcast::Sender<Event>,
    ) -> Book {
        let mut alerts = alerts;
        alerts.sort_by(f64::total_cmp);
        Book {
            provider: provider.to_owned(),
            alerts,
            spill_over_at,
            entries: Mutex::default(),
            any: AtomicBool::new(false),
            events,
        }
    }

    fn publish(&self, events: Vec<Event>) {
        for e in events {
            match &e {
                Event::Crossed {
                    window, threshold, ..
                } => tracing::warn!(
                    provider = %self.provider,
                    window = %window.name,
                    utilization = window.utilization,
                    threshold,
                    "quota window past its alert threshold"
                ),
                Event::Refused { until_ms, .. } => tracing::warn!(
                    provider = %self.provider,
                    until_ms,
                    "the provider refused the credential until its quota resets"
                ),
                Event::Reset { window, .. } => {
                    tracing::info!(provider = %self.provider, window = ?window, "quota reset")
                }
            }
            let _ = self.events.send(e);
        }
    }

    /// Records what an answer's headers said for `credential`.
    pub fn observe(&self, credential: &str, reading: Reading, now_ms: u64) {
        let mut events = Vec::new();
        {
            let mut map = self.entries.lock().expect("quota lock");
            let q = map.entry(credential.to_owned()).or_insert_with(|| Quota {
                credential: credential.to_owned(),
                plan: reading.plan,
                standing: Standing::Allowed,
                windows: Vec::new(),
                out_until_ms: None,
                seen_at_ms: now_ms,
                alerted: Vec::new(),
                released_at_ms: None,
            });
            q.seen_at_ms = now_ms;
            q.plan |= reading.plan;
            if let Some(s) = reading.standing {
                q.standing = s;
            }
            for w in reading.windows {
                let before = q.windows.iter().position(|o| o.name == w.name);
                // A plan's window has fixed periods: a reset time a minute or more later, with
                // less used, is the next period (its reset passed while nothing was asked).
                // An API key's limits refill as they go (their reset moves with every answer):
                // they are told again only once well below the lowest alert.
                let newer_period = reading.plan && before.is_some_and(|i| {
                    let o = &q.windows[i];
                    matches!((o.resets_at_ms, w.resets_at_ms), (Some(a), Some(b)) if b > a + 60_000)
                        && w.utilization < o.utilization
                });
                let spilled = |u: f64| self.spill_over_at.is_some_and(|at| u >= at);
                if newer_period && before.is_some_and(|i| spilled(q.windows[i].utilization)) {
                    q.released_at_ms = Some(now_ms);
                }
                let lowest = self.alerts.first().copied().unwrap_or(f64::INFINITY);
                let told = q.alerted.iter().any(|(n, _)| *n == w.name);
                if told && newer_period {
                    q.alerted.retain(|(n, _)| *n != w.name);
                    events.push(Event::Reset {
                        provider: self.provider.clone(),
                        credential: credential.to_owned(),
                        window: Some(w.name.clone()),
                    });
                } else if told && w.utilization < lowest - 0.1 {
                    q.alerted.retain(|(n, _)| *n != w.name);
                }
                // The highest threshold newly passed, told once.
                let passed = self
                    .alerts
                    .iter()
                    .copied()
                    .filter(|t| w.utilization >= *t)
                    .filter(|t| {
                        let key = (w.name.clone(), (t * 1000.0) as u32);
                        !q.alerted.contains(&key)
                    })
                    .collect::<Vec<_>>();
                if let Some(t) = passed.last() {
                    for t in &passed {
                        q.alerted.push((w.name.clone(), (t * 1000.0) as u32));
                    }
                    events.push(Event::Crossed {
                        provider: self.provider.clone(),
                        credential: credential.to_owned(),
                        window: w.clone(),
                        threshold: *t,
                        plan: q.plan,
                    });
                }
                match before {
                    Some(i) => q.windows[i] = w,
                    None => q.windows.push(w),
                }
            }
            q.windows.sort_by_key(Window::rank);
            if let Some(until) = reading.out_until_ms {
                if q.out_until_ms.is_none_or(|u| u < until) {
                    events.push(Event::Refused {
                        provider: self.provider.clone(),
                        credential: credential.to_owned(),
                        until_ms: until,
                    });
                }
                q.out_until_ms = Some(until);
                q.standing = Standing::Rejected;
            }
        }
        self.any.store(true, Ordering::Relaxed);
        self.publish(events);
    }

    /// Windows whose reset time has passed start again at zero; a refusal whose time has
    /// passed ends. Each told once (when it had been told about).
    pub fn expire(&self, now_ms: u64) {
        if !self.any.load(Ordering::Relaxed) {
            return;
        }
        let mut events = Vec::new();
        {
            let mut map = self.entries.lock().expect("quota lock");
            for q in map.values_mut() {
                if q.out_until_ms.is_some_and(|u| u <= now_ms) {
                    q.out_until_ms = None;
                    q.standing = Standing::Allowed;
                    q.released_at_ms = Some(now_ms);
                    events.push(Event::Reset {
                        provider: self.provider.clone(),
                        credential: q.credential.clone(),
                        window: None,
                    });
                }
                for w in &mut q.windows {
                    if w.resets_at_ms.is_some_and(|r| r <= now_ms) && w.utilization > 0.0 {
                        if self.spill_over_at.is_some_and(|at| w.utilization >= at) {
                            q.released_at_ms = Some(now_ms);
                        }
                        w.utilization = 0.0;
                        w.remaining = w.limit;
                        w.resets_at_ms = None;
                        if q.alerted.iter().any(|(n, _)| *n == w.name) {
                            q.alerted.retain(|(n, _)| *n != w.name);
                            events.push(Event::Reset {
                                provider: self.provider.clone(),
                                credential: q.credential.clone(),
                                window: Some(w.name.clone()),
                            });
                        }
                    }
                }
                if q.standing == Standing::Rejected
                    && q.out_until_ms.is_none()
                    && q.windows.iter().all(|w| w.utilization < 1.0)
                {
                    q.standing = Standing::Allowed;
                }
            }
        }
        self.publish(events);
    }

    /// Whether the next request with `credential` should go elsewhere: refused until a reset
    /// (always), or (with `spill_over_at`) a window past it or the plan `rejected`.
    pub fn holds_back(&self, credential: &str, now_ms: u64) -> Option<Hold> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let map = self.entries.lock().expect("quota lock");
        let q = map.get(credential)?;
        if let Some(until) = q.out_until_ms.filter(|u| *u > now_ms) {
            return Some(Hold {
                until_ms: until,
                why: format!(
                    "{} refused by the provider until its reset in {}",
                    if q.plan { "plan quota" } else { "quota" },
                    time_to(until, now_ms)
                ),
                refused: true,
            });
        }
        let at = self.spill_over_at?;
        let hold_of = |w: &Window| {
            w.resets_at_ms
                .unwrap_or(q.seen_at_ms + UNKNOWN_RESET_HOLD_MS)
        };
        let full = q
            .windows
            .iter()
            .filter(|w| w.utilization >= at && hold_of(w) > now_ms)
            .max_by_key(|w| hold_of(w))?;
        let until = hold_of(full);
        Some(Hold {
            until_ms: until,
            why: format!(
                "{} {} window at {:.0} % (spill_over_at {at}), back after its reset in {}",
                if q.plan { "plan" } else { "rate-limit" },
                full.label,
                full.utilization * 100.0,
                time_to(until, now_ms)
            ),
            refused: false,
        })
    }

    /// True when a hold on `credential` ended after `since_ms` (Unix ms).
    pub fn released_since(&self, credential: &str, since_ms: u64) -> bool {
        self.entries
            .lock()
            .expect("quota lock")
            .get(credential)
            .and_then(|q| q.released_at_ms)
            .is_some_and(|t| t > since_ms)
    }

    /// True until an answer has said anything of a quota.
    pub fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Relaxed)
    }

    /// Every credential's quota, the configured key first.
    pub fn snapshot(&self) -> Vec<Quota> {
        if !self.any.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let mut v: Vec<Quota> = self
            .entries
            .lock()
            .expect("quota lock")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            (a.credential != "key", &a.credential).cmp(&(b.credential != "key", &b.credential))
        });
        v
    }
}

/// Now, in Unix ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A client credential as the quota knows it: `client` and 8 hex digits of its SHA-256 with
/// a salt drawn once per process, so the name cannot be matched against a known key's hash.
pub fn client_credential(value: &str) -> String {
    use sha2::Digest;
    static SALT: OnceLock<[u8; 16]> = OnceLock::new();
    let salt = SALT.get_or_init(rand::random);
    let mut h = sha2::Sha256::new();
    h.update(salt);
    h.update(value.as_bytes());
    let d = h.finalize();
    format!("client {:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn a_plans_unified_headers_are_its_windows() {
        let h = headers(&[
            ("anthropic-ratelimit-unified-status", "allowed_warning"),
            ("anthropic-ratelimit-unified-5h-utilization", "0.82"),
            ("anthropic-ratelimit-unified-5h-reset", "1800004320"),
            ("anthropic-ratelimit-unified-5h-status", "allowed_warning"),
            ("anthropic-ratelimit-unified-7d-utilization", "0.4"),
            ("anthropic-ratelimit-unified-7d-reset", "1800300000"),
            ("anthropic-ratelimit-unified-7ds-utilization", "0.1"),
            (
                "anthropic-ratelimit-unified-representative-claim",
                "five_hour",
            ),
            ("anthropic-ratelimit-unified-fallback-percentage", "0.5"),
        ]);
        let r = read(&h, 200, NOW).unwrap();
        assert!(r.plan);
        assert_eq!(r.standing, Some(Standing::Warning));
        let names: Vec<_> = r.windows.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["5h", "7d", "7ds"]);
        assert_eq!(r.windows[0].resets_at_ms, Some(1_800_004_320_000));
        assert_eq!(r.out_until_ms, None);
        let (tx, _) = tokio::sync::broadcast::channel(8);
        let book = Book::new("anthropic", vec![0.8, 0.95], None, tx);
        book.observe("client 0000", r, NOW);
        let q = &book.snapshot()[0];
        assert_eq!(
            q.line(NOW),
            "plan: 5-hour 82 %, resets in 1 h 12 m · week 40 % · week (Sonnet) 10 % (client 0000)"
        );
    }

    #[test]
    fn api_key_and_openai_limits_read_as_utilization() {
        let h = headers(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "5"),
            ("anthropic-ratelimit-requests-reset", "2027-01-15T08:00:30Z"),
            ("anthropic-ratelimit-tokens-limit", "0"),
        ]);
        let r = read(&h, 200, NOW).unwrap();
        assert!(!r.plan);
        assert_eq!(r.windows.len(), 1, "a zero limit says nothing");
        assert!((r.windows[0].utilization - 0.9).abs() < 1e-9);
        assert!(r.windows[0].resets_at_ms.is_some());
        let h = headers(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-limit-tokens", "150000"),
            ("x-ratelimit-remaining-tokens", "15000"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        let r = read(&h, 200, NOW).unwrap();
        assert_eq!(r.windows[1].name, "tokens");
        assert_eq!(r.windows[1].resets_at_ms, Some(NOW + 360_000));
        assert!((r.windows[1].utilization - 0.9).abs() < 1e-9);
        assert!(read(&headers(&[("content-type", "text/plain")]), 200, NOW).is_none());
    }

    #[test]
    fn reset_durations_read_as_openai_writes_them() {
        assert_eq!(duration_ms("6m0s"), Some(360_000));
        assert_eq!(duration_ms("20ms"), Some(20));
        assert_eq!(duration_ms("1h2m3.5s"), Some(3_723_500));
        assert_eq!(duration_ms("0.5s"), Some(500));
        assert_eq!(duration_ms("7"), Some(7000));
        assert_eq!(duration_ms("soon"), None);
        assert_eq!(duration_ms(""), None);
    }

    #[test]
    fn a_rejected_429_holds_until_the_reset_and_a_short_one_does_not() {
        let h = headers(&[
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-reset", "1800003600"),
            ("anthropic-ratelimit-unified-5h-utilization", "1.0"),
            ("anthropic-ratelimit-unified-5h-reset", "1800003600"),
            ("retry-after", "3600"),
        ]);
        let r = read(&h, 429, NOW).unwrap();
        assert_eq!(r.out_until_ms, Some(1_800_003_600_000));
        let (tx, mut rx) = tokio::sync::broadcast::channel(8);
        let book = Book::new("anthropic", vec![0.8, 0.95], None, tx);
        book.observe("key", r, NOW);
        let hold = book.holds_back("key", NOW + 1000).unwrap();
        assert!(hold.refused);
        assert_eq!(hold.until_ms, 1_800_003_600_000);
        assert!(book.holds_back("client 1", NOW).is_none());
        // Told: the 95 % crossing (once, the highest) and the refusal.
        assert!(
            matches!(rx.try_recv().unwrap(), Event::Crossed { threshold, .. } if threshold == 0.95)
        );
        assert!(matches!(rx.try_recv().unwrap(), Event::Refused { .. }));
        assert!(rx.try_recv().is_err());
        assert!(!book.released_since("key", NOW));
        book.expire(1_800_003_600_000);
        assert!(book.holds_back("key", 1_800_003_600_001).is_none());
        assert!(book.released_since("key", NOW));
        let mut resets = 0;
        while let Ok(e) = rx.try_recv() {
            assert!(matches!(e, Event::Reset { .. }), "{e:?}");
            resets += 1;
        }
        assert_eq!(resets, 2, "the refusal and the window");
        // A momentary 429 (retry-after 20 s) is the breaker's, not a quota.
        let h = headers(&[("retry-after", "20")]);
        assert!(read(&h, 429, NOW).is_none());
        let h = headers(&[("retry-after", "900")]);
        assert_eq!(
            read(&h, 429, NOW).unwrap().out_until_ms,
            Some(NOW + 900_000)
        );
    }

    #[test]
    fn spill_over_holds_past_the_threshold_until_the_windows_reset() {
        let (tx, mut rx) = tokio::sync::broadcast::channel(16);
        let book = Book::new("anthropic", vec![0.8, 0.95], Some(0.95), tx);
        let off = Book::new(
            "anthropic",
            vec![],
            None,
            tokio::sync::broadcast::channel(4).0,
        );
        let at = |u: &str| {
            read(
                &headers(&[
                    ("anthropic-ratelimit-unified-status", "allowed"),
                    ("anthropic-ratelimit-unified-5h-utilization", u),
                    ("anthropic-ratelimit-unified-5h-reset", "1800000600"),
                ]),
                200,
                NOW,
            )
            .unwrap()
        };
        book.observe("key", at("0.5"), NOW);
        assert!(book.holds_back("key", NOW).is_none());
        assert!(rx.try_recv().is_err());
        book.observe("key", at("0.85"), NOW);
        assert!(
            matches!(rx.try_recv().unwrap(), Event::Crossed { threshold, .. } if threshold == 0.8)
        );
        book.observe("key", at("0.9"), NOW);
        assert!(rx.try_recv().is_err(), "80 % is told once");
        assert!(book.holds_back("key", NOW).is_none());
        book.observe("key", at("0.96"), NOW);
        assert!(
            matches!(rx.try_recv().unwrap(), Event::Crossed { threshold, .. } if threshold == 0.95)
        );
        let hold = book.holds_back("key", NOW).unwrap();
        assert!(!hold.refused);
        assert_eq!(hold.until_ms, 1_800_000_600_000);
        assert!(hold.why.contains("5-hour window at 96 %"), "{}", hold.why);
        off.observe("key", at("0.96"), NOW);
        assert!(
            off.holds_back("key", NOW).is_none(),
            "spill-over is off by default"
        );
        book.expire(1_800_000_600_000);
        assert!(book.holds_back("key", 1_800_000_600_000).is_none());
        assert!(book.released_since("key", NOW));
        assert!(
            matches!(rx.try_recv().unwrap(), Event::Reset { window: Some(w), .. } if w == "5h")
        );
    }

    /// A reset the gateway's clock has already passed is unknown (no hold that ends at once,
    /// no window zeroed and told again); absurd values are capped, never overflow.
    #[test]
    fn resets_in_the_past_or_absurdly_far_are_not_believed() {
        let h = headers(&[
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-reset", "1700000000"),
            ("anthropic-ratelimit-unified-5h-utilization", "1.0"),
            ("anthropic-ratelimit-unified-5h-reset", "1700000000"),
        ]);
        let r = read(&h, 429, NOW).unwrap();
        assert_eq!(r.windows[0].resets_at_ms, None);
        assert_eq!(r.out_until_ms, Some(NOW + UNKNOWN_RESET_HOLD_MS));
        let h = headers(&[("retry-after", "18446744073709551615")]);
        assert_eq!(
            read(&h, 429, NOW).unwrap().out_until_ms,
            Some(NOW + LONGEST_RESET_MS)
        );
        let h = headers(&[
            ("anthropic-ratelimit-unified-5h-utilization", "0.5"),
            (
                "anthropic-ratelimit-unified-5h-reset",
                "18446744073709551615",
            ),
        ]);
        assert_eq!(
            read(&h, 200, NOW).unwrap().windows[0].resets_at_ms,
            Some(NOW + LONGEST_RESET_MS)
        );
    }

    /// An API key's token bucket refills between answers (its reset moves each time): a
    /// crossing is told once, not again at every refill and dip.
    #[test]
    fn a_refilling_limit_is_told_once_not_at_every_dip() {
        let (tx, mut rx) = tokio::sync::broadcast::channel(64);
        let book = Book::new("openai", vec![0.8, 0.95], None, tx);
        for (i, remaining) in ["15", "25", "12", "22", "14"].iter().enumerate() {
            let now = NOW + i as u64 * 2000;
            let h = headers(&[
                ("x-ratelimit-limit-tokens", "100"),
                ("x-ratelimit-remaining-tokens", remaining),
                ("x-ratelimit-reset-tokens", "6s"),
            ]);
            book.observe("key", read(&h, 200, now).unwrap(), now);
        }
        let mut told = Vec::new();
        while let Ok(e) = rx.try_recv() {
            told.push(e);
        }
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(matches!(&told[0], Event::Crossed { threshold, .. } if *threshold == 0.8));
    }

    #[test]
    fn client_credentials_are_named_by_a_salted_hash() {
        let a = client_credential("sk-ant-oat01-secret");
        assert_eq!(a, client_credential("sk-ant-oat01-secret"));
        assert_ne!(a, client_credential("sk-ant-oat01-other"));
        assert!(!a.contains("secret") && a.len() == "client ".len() + 8);
    }
}
