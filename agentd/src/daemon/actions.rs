//! The loop's side of the actions: what every target should hold, derived from the engine's
//! decisions ([`desired`]), what the actions adapter reported about each ([`ActionBook`]), and
//! the hook runs a transition asks for ([`hook_runs`]). Nothing here does I/O: the adapter
//! (`crate::actions`) carries it out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use isthmus_actions::command::CommandSpec;
use isthmus_actions::{FailureKind, RRset, RecordRef, RecordType as Rtype, TableRoutes};
use isthmus_api::{ActionError, ActionState, ActionStatus, EventKind, EventRecord};
use isthmus_config::{Config, RecordType};

use crate::actions::{
    ActionEvent, ActionReport, Cloud, Desired, HookReport, HookRun, TargetId, Want,
};
use crate::events;

/// What each target should hold now.
///
/// - A DNS group's record holds its chosen answer (none chosen yet: the record is left alone).
/// - A cloud route table holds, for each destination of a route group listing it, this gateway
///   (`target`) while the group has an active link, else its `fallback` (or no route). Until a
///   group has been decided once (start-up), its tables are left alone: a gateway that starts
///   must not pull the VPC's traffic to the fallback for the second its links need to come up.
pub fn desired(
    config: &Config,
    answer: impl Fn(&str) -> Option<usize>,
    active: &BTreeMap<String, String>,
    decided: &BTreeSet<String>,
) -> BTreeMap<TargetId, Want> {
    let mut out = BTreeMap::new();
    for g in &config.dns_groups {
        let Some(i) = answer(&g.name) else {
            continue;
        };
        let Some(a) = g.answers.get(i) else {
            continue;
        };
        out.insert(
            TargetId::Dns(g.name.clone()),
            Want::Dns {
                provider: g.provider.clone(),
                rec: record_ref(&g.record, g.record_type),
                rrset: RRset::new(g.ttl, vec![canonical_value(&a.value, g.record_type)]),
            },
        );
    }
    let mut tables: BTreeMap<(Cloud, String), TableRoutes> = BTreeMap::new();
    for g in &config.route_groups {
        if !decided.contains(&g.name) {
            continue;
        }
        let up = active.contains_key(&g.name);
        let bindings = g
            .aws_route_tables
            .iter()
            .map(|t| (Cloud::Aws, t))
            .chain(g.oci_route_tables.iter().map(|t| (Cloud::Oci, t)));
        for (cloud, t) in bindings {
            let to = if up {
                Some(t.target.clone())
            } else {
                t.fallback.clone()
            };
            let routes = tables.entry((cloud, t.id.clone())).or_default();
            for d in &g.destinations {
                routes.insert(d.to_string(), to.clone());
            }
        }
    }
    for ((cloud, id), routes) in tables {
        out.insert(TargetId::RouteTable { cloud, id }, Want::Table { routes });
    }
    out
}

pub fn record_ref(name: &str, t: RecordType) -> RecordRef {
    let mut name = name.to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    RecordRef {
        name,
        rtype: match t {
            RecordType::A => Rtype::A,
            RecordType::Aaaa => Rtype::Aaaa,
            RecordType::Cname => Rtype::Cname,
        },
    }
}

/// Values as providers read them back: addresses in std's text, names absolute and lowercase.
pub fn canonical_value(value: &str, t: RecordType) -> String {
    match (t, value.parse::<IpAddr>()) {
        (RecordType::A | RecordType::Aaaa, Ok(ip)) => ip.to_string(),
        _ => {
            let mut v = value.to_ascii_lowercase();
            if !v.ends_with('.') {
                v.push('.');
            }
            v
        }
    }
}

/// The state of check `probe` from its latest result: over `link`, or, with `None`, wherever it
/// runs (along the routes; or, for a probe that runs over each link of a route group, passing
/// if it passes over any link: the service answers).
pub fn probe_state(
    targets: &BTreeMap<crate::probe::job::JobKey, crate::view::TargetState>,
    probe: &str,
    link: Option<&str>,
) -> isthmus_core::CheckState {
    use isthmus_core::CheckState;
    let of = |ok: bool| {
        if ok {
            CheckState::Pass
        } else {
            CheckState::Fail
        }
    };
    if let Some(link) = link {
        let key = crate::probe::job::JobKey {
            probe: probe.to_owned(),
            link: Some(link.to_owned()),
        };
        return targets
            .get(&key)
            .map_or(CheckState::Unknown, |t| of(t.last.ok));
    }
    let results: Vec<bool> = targets
        .iter()
        .filter(|(k, _)| k.probe == probe)
        .map(|(_, t)| t.last.ok)
        .collect();
    if results.iter().any(|ok| *ok) {
        CheckState::Pass
    } else if results.is_empty() {
        CheckState::Unknown
    } else {
        CheckState::Fail
    }
}

