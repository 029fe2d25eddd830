//! Write side: which decrypted packets become one TUN write, and what the kernel receives.

mod common;

use common::*;
use isthmus_offload::{
    Coalescer, OffloadError, VnetHdr, SLOT_LEN, VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
};

/// `count` in-order segments of `mss` payload bytes, as the peer's stack sent them.
fn segments(t: &Tcp, mss: usize, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let mut s = t.clone();
            s.seq = t.seq.wrapping_add((i * mss) as u32);
            s.id = t.id.wrapping_add(i as u16);
            s.payload = pattern(mss, i as u8);
            s.build()
        })
        .collect()
}

/// Number of segments in each write (1 for a packet written alone).
fn shape(writes: &[(VnetHdr, Vec<u8>)]) -> Vec<usize> {
    writes
        .iter()
        .map(|(h, p)| {
            if h.gso_type == 0 {
                1
            } else {
                tcp_payload(p).len().div_ceil(usize::from(h.gso_size))
            }
        })
        .collect()
}

#[test]
fn consecutive_segments_of_one_flow_become_one_super_packet() {
    for v6 in [false, true] {
        let t = if v6 { Tcp::v6() } else { Tcp::v4() };
        let segs = segments(&t, 1400, 10);
        let writes = coalesce_all(&segs);
        assert_eq!(writes.len(), 1);
        let (hdr, pkt) = &writes[0];
        let iph = ip_header_len(pkt);
        assert_eq!(hdr.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
        let want_type = if v6 {
            VIRTIO_NET_HDR_GSO_TCPV6
        } else {
            VIRTIO_NET_HDR_GSO_TCPV4
        };
        assert_eq!(hdr.gso_type, want_type);
        assert_eq!(hdr.gso_size, 1400);
        assert_eq!(usize::from(hdr.hdr_len), iph + 32);
        assert_eq!(usize::from(hdr.csum_start), iph);
        assert_eq!(hdr.csum_offset, 16);
        assert_eq!(ip_len(pkt), pkt.len());
        assert_eq!(pkt.len(), iph + 32 + 14_000);
        assert!(ipv4_header_ok(pkt));
        assert_eq!(seq(pkt), t.seq);
        let want: Vec<u8> = segs.iter().flat_map(|s| tcp_payload(s).to_vec()).collect();
        assert_eq!(tcp_payload(pkt), &want[..]);
        // The checksum field holds the partial sum; completing it the way the kernel does
        // (sum from csum_start, invert) gives the right full checksum.
        assert_eq!(be16(pkt, iph + 16), partial_checksum(pkt));
        let completed = !(ones_sum(&pkt[iph..], 0) as u16);
        assert_eq!(completed, expected_transport_checksum(pkt, iph + 16));
    }
}

#[test]
fn a_single_packet_is_written_alone_with_a_zero_header() {
    let segs = segments(&Tcp::v4(), 1000, 1);
    let writes = coalesce_all(&segs);
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].0, VnetHdr::NONE);
    assert_eq!(writes[0].1, segs[0]);
}

#[test]
fn interleaved_flows_coalesce_separately_and_keep_their_order() {
    let a = segments(&Tcp::v4(), 1000, 4);
    let b = segments(&Tcp::v4().sport(1234), 1000, 4);
    let c = segments(&Tcp::v6(), 1000, 3);
    let batch = vec![
        a[0].clone(),
        b[0].clone(),
        a[1].clone(),
        c[0].clone(),
        b[1].clone(),
        a[2].clone(),
        c[1].clone(),
        b[2].clone(),
        b[3].clone(),
        a[3].clone(),
        c[2].clone(),
    ];
    let writes = coalesce_all(&batch);
    assert_eq!(shape(&writes), vec![4, 4, 3]);
    // Written in the order of each flow's first packet.
    assert_eq!(be16(&writes[0].1, 20), 40000);
    assert_eq!(be16(&writes[1].1, 20), 1234);
    assert_eq!(writes[2].1[0] >> 4, 6);
}

#[test]
fn a_sequence_gap_starts_a_new_super_packet() {
    let mut segs = segments(&Tcp::v4(), 1000, 6);
    segs.remove(3);
    assert_eq!(shape(&coalesce_all(&segs)), vec![3, 2]);
}

#[test]
fn reordered_segments_are_not_merged_backwards() {
    let segs = segments(&Tcp::v4(), 1000, 4);
    let batch = vec![
        segs[1].clone(),
        segs[0].clone(),
        segs[2].clone(),
        segs[3].clone(),
    ];
    let writes = coalesce_all(&batch);
    // seg0 does not follow seg1, and seg2 does not follow seg0: only seg3 joins seg2.
    assert_eq!(shape(&writes), vec![1, 1, 2]);
    assert_eq!(seq(&writes[0].1), 2000);
    assert_eq!(seq(&writes[1].1), 1000);
    assert_eq!(seq(&writes[2].1), 3000);
}

