//! The dense probe stream's figures per link, folded into the three windows a DR report
//! compares: before the switch (baseline), during it (switching and holding) and after the
//! failback (after). Loss is also kept per phase, because loss while failing back and loss
//! while holding mean different things.

use isthmus_api::{DrillLink, DrillPhaseStats, DrillState};

/// One window of one link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub sent: u64,
    pub lost: u64,
    pub rtt_avg_ms: Option<f64>,
    /// For a window of several phases, the highest of their p95s: an upper bound of the
    /// window's own p95 (at least 95% of every phase's samples lie at or below it), since
    /// agentd sends percentiles, not samples.
    pub rtt_p95_ms: Option<f64>,
}

/// The phases of each window, in report order.
pub const BEFORE: &[DrillState] = &[DrillState::Baseline];
pub const DURING: &[DrillState] = &[DrillState::Switching, DrillState::Holding];
pub const AFTER: &[DrillState] = &[DrillState::After];

/// Every measured phase, in the order a drill runs them.
pub const PHASES: &[DrillState] = &[
    DrillState::Baseline,
    DrillState::Switching,
    DrillState::Holding,
    DrillState::FailingBack,
    DrillState::After,
];

/// The link's figures over `phases`, `None` if it has none of them (the drill ended before).
pub fn window(link: &DrillLink, phases: &[DrillState]) -> Option<Window> {
    let parts: Vec<&DrillPhaseStats> = link
        .phases
        .iter()
        .filter(|p| phases.contains(&p.phase))
        .collect();
    if parts.is_empty() {
        return None;
    }
    let sent = parts.iter().map(|p| p.sent).sum();
    let lost = parts.iter().map(|p| p.lost).sum();
    // The mean over all answered probes: each phase's mean weighted by its answers.
    let (mut weighted, mut answered) = (0.0, 0u64);
    for p in &parts {
        if let Some(avg) = p.rtt_avg_ms {
            let n = p.sent.saturating_sub(p.lost).max(1);
            weighted += avg * n as f64;
            answered += n;
        }
    }
    let rtt_avg_ms = (answered > 0).then(|| weighted / answered as f64);
    let rtt_p95_ms = parts
        .iter()
        .filter_map(|p| p.rtt_p95_ms)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    Some(Window {
        sent,
        lost,
        rtt_avg_ms,
        rtt_p95_ms,
    })
}

/// The link's figures in one phase.
pub fn phase(link: &DrillLink, phase: DrillState) -> Option<&DrillPhaseStats> {
    link.phases.iter().find(|p| p.phase == phase)
}

/// `0.3/0.5 ms` (avg/p95), `-` when nothing was answered.
pub fn rtt_pair(w: Option<&Window>) -> String {
    match w {
        Some(Window {
            rtt_avg_ms: Some(avg),
            rtt_p95_ms,
            ..
        }) => match rtt_p95_ms {
            Some(p95) => format!("{}/{} ms", ms(*avg), ms(*p95)),
            None => format!("{}/- ms", ms(*avg)),
        },
        Some(w) if w.sent > 0 => "no answer".into(),
        _ => "-".into(),
    }
}

/// `lost/sent`, with the share when anything was lost: `0/300`, `12/300 (4.0%)`.
pub fn loss(sent: u64, lost: u64) -> String {
    if lost == 0 || sent == 0 {
        format!("{lost}/{sent}")
    } else {
        format!("{lost}/{sent} ({:.1}%)", lost as f64 * 100.0 / sent as f64)
    }
}

/// Milliseconds with the precision that matters at that size: `0.32`, `4.1`, `120`.
pub fn ms(v: f64) -> String {
    if v < 1.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(phase: DrillState, sent: u64, lost: u64, avg: f64, p95: f64) -> DrillPhaseStats {
        DrillPhaseStats {
            phase,
            sent,
            lost,
            rtt_avg_ms: Some(avg),
            rtt_p95_ms: Some(p95),
            rtt_max_ms: Some(p95 * 2.0),
        }
    }

    #[test]
    fn the_window_during_the_switch_weights_means_by_answers_and_bounds_the_p95() {
        let link = DrillLink {
            name: "internet".into(),
            target: "10.99.0.2".into(),
            phases: vec![
                stats(DrillState::Baseline, 100, 0, 10.0, 12.0),
                // 10 answered at 40 ms, 90 at 20 ms.
                stats(DrillState::Switching, 20, 10, 40.0, 50.0),
                stats(DrillState::Holding, 90, 0, 20.0, 25.0),
            ],
            series: vec![],
        };
        let during = window(&link, DURING).unwrap();
        assert_eq!((during.sent, during.lost), (110, 10));
        assert!((during.rtt_avg_ms.unwrap() - 22.0).abs() < 1e-9);
        assert_eq!(during.rtt_p95_ms, Some(50.0));
        assert_eq!(window(&link, AFTER), None);
        assert_eq!(rtt_pair(window(&link, BEFORE).as_ref()), "10.0/12.0 ms");
    }

    #[test]
    fn a_window_with_every_probe_lost_says_so() {
        let link = DrillLink {
            name: "ic".into(),
            target: "10.99.0.1".into(),
            phases: vec![DrillPhaseStats {
                phase: DrillState::Holding,
                sent: 50,
                lost: 50,
                rtt_avg_ms: None,
                rtt_p95_ms: None,
                rtt_max_ms: None,
            }],
            series: vec![],
        };
        let w = window(&link, DURING).unwrap();
        assert_eq!(w.rtt_avg_ms, None);
        assert_eq!(rtt_pair(Some(&w)), "no answer");
        assert_eq!(loss(w.sent, w.lost), "50/50 (100.0%)");
        assert_eq!(loss(300, 0), "0/300");
    }

    #[test]
    fn milliseconds_keep_the_digits_that_matter() {
        assert_eq!(ms(0.327), "0.33");
        assert_eq!(ms(4.14), "4.1");
        assert_eq!(ms(120.4), "120");
    }
}
