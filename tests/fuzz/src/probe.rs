//! The peer probe codec (`isthmus_core::wire`): any datagram decodes or is dropped with a
//! reason, and whatever decodes encodes to a datagram that decodes to the same packet.
//!
//! The authenticator is a fixed key whose tag is constant, so that mutations get past the tag
//! check to the header and TLV parsers (a fuzzer cannot forge an HMAC; the tag comparison has
//! its own unit tests in the core).

use isthmus_core::wire::{self, Authenticator};

/// A key whose tag is always the same 16 bytes.
struct FixedKey;

/// The tag of every datagram under [`FixedKey`].
pub const TAG: [u8; 16] = *b"isthmus-fuzz-tag";

impl Authenticator for FixedKey {
    fn tag(&self, _data: &[u8]) -> [u8; 16] {
        TAG
    }
}

pub fn run(data: &[u8]) {
    let Ok(packet) = wire::decode(&FixedKey, data) else {
        return;
    };
    let bytes = wire::encode(&FixedKey, &packet);
    assert!(
        bytes.len() <= wire::MAX_LEN,
        "encoded {} bytes",
        bytes.len()
    );
    let again = wire::decode(&FixedKey, &bytes).expect("an encoded packet decodes");
    // Padding is a size, not content: the re-encoded datagram is padded to the same size.
    assert_eq!(again, packet, "decode(encode(p)) == p");
}

/// A datagram of `packet` under the fuzzers' key, for seeds and tests.
pub fn encode(packet: &wire::Packet) -> Vec<u8> {
    wire::encode(&FixedKey, packet)
}
