//! Entry points for the fuzz targets (`tests/fuzz`) and their replay test: the parts of agentd
//! that read bytes from others, driven without sockets, a TUN device or the event loop. Not an
//! API: hidden from the docs, used by nothing else. Each function takes any bytes and panics
//! only where an invariant breaks.
//!
//! - [`uapi`]: a client's requests on the UAPI socket (`wg show`), through the real serving
//!   loop over an in-memory stream.
//! - [`wireguard`]: the receive path of a link: boringtun's decapsulation under fixed keys,
//!   the allowed-IP check, and the coalescing of what was kept into TUN writes.
//! - [`control`]: a request on the control socket, through hyper, the table of endpoints,
//!   access, body parsing and the handlers of the event loop, on a shell of the example AWS
//!   gateway whose adapters are absent.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use boringtun::noise::{Tunn, TunnResult};
use ipnetwork::IpNetwork;
use isthmus_offload::{split, VnetHdr};

use crate::tunnel::counters::Counters;
use crate::tunnel::uapi::{self, Snapshot};
use crate::tunnel::worker::{self, Keys, Received, ToTun};

/// A private key of the fuzzers' link, in the `get` answer of [`uapi`].
const PRIVATE_KEY: [u8; 32] = [0x41; 32];
/// The receiving side's key ([`wireguard`]).
const OUR_KEY: [u8; 32] = [0x11; 32];
/// The sending peer's key ([`wireguard`]).
const PEER_KEY: [u8; 32] = [0x22; 32];

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime for the fuzz targets");
}

fn snapshot() -> Snapshot {
    Snapshot {
        private_key: PRIVATE_KEY,
        listen_port: 51820,
        fwmark: 0,
        peer_public_key: [0x42; 32],
        preshared_key: Some([0x43; 32]),
        endpoint: Some(SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 51820))),
        last_handshake: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        tx_bytes: 1,
        rx_bytes: 2,
        persistent_keepalive: Some(25),
        allowed_ips: vec![IpNetwork::V4("10.2.0.0/16".parse().expect("a network"))],
    }
}

/// The bytes a client writes to the UAPI socket; the answer is every request's, in order.
///
/// Invariants: the answer is whole answers only, each ending `errno=N` and a blank line, at
/// most one per request line; the private key appears once per `get` answer and nowhere else.
pub fn uapi(data: &[u8]) {
    let mut out = Vec::new();
    RUNTIME.with(|rt| {
        rt.block_on(uapi::serve_stream(
            data,
            &mut out,
            &snapshot,
            Duration::from_secs(5),
            "fuzz0",
        ))
    });
    let text = String::from_utf8(out).expect("answers are text");
    let answers: Vec<&str> = text.split_inclusive("\n\n").collect();
    let lines = data.iter().filter(|&&b| b == b'\n').count();
    assert!(answers.len() <= lines.max(1), "{} answers", answers.len());
    let hex_key: String = PRIVATE_KEY.iter().map(|b| format!("{b:02x}")).collect();
    for a in &answers {
        assert!(a.ends_with("\n\n"), "a whole answer: {a:?}");
        let last = a.trim_end().lines().last().unwrap_or_default();
        assert!(last.starts_with("errno="), "ends with errno: {a:?}");
        let gets = usize::from(last == "errno=0");
        assert_eq!(
            a.matches(&hex_key).count(),
            gets,
            "the key only in a get answer"
        );
    }
}

/// A sending peer and a receiving link with an established session, made once per thread (a
/// handshake costs four X25519 operations, which would cut the rate of the fuzzer 50-fold).
struct Pair {
    peer: Tunn,
    link: Tunn,
    /// Buffers reused across inputs (empty between them), as the worker's are: allocating
    /// the 8 MiB arena per input was most of the cost.
    to_tun: ToTun,
    scratch: Vec<u8>,
    sealed: Vec<u8>,
}