/// The verdict of several checks: Fail if any fails, Pass if all pass (or there are none),
/// else Unknown (some have no result yet).
pub fn all_pass(
    states: impl IntoIterator<Item = isthmus_core::CheckState>,
) -> isthmus_core::CheckState {
    use isthmus_core::CheckState;
    let mut out = CheckState::Pass;
    for s in states {
        match s {
            CheckState::Fail => return CheckState::Fail,
            CheckState::Unknown => out = CheckState::Unknown,
            CheckState::Pass => {}
        }
    }
    out
}

/// One target as the loop knows it.
#[derive(Debug, Clone)]
struct Entry {
    provider: String,
    desired: String,
    state: ActionState,
    observed: Option<String>,
    last_success: Option<Instant>,
    last_change: Option<Duration>,
    failures: u32,
    last_error: Option<(FailureKind, String, Instant, Duration)>,
}

/// The targets' state for status and metrics, and the events their reports make.
#[derive(Debug, Default, Clone)]
pub struct ActionBook {
    entries: BTreeMap<TargetId, Entry>,
    /// What was sent to the adapter last: each target's want and when it was decided.
    sent: BTreeMap<TargetId, Desired>,
}

impl ActionBook {
    /// The desired state is `wants` at `now`: the targets whose want changed are pending and
    /// decided now; the others keep their decision time (it measures decision → served). The
    /// complete desired state to send, if anything differs from what was sent last.
    pub fn follow(
        &mut self,
        wants: BTreeMap<TargetId, Want>,
        now: Instant,
    ) -> Option<BTreeMap<TargetId, Desired>> {
        let unchanged = wants.len() == self.sent.len()
            && wants
                .iter()
                .all(|(id, w)| self.sent.get(id).is_some_and(|d| d.want == *w));
        if unchanged {
            return None;
        }
        self.entries.retain(|id, _| wants.contains_key(id));
        for (id, want) in &wants {
            let e = self.entries.entry(id.clone()).or_insert_with(|| Entry {
                provider: String::new(),
                desired: String::new(),
                state: ActionState::Pending,
                observed: None,
                last_success: None,
                last_change: None,
                failures: 0,
                last_error: None,
            });
            if self.sent.get(id).map(|d| &d.want) != Some(want) {
                e.desired = want.describe();
                e.state = ActionState::Pending;
            }
        }
        let sent = std::mem::take(&mut self.sent);
        self.sent = wants
            .into_iter()
            .map(|(id, want)| {
                let decided = match sent.get(&id) {
                    Some(d) if d.want == want => d.decided,
                    _ => now.into(),
                };
                (id, Desired { want, decided })
            })
            .collect();
        Some(self.sent.clone())
    }

    /// A report from the adapter: update the target, and the event to log, if any.
    pub fn handle(&mut self, r: &ActionReport, now: Instant) -> Option<EventRecord> {
        let e = self.entries.get_mut(&r.target)?;
        e.provider = r.provider.clone();
        let target = r.target.to_string();
        match &r.event {
            ActionEvent::Done {
                changed,
                from,
                to,
                took,
                reasserted,
            } => {
                let was_failing = e.failures > 0;
                e.state = ActionState::InSync;
                e.observed = Some(to.clone());
                e.last_success = Some(now);
                e.failures = 0;
                e.last_error = None;
                if *changed {
                    e.last_change = Some(*took);
                }
                let reason = match (changed, reasserted) {
                    (true, false) => format!(
                        "{}: changed and verified {:.0} ms after the decision",
                        r.provider,
                        took.as_secs_f64() * 1e3
                    ),
                    (true, true) => format!(
                        "{}: somebody had changed it; put back and verified",
                        r.provider
                    ),
                    (false, _) if was_failing => format!("{}: in place again", r.provider),
                    (false, _) => format!("{}: already in place", r.provider),
                };
                let mut rec = events::record(EventKind::ActionDone, reason);
                rec.group = Some(target);
                rec.from = from.clone().filter(|_| *changed);
                rec.to = Some(to.clone());
                Some(rec)
            }
            ActionEvent::Conflict { found } => {
                let mut rec = events::record(
                    EventKind::ActionConflict,
                    format!(
                        "{}: changed by another writer since our read; reading again",
                        r.provider
                    ),
                );
                rec.group = Some(target);
                rec.from = Some(found.clone());
                Some(rec)
            }
            ActionEvent::Failed {
                kind,
                message,
                attempt,
                retry_in,
            } => {
                let repeated = e
                    .last_error
                    .as_ref()
                    .is_some_and(|(k, m, _, _)| k == kind && m == message);
                e.state = ActionState::Failing;
                e.failures = *attempt;
                e.last_error = Some((*kind, message.clone(), now, *retry_in));
                // The same failure again is counted, not logged again.
                if repeated {
                    return None;
                }
                let mut rec = events::record(
                    EventKind::ActionFailed,
                    format!(
                        "{} ({}): {message}; attempt {attempt}, retrying in {:.1} s",
                        r.provider,
                        kind.as_str(),
                        retry_in.as_secs_f64()
                    ),
                );
                rec.group = Some(target);
                rec.to = Some(e.desired.clone());
                Some(rec)
            }
        }
    }

