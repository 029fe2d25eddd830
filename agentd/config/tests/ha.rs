//! `[ha]`: what a gateway of a pair loads, with the defaults an operator may leave out.

use std::path::Path;
use std::time::Duration;

use isthmus_config::*;

fn load(text: &str) -> Config {
    parse_str(
        text,
        Path::new("/etc/isthmus/agentd.toml"),
        &LoadOptions::default(),
    )
    .unwrap_or_else(|r| panic!("{r}"))
    .config
}

#[test]
fn a_gateway_without_ha_is_alone() {
    assert_eq!(load("[agent]\nname = \"gw\"\n").ha, None);
}

#[test]
fn ha_loads_with_defaults() {
    let config = load(
        "[agent]\nname = \"aws-gw-a\"\n[ha]\npair = \"aws-prod\"\n\
         etcd = [\"http://10.0.1.10:2379\", \"http://etcd-2.vpc.internal:2379\"]\n",
    );
    let ha = config.ha.expect("[ha]");
    assert_eq!(ha.pair, "aws-prod");
    assert_eq!(
        ha.etcd,
        ["http://10.0.1.10:2379", "http://etcd-2.vpc.internal:2379"]
    );
    assert_eq!(ha.priority, DEFAULT_HA_PRIORITY);
    assert!(!ha.preempt);
    assert_eq!(ha.preempt_delay, DEFAULT_HA_PREEMPT_DELAY);
    assert_eq!(ha.lease_ttl, Duration::from_secs(2));
    assert_eq!(ha.margin, Duration::from_millis(500));
    assert_eq!(ha.write_deadline, Duration::from_millis(500));
    assert_eq!(ha.request_timeout, Duration::from_millis(500));
}

#[test]
fn ha_loads_every_key() {
    let config = load(
        "[agent]\nname = \"aws-gw-a\"\n[ha]\npair = \"aws-prod\"\n\
         etcd = [\"http://10.0.1.10:2379\"]\npriority = 10\npreempt = true\n\
         preempt_delay = \"5s\"\nlease_ttl = \"4s\"\nmargin = \"1s\"\n\
         write_deadline = \"800ms\"\nrequest_timeout = \"300ms\"\n",
    );
    let ha = config.ha.expect("[ha]");
    assert_eq!(ha.priority, 10);
    assert!(ha.preempt);
    assert_eq!(ha.preempt_delay, Duration::from_secs(5));
    assert_eq!(ha.lease_ttl, Duration::from_secs(4));
    assert_eq!(ha.margin, Duration::from_secs(1));
    assert_eq!(ha.write_deadline, Duration::from_millis(800));
    assert_eq!(ha.request_timeout, Duration::from_millis(300));
}
