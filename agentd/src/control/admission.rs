//! Who may hold a control connection: admission per caller, decided at accept from the peer
//! credentials alone, before agentd reads a byte. No I/O and no clock: the shell in
//! `control/gate.rs` asks [`Admission::handle_connect`] and reports heads and closes.
//!
//! The model. Every connection belongs to a uid and, within it, to the process that connected
//! (SO_PEERCRED's pid). Three limits hold at all times:
//! - one uid holds at most `per_user` connections (root too: a runaway root script is the
//!   commonest flood);
//! - unprivileged callers (the read group) hold at most `max_clients - reserved` together, so
//!   that the `reserved` slots stay for root, agentd's own user and the admin group;
//! - everyone together holds at most `max_clients`.
//!
//! A caller over a limit is refused with a typed [`Refusal`], with one exception that keeps a
//! user's flooding process from locking out that same user's other processes (root's
//! `netctl status` beside a root script with 300 stalled connections): if another process of
//! the same uid holds more connections than the newcomer's process would (by two or more) and
//! one of them is still *stalled* (connected, request head not yet received), the newcomer
//! takes that connection's place and the oldest such connection is evicted. A connection whose
//! head has arrived is being served and is never evicted. The rule only moves slots from the
//! process with most towards the one with least, so two processes cannot evict each other back
//! and forth; many processes with one connection each are refused like anyone else.

use std::collections::BTreeMap;

/// The limits, fixed for the life of the listener (`[control]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_clients: usize,
    pub per_user: usize,
    /// Of `max_clients`, the slots only privileged callers may take.
    pub reserved: usize,
}

impl Limits {
    /// Slots open to unprivileged callers.
    fn open_to_all(&self) -> usize {
        self.max_clients.saturating_sub(self.reserved)
    }
}

/// Who connected, as the kernel saw it at connect().
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    /// The connecting process; 0 when unknown (e.g. from another pid namespace). All of a
    /// uid's connections of unknown origin count as one process.
    pub pid: u32,
    /// Root, agentd's own user or a member of the admin group: may take the reserved slots.
    pub privileged: bool,
}

/// One admitted connection; ids grow with time, so the smallest is the oldest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Admit(ConnId),
    /// Admitted in place of `evict`, a stalled connection of another process of the same uid
    /// that the shell must close.
    Replace {
        id: ConnId,
        evict: ConnId,
    },
    Refuse(Refusal),
}

/// Why a connection was refused; the message names the limit and the setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The caller's uid already holds `limit` connections.
    PerUser { uid: u32, limit: usize },
    /// Every slot open to the caller is taken.
    Full {
        max_clients: usize,
        reserved: usize,
        privileged: bool,
    },
}

impl Refusal {
    pub fn reason(&self) -> Reason {
        match self {
            Refusal::PerUser { .. } => Reason::PerUser,
            Refusal::Full { .. } => Reason::Full,
        }
    }

    pub fn message(&self) -> String {
        match *self {
            Refusal::PerUser { uid, limit } => format!(
                "too many control clients from uid {uid}: it already has {limit} connections \
                 open, the most one user may have ([control].max_clients_per_user); close some \
                 and retry"
            ),
            Refusal::Full {
                max_clients,
                reserved,
                privileged: false,
            } => format!(
                "too many control clients: all {} connections open to the read group are taken \
                 ([control].max_clients = {max_clients}, of which reserved_clients = {reserved} \
                 are kept for root and the admin group); retry shortly",
                max_clients - reserved
            ),
            Refusal::Full { max_clients, .. } => format!(
                "too many control clients: all {max_clients} connections are taken \
                 ([control].max_clients); retry shortly"
            ),
        }
    }
}

/// Why agentd refused or cut off a connection: the `reason` label of
/// `isthmus_control_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Over `max_clients_per_user` (503).
    PerUser,
    /// No slot open to the caller (503).
    Full,
    /// A stalled connection closed to make room for another process of its user.
    Evicted,
    /// The request head did not arrive within `head_timeout` (closed).
    HeadTimeout,
    /// The client stopped reading the response for `request_timeout` (closed).
    Stalled,
    /// Its credentials could not be read (closed).
    Credentials,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::PerUser,
        Reason::Full,
        Reason::Evicted,
        Reason::HeadTimeout,
        Reason::Stalled,
        Reason::Credentials,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::PerUser => "per_user",
            Reason::Full => "full",
            Reason::Evicted => "evicted",
            Reason::HeadTimeout => "head_timeout",
            Reason::Stalled => "stalled",
            Reason::Credentials => "credentials",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Conn {
    caller: Caller,
    head_received: bool,
}

/// The connections held and the counts the limits are checked against.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    next: u64,
    conns: BTreeMap<ConnId, Conn>,
    per_uid: BTreeMap<u32, usize>,
    per_process: BTreeMap<(u32, u32), usize>,
    unprivileged: usize,
}

