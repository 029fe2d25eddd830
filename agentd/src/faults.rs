//! Faults of the world that agentd recovers from by itself: a TUN device deleted behind its
//! back, an underlay address or interface gone, a route the kernel refuses, a state directory
//! that is full, a cloud endpoint that never answers, the wall clock stepped.
//!
//! Each fault is *raised* by the adapter that meets it, on every failed attempt, and *cleared*
//! when an attempt succeeds. Only the first raise of a fault that is not already active logs
//! (a warning naming the kind, the subject and the error) and counts
//! (`isthmus_faults_total{kind}`); the retries that follow are silent until it clears, which
//! logs once more (info, with how long it lasted). A fault is keyed by its kind and its subject
//! (a link, a route, a file, a target), so two links losing their TUN are two faults.
//!
//! [`Faults`] is a cheap clone shared by the adapters; it never blocks for long (one mutex held
//! for a set lookup) and never does I/O besides the log line.

// The adapters adopt these one by one; until all of them do, some are unused.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts};

/// What went wrong. The label is the `kind` of `isthmus_faults_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// A link's TUN device vanished (deleted, or its fd failed); the link recreates it.
    TunGone,
    /// A link's underlay socket cannot send (its local address removed, interface down).
    UnderlaySend,
    /// The kernel refused a route write (its device vanished, a table missing).
    RouteWrite,
    /// A file under the state directory could not be written (disk full, read-only).
    StateWrite,
    /// An action target's endpoint (DNS server, AWS or OCI API) did not answer in time.
    ActionTimeout,
    /// The wall clock moved against the monotonic clock (stepped back or forward).
    ClockStep,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::TunGone,
        FaultKind::UnderlaySend,
        FaultKind::RouteWrite,
        FaultKind::StateWrite,
        FaultKind::ActionTimeout,
        FaultKind::ClockStep,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FaultKind::TunGone => "tun_gone",
            FaultKind::UnderlaySend => "underlay_send",
            FaultKind::RouteWrite => "route_write",
            FaultKind::StateWrite => "state_write",
            FaultKind::ActionTimeout => "action_timeout",
            FaultKind::ClockStep => "clock_step",
        }
    }

    fn index(self) -> usize {
        FaultKind::ALL
            .iter()
            .position(|k| *k == self)
            .unwrap_or_default()
    }
}

/// The registered families: `isthmus_faults_total{kind}` (every kind at 0 from the start) and
/// `isthmus_faults_active{kind}`.
pub fn families() -> (IntCounterVec, IntGaugeVec) {
    let total = IntCounterVec::new(
        Opts::new(
            "isthmus_faults_total",
            "Faults agentd met and recovers from by itself, by kind (each counted once, not each retry).",
        ),
        &["kind"],
    )
    .expect("valid counter");
    let active = IntGaugeVec::new(
        Opts::new(
            "isthmus_faults_active",
            "Faults not yet recovered from, by kind.",
        ),
        &["kind"],
    )
    .expect("valid gauge");
    for kind in FaultKind::ALL {
        total.with_label_values(&[kind.label()]);
        active.with_label_values(&[kind.label()]);
    }
    (total, active)
}

/// One active fault, as status shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveFault {
    pub kind: FaultKind,
    pub subject: String,
    /// The error of the first attempt that failed.
    pub detail: String,
    pub since: Instant,
}

/// The active faults by (kind, subject): the first error and when it came.
type Active = BTreeMap<(FaultKind, String), (String, Instant)>;

#[derive(Clone)]
pub struct Faults {
    total: [IntCounter; FaultKind::ALL.len()],
    active_gauge: [prometheus::IntGauge; FaultKind::ALL.len()],
    active: Arc<Mutex<Active>>,
}

impl Faults {
    pub fn new(total: &IntCounterVec, active: &IntGaugeVec) -> Faults {
        Faults {
            total: FaultKind::ALL.map(|k| total.with_label_values(&[k.label()])),
            active_gauge: FaultKind::ALL.map(|k| active.with_label_values(&[k.label()])),
            active: Arc::default(),
        }
    }

