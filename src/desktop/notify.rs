//! Which desktop notifications to send for the gateway's events, as a pure state machine
//! (the tray app sends what it returns with `notify-rust`). Notifications matter only when
//! they are rare: one per subject and direction (a provider failing, the same provider
//! recovered, the network down, …) per `per_subject` window, at most `burst` in any `burst_window`, and the rest folded into one summary when
//! the burst is over. Muted, nothing is sent. Never one per request: only state changes come
//! in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Something worth telling the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A cloud backend started failing (its breaker opened): requests fail over.
    Failing {
        /// `provider/model`.
        backend: String,
        /// Why, in words (`overloaded (529)`, `cut off mid-answer`, …), when known.
        why: Option<String>,
        /// Who serves instead, when known (`local/… (the local model)` for the local engine).
        next: Option<String>,
    },
    /// A backend that was failing answers again.
    Recovered {
        /// `provider/model`.
        backend: String,
        /// The outage in one sentence (`telemetry::timeline`): how long, why, who answered
        /// instead, continued, lost.
        summary: Option<String>,
    },
    /// The network went down (answers come from the local model) or came back.
    Network {
        /// True when it went down.
        offline: bool,
    },
    /// A cloud provider's check found its configured key rejected, or it has none to send.
    Key {
        /// The provider.
        provider: String,
        /// No key at all (rather than one refused).
        missing: bool,
        /// What was seen and what to do.
        detail: String,
    },
    /// The local model finished loading.
    LocalReady,
    /// The local model's worker crashed.
    LocalCrashed {
        /// Why.
        reason: String,
    },
    /// The local model's CPU kernels crashed on this machine: it runs in a compatible mode.
    LocalCompatible {
        /// The mode, why and what it costs ([`crate::providers::local::cpu::Mode::describe`]).
        mode: String,
    },
    /// A provider's quota window passed an alert threshold (`quota_alerts`).
    QuotaPassed {
        /// The provider.
        provider: String,
        /// Whose (`key`, `client …`), part of the subject only.
        credential: String,
        /// `plan 5-hour window` or `requests limit`.
        window: String,
        /// How much is spent, in percent.
        percent: u32,
        /// The threshold passed, in percent.
        threshold: u32,
        /// When it resets, in words (`1 h 12 m`), when known.
        resets_in: Option<String>,
        /// The provider's `spill_over_at`, in percent, when set.
        spill_at: Option<u32>,
    },
    /// A provider refused a credential until its quota resets.
    QuotaRefused {
        /// The provider.
        provider: String,
        /// Whose.
        credential: String,
        /// When it resets, in words.
        resets_in: String,
    },
    /// A window that had been told about reset, or a refusal ran out.
    QuotaReset {
        /// The provider.
        provider: String,
        /// Whose.
        credential: String,
        /// Which window, in words (`None`: the refusal ended).
        window: Option<String>,
    },
    /// A provider's status page declared an incident of a component its routes use, or
    /// resolved one.
    Incident {
        /// The provider.
        provider: String,
        /// The incident's title.
        name: String,
        /// `minor`, `major`, `critical`.
        impact: String,
        /// Who knew first, in words, when Understudy saw failures.
        lead: Option<String>,
        /// Resolved (rather than declared).
        resolved: bool,
    },
    /// An edited config file is invalid: the running configuration stays.
    ConfigInvalid {
        /// Which file and what is wrong, with the TOML path of the first issue.
        detail: String,
    },
    /// A stream that broke was finished by another backend.
    Continued {
        /// Who broke.
        from: String,
        /// Who finished.
        to: String,
        /// How it was asked to (`prefill` or `instruct`), when known.
        how: Option<String>,
    },
}

impl Change {
    /// What the debounce groups by: the subject and the direction, so a provider that
    /// flaps is told failing once and recovered once per window.
    fn subject(&self) -> String {
        let provider = |b: &str| crate::routing::health::provider_of(b).to_owned();
        match self {
            Change::Failing { backend, .. } => format!("failing:{}", provider(backend)),
            Change::Recovered { backend, .. } => format!("recovered:{}", provider(backend)),
            Change::Network { offline } => format!("network:{offline}"),
            Change::Key { provider, .. } => format!("key:{provider}"),
            Change::LocalReady => "local:ready".into(),
            Change::LocalCrashed { .. } => "local:crashed".into(),
            Change::LocalCompatible { .. } => "local:compatible".into(),
            Change::Continued { from, .. } => format!("continued:{from}"),
            Change::ConfigInvalid { detail } => format!("config:{detail}"),
            Change::Incident {
                provider,
                name,
                resolved,
                ..
            } => format!("incident:{provider}:{name}:{resolved}"),
            Change::QuotaPassed {
                provider,
                credential,
                window,
                threshold,
                ..
            } => format!("quota:{provider}:{credential}:{window}:{threshold}"),
            Change::QuotaRefused {
                provider,
                credential,
                ..
            } => format!("quota-refused:{provider}:{credential}"),
            Change::QuotaReset {
                provider,
                credential,
                window,
            } => format!("quota-reset:{provider}:{credential}:{window:?}"),
        }
    }

