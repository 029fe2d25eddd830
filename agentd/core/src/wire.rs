//! The peer probe wire format (docs/protocol.md), every version of it: bytes in, [`Packet`]
//! out, and back. The core stays free of dependencies, so the cryptography is the shell's: it
//! hands in an [`Authenticator`] (HMAC-SHA256 keyed by the two gateways' WireGuard keys in
//! agentd) and this module decides what the tag covers and compares tags in constant time.
//!
//! - **Version 1** is the 64-byte packet of agentd 0.1.0: a 32-byte header, 16 reserved
//!   bytes, a 16-byte tag over bytes 0..48. Version-1 receivers ignore bytes 25..28 and 32..48
//!   (the tag covers them), so byte 25 carries capability bits a released agentd never looks
//!   at: bit 0 says "I also speak version 2".
//! - **Version 2** keeps the same 32-byte header and follows it with an extensible tail of
//!   TLVs (type: 1 byte, length: 2 bytes, value) and the 16-byte tag over everything before
//!   it. Unknown types are skipped, so coming features travel without a new version; the
//!   smallest packet is 48 bytes. A padding TLV makes a datagram as large as a path-MTU probe
//!   needs, and a reply says which size it confirms.
//!
//! - The `SERVICE_CHECKS` TLV ([`tlv::SERVICE_CHECKS`]) carries the sender's service-check
//!   verdicts ([`PeerChecks`]): one state for the route groups over this link, and one per
//!   answer of every DNS group it serves.
//! - The `DRILL` TLV ([`tlv::DRILL`]) names the group a failover drill of the sender's moves,
//!   and the `ANSWER_PINS` TLV ([`tlv::ANSWER_PINS`]) lists the DNS groups the sender's
//!   operator pinned to an answer ([`AnswerPin`]), so that the peer publishes the same one.
//!
//! The version byte is inside what the tag covers, so one key serves every version: a packet
//! cannot be replayed as another version without breaking its tag.

pub use crate::checks::{CheckState, PeerChecks};
use crate::checks::{MAX_ANSWERS, MAX_DNS_GROUPS};
use crate::health::{Health, View};

/// The first four bytes of every probe.
pub const MAGIC: [u8; 4] = *b"ISTH";
/// Versions this module reads and writes.
pub const V1: u8 = 1;
pub const V2: u8 = 2;
/// The size of every version-1 packet.
pub const V1_LEN: usize = 64;
/// The header both versions share.
pub const HEADER_LEN: usize = 32;
/// The truncated tag at the end of every packet.
pub const TAG_LEN: usize = 16;
/// The smallest version-2 packet: a header, no TLV, a tag.
pub const V2_MIN_LEN: usize = HEADER_LEN + TAG_LEN;
/// The largest datagram (the UDP length field); the largest padded probe.
pub const MAX_LEN: usize = 65_535;
/// Capability bit (byte 25): the sender speaks version 2.
pub const CAP_V2: u8 = 1;
/// Capability bit (byte 25): the sender answers path-MTU probes ([`Kind::MtuProbe`]).
pub const CAP_PMTU: u8 = 2;
/// A TLV's type and length.
const TLV_HEADER: usize = 3;

