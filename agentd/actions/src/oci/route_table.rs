//! OCI VCN route tables: `GetRouteTable` and `UpdateRouteTable` on
//! `/20160918/routeTables/{id}`.
//!
//! `UpdateRouteTable` replaces the table's whole rule list, so a write is a read, an edit and a
//! `PUT` of every rule with `if-match: <etag of the read>`. The edit is a pure function
//! ([`plan`]): rules to our destinations (`destinationType` `CIDR_BLOCK`) are retargeted, added
//! or removed; every other rule goes back exactly as it came (all its fields, in its place),
//! kept as the JSON OCI sent. A `412` means the table changed since the read: somebody else's
//! rule may be in the new version, so the caller reads again rather than us writing over it.
//!
//! The rules of the last read are kept with its etag, so that `apply` after `read` costs one
//! request; when the caller's `seen.version` is not that etag the table is read again, and a
//! different etag is a [`FailureKind::Conflict`] without a write.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::{encode, endpoint, system_clock, Client, Clock, OciAuth};
use crate::http::HttpResponse;
use crate::{
    ActionResult, BoxFut, Failure, FailureKind, RouteTableBackend, TableRoutes, TableSeen,
};

/// What an [`OciRouteTable`] is made from. Config keys: `[oci]` `region`, `iaas_endpoint`; a
/// route group's `oci_route_tables` `id`.
#[derive(Debug, Clone)]
pub struct OciRouteTableConfig {
    /// The route table's OCID.
    pub route_table_id: String,
    /// Default `https://iaas.{region}.oraclecloud.com`.
    pub endpoint: Option<String>,
    pub region: String,
    pub auth: Arc<OciAuth>,
    /// For each request, from connect to the last byte of the answer.
    pub timeout: Duration,
}

/// One VCN route table.
pub struct OciRouteTable {
    id: String,
    url: String,
    client: Client,
    /// The etag and rules of the last read or write.
    last: Mutex<Option<(String, Vec<Value>)>>,
}

impl OciRouteTable {
    pub fn new(config: OciRouteTableConfig) -> Result<OciRouteTable, Failure> {
        let endpoint = endpoint(
            config.endpoint.as_deref(),
            format!("https://iaas.{}.oraclecloud.com", config.region),
        )?;
        Ok(OciRouteTable {
            url: format!(
                "{endpoint}/20160918/routeTables/{}",
                encode(&config.route_table_id)
            ),
            id: config.route_table_id,
            client: Client {
                auth: config.auth,
                timeout: config.timeout,
                clock: system_clock(),
            },
            last: Mutex::new(None),
        })
    }

    /// Sign with this clock instead of the system's (tests of clock skew).
    pub fn with_clock(mut self, clock: Clock) -> OciRouteTable {
        self.client.clock = clock;
        self
    }

    fn what(&self, method: &str) -> String {
        format!("OCI route table {method} {}", self.id)
    }

    /// The table's etag and rules, now.
    async fn fetch(&self) -> ActionResult<(Option<String>, Vec<Value>)> {
        let what = self.what("GET");
        let resp = self
            .client
            .call(&what, "GET", self.url.clone(), vec![], None)
            .await?;
        let rules = rules(&what, &resp)?;
        let etag = resp.header("etag").map(str::to_string);
        self.remember(etag.clone().map(|e| (e, rules.clone())));
        Ok((etag, rules))
    }

    fn remember(&self, last: Option<(String, Vec<Value>)>) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = last;
    }

    async fn write(&self, seen: &TableSeen, desired: &TableRoutes) -> ActionResult<()> {
        let what = self.what("PUT");
        let Some(version) = seen.version.as_deref() else {
            return Err(Failure::new(
                FailureKind::Rejected,
                format!("{what}: the read returned no etag to write on"),
            ));
        };
        let cached = self
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(etag, _)| etag == version)
            .map(|(_, rules)| rules.clone());
        let current = match cached {
            Some(rules) => rules,
            None => match self.fetch().await? {
                (Some(etag), rules) if etag == version => rules,
                _ => {
                    return Err(Failure::new(
                        FailureKind::Conflict,
                        format!("{what}: the table changed since it was read"),
                    ))
                }
            },
        };
        let Some(rules) = plan(&current, desired) else {
            return Ok(());
        };
        let body = serde_json::to_vec(&serde_json::json!({ "routeRules": rules }))
            .map_err(|e| Failure::new(FailureKind::Rejected, e.to_string()))?;
        let result = self
            .client
            .call(
                &what,
                "PUT",
                self.url.clone(),
                vec![
                    ("if-match".to_string(), version.to_string()),
                    ("content-type".to_string(), "application/json".to_string()),
                ],
                Some(body),
            )
            .await;
        match result {
            Ok(resp) => {
                let after = match (rules_of(&resp), resp.header("etag")) {
                    (Some(rules), Some(etag)) => Some((etag.to_string(), rules)),
                    _ => None,
                };
                self.remember(after);
                Ok(())
            }
            Err(f) => {
                self.remember(None);
                Err(f)
            }
        }
    }
}

