//! An EC2 route table as a [`RouteTableBackend`]: DescribeRouteTables reads the targets of
//! our destinations; each destination whose target differs gets one ReplaceRoute (or
//! CreateRoute when it has no route, DeleteRoute when it should have none). Other routes of
//! the table are never named in a request, so they cannot be touched.
//!
//! EC2 has no conditional write: a ReplaceRoute overwrites whatever the route points at. The
//! one race it does report is a route that vanished between our read and our write
//! ("use CreateRoute"), or appeared (`RouteAlreadyExists`): both are
//! [`FailureKind::Conflict`], and the caller reads again.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::sign::form;
use super::xml;
use super::{failure, send_signed, ApiError, CredentialChain};
use crate::http::{HttpRequest, HttpResponse};
use crate::{
    ActionResult, BoxFut, Failure, FailureKind, RouteTableBackend, TableRoutes, TableSeen,
};

const SERVICE: &str = "ec2";
const VERSION: &str = "2016-11-15";
const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// The fields of a route that name its target, in the order we report them: an instance
/// route also carries its ENI, and the ENI is what traffic actually goes to.
const TARGET_FIELDS: [&str; 10] = [
    "networkInterfaceId",
    "instanceId",
    "transitGatewayId",
    "gatewayId",
    "natGatewayId",
    "vpcPeeringConnectionId",
    "egressOnlyInternetGatewayId",
    "localGatewayId",
    "carrierGatewayId",
    "coreNetworkArn",
];

pub struct Ec2RouteTableSettings {
    /// `rtb-…`.
    pub route_table_id: String,
    /// The table's region, e.g. `eu-central-1`.
    pub region: String,
    /// Else `https://ec2.{region}.amazonaws.com`.
    pub endpoint: Option<String>,
    pub chain: Arc<CredentialChain>,
    /// Bound on each request.
    pub timeout: Duration,
}

pub struct Ec2RouteTable {
    table: String,
    region: String,
    endpoint: String,
    chain: Arc<CredentialChain>,
    timeout: Duration,
}

impl Ec2RouteTable {
    pub fn new(settings: Ec2RouteTableSettings) -> Ec2RouteTable {
        let endpoint = settings
            .endpoint
            .unwrap_or_else(|| format!("https://ec2.{}.amazonaws.com", settings.region));
        Ec2RouteTable {
            table: settings.route_table_id,
            region: settings.region,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            chain: settings.chain,
            timeout: settings.timeout,
        }
    }

    fn request(&self, params: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            url: format!("{}/", self.endpoint),
            headers: vec![("content-type".into(), FORM.into())],
            body: form(params).into_bytes(),
        }
    }

    /// The unsigned DescribeRouteTables request for our table.
    pub fn describe_request(&self) -> HttpRequest {
        self.request(&[
            ("Action", "DescribeRouteTables"),
            ("RouteTableId.1", &self.table),
            ("Version", VERSION),
        ])
    }

    /// The unsigned `ReplaceRoute`/`CreateRoute` (with a target) or `DeleteRoute` (without)
    /// request for `destination`.
    pub fn route_request(
        &self,
        action: &str,
        destination: &str,
        target: Option<&str>,
    ) -> ActionResult<HttpRequest> {
        let dest_param = if destination.contains(':') {
            "DestinationIpv6CidrBlock"
        } else {
            "DestinationCidrBlock"
        };
        let mut params = vec![
            ("Action", action),
            ("Version", VERSION),
            ("RouteTableId", self.table.as_str()),
            (dest_param, destination),
        ];
        if let Some(t) = target {
            params.push((target_param(t)?, t));
        }
        Ok(self.request(&params))
    }

    async fn call(&self, req: HttpRequest) -> ActionResult<HttpResponse> {
        send_signed(req, &self.chain, &self.region, SERVICE, self.timeout).await
    }

    async fn read_table(&self, destinations: &[String]) -> ActionResult<TableSeen> {
        let what = format!("ec2 {} DescribeRouteTables {}", self.region, self.table);
        let r = self.call(self.describe_request()).await?;
        if r.status != 200 {
            return Err(failure(&what, &ApiError::from_response(&r), None));
        }
        described_routes(&self.table, &what, destinations, &r.text())
    }

    async fn apply_table(&self, seen: &TableSeen, desired: &TableRoutes) -> ActionResult<()> {
        for (dest, want) in desired {
            let dest = canonical_cidr(dest);
            let have = seen.routes.get(&dest).cloned().flatten();
            let action = match (&have, want) {
                (a, b) if a == b => continue,
                (Some(_), Some(_)) => "ReplaceRoute",
                (None, Some(_)) => "CreateRoute",
                (Some(_), None) => "DeleteRoute",
                (None, None) => continue,
            };
            let req = self.route_request(action, &dest, want.as_deref())?;
            let what = format!(
                "ec2 {} {action} {} {dest} -> {}",
                self.region,
                self.table,
                want.as_deref().unwrap_or("none")
            );
            let r = self.call(req).await?;
            if r.status != 200 {
                let e = ApiError::from_response(&r);
                return Err(failure(&what, &e, conflict(action, &e)));
            }
            // AWS answers <return>true</return>; moto leaves it out.
            let refused = xml::parse(&r.text())
                .ok()
                .and_then(|root| root.child_text("return").map(|v| v == "false"))
                .unwrap_or(false);
            if refused {
                return Err(Failure::new(
                    FailureKind::Rejected,
                    format!("{what}: answered false"),
                ));
            }
            tracing::info!(table = %self.table, destination = %dest, from = have.as_deref().unwrap_or("none"),
                to = want.as_deref().unwrap_or("none"), "cloud route changed");
        }
        Ok(())
    }
}

