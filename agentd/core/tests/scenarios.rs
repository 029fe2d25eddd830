//! The failover engine's life stories, on a simulated clock: two gateways, two links
//! (`ic` preferred, `inet` backup), one route group.
// The simulated clock starts at a real instant; nothing here reads the clock after that.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{ms, secs, Cond, Net, LINKS};
use isthmus_core::health::{Damping, LinkHealth, Thresholds};
use isthmus_core::{Health, SwitchReason, Timings};

/// Warm up: both links up, `ic` active on both ends.
fn warm(timings: Timings, seed: u64) -> Net {
    let mut net = Net::symmetric(timings, secs(30), seed);
    net.run_until(secs(5));
    assert_eq!(net.active(0), Some("ic"));
    assert_eq!(net.active(1), Some("ic"));
    net
}

fn decision_after_cut(timings: Timings, both: bool, offset: Duration, seed: u64) -> [Duration; 2] {
    let mut net = warm(timings, seed);
    let cut = secs(5) + offset;
    net.run_until(cut);
    net.cut("ic", both);
    net.run_for(secs(3));
    let mut out = [Duration::ZERO; 2];
    for (side, slot) in out.iter_mut().enumerate() {
        let switch = net
            .switches(side)
            .into_iter()
            .find(|(at, ..)| *at >= cut)
            .unwrap_or_else(|| panic!("side {side} never left the cut link"));
        assert_eq!(switch.2.as_deref(), Some("inet"));
        assert_eq!(switch.3, SwitchReason::ActiveDown);
        // The first probe whose answer the cut ate (it may leave up to a round trip earlier).
        let first_lost = net
            .first_lost_after(side, "ic", cut.saturating_sub(net.latency * 2))
            .expect("a probe was lost");
        *slot = switch.0 - first_lost;
    }
    out
}

#[test]
fn a_hard_cut_is_decided_within_the_budget_on_both_ends() {
    for (timings, budget) in [(Timings::DEFAULT, ms(1000)), (Timings::FAST, ms(500))] {
        let mut worst = Duration::ZERO;
        for k in 0..20 {
            for both in [true, false] {
                let d = decision_after_cut(timings, both, ms(7 * k), k);
                worst = worst.max(d[0]).max(d[1]);
                assert!(
                    d[0] <= budget && d[1] <= budget,
                    "{d:?} > {budget:?} (both ways: {both})"
                );
            }
        }
        println!("worst detection {worst:?} for budget {budget:?}");
        assert!(worst <= timings.detection_bound() + ms(10));
    }
}

#[test]
fn start_up_fails_closed_until_the_first_probe_is_answered() {
    let mut net = Net::symmetric(Timings::DEFAULT, secs(30), 1);
    assert_eq!(net.active(0), None);
    net.cut("ic", true);
    net.cut("inet", true);
    net.run_until(secs(3));
    assert_eq!(net.active(0), None, "no answer yet: no active link");
    net.restore("inet");
    net.run_for(ms(500));
    assert_eq!(net.active(0), Some("inet"));
    assert_eq!(net.switches(0)[0].3, SwitchReason::FirstUsable);
}

#[test]
fn sustained_30_percent_loss_fails_over_as_degraded() {
    let mut net = warm(Timings::DEFAULT, 2);
    net.set(
        "ic",
        0,
        Cond {
            cut: false,
            loss: 0.3,
        },
    );
    net.run_for(secs(60));
    let s = net.switches(0);
    let moved = s
        .iter()
        .find(|x| x.2.as_deref() == Some("inet"))
        .expect("stayed on a 30% lossy link");
    assert_eq!(moved.3, SwitchReason::ActiveDegraded);
    assert!(moved.0 < secs(5 + 40), "took {:?}", moved.0);
    assert_eq!(
        net.active(1),
        Some("inet"),
        "the other end follows the agreed health"
    );
}

