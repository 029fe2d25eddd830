//! `netctl drill` end to end on the two-cloud test bed: the report's figures against the test's
//! own ping through the same path, a refusal by a pre-check, an abort when the backup breaks,
//! and the report files (Markdown, JSON, an SVG with one line per link).

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use isthmus_tests::relay::Relay;
use isthmus_tests::topology::{TwoClouds, VPCS};
use isthmus_tests::{netctl, Agentd};
use serde_json::Value;

/// The backup's impairment: 10 ms each way (+20 ms RTT) and 1 % loss each way (≈ 2 % RTT).
const ONE_WAY: Duration = Duration::from_millis(10);
const LOSS_EACH_WAY: f64 = 1.0;
/// The test's ping interval.
const PING_EVERY: Duration = Duration::from_millis(10);

struct Bed {
    clouds: TwoClouds,
    relay: Relay,
    _agents: (Agentd, Agentd),
    dir: PathBuf,
}

fn bed(tag: &str) -> Bed {
    let mut clouds = TwoClouds::new(tag).with_apps();
    let relay = clouds.relay(1);
    let agents = clouds.start_agents();
    relay.set(ONE_WAY, LOSS_EACH_WAY);
    let dir = clouds.aws.fx.dir().join("reports");
    // Let the impaired backup's health settle at its new RTT.
    clouds
        .aws
        .wait_links_up(&["interconnect", "internet"], Duration::from_secs(10));
    Bed {
        clouds,
        relay,
        _agents: agents,
        dir,
    }
}

/// One reply of `ping -D`: when it arrived (unix s) and its RTT (ms), by sequence number.
#[derive(Debug, Clone, Copy)]
struct Reply {
    seq: u32,
    at: f64,
    rtt_ms: f64,
}

fn start_ping(clouds: &TwoClouds, seconds: u64) -> Child {
    clouds
        .aws_app()
        .command("ping")
        .args([
            "-D",
            "-n",
            "-i",
            &format!("{}", PING_EVERY.as_secs_f64()),
            "-W",
            "1",
            "-w",
            &seconds.to_string(),
            VPCS[1].2,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ping")
}

/// The replies, and how many requests went out (the highest sequence number seen or sent).
fn ping_replies(child: Child) -> (Vec<Reply>, u32) {
    let out = child.wait_with_output().expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut replies = Vec::new();
    let mut sent = 0;
    for line in text.lines() {
        if let Some(n) = line
            .split(" packets transmitted")
            .next()
            .filter(|_| line.contains("packets transmitted"))
        {
            sent = n.trim().parse().unwrap_or(0);
        }
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .map(str::to_owned)
        };
        let (Some(seq), Some(time)) = (field("icmp_seq="), field("time=")) else {
            continue;
        };
        let at = line
            .strip_prefix('[')
            .and_then(|l| l.split(']').next())
            .and_then(|t| t.parse::<f64>().ok());
        if let (Ok(seq), Ok(rtt_ms), Some(at)) = (seq.parse(), time.parse(), at) {
            replies.push(Reply { seq, at, rtt_ms });
        }
    }
    (replies, sent)
}

/// `netctl drill` with `args`, to completion; its exit code and the report (JSON file).
fn drill(bed: &Bed, args: &[&str]) -> (i32, String, Option<Value>) {
    let dir = bed.dir.to_str().unwrap().to_owned();
    let mut all = vec!["drill"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--report", &dir]);
    let out = netctl(&bed.clouds.aws.fx.socket(), &all);
    println!("$ netctl {}\n{}{}", all.join(" "), out.stdout, out.stderr);
    (
        out.code,
        out.stdout,
        report_file(&bed.dir, "json").map(|p| read_json(&p)),
    )
}

fn report_file(dir: &Path, ext: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == ext))
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).expect("report")).expect("report JSON")
}

/// When (unix s) the drill entered `state`.
fn entered(report: &Value, state: &str) -> f64 {
    report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["state"] == state)
        .unwrap_or_else(|| panic!("no step {state} in {:#}", report["timeline"]))["unix_ms"]
        .as_u64()
        .unwrap() as f64
        / 1e3
}

