//! The WireGuard cross-platform UAPI socket of one link, so that `wg show <iface>` works on
//! agentd's interfaces as it does on wireguard-go's.
//!
//! Model: one Unix stream socket per link, `<uapi_dir>/<iface>.sock`, served by a task on the
//! daemon's runtime. The server holds no state of its own: at each `get` it calls the link's
//! snapshot function (which must only read: keys from the config, counters from atomics) and
//! renders the answer with [`render_get`], a pure function. The socket is read-only: agentd's
//! config file is the source of truth, so `set` is answered `errno=-EOPNOTSUPP` and `wg set`
//! fails at once with "Operation not supported" instead of hanging or silently drifting from
//! the config.
//!
//! Protocol (<https://www.wireguard.com/xplatform/>, checked against wireguard-go and
//! wireguard-tools): a request is `get=1\n\n` (or `set=1\n` + `key=value` lines + `\n`); the
//! answer is `key=value\n` lines, then `errno=N\n\n`. Keys are lowercase hex.
//! `last_handshake_time_sec`/`_nsec` are a wall-clock Unix time (0/0: never), not an age
//! (boringtun's own UAPI reports an age there, and `wg show` then says "56 years ago"). Error
//! numbers are negative, as wireguard-go sends them: `wg set` reads `errno=-95` as
//! EOPNOTSUPP (a positive value prints "Unknown error -95"); `wg`'s `get` parser only accepts a
//! non-negative value, but `get` never fails here.
//!
//! How `wg` finds the socket (wireguard-tools `ipc.c`, `ipc-uapi-unix.h`): the directory is fixed
//! at compile time (`RUNSTATEDIR "/wireguard/"`, `/var/run/wireguard/` in Debian's build); no
//! environment variable changes it, so `[agent].uapi_dir` must stay at its default for `wg` to
//! see agentd's links. No network device is needed: on Linux `wg show NAME` first tries the
//! socket (stat, must be a socket, connect) and only falls back to the kernel's netlink when
//! that fails; `wg show` lists every `*.sock` in the directory. That probe connects and closes
//! without a request (served as a quiet end of stream), and when a connect is refused `wg`
//! unlinks the socket file, so the path must never name a socket that is bound but not yet
//! listening: the socket is made ready under a temporary name and linked into place.
//!
//! The answer contains the private key: the file is 0600 before it gets its public name. A
//! stale file left by a crash is replaced; a live one (another agentd, a wireguard-go) is never
//! stolen: we connect first, as the control socket does. Dropping the [`UapiHandle`] stops the
//! server and its connections and removes the file, if it is still the one we created.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnetwork::IpNetwork;
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::sockfile::{self, Identity, StaleError};

/// Longest request line accepted. `wg set` lines are at most ~80 bytes (a hex key, an IPv6
/// endpoint); 4 KiB is far beyond any legitimate line and still a trivial buffer.
const MAX_LINE: usize = 4096;
/// How long a client may take to send one line. `wg` writes its whole request at once, so a
/// client that is silent this long is not `wg` and must not hold a connection slot.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once. `wg` uses one at a time (plus a probe that closes at once);
/// eight leave room for monitoring scripts polling in parallel, and the rest wait in the
/// listen backlog instead of costing a task each.
const MAX_CONNECTIONS: usize = 8;
/// A `set` body is read to its end (so that `wg` can finish writing and read our refusal),
/// but not forever: past this many bytes the connection is answered and closed.
const MAX_SET_BYTES: usize = 1 << 20;
/// Pause after a failed accept (e.g. EMFILE), so that a persistent error neither spins the
/// runtime nor floods the log.
const ACCEPT_RETRY: Duration = Duration::from_secs(1);
/// Listen backlog: connections beyond [`MAX_CONNECTIONS`] wait here.
const BACKLOG: i32 = 16;
/// Mode of a new socket directory: wireguard-go's, so that `wg` finds it as usual.
const DIR_MODE: u32 = 0o755;
/// Mode of the socket: a `get` answer contains the private key.
const SOCKET_MODE: u32 = 0o600;

