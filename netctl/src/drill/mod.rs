//! `netctl drill`: start, follow and abort a failover drill, and write its report.
//!
//! agentd runs the drill and keeps its [`DrillReport`]; netctl only asks for it and renders it.
//! Everything here but [`command`] is a pure function of a report (or of a sequence of them,
//! in [`follow`]): the terminal lines, the Markdown report, the SVG chart and the file names, so
//! that each is tested with synthetic reports. [`command`] is the thin shell: HTTP to agentd,
//! the poll timer, signals, the file system.

mod command;
mod files;
mod follow;
mod markdown;
mod stats;
mod svg;
mod text;
mod utc;

pub use command::{abort, again, last, start, StartArgs};

use isthmus_api::{DrillReport, DrillState, DrillTarget};

/// A drill passed when it ran to the end with nothing wrong and met its RTO: exit code 0.
pub fn passed(r: &DrillReport) -> bool {
    r.state == DrillState::Done && r.problems.is_empty() && r.rto_met() == Some(true)
}

/// The outcome in a few words, for the summary and the report's header.
pub fn outcome(r: &DrillReport) -> String {
    match r.state {
        DrillState::Done if passed(r) => "passed".into(),
        DrillState::Done => match r.problems.len() {
            0 => "done, RTO not measured".into(),
            1 => "done, with 1 problem".into(),
            n => format!("done, with {n} problems"),
        },
        DrillState::Refused => "REFUSED by a pre-check: nothing was changed".into(),
        DrillState::Aborted => "ABORTED and failed back".into(),
        DrillState::Failed => {
            "FAILED: could not fail back; the group is left to the automatic choice".into()
        }
        running => format!("running ({running})"),
    }
}

/// `route group` or `DNS group`.
fn target_word(t: DrillTarget) -> &'static str {
    match t {
        DrillTarget::RouteGroup => "route group",
        DrillTarget::DnsGroup => "DNS group",
    }
}

/// Where the group went, while it is not known yet: `(next healthy link)`.
fn to_or_pending(r: &DrillReport) -> String {
    match (&r.to, r.target) {
        (Some(to), _) => to.clone(),
        (None, DrillTarget::RouteGroup) => "(next healthy link)".into(),
        (None, DrillTarget::DnsGroup) => "(next answer)".into(),
    }
}

/// A duration for people: `250 ms`, `1.2 s`, `1.25 s`, `30 s`, `90 s`.
fn secs(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms} ms");
    }
    let s = format!("{:.2}", ms as f64 / 1000.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s} s")
}

/// `+1.20s`: a step's offset from the start.
fn offset(at_ms: u64) -> String {
    format!("+{}.{:02}s", at_ms / 1000, at_ms % 1000 / 10)
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "✓"
    } else {
        "✗"
    }
}

