//! What the tray shows for a status snapshot: the icon, the tooltip and the menu, as a pure
//! function ([`view`]) so every state is unit-tested without a desktop. The tray app rebuilds
//! its icon and menu from this only when the view changes.

use crate::telemetry::status::{Health, ProviderStatus, Snapshot};

/// The tray icon's states, one distinct icon each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Icon {
    /// Every cloud provider served well or answered its check.
    Healthy,
    /// Some cloud provider has not been checked or used yet: nothing is known.
    Unknown,
    /// Some backend is failing (a breaker open or on trial); others serve.
    Degraded,
    /// Answers come from the local model (offline, every cloud failing, or local-only mode).
    LocalOnly,
    /// No backend can serve.
    Down,
    /// The user paused Understudy.
    Paused,
}

impl Icon {
    /// A stable name (the icon file is `icons/tray-NAME.png`).
    pub fn as_str(self) -> &'static str {
        match self {
            Icon::Healthy => "healthy",
            Icon::Unknown => "unknown",
            Icon::Degraded => "degraded",
            Icon::LocalOnly => "local",
            Icon::Down => "down",
            Icon::Paused => "paused",
        }
    }
}

/// One menu entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// What clicking it does (`mode:auto`, `pause`, `quit`, …); informational lines have
    /// `info:…` ids and are disabled.
    pub id: String,
    /// Its text.
    pub label: String,
    /// Clickable.
    pub enabled: bool,
    /// A check mark, for toggles and radio-like choices.
    pub checked: Option<bool>,
}

/// Everything the tray shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The icon.
    pub icon: Icon,
    /// The one-line summary.
    pub tooltip: String,
    /// The menu, top to bottom (`None`: a separator).
    pub menu: Vec<Option<Item>>,
}

/// Where the tray host gets no tooltip, the summary is the menu's first line. On Linux the
/// icon is a StatusNotifierItem exported by libayatana-appindicator, whose item has no
/// `ToolTip` property (0.5.92 exports `Title`, `IconName`, `Menu`, `XAyatanaLabel`, …) and
/// tray-icon's `set_tooltip` does nothing there: the tooltip never reached a Linux desktop
/// (found by the StatusNotifierItem test, tests/clients/test_tray_sni.py).
pub const SUMMARY_IN_MENU: bool = cfg!(target_os = "linux");

impl View {
    /// The menu as the tray shows it: with the summary (the tooltip's text) first where the
    /// tray host shows no tooltip ([`SUMMARY_IN_MENU`]).
    pub fn shown_menu(&self) -> Vec<Option<Item>> {
        if !SUMMARY_IN_MENU {
            return self.menu.clone();
        }
        let mut menu = vec![info("summary", self.tooltip.clone()), None];
        menu.extend(self.menu.iter().cloned());
        menu
    }
}

/// The tray's own state, beside the gateway's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Local {
    /// The user paused Understudy.
    pub paused: bool,
    /// Starts at login.
    pub autostart: bool,
    /// Claude Code's settings point at Understudy.
    pub claude_code_connected: bool,
}

fn info(id: &str, label: String) -> Option<Item> {
    Some(Item {
        id: format!("info:{id}"),
        label,
        enabled: false,
        checked: None,
    })
}

fn action(id: &str, label: &str, checked: Option<bool>) -> Option<Item> {
    Some(Item {
        id: id.to_owned(),
        label: label.to_owned(),
        enabled: true,
        checked,
    })
}

/// The local engine in a few words.
fn local_words(p: &ProviderStatus) -> String {
    let l = p.local.as_ref();
    let get = |k: &str| l.and_then(|l| l.get(k));
    let compatible = get("cpu")
        .and_then(|m| serde_json::from_value::<crate::providers::local::cpu::Mode>(m.clone()).ok())
        .filter(|m| m.stepped_down())
        .map(|m| {
            format!(
                ", compatible mode ({} CPU kernels, without {})",
                m.variant,
                m.without.join(", ")
            )
        })
        .unwrap_or_default();
    let words = match p.local_state().unwrap_or("not_loaded") {
        "loading" => format!(
            "loading {:.0} %",
            get("progress").and_then(|v| v.as_f64()).unwrap_or(0.0) * 100.0
        ),
        "ready" => {
            let gpu = get("gpu_layers").and_then(|v| v.as_u64()).unwrap_or(0);
            let device = get("device").and_then(|v| v.as_str()).unwrap_or("CPU");
            if gpu > 0 {
                format!("ready on the GPU ({device})")
            } else {
                "ready on the CPU".to_owned()
            }
        }
        "crashed" => "crashed (restarts on the next request)".to_owned(),
        "failed" => "failed to load".to_owned(),
        _ => "not loaded".to_owned(),
    };
    words + &compatible
}