/// Our `destinations` and their targets in a DescribeRouteTables answer (`text`) for `table_id`:
/// every destination is a key, with `None` where the table has no route for it.
pub(crate) fn described_routes(
    table_id: &str,
    what: &str,
    destinations: &[String],
    text: &str,
) -> ActionResult<TableSeen> {
    let root = xml::parse(text)
        .map_err(|e| Failure::new(FailureKind::Unavailable, format!("{what}: bad answer: {e}")))?;
    let table = root
        .child("routeTableSet")
        .into_iter()
        .flat_map(|s| s.children("item"))
        .find(|t| t.child_text("routeTableId") == Some(table_id))
        .ok_or_else(|| {
            Failure::new(
                FailureKind::Rejected,
                format!("{what}: the answer has no such table"),
            )
        })?;
    let mut routes: TableRoutes = destinations
        .iter()
        .map(|d| (canonical_cidr(d), None))
        .collect();
    for route in table
        .child("routeSet")
        .into_iter()
        .flat_map(|s| s.children("item"))
    {
        let Some(dest) = route
            .child_text("destinationCidrBlock")
            .or_else(|| route.child_text("destinationIpv6CidrBlock"))
        else {
            continue; // a prefix-list route: never ours
        };
        let dest = canonical_cidr(dest);
        let Some(slot) = routes.get_mut(&dest) else {
            continue;
        };
        let target = TARGET_FIELDS
            .iter()
            .find_map(|f| route.child_text(f).filter(|v| !v.is_empty()));
        if route.child_text("state") == Some("blackhole") {
            tracing::warn!(table = %table_id, destination = %dest, target = target.unwrap_or(""),
                    "route is a blackhole: its target is stopped or gone");
        }
        *slot = target.map(str::to_string);
    }
    Ok(TableSeen {
        routes,
        version: None,
    })
}

/// The request parameter that names a target of this kind.
fn target_param(target: &str) -> ActionResult<&'static str> {
    let param = if target.starts_with("eni-") {
        "NetworkInterfaceId"
    } else if target.starts_with("i-") {
        "InstanceId"
    } else if target.starts_with("vgw-") || target.starts_with("igw-") {
        "GatewayId"
    } else if target.starts_with("tgw-") {
        "TransitGatewayId"
    } else {
        return Err(Failure::new(
            FailureKind::Rejected,
            format!(
                "route target {target:?}: not an ENI (eni-), instance (i-), gateway (vgw-, igw-) \
                 or transit gateway (tgw-)"
            ),
        ));
    };
    Ok(param)
}