    fn notice(&self) -> Notice {
        let (title, body) = match self {
            Change::Failing { backend, why, next } => (
                "Failing over".to_owned(),
                format!(
                    "{backend} is failing{}; {}",
                    why.as_ref().map(|w| format!(": {w}")).unwrap_or_default(),
                    match next {
                        Some(n) => format!("{n} answers now"),
                        None => "requests go to the next backend in its route".to_owned(),
                    }
                ),
            ),
            Change::Recovered { backend, summary } => (
                "Recovered".to_owned(),
                match summary {
                    Some(s) => format!("{backend} answers again: {s}"),
                    None => format!("{backend} answers again"),
                },
            ),
            Change::Network { offline: true } => (
                "Offline".to_owned(),
                "The network is down; answers come from the local model".to_owned(),
            ),
            Change::Network { offline: false } => (
                "Back online".to_owned(),
                "The clouds are reachable again".to_owned(),
            ),
            Change::Key {
                provider,
                missing,
                detail,
            } => (
                format!(
                    "{provider}: key {}",
                    if *missing { "missing" } else { "rejected" }
                ),
                detail.clone(),
            ),
            Change::LocalReady => (
                "Local model ready".to_owned(),
                "It can answer when the clouds cannot".to_owned(),
            ),
            Change::LocalCrashed { reason } => (
                "Local model crashed".to_owned(),
                format!("{reason}; it restarts on the next request"),
            ),
            Change::LocalCompatible { mode } => (
                "Local model in compatible mode".to_owned(),
                format!("The local model now runs in {mode}"),
            ),
            Change::QuotaPassed {
                provider,
                window,
                percent,
                resets_in,
                spill_at,
                ..
            } => (
                format!("{provider}: {window} at {percent} %"),
                format!(
                    "{}{}",
                    resets_in
                        .as_ref()
                        .map(|r| format!("It resets in {r}. "))
                        .unwrap_or_default(),
                    match spill_at {
                        Some(at) if percent >= at => format!(
                            "Past {at} %, new requests go to the next backend of their route until then"
                        ),
                        Some(at) => format!(
                            "At {at} %, new requests go to the next backend of their route until it resets"
                        ),
                        None => "When it runs out, requests fail over to the next backend of their route"
                            .to_owned(),
                    }
                ),
            ),
            Change::QuotaRefused {
                provider,
                resets_in,
                ..
            } => (
                format!("{provider}: out of quota"),
                format!(
                    "It refuses requests until its reset in {resets_in}; they go to the next backend of their route until then"
                ),
            ),
            Change::QuotaReset {
                provider, window, ..
            } => (
                format!("{provider}: quota reset"),
                match window {
                    Some(w) => format!("The {w} window reset; requests go to {provider} again"),
                    None => format!("{provider} takes requests again"),
                },
            ),
            Change::Incident {
                provider,
                name,
                impact,
                lead,
                resolved: false,
            } => (
                format!("{provider}: incident declared"),
                format!(
                    "{name} ({impact}){}",
                    lead.as_ref().map(|l| format!("; {l}")).unwrap_or_default()
                ),
            ),
            Change::Incident {
                provider,
                name,
                resolved: true,
                ..
            } => (
                format!("{provider}: incident resolved"),
                format!("{name} is resolved on {provider}'s status page"),
            ),
            Change::ConfigInvalid { detail } => {
                ("Config not applied".to_owned(), detail.clone())
            }
            Change::Continued { from, to, how } => (
                "Answer continued".to_owned(),
                format!(
                    "{from} broke off mid-answer; {to} finished it{}",
                    match how.as_deref() {
                        Some("prefill") => " from where it stopped (prefill)",
                        Some("instruct") => ", asked to go on from the cut",
                        _ => "",
                    }
                ),
            ),
        };
        Notice { title, body }
    }
}

/// A notification to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Its title.
    pub title: String,
    /// Its text.
    pub body: String,
}

/// The debounce.
#[derive(Debug)]
pub struct Notifier {
    /// Send nothing.
    pub muted: bool,
    per_subject: Duration,
    burst: usize,
    burst_window: Duration,
    last: HashMap<String, Instant>,
    sent: Vec<Instant>,
    folded: usize,
    folded_since: Option<Instant>,
}

impl Default for Notifier {
    fn default() -> Notifier {
        Notifier::new(Duration::from_secs(180), 3, Duration::from_secs(60))
    }
}

