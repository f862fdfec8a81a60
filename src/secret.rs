//! API keys: where they come from, and a type that never prints them.

use std::fmt;

/// A credential. `Debug` and `Display` print `*****`, so a key cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a key.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
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
