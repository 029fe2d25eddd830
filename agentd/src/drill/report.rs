//! A drill's report: its time line and checks as kept, and the stream's samples summed up per
//! link and phase, and in buckets for the chart.

use std::time::{Duration, Instant};

use isthmus_api::{DrillLink, DrillPhaseStats, DrillPoint, DrillReport, DrillState};

use super::{wall_ms, Drill, Sample};

/// The chart gets at most about this many buckets per link.
const MAX_BUCKETS: u64 = 600;
const MIN_BUCKET_MS: u64 = 100;

/// The phases whose samples are summed up, in order.
const PHASES: [DrillState; 5] = [
    DrillState::Baseline,
    DrillState::Switching,
    DrillState::Holding,
    DrillState::FailingBack,
    DrillState::After,
];

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn stats(phase: DrillState, samples: &[&Sample]) -> DrillPhaseStats {
    let mut rtts: Vec<Duration> = samples.iter().filter_map(|s| s.rtt).collect();
    rtts.sort();
    let avg = (!rtts.is_empty()).then(|| ms(rtts.iter().sum::<Duration>() / rtts.len() as u32));
    let p95 = rtts
        .get((rtts.len() * 95 / 100).min(rtts.len().saturating_sub(1)))
        .map(|d| ms(*d));
    DrillPhaseStats {
        phase,
        sent: samples.len() as u64,
        lost: samples.iter().filter(|s| s.rtt.is_none()).count() as u64,
        rtt_avg_ms: avg,
        rtt_p95_ms: p95,
        rtt_max_ms: rtts.last().map(|d| ms(*d)),
    }
}

impl Drill {
    /// The phase a sample sent at `t` belongs to (`None`: before the baseline).
    fn phase_at(&self, t: Instant) -> Option<DrillState> {
        self.phases
            .iter()
            .rev()
            .find(|(since, _)| *since <= t)
            .map(|(_, s)| *s)
            .filter(|s| PHASES.contains(s))
    }

    /// Echoes lost on link `link` while the drill was in `phase`.
    fn lost_in(&self, link: Option<usize>, phase: DrillState) -> u64 {
        let Some(link) = link else { return 0 };
        self.samples
            .iter()
            .filter(|s| s.link == link && s.rtt.is_none() && self.phase_at(s.sent) == Some(phase))
            .count() as u64
    }

    pub fn report(&self) -> DrillReport {
        let elapsed = self
            .samples
            .iter()
            .map(|s| s.sent.saturating_duration_since(self.started))
            .max()
            .unwrap_or_default()
            .as_millis() as u64;
        let bucket_ms = (elapsed / MAX_BUCKETS + 1).div_ceil(MIN_BUCKET_MS) * MIN_BUCKET_MS;
        let links = self
            .plan
            .links
            .iter()
            .enumerate()
            .map(|(i, (name, target))| {
                // Echoes sent between the baseline and the end.
                let mine: Vec<&Sample> = self
                    .samples
                    .iter()
                    .filter(|s| s.link == i && self.phase_at(s.sent).is_some())
                    .collect();
                let phases = PHASES
                    .iter()
                    .filter_map(|p| {
                        let of: Vec<&Sample> = mine
                            .iter()
                            .copied()
                            .filter(|s| self.phase_at(s.sent) == Some(*p))
                            .collect();
                        (!of.is_empty()).then(|| stats(*p, &of))
                    })
                    .collect();
                let mut buckets: std::collections::BTreeMap<u64, (u32, u32, Duration, u32)> =
                    Default::default();
                for s in &mine {
                    let at = s.sent.saturating_duration_since(self.started).as_millis() as u64;
                    let b = buckets.entry(at / bucket_ms).or_default();
                    b.0 += 1;
                    match s.rtt {
                        Some(r) => {
                            b.2 += r;
                            b.3 += 1;
                        }
                        None => b.1 += 1,
                    }
                }
                let series = buckets
                    .into_iter()
                    .map(|(b, (sent, lost, sum, answered))| DrillPoint {
                        at_ms: b * bucket_ms,
                        sent,
                        lost,
                        rtt_avg_ms: (answered > 0).then(|| ms(sum / answered)),
                    })
                    .collect();
                DrillLink {
                    name: name.clone(),
                    target: target.clone(),
                    phases,
                    series,
                }
            })
            .collect();
        DrillReport {
            id: self.plan.id,
            gateway: self.plan.gateway.clone(),
            group: self.plan.group.clone(),
            target: self.plan.target,
            from: self.plan.from.clone(),
            to: self.plan.to.clone(),
            reason: self.plan.reason.clone(),
            state: self.state,
            started_unix_ms: wall_ms(self.started_wall),
            finished_unix_ms: self.finished_wall.map(wall_ms),
            hold_ms: self.plan.hold.as_millis() as u64,
            rto_target_ms: self.plan.rto_target.as_millis() as u64,
            rto_ms: self.rto.map(|d| d.as_millis() as u64),
            failback_ms: self.failback.map(|d| d.as_millis() as u64),
            lost_switching: self.lost_in(self.plan.to_link, DrillState::Switching),
            lost_failing_back: self.lost_in(self.plan.from_link, DrillState::FailingBack),
            interval_ms: self.plan.interval.as_millis() as u64,
            bucket_ms,
            prechecks: self.prechecks.clone(),
            timeline: self.timeline.clone(),
            links,
            problems: self.problems.clone(),
        }
    }
}