    /// Unregistered families, for unit tests and tools.
    pub fn detached() -> Faults {
        let (total, active) = families();
        Faults::new(&total, &active)
    }

    /// An attempt on `subject` failed with `detail`. Returns true (and logs and counts) only
    /// when this fault was not already active.
    pub fn raise(&self, kind: FaultKind, subject: &str, detail: &dyn std::fmt::Display) -> bool {
        let key = (kind, subject.to_owned());
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if active.contains_key(&key) {
            return false;
        }
        let detail = detail.to_string();
        tracing::warn!(
            fault = kind.label(),
            subject,
            error = %detail,
            "fault: {}; retrying until it clears (logged once)",
            kind.label()
        );
        active.insert(key, (detail, crate::clock::now()));
        self.total[kind.index()].inc();
        self.active_gauge[kind.index()].inc();
        true
    }

    /// An attempt on `subject` succeeded: clears the fault if it was active (logs once).
    /// Returns how long it lasted.
    pub fn clear(&self, kind: FaultKind, subject: &str) -> Option<Duration> {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let (_, since) = active.remove(&(kind, subject.to_owned()))?;
        let lasted = crate::clock::now().saturating_duration_since(since);
        self.active_gauge[kind.index()].dec();
        tracing::info!(
            fault = kind.label(),
            subject,
            lasted_ms = lasted.as_millis() as u64,
            "fault cleared: {}",
            kind.label()
        );
        Some(lasted)
    }

    pub fn is_active(&self, kind: FaultKind, subject: &str) -> bool {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.contains_key(&(kind, subject.to_owned()))
    }

    /// The active faults, by kind and subject.
    pub fn snapshot(&self) -> Vec<ActiveFault> {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active
            .iter()
            .map(|((kind, subject), (detail, since))| ActiveFault {
                kind: *kind,
                subject: subject.clone(),
                detail: detail.clone(),
                since: *since,
            })
            .collect()
    }

    /// How often `kind` was raised since start (for tests).
    #[cfg(test)]
    pub fn count(&self, kind: FaultKind) -> u64 {
        self.total[kind.index()].get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_fault_counts_and_logs_once_until_it_clears_then_again() {
        let f = Faults::detached();
        assert!(f.raise(FaultKind::TunGone, "interconnect", &"ENODEV"));
        assert!(!f.raise(FaultKind::TunGone, "interconnect", &"ENODEV"));
        assert!(!f.raise(FaultKind::TunGone, "interconnect", &"EIO"));
        assert_eq!(f.count(FaultKind::TunGone), 1);
        // Another subject is another fault.
        assert!(f.raise(FaultKind::TunGone, "internet", &"ENODEV"));
        assert_eq!(f.count(FaultKind::TunGone), 2);
        assert_eq!(f.snapshot().len(), 2);
        assert_eq!(f.snapshot()[0].detail, "ENODEV");

        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(
            f.clear(FaultKind::TunGone, "interconnect"),
            Some(Duration::from_secs(3))
        );
        assert_eq!(f.clear(FaultKind::TunGone, "interconnect"), None);
        assert!(!f.is_active(FaultKind::TunGone, "interconnect"));
        assert!(f.raise(FaultKind::TunGone, "interconnect", &"ENODEV"));
        assert_eq!(f.count(FaultKind::TunGone), 3);
        assert_eq!(f.count(FaultKind::RouteWrite), 0);
    }

    #[test]
    fn every_kind_has_a_distinct_label_and_a_series_from_the_start() {
        let (total, active) = families();
        let mut labels: Vec<_> = FaultKind::ALL.iter().map(|k| k.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), FaultKind::ALL.len());
        use prometheus::core::Collector;
        let series: usize = total.collect().iter().map(|m| m.get_metric().len()).sum();
        assert_eq!(series, FaultKind::ALL.len());
        let series: usize = active.collect().iter().map(|m| m.get_metric().len()).sum();
        assert_eq!(series, FaultKind::ALL.len());
    }
}
