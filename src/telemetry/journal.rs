//! The request journal: every finished request ([`crate::telemetry::entry::Entry`]: when, which client
//! dialect and model, the backends tried and why each failed, who served, whether a
//! continuation was spliced in, tokens, duration, estimated spend) in a SQLite file that
//! survives restarts. No prompt or answer text and no headers are ever written.
//!
//! Writes never hold up a request: entries go over a channel to one writer thread, which
//! lets a burst gather for up to [`GATHER`] and commits it in one transaction (a clean stop
//! writes what is queued first). The writer runs at the lowest CPU priority
//! ([`background_priority`]): a commit is a burst of a few hundred microseconds, and on a CPU a
//! request is waiting for it was the gateway's largest tail latency. If it falls [`HIGH_WATER`]
//! entries behind (every core busy), a second writer at the normal priority ([`Rescue`]) takes
//! the new ones, so the queue stays bounded and nothing is dropped. The file is in WAL mode with
//! `synchronous = NORMAL`: a crash of the gateway (even `kill -9` in the middle of a write)
//! loses at most the entries not yet written (those of the last `GATHER`; on a machine whose
//! every core is busy, up to [`HIGH_WATER`]), never the file. Retention is bounded by rows
//! and age, enforced at open and every [`PRUNE_EVERY`] writes. A write that fails (a full
//! disk) is counted and logged once; the gateway goes on serving, and the live feed and
//! statistics, which live in memory, lose nothing.

use crate::config::Retention;
use crate::telemetry::entry::{unix_ms, Entry};
use rusqlite::{params, Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Writes between two retention passes.
const PRUNE_EVERY: u64 = 500;

/// Why the journal could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the request journal {path}: {source}")]
pub struct JournalError {
    path: PathBuf,
    #[source]
    source: rusqlite::Error,
}

/// The journal: a writer thread and the file's path (reads open their own connection).
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    retention: Retention,
    /// `None` once closing.
    tx: Option<mpsc::Sender<Arc<Entry>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Entries queued for the writer and not yet written.
    queued: Arc<AtomicUsize>,
    /// Past this many queued entries, new ones go to the [`Rescue`] writer.
    high_water: usize,
    rescue: Mutex<Option<Rescue>>,
    errors: Arc<AtomicU64>,
}

/// A second writer at the normal CPU priority, started the first time the first one (idle
/// priority, [`background_priority`]) falls [`HIGH_WATER`] entries behind: on a machine whose
/// cores are all busy it may not run for a long time, and its queue must not grow without
/// bound. It writes on a connection of its own, as the first does, until the journal closes.
#[derive(Debug)]
struct Rescue {
    tx: mpsc::Sender<Arc<Entry>>,
    writer: std::thread::JoinHandle<()>,
}

/// Entries the idle-priority writer may fall behind before the [`Rescue`] writer takes the
/// new ones (a few hundred bytes each: a few MB at most).
const HIGH_WATER: usize = 10_000;

/// How long the writer lets a burst gather before one transaction: a wake-up and a commit per
/// request would cost more than the request (measured: 7k req/s on one core).
const GATHER: Duration = Duration::from_millis(20);

