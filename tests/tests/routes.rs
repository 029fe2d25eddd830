//! Kernel routes as desired state, end to end: two gateways with app namespaces behind them.
//! (A manual failover under a 10 ms ping is a failure scenario: `scenarios.rs`.)

use std::process::Command;
use std::time::{Duration, Instant};

use isthmus_tests::topology::{TwoClouds, PATHS, VPCS};
use isthmus_tests::{netctl, Agentd, Netns};
use nix::sys::signal::Signal;

const LINKS: [&str; 2] = ["interconnect", "internet"];
const UP: Duration = Duration::from_secs(15);
const PROTO: &str = "73";

fn owned_routes(ns: &Netns) -> Vec<String> {
    ns.ip(&["route", "show", "proto", PROTO])
        .lines()
        .map(|l| l.trim().to_owned())
        .collect()
}

fn app_ping(app: &Netns, count: u32, interval: &str) -> (u32, u32) {
    let out = app
        .command("ping")
        .args([
            "-c",
            &count.to_string(),
            "-i",
            interval,
            "-W",
            "1",
            "-q",
            VPCS[1].2,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // "N packets transmitted, M received"
    let nums: Vec<u32> = text
        .lines()
        .find(|l| l.contains("transmitted"))
        .map(|l| {
            l.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
    )
}

fn writes(socket: &std::path::Path) -> u64 {
    netctl(socket, &["--json", "routes"]).json()["writes"]
        .as_u64()
        .unwrap()
}

fn start(tag: &str) -> (TwoClouds, Agentd, Agentd) {
    let clouds = TwoClouds::new(tag).with_apps();
    let (aws, oci) = clouds.start_agents();
    (clouds, aws, oci)
}

#[test]
fn routes_follow_the_config_survive_an_unchanged_reload_and_return_after_deletion() {
    let (clouds, _aws, _oci) = start("ra");
    let ns = &clouds.aws.ns;
    let ic = clouds.interface(0);
    let routes = owned_routes(ns);
    assert!(
        routes
            .iter()
            .any(|r| r.starts_with(&format!("10.2.0.0/16 dev {ic} "))
                && r.contains("metric 100")
                && r.contains("mtu 1420")),
        "{routes:#?}"
    );
    assert!(
        routes
            .iter()
            .any(|r| r.starts_with("unreachable 10.2.0.0/16") && r.contains("metric 4294967040")),
        "{routes:#?}"
    );
    assert_eq!(routes.len(), 2, "{routes:#?}");
    let (sent, got) = app_ping(clouds.aws_app(), 3, "0.2");
    assert_eq!((sent, got), (3, 3), "app to db through the tunnel");

    let human = netctl(&clouds.aws.fx.socket(), &["routes"]);
    assert_eq!(human.code, 0);
    assert!(
        human.stdout.contains("(interconnect)") && human.stdout.contains("fail-closed"),
        "{}",
        human.stdout
    );
    assert!(!human.stdout.contains("DRIFT"), "{}", human.stdout);

    // A reload that changes nothing writes nothing.
    std::thread::sleep(Duration::from_millis(300));
    let before = writes(&clouds.aws.fx.socket());
    assert_eq!(netctl(&clouds.aws.fx.socket(), &["reload"]).code, 0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        writes(&clouds.aws.fx.socket()),
        before,
        "an unchanged reload wrote to netlink"
    );

    // Someone deletes the tunnel route: it is back within a second (bounded generously).
    let start = Instant::now();
    ns.ip(&[
        "route",
        "del",
        "10.2.0.0/16",
        "dev",
        &ic,
        "metric",
        "100",
        "proto",
        PROTO,
    ]);
    loop {
        if owned_routes(ns)
            .iter()
            .any(|r| r.starts_with(&format!("10.2.0.0/16 dev {ic}")))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "route not restored"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("deleted route restored after {:?}", start.elapsed());
    assert_eq!(owned_routes(ns).len(), 2);
}

#[test]
fn while_agentd_is_dead_nothing_leaks_in_clear_text_and_a_restart_adopts_its_routes() {
    let (clouds, mut aws, _oci) = start("rk");
    let ns = &clouds.aws.ns;
    // Count clear-text packets to the remote VPC leaving through the underlay.
    let leaks = clouds.count_leaks();
    let leaked = || leaks.packets();
    assert_eq!(app_ping(clouds.aws_app(), 2, "0.2"), (2, 2));

    aws.signal(Signal::SIGKILL);
    aws.wait_exit(Duration::from_secs(5));
    let routes = owned_routes(ns);
    assert_eq!(
        routes.len(),
        1,
        "only the fail-closed route survives: {routes:#?}"
    );
    assert!(routes[0].starts_with("unreachable 10.2.0.0/16"));
    let (_, got) = app_ping(clouds.aws_app(), 5, "0.2");
    assert_eq!(got, 0, "pings reached the remote VPC while agentd was dead");
    assert_eq!(
        leaked(),
        0,
        "clear-text packets left through the underlay while agentd was dead"
    );

    // Restart: routes are adopted (one of each, no duplicates) and traffic resumes.
    let _aws = Agentd::start(&clouds.aws.fx, &clouds.aws.ns);
    clouds.aws.wait_links_up(&LINKS, UP);
    clouds.aws.wait_active("remote", "interconnect", UP);
    // The OCI side failed closed too while its peer was gone; it recovers on the probes.
    clouds.oci.wait_active("remote", "interconnect", UP);
    let routes = owned_routes(ns);
    assert_eq!(routes.len(), 2, "{routes:#?}");
    assert_eq!(app_ping(clouds.aws_app(), 3, "0.2"), (3, 3));
    assert_eq!(leaked(), 0);

    // The counter can see a leak: with the route group gone from the config, agentd removes its
    // routes (the fail-closed one too), and the clear-text path opens.
    let mut doc: toml::Table = std::fs::read_to_string(clouds.aws.fx.config_path())
        .unwrap()
        .parse()
        .unwrap();
    doc.remove("route_group");
    clouds.aws.fx.write_config(&toml::to_string(&doc).unwrap());
    assert_eq!(netctl(&clouds.aws.fx.socket(), &["reload"]).code, 0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(owned_routes(ns).is_empty(), "{:#?}", owned_routes(ns));
    let _ = app_ping(clouds.aws_app(), 2, "0.2");
    assert!(
        leaked() > 0,
        "the leak counter never counts: this test would prove nothing"
    );
}

#[test]
fn a_foreign_route_to_a_remote_cidr_is_reported_and_left_alone() {
    let clouds = TwoClouds::new("rf").with_apps();
    let ns = &clouds.aws.ns;
    // The administrator's static route, same table, destination and metric as agentd's.
    ns.ip(&[
        "route",
        "add",
        "10.2.0.0/16",
        "via",
        PATHS[1].underlay[1],
        "metric",
        "100",
        "proto",
        "static",
    ]);
    let _aws = Agentd::start(&clouds.aws.fx, ns);
    let _oci = Agentd::start(&clouds.oci.fx, &clouds.oci.ns);
    clouds.aws.wait_links_up(&LINKS, UP);
    std::thread::sleep(Duration::from_millis(300));
    let all = ns.ip(&["route", "show", "10.2.0.0/16"]);
    let foreign = all
        .lines()
        .find(|l| l.contains(&format!("via {}", PATHS[1].underlay[1])));
    assert!(
        foreign.is_some_and(|l| l.contains("proto static metric 100")),
        "the administrator's route changed: {all}"
    );
    let routes = netctl(&clouds.aws.fx.socket(), &["--json", "routes"]).json();
    let conflicts = routes["conflicts"].as_array().unwrap();
    assert!(!conflicts.is_empty(), "{routes:#}");
    assert_eq!(conflicts[0]["blocking"], true);
    assert!(
        conflicts[0]["foreign"]
            .as_str()
            .unwrap()
            .contains("proto 4"),
        "{routes:#}"
    );
    let human = netctl(&clouds.aws.fx.socket(), &["routes"]);
    assert!(
        human.stdout.contains("CONFLICT 10.2.0.0/16"),
        "{}",
        human.stdout
    );
    let events = clouds.aws.events();
    assert!(
        events.iter().any(|e| e["kind"] == "route_conflict"),
        "no route_conflict event: {events:#?}"
    );
    // The fail-closed route still went in (another metric).
    assert!(owned_routes(ns)
        .iter()
        .any(|r| r.starts_with("unreachable 10.2.0.0/16")));
}

#[test]
fn a_separate_table_gets_its_policy_rule_and_both_go_when_unused() {
    let clouds = TwoClouds::new("rt");
    clouds.aws.fx.set("routes", "table", 1000.into());
    let _aws = Agentd::start(&clouds.aws.fx, &clouds.aws.ns);
    let ns = &clouds.aws.ns;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rules = ns.ip(&["rule", "show"]);
        let table = ns.ip(&["route", "show", "table", "1000", "proto", PROTO]);
        if rules.contains("5273:")
            && rules.contains("lookup 1000")
            && table.contains("unreachable 10.2.0.0/16")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rule or routes missing:\n{rules}\n{table}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(owned_routes(ns).is_empty(), "nothing in main");
    // Back to main: the table's routes and the rule go.
    let mut doc: toml::Table = std::fs::read_to_string(clouds.aws.fx.config_path())
        .unwrap()
        .parse()
        .unwrap();
    doc["routes"]
        .as_table_mut()
        .unwrap()
        .insert("table".into(), "main".into());
    clouds.aws.fx.write_config(&toml::to_string(&doc).unwrap());
    assert_eq!(netctl(&clouds.aws.fx.socket(), &["reload"]).code, 0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!ns.ip(&["rule", "show"]).contains("lookup 1000"));
    assert!(ns
        .ip(&["route", "show", "table", "1000", "proto", PROTO])
        .trim()
        .is_empty());
    assert!(owned_routes(ns)
        .iter()
        .any(|r| r.starts_with("unreachable 10.2.0.0/16")));
}

#[test]
fn a_clean_stop_keeps_only_the_fail_closed_routes_and_host_problems_are_reported() {
    // No apps: forwarding stays off on the gateways, which status must say.
    let clouds = TwoClouds::new("rs");
    let ns = &clouds.aws.ns;
    let ok = ns
        .command("sysctl")
        .args(["-qw", "net.ipv4.conf.all.rp_filter=1"])
        .status()
        .unwrap();
    assert!(ok.success());
    let mut aws = Agentd::start(&clouds.aws.fx, ns);
    let status = netctl(&clouds.aws.fx.socket(), &["--json", "status"]).json();
    let warnings: Vec<&str> = status["warnings"]
        .as_array()
        .map(|w| w.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    assert!(
        warnings.iter().any(|w| w.contains("ip_forward is 0")),
        "{warnings:#?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(&format!("strict rp_filter on {}", clouds.interface(0)))),
        "{warnings:#?}"
    );
    assert!(netctl(&clouds.aws.fx.socket(), &["status"])
        .stdout
        .contains("warning  net.ipv4.ip_forward is 0"));

    aws.signal(Signal::SIGTERM);
    assert_eq!(aws.wait_exit(Duration::from_secs(10)).code(), Some(0));
    let routes = owned_routes(ns);
    assert_eq!(routes.len(), 1, "{routes:#?}");
    assert!(
        routes[0].starts_with("unreachable 10.2.0.0/16"),
        "{routes:#?}"
    );
}

/// The IPv6 side of each VPC: (network, gateway, app).
const V6: [(&str, &str, &str); 2] = [
    ("fd00:1::/64", "fd00:1::1", "fd00:1::10"),
    ("fd00:2::/64", "fd00:2::1", "fd00:2::10"),
];

/// Dual-stack VPCs: the route group carries the remote IPv6 network too. Its route and its
/// fail-closed route go into the IPv6 table, ping6 from the app reaches the database through
/// the tunnel, follows a failover to the internet link, and the fail-closed route refuses the
/// traffic when agentd is gone.
#[test]
fn ipv6_destinations_route_through_the_tunnel_and_follow_a_failover() {
    let clouds = TwoClouds::new("r6").with_apps();
    for (i, side) in [&clouds.aws, &clouds.oci].into_iter().enumerate() {
        let app = if i == 0 {
            clouds.aws_app()
        } else {
            clouds.oci_app()
        };
        let (_, gw, host) = V6[i];
        let (gw_dev, app_dev) = (
            format!("{}g{i}", clouds.prefix),
            format!("{}p{i}", clouds.prefix),
        );
        side.ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{gw}/64"),
            "dev",
            &gw_dev,
            "nodad",
        ]);
        app.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{host}/64"),
            "dev",
            &app_dev,
            "nodad",
        ]);
        app.ip(&["-6", "route", "add", "default", "via", gw]);
        let ok = side
            .ns
            .command("sysctl")
            .args(["-qw", "net.ipv6.conf.all.forwarding=1"])
            .status()
            .unwrap();
        assert!(ok.success());
        // The remote IPv6 network joins the group and both links' allowed IPs.
        let remote = V6[1 - i].0;
        let mut doc: toml::Table = std::fs::read_to_string(side.fx.config_path())
            .unwrap()
            .parse()
            .unwrap();
        for g in doc["route_group"].as_array_mut().unwrap() {
            g["destinations"]
                .as_array_mut()
                .unwrap()
                .push(remote.into());
        }
        for l in doc["link"].as_array_mut().unwrap() {
            l["allowed_ips"].as_array_mut().unwrap().push(remote.into());
        }
        side.fx.write_config(&toml::to_string(&doc).unwrap());
    }
    let (mut aws, _oci) = clouds.start_agents();
    let routes6 = || clouds.aws.ns.ip(&["-6", "route", "show", "proto", PROTO]);
    let tun = |i: usize| clouds.interface(i);
    let ping6 = || {
        clouds
            .aws_app()
            .command("ping")
            .args(["-6", "-c", "3", "-i", "0.2", "-W", "1", V6[1].2])
            .output()
            .unwrap()
    };
    let r = routes6();
    assert!(r.contains(&format!("fd00:2::/64 dev {}", tun(0))), "{r}");
    assert!(r.contains("unreachable fd00:2::/64"), "{r}");
    // Neighbour discovery on the fresh VPC links takes a moment (DAD): retry the first ping.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ping6().status.success() {
        assert!(
            Instant::now() < deadline,
            "ping6 from the AWS app to the OCI database never went through\n{}",
            netctl(&clouds.aws.fx.socket(), &["links"]).stdout
        );
    }

    clouds.cut_interconnect(true);
    clouds.aws.wait_active("remote", "internet", UP);
    clouds.oci.wait_active("remote", "internet", UP);
    let r = routes6();
    assert!(r.contains(&format!("fd00:2::/64 dev {}", tun(1))), "{r}");
    let out = ping6();
    assert!(
        out.status.success(),
        "ping6 after the failover: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    clouds.restore_interconnect();

    // agentd gone (no clean stop): the TUNs vanish, the fail-closed route answers.
    aws.signal(Signal::SIGKILL);
    aws.wait_exit(Duration::from_secs(5));
    let r = routes6();
    assert!(r.contains("unreachable fd00:2::/64"), "{r}");
    assert!(
        !r.contains(&tun(0)) && !r.contains(&tun(1)),
        "tunnel routes left behind: {r}"
    );
    let out = ping6();
    assert!(!out.status.success(), "ping6 went through without agentd");
}

/// `netctl ARGS` on a pseudo-terminal (util-linux `script`), with `typed` as what the operator
/// types; the exit code and everything the terminal showed.
fn netctl_on_terminal(sock: &std::path::Path, args: &str, typed: &str) -> (i32, String) {
    use std::io::Write;
    let netctl = isthmus_tests::bin_dir().join("netctl");
    let cmd = format!("{} --socket {} {args}", netctl.display(), sock.display());
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs netctl on a pseudo-terminal");
    // The prompt comes after two requests to agentd: let it be read before typing.
    std::thread::sleep(Duration::from_millis(700));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(typed.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn failover_on_a_terminal_shows_what_will_change_and_moves_only_when_failover_is_typed() {
    let (clouds, _aws, _oci) = start("rt");
    clouds.aws.wait_links_up(&LINKS, UP);
    let sock = clouds.aws.fx.socket();
    let args = "failover remote --to internet --reason drill";
    let (code, text) = netctl_on_terminal(&sock, args, "no\n");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("interconnect -> internet"), "{text}");
    assert!(text.contains("Type FAILOVER"), "{text}");
    assert!(text.contains("cancelled; nothing changed"), "{text}");
    assert_eq!(clouds.aws.active("remote").as_deref(), Some("interconnect"));

    let (code, text) = netctl_on_terminal(&sock, args, "FAILOVER\n");
    assert_eq!(code, 0, "{text}");
    clouds.aws.wait_active("remote", "internet", UP);
}