impl Pair {
    fn new() -> Pair {
        let public = |k: [u8; 32]| {
            boringtun::x25519::PublicKey::from(&boringtun::x25519::StaticSecret::from(k)).to_bytes()
        };
        let keys = |private: [u8; 32], peer: [u8; 32]| Keys {
            private,
            peer_public: public(peer),
            preshared: Some([0x33; 32]),
            keepalive: None,
        };
        let mut peer = worker::new_tunn(&keys(PEER_KEY, OUR_KEY));
        let mut link = worker::new_tunn(&keys(OUR_KEY, PEER_KEY));
        let mut a = vec![0u8; 2048];
        let mut b = vec![0u8; 2048];
        let TunnResult::WriteToNetwork(init) = peer.format_handshake_initiation(&mut a, false)
        else {
            panic!("a handshake initiation");
        };
        let TunnResult::WriteToNetwork(resp) = link.decapsulate(None, init, &mut b) else {
            panic!("a handshake response");
        };
        let resp = resp.to_vec();
        // The keepalive that confirms the session to the responder.
        if let TunnResult::WriteToNetwork(keepalive) = peer.decapsulate(None, &resp, &mut a) {
            let keepalive = keepalive.to_vec();
            let _ = link.decapsulate(None, &keepalive, &mut b);
        }
        Pair {
            peer,
            link,
            to_tun: ToTun::new(),
            scratch: vec![0u8; 65535 + 256],
            sealed: vec![0u8; 65535 + 256],
        }
    }
}

thread_local! {
    static PAIR: RefCell<Pair> = RefCell::new(Pair::new());
}

/// The peer's address on the underlay.
const FROM: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 51820);
/// The largest data message the link accepts (an MTU of 1420, as agentd's default).
const MAX_DATA: usize = 1420 + 32;

/// Datagrams from the network, each either sealed by the peer first or taken as they are:
/// chunks of `[mode, len_hi, len_lo, bytes…]`; mode 0 seals `bytes` (an inner IP packet) with
/// the session, anything else sends `bytes` raw.
///
/// Invariants: a raw datagram (which nobody sealed) never yields a packet; a kept packet is
/// the one sealed (up to its IP length) and its source is allowed; the TUN writes made of the kept packets split back into exactly them.
pub fn wireguard(data: &[u8]) {
    receive_all(data);
}

/// [`wireguard`], returning how many packets were kept for the TUN.
fn receive_all(data: &[u8]) -> usize {
    let allowed: Vec<IpNetwork> = vec![
        "10.2.0.0/16".parse().expect("a network"),
        "fd00:2::/64".parse().expect("a network"),
    ];
    let counters = Counters::default();
    let mut kept: Vec<Vec<u8>> = Vec::new();
    let mut flushed = 0;
    let mut again = Vec::new();
    PAIR.with(|pair| {
        let pair = &mut *pair.borrow_mut();
        let Pair {
            peer,
            link,
            to_tun,
            scratch,
            sealed,
        } = pair;
        // Empty after every input, unless the last one panicked half-way (in the replay test).
        to_tun.flush_to(&counters, |_| {});
        let mut rest = data;
        while let [mode, hi, lo, tail @ ..] = rest {
            let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
            let (bytes, next) = tail.split_at(len);
            rest = next;
            let datagram = if *mode == 0 {
                match peer.encapsulate(bytes, sealed) {
                    TunnResult::WriteToNetwork(d) => d,
                    _ => continue,
                }
            } else {
                bytes
            };
            if to_tun.is_full() {
                to_tun.flush_to(&counters, |_| {});
                flushed += kept.len();
                kept.clear();
            }
            let slot = to_tun.next_slot();
            let received = worker::receive(
                link,
                &allowed,
                MAX_DATA,
                &counters,
                datagram,
                FROM,
                slot,
                scratch,
                |_| {},
            );
            if let Received::Packet(len) = received {
                assert_eq!(*mode, 0, "a datagram nobody sealed gave a packet");
                // boringtun cuts the padding after the IP packet's own length.
                let packet = &slot[..len];
                assert!(bytes.starts_with(packet), "the packet is the one sealed");
                let src = source(packet).expect("boringtun found a source");
                assert!(allowed.iter().any(|n| n.contains(src)), "{src} is allowed");
                kept.push(packet.to_vec());
                to_tun.commit(len);
            }
        }
        to_tun.flush_to(&counters, |write| {
            let hdr = VnetHdr::parse(write).expect("a TUN write starts with its header");
            let mut packet = write[VnetHdr::LEN..].to_vec();
            split(&hdr, &mut packet, |s| again.push(s.to_vec())).expect("a TUN write splits");
        });
    });
    let total = flushed + kept.len();
    // Coalescing changes only lengths, sequence numbers and checksums of what it merges, which
    // split restores; everything else is written as it came. Writes come in the order of their
    // first packet, so a flow's order is kept, not the order across flows.
    // Like Linux GRO, merging does not compare urgent pointers, which mean nothing without the
    // URG flag (a URG segment is never merged): a stray one is not kept. Nor the IPv4 IDs of
    // packets that may not be fragmented (DF, RFC 6864): split numbers them from the head's.
    let by_flow = |mut packets: Vec<Vec<u8>>| {
        packets.sort_by_key(|p| flow(p));
        packets
            .iter_mut()
            .for_each(|p| without_meaningless_fields(p));
        packets
    };
    let (a, k) = (by_flow(again), by_flow(kept));
    assert!(a == k, "split(coalesce(kept)) == kept, per flow");
    total
}

