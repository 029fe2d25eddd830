//! The event log: every failover, health change and operator action with its reason, time and
//! the figures behind it.
//!
//! Two halves. [`EventLog`] lives in the event loop: it numbers the entries, keeps the last
//! [`KEEP`] in memory for `netctl events`, and hands each one to the writer without ever waiting.
//! The writer ([`spawn_writer`]) is the adapter that owns `<state_dir>/events.jsonl`: a thread of
//! its own that loads the history at start-up and appends every entry. Past a size cap
//! (`[agent] event_log_max_bytes`) the file is renamed `events.jsonl.1`, replacing the older one,
//! and a new one is started: on disk the log stays under twice the cap and keeps far more than
//! the [`KEEP`] entries in memory; the history is loaded from the ends of both. A slow disk, a full filesystem or a file that
//! blocks forever (a FIFO nobody reads) stalls only that thread: the loop's queue to it is bounded,
//! and what does not fit is counted in [`EventLog::dropped`] and kept in memory.
//!
//! A write that fails (a full filesystem, a read-only one) raises a `state_write` fault (logged
//! and counted once, [`crate::faults`]) and is retried every [`RETRY_EVERY`] while the entries
//! wait in the writer's own queue (the last [`KEEP`]). The first write that succeeds appends
//! them, so the entries of the episode reach the disk, in order, and clears the fault.

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
/// How often a failed write is tried again while no new entry comes.
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
/// the returned oneshot) and then appends every entry it is sent, rotating the file past
/// `max_bytes`. `done` fires when the sender side is gone and everything queued was written (or
/// failed).
pub struct Writer {
    pub entries: mpsc::Sender<EventRecord>,
    pub history: oneshot::Receiver<Vec<EventRecord>>,
    pub done: oneshot::Receiver<()>,
}

pub fn spawn_writer(state_dir: &Path, max_bytes: u64, faults: Faults) -> Writer {
    let (entries, rx) = mpsc::channel(WRITER_QUEUE);
    let (history_tx, history) = oneshot::channel();
    let (done_tx, done) = oneshot::channel();
    let path = state_dir.join(FILE);
    let spawned = std::thread::Builder::new()
        .name("event-log".into())
        .spawn(move || {
            let (mut file, history) = LogFile::open(path, max_bytes, faults);
            let _ = history_tx.send(history);
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

/// The event log's file in the state directory; the rotated one is `events.jsonl.1`.
const FILE: &str = "events.jsonl";
/// How much of the end of a file the history is loaded from: [`KEEP`] entries of a few hundred
/// bytes fit, and a file of any size loads well within [`HISTORY_WAIT`].
const HISTORY_TAIL: u64 = 1 << 20;

/// The file side: where it is, how big it has grown, when to rotate.
struct LogFile {
    path: PathBuf,
    rotated: PathBuf,
    bytes: u64,
    max_bytes: u64,
    /// The file does not end with a newline (agentd died mid-line): the next entry starts a
    /// line of its own instead of joining the torn one.
    torn: bool,
    /// Entries not written yet: the one being written, or those of a failing episode (the
    /// last [`KEEP`]), appended in order by the first write that succeeds.
    pending: VecDeque<EventRecord>,
    write_failed: bool,
    faults: Faults,
}

impl LogFile {
    /// Open the log and load its last [`KEEP`] entries (oldest first) from the current file and,
    /// if it holds fewer, the rotated one. An unreadable file or bad lines are skipped (the log is a record,
    /// not state agentd depends on).
    fn open(path: PathBuf, max_bytes: u64, faults: Faults) -> (LogFile, Vec<EventRecord>) {
        let rotated = rotated_path(&path);
        let mut history = load_tail(&path);
        if history.len() < KEEP {
            // Just after a rotation: the rest from the end of the older file.
            let mut older = load_tail(&rotated);
            older.append(&mut history);
            history = older;
        }
        let skip = history.len().saturating_sub(KEEP);
        history.drain(..skip);
        let bytes = fs::metadata(&path).map_or(0, |m| m.len());
        let torn = bytes > 0 && !ends_with_newline(&path);
        let file = LogFile {
            path,
            rotated,
            bytes,
            max_bytes,
            torn,
            pending: VecDeque::new(),
            write_failed: false,
            faults,
        };
        (file, history)
    }

    fn run(&mut self, mut rx: mpsc::Receiver<EventRecord>) {
        loop {
            let next = if self.write_failed {
                // Retry on a timer as well as on the next entry: the entries of a quiet
                // gateway reach the disk soon after space is back, not at its next event.
                match rx.try_recv() {
                    Ok(rec) => Some(rec),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        std::thread::sleep(RETRY_EVERY);
                        match rx.try_recv() {
                            Ok(rec) => Some(rec),
                            Err(mpsc::error::TryRecvError::Empty) => None,
                            Err(mpsc::error::TryRecvError::Disconnected) => return self.flush(),
                        }
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => return self.flush(),
                }
            } else {
                match rx.blocking_recv() {
                    Some(rec) => Some(rec),
                    None => return,
                }
            };
            if let Some(rec) = next {
                self.pending.push_back(rec);
                while self.pending.len() > KEEP {
                    self.pending.pop_front();
                }
            }
            self.flush();
        }
    }

    /// Writes the pending entries, oldest first, until one fails.
    fn flush(&mut self) {
        let subject = self.path.display().to_string();
        while let Some(rec) = self.pending.front().cloned() {
            if let Err(e) = self.append(&rec) {
                self.write_failed = true;
                // Said once per episode: the entries stay in memory and in `pending`.
                self.faults.raise(
                    FaultKind::StateWrite,
                    &subject,
                    &format_args!("cannot write the event log, keeping events in memory: {e}"),
                );
                return;
            }
            self.pending.pop_front();
        }
        if self.write_failed {
            self.write_failed = false;
            self.faults.clear(FaultKind::StateWrite, &subject);
        }
    }

    fn append(&mut self, rec: &EventRecord) -> std::io::Result<()> {
        (|| -> std::io::Result<()> {
            let mut line = if self.torn {
                "\n".to_owned()
            } else {
                String::new()
            };
            line += &serde_json::to_string(rec)?;
            line.push('\n');
            if self.bytes > 0 && self.bytes + line.len() as u64 > self.max_bytes {
                // One rename: a reader sees the whole old file under one name or the other.
                fs::rename(&self.path, &self.rotated)?;
                self.bytes = 0;
                if self.torn {
                    line.remove(0);
                }
                tracing::debug!(path = %self.rotated.display(), "event log rotated");
            }
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir)?;
            }
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            f.write_all(line.as_bytes())?;
            self.bytes += line.len() as u64;
            self.torn = false;
            Ok(())
        })()
    }
}

fn ends_with_newline(path: &Path) -> bool {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut last = [0u8; 1];
    fs::File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::End(-1))?;
            f.read_exact(&mut last)
        })
        .is_ok_and(|()| last[0] == b'\n')
}

