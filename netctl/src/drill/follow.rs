//! Following a drill from successive polls of `GET /v1/drill`: each poll's report goes in,
//! the text to print comes out (the steps not shown yet, the pre-checks once they are done),
//! and whether the drill is over. No I/O and no clock, so that a whole drill is tested as a
//! sequence of reports.

use isthmus_api::{DrillReport, DrillState};

use super::text;

/// What a poll showed.
#[derive(Debug, PartialEq)]
pub enum Progress {
    /// Still running; print this (possibly nothing).
    Running(String),
    /// Over: print this, then the summary of the final report.
    Over(String),
    /// `GET /v1/drill` answers a different drill: ours is over and its report is gone
    /// (agentd keeps only the last one).
    Replaced { ours: u64, now: u64 },
}

#[derive(Debug)]
pub struct Follower {
    id: u64,
    steps_shown: usize,
    prechecks_shown: bool,
}

impl Follower {
    /// Follow the drill that `POST /v1/drill` answered; nothing of it is shown yet.
    pub fn new(started: &DrillReport) -> Self {
        Follower {
            id: started.id,
            steps_shown: 0,
            prechecks_shown: false,
        }
    }

    pub fn handle_report(&mut self, r: &DrillReport) -> Progress {
        if r.id != self.id {
            return Progress::Replaced {
                ours: self.id,
                now: r.id,
            };
        }
        let mut out = String::new();
        // The time line only grows; a shorter one (agentd restarted?) shows nothing again.
        for s in r.timeline.iter().skip(self.steps_shown) {
            let leaves_prechecks = s.state.is_some_and(|st| st != DrillState::Prechecks);
            if leaves_prechecks {
                self.show_prechecks(r, &mut out);
            }
            out.push_str(&text::step(s));
        }
        self.steps_shown = self.steps_shown.max(r.timeline.len());
        if r.state != DrillState::Prechecks {
            self.show_prechecks(r, &mut out);
        }
        if r.state.is_final() {
            Progress::Over(out)
        } else {
            Progress::Running(out)
        }
    }

    fn show_prechecks(&mut self, r: &DrillReport, out: &mut String) {
        if !self.prechecks_shown {
            self.prechecks_shown = true;
            out.push_str(&text::prechecks(r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    /// The passed drill as agentd would answer it after `steps` steps of its time line.
    fn at(steps: usize) -> DrillReport {
        let mut r = fixtures::passed();
        r.timeline.truncate(steps);
        r.state = r
            .timeline
            .iter()
            .rev()
            .find_map(|s| s.state)
            .unwrap_or(DrillState::Prechecks);
        r
    }

    #[test]
    fn each_step_is_printed_once_and_the_prechecks_when_they_are_done() {
        let mut f = Follower::new(&at(0));
        let Progress::Running(first) = f.handle_report(&at(1)) else {
            panic!()
        };
        assert_eq!(first, "  +0.00s  prechecks     checking\n");
        // The same poll again prints nothing.
        assert_eq!(f.handle_report(&at(1)), Progress::Running(String::new()));
        let Progress::Running(next) = f.handle_report(&at(4)) else {
            panic!()
        };
        let lines: Vec<&str> = next.lines().collect();
        assert_eq!(lines[0], "pre-checks:");
        assert_eq!(lines[1], "  ✓ backup link internet up: up, rtt 12.1 ms");
        assert!(lines[3].contains("baseline"), "{next}");
        assert!(lines[4].contains("switching"), "{next}");
        assert!(lines[5].contains("traffic answered"), "{next}");
        assert_eq!(lines.len(), 6, "{next}");
        let Progress::Over(last) = f.handle_report(&fixtures::passed()) else {
            panic!()
        };
        assert!(!last.contains("pre-checks"), "{last}");
        assert_eq!(last.lines().count(), 4, "{last}");
        assert!(last.ends_with("drill over\n"), "{last}");
    }

    #[test]
    fn a_refusal_shows_the_prechecks_before_the_refused_step() {
        let r = fixtures::refused();
        let mut f = Follower::new(&r);
        let Progress::Over(out) = f.handle_report(&r) else {
            panic!()
        };
        let pre = out.find("✗ backup link internet up").unwrap();
        let refused = out.find("refused ").unwrap();
        assert!(pre < refused, "{out}");
    }

    #[test]
    fn prechecks_are_shown_when_the_state_moves_on_even_without_a_step() {
        let mut r = at(1);
        r.state = DrillState::Baseline;
        let mut f = Follower::new(&at(0));
        let Progress::Running(out) = f.handle_report(&r) else {
            panic!()
        };
        assert!(out.contains("pre-checks:"), "{out}");
    }

    #[test]
    fn another_drill_in_the_answer_means_ours_is_gone() {
        let mut f = Follower::new(&fixtures::passed());
        let mut other = fixtures::passed();
        other.id += 1;
        assert_eq!(
            f.handle_report(&other),
            Progress::Replaced {
                ours: fixtures::START,
                now: fixtures::START + 1
            }
        );
    }
}
