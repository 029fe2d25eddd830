//! How single values are written: names, interface names, CIDRs, addresses, endpoints, host
//! names, URLs, keywords, groups, routing tables, file modes, cloud regions, AWS resource ids,
//! OCIDs, key fingerprints and environment variable names. Each parser looks at one piece
//! of text and either returns the value or says what is wrong with it and how to write it
//! ([`Invalid`]); where the value appears and what it is for is the caller's business
//! (`validate`). Durations have their own module.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnetwork::IpNetwork;

use crate::model::{decode_key, Endpoint, GroupRef, PublicKey, MAIN_TABLE};
use crate::raw::Scalar;

/// Why a value is not acceptable, and what to write instead.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Invalid {
    pub message: String,
    pub hint: String,
}

impl Invalid {
    pub(crate) fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Invalid {
            message: message.into(),
            hint: hint.into(),
        }
    }
}

type Parsed<T> = Result<T, Invalid>;

/// Keyword enums of the model (`log_level = "info"`, `kind = "tcp"`, ...).
pub(crate) trait Keyword: Copy + 'static {
    const ALL: &'static [Self];
    fn text(&self) -> &'static str;
}

/// Names of links, probes, groups, providers and the agent: they appear in metric labels, log
/// fields and `netctl` arguments, so they stay plain.
pub(crate) fn object_name(text: &str, max: usize) -> Parsed<()> {
    let hint = format!("use 1 to {max} characters from A-Z, a-z, 0-9, '.', '_' and '-'");
    if text.is_empty() {
        return Err(Invalid::new("the name is empty", hint));
    }
    if text.chars().count() > max {
        return Err(Invalid::new(
            format!("{text:?} is longer than {max} characters"),
            hint,
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Invalid::new(format!("{text:?} contains {c:?}"), hint));
    }
    Ok(())
}

/// A Linux interface name, as the kernel's `dev_valid_name` accepts it.
pub(crate) fn ifname(text: &str) -> Parsed<()> {
    let hint = "use 1 to 15 bytes without '/', ':' or whitespace, e.g. \"isth-ic\"";
    if text.is_empty() {
        return Err(Invalid::new("the interface name is empty", hint));
    }
    if text.len() > 15 {
        return Err(Invalid::new(
            format!(
                "{text:?} is {} bytes long; Linux allows at most 15",
                text.len()
            ),
            hint,
        ));
    }
    if text == "." || text == ".." {
        return Err(Invalid::new(
            format!("{text:?} is not a valid interface name"),
            hint,
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(Invalid::new(format!("{text:?} contains {c:?}"), hint));
    }
    Ok(())
}

/// `ADDRESS/PREFIX`. The prefix is mandatory: a bare address silently meaning /32 is a trap.
pub(crate) fn cidr(text: &str) -> Parsed<IpNetwork> {
    let hint = "write an address and a prefix length, e.g. \"10.2.0.0/16\" or \"fd00::/64\"";
    let Some((addr, prefix)) = text.split_once('/') else {
        if let Ok(ip) = text.parse::<IpAddr>() {
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            return Err(Invalid::new(
                format!("{text:?} has no prefix length"),
                format!(
                    "write \"{ip}/{bits}\" for this single address, or the network it belongs to"
                ),
            ));
        }
        return Err(Invalid::new(format!("{text:?} is not a CIDR"), hint));
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| Invalid::new(format!("{addr:?} in {text:?} is not an IP address"), hint))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= max && prefix.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            Invalid::new(
                format!("{prefix:?} in {text:?} is not a prefix length (0 to {max})"),
                hint,
            )
        })?;
    IpNetwork::new(ip, prefix).map_err(|_| Invalid::new(format!("{text:?} is not a CIDR"), hint))
}

/// The network address of `net` with the same prefix (host bits cleared).
pub(crate) fn network_of(net: &IpNetwork) -> IpNetwork {
    IpNetwork::new(net.network(), net.prefix()).unwrap_or(*net)
}

pub(crate) fn ip(text: &str) -> Parsed<IpAddr> {
    text.parse().map_err(|_| {
        Invalid::new(
            format!("{text:?} is not an IP address"),
            "write an IPv4 or IPv6 address, e.g. \"10.1.0.1\" or \"fd00::1\"",
        )
    })
}

/// `IP:PORT` or `[IPv6]:PORT`; no host names (it is something to bind to).
pub(crate) fn socket_addr(text: &str) -> Parsed<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let hint = "write an address and a port, e.g. \"192.0.2.1:51820\" or \"[2001:db8::1]:51820\"";
    if let Ok(ip) = text.parse::<IpAddr>() {
        let shown = match ip {
            IpAddr::V4(_) => format!("{ip}:PORT"),
            IpAddr::V6(_) => format!("[{ip}]:PORT"),
        };
        return Err(Invalid::new(
            format!("{text:?} has no port"),
            format!("add the port: \"{shown}\""),
        ));
    }
    if let Some((host, _)) = text.rsplit_once(':') {
        if host.parse::<Ipv6Addr>().is_ok() {
            return Err(bare_ipv6(text, host));
        }
        if !host.starts_with('[') && host.parse::<IpAddr>().is_err() && dns_name(host).is_ok() {
            return Err(Invalid::new(
                format!("{text:?} is not an IP address and port"),
                format!("a host name cannot be used here; {hint}"),
            ));
        }
    }
    Err(Invalid::new(
        format!("{text:?} is not an IP address and port"),
        hint,
    ))
}