    /// Whether every target of `ids` holds its current want, verified (true for none).
    pub fn all_in_sync(&self, ids: &[TargetId]) -> bool {
        ids.iter().all(|id| {
            self.entries
                .get(id)
                .is_some_and(|e| e.state == ActionState::InSync)
        })
    }

    pub fn status(&self, now: Instant) -> Vec<ActionStatus> {
        self.entries
            .iter()
            .map(|(id, e)| ActionStatus {
                kind: id.kind().to_string(),
                target: id.name().to_string(),
                provider: e.provider.clone(),
                state: e.state,
                desired: e.desired.clone(),
                observed: e.observed.clone(),
                last_success_seconds_ago: e
                    .last_success
                    .map(|t| now.saturating_duration_since(t).as_secs()),
                last_change_ms: e.last_change.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3),
                failures: e.failures,
                last_error: e.last_error.as_ref().map(|(k, m, at, retry)| {
                    let ago = now.saturating_duration_since(*at);
                    ActionError {
                        kind: k.as_str().to_string(),
                        message: m.clone(),
                        seconds_ago: ago.as_secs(),
                        retry_in_seconds: (e.state == ActionState::Failing)
                            .then(|| retry.saturating_sub(ago).as_secs_f64()),
                    }
                }),
            })
            .collect()
    }
}

