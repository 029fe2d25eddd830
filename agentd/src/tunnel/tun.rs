//! The TUN device of a link: created with the TUNSETIFF ioctl on `/dev/net/tun` (rtnetlink cannot
//! create TUN devices), configured afterwards through rtnetlink.
//!
//! agentd asks for `IFF_VNET_HDR` and TSO offloads, as upstream wireguard-go does: the kernel then
//! hands over TCP super-packets of up to 64 KiB with a virtio-net header, which agentd cuts into
//! wire-sized packets itself, and accepts coalesced super-packets on write. That replaces dozens
//! of read/write syscalls per 64 KiB with one. If the kernel refuses the offloads, the device
//! still works with plain packets (the header stays, always `GSO_NONE`).
//!
//! The device is not persistent: it vanishes with the process (and the kernel flushes its routes).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

/// Linux interface names are at most 15 bytes plus NUL.
const IFNAMSIZ: usize = 16;

#[repr(C)]
struct IfReqFlags {
    name: [u8; IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

pub struct TunDevice {
    file: File,
    name: String,
}

impl TunDevice {
    /// Create (or attach to) the TUN interface `name`, non-blocking, with a virtio-net header.
    pub fn create(name: &str) -> io::Result<TunDevice> {
        if name.is_empty() || name.len() >= IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {name:?} must be 1-15 bytes"),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let mut req = IfReqFlags {
            name: [0; IFNAMSIZ],
            flags: (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which IfReqFlags lays out
        // (name, then the flags union member, padded to the full size).
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
        // SAFETY: TUNSETOFFLOAD takes an unsigned long by value.
        let offload = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                offloads as libc::c_ulong,
            )
        } == 0;
        if !offload {
            tracing::warn!(interface = name, error = %io::Error::last_os_error(),
                "TUN offloads unavailable: one syscall per packet (slower)");
        }
        Ok(TunDevice {
            file,
            name: name.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Read one packet (virtio-net header first). `WouldBlock` when none is queued.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Write one packet (virtio-net header first).
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for reads of buf.len() bytes.
        let n = unsafe { libc::write(self.file.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl AsFd for TunDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
