//! `[[dns_provider]]` and `[[dns_group]]`: where DNS answers are published, and which record
//! follows which answers. Each provider kind has its own keys; other kinds' keys are errors.
//! An rfc2136 provider's TSIG key is loaded here, from a `tsig-keygen` file or a bare secret.

use std::net::IpAddr;
use std::time::Duration;

use super::routing::names_once;
use super::{command, name};
use crate::fields::{Fields, Got};
use crate::keys::KeyFiles;
use crate::model::*;
use crate::parse::Entry;
use crate::raw::{RawDnsGroup, RawDnsProvider};
use crate::source::{Sink, Span};
use crate::tsig;
use crate::values::{self, Invalid};

pub(super) fn dns_provider(
    e: &Entry<RawDnsProvider>,
    keys: &KeyFiles,
    sink: &mut Sink,
) -> Option<DnsProvider> {
    let r = &e.value;
    let mut f = Fields::of(e, sink);
    let name = name(&mut f, &r.name, 63);
    let kind = f.parsed(&r.kind, "kind", |s| values::keyword(s, "DNS provider kind"));
    let kind = f.require(kind, "kind");
    let min_interval = f
        .duration(
            &r.min_interval,
            "min_interval",
            Duration::ZERO,
            Some(MAX_MIN_INTERVAL),
        )
        .optional();
    let mut provider = DnsProvider {
        name: String::new(),
        kind: kind.unwrap_or(DnsProviderKind::Rfc2136),
        server: None,
        zone: None,
        tsig_key_file: None,
        tsig_algorithm: TsigAlgorithm::HmacSha256,
        tsig: None,
        hosted_zone_id: None,
        endpoint: None,
        region: None,
        view_id: None,
        command: Vec::new(),
        timeout: None,
        min_interval: None,
    };
    let ok = match kind {
        Some(kind) => {
            let foreign = foreign_keys(&mut f, r, kind);
            let own = match kind {
                DnsProviderKind::Rfc2136 => rfc2136(&mut f, r, keys, &mut provider),
                DnsProviderKind::Route53 => route53(&mut f, r, &mut provider),
                DnsProviderKind::Oci => oci(&mut f, r, &mut provider),
                DnsProviderKind::Exec => exec(&mut f, r, &mut provider),
            };
            foreign && own
        }
        None => false,
    };
    provider.name = name?;
    provider.min_interval = min_interval?;
    ok.then_some(provider)
}

/// The longest `min_interval` accepted: a record that may change only every ten minutes no
/// longer follows a failover.
const MAX_MIN_INTERVAL: Duration = Duration::from_secs(600);

/// Which provider kinds each kind-specific key belongs to.
const KIND_KEYS: &[(&str, &[DnsProviderKind])] = {
    use DnsProviderKind::*;
    &[
        ("server", &[Rfc2136]),
        ("zone", &[Rfc2136, Oci]),
        ("tsig_key_file", &[Rfc2136]),
        ("tsig_key_name", &[Rfc2136]),
        ("tsig_algorithm", &[Rfc2136]),
        ("hosted_zone_id", &[Route53]),
        ("endpoint", &[Route53]),
        ("region", &[Route53]),
        ("view_id", &[Oci]),
        ("command", &[Exec]),
        ("timeout", &[Exec]),
    ]
};

/// Reports every key that belongs to other kinds; `false` if there was one.
fn foreign_keys(f: &mut Fields, r: &RawDnsProvider, kind: DnsProviderKind) -> bool {
    let span = |key: &str| -> Option<Span> {
        let text = |t: &crate::raw::Text| t.as_ref().map(|v| v.span());
        match key {
            "server" => text(&r.server),
            "zone" => text(&r.zone),
            "tsig_key_file" => text(&r.tsig_key_file),
            "tsig_key_name" => text(&r.tsig_key_name),
            "tsig_algorithm" => text(&r.tsig_algorithm),
            "hosted_zone_id" => text(&r.hosted_zone_id),
            "endpoint" => text(&r.endpoint),
            "region" => text(&r.region),
            "view_id" => text(&r.view_id),
            "command" => r.command.as_ref().map(|v| v.span()),
            "timeout" => r.timeout.as_ref().map(|v| v.span()),
            _ => None,
        }
    };
    let mut ok = true;
    for (key, kinds) in KIND_KEYS {
        let Some(at) = span(key) else { continue };
        if kinds.contains(&kind) {
            continue;
        }
        let names: Vec<&str> = kinds.iter().map(DnsProviderKind::as_str).collect();
        let hint = match (*key, kind) {
            ("zone", DnsProviderKind::Route53) => {
                "remove it: route53 finds the zone by hosted_zone_id".to_string()
            }
            ("zone", DnsProviderKind::Exec) => {
                "remove it: pass the zone to the command as an argument".to_string()
            }
            ("region" | "endpoint", DnsProviderKind::Oci) => {
                "remove it: oci providers use region and dns_endpoint of [oci]".to_string()
            }
            _ => format!("remove it: this provider is {kind}"),
        };
        f.error(
            at,
            format!("{key} applies only to {} providers", names.join(" and ")),
            hint,
        );
        ok = false;
    }
    ok
}