/// What `wg show` needs about one link, read at each request.
#[derive(Clone)]
pub struct Snapshot {
    pub private_key: [u8; 32],
    pub listen_port: u16,
    pub fwmark: u32,
    pub peer_public_key: [u8; 32],
    pub preshared_key: Option<[u8; 32]>,
    pub endpoint: Option<SocketAddr>,
    pub last_handshake: Option<SystemTime>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub persistent_keepalive: Option<u16>,
    pub allowed_ips: Vec<IpNetwork>,
}

/// Render a `get` answer, the closing `errno=0` and blank line included.
///
/// Field order and presence follow wireguard-go: `private_key`, `listen_port` and `fwmark` only
/// when set; the preshared key always, all zeros for none (which `wg` shows as none); the
/// endpoint only when known.
pub fn render_get(s: &Snapshot) -> String {
    let mut out = String::with_capacity(512 + 48 * s.allowed_ips.len());
    if s.private_key != [0; 32] {
        hex_line(&mut out, "private_key", &s.private_key);
    }
    if s.listen_port != 0 {
        line(&mut out, "listen_port", s.listen_port);
    }
    if s.fwmark != 0 {
        line(&mut out, "fwmark", s.fwmark);
    }
    hex_line(&mut out, "public_key", &s.peer_public_key);
    hex_line(
        &mut out,
        "preshared_key",
        &s.preshared_key.unwrap_or([0; 32]),
    );
    line(&mut out, "protocol_version", 1);
    if let Some(endpoint) = s.endpoint {
        // SocketAddr prints IPv6 as `[addr]:port`, the form `wg` parses.
        line(&mut out, "endpoint", endpoint);
    }
    let since_epoch = s
        .last_handshake
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    line(&mut out, "last_handshake_time_sec", since_epoch.as_secs());
    line(
        &mut out,
        "last_handshake_time_nsec",
        since_epoch.subsec_nanos(),
    );
    line(&mut out, "tx_bytes", s.tx_bytes);
    line(&mut out, "rx_bytes", s.rx_bytes);
    line(
        &mut out,
        "persistent_keepalive_interval",
        s.persistent_keepalive.unwrap_or(0),
    );
    for net in &s.allowed_ips {
        // Host bits cleared, as the kernel and wireguard-go store (and show) allowed IPs.
        let net = IpNetwork::new(net.network(), net.prefix()).unwrap_or(*net);
        line(&mut out, "allowed_ip", net);
    }
    out.push_str("errno=0\n\n");
    out
}

fn line(out: &mut String, key: &str, value: impl std::fmt::Display) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{key}={value}");
}

fn hex_line(out: &mut String, key: &str, bytes: &[u8; 32]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.push_str(key);
    out.push('=');
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out.push('\n');
}

/// The answer to a failed request: negative, as wireguard-go sends it and `wg set` reads it.
fn errno_answer(errno: i32) -> String {
    format!("errno=-{errno}\n\n")
}

/// A running UAPI server. Dropping it stops the server and its connections and removes the
/// socket file, unless someone else has replaced it since.
pub struct UapiHandle {
    path: PathBuf,
    identity: Identity,
    task: JoinHandle<()>,
}

impl Drop for UapiHandle {
    fn drop(&mut self) {
        self.task.abort();
        sockfile::remove_if_ours(&self.path, self.identity, "UAPI");
    }
}

/// Serve the UAPI socket for `iface` in `dir` until the returned handle is dropped.
///
/// `snapshot` is called once per `get`, on the runtime thread: it must not block. Must be
/// called within a tokio runtime (agentd's current-thread one); each connection is a task.
pub fn serve(
    dir: &Path,
    iface: &str,
    snapshot: Arc<dyn Fn() -> Snapshot + Send + Sync>,
) -> io::Result<UapiHandle> {
    serve_with(dir, iface, snapshot, Limits::DEFAULT)
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    idle: Duration,
    max_connections: usize,
}

impl Limits {
    const DEFAULT: Limits = Limits {
        idle: IDLE_TIMEOUT,
        max_connections: MAX_CONNECTIONS,
    };
}

