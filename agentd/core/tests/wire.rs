//! The probe wire format on its own and through an engine: layouts and sizes, the tag over
//! every byte, the extensible version-2 tail (unknown TLVs skipped, padding, size
//! confirmation), the echo of `sent_us`, and decoding that never panics on anything.
// The simulated clock starts at a real instant; nothing here reads the clock after that.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Instant;

use common::{config, ms, TestAuth, KEY, LINKS};
use isthmus_core::wire::{
    self, tlv, AnnouncedRole, CheckState, HaAnnounce, Kind, Packet, PeerChecks, Tail, Tlv,
};
use isthmus_core::{
    dns_group_id, AnswerPin, DnsGroupConfig, Engine, Health, ProbeDrop, Received, Timings, View,
};
use proptest::prelude::*;

fn view() -> View {
    View {
        health: Health::Up,
        pinned: false,
        draining: true,
        priority: 3,
        fingerprint: 0x0bad_f00d,
        rx_loss_ppm: None,
    }
}

fn packet(version: u8, kind: Kind) -> Packet {
    Packet {
        version,
        kind,
        seq: 7,
        sent_us: 1_000_042,
        view: view(),
        speaks_v2: true,
        speaks_pmtu: true,
        tail: Tail::default(),
    }
}

/// A version-2 packet with every kind of TLV, tag computed over whatever `tail` holds.
fn raw_v2(auth: &TestAuth, kind: u8, tail: &[u8]) -> Vec<u8> {
    let mut b = wire::encode(auth, &packet(wire::V2, Kind::Request));
    b.truncate(wire::HEADER_LEN);
    b[5] = kind;
    b.extend_from_slice(tail);
    let tag = isthmus_core::Authenticator::tag(auth, &b);
    b.extend_from_slice(&tag);
    b
}

fn engines() -> (Engine, Engine, Instant) {
    let t0 = Instant::now();
    let c = config(Timings::DEFAULT, &LINKS, common::secs(30));
    (
        common::keyed(Engine::new(c.clone(), t0)),
        common::keyed(Engine::new(c, t0)),
        t0,
    )
}

#[test]
fn a_default_packet_is_64_bytes_in_v1_and_48_in_v2_and_round_trips() {
    for (version, len) in [(wire::V1, 64), (wire::V2, 48)] {
        for kind in [Kind::Request, Kind::Reply] {
            let bytes = wire::encode(&KEY, &packet(version, kind));
            assert_eq!(bytes.len(), len);
            assert_eq!(wire::decode(&KEY, &bytes), Ok(packet(version, kind)));
        }
    }
}

#[test]
fn v1_packets_carry_the_v2_capability_where_agentd_0_1_0_does_not_look() {
    let mut p = packet(wire::V1, Kind::Request);
    let with = wire::encode(&KEY, &p);
    p.speaks_v2 = false;
    let without = wire::encode(&KEY, &p);
    let differ: Vec<usize> = (0..64).filter(|&i| with[i] != without[i]).collect();
    // Byte 25 and the tag, nothing a version-1 decoder reads.
    assert_eq!(differ[0], 25);
    assert!(differ[1..].iter().all(|&i| i >= 48), "{differ:?}");
    assert_eq!(wire::decode(&KEY, &without), Ok(p));
}

#[test]
fn every_flipped_bit_of_a_v2_packet_is_rejected() {
    let mut p = packet(wire::V2, Kind::Reply);
    p.tail = Tail {
        pad_to: Some(120),
        confirms_size: Some(9000),
        path_mtu: Some(8920),
        checks: Some(PeerChecks {
            link: Some(CheckState::Fail),
            dns: vec![(7, vec![CheckState::Pass])],
        }),
        drill: Some("orders".into()),
        answer_pins: vec![AnswerPin {
            group: 7,
            answer: 0,
        }],
        ha: Some(HaAnnounce {
            role: AnnouncedRole::Unsure,
            revision: 42,
        }),
        other: vec![Tlv {
            code: 0x42,
            value: vec![1, 2, 3],
        }],
    };
    let bytes = wire::encode(&KEY, &p);
    assert_eq!(bytes.len(), 120);
    assert_eq!(wire::decode(&KEY, &bytes), Ok(p));
    for i in 0..bytes.len() * 8 {
        let mut m = bytes.clone();
        m[i / 8] ^= 1 << (i % 8);
        assert!(wire::decode(&KEY, &m).is_err(), "bit {i} accepted");
    }
}