fn phase<'a>(report: &'a Value, link: &str, phase: &str) -> &'a Value {
    let l = report["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == link)
        .unwrap_or_else(|| panic!("no link {link}"));
    l["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == phase)
        .unwrap_or_else(|| panic!("no phase {phase} on {link}"))
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    assert!(!v.is_empty(), "no samples");
    v.iter().sum::<f64>() / v.len() as f64
}

/// Lost pings among those sent in [from, to) (unix s): sequence numbers are sent every
/// `PING_EVERY` from the first reply's send time.
fn lost_between(replies: &[Reply], from: f64, to: f64) -> (u32, u32) {
    let first = replies[0];
    let t0 = first.at - first.rtt_ms / 1e3 - f64::from(first.seq - 1) * PING_EVERY.as_secs_f64();
    let seq_at = |t: f64| ((t - t0) / PING_EVERY.as_secs_f64()).floor() as i64 + 1;
    let (a, b) = (seq_at(from).max(1) as u32, seq_at(to).max(1) as u32);
    let got = replies.iter().filter(|r| r.seq >= a && r.seq < b).count() as u32;
    (b - a, (b - a).saturating_sub(got))
}

#[test]
fn a_drill_reports_what_the_test_measured_itself_rto_loss_and_rtt() {
    let bed = bed("drf");
    let ping = start_ping(&bed.clouds, 20);
    std::thread::sleep(Duration::from_millis(500));
    let (code, stdout, report) = drill(
        &bed,
        &[
            "remote",
            "--hold",
            "6s",
            "--rto-target",
            "2s",
            "--reason",
            "quarterly drill",
        ],
    );
    let (replies, sent) = ping_replies(ping);
    // `ISTHMUS_KEEP_DRILL_REPORT=DIR` keeps the files (docs/drills.md's example is one).
    if let Some(keep) = std::env::var_os("ISTHMUS_KEEP_DRILL_REPORT") {
        std::fs::create_dir_all(&keep).unwrap();
        for f in std::fs::read_dir(&bed.dir).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, Path::new(&keep).join(f.file_name().unwrap())).unwrap();
        }
    }
    let r = report.expect("a JSON report");
    assert_eq!(code, 0, "netctl drill exit: {stdout}");
    assert_eq!(r["state"], "done", "{r:#}");
    assert_eq!(r["from"], "interconnect");
    assert_eq!(r["to"], "internet");
    assert!(sent > 1000, "ping sent {sent}");

    // RTO: the test's own view is the first ping whose request crossed the backup (its RTT
    // carries at least one leg's delay) after the switch began.
    let switch = entered(&r, "switching");
    let first_backup = replies
        .iter()
        .find(|x| x.at - x.rtt_ms / 1e3 >= switch && x.rtt_ms >= ONE_WAY.as_secs_f64() * 1e3 * 0.8)
        .expect("a ping over the backup");
    let own_rto_ms = (first_backup.at - switch) * 1e3;
    let rto_ms = r["rto_ms"].as_f64().expect("rto");
    // ±10 %, but never finer than one ping interval plus the new path's RTT: the two streams
    // sample the same moment at different times.
    let slack =
        (0.1 * own_rto_ms).max(PING_EVERY.as_secs_f64() * 1e3 + 2.0 * ONE_WAY.as_secs_f64() * 1e3);
    println!("RTO: report {rto_ms} ms, own ping {own_rto_ms:.1} ms (±{slack:.1})");
    assert!(
        (rto_ms - own_rto_ms).abs() <= slack,
        "RTO {rto_ms} vs {own_rto_ms:.1}"
    );

    // Lost while switching over and failing back: the same windows of the test's ping.
    let windows = [
        ("switching", "holding", "lost_switching"),
        ("failing_back", "after", "lost_failing_back"),
    ];
    for (from, to, key) in windows {
        let (n, lost) = lost_between(&replies, entered(&r, from), entered(&r, to));
        let reported = r[key].as_u64().unwrap();
        println!("{key}: report {reported}, own ping {lost} of {n}");
        assert!(
            reported.abs_diff(u64::from(lost)) <= 1,
            "{key}: {reported} vs {lost}"
        );
    }

    // RTT before, during and after: the report's stream on the link carrying traffic against
    // the ping in the same phase: ±10 %, and never finer than 1 ms (below a few ms, both are
    // mostly the scheduling of two busy userspace tunnels on a shared 2-core machine).
    let rtt_in = |a: f64, b: f64| {
        mean(
            replies
                .iter()
                .filter(|x| {
                    let t = x.at - x.rtt_ms / 1e3;
                    t >= a && t < b
                })
                .map(|x| x.rtt_ms),
        )
    };
    let cases = [
        ("interconnect", "baseline", entered(&r, "baseline"), switch),
        (
            "internet",
            "holding",
            entered(&r, "holding"),
            entered(&r, "failing_back"),
        ),
        (
            "interconnect",
            "after",
            entered(&r, "after"),
            entered(&r, "done"),
        ),
    ];
    for (link, ph, a, b) in cases {
        let own = rtt_in(a, b);
        let reported = phase(&r, link, ph)["rtt_avg_ms"].as_f64().unwrap();
        let tol = (0.1 * own).max(1.0);
        println!("RTT {ph} on {link}: report {reported:.2} ms, own ping {own:.2} ms (±{tol:.2})");
        assert!((reported - own).abs() <= tol, "{ph}: {reported} vs {own}");
    }

    // Loss during the hold: both streams see the backup's loss, within what chance allows
    // between two independent samples of it.
    let hold = phase(&r, "internet", "holding");
    let (n1, l1) = (
        hold["sent"].as_f64().unwrap(),
        hold["lost"].as_f64().unwrap(),
    );
    let (n2, l2) = lost_between(
        &replies,
        entered(&r, "holding"),
        entered(&r, "failing_back"),
    );
    let (p1, p2) = (l1 / n1, f64::from(l2) / f64::from(n2));
    let p = (l1 + f64::from(l2)) / (n1 + f64::from(n2));
    let sd = (p * (1.0 - p) * (1.0 / n1 + 1.0 / f64::from(n2))).sqrt();
    println!(
        "loss while holding: report {l1}/{n1} ({:.1} %), own ping {l2}/{n2} ({:.1} %)",
        p1 * 100.0,
        p2 * 100.0
    );
    assert!(l1 > 0.0, "the impaired backup lost nothing in the report");
    assert!((p1 - p2).abs() <= 4.0 * sd + 0.005, "loss {p1} vs {p2}");
    let (forwarded, dropped) = bed.relay.counts();
    assert!(
        dropped > 0 && forwarded > dropped * 20,
        "relay {forwarded}/{dropped}"
    );

    // Both gateways recorded it; the peer knew a drill was in progress.
    let kinds = |side: &isthmus_tests::topology::Side, kind: &str| {
        side.events()
            .into_iter()
            .filter(|e| e["kind"] == kind)
            .count()
    };
    assert!(kinds(&bed.clouds.aws, "drill") >= 6);
    assert!(
        kinds(&bed.clouds.oci, "peer_drill") >= 2,
        "{:#?}",
        bed.clouds.oci.events()
    );

    // The files: Markdown with its sections, and a chart with one line per link.
    let md = std::fs::read_to_string(report_file(&bed.dir, "md").expect("markdown")).unwrap();
    for section in [
        "Timeline",
        "RTO achieved",
        "What was lost",
        "RTT",
        "Issues found",
    ] {
        assert!(md.contains(section), "no {section} in\n{md}");
    }
    let svg = std::fs::read_to_string(report_file(&bed.dir, "svg").expect("svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the SVG parses as XML");
    let mut lines: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("class") == Some("link"))
        .filter_map(|n| n.attribute("data-link"))
        .collect();
    lines.sort();
    assert_eq!(lines, ["interconnect", "internet"]);
}

