//! The Internet checksum (RFC 1071): a ones'-complement sum of big-endian 16-bit words.
//!
//! Sums are carried unfolded in a `u64` so that the hot loop is plain additions: each 8-byte
//! chunk adds two 32-bit halves (each < 2^32), so even a 64 KiB packet stays far below 2^64, and
//! the end-around carries are folded once at the end.

/// Adds the bytes of `data`, as big-endian 16-bit words (an odd last byte is the high half of a
/// zero-padded word), to `acc`. Unfolded; `data` must be shorter than 2^30 bytes, which any IP
/// packet is.
pub(crate) fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut words = chunks.remainder().chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds the carries of an unfolded sum into 16 bits (not inverted).
pub(crate) fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The loop leaves acc <= 0xffff.
    acc as u16
}

/// The TCP/UDP pseudo-header sum (RFC 793 / RFC 8200 §8.1), unfolded. `src` and `dst` are 4 or 16
/// bytes; `len` is the transport length (header + payload).
pub(crate) fn pseudo_header(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u64 {
    // Transport lengths here are < 2^32 (IPv6 carries a 32-bit upper-layer length); splitting it
    // into two words covers both families.
    let len = len as u64;
    sum(
        src,
        sum(dst, u64::from(proto) + (len >> 16) + (len & 0xffff)),
    )
}

/// The value to store in a checksum field: the inverted fold. A result of zero is sent as 0xffff,
/// as Linux's `skb_checksum_help` does (`CSUM_MANGLED_0`): for UDP a zero field would mean "no
/// checksum", and for TCP both encode the same ones'-complement value.
pub(crate) fn finish(acc: u64) -> u16 {
    match !fold(acc) {
        0 => 0xffff,
        c => c,
    }
}

/// The Internet checksum of `data` as a whole, for a header that is summed alone (an ICMP echo,
/// an IPv4 header): the inverted fold, zero kept as zero. Written into its field it makes the
/// checksum of the filled-in `data` zero, which is how a receiver verifies it.
pub fn internet_checksum(data: &[u8]) -> u16 {
    !fold(sum(data, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Word-at-a-time reference, the textbook way.
    fn naive(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |&b| u32::from(b));
            acc += hi | lo;
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn matches_the_rfc_1071_example() {
        // RFC 1071 §3: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2.
        assert_eq!(
            fold(sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7], 0)),
            0xddf2
        );
    }

    #[test]
    fn matches_the_word_at_a_time_sum_for_every_length_and_tail() {
        let data: Vec<u8> = (0..200u32)
            .map(|i| (i.wrapping_mul(97) ^ 0xa5) as u8)
            .collect();
        for len in 0..data.len() {
            assert_eq!(fold(sum(&data[..len], 0)), naive(&data[..len]), "len {len}");
        }
        assert_eq!(fold(sum(&[0xff; 65535], 0)), naive(&[0xff; 65535]));
    }

    #[test]
    fn a_zero_result_is_sent_as_all_ones() {
        // The data sums to 0xffff, whose inversion is zero.
        assert_eq!(finish(sum(&[0xff, 0xff], 0)), 0xffff);
        assert_eq!(finish(sum(&[0x12, 0x34], 0)), !0x1234);
    }
}