fn bare_ipv6(text: &str, host: &str) -> Invalid {
    Invalid::new(
        format!("{text:?} is ambiguous: an IPv6 address needs brackets before a port"),
        format!(
            "write \"[{host}]:{}\"",
            text.rsplit_once(':').map_or("", |(_, p)| p)
        ),
    )
}

/// `HOST:PORT` or `[IPv6]:PORT`, where HOST may be a name that agentd resolves later.
pub(crate) fn endpoint(text: &str) -> Parsed<Endpoint> {
    let hint = "write \"HOST:PORT\" or \"[IPv6]:PORT\", e.g. \"192.0.2.2:51820\" or \"gw.example.net:51820\"";
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(port_zero(text));
        }
        return Ok(Endpoint::Addr(addr));
    }
    if text.starts_with('[') {
        return Err(Invalid::new(
            format!("{text:?} is not a valid [IPv6]:PORT"),
            hint,
        ));
    }
    if text.parse::<IpAddr>().is_ok() {
        return Err(Invalid::new(format!("{text:?} has no port"), hint));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(Invalid::new(format!("{text:?} has no port"), hint));
    };
    if host.parse::<Ipv6Addr>().is_ok() {
        return Err(bare_ipv6(text, host));
    }
    let port: u16 = port.parse().map_err(|_| {
        Invalid::new(
            format!("{port:?} in {text:?} is not a port (1-65535)"),
            hint,
        )
    })?;
    if port == 0 {
        return Err(port_zero(text));
    }
    if looks_like_ipv4(host) {
        return Err(Invalid::new(
            format!("{host:?} in {text:?} is not a valid IPv4 address"),
            hint,
        ));
    }
    dns_name(host).map_err(|e| Invalid::new(format!("{text:?}: {}", e.message), e.hint))?;
    Ok(Endpoint::Host {
        host: host.to_string(),
        port,
    })
}

fn port_zero(text: &str) -> Invalid {
    Invalid::new(
        format!("{text:?} has port 0"),
        "give the real port number (1-65535)",
    )
}

fn looks_like_ipv4(host: &str) -> bool {
    !host.is_empty() && host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// A DNS name (host name or zone), with or without the final dot.
pub(crate) fn dns_name(text: &str) -> Parsed<()> {
    let hint = "write a DNS name such as \"db.example.internal\" (labels of letters, digits, '-' and '_', separated by dots)";
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.is_empty() {
        return Err(Invalid::new("the DNS name is empty", hint));
    }
    if name.len() > 253 {
        return Err(Invalid::new(
            format!("the DNS name {text:?} is longer than 253 characters"),
            hint,
        ));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(Invalid::new(
                format!("{text:?} is not a valid DNS name (label {label:?})"),
                hint,
            ));
        }
    }
    Ok(())
}

/// Whether `name` equals `zone` or lies inside it (DNS names, case-insensitive, final dot
/// optional).
pub(crate) fn dns_name_in_zone(name: &str, zone: &str) -> bool {
    let norm = |s: &str| s.trim_end_matches('.').to_ascii_lowercase();
    let (name, zone) = (norm(name), norm(zone));
    name == zone || name.ends_with(&format!(".{zone}"))
}

