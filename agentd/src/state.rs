//! What a warm restart needs: each route group's active link, kept in `<state_dir>/active.json`
//! so that agentd started again after a crash (or an upgrade) takes the same links as soon as
//! they answer, instead of starting cold (docs/failover.md, "Restarts").
//!
//! Two halves, like the event log. [`Saver`] lives in the event loop and never waits: it puts
//! the newest state in a slot (a lock held only to swap a value) and wakes the writer. The
//! writer ([`spawn`]) is a thread that loads the file at start-up (the result arrives on a
//! oneshot, for the loop to wait on with a bound), then writes every new state atomically: a
//! temporary file, fsync, rename, so that a crash at any moment leaves the old file or the new
//! one, never a mix. States that arrive while a write is under way replace each other: only
//! the newest is written. A slow or stuck disk stalls only that thread.
//!
//! What is loaded is a hint, not a verdict: the engine takes a restored link only once its
//! probes answer ([`isthmus_core::Engine::restore`]). A missing file is a cold start; a file
//! that cannot be read or parsed, one of another format version, or one older than
//! [`RESTORE_WITHIN`] is ignored ([`Ignored`]) and the start is cold.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::faults::{FaultKind, Faults};

/// The file in `[agent].state_dir`.
pub const FILE: &str = "active.json";
/// The format's version: a file of another version is ignored (a cold start), never misread.
const VERSION: u32 = 1;
/// A state older than this is not restored. A crash is restarted by systemd within seconds
/// (`RestartSec=2s`) and an upgrade within a minute; after longer, the paths may have changed
/// so much that the saved link is no better a first guess than a cold start's, and a failback
/// the group was waiting for should not be held off by `failback_after` once more.
pub const RESTORE_WITHIN: Duration = Duration::from_secs(600);

/// The file's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    /// When it was written (wall clock), for [`RESTORE_WITHIN`].
    saved_unix_ms: u64,
    /// Route group → its active link. A group without one (failing closed) is left out.
    route_groups: BTreeMap<String, String>,
    /// Probe numbers below this may have been used by the run that wrote the file: the next
    /// run starts at it at the least ([`load_seq_floor`]). Absent in files of older agentd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    probe_seq_floor: Option<u32>,
}

/// Why a state file is not restored.
#[derive(Debug, thiserror::Error)]
pub enum Ignored {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a state file agentd understands: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path} has format version {found}, this agentd reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("{path} was written {age_s} s ago, more than {} s", RESTORE_WITHIN.as_secs())]
    Stale { path: PathBuf, age_s: u64 },
    #[error("{path} was written {ahead_s} s in the future (the clock went back)")]
    Future { path: PathBuf, ahead_s: u64 },
    #[error("{path} did not load within {} ms (a stuck disk)", waited.as_millis())]
    Slow { path: PathBuf, waited: Duration },
}

/// The route groups' active links saved in `dir`, if a usable file is there (`Ok(None)`: no
/// file, a cold start). `now` is the wall clock.
pub fn load(dir: &Path, now: SystemTime) -> Result<Option<BTreeMap<String, String>>, Ignored> {
    let path = dir.join(FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Ignored::Read { path, source }),
    };
    let disk: OnDisk = match serde_json::from_str(&text) {
        Ok(d) => d,
        // A version this agentd does not know may have another shape: say so, not "garbage".
        Err(source) => {
            return Err(match version_of(&text) {
                Some(found) if found != VERSION => Ignored::Version { path, found },
                _ => Ignored::Parse { path, source },
            })
        }
    };
    if disk.version != VERSION {
        return Err(Ignored::Version {
            path,
            found: disk.version,
        });
    }
    let now_ms = unix_ms(now);
    if disk.saved_unix_ms > now_ms + CLOCK_SLACK_MS {
        let ahead_s = (disk.saved_unix_ms - now_ms) / 1000;
        return Err(Ignored::Future { path, ahead_s });
    }
    let age = Duration::from_millis(now_ms.saturating_sub(disk.saved_unix_ms));
    if age > RESTORE_WITHIN {
        let age_s = age.as_secs();
        return Err(Ignored::Stale { path, age_s });
    }
    Ok(Some(disk.route_groups))
}

