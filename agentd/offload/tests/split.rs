//! Read side: super-packets from the kernel become wire packets with correct headers.

mod common;

use common::*;
use isthmus_offload::{
    split, OffloadError, VnetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4,
};

fn check_segments(orig: &Tcp, segs: &[Vec<u8>], mss: usize) {
    let total = orig.payload.len();
    assert_eq!(segs.len(), total.div_ceil(mss));
    let mut joined = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        let want = if last { total - i * mss } else { mss };
        assert_eq!(tcp_payload(s).len(), want, "segment {i} size");
        assert_eq!(ip_len(s), s.len(), "segment {i} IP length");
        assert_eq!(
            seq(s),
            orig.seq.wrapping_add((i * mss) as u32),
            "segment {i} seq"
        );
        assert!(ipv4_header_ok(s), "segment {i} IPv4 header checksum");
        assert!(transport_ok(s), "segment {i} TCP checksum");
        if !orig.v6 {
            assert_eq!(
                ipv4_id(s),
                orig.id.wrapping_add(i as u16),
                "segment {i} IPv4 ID"
            );
        }
        joined.extend_from_slice(tcp_payload(s));
    }
    assert_eq!(joined, orig.payload);
}

#[test]
fn ipv4_super_packet_splits_into_mss_segments_with_valid_checksums() {
    let t = Tcp::v4().payload(pattern(10_000, 1)).flags(ACK | PSH);
    let (hdr, pkt) = t.build_gso(1448);
    let segs = split_all(&hdr, &pkt);
    check_segments(&t, &segs, 1448);
    assert_eq!(segs.len(), 7);
    assert_eq!(segs[6].len(), 20 + 32 + 10_000 - 6 * 1448);
    // PSH only on the last segment.
    for s in &segs[..6] {
        assert_eq!(tcp_flags(s), ACK);
    }
    assert_eq!(tcp_flags(&segs[6]), ACK | PSH);
    // Everything else in the headers is copied: options, ports, ack, window, TTL, DF.
    for s in &segs {
        assert_eq!(&s[..2], &pkt[..2]);
        assert_eq!(&s[6..10], &pkt[6..10]);
        assert_eq!(&s[12..20], &pkt[12..20]);
        assert_eq!(&s[20..24], &pkt[20..24]);
        assert_eq!(&s[28..33], &pkt[28..33]);
        assert_eq!(&s[34..36], &pkt[34..36]);
        assert_eq!(&s[40..52], &pkt[40..52]);
    }
}

#[test]
fn ipv6_super_packet_splits_and_sets_payload_length() {
    let t = Tcp::v6().payload(pattern(64_000, 2));
    let (hdr, pkt) = t.build_gso(1428);
    let segs = split_all(&hdr, &pkt);
    check_segments(&t, &segs, 1428);
    for s in &segs {
        assert_eq!(usize::from(be16(s, 4)), s.len() - 40);
        assert_eq!(&s[..4], &pkt[..4], "traffic class and flow label kept");
    }
}

#[test]
fn fin_goes_on_the_last_segment_and_cwr_on_the_first() {
    let t = Tcp::v4()
        .payload(pattern(3000, 3))
        .flags(ACK | PSH | FIN | CWR | ECE);
    let (mut hdr, pkt) = t.build_gso(1000);
    hdr.gso_type |= VIRTIO_NET_HDR_GSO_ECN;
    let segs = split_all(&hdr, &pkt);
    check_segments(&t, &segs, 1000);
    assert_eq!(tcp_flags(&segs[0]), ACK | CWR | ECE);
    assert_eq!(tcp_flags(&segs[1]), ACK | ECE);
    assert_eq!(tcp_flags(&segs[2]), ACK | ECE | PSH | FIN);
}

#[test]
fn sequence_and_ipv4_id_wrap_around() {
    let t = Tcp::v4()
        .payload(pattern(5000, 4))
        .seq(u32::MAX - 1500)
        .id(u16::MAX);
    let (hdr, pkt) = t.build_gso(1200);
    let segs = split_all(&hdr, &pkt);
    check_segments(&t, &segs, 1200);
    assert_eq!(ipv4_id(&segs[1]), 0);
    assert_eq!(seq(&segs[2]), 899);
}

#[test]
fn ipv4_options_and_no_tcp_options_are_handled() {
    let mut t = Tcp::v4().payload(pattern(4000, 5));
    t.ip_options = vec![1, 1, 1, 0]; // NOP NOP NOP EOL
    t.tcp_options.clear();
    let (hdr, pkt) = t.build_gso(1460);
    let segs = split_all(&hdr, &pkt);
    check_segments(&t, &segs, 1460);
    assert_eq!(ip_header_len(&segs[0]), 24);
}

