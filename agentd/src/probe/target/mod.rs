//! Target probes: checks of the services behind the tunnels (a database listener, a health URL, a
//! host that answers ping), as `[[probe]]` configures them.
//!
//! [`run_job`] (and `run_once`, its test form) runs one check and always comes back within the
//! probe's timeout with an [`Outcome`]: pass or fail, how long it took, and a [`Reason`] from a
//! small fixed set (it becomes a metrics label). Every failure, however odd the input, is a `Reason`, never a
//! panic or an error to handle. Each kind of check lives in its own module: [`tcp`] connects,
//! [`http`] sends one `GET` (over [`tls`] for `https`) and compares the status line with
//! `expect_status`, [`icmp`] sends one echo request. A `source` address is bound, and a link's
//! interface bound to (SO_BINDTODEVICE), before anything is sent, so a check can be pinned to
//! one link. [`schedule`] runs every probe on its own grid ([`TargetProbes`]); it only measures:
//! deciding what a failed check means is the core's business.

mod http;
pub(crate) mod icmp;
mod schedule;
mod tcp;
#[cfg(test)]
mod testutil;
mod tls;

pub use schedule::{ProbeResult, TargetProbes};

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use isthmus_config::{Probe, ProbeKind};
use rustls::ClientConfig;
use tokio::time::Instant;
use tracing::trace;

use super::job::Job;

/// At most this many checks run at once. A check is one socket and at most one timeout of waiting,
/// so 64 keeps a burst far from fd limits while a thousand probes of 500 ms still fit in a second.
pub const MAX_IN_FLIGHT: usize = 64;

/// The outcome of one probe run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// `reason == Reason::Ok`.
    pub ok: bool,
    /// From the start of the run (name lookup included) to the answer, the failure or the timeout.
    pub duration: Duration,
    pub reason: Reason,
}

impl Outcome {
    fn new(reason: Reason, duration: Duration) -> Self {
        Outcome {
            ok: reason == Reason::Ok,
            duration,
            reason,
        }
    }
}

/// Why a run passed or failed: a bounded set, each with a static label for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The check passed.
    Ok,
    /// No answer (or no connection, or no name) within the probe's timeout.
    Timeout,
    /// The host answered that nothing listens there (TCP reset).
    Refused,
    /// No route to the target, an ICMP unreachable or prohibited came back, or a local firewall
    /// refused the packet.
    Unreachable,
    /// The HTTP server answered with a status other than `expect_status`; label `bad_status`.
    BadStatus(u16),
    /// The host name did not resolve (or resolved to no address of the `source`'s family), or the
    /// target is malformed, which a validated config never is.
    Resolve,
    /// The TLS handshake failed: untrusted, expired or mismatched certificate, no common protocol.
    /// A certificate that expires is the commonest https failure: it gets its own label rather
    /// than `io`.
    Tls,
    /// Any other socket error: no permission for an ICMP socket, `source` not a local address,
    /// connection reset mid-exchange.
    Io,
    /// The answer was not an HTTP/1.x response, or its head exceeded 16 KiB.
    BadResponse,
}

impl Reason {
    /// Every label [`Reason::as_str`] can return, for metrics that pre-register their series.
    #[cfg_attr(not(test), allow(dead_code))] // for the metrics exporter
    pub const LABELS: &'static [&'static str] = &[
        "ok",
        "timeout",
        "refused",
        "unreachable",
        "bad_status",
        "resolve",
        "tls",
        "io",
        "bad_response",
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::Timeout => "timeout",
            Reason::Refused => "refused",
            Reason::Unreachable => "unreachable",
            Reason::BadStatus(_) => "bad_status",
            Reason::Resolve => "resolve",
            Reason::Tls => "tls",
            Reason::Io => "io",
            Reason::BadResponse => "bad_response",
        }
    }
}

/// Run one probe once along the routes, bounded by `probe.timeout`. Never panics on any input.
#[cfg(test)]
pub async fn run_once(probe: &Probe) -> Outcome {
    run_with(probe, None, None).await
}

