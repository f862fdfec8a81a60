//! The journal as a story: each provider's outages ([`Outage`]) read out of the finished
//! requests, in time order. A provider's outage starts with the first request it failed and
//! ends with the first it served again; in between, every request for a model it had failed
//! is told: who answered instead, which answers were continued mid-answer, which were lost
//! (no backend answered, or the answer the client got was cut). Pure: the dashboard's
//! `/api/timeline` and the recovery notification read the same [`outages`].

use crate::telemetry::entry::{outcome_words, provider_of, Entry};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One provider's outage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outage {
    /// The provider.
    pub provider: String,
    /// The first request it failed (Unix ms).
    pub started_ms: u64,
    /// The first request it served again (Unix ms); `None`: not over.
    pub ended_ms: Option<u64>,
    /// Why it failed, in words, with how often (`overloaded, HTTP 529` → 12).
    pub causes: BTreeMap<String, u64>,
    /// The requests for the models it had failed, while it was out.
    pub requests: u64,
    /// Who answered them instead (`backend` → count).
    pub served_by: BTreeMap<String, u64>,
    /// How many were broken mid-answer and finished by another backend.
    pub continued: u64,
    /// How many got no whole answer.
    pub lost: u64,
    /// Each request while it was out, in order: (Unix ms, the backend that answered or
    /// `None`), for the bars.
    pub bars: Vec<(u64, Option<String>)>,
}

/// `HH:MM` at `offset_min` from UTC.
fn clock(ms: u64, offset_min: i32) -> String {
    let m = (ms / 60_000) as i64 + i64::from(offset_min);
    let day = m.rem_euclid(24 * 60);
    format!("{:02}:{:02}", day / 60, day % 60)
}

impl Outage {
    /// One sentence: `anthropic failed 20:03–20:31 (overloaded, HTTP 529); 143 requests
    /// answered by openrouter, 2 continued mid-answer, 0 lost`. With no clock offset known
    /// (a notification from the gateway's process) the span is said as a length instead:
    /// `failed for 28 m`; an outage not over is `failing since 20:03`.
    pub fn summary(&self, offset_min: Option<i32>) -> String {
        let span = match (offset_min, self.ended_ms) {
            (Some(o), Some(end)) => {
                format!("failed {}–{}", clock(self.started_ms, o), clock(end, o))
            }
            (Some(o), None) => format!("has been failing since {}", clock(self.started_ms, o)),
            (None, end) => {
                let end = end.unwrap_or_else(crate::quota::now_ms);
                let mins = (end.saturating_sub(self.started_ms) + 30_000) / 60_000;
                let len = if mins == 0 {
                    format!("{} s", (end.saturating_sub(self.started_ms) + 500) / 1000)
                } else {
                    format!("{mins} m")
                };
                if self.ended_ms.is_some() {
                    format!("failed for {len}")
                } else {
                    format!("has been failing for {len}")
                }
            }
        };
        let mut causes: Vec<(&String, &u64)> = self.causes.iter().collect();
        causes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let causes: Vec<&str> = causes.iter().map(|(c, _)| c.as_str()).collect();
        let answered: u64 = self.served_by.values().sum();
        let by: Vec<String> = {
            let mut v: Vec<(&String, &u64)> = self.served_by.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            v.iter()
                .map(|(b, n)| {
                    if self.served_by.len() == 1 {
                        provider_of(b).to_owned()
                    } else {
                        format!("{} ({n})", provider_of(b))
                    }
                })
                .collect()
        };
        format!(
            "{} {span} ({}); {answered} request{} answered by {}, {} continued mid-answer, {} lost",
            self.provider,
            causes.join(", "),
            if answered == 1 { "" } else { "s" },
            if by.is_empty() {
                "no other backend".to_owned()
            } else {
                by.join(", ")
            },
            self.continued,
            self.lost,
        )
    }
}

