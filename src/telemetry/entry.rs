//! One finished request as the gateway records it ([`Entry`], with an [`Attempt`] per backend
//! tried), and the clock that stamps it. The recorder ([`crate::telemetry::observe`]) builds
//! entries and the journal ([`crate::telemetry::journal`]) stores them; the shape lives here so
//! that the journal does not import the recorder that owns it.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// One backend tried for a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// `provider/model`.
    pub backend: String,
    /// `complete`, `continued` is never used here: a stream that broke and was continued has
    /// its failure class (`truncated`, `transport`, …); a failure before content has its class
    /// or `http_STATUS`.
    pub outcome: String,
    /// Milliseconds to its first content (streams) or its whole answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    /// Milliseconds until it ended.
    pub ms: f64,
    /// True when it broke after content had reached the client.
    #[serde(default)]
    pub broke_after_content: bool,
    /// Set when it finished an earlier attempt's broken answer: how it was asked to
    /// (`prefill`: the answer so far as the final assistant turn; `instruct`: then a user turn
    /// asking it to go on from the cut).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation: Option<String>,
    /// Why it failed, in words (`the local worker died: it hit an illegal instruction
    /// (SIGILL)…`), when it failed with more to say than its class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An attempt's or a request's outcome in words, for people (the feed, the terminal, a
/// notification): `local model crashed, SIGILL`, `key rejected, HTTP 401`, `offline`, not the
/// bare class. The classes themselves stay as they are for machines (metrics, headers).
pub fn outcome_words(outcome: &str, detail: Option<&str>) -> String {
    let signal = detail.and_then(|d| {
        d.split(|c: char| !c.is_ascii_alphanumeric()).find(|w| {
            w.len() > 3 && w.starts_with("SIG") && w[3..].chars().all(|c| c.is_ascii_uppercase())
        })
    });
    let status = outcome.strip_prefix("http_");
    match (outcome, status) {
        ("crashed", _) => match signal {
            Some(s) => format!("local model crashed, {s}"),
            None => "local model crashed".to_owned(),
        },
        ("offline", _) => "offline".to_owned(),
        ("connect", _) => "unreachable".to_owned(),
        (_, Some(s @ ("401" | "403"))) => format!("key rejected, HTTP {s}"),
        (_, Some("429")) => "rate limited, HTTP 429".to_owned(),
        (_, Some("529")) => "overloaded, HTTP 529".to_owned(),
        (_, Some(s)) => format!("HTTP {s}"),
        ("truncated", _) => "cut off mid-answer".to_owned(),
        ("first_byte_timeout", _) => "no answer in time".to_owned(),
        ("first_content_timeout", _) => "no content in time".to_owned(),
        ("idle_timeout", _) => "stalled".to_owned(),
        ("total_timeout", _) => "took too long".to_owned(),
        ("transport", _) => "connection broke".to_owned(),
        ("malformed", _) => "malformed answer".to_owned(),
        ("oversize", _) => "answer too large".to_owned(),
        ("client_disconnected", _) => "client left".to_owned(),
        ("status", _) => "upstream error".to_owned(),
        (other, _) => other.replace('_', " "),
    }
}

/// The provider's name in a backend key (`provider/model`).
pub fn provider_of(backend: &str) -> &str {
    backend.split_once('/').map_or(backend, |(p, _)| p)
}

/// One request, as the journal and the live feed keep it. No content, no headers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Increasing across restarts (the journal's row id).
    pub id: u64,
    /// Unix time in milliseconds when it arrived.
    pub at_ms: u64,
    /// `anthropic`, `openai` or `ollama`.
    pub dialect: String,
    /// The model the client asked for.
    pub model: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Every backend tried, in order.
    pub attempts: Vec<Attempt>,
    /// The backend whose answer the client got (the last, when continued), if any.
    pub served_by: Option<String>,
    /// True when a broken stream was finished by another backend, spliced in.
    pub continued: bool,
    /// The HTTP status the client got.
    pub status: u16,
    /// `complete`, or what went wrong (the failure class the client was told about).
    pub outcome: String,
    /// Tokens in (all input, cached included) and out.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Milliseconds from arrival to the end of the answer.
    pub duration_ms: f64,
    /// Estimated cost in USD.
    pub spend_usd: f64,
}

impl Entry {
    /// True when some backend failed before the one that served (or before giving up).
    pub fn failed_over(&self) -> bool {
        self.attempts.len() > 1 || (self.served_by.is_none() && !self.attempts.is_empty())
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::outcome_words;

    #[test]
    fn outcomes_read_as_what_happened() {
        let sigill = "the local worker died: it hit an illegal instruction (SIGILL): this CPU …";
        assert_eq!(
            outcome_words("crashed", Some(sigill)),
            "local model crashed, SIGILL"
        );
        assert_eq!(outcome_words("crashed", None), "local model crashed");
        assert_eq!(outcome_words("http_401", None), "key rejected, HTTP 401");
        assert_eq!(outcome_words("http_529", None), "overloaded, HTTP 529");
        assert_eq!(outcome_words("http_502", None), "HTTP 502");
        assert_eq!(outcome_words("offline", Some("cannot reach …")), "offline");
        assert_eq!(outcome_words("truncated", None), "cut off mid-answer");
        assert_eq!(outcome_words("status", None), "upstream error");
    }
}
