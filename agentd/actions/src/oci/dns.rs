//! OCI DNS record sets: `GetRRSet` and `UpdateRRSet` on
//! `/20180115/zones/{zone}/records/{domain}/{rtype}`.
//!
//! `UpdateRRSet` replaces the whole set and is made conditional with `if-match: <etag>`, the
//! etag the read returned. The [`DnsBackend`] contract passes the *set* that was read, not its
//! etag, so the provider keeps the last read's etag per record: when the caller's `seen` is the
//! set of that read, its etag is the condition; otherwise the provider reads again first, and a
//! set that no longer is `seen` is a [`FailureKind::Conflict`] without a write.
//!
//! An absent set is written on the etag of the empty read as well: `UpdateRRSet` documents
//! `If-Match` and `If-Unmodified-Since` as its conditions, not `If-None-Match`. Should a read of
//! an absent set come back without an etag (a 404), the condition is `If-Unmodified-Since` with
//! the server's `Date` of that read, the documented substitute "for cases where the user agent
//! does not have an entity-tag".

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use super::{encode, endpoint, failure, system_clock, Client, Clock, OciAuth};
use crate::http::HttpResponse;
use crate::{ActionResult, BoxFut, DnsBackend, Failure, FailureKind, RRset, RecordRef, RecordType};

/// What an [`OciDns`] is made from. Config keys: `[oci]` `region`, `dns_endpoint`; the DNS
/// provider's `zone`, `view_id`.
#[derive(Debug, Clone)]
pub struct OciDnsConfig {
    /// The zone's name (`example.com`) or OCID.
    pub zone: String,
    /// For a private zone: the OCID of its view (requests then carry `scope=PRIVATE`).
    pub view_id: Option<String>,
    /// Default `https://dns.{region}.oraclecloud.com`.
    pub endpoint: Option<String>,
    pub region: String,
    pub auth: Arc<OciAuth>,
    /// For each request, from connect to the last byte of the answer.
    pub timeout: Duration,
}

/// A zone in OCI DNS, public or private.
pub struct OciDns {
    zone: String,
    view_id: Option<String>,
    endpoint: String,
    client: Client,
    /// The last read (or write) per record: the set and the condition to write over it.
    reads: Mutex<HashMap<RecordRef, Read>>,
}

#[derive(Debug, Clone)]
struct Read {
    set: Option<RRset>,
    condition: Option<(&'static str, String)>,
}

#[derive(Deserialize)]
pub(crate) struct Records {
    #[serde(default)]
    pub(crate) items: Vec<Record>,
}

#[derive(Deserialize)]
pub(crate) struct Record {
    rtype: String,
    rdata: String,
    ttl: u32,
}

impl OciDns {
    pub fn new(config: OciDnsConfig) -> Result<OciDns, Failure> {
        let endpoint = endpoint(
            config.endpoint.as_deref(),
            format!("https://dns.{}.oraclecloud.com", config.region),
        )?;
        Ok(OciDns {
            zone: config.zone,
            view_id: config.view_id,
            endpoint,
            client: Client {
                auth: config.auth,
                timeout: config.timeout,
                clock: system_clock(),
            },
            reads: Mutex::new(HashMap::new()),
        })
    }

    /// Sign with this clock instead of the system's (tests of clock skew).
    pub fn with_clock(mut self, clock: Clock) -> OciDns {
        self.client.clock = clock;
        self
    }

    fn url(&self, rec: &RecordRef, page: Option<&str>) -> String {
        let domain = rec.name.trim_end_matches('.');
        let mut url = format!(
            "{}/20180115/zones/{}/records/{}/{}",
            self.endpoint,
            encode(&self.zone),
            encode(domain),
            rec.rtype
        );
        let mut query = Vec::new();
        if let Some(view) = &self.view_id {
            query.push("scope=PRIVATE".to_string());
            query.push(format!("viewId={}", encode(view)));
        }
        if let Some(page) = page {
            query.push(format!("page={}", encode(page)));
        }
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        url
    }

    fn what(&self, method: &str, rec: &RecordRef) -> String {
        format!("OCI DNS {method} {rec} in zone {}", self.zone)
    }

    async fn fetch(&self, rec: &RecordRef) -> ActionResult<Read> {
        let what = self.what("GET", rec);
        let mut records = Vec::new();
        let mut condition = None;
        let mut page: Option<String> = None;
        loop {
            let resp = self
                .client
                .send(&what, "GET", self.url(rec, page.as_deref()), vec![], None)
                .await?;
            // A zone without the set. (A wrong zone or a missing policy look the same to a
            // read; the write that follows reports them.)
            if resp.status == 404 && page.is_none() {
                return Ok(Read {
                    set: None,
                    condition: resp
                        .header("date")
                        .map(|d| ("if-unmodified-since", d.to_string())),
                });
            }
            if !(200..300).contains(&resp.status) {
                return Err(failure(&what, &resp));
            }
            if condition.is_none() {
                condition = resp
                    .header("etag")
                    .map(|e| ("if-match", e.to_string()))
                    .or_else(|| {
                        resp.header("date")
                            .map(|d| ("if-unmodified-since", d.to_string()))
                    });
            }
            records.extend(parse(&what, &resp)?.items);
            match resp.header("opc-next-page") {
                Some(next) if !next.is_empty() => page = Some(next.to_string()),
                _ => break,
            }
        }
        Ok(Read {
            set: to_rrset(rec.rtype, &records),
            condition,
        })
    }

    fn remember(&self, rec: &RecordRef, read: Option<Read>) {
        let mut reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        match read {
            Some(r) => reads.insert(rec.clone(), r),
            None => reads.remove(rec),
        };
    }