#[test]
fn another_key_is_forged_and_an_unknown_version_is_counted_as_such() {
    let bytes = wire::encode(&KEY, &packet(wire::V2, Kind::Request));
    assert_eq!(wire::decode(&TestAuth(1), &bytes), Err(ProbeDrop::Forged));
    let mut v3 = bytes.clone();
    v3[4] = 3;
    assert_eq!(wire::decode(&KEY, &v3), Err(ProbeDrop::Version));
    let v1 = wire::encode(&KEY, &packet(wire::V1, Kind::Request));
    assert_eq!(wire::decode(&KEY, &v1[..63]), Err(ProbeDrop::Malformed));
    assert_eq!(wire::decode(&KEY, &bytes[..47]), Err(ProbeDrop::Malformed));
    assert_eq!(wire::decode(&KEY, b"ISTX\x02"), Err(ProbeDrop::Malformed));
}

#[test]
fn unknown_tlvs_are_skipped_and_known_ones_still_read() {
    let tail = [
        0x42,
        0,
        2,
        0xAA,
        0xBB, // unknown
        0x43,
        0,
        0, // unknown, empty
        tlv::CONFIRMS_SIZE,
        0,
        3,
        0x23,
        0x28,
        0xFF, // grown by a byte: the rest is ignored
        0x90,
        0,
        0, // experimental, empty
    ];
    let p = wire::decode(&KEY, &raw_v2(&KEY, 1, &tail)).expect("accepted");
    assert_eq!(p.tail.confirms_size, Some(9000));
    let codes: Vec<u8> = p.tail.other.iter().map(|t| t.code).collect();
    assert_eq!(codes, [0x42, 0x43, 0x90]);
    assert_eq!(p.view, view());

    // A TLV that overruns the tail, or a known one too short, is malformed.
    for bad in [
        &[0x42, 0, 9, 1][..],
        &[tlv::CONFIRMS_SIZE, 0, 1, 5],
        &[0x42, 0],
    ] {
        assert_eq!(
            wire::decode(&KEY, &raw_v2(&KEY, 1, bad)),
            Err(ProbeDrop::Malformed),
            "{bad:?}"
        );
    }
}

#[test]
fn an_engine_answers_a_request_with_unknown_tlvs() {
    let (_, mut b, t0) = engines();
    let tail = [0x77, 0, 4, 1, 2, 3, 4];
    let request = raw_v2(&KEY, 1, &tail);
    assert_eq!(
        b.handle_datagram("ic", &request, t0 + ms(1)),
        Received::Request
    );
    let reply = b.poll_transmit(t0 + ms(1)).expect("a reply");
    let p = wire::decode(&KEY, &reply.bytes).expect("valid");
    assert_eq!((p.version, p.kind, p.seq), (wire::V2, Kind::Reply, 7));
}

#[test]
fn a_padded_probe_of_9000_bytes_is_confirmed_by_a_small_reply() {
    let (_, mut b, t0) = engines();
    let mut p = packet(wire::V2, Kind::Request);
    p.tail.pad_to = Some(9000);
    let request = wire::encode(&KEY, &p);
    assert_eq!(request.len(), 9000);
    assert_eq!(
        wire::decode(&KEY, &request).map(|p| p.tail.pad_to),
        Ok(Some(9000))
    );
    assert_eq!(
        b.handle_datagram("ic", &request, t0 + ms(1)),
        Received::Request
    );
    let reply = b.poll_transmit(t0 + ms(1)).expect("a reply");
    assert!(reply.bytes.len() < 64, "{} bytes", reply.bytes.len());
    let r = wire::decode(&KEY, &reply.bytes).expect("valid");
    assert_eq!(r.tail.confirms_size, Some(9000));
    assert_eq!(r.tail.pad_to, None);
}

