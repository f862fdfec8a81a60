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
    #[cfg(unix)]
    socket: PathBuf,
}

impl Instance {
    /// Quitting: a launch from now on waits for the lock (and takes over once this process
    /// is gone) instead of handing over to an instance that will not open anything.
    pub fn stop_listening(&mut self) {
        #[cfg(unix)]
        {
            self.listener = None;
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

/// Claims the single instance in `dir`. A held lock whose socket does not answer yet (its
/// holder starting, or quitting through its grace period) is asked again, and taken over if it
/// is released, for up to [`PATIENCE`].
pub fn claim(dir: &Path) -> std::io::Result<Claim> {
    std::fs::create_dir_all(dir)?;
    let lock_path = dir.join("tray.lock");
    let mut options = std::fs::File::options();
    options.create(true).truncate(false).write(true);
    // Another user must not be able to open (and so hold) it.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let lock = options.open(&lock_path)?;
    let socket = socket_path(dir);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        match lock.try_lock() {
            Ok(()) => return first(lock, dir),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let said = say_show(&socket);
        if said.is_ok() {
            return Ok(Claim::Handed);
        }
        if std::time::Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "another understudy-tray holds {} but does not answer on {}: {}",
                    lock_path.display(),
                    socket.display(),
                    said.err().map(|e| e.to_string()).unwrap_or_default()
                ),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// How long a launch waits for a running instance to answer or go: longer than a quitting
/// one's grace period for its streams (12 s).
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

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
            tracing::warn!(path = %path.display(), error = %e, "cannot listen for a second launch; one will wait, then say this one does not answer");
            None
        }
    };
    Ok(Claim::First(Instance {
        _lock: lock,
        listener,
        socket: path,
    }))
}

#[cfg(not(unix))]
fn first(lock: std::fs::File, _dir: &Path) -> std::io::Result<Claim> {
    Ok(Claim::First(Instance { _lock: lock }))
}

#[cfg(unix)]
fn say_show(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    std::os::unix::net::UnixStream::connect(path)?.write_all(b"show\n")
}

#[cfg(not(unix))]
fn say_show(_path: &Path) -> std::io::Result<()> {
    Ok(())
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
                // Never hang the test run if the hand-over regresses.
                l.set_nonblocking(true).unwrap();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                let s = loop {
                    match l.accept() {
                        Ok((s, _)) => break s,
                        Err(_) if std::time::Instant::now() < deadline => {
                            std::thread::sleep(std::time::Duration::from_millis(20))
                        }
                        Err(e) => panic!("no hand-over: {e}"),
                    }
                };
                s.set_nonblocking(false).unwrap();
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