impl Drop for Journal {
    /// Writes what is queued before the journal goes: a clean stop loses nothing.
    fn drop(&mut self) {
        drop(self.tx.take());
        let rescue = self.rescue.get_mut().ok().and_then(Option::take);
        let writers = self.writer.take().into_iter().chain(rescue.map(|r| {
            drop(r.tx);
            r.writer
        }));
        for writer in writers {
            writer.thread().unpark();
            let _ = writer.join();
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    dialect TEXT NOT NULL,
    model TEXT NOT NULL,
    stream INTEGER NOT NULL,
    attempts TEXT NOT NULL,
    served_by TEXT,
    continued INTEGER NOT NULL,
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    spend_usd REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_at ON requests(at_ms);
CREATE TABLE IF NOT EXISTS incidents (
    provider TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    impact TEXT NOT NULL,
    components TEXT NOT NULL,
    relevant INTEGER NOT NULL,
    declared_ms INTEGER NOT NULL,
    seen_ms INTEGER NOT NULL,
    first_failure_ms INTEGER,
    resolved_ms INTEGER,
    PRIMARY KEY (provider, id)
);
";

/// One incident a provider's status page declared, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IncidentRow {
    /// The provider.
    pub provider: String,
    /// The incident as first read (`first_failure_ms`: when Understudy's requests to it began
    /// failing, in the run they were in when it was declared).
    #[serde(flatten)]
    pub incident: crate::telemetry::status::Incident,
    /// When it left the page (Unix ms).
    pub resolved_ms: Option<u64>,
    /// `declared_ms − first_failure_ms`: how long before the page Understudy knew (negative:
    /// after it). `None` when Understudy saw no failure.
    pub lead_ms: Option<i64>,
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

impl Journal {
    /// Opens (creating) the journal at `path` and starts its writer. A file that is not a
    /// journal SQLite can read is moved aside (`.corrupt-UNIXTIME`) and a new one started, so
    /// a damaged file never stops the gateway.
    pub fn open(path: &Path, retention: Retention) -> Result<Journal, JournalError> {
        let err = |source| JournalError {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = match connect(path).and_then(|c| c.execute_batch(SCHEMA).map(|_| c)) {
            Ok(c) => c,
            Err(e) if path.exists() && is_corrupt(&e) => {
                let aside = path.with_extension(format!("corrupt-{}", unix_ms() / 1000));
                tracing::warn!(path = %path.display(), moved_to = %aside.display(), error = %e, "the request journal is damaged; starting a new one");
                let _ = std::fs::rename(path, &aside);
                for ext in ["-wal", "-shm"] {
                    let mut p = path.as_os_str().to_owned();
                    p.push(ext);
                    let _ = std::fs::remove_file(PathBuf::from(p));
                }
                let c = connect(path).map_err(err)?;
                c.execute_batch(SCHEMA).map_err(err)?;
                c
            }
            Err(e) => return Err(err(e)),
        };
        prune(&conn, retention).map_err(err)?;
        let errors = Arc::new(AtomicU64::new(0));
        let queued = Arc::new(AtomicUsize::new(0));
        let (tx, writer) = spawn_writer(
            "understudy-journal",
            conn,
            Writer {
                retention,
                errors: errors.clone(),
                path: path.to_owned(),
                idle: true,
                queued: Some(queued.clone()),
            },
        )
        .map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        Ok(Journal {
            path: path.to_owned(),
            retention,
            tx: Some(tx),
            writer: Some(writer),
            queued,
            high_water: HIGH_WATER,
            rescue: Mutex::new(None),
            errors,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues an entry for writing (shared with the feed and the recent list, not copied).
    pub fn write(&self, entry: Arc<Entry>) {
        let Some(tx) = &self.tx else { return };
        if self.queued.load(Ordering::Relaxed) >= self.high_water {
            // No second writer (its connection failed, logged): the first one's queue grows
            // rather than an entry being lost.
            if let Err(entry) = self.rescue(entry) {
                self.queued.fetch_add(1, Ordering::Relaxed);
                let _ = tx.send(entry);
            }
        } else {
            self.queued.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(entry);
        }
    }

    /// Hands `entry` to the [`Rescue`] writer, starting it the first time; gives the entry back
    /// if there is none and none can be started.
    fn rescue(&self, entry: Arc<Entry>) -> Result<(), Arc<Entry>> {
        let Ok(mut rescue) = self.rescue.lock() else {
            return Err(entry);
        };
        if rescue.is_none() {
            let started = connect(&self.path)
                .map_err(|e| e.to_string())
                .and_then(|conn| {
                    let w = Writer {
                        retention: self.retention,
                        errors: self.errors.clone(),
                        path: self.path.clone(),
                        idle: false,
                        queued: None,
                    };
                    spawn_writer("journal-rescue", conn, w).map_err(|e| e.to_string())
                });
            match started {
                Ok((tx, writer)) => {
                    tracing::info!(behind = self.queued.load(Ordering::Relaxed), "the request journal's writer fell behind (every CPU busy); a second writer at normal priority takes the new entries");
                    *rescue = Some(Rescue { tx, writer });
                }
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "the request journal's writer fell behind and a second one could not start; entries wait in memory");
                    return Err(entry);
                }
            }
        }
        match rescue.as_ref() {
            Some(r) => r.tx.send(entry).map_err(|e| e.0),
            None => Err(entry),
        }
    }

    /// Writes that failed since the start.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The highest id written so far (0 for an empty journal).
    pub fn last_id(&self) -> rusqlite::Result<u64> {
        let conn = connect(&self.path)?;
        conn.query_row("SELECT COALESCE(MAX(id), 0) FROM requests", [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|v| v as u64)
    }

    /// The newest `limit` entries with an id below `before` (all when `None`), newest first.
    pub fn page(&self, limit: usize, before: Option<u64>) -> rusqlite::Result<Vec<Entry>> {
        let conn = connect(&self.path)?;
        let mut stmt = conn.prepare(
            "SELECT id, at_ms, dialect, model, stream, attempts, served_by, continued, status,
                    outcome, input_tokens, output_tokens, duration_ms, spend_usd
             FROM requests WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let before = before.map_or(i64::MAX, |b| b as i64);
        let rows = stmt.query_map(params![before, limit as i64], |r| {
            let attempts: String = r.get(5)?;
            Ok(Entry {
                id: r.get::<_, i64>(0)? as u64,
                at_ms: r.get::<_, i64>(1)? as u64,
                dialect: r.get(2)?,
                model: r.get(3)?,
                stream: r.get(4)?,
                attempts: serde_json::from_str(&attempts).unwrap_or_default(),
                served_by: r.get(6)?,
                continued: r.get(7)?,
                status: r.get::<_, i64>(8)? as u16,
                outcome: r.get(9)?,
                input_tokens: r.get::<_, i64>(10)? as u64,
                output_tokens: r.get::<_, i64>(11)? as u64,
                duration_ms: r.get(12)?,
                spend_usd: r.get(13)?,
            })
        })?;
        rows.collect()
    }

    /// The newest `limit` entries, newest first.
    pub fn recent(&self, limit: usize) -> rusqlite::Result<Vec<Entry>> {
        self.page(limit, None)
    }

    /// Records an incident a status page declared (the first read's stamps are kept; one
    /// declared again after its resolution is open again), or its resolution. Rare: written here on a connection of its own, off the request path. A
    /// failure is logged.
    pub fn record_incident(
        &self,
        provider: &str,
        i: &crate::telemetry::status::Incident,
        resolved_ms: Option<u64>,
    ) {
        let write = || -> rusqlite::Result<()> {
            let conn = connect(&self.path)?;
            conn.execute(
                "INSERT INTO incidents (provider, id, name, impact, components, relevant,
                    declared_ms, seen_ms, first_failure_ms, resolved_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (provider, id) DO UPDATE SET name = ?3, impact = ?4,
                    resolved_ms = ?10",
                params![
                    provider,
                    i.id,
                    i.name,
                    i.impact,
                    serde_json::to_string(&i.components).unwrap_or_else(|_| "[]".into()),
                    i.relevant,
                    i.declared_ms as i64,
                    i.seen_ms as i64,
                    i.first_failure_ms.map(|v| v as i64),
                    resolved_ms.map(|v| v as i64),
                ],
            )?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::warn!(path = %self.path.display(), error = %e, "could not record a status page incident in the journal");
        }
    }

    /// Every incident recorded, newest declared first.
    pub fn incidents(&self) -> rusqlite::Result<Vec<IncidentRow>> {
        let conn = connect(&self.path)?;
        let mut stmt = conn.prepare(
            "SELECT provider, id, name, impact, components, relevant, declared_ms, seen_ms,
                    first_failure_ms, resolved_ms
             FROM incidents ORDER BY declared_ms DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            let components: String = r.get(4)?;
            let declared_ms = r.get::<_, i64>(6)?;
            let first_failure_ms = r.get::<_, Option<i64>>(8)?;
            Ok(IncidentRow {
                provider: r.get(0)?,
                incident: crate::telemetry::status::Incident {
                    id: r.get(1)?,
                    name: r.get(2)?,
                    impact: r.get(3)?,
                    status: String::new(),
                    components: serde_json::from_str(&components).unwrap_or_default(),
                    relevant: r.get(5)?,
                    declared_ms: declared_ms as u64,
                    seen_ms: r.get::<_, i64>(7)? as u64,
                    first_failure_ms: first_failure_ms.map(|v| v as u64),
                    link: None,
                },
                resolved_ms: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
                lead_ms: first_failure_ms.map(|f| declared_ms - f),
            })
        })?;
        rows.collect()
    }
}

fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

fn prune(conn: &Connection, r: Retention) -> rusqlite::Result<()> {
    let oldest = unix_ms().saturating_sub(r.max_age.as_millis() as u64);
    conn.execute(
        "DELETE FROM requests WHERE at_ms < ?1",
        params![oldest as i64],
    )?;
    conn.execute(
        "DELETE FROM requests WHERE id <= (SELECT MAX(id) FROM requests) - ?1",
        params![r.max_rows as i64],
    )?;
    Ok(())
}

/// The row's columns, in [`insert`]'s order.
const COLUMNS: &str = "INTO requests (id, at_ms, dialect, model, stream, attempts, served_by,
    continued, status, outcome, input_tokens, output_tokens, duration_ms, spend_usd)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";

/// Writes a batch in one transaction. A plain `INSERT`: `OR REPLACE` makes SQLite keep a
/// statement journal for every row, a third of the row's cost; an id already there (two
/// gateways on one file) is replaced as before, by a second statement for that row only.
fn insert(conn: &mut Connection, batch: &[Arc<Entry>]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut plain = tx.prepare_cached(&format!("INSERT {COLUMNS}"))?;
        for e in batch {
            let attempts = serde_json::to_string(&e.attempts).unwrap_or_else(|_| "[]".into());
            let row = params![
                e.id as i64,
                e.at_ms as i64,
                e.dialect,
                e.model,
                e.stream,
                attempts,
                e.served_by,
                e.continued,
                i64::from(e.status),
                e.outcome,
                e.input_tokens as i64,
                e.output_tokens as i64,
                e.duration_ms,
                e.spend_usd,
            ];
            match plain.execute(row) {
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    tx.prepare_cached(&format!("INSERT OR REPLACE {COLUMNS}"))?
                        .execute(row)?;
                }
                done => {
                    done?;
                }
            }
        }
    }
    tx.commit()
}

/// What a writer thread needs besides its connection and queue.
struct Writer {
    retention: Retention,
    errors: Arc<AtomicU64>,
    path: PathBuf,
    /// At the idle CPU priority ([`background_priority`]).
    idle: bool,
    /// The count of entries queued for it, lowered as they are written.
    queued: Option<Arc<AtomicUsize>>,
}

/// Starts a writer thread named `name` on `conn`; returns its queue and handle.
fn spawn_writer(
    name: &str,
    conn: Connection,
    w: Writer,
) -> std::io::Result<(mpsc::Sender<Arc<Entry>>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<Arc<Entry>>();
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || writer(conn, rx, w))?;
    Ok((tx, handle))
}

fn writer(mut conn: Connection, rx: mpsc::Receiver<Arc<Entry>>, w: Writer) {
    let Writer {
        retention,
        errors,
        path,
        idle,
        queued,
    } = w;
    if idle {
        background_priority();
    }
    let mut written = 0u64;
    while let Ok(first) = rx.recv() {
        // Group commit: one wake-up and one transaction per burst. Closing unparks at once.
        std::thread::park_timeout(GATHER);
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() >= 1000 {
                break;
            }
        }
        let result = insert(&mut conn, &batch);
        if let Some(q) = &queued {
            q.fetch_sub(batch.len(), Ordering::Relaxed);
        }
        match result {
            Ok(()) => {
                let before = written / PRUNE_EVERY;
                written += batch.len() as u64;
                if written / PRUNE_EVERY != before {
                    if let Err(e) = prune(&conn, retention) {
                        tracing::warn!(error = %e, "could not prune the request journal");
                    }
                }
            }
            Err(e) => {
                if errors.fetch_add(batch.len() as u64, Ordering::Relaxed) == 0 {
                    tracing::warn!(path = %path.display(), error = %e, lost = batch.len(), "could not write to the request journal (is the disk full?); requests are still served, the dashboard's feed goes on, the journal misses them");
                }
            }
        }
    }
}

/// Puts the calling thread (the writer) in Linux's `SCHED_IDLE` class: it runs when a CPU has
/// nothing else to do, and a request's thread that wakes takes the CPU from it at once.
///
/// Measured (BENCHMARKS.md, the eighth pass on the paths users take): a writer at the normal
/// priority held the gateway's CPU for each commit, and the added p99 at 2,000 req/s was
/// 0.32 / 0.42 ms by the two load generators; in this class 0.10 / 0.35, as with no journal
/// at all (0.16 / 0.34). The cost: on a machine whose every core is busy with other work, the
/// entries wait in the queue (in memory, a few hundred bytes each) until a core is idle, and a
/// clean stop still writes them all. An unprivileged thread cannot raise its priority back,
/// so past [`HIGH_WATER`] of them the [`Rescue`] writer takes the new ones.
fn background_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
            ThreadPriority, ThreadSchedulePolicy,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if let Err(e) =
            set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle)
        {
            tracing::debug!(error = ?e, "the request journal's writer keeps the normal CPU priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, at_ms: u64) -> Entry {
        Entry {
            id,
            at_ms,
            dialect: "anthropic".into(),
            model: "m".into(),
            stream: true,
            attempts: vec![crate::telemetry::entry::Attempt {
                backend: "a/m".into(),
                outcome: "complete".into(),
                ttft_ms: Some(1.0),
                ms: 2.0,
                broke_after_content: false,
                continuation: None,
                detail: None,
            }],
            served_by: Some("a/m".into()),
            continued: false,
            status: 200,
            outcome: "complete".into(),
            input_tokens: 3,
            output_tokens: 4,
            duration_ms: 2.5,
            spend_usd: 0.0,
        }
    }

    /// Waits (up to 15 s: the writer runs only when a CPU is idle, and the tests beside this
    /// one keep both of CI's busy) until the journal holds `n` rows.
    fn wait_for(j: &Journal, n: usize) -> Vec<Entry> {
        for _ in 0..1500 {
            let rows = j.recent(usize::MAX).unwrap();
            if rows.len() >= n {
                return rows;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the journal never got {n} rows");
    }

    /// The writer runs in `SCHED_IDLE`: the scheduling policy of a thread named after it, read
    /// from /proc, once it has written a row.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_writer_runs_at_the_lowest_cpu_priority() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.sqlite3"), Retention::default()).unwrap();
        j.write(entry(1, unix_ms()).into());
        wait_for(&j, 1);
        let policies = policies("understudy-jour");
        // SCHED_IDLE in Linux's uapi/linux/sched.h.
        const SCHED_IDLE: i32 = 5;
        assert!(
            policies.contains(&SCHED_IDLE),
            "no journal writer in SCHED_IDLE; policies seen: {policies:?}"
        );
    }

    /// The scheduling policy (field 41 of `stat`) of each of this process's threads named
    /// `name` (the kernel keeps 15 bytes of a name).
    #[cfg(target_os = "linux")]
    fn policies(name: &str) -> Vec<i32> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| {
                let dir = t.ok()?.path();
                let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
                (comm.trim_end() == name).then_some(())?;
                let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
                stat.rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(41 - 3)?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// Past the high-water mark (0 here: from the first entry) new entries go to a second
    /// writer at the normal priority, started then; none is lost, and closing writes them all.
    #[test]
    fn a_writer_that_falls_behind_hands_new_entries_to_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite3");
        {
            let mut j = Journal::open(&path, Retention::default()).unwrap();
            j.high_water = 0;
            for i in 1..=50 {
                j.write(entry(i, unix_ms()).into());
            }
            assert!(j.rescue.lock().unwrap().is_some(), "the second writer runs");
            assert_eq!(
                j.queued.load(Ordering::Relaxed),
                0,
                "none went to the first"
            );
            #[cfg(target_os = "linux")]
            {
                // Its name is set once it runs.
                let mut p = policies("journal-rescue");
                for _ in 0..500 {
                    if !p.is_empty() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                    p = policies("journal-rescue");
                }
                assert!(
                    !p.is_empty() && p.iter().all(|&p| p == 0),
                    "the second writer runs at the normal priority (SCHED_OTHER): {p:?}"
                );
            }
        }
        let j = Journal::open(&path, Retention::default()).unwrap();
        assert_eq!(j.recent(100).unwrap().len(), 50, "every entry was written");
    }

    #[test]
    fn entries_round_trip_and_retention_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite3");
        let now = unix_ms();
        {
            let j = Journal::open(&path, Retention::default()).unwrap();
            for i in 1..=10 {
                j.write(entry(i, now).into());
            }
            // Too old for any retention.
            j.write(entry(11, 1_000).into());
            let rows = wait_for(&j, 11);
            assert_eq!(rows[0], entry(11, 1_000));
            assert_eq!(j.last_id().unwrap(), 11);
        }
        let j = Journal::open(
            &path,
            Retention {
                max_rows: 4,
                max_age: Duration::from_secs(3600),
            },
        )
        .unwrap();
        let ids: Vec<u64> = j.recent(100).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(
            ids,
            vec![10, 9, 8, 7],
            "the old row and the oldest beyond 4 are gone"
        );
        let page: Vec<u64> = j.page(2, Some(9)).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(page, vec![8, 7]);
    }

    /// A row whose id is already there (two gateways on one file) replaces it, and the rest
    /// of its batch is written: nothing in the batch is lost to the conflict.
    #[test]
    fn an_id_already_written_is_replaced_and_its_batch_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite3");
        let now = unix_ms();
        let mut conn = connect(&path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        insert(&mut conn, &[entry(1, now).into(), entry(2, now).into()]).unwrap();
        let mut again = entry(2, now);
        again.model = "second".into();
        let batch = [
            entry(3, now).into(),
            again.clone().into(),
            entry(4, now).into(),
        ];
        insert(&mut conn, &batch).unwrap();
        drop(conn);
        let j = Journal::open(&path, Retention::default()).unwrap();
        let rows = j.recent(100).unwrap();
        let ids: Vec<u64> = rows.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![4, 3, 2, 1]);
        assert_eq!(rows[2], again);
    }

    #[test]
    fn a_file_that_is_not_a_journal_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite3");
        std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
        let j = Journal::open(&path, Retention::default()).unwrap();
        j.write(entry(1, unix_ms()).into());
        assert_eq!(wait_for(&j, 1).len(), 1);
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains("corrupt-"));
        assert!(aside, "the damaged file is kept beside the new one");
    }
}
