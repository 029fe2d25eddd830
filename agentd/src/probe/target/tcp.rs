//! TCP checks, and the name resolution and connecting that HTTP checks share.
//!
//! A `tcp` probe passes when a connection is accepted: the three-way handshake is the whole
//! check, nothing is sent. Targets resolve in resolver order, keeping only the `source`'s
//! family when a source is set, and are tried one after the other (no happy eyeballs: the
//! probe's timeout bounds the whole run, so a black-holed first address fails it). Socket errors
//! map to reasons through [`io_reason`]: a reset is `refused`, a missing route
//! or an ICMP unreachable is `unreachable`.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};
use tracing::trace;

use super::{io_reason, Origin, Reason};

/// The addresses of `target` (`HOST:PORT`, `[V6]:PORT`, or `(host, port)`), in resolver order,
/// keeping only those of `source`'s family when a source is set.
pub(super) async fn resolve(
    target: impl tokio::net::ToSocketAddrs,
    source: Option<IpAddr>,
) -> Result<Vec<SocketAddr>, Reason> {
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(target).await {
        Ok(addrs) => addrs
            .filter(|a| source.is_none_or(|s| s.is_ipv4() == a.is_ipv4()))
            .collect(),
        Err(e) => {
            trace!(error = %e, "probe target did not resolve");
            return Err(Reason::Resolve);
        }
    };
    if addrs.is_empty() {
        trace!("probe target resolved to no usable address");
        return Err(Reason::Resolve);
    }
    Ok(addrs)
}

/// An IP literal (brackets allowed) or the first usable address of a host name.
pub(super) async fn resolve_host(host: &str, source: Option<IpAddr>) -> Result<IpAddr, Reason> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok(ip);
    }
    let addrs = resolve((host, 0), source).await?;
    addrs.first().map(SocketAddr::ip).ok_or(Reason::Resolve)
}

/// Connects to the addresses in order; the first that accepts wins. No happy eyeballs: the
/// timeout bounds the whole run, so a black-holed first address fails the run.
pub(super) async fn connect(addrs: &[SocketAddr], from: Origin<'_>) -> Result<TcpStream, Reason> {
    let mut reason = Reason::Resolve;
    for &addr in addrs {
        match connect_one(addr, from).await {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                trace!(%addr, error = %e, "probe connect failed");
                reason = io_reason(&e);
            }
        }
    }
    Err(reason)
}

async fn connect_one(addr: SocketAddr, from: Origin<'_>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(device) = from.device {
        socket.bind_device(Some(device.as_bytes()))?;
    }
    if let Some(ip) = from.source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(addr).await
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn tcp_passes_when_the_port_accepts() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap().to_string();
        let outcome = run_once(&tcp(&target)).await;
        assert_eq!(outcome.reason, Reason::Ok);
        assert!(outcome.ok);
        assert!(outcome.duration < ms(500));
    }

    #[tokio::test]
    async fn tcp_binds_the_source_address_before_connecting() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut p = tcp(&listener.local_addr().unwrap().to_string());
        p.source = Some("127.0.0.2".parse().unwrap());
        let (outcome, accepted) = tokio::join!(run_once(&p), listener.accept());
        assert_eq!(outcome.reason, Reason::Ok);
        assert_eq!(accepted.unwrap().1.ip(), p.source.unwrap());
    }

    #[tokio::test]
    async fn a_job_over_a_link_binds_its_sockets_to_the_link_interface() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { while listener.accept().await.is_ok() {} });
        let via = |device: &str| Job {
            probe: tcp(&target),
            via: Some(crate::probe::job::Via {
                link: "l".into(),
                device: device.into(),
            }),
        };
        // Bound to the interface the target is on: passes.
        assert_eq!(run_job(&via("lo")).await.reason, Reason::Ok);
        // Bound to an interface that does not exist: the socket refuses, nothing is sent.
        assert_eq!(run_job(&via("isth-none0")).await.reason, Reason::Io);
        let mut ping = icmp("127.0.0.1");
        ping.name = "p".into();
        let job = Job {
            probe: ping,
            via: Some(crate::probe::job::Via {
                link: "l".into(),
                device: "isth-none0".into(),
            }),
        };
        assert_eq!(run_job(&job).await.reason, Reason::Io);
    }

    #[tokio::test]
    async fn tcp_to_a_closed_port_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap().to_string();
        drop(listener);
        let outcome = run_once(&tcp(&target)).await;
        assert_eq!(outcome.reason, Reason::Refused);
        assert!(!outcome.ok);
    }

    #[tokio::test]
    async fn tcp_from_a_source_that_is_not_local_is_an_io_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut p = tcp(&listener.local_addr().unwrap().to_string());
        p.source = Some("192.0.2.77".parse().unwrap());
        assert_eq!(run_once(&p).await.reason, Reason::Io);
    }

    #[tokio::test]
    async fn tcp_with_a_source_of_the_other_family_does_not_resolve() {
        let mut p = tcp("127.0.0.1:1522");
        p.source = Some("::1".parse().unwrap());
        assert_eq!(run_once(&p).await.reason, Reason::Resolve);
    }
}
