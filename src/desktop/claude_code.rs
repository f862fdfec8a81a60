//! Connecting Claude Code in one click: `env.ANTHROPIC_BASE_URL` in Claude Code's user
//! settings (`~/.claude/settings.json`) pointed at the gateway, and put back afterwards.
//!
//! Only that one key is ever touched; every other setting, the user's own login and their own
//! `ANTHROPIC_API_KEY` stay as they are (the gateway passes Claude Code's credentials through
//! to Anthropic). Before the first change the file is copied to
//! `settings.json.understudy-backup`, and a marker (`~/.claude/understudy-connection.json`)
//! records what the key held before and which process connected. Disconnecting restores that
//! value, unless the user has changed the key since (then it is theirs and stays). Every write
//! is a temp file renamed over the original, so a crash never leaves half a file.
//!
//! A connection made by an app (the tray, `serve --connect-claude-code`, the dashboard) names
//! its process: it is undone when the app quits, and if the app crashed, by [`recover`] on the
//! next start. One made by `understudy claude-code connect` names none and stays until
//! `understudy claude-code disconnect`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The key Claude Code reads its API base URL from.
const KEY: &str = "ANTHROPIC_BASE_URL";

/// Where Claude Code's settings and our marker live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `~/.claude/settings.json`.
    pub settings: PathBuf,
    /// `~/.claude/understudy-connection.json`.
    pub marker: PathBuf,
    /// `~/.claude/settings.json.understudy-backup`.
    pub backup: PathBuf,
}

impl Paths {
    /// For a home directory (`CLAUDE_CONFIG_DIR` wins, as it does for Claude Code).
    pub fn for_home(home: &Path) -> Paths {
        let dir = std::env::var_os("CLAUDE_CONFIG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".claude"));
        Paths {
            settings: dir.join("settings.json"),
            marker: dir.join("understudy-connection.json"),
            backup: dir.join("settings.json.understudy-backup"),
        }
    }

    /// For the current user (`$HOME`).
    pub fn current() -> Option<Paths> {
        directories::BaseDirs::new().map(|d| Paths::for_home(d.home_dir()))
    }
}

/// What the marker records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    /// The URL we wrote.
    url: String,
    /// What the key held before (None: it was not set).
    previous: Option<String>,
    /// The process that connected, for a connection that ends with it.
    pid: Option<u32>,
    /// The gateway's token header we added to `ANTHROPIC_CUSTOM_HEADERS`
    /// (`server.require_token`), and what that key held before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    headers: Option<HeadersMark>,
}

/// What [`Marker::headers`] records: never the token itself (the marker is an ordinary file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HeadersMark {
    /// SHA-256 of the value we wrote, to tell whether it is still ours.
    written_sha256: String,
    /// The value before (None: it was not set), without any line of ours.
    previous: Option<String>,
}

/// SHA-256 of `text`, hex.
fn sha256(text: &str) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(text.as_bytes()))
}

/// `value` without the gateway's token lines (a value the user edited after we wrote it).
fn without_ours(value: &str) -> Option<String> {
    let kept: Vec<&str> = value
        .lines()
        .filter(|l| {
            !l.trim_start()
                .to_ascii_lowercase()
                .starts_with("x-understudy-token:")
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("\n"))
}

/// The key Claude Code reads extra request headers from (`Name: Value` lines).
const HEADERS_KEY: &str = "ANTHROPIC_CUSTOM_HEADERS";

/// The connection as the status snapshot, the tray and the dashboard show it (the type lives
/// with the snapshot, which the telemetry module owns).
pub use crate::telemetry::status::ClaudeCode as State;

/// What went wrong, said so the user can fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings file is not JSON we can edit; it is left untouched.
    #[error("Claude Code's settings file {0} is not a JSON object ({1}); fix it or move it away, it was left untouched")]
    Invalid(PathBuf, String),
    /// Reading or writing failed.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

fn read_json(path: &Path) -> Result<Option<Value>, Error> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {
            Ok(Some(Value::Object(Map::new())))
        }
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(v @ Value::Object(_)) => Ok(Some(v)),
            Ok(_) => Err(Error::Invalid(path.to_owned(), "not an object".into())),
            Err(e) => Err(Error::Invalid(path.to_owned(), e.to_string())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io(path.to_owned(), e)),
    }
}