/// The outages in `entries` (any order), oldest first.
pub fn outages(entries: &[Entry]) -> Vec<Outage> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by_key(|e| (e.at_ms, e.id));
    let mut open: BTreeMap<String, (Outage, BTreeSet<String>)> = BTreeMap::new();
    let mut done = Vec::new();
    for e in sorted {
        let served = e.served_by.as_deref();
        // A provider that served this request is back.
        if let Some(s) = served {
            if let Some((mut o, _)) = open.remove(provider_of(s)) {
                o.ended_ms = Some(e.at_ms);
                done.push(o);
            }
        }
        // The providers this request found failing.
        for a in &e.attempts {
            if a.outcome == "complete" || a.outcome == "client_disconnected" {
                continue;
            }
            let p = provider_of(&a.backend);
            if served.is_some_and(|s| provider_of(s) == p) && !a.broke_after_content {
                // Failed, then served by a retry of the same provider.
                continue;
            }
            let (o, models) = open.entry(p.to_owned()).or_insert_with(|| {
                (
                    Outage {
                        provider: p.to_owned(),
                        started_ms: e.at_ms,
                        ended_ms: None,
                        causes: BTreeMap::new(),
                        requests: 0,
                        served_by: BTreeMap::new(),
                        continued: 0,
                        lost: 0,
                        bars: Vec::new(),
                    },
                    BTreeSet::new(),
                )
            });
            *o.causes
                .entry(outcome_words(&a.outcome, a.detail.as_deref()))
                .or_default() += 1;
            models.insert(e.model.clone());
        }
        // Every open outage this request's model belongs to tells it.
        for (o, models) in open.values_mut() {
            if !models.contains(&e.model) {
                continue;
            }
            o.requests += 1;
            o.bars.push((e.at_ms, e.served_by.clone()));
            match served {
                Some(s) if e.outcome == "complete" || e.continued => {
                    *o.served_by.entry(s.to_owned()).or_default() += 1;
                    if e.continued {
                        o.continued += 1;
                    }
                }
                _ => o.lost += 1,
            }
        }
    }
    done.extend(open.into_values().map(|(o, _)| o));
    done.sort_by_key(|o| o.started_ms);
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::entry::Attempt;

    fn attempt(backend: &str, outcome: &str) -> Attempt {
        Attempt {
            backend: backend.into(),
            outcome: outcome.into(),
            ttft_ms: None,
            ms: 1.0,
            broke_after_content: outcome == "truncated",
            continuation: None,
            detail: None,
        }
    }

    fn entry(id: u64, at_s: u64, attempts: Vec<Attempt>, served: Option<&str>) -> Entry {
        let continued = attempts.iter().any(|a| a.broke_after_content) && served.is_some();
        Entry {
            id,
            at_ms: 1_800_000_000_000 + at_s * 1000,
            dialect: "anthropic".into(),
            model: "claude-sonnet-4-5".into(),
            stream: true,
            attempts,
            served_by: served.map(str::to_owned),
            continued,
            status: if served.is_some() { 200 } else { 529 },
            outcome: if served.is_some() {
                "complete"
            } else {
                "http_529"
            }
            .into(),
            input_tokens: 0,
            output_tokens: 0,
            duration_ms: 1.0,
            spend_usd: 0.0,
        }
    }

    /// A minute of 529s from the primary: failed over, skipped while its breaker was open,
    /// one answer continued, one lost; then it serves again.
    #[test]
    fn an_outage_is_told_from_the_first_failure_to_the_first_answer_again() {
        let a = "anthropic/claude-sonnet-4-5";
        let o = "openrouter/anthropic/claude-sonnet-4.5";
        let mut es = vec![entry(1, 0, vec![attempt(a, "complete")], Some(a))];
        es.push(entry(
            2,
            10,
            vec![attempt(a, "http_529"), attempt(o, "complete")],
            Some(o),
        ));
        es.push(entry(
            3,
            20,
            vec![attempt(a, "http_529"), attempt(o, "complete")],
            Some(o),
        ));
        // Breaker open: the primary is skipped, not tried.
        es.push(entry(4, 30, vec![attempt(o, "complete")], Some(o)));
        es.push(entry(
            5,
            40,
            vec![attempt(a, "truncated"), attempt(o, "complete")],
            Some(o),
        ));
        es.push(entry(6, 50, vec![attempt(o, "http_529")], None));
        // Another model, never routed to the primary: not part of its story.
        let mut other = entry(
            7,
            55,
            vec![attempt("local/smol", "complete")],
            Some("local/smol"),
        );
        other.model = "smol".into();
        es.push(other);
        es.push(entry(8, 70, vec![attempt(a, "complete")], Some(a)));
        es.reverse();
        let out = outages(&es);
        assert_eq!(out.len(), 2, "{out:#?}");
        let primary = out.iter().find(|x| x.provider == "anthropic").unwrap();
        assert_eq!(primary.started_ms, 1_800_000_010_000);
        assert_eq!(primary.ended_ms, Some(1_800_000_070_000));
        assert_eq!(primary.requests, 5);
        assert_eq!(primary.served_by[o], 4);
        assert_eq!((primary.continued, primary.lost), (1, 1));
        assert_eq!(
            primary.causes,
            BTreeMap::from([
                ("overloaded, HTTP 529".to_owned(), 2),
                ("cut off mid-answer".to_owned(), 1)
            ])
        );
        assert_eq!(
            primary.summary(Some(60)),
            "anthropic failed 09:00–09:01 (overloaded, HTTP 529, cut off mid-answer); 4 requests answered by openrouter, 1 continued mid-answer, 1 lost"
        );
        assert_eq!(
            primary.summary(None),
            "anthropic failed for 1 m (overloaded, HTTP 529, cut off mid-answer); 4 requests answered by openrouter, 1 continued mid-answer, 1 lost"
        );
        // The fallback's own failure is an outage of its own, not over.
        let fallback = out.iter().find(|x| x.provider == "openrouter").unwrap();
        assert_eq!(fallback.ended_ms, None);
    }
}