/// An `http://` or `https://` URL whose scheme is `scheme`.
pub(crate) fn url(text: &str, scheme: &str) -> Parsed<()> {
    let example = format!("write a URL such as \"{scheme}://10.1.2.3:8080/health\"");
    let Some(rest) = text.strip_prefix(&format!("{scheme}://")) else {
        let other = if scheme == "http" { "https" } else { "http" };
        if text.starts_with(&format!("{other}://")) {
            return Err(Invalid::new(
                format!("{text:?} is an {other} URL but the probe kind is {scheme}"),
                format!("set kind = \"{other}\", or write a URL starting with {scheme}://"),
            ));
        }
        return Err(Invalid::new(
            format!("{text:?} does not start with {scheme}://"),
            example,
        ));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let bad = |what: &str| Invalid::new(format!("{text:?} has {what}"), example.clone());
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(|| bad("an unclosed '['"))?;
        addr.parse::<Ipv6Addr>()
            .map_err(|_| bad("an invalid IPv6 address"))?;
        (None, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(host_port), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let valid = if looks_like_ipv4(host) {
            host.parse::<Ipv4Addr>().is_ok()
        } else {
            dns_name(host).is_ok()
        };
        if !valid {
            return Err(bad(&format!("an invalid host {host:?}")));
        }
    }
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad(&format!("an invalid port {port:?}")));
        }
    }
    Ok(())
}

/// An API endpoint override: an `http://` or `https://` URL.
pub(crate) fn endpoint_url(text: &str) -> Parsed<String> {
    let scheme = if text.starts_with("http://") {
        "http"
    } else {
        "https"
    };
    url(text, scheme).map_err(|e| {
        Invalid::new(
            e.message,
            "write an http:// or https:// URL, e.g. \"http://127.0.0.1:5055\"",
        )
    })?;
    Ok(text.to_string())
}

/// An AWS or OCI region name such as `us-east-1` or `us-ashburn-1`.
pub(crate) fn region(text: &str, cloud: &str, example: &str) -> Parsed<String> {
    let valid = !text.is_empty()
        && text.contains('-')
        && !text.starts_with('-')
        && !text.ends_with('-')
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(text.to_string())
    } else {
        Err(Invalid::new(
            format!("{text:?} is not an {cloud} region"),
            format!("write a region such as \"{example}\""),
        ))
    }
}

/// An AWS resource id: one of `prefixes` (`rtb`, `eni`, ...), a dash and 8 or 17 lowercase hex
/// digits (`rtb-0a1b2c3d`, `eni-0123456789abcdef0`).
pub(crate) fn aws_id(text: &str, prefixes: &[&str], what: &str) -> Parsed<String> {
    let kinds: Vec<String> = prefixes.iter().map(|p| format!("\"{p}-…\"")).collect();
    let hint = format!(
        "{what} is {}: the prefix, a dash and 8 or 17 lowercase hex digits, as the AWS console \
         shows it (e.g. \"{}-0123456789abcdef0\")",
        kinds.join(" or "),
        prefixes[0]
    );
    let Some((prefix, hex)) = text.split_once('-') else {
        return Err(Invalid::new(format!("{text:?} is not an AWS id"), hint));
    };
    if !prefixes.contains(&prefix) {
        return Err(Invalid::new(
            format!("{text:?} is not {}", kinds.join(" or ")),
            hint,
        ));
    }
    let digits = hex.len() == 8 || hex.len() == 17;
    if !digits
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(Invalid::new(
            format!("{text:?} is not a valid AWS id"),
            hint,
        ));
    }
    Ok(text.to_string())
}

/// An Oracle Cloud id, `ocid1.<type>.<realm>.[region][.future].<unique>`, of one of `types`
/// (`routetable`, `privateip`, ...).
pub(crate) fn ocid(text: &str, types: &[&str]) -> Parsed<String> {
    let expected = match types {
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
        [] => "any type".to_string(),
    };
    let example = format!(
        "\"ocid1.{}.oc1.iad.aaaa…\"",
        types.first().copied().unwrap_or("routetable")
    );
    let hint = format!(
        "copy the OCID of the {expected} from the OCI console or the oci CLI, e.g. {example}"
    );
    let Some(rest) = text.strip_prefix("ocid1.") else {
        return Err(Invalid::new(
            format!("{text:?} is not an OCID (OCIDs start with \"ocid1.\")"),
            hint,
        ));
    };
    let parts: Vec<&str> = rest.split('.').collect();
    let lower = |s: &str, extra: bool| {
        s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || (extra && b == b'-'))
    };
    let shape = (4..=5).contains(&parts.len())
        && !parts[0].is_empty()
        && lower(parts[0], true)
        && !parts[1].is_empty()
        && lower(parts[1], false)
        && parts[2..parts.len() - 1].iter().all(|p| lower(p, true))
        && parts
            .last()
            .is_some_and(|u| !u.is_empty() && lower(u, false));
    if !shape {
        return Err(Invalid::new(
            format!("{text:?} is not a valid OCID"),
            format!("{hint} (ocid1.<type>.<realm>.[region].<unique id>, lowercase)"),
        ));
    }
    if !types.contains(&parts[0]) {
        return Err(Invalid::new(
            format!(
                "{text:?} is the OCID of a {}, not of a {expected}",
                parts[0]
            ),
            format!("use an OCID of type {expected}, e.g. {example}"),
        ));
    }
    Ok(text.to_string())
}

