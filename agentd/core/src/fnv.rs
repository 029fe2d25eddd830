//! FNV-1a, the one non-cryptographic hash of the project: stable across builds and platforms
//! (unlike `std`'s `DefaultHasher`), so what it names or orders stays the same across restarts
//! and versions. For fingerprints and for spreading, never where an adversary picks the input.
//!
//! [`Fnv1a32`] and [`Fnv1a64`] hash a stream written in pieces; [`fnv1a_32`] and [`fnv1a_64`]
//! hash one slice.

macro_rules! fnv1a {
    ($name:ident, $int:ty, $offset:expr, $prime:expr, $bits:literal) => {
        #[doc = concat!("FNV-1a with a ", $bits, "-bit state.")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name($int);

        impl $name {
            pub const fn new() -> Self {
                $name($offset)
            }

            pub fn write(&mut self, bytes: &[u8]) {
                for &b in bytes {
                    self.0 = (self.0 ^ <$int>::from(b)).wrapping_mul($prime);
                }
            }

            pub const fn finish(&self) -> $int {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }
    };
}

fnv1a!(Fnv1a32, u32, 0x811c_9dc5, 0x0100_0193, "32");
fnv1a!(
    Fnv1a64,
    u64,
    0xcbf2_9ce4_8422_2325,
    0x0000_0100_0000_01b3,
    "64"
);

/// FNV-1a 32 of `bytes`.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut h = Fnv1a32::new();
    h.write(bytes);
    h.finish()
}

/// FNV-1a 64 of `bytes`.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a64::new();
    h.write(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn pieces_hash_like_the_whole() {
        let mut h = Fnv1a64::new();
        h.write(b"foo");
        h.write(b"bar");
        assert_eq!(h.finish(), fnv1a_64(b"foobar"));
        let mut h = Fnv1a32::new();
        h.write(b"foo");
        h.write(b"bar");
        assert_eq!(h.finish(), fnv1a_32(b"foobar"));
    }
}
