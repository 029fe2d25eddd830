//! Route 53 as a [`DnsBackend`]: one record set read with ListResourceRecordSets, replaced
//! with one ChangeResourceRecordSets batch that DELETEs the set exactly as it was read and
//! CREATEs the new one. Route 53 applies a batch all or nothing, so a set that changed since
//! the read fails the whole batch: that is our condition, and [`FailureKind::Conflict`].
//! A change is done when GetChange says INSYNC (all of Route 53's authoritative servers
//! have it), polled here within [`Route53Settings::insync_timeout`].
//!
//! The values are sent back as the server wrote them (its text and order, kept from the last
//! read), because a DELETE must match exactly and our canonical form may differ.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::sign::form;
use super::xml::{self, escape};
use super::{failure, send_signed, ApiError, CredentialChain};
use crate::http::HttpRequest;
use crate::{ActionResult, BoxFut, DnsBackend, Failure, FailureKind, RRset, RecordRef, RecordType};

pub const DEFAULT_ENDPOINT: &str = "https://route53.amazonaws.com";
const REGION: &str = "us-east-1";
const SERVICE: &str = "route53";
const XMLNS: &str = "https://route53.amazonaws.com/doc/2013-04-01/";

/// First wait between two GetChange polls; it doubles up to [`MAX_POLL_INTERVAL`]: most
/// changes are INSYNC within seconds, and GetChange counts against the account's rate limit.
pub const FIRST_POLL_INTERVAL: Duration = Duration::from_millis(50);
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(2);

pub struct Route53Settings {
    /// `Z…`, with or without the `/hostedzone/` prefix.
    pub hosted_zone_id: String,
    /// Else [`DEFAULT_ENDPOINT`].
    pub endpoint: Option<String>,
    pub chain: Arc<CredentialChain>,
    /// Bound on each request.
    pub timeout: Duration,
    /// Bound on the wait for INSYNC after a change was accepted.
    pub insync_timeout: Duration,
}

pub struct Route53 {
    zone: String,
    endpoint: String,
    chain: Arc<CredentialChain>,
    timeout: Duration,
    insync_timeout: Duration,
    /// The last read of each set: what we returned, and the server's own TTL and values.
    served: Mutex<HashMap<RecordRef, (RRset, Vec<String>)>>,
}

impl Route53 {
    pub fn new(settings: Route53Settings) -> Route53 {
        let zone = settings.hosted_zone_id.trim();
        let zone = zone
            .strip_prefix("/hostedzone/")
            .unwrap_or(zone)
            .to_string();
        Route53 {
            zone,
            endpoint: settings
                .endpoint
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
                .trim_end_matches('/')
                .to_string(),
            chain: settings.chain,
            timeout: settings.timeout,
            insync_timeout: settings.insync_timeout,
            served: Mutex::new(HashMap::new()),
        }
    }

