//! The drill on a terminal: a header when it starts, one line per time-line step as it
//! happens, the pre-checks once they are done, and a summary at the end. Short, and the words
//! that need action (REFUSED, FAILED, ✗) stand out.

use std::fmt::Write as _;

use isthmus_api::{DrillReport, DrillState, DrillStep};

use super::stats::{self, AFTER, BEFORE, DURING};
use super::{mark, offset, outcome, secs, target_word, to_or_pending};
use crate::table::Table;

/// What is being drilled: the first line, when the drill starts.
pub fn header(r: &DrillReport) -> String {
    format!(
        "drill of {} {} on {}: {} → {}, hold {}, RTO target {}\n",
        target_word(r.target),
        r.group,
        r.gateway,
        r.from,
        to_or_pending(r),
        secs(r.hold_ms),
        secs(r.rto_target_ms)
    )
}

/// `+1.20s  switching     moved remote to internet`; a note within a state has no state.
pub fn step(s: &DrillStep) -> String {
    let state = s.state.map_or("", DrillState::as_str);
    let line = format!("{:>8}  {state:<12}  {}", offset(s.at_ms), s.what);
    format!("{}\n", line.trim_end())
}

/// The pre-checks, failing ones marked ✗.
pub fn prechecks(r: &DrillReport) -> String {
    let mut out = String::from("pre-checks:\n");
    if r.prechecks.is_empty() {
        out.push_str("  (none reported)\n");
    }
    for c in &r.prechecks {
        let _ = writeln!(out, "  {} {}: {}", mark(c.ok), c.name, c.detail);
    }
    out
}

/// The end of a drill: outcome, RTO against its target, what was lost, RTT per link, problems.
pub fn summary(r: &DrillReport) -> String {
    let mut out = format!(
        "drill of {} {} on {}: {}\n",
        target_word(r.target),
        r.group,
        r.gateway,
        outcome(r)
    );
    if r.state == DrillState::Refused {
        for c in r.prechecks.iter().filter(|c| !c.ok) {
            let _ = writeln!(out, "  ✗ {}: {}", c.name, c.detail);
        }
        for p in &r.problems {
            let _ = writeln!(out, "  {p}");
        }
        return out;
    }
    let _ = writeln!(
        out,
        "  moved      {} → {}, held {}",
        r.from,
        to_or_pending(r),
        secs(r.hold_ms)
    );
    let _ = writeln!(out, "  RTO        {}", rto(r));
    let _ = writeln!(
        out,
        "  failback   {}",
        r.failback_ms.map_or("not verified".into(), secs)
    );
    let _ = writeln!(
        out,
        "  lost       {} probes while switching over, {} while failing back",
        r.lost_switching, r.lost_failing_back
    );
    if !r.links.is_empty() {
        out.push('\n');
        let mut t = Table::new(&[
            "LINK",
            "BEFORE avg/p95",
            "DURING avg/p95",
            "AFTER avg/p95",
            "LOST before/during/after",
        ]);
        for l in &r.links {
            let (b, d, a) = (
                stats::window(l, BEFORE),
                stats::window(l, DURING),
                stats::window(l, AFTER),
            );
            let lost = |w: Option<&stats::Window>| w.map_or("-".into(), |w| w.lost.to_string());
            t.row(vec![
                l.name.clone(),
                stats::rtt_pair(b.as_ref()),
                stats::rtt_pair(d.as_ref()),
                stats::rtt_pair(a.as_ref()),
                format!(
                    "{}/{}/{}",
                    lost(b.as_ref()),
                    lost(d.as_ref()),
                    lost(a.as_ref())
                ),
            ]);
        }
        out.push_str(&t.render());
        out.push('\n');
    }
    if r.problems.is_empty() {
        out.push_str("problems: none\n");
    } else {
        out.push_str("problems:\n");
        for p in &r.problems {
            let _ = writeln!(out, "  ! {p}");
        }
    }
    out
}

/// `1.2 s (target 30 s) ✓`, or why there is no figure.
fn rto(r: &DrillReport) -> String {
    match r.rto_ms {
        Some(ms) => format!(
            "{} (target {}) {}",
            secs(ms),
            secs(r.rto_target_ms),
            mark(ms <= r.rto_target_ms)
        ),
        None => format!(
            "not reached: the switch was never verified (target {}) ✗",
            secs(r.rto_target_ms)
        ),
    }
}

/// A drill still running (`--last`, `--abort`): where it is and its time line so far.
pub fn live(r: &DrillReport) -> String {
    let mut out = header(r);
    let since = r
        .timeline
        .iter()
        .rev()
        .find(|s| s.state == Some(r.state))
        .map_or(String::new(), |s| format!(" since {}", offset(s.at_ms)));
    let _ = writeln!(out, "state: {}{since}", r.state);
    for s in &r.timeline {
        out.push_str(&step(s));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    #[test]
    fn steps_line_up_and_notes_have_no_state() {
        let r = fixtures::passed();
        assert_eq!(
            step(&r.timeline[2]),
            " +10.35s  switching     moved remote to internet\n"
        );
        assert_eq!(
            step(&r.timeline[3]),
            " +11.55s                traffic answered on internet; peer on internet\n"
        );
    }

    #[test]
    fn the_summary_gives_rto_against_target_loss_and_rtt_per_link() {
        let s = summary(&fixtures::passed());
        assert!(
            s.starts_with("drill of route group remote on aws-gw: passed\n"),
            "{s}"
        );
        assert!(s.contains("RTO        1.2 s (target 30 s) ✓"), "{s}");
        assert!(s.contains("failback   900 ms"), "{s}");
        assert!(
            s.contains("3 probes while switching over, 0 while failing back"),
            "{s}"
        );
        assert!(s.contains("interconnect  0.30/0.50 ms"), "{s}");
        // During = switching + holding: 57 answers at 14.5 and 3000 at 12.4; p95 the higher.
        assert!(s.contains("12.4/19.0 ms"), "{s}");
        assert!(s.contains("0/3/0"), "{s}");
        assert!(s.contains("problems: none"), "{s}");
    }

    #[test]
    fn a_missed_rto_and_problems_are_marked() {
        let mut r = fixtures::passed();
        r.rto_ms = Some(42_100);
        r.problems = vec!["RTO 42.1 s above the target 30 s".into()];
        let s = summary(&r);
        assert!(s.contains("42.1 s (target 30 s) ✗"), "{s}");
        assert!(s.contains("  ! RTO 42.1 s above the target 30 s"), "{s}");
        r.rto_ms = None;
        assert!(summary(&r).contains("not reached"));
    }

    #[test]
    fn a_refusal_names_the_failing_precheck_and_the_reason() {
        let s = summary(&fixtures::refused());
        assert!(s.contains("REFUSED"), "{s}");
        assert!(
            s.contains("✗ backup link internet up: down for 3m12s"),
            "{s}"
        );
        assert!(!s.contains("service checks over internet"), "{s}");
        assert!(s.contains("refused: backup link internet is down"), "{s}");
        let p = prechecks(&fixtures::refused());
        assert!(
            p.contains("✓ service checks over internet: 2 of 2 pass"),
            "{p}"
        );
    }

    #[test]
    fn a_running_drill_shows_its_state_and_steps_so_far() {
        let mut r = fixtures::passed();
        r.state = DrillState::Holding;
        r.timeline.truncate(5);
        let s = live(&r);
        assert!(s.contains("state: holding since +11.55s"), "{s}");
        assert!(
            s.contains("interconnect → internet, hold 60 s, RTO target 30 s"),
            "{s}"
        );
        assert!(s.lines().count() == 7, "{s}");
    }
}