/// Synthetic reports for the renderers' tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use isthmus_api::*;

    pub const START: u64 = 1_795_705_458_123;

    fn step(at_ms: u64, state: Option<DrillState>, what: &str) -> DrillStep {
        DrillStep {
            unix_ms: START + at_ms,
            at_ms,
            state,
            what: what.into(),
        }
    }

    fn phase(phase: DrillState, sent: u64, lost: u64, avg: f64, p95: f64) -> DrillPhaseStats {
        DrillPhaseStats {
            phase,
            sent,
            lost,
            rtt_avg_ms: Some(avg),
            rtt_p95_ms: Some(p95),
            rtt_max_ms: Some(p95 + 1.0),
        }
    }

    /// One bucket per second for `secs` seconds, RTT from `rtt(second)`, loss from `lost`.
    fn series(
        secs: u64,
        rtt: impl Fn(u64) -> Option<f64>,
        lost: impl Fn(u64) -> u32,
    ) -> Vec<DrillPoint> {
        (0..secs)
            .map(|s| {
                let lost = lost(s);
                DrillPoint {
                    at_ms: s * 1000,
                    sent: 50,
                    lost,
                    rtt_avg_ms: if lost >= 50 { None } else { rtt(s) },
                }
            })
            .collect()
    }

    /// A route-group drill that passed: 10 s baseline, switch at +10.35 s verified 1.2 s later,
    /// held 60 s, failed back in 0.9 s, 10 s after.
    pub fn passed() -> DrillReport {
        use DrillState::*;
        DrillReport {
            id: START,
            gateway: "aws-gw".into(),
            group: "remote".into(),
            target: DrillTarget::RouteGroup,
            from: "interconnect".into(),
            to: Some("internet".into()),
            reason: "quarterly DR test".into(),
            state: Done,
            started_unix_ms: START,
            finished_unix_ms: Some(START + 83_000),
            hold_ms: 60_000,
            rto_target_ms: 30_000,
            rto_ms: Some(1_200),
            failback_ms: Some(900),
            lost_switching: 3,
            lost_failing_back: 0,
            interval_ms: 20,
            bucket_ms: 1_000,
            prechecks: vec![
                DrillCheck {
                    name: "backup link internet up".into(),
                    ok: true,
                    detail: "up, rtt 12.1 ms".into(),
                },
                DrillCheck {
                    name: "service checks over internet".into(),
                    ok: true,
                    detail: "2 of 2 pass".into(),
                },
            ],
            timeline: vec![
                step(0, Some(Prechecks), "checking"),
                step(350, Some(Baseline), "measuring every link for 10 s"),
                step(10_350, Some(Switching), "moved remote to internet"),
                step(
                    11_550,
                    None,
                    "traffic answered on internet; peer on internet",
                ),
                step(11_550, Some(Holding), "holding for 60 s"),
                step(
                    71_550,
                    Some(FailingBack),
                    "moved remote back to interconnect",
                ),
                step(72_450, Some(After), "measuring every link for 10 s"),
                step(83_000, Some(Done), "drill over"),
            ],
            links: vec![
                DrillLink {
                    name: "interconnect".into(),
                    target: "10.99.0.2".into(),
                    phases: vec![
                        phase(Baseline, 500, 0, 0.3, 0.5),
                        phase(Switching, 60, 0, 0.3, 0.5),
                        phase(Holding, 3000, 0, 0.3, 0.6),
                        phase(FailingBack, 45, 0, 0.3, 0.5),
                        phase(After, 530, 0, 0.3, 0.5),
                    ],
                    series: series(83, |_| Some(0.3), |_| 0),
                },
                DrillLink {
                    name: "internet".into(),
                    target: "10.99.1.2".into(),
                    phases: vec![
                        phase(Baseline, 500, 0, 12.0, 15.1),
                        phase(Switching, 60, 3, 14.5, 19.0),
                        phase(Holding, 3000, 0, 12.4, 16.0),
                        phase(FailingBack, 45, 0, 12.2, 15.0),
                        phase(After, 530, 0, 12.1, 15.2),
                    ],
                    series: series(
                        83,
                        |s| Some(12.0 + (s % 7) as f64 * 0.5),
                        |s| u32::from(s == 10) * 3,
                    ),
                },
            ],
            problems: vec![],
        }
    }

    /// Refused: the backup link is down.
    pub fn refused() -> DrillReport {
        DrillReport {
            state: DrillState::Refused,
            to: None,
            finished_unix_ms: Some(START + 200),
            rto_ms: None,
            failback_ms: None,
            lost_switching: 0,
            prechecks: vec![
                DrillCheck {
                    name: "backup link internet up".into(),
                    ok: false,
                    detail: "down for 3m12s".into(),
                },
                DrillCheck {
                    name: "service checks over internet".into(),
                    ok: true,
                    detail: "2 of 2 pass".into(),
                },
            ],
            timeline: vec![
                step(0, Some(DrillState::Prechecks), "checking"),
                step(
                    200,
                    Some(DrillState::Refused),
                    "backup link internet is down",
                ),
            ],
            links: vec![],
            problems: vec!["refused: backup link internet is down".into()],
            ..passed()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_clean_done_with_the_rto_met_passes() {
        let mut r = fixtures::passed();
        assert!(passed(&r));
        assert_eq!(outcome(&r), "passed");
        r.rto_ms = Some(31_000);
        assert!(!passed(&r));
        r.rto_ms = Some(1_000);
        r.problems
            .push("aws route table rtb-1 never got in sync".into());
        assert!(!passed(&r));
        assert_eq!(outcome(&r), "done, with 1 problem");
        assert!(!passed(&fixtures::refused()));
        assert!(outcome(&fixtures::refused()).contains("nothing was changed"));
    }

    #[test]
    fn durations_and_offsets_read_like_a_stopwatch() {
        assert_eq!(secs(250), "250 ms");
        assert_eq!(secs(1_200), "1.2 s");
        assert_eq!(secs(1_250), "1.25 s");
        assert_eq!(secs(30_000), "30 s");
        assert_eq!(offset(1_200), "+1.20s");
        assert_eq!(offset(71_555), "+71.55s");
        assert_eq!(offset(0), "+0.00s");
    }
}