    /// The unsigned ListResourceRecordSets request for `rec` (one set from that name and type on).
    pub fn list_request(&self, rec: &RecordRef) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            url: format!(
                "{}/2013-04-01/hostedzone/{}/rrset?{}",
                self.endpoint,
                self.zone,
                form(&[
                    ("name", &rec.name),
                    ("type", rec.rtype.as_str()),
                    ("maxitems", "1")
                ])
            ),
            headers: vec![],
            body: vec![],
        }
    }

    /// The unsigned ChangeResourceRecordSets request: DELETE `seen` as the server holds it
    /// (if any), CREATE `new` (unless it has no values).
    pub fn change_request(
        &self,
        rec: &RecordRef,
        seen: Option<&RRset>,
        new: &RRset,
    ) -> HttpRequest {
        let mut changes = String::new();
        // A set without values cannot exist on Route 53: nothing to delete.
        if let Some(seen) = seen.filter(|s| !s.values.is_empty()) {
            let (ttl, values) = self.as_served(rec, seen);
            changes.push_str(&change("DELETE", rec, ttl, &values));
        }
        if !new.values.is_empty() {
            changes.push_str(&change("CREATE", rec, new.ttl, &new.values));
        }
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ChangeResourceRecordSetsRequest \
             xmlns=\"{XMLNS}\"><ChangeBatch><Comment>isthmus failover</Comment><Changes>{changes}\
             </Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"
        );
        HttpRequest {
            method: "POST".into(),
            url: format!(
                "{}/2013-04-01/hostedzone/{}/rrset/",
                self.endpoint, self.zone
            ),
            headers: vec![("content-type".into(), "text/xml".into())],
            body: body.into_bytes(),
        }
    }

    /// The unsigned GetChange request; `id` with or without the `/change/` prefix.
    pub fn get_change_request(&self, id: &str) -> HttpRequest {
        let id = id.strip_prefix("/change/").unwrap_or(id);
        HttpRequest {
            method: "GET".into(),
            url: format!("{}/2013-04-01/change/{id}", self.endpoint),
            headers: vec![],
            body: vec![],
        }
    }

    /// `seen`'s TTL and values in the server's text when the last read returned exactly
    /// `seen`; else as given.
    fn as_served(&self, rec: &RecordRef, seen: &RRset) -> (u32, Vec<String>) {
        let served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        match served.get(rec) {
            Some((ours, raw)) if ours == seen => (seen.ttl, raw.clone()),
            _ => (seen.ttl, seen.values.clone()),
        }
    }

    fn what(&self, op: &str, rec: &RecordRef) -> String {
        format!("route53 {} {op} {rec}", self.zone)
    }

    async fn call(
        &self,
        req: HttpRequest,
        timeout: Duration,
    ) -> ActionResult<crate::http::HttpResponse> {
        send_signed(req, &self.chain, REGION, SERVICE, timeout).await
    }

    async fn read_set(&self, rec: &RecordRef) -> ActionResult<Option<RRset>> {
        let what = self.what("ListResourceRecordSets", rec);
        let r = self.call(self.list_request(rec), self.timeout).await?;
        if r.status != 200 {
            return Err(failure(&what, &ApiError::from_response(&r), None));
        }
        let Some((rrset, raw)) = listed_set(&what, rec, &r.text())? else {
            return Ok(None);
        };
        self.served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(rec.clone(), (rrset.clone(), raw));
        Ok(Some(rrset))
    }

    async fn replace_set(
        &self,
        rec: &RecordRef,
        seen: Option<&RRset>,
        new: &RRset,
    ) -> ActionResult<()> {
        if seen.is_none_or(|s| s.values.is_empty()) && new.values.is_empty() {
            return Ok(());
        }
        let what = self.what("ChangeResourceRecordSets", rec);
        let r = self
            .call(self.change_request(rec, seen, new), self.timeout)
            .await?;
        if r.status != 200 {
            let e = ApiError::from_response(&r);
            return Err(failure(&what, &e, conflict(&e)));
        }
        let root = xml::parse(&r.text()).map_err(|e| {
            Failure::new(FailureKind::Unavailable, format!("{what}: bad answer: {e}"))
        })?;
        let info = root.child("ChangeInfo");
        let id = info.and_then(|i| i.child_text("Id")).unwrap_or_default();
        let status = info
            .and_then(|i| i.child_text("Status"))
            .unwrap_or_default();
        if status == "INSYNC" {
            return Ok(());
        }
        if id.is_empty() {
            return Err(Failure::new(
                FailureKind::NotVerified,
                format!("{what}: accepted, but the answer has no change id to follow"),
            ));
        }
        tracing::debug!(record = %rec, change = id, "route53 change accepted; waiting for INSYNC");
        self.wait_insync(rec, id).await
    }

    async fn wait_insync(&self, rec: &RecordRef, id: &str) -> ActionResult<()> {
        let what = self.what("GetChange", rec);
        let deadline = tokio::time::Instant::now() + self.insync_timeout;
        let mut interval = FIRST_POLL_INTERVAL;
        let mut last = "PENDING".to_string();
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Failure::new(
                    FailureKind::NotVerified,
                    format!(
                        "{what} {id}: not INSYNC within {:?} (last: {last})",
                        self.insync_timeout
                    ),
                ));
            }
            tokio::time::sleep(interval.min(deadline - now)).await;
            interval = (interval * 2).min(MAX_POLL_INTERVAL);
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                continue;
            }
            let r = match self
                .call(self.get_change_request(id), self.timeout.min(left))
                .await
            {
                Ok(r) => r,
                Err(e) if e.kind == FailureKind::Unavailable => {
                    last = e.message;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if r.status != 200 {
                let e = failure(&what, &ApiError::from_response(&r), None);
                match e.kind {
                    // The change is in; only our view of it is late.
                    FailureKind::Throttled | FailureKind::Unavailable => {
                        last = e.message;
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            let status = xml::parse(&r.text()).ok().and_then(|root| {
                root.child("ChangeInfo")
                    .and_then(|i| i.child_text("Status"))
                    .map(str::to_string)
            });
            match status.as_deref() {
                Some("INSYNC") => return Ok(()),
                Some(s) => last = s.to_string(),
                None => last = "an answer without a status".into(),
            }
        }
    }
}

/// The set of `rec` in a ListResourceRecordSets answer (`text`): canonical, and its values as
/// served (the delete of a later change must name them as they are). `None`: no such set.
pub(crate) fn listed_set(
    what: &str,
    rec: &RecordRef,
    text: &str,
) -> ActionResult<Option<(RRset, Vec<String>)>> {
    let root = xml::parse(text)
        .map_err(|e| Failure::new(FailureKind::Unavailable, format!("{what}: bad answer: {e}")))?;
    let Some(set) = root
        .child("ResourceRecordSets")
        .and_then(|s| s.child("ResourceRecordSet"))
    else {
        return Ok(None);
    };
    // The API lists from (name, type) on: the first set may be the next one.
    let name = set.child_text("Name").unwrap_or_default();
    let rtype = set.child_text("Type").unwrap_or_default();
    if !same_name(name, &rec.name) || rtype != rec.rtype.as_str() {
        return Ok(None);
    }
    if set.child("AliasTarget").is_some() || set.child("SetIdentifier").is_some() {
        return Err(Failure::new(
            FailureKind::Rejected,
            format!("{what}: an alias or routing-policy record set: not managed by isthmus"),
        ));
    }
    let ttl = set
        .child_text("TTL")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let raw: Vec<String> = set
        .child("ResourceRecords")
        .map(|rr| {
            rr.children("ResourceRecord")
                .filter_map(|r| r.child_text("Value"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let rrset = RRset::new(
        ttl,
        raw.iter().map(|v| canonical_value(rec.rtype, v)).collect(),
    );
    Ok(Some((rrset, raw)))
}

/// The errors that mean "the zone no longer holds what we read" (or already holds the set we
/// create): Route 53's InvalidChangeBatch for a DELETE that does not match or a CREATE of an
/// existing set, and moto's InvalidInput for a DELETE of a missing set. Other invalid batches
/// (a bad value, a CNAME beside other data) are our mistake and stay
/// [`FailureKind::Rejected`], so that the caller does not read and retry in a loop.
fn conflict(e: &ApiError) -> Option<FailureKind> {
    let m = e.message.as_str();
    let stale = match e.code.as_str() {
        "InvalidChangeBatch" => {
            m.contains("not found") || m.contains("already exists") || m.contains("do not match")
        }
        "InvalidInput" => m.contains("Action=DELETE"),
        _ => false,
    };
    stale.then_some(FailureKind::Conflict)
}

fn change(action: &str, rec: &RecordRef, ttl: u32, values: &[String]) -> String {
    let records: String = values
        .iter()
        .map(|v| {
            format!(
                "<ResourceRecord><Value>{}</Value></ResourceRecord>",
                escape(v)
            )
        })
        .collect();
    format!(
        "<Change><Action>{action}</Action><ResourceRecordSet><Name>{}</Name><Type>{}</Type>\
         <TTL>{ttl}</TTL><ResourceRecords>{records}</ResourceRecords></ResourceRecordSet></Change>",
        escape(&rec.name),
        rec.rtype
    )
}

/// Route 53 writes names with the trailing dot and `\ooo` escapes for some characters.
fn same_name(served: &str, ours: &str) -> bool {
    let norm = |n: &str| {
        let mut out = String::with_capacity(n.len());
        let mut rest = n;
        while let Some(i) = rest.find('\\') {
            out.push_str(&rest[..i]);
            let esc = rest.get(i + 1..i + 4).unwrap_or("");
            match u8::from_str_radix(esc, 8) {
                Ok(b) if esc.len() == 3 => {
                    out.push(b as char);
                    rest = &rest[i + 4..];
                }
                _ => {
                    out.push('\\');
                    rest = &rest[i + 1..];
                }
            }
        }
        out.push_str(rest);
        let mut out = out.to_ascii_lowercase();
        if !out.ends_with('.') {
            out.push('.');
        }
        out
    };
    norm(served) == norm(ours)
}

fn canonical_value(rtype: RecordType, v: &str) -> String {
    match rtype {
        RecordType::A => v
            .parse::<Ipv4Addr>()
            .map_or(v.to_string(), |a| a.to_string()),
        RecordType::Aaaa => v
            .parse::<Ipv6Addr>()
            .map_or(v.to_string(), |a| a.to_string()),
        RecordType::Cname => {
            let mut n = v.to_ascii_lowercase();
            if !n.ends_with('.') {
                n.push('.');
            }
            n
        }
    }
}

impl DnsBackend for Route53 {
    fn read<'a>(&'a self, rec: &'a RecordRef) -> BoxFut<'a, ActionResult<Option<RRset>>> {
        Box::pin(self.read_set(rec))
    }

    fn replace<'a>(
        &'a self,
        rec: &'a RecordRef,
        seen: Option<&'a RRset>,
        new: &'a RRset,
    ) -> BoxFut<'a, ActionResult<()>> {
        Box::pin(self.replace_set(rec, seen, new))
    }

    fn describe(&self) -> String {
        format!("route53 {}", self.zone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::CredentialSettings;

    fn r53() -> Route53 {
        Route53::new(Route53Settings {
            hosted_zone_id: "/hostedzone/Z1".into(),
            endpoint: None,
            chain: Arc::new(CredentialChain::new(CredentialSettings::default(), [])),
            timeout: Duration::from_secs(1),
            insync_timeout: Duration::from_secs(1),
        })
    }

    fn rec() -> RecordRef {
        RecordRef {
            name: "gw.example.com.".into(),
            rtype: RecordType::A,
        }
    }

    #[test]
    fn a_replace_is_one_batch_that_deletes_what_was_seen_and_creates_the_new_set() {
        let req = r53().change_request(
            &rec(),
            Some(&RRset::new(60, vec!["192.0.2.1".into()])),
            &RRset::new(30, vec!["192.0.2.2".into(), "192.0.2.3".into()]),
        );
        assert_eq!(
            req.url,
            "https://route53.amazonaws.com/2013-04-01/hostedzone/Z1/rrset/"
        );
        let body = String::from_utf8(req.body).unwrap();
        let root = xml::parse(&body).unwrap();
        let changes: Vec<_> = root.find("Changes").unwrap().children("Change").collect();
        assert_eq!(changes.len(), 2, "{body}");
        assert_eq!(changes[0].child_text("Action"), Some("DELETE"));
        assert_eq!(changes[0].find("TTL").map(|t| t.text.as_str()), Some("60"));
        assert_eq!(changes[1].child_text("Action"), Some("CREATE"));
        let values: Vec<_> = changes[1]
            .find("ResourceRecords")
            .unwrap()
            .children("ResourceRecord")
            .map(|r| r.child_text("Value").unwrap())
            .collect();
        assert_eq!(values, ["192.0.2.2", "192.0.2.3"]);
        let only_create =
            r53().change_request(&rec(), None, &RRset::new(60, vec!["192.0.2.2".into()]));
        let body = String::from_utf8(only_create.body).unwrap();
        assert!(
            !body.contains("DELETE") && body.contains("CREATE"),
            "{body}"
        );
    }

    #[test]
    fn the_list_request_names_the_set_and_asks_for_one() {
        let req = r53().list_request(&rec());
        assert_eq!(req.url, "https://route53.amazonaws.com/2013-04-01/hostedzone/Z1/rrset?name=gw.example.com.&type=A&maxitems=1");
        assert_eq!(
            r53().get_change_request("/change/C2").url,
            "https://route53.amazonaws.com/2013-04-01/change/C2"
        );
    }

    #[test]
    fn served_names_compare_without_case_escapes_or_the_trailing_dot() {
        assert!(same_name("GW.Example.com.", "gw.example.com."));
        assert!(same_name("\\052.example.com.", "*.example.com"));
        assert!(!same_name("gx.example.com.", "gw.example.com."));
        assert_eq!(
            canonical_value(RecordType::Aaaa, "2001:DB8:0::1"),
            "2001:db8::1"
        );
        assert_eq!(
            canonical_value(RecordType::Cname, "Other.Example.com"),
            "other.example.com."
        );
    }

    #[test]
    fn only_a_stale_batch_is_a_conflict() {
        let e = |code: &str, message: &str| ApiError {
            status: 400,
            code: code.into(),
            message: message.into(),
        };
        assert_eq!(
            conflict(&e(
                "InvalidChangeBatch",
                "Tried to delete resource record set [name='a.', type='A'] but it was not found"
            )),
            Some(FailureKind::Conflict)
        );
        assert_eq!(
            conflict(&e(
                "InvalidChangeBatch",
                "Tried to create resource record set [name='a.', type='A'] but it already exists"
            )),
            Some(FailureKind::Conflict)
        );
        assert_eq!(conflict(&e("InvalidChangeBatch", "Tried to delete resource record set [name='a.', type='A'] but the values provided do not match the current values")), Some(FailureKind::Conflict));
        assert_eq!(
            conflict(&e(
                "InvalidChangeBatch",
                "ARRDATAIllegalIPv4Address (Value is not a valid IPv4 address)"
            )),
            None
        );
        assert_eq!(
            conflict(&e(
                "InvalidInput",
                "found none in Change with [Action=DELETE, Name=a.]"
            )),
            Some(FailureKind::Conflict)
        );
        assert_eq!(conflict(&e("NoSuchHostedZone", "not found")), None);
    }
}