/// `events.jsonl` → `events.jsonl.1`.
fn rotated_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// The entries in the last [`HISTORY_TAIL`] bytes of `path` (none if it cannot be read); a line
/// cut by the start of the tail is skipped.
fn load_tail(path: &Path) -> Vec<EventRecord> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let Ok(mut f) = fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let start = len.saturating_sub(HISTORY_TAIL);
    let mut bytes = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err()
        || f.take(HISTORY_TAIL).read_to_end(&mut bytes).is_err()
    {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.lines();
    if start > 0 {
        lines.next();
    }
    lines
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
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

    /// Start a writer (rotating past `max_bytes`), wait for its history, push `n` entries,
    /// close it and wait until written.
    fn session(dir: &Path, max_bytes: u64, n: usize, t: SystemTime) -> Vec<EventRecord> {
        let w = spawn_writer(dir, max_bytes, Faults::detached());
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

    fn on_disk(path: &Path) -> Vec<EventRecord> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn events_survive_a_restart_and_ids_keep_increasing() {
        let dir = tempfile::tempdir().unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let first = session(dir.path(), 8 << 20, 2 * KEEP + 10, t);
        assert_eq!(first.len(), KEEP);
        let last = first.last().unwrap().clone();
        assert_eq!(last.reason, format!("n{}", 2 * KEEP + 9));
        assert_eq!(on_disk(&dir.path().join(FILE)).len(), 2 * KEEP + 10);
        assert!(!dir.path().join("events.jsonl.1").exists());

        let again = session(dir.path(), 8 << 20, 1, t);
        assert_eq!(again.len(), KEEP);
        assert_eq!(again[KEEP - 2], last);
        assert_eq!(
            again[KEEP - 1].id,
            last.id + 1,
            "ids keep increasing across restarts"
        );
    }

    #[test]
    fn past_its_cap_the_file_is_rotated_and_the_history_spans_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let (current, rotated) = (dir.path().join(FILE), dir.path().join("events.jsonl.1"));
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // An entry is about 150 bytes: 64 KiB holds a few hundred, so 3000 rotate many times.
        let cap = 64 << 10;
        let written = session(dir.path(), cap, 3 * KEEP, t);
        for path in [&current, &rotated] {
            let len = fs::metadata(path).unwrap().len();
            assert!(len <= cap, "{} is {len} bytes", path.display());
        }
        // Nothing is lost at a rotation: the two files hold the newest entries, in order.
        let mut kept = on_disk(&rotated);
        kept.extend(on_disk(&current));
        let ids: Vec<u64> = kept.iter().map(|r| r.id).collect();
        let newest = 3 * KEEP as u64;
        let expected: Vec<u64> = (newest + 1 - ids.len() as u64..=newest).collect();
        assert_eq!(ids, expected);
        assert!(
            kept.len() < KEEP,
            "the cap was meant to rotate: {} kept",
            kept.len()
        );

        // The history at the next start takes what both files hold: the older file first.
        let again = session(dir.path(), cap, 0, t);
        assert_eq!(again, kept);
        assert_eq!(again.last(), written.last());

        // With a bigger cap the history is the newest KEEP entries, from the current file and
        // the older one (read only as far as needed).
        let dir = tempfile::tempdir().unwrap();
        let cap = 256 << 10;
        let written = session(dir.path(), cap, 3 * KEEP, t);
        assert!(dir.path().join("events.jsonl.1").exists());
        assert!(on_disk(&dir.path().join(FILE)).len() < KEEP);
        let again = session(dir.path(), cap, 0, t);
        assert_eq!(again, written);
    }

    #[test]
    fn a_torn_or_foreign_line_is_skipped_at_load_and_the_log_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let written = session(dir.path(), 8 << 20, 3, t);
        let path = dir.path().join(FILE);
        let mut text = fs::read_to_string(&path).unwrap();
        text.insert_str(0, "not json\n");
        text.push_str("{\"id\": 9, \"torn");
        fs::write(&path, text).unwrap();
        let again = session(dir.path(), 8 << 20, 1, t);
        assert_eq!(again[..3], written[..]);
        // The entry after the torn line is a line of its own: the next start has it.
        let third = session(dir.path(), 8 << 20, 0, t);
        assert_eq!(third, again);
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
        let w = spawn_writer(&state, 8 << 20, faults.clone());
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
