//! ICMP "fragmentation needed" (IPv4, RFC 792 / RFC 1191) and ICMPv6 "packet too big" (RFC
//! 4443) for a packet larger than a tunnel's path carries, sent back to its source so that a
//! host whose security groups let ICMP through lowers its path MTU instead of retrying into a
//! black hole. Hosts that never see it are kept safe by the MSS clamp ([`crate::clamp_mss`]).
//!
//! [`packet_too_big`] builds the whole IP packet of the answer into a caller's buffer (no
//! allocation); [`IcmpRate`] paces them, as routers do (Linux: `icmp_ratelimit`, 1 s⁻¹ per
//! destination with a burst; here one bucket per link).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::checksum;
use crate::packet::{put16, V4_DF};

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
/// IPv4: destination unreachable, fragmentation needed and DF set.
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMPv6: packet too big.
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// An IPv4 ICMP error is at most 576 bytes (RFC 1812 §4.3.2.3); an ICMPv6 one at most 1280.
const V4_MAX: usize = 576;
const V6_MAX: usize = 1280;

/// Why no answer was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAnswer {
    /// The packet fits, or may be fragmented (IPv4 without DF).
    NotTooBig,
    /// Never answered: an ICMP error itself, a later fragment, a source that is not a host
    /// (unspecified, multicast, broadcast, loopback), or not an IP packet at all.
    NotAnswerable,
    /// `from` is of the other address family than the packet.
    WrongFamily,
    /// `out` is shorter than the answer.
    NoRoom,
}

/// The answer to `pkt` (one IP packet, exactly its length) if it is larger than `mtu` and may
/// not be fragmented: written to `out` from `from` (an address of this gateway) to the
/// packet's source; returns its length.
pub fn packet_too_big(
    pkt: &[u8],
    mtu: u16,
    from: IpAddr,
    out: &mut [u8],
) -> Result<usize, NoAnswer> {
    if pkt.len() <= usize::from(mtu) {
        return Err(NoAnswer::NotTooBig);
    }
    match (pkt.first().map(|b| b >> 4), from) {
        (Some(4), IpAddr::V4(from)) => v4(pkt, mtu, from.octets(), out),
        (Some(6), IpAddr::V6(from)) => v6(pkt, mtu, from.octets(), out),
        (Some(4 | 6), _) => Err(NoAnswer::WrongFamily),
        _ => Err(NoAnswer::NotAnswerable),
    }
}

fn v4(pkt: &[u8], mtu: u16, from: [u8; 4], out: &mut [u8]) -> Result<usize, NoAnswer> {
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    if pkt.len() < 20 || ihl < 20 || pkt.len() < ihl {
        return Err(NoAnswer::NotAnswerable);
    }
    if pkt[6] & V4_DF == 0 {
        return Err(NoAnswer::NotTooBig);
    }
    // Only the first fragment (offset 0) is answered.
    if u16::from_be_bytes([pkt[6], pkt[7]]) & 0x1fff != 0 {
        return Err(NoAnswer::NotAnswerable);
    }
    let src = [pkt[12], pkt[13], pkt[14], pkt[15]];
    let not_a_host = src == [0; 4] || src[0] == 127 || src[0] >= 224 || src == [255; 4];
    let icmp_error = pkt[9] == IPPROTO_ICMP
        && pkt
            .get(ihl)
            .is_some_and(|t| !matches!(t, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18));
    if not_a_host || icmp_error {
        return Err(NoAnswer::NotAnswerable);
    }
    let quoted = pkt.len().min(V4_MAX - 28);
    let len = 28 + quoted;
    let out = out.get_mut(..len).ok_or(NoAnswer::NoRoom)?;
    out.fill(0);
    out[0] = 0x45;
    put16(out, 2, len as u16);
    out[6] = V4_DF;
    out[8] = 64;
    out[9] = IPPROTO_ICMP;
    out[12..16].copy_from_slice(&from);
    out[16..20].copy_from_slice(&src);
    crate::packet::set_ipv4_checksum(&mut out[..20]);
    out[20] = ICMP_DEST_UNREACH;
    out[21] = ICMP_FRAG_NEEDED;
    put16(out, 26, mtu);
    out[28..].copy_from_slice(&pkt[..quoted]);
    let c = checksum::internet_checksum(&out[20..]);
    put16(out, 22, c);
    Ok(len)
}