#[test]
fn a_different_ack_number_starts_a_new_super_packet() {
    let t = Tcp::v4();
    let mut segs = segments(&t, 1000, 4);
    let mut t2 = t.clone();
    t2.ack += 1;
    t2.seq = t.seq + 2000;
    t2.id = t.id + 2;
    segs[2] = t2.clone().payload(pattern(1000, 2)).build();
    t2.seq += 1000;
    t2.id += 1;
    segs[3] = t2.payload(pattern(1000, 3)).build();
    assert_eq!(shape(&coalesce_all(&segs)), vec![2, 2]);
}

#[test]
fn a_different_window_starts_a_new_super_packet() {
    let t = Tcp::v6();
    let mut segs = segments(&t, 1000, 3);
    let mut t2 = t.clone();
    t2.window += 1;
    t2.seq = t.seq + 2000;
    segs[2] = t2.payload(pattern(1000, 2)).build();
    assert_eq!(shape(&coalesce_all(&segs)), vec![2, 1]);
}

#[test]
fn psh_ends_a_super_packet() {
    let t = Tcp::v4();
    let mut segs = segments(&t, 1000, 5);
    let mut p = t.clone();
    p.seq = t.seq + 2000;
    p.id = t.id + 2;
    p.flags = ACK | PSH;
    segs[2] = p.payload(pattern(1000, 2)).build();
    let writes = coalesce_all(&segs);
    assert_eq!(shape(&writes), vec![3, 2]);
    assert_eq!(tcp_flags(&writes[0].1), ACK | PSH);
    assert_eq!(tcp_flags(&writes[1].1), ACK);
}

#[test]
fn a_psh_head_is_never_extended() {
    let t = Tcp::v4().flags(ACK | PSH);
    let segs = segments(&t, 1000, 3);
    assert_eq!(shape(&coalesce_all(&segs)), vec![1, 1, 1]);
}

#[test]
fn a_short_segment_ends_a_super_packet() {
    let t = Tcp::v4();
    let mut segs = segments(&t, 1000, 5);
    let mut s = t.clone();
    s.seq = t.seq + 2000;
    s.id = t.id + 2;
    segs[2] = s.payload(pattern(500, 2)).build();
    // The next segment follows the short one in sequence but must not be merged after it.
    let mut n = t.clone();
    n.seq = t.seq + 2500;
    n.id = t.id + 3;
    segs[3] = n.clone().payload(pattern(1000, 3)).build();
    n.seq += 1000;
    n.id += 1;
    segs[4] = n.payload(pattern(1000, 4)).build();
    let writes = coalesce_all(&segs);
    assert_eq!(shape(&writes), vec![3, 2]);
    assert_eq!(tcp_payload(&writes[0].1).len(), 2500);
}

#[test]
fn a_larger_segment_does_not_follow_a_smaller_head() {
    let t = Tcp::v4();
    let first = t.clone().payload(pattern(500, 0)).build();
    let mut n = t.clone();
    n.seq += 500;
    n.id += 1;
    let second = n.payload(pattern(1000, 1)).build();
    assert_eq!(shape(&coalesce_all(&[first, second])), vec![1, 1]);
}

#[test]
fn syn_fin_rst_urg_cwr_ece_segments_are_written_alone() {
    for flag in [SYN, FIN, RST, URG, CWR, ECE] {
        let t = Tcp::v4();
        let mut segs = segments(&t, 1000, 4);
        let mut f = t.clone();
        f.seq = t.seq + 1000;
        f.id = t.id + 1;
        f.flags = ACK | flag;
        segs[1] = f.payload(pattern(1000, 1)).build();
        assert_eq!(shape(&coalesce_all(&segs)), vec![1, 1, 2], "flag {flag:#x}");
    }
}

#[test]
fn ipv4_options_prevent_coalescing() {
    let mut t = Tcp::v4();
    t.ip_options = vec![1, 1, 1, 0];
    let segs = segments(&t, 1000, 3);
    assert_eq!(shape(&coalesce_all(&segs)), vec![1, 1, 1]);
}

#[test]
fn different_tcp_options_prevent_coalescing() {
    let t = Tcp::v4();
    let mut segs = segments(&t, 1000, 3);
    let mut o = t.clone();
    o.seq = t.seq + 2000;
    o.id = t.id + 2;
    o.tcp_options[11] = 3; // another timestamp echo
    segs[2] = o.payload(pattern(1000, 2)).build();
    assert_eq!(shape(&coalesce_all(&segs)), vec![2, 1]);
}

