//! Prometheus histograms read from a `/metrics` text page: the buckets of one series, the
//! difference between two scrapes, and quantiles from the difference.

/// Cumulative buckets `(upper bound, count)` in increasing bound order, `+Inf` last.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets(pub Vec<(f64, f64)>);

/// The buckets of histogram `name` whose labels include every `(label, value)` of `labels`
/// (besides `le`); `None` if the page has no such series.
pub fn buckets(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<Buckets> {
    let prefix = format!("{name}_bucket");
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => ("", rest),
        };
        let pairs = parse_labels(label_text);
        let wanted = labels
            .iter()
            .all(|(k, v)| pairs.iter().any(|(pk, pv)| pk == k && pv == v));
        if !wanted {
            continue;
        }
        let Some(le) = pairs.iter().find(|(k, _)| k == "le").map(|(_, v)| v) else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse() {
                Ok(b) => b,
                Err(_) => continue,
            }
        };
        let Some(count) = value.split_whitespace().next().and_then(|v| v.parse().ok()) else {
            continue;
        };
        out.push((bound, count));
    }
    if out.is_empty() {
        return None;
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    Some(Buckets(out))
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let key = key.trim_start_matches(',').trim().to_owned();
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((key, value));
        rest = &after[end..];
    }
    out
}

impl Buckets {
    /// Observations counted (the `+Inf` bucket).
    pub fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |b| b.1)
    }

    /// `self - earlier`, bucket by bucket (the observations between two scrapes). Buckets
    /// missing from `earlier` count as 0 there.
    pub fn since(&self, earlier: Option<&Buckets>) -> Buckets {
        Buckets(
            self.0
                .iter()
                .map(|(le, n)| {
                    let before = earlier
                        .and_then(|e| e.0.iter().find(|(l, _)| l == le))
                        .map_or(0.0, |b| b.1);
                    (*le, (n - before).max(0.0))
                })
                .collect(),
        )
    }

    /// The `q` quantile as Prometheus's `histogram_quantile` estimates it (linear within the
    /// bucket; the lower bound of the first bucket is 0; in the `+Inf` bucket, the highest
    /// finite bound), and the upper bound of the bucket it falls in. `None` without
    /// observations.
    pub fn quantile(&self, q: f64) -> Option<Quantile> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut prev = (0.0, 0.0);
        for &(le, n) in &self.0 {
            if n >= rank && n > prev.1 {
                let value = if le.is_infinite() {
                    prev.0
                } else {
                    prev.0 + (le - prev.0) * (rank - prev.1) / (n - prev.1)
                };
                return Some(Quantile { value, bucket: le });
            }
            prev = (le, n);
        }
        None
    }

    /// The upper bound of the highest bucket that gained observations: the largest
    /// observation is at most this.
    pub fn max_bucket(&self) -> Option<f64> {
        let mut prev = 0.0;
        let mut top = None;
        for &(le, n) in &self.0 {
            if n > prev {
                top = Some(le);
            }
            prev = n;
        }
        top
    }
}

/// A quantile estimate and the upper bound of its bucket (seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantile {
    pub value: f64,
    pub bucket: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# TYPE x histogram\n\
        x_bucket{link=\"a\",le=\"0.001\"} 90\n\
        x_bucket{link=\"a\",le=\"0.01\"} 99\n\
        x_bucket{link=\"a\",le=\"+Inf\"} 100\n\
        x_bucket{link=\"b\",le=\"0.001\"} 1\n\
        x_bucket{link=\"b\",le=\"0.01\"} 1\n\
        x_bucket{link=\"b\",le=\"+Inf\"} 1\n\
        x_sum{link=\"a\"} 1\nx_count{link=\"a\"} 100\n";

    #[test]
    fn reads_one_series_and_estimates_quantiles_like_prometheus() {
        let a = buckets(PAGE, "x", &[("link", "a")]).unwrap();
        assert_eq!(a.count(), 100.0);
        let p50 = a.quantile(0.5).unwrap();
        assert!((p50.value - 0.001 * 50.0 / 90.0).abs() < 1e-12);
        assert_eq!(p50.bucket, 0.001);
        let p99 = a.quantile(0.99).unwrap();
        assert!((p99.value - 0.01).abs() < 1e-12);
        assert_eq!(a.quantile(1.0).unwrap().bucket, f64::INFINITY);
        assert_eq!(a.quantile(1.0).unwrap().value, 0.01);
        assert_eq!(a.max_bucket(), Some(f64::INFINITY));
        assert!(buckets(PAGE, "y", &[]).is_none());
    }

    #[test]
    fn differences_between_scrapes() {
        let before = buckets(PAGE, "x", &[("link", "a")]).unwrap();
        let after = Buckets(vec![(0.001, 190.0), (0.01, 199.0), (f64::INFINITY, 200.0)]);
        let d = after.since(Some(&before));
        assert_eq!(
            d.0,
            vec![(0.001, 100.0), (0.01, 100.0), (f64::INFINITY, 100.0)]
        );
        assert_eq!(d.max_bucket(), Some(0.001));
        assert_eq!(d.quantile(0.99).unwrap().bucket, 0.001);
        let none = before.since(Some(&before));
        assert_eq!(none.quantile(0.5), None);
    }
}