#[test]
fn five_percent_loss_each_way_never_fails_over_in_six_simulated_hours() {
    let mut net = warm(Timings::DEFAULT, 3);
    for dir in 0..2 {
        net.set(
            "ic",
            dir,
            Cond {
                cut: false,
                loss: 0.05,
            },
        );
    }
    net.run_for(secs(6 * 3600));
    for side in 0..2 {
        assert_eq!(
            net.switches(side).len(),
            1,
            "side {side}: {:?}",
            net.switches(side)
        );
        assert_eq!(net.sides[side].health("ic"), Some(Health::Up));
    }
}

#[test]
fn millions_of_probes_at_5_percent_loss_each_way_give_no_false_down() {
    // One link's health on its own: 5 million probes (~6 days at 10/s) at 5% loss each way.
    let t0 = std::time::Instant::now();
    let mut link = LinkHealth::new(
        Timings::DEFAULT,
        Thresholds {
            loss: 0.2,
            rtt_p95: ms(150),
            jitter: ms(30),
        },
        Damping {
            penalty: 1000.0,
            half_life: secs(60),
            suppress_above: 3000.0,
            reuse_below: 750.0,
            max_suppress: secs(600),
        },
        t0,
    );
    let p_ok = 0.95 * 0.95;
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut now = t0;
    let (mut probes, mut downs, mut degraded, mut run, mut runs5) = (0u64, 0u64, 0u64, 0u32, 0u64);
    let mut pending: Option<(u32, std::time::Instant)> = None;
    while probes < 5_000_000 {
        link.handle_timeout(now);
        if let Some((seq, at)) = pending {
            if now >= at {
                link.handle_reply(seq, now);
                pending = None;
            }
        }
        if let Some(seq) = link.poll_probe(now) {
            probes += 1;
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let ok = ((rng >> 11) as f64 / (1u64 << 53) as f64) < p_ok;
            if ok {
                pending = Some((seq, now + ms(2)));
                if run >= 5 {
                    runs5 += 1;
                }
                run = 0;
            } else {
                run += 1;
            }
        }
        match link.own() {
            Health::Down => downs += 1,
            Health::Degraded => degraded += 1,
            _ => {}
        }
        // Jump to the next thing that happens: a probe, an expiry or the pending reply.
        let mut next = link.poll_timeout();
        if let Some((_, at)) = pending {
            next = next.min(at);
        }
        now = next.max(now + Duration::from_micros(1));
    }
    assert_eq!(downs, 0, "a false down at 5% loss each way");
    assert_eq!(degraded, 0, "degraded at 5% loss each way");
    // Extrapolate from runs of 5: P(run >= 10) = P(run >= 5) * p^5.
    let p = 1.0 - p_ok;
    let per_probe = runs5 as f64 / probes as f64 * p.powi(5);
    let per_year = per_probe * 10.0 * 3600.0 * 24.0 * 365.0;
    println!("{probes} probes: {runs5} runs of >= 5 losses; false downs per year ≈ {per_year:.3}");
    assert!(per_year < 1.0, "{per_year} false failovers per year");
}

#[test]
fn failback_waits_for_the_preferred_link_to_be_stable() {
    let mut net = warm(Timings::DEFAULT, 4);
    net.cut("ic", true);
    net.run_for(secs(3));
    assert_eq!(net.active(0), Some("inet"));
    let restored = net.now - net.t0;
    net.restore("ic");
    net.run_for(secs(25));
    assert_eq!(
        net.active(0),
        Some("inet"),
        "failed back before the stable time"
    );
    net.run_for(secs(10));
    assert_eq!(net.active(0), Some("ic"));
    assert_eq!(net.active(1), Some("ic"));
    let back = net
        .switches(0)
        .into_iter()
        .find(|s| s.3 == SwitchReason::Failback)
        .expect("a failback");
    assert!(back.0 >= restored + secs(30), "{:?}", back.0 - restored);
    assert!(back.0 <= restored + secs(32), "{:?}", back.0 - restored);
}

#[test]
fn no_failback_without_preempt() {
    let mut a = common::config(Timings::DEFAULT, &LINKS, secs(5));
    a.groups[0].policy.preempt = false;
    let mut net = Net::new(a.clone(), a, 5);
    net.run_until(secs(5));
    net.cut("ic", true);
    net.run_for(secs(3));
    net.restore("ic");
    net.run_for(secs(60));
    assert_eq!(net.active(0), Some("inet"));
}