impl Admission {
    pub fn new(limits: Limits) -> Admission {
        Admission {
            limits,
            next: 0,
            conns: BTreeMap::new(),
            per_uid: BTreeMap::new(),
            per_process: BTreeMap::new(),
            unprivileged: 0,
        }
    }

    /// A connection from `caller` was accepted.
    pub fn handle_connect(&mut self, caller: Caller) -> Decision {
        let Some(refusal) = self.over_limit(caller, None) else {
            return Decision::Admit(self.insert(caller));
        };
        match self.victim(caller) {
            Some(evict) if self.over_limit(caller, Some(evict)).is_none() => {
                self.remove(evict);
                Decision::Replace {
                    id: self.insert(caller),
                    evict,
                }
            }
            _ => Decision::Refuse(refusal),
        }
    }

    /// The request head of `id` arrived: it is being served and will not be evicted.
    pub fn handle_head(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.head_received = true;
        }
    }

    /// `id` was closed (or evicted: then it is gone already and this does nothing).
    pub fn handle_closed(&mut self, id: ConnId) {
        self.remove(id);
    }

    /// Connections held now.
    pub fn open(&self) -> usize {
        self.conns.len()
    }

    /// The limit `caller` would break by connecting now, were `without` closed first.
    fn over_limit(&self, caller: Caller, without: Option<ConnId>) -> Option<Refusal> {
        let gone = without.and_then(|id| self.conns.get(&id));
        let minus = |n: usize, counts: bool| n - usize::from(counts);
        let same_uid = gone.is_some_and(|c| c.caller.uid == caller.uid);
        let uid_count = self.per_uid.get(&caller.uid).copied().unwrap_or(0);
        if minus(uid_count, same_uid) >= self.limits.per_user {
            return Some(Refusal::PerUser {
                uid: caller.uid,
                limit: self.limits.per_user,
            });
        }
        let full = Refusal::Full {
            max_clients: self.limits.max_clients,
            reserved: self.limits.reserved,
            privileged: caller.privileged,
        };
        if minus(self.conns.len(), gone.is_some()) >= self.limits.max_clients {
            return Some(full);
        }
        let unprivileged_gone = gone.is_some_and(|c| !c.caller.privileged);
        if !caller.privileged
            && minus(self.unprivileged, unprivileged_gone) >= self.limits.open_to_all()
        {
            return Some(full);
        }
        None
    }

    /// The connection `caller` may take the place of: the oldest stalled connection of the
    /// process of the same uid that holds most, if that is at least two more than the
    /// newcomer's process would hold.
    fn victim(&self, caller: Caller) -> Option<ConnId> {
        let count = |pid: u32| {
            self.per_process
                .get(&(caller.uid, pid))
                .copied()
                .unwrap_or(0)
        };
        let newcomer_would_hold = count(caller.pid) + 1;
        let mut best: Option<(usize, ConnId)> = None;
        // In id order: the first stalled connection seen of a process is its oldest, and of
        // processes holding as many, the one stalled longest wins.
        for (id, conn) in &self.conns {
            let c = conn.caller;
            if c.uid != caller.uid || c.pid == caller.pid || conn.head_received {
                continue;
            }
            let held = count(c.pid);
            if held > newcomer_would_hold && best.is_none_or(|(most, _)| held > most) {
                best = Some((held, *id));
            }
        }
        best.map(|(_, id)| id)
    }

    fn insert(&mut self, caller: Caller) -> ConnId {
        let id = ConnId(self.next);
        self.next += 1;
        self.conns.insert(
            id,
            Conn {
                caller,
                head_received: false,
            },
        );
        *self.per_uid.entry(caller.uid).or_default() += 1;
        *self
            .per_process
            .entry((caller.uid, caller.pid))
            .or_default() += 1;
        if !caller.privileged {
            self.unprivileged += 1;
        }
        id
    }

    fn remove(&mut self, id: ConnId) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        let caller = conn.caller;
        decrement(&mut self.per_uid, caller.uid);
        decrement(&mut self.per_process, (caller.uid, caller.pid));
        if !caller.privileged {
            self.unprivileged -= 1;
        }
    }
}

