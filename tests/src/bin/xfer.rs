//! A test peer for data through tunnels, run inside a namespace with `ip netns exec`:
//!
//! - `xfer serve ADDR`: accept one TCP connection, read to EOF, print `<bytes> <hash>`; on
//!   stderr `gap_ms <N>`, the longest wait between two reads that brought data (a stall).
//! - `xfer send ADDR BYTES SEED [RATE]`: send BYTES pseudo-random bytes (at RATE bytes a
//!   second if given), print `<bytes> <hash>`; on stderr `mss <first> <last>`, the connection's
//!   MSS (`TCP_MAXSEG`) after the handshake and at the end.
//! - `xfer fuzz ADDR COUNT SEED [PEER_PUBLIC_KEY_BASE64]`: send COUNT hostile UDP datagrams to
//!   ADDR: random bytes of random sizes, WireGuard-typed garbage, truncated and oversized
//!   datagrams, and (given the peer's public key) real handshake initiations from an unknown key,
//!   mutated copies of them and replays. Print how many were sent.
//!
//! The hash is FNV-1a 64 over the stream: both ends must print the same line.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;

struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, data: &[u8]) {
        for b in data {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// xorshift64*: deterministic bytes from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    println!("listening");
    std::io::stdout().flush()?;
    let (mut stream, _) = listener.accept()?;
    let mut buf = vec![0u8; 256 * 1024];
    let (mut total, mut hash) = (0u64, Fnv::new());
    let (mut last, mut gap) = (None::<std::time::Instant>, std::time::Duration::ZERO);
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let now = std::time::Instant::now();
        if let Some(last) = last {
            gap = gap.max(now - last);
        }
        last = Some(now);
        hash.update(&buf[..n]);
        total += n as u64;
    }
    eprintln!("gap_ms {}", gap.as_millis());
    println!("{total} {:016x}", hash.0);
    Ok(())
}

fn send(addr: SocketAddr, bytes: u64, seed: u64, rate: Option<u64>) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    let first = mss(&stream);
    let mut rng = Rng(seed | 1);
    // Paced sends go in 64 KiB pieces, so the pace holds within a few milliseconds.
    let mut buf = vec![
        0u8;
        if rate.is_some() {
            64 * 1024
        } else {
            256 * 1024
        }
    ];
    let (mut left, mut hash) = (bytes, Fnv::new());
    let start = std::time::Instant::now();
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        stream.write_all(&buf[..n])?;
        hash.update(&buf[..n]);
        left -= n as u64;
        if let Some(rate) = rate {
            let due = std::time::Duration::from_secs_f64((bytes - left) as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let last = mss(&stream);
    stream.shutdown(std::net::Shutdown::Write)?;
    // Wait for the receiver to close, so that everything was read before we report.
    let _ = stream.read(&mut [0u8; 1]);
    eprintln!("mss {first} {last}");
    println!("{bytes} {:016x}", hash.0);
    Ok(())
}

/// The connection's current MSS (`TCP_MAXSEG`), 0 if the kernel does not say.
fn mss(stream: &TcpStream) -> i32 {
    use std::os::fd::AsRawFd;
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: passes a live c_int and its size.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        v
    } else {
        0
    }
}

fn fuzz(addr: SocketAddr, count: u64, seed: u64, peer: Option<[u8; 32]>) -> std::io::Result<()> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("addr");
    let socket = UdpSocket::bind(bind)?;
    let mut rng = Rng(seed | 1);
    let mut buf = vec![0u8; 65507];
    // Real initiations from a key the target does not know, to mutate and replay.
    let mut valid: Vec<Vec<u8>> = Vec::new();
    if let Some(peer) = peer {
        let mut secret = [0u8; 32];
        rng.fill(&mut secret);
        let mut tunn = boringtun::noise::Tunn::new(
            boringtun::x25519::StaticSecret::from(secret),
            boringtun::x25519::PublicKey::from(peer),
            None,
            None,
            (rng.next() as u32) >> 8,
            None,
        );
        let mut out = [0u8; 256];
        for _ in 0..4 {
            if let boringtun::noise::TunnResult::WriteToNetwork(p) =
                tunn.format_handshake_initiation(&mut out, true)
            {
                valid.push(p.to_vec());
            }
        }
    }
    let mut sent = 0u64;
    for i in 0..count {
        let len = match i % 8 {
            // Random bytes, random size.
            0 | 1 => {
                let n = rng.below(1600) as usize;
                rng.fill(&mut buf[..n]);
                n
            }
            // A WireGuard message type with garbage behind it, at the real sizes.
            2 | 3 => {
                let kind = 1 + rng.below(4) as u8;
                let n = match kind {
                    1 => 148,
                    2 => 92,
                    3 => 64,
                    _ => 32 + rng.below(1420) as usize,
                };
                rng.fill(&mut buf[..n]);
                buf[0] = kind;
                buf[1..4].fill(0);
                n
            }
            // Truncated headers.
            4 => {
                let n = rng.below(16) as usize;
                rng.fill(&mut buf[..n]);
                if n > 0 {
                    buf[0] = 1 + rng.below(4) as u8;
                }
                n
            }
            // Oversized: data messages larger than any 1420-byte tunnel MTU allows.
            5 => {
                let n = 1600 + rng.below(7400) as usize;
                rng.fill(&mut buf[..n]);
                buf[0] = 4;
                n
            }
            // Mutated real initiations, and exact replays.
            _ if !valid.is_empty() => {
                let v = &valid[rng.below(valid.len() as u64) as usize];
                buf[..v.len()].copy_from_slice(v);
                if i % 8 == 6 {
                    for _ in 0..1 + rng.below(4) {
                        let at = rng.below(v.len() as u64) as usize;
                        buf[at] ^= 1 << rng.below(8);
                    }
                }
                v.len()
            }
            _ => {
                let n = rng.below(200) as usize;
                rng.fill(&mut buf[..n]);
                n
            }
        };
        // Pace a little so that the receiver's socket buffer is not the only thing tested.
        if i % 512 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if socket.send_to(&buf[..len], addr).is_ok() {
            sent += 1;
        }
    }
    println!("{sent}");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let parse = |i: usize| -> Option<String> { args.get(i).cloned() };
    let result = match (
        parse(1).as_deref(),
        parse(2).and_then(|a| a.parse::<SocketAddr>().ok()),
    ) {
        (Some("serve"), Some(addr)) => serve(addr),
        (Some("send"), Some(addr)) => {
            let bytes = parse(3).and_then(|b| b.parse().ok()).unwrap_or(1 << 20);
            let seed = parse(4).and_then(|s| s.parse().ok()).unwrap_or(1);
            let rate = parse(5).and_then(|r| r.parse().ok());
            send(addr, bytes, seed, rate)
        }
        (Some("fuzz"), Some(addr)) => {
            use base64::Engine as _;
            let count = parse(3).and_then(|c| c.parse().ok()).unwrap_or(1000);
            let seed = parse(4).and_then(|s| s.parse().ok()).unwrap_or(1);
            let peer = parse(5).and_then(|k| {
                base64::engine::general_purpose::STANDARD
                    .decode(k)
                    .ok()
                    .and_then(|v| v.try_into().ok())
            });
            fuzz(addr, count, seed, peer)
        }
        _ => {
            eprintln!("usage: xfer serve ADDR | send ADDR BYTES SEED | fuzz ADDR COUNT SEED [PEER_PUBKEY]");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xfer: {e}");
            ExitCode::FAILURE
        }
    }
}
