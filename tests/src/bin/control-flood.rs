//! A hostile control client for the control socket tests: `control-flood SOCKET COUNT MODE`
//! keeps COUNT connections to agentd's control socket open, as whoever runs it.
//!
//! - `idle`: connect and send nothing.
//! - `slow`: send a request head one byte every 100 ms, never finishing it (slowloris).
//!
//! When agentd closes a connection (a refusal, a timeout, an eviction) it is opened again
//! 200 ms later, so that the pressure lasts as long as the flood runs (the pause spares the
//! shared test machine a busy loop). `connected COUNT` is printed once every connection has
//! been opened once; when stdin closes, one line of counts is printed and the program exits:
//! `connects=N closed=N refused_503=N`, where `closed` counts connections agentd ended and
//! `refused_503` those among them that were answered with a 503 first.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const TRICKLE: Duration = Duration::from_millis(100);
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// A request head that is never finished: its last header line goes on forever.
const SLOW_HEAD: &[u8] = b"GET /v1/status HTTP/1.1\r\nhost: agentd\r\nx-slow: ";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Idle,
    Slow,
}

#[derive(Default)]
struct Counts {
    connects: AtomicU64,
    closed: AtomicU64,
    refused_503: AtomicU64,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (socket, count, mode) = match args.as_slice() {
        [socket, count, mode] => {
            let Ok(count) = count.parse::<usize>() else {
                eprintln!("control-flood: COUNT must be a number, not {count:?}");
                return ExitCode::from(2);
            };
            let mode = match mode.as_str() {
                "idle" => Mode::Idle,
                "slow" => Mode::Slow,
                other => {
                    eprintln!("control-flood: MODE is idle or slow, not {other:?}");
                    return ExitCode::from(2);
                }
            };
            (PathBuf::from(socket), count, mode)
        }
        _ => {
            eprintln!("usage: control-flood SOCKET COUNT idle|slow");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = raise_nofile(count as u64 + 64) {
        eprintln!("control-flood: cannot raise RLIMIT_NOFILE for {count} connections: {e}");
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("control-flood: {e}");
            return ExitCode::FAILURE;
        }
    };
    let counts = Arc::new(Counts::default());
    rt.block_on(async {
        let socket = Arc::new(socket);
        // Open every connection once, in order, before saying so.
        for _ in 0..count {
            let stream = connect(&socket).await;
            counts.connects.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(hold(stream, socket.clone(), mode, counts.clone()));
        }
        println!("connected {count}");
        // Wait for stdin to close, off the runtime.
        let _ = tokio::task::spawn_blocking(|| {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                if line.is_err() {
                    break;
                }
            }
        })
        .await;
    });
    println!(
        "connects={} closed={} refused_503={}",
        counts.connects.load(Ordering::Relaxed),
        counts.closed.load(Ordering::Relaxed),
        counts.refused_503.load(Ordering::Relaxed)
    );
    ExitCode::SUCCESS
}

/// Connect, retrying while the listener's backlog is full or the socket is not there yet.
async fn connect(socket: &Path) -> UnixStream {
    loop {
        match UnixStream::connect(socket).await {
            Ok(stream) => return stream,
            Err(_) => tokio::time::sleep(TRICKLE).await,
        }
    }
}

/// Keep one connection open (in `mode`) forever: reopen it whenever agentd ends it.
async fn hold(mut stream: UnixStream, socket: Arc<PathBuf>, mode: Mode, counts: Arc<Counts>) {
    loop {
        let answer = misbehave(&mut stream, mode).await;
        counts.closed.fetch_add(1, Ordering::Relaxed);
        if answer.starts_with(b"HTTP/1.1 503") {
            counts.refused_503.fetch_add(1, Ordering::Relaxed);
        }
        drop(stream);
        tokio::time::sleep(RECONNECT_PAUSE).await;
        stream = connect(&socket).await;
        counts.connects.fetch_add(1, Ordering::Relaxed);
    }
}

/// Behave badly on `stream` until agentd ends the connection; what it sent back.
async fn misbehave(stream: &mut UnixStream, mode: Mode) -> Vec<u8> {
    let (mut rx, mut tx) = stream.split();
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    let write = async {
        if mode == Mode::Idle {
            return std::future::pending::<()>().await;
        }
        let bytes = SLOW_HEAD.iter().copied().chain(std::iter::repeat(b'a'));
        for byte in bytes {
            if tx.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(TRICKLE).await;
        }
        // The write side failed: agentd closed; wait for the read side to see it too.
        std::future::pending::<()>().await
    };
    tokio::select! {
        () = read => {}
        () = write => {}
    }
    answer
}

fn raise_nofile(want: u64) -> std::io::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for the duration of both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur >= want {
            return Ok(());
        }
        if lim.rlim_max < want {
            return Err(std::io::Error::other(format!(
                "the hard limit is {}",
                lim.rlim_max
            )));
        }
        lim.rlim_cur = want;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
