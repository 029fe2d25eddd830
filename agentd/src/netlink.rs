//! The rtnetlink adapter: interfaces and addresses (routes come with the routes issue).
//!
//! One netlink connection, driven by its own task. Every operation is idempotent: set the MTU and
//! up flag, add an address only if it is missing, so that configuring a link twice is harmless.

use std::net::IpAddr;

use anyhow::{anyhow, Context as _};
use futures_util::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::LinkAttribute;
use rtnetlink::{Handle, LinkUnspec};

#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Open the connection and spawn the task that drives it.
    pub fn connect() -> anyhow::Result<Netlink> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("opening a netlink socket")?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// The index of interface `name`, if it exists.
    pub async fn index_of(&self, name: &str) -> anyhow::Result<Option<u32>> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(Some(link.header.index)),
            Ok(None) => Ok(None),
            // ENODEV comes back as an error for a named get.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(anyhow!(e).context(format!("looking up interface {name}"))),
        }
    }

    /// Set MTU, add missing addresses, bring the interface up.
    pub async fn configure(
        &self,
        name: &str,
        mtu: u32,
        addresses: &[IpNetwork],
    ) -> anyhow::Result<u32> {
        let index = self
            .index_of(name)
            .await?
            .ok_or_else(|| anyhow!("interface {name} vanished"))?;
        let present = self.addresses_of(index).await?;
        for net in addresses {
            if present.contains(&(net.ip(), net.prefix())) {
                continue;
            }
            self.handle
                .address()
                .add(index, net.ip(), net.prefix())
                .execute()
                .await
                .with_context(|| format!("adding {net} to {name}"))?;
        }
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .mtu(mtu)
                    // Room for bursts from the TUN queue; the default 500 drops under load.
                    .txqueuelen(1000)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .with_context(|| format!("setting MTU {mtu} and up on {name}"))?;
        Ok(index)
    }

    async fn addresses_of(&self, index: u32) -> anyhow::Result<Vec<(IpAddr, u8)>> {
        let mut out = Vec::new();
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(msg) = addrs.try_next().await.context("listing addresses")? {
            if msg.header.index != index {
                continue;
            }
            for attr in &msg.attributes {
                if let AddressAttribute::Address(ip) | AddressAttribute::Local(ip) = attr {
                    out.push((*ip, msg.header.prefix_len));
                }
            }
        }
        Ok(out)
    }

    /// The interface that holds `ip` (the underlay address a link listens on), if any.
    pub async fn interface_with_address(
        &self,
        ip: IpAddr,
    ) -> anyhow::Result<Option<(u32, String)>> {
        let mut addrs = self.handle.address().get().execute();
        let mut index = None;
        while let Some(msg) = addrs.try_next().await.context("listing addresses")? {
            let holds = msg.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::Address(x) | AddressAttribute::Local(x) if *x == ip)
            });
            if holds {
                index = Some(msg.header.index);
            }
        }
        let Some(index) = index else { return Ok(None) };
        let mut links = self.handle.link().get().match_index(index).execute();
        while let Some(link) = links.try_next().await.context("looking up an interface")? {
            for attr in &link.attributes {
                if let LinkAttribute::IfName(name) = attr {
                    return Ok(Some((index, name.clone())));
                }
            }
        }
        Ok(None)
    }
}