/// Run a job once: its probe, over its link if it has one.
pub async fn run_job(job: &Job) -> Outcome {
    run_with(
        &job.probe,
        job.via.as_ref().map(|v| v.device.as_str()),
        None,
    )
    .await
}

/// `device`: the interface the sockets are bound to (SO_BINDTODEVICE), if any. `tls`: the
/// client config for https, or `None` for the system's trusted roots.
async fn run_with(probe: &Probe, device: Option<&str>, tls: Option<&Arc<ClientConfig>>) -> Outcome {
    let started = Instant::now();
    let from = Origin {
        source: probe.source,
        device,
    };
    let result = tokio::time::timeout(probe.timeout, check(probe, from, tls)).await;
    let reason = match result {
        Ok(Ok(())) => Reason::Ok,
        Ok(Err(reason)) => reason,
        Err(_) => Reason::Timeout,
    };
    let outcome = Outcome::new(reason, started.elapsed());
    trace!(
        probe = %probe.name,
        kind = %probe.kind,
        reason = reason.as_str(),
        duration_us = outcome.duration.as_micros() as u64,
        "target probe ran"
    );
    outcome
}

/// Where a check's packets leave from: a source address, an interface, both or neither.
#[derive(Debug, Clone, Copy, Default)]
struct Origin<'a> {
    source: Option<IpAddr>,
    device: Option<&'a str>,
}

async fn check(
    probe: &Probe,
    from: Origin<'_>,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<(), Reason> {
    match probe.kind {
        ProbeKind::Tcp => {
            let addrs = tcp::resolve(probe.target.as_str(), probe.source).await?;
            tcp::connect(&addrs, from).await.map(drop)
        }
        ProbeKind::Http => http::http(probe, from, None).await,
        ProbeKind::Https => {
            let config = match tls {
                Some(config) => Arc::clone(config),
                None => tls::system_tls()?,
            };
            http::http(probe, from, Some(config)).await
        }
        ProbeKind::Icmp => {
            let peer = tcp::resolve_host(&probe.target, probe.source).await?;
            icmp::ping(
                peer,
                from,
                &[icmp::IcmpSocket::Datagram, icmp::IcmpSocket::Raw],
            )
            .await
            .map(drop)
        }
    }
}

/// Maps a socket error to its reason.
fn io_reason(e: &io::Error) -> Reason {
    if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
        return Reason::Tls;
    }
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Reason::Refused,
        // EACCES/EPERM on connect or send: a `prohibit` route or a local firewall's reject.
        Some(
            libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::ENETDOWN
            | libc::EACCES
            | libc::EPERM,
        ) => Reason::Unreachable,
        Some(libc::ETIMEDOUT) => Reason::Timeout,
        _ => match e.kind() {
            io::ErrorKind::ConnectionRefused => Reason::Refused,
            io::ErrorKind::TimedOut => Reason::Timeout,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                Reason::Unreachable
            }
            _ => Reason::Io,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn malformed_targets_fail_without_panicking() {
        let odd = [
            "",
            ":",
            "[",
            "]:80",
            "[::1]:",
            "host:99999",
            "http://",
            "https://[::1]:0/",
            "1.2.3.4.5",
            "\u{0}",
            "ünïcödé:80",
            "http://a b/",
        ];
        // Some of these reach the resolver: in an empty namespace its queries cannot leave.
        in_own_netns("malformed_targets_fail_without_panicking", &[], || async {
            for kind in ProbeKind::ALL {
                for target in odd {
                    let mut p = probe("odd", *kind, target);
                    p.timeout = ms(300);
                    let outcome = run_once(&p).await;
                    assert!(!outcome.ok, "{kind} {target:?}");
                }
            }
        });
    }

    #[test]
    fn every_reason_has_its_own_listed_label() {
        let all = [
            Reason::Ok,
            Reason::Timeout,
            Reason::Refused,
            Reason::Unreachable,
            Reason::BadStatus(503),
            Reason::Resolve,
            Reason::Tls,
            Reason::Io,
            Reason::BadResponse,
        ];
        let labels: Vec<&str> = all.iter().map(Reason::as_str).collect();
        assert_eq!(labels, Reason::LABELS);
    }
}
