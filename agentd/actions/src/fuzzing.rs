//! Entry points for the fuzz targets (`tests/fuzz`) and their replay test: each takes a server's
//! answer as bytes and runs it through the parsing a provider does after a request, with no
//! socket and no clock of consequence. Not an API: hidden from the docs, used by nothing else.
//!
//! Each asserts what must hold for any answer: the routes read are exactly the destinations
//! asked about; a plan that rewrites a table reaches the desired routes and is then done; a
//! signed UPDATE never succeeds on a reply nobody signed with the key.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::rr::{Name, RecordType as HickoryType};
use zeroize::Zeroizing;

use crate::aws::{self, xml, ApiError};
use crate::http::HttpResponse;
use crate::oci;
use crate::rfc2136::{Rfc2136, Rfc2136Settings, TsigAlgorithm, TsigKey};
use crate::{RRset, RecordRef, RecordType, TableRoutes};

/// The destinations every route-table target asks about: IPv4 and IPv6, one written with host
/// bits (the providers compare canonical blocks).
const DESTINATIONS: [&str; 3] = ["10.2.0.0/16", "10.3.7.9/24", "fd00:2::/64"];

fn records() -> [RecordRef; 3] {
    [RecordType::A, RecordType::Aaaa, RecordType::Cname].map(|rtype| RecordRef {
        name: "gw.fo.test.".into(),
        rtype,
    })
}

fn response(status: u16, body: &[u8]) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![
            ("etag".into(), "\"fuzz\"".into()),
            ("opc-request-id".into(), "fuzz-request".into()),
        ],
        body: body.to_vec(),
    }
}

fn destinations() -> Vec<String> {
    DESTINATIONS.iter().map(|d| d.to_string()).collect()
}

/// An AWS answer body (Route 53 or EC2, XML): the parser, error answers, the record set read
/// and the route table read.
pub fn aws_answer(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = xml::parse(&text);
    for status in [400, 403, 500, 503] {
        let e = ApiError::from_response(&response(status, data));
        let _ = aws::classify(&e);
        let _ = e.to_string();
    }
    for rec in records() {
        if let Ok(Some((set, served))) = aws::route53::listed_set("fuzz", &rec, &text) {
            assert!(
                set.values.len() <= served.len(),
                "a set has the values served"
            );
        }
    }
    let dests = destinations();
    if let Ok(seen) = aws::ec2::described_routes("rtb-0fuzz", "fuzz", &dests, &text) {
        let keys: BTreeSet<&String> = seen.routes.keys().collect();
        assert_eq!(
            keys.len(),
            dests.len(),
            "one entry per destination asked about"
        );
    }
}

/// An OCI answer body (JSON): record sets, error answers, route rules and the plan that would
/// rewrite them.
pub fn oci_answer(data: &[u8]) {
    let resp = response(200, data);
    if let Ok(records) = oci::dns::parse("fuzz", &resp) {
        for rec in records_types() {
            if let Some(set) = oci::dns::to_rrset(rec, &records.items) {
                assert!(!set.values.is_empty(), "a set read has values");
            }
        }
    }
    for status in [400, 401, 404, 409, 412, 429, 500] {
        let f = oci::failure("fuzz", &response(status, data));
        assert!(f.message.starts_with("fuzz: HTTP "), "{}", f.message);
    }
    let Ok(rules) = oci::route_table::rules("fuzz", &resp) else {
        return;
    };
    let dests = destinations();
    let seen = oci::route_table::our_routes(&rules, &dests);
    assert_eq!(
        seen.len(),
        dests.len(),
        "one entry per destination asked about"
    );
    // OCI holds each destination at most once and every rule with a target: only in such a
    // table does a read and a plan agree (a rule without a target reads as no route and a
    // plan for no route deletes it; a second rule to one destination is dropped by a plan).
    let mut destinations_seen = BTreeSet::new();
    let impossible = !rules.iter().all(|r| {
        r.get("networkEntityId")
            .and_then(serde_json::Value::as_str)
            .is_some()
            && oci::route_table::cidr_destination(r).is_none_or(|d| destinations_seen.insert(d))
    });
    assert!(
        impossible || oci::route_table::plan(&rules, &seen).is_none(),
        "a table that holds what was read needs no write"
    );
    let desired: TableRoutes = dests
        .iter()
        .zip([
            Some("ocid1.drg.oc1..fuzz"),
            None,
            Some("ocid1.privateip.oc1..fuzz"),
        ])
        .map(|(d, t)| (d.clone(), t.map(str::to_string)))
        .collect();
    if let Some(out) = oci::route_table::plan(&rules, &desired) {
        assert_eq!(
            oci::route_table::our_routes(&out, &dests),
            desired,
            "the planned rules hold the desired routes"
        );
        assert!(
            oci::route_table::plan(&out, &desired).is_none(),
            "a planned table needs no second write"
        );
    }
}

fn records_types() -> [RecordType; 3] {
    [RecordType::A, RecordType::Aaaa, RecordType::Cname]
}

/// A DNS reply (wire format), as the answer to a signed UPDATE, an unsigned one, and a query.
pub fn dns_reply(data: &[u8]) {
    let provider = |key: bool| {
        Rfc2136::new(Rfc2136Settings {
            server: SocketAddr::from((Ipv4Addr::LOCALHOST, 53)),
            zone: "fo.test.".into(),
            key: key.then(|| TsigKey {
                name: "failover-key.".into(),
                algorithm: TsigAlgorithm::HmacSha256,
                secret: Zeroizing::new(b"isthmus fuzz TSIG secret 32 byte".to_vec()),
            }),
            timeout: Duration::from_secs(1),
        })
        .expect("a valid provider")
    };
    let [a, ..] = records();
    let new = RRset::new(30, vec!["192.0.2.9".into()]);
    let signed = provider(true);
    let (_, verifier) = signed
        .signed_update(&a, None, &new)
        .expect("an update in the zone");
    let verifier = verifier.expect("a signed update has a verifier");
    assert!(
        signed.update_reply(&a, data, Some(verifier)).is_err(),
        "a signed update succeeded on a reply not signed with its key"
    );
    let unsigned = provider(false);
    let _ = unsigned.update_reply(&a, data, None);
    let name = Name::from_ascii("gw.fo.test.").expect("a name");
    for rtype in [HickoryType::A, HickoryType::AAAA, HickoryType::CNAME] {
        if let Ok(Some(set)) = unsigned.read_reply(&name, rtype, data) {
            assert!(!set.values.is_empty(), "a set read has values");
        }
    }
}
