//! The event log: every failover, health change and operator action with its reason, time and
//! the figures behind it.
//!
//! Two halves. [`EventLog`] lives in the event loop: it numbers the entries, keeps the last
//! [`KEEP`] in memory for `netctl events`, and hands each one to the writer without ever waiting.
//! The writer ([`spawn_writer`]) is the adapter that owns `<state_dir>/events.jsonl`: a thread of
//! its own that loads the history at start-up and appends every entry, rewriting the file with the
//! last entries when it grows past twice the bound. A slow disk, a full filesystem or a file that
//! blocks forever (a FIFO nobody reads) stalls only that thread: the loop's queue to it is bounded,
//! and what does not fit is counted in [`EventLog::dropped`] and kept in memory.
//!
//! A write that fails (a full filesystem, a read-only one) raises a `state_write` fault (logged
//! and counted once, [`crate::faults`]) and is retried every [`RETRY_EVERY`] while the entries
//! keep arriving in the writer's own ring. The first write that succeeds rewrites the file from
//! that ring, so the entries of the episode are on disk again, in order, and clears the fault.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use isthmus_api::{EventKind, EventRecord};
use tokio::sync::{mpsc, oneshot};

use crate::faults::{FaultKind, Faults};

/// Entries kept (in memory and, at least, on disk).
pub const KEEP: usize = 1000;
/// Entries queued for the writer before the loop starts dropping (and counting) them.
pub const WRITER_QUEUE: usize = 256;
/// How long start-up waits for the writer to load the history before going on without it.
pub const HISTORY_WAIT: Duration = Duration::from_secs(1);
/// How soon a failed write is tried again when no new entry comes first.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

pub struct EventLog {
    ring: VecDeque<EventRecord>,
    next_id: u64,
    writer: mpsc::Sender<EventRecord>,
    dropped: u64,
}

impl EventLog {
    /// Continue from `history` (oldest first), writing new entries to `writer`.
    pub fn new(history: Vec<EventRecord>, writer: mpsc::Sender<EventRecord>) -> EventLog {
        let mut ring: VecDeque<EventRecord> = history.into();
        while ring.len() > KEEP {
            ring.pop_front();
        }
        let next_id = ring.back().map_or(1, |r| r.id + 1);
        EventLog {
            ring,
            next_id,
            writer,
            dropped: 0,
        }
    }

    /// Record an event (its `id` and time are assigned here) and return it.
    pub fn push(&mut self, mut rec: EventRecord, at: SystemTime) -> &EventRecord {
        rec.id = self.next_id;
        self.next_id += 1;
        let ms = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        rec.unix_ms = ms;
        rec.time = rfc3339(ms);
        match self.writer.try_send(rec.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.dropped == 0 {
                    tracing::warn!(
                        "the event log writer is stuck (slow or blocked disk): events are kept \
                         in memory only until it catches up"
                    );
                }
                self.dropped += 1;
            }
            // The writer gave up (it logged why): memory only.
            Err(mpsc::error::TrySendError::Closed(_)) => self.dropped += 1,
        }
        self.ring.push_back(rec);
        while self.ring.len() > KEEP {
            self.ring.pop_front();
        }
        self.ring.back().expect("just pushed")
    }

    /// Entries that never reached the writer.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Entries with an id above `since`, oldest first, at most `limit`.
    pub fn since(&self, since: u64, limit: usize) -> Vec<EventRecord> {
        let newer: Vec<&EventRecord> = self.ring.iter().filter(|r| r.id > since).collect();
        let skip = newer.len().saturating_sub(limit);
        newer.into_iter().skip(skip).cloned().collect()
    }
}

/// A blank record of `kind` with `reason`, for the caller to fill in.
pub fn record(kind: EventKind, reason: impl Into<String>) -> EventRecord {
    EventRecord {
        id: 0,
        time: String::new(),
        unix_ms: 0,
        kind,
        group: None,
        link: None,
        from: None,
        to: None,
        reason: reason.into(),
        figures: None,
    }
}

/// The writer adapter: a thread that loads `<state_dir>/events.jsonl` (the history arrives on
/// the returned oneshot) and then appends every entry it is sent. `done` fires when the sender
/// side is gone and everything queued was written (or failed).
pub struct Writer {
    pub entries: mpsc::Sender<EventRecord>,
    pub history: oneshot::Receiver<Vec<EventRecord>>,
    pub done: oneshot::Receiver<()>,
}