/// What tells one flow from another: addresses, protocol and (for TCP and UDP without IPv4
/// options or IPv6 extension headers) ports.
fn flow(packet: &[u8]) -> Vec<u8> {
    let (addrs, proto, l4) = match packet.first().map(|b| b >> 4) {
        Some(4) => (12..20, 9, usize::from(packet[0] & 0x0f) * 4),
        Some(6) => (8..40, 6, 40),
        _ => return Vec::new(),
    };
    let mut key = packet.get(addrs).unwrap_or_default().to_vec();
    key.extend(packet.get(proto));
    key.extend(packet.get(l4..l4 + 4).unwrap_or_default());
    key
}

/// Zeroes what carries no meaning and the checksums over it: the urgent pointer of a TCP
/// packet without URG, the ID of an IPv4 packet with DF.
fn without_meaningless_fields(packet: &mut [u8]) {
    let l4 = match packet.first().map(|b| b >> 4) {
        Some(4) if packet.get(9) == Some(&6) => usize::from(packet[0] & 0x0f) * 4,
        Some(6) if packet.get(6) == Some(&6) => 40,
        _ => return,
    };
    if packet[0] >> 4 == 4 && packet.get(6).is_some_and(|f| f & 0x40 != 0) {
        packet[4..6].fill(0);
        packet[10..12].fill(0);
    }
    if let Some(tcp) = packet.get_mut(l4..l4 + 20) {
        if tcp[13] & 0x20 == 0 {
            tcp[16..20].fill(0);
        }
    }
}

