//! Userspace TSO and GRO (`isthmus_offload`): a TUN read (virtio-net header, then the packet)
//! is split into wire packets; those packets, as one batch of decrypted packets, are coalesced
//! into TUN writes; and splitting those writes again gives the very same packets back, in
//! order. Nothing is lost, reordered or changed on the way through both offloads.

use isthmus_offload::{split, Coalescer, VnetHdr, MAX_IP_PACKET, SLOT_LEN};

/// More segments than this are not coalesced (the arena would be large); split alone is still
/// checked. A 64 KiB super-packet with an MSS of 1 byte makes 65 000 segments.
const MAX_BATCH: usize = 256;

pub fn run(data: &[u8]) {
    let Ok(hdr) = VnetHdr::parse(data) else {
        return;
    };
    let mut packet = data[VnetHdr::LEN..].to_vec();
    let mut segments: Vec<Vec<u8>> = Vec::new();
    let Ok(n) = split(&hdr, &mut packet, |s| segments.push(s.to_vec())) else {
        assert!(segments.is_empty(), "a failed split emitted nothing");
        return;
    };
    assert_eq!(n, segments.len(), "split counts what it emitted");
    for s in &segments {
        assert!(
            !s.is_empty() && s.len() <= MAX_IP_PACKET,
            "{} bytes",
            s.len()
        );
    }
    if segments.len() > MAX_BATCH {
        return;
    }

    let writes = coalesce(&segments);
    assert!(
        writes.len() <= segments.len(),
        "coalescing never adds writes"
    );
    let mut again = Vec::new();
    for w in &writes {
        let hdr = VnetHdr::parse(w).expect("a coalesced write starts with its header");
        let mut pkt = w[VnetHdr::LEN..].to_vec();
        assert!(pkt.len() <= MAX_IP_PACKET);
        split(&hdr, &mut pkt, |s| again.push(s.to_vec())).expect("a coalesced write splits");
    }
    assert!(again == segments, "split(coalesce(segments)) == segments");
}

/// The TUN writes that coalescing `packets` (one batch) makes, header included.
fn coalesce(packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut arena = vec![0u8; packets.len() * SLOT_LEN];
    let mut lens = Vec::with_capacity(packets.len());
    for (i, p) in packets.iter().enumerate() {
        let at = i * SLOT_LEN + VnetHdr::LEN;
        arena[at..at + p.len()].copy_from_slice(p);
        lens.push(p.len());
    }
    let mut writes = Vec::new();
    Coalescer::new(packets.len(), SLOT_LEN)
        .coalesce(&mut arena, &lens, |w| writes.push(w.to_vec()))
        .expect("a batch in its slots fits the layout");
    writes
}