pub fn spawn_writer(state_dir: &Path, faults: Faults) -> Writer {
    let (entries, rx) = mpsc::channel(WRITER_QUEUE);
    let (history_tx, history) = oneshot::channel();
    let (done_tx, done) = oneshot::channel();
    let path = state_dir.join("events.jsonl");
    let spawned = std::thread::Builder::new()
        .name("event-log".into())
        .spawn(move || {
            let mut file = LogFile::open(path, faults);
            let _ = history_tx.send(file.ring.iter().cloned().collect());
            file.run(rx);
            let _ = done_tx.send(());
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the event log writer; events are kept in memory only");
    }
    Writer {
        entries,
        history,
        done,
    }
}

/// The file side: what is on disk, for the rewrite.
struct LogFile {
    path: PathBuf,
    ring: VecDeque<EventRecord>,
    lines_in_file: usize,
    /// The last write failed: the file misses entries of the ring, and the next write that
    /// succeeds rewrites it whole.
    write_failed: bool,
    faults: Faults,
}

impl LogFile {
    /// Load the last entries; an unreadable file or bad lines are skipped (the log is a record,
    /// not state agentd depends on).
    fn open(path: PathBuf, faults: Faults) -> LogFile {
        let mut ring = VecDeque::new();
        let mut lines = 0;
        if let Ok(text) = fs::read_to_string(&path) {
            for line in text.lines() {
                lines += 1;
                if let Ok(rec) = serde_json::from_str::<EventRecord>(line) {
                    ring.push_back(rec);
                    if ring.len() > KEEP {
                        ring.pop_front();
                    }
                }
            }
        }
        LogFile {
            path,
            ring,
            lines_in_file: lines,
            write_failed: false,
            faults,
        }
    }

    fn run(&mut self, mut rx: mpsc::Receiver<EventRecord>) {
        loop {
            let rec = if self.write_failed {
                // Retry on a timer as well as on the next entry: the entries of a quiet
                // gateway reach the disk soon after space is back, not at its next event.
                match rx.try_recv() {
                    Ok(rec) => Some(rec),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        std::thread::sleep(RETRY_EVERY);
                        match rx.try_recv() {
                            Ok(rec) => Some(rec),
                            Err(mpsc::error::TryRecvError::Empty) => None,
                            Err(mpsc::error::TryRecvError::Disconnected) => return self.persist(),
                        }
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => return self.persist(),
                }
            } else {
                match rx.blocking_recv() {
                    Some(rec) => Some(rec),
                    None => return,
                }
            };
            if let Some(rec) = rec {
                self.ring.push_back(rec);
                while self.ring.len() > KEEP {
                    self.ring.pop_front();
                }
            }
            self.persist();
        }
    }

    fn persist(&mut self) {
        let result = (|| -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir)?;
            }
            if self.lines_in_file >= 2 * KEEP || self.write_failed {
                let mut text = String::new();
                for r in &self.ring {
                    text += &serde_json::to_string(r).unwrap_or_default();
                    text.push('\n');
                }
                let tmp = self.path.with_extension("jsonl.tmp");
                if let Err(e) = fs::write(&tmp, text) {
                    // A half-written copy on a full disk would only take the space others need.
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
                fs::rename(&tmp, &self.path)?;
                self.lines_in_file = self.ring.len();
                return Ok(());
            }
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            let last = self.ring.back().map(serde_json::to_string).transpose()?;
            writeln!(f, "{}", last.unwrap_or_default())?;
            self.lines_in_file += 1;
            Ok(())
        })();
        let subject = self.path.display().to_string();
        match result {
            Ok(()) => {
                self.write_failed = false;
                self.faults.clear(FaultKind::StateWrite, &subject);
            }
            Err(e) => {
                self.write_failed = true;
                // Said once per episode: the events stay in memory (and in this ring).
                self.faults.raise(
                    FaultKind::StateWrite,
                    &subject,
                    &format_args!("cannot write the event log, keeping events in memory: {e}"),
                );
            }
        }
    }
}

/// A wall-clock time as `2026-11-26T15:14:18.123Z`.
pub fn rfc3339_at(at: SystemTime) -> String {
    rfc3339(
        at.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64,
    )
}

