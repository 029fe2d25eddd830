//! The drill as a chart: a self-contained SVG (no script, no external font or style) that any
//! browser, Markdown viewer or ticket system shows. Time on x (seconds since the start), RTT
//! on y (ms), one `<polyline class="link" data-link="NAME">` per link in its own colour with a
//! legend, the loss of each bucket as a bar in that link's lane under the plot, and every state
//! change of the time line as a labelled vertical line.
//!
//! Buckets without an RTT (nothing answered) are skipped: the line joins its neighbours and the
//! lane below shows the loss; a point with no neighbour is drawn as a dot. Every string from
//! agentd is XML-escaped.

use std::fmt::Write as _;

use isthmus_api::{DrillLink, DrillReport};

use super::target_word;

const WIDTH: f64 = 960.0;
/// Plot area: left edge (room for the y labels) and right edge (room for the legend).
const X0: f64 = 64.0;
const X1: f64 = 780.0;
/// Top of the RTT plot (room for the title and three rows of state labels) and its height.
const Y0: f64 = 70.0;
const PLOT_H: f64 = 260.0;
/// One loss lane per link under the plot.
const LANE_H: f64 = 14.0;
const LANE_GAP: f64 = 4.0;
const STATE_ROWS: usize = 3;

/// Distinct on white and for the common colour blindnesses, in order (Tableau 10).
const COLOURS: [&str; 8] = [
    "#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#b07aa1", "#76b7b2", "#9c755f", "#edc948",
];

