//! One tray app per user: the first launch holds a lock file in the data dir and listens on a
//! Unix socket beside it; a later launch finds the lock held, says `show` on the socket (the
//! first one opens its dashboard) and exits before it binds anything.
//!
//! A lock (`flock`, released by the kernel when the holder dies, however it dies) and not the
//! socket alone: a socket left by a crash would otherwise look like a live instance, and two
//! launches at once could both decide they were first. The data dir and not `$XDG_RUNTIME_DIR`:
//! it is the user's own (0700 by convention) on every Linux, and it follows `HOME` and
//! `XDG_DATA_HOME`, so each test home is its own user.

use std::path::{Path, PathBuf};

/// What a launch is.
pub enum Claim {
    /// The first: it keeps the lock for its life and serves the socket.
    First(Instance),
    /// Another instance runs and was asked to show its dashboard.
    Handed,
}

/// The first instance's lock and socket.
pub struct Instance {
    _lock: std::fs::File,
    #[cfg(unix)]
    pub listener: Option<std::os::unix::net::UnixListener>,
}

/// Claims the single instance in `dir`.
pub fn claim(dir: &Path) -> std::io::Result<Claim> {
    std::fs::create_dir_all(dir)?;
    let lock_path = dir.join("tray.lock");
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    match lock.try_lock() {
        Ok(()) => first(lock, dir),
        Err(std::fs::TryLockError::WouldBlock) => hand_over(&socket_path(dir), &lock_path),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

fn socket_path(dir: &Path) -> PathBuf {
    dir.join("tray.sock")
}

#[cfg(unix)]
fn first(lock: std::fs::File, dir: &Path) -> std::io::Result<Claim> {
    let path = socket_path(dir);
    // Left by an instance that died: the lock says nobody serves it.
    let _ = std::fs::remove_file(&path);
    let listener = match std::os::unix::net::UnixListener::bind(&path) {
        Ok(l) => Some(l),
        Err(e) => {
            // A path over the socket address limit (~108 bytes): still the only instance (the
            // lock), only a second launch cannot reach it.
            tracing::warn!(path = %path.display(), error = %e, "cannot listen for a second launch; it will exit without opening this one's dashboard");
            None
        }
    };
    Ok(Claim::First(Instance {
        _lock: lock,
        listener,
    }))
}

#[cfg(not(unix))]
fn first(lock: std::fs::File, _dir: &Path) -> std::io::Result<Claim> {
    Ok(Claim::First(Instance { _lock: lock }))
}

#[cfg(unix)]
fn hand_over(path: &Path, lock_path: &Path) -> std::io::Result<Claim> {
    use std::io::Write;
    // The holder may be starting: its socket comes a moment after its lock.
    let mut last = None;
    for _ in 0..50 {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(mut s) => {
                s.write_all(b"show\n")?;
                return Ok(Claim::Handed);
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(std::io::Error::other(format!(
        "another understudy-tray holds {} but does not answer on {}: {}",
        lock_path.display(),
        path.display(),
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

#[cfg(not(unix))]
fn hand_over(_path: &Path, _lock_path: &Path) -> std::io::Result<Claim> {
    Ok(Claim::Handed)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::io::BufRead;

    #[test]
    fn a_second_claim_hands_over_to_the_first_and_a_dead_ones_socket_is_taken_over() {
        let dir = std::env::temp_dir().join(format!("us-instance-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // A socket file left by a crash is not an instance.
        std::fs::create_dir_all(&dir).unwrap();
        drop(std::os::unix::net::UnixListener::bind(socket_path(&dir)).unwrap());
        let Claim::First(first) = claim(&dir).unwrap() else {
            panic!("the first claim must win");
        };
        let listener = first.listener.as_ref().expect("it listens");
        let reader = std::thread::spawn({
            let l = listener.try_clone().unwrap();
            move || {
                let (s, _) = l.accept().unwrap();
                let mut line = String::new();
                std::io::BufReader::new(s).read_line(&mut line).unwrap();
                line
            }
        });
        assert!(matches!(claim(&dir).unwrap(), Claim::Handed));
        assert_eq!(reader.join().unwrap(), "show\n");
        // Once the first is gone (its lock released), the next launch is first again.
        drop(first);
        assert!(matches!(claim(&dir).unwrap(), Claim::First(_)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