/// Version-2 TLV type codes (the registry of docs/protocol.md). Codes not listed here are
/// skipped on receipt; 0x80..=0xFE are free for experiments, never assigned.
pub mod tlv {
    /// Padding: a value of any length, ignored, that makes the datagram as large as a path-MTU
    /// probe needs. A request that carries it asks for [`CONFIRMS_SIZE`] in the reply.
    pub const PAD: u8 = 0x01;
    /// In a reply: the size in bytes of the request datagram it answers (2 bytes, big-endian),
    /// so that the requester knows which probe size crossed the path.
    pub const CONFIRMS_SIZE: u8 = 0x02;
    /// The sender's service-check verdicts ([`super::PeerChecks`]): byte 0 the state over this
    /// link (0 none, 1 unknown, 2 pass, 3 fail), byte 1 the number of DNS groups (at most 64),
    /// then per group its id (4 bytes), its number of answers (1 byte, at most 32) and one
    /// state byte per answer.
    pub const SERVICE_CHECKS: u8 = 0x03;
    /// A failover drill of the sender's is in progress: byte 0 the length n of the drilled
    /// group's name (at most 64), then its n bytes of UTF-8.
    pub const DRILL: u8 = 0x04;
    /// The sender is one gateway of an HA pair: byte 0 its role (1 standby, 2 active, 3 unsure:
    /// it holds the role as far as it knows but cannot renew its lease), then
    /// the revision of the role's holder key (8 bytes big-endian; 0 when nobody holds it).
    pub const HA_ROLE: u8 = 0x05;
    /// The largest inner packet (bytes, 2 bytes big-endian) the sender's path-MTU search
    /// confirmed towards the receiver: the receiver's path MTU in the other direction.
    pub const PATH_MTU: u8 = 0x07;
    /// The sender's answer pins ([`super::AnswerPin`]): byte 0 the number of pins (at most
    /// 64), then per pin the DNS group's id (4 bytes) and the pinned answer's index (1 byte,
    /// below 32).
    pub const ANSWER_PINS: u8 = 0x06;
    /// Reserved, never sent (a zeroed tail must not look like a meaningful TLV).
    pub const RESERVED_ZERO: u8 = 0x00;
    /// Reserved for a future extended-type scheme.
    pub const RESERVED_FF: u8 = 0xFF;
}

/// The longest drilled group's name a [`tlv::DRILL`] TLV carries, in bytes: longer names are
/// cut on a character boundary when sending.
pub const MAX_DRILL_NAME: usize = 64;
/// The most answer pins one [`tlv::ANSWER_PINS`] TLV carries (one per DNS group, as many as
/// the service-checks TLV reports).
pub const MAX_ANSWER_PINS: usize = MAX_DNS_GROUPS;

/// A DNS group pinned to one of its answers by the sender's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AnswerPin {
    /// [`crate::dns_group_id`] of the group.
    pub group: u32,
    /// The pinned answer's index, below [`MAX_ANSWERS`] on the wire.
    pub answer: u8,
}

/// Computes the tag of a packet; the shell implements it with its key. The core compares the
/// result in constant time.
pub trait Authenticator: Send {
    /// The tag of `data`: HMAC-SHA256 truncated to 16 bytes in agentd.
    fn tag(&self, data: &[u8]) -> [u8; 16];
}

/// Why a datagram on the probe port was dropped (a counter label each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeDrop {
    /// Wrong size, magic, kind or TLV layout.
    Malformed,
    /// A version this side does not speak.
    Version,
    /// A tag that does not verify, or a datagram from another address than the peer's.
    Forged,
    /// A request already seen (or older than the last 64), or a reply to no outstanding request.
    Replayed,
}

impl ProbeDrop {
    pub const ALL: [ProbeDrop; 4] = [
        ProbeDrop::Malformed,
        ProbeDrop::Version,
        ProbeDrop::Forged,
        ProbeDrop::Replayed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProbeDrop::Malformed => "malformed",
            ProbeDrop::Version => "version",
            ProbeDrop::Forged => "forged",
            ProbeDrop::Replayed => "replayed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request = 1,
    Reply = 2,
    /// A path-MTU probe (version 2, to peers with [`CAP_PMTU`] only): padded to the size
    /// tried, in a sequence space of its own, never counted in the link's health.
    MtuProbe = 3,
    /// The answer to a [`Kind::MtuProbe`]: small, echoing its seq and send time, with
    /// [`tlv::CONFIRMS_SIZE`].
    MtuAck = 4,
}

/// A TLV this module has no field for: skipped on receipt, but kept so that callers (and
/// tests) can see and send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlv {
    pub code: u8,
    pub value: Vec<u8>,
}

