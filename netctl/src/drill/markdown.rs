//! The drill as a Markdown DR test report, the record an operator files after the test:
//! what was switched, when, how fast (RTO against its target), what was lost, RTT before,
//! during and after per link, the pre-checks, the issues and one action item per issue, with
//! the chart beside it. Text from agentd (reasons, link names, problems) is escaped so that it
//! cannot break a table or inject HTML.

use std::fmt::Write as _;

use isthmus_api::{DrillReport, DrillState};

use super::stats::{self, AFTER, BEFORE, DURING, PHASES};
use super::{files, mark, offset, outcome, secs, target_word, to_or_pending, utc};

pub fn render(r: &DrillReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# DR drill report: {} {} on {}\n",
        target_word(r.target),
        esc(&r.group),
        esc(&r.gateway)
    );
    header(&mut out, r);
    timeline(&mut out, r);
    rto(&mut out, r);
    lost(&mut out, r);
    rtt(&mut out, r);
    let _ = writeln!(out, "## Pre-checks\n");
    if r.prechecks.is_empty() {
        out.push_str("None reported.\n");
    }
    for c in &r.prechecks {
        let _ = writeln!(out, "- {} {}: {}", mark(c.ok), esc(&c.name), esc(&c.detail));
    }
    let _ = writeln!(out, "\n## Issues found\n");
    if r.problems.is_empty() {
        out.push_str("None.\n");
    }
    for p in &r.problems {
        let _ = writeln!(out, "- {}", esc(p));
    }
    let _ = writeln!(out, "\n## Action items\n");
    if r.problems.is_empty() {
        out.push_str("None.\n");
    }
    for p in &r.problems {
        let _ = writeln!(
            out,
            "- [ ] Find the cause of and fix: {} (owner: …, due: …)",
            esc(p)
        );
    }
    out
}

fn header(out: &mut String, r: &DrillReport) {
    let finished = r
        .finished_unix_ms
        .map_or("not finished".into(), utc::date_time);
    let rows = [
        ("Started", utc::date_time(r.started_unix_ms)),
        ("Finished", finished),
        ("Gateway", esc(&r.gateway)),
        (
            "Group",
            format!("{} ({})", esc(&r.group), target_word(r.target)),
        ),
        (
            "Switchover",
            format!("{} → {}", esc(&r.from), esc(&to_or_pending(r))),
        ),
        ("Reason", esc(&r.reason)),
        ("Hold", secs(r.hold_ms)),
        ("RTO target", secs(r.rto_target_ms)),
        ("Outcome", format!("**{}**", esc(&outcome(r)))),
        ("Drill id", r.id.to_string()),
    ];
    out.push_str("| | |\n|---|---|\n");
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    out.push('\n');
}

fn timeline(out: &mut String, r: &DrillReport) {
    out.push_str("## Timeline\n\n");
    if r.timeline.is_empty() {
        out.push_str("No steps recorded.\n\n");
        return;
    }
    out.push_str("| Time (UTC) | Offset | State | What happened |\n|---|---|---|---|\n");
    for s in &r.timeline {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            utc::time_of_day(s.unix_ms),
            offset(s.at_ms),
            s.state.map_or("", DrillState::as_str),
            esc(&s.what)
        );
    }
    out.push('\n');
}

fn rto(out: &mut String, r: &DrillReport) {
    out.push_str("## RTO achieved\n\n");
    match r.rto_ms {
        Some(ms) => {
            let _ = writeln!(
                out,
                "{} (target: {}) {}\n",
                secs(ms),
                secs(r.rto_target_ms),
                mark(ms <= r.rto_target_ms)
            );
        }
        None if r.state == DrillState::Refused => {
            let _ = writeln!(
                out,
                "Not measured: the drill was refused before the switch (target: {}).\n",
                secs(r.rto_target_ms)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "Not reached: the switch was never verified (target: {}) ✗\n",
                secs(r.rto_target_ms)
            );
        }
    }
    out.push_str("From the switch to the new path verified at this gateway: the routes in the kernel, a probe answered over the new path, the group's checks passing there, its DNS records and route tables in sync. The peer gateway follows within a probe interval (its own event log has the time).\n\n");
    let failback = match r.failback_ms {
        Some(ms) => secs(ms),
        None if r.state == DrillState::Refused => "not applicable".into(),
        None => "not verified".into(),
    };
    let _ = writeln!(out, "Failback time: {failback}.\n");
}