pub fn render(r: &DrillReport) -> String {
    let lanes_top = Y0 + PLOT_H + 10.0;
    let lanes_bottom = lanes_top + r.links.len() as f64 * (LANE_H + LANE_GAP);
    let height = (lanes_bottom + 44.0).max(Y0 + PLOT_H + 60.0);
    let t_max = time_span(r);
    let x = |t_ms: f64| X0 + t_ms / t_max * (X1 - X0);
    let rtt_top = nice_ceil(max_rtt(r).map_or(1.0, |m| m * 1.1).max(0.1));
    let y = |rtt: f64| Y0 + PLOT_H - rtt / rtt_top * PLOT_H;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<title>{}</title>"#,
        esc(&format!(
            "RTT and loss per link: drill of {} {} on {}",
            target_word(r.target),
            r.group,
            r.gateway
        ))
    );
    out.push_str(r#"<rect x="0" y="0" width="100%" height="100%" fill="white"/>"#);
    out.push('\n');
    let _ = writeln!(
        out,
        r#"<text x="{X0}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        esc(&format!(
            "RTT and loss per link: {} {} on {}",
            target_word(r.target),
            r.group,
            r.gateway
        ))
    );

    // Axes and grid.
    for v in ticks(rtt_top) {
        let yv = y(v);
        let _ = writeln!(
            out,
            r##"<line x1="{X0}" y1="{yv:.1}" x2="{X1}" y2="{yv:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            X0 - 6.0,
            yv + 4.0,
            tick_label(v)
        );
    }
    for s in ticks(t_max / 1000.0) {
        let xs = x(s * 1000.0);
        let _ = writeln!(
            out,
            r##"<line x1="{xs:.1}" y1="{:.1}" x2="{xs:.1}" y2="{:.1}" stroke="#888"/><text x="{xs:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            lanes_bottom,
            lanes_bottom + 5.0,
            lanes_bottom + 18.0,
            tick_label(s)
        );
    }
    let _ = writeln!(
        out,
        r##"<rect x="{X0}" y="{Y0}" width="{:.1}" height="{PLOT_H}" fill="none" stroke="#888"/>"##,
        X1 - X0
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since the start</text>"#,
        (X0 + X1) / 2.0,
        lanes_bottom + 34.0
    );
    let _ = writeln!(
        out,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">RTT (ms)</text>"#,
        Y0 + PLOT_H / 2.0,
        Y0 + PLOT_H / 2.0
    );
    if r.links.iter().all(|l| l.series.is_empty()) {
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#666">no measurements</text>"##,
            (X0 + X1) / 2.0,
            Y0 + PLOT_H / 2.0
        );
    }

    // State changes: a dashed line across plot and lanes, the label in the first free row.
    let mut row_end = [f64::NEG_INFINITY; STATE_ROWS];
    for step in &r.timeline {
        let Some(state) = step.state else { continue };
        let xs = x(step.at_ms as f64);
        let label = state.as_str();
        let row = (0..STATE_ROWS)
            .find(|&i| row_end[i] <= xs)
            .unwrap_or_else(|| {
                // No free row: the one that frees first.
                (0..STATE_ROWS)
                    .min_by(|&a, &b| row_end[a].total_cmp(&row_end[b]))
                    .unwrap_or(0)
            });
        row_end[row] = xs + label.len() as f64 * 6.5 + 6.0;
        let ly = Y0 - 8.0 - (STATE_ROWS - 1 - row) as f64 * 13.0;
        let _ = writeln!(
            out,
            r##"<g class="state" data-state="{label}"><line x1="{xs:.1}" y1="{:.1}" x2="{xs:.1}" y2="{lanes_bottom:.1}" stroke="#555" stroke-dasharray="4 3"/><text x="{:.1}" y="{ly:.1}" fill="#333">{label}</text></g>"##,
            ly + 3.0,
            xs + 2.0
        );
    }

    // Links: the RTT line, dots for isolated points, loss bars in the lane, the legend.
    for (i, link) in r.links.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        // Past eight links the colours repeat; a dash pattern keeps the lines apart.
        let dash = if i >= COLOURS.len() {
            r#" stroke-dasharray="6 2""#
        } else {
            ""
        };
        let name = esc(&link.name);
        let half = r.bucket_ms as f64 / 2.0;
        let points: Vec<Option<(f64, f64)>> = link
            .series
            .iter()
            .map(|p| {
                p.rtt_avg_ms
                    .filter(|v| v.is_finite())
                    .map(|v| (x(p.at_ms as f64 + half), y(v.clamp(0.0, rtt_top))))
            })
            .collect();
        let mut coords = String::new();
        for (px, py) in points.iter().flatten() {
            let _ = write!(coords, "{px:.1},{py:.1} ");
        }
        let _ = writeln!(
            out,
            r#"<polyline class="link" data-link="{name}" fill="none" stroke="{colour}" stroke-width="1.5"{dash} points="{}"/>"#,
            coords.trim_end()
        );
        for (j, p) in points.iter().enumerate() {
            let Some((px, py)) = p else { continue };
            let before = j > 0 && points[j - 1].is_some();
            let after = points.get(j + 1).is_some_and(Option::is_some);
            if !before && !after {
                let _ = writeln!(
                    out,
                    r#"<circle class="point" data-link="{name}" cx="{px:.1}" cy="{py:.1}" r="2.5" fill="{colour}"/>"#
                );
            }
        }
        let lane = lanes_top + i as f64 * (LANE_H + LANE_GAP);
        let _ = writeln!(
            out,
            r##"<rect x="{X0}" y="{lane:.1}" width="{:.1}" height="{LANE_H}" fill="#f6f6f6"/>"##,
            X1 - X0
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" fill="{colour}">{name} lost</text>"#,
            X1 + 6.0,
            lane + LANE_H - 3.0
        );
        loss_bars(&mut out, link, r.bucket_ms, &x, lane, colour, &name);
        let ly = Y0 + 8.0 + i as f64 * 18.0;
        let _ = writeln!(
            out,
            r#"<g class="legend" data-link="{name}"><line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"{dash}/><text x="{:.1}" y="{:.1}">{name}{}</text></g>"#,
            X1 + 14.0,
            X1 + 34.0,
            X1 + 40.0,
            ly + 4.0,
            if points.iter().all(Option::is_none) {
                " (no answer)"
            } else {
                ""
            }
        );
    }
    if !r.links.is_empty() {
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" fill="#333">lanes below: probes lost</text><text x="{:.1}" y="{:.1}" fill="#333">per bucket (bar height:</text><text x="{:.1}" y="{:.1}" fill="#333">share of the bucket)</text>"##,
            X1 + 14.0,
            Y0 + 18.0 * r.links.len() as f64 + 14.0,
            X1 + 14.0,
            Y0 + 18.0 * r.links.len() as f64 + 28.0,
            X1 + 14.0,
            Y0 + 18.0 * r.links.len() as f64 + 42.0,
        );
    }
    out.push_str("</svg>\n");
    out
}