/// An API key fingerprint as OCI shows it: 16 hex pairs joined by `:`. Returned in lowercase.
pub(crate) fn fingerprint(text: &str) -> Parsed<String> {
    let pairs: Vec<&str> = text.split(':').collect();
    let valid = pairs.len() == 16
        && pairs
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if !valid {
        return Err(Invalid::new(
            format!("{text:?} is not a key fingerprint (16 hex pairs separated by ':')"),
            "copy it from the API key's entry in the OCI console, or compute it: openssl rsa -pubout \
             -outform DER -in oci_api_key.pem | openssl md5 -c",
        ));
    }
    Ok(text.to_ascii_lowercase())
}

/// An environment variable name a hook may be given: `[A-Z_][A-Z0-9_]*`, not `ISTHMUS_*`.
pub(crate) fn env_name(text: &str) -> Parsed<()> {
    let hint = "use upper-case letters, digits and '_', not starting with a digit, e.g. TEAM";
    let mut chars = text.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
        return Err(Invalid::new(
            format!("{text:?} is not a valid environment variable name"),
            hint,
        ));
    }
    if text.starts_with("ISTHMUS_") {
        return Err(Invalid::new(
            format!("{text:?} starts with ISTHMUS_, which is reserved for agentd's own variables"),
            "choose another name: agentd sets ISTHMUS_* variables for every hook itself",
        ));
    }
    Ok(())
}

/// One of the spellings of a keyword enum; `what` names it in the message ("log level").
pub(crate) fn keyword<K: Keyword>(text: &str, what: &str) -> Parsed<K> {
    if let Some(k) = K::ALL.iter().find(|k| k.text() == text) {
        return Ok(*k);
    }
    let names: Vec<&str> = K::ALL.iter().map(|k| k.text()).collect();
    let list = names.join(", ");
    let hint = match closest(text, &names) {
        Some(near) => format!("did you mean {near:?}? valid values: {list}"),
        None => format!("valid values: {list}"),
    };
    Err(Invalid::new(format!("{text:?} is not a {what}"), hint))
}

/// A group name, or a numeric gid as an integer or a string of digits.
pub(crate) fn group(value: &Scalar) -> Parsed<GroupRef> {
    let hint = "write a group name (\"isthmus\") or a numeric gid";
    match value {
        Scalar::Int(n) => u32::try_from(*n)
            .map(GroupRef::Id)
            .map_err(|_| Invalid::new(format!("{n} is not a gid"), hint)),
        Scalar::Text(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
            .parse()
            .map(GroupRef::Id)
            .map_err(|_| Invalid::new(format!("{s:?} is not a gid"), hint)),
        Scalar::Text(s) => {
            let bad = s.is_empty()
                || s.len() > 32
                || s.chars()
                    .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ':' | ',' | '/'));
            if bad {
                Err(Invalid::new(
                    format!("{s:?} is not a valid group name"),
                    hint,
                ))
            } else {
                Ok(GroupRef::Name(s.clone()))
            }
        }
    }
}

