//! The figures of a soak, pure: least-squares slopes, medians, and what the Prometheus text of a
//! scrape says (a family's sum, a histogram's p99).

/// One measured quantity over the run: `(seconds since start, value)`.
#[derive(Debug, Default, Clone)]
pub struct Series {
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn push(&mut self, t: f64, v: f64) {
        self.points.push((t, v));
    }

    /// The points at or after `from` seconds.
    pub fn after(&self, from: f64) -> Series {
        Series {
            points: self
                .points
                .iter()
                .copied()
                .filter(|(t, _)| *t >= from)
                .collect(),
        }
    }

    /// Least-squares slope, per hour; `None` with fewer than two distinct times.
    pub fn slope_per_hour(&self) -> Option<f64> {
        let n = self.points.len() as f64;
        if n < 2.0 {
            return None;
        }
        let (mt, mv) = self
            .points
            .iter()
            .fold((0.0, 0.0), |(a, b), (t, v)| (a + t / n, b + v / n));
        let (mut num, mut den) = (0.0, 0.0);
        for (t, v) in &self.points {
            num += (t - mt) * (v - mv);
            den += (t - mt) * (t - mt);
        }
        (den > 0.0).then(|| num / den * 3600.0)
    }

    /// The median of the first `fraction` of the points (at least one).
    pub fn head_median(&self, fraction: f64) -> Option<f64> {
        let k = ((self.points.len() as f64 * fraction).ceil() as usize).max(1);
        median(self.points.iter().take(k).map(|p| p.1))
    }

    /// The median of the last `fraction` of the points (at least one).
    pub fn tail_median(&self, fraction: f64) -> Option<f64> {
        let k = ((self.points.len() as f64 * fraction).ceil() as usize).max(1);
        let skip = self.points.len().saturating_sub(k);
        median(self.points.iter().skip(skip).map(|p| p.1))
    }

    pub fn max(&self) -> Option<f64> {
        self.points.iter().map(|p| p.1).reduce(f64::max)
    }

    pub fn last(&self) -> Option<f64> {
        self.points.last().map(|p| p.1)
    }
}

pub fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// The samples of `name` in a Prometheus text exposition: `(labels as written, value)`.
pub fn samples<'a>(text: &'a str, name: &str) -> Vec<(&'a str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let end = r.find('}')?;
                    (&r[..end], r[end + 1..].trim())
                }
                None if rest.starts_with(' ') => ("", rest.trim()),
                None => return None,
            };
            Some((labels, value.split(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// The sum of every series of `name` whose labels contain `filter` (e.g. `runtime="io"`).
pub fn sum(text: &str, name: &str, filter: &str) -> Option<f64> {
    let s = samples(text, name);
    let matching: Vec<f64> = s
        .iter()
        .filter(|(labels, _)| labels.contains(filter))
        .map(|(_, v)| *v)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// A histogram's cumulative buckets `(le, count)`, `+Inf` last as infinity.
pub fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = samples(text, &format!("{name}_bucket"))
        .into_iter()
        .filter_map(|(labels, v)| {
            let le = labels.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, v))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The bucket bound under which 99 % of the observations between two scrapes fall (`from` the
/// earlier's buckets, `to` the later's); `None` if nothing was observed.
pub fn p99_between(from: &[(f64, f64)], to: &[(f64, f64)]) -> Option<f64> {
    let diff: Vec<(f64, f64)> = to
        .iter()
        .map(|(le, n)| {
            let before = from.iter().find(|b| b.0 == *le).map_or(0.0, |b| b.1);
            (*le, n - before)
        })
        .collect();
    let total = diff.last()?.1;
    if total <= 0.0 {
        return None;
    }
    diff.iter()
        .find(|(_, n)| *n >= 0.99 * total)
        .map(|(le, _)| *le)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_of_a_line_is_its_rate_per_hour_and_noise_averages_out() {
        let mut s = Series::default();
        for i in 0..100 {
            // 1 MiB an hour, in KiB, sampled every 36 s, with ±50 KiB of alternating noise.
            let t = i as f64 * 36.0;
            let noise = if i % 2 == 0 { 50.0 } else { -50.0 };
            s.push(t, 20_000.0 + t / 3600.0 * 1024.0 + noise);
        }
        let slope = s.slope_per_hour().unwrap();
        assert!((slope - 1024.0).abs() < 40.0, "{slope}");
        let flat = Series {
            points: vec![(0.0, 5.0), (10.0, 5.0), (20.0, 5.0)],
        };
        assert_eq!(flat.slope_per_hour(), Some(0.0));
        assert_eq!(Series::default().slope_per_hour(), None);
        assert_eq!(s.after(1800.0).points.len(), 50);
    }

    #[test]
    fn medians_of_head_and_tail_ignore_a_spike() {
        let s = Series {
            points: [10.0, 11.0, 90.0, 10.0, 12.0, 13.0, 99.0, 12.0, 14.0, 13.0]
                .iter()
                .enumerate()
                .map(|(i, v)| (i as f64, *v))
                .collect(),
        };
        assert_eq!(s.head_median(0.5), Some(11.0));
        assert_eq!(s.tail_median(0.5), Some(13.0));
        assert_eq!(s.max(), Some(99.0));
    }

    const SCRAPE: &str = "\
# HELP isthmus_runtime_alive_tasks Tasks.
# TYPE isthmus_runtime_alive_tasks gauge
isthmus_runtime_alive_tasks{runtime=\"io\"} 17
isthmus_runtime_alive_tasks{runtime=\"loop\"} 4
isthmus_runtime_alive_tasks_other 99
isthmus_group_failovers_total{group=\"remote\",reason=\"active_down\"} 3
isthmus_group_failovers_total{group=\"remote\",reason=\"failback\"} 2
isthmus_event_loop_lag_seconds_bucket{le=\"0.001\"} 980
isthmus_event_loop_lag_seconds_bucket{le=\"0.005\"} 995
isthmus_event_loop_lag_seconds_bucket{le=\"+Inf\"} 1000
process_open_fds 30
";

    #[test]
    fn a_scrape_gives_sums_by_label_and_a_histograms_p99() {
        assert_eq!(
            sum(SCRAPE, "isthmus_runtime_alive_tasks", "runtime=\"io\""),
            Some(17.0)
        );
        assert_eq!(
            sum(SCRAPE, "isthmus_runtime_alive_tasks", ""),
            Some(21.0),
            "a longer name with the same start is another family"
        );
        assert_eq!(sum(SCRAPE, "isthmus_group_failovers_total", ""), Some(5.0));
        assert_eq!(sum(SCRAPE, "process_open_fds", ""), Some(30.0));
        assert_eq!(sum(SCRAPE, "isthmus_nothing", ""), None);
        let b = buckets(SCRAPE, "isthmus_event_loop_lag_seconds");
        assert_eq!(b.len(), 3);
        assert_eq!(p99_between(&[], &b), Some(0.005));
        // Between two scrapes only the new observations count: 10 more, all late.
        let later: Vec<(f64, f64)> = vec![(0.001, 980.0), (0.005, 995.0), (f64::INFINITY, 1010.0)];
        assert_eq!(p99_between(&b, &later), Some(f64::INFINITY));
        assert_eq!(p99_between(&b, &b), None);
    }
}
