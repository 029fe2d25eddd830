//! The drill's state machine with a simulated clock: what it asks the loop to do, when, and
//! what its report says.

use std::time::{Duration, Instant, SystemTime};

use isthmus_api::{DrillCheck, DrillState, DrillTarget};

use super::*;

const MS: Duration = Duration::from_millis(1);

fn plan(hold: Duration) -> Plan {
    Plan {
        id: 1,
        gateway: "aws-gw".into(),
        group: "remote".into(),
        target: DrillTarget::RouteGroup,
        from: "interconnect".into(),
        to: Some("internet".into()),
        hold,
        rto_target: Duration::from_secs(1),
        reason: "test".into(),
        links: vec![
            ("interconnect".into(), "10.255.0.1".into()),
            ("internet".into(), "10.255.1.1".into()),
        ],
        from_link: Some(0),
        to_link: Some(1),
        interval: Duration::from_millis(10),
    }
}

fn ok(name: &str) -> DrillCheck {
    DrillCheck {
        name: name.into(),
        ok: true,
        detail: String::new(),
    }
}

/// A drill and a world that follows its pins at once.
struct Bed {
    drill: Drill,
    now: Instant,
    on_to: bool,
    broken: Option<String>,
    log: Vec<Do>,
}

impl Bed {
    fn new(hold: Duration, checks: Vec<DrillCheck>, pending: usize) -> Bed {
        let now = crate::clock::now();
        Bed {
            drill: Drill::new(plan(hold), checks, pending, now, SystemTime::now()),
            now,
            on_to: false,
            broken: None,
            log: Vec::new(),
        }
    }

    fn look(&self) -> Look {
        Look {
            on_to: self.on_to,
            on_from: !self.on_to,
            routes_applied: true,
            actions_in_sync: true,
            to_checks_pass: true,
            from_checks_pass: true,
            to_broken: self.broken.clone(),
            gone: None,
        }
    }

    /// Run for `d` in 10 ms steps; every link's echo answered in 1 ms unless `lost(link, t)`.
    fn run(&mut self, d: Duration, lost: impl Fn(usize, Duration) -> bool) {
        let end = self.now + d;
        while self.now < end {
            self.now += 10 * MS;
            let at = self.now.saturating_duration_since(self.drill.started);
            let samples: Vec<Sample> = (0..2)
                .map(|link| Sample {
                    link,
                    sent: self.now,
                    rtt: (!lost(link, at)).then_some(MS),
                })
                .collect();
            self.drill.on_samples(&samples);
            let look = self.look();
            for d in self.drill.tick(&look, self.now) {
                match d {
                    Do::Switch => self.on_to = true,
                    Do::Release => self.on_to = false,
                    _ => {}
                }
                self.log.push(d);
            }
        }
    }

    fn did(&self, what: &Do) -> usize {
        self.log.iter().filter(|d| *d == what).count()
    }
}

#[test]
fn a_drill_switches_holds_fails_back_and_reports_every_phase() {
    let mut b = Bed::new(Duration::from_secs(4), vec![ok("backup up")], 0);
    b.run(Duration::from_secs(10), |_, _| false);
    assert_eq!(b.drill.state(), DrillState::Done);
    assert_eq!(
        (b.did(&Do::Switch), b.did(&Do::Release), b.did(&Do::Finish)),
        (1, 1, 1)
    );
    let r = b.drill.report();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    // Verified on the first echo after the switch: one step of the clock plus its RTT.
    let rto = r.rto_ms.expect("rto");
    assert!(rto <= 20, "rto {rto} ms");
    assert_eq!(r.rto_met(), Some(true));
    assert!(r.failback_ms.is_some());
    let states: Vec<DrillState> = r.timeline.iter().filter_map(|s| s.state).collect();
    assert_eq!(
        states,
        [
            DrillState::Prechecks,
            DrillState::Baseline,
            DrillState::Switching,
            DrillState::Holding,
            DrillState::FailingBack,
            DrillState::After,
            DrillState::Done
        ]
    );
    for l in &r.links {
        let phases: Vec<DrillState> = l.phases.iter().map(|p| p.phase).collect();
        assert!(phases.contains(&DrillState::Baseline) && phases.contains(&DrillState::Holding));
        assert!(phases.contains(&DrillState::After));
        let sent: u64 = l.phases.iter().map(|p| p.sent).sum();
        assert_eq!(
            sent,
            l.series.iter().map(|p| u64::from(p.sent)).sum::<u64>()
        );
        assert_eq!(l.phases[0].rtt_avg_ms, Some(1.0));
    }
    // The hold lasted as asked.
    let at = |s: DrillState| {
        r.timeline
            .iter()
            .find(|x| x.state == Some(s))
            .unwrap()
            .at_ms
    };
    let held = at(DrillState::FailingBack) - at(DrillState::Holding);
    assert!((4000..=4030).contains(&held), "held {held} ms");
}