/// A route that vanished (ReplaceRoute, DeleteRoute) or appeared (CreateRoute) since the read.
fn conflict(action: &str, e: &ApiError) -> Option<FailureKind> {
    let stale = match action {
        "ReplaceRoute" => e.code == "InvalidParameterValue" && e.message.contains("CreateRoute"),
        "CreateRoute" => e.code == "RouteAlreadyExists",
        "DeleteRoute" => e.code == "InvalidRoute.NotFound",
        _ => false,
    };
    stale.then_some(FailureKind::Conflict)
}

/// `10.2.0.0/16` as `IpAddr` prints it (so `2001:DB8::/32` equals `2001:db8::/32`).
fn canonical_cidr(s: &str) -> String {
    match s.trim().split_once('/') {
        Some((a, len)) => match (a.parse::<IpAddr>(), len.parse::<u8>()) {
            (Ok(a), Ok(len)) => format!("{a}/{len}"),
            _ => s.trim().to_string(),
        },
        None => s.trim().to_string(),
    }
}

impl RouteTableBackend for Ec2RouteTable {
    fn read<'a>(&'a self, destinations: &'a [String]) -> BoxFut<'a, ActionResult<TableSeen>> {
        Box::pin(self.read_table(destinations))
    }

    fn apply<'a>(
        &'a self,
        seen: &'a TableSeen,
        desired: &'a TableRoutes,
    ) -> BoxFut<'a, ActionResult<()>> {
        Box::pin(self.apply_table(seen, desired))
    }

    fn describe(&self) -> String {
        format!("aws {}", self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::CredentialSettings;

    fn table() -> Ec2RouteTable {
        Ec2RouteTable::new(Ec2RouteTableSettings {
            route_table_id: "rtb-1".into(),
            region: "eu-central-1".into(),
            endpoint: None,
            chain: Arc::new(CredentialChain::new(CredentialSettings::default(), [])),
            timeout: Duration::from_secs(1),
        })
    }

    #[test]
    fn the_target_id_decides_the_parameter() {
        let body = |t: &str| {
            String::from_utf8(
                table()
                    .route_request("ReplaceRoute", "10.2.0.0/16", Some(t))
                    .unwrap()
                    .body,
            )
            .unwrap()
        };
        assert_eq!(
            body("eni-1"),
            "Action=ReplaceRoute&Version=2016-11-15&RouteTableId=rtb-1&DestinationCidrBlock=10.2.0.0%2F16&NetworkInterfaceId=eni-1"
        );
        assert!(body("i-1").ends_with("&InstanceId=i-1"));
        assert!(body("vgw-1").ends_with("&GatewayId=vgw-1"));
        assert!(body("igw-1").ends_with("&GatewayId=igw-1"));
        assert!(body("tgw-1").ends_with("&TransitGatewayId=tgw-1"));
        let err = table()
            .route_request("ReplaceRoute", "10.2.0.0/16", Some("nat-1"))
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Rejected);
        let del = table()
            .route_request("DeleteRoute", "2001:db8::/32", None)
            .unwrap();
        assert_eq!(del.url, "https://ec2.eu-central-1.amazonaws.com/");
        assert!(String::from_utf8(del.body)
            .unwrap()
            .ends_with("&DestinationIpv6CidrBlock=2001%3Adb8%3A%3A%2F32"));
    }

    #[test]
    fn only_a_route_that_came_or_went_since_the_read_is_a_conflict() {
        let e = |code: &str, message: &str| ApiError {
            status: 400,
            code: code.into(),
            message: message.into(),
        };
        let gone = e(
            "InvalidParameterValue",
            "There is no route defined for '10.2.0.0/16' in the route table. Use CreateRoute instead.",
        );
        assert_eq!(conflict("ReplaceRoute", &gone), Some(FailureKind::Conflict));
        assert_eq!(
            conflict("ReplaceRoute", &e("InvalidParameterValue", "bad cidr")),
            None
        );
        assert_eq!(
            conflict("CreateRoute", &e("RouteAlreadyExists", "")),
            Some(FailureKind::Conflict)
        );
        assert_eq!(
            conflict("ReplaceRoute", &e("InvalidRouteTableID.NotFound", "")),
            None
        );
        assert_eq!(canonical_cidr("2001:DB8::/32"), "2001:db8::/32");
    }
}