/// A transition, for hooks.
pub struct Transition {
    /// `route_group` or `dns_group`.
    pub kind: &'static str,
    pub group: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: String,
    /// `RTT_P95_MS`, `LOSS`, `JITTER_MS` of the link left, when health caused the move.
    pub figures: Vec<(&'static str, String)>,
}

/// The runs of every hook that listens to the transition's group.
pub fn hook_runs(config: &Config, t: &Transition, time: &str) -> Vec<HookRun> {
    config
        .hooks
        .iter()
        .filter(|h| h.groups.is_empty() || h.groups.contains(&t.group))
        .map(|h| {
            let figures: Vec<(&str, String)> =
                t.figures.iter().map(|(k, v)| (*k, v.clone())).collect();
            let mut env = crate::actions::hooks::environment(
                &config.agent.name,
                &h.name,
                t.kind,
                &t.group,
                t.from.as_deref(),
                t.to.as_deref(),
                &t.reason,
                &figures,
                time,
            );
            for (k, v) in &h.environment {
                env.entry(k.clone()).or_insert_with(|| v.clone());
            }
            HookRun {
                hook: h.name.clone(),
                group: t.group.to_string(),
                spec: CommandSpec {
                    argv: h.command.clone(),
                    env,
                    timeout: h.timeout,
                    label: format!("hook {}", h.name),
                },
                retries: h.retries,
            }
        })
        .collect()
}

/// The event of a finished hook run.
pub fn hook_record(r: &HookReport) -> EventRecord {
    let kind = if r.success() {
        EventKind::HookRan
    } else {
        EventKind::HookFailed
    };
    let mut rec = events::record(kind, r.describe());
    rec.group = Some(format!("hook {}", r.hook));
    rec.link = Some(r.group.clone());
    rec
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config() -> Config {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.key");
        std::fs::write(&key, "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA=\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = r#"
[agent]
name = "gw"
[[link]]
name = "ic"
interface = "isth-ic"
private_key_file = "k.key"
listen = "192.0.2.1:51820"
peer_public_key = "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA="
peer_endpoint = "192.0.2.2:51820"
allowed_ips = ["10.2.0.0/16", "10.3.0.0/16", "10.255.0.1/32"]
addresses = ["10.255.0.0/31"]
[[probe]]
name = "db"
kind = "tcp"
target = "10.2.1.10:1522"
[aws]
region = "us-east-1"
[[route_group]]
name = "vcn"
destinations = ["10.2.0.0/16"]
links = ["ic"]
aws_route_tables = [{ id = "rtb-0a1b2c3d", target = "eni-0aaa1111", fallback = "vgw-0bbb2222" }]
[[route_group]]
name = "other"
destinations = ["10.3.0.0/16"]
links = ["ic"]
aws_route_tables = [{ id = "rtb-0a1b2c3d", target = "eni-0aaa1111", fallback = "none" }]
[[dns_provider]]
name = "corp"
kind = "rfc2136"
server = "10.1.0.53:53"
zone = "example.internal."
[[dns_group]]
name = "orders"
provider = "corp"
record = "Orders.Example.Internal"
ttl = 30
answers = [{ value = "10.2.1.10", checks = ["db"] }, { value = "10.2.2.10" }]
"#;
        isthmus_config::parse_str(
            text,
            &dir.path().join("agentd.toml"),
            &isthmus_config::LoadOptions::default(),
        )
        .unwrap_or_else(|r| panic!("{:?}", r.diagnostics))
        .config
    }

    fn table(w: &BTreeMap<TargetId, Want>) -> TableRoutes {
        let id = TargetId::RouteTable {
            cloud: Cloud::Aws,
            id: "rtb-0a1b2c3d".into(),
        };
        match w.get(&id) {
            Some(Want::Table { routes }) => routes.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_table_points_at_this_gateway_while_a_group_has_a_link_and_at_its_fallback_when_not() {
        let c = config();
        let decided: BTreeSet<String> = ["vcn".to_string(), "other".to_string()].into();
        let active: BTreeMap<String, String> = [("vcn".to_string(), "ic".to_string())].into();
        let routes = table(&desired(&c, |_| None, &active, &decided));
        // One table, both groups' destinations: one up, one failed closed without a fallback.
        assert_eq!(
            routes.get("10.2.0.0/16"),
            Some(&Some("eni-0aaa1111".to_string()))
        );
        assert_eq!(routes.get("10.3.0.0/16"), Some(&None));
        let routes = table(&desired(&c, |_| None, &BTreeMap::new(), &decided));
        assert_eq!(
            routes.get("10.2.0.0/16"),
            Some(&Some("vgw-0bbb2222".to_string()))
        );
    }

    #[test]
    fn tables_of_groups_not_yet_decided_are_left_alone() {
        let c = config();
        let w = desired(&c, |_| None, &BTreeMap::new(), &BTreeSet::new());
        assert!(w.is_empty(), "{w:?}");
        let decided: BTreeSet<String> = ["vcn".to_string()].into();
        let routes = table(&desired(&c, |_| None, &BTreeMap::new(), &decided));
        assert_eq!(routes.keys().collect::<Vec<_>>(), ["10.2.0.0/16"]);
    }

    #[test]
    fn a_dns_group_holds_its_chosen_answer_in_canonical_form_and_none_before_a_choice() {
        let c = config();
        let none = desired(&c, |_| None, &BTreeMap::new(), &BTreeSet::new());
        assert!(!none.contains_key(&TargetId::Dns("orders".into())));
        let w = desired(&c, |_| Some(1), &BTreeMap::new(), &BTreeSet::new());
        match w.get(&TargetId::Dns("orders".into())) {
            Some(Want::Dns {
                provider,
                rec,
                rrset,
            }) => {
                assert_eq!(provider, "corp");
                assert_eq!(rec.name, "orders.example.internal.");
                assert_eq!(rrset, &RRset::new(30, vec!["10.2.2.10".into()]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn checks_pass_only_when_all_pass() {
        use isthmus_core::CheckState::*;
        assert_eq!(all_pass([Pass, Pass]), Pass);
        assert_eq!(all_pass([Pass, Unknown]), Unknown);
        assert_eq!(all_pass([Unknown, Fail, Pass]), Fail);
        assert_eq!(all_pass([]), Pass);
    }
}