fn rfc2136(
    f: &mut Fields,
    r: &RawDnsProvider,
    keys: &KeyFiles,
    provider: &mut DnsProvider,
) -> bool {
    let server = match f.parsed(&r.server, "server", values::socket_addr) {
        Got::Is(addr, span) if addr.port() == 0 => {
            f.error(
                span,
                "server port 0",
                "DNS servers listen on port 53: write e.g. \"10.1.0.53:53\"",
            );
            Got::Bad
        }
        other => other,
    };
    provider.server = f.require(server, "server");
    let zone = f.parsed(&r.zone, "zone", |s| {
        values::dns_name(s).map(|()| s.to_string())
    });
    provider.zone = f.require(zone, "zone");
    let file = f.parsed(&r.tsig_key_file, "tsig_key_file", |s| keys.tsig(s));
    let key_name = f.parsed(&r.tsig_key_name, "tsig_key_name", |s| {
        values::dns_name(s).map(|()| tsig::absolute_name(s))
    });
    let algorithm = f.parsed(&r.tsig_algorithm, "tsig_algorithm", |s| {
        values::keyword(s, "TSIG algorithm")
    });
    let mut ok = provider.server.is_some() && provider.zone.is_some();
    match file {
        Got::Bad => ok = false,
        Got::Absent => {
            if let Got::Is(_, span) = &key_name {
                f.error(
                    span.clone(),
                    "tsig_key_name without tsig_key_file",
                    "add tsig_key_file = \"tsig.key\" with the key's secret, or remove tsig_key_name",
                );
                ok = false;
            }
            match algorithm.or(TsigAlgorithm::HmacSha256) {
                Some(a) => provider.tsig_algorithm = a,
                None => ok = false,
            }
        }
        Got::Is(file, file_span) => {
            let p = file.path.display().to_string();
            match tsig_key(f, file.key, &p, file_span, key_name, algorithm) {
                Some(key) => {
                    provider.tsig_algorithm = key.algorithm;
                    provider.tsig = Some(key);
                }
                None => ok = false,
            }
            provider.tsig_key_file = Some(file.path);
        }
    }
    ok
}