/// A routing table: `"main"` or a number; the kernel's reserved tables are refused.
pub(crate) fn table(value: &Scalar) -> Parsed<u32> {
    let hint = "write \"main\" or a table number from 1 to 4294967295 other than 253 and 255";
    let n: i64 = match value {
        Scalar::Text(s) if s == "main" => return Ok(MAIN_TABLE),
        Scalar::Text(s) if s == "default" || s == "local" => {
            return Err(Invalid::new(
                format!("{s:?} is a table reserved by the kernel"),
                hint,
            ))
        }
        Scalar::Text(s) => match s.parse() {
            Ok(n) if s.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(Invalid::new(format!("{s:?} is not a routing table"), hint)),
        },
        Scalar::Int(n) => *n,
    };
    match n {
        0 => Err(Invalid::new("0 means \"unspecified\" to the kernel", hint)),
        253 => Err(Invalid::new("253 is the kernel's \"default\" table", hint)),
        255 => Err(Invalid::new("255 is the kernel's \"local\" table", hint)),
        _ => u32::try_from(n).map_err(|_| Invalid::new(format!("{n} is out of range"), hint)),
    }
}

/// File permission bits as an octal string: `"0660"`, `"660"` or `"0o660"`.
pub(crate) fn octal_mode(value: &Scalar) -> Parsed<u32> {
    let hint = "write the mode as a quoted octal string, e.g. socket_mode = \"0660\"";
    let text = match value {
        Scalar::Int(n) => {
            return Err(Invalid::new(
                format!("{n} is an integer, and TOML integers are decimal"),
                hint,
            ))
        }
        Scalar::Text(s) => s,
    };
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(Invalid::new(format!("{text:?} is not an octal mode"), hint));
    }
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| Invalid::new(format!("{text:?} is not an octal mode"), hint))?;
    if mode > 0o777 {
        return Err(Invalid::new(
            format!("{text:?} sets setuid, setgid or sticky bits"),
            "use permission bits only (at most \"0770\")",
        ));
    }
    Ok(mode)
}

pub(crate) fn public_key(text: &str) -> Parsed<PublicKey> {
    decode_key(text).map(PublicKey).ok_or_else(|| {
        Invalid::new(
            "not a WireGuard public key (base64 of 32 bytes)",
            "use the peer's public key as `wg pubkey < private.key` prints it on the peer",
        )
    })
}