fn serve_with(
    dir: &Path,
    iface: &str,
    snapshot: Arc<dyn Fn() -> Snapshot + Send + Sync>,
    limits: Limits,
) -> io::Result<UapiHandle> {
    // Checked first: registering the listener without a runtime would panic.
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        io::Error::other("the UAPI socket must be served from within a tokio runtime")
    })?;
    check_iface(iface)?;
    ensure_dir(dir)?;
    let path = dir.join(format!("{iface}.sock"));
    let (std_listener, identity) = bind(dir, iface, &path)?;
    let listener = {
        let _entered = runtime.enter();
        UnixListener::from_std(std_listener)
            .map_err(|e| with_context(e, format!("registering {}", path.display())))?
    };
    let task = runtime.spawn(accept_loop(listener, snapshot, limits, iface.to_owned()));
    tracing::debug!(link = iface, socket = %path.display(), "serving the WireGuard UAPI socket");
    Ok(UapiHandle {
        path,
        identity,
        task,
    })
}

fn with_context(e: io::Error, context: String) -> io::Error {
    io::Error::new(e.kind(), format!("{context}: {e}"))
}

/// `wg` refuses names with a slash; the rest keeps the socket name a plain file name.
fn check_iface(iface: &str) -> io::Result<()> {
    if iface.is_empty() || iface == "." || iface == ".." || iface.contains(['/', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{iface:?} cannot name a UAPI socket"),
        ));
    }
    Ok(())
}

fn ensure_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)
        // The process umask (0077 in agentd) would hide the directory from `wg` run by others.
        .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)))
        .map_err(|e| {
            with_context(
                e,
                format!("creating the UAPI socket directory {}", dir.display()),
            )
        })
}

/// Bind, restrict and listen under a temporary name, then link it into place: the public path
/// never names a socket that others could reach before its mode is set, or that refuses
/// connections (which makes `wg` delete it). A link, unlike a rename, never replaces a file
/// that appeared since the stale check.
fn bind(dir: &Path, iface: &str, path: &Path) -> io::Result<(StdListener, Identity)> {
    remove_if_stale(path)?;
    // Not `*.sock`, so `wg show` does not list it.
    let temp = dir.join(format!(".{iface}.sock.new"));
    // Only ever ours: left behind if we crashed between bind and link.
    match fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(with_context(e, format!("removing {}", temp.display()))),
    }
    let socket = || -> io::Result<Socket> {
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.bind(&SockAddr::unix(&temp)?)?;
        fs::set_permissions(&temp, fs::Permissions::from_mode(SOCKET_MODE))?;
        socket.listen(BACKLOG)?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    };
    let published = socket().and_then(|socket| match fs::hard_link(&temp, path) {
        Ok(()) => Ok(socket),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process created it while we were binding",
        )),
        Err(e) => Err(e),
    });
    let _ = fs::remove_file(&temp);
    let socket = published
        .map_err(|e| with_context(e, format!("binding the UAPI socket {}", path.display())))?;
    // After the link and the unlink of the temporary name, which both change the ctime.
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok((StdListener::from(socket), Identity::of(&meta))),
        Err(e) => {
            let _ = fs::remove_file(path);
            Err(with_context(e, format!("checking {}", path.display())))
        }
    }
}

fn remove_if_stale(path: &Path) -> io::Result<()> {
    sockfile::remove_if_stale(path, "UAPI").map_err(|e| match e {
        StaleError::NotASocket => io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket: refusing to replace it",
                path.display()
            ),
        ),
        StaleError::InUse => io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{} is served by another process (a wireguard-go, or another agentd with the \
                 same interface name): stop it, or rename the link",
                path.display()
            ),
        ),
        StaleError::Io { step, source } => {
            with_context(source, format!("{step} {}", path.display()))
        }
    })
}