/// The version-2 tail. Empty by default, which keeps datagrams at 48 bytes; version 1 has no
/// tail (encoding ignores it, decoding leaves it empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tail {
    /// Sending: pad the datagram to this many bytes (nothing if it is already as large).
    /// Received: the datagram's size, when it carried padding.
    pub pad_to: Option<u16>,
    /// The size of the request datagram a reply confirms ([`tlv::CONFIRMS_SIZE`]).
    pub confirms_size: Option<u16>,
    /// The sender's confirmed path MTU towards the receiver ([`tlv::PATH_MTU`]).
    pub path_mtu: Option<u16>,
    /// The sender's service-check verdicts ([`tlv::SERVICE_CHECKS`]). Sending: groups past
    /// the 64th, and groups of more than 32 answers, are left out.
    pub checks: Option<PeerChecks>,
    /// The group a failover drill of the sender's moves ([`tlv::DRILL`]). Sending: cut to
    /// [`MAX_DRILL_NAME`] bytes on a character boundary.
    pub drill: Option<String>,
    /// The sender's answer pins ([`tlv::ANSWER_PINS`]); empty: none (no TLV is sent).
    /// Sending: pins past the 64th, and answers from index 32 on, are left out.
    pub answer_pins: Vec<AnswerPin>,
    /// The sender's role in its HA pair ([`tlv::HA_ROLE`]); `None`: it is not one of a pair.
    pub ha: Option<HaAnnounce>,
    /// Other TLVs, in order (unknown ones on receipt).
    pub other: Vec<Tlv>,
}

/// What a gateway of an HA pair says of itself in every probe: the remote gateways route to
/// the active one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HaAnnounce {
    pub role: AnnouncedRole,
    /// The revision of the role's holder key as the sender knows it (a fencing token that only
    /// grows: of two gateways announcing active, the larger revision is the current one).
    pub revision: i64,
}

/// A role as the probes carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnouncedRole {
    Standby = 1,
    Active = 2,
    /// Holds the role as far as it knows, but its lease may be running out (the store does not
    /// answer): it neither writes nor claims to be active, and keeps forwarding. The remote
    /// gateways stay with it while nobody is active (fail static).
    Unsure = 3,
}

impl AnnouncedRole {
    /// Which gateway of a pair the remote side routes to: active, else unsure, else standby.
    pub fn rank(self) -> u8 {
        match self {
            AnnouncedRole::Active => 2,
            AnnouncedRole::Unsure => 1,
            AnnouncedRole::Standby => 0,
        }
    }
}

/// One probe, decoded or to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub version: u8,
    pub kind: Kind,
    /// Request: the sender's sequence number; reply: the request's.
    pub seq: u32,
    /// Request: the sender's send time in µs; reply: the request's, echoed.
    pub sent_us: u64,
    /// The sender's view of the link.
    pub view: View,
    /// The sender speaks version 2 (a version-2 packet always does).
    pub speaks_v2: bool,
    /// The sender answers path-MTU probes ([`CAP_PMTU`]).
    pub speaks_pmtu: bool,
    pub tail: Tail,
}