#[test]
fn padding_stops_at_the_largest_datagram() {
    let mut p = packet(wire::V2, Kind::Request);
    p.tail.pad_to = Some(u16::MAX);
    let bytes = wire::encode(&KEY, &p);
    assert_eq!(bytes.len(), wire::MAX_LEN);
    assert!(wire::decode(&KEY, &bytes).is_ok());
}

#[test]
fn replies_echo_the_requests_sent_us_in_both_versions() {
    for version in [wire::V1, wire::V2] {
        let (_, mut b, t0) = engines();
        let mut p = packet(version, Kind::Request);
        p.sent_us = 123_456_789;
        let request = wire::encode(&KEY, &p);
        assert_eq!(
            b.handle_datagram("inet", &request, t0 + ms(40)),
            Received::Request
        );
        let reply = b.poll_transmit(t0 + ms(40)).expect("a reply");
        assert_eq!(reply.link, "inet");
        let r = wire::decode(&KEY, &reply.bytes).expect("valid");
        assert_eq!(r.version, version, "answered in the request's version");
        assert_eq!((r.kind, r.seq, r.sent_us), (Kind::Reply, 7, 123_456_789));
        assert!(r.speaks_v2);
    }
}

#[test]
fn a_v2_reply_must_echo_the_send_time_of_its_request() {
    let (mut a, mut b, t0) = engines();
    // Make `a` know that `b` speaks v2, then take its next request on `ic`.
    for t in [t0, t0 + ms(1)] {
        while let Some(x) = a.poll_transmit(t) {
            b.handle_datagram(&x.link, &x.bytes, t);
        }
        while let Some(x) = b.poll_transmit(t) {
            a.handle_datagram(&x.link, &x.bytes, t);
        }
    }
    assert_eq!(a.link_report("ic").map(|r| r.peer_version), Some(2));
    let t = t0 + ms(200);
    let request = std::iter::from_fn(|| a.poll_transmit(t))
        .find(|x| x.link == "ic")
        .expect("a request on ic");
    let req = wire::decode(&KEY, &request.bytes).expect("valid");
    assert_eq!(req.version, wire::V2);
    let mut reply = packet(wire::V2, Kind::Reply);
    reply.seq = req.seq;
    reply.sent_us = req.sent_us + 1;
    let before = a.probe_drops("ic")[&ProbeDrop::Replayed];
    let got = a.handle_datagram("ic", &wire::encode(&KEY, &reply), t + ms(2));
    assert_eq!(got, Received::Dropped(ProbeDrop::Replayed));
    assert_eq!(a.probe_drops("ic")[&ProbeDrop::Replayed], before + 1);
    reply.sent_us = req.sent_us;
    let got = a.handle_datagram("ic", &wire::encode(&KEY, &reply), t + ms(2));
    assert_eq!(got, Received::Reply { rtt: ms(2) });
}

#[test]
fn drops_are_counted_by_reason_every_reason_present() {
    let (_, mut b, t0) = engines();
    assert_eq!(
        b.probe_drops("ic").keys().copied().collect::<Vec<_>>(),
        ProbeDrop::ALL
    );
    let request = wire::encode(&KEY, &packet(wire::V2, Kind::Request));
    b.handle_datagram("ic", &request, t0);
    b.handle_datagram("ic", &request, t0);
    b.handle_datagram("ic", b"garbage", t0);
    b.handle_datagram(
        "ic",
        &wire::encode(&TestAuth(5), &packet(2, Kind::Request)),
        t0,
    );
    b.handle_forged("ic");
    let drops = b.probe_drops("ic");
    let counts: Vec<(&str, u64)> = drops.iter().map(|(d, n)| (d.as_str(), *n)).collect();
    assert_eq!(
        counts,
        [
            ("malformed", 1),
            ("version", 0),
            ("forged", 2),
            ("replayed", 1)
        ]
    );
    // Without a key nothing can be told from a forgery.
    b.set_key("inet", None);
    assert_eq!(
        b.handle_datagram("inet", &request, t0),
        Received::Dropped(ProbeDrop::Forged)
    );
    assert!(
        std::iter::from_fn(|| b.poll_transmit(t0)).all(|t| t.link != "inet"),
        "nothing is sent on a link without a key"
    );
}

