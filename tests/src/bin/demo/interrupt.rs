//! Ctrl-C (or SIGTERM, SIGHUP) in the middle of the demo. The guards that remove what the demo
//! made live on the main thread's stack, and a signal cannot unwind it; so the demo registers
//! what it makes here as well, and a thread that waits for the signal undoes it: processes
//! stopped by PID (SIGTERM, then SIGKILL), namespaces deleted, directories removed, exit 130.
//! On a normal exit or a panic the guards do it and this thread never wakes.
//!
//! The signals are caught by a handler that writes to a pipe, not blocked and waited for with
//! `sigwait`: a blocked signal stays blocked in every process the demo starts (Rust's
//! `Command` keeps the mask across exec), and agentd would never see its SIGTERM. A caught
//! signal is reset to its default action at exec.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::io::Read as _;
use std::os::fd::IntoRawFd as _;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;

#[derive(Default)]
struct Made {
    pids: Vec<u32>,
    namespaces: Vec<String>,
    dirs: Vec<PathBuf>,
}

static MADE: Mutex<Made> = Mutex::new(Made {
    pids: Vec::new(),
    namespaces: Vec::new(),
    dirs: Vec::new(),
});

const SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The pipe's write end, for the handler.
static PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn caught(signal: libc::c_int) {
    let byte = signal as u8;
    // SAFETY: write(2) is async-signal-safe; the pipe stays open for the life of the process.
    unsafe {
        libc::write(PIPE.load(Ordering::Relaxed), (&byte as *const u8).cast(), 1);
    }
}

/// Call first in `main`: from now on the signals stop the demo through [`undo`].
pub fn undo_on_signal() {
    // Close-on-exec: the processes the demo starts get neither end.
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("a pipe for signals");
    PIPE.store(write.into_raw_fd(), Ordering::Relaxed);
    let action = SigAction::new(
        SigHandler::Handler(caught),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in SIGNALS {
        // SAFETY: the handler only calls write(2).
        unsafe { sigaction(s, &action) }.expect("installing a signal handler");
    }
    let mut read = std::fs::File::from(read);
    std::thread::spawn(move || {
        let mut byte = [0u8];
        if read.read_exact(&mut byte).is_err() {
            return;
        }
        let name = Signal::try_from(i32::from(byte[0])).map_or("signal", Signal::as_str);
        eprintln!("\n{name}: stopping what the demo started and removing its namespaces");
        undo();
        std::process::exit(130);
    });
}

pub fn process(pid: u32) {
    lock().pids.push(pid);
}

pub fn namespace(name: &str) {
    lock().namespaces.push(name.to_owned());
}

pub fn dir(path: impl Into<PathBuf>) {
    lock().dirs.push(path.into());
}

fn lock() -> std::sync::MutexGuard<'static, Made> {
    MADE.lock().unwrap_or_else(|e| e.into_inner())
}

fn undo() {
    let made = std::mem::take(&mut *lock());
    let pids: Vec<Pid> = made.pids.iter().map(|&p| Pid::from_raw(p as i32)).collect();
    for &pid in &pids {
        let _ = kill(pid, Signal::SIGTERM);
    }
    // Children of ours that exited are zombies until the guards would reap them: gone enough.
    let gone = |pid: &Pid| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids.iter().all(gone) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in pids.iter().filter(|p| !gone(p)) {
        let _ = kill(*pid, Signal::SIGKILL);
    }
    for name in &made.namespaces {
        let _ = Command::new("ip").args(["netns", "del", name]).status();
        let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(name));
    }
    for dir in &made.dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}