/// One bar per bucket with loss, as high as the share of the bucket's probes lost.
fn loss_bars(
    out: &mut String,
    link: &DrillLink,
    bucket_ms: u64,
    x: &impl Fn(f64) -> f64,
    lane: f64,
    colour: &str,
    name: &str,
) {
    for p in link.series.iter().filter(|p| p.lost > 0) {
        let share = if p.sent == 0 {
            1.0
        } else {
            (f64::from(p.lost) / f64::from(p.sent)).min(1.0)
        };
        let h = (share * LANE_H).max(2.0);
        let x0 = x(p.at_ms as f64);
        let w = (x((p.at_ms + bucket_ms) as f64) - x0).max(1.0);
        let _ = writeln!(
            out,
            r#"<rect class="loss" data-link="{name}" x="{x0:.1}" y="{:.1}" width="{w:.1}" height="{h:.1}" fill="{colour}"><title>{name} +{:.1} s: {} of {} lost</title></rect>"#,
            lane + LANE_H - h,
            p.at_ms as f64 / 1000.0,
            p.lost,
            p.sent
        );
    }
}

/// The time the chart spans: the drill's duration, or as far as its data reaches.
fn time_span(r: &DrillReport) -> f64 {
    let finished = r
        .finished_unix_ms
        .map_or(0, |f| f.saturating_sub(r.started_unix_ms));
    let series = r
        .links
        .iter()
        .filter_map(|l| l.series.last())
        .map(|p| p.at_ms + r.bucket_ms)
        .max()
        .unwrap_or(0);
    let steps = r.timeline.last().map_or(0, |s| s.at_ms);
    finished.max(series).max(steps).max(1_000) as f64
}

fn max_rtt(r: &DrillReport) -> Option<f64> {
    r.links
        .iter()
        .flat_map(|l| &l.series)
        .filter_map(|p| p.rtt_avg_ms)
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
}