#[test]
fn a_link_without_a_key_schedules_requests_but_sends_nothing() {
    let (mut a, _, t0) = engines();
    a.set_key("inet", None);
    let sent: Vec<String> = std::iter::from_fn(|| a.poll_transmit(t0))
        .map(|t| t.link)
        .collect();
    assert_eq!(sent, ["ic"]);
    // The unsent request is outstanding and expires as lost.
    for step in 1..=30 {
        let t = t0 + ms(100 * step);
        a.handle_timeout(t);
        while a.poll_transmit(t).is_some() {}
    }
    assert!(matches!(
        a.health("inet"),
        Some(Health::Unknown | Health::Down)
    ));
    assert!(
        a.link_report("inet")
            .expect("a link")
            .figures
            .consecutive_lost
            > 0
    );
}

fn checks() -> PeerChecks {
    PeerChecks {
        link: Some(CheckState::Pass),
        dns: vec![
            (
                0x0102_0304,
                vec![CheckState::Fail, CheckState::Pass, CheckState::Unknown],
            ),
            (0xffff_fffe, vec![]),
        ],
    }
}

#[test]
fn service_checks_round_trip_in_v2_with_the_documented_layout() {
    let mut p = packet(wire::V2, Kind::Request);
    p.tail.checks = Some(checks());
    let bytes = wire::encode(&KEY, &p);
    let value = [
        2, 2, // pass over this link, two DNS groups
        1, 2, 3, 4, 3, 3, 2, 1, // id, three answers: fail, pass, unknown
        0xff, 0xff, 0xff, 0xfe, 0, // id, no answers
    ];
    let mut tlv_bytes = vec![tlv::SERVICE_CHECKS, 0, value.len() as u8];
    tlv_bytes.extend_from_slice(&value);
    assert_eq!(
        &bytes[wire::HEADER_LEN..bytes.len() - wire::TAG_LEN],
        tlv_bytes
    );
    assert_eq!(wire::decode(&KEY, &bytes), Ok(p.clone()));

    // No verdict over this link, no DNS group: two bytes.
    p.tail.checks = Some(PeerChecks::default());
    let bytes = wire::encode(&KEY, &p);
    assert_eq!(bytes.len(), wire::V2_MIN_LEN + 3 + 2);
    assert_eq!(wire::decode(&KEY, &bytes), Ok(p));
}

#[test]
fn version_1_carries_no_service_checks() {
    let mut p = packet(wire::V1, Kind::Reply);
    p.tail.checks = Some(checks());
    let bytes = wire::encode(&KEY, &p);
    assert_eq!(bytes.len(), wire::V1_LEN);
    assert_eq!(wire::decode(&KEY, &bytes).map(|p| p.tail.checks), Ok(None));
}

#[test]
fn what_the_service_checks_tlv_cannot_carry_is_left_out_when_sending() {
    let mut p = packet(wire::V2, Kind::Request);
    let mut dns: Vec<(u32, Vec<CheckState>)> =
        (0..70).map(|i| (i, vec![CheckState::Pass])).collect();
    dns[0].1 = vec![CheckState::Pass; 33];
    p.tail.checks = Some(PeerChecks { link: None, dns });
    let got = wire::decode(&KEY, &wire::encode(&KEY, &p))
        .expect("valid")
        .tail
        .checks
        .expect("checks");
    let ids: Vec<u32> = got.dns.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (1..65).collect::<Vec<u32>>());
}