#[test]
fn a_failing_pre_check_refuses_without_touching_anything() {
    let bad = DrillCheck {
        name: "backup link internet is up".into(),
        ok: false,
        detail: "down".into(),
    };
    let mut b = Bed::new(Duration::from_secs(4), vec![ok("x"), bad], 0);
    b.run(Duration::from_secs(1), |_, _| false);
    assert_eq!(b.drill.state(), DrillState::Refused);
    assert_eq!(b.did(&Do::Switch) + b.did(&Do::Release), 0);
    assert_eq!(b.did(&Do::Finish), 1);
    let r = b.drill.report();
    assert!(
        r.problems[0].contains("backup link internet is up: down"),
        "{:?}",
        r.problems
    );
}

#[test]
fn pre_checks_wait_for_dry_runs_and_a_failed_one_refuses() {
    let mut b = Bed::new(Duration::from_secs(4), vec![ok("x")], 1);
    b.run(Duration::from_secs(1), |_, _| false);
    assert_eq!(b.drill.state(), DrillState::Prechecks);
    b.drill.add_check(DrillCheck {
        name: "dry run: aws route table rtb-1".into(),
        ok: false,
        detail: "auth: bad signature".into(),
    });
    b.run(Duration::from_millis(100), |_, _| false);
    assert_eq!(b.drill.state(), DrillState::Refused);
    // And dry runs that never answer refuse after the timeout.
    let mut b = Bed::new(Duration::from_secs(4), vec![ok("x")], 1);
    b.run(PRECHECK_TIMEOUT + Duration::from_millis(100), |_, _| false);
    assert_eq!(b.drill.state(), DrillState::Refused);
    assert!(b.drill.report().problems[0].contains("did not answer"));
}

#[test]
fn a_backup_that_breaks_during_the_hold_aborts_and_fails_back_at_once() {
    // A 20 s hold: 5 s of baseline.
    let mut b = Bed::new(Duration::from_secs(20), vec![ok("x")], 0);
    b.run(Duration::from_secs(7), |_, _| false);
    assert_eq!(b.drill.state(), DrillState::Holding);
    b.broken = Some("backup link internet is down".into());
    b.run(20 * MS, |_, _| false);
    assert_eq!(b.did(&Do::Release), 1, "released on the first look");
    assert!(!b.on_to);
    b.broken = None;
    b.run(Duration::from_secs(5), |_, _| false);
    assert_eq!(b.drill.state(), DrillState::Aborted);
    let r = b.drill.report();
    assert!(
        r.problems.iter().any(|p| p.contains("internet is down")),
        "{:?}",
        r.problems
    );
    assert!(r.failback_ms.is_some());
}

#[test]
fn an_abort_before_the_switch_changes_nothing_and_after_it_fails_back() {
    let mut b = Bed::new(Duration::from_secs(20), vec![ok("x")], 0);
    b.run(Duration::from_millis(500), |_, _| false);
    let now = b.now;
    let out = b.drill.abort("operator", now);
    assert!(!out.contains(&Do::Release) && out.contains(&Do::Finish));
    assert_eq!(b.drill.state(), DrillState::Aborted);

    let mut b = Bed::new(Duration::from_secs(20), vec![ok("x")], 0);
    b.run(Duration::from_secs(7), |_, _| false);
    let now = b.now;
    let out = b.drill.abort("operator", now);
    assert_eq!(out.first(), Some(&Do::Release));
    assert_eq!(b.drill.state(), DrillState::FailingBack);
}

#[test]
fn loss_on_the_new_path_while_switching_is_counted_and_a_slow_switch_misses_the_rto() {
    let mut b = Bed::new(Duration::from_secs(4), vec![ok("x")], 0);
    // The internet link loses everything for 1.5 s right after the switch (at 2 s).
    let lossy = |link: usize, at: Duration| {
        link == 1 && at > Duration::from_millis(2000) && at < Duration::from_millis(3500)
    };
    b.run(Duration::from_secs(12), lossy);
    let r = b.drill.report();
    assert_eq!(r.state, DrillState::Done);
    let rto = r.rto_ms.unwrap();
    assert!((1480..=1530).contains(&rto), "rto {rto} ms");
    assert_eq!(r.rto_met(), Some(false));
    assert!(
        r.problems.iter().any(|p| p.contains("above the target")),
        "{:?}",
        r.problems
    );
    assert!(r.lost_switching >= 140, "lost {}", r.lost_switching);
    assert_eq!(r.lost_failing_back, 0);
}