/// A latency for a menu line: `420 ms`, `2.3 s`.
fn latency(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

/// The tray for `s`.
pub fn view(s: &Snapshot, tray: Local) -> View {
    let clouds: Vec<&ProviderStatus> = s.providers.iter().filter(|p| !p.is_local()).collect();
    let locals: Vec<&ProviderStatus> = s.providers.iter().filter(|p| p.is_local()).collect();
    let (icon, tooltip) = verdict(s, tray, &clouds, &locals);
    View {
        icon,
        tooltip,
        menu: menu(s, tray, &clouds, &locals),
    }
}

/// The icon and the one-line summary: paused, answering locally (or down), some cloud
/// failing, a key rejected, a cloud unreachable, one not checked yet, or healthy (every cloud
/// served well or at least answered its check).
fn verdict(
    s: &Snapshot,
    tray: Local,
    clouds: &[&ProviderStatus],
    locals: &[&ProviderStatus],
) -> (Icon, String) {
    let local_usable = locals
        .iter()
        .any(|p| !matches!(p.local_state(), Some("failed")));
    let failing: Vec<&str> = clouds
        .iter()
        .filter(|p| p.failing())
        .map(|p| p.name.as_str())
        .collect();
    let all_clouds_failing = !clouds.is_empty() && failing.len() == clouds.len();
    if tray.paused {
        (Icon::Paused, "Understudy is paused".to_owned())
    } else if s.mode == "local-only" || s.offline || all_clouds_failing || clouds.is_empty() {
        let why = if s.mode == "local-only" {
            "local-only mode"
        } else if s.offline {
            "offline"
        } else if clouds.is_empty() {
            "no cloud configured"
        } else {
            "every cloud is failing"
        };
        if local_usable && s.mode != "cloud-only" {
            (
                Icon::LocalOnly,
                format!("Understudy: {why}, answering from the local model"),
            )
        } else {
            (
                Icon::Down,
                format!("Understudy: {why}, and no local model can answer"),
            )
        }
    } else if !failing.is_empty() {
        (
            Icon::Degraded,
            format!(
                "Understudy: {} failing, the others serve",
                failing.join(", ")
            ),
        )
    } else if let Some((p, until)) = clouds
        .iter()
        .find_map(|p| Some((p, p.refused_until(s.at_ms)?)))
    {
        (
            Icon::Degraded,
            format!(
                "Understudy: {} out of quota until its reset in {}, the others serve",
                p.name,
                crate::quota::time_to(until, s.at_ms)
            ),
        )
    } else if let Some(names) = named(clouds, Health::KeyRejected) {
        (Icon::Degraded, format!("Understudy: {names}: key rejected"))
    } else if let Some(names) = named(clouds, Health::KeyMissing) {
        (Icon::Degraded, format!("Understudy: {names}: key missing"))
    } else if let Some(names) = named(clouds, Health::Unreachable) {
        (Icon::Degraded, format!("Understudy: {names} unreachable"))
    } else if let Some(names) = named(clouds, Health::Unknown) {
        (
            Icon::Unknown,
            format!("Understudy: {names} not checked yet"),
        )
    } else {
        let untried = clouds.iter().any(|p| p.health == Health::Reachable);
        (
            Icon::Healthy,
            match (clouds.len(), untried) {
                (1, false) => format!("Understudy: {} is healthy", clouds[0].name),
                (1, true) => format!(
                    "Understudy: {} is reachable, no requests yet",
                    clouds[0].name
                ),
                (n, false) => format!("Understudy: {n} cloud providers healthy"),
                (n, true) => format!("Understudy: {n} cloud providers reachable"),
            },
        )
    }
}

/// The names of the clouds in `health`, joined; `None` when there are none.
fn named(clouds: &[&ProviderStatus], health: Health) -> Option<String> {
    let names: Vec<&str> = clouds
        .iter()
        .filter(|p| p.health == health)
        .map(|p| p.name.as_str())
        .collect();
    (!names.is_empty()).then(|| names.join(", "))
}

/// The menu: each provider's state, the modes, pause, and the app's own actions.
fn menu(
    s: &Snapshot,
    tray: Local,
    clouds: &[&ProviderStatus],
    locals: &[&ProviderStatus],
) -> Vec<Option<Item>> {
    let mut menu = Vec::new();
    for p in clouds {
        let state = if p.failing() {
            let open: Vec<&str> = p
                .backends
                .iter()
                .filter(|b| b.breaker != "closed")
                .map(|b| b.backend.as_str())
                .collect();
            format!("failing ({})", open.join(", "))
        } else if s.offline {
            Health::Offline.words().to_owned()
        } else {
            p.state_words()
        };
        // The latest latency of its most recently used backend.
        let last = p
            .backends
            .iter()
            .filter(|b| b.stats.last_ms.is_some())
            .max_by_key(|b| b.stats.last_at_ms)
            .and_then(|b| b.stats.last_ms)
            .map(|ms| format!(", last {}", latency(ms)))
            .unwrap_or_default();
        menu.push(info(&p.name, format!("{}: {state}{last}", p.name)));
        // What its rate-limit headers said: `anthropic plan: 5-hour 82 %, resets in …`.
        for q in &p.quota {
            menu.push(info(
                &format!("{}:quota:{}", p.name, q.credential),
                format!("{} {}", p.name, q.line(s.at_ms)),
            ));
        }
        // What its own status page declares, beside what Understudy measured.
        for i in p.status_page.iter().flat_map(|page| page.relevant()) {
            menu.push(info(
                &format!("{}:incident:{}", p.name, i.id),
                format!(
                    "{} status page: {} ({}, {})",
                    p.name, i.name, i.impact, i.status
                ),
            ));
        }
    }
    for p in locals {
        menu.push(info(
            &p.name,
            format!("{} (local model): {}", p.name, local_words(p)),
        ));
    }
    menu.push(None);
    for (mode, label) in [
        ("auto", "Auto"),
        ("local-only", "Local only"),
        ("cloud-only", "Cloud only"),
    ] {
        menu.push(action(&format!("mode:{mode}"), label, Some(s.mode == mode)));
    }
    menu.push(action("pause", "Pause", Some(tray.paused)));
    menu.push(None);
    menu.push(action(
        "claude-code",
        "Connect Claude Code",
        Some(tray.claude_code_connected),
    ));
    menu.push(action("copy-setup", "Copy Claude Code setup", None));
    menu.push(action("dashboard", "Open dashboard", None));
    menu.push(action("autostart", "Start at login", Some(tray.autostart)));
    menu.push(None);
    menu.push(action("quit", "Quit", None));
    menu
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::health::Check;
    use crate::routing::health::Reach;
    use crate::telemetry::status::{BackendStatus, LastRequest};
    use serde_json::json;

    /// A cloud provider that has served requests, with these breakers.
    fn cloud(name: &str, breakers: &[&str]) -> ProviderStatus {
        let backends: Vec<BackendStatus> = breakers
            .iter()
            .enumerate()
            .map(|(i, b)| BackendStatus {
                backend: format!("{name}/m{i}"),
                breaker: (*b).into(),
                stats: Default::default(),
            })
            .collect();
        let last = LastRequest {
            at_ms: 2_000,
            ok: true,
        };
        ProviderStatus {
            name: name.into(),
            kind: "anthropic".into(),
            health: Health::of(false, &backends, false, None, Some(&last)),
            backends,
            local: None,
            check: None,
            last_request: Some(last),
            quota: Vec::new(),
            status_page: None,
        }
    }

    /// A cloud provider no request has gone to, with what its check found (`None`: none yet).
    fn checked(name: &str, reach: Option<Reach>, offline: bool) -> ProviderStatus {
        let check = reach.map(|reach| Check {
            reach,
            at_ms: 1_000,
            detail: "the key from ANTHROPIC_API_KEY was rejected (HTTP 401: invalid x-api-key)"
                .into(),
        });
        ProviderStatus {
            name: name.into(),
            kind: "anthropic".into(),
            health: Health::of(false, &[], offline, check.as_ref(), None),
            backends: Vec::new(),
            local: None,
            check,
            last_request: None,
            quota: Vec::new(),
            status_page: None,
        }
    }

    fn local(state: &str) -> ProviderStatus {
        ProviderStatus {
            name: "local".into(),
            kind: "local".into(),
            backends: Vec::new(),
            local: Some(json!({"state": state, "progress": 0.4, "device": "CPU", "gpu_layers": 0})),
            health: Health::Local,
            check: None,
            last_request: None,
            quota: Vec::new(),
            status_page: None,
        }
    }

    /// What is known without any request: nothing (not checked yet), reachable, a key
    /// rejected, offline at start. None of them is told as "healthy".
    #[test]
    fn what_the_checks_found_before_any_request_is_what_the_tray_says() {
        let cases = [
            (
                snap(
                    "auto",
                    false,
                    vec![checked("anthropic", None, false), local("not_loaded")],
                ),
                Icon::Unknown,
                "Understudy: anthropic not checked yet",
                "anthropic: not checked yet",
            ),
            (
                snap(
                    "auto",
                    false,
                    vec![
                        checked("anthropic", Some(Reach::Reachable), false),
                        local("not_loaded"),
                    ],
                ),
                Icon::Healthy,
                "Understudy: anthropic is reachable, no requests yet",
                "anthropic: reachable, no requests yet",
            ),
            (
                snap(
                    "auto",
                    false,
                    vec![
                        checked("anthropic", Some(Reach::KeyRejected), false),
                        local("not_loaded"),
                    ],
                ),
                Icon::Degraded,
                "Understudy: anthropic: key rejected",
                "anthropic: key rejected",
            ),
            (
                snap(
                    "auto",
                    false,
                    vec![
                        checked("anthropic", Some(Reach::Unreachable), false),
                        local("not_loaded"),
                    ],
                ),
                Icon::Degraded,
                "Understudy: anthropic unreachable",
                "anthropic: unreachable",
            ),
            (
                snap(
                    "auto",
                    true,
                    vec![
                        checked("anthropic", Some(Reach::Unreachable), true),
                        local("loading"),
                    ],
                ),
                Icon::LocalOnly,
                "Understudy: offline, answering from the local model",
                "anthropic: unreachable (offline)",
            ),
        ];
        for (s, icon, tooltip, line) in cases {
            let v = view(&s, Local::default());
            assert_eq!((v.icon, v.tooltip.as_str()), (icon, tooltip), "{s:?}");
            assert_eq!(labels(&v)[0], line, "{s:?}");
            assert!(!v.tooltip.contains("healthy"), "{s:?}");
        }
    }

    const NOW: u64 = 1_800_000_000_000;

    /// A plan's windows as `/api/status` carries them.
    fn plan(five_hour: f64, out_until_ms: Option<u64>) -> crate::quota::Quota {
        serde_json::from_value(json!({
            "credential": "key",
            "plan": true,
            "standing": if out_until_ms.is_some() { "rejected" } else { "allowed" },
            "windows": [
                {"name": "5h", "label": "5-hour", "utilization": five_hour, "resets_at_ms": NOW + 72 * 60_000},
                {"name": "7d", "label": "week", "utilization": 0.4, "resets_at_ms": NOW + 3 * 86_400_000},
            ],
            "out_until_ms": out_until_ms,
            "seen_at_ms": NOW,
        }))
        .unwrap()
    }

    /// Where the tray host shows no tooltip (Linux), the summary is the shown menu's first
    /// line, then a separator; the view's own menu is unchanged.
    #[test]
    fn the_summary_heads_the_shown_menu_where_there_is_no_tooltip() {
        let s = snap(
            "auto",
            false,
            vec![
                cloud("anthropic", &["open"]),
                cloud("openrouter", &["closed"]),
                local("ready"),
            ],
        );
        let v = view(&s, Local::default());
        let shown = v.shown_menu();
        if SUMMARY_IN_MENU {
            assert_eq!(shown.len(), v.menu.len() + 2);
            let first = shown[0].as_ref().unwrap();
            assert_eq!(
                (first.id.as_str(), first.label.as_str(), first.enabled),
                ("info:summary", v.tooltip.as_str(), false)
            );
            assert_eq!(
                first.label,
                "Understudy: anthropic failing, the others serve"
            );
            assert!(shown[1].is_none());
            assert_eq!(&shown[2..], v.menu.as_slice());
        } else {
            assert_eq!(shown, v.menu);
        }
    }

    /// The plan's windows are a menu line under the provider; a provider that refused the
    /// credential until its reset makes the icon degraded and says until when.
    #[test]
    fn quota_windows_are_a_menu_line_and_a_refusal_degrades_the_icon() {
        let mut anthropic = cloud("anthropic", &["closed"]);
        anthropic.quota = vec![plan(0.82, None)];
        let s = snap("auto", false, vec![anthropic.clone(), local("ready")]);
        let v = view(&s, Local::default());
        assert_eq!(v.icon, Icon::Healthy);
        assert_eq!(
            labels(&v)[1],
            "anthropic plan: 5-hour 82 %, resets in 1 h 12 m · week 40 %"
        );
        anthropic.quota = vec![plan(1.0, Some(NOW + 72 * 60_000))];
        let s = snap(
            "auto",
            false,
            vec![anthropic, cloud("openrouter", &["closed"]), local("ready")],
        );
        let v = view(&s, Local::default());
        assert_eq!(v.icon, Icon::Degraded);
        assert_eq!(
            v.tooltip,
            "Understudy: anthropic out of quota until its reset in 1 h 12 m, the others serve"
        );
        assert!(
            labels(&v)[1]
                .starts_with("anthropic plan: refused until the reset in 1 h 12 m · 5-hour 100 %"),
            "{:?}",
            labels(&v)
        );
        // Past the reset, the same snapshot taken later says nothing of a refusal.
        let mut later = s.clone();
        later.at_ms = NOW + 73 * 60_000;
        assert_eq!(view(&later, Local::default()).icon, Icon::Healthy);
    }

    fn snap(mode: &str, offline: bool, providers: Vec<ProviderStatus>) -> Snapshot {
        Snapshot {
            version: "0".into(),
            at_ms: NOW,
            mode: mode.into(),
            offline,
            providers,
            local: None,
            totals: Default::default(),
            claude_code: None,
            paused: false,
            config: None,
        }
    }

    fn labels(v: &View) -> Vec<String> {
        v.menu
            .iter()
            .map(|i| i.as_ref().map_or("---".to_owned(), |i| i.label.clone()))
            .collect()
    }

    #[test]
    fn every_state_has_its_icon_and_says_why() {
        let cases = [
            (
                snap(
                    "auto",
                    false,
                    vec![
                        cloud("a", &["closed"]),
                        cloud("o", &[]),
                        local("not_loaded"),
                    ],
                ),
                Local::default(),
                Icon::Healthy,
                "Understudy: 2 cloud providers healthy",
            ),
            (
                snap(
                    "auto",
                    false,
                    vec![
                        cloud("a", &["closed", "open"]),
                        cloud("o", &["closed"]),
                        local("ready"),
                    ],
                ),
                Local::default(),
                Icon::Degraded,
                "Understudy: a failing, the others serve",
            ),
            (
                snap(
                    "auto",
                    false,
                    vec![
                        cloud("a", &["open"]),
                        cloud("o", &["half_open"]),
                        local("ready"),
                    ],
                ),
                Local::default(),
                Icon::LocalOnly,
                "Understudy: every cloud is failing, answering from the local model",
            ),
            (
                snap(
                    "auto",
                    true,
                    vec![cloud("a", &["closed"]), local("loading")],
                ),
                Local::default(),
                Icon::LocalOnly,
                "Understudy: offline, answering from the local model",
            ),
            (
                snap(
                    "local-only",
                    false,
                    vec![cloud("a", &["closed"]), local("ready")],
                ),
                Local::default(),
                Icon::LocalOnly,
                "Understudy: local-only mode, answering from the local model",
            ),
            (
                snap("auto", false, vec![cloud("a", &["open"])]),
                Local::default(),
                Icon::Down,
                "Understudy: every cloud is failing, and no local model can answer",
            ),
            (
                snap("auto", true, vec![cloud("a", &["closed"]), local("failed")]),
                Local::default(),
                Icon::Down,
                "Understudy: offline, and no local model can answer",
            ),
            (
                snap(
                    "cloud-only",
                    false,
                    vec![cloud("a", &["open"]), local("ready")],
                ),
                Local::default(),
                Icon::Down,
                "Understudy: every cloud is failing, and no local model can answer",
            ),
            (
                snap("auto", false, vec![cloud("a", &["open"]), local("ready")]),
                Local {
                    paused: true,
                    ..Local::default()
                },
                Icon::Paused,
                "Understudy is paused",
            ),
        ];
        for (s, tray, icon, tooltip) in cases {
            let v = view(&s, tray);
            assert_eq!((v.icon, v.tooltip.as_str()), (icon, tooltip), "{s:?}");
        }
    }

    #[test]
    fn the_menu_lists_providers_the_local_model_modes_and_actions() {
        let s = snap(
            "local-only",
            false,
            vec![
                cloud("anthropic", &["closed", "open"]),
                cloud("gemini", &[]),
                local("loading"),
            ],
        );
        let v = view(
            &s,
            Local {
                autostart: true,
                ..Local::default()
            },
        );
        assert_eq!(
            labels(&v),
            [
                "anthropic: failing (anthropic/m1)",
                "gemini: healthy",
                "local (local model): loading 40 %",
                "---",
                "Auto",
                "Local only",
                "Cloud only",
                "Pause",
                "---",
                "Connect Claude Code",
                "Copy Claude Code setup",
                "Open dashboard",
                "Start at login",
                "---",
                "Quit",
            ]
        );
        let item = |id: &str| {
            v.menu
                .iter()
                .flatten()
                .find(|i| i.id == id)
                .unwrap()
                .clone()
        };
        assert_eq!(item("mode:local-only").checked, Some(true));
        assert_eq!(item("mode:auto").checked, Some(false));
        assert_eq!(item("autostart").checked, Some(true));
        assert!(!item("info:anthropic").enabled && item("quit").enabled);
    }

    #[test]
    fn a_provider_line_shows_the_latency_of_its_latest_backend() {
        let mut p = cloud("openai", &["closed", "closed"]);
        p.backends[0].stats.last_ms = Some(420.4);
        p.backends[0].stats.last_at_ms = Some(2);
        p.backends[1].stats.last_ms = Some(2345.0);
        p.backends[1].stats.last_at_ms = Some(1);
        let v = view(&snap("auto", false, vec![p.clone()]), Local::default());
        assert_eq!(labels(&v)[0], "openai: healthy, last 420 ms");
        p.backends[1].stats.last_at_ms = Some(3);
        let v = view(&snap("auto", false, vec![p]), Local::default());
        assert_eq!(labels(&v)[0], "openai: healthy, last 2.3 s");
    }

    #[test]
    fn the_local_model_line_says_where_it_runs() {
        let mut gpu = local("ready");
        gpu.local =
            Some(json!({"state": "ready", "device": "CUDA0 (NVIDIA H100)", "gpu_layers": 30}));
        let mut compatible = local("ready");
        compatible.local = Some(json!({"state": "ready", "cpu": {
            "variant": "zen4", "best": "sapphirerapids", "without": ["AMX"], "why": "SIGILL"}}));
        let mut best = local("ready");
        best.local = Some(json!({"state": "ready", "cpu": {"variant": "zen4", "best": "zen4"}}));
        for (p, want) in [
            (
                compatible,
                "local (local model): ready on the CPU, compatible mode (zen4 CPU kernels, without AMX)",
            ),
            (best, "local (local model): ready on the CPU"),
            (local("not_loaded"), "local (local model): not loaded"),
            (local("ready"), "local (local model): ready on the CPU"),
            (
                gpu,
                "local (local model): ready on the GPU (CUDA0 (NVIDIA H100))",
            ),
            (
                local("crashed"),
                "local (local model): crashed (restarts on the next request)",
            ),
            (local("failed"), "local (local model): failed to load"),
        ] {
            let v = view(&snap("auto", false, vec![p]), Local::default());
            assert_eq!(labels(&v)[0], want);
        }
    }

    #[test]
    fn the_view_changes_only_when_the_state_does() {
        let a = snap("auto", false, vec![cloud("a", &["closed"]), local("ready")]);
        let mut b = a.clone();
        b.version = "other".into();
        assert_eq!(view(&a, Local::default()), view(&b, Local::default()));
        b.providers[0].backends[0].breaker = "open".into();
        assert_ne!(view(&a, Local::default()), view(&b, Local::default()));
    }

    #[test]
    fn the_gateway_snapshot_parses() {
        let s: Snapshot = serde_json::from_value(json!({
            "version": "0.1.0", "mode": "auto", "offline": false,
            "providers": [{"name": "local", "kind": "local", "backends": [],
                           "local": {"state": "ready", "device": "CPU", "gpu_layers": 0}}],
            "local": {"state": "ready"}}))
        .unwrap();
        assert_eq!(view(&s, Local::default()).icon, Icon::LocalOnly);
    }
}