/// Milliseconds since the epoch as `2026-11-26T15:14:18.123Z`.
fn rfc3339(ms: u64) -> String {
    isthmus_api::utc::rfc3339(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_705_458_123), "2026-11-26T15:04:18.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    /// Start a writer, wait for its history, push `n` entries, close it and wait until written.
    fn session(dir: &Path, n: usize, t: SystemTime) -> Vec<EventRecord> {
        let w = spawn_writer(dir, Faults::detached());
        let history = w.history.blocking_recv().unwrap();
        let mut log = EventLog::new(history, w.entries);
        for i in 0..n {
            // The writer keeps up as long as the test waits for it now and then.
            while log.writer.capacity() == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            log.push(record(EventKind::HealthChanged, format!("n{i}")), t);
        }
        assert_eq!(log.dropped(), 0);
        let all = log.since(0, usize::MAX);
        drop(log);
        w.done.blocking_recv().unwrap();
        all
    }

    #[test]
    fn events_survive_a_restart_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let first = session(dir.path(), 2 * KEEP + 10, t);
        assert_eq!(first.len(), KEEP);
        let last = first.last().unwrap().clone();
        assert_eq!(last.reason, format!("n{}", 2 * KEEP + 9));

        let lines = fs::read_to_string(dir.path().join("events.jsonl"))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 2 * KEEP, "{lines} lines on disk");
        let again = session(dir.path(), 1, t);
        assert_eq!(again.len(), KEEP);
        assert_eq!(again[KEEP - 2], last);
        assert_eq!(
            again[KEEP - 1].id,
            last.id + 1,
            "ids keep increasing across restarts"
        );
    }

    #[test]
    fn a_writer_that_never_returns_costs_the_loop_nothing() {
        // Nobody drains the writer's queue (a disk that blocks forever): pushes never wait,
        // the overflow is counted, and memory keeps everything for `netctl events`.
        let (tx, _stuck) = mpsc::channel(WRITER_QUEUE);
        let mut log = EventLog::new(Vec::new(), tx);
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for i in 0..(WRITER_QUEUE + 10) {
            log.push(record(EventKind::Drain, format!("n{i}")), t);
        }
        assert_eq!(log.dropped(), 10);
        assert_eq!(log.since(0, usize::MAX).len(), WRITER_QUEUE + 10);
    }

    #[test]
    fn entries_of_a_failing_episode_reach_the_file_once_it_is_writable_and_the_fault_is_said_once()
    {
        let dir = tempfile::tempdir().unwrap();
        // The state directory is a file for now: every write fails.
        let state = dir.path().join("state");
        fs::write(&state, "").unwrap();
        let faults = Faults::detached();
        let w = spawn_writer(&state, faults.clone());
        let history = w.history.blocking_recv().unwrap();
        let mut log = EventLog::new(history, w.entries);
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for i in 0..5 {
            log.push(record(EventKind::HealthChanged, format!("n{i}")), t);
        }
        let path = state.join("events.jsonl");
        let subject = path.display().to_string();
        let deadline = crate::clock::now() + Duration::from_secs(5);
        while !faults.is_active(FaultKind::StateWrite, &subject) {
            assert!(crate::clock::now() < deadline, "no fault raised");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Retries on the timer stay silent.
        std::thread::sleep(RETRY_EVERY * 2);
        assert_eq!(faults.count(FaultKind::StateWrite), 1);

        fs::remove_file(&state).unwrap();
        fs::create_dir(&state).unwrap();
        // No new entry is needed: the timer retries.
        let deadline = crate::clock::now() + RETRY_EVERY * 5;
        while faults.is_active(FaultKind::StateWrite, &subject) {
            assert!(crate::clock::now() < deadline, "never retried");
            std::thread::sleep(Duration::from_millis(10));
        }
        log.push(record(EventKind::HealthChanged, "n5"), t);
        drop(log);
        w.done.blocking_recv().unwrap();
        let reasons: Vec<String> = fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<EventRecord>(l).unwrap().reason)
            .collect();
        assert_eq!(reasons, ["n0", "n1", "n2", "n3", "n4", "n5"]);
        assert_eq!(faults.count(FaultKind::StateWrite), 1);
    }
}
