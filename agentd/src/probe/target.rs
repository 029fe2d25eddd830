//! Target probes: checks of the services behind the tunnels (a database listener, a health URL, a
//! host that answers ping), as `[[probe]]` configures them.
//!
//! [`run_once`] runs one check and always comes back within the probe's timeout with an
//! [`Outcome`]: pass or fail, how long it took, and a [`Reason`] from a small fixed set (it becomes
//! a metrics label). Every failure, however odd the input, is a `Reason`, never a panic or an error
//! to handle. `tcp` connects; `http`/`https` send one `GET` and compare the status line with
//! `expect_status`; `icmp` sends one echo request, over an unprivileged ICMP datagram socket when
//! `net.ipv4.ping_group_range` allows it and a raw socket (`CAP_NET_RAW`) otherwise. A `source`
//! address is bound before anything is sent, so a probe can be pinned to one link's address.
//!
//! [`TargetProbes`] runs every probe on its own grid (`first run + k × interval`, missed ticks
//! skipped, never bunched), with the first runs spread over the first interval by a hash of the
//! name so that a thousand probes do not fire together, and at most [`MAX_IN_FLIGHT`] checks at
//! once. It only measures: deciding what a failed check means is the core's business. `replace`
//! (config reload) leaves an unchanged probe's task and grid alone; dropping the handle stops all.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, Read as _};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use isthmus_config::{Probe, ProbeKind, DEFAULT_EXPECT_STATUS};

use super::job::{Job, JobKey};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, trace, warn};

/// At most this many checks run at once. A check is one socket and at most one timeout of waiting,
/// so 64 keeps a burst far from fd limits while a thousand probes of 500 ms still fit in a second.
pub const MAX_IN_FLIGHT: usize = 64;

/// What an HTTP server may send before its status line ends (interim 1xx responses included).
/// A status line is a few dozen bytes; the cap keeps a misbehaving server from feeding us forever.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// The config refuses shorter intervals; the scheduler clamps too so that no input can make it
/// spin (and `tokio::time::interval` panics on zero).
const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// A check that runs less than daily is not a health check; the cap keeps deadline arithmetic far
/// from overflowing.
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// The outcome of one probe run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// `reason == Reason::Ok`.
    pub ok: bool,
    /// From the start of the run (name lookup included) to the answer, the failure or the timeout.
    pub duration: Duration,
    pub reason: Reason,
}

impl Outcome {
    fn new(reason: Reason, duration: Duration) -> Self {
        Outcome {
            ok: reason == Reason::Ok,
            duration,
            reason,
        }
    }
}

/// Why a run passed or failed: a bounded set, each with a static label for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The check passed.
    Ok,
    /// No answer (or no connection, or no name) within the probe's timeout.
    Timeout,
    /// The host answered that nothing listens there (TCP reset).
    Refused,
    /// No route to the target, an ICMP unreachable or prohibited came back, or a local firewall
    /// refused the packet.
    Unreachable,
    /// The HTTP server answered with a status other than `expect_status`; label `bad_status`.
    BadStatus(u16),
    /// The host name did not resolve (or resolved to no address of the `source`'s family), or the
    /// target is malformed, which a validated config never is.
    Resolve,
    /// The TLS handshake failed: untrusted, expired or mismatched certificate, no common protocol.
    /// Not in the original brief: a certificate that expires is the commonest https failure and
    /// deserves its own label rather than `io`.
    Tls,
    /// Any other socket error: no permission for an ICMP socket, `source` not a local address,
    /// connection reset mid-exchange.
    Io,
    /// The answer was not an HTTP/1.x response, or its head exceeded 16 KiB.
    BadResponse,
}

impl Reason {
    /// Every label [`Reason::as_str`] can return, for metrics that pre-register their series.
    #[cfg_attr(not(test), allow(dead_code))] // for the metrics exporter
    pub const LABELS: &'static [&'static str] = &[
        "ok",
        "timeout",
        "refused",
        "unreachable",
        "bad_status",
        "resolve",
        "tls",
        "io",
        "bad_response",
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::Timeout => "timeout",
            Reason::Refused => "refused",
            Reason::Unreachable => "unreachable",
            Reason::BadStatus(_) => "bad_status",
            Reason::Resolve => "resolve",
            Reason::Tls => "tls",
            Reason::Io => "io",
            Reason::BadResponse => "bad_response",
        }
    }
}

/// Run one probe once along the routes, bounded by `probe.timeout`. Never panics on any input.
#[cfg(test)]
pub async fn run_once(probe: &Probe) -> Outcome {
    run_with(probe, None, None).await
}

/// Run a job once: its probe, over its link if it has one.
pub async fn run_job(job: &Job) -> Outcome {
    run_with(
        &job.probe,
        job.via.as_ref().map(|v| v.device.as_str()),
        None,
    )
    .await
}

/// `device`: the interface the sockets are bound to (SO_BINDTODEVICE), if any. `tls`: the
/// client config for https, or `None` for the system's trusted roots.
async fn run_with(probe: &Probe, device: Option<&str>, tls: Option<&Arc<ClientConfig>>) -> Outcome {
    let started = Instant::now();
    let from = Origin {
        source: probe.source,
        device,
    };
    let result = tokio::time::timeout(probe.timeout, check(probe, from, tls)).await;
    let reason = match result {
        Ok(Ok(())) => Reason::Ok,
        Ok(Err(reason)) => reason,
        Err(_) => Reason::Timeout,
    };
    let outcome = Outcome::new(reason, started.elapsed());
    trace!(
        probe = %probe.name,
        kind = %probe.kind,
        reason = reason.as_str(),
        duration_us = outcome.duration.as_micros() as u64,
        "target probe ran"
    );
    outcome
}

/// Where a check's packets leave from: a source address, an interface, both or neither.
#[derive(Debug, Clone, Copy, Default)]
struct Origin<'a> {
    source: Option<IpAddr>,
    device: Option<&'a str>,
}

async fn check(
    probe: &Probe,
    from: Origin<'_>,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<(), Reason> {
    match probe.kind {
        ProbeKind::Tcp => {
            let addrs = resolve(probe.target.as_str(), probe.source).await?;
            connect(&addrs, from).await.map(drop)
        }
        ProbeKind::Http => http(probe, from, None).await,
        ProbeKind::Https => {
            let config = match tls {
                Some(config) => Arc::clone(config),
                None => system_tls()?,
            };
            http(probe, from, Some(config)).await
        }
        ProbeKind::Icmp => {
            let peer = resolve_host(&probe.target, probe.source).await?;
            ping(peer, from, &[IcmpSocket::Datagram, IcmpSocket::Raw])
                .await
                .map(drop)
        }
    }
}

