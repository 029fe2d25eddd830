//! Host settings that silently break a gateway: IP forwarding off, or strict reverse-path
//! filtering on a tunnel interface (asymmetric paths across two clouds make it drop replies).
//! Read from /proc/sys of agentd's network namespace; reported, never changed.

use std::fs;

fn read(path: &str) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Warnings for the tunnel `interfaces`; `v6` when some route group has IPv6 destinations.
pub fn forwarding_warnings(interfaces: &[String], v6: bool) -> Vec<String> {
    let mut out = Vec::new();
    if read("/proc/sys/net/ipv4/ip_forward") == Some(0) {
        out.push(
            "net.ipv4.ip_forward is 0: this host does not forward traffic between its VPC and \
             the tunnels (sysctl -w net.ipv4.ip_forward=1)"
                .to_owned(),
        );
    }
    if v6 && read("/proc/sys/net/ipv6/conf/all/forwarding") == Some(0) {
        out.push(
            "net.ipv6.conf.all.forwarding is 0: IPv6 destinations are not forwarded".to_owned(),
        );
    }
    let all = read("/proc/sys/net/ipv4/conf/all/rp_filter").unwrap_or(0);
    for iface in interfaces {
        let own = read(&format!("/proc/sys/net/ipv4/conf/{iface}/rp_filter"));
        // The kernel uses the larger of `all` and the interface's value.
        if own.map_or(all, |v| v.max(all)) == 1 {
            out.push(format!(
                "strict rp_filter on {iface}: replies arriving over another link than the \
                 request left by are dropped (sysctl -w net.ipv4.conf.{iface}.rp_filter=2, and \
                 net.ipv4.conf.all.rp_filter must not be 1)"
            ));
        }
    }
    out
}
