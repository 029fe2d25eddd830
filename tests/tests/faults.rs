//! Faults of the network under a running agentd (issue 13), end to end: the TUN device deleted
//! behind its back, the underlay address removed and re-added, the underlay interface down and
//! up, an owned route whose device vanished from the namespace (route writes refused with
//! ENODEV). For each: agentd recovers without help (traffic flows again, the link comes back
//! up, failback happens), logs the fault once however often it retries, counts it once in
//! `isthmus_faults_total{kind}`, logs it cleared, leaves exactly its desired routes (each once,
//! on a device that exists), leaks nothing in clear text meanwhile, and does not spin while the
//! fault lasts. Two gateways with apps behind them; the tests run one at a time (timing).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use isthmus_tests::topology::{TwoClouds, PATHS, VPCS};
use isthmus_tests::{http_get, netctl, Agentd, Netns};

static SERIAL: Mutex<()> = Mutex::new(());
const UP: Duration = Duration::from_secs(15);
/// The generous bound on every recovery: traffic back within this of the fault's end.
const RECOVERY: Duration = Duration::from_secs(10);
const PROTO: &str = "73";
/// agentd's default metrics listener, inside each gateway's namespace.
const METRICS: &str = "127.0.0.1:9477";

fn start(tag: &str) -> (TwoClouds, Agentd, Agentd) {
    let clouds = TwoClouds::new(tag).with_apps();
    let (aws, oci) = clouds.start_agents();
    (clouds, aws, oci)
}

/// agentd's routes in every table, as `ip route show table all proto 73` prints them.
fn owned_routes(ns: &Netns) -> Vec<String> {
    ns.ip(&["route", "show", "table", "all", "proto", PROTO])
        .lines()
        .map(|l| l.trim().to_owned())
        .collect()
}