/// Count one down; a count of zero is removed, so the maps hold only who holds something.
fn decrement<K: Ord>(counts: &mut BTreeMap<K, usize>, key: K) {
    if let Some(n) = counts.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Limits = Limits {
        max_clients: 128,
        per_user: 32,
        reserved: 16,
    };
    const ROOT: u32 = 0;
    const READER: u32 = 1000;
    const ADMIN: u32 = 1001;

    fn root(pid: u32) -> Caller {
        Caller {
            uid: ROOT,
            pid,
            privileged: true,
        }
    }
    fn reader(uid: u32, pid: u32) -> Caller {
        Caller {
            uid,
            pid,
            privileged: false,
        }
    }

    fn admitted(d: Decision) -> ConnId {
        match d {
            Decision::Admit(id) => id,
            other => panic!("expected admission, got {other:?}"),
        }
    }

    fn fill(a: &mut Admission, caller: Caller, n: usize) -> Vec<ConnId> {
        (0..n).map(|_| admitted(a.handle_connect(caller))).collect()
    }

    #[test]
    fn reasons_are_listed_in_their_order_with_distinct_labels() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{reason:?}");
        }
        let labels: std::collections::BTreeSet<_> = Reason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Reason::ALL.len());
    }

    #[test]
    fn one_process_gets_its_users_share_and_is_refused_beyond_it() {
        let mut a = Admission::new(DEFAULTS);
        fill(&mut a, reader(READER, 10), 32);
        let refused = a.handle_connect(reader(READER, 10));
        assert_eq!(
            refused,
            Decision::Refuse(Refusal::PerUser {
                uid: READER,
                limit: 32
            })
        );
        let Decision::Refuse(r) = refused else {
            unreachable!()
        };
        assert!(r.message().contains("32 connections"), "{}", r.message());
        assert!(
            r.message().contains("max_clients_per_user"),
            "{}",
            r.message()
        );
        // Another user is not affected.
        admitted(a.handle_connect(reader(READER + 1, 11)));
    }

    #[test]
    fn the_33rd_connection_of_a_user_with_one_per_process_is_refused() {
        let mut a = Admission::new(DEFAULTS);
        for pid in 1..=32 {
            admitted(a.handle_connect(reader(READER, pid)));
        }
        assert!(matches!(
            a.handle_connect(reader(READER, 33)),
            Decision::Refuse(Refusal::PerUser { .. })
        ));
        assert_eq!(a.open(), 32);
    }

    #[test]
    fn roots_status_takes_the_place_of_a_stalled_connection_of_a_flooding_root_process() {
        let mut a = Admission::new(DEFAULTS);
        let flood = fill(&mut a, root(100), 32);
        // The flood's next connections are refused: it holds most.
        assert!(matches!(
            a.handle_connect(root(100)),
            Decision::Refuse(Refusal::PerUser { uid: ROOT, .. })
        ));
        // netctl, another process, gets in in place of the flood's oldest.
        let Decision::Replace { id, evict } = a.handle_connect(root(200)) else {
            panic!("netctl was not admitted");
        };
        assert_eq!(evict, flood[0]);
        a.handle_head(id);
        assert_eq!(a.open(), 32);
        // The flood cannot take it back, and a second netctl evicts the next oldest.
        assert!(matches!(a.handle_connect(root(100)), Decision::Refuse(_)));
        let Decision::Replace { evict, .. } = a.handle_connect(root(201)) else {
            panic!("the second netctl was not admitted");
        };
        assert_eq!(evict, flood[1]);
    }

    #[test]
    fn a_connection_whose_head_arrived_is_never_evicted() {
        let mut a = Admission::new(DEFAULTS);
        for id in fill(&mut a, root(100), 32) {
            a.handle_head(id);
        }
        assert!(matches!(
            a.handle_connect(root(200)),
            Decision::Refuse(Refusal::PerUser { .. })
        ));
    }

    #[test]
    fn slots_move_only_from_the_process_with_most_to_the_one_with_least() {
        let mut a = Admission::new(Limits {
            max_clients: 128,
            per_user: 4,
            reserved: 0,
        });
        fill(&mut a, reader(READER, 1), 2);
        fill(&mut a, reader(READER, 2), 2);
        // 2 against 2: neither may take from the other (it would then hold 3 against 1), but
        // a third process, which would hold 1, may take from one of them.
        assert!(matches!(
            a.handle_connect(reader(READER, 1)),
            Decision::Refuse(_)
        ));
        assert!(matches!(
            a.handle_connect(reader(READER, 3)),
            Decision::Replace { .. }
        ));
        // Now 1, 2, 1 (or 2, 1, 1): no process holds two more than another would.
        for pid in 1..=3 {
            assert!(
                matches!(a.handle_connect(reader(READER, pid)), Decision::Refuse(_)),
                "pid {pid}"
            );
        }
    }

    #[test]
    fn the_read_group_cannot_take_the_reserved_slots() {
        let mut a = Admission::new(Limits {
            max_clients: 10,
            per_user: 32,
            reserved: 4,
        });
        fill(&mut a, reader(READER, 1), 3);
        fill(&mut a, reader(READER + 1, 2), 3);
        let refused = a.handle_connect(reader(READER + 2, 3));
        let Decision::Refuse(r) = refused else {
            panic!("{refused:?}");
        };
        assert_eq!(r.reason(), Reason::Full);
        assert!(
            r.message()
                .contains("all 6 connections open to the read group"),
            "{}",
            r.message()
        );
        // Root and admins get the reserved four, then nothing more (root's being served, so
        // none can be replaced).
        for id in fill(&mut a, root(9), 2) {
            a.handle_head(id);
        }
        fill(
            &mut a,
            Caller {
                uid: ADMIN,
                pid: 8,
                privileged: true,
            },
            2,
        );
        assert!(matches!(
            a.handle_connect(root(7)),
            Decision::Refuse(Refusal::Full {
                privileged: true,
                ..
            })
        ));
    }

    #[test]
    fn a_user_filling_the_open_slots_can_still_replace_its_own_stalled_ones() {
        let mut a = Admission::new(Limits {
            max_clients: 10,
            per_user: 32,
            reserved: 4,
        });
        let hog = fill(&mut a, reader(READER, 1), 6);
        assert!(matches!(
            a.handle_connect(reader(READER + 1, 2)),
            Decision::Refuse(Refusal::Full { .. })
        ));
        assert!(matches!(
            a.handle_connect(reader(READER, 3)),
            Decision::Replace { evict, .. } if evict == hog[0]
        ));
    }

    #[test]
    fn closing_frees_the_slot() {
        let mut a = Admission::new(Limits {
            max_clients: 2,
            per_user: 1,
            reserved: 0,
        });
        let first = admitted(a.handle_connect(reader(READER, 1)));
        assert!(matches!(
            a.handle_connect(reader(READER, 1)),
            Decision::Refuse(_)
        ));
        a.handle_closed(first);
        a.handle_closed(first);
        admitted(a.handle_connect(reader(READER, 1)));
        assert_eq!(a.open(), 1);
    }

    #[test]
    fn the_acceptance_example_holds_with_the_defaults() {
        let mut a = Admission::new(DEFAULTS);
        // A root script with 300 stalled heads, a reader with 1,000 idle connections.
        let mut refused = 0;
        for _ in 0..300 {
            if matches!(a.handle_connect(root(100)), Decision::Refuse(_)) {
                refused += 1;
            }
        }
        for _ in 0..1000 {
            if matches!(a.handle_connect(reader(READER, 200)), Decision::Refuse(_)) {
                refused += 1;
            }
        }
        assert_eq!(refused, 268 + 968);
        // root's netctl, an admin's and another reader's get in.
        assert!(matches!(
            a.handle_connect(root(300)),
            Decision::Replace { .. }
        ));
        admitted(a.handle_connect(Caller {
            uid: ADMIN,
            pid: 301,
            privileged: true,
        }));
        admitted(a.handle_connect(reader(READER + 5, 302)));
    }

    /// xorshift64*: a fixed pseudo-random sequence.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    #[test]
    fn random_connects_heads_and_closes_never_break_a_limit() {
        let limits = Limits {
            max_clients: 12,
            per_user: 5,
            reserved: 3,
        };
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut a = Admission::new(limits);
        let mut open: Vec<(ConnId, Caller, bool)> = Vec::new();
        for step in 0..200_000 {
            match rng.below(10) {
                0..=5 => {
                    let uid = rng.below(4) as u32;
                    let caller = Caller {
                        uid,
                        pid: rng.below(4) as u32,
                        privileged: uid == 0,
                    };
                    match a.handle_connect(caller) {
                        Decision::Admit(id) => open.push((id, caller, false)),
                        Decision::Replace { id, evict } => {
                            let i = open.iter().position(|c| c.0 == evict).expect("known");
                            let (_, victim, head) = open.remove(i);
                            assert!(!head, "step {step}: evicted a served connection");
                            assert_eq!(victim.uid, caller.uid, "step {step}");
                            assert_ne!(victim.pid, caller.pid, "step {step}");
                            open.push((id, caller, false));
                        }
                        Decision::Refuse(_) => {}
                    }
                }
                6..=7 if !open.is_empty() => {
                    let i = rng.below(open.len() as u64) as usize;
                    a.handle_head(open[i].0);
                    open[i].2 = true;
                }
                _ if !open.is_empty() => {
                    let i = rng.below(open.len() as u64) as usize;
                    a.handle_closed(open.swap_remove(i).0);
                }
                _ => {}
            }
            assert_eq!(a.open(), open.len(), "step {step}");
            assert!(open.len() <= limits.max_clients, "step {step}");
            let unprivileged = open.iter().filter(|c| !c.1.privileged).count();
            assert!(
                unprivileged <= limits.max_clients - limits.reserved,
                "step {step}"
            );
            for uid in 0..4 {
                let n = open.iter().filter(|c| c.1.uid == uid).count();
                assert!(n <= limits.per_user, "step {step}: uid {uid} holds {n}");
            }
        }
    }
}
