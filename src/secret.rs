//! API keys: where they come from, a type that never prints them, and the redaction of every
//! key the process knows from any text it quotes, relays or logs.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::sync::{LazyLock, RwLock};

/// A credential. `Debug` and `Display` print `*****`, so a key cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a key, and remembers it for [`redact`] for the life of the process.
    pub fn new(value: impl Into<String>) -> Secret {
        let value = value.into();
        remember(&value, Kind::Configured);
        Secret(value)
    }

    /// The key itself, for the one place that puts it in a header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

/// What replaces a known secret in any text the gateway quotes, relays or logs.
pub const REDACTED: &str = "[redacted]";

/// Values shorter than this are not redacted: they would mangle ordinary text, and no real
/// key or token is this short.
const MIN_LEN: usize = 8;

/// Client credentials passed through are remembered up to this many (the oldest forgotten
/// first); configured keys are always remembered.
const MAX_PASSED: usize = 64;

/// How a secret became known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A configured key (or the admin token): always redacted.
    Configured,
    /// A client's own credential, passed through to an upstream: redacted while it is among
    /// the [`MAX_PASSED`] most recent.
    Passed,
}

#[derive(Default)]
struct Known {
    configured: Vec<String>,
    passed: VecDeque<String>,
}

static KNOWN: LazyLock<RwLock<Known>> = LazyLock::new(Default::default);

/// Remembers a secret value (a bare key; its `Bearer …` form contains it) for [`redact`].
pub fn remember(value: &str, kind: Kind) {
    let value = value.trim();
    let value = value.strip_prefix("Bearer ").unwrap_or(value).trim();
    if value.len() < MIN_LEN {
        return;
    }
    if KNOWN.read().is_ok_and(|k| {
        k.configured.iter().any(|v| v == value) || k.passed.iter().any(|v| v == value)
    }) {
        return;
    }
    let Ok(mut k) = KNOWN.write() else { return };
    match kind {
        Kind::Configured => k.configured.push(value.to_owned()),
        Kind::Passed => {
            if k.passed.len() == MAX_PASSED {
                k.passed.pop_front();
            }
            k.passed.push_back(value.to_owned());
        }
    }
}

/// `text` with every known secret replaced by [`REDACTED`] (borrowed when there is none).
pub fn redact(text: &str) -> Cow<'_, str> {
    let Ok(k) = KNOWN.read() else {
        return Cow::Borrowed(text);
    };
    let mut out = Cow::Borrowed(text);
    for v in k.configured.iter().chain(k.passed.iter()) {
        if out.contains(v.as_str()) {
            out = Cow::Owned(out.replace(v.as_str(), REDACTED));
        }
    }
    out
}

/// [`redact`] for bytes that may not be UTF-8: `None` when nothing in them is a known secret.
pub fn redact_bytes(bytes: &[u8]) -> Option<Vec<u8>> {
    let k = KNOWN.read().ok()?;
    let hit = |v: &String| {
        let v = v.as_bytes();
        bytes.windows(v.len()).any(|w| w == v)
    };
    if !k.configured.iter().chain(k.passed.iter()).any(hit) {
        return None;
    }
    let mut out = bytes.to_vec();
    for v in k.configured.iter().chain(k.passed.iter()) {
        let v = v.as_bytes();
        let mut i = 0;
        let mut next = Vec::with_capacity(out.len());
        while i < out.len() {
            if out[i..].starts_with(v) {
                next.extend_from_slice(REDACTED.as_bytes());
                i += v.len();
            } else {
                next.push(out[i]);
                i += 1;
            }
        }
        out = next;
    }
    Some(out)
}

/// Where a provider's key is read from. The config names a source; it never holds the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An environment variable of the gateway's process.
    Env(String),
    /// An entry in the OS keychain (Secret Service, macOS Keychain, Windows Credential Manager).
    Keychain {
        /// The entry's service name.
        service: String,
        /// The entry's account name.
        account: String,
    },
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env(var) => write!(f, "environment variable {var}"),
            KeySource::Keychain { service, account } => {
                write!(f, "keychain entry service={service:?} account={account:?}")
            }
        }
    }
}

impl KeySource {
    /// Reads the key. The error says what is missing and how to provide it, never the key.
    pub async fn resolve(&self) -> Result<Secret, String> {
        match self {
            KeySource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim())),
                Ok(_) => Err(format!("environment variable {var} is empty")),
                Err(_) => Err(format!(
                    "environment variable {var} is not set; export it in the environment Understudy runs in"
                )),
            },
            KeySource::Keychain { service, account } => {
                let (service, account) = (service.clone(), account.clone());
                // The keychain backends block (D-Bus round trips); keep them off the async workers.
                tokio::task::spawn_blocking(move || read_keychain(&service, &account))
                    .await
                    .map_err(|e| format!("keychain lookup did not finish: {e}"))?
            }
        }
    }
}

fn read_keychain(service: &str, account: &str) -> Result<Secret, String> {
    let entry = keyring::Entry::new(service, account).map_err(|e| {
        format!("keychain entry service={service:?} account={account:?} is not usable: {e}")
    })?;
    match entry.get_password() {
        Ok(key) if !key.trim().is_empty() => Ok(Secret::new(key.trim())),
        Ok(_) => Err(format!(
            "keychain entry service={service:?} account={account:?} is empty"
        )),
        Err(keyring::Error::NoEntry) => Err(format!(
            "no keychain entry service={service:?} account={account:?}; store the key there \
             (e.g. `secret-tool store --label=understudy service {service} username {account}`)"
        )),
        Err(e) => Err(format!(
            "could not read keychain entry service={service:?} account={account:?}: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_secrets_are_redacted_in_text_and_bytes() {
        let key = "sk-ant-redact-me-0123456789";
        let _s = Secret::new(key);
        remember("Bearer client-oauth-token-abcdef", Kind::Passed);
        let text =
            format!("invalid x-api-key: {key}; Authorization: Bearer client-oauth-token-abcdef");
        let out = redact(&text);
        assert!(
            !out.contains(key) && !out.contains("client-oauth-token-abcdef"),
            "{out}"
        );
        assert_eq!(out.matches(REDACTED).count(), 2, "{out}");
        assert!(matches!(redact("nothing secret here"), Cow::Borrowed(_)));
        let bytes = redact_bytes(format!("<html>{key}</html>").as_bytes()).unwrap();
        assert_eq!(bytes, format!("<html>{REDACTED}</html>").as_bytes());
        assert!(redact_bytes(b"plain").is_none());
        remember("short", Kind::Configured);
        assert_eq!(
            redact("a short word"),
            "a short word",
            "short values are not secrets"
        );
    }

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new("sk-ant-very-secret");
        assert_eq!(format!("{s:?} {s}"), "***** *****");
        assert_eq!(s.expose(), "sk-ant-very-secret");
    }

    #[tokio::test]
    async fn a_missing_env_var_says_which_and_how_to_fix() {
        let err = KeySource::Env("UNDERSTUDY_TEST_SURELY_UNSET_VAR".into())
            .resolve()
            .await
            .unwrap_err();
        assert!(
            err.contains("UNDERSTUDY_TEST_SURELY_UNSET_VAR is not set"),
            "{err}"
        );
        assert!(err.contains("export"), "{err}");
    }

    #[tokio::test]
    async fn an_absent_keychain_entry_is_a_clear_error_not_a_panic() {
        let err = KeySource::Keychain {
            service: "understudy-test-nonexistent".into(),
            account: "nobody".into(),
        }
        .resolve()
        .await
        .unwrap_err();
        assert!(err.contains("understudy-test-nonexistent"), "{err}");
    }
}
