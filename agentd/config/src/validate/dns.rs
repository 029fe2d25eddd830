//! `[[dns_provider]]` and `[[dns_group]]`: where DNS answers are published, and which record
//! follows which answers. Each provider kind has its own keys; the other kind's keys are errors.

use std::net::IpAddr;

use super::name;
use super::routing::names_once;
use crate::fields::{Fields, Got};
use crate::keys::{KeyFiles, KeyKind};
use crate::model::*;
use crate::parse::Entry;
use crate::raw::{RawDnsGroup, RawDnsProvider};
use crate::source::{Sink, Span};
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
    let mut provider = DnsProvider {
        name: String::new(),
        kind: kind.unwrap_or(DnsProviderKind::Rfc2136),
        server: None,
        zone: None,
        tsig_key_file: None,
        tsig_algorithm: TsigAlgorithm::HmacSha256,
        hosted_zone_id: None,
        endpoint: None,
        region: None,
    };
    let mut ok = true;
    match kind {
        Some(DnsProviderKind::Rfc2136) => {
            let only = "applies only to route53 providers";
            let hint = "remove it: this provider is rfc2136";
            f.forbid(&r.hosted_zone_id, "hosted_zone_id", only, hint);
            f.forbid(&r.endpoint, "endpoint", only, hint);
            f.forbid(&r.region, "region", only, hint);
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
            let tsig = f
                .parsed(&r.tsig_key_file, "tsig_key_file", |s| {
                    keys.load(s, KeyKind::Tsig)
                })
                .optional();
            let algorithm = f
                .parsed(&r.tsig_algorithm, "tsig_algorithm", |s| {
                    values::keyword(s, "TSIG algorithm")
                })
                .or(TsigAlgorithm::HmacSha256);
            ok &= provider.server.is_some() && provider.zone.is_some();
            match (tsig, algorithm) {
                (Some(tsig), Some(algorithm)) => {
                    provider.tsig_key_file = tsig.map(|k| k.path);
                    provider.tsig_algorithm = algorithm;
                }
                _ => ok = false,
            }
        }
        Some(DnsProviderKind::Route53) => {
            let only = "applies only to rfc2136 providers";
            let hint = "remove it: this provider is route53";
            f.forbid(&r.server, "server", only, hint);
            f.forbid(
                &r.zone,
                "zone",
                only,
                "remove it: route53 finds the zone by hosted_zone_id",
            );
            f.forbid(&r.tsig_key_file, "tsig_key_file", only, hint);
            f.forbid(&r.tsig_algorithm, "tsig_algorithm", only, hint);
            ok &= r.server.is_none()
                && r.zone.is_none()
                && r.tsig_key_file.is_none()
                && r.tsig_algorithm.is_none();
            let zone_id = f.parsed(&r.hosted_zone_id, "hosted_zone_id", |s| {
                if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    Ok(s.to_string())
                } else {
                    Err(Invalid::new(
                        format!("{s:?} is not a hosted zone id"),
                        "copy the id from the Route 53 console or `aws route53 list-hosted-zones`, e.g. \"Z0123456789ABC\"",
                    ))
                }
            });
            provider.hosted_zone_id = f.require(zone_id, "hosted_zone_id");
            let endpoint = f
                .parsed(&r.endpoint, "endpoint", |s| {
                    let scheme = if s.starts_with("http://") {
                        "http"
                    } else {
                        "https"
                    };
                    values::url(s, scheme).map(|()| s.to_string())
                })
                .optional();
            let region = f
                .parsed(&r.region, "region", |s| {
                    let valid = !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                    if valid {
                        Ok(s.to_string())
                    } else {
                        Err(Invalid::new(
                            format!("{s:?} is not an AWS region"),
                            "write a region such as \"us-east-1\"",
                        ))
                    }
                })
                .optional();
            ok &= provider.hosted_zone_id.is_some();
            match (endpoint, region) {
                (Some(endpoint), Some(region)) => {
                    provider.endpoint = endpoint;
                    provider.region = region;
                }
                _ => ok = false,
            }
        }
        None => ok = false,
    }
    provider.name = name?;
    ok.then_some(provider)
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
