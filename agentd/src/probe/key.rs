//! The peer probe key of a link (docs/protocol.md): both gateways derive the same one from
//! their WireGuard static keys, and nobody else can. The wire format is the core's
//! (`isthmus_core::wire`); this module only gives it the tag, HMAC-SHA256 truncated to 16
//! bytes, through [`Authenticator`].

use boringtun::x25519::{PublicKey, StaticSecret};
use isthmus_core::Authenticator;
use ring::hmac;

/// The context of the key derivation. It names version 1 because agentd 0.1.0 derived its key
/// this way; every version uses the same key (the version byte is inside what the tag covers).
const CONTEXT: &[u8] = b"isthmus probe v1";

/// The probe key of a link.
pub struct Key(hmac::Key);

impl Key {
    /// `HMAC-SHA256(X25519(own private, peer public), CONTEXT)`: X25519 is symmetric, so both
    /// ends get the same key.
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

impl Authenticator for Key {
    fn tag(&self, data: &[u8]) -> [u8; 16] {
        let mut out = [0u8; 16];
        out.copy_from_slice(&hmac::sign(&self.0, data).as_ref()[..16]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isthmus_core::wire::{self, Kind, Packet, Tail};
    use isthmus_core::{Health, ProbeDrop, View};

    fn public(private: [u8; 32]) -> [u8; 32] {
        PublicKey::from(&StaticSecret::from(private)).to_bytes()
    }

    fn keys() -> (Key, Key) {
        let (a, b) = ([7u8; 32], [9u8; 32]);
        (Key::derive(&a, &public(b)), Key::derive(&b, &public(a)))
    }

    fn packet(version: u8) -> Packet {
        Packet {
            version,
            kind: Kind::Request,
            seq: 42,
            sent_us: 123_456,
            view: View {
                health: Health::Degraded,
                pinned: true,
                draining: false,
                priority: 1,
                fingerprint: 0xdead_beef,
                rx_loss_ppm: Some(50_000),
            },
            speaks_v2: true,
            speaks_pmtu: true,
            tail: Tail::default(),
        }
    }

    #[test]
    fn both_ends_derive_the_same_key_and_round_trip_a_probe_in_each_version() {
        let (ka, kb) = keys();
        assert_eq!(ka.tag(b"probe"), kb.tag(b"probe"));
        for version in [wire::V1, wire::V2] {
            let bytes = wire::encode(&ka, &packet(version));
            assert_eq!(wire::decode(&kb, &bytes), Ok(packet(version)));
        }
    }

    #[test]
    fn a_third_key_cannot_forge() {
        let (ka, _) = keys();
        let kc = Key::derive(&[3u8; 32], &public([7u8; 32]));
        for version in [wire::V1, wire::V2] {
            let bytes = wire::encode(&kc, &packet(version));
            assert_eq!(wire::decode(&ka, &bytes), Err(ProbeDrop::Forged));
        }
    }

    #[test]
    fn any_flipped_bit_is_rejected() {
        let (ka, kb) = keys();
        for version in [wire::V1, wire::V2] {
            let bytes = wire::encode(&ka, &packet(version));
            for i in 0..bytes.len() * 8 {
                let mut m = bytes.clone();
                m[i / 8] ^= 1 << (i % 8);
                assert!(
                    wire::decode(&kb, &m).is_err(),
                    "v{version}: bit {i} accepted"
                );
            }
        }
    }
}
