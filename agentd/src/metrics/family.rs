//! Metric families built at scrape time from values agentd already keeps (atomics of the packet
//! path, the engine's figures, the route manager's counts): a small builder over the
//! `prometheus` crate's data model, so those values need no second copy in registered metrics.

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

pub struct Family {
    family: MetricFamily,
}

impl Family {
    pub fn gauge(name: &str, help: &str) -> Family {
        Family::new(name, help, MetricType::GAUGE)
    }

    pub fn counter(name: &str, help: &str) -> Family {
        Family::new(name, help, MetricType::COUNTER)
    }

    pub fn histogram(name: &str, help: &str) -> Family {
        Family::new(name, help, MetricType::HISTOGRAM)
    }

    /// One histogram series: `cumulative[i]` observations at most `bounds[i]` (the `+Inf`
    /// bucket is `count`, added by the encoder).
    pub fn add_histogram(
        &mut self,
        labels: &[(&str, &str)],
        bounds: &[f64],
        cumulative: &[u64],
        count: u64,
        sum: f64,
    ) -> &mut Family {
        let mut h = Histogram::default();
        h.set_sample_count(count);
        h.set_sample_sum(sum);
        h.set_bucket(
            bounds
                .iter()
                .zip(cumulative)
                .map(|(&bound, &n)| {
                    let mut b = Bucket::default();
                    b.set_upper_bound(bound);
                    b.set_cumulative_count(n);
                    b
                })
                .collect(),
        );
        let mut metric = Metric::default();
        metric.set_label(label_pairs(labels));
        metric.set_histogram(h);
        self.family.mut_metric().push(metric);
        self
    }

    fn new(name: &str, help: &str, kind: MetricType) -> Family {
        let mut family = MetricFamily::default();
        family.set_name(name.to_owned());
        family.set_help(help.to_owned());
        family.set_field_type(kind);
        Family { family }
    }

    /// One series: `labels` as (name, value) pairs in a fixed order.
    pub fn add(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Family {
        let mut metric = Metric::default();
        metric.set_label(label_pairs(labels));
        match self.family.get_field_type() {
            MetricType::COUNTER => {
                let mut c = Counter::default();
                c.set_value(value);
                metric.set_counter(c);
            }
            _ => {
                let mut g = Gauge::default();
                g.set_value(value);
                metric.set_gauge(g);
            }
        }
        self.family.mut_metric().push(metric);
        self
    }

    /// The family, or `None` if it has no series (the text format has no empty families).
    /// Empty label values are left out: Prometheus reads them as absent anyway.
    pub fn build(self) -> Option<MetricFamily> {
        (!self.family.get_metric().is_empty()).then_some(self.family)
    }
}

fn label_pairs(labels: &[(&str, &str)]) -> Vec<LabelPair> {
    labels
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| {
            let mut pair = LabelPair::default();
            pair.set_name((*k).to_owned());
            pair.set_value((*v).to_owned());
            pair
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_encode_as_prometheus_text() {
        let mut f = Family::gauge("isthmus_link_up", "1 when the link carries traffic");
        f.add(&[("link", "interconnect")], 1.0)
            .add(&[("link", "internet")], 0.0);
        let mut c = Family::counter("isthmus_x_total", "a counter");
        c.add(&[], 3.0);
        let families: Vec<_> = [f.build(), c.build()].into_iter().flatten().collect();
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .expect("encodes");
        assert_eq!(
            text,
            "# HELP isthmus_link_up 1 when the link carries traffic\n\
             # TYPE isthmus_link_up gauge\n\
             isthmus_link_up{link=\"interconnect\"} 1\n\
             isthmus_link_up{link=\"internet\"} 0\n\
             # HELP isthmus_x_total a counter\n\
             # TYPE isthmus_x_total counter\n\
             isthmus_x_total 3\n"
        );
    }

    #[test]
    fn histograms_encode_with_their_inf_bucket_and_empty_labels_are_left_out() {
        let mut h = Family::histogram("isthmus_t_seconds", "a histogram");
        h.add_histogram(
            &[("target", "db"), ("link", "")],
            &[0.1, 1.0],
            &[2, 3],
            4,
            5.5,
        );
        let families: Vec<_> = h.build().into_iter().collect();
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .expect("encodes");
        assert_eq!(
            text,
            "# HELP isthmus_t_seconds a histogram\n\
             # TYPE isthmus_t_seconds histogram\n\
             isthmus_t_seconds_bucket{target=\"db\",le=\"0.1\"} 2\n\
             isthmus_t_seconds_bucket{target=\"db\",le=\"1\"} 3\n\
             isthmus_t_seconds_bucket{target=\"db\",le=\"+Inf\"} 4\n\
             isthmus_t_seconds_sum{target=\"db\"} 5.5\n\
             isthmus_t_seconds_count{target=\"db\"} 4\n"
        );
    }

    #[test]
    fn an_empty_family_is_left_out() {
        assert!(Family::gauge("isthmus_none", "nothing").build().is_none());
    }
}