fn v6(pkt: &[u8], mtu: u16, from: [u8; 16], out: &mut [u8]) -> Result<usize, NoAnswer> {
    if pkt.len() < 40 {
        return Err(NoAnswer::NotAnswerable);
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&pkt[8..24]);
    let unspecified = src == [0; 16];
    let loopback = src == std::net::Ipv6Addr::LOCALHOST.octets();
    let multicast = src[0] == 0xff;
    // ICMPv6 errors have types below 128 (RFC 4443 §2.1); only an unextended header is
    // looked at (an error behind extension headers is answered, which is harmless).
    let icmp_error = pkt[6] == IPPROTO_ICMPV6 && pkt.get(40).is_some_and(|t| *t < 128);
    if unspecified || loopback || multicast || icmp_error {
        return Err(NoAnswer::NotAnswerable);
    }
    let quoted = pkt.len().min(V6_MAX - 48);
    let len = 48 + quoted;
    let out = out.get_mut(..len).ok_or(NoAnswer::NoRoom)?;
    out.fill(0);
    out[0] = 0x60;
    put16(out, 4, (len - 40) as u16);
    out[6] = IPPROTO_ICMPV6;
    out[7] = 64;
    out[8..24].copy_from_slice(&from);
    out[24..40].copy_from_slice(&src);
    out[40] = ICMPV6_PACKET_TOO_BIG;
    out[44..48].copy_from_slice(&u32::from(mtu).to_be_bytes());
    out[48..].copy_from_slice(&pkt[..quoted]);
    let acc = checksum::pseudo_header(&from, &src, IPPROTO_ICMPV6, len - 40);
    let c = !checksum::fold(checksum::sum(&out[40..], acc));
    put16(out, 42, c);
    Ok(len)
}

/// A token bucket: `burst` answers at once, then `per_second`.
#[derive(Debug, Clone)]
pub struct IcmpRate {
    per_second: u32,
    burst: u32,
    tokens: f64,
    last: Option<Instant>,
}

impl IcmpRate {
    pub fn new(per_second: u32, burst: u32) -> IcmpRate {
        IcmpRate {
            per_second,
            burst,
            tokens: f64::from(burst),
            last: None,
        }
    }