#[test]
fn a_malformed_service_checks_tlv_drops_the_packet() {
    let tlv3 = |value: &[u8]| {
        let mut t = vec![tlv::SERVICE_CHECKS, 0, value.len() as u8];
        t.extend_from_slice(value);
        t
    };
    let mut too_many_answers = vec![2, 1, 0, 0, 0, 1, 33];
    too_many_answers.extend_from_slice(&[2; 33]);
    for bad in [
        &[][..],                   // empty
        &[2],                      // no group count
        &[4, 0],                   // not a state over the link
        &[2, 65],                  // more than 64 groups
        &[2, 1, 0, 0, 0],          // a group cut short
        &[2, 1, 0, 0, 0, 1, 2, 2], // two answers announced, one there
        &[2, 1, 0, 0, 0, 1, 1, 0], // answer code 0 is no state
        &[2, 1, 0, 0, 0, 1, 1, 4], // answer code 4 neither
        &too_many_answers,
    ] {
        assert_eq!(
            wire::decode(&KEY, &raw_v2(&KEY, 1, &tlv3(bad))),
            Err(ProbeDrop::Malformed),
            "{bad:?}"
        );
    }
    // A longer value is read and the rest ignored, as for every known TLV.
    let p = wire::decode(
        &KEY,
        &raw_v2(&KEY, 2, &tlv3(&[3, 1, 0, 0, 0, 9, 1, 2, 0xEE])),
    )
    .expect("accepted");
    assert_eq!(
        p.tail.checks,
        Some(PeerChecks {
            link: Some(CheckState::Fail),
            dns: vec![(9, vec![CheckState::Pass])],
        })
    );
}

#[test]
fn an_engine_sends_service_checks_only_in_v2_and_only_with_something_to_say() {
    let (mut a, mut b, t0) = engines();
    // Two rounds: version 1 first, version 2 once each knows the other speaks it.
    let exchange = |a: &mut Engine, b: &mut Engine, t: Instant| {
        let mut seen = vec![];
        for _ in 0..2 {
            while let Some(x) = a.poll_transmit(t) {
                seen.push((x.link.clone(), wire::decode(&KEY, &x.bytes).expect("valid")));
                b.handle_datagram(&x.link, &x.bytes, t);
            }
            while let Some(x) = b.poll_transmit(t) {
                a.handle_datagram(&x.link, &x.bytes, t);
            }
        }
        seen
    };
    let sent = exchange(&mut a, &mut b, t0);
    assert!(
        sent.iter().all(|(_, p)| p.tail.checks.is_none()),
        "nothing to say yet"
    );
    a.handle_checks("g", "ic", CheckState::Fail, t0);
    let mut t = t0;
    let mut sent = vec![];
    while sent.len() < 4 {
        t += ms(100);
        sent.extend(exchange(&mut a, &mut b, t));
    }
    for (link, p) in sent {
        assert_eq!(p.version, wire::V2);
        let expected = PeerChecks {
            link: (link == "ic").then_some(CheckState::Fail),
            dns: vec![],
        };
        assert_eq!(p.tail.checks, Some(expected), "{link} {:?}", p.kind);
    }
    assert_eq!(
        b.link_report("ic").and_then(|r| r.peer_checks),
        Some(CheckState::Fail)
    );
}

/// The TLV `code` with `value`, as it appears in a tail.
fn tlv_bytes(code: u8, value: &[u8]) -> Vec<u8> {
    let mut t = vec![code];
    t.extend_from_slice(&(value.len() as u16).to_be_bytes());
    t.extend_from_slice(value);
    t
}

#[test]
fn the_drill_and_answer_pins_round_trip_in_v2_with_the_documented_layouts() {
    let mut p = packet(wire::V2, Kind::Reply);
    p.tail.drill = Some("orders-db".into());
    p.tail.answer_pins = vec![
        AnswerPin {
            group: 0x0102_0304,
            answer: 1,
        },
        AnswerPin {
            group: 0xffff_fffe,
            answer: 31,
        },
    ];
    let bytes = wire::encode(&KEY, &p);
    let mut expected = tlv_bytes(tlv::DRILL, b"\x09orders-db");
    expected.extend(tlv_bytes(
        tlv::ANSWER_PINS,
        &[2, 1, 2, 3, 4, 1, 0xff, 0xff, 0xff, 0xfe, 31],
    ));
    assert_eq!(
        &bytes[wire::HEADER_LEN..bytes.len() - wire::TAG_LEN],
        expected
    );
    assert_eq!(wire::decode(&KEY, &bytes), Ok(p.clone()));
    assert_eq!(tlv::DRILL, 0x04);
    assert_eq!(tlv::ANSWER_PINS, 0x06);

    // No pins: no TLV at all, and a TLV that lists none reads as none.
    p.tail.answer_pins.clear();
    p.tail.drill = None;
    assert_eq!(wire::encode(&KEY, &p).len(), wire::V2_MIN_LEN);
    let empty = raw_v2(&KEY, 2, &tlv_bytes(tlv::ANSWER_PINS, &[0]));
    assert_eq!(
        wire::decode(&KEY, &empty).map(|p| p.tail),
        Ok(Tail::default())
    );
}

