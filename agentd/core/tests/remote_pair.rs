//! The remote side of an HA pair, on a simulated clock: gateway A's group `g` has a link to each
//! gateway of the other cloud's pair (`ic` to one, `inet` to the other; in the harness one
//! engine stands for both, and what it says of its role is rewritten per link). A routes to the
//! active gateway: a link to the standby is a last resort, a former active that has not noticed
//! yet loses to the larger revision, and with nobody active (the pair's store down) A stays put.
// The simulated clock starts at a real instant; nothing here reads the clock after that.
#![allow(clippy::disallowed_methods)]

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::{ms, secs, Net};
use isthmus_core::{AnnouncedRole, HaAnnounce, Timings};

const A: usize = 0;
const B: usize = 1;

/// What the remote gateway on each link says: (ic, inet).
type Roles = Rc<RefCell<(Option<HaAnnounce>, Option<HaAnnounce>)>>;

fn announce(role: AnnouncedRole, revision: i64) -> Option<HaAnnounce> {
    Some(HaAnnounce { role, revision })
}

fn active(revision: i64) -> Option<HaAnnounce> {
    announce(AnnouncedRole::Active, revision)
}

fn standby(revision: i64) -> Option<HaAnnounce> {
    announce(AnnouncedRole::Standby, revision)
}

fn unsure(revision: i64) -> Option<HaAnnounce> {
    announce(AnnouncedRole::Unsure, revision)
}

fn net(roles: &Roles) -> Net {
    let mut net = Net::symmetric(Timings::DEFAULT, secs(30), 7);
    let r = roles.clone();
    net.rewrite = Some(Box::new(move |from, link, p| {
        if from == B {
            let (ic, inet) = *r.borrow();
            p.tail.ha = if link == "ic" { ic } else { inet };
        }
    }));
    net
}

#[test]
fn a_link_to_the_standby_gateway_is_left_for_the_active_one_at_once() {
    // The preferred link (ic) goes to the standby.
    let roles: Roles = Rc::new(RefCell::new((standby(5), active(5))));
    let mut net = net(&roles);
    net.run_until(secs(10));
    assert_eq!(net.active(A), Some("inet"), "{:?}", net.switches(A));

    // Takeover: the gateway behind ic wins at revision 6; the old one steps down.
    *roles.borrow_mut() = (active(6), standby(6));
    let t = net.now.saturating_duration_since(net.t0);
    net.run_until(t + secs(2));
    assert_eq!(net.active(A), Some("ic"), "{:?}", net.switches(A));
    let took = net
        .switches(A)
        .last()
        .map(|s| s.0.saturating_sub(t))
        .expect("a switch");
    // The next probe on each link carries the new role (every 100 ms with the defaults).
    assert!(took <= ms(500), "A followed after {took:?}");
}

#[test]
fn of_two_gateways_announcing_active_the_larger_revision_wins() {
    // The old active (inet, revision 5) has not noticed that it lost its lease yet.
    let roles: Roles = Rc::new(RefCell::new((active(6), active(5))));
    let mut net = net(&roles);
    net.run_until(secs(10));
    assert_eq!(net.active(A), Some("ic"));
    *roles.borrow_mut() = (active(6), active(7));
    net.run_until(secs(12));
    assert_eq!(net.active(A), Some("inet"), "{:?}", net.switches(A));
}

#[test]
fn with_nobody_active_the_group_stays_where_it_is() {
    let roles: Roles = Rc::new(RefCell::new((standby(5), active(5))));
    let mut net = net(&roles);
    net.run_until(secs(10));
    assert_eq!(net.active(A), Some("inet"));
    // The pair's store is down: the active's lease runs out and it announces unsure; the other
    // stays standby (nobody can win without the store). A stays with the unsure one (fail
    // static), also past the failback wait to the preferred link.
    *roles.borrow_mut() = (standby(5), unsure(5));
    net.run_until(secs(60));
    assert_eq!(net.active(A), Some("inet"), "{:?}", net.switches(A));
    // The store is back and the other gateway won: A follows.
    *roles.borrow_mut() = (active(6), standby(6));
    net.run_until(secs(62));
    assert_eq!(net.active(A), Some("ic"), "{:?}", net.switches(A));
}

#[test]
fn without_ha_on_the_other_side_nothing_changes() {
    let roles: Roles = Rc::new(RefCell::new((None, None)));
    let mut net = net(&roles);
    net.run_until(secs(10));
    assert_eq!(net.active(A), Some("ic"));
}
