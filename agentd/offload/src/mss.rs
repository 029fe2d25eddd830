//! TCP MSS clamping: the MSS option of a SYN or SYN-ACK lowered so that neither end of a TCP
//! connection sends segments larger than a tunnel carries, whatever ICMP does on the way.
//!
//! A host announces in its SYN the largest segment it can receive, derived from its own
//! interface's MTU (8960 on a jumbo EC2 or OCI instance). The other end never sends more than
//! that, and never more than its own announced value either, so lowering the option in both
//! directions' SYNs bounds both directions. The packet keeps its length; only the two bytes of
//! the value change, and the TCP checksum is updated incrementally (RFC 1624):
//!
//! - a **complete** checksum (a packet decrypted from the tunnel, or read from the TUN without
//!   `NEEDS_CSUM`) gets `HC' = ~(~HC + ~m + m')` over the 16-bit words that the value touches
//!   (the value may sit at an odd offset behind a NOP, straddling two words);
//! - a **partial** one (read from the TUN with `NEEDS_CSUM`: the field holds the pseudo-header
//!   sum and the checksum over the header is computed later, by [`crate::split`]) is left as
//!   it is: the completion sums the new bytes. Clamping must therefore happen before the split
//!   completes it, or be done on the completed packet as a complete checksum.
//!
//! Anything that is not a well-formed TCP SYN with an MSS option above the limit is left
//! untouched and said so; the clamp never drops a packet. A SYN without the option is left
//! alone too: its receiver assumes 536 (IPv4) or 1220 (IPv6) bytes, below any limit.

use crate::checksum;
use crate::packet::{self, be16, put16, IPPROTO_TCP, TCP_CSUM, TCP_FLAGS, TCP_HDR_MIN};
use crate::OffloadError;

/// The TCP SYN flag.
const TCP_SYN: u8 = 0x02;
/// TCP option kinds (RFC 9293 §3.2).
const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_MSS_LEN: usize = 4;

/// The smallest MSS the clamp writes: IPv6's minimum MTU (1280) less 60 bytes of headers. A
/// limit below it is raised to it, so that a misconfigured MTU cannot announce a uselessly small
/// segment.
pub const MIN_CLAMPED_MSS: u16 = 1220;

/// What state the packet's TCP checksum is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// The field holds the full checksum: update it.
    Complete,
    /// The field holds the pseudo-header sum of a `NEEDS_CSUM` packet: leave it.
    Partial,
}

/// What [`clamp_mss`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clamp {
    /// Not a TCP segment with SYN set (the common case, decided from a few bytes).
    NotSyn,
    /// A SYN without an MSS option.
    NoOption,
    /// The announced MSS was already within the limit.
    Within(u16),
    /// The MSS option was lowered.
    Clamped { from: u16, to: u16 },
    /// A SYN the clamp cannot read (truncated, fragmented, IPv6 extension headers, malformed
    /// options): left untouched.
    Unreadable(OffloadError),
}

/// The largest MSS that fits a path of `mtu` bytes for IPv4 or IPv6 (no IP or TCP options),
/// never below [`MIN_CLAMPED_MSS`].
pub fn mss_for_mtu(mtu: u16, v6: bool) -> u16 {
    let headers = if v6 { 60 } else { 40 };
    mtu.saturating_sub(headers).max(MIN_CLAMPED_MSS)
}

/// Lowers the MSS option of `pkt` (one IP packet, exactly its length) to what a path of `mtu`
/// bytes carries, if it is a TCP SYN announcing more.
pub fn clamp_mss(pkt: &mut [u8], mtu: u16, csum: Checksum) -> Clamp {
    if !is_tcp_syn(pkt) {
        return Clamp::NotSyn;
    }
    let tcp = match packet::parse_tcp(pkt) {
        Ok(t) => t,
        Err(e) => return Clamp::Unreadable(e),
    };
    let limit = mss_for_mtu(mtu, tcp.v6);
    let options = tcp.iph + TCP_HDR_MIN..tcp.iph + tcp.tcph;
    let at = match find_mss(&pkt[options.clone()]) {
        Ok(Some(offset)) => options.start + offset,
        Ok(None) => return Clamp::NoOption,
        Err(e) => return Clamp::Unreadable(e),
    };
    let from = be16(pkt, at);
    if from <= limit {
        return Clamp::Within(from);
    }
    match csum {
        Checksum::Partial => put16(pkt, at, limit),
        Checksum::Complete => {
            // The 16-bit words of the TCP segment the value touches, counted from the TCP
            // header (which starts at an even offset: IP headers are whole 32-bit words).
            let start = tcp.iph + ((at - tcp.iph) & !1);
            let end = (at + 2 + 1 - tcp.iph) / 2 * 2 + tcp.iph;
            let old = checksum::sum(&pkt[start..end], 0);
            put16(pkt, at, limit);
            let new = checksum::sum(&pkt[start..end], 0);
            let field = tcp.iph + TCP_CSUM;
            let hc = be16(pkt, field);
            // RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), where ~m, the sum of the inverted old
            // words, is the inverted fold of their sum in ones'-complement arithmetic.
            let acc = u64::from(!hc) + u64::from(!checksum::fold(old)) + new;
            put16(pkt, field, !checksum::fold(acc));
        }
    }
    Clamp::Clamped { from, to: limit }
}