/// Maps a socket error to its reason.
fn io_reason(e: &io::Error) -> Reason {
    if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
        return Reason::Tls;
    }
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Reason::Refused,
        // EACCES/EPERM on connect or send: a `prohibit` route or a local firewall's reject.
        Some(
            libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::ENETDOWN
            | libc::EACCES
            | libc::EPERM,
        ) => Reason::Unreachable,
        Some(libc::ETIMEDOUT) => Reason::Timeout,
        _ => match e.kind() {
            io::ErrorKind::ConnectionRefused => Reason::Refused,
            io::ErrorKind::TimedOut => Reason::Timeout,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                Reason::Unreachable
            }
            _ => Reason::Io,
        },
    }
}

// --- name resolution and TCP --------------------------------------------------------------------

/// The addresses of `target` (`HOST:PORT`, `[V6]:PORT`, or `(host, port)`), in resolver order,
/// keeping only those of `source`'s family when a source is set.
async fn resolve(
    target: impl tokio::net::ToSocketAddrs,
    source: Option<IpAddr>,
) -> Result<Vec<SocketAddr>, Reason> {
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(target).await {
        Ok(addrs) => addrs
            .filter(|a| source.is_none_or(|s| s.is_ipv4() == a.is_ipv4()))
            .collect(),
        Err(e) => {
            trace!(error = %e, "probe target did not resolve");
            return Err(Reason::Resolve);
        }
    };
    if addrs.is_empty() {
        trace!("probe target resolved to no usable address");
        return Err(Reason::Resolve);
    }
    Ok(addrs)
}

/// An IP literal (brackets allowed) or the first usable address of a host name.
async fn resolve_host(host: &str, source: Option<IpAddr>) -> Result<IpAddr, Reason> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok(ip);
    }
    let addrs = resolve((host, 0), source).await?;
    addrs.first().map(SocketAddr::ip).ok_or(Reason::Resolve)
}

/// Connects to the addresses in order; the first that accepts wins. No happy eyeballs: the
/// timeout bounds the whole run, so a black-holed first address fails the run.
async fn connect(addrs: &[SocketAddr], from: Origin<'_>) -> Result<TcpStream, Reason> {
    let mut reason = Reason::Resolve;
    for &addr in addrs {
        match connect_one(addr, from).await {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                trace!(%addr, error = %e, "probe connect failed");
                reason = io_reason(&e);
            }
        }
    }
    Err(reason)
}

async fn connect_one(addr: SocketAddr, from: Origin<'_>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(device) = from.device {
        socket.bind_device(Some(device.as_bytes()))?;
    }
    if let Some(ip) = from.source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(addr).await
}

// --- HTTP and HTTPS -----------------------------------------------------------------------------

/// The parts of a probe URL that the request needs.
#[derive(Debug, PartialEq)]
struct HttpTarget<'a> {
    /// Without brackets: what to resolve and what TLS verifies.
    host: &'a str,
    port: u16,
    /// `host[:port]` as written (brackets kept), for the `Host` header.
    authority: &'a str,
    /// Path and query, percent-encoded where a request line needs it; `/` when empty.
    path: String,
}