    /// Whether an answer may go now (and takes its token).
    pub fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let dt = now
                .saturating_duration_since(last)
                .min(Duration::from_secs(3600));
            self.tokens = (self.tokens + dt.as_secs_f64() * f64::from(self.per_second))
                .min(f64::from(self.burst));
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a real instant as the simulated clock's origin
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4_packet(len: usize, df: bool, proto: u8, src: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0xabu8; len];
        p[0] = 0x45;
        p[1] = 0;
        put16(&mut p, 2, len as u16);
        p[6] = if df { V4_DF } else { 0 };
        p[7] = 0;
        p[8] = 63;
        p[9] = proto;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&[10, 2, 0, 10]);
        crate::packet::set_ipv4_checksum(&mut p[..20]);
        p
    }

    fn v6_packet(len: usize, next: u8, src: [u8; 16]) -> Vec<u8> {
        let mut p = vec![0xcdu8; len];
        p[0] = 0x60;
        p[1..4].fill(0);
        put16(&mut p, 4, (len - 40) as u16);
        p[6] = next;
        p[7] = 64;
        p[8..24].copy_from_slice(&src);
        p[24..40].copy_from_slice(&Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 0x10).octets());
        p
    }

    const HOST4: [u8; 4] = [10, 1, 0, 10];
    const GW4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);

    #[test]
    fn an_ipv4_packet_with_df_over_the_mtu_gets_fragmentation_needed_with_the_mtu() {
        let pkt = v4_packet(8960, true, 6, HOST4);
        let mut out = [0u8; 1500];
        let n = packet_too_big(&pkt, 1420, IpAddr::V4(GW4), &mut out).expect("an answer");
        let a = &out[..n];
        assert_eq!(n, 576);
        assert_eq!(checksum::internet_checksum(&a[..20]), 0, "IP checksum");
        assert_eq!(&a[12..16], &GW4.octets());
        assert_eq!(&a[16..20], &HOST4);
        assert_eq!((a[9], a[20], a[21]), (1, 3, 4));
        assert_eq!(u16::from_be_bytes([a[26], a[27]]), 1420);
        assert_eq!(checksum::internet_checksum(&a[20..]), 0, "ICMP checksum");
        // The quote starts with the original header.
        assert_eq!(&a[28..48], &pkt[..20]);
    }

    #[test]
    fn an_ipv6_packet_over_the_mtu_gets_packet_too_big_quoting_up_to_1280_bytes() {
        let host = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0x10);
        let gw = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1);
        let pkt = v6_packet(9000, 6, host.octets());
        let mut out = [0u8; 2000];
        let n = packet_too_big(&pkt, 1400, IpAddr::V6(gw), &mut out).expect("an answer");
        let a = &out[..n];
        assert_eq!(n, 1280);
        assert_eq!((a[6], a[40], a[41]), (58, 2, 0));
        assert_eq!(&a[24..40], &host.octets());
        assert_eq!(u32::from_be_bytes([a[44], a[45], a[46], a[47]]), 1400);
        let acc = checksum::pseudo_header(&gw.octets(), &host.octets(), 58, n - 40);
        assert_eq!(checksum::fold(checksum::sum(&a[40..], acc)), 0xffff);
        assert_eq!(&a[48..88], &pkt[..40]);
    }

    #[test]
    fn what_fits_may_be_fragmented_or_is_no_host_gets_no_answer() {
        let mut out = [0u8; 1500];
        let gw = IpAddr::V4(GW4);
        let cases = [
            (v4_packet(1400, true, 6, HOST4), NoAnswer::NotTooBig),
            (v4_packet(9000, false, 6, HOST4), NoAnswer::NotTooBig),
            (
                v4_packet(9000, true, 6, [224, 0, 0, 5]),
                NoAnswer::NotAnswerable,
            ),
            (
                v4_packet(9000, true, 6, [0, 0, 0, 0]),
                NoAnswer::NotAnswerable,
            ),
            (
                v4_packet(9000, true, 6, [127, 0, 0, 1]),
                NoAnswer::NotAnswerable,
            ),
        ];
        for (pkt, want) in cases {
            assert_eq!(packet_too_big(&pkt, 1420, gw, &mut out), Err(want));
        }
        // An ICMP error (type 3) is never answered; an echo request is.
        let mut err = v4_packet(9000, true, 1, HOST4);
        err[20] = 3;
        assert_eq!(
            packet_too_big(&err, 1420, gw, &mut out),
            Err(NoAnswer::NotAnswerable)
        );
        err[20] = 8;
        assert!(packet_too_big(&err, 1420, gw, &mut out).is_ok());
        // A later fragment is not answered.
        let mut frag = v4_packet(9000, true, 6, HOST4);
        frag[7] = 10;
        assert_eq!(
            packet_too_big(&frag, 1420, gw, &mut out),
            Err(NoAnswer::NotAnswerable)
        );
        let v6 = v6_packet(9000, 6, Ipv6Addr::LOCALHOST.octets());
        assert_eq!(
            packet_too_big(&v6, 1420, IpAddr::V6(Ipv6Addr::LOCALHOST), &mut out),
            Err(NoAnswer::NotAnswerable)
        );
        assert_eq!(
            packet_too_big(&v6, 1420, gw, &mut out),
            Err(NoAnswer::WrongFamily)
        );
        assert_eq!(
            packet_too_big(&v4_packet(9000, true, 6, HOST4), 1420, gw, &mut [0u8; 100]),
            Err(NoAnswer::NoRoom)
        );
        for junk in [vec![], vec![0x45; 3000], vec![0xff; 3000], vec![0x60; 3000]] {
            let _ = packet_too_big(&junk, 1420, gw, &mut out);
        }
    }

    #[test]
    fn answers_are_paced_by_a_token_bucket() {
        let t0 = Instant::now();
        let mut r = IcmpRate::new(10, 3);
        let burst = (0..10).filter(|_| r.allow(t0)).count();
        assert_eq!(burst, 3);
        // 10 per second afterwards: one every 100 ms.
        let mut allowed = 0;
        for ms in 1..=1000 {
            if r.allow(t0 + Duration::from_millis(ms)) {
                allowed += 1;
            }
        }
        assert!((9..=11).contains(&allowed), "{allowed}");
    }
}