#[test]
fn an_mss_smaller_than_the_headers_still_splits_correctly() {
    // Headers of segment i are written over segment i-1's payload; with a tiny MSS they also
    // cover its headers, which must not matter.
    let t = Tcp::v6().payload(pattern(700, 6));
    let (hdr, pkt) = t.build_gso(7);
    let segs = split_all(&hdr, &pkt);
    check_segments(&t, &segs, 7);
    assert_eq!(segs.len(), 100);
}

#[test]
fn payload_smaller_than_mss_is_one_segment() {
    let t = Tcp::v4().payload(pattern(100, 7));
    let (hdr, pkt) = t.build_gso(1448);
    let segs = split_all(&hdr, &pkt);
    check_segments(&t, &segs, 1448);
}

#[test]
fn hdr_len_from_the_kernel_is_not_trusted() {
    // The kernel may report its linear header area; lengths come from the packet.
    let t = Tcp::v4().payload(pattern(3000, 8));
    let (mut hdr, pkt) = t.build_gso(1000);
    hdr.hdr_len = 128;
    check_segments(&t, &split_all(&hdr, &pkt), 1000);
    hdr.hdr_len = 0;
    check_segments(&t, &split_all(&hdr, &pkt), 1000);
}

#[test]
fn needs_csum_completes_a_tcp_checksum() {
    for v6 in [false, true] {
        let t = if v6 { Tcp::v6() } else { Tcp::v4() };
        let t = t.payload(pattern(333, 9));
        let (mut hdr, pkt) = t.build_gso(0);
        hdr.gso_type = 0;
        hdr.gso_size = 0;
        assert!(!transport_ok(&pkt), "partial checksum must not verify yet");
        let segs = split_all(&hdr, &pkt);
        assert_eq!(segs.len(), 1);
        assert!(transport_ok(&segs[0]));
        let iph = ip_header_len(&pkt);
        assert_eq!(
            be16(&segs[0], iph + 16),
            expected_transport_checksum(&pkt, iph + 16)
        );
    }
}

#[test]
fn needs_csum_completes_a_udp_checksum() {
    for v6 in [false, true] {
        let pkt = udp_partial(v6, &pattern(101, 10));
        let iph = ip_header_len(&pkt);
        let hdr = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            csum_start: iph as u16,
            csum_offset: 6,
            ..VnetHdr::NONE
        };
        let segs = split_all(&hdr, &pkt);
        assert_eq!(segs.len(), 1);
        assert!(transport_ok(&segs[0]));
        assert_eq!(
            be16(&segs[0], iph + 6),
            expected_transport_checksum(&pkt, iph + 6)
        );
    }
}

#[test]
fn a_udp_checksum_that_computes_to_zero_is_sent_as_all_ones() {
    // Search a two-byte payload value that makes the final checksum zero.
    let base = udp_partial(false, &[0, 0]);
    let iph = ip_header_len(&base);
    let hdr = VnetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        csum_start: iph as u16,
        csum_offset: 6,
        ..VnetHdr::NONE
    };
    let mut found = false;
    for v in 0..=u16::MAX {
        let pkt = udp_partial(false, &v.to_be_bytes());
        // The field holds the pseudo-header sum, so the final checksum is zero exactly when
        // everything from the UDP header on sums to 0xffff.
        if ones_sum(&pkt[iph..], 0) != 0xffff {
            continue;
        }
        let segs = split_all(&hdr, &pkt);
        assert_eq!(be16(&segs[0], iph + 6), 0xffff);
        assert!(transport_ok(&segs[0]));
        found = true;
        break;
    }
    assert!(found);
}

#[test]
fn a_packet_without_offload_is_emitted_unchanged() {
    let pkt = Tcp::v4().payload(pattern(50, 11)).build();
    assert_eq!(split_all(&VnetHdr::NONE, &pkt), vec![pkt]);
}

fn split_err(hdr: &VnetHdr, pkt: &[u8]) -> OffloadError {
    let mut buf = pkt.to_vec();
    let mut emitted = 0;
    let err = split(hdr, &mut buf, |_| emitted += 1).expect_err("split must refuse this");
    assert_eq!(emitted, 0, "nothing is emitted on error");
    err
}