#[test]
fn a_drill_is_refused_when_the_backup_is_down_and_aborts_when_it_breaks() {
    let bed = bed("drr");
    // Refused: the backup's underlay drops everything.
    bed.clouds.aws.nft(
        "table inet bk {\n chain out { type filter hook output priority -10; ip daddr 198.51.100.0/24 drop\n }\n}\n",
    );
    bed.clouds
        .aws
        .wait_health("internet", "down", Duration::from_secs(10));
    let (code, stdout, report) = drill(&bed, &["remote", "--hold", "5s"]);
    let r = report.expect("a report of the refusal");
    assert_ne!(code, 0);
    assert_eq!(r["state"], "refused", "{r:#}");
    assert!(stdout.contains("backup link internet is up"), "{stdout}");
    assert!(
        r["problems"][0].as_str().unwrap().contains("internet"),
        "{:#}",
        r["problems"]
    );
    assert_eq!(
        bed.clouds.aws.active("remote").as_deref(),
        Some("interconnect"),
        "a refused drill changes nothing"
    );
    for f in std::fs::read_dir(&bed.dir).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let ok = bed
        .clouds
        .aws
        .ns
        .command("nft")
        .args(["delete", "table", "inet", "bk"])
        .status()
        .unwrap();
    assert!(ok.success());
    for side in [&bed.clouds.aws, &bed.clouds.oci] {
        side.wait_health("internet", "up", Duration::from_secs(30));
    }

    // Aborted: the backup breaks during the hold; the group is back on the interconnect at
    // once, and traffic with it.
    let socket = bed.clouds.aws.fx.socket();
    let dir = bed.dir.to_str().unwrap().to_owned();
    let mut child = std::process::Command::new(isthmus_tests::bin("netctl"))
        .args(["--socket", socket.to_str().unwrap(), "drill", "remote"])
        .args(["--hold", "30s", "--report", &dir])
        .stdout(Stdio::piped())
        .spawn()
        .expect("netctl drill");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while bed.clouds.aws.active("remote").as_deref() != Some("internet") {
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the drill did not switch: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    // The drill owns the group's pin: a manual failover is refused meanwhile.
    let manual = netctl(
        &socket,
        &["failover", "remote", "--to", "interconnect", "--yes"],
    );
    assert_ne!(manual.code, 0, "{manual:?}");
    assert!(
        manual.stderr.contains("drill of remote is in progress"),
        "{manual:?}"
    );
    // Both gateways say so in `netctl status`.
    let status = netctl(&socket, &["status"]).stdout;
    assert!(
        status.contains("drill    remote: holding, interconnect → internet"),
        "{status}"
    );
    let peer = netctl(&bed.clouds.oci.fx.socket(), &["status"]).stdout;
    assert!(
        peer.contains("the peer gateway is running a drill of remote"),
        "{peer}"
    );
    let ping = start_ping(&bed.clouds, 8);
    std::thread::sleep(Duration::from_secs(1));
    bed.relay.set(ONE_WAY, 100.0);
    let broke = isthmus_tests::topology::now_ms();
    bed.clouds
        .aws
        .wait_active("remote", "interconnect", Duration::from_secs(10));
    let back = isthmus_tests::topology::now_ms();
    let status = child.wait().expect("netctl drill");
    let mut out = String::new();
    use std::io::Read as _;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    println!("{out}");
    let (replies, sent) = ping_replies(ping);
    let r = read_json(&report_file(&bed.dir, "json").expect("a report of the abort"));
    assert!(!status.success());
    assert_eq!(r["state"], "aborted", "{r:#}");
    assert!(
        r["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("internet")),
        "{:#}",
        r["problems"]
    );
    let longest_gap = replies
        .windows(2)
        .map(|w| w[1].at - w[0].at)
        .fold(0.0, f64::max);
    println!(
        "abort: back on the interconnect {} ms after the backup broke; ping {} of {sent} answered, longest gap {:.0} ms",
        back - broke,
        replies.len(),
        longest_gap * 1e3
    );
    // Detection of the broken backup (the default profile's) plus the failback.
    assert!(back - broke < 5000, "{} ms", back - broke);
    assert!(
        replies.last().is_some_and(|x| x.rtt_ms < 5.0),
        "traffic back on the interconnect"
    );
}

/// A DNS group's drill: the guide's "partial failover" of one component. Both gateways publish
/// the record; the drill's pin of the DR answer reaches the peer, so they never fight.
#[test]
fn a_drill_of_a_dns_group_publishes_the_next_answer_holds_and_returns_and_a_dns_server_down_refuses(
) {
    use isthmus_tests::dns_bed::{serve_group, DnsBed, DR, GROUP, PRIMARY};
    if !isthmus_tests::bind::require_named() {
        return;
    }
    let long = Duration::from_secs(30);
    let mut bed = DnsBed::new("drd", None);
    for side in [&bed.clouds.aws, &bed.clouds.oci] {
        serve_group(side, &bed.key.text, Duration::from_secs(4));
    }
    let _agents = bed.clouds.start_agents();
    bed.wait_served(PRIMARY, long);
    // The first answer's start-up settling.
    std::thread::sleep(Duration::from_secs(3));
    let socket = bed.clouds.aws.fx.socket();
    let dir = bed.clouds.aws.fx.dir().join("reports");
    let dir_s = dir.to_str().unwrap().to_owned();

    // The DNS server down: the dry run of the record cannot read it, the drill is refused.
    bed.bind.stop();
    let out = netctl(
        &socket,
        &["drill", GROUP, "--hold", "3s", "--report", &dir_s],
    );
    println!("{}{}", out.stdout, out.stderr);
    assert_ne!(out.code, 0);
    let r = read_json(&report_file(&dir, "json").expect("a report of the refusal"));
    assert_eq!(r["state"], "refused", "{r:#}");
    let dry: Vec<&Value> = r["prechecks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"].as_str().unwrap().starts_with("dry run"))
        .collect();
    assert_eq!(dry.len(), 1, "{:#}", r["prechecks"]);
    assert_eq!(dry[0]["ok"], false, "{:#}", dry[0]);
    for f in std::fs::read_dir(&dir).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    bed.bind.start_again();
    bed.wait_served(PRIMARY, long);

    // The drill: DR answer served during the hold, the primary after it, at both gateways.
    let mut child = std::process::Command::new(isthmus_tests::bin("netctl"))
        .args(["--socket", socket.to_str().unwrap(), "drill", GROUP])
        .args(["--hold", "4s", "--rto-target", "2s", "--report", &dir_s])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("netctl drill");
    let served_dr = bed.wait_served(DR, long);
    // netctl goes away mid-drill (Ctrl-C): the drill goes on inside agentd.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().expect("netctl drill");
    let mut text = String::new();
    use std::io::Read as _;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    println!("{text}");
    assert_eq!(status.code(), Some(130), "netctl drill interrupted");
    assert!(text.contains("--abort"), "{text}");
    bed.wait_served(PRIMARY, long);
    let deadline = std::time::Instant::now() + long;
    let last = loop {
        let out = netctl(&socket, &["--json", "drill", "--last", "--report", &dir_s]);
        let state = serde_json::from_str::<Value>(&out.stdout).map(|r| r["state"].clone());
        if state.is_ok_and(|s| s == "done") || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    println!("{}{}", last.stdout, last.stderr);
    assert_eq!(last.code, 0, "netctl drill --last");
    assert_eq!(
        bed.answer(),
        [PRIMARY],
        "the primary is served again after the drill"
    );
    let r = read_json(&report_file(&dir, "json").expect("a report"));
    assert_eq!(r["state"], "done", "{r:#}");
    assert_eq!(r["target"], "dns_group");
    assert_eq!(
        (r["from"].as_str(), r["to"].as_str()),
        (Some(PRIMARY), Some(DR))
    );
    let dry = r["prechecks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().unwrap().starts_with("dry run"))
        .expect("a dry run of the record");
    assert!(
        dry["ok"] == true && dry["detail"].as_str().unwrap().contains(DR),
        "{dry:#}"
    );
    // The RTO of a DNS drill: decision to the new answer verified at the server.
    let rto = r["rto_ms"].as_u64().expect("rto");
    let switch_ms = entered(&r, "switching") * 1e3;
    let served_ms =
        isthmus_tests::topology::now_ms() as f64 - served_dr.elapsed().as_millis() as f64;
    println!(
        "DNS drill: RTO {rto} ms; the test's own query (every 50 ms) saw the DR answer {:.0} ms after the switch",
        served_ms - switch_ms
    );
    assert!(rto < 2000, "rto {rto} ms");
    // The peer followed the pin: it published the DR answer too, and knew of the drill.
    let oci = bed.clouds.oci.events();
    assert!(
        oci.iter()
            .any(|e| e["kind"] == "answer_changed" && e["to"] == DR),
        "{oci:#?}"
    );
    assert!(oci.iter().any(|e| e["kind"] == "peer_drill"), "{oci:#?}");
    let conflicts = bed
        .clouds
        .aws
        .events()
        .into_iter()
        .chain(oci)
        .filter(|e| e["kind"] == "action_conflict")
        .count();
    assert_eq!(conflicts, 0, "the two gateways fought over the record");
}