impl<'a> HttpTarget<'a> {
    /// `None` unless `url` is `SCHEME://[userinfo@]host[:port][/path][?query][#fragment]`. Any
    /// userinfo is ignored (no credentials are sent); the fragment is never sent.
    fn parse(url: &'a str, https: bool) -> Option<Self> {
        let (scheme, default_port) = if https { ("https", 443) } else { ("http", 80) };
        let rest = url.strip_prefix(scheme)?.strip_prefix("://")?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let authority = authority.rsplit('@').next()?;
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (addr, after) = v6.split_once(']')?;
                let port = match after {
                    "" => None,
                    _ => Some(after.strip_prefix(':')?),
                };
                (addr, port)
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return None;
        }
        let port = match port {
            None => default_port,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
        };
        let tail = tail.split('#').next().unwrap_or_default();
        let mut path = String::with_capacity(tail.len() + 1);
        if !tail.starts_with('/') {
            path.push('/');
        }
        for byte in tail.bytes() {
            // Whatever would break the request line (space, CR, LF, controls, non-ASCII) is
            // percent-encoded; the rest goes as written.
            if byte.is_ascii_graphic() {
                path.push(char::from(byte));
            } else {
                path.push_str(&format!("%{byte:02X}"));
            }
        }
        Some(HttpTarget {
            host,
            port,
            authority,
            path,
        })
    }

    fn request(&self) -> String {
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: isthmus-agentd/{}\r\nAccept: */*\r\n\
             Connection: close\r\n\r\n",
            self.path,
            self.authority,
            env!("CARGO_PKG_VERSION")
        )
    }
}

/// `tls`: `Some` for https.
async fn http(
    probe: &Probe,
    from: Origin<'_>,
    tls: Option<Arc<ClientConfig>>,
) -> Result<(), Reason> {
    let Some(url) = HttpTarget::parse(&probe.target, tls.is_some()) else {
        trace!(probe = %probe.name, "probe URL does not parse");
        return Err(Reason::Resolve);
    };
    let addrs = resolve((url.host, url.port), probe.source).await?;
    let mut tcp = connect(&addrs, from).await?;
    let request = url.request();
    let status = match tls {
        None => exchange(&mut tcp, &request).await?,
        Some(config) => {
            let name = ServerName::try_from(url.host.to_owned()).map_err(|_| Reason::Tls)?;
            let mut stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    trace!(probe = %probe.name, error = %e, "probe TLS handshake failed");
                    io_reason(&e)
                })?;
            exchange(&mut stream, &request).await?
        }
    };
    let expected = probe.expect_status.unwrap_or(DEFAULT_EXPECT_STATUS);
    if status == expected {
        Ok(())
    } else {
        Err(Reason::BadStatus(status))
    }
}

/// Sends the request and reads up to the final status line; the rest is never read.
async fn exchange<S>(stream: &mut S, request: &str) -> Result<u16, Reason>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let sent = async {
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await
    };
    sent.await.map_err(|e| io_reason(&e))?;
    read_status(stream).await
}

/// The status of the first final response: interim 1xx responses (but 101) are skipped.
async fn read_status<S: AsyncRead + Unpin>(stream: &mut S) -> Result<u16, Reason> {
    let mut buf = Vec::with_capacity(1024);
    let mut start = 0;
    loop {
        let current = buf.get(start..).unwrap_or_default();
        if let Some(line_end) = current.iter().position(|&b| b == b'\n') {
            let code = parse_status_line(&current[..line_end])?;
            if !(100..200).contains(&code) || code == 101 {
                return Ok(code);
            }
            if let Some(end) = head_end(current) {
                start += end;
                continue;
            }
        }
        if buf.len() >= MAX_RESPONSE_HEAD {
            return Err(Reason::BadResponse);
        }
        let mut chunk = [0u8; 2048];
        let room = chunk.len().min(MAX_RESPONSE_HEAD - buf.len());
        let n = stream
            .read(&mut chunk[..room])
            .await
            .map_err(|e| io_reason(&e))?;
        if n == 0 {
            return Err(Reason::BadResponse);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `HTTP/1.x NNN[ reason]` (without the line end) → NNN.
fn parse_status_line(line: &[u8]) -> Result<u16, Reason> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line.strip_prefix(b"HTTP/1.").ok_or(Reason::BadResponse)?;
    match rest {
        [minor, b' ', a, b, c, tail @ ..]
            if minor.is_ascii_digit()
                && [a, b, c].iter().all(|d| d.is_ascii_digit())
                && (tail.is_empty() || tail.first() == Some(&b' ')) =>
        {
            let code = [a, b, c]
                .iter()
                .fold(0u16, |n, d| n * 10 + u16::from(**d - b'0'));
            if (100..=599).contains(&code) {
                Ok(code)
            } else {
                Err(Reason::BadResponse)
            }
        }
        _ => Err(Reason::BadResponse),
    }
}

/// Where the header block that starts `head` ends (just after its empty line).
fn head_end(head: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' {
            let line = &head[line_start..i];
            if line_start > 0 && (line.is_empty() || line == b"\r") {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}

/// The TLS client config with the system's trusted roots, loaded on first use and again after
/// [`forget_trust`] (a reload), so that a CA installed with `update-ca-certificates` is picked up
/// without a restart.
static SYSTEM_TLS: Mutex<Option<Arc<ClientConfig>>> = Mutex::new(None);

fn system_tls() -> Result<Arc<ClientConfig>, Reason> {
    let mut cached = SYSTEM_TLS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(config) = cached.as_ref() {
        return Ok(Arc::clone(config));
    }
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
    for e in &loaded.errors {
        debug!(error = %e, "reading trusted CA certificates");
    }
    if added == 0 {
        warn!("no trusted CA certificates found: every https probe will fail with reason tls");
    } else {
        debug!(
            added,
            ignored, "loaded trusted CA certificates for https probes"
        );
    }
    let config = Arc::new(tls_client_config(roots).map_err(|e| {
        debug!(error = %e, "cannot build the TLS client config");
        Reason::Tls
    })?);
    *cached = Some(Arc::clone(&config));
    Ok(config)
}

fn forget_trust() {
    *SYSTEM_TLS.lock().unwrap_or_else(PoisonError::into_inner) = None;
}

/// rustls on the `ring` provider (already linked for WireGuard), certificate and host name
/// verification on, as any TLS client.
fn tls_client_config(roots: RootCertStore) -> Result<ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

// --- ICMP echo ----------------------------------------------------------------------------------

/// Which socket an echo goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IcmpSocket {
    /// `SOCK_DGRAM`/`IPPROTO_ICMP`: no privilege, allowed for the groups in
    /// `net.ipv4.ping_group_range`; the kernel picks the identifier and only hands us our replies.
    Datagram,
    /// `SOCK_RAW`: needs `CAP_NET_RAW`; sees every echo reply from the peer, so we match ours.
    Raw,
}

/// Marks our echo payloads; the nonce after it makes each request's payload unique.
const ECHO_MAGIC: &[u8; 8] = b"isthmus\0";
const ECHO_LEN: usize = 8 + 16;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

static ECHO_NONCE: AtomicU64 = AtomicU64::new(1);

/// Sends one echo request to `peer` and waits (unbounded: the caller's timeout bounds it) for its
/// reply. `kinds`: the sockets to try, in order. Returns the socket kind that was used.
async fn ping(peer: IpAddr, from: Origin<'_>, kinds: &[IcmpSocket]) -> Result<IcmpSocket, Reason> {
    let (socket, kind) = open_icmp(peer, from, kinds)?;
    // SAFETY: the `Socket` owns its fd, which stays open and the same until the `AsyncFd` (which
    // owns the `Socket`) is dropped.
    let socket = unsafe { AsyncFd::register(socket) }.map_err(|e| {
        trace!(error = %e, "cannot register the icmp socket");
        Reason::Io
    })?;
    let v6 = peer.is_ipv6();
    let nonce = ECHO_NONCE.fetch_add(1, Ordering::Relaxed);
    // Datagram sockets overwrite the identifier with their own; raw ones send ours.
    let ident = std::process::id() as u16;
    let seq = nonce as u16;
    let request = echo_request(v6, ident, seq, nonce);
    socket
        .async_io(Interest::WRITABLE, |s| s.send(&request))
        .await
        .map_err(|e| {
            trace!(%peer, error = %e, "icmp echo send failed");
            io_reason(&e)
        })?;
    let want_ident = (kind == IcmpSocket::Raw).then_some(ident);
    let mut buf = [0u8; 2048];
    loop {
        let n = socket
            .async_io(Interest::READABLE, |mut s| s.read(&mut buf))
            .await
            .map_err(|e| {
                trace!(%peer, error = %e, "icmp echo failed");
                io_reason(&e)
            })?;
        let packet = buf.get(..n).unwrap_or_default();
        // Raw IPv4 sockets deliver the IP header too; ICMPv6 and datagram sockets do not.
        let icmp = if kind == IcmpSocket::Raw && !v6 {
            strip_ipv4_header(packet)
        } else {
            Some(packet)
        };
        if icmp.is_some_and(|icmp| is_our_reply(icmp, v6, want_ident, seq, nonce)) {
            return Ok(kind);
        }
    }
}

fn open_icmp(
    peer: IpAddr,
    from: Origin<'_>,
    kinds: &[IcmpSocket],
) -> Result<(Socket, IcmpSocket), Reason> {
    let (domain, protocol) = if peer.is_ipv4() {
        (Domain::IPV4, Protocol::ICMPV4)
    } else {
        (Domain::IPV6, Protocol::ICMPV6)
    };
    for &kind in kinds {
        let ty = match kind {
            IcmpSocket::Datagram => Type::DGRAM,
            IcmpSocket::Raw => Type::RAW,
        };
        match Socket::new(domain, ty, Some(protocol)) {
            Ok(socket) => {
                prepare_icmp(&socket, peer, from).map_err(|e| {
                    trace!(%peer, error = %e, "icmp socket set-up failed");
                    io_reason(&e)
                })?;
                return Ok((socket, kind));
            }
            Err(e) => trace!(?kind, error = %e, "cannot open an icmp socket"),
        }
    }
    Err(Reason::Io)
}

/// Binds the source and connects to the peer: connected, the socket only receives from the peer,
/// and hard ICMP errors (unreachable) come back as socket errors.
fn prepare_icmp(socket: &Socket, peer: IpAddr, from: Origin<'_>) -> io::Result<()> {
    socket.set_nonblocking(true)?;
    if let Some(device) = from.device {
        socket.bind_device(Some(device.as_bytes()))?;
    }
    if let Some(ip) = from.source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect(&SocketAddr::new(peer, 0).into())
}

fn echo_request(v6: bool, ident: u16, seq: u16, nonce: u64) -> [u8; ECHO_LEN] {
    let mut packet = [0u8; ECHO_LEN];
    packet[0] = if v6 {
        ICMPV6_ECHO_REQUEST
    } else {
        ICMP_ECHO_REQUEST
    };
    packet[4..6].copy_from_slice(&ident.to_be_bytes());
    packet[6..8].copy_from_slice(&seq.to_be_bytes());
    packet[8..].copy_from_slice(&echo_payload(nonce));
    // The kernel fills in the ICMPv6 checksum (it covers a pseudo-header we do not know) and that
    // of datagram sockets; raw ICMPv4 needs ours.
    if !v6 {
        let sum = internet_checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

fn echo_payload(nonce: u64) -> [u8; 16] {
    let mut payload = [0u8; 16];
    payload[..8].copy_from_slice(ECHO_MAGIC);
    payload[8..].copy_from_slice(&nonce.to_be_bytes());
    payload
}

/// `ident`: `None` when the kernel matched the identifier already (datagram sockets).
fn is_our_reply(icmp: &[u8], v6: bool, ident: Option<u16>, seq: u16, nonce: u64) -> bool {
    let reply = if v6 {
        ICMPV6_ECHO_REPLY
    } else {
        ICMP_ECHO_REPLY
    };
    match icmp {
        [ty, 0, _, _, i0, i1, s0, s1, payload @ ..] => {
            *ty == reply
                && ident.is_none_or(|id| id.to_be_bytes() == [*i0, *i1])
                && seq.to_be_bytes() == [*s0, *s1]
                && payload.starts_with(&echo_payload(nonce))
        }
        _ => false,
    }
}

fn strip_ipv4_header(packet: &[u8]) -> Option<&[u8]> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    packet.get(ihl..)
}

/// RFC 1071.
fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| match pair {
            [a, b] => u32::from(u16::from_be_bytes([*a, *b])),
            [a] => u32::from(*a) << 8,
            _ => 0,
        })
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

// --- the scheduler ------------------------------------------------------------------------------

/// What the scheduler sends per run: the probe's name, the outcome, and when the run finished
/// (tokio's clock, so that paused-time tests see it; `into_std()` converts).
pub type ProbeResult = (JobKey, Outcome, Instant);

type RunFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;
/// Runs one check: [`run_job`] in the daemon, something instant in the scheduler's tests.
type Runner = Arc<dyn Fn(Arc<Job>) -> RunFuture + Send + Sync>;

/// Runs every job at its probe's interval and sends each outcome on `results`.
/// Dropping it stops every probe task.
pub struct TargetProbes {
    scheduled: BTreeMap<JobKey, Scheduled>,
    results: mpsc::Sender<ProbeResult>,
    permits: Arc<Semaphore>,
    runner: Runner,
}

/// A job and the task that runs it; dropping it aborts the task.
struct Scheduled {
    job: Job,
    task: JoinHandle<()>,
}

impl Drop for Scheduled {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TargetProbes {
    /// Starts a task per job on the current runtime. If `results` closes, the tasks end.
    pub fn start(jobs: &[Job], results: mpsc::Sender<ProbeResult>) -> Self {
        let runner: Runner =
            Arc::new(|job: Arc<Job>| -> RunFuture { Box::pin(async move { run_job(&job).await }) });
        Self::start_with(jobs, results, MAX_IN_FLIGHT, runner)
    }

    fn start_with(
        jobs: &[Job],
        results: mpsc::Sender<ProbeResult>,
        max_in_flight: usize,
        runner: Runner,
    ) -> Self {
        let mut this = TargetProbes {
            scheduled: BTreeMap::new(),
            results,
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
            runner,
        };
        this.replace(jobs);
        this
    }

    /// Runs `probes` from now on (config reload). A probe whose name and settings are unchanged
    /// keeps its task and its grid; a changed one starts over; a removed one stops. The system's
    /// trusted CAs are read again at the next https check.
    pub fn replace(&mut self, jobs: &[Job]) {
        forget_trust();
        let mut next = BTreeMap::new();
        for job in jobs {
            let key = job.key();
            let kept = self.scheduled.remove(&key).filter(|s| s.job == *job);
            let scheduled = kept.unwrap_or_else(|| self.spawn(job));
            // A repeated name (the config refuses them) replaces the earlier one, which stops.
            next.insert(key, scheduled);
        }
        // Whatever is left was removed or changed: dropping aborts it.
        self.scheduled = next;
    }

    /// The jobs being run.
    #[cfg(test)]
    pub fn names(&self) -> impl Iterator<Item = String> + '_ {
        self.scheduled.keys().map(JobKey::to_string)
    }

    fn spawn(&self, job: &Job) -> Scheduled {
        let interval = job.probe.interval.clamp(MIN_INTERVAL, MAX_INTERVAL);
        let first = Instant::now() + first_offset(&job.key().to_string(), interval);
        let task = tokio::spawn(schedule(
            Arc::new(job.clone()),
            first,
            interval,
            Arc::clone(&self.permits),
            self.results.clone(),
            Arc::clone(&self.runner),
        ));
        Scheduled {
            job: job.clone(),
            task,
        }
    }
}

/// One probe's life: run at `first`, then every `interval`; a run that is late (waiting for a
/// permit, or a slow consumer) skips the ticks it missed rather than firing them in a burst.
async fn schedule(
    job: Arc<Job>,
    first: Instant,
    interval: Duration,
    permits: Arc<Semaphore>,
    results: mpsc::Sender<ProbeResult>,
    runner: Runner,
) {
    let mut ticks = tokio::time::interval_at(first, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return; // never closed; nothing to run without permits anyway
        };
        let outcome = runner(Arc::clone(&job)).await;
        drop(permit);
        if results
            .send((job.key(), outcome, Instant::now()))
            .await
            .is_err()
        {
            trace!(probe = %job.key(), "probe results closed: stopping");
            return;
        }
    }
}

/// Where in its first interval a probe first runs: a hash of the name scaled to the interval.
/// Spreads many probes evenly, and a probe keeps its phase across restarts.
fn first_offset(name: &str, interval: Duration) -> Duration {
    let fnv = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    // FNV-1a alone leaves the high bits of names that differ only at the end ("db-1", "db-2")
    // close together, and the scaling below uses the high bits: mix them (MurmurHash3's fmix64).
    let mut hash = fnv;
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    let nanos = u128::from(hash).saturating_mul(interval.as_nanos()) >> 64;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, AtomicUsize};
    use tokio::net::TcpListener;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn probe(name: &str, kind: ProbeKind, target: &str) -> Probe {
        Probe {
            name: name.to_string(),
            kind,
            target: target.to_string(),
            interval: ms(1000),
            timeout: ms(500),
            expect_status: matches!(kind, ProbeKind::Http | ProbeKind::Https)
                .then_some(DEFAULT_EXPECT_STATUS),
            source: None,
        }
    }

    fn tcp(target: &str) -> Probe {
        probe("db", ProbeKind::Tcp, target)
    }

    fn icmp(target: &str) -> Probe {
        probe("ping", ProbeKind::Icmp, target)
    }

    /// A network namespace owned by one test: `ip netns del` on drop, panics included.
    struct Netns {
        name: String,
    }

    impl Netns {
        fn new() -> Self {
            assert!(
                nix::unistd::geteuid().is_root(),
                "this test needs root: it creates a network namespace"
            );
            static N: AtomicU32 = AtomicU32::new(0);
            let name = format!(
                "isth-probe-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            ip(&["netns", "add", &name]);
            let ns = Netns { name };
            ns.ip(&["link", "set", "lo", "up"]);
            ns
        }

        /// Also routes 192.0.2.0/24 into a black hole (a veth neighbour that does not exist, with a
        /// fixed MAC so that not even ARP answers: packets leave and vanish) and makes
        /// 198.51.100.0/24 unreachable.
        fn with_black_hole() -> Self {
            let ns = Netns::new();
            ns.ip(&["link", "add", "bh0", "type", "veth", "peer", "name", "bh1"]);
            ns.ip(&["link", "set", "bh0", "up"]);
            ns.ip(&["link", "set", "bh1", "up"]);
            ns.ip(&["addr", "add", "10.99.0.1/24", "dev", "bh0"]);
            ns.ip(&[
                "neigh",
                "add",
                "10.99.0.2",
                "lladdr",
                "02:00:00:00:00:02",
                "dev",
                "bh0",
                "nud",
                "permanent",
            ]);
            ns.ip(&["route", "add", "192.0.2.0/24", "via", "10.99.0.2"]);
            ns.ip(&["route", "add", "unreachable", "198.51.100.0/24"]);
            ns
        }

        fn ip(&self, args: &[&str]) {
            ip(&[&["-n", self.name.as_str()], args].concat());
        }

        fn sysctl(&self, setting: &str) {
            let status = Command::new("ip")
                .args(["netns", "exec", &self.name, "sysctl", "-qw", setting])
                .status()
                .expect("running sysctl");
            assert!(status.success(), "sysctl {setting}");
        }

        /// Runs `make()`'s future on a thread that has entered the namespace, on a runtime of
        /// that thread (its sockets, and those of its blocking pool, live in the namespace).
        fn block_on<F: Future>(&self, make: impl FnOnce() -> F + Send) -> F::Output
        where
            F::Output: Send,
        {
            std::thread::scope(|scope| {
                let thread = scope.spawn(|| {
                    let file = std::fs::File::open(format!("/run/netns/{}", self.name))
                        .expect("opening the namespace");
                    // SAFETY: setns on a valid namespace fd affects only this thread.
                    let rc = unsafe {
                        libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET)
                    };
                    assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime")
                        .block_on(make())
                });
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }

    fn ip(args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("running ip");
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A local server that answers each connection with `answer` (after reading the request head),
    /// or never answers if `answer` is `None`. Returns its address and the requests it read.
    async fn http_server(answer: Option<&'static [u8]>) -> (SocketAddr, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let head = read_head(&mut conn).await;
                    let _ = tx.send(head).await;
                    match answer {
                        Some(bytes) => {
                            let _ = conn.write_all(bytes).await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        (addr, rx)
    }

    async fn read_head<S: AsyncRead + Unpin>(conn: &mut S) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match conn.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    fn http(addr: SocketAddr, path: &str) -> Probe {
        probe("app", ProbeKind::Http, &format!("http://{addr}{path}"))
    }

    // --- tcp ------------------------------------------------------------------------------------

    #[tokio::test]
    async fn tcp_passes_when_the_port_accepts() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap().to_string();
        let outcome = run_once(&tcp(&target)).await;
        assert_eq!(outcome.reason, Reason::Ok);
        assert!(outcome.ok);
        assert!(outcome.duration < ms(500));
    }

    #[tokio::test]
    async fn tcp_binds_the_source_address_before_connecting() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut p = tcp(&listener.local_addr().unwrap().to_string());
        p.source = Some("127.0.0.2".parse().unwrap());
        let (outcome, accepted) = tokio::join!(run_once(&p), listener.accept());
        assert_eq!(outcome.reason, Reason::Ok);
        assert_eq!(accepted.unwrap().1.ip(), p.source.unwrap());
    }

    #[tokio::test]
    async fn a_job_over_a_link_binds_its_sockets_to_the_link_interface() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { while listener.accept().await.is_ok() {} });
        let via = |device: &str| Job {
            probe: tcp(&target),
            via: Some(crate::probe::job::Via {
                link: "l".into(),
                device: device.into(),
            }),
        };
        // Bound to the interface the target is on: passes.
        assert_eq!(run_job(&via("lo")).await.reason, Reason::Ok);
        // Bound to an interface that does not exist: the socket refuses, nothing is sent.
        assert_eq!(run_job(&via("isth-none0")).await.reason, Reason::Io);
        let mut ping = icmp("127.0.0.1");
        ping.name = "p".into();
        let job = Job {
            probe: ping,
            via: Some(crate::probe::job::Via {
                link: "l".into(),
                device: "isth-none0".into(),
            }),
        };
        assert_eq!(run_job(&job).await.reason, Reason::Io);
    }

    #[tokio::test]
    async fn tcp_to_a_closed_port_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap().to_string();
        drop(listener);
        let outcome = run_once(&tcp(&target)).await;
        assert_eq!(outcome.reason, Reason::Refused);
        assert!(!outcome.ok);
    }

    #[tokio::test]
    async fn tcp_from_a_source_that_is_not_local_is_an_io_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut p = tcp(&listener.local_addr().unwrap().to_string());
        p.source = Some("192.0.2.77".parse().unwrap());
        assert_eq!(run_once(&p).await.reason, Reason::Io);
    }

    #[tokio::test]
    async fn tcp_with_a_source_of_the_other_family_does_not_resolve() {
        let mut p = tcp("127.0.0.1:1522");
        p.source = Some("::1".parse().unwrap());
        assert_eq!(run_once(&p).await.reason, Reason::Resolve);
    }

    #[test]
    fn tcp_into_a_black_hole_times_out_at_the_probe_timeout() {
        let ns = Netns::with_black_hole();
        let mut p = tcp("192.0.2.1:1522");
        p.timeout = ms(200);
        let outcome = ns.block_on(|| async { run_once(&p).await });
        assert_eq!(outcome.reason, Reason::Timeout);
        assert!(outcome.duration >= ms(200) && outcome.duration < ms(1000));
    }

    #[test]
    fn tcp_without_a_route_is_unreachable() {
        let ns = Netns::with_black_hole();
        let outcome = ns.block_on(|| async { run_once(&tcp("198.51.100.1:1522")).await });
        assert_eq!(outcome.reason, Reason::Unreachable);
    }

    #[test]
    fn tcp_to_an_unknown_name_fails_to_resolve() {
        // In an empty namespace the resolver's queries cannot leave it.
        let ns = Netns::new();
        let mut p = tcp("no-such-host.invalid:1522");
        p.timeout = ms(3000);
        let outcome = ns.block_on(|| async { run_once(&p).await });
        assert_eq!(outcome.reason, Reason::Resolve);
    }

    // --- http -----------------------------------------------------------------------------------

    #[tokio::test]
    async fn http_passes_on_200_and_sends_a_proper_request() {
        let (addr, mut requests) = http_server(Some(b"HTTP/1.1 200 OK\r\n\r\nfine")).await;
        let outcome = run_once(&http(addr, "/health?deep=1#frag")).await;
        assert_eq!(outcome.reason, Reason::Ok);
        let request = requests.recv().await.unwrap();
        assert!(
            request.starts_with(&format!(
                "GET /health?deep=1 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n",
                addr.port()
            )),
            "{request}"
        );
        assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
    }

    #[tokio::test]
    async fn http_fails_with_the_status_the_server_answered() {
        let (addr, _requests) =
            http_server(Some(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")).await;
        let outcome = run_once(&http(addr, "/health")).await;
        assert_eq!(outcome.reason, Reason::BadStatus(503));
        assert_eq!(outcome.reason.as_str(), "bad_status");
        assert!(!outcome.ok);
    }

    #[tokio::test]
    async fn http_passes_when_the_status_is_the_expected_one() {
        let (addr, _requests) = http_server(Some(b"HTTP/1.0 204 No Content\r\n\r\n")).await;
        let mut p = http(addr, "");
        p.expect_status = Some(204);
        assert_eq!(run_once(&p).await.reason, Reason::Ok);
    }

    #[tokio::test]
    async fn http_skips_interim_responses() {
        let (addr, _requests) = http_server(Some(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
        ))
        .await;
        assert_eq!(run_once(&http(addr, "/")).await.reason, Reason::Ok);
    }

    #[tokio::test]
    async fn http_times_out_when_the_server_never_answers() {
        let (addr, _requests) = http_server(None).await;
        let mut p = http(addr, "/health");
        p.timeout = ms(150);
        let outcome = run_once(&p).await;
        assert_eq!(outcome.reason, Reason::Timeout);
        assert!(outcome.duration >= ms(150));
    }

    #[tokio::test]
    async fn http_garbage_is_a_bad_response() {
        for answer in [
            &b"SSH-2.0-OpenSSH_9.6\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"",
        ] {
            let (addr, _requests) = http_server(Some(answer)).await;
            let outcome = run_once(&http(addr, "/")).await;
            assert_eq!(
                outcome.reason,
                Reason::BadResponse,
                "{}",
                String::from_utf8_lossy(answer)
            );
        }
    }

    #[tokio::test]
    async fn http_reads_at_most_16_kib_looking_for_the_status_line() {
        static ENDLESS: [u8; 64 * 1024] = [b'x'; 64 * 1024];
        let (addr, _requests) = http_server(Some(&ENDLESS[..])).await;
        assert_eq!(run_once(&http(addr, "/")).await.reason, Reason::BadResponse);
    }

    #[test]
    fn urls_split_into_host_port_authority_and_path() {
        let t = HttpTarget::parse("http://10.1.20.15:8080/health?x=1#top", false).unwrap();
        assert_eq!(
            t,
            HttpTarget {
                host: "10.1.20.15",
                port: 8080,
                authority: "10.1.20.15:8080",
                path: "/health?x=1".into()
            }
        );
        let t = HttpTarget::parse("https://user:pw@[fd00::1]/a b", true).unwrap();
        assert_eq!((t.host, t.port, t.authority), ("fd00::1", 443, "[fd00::1]"));
        assert_eq!(t.path, "/a%20b");
        let t = HttpTarget::parse("http://app.internal?q", false).unwrap();
        assert_eq!(
            (t.host, t.port, t.path.as_str()),
            ("app.internal", 80, "/?q")
        );
        for bad in [
            "https://a/",
            "http://",
            "http://:80/",
            "http://a:0/",
            "http://a:x/",
            "http://[fd00::1/",
            "http://[fd00::1]x/",
            "ftp://a/",
        ] {
            assert_eq!(HttpTarget::parse(bad, false), None, "{bad}");
        }
    }

    #[test]
    fn status_lines_parse_strictly() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r"), Ok(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503"), Ok(503));
        assert_eq!(parse_status_line(b"HTTP/1.1 404 Not Found"), Ok(404));
        for bad in [
            &b"HTTP/1.1 20 OK"[..],
            b"HTTP/1.1 2000",
            b"HTTP/1.1 600 Weird",
            b"HTTP/1.1  200",
            b"http/1.1 200",
            b"ICY 200 OK",
        ] {
            assert_eq!(parse_status_line(bad), Err(Reason::BadResponse));
        }
    }

    // --- https ----------------------------------------------------------------------------------

    /// A private CA, and a TLS server on 127.0.0.1 with a certificate for `name` that it issued.
    async fn https_server(name: &str) -> (SocketAddr, RootCertStore) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (conn, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(conn).await {
                        read_head(&mut tls).await;
                        let _ = tls.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        (addr, roots)
    }

    #[tokio::test]
    async fn https_passes_when_the_certificate_chains_to_a_trusted_ca() {
        let (addr, roots) = https_server("127.0.0.1").await;
        let p = probe("app", ProbeKind::Https, &format!("https://{addr}/health"));
        let trusting = Arc::new(tls_client_config(roots).unwrap());
        assert_eq!(run_with(&p, None, Some(&trusting)).await.reason, Reason::Ok);
    }

    #[tokio::test]
    async fn https_fails_on_a_certificate_that_the_system_does_not_trust() {
        let (addr, _roots) = https_server("127.0.0.1").await;
        let p = probe("app", ProbeKind::Https, &format!("https://{addr}/health"));
        assert_eq!(run_once(&p).await.reason, Reason::Tls);
    }

    #[tokio::test]
    async fn https_fails_on_a_trusted_certificate_for_another_address() {
        let (addr, roots) = https_server("127.0.0.9").await;
        let p = probe("app", ProbeKind::Https, &format!("https://{addr}/health"));
        let trusting = Arc::new(tls_client_config(roots).unwrap());
        assert_eq!(
            run_with(&p, None, Some(&trusting)).await.reason,
            Reason::Tls
        );
    }

    // --- icmp -----------------------------------------------------------------------------------

    #[tokio::test]
    async fn icmp_echo_to_loopback_passes() {
        let outcome = run_once(&icmp("127.0.0.1")).await;
        assert_eq!(outcome.reason, Reason::Ok);
        let mut p = icmp("127.0.0.1");
        p.source = Some("127.0.0.3".parse().unwrap());
        assert_eq!(run_once(&p).await.reason, Reason::Ok);
    }

    #[test]
    fn icmp_uses_a_datagram_socket_where_ping_group_range_allows_it() {
        let ns = Netns::new();
        ns.sysctl("net.ipv4.ping_group_range=0 2147483647");
        let kinds = [IcmpSocket::Datagram, IcmpSocket::Raw];
        let (v4, v6) = ns.block_on(|| async {
            (
                ping("127.0.0.1".parse().unwrap(), Origin::default(), &kinds).await,
                ping("::1".parse().unwrap(), Origin::default(), &kinds).await,
            )
        });
        assert_eq!(v4, Ok(IcmpSocket::Datagram));
        assert_eq!(v6, Ok(IcmpSocket::Datagram));
    }

    #[test]
    fn icmp_falls_back_to_a_raw_socket_where_datagram_ones_are_not_allowed() {
        let ns = Netns::new();
        ns.sysctl("net.ipv4.ping_group_range=1 0");
        let kinds = [IcmpSocket::Datagram, IcmpSocket::Raw];
        let (v4, v6) = ns.block_on(|| async {
            (
                ping("127.0.0.1".parse().unwrap(), Origin::default(), &kinds).await,
                ping("::1".parse().unwrap(), Origin::default(), &kinds).await,
            )
        });
        assert_eq!(v4, Ok(IcmpSocket::Raw));
        assert_eq!(v6, Ok(IcmpSocket::Raw));
    }

    #[test]
    fn icmp_into_a_black_hole_times_out_and_without_a_route_is_unreachable() {
        let ns = Netns::with_black_hole();
        let mut lost = icmp("192.0.2.1");
        lost.timeout = ms(200);
        let (lost, unreachable) = ns
            .block_on(|| async { (run_once(&lost).await, run_once(&icmp("198.51.100.1")).await) });
        assert_eq!(lost.reason, Reason::Timeout);
        assert_eq!(unreachable.reason, Reason::Unreachable);
    }

    #[test]
    fn echo_requests_carry_a_valid_checksum_and_match_only_their_reply() {
        let request = echo_request(false, 0x1234, 7, 99);
        assert_eq!(internet_checksum(&request), 0);
        let mut reply = request;
        reply[0] = ICMP_ECHO_REPLY;
        assert!(is_our_reply(&reply, false, Some(0x1234), 7, 99));
        assert!(is_our_reply(&reply, false, None, 7, 99));
        assert!(!is_our_reply(&reply, false, Some(0x1235), 7, 99));
        assert!(!is_our_reply(&reply, false, None, 8, 99));
        assert!(!is_our_reply(&reply, false, None, 7, 100));
        assert!(!is_our_reply(&request, false, None, 7, 99));
        assert!(!is_our_reply(&reply[..10], false, None, 7, 99));
        assert_eq!(strip_ipv4_header(&[0x45; 19]), None);
        assert_eq!(strip_ipv4_header(&[0x44; 30]), None);
    }

    // --- any input ------------------------------------------------------------------------------

    #[test]
    fn malformed_targets_fail_without_panicking() {
        // Some of these reach the resolver: in an empty namespace its queries cannot leave.
        let ns = Netns::new();
        let odd = [
            "",
            ":",
            "[",
            "]:80",
            "[::1]:",
            "host:99999",
            "http://",
            "https://[::1]:0/",
            "1.2.3.4.5",
            "\u{0}",
            "ünïcödé:80",
            "http://a b/",
        ];
        ns.block_on(|| async {
            for kind in ProbeKind::ALL {
                for target in odd {
                    let mut p = probe("odd", *kind, target);
                    p.timeout = ms(300);
                    let outcome = run_once(&p).await;
                    assert!(!outcome.ok, "{kind} {target:?}");
                }
            }
        });
    }

    #[test]
    fn every_reason_has_its_own_listed_label() {
        let all = [
            Reason::Ok,
            Reason::Timeout,
            Reason::Refused,
            Reason::Unreachable,
            Reason::BadStatus(503),
            Reason::Resolve,
            Reason::Tls,
            Reason::Io,
            Reason::BadResponse,
        ];
        let labels: Vec<&str> = all.iter().map(Reason::as_str).collect();
        assert_eq!(labels, Reason::LABELS);
    }

    // --- the scheduler --------------------------------------------------------------------------

    fn every(name: &str, interval: Duration) -> Job {
        let mut p = tcp("127.0.0.1:1");
        p.name = name.to_string();
        p.interval = interval;
        p.timeout = interval;
        p.into()
    }

    /// A runner that passes at once and counts runs in flight (max seen in `peak`), taking `takes`.
    fn fake_runner(takes: Duration, peak: Arc<AtomicUsize>) -> Runner {
        let in_flight = Arc::new(AtomicUsize::new(0));
        Arc::new(move |_probe| -> RunFuture {
            let (in_flight, peak) = (Arc::clone(&in_flight), Arc::clone(&peak));
            Box::pin(async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(takes).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                Outcome::new(Reason::Ok, takes)
            })
        })
    }

    fn drain(rx: &mut mpsc::Receiver<ProbeResult>) -> Vec<(String, Instant)> {
        let mut got = Vec::new();
        while let Ok((key, _, at)) = rx.try_recv() {
            got.push((key.to_string(), at));
        }
        got
    }

    fn times_of(results: &[(String, Instant)], name: &str) -> Vec<Instant> {
        results
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, at)| *at)
            .collect()
    }

    fn assert_gaps(times: &[Instant], gap: Duration) {
        for pair in times.windows(2) {
            assert_eq!(pair[1] - pair[0], gap, "{times:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn three_probes_every_50ms_report_ten_times_each_in_half_a_second() {
        let (tx, mut rx) = mpsc::channel(1024);
        let t0 = Instant::now();
        let probes = [every("a", ms(50)), every("b", ms(50)), every("c", ms(50))];
        let _running =
            TargetProbes::start_with(&probes, tx, 64, fake_runner(ms(0), Arc::default()));
        tokio::time::sleep(ms(600)).await;
        let results: Vec<_> = drain(&mut rx)
            .into_iter()
            .filter(|(_, at)| *at < t0 + ms(500))
            .collect();
        for name in ["a", "b", "c"] {
            let times = times_of(&results, name);
            assert_eq!(times.len(), 10, "{name}: {times:?}");
            assert!(times[0] - t0 < ms(50));
            assert_gaps(&times, ms(50));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn replace_keeps_unchanged_schedules_restarts_changed_ones_and_stops_removed_ones() {
        let (tx, mut rx) = mpsc::channel(1024);
        let mut running = TargetProbes::start_with(
            &[every("a", ms(50)), every("b", ms(50)), every("c", ms(50))],
            tx,
            64,
            fake_runner(ms(0), Arc::default()),
        );
        // Not a multiple of the interval: a restarted "a" would land off its old grid.
        tokio::time::sleep(ms(133)).await;
        running.replace(&[every("a", ms(50)), every("c", ms(100)), every("d", ms(50))]);
        let replaced_at = Instant::now();
        tokio::time::sleep(ms(500)).await;
        let results = drain(&mut rx);

        let a = times_of(&results, "a");
        assert!(a.len() >= 12, "{a:?}");
        assert_gaps(&a, ms(50));
        assert!(times_of(&results, "b").iter().all(|t| *t <= replaced_at));
        let c_after: Vec<_> = times_of(&results, "c")
            .into_iter()
            .filter(|t| *t > replaced_at)
            .collect();
        assert_eq!(c_after.len(), 5, "{c_after:?}");
        assert_gaps(&c_after, ms(100));
        assert_eq!(times_of(&results, "d").len(), 10);
        assert_eq!(running.names().collect::<Vec<_>>(), ["a", "c", "d"]);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_handle_stops_every_probe() {
        let (tx, mut rx) = mpsc::channel(1024);
        let running = TargetProbes::start_with(
            &[every("a", ms(50)), every("b", ms(50))],
            tx,
            64,
            fake_runner(ms(10), Arc::default()),
        );
        tokio::time::sleep(ms(200)).await;
        drop(running);
        let dropped_at = Instant::now();
        // Every sender is gone once the aborted tasks are: the channel ends.
        let rest = tokio::time::timeout(ms(1000), async {
            let mut rest = Vec::new();
            while let Some((_, _, at)) = rx.recv().await {
                rest.push(at);
            }
            rest
        })
        .await
        .expect("the probe tasks did not stop");
        assert!(rest.iter().all(|at| *at <= dropped_at));
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_the_cap_run_at_once() {
        let (tx, mut rx) = mpsc::channel(1024);
        let peak = Arc::new(AtomicUsize::new(0));
        let probes: Vec<Job> = (0..5).map(|i| every(&format!("p{i}"), ms(50))).collect();
        let _running = TargetProbes::start_with(&probes, tx, 2, fake_runner(ms(30), peak.clone()));
        tokio::time::sleep(ms(500)).await;
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        // 2 slots × 500 ms / 30 ms per run: the slots stay busy while the probes are behind.
        let n = drain(&mut rx).len();
        assert!((30..=34).contains(&n), "{n}");
    }

    #[test]
    fn first_runs_spread_over_the_first_interval() {
        let interval = Duration::from_secs(1);
        let mut buckets = [0usize; 10];
        for i in 0..1000 {
            let offset = first_offset(&format!("probe-{i}"), interval);
            assert!(offset < interval);
            buckets[(offset.as_millis() / 100) as usize] += 1;
        }
        // 100 expected per 100 ms; a clump would show as a bucket far above it.
        assert!(
            buckets.iter().all(|n| (50..=150).contains(n)),
            "{buckets:?}"
        );
        assert_eq!(first_offset("db", interval), first_offset("db", interval));
        assert_eq!(first_offset("db", Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test]
    async fn real_probes_run_at_about_their_rate() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                drop(conn);
            }
        });
        let probes: Vec<Job> = ["a", "b", "c"]
            .iter()
            .map(|name| {
                let mut p = every(name, ms(50));
                p.probe.target = target.clone();
                p
            })
            .collect();
        let (tx, mut rx) = mpsc::channel(1024);
        let running = TargetProbes::start(&probes, tx);
        tokio::time::sleep(ms(500)).await;
        drop(running);
        let mut results = Vec::new();
        while let Some(r) = rx.recv().await {
            results.push(r);
        }
        for name in ["a", "b", "c"] {
            let mine: Vec<_> = results.iter().filter(|(k, _, _)| k.probe == name).collect();
            // 10 on an idle machine; a loaded CI machine may skip a tick or two.
            assert!((6..=11).contains(&mine.len()), "{name}: {}", mine.len());
            assert!(mine.iter().all(|(_, o, _)| o.reason == Reason::Ok));
        }
    }
}