fn lost(out: &mut String, r: &DrillReport) {
    out.push_str("## What was lost\n\n");
    let _ = writeln!(
        out,
        "- While switching over: {} probes lost on the path carrying traffic.",
        r.lost_switching
    );
    let _ = writeln!(
        out,
        "- While failing back: {} probes lost on the path carrying traffic.\n",
        r.lost_failing_back
    );
    if r.links.is_empty() {
        out.push_str("No link was measured.\n\n");
        return;
    }
    let _ = writeln!(
        out,
        "Loss per link and phase (lost/sent; one probe every {} ms per link):\n",
        r.interval_ms
    );
    out.push_str("| Link |");
    for p in PHASES {
        let _ = write!(out, " {} |", p.as_str().replace('_', " "));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(PHASES.len()));
    out.push('\n');
    for l in &r.links {
        let _ = write!(out, "| {} |", esc(&l.name));
        for &p in PHASES {
            let cell = stats::phase(l, p).map_or("-".into(), |s| stats::loss(s.sent, s.lost));
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out.push('\n');
}

fn rtt(out: &mut String, r: &DrillReport) {
    out.push_str("## RTT\n\n");
    if r.links.is_empty() {
        out.push_str("No link was measured.\n\n");
        return;
    }
    out.push_str("| Link | Probed | Before avg | Before p95 | During avg | During p95 | After avg | After p95 |\n");
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    for l in &r.links {
        let _ = write!(out, "| {} | {} |", esc(&l.name), esc(&l.target));
        for phases in [BEFORE, DURING, AFTER] {
            let w = stats::window(l, phases);
            let cell = |v: Option<f64>| match (v, &w) {
                (Some(v), _) => format!("{} ms", stats::ms(v)),
                (None, Some(w)) if w.sent > 0 => "no answer".into(),
                _ => "-".into(),
            };
            let _ = write!(
                out,
                " {} | {} |",
                cell(w.and_then(|w| w.rtt_avg_ms)),
                cell(w.and_then(|w| w.rtt_p95_ms))
            );
        }
        out.push('\n');
    }
    out.push_str(
        "\nBefore: the baseline; during: switching over and holding (p95: the higher of the two \
         phases'); after: after the failback.\n\n",
    );
    let _ = writeln!(
        out,
        "![RTT and loss per link]({})\n",
        files::file_name(r, files::Kind::Svg)
    );
}

/// Text from agentd made inert in Markdown: no HTML, no table breaks, no stray emphasis or
/// links, one line.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '|' | '\\' | '`' | '*' | '[' | ']' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    fn section<'a>(md: &'a str, title: &str) -> &'a str {
        let start = md
            .find(&format!("\n## {title}\n"))
            .unwrap_or_else(|| panic!("no section {title}:\n{md}"));
        let rest = &md[start + 1..];
        let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 4);
        &rest[..end]
    }

    #[test]
    fn the_report_has_every_section_with_its_figures() {
        let md = render(&fixtures::passed());
        assert!(
            md.starts_with("# DR drill report: route group remote on aws-gw\n"),
            "{md}"
        );
        for row in [
            "| Started | 2026-11-26 15:04:18 UTC |",
            "| Gateway | aws-gw |",
            "| Group | remote (route group) |",
            "| Switchover | interconnect → internet |",
            "| Reason | quarterly DR test |",
            "| Hold | 60 s |",
            "| Outcome | **passed** |",
        ] {
            assert!(md.contains(row), "{row} missing:\n{md}");
        }
        let t = section(&md, "Timeline");
        assert!(
            t.contains("| 15:04:28.473 | +10.35s | switching | moved remote to internet |"),
            "{t}"
        );
        assert_eq!(t.matches("\n| 15:0").count(), 8, "{t}");
        let rto = section(&md, "RTO achieved");
        assert!(rto.contains("1.2 s (target: 30 s) ✓"), "{rto}");
        assert!(rto.contains("Failback time: 900 ms."), "{rto}");
        let lost = section(&md, "What was lost");
        assert!(lost.contains("While switching over: 3 probes"), "{lost}");
        assert!(lost.contains("While failing back: 0 probes"), "{lost}");
        assert!(
            lost.contains("| internet | 0/500 | 3/60 (5.0%) | 0/3000 | 0/45 | 0/530 |"),
            "{lost}"
        );
        let rtt = section(&md, "RTT");
        assert!(rtt.contains("| interconnect | 10.99.0.2 | 0.30 ms | 0.50 ms | 0.30 ms | 0.60 ms | 0.30 ms | 0.50 ms |"), "{rtt}");
        assert!(
            rtt.contains("![RTT and loss per link](drill-remote-20261126T150418Z.svg)"),
            "{rtt}"
        );
        assert!(section(&md, "Pre-checks").contains("- ✓ backup link internet up: up, rtt 12.1 ms"));
        assert!(section(&md, "Issues found").contains("None."));
        assert!(section(&md, "Action items").contains("None."));
    }

    #[test]
    fn every_problem_is_an_issue_and_an_action_item() {
        let mut r = fixtures::passed();
        r.rto_ms = Some(42_100);
        r.problems = vec![
            "RTO 42.1 s above the target 30 s".into(),
            "aws route table rtb-1 never got in sync".into(),
        ];
        let md = render(&r);
        assert!(section(&md, "RTO achieved").contains("42.1 s (target: 30 s) ✗"));
        let issues = section(&md, "Issues found");
        assert!(
            issues.contains("- aws route table rtb-1 never got in sync"),
            "{issues}"
        );
        let actions = section(&md, "Action items");
        assert_eq!(actions.matches("- [ ] ").count(), 2, "{actions}");
        assert!(
            actions.contains("- [ ] Find the cause of and fix: RTO 42.1 s above the target 30 s"),
            "{actions}"
        );
    }

    #[test]
    fn a_refused_drill_says_nothing_was_measured() {
        let md = render(&fixtures::refused());
        assert!(md.contains("REFUSED by a pre-check"), "{md}");
        assert!(
            md.contains("| Switchover | interconnect → (next healthy link) |"),
            "{md}"
        );
        assert!(section(&md, "RTO achieved").contains("Not measured: the drill was refused"));
        assert!(section(&md, "Pre-checks").contains("- ✗ backup link internet up: down for 3m12s"));
        assert!(section(&md, "Action items")
            .contains("- [ ] Find the cause of and fix: refused: backup link internet is down"));
    }

    #[test]
    fn text_from_agentd_cannot_break_tables_or_inject_html() {
        let mut r = fixtures::passed();
        r.reason = "a|b <script>alert(1)</script>\nsecond line & *more*".into();
        let md = render(&r);
        assert!(
            md.contains(r"| Reason | a\|b &lt;script&gt;alert(1)&lt;/script&gt; second line &amp; \*more\* |"),
            "{md}"
        );
        assert!(!md.contains("<script>"));
    }
}
