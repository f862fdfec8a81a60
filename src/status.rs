//! The status snapshot (`GET /api/status`, the first event of `/api/events`): the one shape the
//! gateway writes and the terminal (`understudy status`), the tray and the dashboard read.

use serde::{Deserialize, Serialize};

/// What the gateway is doing now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The gateway's version.
    pub version: String,
    /// `auto`, `local-only` or `cloud-only`.
    pub mode: String,
    /// Whether the network looks down.
    pub offline: bool,
    /// Every configured provider, in config order.
    pub providers: Vec<ProviderStatus>,
    /// The first local provider's engine again, for a glance.
    pub local: Option<serde_json::Value>,
}

/// One provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderStatus {
    /// Its name in the config.
    pub name: String,
    /// `anthropic`, `openai`, `gemini` or `local`.
    pub kind: String,
    /// The backends (`provider/model`) used so far, with their breakers.
    pub backends: Vec<BackendStatus>,
    /// A local provider's engine ([`crate::local::LocalStatus`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<serde_json::Value>,
}

/// One backend's breaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// `provider/model`.
    pub backend: String,
    /// `closed`, `open` or `half_open`.
    pub breaker: String,
}

impl ProviderStatus {
    /// True for the embedded engine.
    pub fn is_local(&self) -> bool {
        self.kind == "local"
    }

    /// True when some backend of it is failing (its breaker open or on trial).
    pub fn failing(&self) -> bool {
        self.backends.iter().any(|b| b.breaker != "closed")
    }

    /// The local engine's state (`not_loaded`, `loading`, `ready`, `crashed`, `failed`).
    pub fn local_state(&self) -> Option<&str> {
        self.local.as_ref().and_then(|l| l["state"].as_str())
    }
}