/// Connections live in a `JoinSet` owned by this task: aborting the task drops them all.
async fn accept_loop(
    listener: UnixListener,
    snapshot: Arc<dyn Fn() -> Snapshot + Send + Sync>,
    limits: Limits,
    iface: String,
) {
    let mut connections = JoinSet::new();
    loop {
        while let Some(done) = connections.try_join_next() {
            if let Err(e) = done {
                tracing::warn!(link = %iface, error = %e, "UAPI connection task failed");
            }
        }
        if connections.len() >= limits.max_connections {
            // Further clients wait in the listen backlog until a slot is free.
            let _ = connections.join_next().await;
            continue;
        }
        match listener.accept().await {
            Ok((stream, _)) => {
                connections.spawn(serve_connection(
                    stream,
                    Arc::clone(&snapshot),
                    limits,
                    iface.clone(),
                ));
            }
            Err(e) => {
                tracing::warn!(link = %iface, error = %e, "cannot accept a UAPI connection");
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

/// Why a request line could not be read.
#[derive(Debug, PartialEq, Eq)]
enum LineError {
    /// Clean end of stream between lines (`wg`'s probe connection does this).
    Closed,
    /// End of stream in the middle of a line, a read error, or the client went silent.
    Dropped,
    /// The line is longer than [`MAX_LINE`].
    TooLong,
}

async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    idle: Duration,
) -> Result<(), LineError> {
    buf.clear();
    let mut limited = (&mut *reader).take(MAX_LINE as u64);
    match tokio::time::timeout(idle, limited.read_until(b'\n', buf)).await {
        Ok(Ok(0)) => Err(LineError::Closed),
        Ok(Ok(_)) if buf.ends_with(b"\n") => Ok(()),
        Ok(Ok(n)) if n >= MAX_LINE => Err(LineError::TooLong),
        Ok(Ok(_)) | Ok(Err(_)) | Err(_) => Err(LineError::Dropped),
    }
}

/// What to do after answering a request.
enum Next {
    Continue,
    Close,
}

/// One client: requests in a loop, as wireguard-go serves them, until it closes, errs or goes
/// silent. Garbage is answered `errno=-EINVAL` and the connection closed: its framing is lost.
async fn serve_connection(
    stream: UnixStream,
    snapshot: Arc<dyn Fn() -> Snapshot + Send + Sync>,
    limits: Limits,
    iface: String,
) {
    let (reader, writer) = stream.into_split();
    serve_stream(
        BufReader::new(reader),
        writer,
        &*snapshot,
        limits.idle,
        &iface,
    )
    .await;
}

/// The requests of one client from `reader`, each answered on `writer`, until the client
/// closes, errs or is silent for `idle` (the protocol, apart from the socket).
pub(crate) async fn serve_stream<R, W>(
    mut reader: R,
    mut writer: W,
    snapshot: &(dyn Fn() -> Snapshot + Send + Sync),
    idle: Duration,
    iface: &str,
) where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    loop {
        let (answer, next) = match read_line(&mut reader, &mut buf, idle).await {
            Ok(()) => match buf.as_slice() {
                b"get=1\n" => match read_line(&mut reader, &mut buf, idle).await {
                    Ok(()) if buf == b"\n" => {
                        tracing::trace!(link = %iface, "UAPI get");
                        (render_get(&snapshot()), Next::Continue)
                    }
                    Ok(()) | Err(LineError::TooLong) => (errno_answer(libc::EINVAL), Next::Close),
                    Err(_) => return,
                },
                b"set=1\n" => match drain_set(&mut reader, &mut buf, idle).await {
                    Ok(()) => {
                        tracing::info!(link = %iface, "refused a UAPI set (`wg set`): agentd's config file is the source of truth");
                        (errno_answer(libc::EOPNOTSUPP), Next::Continue)
                    }
                    Err(LineError::TooLong) => (errno_answer(libc::EOPNOTSUPP), Next::Close),
                    Err(_) => return,
                },
                _ => {
                    tracing::debug!(link = %iface, "unknown UAPI request");
                    (errno_answer(libc::EINVAL), Next::Close)
                }
            },
            Err(LineError::TooLong) => {
                tracing::debug!(link = %iface, "UAPI request line too long");
                (errno_answer(libc::EINVAL), Next::Close)
            }
            Err(LineError::Closed | LineError::Dropped) => return,
        };
        // A client that does not read its answer must not hold the slot either.
        let written = tokio::time::timeout(idle, writer.write_all(answer.as_bytes())).await;
        if !matches!(written, Ok(Ok(()))) {
            return;
        }
        if let Next::Close = next {
            return;
        }
    }
}

/// Read and discard a `set` body up to its blank line, so that `wg` can finish writing and read
/// the refusal. A body over [`MAX_SET_BYTES`] counts as [`LineError::TooLong`].
async fn drain_set<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    idle: Duration,
) -> Result<(), LineError> {
    let mut total = 0;
    loop {
        read_line(reader, buf, idle).await?;
        if buf == b"\n" {
            return Ok(());
        }
        total += buf.len();
        if total > MAX_SET_BYTES {
            return Err(LineError::TooLong);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};
    use std::os::unix::fs::FileTypeExt;
    use std::process::Command;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn full() -> Snapshot {
        Snapshot {
            private_key: [0xa0; 32],
            listen_port: 51820,
            fwmark: 0x1234,
            peer_public_key: [0x11; 32],
            preshared_key: Some([0x0f; 32]),
            endpoint: Some(SocketAddr::from((Ipv4Addr::new(203, 0, 113, 7), 51821))),
            last_handshake: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789)),
            tx_bytes: 2 * 1024 * 1024,
            rx_bytes: 1536,
            persistent_keepalive: Some(25),
            allowed_ips: vec![
                "10.20.0.0/16".parse().unwrap(),
                "fd00:20::/64".parse().unwrap(),
            ],
        }
    }

    fn minimal() -> Snapshot {
        Snapshot {
            fwmark: 0,
            preshared_key: None,
            endpoint: None,
            last_handshake: None,
            tx_bytes: 0,
            rx_bytes: 0,
            persistent_keepalive: None,
            allowed_ips: vec![],
            ..full()
        }
    }

    fn hex(byte: &str) -> String {
        byte.repeat(32)
    }

    #[test]
    fn renders_a_link_with_a_session_like_wireguard_go() {
        let expected = format!(
            "private_key={}\n\
             listen_port=51820\n\
             fwmark=4660\n\
             public_key={}\n\
             preshared_key={}\n\
             protocol_version=1\n\
             endpoint=203.0.113.7:51821\n\
             last_handshake_time_sec=1700000000\n\
             last_handshake_time_nsec=123456789\n\
             tx_bytes=2097152\n\
             rx_bytes=1536\n\
             persistent_keepalive_interval=25\n\
             allowed_ip=10.20.0.0/16\n\
             allowed_ip=fd00:20::/64\n\
             errno=0\n\n",
            hex("a0"),
            hex("11"),
            hex("0f"),
        );
        assert_eq!(render_get(&full()), expected);
    }

    #[test]
    fn renders_a_link_that_never_had_a_handshake_with_zeros_and_no_endpoint() {
        let expected = format!(
            "private_key={}\n\
             listen_port=51820\n\
             public_key={}\n\
             preshared_key={}\n\
             protocol_version=1\n\
             last_handshake_time_sec=0\n\
             last_handshake_time_nsec=0\n\
             tx_bytes=0\n\
             rx_bytes=0\n\
             persistent_keepalive_interval=0\n\
             errno=0\n\n",
            hex("a0"),
            hex("11"),
            hex("00"),
        );
        assert_eq!(render_get(&minimal()), expected);
    }

    #[test]
    fn renders_an_ipv6_endpoint_in_brackets_and_allowed_ips_without_host_bits() {
        let snapshot = Snapshot {
            endpoint: Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
                51820,
                0,
                0,
            ))),
            allowed_ips: vec![
                "10.20.3.4/16".parse().unwrap(),
                "192.0.2.1/32".parse().unwrap(),
            ],
            ..minimal()
        };
        let answer = render_get(&snapshot);
        assert!(
            answer.contains("\nendpoint=[2001:db8::1]:51820\n"),
            "{answer}"
        );
        assert!(
            answer.contains("\nallowed_ip=10.20.0.0/16\nallowed_ip=192.0.2.1/32\nerrno=0\n\n"),
            "{answer}"
        );
    }

    #[test]
    fn a_handshake_before_the_epoch_renders_as_never() {
        let snapshot = Snapshot {
            last_handshake: Some(UNIX_EPOCH - Duration::from_secs(1)),
            ..minimal()
        };
        assert!(render_get(&snapshot)
            .contains("\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n"));
    }

    #[test]
    fn serving_outside_a_runtime_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let err = serve(dir.path(), "wg0", Arc::new(full)).err().unwrap();
        assert!(err.to_string().contains("tokio runtime"), "{err}");
        assert!(!dir.path().join("wg0.sock").exists());
    }

    #[tokio::test]
    async fn refuses_names_that_are_not_plain_file_names() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["", ".", "..", "a/b", "a\0b"] {
            let err = serve(dir.path(), name, Arc::new(full)).err().unwrap();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
    }

    /// Send `request`, read until the server closes or `\n\n` ends an answer.
    async fn exchange(stream: &mut UnixStream, request: &[u8]) -> String {
        stream.write_all(request).await.unwrap();
        read_answer(stream).await
    }

    async fn read_answer(stream: &mut UnixStream) -> String {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        let read = async {
            while !got.ends_with(b"\n\n") {
                match stream.read(&mut byte).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => got.push(byte[0]),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the server neither answered nor closed");
        String::from_utf8(got).unwrap()
    }

    async fn get(path: &Path) -> String {
        let mut stream = UnixStream::connect(path).await.unwrap();
        exchange(&mut stream, b"get=1\n\n").await
    }

    async fn closed_by_server(stream: &mut UnixStream) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn answers_get_with_a_fresh_snapshot_on_a_private_socket() {
        let dir = tempfile::tempdir().unwrap();
        let rx = Arc::new(AtomicU64::new(100));
        let counter = Arc::clone(&rx);
        let handle = serve(
            dir.path(),
            "wg0",
            Arc::new(move || Snapshot {
                rx_bytes: counter.load(Ordering::Relaxed),
                ..full()
            }),
        )
        .unwrap();
        let path = dir.path().join("wg0.sock");
        assert_eq!(handle.path, path);
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the socket: {leftovers:?}");

        let mut stream = UnixStream::connect(&path).await.unwrap();
        let first = exchange(&mut stream, b"get=1\n\n").await;
        assert_eq!(
            first,
            render_get(&Snapshot {
                rx_bytes: 100,
                ..full()
            })
        );
        // Same connection, next request: the counters are read again.
        rx.store(5000, Ordering::Relaxed);
        let second = exchange(&mut stream, b"get=1\n\n").await;
        assert!(second.contains("\nrx_bytes=5000\n"), "{second}");
        assert!(second.ends_with("errno=0\n\n"));
    }

    #[tokio::test]
    async fn set_is_refused_as_not_supported_and_the_connection_stays_usable() {
        let dir = tempfile::tempdir().unwrap();
        let _handle = serve(dir.path(), "wg0", Arc::new(full)).unwrap();
        let mut stream = UnixStream::connect(dir.path().join("wg0.sock"))
            .await
            .unwrap();
        let answer = exchange(
            &mut stream,
            b"set=1\nlisten_port=1\npublic_key=00\nallowed_ip=10.0.0.0/8\n\n",
        )
        .await;
        assert_eq!(answer, format!("errno=-{}\n\n", libc::EOPNOTSUPP));
        assert_eq!(
            exchange(&mut stream, b"get=1\n\n").await,
            render_get(&full())
        );
    }

    #[tokio::test]
    async fn garbage_and_overlong_lines_get_an_error_and_the_next_client_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let _handle = serve(dir.path(), "wg0", Arc::new(full)).unwrap();
        let path = dir.path().join("wg0.sock");
        let einval = format!("errno=-{}\n\n", libc::EINVAL);

        let mut overlong = vec![b'x'; MAX_LINE + 10];
        overlong.push(b'\n');
        let cases: [&[u8]; 5] = [
            b"hello\n",
            b"get=2\n\n",
            b"get=1\nprivate_key=1\n\n",
            b"\n",
            &overlong,
        ];
        for request in cases {
            let mut stream = UnixStream::connect(&path).await.unwrap();
            let answer = exchange(&mut stream, request).await;
            assert_eq!(answer, einval, "{:?}", String::from_utf8_lossy(request));
            assert!(closed_by_server(&mut stream).await);
            assert_eq!(get(&path).await, render_get(&full()));
        }

        // A connection that says nothing at all (what `wg`'s probe does) is quietly closed.
        drop(UnixStream::connect(&path).await.unwrap());
        // Binary noise without a newline, then a half-close.
        let mut stream = UnixStream::connect(&path).await.unwrap();
        stream.write_all(&[0xff, 0x00, 0x80]).await.unwrap();
        stream.shutdown().await.unwrap();
        assert_eq!(read_answer(&mut stream).await, "");
        assert_eq!(get(&path).await, render_get(&full()));
    }

    #[tokio::test]
    async fn a_silent_client_is_cut_off_and_connections_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let short = Limits {
            idle: Duration::from_millis(300),
            max_connections: 8,
        };
        let _handle = serve_with(dir.path(), "wg0", Arc::new(full), short).unwrap();
        let path = dir.path().join("wg0.sock");
        let mut silent = UnixStream::connect(&path).await.unwrap();
        assert!(closed_by_server(&mut silent).await);
        // Half a line, then silence.
        let mut slow = UnixStream::connect(&path).await.unwrap();
        slow.write_all(b"get=").await.unwrap();
        assert!(closed_by_server(&mut slow).await);

        // One slot, held by a client that keeps its connection: the next waits its turn.
        let dir = tempfile::tempdir().unwrap();
        let one = Limits {
            idle: Duration::from_secs(60),
            max_connections: 1,
        };
        let _handle = serve_with(dir.path(), "wg0", Arc::new(full), one).unwrap();
        let path = dir.path().join("wg0.sock");
        let mut holder = UnixStream::connect(&path).await.unwrap();
        assert_eq!(
            exchange(&mut holder, b"get=1\n\n").await,
            render_get(&full())
        );
        let mut waiting = UnixStream::connect(&path).await.unwrap();
        waiting.write_all(b"get=1\n\n").await.unwrap();
        let mut byte = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_millis(300), waiting.read(&mut byte))
                .await
                .is_err(),
            "a second connection was served beyond the cap"
        );
        drop(holder);
        assert_eq!(read_answer(&mut waiting).await, render_get(&full()));
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_is_not_stolen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.sock");
        // What a crashed agentd leaves: a socket file nobody listens on.
        drop(StdListener::bind(&path).unwrap());
        // And the temporary name of a crash between bind and link.
        drop(StdListener::bind(dir.path().join(".wg0.sock.new")).unwrap());
        let handle = serve(dir.path(), "wg0", Arc::new(full)).unwrap();
        assert_eq!(get(&path).await, render_get(&full()));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["wg0.sock"]);

        let err = serve(dir.path(), "wg0", Arc::new(minimal)).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert_eq!(
            get(&path).await,
            render_get(&full()),
            "the live one still serves"
        );

        drop(handle);
        fs::write(&path, "not a socket").unwrap();
        let err = serve(dir.path(), "wg0", Arc::new(full)).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "not a socket");
    }

    #[tokio::test]
    async fn dropping_the_handle_stops_serving_and_removes_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.sock");
        let handle = serve(dir.path(), "wg0", Arc::new(full)).unwrap();
        let mut open = UnixStream::connect(&path).await.unwrap();
        assert_eq!(exchange(&mut open, b"get=1\n\n").await, render_get(&full()));
        drop(handle);
        assert!(!path.exists());
        assert!(UnixStream::connect(&path).await.is_err());
        // Open connections end with the server.
        assert!(closed_by_server(&mut open).await);
        // And the name is free again at once.
        let _again = serve(dir.path(), "wg0", Arc::new(full)).unwrap();
        assert_eq!(get(&path).await, render_get(&full()));
    }

    #[tokio::test]
    async fn dropping_the_handle_leaves_a_socket_someone_else_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.sock");
        let handle = serve(dir.path(), "wg0", Arc::new(full)).unwrap();
        fs::remove_file(&path).unwrap();
        // Past the coarse timestamp granularity, as a real replacement would be.
        std::thread::sleep(Duration::from_millis(20));
        let _other = StdListener::bind(&path).unwrap();
        drop(handle);
        assert!(path.exists(), "a foreign socket must not be deleted");
    }

    #[tokio::test]
    async fn creates_a_missing_directory_readable_by_all() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("run").join("wireguard");
        let _handle = serve(&dir, "wg0", Arc::new(full)).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
    }

    /// Where `wg` looks, fixed when wireguard-tools is compiled (Debian: /var/run/wireguard).
    const WG_SOCKET_DIR: &str = "/var/run/wireguard";

    /// Removes the socket directory on drop if this test created it (and it is empty again).
    struct CreatedDir(Option<PathBuf>);

    impl Drop for CreatedDir {
        fn drop(&mut self) {
            if let Some(dir) = &self.0 {
                let _ = fs::remove_dir(dir);
            }
        }
    }

    async fn wg(args: &[&str]) -> std::process::Output {
        let shown = args.join(" ");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || Command::new("wg").args(&args).output())
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("cannot run `wg {shown}`: {e}"))
    }

    async fn wg_ok(args: &[&str]) -> String {
        let out = wg(args).await;
        assert!(
            out.status.success(),
            "`wg {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The real tool against the real socket directory: no network device, no host network
    /// change; the socket is named per test run and removed on drop, panics included.
    #[tokio::test]
    async fn wg_show_reads_our_socket_like_a_wireguard_go_one() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!(
                "skipped wg_show_reads_our_socket_like_a_wireguard_go_one: not root, and it \
                 writes a socket into {WG_SOCKET_DIR} as `wg` expects"
            );
            return;
        }
        let version = Command::new("wg").arg("--version").output();
        assert!(
            matches!(&version, Ok(out) if out.status.success()),
            "`wg` (wireguard-tools) is required for this test and is not installed: \
             apt-get install wireguard-tools"
        );
        // Unique per run, within IFNAMSIZ, unlike any real interface name.
        let name = format!("isthu{}", std::process::id());
        assert!(name.len() <= 15);
        let dir = Path::new(WG_SOCKET_DIR);
        let _created = CreatedDir((!dir.exists()).then(|| dir.to_owned()));

        let handshake_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 42;
        let snapshot = Snapshot {
            endpoint: Some("[2001:db8::1]:51821".parse().unwrap()),
            last_handshake: Some(UNIX_EPOCH + Duration::new(handshake_secs, 5)),
            ..full()
        };
        let served = snapshot.clone();
        let _handle = serve(dir, &name, Arc::new(move || served.clone())).unwrap_or_else(|e| {
            panic!("cannot serve in {WG_SOCKET_DIR} (this test needs root): {e}")
        });
        let peer = "ERERERERERERERERERERERERERERERERERERERERERE=";

        let listed = wg_ok(&["show", "interfaces"]).await;
        assert!(
            listed.split_whitespace().any(|n| n == name),
            "`wg show interfaces` does not list {name}: {listed:?}"
        );

        let show = wg_ok(&["show", &name]).await;
        let expect = [
            format!("interface: {name}"),
            "listening port: 51820".to_owned(),
            "fwmark: 0x1234".to_owned(),
            format!("peer: {peer}"),
            "preshared key: (hidden)".to_owned(),
            "endpoint: [2001:db8::1]:51821".to_owned(),
            "allowed ips: 10.20.0.0/16, fd00:20::/64".to_owned(),
            "transfer: 1.50 KiB received, 2.00 MiB sent".to_owned(),
            "persistent keepalive: every 25 seconds".to_owned(),
        ];
        for line in &expect {
            assert!(show.contains(line.as_str()), "missing {line:?} in:\n{show}");
        }
        let latest = show
            .lines()
            .find_map(|l| l.trim().strip_prefix("latest handshake: "))
            .unwrap_or_else(|| panic!("no latest handshake in:\n{show}"));
        let seconds: u64 = latest
            .strip_suffix(" seconds ago")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("latest handshake is not seconds ago: {latest:?}"));
        assert!((42..=60).contains(&seconds), "{latest:?}");

        let dump = wg_ok(&["show", &name, "dump"]).await;
        let peer_line = dump.lines().nth(1).unwrap_or_default();
        let fields: Vec<&str> = peer_line.split('\t').collect();
        assert_eq!(
            fields,
            [
                peer,
                "Dw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8=",
                "[2001:db8::1]:51821",
                "10.20.0.0/16,fd00:20::/64",
                &handshake_secs.to_string(),
                "1536",
                "2097152",
                "25",
            ],
            "{dump}"
        );

        let latest = wg_ok(&["show", &name, "latest-handshakes"]).await;
        assert_eq!(latest, format!("{peer}\t{handshake_secs}\n"));

        let set = wg(&["set", &name, "listen-port", "1"]).await;
        let stderr = String::from_utf8_lossy(&set.stderr);
        assert!(!set.status.success());
        assert!(stderr.contains("Operation not supported"), "{stderr}");
    }
}