/// The candidate nearest to `word` if it is plausibly a typo of it.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let length = word.chars().count();
    let limit = |c: &str| (c.len() / 3).max(1);
    candidates
        .iter()
        // The distance is at least the difference in length: most candidates (and every one,
        // for a long word) are ruled out without computing it.
        .filter(|c| length.abs_diff(c.chars().count()) <= limit(c))
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| *d <= limit(c))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance counting a swap of two neighbouring characters as one edit (optimal string
/// alignment): `nmae` is one edit from `name`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * width + j] = if i == 0 || j == 0 {
                i + j
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut best = (d[(i - 1) * width + j] + 1)
                    .min(d[i * width + j - 1] + 1)
                    .min(d[(i - 1) * width + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    best = best.min(d[(i - 2) * width + j - 2] + 1);
                }
                best
            };
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_need_a_prefix_and_keep_host_bits_for_the_caller_to_judge() {
        assert_eq!(cidr("10.2.0.0/16").unwrap().to_string(), "10.2.0.0/16");
        assert_eq!(cidr("10.2.0.1/16").unwrap().ip().to_string(), "10.2.0.1");
        assert!(cidr("10.2.0.1").unwrap_err().hint.contains("10.2.0.1/32"));
        assert!(cidr("10.2.0.0/33").is_err());
        assert!(cidr("10.2.0.0/+8").is_err());
        assert!(cidr("fd00::/64").is_ok());
    }

    #[test]
    fn endpoints_take_addresses_and_host_names_but_not_bare_ipv6() {
        assert!(matches!(endpoint("192.0.2.2:51820"), Ok(Endpoint::Addr(_))));
        assert!(matches!(
            endpoint("[2001:db8::1]:51820"),
            Ok(Endpoint::Addr(_))
        ));
        assert_eq!(
            endpoint("gw.example.net:51820").unwrap(),
            Endpoint::Host {
                host: "gw.example.net".into(),
                port: 51820
            }
        );
        assert!(endpoint("2001:db8::1:51820")
            .unwrap_err()
            .hint
            .contains('['));
        assert!(endpoint("192.0.2.2").is_err());
        assert!(endpoint("192.0.2.300:1").is_err());
        assert!(endpoint("gw:0").is_err());
        assert!(endpoint("gw:x").is_err());
    }

    #[test]
    fn socket_addrs_explain_a_missing_port() {
        assert!(socket_addr("192.0.2.1")
            .unwrap_err()
            .hint
            .contains("192.0.2.1:PORT"));
        assert!(socket_addr("gw:1").unwrap_err().hint.contains("host name"));
    }

    #[test]
    fn urls_must_match_the_probe_kind() {
        assert!(url("http://10.1.2.3:8080/health", "http").is_ok());
        assert!(url("https://app.example/health", "https").is_ok());
        assert!(url("http://[fd00::1]:80/", "http").is_ok());
        assert!(url("https://app/health", "http")
            .unwrap_err()
            .hint
            .contains("kind"));
        assert!(url("http:///health", "http").is_err());
        assert!(url("http://a:0/", "http").is_err());
    }

    #[test]
    fn tables_refuse_the_reserved_ones() {
        assert_eq!(table(&Scalar::Text("main".into())), Ok(254));
        assert_eq!(table(&Scalar::Int(254)), Ok(254));
        assert_eq!(table(&Scalar::Text("100".into())), Ok(100));
        for n in [0, 253, 255, -1, 1 << 32] {
            assert!(table(&Scalar::Int(n)).is_err(), "{n}");
        }
    }

    #[test]
    fn modes_are_octal_strings() {
        assert_eq!(octal_mode(&Scalar::Text("0660".into())), Ok(0o660));
        assert_eq!(octal_mode(&Scalar::Text("0o600".into())), Ok(0o600));
        assert!(octal_mode(&Scalar::Int(660)).is_err());
        assert!(octal_mode(&Scalar::Text("0680".into())).is_err());
        assert!(octal_mode(&Scalar::Text("4755".into())).is_err());
    }

    #[test]
    fn ifnames_follow_the_kernel() {
        assert!(ifname("isth-ic").is_ok());
        assert!(ifname("fifteen-chars-x").is_ok());
        assert!(ifname("sixteen-chars-xx").is_err());
        for bad in ["", ".", "..", "a/b", "a:b", "a b"] {
            assert!(ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ocids_have_a_type_a_realm_and_a_unique_id() {
        let t = &["routetable"];
        assert!(ocid("ocid1.routetable.oc1.iad.aaaaaaaabc123", t).is_ok());
        assert!(ocid("ocid1.routetable.oc1..aaaaaaaabc123", t).is_ok());
        assert!(ocid("ocid1.routetable.oc1.iad.future.aaaa", t).is_ok());
        assert!(ocid("ocid1.dns-zone.oc1..aaaa", &["dns-zone"]).is_ok());
        let other = ocid("ocid1.vcn.oc1.iad.aaaa", t).unwrap_err();
        assert!(other.message.contains("OCID of a vcn"), "{other:?}");
        for bad in [
            "rtb-0a1b2c3d",
            "ocid1.routetable",
            "ocid1.routetable.oc1.iad.",
            "ocid1.routetable.oc1.iad.AAAA",
            "ocid1.routetable.oc1.iad.a b",
        ] {
            assert!(ocid(bad, t).is_err(), "{bad}");
        }
    }

    #[test]
    fn aws_ids_have_a_prefix_and_8_or_17_hex_digits() {
        let p = &["eni", "i"];
        assert!(aws_id("eni-0123456789abcdef0", p, "x").is_ok());
        assert!(aws_id("i-0a1b2c3d", p, "x").is_ok());
        for bad in [
            "rtb-0a1b2c3d",
            "eni-0a1b2c3",
            "eni-0A1B2C3D",
            "eni0a1b2c3d",
            "i-xyzxyzxy",
        ] {
            assert!(aws_id(bad, p, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprints_are_16_hex_pairs() {
        assert_eq!(
            fingerprint("20:3B:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34").as_deref(),
            Ok("20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34")
        );
        assert!(fingerprint("20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a").is_err());
        assert!(fingerprint("203b9713551c5b0dd337d8504ec53a34").is_err());
        assert!(fingerprint("20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:3g").is_err());
    }

    #[test]
    fn hook_environment_names_are_shell_style_and_not_ours() {
        assert!(env_name("TEAM").is_ok());
        assert!(env_name("_X1").is_ok());
        for bad in ["team", "1X", "", "A-B", "ISTHMUS_GROUP"] {
            assert!(env_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn closest_finds_typos_only() {
        assert_eq!(closest("lisen", &["listen", "name"]), Some("listen"));
        assert_eq!(closest("nmae", &["listen", "name"]), Some("name"));
        assert_eq!(closest("zzz", &["listen", "name"]), None);
    }
}