/// The probe number floor kept in `dir`'s file, whatever its age: the one thing of the file that
/// stays true however long ago, or how far in the future, it was written.
pub fn load_seq_floor(dir: &Path) -> Option<u32> {
    let text = fs::read_to_string(dir.join(FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    u32::try_from(v.get("probe_seq_floor")?.as_u64()?).ok()
}

/// How far in the future a file's time may be before the clock is taken to have gone back:
/// the wall clock the loop stamps with and the system's may differ by an NTP slew.
const CLOCK_SLACK_MS: u64 = 5_000;

fn version_of(text: &str) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    u32::try_from(v.get("version")?.as_u64()?).ok()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}

/// A state for the writer, with the wall-clock time it was true at.
struct Pending {
    route_groups: BTreeMap<String, String>,
    probe_seq_floor: Option<u32>,
    at: SystemTime,
}

#[derive(Default)]
struct Slot {
    next: Option<Pending>,
    /// The [`Saver`] is gone: write what is pending, then stop.
    closed: bool,
}

#[derive(Default)]
struct Shared {
    slot: Mutex<Slot>,
    wake: Condvar,
}

/// The loop's half: hands each new state to the writer without waiting.
pub struct Saver {
    shared: Arc<Shared>,
    /// The last state handed over (or loaded), so that an unchanged one costs nothing.
    last: Option<BTreeMap<String, String>>,
    /// The probe number floor written with every state.
    seq_floor: Option<u32>,
}

impl Saver {
    /// A saver whose states nobody takes: a writer stuck on its disk (tests, and the control
    /// fuzz target, which must write no file).
    pub(crate) fn detached() -> Saver {
        Saver {
            shared: Arc::default(),
            last: None,
            seq_floor: None,
        }
    }

    /// Keep `route_groups` (group → active link) as the state at `at`; nothing is written if
    /// it is what was handed over last.
    pub fn save(&mut self, route_groups: &BTreeMap<String, String>, at: SystemTime) {
        if self.last.as_ref() == Some(route_groups) {
            return;
        }
        self.last = Some(route_groups.clone());
        let mut slot = self.shared.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.next = Some(Pending {
            route_groups: route_groups.clone(),
            probe_seq_floor: self.seq_floor,
            at,
        });
        drop(slot);
        self.shared.wake.notify_one();
    }

    /// Keep `floor` as the probe number floor from now on, written at once with the last state
    /// (or with no active link, before the first).
    pub fn reserve_seqs(&mut self, floor: u32, at: SystemTime) {
        self.seq_floor = Some(floor);
        let last = self.last.take().unwrap_or_default();
        self.save(&last, at);
    }

    /// Write the last state again, stamped `at`: now and then while nothing changes, so that
    /// the file's age says how long ago the state was known true; and after the wall clock
    /// stepped, so that the file's time is on the clock a restart will compare it with (a
    /// file stamped an hour ahead would be taken for one written in the future).
    pub fn refresh(&mut self, at: SystemTime) {
        if let Some(last) = self.last.take() {
            self.save(&last, at);
        }
    }

    /// The state on disk is `route_groups` already (restored at start-up): saving it again is
    /// a no-op.
    pub fn assume(&mut self, route_groups: BTreeMap<String, String>) {
        self.last = Some(route_groups);
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        let mut slot = self.shared.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.closed = true;
        drop(slot);
        self.shared.wake.notify_one();
    }
}

/// The writer adapter's handles: the saver for the loop, what the file held at start-up, and
/// `done` when everything handed over was written (or failed) after the saver was dropped.
pub struct Writer {
    pub saver: Saver,
    pub loaded: oneshot::Receiver<Loaded>,
    pub done: oneshot::Receiver<()>,
}

/// What the file held at start-up.
pub struct Loaded {
    /// The route groups' active links, if the file is usable ([`load`]).
    pub groups: Result<Option<BTreeMap<String, String>>, Ignored>,
    /// The probe number floor ([`load_seq_floor`]), kept even when the groups are not.
    pub seq_floor: Option<u32>,
}

/// Start the writer thread for `<state_dir>/active.json`: it loads the file first (`now` is
/// the wall clock, for the file's age).
pub fn spawn(state_dir: &Path, now: SystemTime, faults: Faults) -> Writer {
    let shared = Arc::new(Shared::default());
    let (loaded_tx, loaded) = oneshot::channel();
    let (done_tx, done) = oneshot::channel();
    let dir = state_dir.to_owned();
    let theirs = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("state-file".into())
        .spawn(move || {
            let _ = loaded_tx.send(Loaded {
                groups: load(&dir, now),
                seq_floor: load_seq_floor(&dir),
            });
            run(&dir, &theirs, &faults);
            let _ = done_tx.send(());
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the state file writer; a restart will start cold");
    }
    Writer {
        saver: Saver {
            shared,
            last: None,
            seq_floor: None,
        },
        loaded,
        done,
    }
}

/// How soon a state that could not be written is tried again (unless a newer one comes).
const RETRY_EVERY: Duration = Duration::from_secs(1);

fn run(dir: &Path, shared: &Shared, faults: &Faults) {
    let subject = dir.join(FILE).display().to_string();
    let mut retry: Option<Pending> = None;
    loop {
        let mut slot = shared.slot.lock().unwrap_or_else(|e| e.into_inner());
        let next = loop {
            if let Some(n) = slot.next.take() {
                break n;
            }
            if slot.closed {
                return;
            }
            match retry.take() {
                None => slot = shared.wake.wait(slot).unwrap_or_else(|e| e.into_inner()),
                Some(r) => {
                    let (s, wait) = shared
                        .wake
                        .wait_timeout(slot, RETRY_EVERY)
                        .unwrap_or_else(|e| e.into_inner());
                    slot = s;
                    if wait.timed_out() && slot.next.is_none() {
                        break r;
                    }
                    retry = Some(r);
                }
            }
        };
        drop(slot);
        match write(dir, &next) {
            Ok(()) => {
                faults.clear(FaultKind::StateWrite, &subject);
            }
            Err(e) => {
                // Said once per episode (the retries every second are silent).
                faults.raise(
                    FaultKind::StateWrite,
                    &subject,
                    &format_args!(
                        "cannot write the state file, retrying every second (a restart \
                         meanwhile starts from the last state written): {e}"
                    ),
                );
                retry = Some(next);
            }
        }
    }
}

fn write(dir: &Path, state: &Pending) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let disk = OnDisk {
        version: VERSION,
        saved_unix_ms: unix_ms(state.at),
        route_groups: state.route_groups.clone(),
        probe_seq_floor: state.probe_seq_floor,
    };
    let mut text = serde_json::to_string_pretty(&disk)?;
    text.push('\n');
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    // What a crash mid-write left (or anything else there) goes: a new file, never one opened
    // through whatever the path is now.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(g, l)| ((*g).to_owned(), (*l).to_owned()))
            .collect()
    }

    /// Hand `states` to a writer in `dir`, one after the other, and wait until written.
    fn session(dir: &Path, states: &[BTreeMap<String, String>], at: SystemTime) {
        let w = spawn(dir, at, Faults::detached());
        let mut saver = w.saver;
        for s in states {
            saver.save(s, at);
        }
        drop(saver);
        w.done.blocking_recv().unwrap();
    }

    #[test]
    fn the_last_state_saved_is_what_the_next_start_loads() {
        let dir = tempfile::tempdir().unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert!(load(dir.path(), t).unwrap().is_none(), "no file: cold");
        let first = groups(&[("remote", "interconnect"), ("dr", "internet")]);
        let second = groups(&[("remote", "internet")]);
        session(dir.path(), &[first, second.clone()], t);
        assert_eq!(
            load(dir.path(), t + Duration::from_secs(2)).unwrap(),
            Some(second)
        );
        assert!(
            !dir.path().join(format!("{FILE}.tmp")).exists(),
            "the temporary file was renamed"
        );
        let text = fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
    }

    #[test]
    fn an_unchanged_state_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let w = spawn(dir.path(), t, Faults::detached());
        let mut saver = w.saver;
        let s = groups(&[("remote", "interconnect")]);
        saver.assume(s.clone());
        saver.save(&s, t);
        drop(saver);
        w.done.blocking_recv().unwrap();
        assert!(!dir.path().join(FILE).exists(), "nothing new to write");
    }

    #[test]
    fn corrupt_old_future_and_foreign_files_are_ignored_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let path = dir.path().join(FILE);
        let ms = unix_ms(t);
        let cases = [
            ("{\"version\": 1, \"route_gr", "not a state file"),
            ("[]", "not a state file"),
            (
                "{\"version\": 1, \"saved_unix_ms\": 1, \"route_groups\": {}, \"pins\": {}}",
                "not a state file",
            ),
            (
                "{\"version\": 2, \"written\": \"tomorrow\"}",
                "format version 2",
            ),
        ];
        for (text, says) in cases {
            fs::write(&path, text).unwrap();
            let e = load(dir.path(), t).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(FILE), "{text}: {e}");
        }
        let at = |saved: u64| {
            format!("{{\"version\": 1, \"saved_unix_ms\": {saved}, \"route_groups\": {{\"remote\": \"internet\"}}}}")
        };
        fs::write(&path, at(ms - 601_000)).unwrap();
        let e = load(dir.path(), t).unwrap_err().to_string();
        assert!(e.contains("601 s ago"), "{e}");
        fs::write(&path, at(ms + 60_000)).unwrap();
        let e = load(dir.path(), t).unwrap_err().to_string();
        assert!(e.contains("in the future"), "{e}");
        fs::write(&path, at(ms - 599_000)).unwrap();
        assert_eq!(
            load(dir.path(), t).unwrap(),
            Some(groups(&[("remote", "internet")]))
        );
    }

    #[test]
    fn saving_never_waits_and_only_the_newest_state_is_kept_for_the_writer() {
        // Nobody takes from the slot (a writer stuck on its disk): every save returns at once
        // and replaces the one before.
        let mut saver = Saver::detached();
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let started = crate::clock::now();
        for i in 0..10_000 {
            saver.save(&groups(&[("remote", &format!("link{i}"))]), t);
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        let slot = saver.shared.slot.lock().unwrap();
        let next = slot.next.as_ref().expect("pending");
        assert_eq!(next.route_groups, groups(&[("remote", "link9999")]));
    }

    #[test]
    fn a_state_that_cannot_be_written_is_written_once_the_directory_is_usable() {
        let dir = tempfile::tempdir().unwrap();
        // The state directory is a file for now: writes fail, on the writer's thread only.
        let state = dir.path().join("state");
        fs::write(&state, "").unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let faults = Faults::detached();
        let w = spawn(&state, t, faults.clone());
        assert!(
            w.loaded.blocking_recv().unwrap().groups.is_err(),
            "unreadable"
        );
        let mut saver = w.saver;
        saver.save(&groups(&[("remote", "internet")]), t);
        std::thread::sleep(Duration::from_millis(200));
        fs::remove_file(&state).unwrap();
        fs::create_dir(&state).unwrap();
        // A leftover temporary file does not stop the write either.
        fs::write(state.join(format!("{FILE}.tmp")), "half").unwrap();
        let deadline = crate::clock::now() + RETRY_EVERY * 5;
        while !state.join(FILE).exists() {
            assert!(crate::clock::now() < deadline, "never retried");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            faults.count(FaultKind::StateWrite),
            1,
            "one fault, not one a retry"
        );
        let subject = state.join(FILE).display().to_string();
        let deadline = crate::clock::now() + RETRY_EVERY;
        while faults.is_active(FaultKind::StateWrite, &subject) {
            assert!(crate::clock::now() < deadline, "the fault was not cleared");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(saver);
        w.done.blocking_recv().unwrap();
        assert_eq!(
            load(&state, t).unwrap(),
            Some(groups(&[("remote", "internet")]))
        );
    }

    #[test]
    fn the_probe_number_floor_is_written_and_read_even_from_a_file_not_restored() {
        let dir = tempfile::tempdir().unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let w = spawn(dir.path(), t, Faults::detached());
        let mut saver = w.saver;
        saver.reserve_seqs(123_456, t);
        saver.save(&groups(&[("remote", "internet")]), t);
        drop(saver);
        w.done.blocking_recv().unwrap();
        assert_eq!(load_seq_floor(dir.path()), Some(123_456));
        // Read on a clock an hour back: the file is from the future and not restored, but the
        // numbers it reserved were used all the same.
        let back = t - Duration::from_secs(3600);
        assert!(load(dir.path(), back).is_err());
        assert_eq!(load_seq_floor(dir.path()), Some(123_456));
        // A file of an agentd that did not keep one is still restored.
        let ms = unix_ms(t);
        fs::write(
            dir.path().join(FILE),
            format!("{{\"version\": 1, \"saved_unix_ms\": {ms}, \"route_groups\": {{}}}}"),
        )
        .unwrap();
        assert_eq!(load(dir.path(), t).unwrap(), Some(BTreeMap::new()));
        assert_eq!(load_seq_floor(dir.path()), None);
    }
}
