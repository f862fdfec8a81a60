//! The admin API belongs to the user who runs Understudy. Its calls need the admin token: a
//! random 256-bit value in a file only that user can read (`admin-token`, 0600, in the config
//! dir; [`crate::config::default_admin_token_path`]). The CLI reads the file and sends it as
//! `x-understudy-token` (or `Authorization: Bearer …`); the tray app holds it in-process. A
//! browser gets a session instead: `understudy dashboard` (or the tray's "Open dashboard")
//! asks for a one-time code (`POST /api/session`, with the token) and opens
//! `/ui/login?code=…`, which sets an `HttpOnly`, `SameSite=Strict` cookie holding a session id
//! (never the token) and redirects to the page. Codes live 60 s and work once; sessions last
//! as long as the gateway process.
//!
//! Why a token and not only the `Origin` check: any local process that is not a browser (or
//! another Unix user on the machine) sends no `Origin`, and the admin API can point a
//! provider, with the client's credentials, at another server.

use http::HeaderMap;
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The header the CLI and scripts send the token in.
pub const TOKEN_HEADER: &str = "x-understudy-token";
/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "understudy_session";
/// How long a one-time dashboard code is good for.
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// Sessions kept at once (the oldest is forgotten first).
const MAX_SESSIONS: usize = 32;

/// The admin token and the dashboard's codes and sessions; and the client token, which with
/// `server.require_token` the inference endpoints need (a separate value: it is written into
/// Claude Code's settings, and opens nothing of the admin API).
#[derive(Debug)]
pub struct Admin {
    token: String,
    client: String,
    file: Option<PathBuf>,
    codes: Mutex<Vec<(String, Instant)>>,
    sessions: Mutex<VecDeque<String>>,
}

/// 32 random bytes, hex.
fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Admin {
    /// The token from `file` (made there if absent or unsafe), or, without a file or when it
    /// cannot be written, one kept in memory (the gateway still works; the CLI cannot read it,
    /// which is logged).
    pub fn new(file: Option<&Path>) -> Admin {
        let token = match file.map(|f| (f, load_or_create(f))) {
            Some((_, Ok(t))) => t,
            Some((f, Err(e))) => {
                tracing::warn!(file = %f.display(), error = %e, "cannot keep the admin token in its file; it lives in memory only, so the CLI and `understudy dashboard` cannot use the admin API");
                random_hex()
            }
            None => random_hex(),
        };
        let client = file
            .and_then(|f| load_or_create(&client_token_file(f)).ok())
            .unwrap_or_else(random_hex);
        crate::secret::remember(&token, crate::secret::Kind::Configured);
        crate::secret::remember(&client, crate::secret::Kind::Configured);
        Admin {
            token,
            client,
            file: file.map(Path::to_owned),
            codes: Default::default(),
            sessions: Default::default(),
        }
    }

    /// The token (for the tray app, in-process, and for tests).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The client token (`server.require_token`).
    pub fn client_token(&self) -> &str {
        &self.client
    }

    /// The header line a client sends the client token in (what Claude Code's
    /// `ANTHROPIC_CUSTOM_HEADERS` gets).
    pub fn client_header(&self) -> String {
        format!("{TOKEN_HEADER}: {}", self.client)
    }

    /// An inference request carries the client token (or the admin token) in
    /// `x-understudy-token`.
    pub fn allows_client(&self, h: &HeaderMap) -> bool {
        h.get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| same(t.trim(), &self.client) || same(t.trim(), &self.token))
    }

    /// The token's file, if it has one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// A code for `/ui/login?code=…`, good once within [`CODE_LIFETIME`].
    pub fn one_time_code(&self) -> String {
        let code = random_hex();
        let mut codes = self.codes.lock().expect("codes lock");
        codes.retain(|(_, at)| at.elapsed() < CODE_LIFETIME);
        codes.push((code.clone(), Instant::now()));
        code
    }

    /// Spends a one-time code: a new session id, or `None` if it is unknown, used or expired.
    pub fn redeem(&self, code: &str) -> Option<String> {
        let mut codes = self.codes.lock().expect("codes lock");
        codes.retain(|(_, at)| at.elapsed() < CODE_LIFETIME);
        let i = codes.iter().position(|(c, _)| same(c, code))?;
        codes.swap_remove(i);
        let session = random_hex();
        let mut sessions = self.sessions.lock().expect("sessions lock");
        if sessions.len() == MAX_SESSIONS {
            sessions.pop_front();
        }
        sessions.push_back(session.clone());
        Some(session)
    }

    /// The request carries the token (`x-understudy-token`, `Authorization: Bearer`) or, when
    /// `cookie` is allowed, a live session cookie.
    pub fn allows(&self, h: &HeaderMap, cookie: bool) -> bool {
        let header = h.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
        let bearer = h
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if header
            .into_iter()
            .chain(bearer)
            .any(|t| same(t.trim(), &self.token))
        {
            return true;
        }
        if !cookie {
            return false;
        }
        let sessions = self.sessions.lock().expect("sessions lock");
        cookies(h, SESSION_COOKIE).any(|v| sessions.iter().any(|s| same(s, v)))
    }
}