/// The source address of an IP packet.
fn source(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        6 => {
            let b: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(mode: u8, bytes: &[u8]) -> Vec<u8> {
        let mut c = vec![mode];
        c.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        c.extend_from_slice(bytes);
        c
    }

    /// A UDP packet from `src` to 10.1.0.1 with a valid IPv4 header checksum.
    fn udp_from(src: [u8; 4]) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 32, 0, 1, 0x40, 0, 64, 17, 0, 0, src[0], src[1], src[2], src[3], 10, 1, 0,
            1, 0x30, 0x39, 0x30, 0x39, 0, 12, 0, 0, b'p', b'i', b'n', b'g',
        ];
        let c = isthmus_offload::internet_checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn the_receive_path_keeps_sealed_packets_from_allowed_sources_only() {
        assert_eq!(receive_all(&chunk(0, &udp_from([10, 2, 0, 1]))), 1);
        assert_eq!(receive_all(&chunk(0, &udp_from([10, 1, 0, 1]))), 0);
        let mut two = chunk(0, &udp_from([10, 2, 0, 1]));
        two.extend(chunk(0, &udp_from([10, 2, 9, 9])));
        assert_eq!(receive_all(&two), 2);
        // The same bytes, not sealed: garbage to boringtun.
        assert_eq!(receive_all(&chunk(1, &udp_from([10, 2, 0, 1]))), 0);
        // An IPv4 header that states a total length of 0: boringtun hands over a stub.
        let mut stub = udp_from([10, 2, 0, 1]);
        stub[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(receive_all(&chunk(0, &stub)), 0);
    }

    #[test]
    fn control_requests_reach_the_handlers_with_the_callers_access() {
        let req = |who: u8, r: &str| {
            let mut d = vec![who];
            d.extend_from_slice(r.as_bytes());
            control_status(&d)
        };
        let get = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: agentd\r\n\r\n");
        let post = |path: &str, body: &str| {
            format!(
                "POST {path} HTTP/1.1\r\nhost: agentd\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        assert_eq!(req(0, &get("/v1/version")), Some(200));
        assert_eq!(req(0, &get("/v1/status")), Some(200));
        assert_eq!(req(1, &get("/v1/status")), Some(403));
        assert_eq!(req(0, &get("/v1/nothing")), Some(404));
        // The handler answers: the link exists (200) or not (404), the body is checked (400).
        let failover = "/v1/groups/oci-vcn/failover";
        assert_eq!(
            req(0, &post(failover, "{\"to\": \"nowhere\"}")).map(|s| s / 100),
            Some(4)
        );
        assert_eq!(req(0, &post(failover, "not json")), Some(400));
        assert_eq!(req(0, &post("/v1/links/internet/drain", "")), Some(200));
        assert_eq!(req(0, &post("/v1/links/internet/undrain", "")), Some(200));
        assert_eq!(req(0, &post("/v1/links/nowhere/drain", "")), Some(404));
    }

    #[test]
    fn uapi_answers_a_get_with_the_key_and_refuses_a_set() {
        // The invariants inside fail the test if the answers are not as described.
        uapi(b"get=1\n\nset=1\nlisten_port=1\n\n");
        let mut out = Vec::new();
        RUNTIME.with(|rt| {
            rt.block_on(uapi::serve_stream(
                &b"get=1\n\nset=1\nlisten_port=1\n\n"[..],
                &mut out,
                &snapshot,
                Duration::from_secs(5),
                "fuzz0",
            ))
        });
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("private_key=4141"), "{text}");
        assert!(text.ends_with("errno=0\n\nerrno=-95\n\n"), "{text}");
    }
}

/// Key files of the control target's config, in memory: nothing is read from disk.
struct KeyFiles;

/// The secrets of [`KeyFiles`]; none may ever appear in an answer.
const CONTROL_SECRETS: [&str; 3] = [
    "YEocP0e2o1WT5GlvBvQzVF7EeR6z1aCk7bhV6GRfIUg=",
    "FIXzxMsSVVSrEjLoHBn8hO1w9+y6rCiR4zNE9UvzmJM=",
    "q6OmC0Sb8PKGzDSLt4wGsxZEZVhGC1mbhHJmRu5pZ2s=",
];

impl isthmus_config::FileReader for KeyFiles {
    fn metadata(&self, _path: &std::path::Path) -> std::io::Result<isthmus_config::FileMeta> {
        Ok(isthmus_config::FileMeta {
            is_file: true,
            mode: 0o600,
        })
    }

    fn read(&self, path: &std::path::Path) -> std::io::Result<Vec<u8>> {
        let name = path.to_string_lossy();
        let text = if name.ends_with(".psk") {
            CONTROL_SECRETS[1].to_string()
        } else if name.contains("tsig") {
            format!(
                "key \"failover-key\" {{ algorithm hmac-sha256; secret \"{}\"; }};\n",
                CONTROL_SECRETS[2]
            )
        } else {
            CONTROL_SECRETS[0].to_string()
        };
        Ok(text.into_bytes())
    }
}

/// The event loop's side of the control target: a shell and the ends of its channels.
struct Control {
    shell: crate::daemon::shell::Shell,
    commands: tokio::sync::mpsc::Receiver<crate::control::Command>,
    ctx: std::sync::Arc<crate::control::http::Context>,
    /// What the shell tells itself (a reload's loaded config): dropped, with any reply in it.
    inputs: tokio::sync::mpsc::Receiver<crate::daemon::input::Input>,
    _events: tokio::sync::mpsc::Receiver<isthmus_api::EventRecord>,
}

impl Control {
    fn new() -> Control {
        use tokio::sync::{mpsc, watch};
        let text = include_str!("../../config/aws-gateway.toml");
        let loaded = isthmus_config::parse_str_with(
            text,
            std::path::Path::new("/fuzz/agentd.toml"),
            &isthmus_config::LoadOptions::default(),
            &KeyFiles,
        )
        .expect("the example config is valid");
        let config = std::sync::Arc::new(loaded.config);
        let running = crate::daemon::reload::Running {
            config: config.clone(),
            warnings: Vec::new(),
            fingerprint: "fuzz".into(),
            loaded_at: crate::clock::now(),
        };
        // Adapters that are gone: a command that needs one gets no answer, at once.
        let (inputs_tx, inputs) = mpsc::channel(1024);
        let (_, metrics_listener) = watch::channel(isthmus_api::MetricsListener {
            listen: "127.0.0.1:0".into(),
            listening: false,
            error: None,
        });
        let adapters = crate::daemon::shell::Adapters {
            links: mpsc::unbounded_channel().0,
            routes: mpsc::unbounded_channel().0,
            actions: mpsc::unbounded_channel().0,
            backends: Box::new(|_| std::sync::Arc::new(crate::actions::Backends::default())),
            resolver: mpsc::unbounded_channel().0,
            targets: mpsc::unbounded_channel().0,
            drill: mpsc::unbounded_channel().0,
            ha: mpsc::unbounded_channel().0,
            transport: Box::new(NoTransport),
            loader: std::sync::Arc::new(|| Err(isthmus_config::Report::new(Vec::new()))),
            on_config: Box::new(|_, _| {}),
            metrics_listener,
            on_ready: Box::new(|| {}),
            watchdog: None,
            state: crate::state::Saver::detached(),
        };
        let (writer, events) = mpsc::channel(crate::events::WRITER_QUEUE);
        let shell = crate::daemon::shell::Shell::new(
            running,
            crate::metrics::Metrics::new(),
            Vec::new(),
            writer,
            adapters,
            inputs_tx,
            crate::clock::now(),
        );
        let (commands_tx, commands) = mpsc::channel(64);
        let (_, policy) = watch::channel(crate::control::Policy::from_config(&config.control));
        let ctx = std::sync::Arc::new(crate::control::http::Context {
            policy,
            commands: commands_tx,
            head_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            requests: prometheus::IntCounterVec::new(
                prometheus::Opts::new("fuzz_requests_total", "requests"),
                &["endpoint", "status"],
            )
            .expect("a family"),
            half_close: true,
        });
        Control {
            shell,
            commands,
            ctx,
            inputs,
            _events: events,
        }
    }
}

/// Probe datagrams go nowhere.
struct NoTransport;

impl crate::probe::peer::ProbeTransport for NoTransport {
    fn sync(
        &mut self,
        _links: &[isthmus_config::Link],
        _running: &dyn Fn(&str) -> bool,
        _port: u16,
    ) -> Vec<String> {
        Vec::new()
    }

    fn send(&mut self, _link: &str, _bytes: &[u8]) -> bool {
        false
    }
}

thread_local! {
    static CONTROL: RefCell<Option<Control>> = const { RefCell::new(None) };
}

/// One connection to the control socket: the first byte chooses the caller (even: root, odd: a
/// user in no group), the rest is what it sends. The shell lives as long as the process (a new
/// one per input would cost more than the request), so state a request leaves (a pin, a drain)
/// is seen by the next.
///
/// Invariants: every answer is an HTTP/1.1 response; a caller without access never gets a 2xx;
/// no answer contains a key from the config's key files.
pub fn control(data: &[u8]) {
    let _ = control_status(data);
}

/// [`control`], returning the answer's status (`None`: no caller byte, or no answer).
fn control_status(data: &[u8]) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (&who, request) = data.split_first()?;
    let peer = crate::control::peer::Peer {
        uid: if who % 2 == 0 { 0 } else { 65534 },
        gid: 65534,
        pid: Some(1),
        groups: Vec::new(),
    };
    let response = CONTROL.with(|c| {
        let mut c = c.borrow_mut();
        let c = c.get_or_insert_with(Control::new);
        RUNTIME.with(|rt| {
            rt.block_on(async {
                let (mut client, server) = tokio::io::duplex(16 * 1024);
                let serve =
                    crate::control::http::serve_connection(server, peer, c.ctx.clone(), || {});
                let talk = async {
                    let _ = client.write_all(request).await;
                    let _ = client.shutdown().await;
                    let mut response = Vec::new();
                    let _ = client.read_to_end(&mut response).await;
                    response
                };
                let shell = &mut c.shell;
                let commands = &mut c.commands;
                let inputs = &mut c.inputs;
                let event_loop = async {
                    loop {
                        tokio::select! {
                            Some(command) = commands.recv() => {
                                crate::daemon::commands::handle(shell, command, crate::clock::now());
                            }
                            Some(input) = inputs.recv() => drop(input),
                        }
                    }
                };
                tokio::select! {
                    (_, response) = async { tokio::join!(serve, talk) } => response,
                    () = event_loop => unreachable!("the loop never ends"),
                }
            })
        })
    });
    if response.is_empty() {
        return None; // hyper closed a connection it could not parse a request from
    }
    let text = String::from_utf8_lossy(&response);
    // hyper answers a request in the version it came in.
    assert!(
        text.starts_with("HTTP/1.1 ") || text.starts_with("HTTP/1.0 "),
        "an HTTP response: {text:?}"
    );
    let status: u16 = text[9..12].parse().expect("a status code");
    if who % 2 == 1 {
        assert!(!(200..300).contains(&status), "no access, yet {status}");
    }
    for secret in CONTROL_SECRETS {
        assert!(!text.contains(&secret[..20]), "a key in an answer");
    }
    Some(status)
}