impl Notifier {
    /// One per subject per `per_subject`; at most `burst` per `burst_window`.
    pub fn new(per_subject: Duration, burst: usize, burst_window: Duration) -> Notifier {
        Notifier {
            muted: false,
            per_subject,
            burst,
            burst_window,
            last: HashMap::new(),
            sent: Vec::new(),
            folded: 0,
            folded_since: None,
        }
    }

    /// What to show for `change` at `now` (usually nothing or one notice).
    pub fn on(&mut self, change: &Change, now: Instant) -> Vec<Notice> {
        let mut out = self.flush(now);
        if self.muted {
            return out;
        }
        let subject = change.subject();
        if self
            .last
            .get(&subject)
            .is_some_and(|t| now.duration_since(*t) < self.per_subject)
        {
            return out;
        }
        self.last.insert(subject, now);
        self.sent
            .retain(|t| now.duration_since(*t) < self.burst_window);
        if self.sent.len() >= self.burst {
            self.folded += 1;
            self.folded_since.get_or_insert(now);
            return out;
        }
        self.sent.push(now);
        out.push(change.notice());
        out
    }

    /// The summary of what a burst folded, once the burst window has passed (call it on a
    /// timer too).
    pub fn flush(&mut self, now: Instant) -> Vec<Notice> {
        match self.folded_since {
            Some(since) if now.duration_since(since) >= self.burst_window => {
                let n = std::mem::take(&mut self.folded);
                self.folded_since = None;
                if self.muted {
                    return Vec::new();
                }
                self.sent.push(now);
                vec![Notice {
                    title: "Several changes".to_owned(),
                    body: format!("{n} more provider changes; the dashboard has the details"),
                }]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(p: &str) -> Change {
        Change::Failing {
            backend: format!("{p}/m"),
            why: None,
            next: None,
        }
    }

    #[test]
    fn a_burst_of_fifty_failures_yields_a_few_notifications() {
        let mut n = Notifier::default();
        let t0 = Instant::now();
        let mut shown = Vec::new();
        for i in 0..50 {
            let at = t0 + Duration::from_millis(100 * i);
            shown.extend(n.on(&failing(&format!("p{}", i % 10)), at));
        }
        assert_eq!(shown.len(), 3, "{shown:?}");
        assert!(shown[0].body.starts_with("p0/m is failing"));
        // After the burst window: one summary of what was folded.
        let later = n.flush(t0 + Duration::from_secs(70));
        assert_eq!(later.len(), 1);
        assert_eq!(
            later[0].body,
            "7 more provider changes; the dashboard has the details"
        );
        assert!(n.flush(t0 + Duration::from_secs(200)).is_empty());
    }

    #[test]
    fn a_flapping_provider_is_told_failing_once_and_recovered_once_per_window() {
        let mut n = Notifier::default();
        let t0 = Instant::now();
        let mut shown = Vec::new();
        for i in 0..50 {
            let at = t0 + Duration::from_secs(i);
            let c = if i % 2 == 0 {
                failing("anthropic")
            } else {
                Change::Recovered {
                    backend: "anthropic/m".into(),
                    summary: None,
                }
            };
            shown.extend(n.on(&c, at));
        }
        let titles: Vec<&str> = shown.iter().map(|s| s.title.as_str()).collect();
        assert_eq!(titles, ["Failing over", "Recovered"]);
        let again = n.on(&failing("anthropic"), t0 + Duration::from_secs(240));
        assert_eq!(
            again[0].title, "Failing over",
            "a new window tells it again"
        );
    }

    #[test]
    fn a_continuation_says_who_finished_the_answer_and_how() {
        let continued = |how: Option<&str>| {
            Change::Continued {
                from: "anthropic/claude-opus-4-6".into(),
                to: "openai/gpt-4o".into(),
                how: how.map(str::to_owned),
            }
            .notice()
            .body
        };
        assert_eq!(
            continued(Some("instruct")),
            "anthropic/claude-opus-4-6 broke off mid-answer; openai/gpt-4o finished it, asked to go on from the cut"
        );
        assert!(continued(Some("prefill")).ends_with("from where it stopped (prefill)"));
        assert!(continued(None).ends_with("finished it"));
    }

    #[test]
    fn different_subjects_are_told_apart_and_muting_silences_all() {
        let mut n = Notifier::default();
        let t0 = Instant::now();
        let a = n.on(&Change::Network { offline: true }, t0);
        let b = n.on(&Change::LocalReady, t0);
        assert_eq!(
            (a[0].title.as_str(), b[0].title.as_str()),
            ("Offline", "Local model ready")
        );
        let mut m = Notifier {
            muted: true,
            ..Notifier::default()
        };
        assert!(m.on(&failing("x"), t0).is_empty());
        let c = n.on(
            &Change::LocalCrashed {
                reason: "it was killed (SIGKILL)".into(),
            },
            t0 + Duration::from_secs(200),
        );
        assert_eq!(
            c[0].body,
            "it was killed (SIGKILL); it restarts on the next request"
        );
    }
}
