//! The event log: every failover, health change and operator action with its reason, time and
//! the figures behind it. Kept in memory (bounded) and appended to `<state_dir>/events.jsonl`,
//! so that `netctl events` still shows what happened before a restart. The file is rewritten
//! with the last entries when it grows past twice the bound.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use isthmus_api::EventRecord;

/// Entries kept (in memory and, at least, on disk).
pub const KEEP: usize = 1000;

pub struct EventLog {
    ring: VecDeque<EventRecord>,
    next_id: u64,
    path: PathBuf,
    lines_in_file: usize,
    write_failed: bool,
}

impl EventLog {
    /// Load the last entries from `<state_dir>/events.jsonl`; an unreadable file or bad lines
    /// are skipped (the log is a record, not state agentd depends on).
    pub fn open(state_dir: &Path) -> EventLog {
        let path = state_dir.join("events.jsonl");
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
        let next_id = ring.back().map_or(1, |r| r.id + 1);
        EventLog {
            ring,
            next_id,
            path,
            lines_in_file: lines,
            write_failed: false,
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
        self.ring.push_back(rec);
        while self.ring.len() > KEEP {
            self.ring.pop_front();
        }
        self.persist();
        self.ring.back().expect("just pushed")
    }

    fn persist(&mut self) {
        let result = (|| -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir)?;
            }
            if self.lines_in_file >= 2 * KEEP {
                let mut text = String::new();
                for r in &self.ring {
                    text += &serde_json::to_string(r).unwrap_or_default();
                    text.push('\n');
                }
                let tmp = self.path.with_extension("jsonl.tmp");
                fs::write(&tmp, text)?;
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
        match result {
            Ok(()) => self.write_failed = false,
            Err(e) if !self.write_failed => {
                self.write_failed = true;
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write the event log; keeping events in memory");
            }
            Err(_) => {}
        }
    }

    /// Entries with an id above `since`, oldest first, at most `limit`.
    pub fn since(&self, since: u64, limit: usize) -> Vec<EventRecord> {
        let newer: Vec<&EventRecord> = self.ring.iter().filter(|r| r.id > since).collect();
        let skip = newer.len().saturating_sub(limit);
        newer.into_iter().skip(skip).cloned().collect()
    }
}

/// A blank record of `kind` with `reason`, for the caller to fill in.
pub fn record(kind: &str, reason: impl Into<String>) -> EventRecord {
    EventRecord {
        id: 0,
        time: String::new(),
        unix_ms: 0,
        kind: kind.to_owned(),
        group: None,
        link: None,
        from: None,
        to: None,
        reason: reason.into(),
        figures: None,
    }
}

/// Milliseconds since the epoch as `2026-11-26T15:14:18.123Z`.
fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_705_458_123), "2026-11-26T15:04:18.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn events_survive_a_restart_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut log = EventLog::open(dir.path());
        for i in 0..(2 * KEEP + 10) {
            log.push(record("health_changed", format!("n{i}")), t);
        }
        assert_eq!(log.since(0, usize::MAX).len(), KEEP);
        let last = log.since(0, 1)[0].clone();
        assert_eq!(last.reason, format!("n{}", 2 * KEEP + 9));

        let again = EventLog::open(dir.path());
        let all = again.since(0, usize::MAX);
        assert_eq!(all.len(), KEEP);
        assert_eq!(all.last(), Some(&last));
        let lines = fs::read_to_string(dir.path().join("events.jsonl"))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 2 * KEEP, "{lines} lines on disk");
        let mut again = again;
        let next = again.push(record("pin", "x"), t).id;
        assert_eq!(next, last.id + 1, "ids keep increasing across restarts");
        assert_eq!(again.since(last.id, 10).len(), 1);
    }
}