#[test]
fn a_link_flapping_every_2_s_is_suppressed_after_a_few_flaps_and_reused_when_calm() {
    let mut net = Net::symmetric(Timings::DEFAULT, secs(5), 6);
    net.run_until(secs(5));
    // 2 s period: 1 s cut, 1 s up, for 60 s.
    for _ in 0..30 {
        net.cut("ic", true);
        net.run_for(secs(1));
        net.restore("ic");
        net.run_for(secs(1));
    }
    let during = net.switches(0).len();
    assert_eq!(net.sides[0].health("ic"), Some(Health::Suppressed));
    assert_eq!(
        net.active(0),
        Some("inet"),
        "a suppressed link must not be chosen"
    );
    // Damping caps the switches: without it there would be two per flap (60).
    assert!(
        during <= 10,
        "{during} switches in 60 s of flapping: {:?}",
        net.switches(0)
    );
    // Calm: the penalty (about 20 000 after 30 flaps) halves every 60 s and falls below the
    // reuse threshold (750) within 6 half-lives; then the failback timer (5 s here) runs.
    net.run_for(secs(360));
    assert_eq!(net.sides[0].health("ic"), Some(Health::Up));
    assert_eq!(net.active(0), Some("ic"));
    assert_eq!(net.active(1), Some("ic"));
}

#[test]
fn the_last_usable_link_is_never_suppressed_away() {
    let c = common::config(Timings::DEFAULT, &["ic"], secs(5));
    let mut net = Net::new(c.clone(), c, 7);
    net.run_until(secs(5));
    for _ in 0..20 {
        net.cut("ic", true);
        net.run_for(secs(1));
        net.restore("ic");
        net.run_for(secs(1));
    }
    assert_eq!(net.sides[0].health("ic"), Some(Health::Suppressed));
    assert_eq!(
        net.active(0),
        Some("ic"),
        "the only working link is used although damped"
    );
}

#[test]
fn pins_win_over_health_until_released_and_travel_to_the_peer() {
    let mut net = warm(Timings::DEFAULT, 8);
    let now = net.now;
    assert!(net.sides[0].pin("g", "ic", "change CHG-1", now));
    net.cut("ic", true);
    net.run_for(secs(5));
    assert_eq!(net.active(0), Some("ic"), "the pin holds over a dead link");
    // The pin travels on probes, which a cut link cannot carry: the peer followed health.
    assert_eq!(net.active(1), Some("inet"));
    let now = net.now;
    net.sides[0].unpin("g", now);
    net.run_for(ms(10));
    assert_eq!(net.active(0), Some("inet"));

    // Pin to the backup while both are healthy: this end moves at once, the peer follows.
    net.restore("ic");
    net.run_for(secs(40));
    assert_eq!(net.active(0), Some("ic"));
    let now = net.now;
    net.sides[0].pin("g", "inet", "FastConnect maintenance", now);
    net.run_for(ms(1));
    assert_eq!(net.active(0), Some("inet"));
    assert!(
        matches!(&net.switches(0).last().unwrap().3, SwitchReason::Manual(r) if r == "FastConnect maintenance")
    );
    net.run_for(secs(1));
    assert_eq!(net.active(1), Some("inet"));
    assert_eq!(net.switches(1).last().unwrap().3, SwitchReason::PeerPin);
    // Released: both return at once, no failback wait.
    let now = net.now;
    net.sides[0].unpin("g", now);
    net.run_for(secs(1));
    assert_eq!(
        net.active(0),
        Some("ic"),
        "{:?}\n{:?}",
        net.switches(0),
        net.switches(1)
    );
    assert_eq!(net.active(1), Some("ic"));
}