#[test]
fn a_ttl_or_tos_change_starts_a_new_super_packet() {
    let changes: [fn(&mut Tcp); 2] = [|t| t.ttl -= 1, |t| t.tos = 0x02];
    for change in changes {
        for base in [Tcp::v4(), Tcp::v6()] {
            let mut segs = segments(&base, 1000, 4);
            let mut c = base.clone();
            change(&mut c);
            for (i, s) in segs.iter_mut().enumerate().skip(2) {
                let mut ci = c.clone();
                ci.seq = base.seq + 1000 * i as u32;
                ci.id = base.id + i as u16;
                *s = ci.payload(pattern(1000, i as u8)).build();
            }
            assert_eq!(shape(&coalesce_all(&segs)), vec![2, 2]);
        }
    }
}

#[test]
fn an_ipv6_flow_label_change_starts_a_new_super_packet() {
    let t = Tcp::v6();
    let mut segs = segments(&t, 1000, 3);
    let mut c = t.clone();
    c.flow_label = 7;
    c.seq = t.seq + 2000;
    segs[2] = c.payload(pattern(1000, 2)).build();
    assert_eq!(shape(&coalesce_all(&segs)), vec![2, 1]);
}

#[test]
fn without_df_ipv4_ids_must_be_consecutive() {
    let mut t = Tcp::v4();
    t.df = false;
    let segs = segments(&t, 1000, 3);
    assert_eq!(shape(&coalesce_all(&segs)), vec![3]);
    let mut odd = segments(&t, 1000, 3);
    let mut c = t.clone();
    c.seq = t.seq + 2000;
    c.id = t.id + 5;
    odd[2] = c.payload(pattern(1000, 2)).build();
    assert_eq!(shape(&coalesce_all(&odd)), vec![2, 1]);
    // With DF the ID does not matter (Linux sets it freely then).
    let mut df = Tcp::v4();
    df.id = 9;
    let mut fixed = segments(&df, 1000, 3);
    for (i, s) in fixed.iter_mut().enumerate() {
        let mut c = df.clone();
        c.seq = df.seq + 1000 * i as u32;
        *s = c.payload(pattern(1000, i as u8)).build();
    }
    assert_eq!(shape(&coalesce_all(&fixed)), vec![3]);
}

#[test]
fn super_packets_never_exceed_65535_bytes() {
    // 20 + 32 + 46 * 1400 = 64452: 46 fit, the 47th would make 65852.
    let segs = segments(&Tcp::v4(), 1400, 100);
    let writes = coalesce_all(&segs);
    assert_eq!(shape(&writes), vec![46, 46, 8]);
    for (_, p) in &writes {
        assert!(p.len() <= 65535);
    }
    // Exactly 65535 fits: 20 + 32 + 1447 * 45 + 368 with a short last segment.
    let t = Tcp::v4();
    let mut exact = segments(&t, 1447, 45);
    let mut last = t.clone();
    last.seq = t.seq + 1447 * 45;
    last.id = t.id + 45;
    exact.push(last.payload(pattern(368, 45)).build());
    let writes = coalesce_all(&exact);
    assert_eq!(shape(&writes), vec![46]);
    assert_eq!(writes[0].1.len(), 65535);
    // One byte more does not.
    let mut over = segments(&t, 1447, 45);
    let mut last = t.clone();
    last.seq = t.seq + 1447 * 45;
    last.id = t.id + 45;
    over.push(last.payload(pattern(369, 45)).build());
    assert_eq!(shape(&coalesce_all(&over)), vec![45, 1]);
}

#[test]
fn a_small_slot_limits_how_far_a_head_grows() {
    let segs = segments(&Tcp::v4(), 1000, 6);
    let slot = VnetHdr::LEN + 52 + 3000;
    let mut b = Batch::new(&segs, slot);
    let mut c = Coalescer::new(8, slot);
    let mut sizes = Vec::new();
    let stats = c
        .coalesce(&mut b.arena, &b.lens, |w| sizes.push(w.len()))
        .unwrap();
    assert_eq!(sizes, vec![slot, slot]);
    assert_eq!(stats.super_packets, 2);
}

#[test]
fn pure_acks_are_never_merged_and_keep_their_place() {
    let t = Tcp::v4();
    let mut segs = segments(&t, 1000, 4);
    let mut ack = t.clone();
    ack.seq = t.seq + 2000;
    let pure = ack.payload(Vec::new()).build();
    segs.insert(2, pure.clone());
    segs.insert(3, pure.clone());
    let writes = coalesce_all(&segs);
    assert_eq!(shape(&writes), vec![2, 1, 1, 2]);
    assert_eq!(writes[1].1, pure);
    // Only pure ACKs: one write each.
    assert_eq!(
        shape(&coalesce_all(&[pure.clone(), pure.clone(), pure])),
        vec![1, 1, 1]
    );
}