/// The bytes of `p` in its version (`V1` unless `p.version` is `V2`), tag included. TLVs that
/// would push the datagram past [`MAX_LEN`] are left out.
pub fn encode(auth: &dyn Authenticator, p: &Packet) -> Vec<u8> {
    let v2 = p.version >= V2;
    let mut b = Vec::with_capacity(if v2 { V2_MIN_LEN } else { V1_LEN });
    b.extend_from_slice(&MAGIC);
    b.push(if v2 { V2 } else { V1 });
    b.push(p.kind as u8);
    b.push(u8::from(p.view.pinned) | (u8::from(p.view.draining) << 1));
    b.push(p.view.health.code());
    b.extend_from_slice(&p.seq.to_be_bytes());
    b.extend_from_slice(&p.sent_us.to_be_bytes());
    b.extend_from_slice(&p.view.rx_loss_ppm.unwrap_or(u32::MAX).to_be_bytes());
    b.push(p.view.priority);
    let v2_bit = if v2 || p.speaks_v2 { CAP_V2 } else { 0 };
    b.push(v2_bit | if p.speaks_pmtu { CAP_PMTU } else { 0 });
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&p.view.fingerprint.to_be_bytes());
    if v2 {
        let put = |b: &mut Vec<u8>, code: u8, value: &[u8]| {
            if b.len() + TLV_HEADER + value.len() + TAG_LEN <= MAX_LEN {
                b.push(code);
                // Fits: the whole datagram is at most MAX_LEN bytes.
                b.extend_from_slice(&(value.len() as u16).to_be_bytes());
                b.extend_from_slice(value);
            }
        };
        if let Some(size) = p.tail.confirms_size {
            put(&mut b, tlv::CONFIRMS_SIZE, &size.to_be_bytes());
        }
        if let Some(mtu) = p.tail.path_mtu {
            put(&mut b, tlv::PATH_MTU, &mtu.to_be_bytes());
        }
        if let Some(checks) = &p.tail.checks {
            put(&mut b, tlv::SERVICE_CHECKS, &encode_checks(checks));
        }
        if let Some(group) = &p.tail.drill {
            put(&mut b, tlv::DRILL, &encode_drill(group));
        }
        if let Some(ha) = &p.tail.ha {
            let mut v = [0u8; 9];
            v[0] = ha.role as u8;
            v[1..].copy_from_slice(&ha.revision.to_be_bytes());
            put(&mut b, tlv::HA_ROLE, &v);
        }
        if !p.tail.answer_pins.is_empty() {
            put(
                &mut b,
                tlv::ANSWER_PINS,
                &encode_answer_pins(&p.tail.answer_pins),
            );
        }
        for t in &p.tail.other {
            put(&mut b, t.code, &t.value);
        }
        // Padding last: it fills up to the requested size whatever came before.
        if let Some(target) = p.tail.pad_to {
            let without = b.len() + TLV_HEADER + TAG_LEN;
            if usize::from(target) >= without {
                put(&mut b, tlv::PAD, &vec![0; usize::from(target) - without]);
            }
        }
    } else {
        b.resize(V1_LEN - TAG_LEN, 0);
    }
    let tag = auth.tag(&b);
    b.extend_from_slice(&tag);
    b
}

/// A received datagram, checked in this order: size and magic, version, tag, then contents
/// (nothing is parsed before the tag verifies).
pub fn decode(auth: &dyn Authenticator, b: &[u8]) -> Result<Packet, ProbeDrop> {
    if b.len() < 5 || b.len() > MAX_LEN || b[0..4] != MAGIC {
        return Err(ProbeDrop::Malformed);
    }
    let version = b[4];
    match version {
        V1 if b.len() != V1_LEN => return Err(ProbeDrop::Malformed),
        V2 if b.len() < V2_MIN_LEN => return Err(ProbeDrop::Malformed),
        V1 | V2 => {}
        _ => return Err(ProbeDrop::Version),
    }
    let (covered, tag) = b.split_at(b.len() - TAG_LEN);
    let expected = auth.tag(covered);
    let diff = expected
        .iter()
        .zip(tag)
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    if diff != 0 {
        return Err(ProbeDrop::Forged);
    }
    let kind = match (b[5], version) {
        (1, _) => Kind::Request,
        (2, _) => Kind::Reply,
        (3, V2) => Kind::MtuProbe,
        (4, V2) => Kind::MtuAck,
        _ => return Err(ProbeDrop::Malformed),
    };
    let word = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut sent = [0u8; 8];
    sent.copy_from_slice(&b[12..20]);
    let ppm = word(20);
    let tail = if version == V2 {
        parse_tail(&covered[HEADER_LEN..], b.len())?
    } else {
        Tail::default()
    };
    Ok(Packet {
        version,
        kind,
        seq: word(8),
        sent_us: u64::from_be_bytes(sent),
        view: View {
            health: Health::from_code(b[7]),
            pinned: b[6] & 1 != 0,
            draining: b[6] & 2 != 0,
            priority: b[24],
            fingerprint: word(28),
            rx_loss_ppm: (ppm != u32::MAX).then_some(ppm),
        },
        speaks_v2: version == V2 || b[25] & CAP_V2 != 0,
        speaks_pmtu: b[25] & CAP_PMTU != 0,
        tail,
    })
}

