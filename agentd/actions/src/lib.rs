//! The providers that carry a failover decision beyond the kernel: DNS servers (RFC 2136),
//! Route 53, OCI DNS, cloud route tables (EC2, OCI VCN) and commands.
//!
//! A provider knows one API and nothing of failover. It offers two operations on one target:
//! **read** what is there now, and **write** the desired state *conditionally on what it read*
//! (an RFC 2136 prerequisite, a Route 53 batch that deletes the old set, an OCI `if-match` etag).
//! When the condition fails, the provider says [`FailureKind::Conflict`] and the caller reads
//! again and decides again: nothing here ever overwrites blindly. Every failure is a
//! [`Failure`] with a kind the caller branches on (retry, back off, give up) and a message for
//! the operator that never contains a secret.
//!
//! The scheduling (when to read, rate limits, retries with back-off, verification, reports) is
//! the daemon's actions adapter; providers are called from its tasks, never from the event loop.

pub mod aws;
pub mod command;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod oci;
pub mod rfc2136;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// A boxed future, so that providers can be used as trait objects.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why an operation failed; decides what the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureKind {
    /// The write's condition failed: somebody else changed the target since it was read. Read
    /// again and decide again.
    Conflict,
    /// The server refused our credentials or signature (TSIG BADSIG/BADKEY, HTTP 401/403).
    /// Retried (a key may be rolled out on the server later), but it pages a human.
    Auth,
    /// The server asks us to slow down (Route 53 `Throttling`, `PriorRequestNotComplete`,
    /// EC2 `RequestLimitExceeded`, HTTP 429). Retried with back-off.
    Throttled,
    /// No answer, a connection error, a timeout, a 5xx: the server is down or slow. Retried.
    Unavailable,
    /// The server understood and refused the request (a 4xx other than the above, an RCODE
    /// such as REFUSED): our request or its configuration is wrong. Retried, slowly.
    Rejected,
    /// Verification did not see the change in time.
    NotVerified,
}

impl FailureKind {
    /// A metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Conflict => "conflict",
            FailureKind::Auth => "auth",
            FailureKind::Throttled => "throttled",
            FailureKind::Unavailable => "unavailable",
            FailureKind::Rejected => "rejected",
            FailureKind::NotVerified => "not_verified",
        }
    }
}

/// A failed operation: what kind of failure, and what happened in words an operator can act
/// on. The message names the target and the server's answer, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

pub type ActionResult<T> = Result<T, Failure>;

/// A DNS record type this project publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordType {
    A,
    Aaaa,
    Cname,
}

impl RecordType {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Cname => "CNAME",
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One record set: name (absolute, with the trailing dot) and type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordRef {
    pub name: String,
    pub rtype: RecordType,
}

impl fmt::Display for RecordRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.rtype)
    }
}

/// The content of a record set. Values are in canonical text (addresses as `Ipv4Addr`/`Ipv6Addr`
/// print them, names absolute and lowercase) and sorted, so equal sets compare equal whatever
/// the server's order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RRset {
    pub ttl: u32,
    pub values: Vec<String>,
}

impl RRset {
    pub fn new(ttl: u32, mut values: Vec<String>) -> RRset {
        values.sort();
        values.dedup();
        RRset { ttl, values }
    }

    /// The same answer, whatever the TTL.
    pub fn same_values(&self, other: &RRset) -> bool {
        self.values == other.values
    }
}

/// A provider of DNS records (RFC 2136, Route 53, OCI DNS, a command).
pub trait DnsBackend: Send + Sync {
    /// What the authoritative server serves for `rec` now; `None` when the set does not
    /// exist. For a provider that cannot read ([`DnsBackend::readable`] false) this is not
    /// called.
    fn read<'a>(&'a self, rec: &'a RecordRef) -> BoxFut<'a, ActionResult<Option<RRset>>>;

    /// Replace the set `seen` (as [`DnsBackend::read`] returned it; `None`: absent) with `new`,
    /// in one atomic change that fails with [`FailureKind::Conflict`] if the server no longer
    /// holds `seen`. Returns when the server accepted the change (Route 53: once it is INSYNC;
    /// it may poll within the caller's timeout).
    fn replace<'a>(
        &'a self,
        rec: &'a RecordRef,
        seen: Option<&'a RRset>,
        new: &'a RRset,
    ) -> BoxFut<'a, ActionResult<()>>;

    /// Whether `read` works. A command provider cannot read: the caller writes whenever the
    /// decision differs from what it last wrote successfully.
    fn readable(&self) -> bool {
        true
    }

    /// For logs and status: e.g. `rfc2136 10.1.0.53:53`.
    fn describe(&self) -> String;
}

/// Where a cloud route points: an ENI, an instance, a gateway, an OCI private IP or DRG. The
/// id says which (`eni-…`, `i-…`, `vgw-…`, `tgw-…`, `igw-…`, `ocid1.privateip…`, `ocid1.drg…`).
pub type RouteTarget = String;

/// The routes of one cloud route table that we own: destination CIDR (canonical text, e.g.
/// `10.2.0.0/16`) → where it points (`None`: no such route). Routes to other destinations are
/// never part of it: a provider leaves them as they are.
pub type TableRoutes = BTreeMap<String, Option<RouteTarget>>;

/// What a read of a route table returned: our destinations, and an opaque version of the
/// table (the OCI etag) for the conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSeen {
    pub routes: TableRoutes,
    pub version: Option<String>,
}

/// A cloud route table (EC2, OCI VCN).
pub trait RouteTableBackend: Send + Sync {
    /// The current targets of `destinations` in the table.
    fn read<'a>(&'a self, destinations: &'a [String]) -> BoxFut<'a, ActionResult<TableSeen>>;

    /// Make the table hold `desired` for our destinations, leaving every other route alone,
    /// conditionally on `seen` where the API allows it (OCI's etag: a lost race is
    /// [`FailureKind::Conflict`]). Only the destinations whose target differs are changed.
    fn apply<'a>(
        &'a self,
        seen: &'a TableSeen,
        desired: &'a TableRoutes,
    ) -> BoxFut<'a, ActionResult<()>>;

    /// For logs and status: e.g. `aws rtb-0a1b2c3d`.
    fn describe(&self) -> String;
}