/// A drill's abort: the pinned backup dies, the pinning end releases the pin, and the pin's
/// release cannot travel over the dead link. The follower must not keep following a pin that
/// it last heard over a link it now sees down.
#[test]
fn a_peer_pin_heard_over_a_link_that_dies_is_not_followed_onto_it() {
    let mut net = warm(Timings::DEFAULT, 31);
    let now = net.now;
    net.sides[0].pin("g", "inet", "drill", now);
    net.run_for(secs(1));
    assert_eq!((net.active(0), net.active(1)), (Some("inet"), Some("inet")));
    net.cut("inet", true);
    let now = net.now;
    net.sides[0].unpin("g", now);
    net.run_for(ms(10));
    assert_eq!(net.active(0), Some("ic"));
    // The follower leaves once it sees the link down (detection: 10 probes of 50 ms).
    net.run_for(secs(2));
    assert_eq!(
        net.active(1),
        Some("ic"),
        "the follower stays on the dead link: {:?}",
        net.switches(1)
    );
}

#[test]
fn a_drain_moves_the_group_off_the_link_on_both_ends() {
    let mut net = warm(Timings::DEFAULT, 9);
    let now = net.now;
    net.sides[0].set_drain("ic", true, now);
    net.run_for(secs(1));
    assert_eq!(net.active(0), Some("inet"));
    assert_eq!(net.active(1), Some("inet"));
    // The drained link is still the last resort.
    net.cut("inet", true);
    net.run_for(secs(3));
    assert_eq!(net.active(0), Some("ic"));
}

#[test]
fn a_one_way_cut_is_seen_by_both_ends() {
    let mut net = warm(Timings::DEFAULT, 10);
    net.set(
        "ic",
        1,
        Cond {
            cut: true,
            loss: 0.0,
        },
    );
    net.run_for(secs(2));
    assert_eq!(net.active(0), Some("inet"));
    assert_eq!(net.active(1), Some("inet"));
}

#[test]
fn after_a_total_outage_the_preferred_link_is_taken_even_if_the_backup_answers_first() {
    let mut net = warm(Timings::DEFAULT, 11);
    net.cut("ic", true);
    net.cut("inet", true);
    net.run_for(secs(3));
    assert_eq!(net.active(0), None, "fail closed without a usable link");
    // The backup comes back a little before the preferred link.
    net.restore("inet");
    net.run_for(ms(300));
    net.restore("ic");
    net.run_for(secs(2));
    assert_eq!(net.active(0), Some("ic"), "{:?}", net.switches(0));
    assert_eq!(net.active(1), Some("ic"));
}

#[test]
fn paths_slower_than_the_loss_timeout_come_up_degraded_instead_of_staying_down() {
    // 100 ms each way: a 200 ms round trip, beyond the default 150 ms loss timeout. The first
    // probes are lost, their late replies teach the timeout the path's RTT, and the links come
    // up (then degraded: above rtt_degraded), so the group has an active link, the same on
    // both ends, instead of failing closed for as long as the paths stay slow.
    let mut net = Net::symmetric(Timings::DEFAULT, secs(30), 12);
    net.latency = ms(100);
    net.run_until(secs(10));
    assert!(
        net.active(0).is_some(),
        "fail closed: {:?}",
        net.switches(0)
    );
    assert_eq!(net.active(0), net.active(1));
    for side in 0..2 {
        for link in LINKS {
            assert_eq!(
                net.sides[side].health(link),
                Some(Health::Degraded),
                "{link}"
            );
        }
    }
}

#[test]
fn a_jump_in_latency_beyond_the_loss_timeout_loses_a_probe_or_two_not_the_link() {
    // Both paths go from 2 ms to 200 ms round trip at once. The first late reply raises the
    // loss timeout, so the probes after it are answered in time: no `down`, no fail-closed
    // moment; the links end degraded.
    let mut net = warm(Timings::DEFAULT, 13);
    let jump = net.now;
    net.latency = ms(100);
    net.run_for(secs(10));
    for side in 0..2 {
        let after: Vec<_> = net.events[side]
            .iter()
            .filter_map(|e| match e {
                isthmus_core::Event::HealthChanged { link, to, at, .. } if *at >= jump => {
                    Some((link.clone(), *to))
                }
                _ => None,
            })
            .collect();
        assert!(
            after.iter().all(|(_, to)| *to != Health::Down),
            "side {side}: {after:?}"
        );
        assert!(net.active(side).is_some(), "side {side}");
        for link in LINKS {
            assert_eq!(
                net.sides[side].health(link),
                Some(Health::Degraded),
                "{link}"
            );
        }
    }
}