/// The key a provider uses, from its key file and its `tsig_key_name` and `tsig_algorithm`.
fn tsig_key(
    f: &mut Fields,
    keys: Vec<tsig::FileKey>,
    path: &str,
    file_span: Span,
    key_name: Got<String>,
    algorithm: Got<TsigAlgorithm>,
) -> Option<TsigKey> {
    if matches!(key_name, Got::Bad) || matches!(algorithm, Got::Bad) {
        return None;
    }
    let bare = keys.len() == 1 && keys[0].name.is_none();
    let names: Vec<String> = keys.iter().filter_map(|k| k.name.clone()).collect();
    let chosen = match (&key_name, bare) {
        (Got::Is(name, _), true) => keys.into_iter().next().map(|k| (name.clone(), k)),
        (_, true) => {
            f.error(
                file_span,
                format!("tsig_key_file: {path} holds a bare secret, which does not name the key"),
                "add tsig_key_name = \"NAME.\" (the key's name on the DNS server), or write the \
                 file with tsig-keygen -a hmac-sha256 NAME",
            );
            return None;
        }
        (Got::Is(name, span), false) => {
            let found = keys.into_iter().find(|k| k.name.as_deref() == Some(name));
            if found.is_none() {
                let held = names
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                f.error(
                    span.clone(),
                    format!("tsig_key_name {name:?} is not the name of the key in {path} ({held})"),
                    "the DNS server checks the name with the secret: set tsig_key_name to the \
                     name in the key file, or remove it (a file with one key needs none)",
                );
                return None;
            }
            found.map(|k| (name.clone(), k))
        }
        (_, false) if keys.len() > 1 => {
            f.error(
                file_span,
                format!("tsig_key_file: {path} holds {} keys", keys.len()),
                format!(
                    "choose one with tsig_key_name = one of {}",
                    names
                        .iter()
                        .map(|n| format!("{n:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            return None;
        }
        (_, false) => keys
            .into_iter()
            .next()
            .and_then(|k| Some((k.name.clone()?, k))),
    };
    let (name, key) = chosen?;
    let algorithm = match (algorithm, key.algorithm) {
        (Got::Is(a, span), Some(from_file)) if a != from_file => {
            f.error(
                span,
                format!(
                    "tsig_algorithm {a} differs from the algorithm of the key in {path} ({from_file})"
                ),
                "remove tsig_algorithm (the key file's algorithm is used), or make them equal",
            );
            return None;
        }
        (_, Some(from_file)) => from_file,
        (Got::Is(a, _), None) => a,
        (_, None) => TsigAlgorithm::HmacSha256,
    };
    Some(TsigKey {
        name,
        algorithm,
        secret: key.secret,
    })
}

fn route53(f: &mut Fields, r: &RawDnsProvider, provider: &mut DnsProvider) -> bool {
    let zone_id = f.parsed(&r.hosted_zone_id, "hosted_zone_id", |s| {
        // As CreateHostedZone and list-hosted-zones print it, `/hostedzone/Z…`, or bare.
        let id = s.strip_prefix("/hostedzone/").unwrap_or(s);
        if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(id.to_string())
        } else {
            Err(Invalid::new(
                format!("{s:?} is not a hosted zone id"),
                "copy the id from the Route 53 console or `aws route53 list-hosted-zones`, e.g. \"Z0123456789ABC\"",
            ))
        }
    });
    provider.hosted_zone_id = f.require(zone_id, "hosted_zone_id");
    let endpoint = f
        .parsed(&r.endpoint, "endpoint", values::endpoint_url)
        .optional();
    let region = f
        .parsed(&r.region, "region", |s| {
            values::region(s, "AWS", "us-east-1")
        })
        .optional();
    let mut ok = provider.hosted_zone_id.is_some();
    match (endpoint, region) {
        (Some(endpoint), Some(region)) => {
            provider.endpoint = endpoint;
            provider.region = region;
        }
        _ => ok = false,
    }
    ok
}

fn oci(f: &mut Fields, r: &RawDnsProvider, provider: &mut DnsProvider) -> bool {
    let zone = f.parsed(&r.zone, "zone", |s| {
        if s.starts_with("ocid1.") {
            values::ocid(s, &["dns-zone"])
        } else {
            values::dns_name(s).map(|()| s.to_string())
        }
    });
    provider.zone = f.require(zone, "zone");
    let view = f
        .parsed(&r.view_id, "view_id", |s| values::ocid(s, &["dnsview"]))
        .optional();
    match view {
        Some(view) => provider.view_id = view,
        None => return false,
    }
    provider.zone.is_some()
}

fn exec(f: &mut Fields, r: &RawDnsProvider, provider: &mut DnsProvider) -> bool {
    let command = command(f, &r.command, "command");
    let timeout = f
        .duration(
            &r.timeout,
            "timeout",
            Duration::from_millis(100),
            Some(Duration::from_secs(600)),
        )
        .optional();
    let Some(command) = f.require(command, "command") else {
        return false;
    };
    provider.command = command;
    match timeout {
        Some(timeout) => provider.timeout = timeout,
        None => return false,
    }
    true
}

pub(super) fn dns_group(e: &Entry<RawDnsGroup>, sink: &mut Sink) -> Option<DnsGroup> {
    let r = &e.value;
    let mut f = Fields::of(e, sink);
    let name = name(&mut f, &r.name, 63);
    let provider = f.text(&r.provider).map(str::to_string);
    let provider = f.require(provider, "provider");
    let record = f.parsed(&r.record, "record", |s| {
        values::dns_name(s).map(|()| s.to_string())
    });
    let record = f.require(record, "record");
    let record_type = f.parsed(&r.record_type, "type", |s| {
        values::keyword(s, "record type")
    });
    let record_type = record_type.or(RecordType::A);
    let ttl = f
        .int(&r.ttl, "ttl", 1..=86400)
        .map(|n| n as u32)
        .or(DEFAULT_DNS_TTL);
    // The same failover timing as route groups, with the same defaults.
    let preempt = r.preempt.as_ref().is_none_or(|b| *b.get_ref());
    let failback_after = f
        .duration(&r.failback_after, "failback_after", Duration::ZERO, None)
        .or(DEFAULT_FAILBACK_AFTER);
    let hold_down = f
        .duration(&r.hold_down, "hold_down", Duration::ZERO, None)
        .or(DEFAULT_HOLD_DOWN);
    let answers = match &r.answers {
        None => {
            f.missing("answers");
            None
        }
        Some(list) if list.get_ref().is_empty() => {
            f.error(
                list.span(),
                "answers is empty",
                "list at least one, e.g. answers = [{ value = \"10.2.1.10\" }]",
            );
            None
        }
        Some(list) => {
            let mut answers = Some(Vec::new());
            for (index, answer) in list.get_ref().iter().enumerate() {
                let a = dns_answer(&mut f, index, answer.get_ref(), answer.span(), record_type);
                match (a, &mut answers) {
                    (Some(a), Some(all)) => all.push(a),
                    _ => answers = None,
                }
            }
            answers
        }
    };
    Some(DnsGroup {
        name: name?,
        provider: provider?,
        record: record?,
        record_type: record_type?,
        ttl: ttl?,
        answers: answers?,
        preempt,
        failback_after: failback_after?,
        hold_down: hold_down?,
    })
}

fn dns_answer(
    f: &mut Fields,
    index: usize,
    answer: &crate::raw::RawAnswer,
    span: Span,
    record_type: Option<RecordType>,
) -> Option<DnsAnswer> {
    let key = format!("answers #{}", index + 1);
    let value = match (&answer.value, record_type) {
        (None, _) => {
            f.error(
                span,
                format!("{key} has no `value`"),
                "add: value = \"10.2.1.10\"",
            );
            None
        }
        (Some(v), Some(t)) => match answer_value(t, v.get_ref()) {
            Ok(()) => Some(v.get_ref().clone()),
            Err(e) => {
                f.report(v.span(), &key, e);
                None
            }
        },
        (Some(v), None) => Some(v.get_ref().clone()),
    };
    let checks = names_once(f, &answer.checks, &format!("{key} checks"), "probe", false);
    Some(DnsAnswer {
        value: value?,
        checks: checks.or(Vec::new())?,
    })
}

fn answer_value(record_type: RecordType, text: &str) -> Result<(), Invalid> {
    let ip = text.parse::<IpAddr>().ok();
    match (record_type, ip) {
        (RecordType::A, Some(IpAddr::V4(_))) | (RecordType::Aaaa, Some(IpAddr::V6(_))) => Ok(()),
        (RecordType::A, Some(IpAddr::V6(_))) => Err(Invalid::new(
            format!("{text:?} is an IPv6 address but the record type is A"),
            "set type = \"AAAA\" for IPv6 answers",
        )),
        (RecordType::Aaaa, Some(IpAddr::V4(_))) => Err(Invalid::new(
            format!("{text:?} is an IPv4 address but the record type is AAAA"),
            "set type = \"A\" for IPv4 answers",
        )),
        (RecordType::A, None) => Err(Invalid::new(
            format!("{text:?} is not an IPv4 address (record type A)"),
            "write an IPv4 address such as \"10.2.1.10\", or set type = \"CNAME\" for a name",
        )),
        (RecordType::Aaaa, None) => Err(Invalid::new(
            format!("{text:?} is not an IPv6 address (record type AAAA)"),
            "write an IPv6 address such as \"fd00::10\", or set type = \"CNAME\" for a name",
        )),
        (RecordType::Cname, Some(_)) => Err(Invalid::new(
            format!("{text:?} is an address but the record type is CNAME"),
            "a CNAME points at a name: use type = \"A\" or \"AAAA\" for addresses",
        )),
        (RecordType::Cname, None) => values::dns_name(text),
    }
}