/// The TLVs between the header and the tag. A TLV that overruns the tail, or a known one too
/// short for its fields, is malformed; a known one longer than its fields is read and the rest
/// ignored, so that a field can grow without a new code.
fn parse_tail(mut rest: &[u8], datagram: usize) -> Result<Tail, ProbeDrop> {
    let mut tail = Tail::default();
    while !rest.is_empty() {
        let [code, hi, lo, ..] = *rest else {
            return Err(ProbeDrop::Malformed);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let value = rest
            .get(TLV_HEADER..TLV_HEADER + len)
            .ok_or(ProbeDrop::Malformed)?;
        rest = &rest[TLV_HEADER + len..];
        match code {
            // At most MAX_LEN, checked by the caller.
            tlv::PAD => tail.pad_to = Some(datagram as u16),
            tlv::CONFIRMS_SIZE => match *value {
                [hi, lo, ..] => tail.confirms_size = Some(u16::from_be_bytes([hi, lo])),
                _ => return Err(ProbeDrop::Malformed),
            },
            tlv::PATH_MTU => match *value {
                [hi, lo, ..] => tail.path_mtu = Some(u16::from_be_bytes([hi, lo])),
                _ => return Err(ProbeDrop::Malformed),
            },
            tlv::SERVICE_CHECKS => tail.checks = Some(decode_checks(value)?),
            tlv::DRILL => tail.drill = Some(decode_drill(value)?),
            tlv::HA_ROLE => tail.ha = Some(decode_ha(value)?),
            tlv::ANSWER_PINS => tail.answer_pins = decode_answer_pins(value)?,
            _ => tail.other.push(Tlv {
                code,
                value: value.to_vec(),
            }),
        }
    }
    Ok(tail)
}

/// The value of a [`tlv::SERVICE_CHECKS`] TLV; what the format cannot carry is left out.
fn encode_checks(c: &PeerChecks) -> Vec<u8> {
    let groups: Vec<&(u32, Vec<CheckState>)> = c
        .dns
        .iter()
        .filter(|(_, answers)| answers.len() <= MAX_ANSWERS)
        .take(MAX_DNS_GROUPS)
        .collect();
    let mut v = Vec::with_capacity(2 + groups.len() * (5 + MAX_ANSWERS));
    v.push(c.link.map_or(0, CheckState::code));
    // At most MAX_DNS_GROUPS (64) and MAX_ANSWERS (32): both fit a byte.
    v.push(groups.len() as u8);
    for (id, answers) in groups {
        v.extend_from_slice(&id.to_be_bytes());
        v.push(answers.len() as u8);
        v.extend(answers.iter().map(|s| s.code()));
    }
    v
}

/// A [`tlv::SERVICE_CHECKS`] value: short, over the limits or with a code that is no state
/// is malformed; bytes after the last group are ignored (room to grow).
fn decode_checks(v: &[u8]) -> Result<PeerChecks, ProbeDrop> {
    let [link, groups, ref rest @ ..] = *v else {
        return Err(ProbeDrop::Malformed);
    };
    let link = match link {
        0 => None,
        code => Some(CheckState::from_code(code).ok_or(ProbeDrop::Malformed)?),
    };
    if usize::from(groups) > MAX_DNS_GROUPS {
        return Err(ProbeDrop::Malformed);
    }
    let mut rest = rest;
    let mut dns = Vec::with_capacity(usize::from(groups));
    for _ in 0..groups {
        let [a, b, c, d, n, ref after @ ..] = *rest else {
            return Err(ProbeDrop::Malformed);
        };
        let n = usize::from(n);
        if n > MAX_ANSWERS || after.len() < n {
            return Err(ProbeDrop::Malformed);
        }
        let states = after[..n]
            .iter()
            .map(|&code| CheckState::from_code(code).ok_or(ProbeDrop::Malformed))
            .collect::<Result<Vec<_>, _>>()?;
        dns.push((u32::from_be_bytes([a, b, c, d]), states));
        rest = &after[n..];
    }
    Ok(PeerChecks { link, dns })
}

/// The value of a [`tlv::DRILL`] TLV: the name cut to [`MAX_DRILL_NAME`] bytes on a character
/// boundary, after its length.
fn encode_drill(group: &str) -> Vec<u8> {
    let mut end = group.len().min(MAX_DRILL_NAME);
    while !group.is_char_boundary(end) {
        end -= 1;
    }
    let name = &group.as_bytes()[..end];
    let mut v = Vec::with_capacity(1 + name.len());
    // At most MAX_DRILL_NAME (64): fits a byte.
    v.push(name.len() as u8);
    v.extend_from_slice(name);
    v
}

/// A [`tlv::DRILL`] value: empty, a length over [`MAX_DRILL_NAME`] or past the value, or a
/// name that is not UTF-8 is malformed; bytes after the name are ignored (room to grow).
fn decode_drill(v: &[u8]) -> Result<String, ProbeDrop> {
    let [n, ref rest @ ..] = *v else {
        return Err(ProbeDrop::Malformed);
    };
    let n = usize::from(n);
    if n > MAX_DRILL_NAME {
        return Err(ProbeDrop::Malformed);
    }
    let name = rest.get(..n).ok_or(ProbeDrop::Malformed)?;
    String::from_utf8(name.to_vec()).map_err(|_| ProbeDrop::Malformed)
}

/// A [`tlv::HA_ROLE`] value: shorter than 9 bytes or a role other than 1, 2, 3 is malformed;
/// bytes after the revision are ignored (room to grow).
fn decode_ha(v: &[u8]) -> Result<HaAnnounce, ProbeDrop> {
    let [role, ref rest @ ..] = *v else {
        return Err(ProbeDrop::Malformed);
    };
    let revision: [u8; 8] = rest
        .get(..8)
        .and_then(|r| r.try_into().ok())
        .ok_or(ProbeDrop::Malformed)?;
    let role = match role {
        1 => AnnouncedRole::Standby,
        2 => AnnouncedRole::Active,
        3 => AnnouncedRole::Unsure,
        _ => return Err(ProbeDrop::Malformed),
    };
    Ok(HaAnnounce {
        role,
        revision: i64::from_be_bytes(revision),
    })
}

/// The value of a [`tlv::ANSWER_PINS`] TLV; what the format cannot carry is left out.
fn encode_answer_pins(pins: &[AnswerPin]) -> Vec<u8> {
    let mut seen = std::collections::BTreeSet::new();
    let pins: Vec<&AnswerPin> = pins
        .iter()
        .filter(|p| usize::from(p.answer) < MAX_ANSWERS && seen.insert(p.group))
        .take(MAX_ANSWER_PINS)
        .collect();
    let mut v = Vec::with_capacity(1 + pins.len() * 5);
    // At most MAX_ANSWER_PINS (64): fits a byte.
    v.push(pins.len() as u8);
    for p in pins {
        v.extend_from_slice(&p.group.to_be_bytes());
        v.push(p.answer);
    }
    v
}

/// A [`tlv::ANSWER_PINS`] value: empty, shorter than its count says, over 64 pins, an answer
/// index of 32 or more, or two pins of one group (which would the receiver follow?) is
/// malformed; bytes after the last pin are ignored (room to grow).
fn decode_answer_pins(v: &[u8]) -> Result<Vec<AnswerPin>, ProbeDrop> {
    let [count, ref rest @ ..] = *v else {
        return Err(ProbeDrop::Malformed);
    };
    let count = usize::from(count);
    if count > MAX_ANSWER_PINS || rest.len() < count * 5 {
        return Err(ProbeDrop::Malformed);
    }
    let mut pins: Vec<AnswerPin> = Vec::with_capacity(count);
    for p in rest[..count * 5].chunks_exact(5) {
        let pin = AnswerPin {
            group: u32::from_be_bytes([p[0], p[1], p[2], p[3]]),
            answer: p[4],
        };
        if usize::from(pin.answer) >= MAX_ANSWERS || pins.iter().any(|q| q.group == pin.group) {
            return Err(ProbeDrop::Malformed);
        }
        pins.push(pin);
    }
    Ok(pins)
}