/// Writes `bytes` to `path` through a temp file in the same directory and a rename, keeping
/// the original's permissions.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.understudy-tmp-{}",
        path.file_name()
            .map_or("file".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        // Private until it takes the original's mode: it may hold a credential.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let _ = std::fs::remove_file(&tmp);
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn write_json(path: &Path, v: &Value) -> Result<(), Error> {
    let mut text = serde_json::to_string_pretty(v).expect("JSON values serialize");
    text.push('\n');
    write_atomically(path, text.as_bytes()).map_err(|e| Error::Io(path.to_owned(), e))
}

fn read_marker(p: &Paths) -> Option<Marker> {
    std::fs::read(&p.marker)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn current_url(settings: &Value) -> Option<String> {
    settings
        .pointer(&format!("/env/{KEY}"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The connection's state now.
pub fn state(p: &Paths) -> State {
    let url = read_json(&p.settings)
        .ok()
        .flatten()
        .and_then(|v| current_url(&v));
    let connected = read_marker(p).is_some_and(|m| url.as_deref() == Some(m.url.as_str()));
    State {
        connected,
        url,
        settings: p.settings.display().to_string(),
    }
}

/// Points Claude Code at `url`. `owner`: the process whose end undoes it (None: stays).
pub fn connect(p: &Paths, url: &str, owner: Option<u32>) -> Result<(), Error> {
    connect_with(p, url, owner, None)
}

/// [`connect`], and with `header` (`x-understudy-token: …`, for a gateway with
/// `server.require_token`) added to `ANTHROPIC_CUSTOM_HEADERS`; the settings file is then
/// made readable by its owner only, since it holds a credential.
pub fn connect_with(
    p: &Paths,
    url: &str,
    owner: Option<u32>,
    header: Option<&str>,
) -> Result<(), Error> {
    let existing = read_json(&p.settings)?;
    let mut settings = existing.clone().unwrap_or(Value::Object(Map::new()));
    let old = read_marker(p);
    let ours = old
        .as_ref()
        .is_some_and(|m| current_url(&settings).as_deref() == Some(m.url.as_str()));
    let previous = match &old {
        // Already ours: keep what it held before us.
        Some(m) if ours => m.previous.clone(),
        _ => {
            if existing.is_some() {
                std::fs::copy(&p.settings, &p.backup)
                    .map_err(|e| Error::Io(p.backup.clone(), e))?;
            }
            current_url(&settings)
        }
    };
    let current_headers = env_value(&settings, HEADERS_KEY);
    // What the headers key held before us: the old mark's, if our value is still there.
    let still_ours = |h: &HeadersMark| {
        current_headers.as_deref().map(sha256).as_deref() == Some(h.written_sha256.as_str())
    };
    let headers_before = match old.as_ref().and_then(|m| m.headers.as_ref()) {
        Some(h) if ours && still_ours(h) => h.previous.clone(),
        _ => current_headers.as_deref().and_then(without_ours),
    };
    let written = header.map(|line| match headers_before.as_deref() {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}\n{line}"),
        _ => line.to_owned(),
    });
    let headers = written.as_ref().map(|w| HeadersMark {
        written_sha256: sha256(w),
        previous: headers_before.clone(),
    });
    let marker = Marker {
        url: url.to_owned(),
        previous,
        pid: owner,
        headers: headers.clone(),
    };
    // The marker first: a crash between the two writes leaves a marker whose URL the
    // settings do not hold, which recovery ignores.
    write_json(
        &p.marker,
        &serde_json::to_value(&marker).expect("serializes"),
    )?;
    let obj = settings.as_object_mut().expect("checked: an object");
    let env = obj
        .entry("env")
        .or_insert_with(|| Value::Object(Map::new()));
    if !env.is_object() {
        return Err(Error::Invalid(
            p.settings.clone(),
            "\"env\" is not an object".into(),
        ));
    }
    env[KEY] = Value::String(url.to_owned());
    match (&written, &headers_before) {
        (Some(w), _) => env[HEADERS_KEY] = Value::String(w.clone()),
        (None, Some(prev)) => env[HEADERS_KEY] = Value::String(prev.clone()),
        (None, None) => {
            if let Some(env) = env.as_object_mut() {
                env.remove(HEADERS_KEY);
            }
        }
    }
    // A file about to hold a credential is the owner's only before it does (the rewrite
    // keeps the mode it finds, and a new file starts private).
    #[cfg(unix)]
    if headers.is_some() && p.settings.exists() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p.settings, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::Io(p.settings.clone(), e))?;
    }
    write_json(&p.settings, &settings)
}

/// `env.NAME` of the settings, as a string.
fn env_value(settings: &Value, name: &str) -> Option<String> {
    settings
        .pointer(&format!("/env/{name}"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Puts the key back as it was before [`connect`], unless the user changed it since. Returns
/// whether the settings were changed.
pub fn disconnect(p: &Paths) -> Result<bool, Error> {
    let Some(marker) = read_marker(p) else {
        return Ok(false);
    };
    let mut changed = false;
    if let Some(mut settings) = read_json(&p.settings)? {
        if current_url(&settings).as_deref() == Some(marker.url.as_str()) {
            let obj = settings.as_object_mut().expect("an object");
            let env = obj.get_mut("env").and_then(Value::as_object_mut);
            let env = match (env, &marker.headers) {
                (Some(env), Some(h))
                    if env
                        .get(HEADERS_KEY)
                        .and_then(Value::as_str)
                        .map(sha256)
                        .as_deref()
                        == Some(h.written_sha256.as_str()) =>
                {
                    match &h.previous {
                        Some(prev) => {
                            env.insert(HEADERS_KEY.to_owned(), Value::String(prev.clone()));
                        }
                        None => {
                            env.remove(HEADERS_KEY);
                        }
                    }
                    Some(env)
                }
                (env, _) => env,
            };
            match (&marker.previous, env) {
                (Some(prev), Some(env)) => {
                    env.insert(KEY.to_owned(), Value::String(prev.clone()));
                }
                (None, Some(env)) => {
                    env.remove(KEY);
                    if env.is_empty() {
                        obj.remove("env");
                    }
                }
                _ => {}
            }
            write_json(&p.settings, &settings)?;
            changed = true;
        }
    }
    std::fs::remove_file(&p.marker).map_err(|e| Error::Io(p.marker.clone(), e))?;
    Ok(changed)
}

/// True when the marker was written by this process.
pub fn owned_by_me(p: &Paths) -> bool {
    read_marker(p).is_some_and(|m| m.pid == Some(std::process::id()))
}

fn alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        false
    }
}

/// At start: undoes a connection left by an app that is no longer running (it crashed or was
/// killed). Returns whether it did.
pub fn recover(p: &Paths) -> Result<bool, Error> {
    match read_marker(p) {
        Some(Marker { pid: Some(pid), .. }) if pid == std::process::id() || !alive(pid) => {
            let changed = disconnect(p)?;
            if changed {
                tracing::info!(settings = %p.settings.display(), "restored Claude Code's settings after Understudy ended without restoring them");
            }
            Ok(changed)
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &Path) -> Paths {
        Paths {
            settings: dir.join("settings.json"),
            marker: dir.join("understudy-connection.json"),
            backup: dir.join("settings.json.understudy-backup"),
        }
    }

    fn read(p: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }

    #[test]
    fn connect_keeps_every_other_setting_and_disconnect_restores_the_old_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let original = r#"{"model":"opus","env":{"FOO":"1","ANTHROPIC_BASE_URL":"https://corp.example"},"permissions":{"allow":["Bash(ls)"]}}"#;
        std::fs::write(&p.settings, original).unwrap();
        connect(&p, "http://127.0.0.1:8723", Some(1)).unwrap();
        let v = read(&p.settings);
        assert_eq!(v["env"]["ANTHROPIC_BASE_URL"], "http://127.0.0.1:8723");
        assert_eq!(v["env"]["FOO"], "1");
        assert_eq!(v["model"], "opus");
        assert_eq!(v["permissions"]["allow"][0], "Bash(ls)");
        assert_eq!(std::fs::read_to_string(&p.backup).unwrap(), original);
        assert!(state(&p).connected);
        // Connecting again keeps the value from before the first connect.
        connect(&p, "http://127.0.0.1:9000", Some(1)).unwrap();
        assert!(disconnect(&p).unwrap());
        let v = read(&p.settings);
        assert_eq!(v["env"]["ANTHROPIC_BASE_URL"], "https://corp.example");
        assert_eq!(v["env"]["FOO"], "1");
        assert!(!p.marker.exists());
        assert!(!state(&p).connected);
    }

    #[test]
    fn the_client_token_header_is_added_to_the_users_own_and_taken_out_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let original = r#"{"env":{"ANTHROPIC_CUSTOM_HEADERS":"X-Team: blue"}}"#;
        std::fs::write(&p.settings, original).unwrap();
        let line = "x-understudy-token: abc123";
        connect_with(&p, "http://127.0.0.1:8723", Some(1), Some(line)).unwrap();
        let v = read(&p.settings);
        assert_eq!(
            v["env"]["ANTHROPIC_CUSTOM_HEADERS"],
            "X-Team: blue\nx-understudy-token: abc123"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p.settings).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "a file holding a credential is the owner's only"
            );
        }
        // Connecting again does not add the line twice.
        connect_with(&p, "http://127.0.0.1:8723", Some(1), Some(line)).unwrap();
        assert_eq!(
            read(&p.settings)["env"]["ANTHROPIC_CUSTOM_HEADERS"],
            "X-Team: blue\nx-understudy-token: abc123"
        );
        assert!(disconnect(&p).unwrap());
        let v = read(&p.settings);
        assert_eq!(v["env"]["ANTHROPIC_CUSTOM_HEADERS"], "X-Team: blue");
        assert!(v["env"].get("ANTHROPIC_BASE_URL").is_none());
        // The marker (an ordinary file) never holds the token.
        connect_with(&p, "http://127.0.0.1:8723", Some(1), Some(line)).unwrap();
        assert!(!std::fs::read_to_string(&p.marker)
            .unwrap()
            .contains("abc123"));
        // The user edits the key meanwhile: connecting again does not add the line twice, and
        // disconnecting leaves no line of ours in what was theirs.
        let mut v = read(&p.settings);
        v["env"]["ANTHROPIC_CUSTOM_HEADERS"] =
            "X-Team: blue\nx-understudy-token: abc123\nX-More: 1".into();
        std::fs::write(&p.settings, v.to_string()).unwrap();
        connect_with(&p, "http://127.0.0.1:8723", Some(1), Some(line)).unwrap();
        let h = read(&p.settings)["env"]["ANTHROPIC_CUSTOM_HEADERS"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(h.matches("x-understudy-token").count(), 1, "{h}");
        disconnect(&p).unwrap();
        assert_eq!(
            read(&p.settings)["env"]["ANTHROPIC_CUSTOM_HEADERS"],
            "X-Team: blue\nX-More: 1"
        );
        // With no header of the user's, the key goes away again.
        std::fs::write(&p.settings, "{}").unwrap();
        connect_with(&p, "http://127.0.0.1:8723", None, Some(line)).unwrap();
        disconnect(&p).unwrap();
        assert_eq!(read(&p.settings), serde_json::json!({}));
    }

    #[test]
    fn a_key_that_was_not_set_is_removed_again_and_a_missing_file_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path().join(".claude").as_path());
        connect(&p, "http://127.0.0.1:8723", None).unwrap();
        assert_eq!(
            read(&p.settings)["env"]["ANTHROPIC_BASE_URL"],
            "http://127.0.0.1:8723"
        );
        assert!(!p.backup.exists(), "nothing to back up");
        disconnect(&p).unwrap();
        assert_eq!(read(&p.settings), serde_json::json!({}));
    }

    #[test]
    fn a_value_the_user_changed_meanwhile_is_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        std::fs::write(&p.settings, r#"{"env":{}}"#).unwrap();
        connect(&p, "http://127.0.0.1:8723", Some(1)).unwrap();
        std::fs::write(
            &p.settings,
            r#"{"env":{"ANTHROPIC_BASE_URL":"http://mine"}}"#,
        )
        .unwrap();
        assert!(!disconnect(&p).unwrap());
        assert_eq!(
            read(&p.settings)["env"]["ANTHROPIC_BASE_URL"],
            "http://mine"
        );
    }

    #[test]
    fn an_invalid_file_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        std::fs::write(&p.settings, "{ not json").unwrap();
        let e = connect(&p, "http://127.0.0.1:8723", None).unwrap_err();
        assert!(e.to_string().contains("left untouched"), "{e}");
        assert_eq!(std::fs::read_to_string(&p.settings).unwrap(), "{ not json");
        assert!(!p.marker.exists());
    }

    #[test]
    fn recovery_undoes_only_a_connection_whose_app_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        connect(&p, "http://127.0.0.1:8723", None).unwrap();
        assert!(!recover(&p).unwrap(), "a CLI connection stays");
        disconnect(&p).unwrap();
        // PID 1 is alive (init); a PID beyond pid_max is not.
        connect(&p, "http://127.0.0.1:8723", Some(1)).unwrap();
        assert!(!recover(&p).unwrap());
        connect(&p, "http://127.0.0.1:8723", Some(u32::MAX - 1)).unwrap();
        assert!(recover(&p).unwrap());
        assert!(!state(&p).connected);
    }
}
