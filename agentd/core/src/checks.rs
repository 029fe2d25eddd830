//! Service checks: the verdicts that the shell's checks give and that the two gateways tell
//! each other in every version-2 probe (the `SERVICE_CHECKS` TLV, docs/protocol.md).
//!
//! A probe's health says whether the tunnel carries packets; a service check says whether the
//! service behind it answers. Each gateway runs its own checks and sends its verdicts to the
//! peer, so that both decide from the same two sets of results, as they do for link health:
//! - for a route group, a link whose checks fail at either end is ranked like a degraded link
//!   ([`crate::policy`]), unless the checks fail over every usable link (then the fault is
//!   behind the tunnels, and leaving would not help);
//! - for a DNS group, each answer becomes a candidate whose "health" combines both gateways'
//!   verdicts ([`answer_health`]): passing everywhere is up, passing at one gateway only is
//!   degraded, failing everywhere is down. Two gateways that see opposite results therefore
//!   see every answer degraded and both keep the first one: they never fight.

use crate::health::Health;

/// One verdict of a service check (or of several combined).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckState {
    /// Not every check has a result yet.
    Unknown,
    Pass,
    Fail,
}

impl CheckState {
    /// The code on the wire (0 means "none" where a state is optional).
    pub fn code(self) -> u8 {
        match self {
            CheckState::Unknown => 1,
            CheckState::Pass => 2,
            CheckState::Fail => 3,
        }
    }

    /// The state of a wire code; `None` for a code that is not a state (0 included).
    pub fn from_code(code: u8) -> Option<CheckState> {
        match code {
            1 => Some(CheckState::Unknown),
            2 => Some(CheckState::Pass),
            3 => Some(CheckState::Fail),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Unknown => "unknown",
            CheckState::Pass => "pass",
            CheckState::Fail => "fail",
        }
    }

    /// The combination of several verdicts for one link: any failure fails, else any pass
    /// passes, else unknown (`None` when there is nothing to combine).
    pub fn combine(states: impl IntoIterator<Item = CheckState>) -> Option<CheckState> {
        states.into_iter().fold(None, |acc, s| match (acc, s) {
            (Some(CheckState::Fail), _) | (_, CheckState::Fail) => Some(CheckState::Fail),
            (Some(CheckState::Pass), _) | (_, CheckState::Pass) => Some(CheckState::Pass),
            _ => Some(CheckState::Unknown),
        })
    }
}

/// The most DNS groups one probe reports (the wire format's limit).
pub const MAX_DNS_GROUPS: usize = 64;
/// The most answers one DNS group has on the wire.
pub const MAX_ANSWERS: usize = 32;

/// What a gateway tells its peer about its service checks, in one probe over one link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerChecks {
    /// The sender's verdict of the route-group service checks over THIS link: `None` = no
    /// route group of the sender lists checks on this link (wire code 0).
    pub link: Option<CheckState>,
    /// For each DNS group the sender serves: (group id, the sender's own check state of each
    /// answer, in order).
    pub dns: Vec<(u32, Vec<CheckState>)>,
}

/// The id of a DNS group, the same at both gateways when they serve the same record with the
/// same answers in the same order: FNV-1a 32 over the record in lowercase without its trailing
/// dot, `"\n"`, the type in uppercase, then `"\n"` and each answer in order.
pub fn dns_group_id(record: &str, rtype: &str, answers: &[&str]) -> u32 {
    let mut h = crate::fnv::Fnv1a32::new();
    let record = record.strip_suffix('.').unwrap_or(record);
    h.write(record.to_lowercase().as_bytes());
    h.write(b"\n");
    h.write(rtype.to_uppercase().as_bytes());
    for a in answers {
        h.write(b"\n");
        h.write(a.as_bytes());
    }
    h.finish()
}

/// An answer's health from the verdicts of the gateways that reported one (`Unknown` states
/// report nothing): up if it passes at every one, down if it fails at every one, degraded if
/// the gateways disagree, unknown if none reported.
pub fn answer_health(own: CheckState, peer: Option<CheckState>) -> Health {
    let reports = [Some(own), peer]
        .into_iter()
        .flatten()
        .filter(|s| *s != CheckState::Unknown);
    let (mut pass, mut fail) = (false, false);
    for s in reports {
        pass |= s == CheckState::Pass;
        fail |= s == CheckState::Fail;
    }
    match (pass, fail) {
        (true, false) => Health::Up,
        (true, true) => Health::Degraded,
        (false, true) => Health::Down,
        (false, false) => Health::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_zero_is_no_state() {
        for s in [CheckState::Unknown, CheckState::Pass, CheckState::Fail] {
            assert_eq!(CheckState::from_code(s.code()), Some(s));
        }
        assert_eq!(CheckState::from_code(0), None);
        assert_eq!(CheckState::from_code(4), None);
    }

    #[test]
    fn a_failure_wins_then_a_pass() {
        use CheckState::*;
        assert_eq!(CheckState::combine([]), None);
        assert_eq!(CheckState::combine([Unknown]), Some(Unknown));
        assert_eq!(CheckState::combine([Unknown, Pass]), Some(Pass));
        assert_eq!(CheckState::combine([Pass, Fail, Unknown]), Some(Fail));
    }

    #[test]
    fn answer_health_combines_both_gateways() {
        use CheckState::*;
        assert_eq!(answer_health(Pass, None), Health::Up);
        assert_eq!(answer_health(Fail, None), Health::Down);
        assert_eq!(answer_health(Unknown, None), Health::Unknown);
        assert_eq!(answer_health(Pass, Some(Fail)), Health::Degraded);
        assert_eq!(answer_health(Fail, Some(Pass)), Health::Degraded);
        assert_eq!(answer_health(Fail, Some(Fail)), Health::Down);
        assert_eq!(answer_health(Unknown, Some(Pass)), Health::Up);
    }

    #[test]
    fn the_group_id_ignores_case_and_the_trailing_dot_but_not_the_answer_order() {
        let a = dns_group_id("WWW.Example.com.", "a", &["192.0.2.1", "192.0.2.2"]);
        assert_eq!(
            a,
            crate::fnv::fnv1a_32(b"www.example.com\nA\n192.0.2.1\n192.0.2.2")
        );
        assert_eq!(
            a,
            dns_group_id("www.example.com", "A", &["192.0.2.1", "192.0.2.2"])
        );
        assert_ne!(
            a,
            dns_group_id("www.example.com", "A", &["192.0.2.2", "192.0.2.1"])
        );
    }
}