#[test]
fn a_segment_with_a_bad_checksum_is_written_alone_unchanged() {
    let t = Tcp::v4();
    let mut segs = segments(&t, 1000, 4);
    let last = segs[2].len() - 1;
    segs[2][last] ^= 0xff;
    let mut c = Coalescer::new(8, SLOT_LEN);
    let mut b = Batch::new(&segs, SLOT_LEN);
    let mut writes = Vec::new();
    let stats = c
        .coalesce(&mut b.arena, &b.lens, |w| writes.push(w.to_vec()))
        .unwrap();
    assert_eq!(stats.bad_checksums, 1);
    assert_eq!(writes.len(), 3);
    assert_eq!(&writes[1][VnetHdr::LEN..], &segs[2][..]);
    assert_eq!(&writes[1][..VnetHdr::LEN], &[0; 10]);
    // The corrupt segment closed the flow's super-packet; seg 3 follows it alone.
    assert_eq!(&writes[2][VnetHdr::LEN..], &segs[3][..]);
}

#[test]
fn a_head_with_a_bad_checksum_is_written_alone_and_the_rest_still_merge() {
    let t = Tcp::v6();
    let mut segs = segments(&t, 1000, 4);
    let last = segs[0].len() - 1;
    segs[0][last] ^= 1;
    let writes = coalesce_all(&segs);
    assert_eq!(shape(&writes), vec![1, 3]);
    assert_eq!(writes[0].1, segs[0]);
}

#[test]
fn a_bad_ipv4_header_checksum_prevents_merging() {
    let t = Tcp::v4();
    let mut segs = segments(&t, 1000, 3);
    segs[1][10] ^= 1;
    assert_eq!(shape(&coalesce_all(&segs)), vec![1, 1, 1]);
}

#[test]
fn non_tcp_and_garbage_are_written_alone_in_place() {
    let t = Tcp::v4();
    let segs = segments(&t, 1000, 2);
    let udp = udp_partial(false, &[1, 2, 3]);
    let junk = vec![0xde, 0xad];
    let batch = vec![segs[0].clone(), udp.clone(), junk.clone(), segs[1].clone()];
    let writes = coalesce_all(&batch);
    assert_eq!(shape(&writes), vec![2, 1, 1]);
    assert_eq!(writes[1].1, udp);
    assert_eq!(writes[2].1, junk);
}

#[test]
fn an_unparsable_tcp_packet_between_the_same_hosts_stops_merging_across_it() {
    let t = Tcp::v4();
    let segs = segments(&t, 1000, 3);
    let mut frag = segs[1].clone();
    frag[6] |= 0x20; // more fragments
    let batch = vec![segs[0].clone(), frag, segs[1].clone(), segs[2].clone()];
    assert_eq!(shape(&coalesce_all(&batch)), vec![1, 1, 2]);
}

#[test]
fn an_empty_batch_writes_nothing() {
    assert!(coalesce_all(&[]).is_empty());
}

#[test]
fn a_batch_that_breaks_the_slot_layout_is_refused_without_writing() {
    let segs = segments(&Tcp::v4(), 1000, 2);
    let mut b = Batch::new(&segs, 2000);
    let mut c = Coalescer::new(4, 2000);
    let mut n = 0;
    let too_long = [1000, 1991];
    assert_eq!(
        c.coalesce(&mut b.arena, &too_long, |_| n += 1),
        Err(OffloadError::BadBatch)
    );
    let three = [1000, 1000, 1000];
    assert_eq!(
        c.coalesce(&mut b.arena, &three, |_| n += 1),
        Err(OffloadError::BadBatch)
    );
    let mut tiny = Coalescer::new(4, 5);
    assert_eq!(
        tiny.coalesce(&mut b.arena, &[1], |_| n += 1),
        Err(OffloadError::BadBatch)
    );
    assert_eq!(n, 0);
    assert_eq!(c.slot_len(), 2000);
}

#[test]
fn the_coalescer_is_reusable_across_batches() {
    let mut c = Coalescer::new(8, SLOT_LEN);
    for round in 0..3u32 {
        let t = Tcp::v4().seq(round * 100_000);
        let segs = segments(&t, 1000, 5);
        let mut b = Batch::new(&segs, SLOT_LEN);
        let mut writes = 0;
        let stats = c.coalesce(&mut b.arena, &b.lens, |_| writes += 1).unwrap();
        assert_eq!(writes, 1);
        assert_eq!(stats.packets, 5);
        assert_eq!(stats.super_packets, 1);
    }
}