    fn remembered(&self, rec: &RecordRef) -> Option<Read> {
        let reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        reads.get(rec).cloned()
    }

    async fn write(&self, rec: &RecordRef, seen: Option<&RRset>, new: &RRset) -> ActionResult<()> {
        let read = match self.remembered(rec) {
            Some(r) if r.set.as_ref() == seen => r,
            _ => {
                let fresh = self.fetch(rec).await?;
                self.remember(rec, Some(fresh.clone()));
                if fresh.set.as_ref() != seen {
                    return Err(Failure::new(
                        FailureKind::Conflict,
                        format!(
                            "{}: the set changed since it was read (now {})",
                            self.what("PUT", rec),
                            describe(fresh.set.as_ref())
                        ),
                    ));
                }
                fresh
            }
        };
        let Some((name, value)) = read.condition else {
            return Err(Failure::new(
                FailureKind::Rejected,
                format!(
                    "{}: the read returned neither an etag nor a date to write on",
                    self.what("PUT", rec)
                ),
            ));
        };
        let domain = rec.name.trim_end_matches('.');
        let items: Vec<serde_json::Value> = new
            .values
            .iter()
            .map(|v| {
                serde_json::json!({
                    "domain": domain,
                    "rtype": rec.rtype.as_str(),
                    "rdata": v,
                    "ttl": new.ttl,
                })
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "items": items }))
            .map_err(|e| Failure::new(FailureKind::Rejected, e.to_string()))?;
        let what = self.what("PUT", rec);
        let result = self
            .client
            .call(
                &what,
                "PUT",
                self.url(rec, None),
                vec![
                    (name.to_string(), value),
                    ("content-type".to_string(), "application/json".to_string()),
                ],
                Some(body),
            )
            .await;
        match result {
            Ok(resp) => {
                // The answer is the new set with its etag: the condition of the next write.
                let after = match (parse(&what, &resp), resp.header("etag")) {
                    (Ok(records), Some(etag)) => Some(Read {
                        set: to_rrset(rec.rtype, &records.items),
                        condition: Some(("if-match", etag.to_string())),
                    }),
                    _ => None,
                };
                self.remember(rec, after);
                Ok(())
            }
            Err(f) => {
                self.remember(rec, None);
                Err(f)
            }
        }
    }
}

pub(crate) fn parse(what: &str, resp: &HttpResponse) -> ActionResult<Records> {
    serde_json::from_slice(&resp.body).map_err(|e| {
        Failure::new(
            FailureKind::Rejected,
            format!("{what}: unexpected answer: {e}"),
        )
    })
}

/// The records of `rtype` as a set in canonical text; `None` when there are none.
pub(crate) fn to_rrset(rtype: RecordType, records: &[Record]) -> Option<RRset> {
    let mine: Vec<&Record> = records
        .iter()
        .filter(|r| r.rtype.eq_ignore_ascii_case(rtype.as_str()))
        .collect();
    let ttl = mine.iter().map(|r| r.ttl).min()?;
    let values = mine.iter().map(|r| canonical(rtype, &r.rdata)).collect();
    Some(RRset::new(ttl, values))
}

fn canonical(rtype: RecordType, rdata: &str) -> String {
    let rdata = rdata.trim();
    match rtype {
        RecordType::A => rdata
            .parse::<Ipv4Addr>()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| rdata.to_string()),
        RecordType::Aaaa => rdata
            .parse::<Ipv6Addr>()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| rdata.to_string()),
        RecordType::Cname => {
            let name = rdata.to_ascii_lowercase();
            if name.ends_with('.') {
                name
            } else {
                format!("{name}.")
            }
        }
    }
}

fn describe(set: Option<&RRset>) -> String {
    match set {
        Some(s) => format!("{} ttl {}", s.values.join(" "), s.ttl),
        None => "absent".to_string(),
    }
}

impl DnsBackend for OciDns {
    fn read<'a>(&'a self, rec: &'a RecordRef) -> BoxFut<'a, ActionResult<Option<RRset>>> {
        Box::pin(async move {
            let read = self.fetch(rec).await?;
            let set = read.set.clone();
            self.remember(rec, Some(read));
            Ok(set)
        })
    }

    fn replace<'a>(
        &'a self,
        rec: &'a RecordRef,
        seen: Option<&'a RRset>,
        new: &'a RRset,
    ) -> BoxFut<'a, ActionResult<()>> {
        Box::pin(self.write(rec, seen, new))
    }

    fn describe(&self) -> String {
        match &self.view_id {
            Some(view) => format!("oci-dns {} (view {view})", self.zone),
            None => format!("oci-dns {}", self.zone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(rtype: &str, rdata: &str, ttl: u32) -> Record {
        Record {
            rtype: rtype.into(),
            rdata: rdata.into(),
            ttl,
        }
    }

    #[test]
    fn records_become_a_sorted_canonical_set_of_their_type() {
        let got = to_rrset(
            RecordType::Aaaa,
            &[
                rec("AAAA", "2001:DB8:0:0::2", 60),
                rec("AAAA", "2001:db8::1", 60),
                rec("A", "192.0.2.1", 60),
            ],
        );
        assert_eq!(
            got,
            Some(RRset::new(
                60,
                vec!["2001:db8::1".into(), "2001:db8::2".into()]
            ))
        );
        assert_eq!(to_rrset(RecordType::A, &[]), None);
        assert_eq!(
            to_rrset(RecordType::Cname, &[rec("CNAME", "GW.Example.com", 30)]),
            Some(RRset::new(30, vec!["gw.example.com.".into()]))
        );
    }
}
