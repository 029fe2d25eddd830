//! The peer probe packet (docs/protocol.md): 64 bytes, big-endian, authenticated with an
//! HMAC-SHA256 tag keyed by the X25519 secret the two gateways' WireGuard keys share.

use boringtun::x25519::{PublicKey, StaticSecret};
use isthmus_core::engine::OwnView;
use isthmus_core::{Health, PeerView};
use ring::hmac;

pub const LEN: usize = 64;
const MAGIC: &[u8; 4] = b"ISTH";
pub const VERSION: u8 = 1;
const MAC_AT: usize = 48;
const CONTEXT: &[u8] = b"isthmus probe v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request = 1,
    Reply = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub kind: Kind,
    pub seq: u32,
    pub sent_us: u64,
    pub view: PeerView,
}

/// Why a datagram on the probe port was dropped (a counter label each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    Malformed,
    Version,
    Forged,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::Version => "version",
            Reject::Forged => "forged",
        }
    }
}

/// The probe key of a link: both gateways derive the same one, nobody else can.
pub struct Key(hmac::Key);

impl Key {
    pub fn derive(own_private: &[u8; 32], peer_public: &[u8; 32]) -> Key {
        let shared =
            StaticSecret::from(*own_private).diffie_hellman(&PublicKey::from(*peer_public));
        let prk = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, shared.as_bytes()),
            CONTEXT,
        );
        Key(hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref()))
    }
}

pub fn encode(key: &Key, kind: Kind, seq: u32, sent_us: u64, view: &OwnView) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[0..4].copy_from_slice(MAGIC);
    b[4] = VERSION;
    b[5] = kind as u8;
    b[6] = u8::from(view.pinned) | (u8::from(view.draining) << 1);
    b[7] = view.health.code();
    b[8..12].copy_from_slice(&seq.to_be_bytes());
    b[12..20].copy_from_slice(&sent_us.to_be_bytes());
    b[20..24].copy_from_slice(&view.rx_loss_ppm.unwrap_or(u32::MAX).to_be_bytes());
    b[24] = view.priority;
    b[28..32].copy_from_slice(&view.fingerprint.to_be_bytes());
    let tag = hmac::sign(&key.0, &b[..MAC_AT]);
    b[MAC_AT..].copy_from_slice(&tag.as_ref()[..16]);
    b
}

pub fn decode(key: &Key, b: &[u8]) -> Result<Probe, Reject> {
    if b.len() != LEN || &b[0..4] != MAGIC {
        return Err(Reject::Malformed);
    }
    if b[4] != VERSION {
        return Err(Reject::Version);
    }
    // Constant-time comparison of the truncated tag.
    let tag = hmac::sign(&key.0, &b[..MAC_AT]);
    let mut diff = 0u8;
    for (x, y) in tag.as_ref()[..16].iter().zip(&b[MAC_AT..]) {
        diff |= x ^ y;
    }
    if diff != 0 {
        return Err(Reject::Forged);
    }
    let kind = match b[5] {
        1 => Kind::Request,
        2 => Kind::Reply,
        _ => return Err(Reject::Malformed),
    };
    let word = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut sent = [0u8; 8];
    sent.copy_from_slice(&b[12..20]);
    let ppm = word(20);
    Ok(Probe {
        kind,
        seq: word(8),
        sent_us: u64::from_be_bytes(sent),
        view: PeerView {
            health: Health::from_code(b[7]),
            pinned: b[6] & 1 != 0,
            draining: b[6] & 2 != 0,
            priority: b[24],
            fingerprint: word(28),
            rx_loss_ppm: (ppm != u32::MAX).then_some(ppm),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (Key, Key) {
        let a = [7u8; 32];
        let b = [9u8; 32];
        let pa = PublicKey::from(&StaticSecret::from(a)).to_bytes();
        let pb = PublicKey::from(&StaticSecret::from(b)).to_bytes();
        (Key::derive(&a, &pb), Key::derive(&b, &pa))
    }

    fn view() -> OwnView {
        OwnView {
            health: Health::Degraded,
            pinned: true,
            draining: false,
            priority: 1,
            fingerprint: 0xdead_beef,
            rx_loss_ppm: Some(50_000),
        }
    }

    #[test]
    fn both_ends_derive_the_same_key_and_round_trip_a_probe() {
        let (ka, kb) = keys();
        let bytes = encode(&ka, Kind::Request, 42, 123_456, &view());
        let p = decode(&kb, &bytes).unwrap();
        assert_eq!(p.kind, Kind::Request);
        assert_eq!((p.seq, p.sent_us), (42, 123_456));
        assert_eq!(p.view.health, Health::Degraded);
        assert!(p.view.pinned && !p.view.draining);
        assert_eq!((p.view.priority, p.view.fingerprint), (1, 0xdead_beef));
        assert_eq!(p.view.rx_loss_ppm, Some(50_000));
    }

    #[test]
    fn any_flipped_bit_is_rejected_and_never_panics() {
        let (ka, kb) = keys();
        let bytes = encode(&ka, Kind::Reply, 1, 2, &view());
        for i in 0..LEN * 8 {
            let mut m = bytes;
            m[i / 8] ^= 1 << (i % 8);
            assert!(decode(&kb, &m).is_err(), "bit {i} accepted");
        }
        assert_eq!(decode(&kb, &bytes[..10]), Err(Reject::Malformed));
        let mut v2 = bytes;
        v2[4] = 2;
        assert_eq!(decode(&kb, &v2), Err(Reject::Version));
    }

    #[test]
    fn a_third_key_cannot_forge() {
        let (ka, _) = keys();
        let c = [3u8; 32];
        let pa = PublicKey::from(&StaticSecret::from([7u8; 32])).to_bytes();
        let kc = Key::derive(&c, &pa);
        let bytes = encode(&kc, Kind::Request, 1, 2, &view());
        assert_eq!(decode(&ka, &bytes), Err(Reject::Forged));
    }
}