/// The values of cookie `name` in the request's `Cookie` headers.
fn cookies<'a>(h: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    h.get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// The client token's file: `client-token` beside the admin token's.
pub fn client_token_file(admin_file: &Path) -> PathBuf {
    admin_file.with_file_name("client-token")
}

/// The client token's header line for a gateway whose admin token lives in `admin_file`
/// (made if absent), for `understudy claude-code connect` and `serve --connect-claude-code`.
pub fn client_header_for(admin_file: &Path) -> std::io::Result<String> {
    Ok(format!(
        "{TOKEN_HEADER}: {}",
        load_or_create(&client_token_file(admin_file))?
    ))
}

/// Reads the token from `file`.
pub fn read_token(file: &Path) -> std::io::Result<String> {
    let t = std::fs::read_to_string(file)?.trim().to_owned();
    if t.len() < 32 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} does not hold an admin token", file.display()),
        ));
    }
    Ok(t)
}

/// The token in `file`, made (0600, its directory 0700) when the file is absent, or when
/// others could read it (the old token may have leaked, so a new one replaces it).
pub fn load_or_create(file: &Path) -> std::io::Result<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::metadata(file) {
            let ours = meta.uid() == euid();
            if ours && meta.mode() & 0o077 == 0 {
                if let Ok(t) = read_token(file) {
                    return Ok(t);
                }
            } else {
                tracing::warn!(file = %file.display(), "the admin token's file was readable by others (or not ours); replacing the token");
            }
        }
    }
    #[cfg(not(unix))]
    if let Ok(t) = read_token(file) {
        return Ok(t);
    }
    let token = random_hex();
    let dir = file.parent().unwrap_or(Path::new("."));
    let made_dir = !dir.exists();
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".admin-token.{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(0o600);
        // An existing temp file keeps its old mode: make it ours and private first.
        let _ = std::fs::remove_file(&tmp);
        if made_dir {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(format!("{token}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)?;
    Ok(token)
}

/// The effective user id (from `/proc/self`, whose owner it is: no `unsafe` needed).
#[cfg(unix)]
fn euid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn the_token_file_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sub/admin-token");
        let t = load_or_create(&f).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(load_or_create(&f).unwrap(), t, "reused across starts");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&f).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
            let t2 = load_or_create(&f).unwrap();
            assert_ne!(t2, t, "a token others could read is replaced");
            let mode = std::fs::metadata(&f).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn token_header_bearer_and_a_redeemed_session_are_allowed_nothing_else() {
        let a = Admin::new(None);
        let mut h = HeaderMap::new();
        assert!(!a.allows(&h, true));
        h.insert(TOKEN_HEADER, HeaderValue::from_str(a.token()).unwrap());
        assert!(a.allows(&h, false));
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {}", a.token())).unwrap(),
        );
        assert!(a.allows(&h, false));
        let code = a.one_time_code();
        let session = a.redeem(&code).unwrap();
        assert!(a.redeem(&code).is_none(), "a code works once");
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_str(&format!("x=1; {SESSION_COOKIE}={session}")).unwrap(),
        );
        assert!(a.allows(&h, true));
        assert!(!a.allows(&h, false), "a cookie is not the token");
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_str(&format!("{SESSION_COOKIE}={}", a.token())).unwrap(),
        );
        assert!(!a.allows(&h, true), "the token is never a session");
        h.insert(TOKEN_HEADER, HeaderValue::from_static("wrong"));
        assert!(!a.allows(&h, true));
        // The client token opens inference only, never the admin API.
        let mut h = HeaderMap::new();
        h.insert(
            TOKEN_HEADER,
            HeaderValue::from_str(a.client_token()).unwrap(),
        );
        assert!(a.allows_client(&h));
        assert!(!a.allows(&h, true));
        assert_ne!(a.client_token(), a.token());
    }
}