/// A quick look: IPv4 or IPv6 (no extension headers), protocol TCP, SYN set.
fn is_tcp_syn(pkt: &[u8]) -> bool {
    let Some(&first) = pkt.first() else {
        return false;
    };
    let (proto, iph) = match first >> 4 {
        4 => (pkt.get(9), usize::from(first & 0x0f) * 4),
        6 => (pkt.get(6), 40),
        _ => return false,
    };
    proto == Some(&IPPROTO_TCP) && pkt.get(iph + TCP_FLAGS).is_some_and(|f| f & TCP_SYN != 0)
}

/// The offset of the MSS option's value within `options`, if there is one.
fn find_mss(options: &[u8]) -> Result<Option<usize>, OffloadError> {
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            OPT_EOL => return Ok(None),
            OPT_NOP => i += 1,
            kind => {
                let Some(&len) = options.get(i + 1) else {
                    return Err(OffloadError::BadTcpOptions);
                };
                let len = usize::from(len);
                if len < 2 || i + len > options.len() {
                    return Err(OffloadError::BadTcpOptions);
                }
                if kind == OPT_MSS {
                    if len != OPT_MSS_LEN {
                        return Err(OffloadError::BadTcpOptions);
                    }
                    return Ok(Some(i + 2));
                }
                i += len;
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{TCP_HDR_MIN, V4_TOTAL_LEN, V6_PAYLOAD_LEN};
    use proptest::prelude::*;

    const V4_SRC: [u8; 4] = [10, 1, 0, 10];
    const V4_DST: [u8; 4] = [10, 2, 0, 10];
    const V6_SRC: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
    const V6_DST: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];

    /// A TCP segment with `flags` and `options` (padded to a word) and `payload`, with a full
    /// checksum.
    fn segment(v6: bool, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut opts = options.to_vec();
        while !opts.len().is_multiple_of(4) {
            opts.push(OPT_EOL);
        }
        let tcph = TCP_HDR_MIN + opts.len();
        let iph = if v6 { 40 } else { 20 };
        let total = iph + tcph + payload.len();
        let mut p = vec![0u8; total];
        if v6 {
            p[0] = 0x60;
            put16(&mut p, V6_PAYLOAD_LEN, (tcph + payload.len()) as u16);
            p[6] = IPPROTO_TCP;
            p[7] = 64;
            p[8..24].copy_from_slice(&V6_SRC);
            p[24..40].copy_from_slice(&V6_DST);
        } else {
            p[0] = 0x45;
            put16(&mut p, V4_TOTAL_LEN, total as u16);
            p[6] = 0x40;
            p[8] = 64;
            p[9] = IPPROTO_TCP;
            p[12..16].copy_from_slice(&V4_SRC);
            p[16..20].copy_from_slice(&V4_DST);
            packet::set_ipv4_checksum(&mut p[..20]);
        }
        put16(&mut p, iph, 40000);
        put16(&mut p, iph + 2, 5432);
        p[iph + 4..iph + 8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        p[iph + 12] = ((tcph / 4) as u8) << 4;
        p[iph + TCP_FLAGS] = flags;
        put16(&mut p, iph + 14, 65535);
        p[iph + TCP_HDR_MIN..iph + tcph].copy_from_slice(&opts);
        p[iph + tcph..].copy_from_slice(payload);
        let c = full_checksum(&p, v6, iph);
        put16(&mut p, iph + TCP_CSUM, c);
        p
    }

    /// The TCP checksum of `p` computed from scratch, with the field taken as zero.
    fn full_checksum(p: &[u8], v6: bool, iph: usize) -> u16 {
        let mut q = p.to_vec();
        put16(&mut q, iph + TCP_CSUM, 0);
        let (src, dst) = if v6 {
            (&q[8..24], &q[24..40])
        } else {
            (&q[12..16], &q[16..20])
        };
        let acc = checksum::pseudo_header(src, dst, IPPROTO_TCP, q.len() - iph);
        checksum::finish(checksum::sum(&q[iph..], acc))
    }

    /// Whether the packet's TCP checksum verifies (sums to all ones with the field).
    fn verifies(p: &[u8], v6: bool) -> bool {
        let iph = if v6 { 40 } else { 20 };
        let (src, dst) = if v6 {
            (&p[8..24], &p[24..40])
        } else {
            (&p[12..16], &p[16..20])
        };
        let acc = checksum::pseudo_header(src, dst, IPPROTO_TCP, p.len() - iph);
        checksum::fold(checksum::sum(&p[iph..], acc)) == 0xffff
    }

    fn mss(value: u16) -> [u8; 4] {
        let v = value.to_be_bytes();
        [OPT_MSS, 4, v[0], v[1]]
    }

    const SYN: u8 = TCP_SYN;
    const SYN_ACK: u8 = TCP_SYN | 0x10;

    #[test]
    fn a_jumbo_syn_is_clamped_to_the_path_for_ipv4_and_ipv6_with_a_valid_checksum() {
        for (v6, limit) in [(false, 1380), (true, 1360)] {
            let mut p = segment(v6, SYN, &mss(8960), &[]);
            assert!(verifies(&p, v6));
            assert_eq!(
                clamp_mss(&mut p, 1420, Checksum::Complete),
                Clamp::Clamped {
                    from: 8960,
                    to: limit
                }
            );
            assert!(verifies(&p, v6), "v6={v6}");
            assert_eq!(p, segment(v6, SYN, &mss(limit), &[]));
        }
    }

    #[test]
    fn a_syn_ack_is_clamped_too_and_a_plain_ack_never_looked_at() {
        let mut p = segment(false, SYN_ACK, &mss(8960), &[]);
        assert!(matches!(
            clamp_mss(&mut p, 1420, Checksum::Complete),
            Clamp::Clamped { to: 1380, .. }
        ));
        // An ACK with bytes that would read as an MSS option is not a SYN: untouched.
        let mut p = segment(false, 0x10, &mss(8960), b"data");
        let before = p.clone();
        assert_eq!(clamp_mss(&mut p, 1420, Checksum::Complete), Clamp::NotSyn);
        assert_eq!(p, before);
    }

    #[test]
    fn options_before_and_after_the_mss_are_kept_and_an_odd_offset_is_summed_right() {
        // Linux's SYN: MSS, SACK-permitted, timestamps, NOP, window scale; and the same with
        // the MSS behind one NOP, at an odd offset straddling two checksum words.
        let ts = [8, 10, 1, 2, 3, 4, 0, 0, 0, 0];
        for lead in [
            &[][..],
            &[OPT_NOP][..],
            &[OPT_NOP, OPT_NOP, OPT_NOP][..],
            &ts[..],
        ] {
            let mut opts = lead.to_vec();
            opts.extend_from_slice(&mss(9000));
            opts.extend_from_slice(&[4, 2, 8, 10, 9, 9, 9, 9, 0, 0, 0, 0, OPT_NOP, 3, 3, 7]);
            for v6 in [false, true] {
                let mut p = segment(v6, SYN, &opts, &[]);
                let to = mss_for_mtu(1500, v6);
                assert_eq!(
                    clamp_mss(&mut p, 1500, Checksum::Complete),
                    Clamp::Clamped { from: 9000, to }
                );
                assert!(verifies(&p, v6), "lead {lead:?} v6={v6}");
                let mut want = lead.to_vec();
                want.extend_from_slice(&mss(to));
                want.extend_from_slice(&opts[lead.len() + 4..]);
                assert_eq!(p, segment(v6, SYN, &want, &[]));
            }
        }
    }

    #[test]
    fn a_syn_without_mss_or_within_the_limit_is_untouched() {
        let mut p = segment(false, SYN, &[OPT_NOP, 3, 3, 7], &[]);
        let before = p.clone();
        assert_eq!(clamp_mss(&mut p, 1420, Checksum::Complete), Clamp::NoOption);
        assert_eq!(p, before);
        // The end-of-list option hides what follows it.
        let mut p = segment(false, SYN, &[OPT_EOL, 0, 0, 0, 2, 4, 0x23, 0x28], &[]);
        assert_eq!(clamp_mss(&mut p, 1420, Checksum::Complete), Clamp::NoOption);
        let mut p = segment(true, SYN, &mss(1200), &[]);
        let before = p.clone();
        assert_eq!(
            clamp_mss(&mut p, 1420, Checksum::Complete),
            Clamp::Within(1200)
        );
        assert_eq!(p, before);
    }

    #[test]
    fn a_partial_checksum_is_left_for_the_completion() {
        let mut p = segment(false, SYN, &mss(8960), &[]);
        let field = 20 + TCP_CSUM;
        let pseudo = be16(&p, field) ^ 0x5a5a; // whatever the kernel put there
        put16(&mut p, field, pseudo);
        assert!(matches!(
            clamp_mss(&mut p, 1420, Checksum::Partial),
            Clamp::Clamped { to: 1380, .. }
        ));
        assert_eq!(be16(&p, field), pseudo);
        assert_eq!(be16(&p, 20 + TCP_HDR_MIN + 2), 1380);
    }

    #[test]
    fn malformed_syns_are_left_alone() {
        // An option whose length runs past the header, a zero length, an MSS of the wrong
        // length, a truncated packet, a fragment.
        for opts in [&[5, 40, 0, 0][..], &[5, 0, 0, 0], &[OPT_MSS, 3, 0x23, 0]] {
            let mut p = segment(false, SYN, opts, &[]);
            let before = p.clone();
            assert_eq!(
                clamp_mss(&mut p, 1420, Checksum::Complete),
                Clamp::Unreadable(OffloadError::BadTcpOptions),
                "{opts:?}"
            );
            assert_eq!(p, before);
        }
        let p = segment(false, SYN, &mss(8960), &[]);
        let mut short = p[..34].to_vec();
        assert!(matches!(
            clamp_mss(&mut short, 1420, Checksum::Complete),
            Clamp::Unreadable(_)
        ));
        assert_eq!(short, p[..34]);
        let mut frag = p.clone();
        frag[7] = 1; // fragment offset 8
        assert_eq!(
            clamp_mss(&mut frag, 1420, Checksum::Complete),
            Clamp::Unreadable(OffloadError::Fragmented)
        );
        for mut junk in [vec![], vec![0x45], vec![0x60; 3], vec![0xff; 64]] {
            clamp_mss(&mut junk, 1420, Checksum::Complete);
        }
    }

    #[test]
    fn the_limit_never_goes_below_the_ipv6_minimum() {
        assert_eq!(mss_for_mtu(9000, false), 8960);
        assert_eq!(mss_for_mtu(9000, true), 8940);
        assert_eq!(mss_for_mtu(1420, false), 1380);
        assert_eq!(mss_for_mtu(576, false), MIN_CLAMPED_MSS);
        assert_eq!(mss_for_mtu(0, true), MIN_CLAMPED_MSS);
    }

    /// Options: a random mix of NOPs, padding options and at most one MSS, anywhere.
    fn options() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec(
                prop_oneof![
                    Just(vec![OPT_NOP]),
                    Just(vec![4, 2]),
                    Just(vec![3, 3, 7]),
                    Just(vec![8, 10, 1, 2, 3, 4, 5, 6, 7, 8]),
                ],
                0..4,
            ),
            proptest::option::of(any::<u16>()),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(parts, mss_value, at)| {
                let mut parts = parts;
                if let Some(v) = mss_value {
                    let i = at.index(parts.len() + 1);
                    parts.insert(i, mss(v).to_vec());
                }
                let mut out: Vec<u8> = parts.concat();
                out.truncate(40);
                out
            })
    }

    proptest! {
        #[test]
        fn every_rewritten_segment_still_checksums_and_announces_at_most_the_limit(
            v6 in any::<bool>(),
            syn_ack in any::<bool>(),
            opts in options(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            mtu in 0u16..=9100,
        ) {
            let flags = if syn_ack { SYN_ACK } else { SYN };
            let mut p = segment(v6, flags, &opts, &payload);
            let before = p.clone();
            let result = clamp_mss(&mut p, mtu, Checksum::Complete);
            prop_assert!(verifies(&p, v6));
            prop_assert_eq!(p.len(), before.len());
            let limit = mss_for_mtu(mtu, v6);
            match result {
                Clamp::Clamped { from, to } => {
                    prop_assert!(from > limit);
                    prop_assert_eq!(to, limit);
                    // Exactly the value and the checksum changed.
                    let iph = if v6 { 40 } else { 20 };
                    let changed: Vec<usize> =
                        (0..p.len()).filter(|&i| p[i] != before[i]).collect();
                    prop_assert!(changed.iter().all(|&i| i == iph + 16 || i == iph + 17
                        || i >= iph + TCP_HDR_MIN && i < iph + 60));
                    prop_assert!(changed.len() <= 4);
                    prop_assert_eq!(p, segment(v6, flags, &rewrite(&opts, to), &payload));
                }
                Clamp::Within(v) => {
                    prop_assert!(v <= limit);
                    prop_assert_eq!(p, before);
                }
                other => prop_assert_eq!((other, p), (other, before)),
            }
        }
    }

    /// `opts` with the value of its (first) MSS option replaced.
    fn rewrite(opts: &[u8], to: u16) -> Vec<u8> {
        let mut out = opts.to_vec();
        let at = find_mss(opts).ok().flatten().expect("an MSS option");
        out[at..at + 2].copy_from_slice(&to.to_be_bytes());
        out
    }
}
