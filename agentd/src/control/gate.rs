//! The shell around [`Admission`]: the table shared by the accept loop (which admits) and the
//! connection tasks (which report their head and their end), and the means to close a
//! connection that another one took the place of.
//!
//! Each admitted connection holds a [`Ticket`]: dropping it (the task ended, however) frees the
//! slot, so no path can leak one. An evicted connection's task is told through a oneshot
//! channel and drops its connection, which closes it. The lock is held only for a table
//! operation, never across an await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::admission::{Admission, Caller, ConnId, Decision, Limits, Refusal};

/// Refusals answered at once (each holds a descriptor for up to 0.7 s while it lets the
/// client send its head and read the 503); beyond this many, a refused connection is closed
/// unanswered, so that refusing cannot exhaust agentd's descriptors either.
const MAX_REFUSING: usize = 64;
/// Of those, at most this many for one uid: a flooding user cannot take every answer from the
/// others, whose refusals still say why.
const MAX_REFUSING_PER_USER: usize = 8;

#[derive(Debug)]
struct Inner {
    admission: Admission,
    /// How to tell each admitted connection's task that it was evicted.
    evictors: HashMap<ConnId, oneshot::Sender<()>>,
    /// Refusals being answered, per uid.
    refusing: HashMap<u32, usize>,
}

/// The control socket's admission, shared.
#[derive(Debug, Clone)]
pub struct Gate(Arc<Mutex<Inner>>);

/// What became of a connection at accept.
#[derive(Debug)]
pub enum Admitted {
    /// Serve it; `evicted` resolves with `Ok` if another connection takes its place.
    Yes {
        ticket: Ticket,
        evicted: oneshot::Receiver<()>,
        /// It took the place of another connection of its user (which is being closed).
        replaced: bool,
    },
    No(Refusal),
}

impl Gate {
    pub fn new(limits: Limits) -> Gate {
        Gate(Arc::new(Mutex::new(Inner {
            admission: Admission::new(limits),
            evictors: HashMap::new(),
            refusing: HashMap::new(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent counts (every operation is a few
        // map updates with no early exit between them): keep going rather than lock everyone out.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn admit(&self, caller: Caller) -> Admitted {
        let mut inner = self.lock();
        let (id, replaced) = match inner.admission.handle_connect(caller) {
            Decision::Admit(id) => (id, false),
            Decision::Replace { id, evict } => {
                if let Some(tell) = inner.evictors.remove(&evict) {
                    let _ = tell.send(());
                }
                (id, true)
            }
            Decision::Refuse(refusal) => return Admitted::No(refusal),
        };
        let (tell, evicted) = oneshot::channel();
        inner.evictors.insert(id, tell);
        Admitted::Yes {
            ticket: Ticket {
                gate: self.clone(),
                id,
            },
            evicted,
            replaced,
        }
    }

    /// Connections held now.
    pub fn open(&self) -> usize {
        self.lock().admission.open()
    }

    /// Room to answer a refusal of `uid`, or `None`: close it unanswered.
    pub fn answer_refusal(&self, uid: u32) -> Option<Answering> {
        let mut inner = self.lock();
        let total: usize = inner.refusing.values().sum();
        let mine = inner.refusing.entry(uid).or_default();
        if total >= MAX_REFUSING || *mine >= MAX_REFUSING_PER_USER {
            if *mine == 0 {
                inner.refusing.remove(&uid);
            }
            return None;
        }
        *mine += 1;
        Some(Answering {
            gate: self.clone(),
            uid,
        })
    }
}

/// A refusal being answered; frees its room on drop.
#[derive(Debug)]
pub struct Answering {
    gate: Gate,
    uid: u32,
}

impl Drop for Answering {
    fn drop(&mut self) {
        let mut inner = self.gate.lock();
        if let Some(n) = inner.refusing.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                inner.refusing.remove(&self.uid);
            }
        }
    }
}

/// An admitted connection's slot; freed on drop.
#[derive(Debug)]
pub struct Ticket {
    gate: Gate,
    id: ConnId,
}

impl Ticket {
    /// The request head arrived: from now on the connection is served, not evictable.
    pub fn head_received(&self) {
        self.gate.lock().admission.handle_head(self.id);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.gate.lock();
        inner.admission.handle_closed(self.id);
        inner.evictors.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(pid: u32) -> Caller {
        Caller {
            uid: 0,
            pid,
            privileged: true,
        }
    }

    #[test]
    fn an_evicted_connection_is_told_and_a_dropped_ticket_frees_its_slot() {
        let gate = Gate::new(Limits {
            max_clients: 8,
            per_user: 2,
            reserved: 0,
        });
        let Admitted::Yes {
            ticket: first,
            evicted: mut first_evicted,
            replaced: false,
        } = gate.admit(root(1))
        else {
            panic!("first not admitted")
        };
        let Admitted::Yes { ticket: second, .. } = gate.admit(root(1)) else {
            panic!("second not admitted")
        };
        second.head_received();
        assert!(matches!(gate.admit(root(1)), Admitted::No(_)));
        let Admitted::Yes {
            ticket: other,
            replaced: true,
            ..
        } = gate.admit(root(2))
        else {
            panic!("another process was not admitted")
        };
        assert_eq!(first_evicted.try_recv(), Ok(()));
        // The evicted one's task ends and drops its ticket: that changes nothing more.
        drop(first);
        assert_eq!(gate.open(), 2);
        drop((second, other));
        assert_eq!(gate.open(), 0);
    }

    #[test]
    fn a_flooding_user_cannot_take_every_refusal_answer() {
        let gate = Gate::new(Limits {
            max_clients: 1,
            per_user: 1,
            reserved: 0,
        });
        let flood: Vec<Answering> = (0..MAX_REFUSING_PER_USER)
            .map(|_| gate.answer_refusal(1000).expect("room"))
            .collect();
        assert!(gate.answer_refusal(1000).is_none());
        let other = gate.answer_refusal(1001).expect("room for another user");
        drop(other);
        drop(flood);
        // Everything is free again: the whole budget, for many users.
        let all: Vec<Answering> = (0..MAX_REFUSING as u32)
            .map(|uid| gate.answer_refusal(uid).expect("room"))
            .collect();
        assert!(gate.answer_refusal(4242).is_none());
        drop(all);
        assert!(gate.lock().refusing.is_empty());
    }

    #[test]
    fn a_connection_that_is_not_evicted_hears_nothing() {
        let gate = Gate::new(Limits {
            max_clients: 8,
            per_user: 8,
            reserved: 0,
        });
        let Admitted::Yes {
            ticket,
            mut evicted,
            ..
        } = gate.admit(root(1))
        else {
            panic!("not admitted")
        };
        assert_eq!(evicted.try_recv(), Err(oneshot::error::TryRecvError::Empty));
        drop(ticket);
        // Its sender is gone with the ticket: a closed channel, not an eviction.
        assert_eq!(
            evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        );
    }
}
