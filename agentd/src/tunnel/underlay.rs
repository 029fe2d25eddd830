//! A link's underlay socket as its worker sends on it: the [`UdpSocket`] plus one bit of state,
//! whether sends are failing because the underlay is gone (its local address removed, its
//! interface down: `EADDRNOTAVAIL`, `ENETUNREACH`, `ENETDOWN`, `EHOSTUNREACH`).
//!
//! That is a fault of the world ([`FaultKind::UnderlaySend`]), raised on the first send that
//! fails so and cleared by the first send that succeeds afterwards: logged and counted once per
//! episode, never per packet. The happy path pays one `Cell<bool>` read per send; the fault
//! table's lock is taken only on the two transitions. Other send errors (a full socket buffer,
//! a firewall's `EPERM`) are packet drops, counted as such by the caller.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;

use crate::faults::{FaultKind, Faults};

use super::udp::UdpSocket;

pub struct Underlay {
    socket: UdpSocket,
    failing: Cell<bool>,
    faults: Faults,
    /// The fault's subject: the link's name.
    link: String,
}

/// Errors that say the underlay itself is gone, not that one packet could not go.
pub fn underlay_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EADDRNOTAVAIL | libc::ENETUNREACH | libc::ENETDOWN | libc::EHOSTUNREACH)
    )
}

impl Underlay {
    /// A socket for `link`. A fault raised by the link's previous socket (the worker was
    /// recreated while the underlay was gone) is this one's to clear.
    pub fn new(socket: UdpSocket, faults: Faults, link: &str) -> Underlay {
        Underlay {
            socket,
            failing: Cell::new(faults.is_active(FaultKind::UnderlaySend, link)),
            faults,
            link: link.to_owned(),
        }
    }

    /// The socket itself, to receive on and poll.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    pub fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<()> {
        let result = self.socket.send_to(buf, to);
        self.note(&result);
        result
    }

    pub fn send_segments(&self, buf: &[u8], segment: usize, to: SocketAddr) -> io::Result<()> {
        let result = self.socket.send_segments(buf, segment, to);
        self.note(&result);
        result
    }

    /// Whether sends are failing for want of an underlay (for tests).
    #[cfg(test)]
    pub fn is_failing(&self) -> bool {
        self.failing.get()
    }

    fn note(&self, result: &io::Result<()>) {
        match result {
            Ok(()) => {
                if self.failing.get() {
                    self.failing.set(false);
                    self.faults.clear(FaultKind::UnderlaySend, &self.link);
                }
            }
            Err(e) if underlay_gone(e) => {
                if !self.failing.get() {
                    self.failing.set(true);
                    self.faults.raise(FaultKind::UnderlaySend, &self.link, e);
                }
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_of_a_missing_underlay_count_as_the_fault() {
        for errno in [
            libc::EADDRNOTAVAIL,
            libc::ENETUNREACH,
            libc::ENETDOWN,
            libc::EHOSTUNREACH,
        ] {
            assert!(underlay_gone(&io::Error::from_raw_os_error(errno)));
        }
        for errno in [libc::EAGAIN, libc::EPERM, libc::EMSGSIZE, libc::EINVAL] {
            assert!(!underlay_gone(&io::Error::from_raw_os_error(errno)));
        }
    }

    #[test]
    fn a_send_to_an_unreachable_network_raises_once_and_a_good_send_clears() {
        let faults = Faults::detached();
        let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let u = Underlay::new(socket, faults.clone(), "interconnect");
        // The errors a removed address or a downed interface give (the end-to-end tests in
        // tests/tests/faults.rs cause them for real), then a real send that goes.
        u.note(&Err(io::Error::from_raw_os_error(libc::ENETUNREACH)));
        u.note(&Err(io::Error::from_raw_os_error(libc::EADDRNOTAVAIL)));
        u.note(&Err(io::Error::from_raw_os_error(libc::EAGAIN)));
        assert!(u.is_failing());
        assert_eq!(faults.count(FaultKind::UnderlaySend), 1);
        assert!(faults.is_active(FaultKind::UnderlaySend, "interconnect"));
        let to = u.socket().local_addr().unwrap();
        u.send_to(b"x", to).unwrap();
        assert!(!u.is_failing());
        assert!(!faults.is_active(FaultKind::UnderlaySend, "interconnect"));
        u.note(&Err(io::Error::from_raw_os_error(libc::ENETDOWN)));
        assert_eq!(faults.count(FaultKind::UnderlaySend), 2);
    }
}
