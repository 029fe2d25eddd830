//! The lease store of an HA gateway pair ([`isthmus_core::ha`] decides; this crate talks to
//! the store). One store per cloud, reached over the VPC and never through isthmus's own
//! tunnels. etcd first ([`EtcdStore`]); the operations are few and plain, so that a
//! cloud-native store (DynamoDB conditional writes) can offer the same.
//!
//! Under a prefix (one per pair, e.g. `/isthmus/aws-prod/`) the store holds:
//!
//! - `holder`: the name of the member that holds the role, created only if absent and attached
//!   to that member's lease, so it goes when the lease expires. Its create revision is the
//!   role's *revision*: a fencing token that only grows, announced to the remote gateways.
//! - `members/<name>`: each member's published [`MemberState`] (JSON), on its own lease.

mod etcd;
#[doc(hidden)]
pub mod testing;

use std::time::Duration;

pub use etcd::EtcdStore;
pub use isthmus_core::ha::{Holder, MemberState};

/// How to reach the store and what this member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `http://host:port` of each etcd member.
    pub endpoints: Vec<String>,
    /// The pair's key prefix, ending in `/`.
    pub prefix: String,
    /// This member's name (its gateway's `[agent] name`).
    pub member: String,
    /// The lease's TTL; etcd grants at least 1.5 × its election timeout (2 s by default).
    pub lease_ttl: Duration,
    /// Every request's deadline.
    pub request_timeout: Duration,
}

/// What went wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No answer within the deadline, or no connection: the store is down or this member is
    /// cut off from it (indistinguishable, and handled the same).
    #[error("store unreachable: {0}")]
    Unreachable(String),
    /// Our lease is gone (expired or revoked): grant a new one.
    #[error("lease expired")]
    LeaseLost,
    /// The store answered with something this crate cannot read.
    #[error("store answer not understood: {0}")]
    Malformed(String),
}

/// What the store holds for the pair at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub holder: Option<Holder>,
    /// The other members' published states, by name.
    pub members: Vec<(String, MemberState)>,
    /// The store's revision at the read: watch from the next one.
    pub revision: i64,
}

/// A change seen by the watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Holder(Option<Holder>),
    /// A member's state (`None`: deleted, its lease expired).
    Member(String, Option<MemberState>),
}

/// The JSON of a member's state in the store.
#[derive(serde::Serialize, serde::Deserialize)]
struct MemberJson {
    priority: u8,
    preempt: bool,
    ready: bool,
    drained: bool,
}

impl From<&MemberState> for MemberJson {
    fn from(s: &MemberState) -> Self {
        MemberJson {
            priority: s.priority,
            preempt: s.preempt,
            ready: s.ready,
            drained: s.drained,
        }
    }
}

impl From<MemberJson> for MemberState {
    fn from(j: MemberJson) -> Self {
        MemberState {
            priority: j.priority,
            preempt: j.preempt,
            ready: j.ready,
            drained: j.drained,
        }
    }
}