#[test]
fn the_ha_role_round_trips_in_v2_with_the_documented_layout_and_a_bad_one_drops_the_packet() {
    let mut p = packet(wire::V2, Kind::Request);
    p.tail.ha = Some(HaAnnounce {
        role: AnnouncedRole::Active,
        revision: 0x0102_0304_0506_0708,
    });
    let bytes = wire::encode(&KEY, &p);
    let ha = tlv_bytes(tlv::HA_ROLE, &[2, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(
        &bytes[wire::HEADER_LEN..bytes.len() - wire::TAG_LEN],
        &ha[..]
    );
    assert_eq!(wire::decode(&KEY, &bytes), Ok(p));
    // Standby, and bytes after the revision ignored (room to grow).
    let grown = tlv_bytes(tlv::HA_ROLE, &[1, 0, 0, 0, 0, 0, 0, 0, 9, 0xEE]);
    let p = wire::decode(&KEY, &raw_v2(&KEY, 1, &grown)).expect("accepted");
    assert_eq!(
        p.tail.ha,
        Some(HaAnnounce {
            role: AnnouncedRole::Standby,
            revision: 9
        })
    );
    for bad in [
        tlv_bytes(tlv::HA_ROLE, &[]),
        tlv_bytes(tlv::HA_ROLE, &[2, 0, 0, 0]),
        tlv_bytes(tlv::HA_ROLE, &[0, 0, 0, 0, 0, 0, 0, 0, 1]),
        tlv_bytes(tlv::HA_ROLE, &[4, 0, 0, 0, 0, 0, 0, 0, 1]),
    ] {
        assert_eq!(
            wire::decode(&KEY, &raw_v2(&KEY, 1, &bad)),
            Err(ProbeDrop::Malformed),
            "{bad:?}"
        );
    }
}

#[test]
fn a_long_drill_name_is_cut_on_a_character_boundary() {
    let mut p = packet(wire::V2, Kind::Request);
    // 63 ASCII bytes and a 3-byte character: 66 bytes, cut before the character.
    let name = format!("{}€tail", "a".repeat(63));
    p.tail.drill = Some(name);
    let got = wire::decode(&KEY, &wire::encode(&KEY, &p)).expect("valid");
    assert_eq!(got.tail.drill, Some("a".repeat(63)));
    // Exactly 64 bytes pass whole; so does an empty name.
    for name in ["é".repeat(32), String::new()] {
        p.tail.drill = Some(name.clone());
        let got = wire::decode(&KEY, &wire::encode(&KEY, &p)).expect("valid");
        assert_eq!(got.tail.drill, Some(name));
    }
}

#[test]
fn what_the_answer_pins_tlv_cannot_carry_is_left_out_when_sending() {
    let mut p = packet(wire::V2, Kind::Request);
    let mut pins: Vec<AnswerPin> = (0..70)
        .map(|group| AnswerPin { group, answer: 2 })
        .collect();
    pins[0].answer = 32;
    pins[1].group = 2; // the same group twice: the first pin is kept
    pins[1].answer = 9;
    p.tail.answer_pins = pins;
    let got = wire::decode(&KEY, &wire::encode(&KEY, &p))
        .expect("valid")
        .tail
        .answer_pins;
    assert_eq!(got.len(), 64);
    assert_eq!(
        got[0],
        AnswerPin {
            group: 2,
            answer: 9
        }
    );
    assert_eq!(got[63].group, 65);
}

#[test]
fn a_malformed_drill_or_answer_pins_tlv_drops_the_packet() {
    let mut long = vec![65];
    long.extend_from_slice(&[b'a'; 65]);
    for bad in [
        &[][..],          // no length
        &[3, b'a', b'b'], // shorter than its length
        &long,            // over 64 bytes
        &[2, 0xc3, 0x28], // not UTF-8
    ] {
        assert_eq!(
            wire::decode(&KEY, &raw_v2(&KEY, 1, &tlv_bytes(tlv::DRILL, bad))),
            Err(ProbeDrop::Malformed),
            "drill {bad:?}"
        );
    }
    let mut too_many = vec![65];
    for g in 0..65u32 {
        too_many.extend_from_slice(&g.to_be_bytes());
        too_many.push(0);
    }
    for bad in [
        &[][..],                            // no count
        &[1, 0, 0, 0],                      // a pin cut short
        &[2, 0, 0, 0, 1, 0],                // two pins announced, one there
        &[1, 0, 0, 0, 1, 32],               // answer 32: past the format's answers
        &[2, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1], // one group pinned twice
        &too_many,
    ] {
        assert_eq!(
            wire::decode(&KEY, &raw_v2(&KEY, 1, &tlv_bytes(tlv::ANSWER_PINS, bad))),
            Err(ProbeDrop::Malformed),
            "answer pins {bad:?}"
        );
    }
    // Longer values are read and the rest ignored, as for every known TLV.
    let mut tail = tlv_bytes(tlv::DRILL, b"\x01gXYZ");
    tail.extend(tlv_bytes(tlv::ANSWER_PINS, &[1, 0, 0, 0, 9, 3, 0xEE]));
    let p = wire::decode(&KEY, &raw_v2(&KEY, 2, &tail)).expect("accepted");
    assert_eq!(p.tail.drill.as_deref(), Some("g"));
    assert_eq!(
        p.tail.answer_pins,
        [AnswerPin {
            group: 9,
            answer: 3
        }]
    );
    assert!(p.tail.other.is_empty());
}

#[test]
fn version_1_carries_neither_drill_nor_answer_pins() {
    let mut p = packet(wire::V1, Kind::Request);
    p.tail.drill = Some("g".into());
    p.tail.answer_pins = vec![AnswerPin {
        group: 1,
        answer: 0,
    }];
    let bytes = wire::encode(&KEY, &p);
    assert_eq!(bytes.len(), wire::V1_LEN);
    assert_eq!(
        wire::decode(&KEY, &bytes).map(|p| p.tail),
        Ok(Tail::default())
    );
}

#[test]
fn an_engine_sends_its_drill_and_answer_pins_in_every_v2_probe_while_they_last() {
    let t0 = Instant::now();
    let mut c = config(Timings::DEFAULT, &LINKS, common::secs(30));
    let id = dns_group_id("app.example.com", "A", &["192.0.2.10", "198.51.100.10"]);
    c.dns_groups = vec![DnsGroupConfig {
        name: "app".into(),
        id,
        answers: 2,
        preempt: true,
        failback_after: common::secs(30),
        hold_down: common::secs(5),
        start_wait: std::time::Duration::ZERO,
    }];
    let mut a = common::keyed(Engine::new(c.clone(), t0));
    let mut b = common::keyed(Engine::new(c, t0));
    a.set_drill(Some("g".into()));
    assert!(a.pin_answer("app", 1, "CHG-7", t0));
    assert!(!a.pin_answer("app", 2, "out of range", t0));
    assert!(!a.pin_answer("nope", 0, "no such group", t0));
    assert_eq!(a.answer_pin_of("app"), Some((1, "CHG-7")));
    // Rounds of requests and replies both ways: (link, packet) of everything `a` sent.
    let mut t = t0;
    let rounds = |a: &mut Engine, b: &mut Engine, t: &mut Instant, n: usize| {
        let mut seen = vec![];
        for _ in 0..n {
            *t += ms(100);
            let t = *t;
            a.handle_timeout(t);
            b.handle_timeout(t);
            for _ in 0..2 {
                while let Some(x) = a.poll_transmit(t) {
                    seen.push((x.link.clone(), wire::decode(&KEY, &x.bytes).expect("valid")));
                    b.handle_datagram(&x.link, &x.bytes, t);
                }
                while let Some(x) = b.poll_transmit(t) {
                    a.handle_datagram(&x.link, &x.bytes, t);
                }
            }
        }
        seen
    };
    let sent = rounds(&mut a, &mut b, &mut t, 5);
    let v2: Vec<_> = sent.iter().filter(|(_, p)| p.version == wire::V2).collect();
    for link in LINKS {
        for kind in [Kind::Request, Kind::Reply] {
            assert!(
                v2.iter().any(|(l, p)| l == link && p.kind == kind),
                "no v2 {kind:?} on {link}"
            );
        }
    }
    for (link, p) in &v2 {
        assert_eq!(p.tail.drill.as_deref(), Some("g"), "{link} {:?}", p.kind);
        assert_eq!(
            p.tail.answer_pins,
            [AnswerPin {
                group: id,
                answer: 1
            }]
        );
    }
    for (_, p) in sent.iter().filter(|(_, p)| p.version == wire::V1) {
        assert_eq!(p.tail, Tail::default(), "version 1 has no tail");
    }
    assert_eq!(b.peer_drill(), Some("g"));
    assert_eq!(b.peer_answer_pin("app"), Some(1));
    assert_eq!(b.answer("app"), Some(1), "the peer follows the pin");
    assert_eq!(
        b.answer_pin_of("app"),
        None,
        "as the peer's pin, not its own"
    );

    // Over: the next probes say nothing of either.
    a.set_drill(None);
    assert!(a.unpin_answer("app", t));
    assert!(!a.unpin_answer("app", t), "nothing left to release");
    let sent = rounds(&mut a, &mut b, &mut t, 2);
    assert!(!sent.is_empty());
    for (link, p) in &sent {
        assert_eq!(
            (&p.tail.drill, p.tail.answer_pins.len()),
            (&None, 0),
            "{link}"
        );
    }
    assert_eq!(b.peer_drill(), None);
    assert_eq!(b.peer_answer_pin("app"), None);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn garbage_never_panics_and_is_never_accepted(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        prop_assert!(wire::decode(&KEY, &bytes).is_err());
    }

    #[test]
    fn truncated_or_mutated_packets_never_panic(cut in 0usize..200, at in 0usize..200, xor in 1u8..=255, version in 1u8..=2) {
        let mut p = packet(version, Kind::Request);
        p.tail.pad_to = Some(100);
        p.tail.other.push(Tlv { code: 9, value: vec![0; 5] });
        let bytes = wire::encode(&KEY, &p);
        let cut = cut.min(bytes.len());
        if cut < bytes.len() {
            prop_assert!(wire::decode(&KEY, &bytes[..cut]).is_err());
        }
        let mut m = bytes.clone();
        let at = at % m.len();
        m[at] ^= xor;
        prop_assert!(wire::decode(&KEY, &m).is_err());
    }

    #[test]
    fn any_authenticated_tail_is_read_or_malformed_never_a_panic(kind in 0u8..6, tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        match wire::decode(&KEY, &raw_v2(&KEY, kind, &tail)) {
            Ok(p) => prop_assert!(matches!(
                (kind, p.kind),
                (1, Kind::Request) | (2, Kind::Reply) | (3, Kind::MtuProbe) | (4, Kind::MtuAck)
            )),
            Err(e) => prop_assert_eq!(e, ProbeDrop::Malformed),
        }
    }

    #[test]
    fn an_engine_survives_any_datagram(bytes in proptest::collection::vec(any::<u8>(), 0..120), valid in any::<bool>()) {
        let (_, mut b, t0) = engines();
        let bytes = if valid { raw_v2(&KEY, 1, &bytes) } else { bytes };
        let _ = b.handle_datagram("ic", &bytes, t0);
        while b.poll_transmit(t0).is_some() {}
    }
}