/// The step of about five ticks from 0 to `max`: 1, 2 or 5 times a power of ten.
fn tick_step(max: f64) -> f64 {
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// `max` rounded up to a whole tick step, so the top grid line is the top of the plot.
fn nice_ceil(max: f64) -> f64 {
    let step = tick_step(max);
    (max / step).ceil() * step
}

fn ticks(max: f64) -> Vec<f64> {
    let step = tick_step(max);
    (0..)
        .map(|i| f64::from(i) * step)
        .take_while(|v| *v <= max + step * 1e-9)
        .collect()
}

fn tick_label(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// XML text and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;
    use isthmus_api::{DrillPoint, DrillState, DrillStep};

    /// Every `polyline.link`'s name and points.
    fn lines(svg: &str) -> Vec<(String, Vec<(f64, f64)>)> {
        let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}:\n{svg}"));
        doc.descendants()
            .filter(|n| n.has_tag_name("polyline") && n.attribute("class") == Some("link"))
            .map(|n| {
                let points = n
                    .attribute("points")
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(|p| {
                        let (x, y) = p.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect();
                (n.attribute("data-link").unwrap().to_owned(), points)
            })
            .collect()
    }

    fn in_plot(&(x, y): &(f64, f64)) -> bool {
        (X0..=X1).contains(&x) && (Y0..=Y0 + PLOT_H).contains(&y)
    }

    fn count(svg: &str, tag: &str, class: &str) -> usize {
        let doc = roxmltree::Document::parse(svg).unwrap();
        doc.descendants()
            .filter(|n| n.has_tag_name(tag) && n.attribute("class") == Some(class))
            .count()
    }

    #[test]
    fn one_line_per_link_inside_the_plot_with_a_legend_and_state_lines() {
        let r = fixtures::passed();
        let svg = render(&r);
        let lines = lines(&svg);
        let names: Vec<&str> = lines.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["interconnect", "internet"]);
        for (name, points) in &lines {
            assert_eq!(points.len(), 83, "{name}");
            assert!(points.iter().all(in_plot), "{name}: {points:?}");
            // Time goes left to right.
            assert!(points.windows(2).all(|w| w[0].0 < w[1].0), "{name}");
        }
        // The faster link is drawn lower (higher y) than the slower one.
        assert!(lines[0].1[0].1 > lines[1].1[0].1);
        assert_eq!(count(&svg, "g", "legend"), 2);
        assert_eq!(count(&svg, "g", "state"), 7);
        // internet lost 3 of 50 in the bucket at 10 s: one bar, in internet's colour.
        assert_eq!(count(&svg, "rect", "loss"), 1);
        assert!(svg.contains(r#"<rect class="loss" data-link="internet""#));
        assert!(!svg.contains("<script") && !svg.contains("href"));
    }

    #[test]
    fn gaps_are_skipped_and_a_lone_point_is_a_dot() {
        let mut r = fixtures::passed();
        let s = &mut r.links[1].series;
        for p in &mut s[20..30] {
            p.lost = p.sent;
            p.rtt_avg_ms = None;
        }
        s[31].rtt_avg_ms = None;
        s[31].lost = 50;
        // Point 30 stands alone between two gaps.
        let svg = render(&r);
        let lines = lines(&svg);
        assert_eq!(lines[1].1.len(), 83 - 11);
        assert_eq!(count(&svg, "circle", "point"), 1);
        assert_eq!(count(&svg, "rect", "loss"), 1 + 11);
    }

    #[test]
    fn a_single_point_all_zero_rtt_and_no_data_still_make_a_valid_chart() {
        let mut r = fixtures::passed();
        r.links[0].series.truncate(1);
        r.links[1].series = vec![];
        let svg = render(&r);
        let l = lines(&svg);
        assert_eq!(l[0].1.len(), 1);
        assert!(l[0].1.iter().all(in_plot));
        assert!(l[1].1.is_empty());
        assert!(svg.contains("internet (no answer)"));
        assert_eq!(count(&svg, "circle", "point"), 1);

        for link in &mut r.links {
            link.series = (0..10)
                .map(|i| DrillPoint {
                    at_ms: i * 1000,
                    sent: 50,
                    lost: 0,
                    rtt_avg_ms: Some(0.0),
                })
                .collect();
        }
        let l = lines(&render(&r));
        assert!(l
            .iter()
            .all(|(_, p)| p.len() == 10 && p.iter().all(in_plot)));
        // Zero RTT sits on the x axis.
        assert!(l[0]
            .1
            .iter()
            .all(|&(_, y)| (y - (Y0 + PLOT_H)).abs() < 0.01));

        let refused = render(&fixtures::refused());
        assert!(lines(&refused).is_empty());
        assert!(refused.contains("no measurements"));
    }

    #[test]
    fn hundreds_of_buckets_and_many_links_stay_in_the_plot() {
        let mut r = fixtures::passed();
        r.bucket_ms = 250;
        let template = r.links[0].clone();
        r.links = (0..10)
            .map(|i| DrillLink {
                name: format!("link{i}"),
                series: (0..800)
                    .map(|b| DrillPoint {
                        at_ms: b * 250,
                        sent: 12,
                        lost: u32::from(b % 97 == 0),
                        rtt_avg_ms: Some(1.0 + f64::from(i) * 10.0 + (b % 13) as f64),
                    })
                    .collect(),
                ..template.clone()
            })
            .collect();
        let svg = render(&r);
        let l = lines(&svg);
        assert_eq!(l.len(), 10);
        assert!(l
            .iter()
            .all(|(_, p)| p.len() == 800 && p.iter().all(in_plot)));
        // Past eight colours, the lines are told apart by a dash pattern.
        assert_eq!(svg.matches(r#"stroke-dasharray="6 2""#).count(), 4);
    }

    #[test]
    fn text_from_agentd_is_escaped() {
        let mut r = fixtures::passed();
        r.links[0].name = r#"a<b>&"c'"#.into();
        r.gateway = "gw</text><script>x</script>".into();
        r.timeline.push(DrillStep {
            unix_ms: 0,
            at_ms: 90_000,
            state: Some(DrillState::Done),
            what: "<&>".into(),
        });
        let svg = render(&r);
        let l = lines(&svg);
        assert_eq!(l[0].0, r#"a<b>&"c'"#);
        assert!(!svg.contains("<script"));
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let title = doc.descendants().find(|n| n.has_tag_name("title")).unwrap();
        assert!(title
            .text()
            .unwrap()
            .ends_with("on gw</text><script>x</script>"));
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(ticks(83.0), [0.0, 20.0, 40.0, 60.0, 80.0]);
        assert_eq!(nice_ceil(16.6), 20.0);
        assert_eq!(nice_ceil(0.33), 0.4);
        assert_eq!(tick_label(0.2), "0.2");
        assert_eq!(tick_label(20.0), "20");
    }
}