/// The interfaces of the namespace by name, from `ip -o link`.
fn interfaces(ns: &Netns) -> Vec<String> {
    ns.ip(&["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// Exactly the desired routes: the tunnel route on `dev` once, the fail-closed route once, and
/// no route on a device that is gone.
fn routes_settled(ns: &Netns, dev: &str) -> Result<(), String> {
    let routes = owned_routes(ns);
    let on_dev = routes
        .iter()
        .filter(|r| r.starts_with(&format!("{} dev {dev} ", VPCS[1].0)))
        .count();
    let unreachable = routes
        .iter()
        .filter(|r| r.starts_with(&format!("unreachable {}", VPCS[1].0)))
        .count();
    let names = interfaces(ns);
    let stale = routes.iter().find(|r| {
        r.split(" dev ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .is_some_and(|d| !names.iter().any(|n| n == d))
    });
    if on_dev == 1 && unreachable == 1 && routes.len() == 2 && stale.is_none() {
        Ok(())
    } else {
        Err(format!("routes not settled on {dev}: {routes:#?}"))
    }
}

/// Wait until `check` passes; returns how long it took. Panics with its last complaint.
fn wait_for(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) -> Duration {
    let start = Instant::now();
    loop {
        match check() {
            Ok(()) => return start.elapsed(),
            Err(e) => assert!(start.elapsed() < within, "{what} within {within:?}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One ping from the AWS app to the OCI database through the tunnel, 1 s to answer.
fn app_reaches_db(clouds: &TwoClouds) -> Result<(), String> {
    let ok = clouds
        .aws_app()
        .command("ping")
        .args(["-c", "1", "-W", "1", "-q", VPCS[1].2])
        .output()
        .unwrap()
        .status
        .success();
    ok.then_some(()).ok_or_else(|| "no reply".to_owned())
}

fn scrape(ns: &Netns) -> String {
    let addr: SocketAddr = METRICS.parse().unwrap();
    let (status, body) = http_get(ns, addr, "/metrics", Duration::from_secs(5)).unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of `family{kind="KIND"}` in a scrape.
fn fault_series(text: &str, family: &str, kind: &str) -> u64 {
    let series = format!("{family}{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {series} in the scrape")) as u64
}

/// (`isthmus_faults_total`, `isthmus_faults_active`) of `kind` on the AWS gateway.
fn faults(clouds: &TwoClouds, kind: &str) -> (u64, u64) {
    let text = scrape(&clouds.aws.ns);
    (
        fault_series(&text, "isthmus_faults_total", kind),
        fault_series(&text, "isthmus_faults_active", kind),
    )
}

/// (warnings, cleared lines) of fault `kind` in agentd's log.
fn fault_lines(agentd: &Agentd, kind: &str) -> (usize, usize) {
    let log = agentd.log_text();
    let raised = log
        .lines()
        .filter(|l| l.contains(&format!("fault: {kind};")))
        .count();
    let cleared = log
        .lines()
        .filter(|l| l.contains(&format!("fault cleared: {kind}")))
        .count();
    (raised, cleared)
}

/// CPU time (user + system) agentd used during `window`, as a share of one core.
fn cpu_share(agentd: &Agentd, window: Duration) -> f64 {
    let ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", agentd.pid())).unwrap();
        // Fields after the command name (which is in parentheses): utime is 14th, stime 15th.
        let rest = stat.rsplit_once(") ").unwrap().1;
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        f[11] + f[12]
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let before = ticks();
    std::thread::sleep(window);
    (ticks() - before) as f64 / hz / window.as_secs_f64()
}

/// A busy loop takes a whole core; agentd at rest on two links takes a few per cent.
const SPINNING: f64 = 0.5;

/// The TUN's MTU and addresses, as `ip -o addr` and `ip -o link` show them.
fn tun_settings(ns: &Netns, dev: &str) -> (String, Vec<String>) {
    let link = ns.ip(&["-o", "link", "show", "dev", dev]);
    let mtu = link
        .split(" mtu ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_default()
        .to_owned();
    let addrs = ns
        .ip(&["-o", "-4", "addr", "show", "dev", dev])
        .lines()
        .filter_map(|l| l.split(" inet ").nth(1))
        .filter_map(|s| s.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    (mtu, addrs)
}

#[test]
fn a_deleted_tun_device_is_recreated_with_its_routes_and_the_fault_is_logged_and_counted_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (clouds, aws, _oci) = start("fa");
    let ns = &clouds.aws.ns;
    let ic = clouds.interface(0);
    let leaks = clouds.count_leaks();
    let settings = tun_settings(ns, &ic);
    assert_eq!(faults(&clouds, "tun_gone"), (0, 0));

    // Episode 1: the device deleted; it can be created again at once.
    let deleted = Instant::now();
    ns.ip(&["link", "del", "dev", &ic]);
    let recreated = wait_for("the TUN device recreated", RECOVERY, || {
        let names = interfaces(ns);
        if names.contains(&ic) {
            Ok(())
        } else {
            Err(format!("{ic} missing: {names:?}"))
        }
    });
    assert_eq!(tun_settings(ns, &ic), settings, "same MTU and addresses");
    let routed = wait_for("the routes back on the new device", RECOVERY, || {
        routes_settled(ns, &ic)
    });
    let traffic = wait_for("traffic through the tunnel", RECOVERY, || {
        app_reaches_db(&clouds)
    });
    clouds.aws.wait_health("interconnect", "up", UP);
    clouds.aws.wait_active("remote", "interconnect", UP);
    println!(
        "TUN deleted: recreated after {:?}, routes back after {:?}, traffic after {:?} \
         (total {:?})",
        recreated,
        recreated + routed,
        recreated + routed + traffic,
        deleted.elapsed()
    );
    assert_eq!(
        fault_lines(&aws, "tun_gone"),
        (1, 1),
        "one warning, one clear"
    );
    assert_eq!(faults(&clouds, "tun_gone"), (1, 0));

    // Episode 2: the device deleted while it cannot be made again (the link's underlay address
    // is gone, which a link needs to start): retries are paced, not a busy loop, and silent.
    let dev = clouds.underlay_interfaces(0)[0].clone();
    let underlay = format!("{}/24", PATHS[0].underlay[0]);
    ns.ip(&["addr", "del", &underlay, "dev", &dev]);
    ns.ip(&["link", "del", "dev", &ic]);
    std::thread::sleep(Duration::from_millis(500));
    let cpu = cpu_share(&aws, Duration::from_secs(3));
    println!(
        "while the TUN cannot be recreated: agentd uses {:.1}% of a core",
        cpu * 100.0
    );
    assert!(
        cpu < SPINNING,
        "agentd spins while the TUN cannot be recreated: {cpu:.2} of a core"
    );
    assert_eq!(faults(&clouds, "tun_gone"), (2, 1));
    assert_eq!(
        fault_lines(&aws, "tun_gone"),
        (2, 1),
        "retries are not logged"
    );
    let status = netctl(&clouds.aws.fx.socket(), &["status"]).stdout;
    assert!(
        status.contains("fault    tun_gone interconnect for "),
        "netctl status shows the fault: {status}"
    );
    clouds.aws.wait_active("remote", "internet", UP);
    // A retry looks for the underlay before it makes a device: none is made and deleted again.
    assert!(!interfaces(ns).contains(&ic), "{:?}", interfaces(ns));
    assert!(
        owned_routes(ns)
            .iter()
            .all(|r| !r.contains(&format!("dev {ic} "))),
        "a route on the device that is gone: {:#?}",
        owned_routes(ns)
    );

    let restored = Instant::now();
    ns.ip(&["addr", "add", &underlay, "dev", &dev]);
    wait_for("the TUN device recreated", RECOVERY, || {
        interfaces(ns)
            .contains(&ic)
            .then_some(())
            .ok_or_else(|| "missing".to_owned())
    });
    clouds.aws.wait_health("interconnect", "up", RECOVERY);
    clouds.aws.wait_active("remote", "interconnect", RECOVERY);
    let back = restored.elapsed();
    wait_for("the routes back on the new device", RECOVERY, || {
        routes_settled(ns, &ic)
    });
    wait_for("traffic through the tunnel", RECOVERY, || {
        app_reaches_db(&clouds)
    });
    println!("underlay address back: link up and failed back after {back:?}");
    assert!(
        back < RECOVERY + Duration::from_secs(5),
        "failback took {back:?}"
    );
    assert_eq!(fault_lines(&aws, "tun_gone"), (2, 2));
    assert_eq!(faults(&clouds, "tun_gone"), (2, 0));
    let status = netctl(&clouds.aws.fx.socket(), &["status"]).stdout;
    assert!(
        !status.contains("fault "),
        "a cleared fault in netctl status: {status}"
    );
    assert_eq!(
        faults(&clouds, "underlay_send").1,
        0,
        "underlay fault cleared"
    );
    assert_eq!(
        leaks.packets(),
        0,
        "clear text leaked while the TUN was gone"
    );
}

/// Cut the AWS gateway's interconnect underlay with `cut`, hold it `hold`, undo it with
/// `restore`, and check the fault `underlay_send` through it all.
fn underlay_fault(tag: &str, what: &str, cut: &[&str], restore: &[&str]) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (clouds, aws, _oci) = start(tag);
    let ns = &clouds.aws.ns;
    let ic = clouds.interface(0);
    let dev = clouds.underlay_interfaces(0)[0].clone();
    let leaks = clouds.count_leaks();
    let fill = |args: &[&str]| -> Vec<String> {
        args.iter()
            .map(|a| {
                a.replace("{dev}", &dev)
                    .replace("{addr}", &format!("{}/24", PATHS[0].underlay[0]))
            })
            .collect()
    };
    assert_eq!(faults(&clouds, "underlay_send"), (0, 0));

    let (cut, restore) = (fill(cut), fill(restore));
    ns.ip(&cut.iter().map(String::as_str).collect::<Vec<_>>());
    let failed_over = wait_for("failover to the internet link", UP, || {
        match clouds.aws.active("remote").as_deref() {
            Some("internet") => Ok(()),
            other => Err(format!("active {other:?}")),
        }
    });
    // Probes and handshakes keep trying (and failing) on the interconnect meanwhile.
    let cpu = cpu_share(&aws, Duration::from_secs(3));
    assert!(
        cpu < SPINNING,
        "agentd spins while the underlay is gone: {cpu:.2} of a core"
    );
    assert_eq!(faults(&clouds, "underlay_send"), (1, 1));
    assert_eq!(
        fault_lines(&aws, "underlay_send"),
        (1, 0),
        "retries are not logged"
    );
    let during = app_reaches_db(&clouds);
    assert!(
        during.is_ok(),
        "no traffic over the internet link meanwhile"
    );

    let restored = Instant::now();
    ns.ip(&restore.iter().map(String::as_str).collect::<Vec<_>>());
    clouds.aws.wait_health("interconnect", "up", RECOVERY);
    let up = restored.elapsed();
    clouds.aws.wait_active("remote", "interconnect", RECOVERY);
    let back = restored.elapsed();
    wait_for("the routes on the interconnect", RECOVERY, || {
        routes_settled(ns, &ic)
    });
    wait_for("traffic through the tunnel", RECOVERY, || {
        app_reaches_db(&clouds)
    });
    println!(
        "{what}: failover after {failed_over:?}; after the restore the link was up after \
         {up:?} and failed back after {back:?} (failback_after 3 s); agentd used {:.1}% of a \
         core meanwhile",
        cpu * 100.0
    );
    assert_eq!(
        fault_lines(&aws, "underlay_send"),
        (1, 1),
        "one warning, one clear"
    );
    assert_eq!(faults(&clouds, "underlay_send"), (1, 0));
    assert_eq!(
        faults(&clouds, "tun_gone"),
        (0, 0),
        "the TUN was never lost"
    );
    assert_eq!(leaks.packets(), 0, "clear text leaked");
}

#[test]
fn the_underlay_address_removed_and_re_added_is_one_fault_and_the_link_fails_back() {
    underlay_fault(
        "fb",
        "underlay address removed",
        &["addr", "del", "{addr}", "dev", "{dev}"],
        &["addr", "add", "{addr}", "dev", "{dev}"],
    );
}

#[test]
fn the_underlay_interface_down_and_up_is_one_fault_and_the_link_fails_back() {
    underlay_fault(
        "fc",
        "underlay interface down",
        &["link", "set", "dev", "{dev}", "down"],
        &["link", "set", "dev", "{dev}", "up"],
    );
}

#[test]
fn a_tun_device_moved_out_of_the_namespace_leaves_no_stale_route_and_is_recreated() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (clouds, aws, _oci) = start("fd");
    let ns = &clouds.aws.ns;
    let ic = clouds.interface(0);
    let leaks = clouds.count_leaks();
    let elsewhere = Netns::new("fx");

    // The device leaves agentd's namespace with its fd still working: the kernel flushes the
    // owned route on it, and every write of that route (on the old index) is refused with
    // ENODEV until the links adapter notices and recreates the device.
    let moved = Instant::now();
    ns.ip(&["link", "set", "dev", &ic, "netns", elsewhere.name()]);
    let recreated = wait_for("the TUN device recreated", RECOVERY, || {
        interfaces(ns)
            .contains(&ic)
            .then_some(())
            .ok_or_else(|| "missing".to_owned())
    });
    wait_for("the routes on the new device", RECOVERY, || {
        routes_settled(ns, &ic)
    });
    let routed = moved.elapsed();
    wait_for("traffic through the tunnel", RECOVERY, || {
        app_reaches_db(&clouds)
    });
    let traffic = moved.elapsed();
    clouds.aws.wait_health("interconnect", "up", UP);
    clouds.aws.wait_active("remote", "interconnect", UP);
    // The old device went with the worker that held it.
    wait_for("the moved device gone", RECOVERY, || {
        let names = interfaces(&elsewhere);
        (!names.contains(&ic))
            .then_some(())
            .ok_or_else(|| format!("{names:?}"))
    });
    let (route_faults, route_active) = faults(&clouds, "route_write");
    println!(
        "TUN moved out: recreated after {recreated:?}, routes settled after {routed:?}, traffic \
         after {traffic:?}; route writes refused in {route_faults} episode(s)"
    );
    assert_eq!(fault_lines(&aws, "tun_gone"), (1, 1));
    assert_eq!(faults(&clouds, "tun_gone"), (1, 0));
    // The refused writes: one episode at most (whether the routes adapter met the vanished
    // device before the loop heard of it is a race), logged as often as counted, and cleared.
    assert!(route_faults <= 1, "route write faults: {route_faults}");
    assert_eq!(route_active, 0);
    assert_eq!(
        fault_lines(&aws, "route_write"),
        (route_faults as usize, route_faults as usize)
    );
    assert_eq!(leaks.packets(), 0, "clear text leaked");
}