#[test]
fn malformed_super_packets_are_rejected_with_a_reason() {
    let t = Tcp::v4().payload(pattern(3000, 12));
    let (hdr, pkt) = t.build_gso(1000);

    let zero_mss = VnetHdr { gso_size: 0, ..hdr };
    assert_eq!(split_err(&zero_mss, &pkt), OffloadError::BadVnetHeader);

    let uso = VnetHdr {
        gso_type: VIRTIO_NET_HDR_GSO_UDP_L4,
        ..hdr
    };
    assert_eq!(split_err(&uso, &pkt).reason(), "unsupported_gso");

    let v6_type = VnetHdr {
        gso_type: VIRTIO_NET_HDR_GSO_TCPV6,
        ..hdr
    };
    assert_eq!(split_err(&v6_type, &pkt), OffloadError::GsoIpMismatch);

    assert_eq!(
        split_err(&hdr, &pkt[..pkt.len() - 1]),
        OffloadError::LengthMismatch
    );
    assert_eq!(split_err(&hdr, &pkt[..30]), OffloadError::LengthMismatch);
    assert_eq!(split_err(&hdr, &pkt[..10]), OffloadError::Truncated);
    assert_eq!(split_err(&hdr, &[]), OffloadError::Truncated);

    let mut bad_ihl = pkt.clone();
    bad_ihl[0] = 0x44;
    assert_eq!(split_err(&hdr, &bad_ihl), OffloadError::BadIpHeader);

    let mut bad_version = pkt.clone();
    bad_version[0] = 0x55;
    assert_eq!(split_err(&hdr, &bad_version), OffloadError::BadIpHeader);

    let mut fragment = pkt.clone();
    fragment[6] |= 0x20;
    assert_eq!(split_err(&hdr, &fragment), OffloadError::Fragmented);

    let mut udp = pkt.clone();
    udp[9] = 17;
    assert_eq!(split_err(&hdr, &udp), OffloadError::NotTcp);

    let mut doff = pkt.clone();
    doff[20 + 12] = 0x40;
    assert_eq!(split_err(&hdr, &doff), OffloadError::BadTcpHeader);

    // A data offset pointing past the end of a small packet.
    let small = Tcp::v4().build();
    let (hdr_small, _) = Tcp::v4().build_gso(1000);
    let mut long_doff = small.clone();
    long_doff[20 + 12] = 0xf0;
    assert_eq!(split_err(&hdr_small, &long_doff), OffloadError::Truncated);
}

#[test]
fn ipv6_extension_headers_are_rejected() {
    let t = Tcp::v6().payload(pattern(3000, 13));
    let (hdr, mut pkt) = t.build_gso(1000);
    pkt[6] = 0; // hop-by-hop options
    assert_eq!(split_err(&hdr, &pkt), OffloadError::Ipv6ExtensionHeaders);
    pkt[6] = 44; // fragment
    assert_eq!(split_err(&hdr, &pkt).reason(), "ipv6_extension_headers");
    let v4_type = VnetHdr {
        gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
        ..hdr
    };
    let (_, good) = t.build_gso(1000);
    assert_eq!(split_err(&v4_type, &good), OffloadError::GsoIpMismatch);
}

#[test]
fn needs_csum_offsets_outside_the_packet_are_rejected() {
    let pkt = udp_partial(false, &[1, 2, 3]);
    let hdr = VnetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        csum_start: (pkt.len() - 1) as u16,
        csum_offset: 0,
        ..VnetHdr::NONE
    };
    assert_eq!(split_err(&hdr, &pkt), OffloadError::BadVnetHeader);
    let hdr = VnetHdr {
        csum_start: u16::MAX,
        csum_offset: u16::MAX,
        ..hdr
    };
    assert_eq!(split_err(&hdr, &pkt), OffloadError::BadVnetHeader);
    // At the very end is fine.
    let hdr = VnetHdr {
        csum_start: 20,
        csum_offset: (pkt.len() - 22) as u16,
        ..hdr
    };
    assert!(split(&hdr, &mut pkt.clone(), |_| {}).is_ok());
}

#[test]
fn every_error_has_a_distinct_reason_and_a_message() {
    let all = [
        OffloadError::BadVnetHeader,
        OffloadError::UnsupportedGso(5),
        OffloadError::GsoIpMismatch,
        OffloadError::BadIpHeader,
        OffloadError::LengthMismatch,
        OffloadError::Truncated,
        OffloadError::Fragmented,
        OffloadError::NotTcp,
        OffloadError::Ipv6ExtensionHeaders,
        OffloadError::BadTcpHeader,
        OffloadError::BadBatch,
    ];
    let mut reasons: Vec<_> = all.iter().map(|e| e.reason()).collect();
    reasons.sort_unstable();
    reasons.dedup();
    assert_eq!(reasons.len(), all.len());
    for e in all {
        assert!(!e.to_string().is_empty());
        assert!(e
            .reason()
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    }
}