pub(crate) fn rules(what: &str, resp: &HttpResponse) -> ActionResult<Vec<Value>> {
    rules_of(resp).ok_or_else(|| {
        Failure::new(
            FailureKind::Rejected,
            format!("{what}: the answer has no routeRules list"),
        )
    })
}

fn rules_of(resp: &HttpResponse) -> Option<Vec<Value>> {
    let body: Value = serde_json::from_slice(&resp.body).ok()?;
    body.get("routeRules")?.as_array().cloned()
}

/// The destination of a rule that routes a CIDR block (`destination`, or the deprecated
/// `cidrBlock` of old rules), canonical; `None` for rules to a service or without one.
pub(crate) fn cidr_destination(rule: &Value) -> Option<String> {
    let kind = rule.get("destinationType").and_then(Value::as_str);
    if kind.is_some_and(|k| k != "CIDR_BLOCK") {
        return None;
    }
    let dest = rule
        .get("destination")
        .or_else(|| rule.get("cidrBlock"))
        .and_then(Value::as_str)?;
    Some(canonical_cidr(dest))
}

/// `10.2.3.4/16` → `10.2.0.0/16`; text that is not a CIDR block is compared as it is.
fn canonical_cidr(s: &str) -> String {
    let s = s.trim();
    let Some((addr, len)) = s.split_once('/') else {
        return s.to_string();
    };
    let (Ok(addr), Ok(len)) = (addr.parse::<IpAddr>(), len.parse::<u32>()) else {
        return s.to_string();
    };
    match addr {
        IpAddr::V4(a) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            format!("{}/{len}", std::net::Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            format!("{}/{len}", std::net::Ipv6Addr::from(u128::from(a) & mask))
        }
        _ => s.to_string(),
    }
}

/// Our destinations' targets in `rules`.
pub(crate) fn our_routes(rules: &[Value], destinations: &[String]) -> TableRoutes {
    destinations
        .iter()
        .map(|d| {
            let want = canonical_cidr(d);
            let target = rules
                .iter()
                .find(|r| cidr_destination(r).as_deref() == Some(want.as_str()))
                .and_then(|r| r.get("networkEntityId"))
                .and_then(Value::as_str)
                .map(str::to_string);
            (d.clone(), target)
        })
        .collect()
}

/// The rule list that holds `desired` for our destinations and every other rule of `rules` as
/// it is, in its place; new rules go at the end. `None` when `rules` already holds `desired`.
pub(crate) fn plan(rules: &[Value], desired: &TableRoutes) -> Option<Vec<Value>> {
    let desired: Vec<(String, &String, Option<&String>)> = desired
        .iter()
        .map(|(d, t)| (canonical_cidr(d), d, t.as_ref()))
        .collect();
    let mut placed = vec![false; desired.len()];
    let mut changed = false;
    let mut out = Vec::with_capacity(rules.len() + desired.len());
    for rule in rules {
        let ours =
            cidr_destination(rule).and_then(|dest| desired.iter().position(|(d, _, _)| *d == dest));
        let Some(i) = ours else {
            out.push(rule.clone());
            continue;
        };
        if placed[i] {
            // A second rule to the same destination (OCI refuses these; be safe): drop it.
            changed = true;
            continue;
        }
        placed[i] = true;
        match desired[i].2 {
            None => changed = true,
            Some(target) => {
                if rule.get("networkEntityId").and_then(Value::as_str) == Some(target.as_str()) {
                    out.push(rule.clone());
                } else {
                    let mut rule = rule.clone();
                    rule["networkEntityId"] = Value::String(target.clone());
                    out.push(rule);
                    changed = true;
                }
            }
        }
    }
    for (i, (_, dest, target)) in desired.iter().enumerate() {
        if let (false, Some(target)) = (placed[i], target) {
            out.push(serde_json::json!({
                "destination": dest,
                "destinationType": "CIDR_BLOCK",
                "networkEntityId": target,
            }));
            changed = true;
        }
    }
    changed.then_some(out)
}

impl RouteTableBackend for OciRouteTable {
    fn read<'a>(&'a self, destinations: &'a [String]) -> BoxFut<'a, ActionResult<TableSeen>> {
        Box::pin(async move {
            let (version, rules) = self.fetch().await?;
            Ok(TableSeen {
                routes: our_routes(&rules, destinations),
                version,
            })
        })
    }

    fn apply<'a>(
        &'a self,
        seen: &'a TableSeen,
        desired: &'a TableRoutes,
    ) -> BoxFut<'a, ActionResult<()>> {
        Box::pin(self.write(seen, desired))
    }

    fn describe(&self) -> String {
        format!("oci {}", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table() -> Vec<Value> {
        vec![
            json!({"destination": "0.0.0.0/0", "destinationType": "CIDR_BLOCK",
                   "networkEntityId": "ocid1.internetgateway.oc1..igw", "description": "default"}),
            json!({"destination": "all-iad-services-in-oracle-services-network",
                   "destinationType": "SERVICE_CIDR_BLOCK", "networkEntityId": "ocid1.servicegateway.oc1..sg"}),
            json!({"cidrBlock": "10.2.0.0/16", "destination": "10.2.0.0/16", "destinationType": "CIDR_BLOCK",
                   "networkEntityId": "ocid1.privateip.oc1..a", "routeType": "STATIC"}),
            json!({"destination": "192.168.0.0/24", "destinationType": "CIDR_BLOCK",
                   "networkEntityId": "ocid1.drg.oc1..other"}),
        ]
    }

    fn routes(pairs: &[(&str, Option<&str>)]) -> TableRoutes {
        pairs
            .iter()
            .map(|(d, t)| (d.to_string(), t.map(str::to_string)))
            .collect()
    }

    #[test]
    fn our_routes_are_read_by_canonical_cidr_and_only_from_cidr_rules() {
        let got = our_routes(
            &table(),
            &[
                "10.2.0.0/16".into(),
                "10.3.0.0/16".into(),
                "0.0.0.0/0".into(),
            ],
        );
        assert_eq!(
            got,
            routes(&[
                ("10.2.0.0/16", Some("ocid1.privateip.oc1..a")),
                ("10.3.0.0/16", None),
                ("0.0.0.0/0", Some("ocid1.internetgateway.oc1..igw")),
            ])
        );
        assert_eq!(canonical_cidr("10.2.3.4/16"), "10.2.0.0/16");
        assert_eq!(canonical_cidr("2001:db8::1/32"), "2001:db8::/32");
    }

    #[test]
    fn a_retarget_changes_only_the_target_of_our_rule_in_its_place() {
        let out = plan(
            &table(),
            &routes(&[("10.2.0.0/16", Some("ocid1.privateip.oc1..b"))]),
        )
        .unwrap();
        let mut want = table();
        want[2]["networkEntityId"] = json!("ocid1.privateip.oc1..b");
        assert_eq!(out, want);
    }

    #[test]
    fn new_routes_go_last_and_removed_ones_leave_the_others_in_order() {
        let out = plan(
            &table(),
            &routes(&[
                ("10.2.0.0/16", None),
                ("10.3.0.0/16", Some("ocid1.drg.oc1..d")),
            ]),
        )
        .unwrap();
        let t = table();
        assert_eq!(
            out,
            vec![
                t[0].clone(),
                t[1].clone(),
                t[3].clone(),
                json!({"destination": "10.3.0.0/16", "destinationType": "CIDR_BLOCK",
                       "networkEntityId": "ocid1.drg.oc1..d"}),
            ]
        );
    }

    #[test]
    fn a_table_that_already_holds_the_routes_needs_no_write() {
        assert_eq!(
            plan(
                &table(),
                &routes(&[
                    ("10.2.0.0/16", Some("ocid1.privateip.oc1..a")),
                    ("10.9.0.0/16", None)
                ])
            ),
            None
        );
    }
}
