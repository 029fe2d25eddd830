//! Drift between the routes agentd wants (`netctl --json routes`) and the routes of its
//! protocol in the kernel (`ip -j route show table all proto N`), pure: the soak counts the
//! missing, extra and duplicate ones at each sample.

use std::collections::BTreeMap;

use serde_json::Value;

/// What differs; all zero when the kernel holds exactly what agentd wants.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drift {
    /// Wanted routes the kernel does not have as wanted (absent, or another device or type).
    pub missing: usize,
    /// Owned routes in the kernel that agentd does not want (table, destination, metric).
    pub extra: usize,
    /// Owned routes beyond the wanted number for one table and destination.
    pub duplicate: usize,
}

impl Drift {
    pub fn is_zero(&self) -> bool {
        *self == Drift::default()
    }

    pub fn max(self, other: Drift) -> Drift {
        Drift {
            missing: self.missing.max(other.missing),
            extra: self.extra.max(other.extra),
            duplicate: self.duplicate.max(other.duplicate),
        }
    }
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "missing {} extra {} duplicate {}",
            self.missing, self.extra, self.duplicate
        )
    }
}

/// A route as both sides can say it: where, and what it does (`dev X` or a type).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Route {
    table: u32,
    destination: String,
    metric: u32,
    what: String,
}

/// `routes`: the JSON of `netctl --json routes`; `kernel`: of `ip -j route show table all proto
/// N` in the gateway's namespace.
pub fn drift(routes: &Value, kernel: &Value) -> Result<Drift, String> {
    let wanted = routes["routes"]
        .as_array()
        .ok_or("netctl routes: no `routes` list")?
        .iter()
        .map(wanted_route)
        .collect::<Result<Vec<Route>, String>>()?;
    let actual = kernel
        .as_array()
        .ok_or("ip -j route: not a list")?
        .iter()
        .map(kernel_route)
        .collect::<Result<Vec<Route>, String>>()?;
    let key = |r: &Route| (r.table, r.destination.clone(), r.metric);
    let missing = wanted.iter().filter(|w| !actual.contains(w)).count();
    let extra = actual
        .iter()
        .filter(|a| !wanted.iter().any(|w| key(w) == key(a)))
        .count();
    let mut per_destination: BTreeMap<(u32, &str), (usize, usize)> = BTreeMap::new();
    for w in &wanted {
        per_destination
            .entry((w.table, &w.destination))
            .or_default()
            .0 += 1;
    }
    for a in &actual {
        per_destination
            .entry((a.table, &a.destination))
            .or_default()
            .1 += 1;
    }
    let duplicate = per_destination
        .values()
        .map(|(w, a)| a.saturating_sub((*w).max(1)))
        .sum();
    Ok(Drift {
        missing,
        extra,
        duplicate,
    })
}

fn wanted_route(r: &Value) -> Result<Route, String> {
    let desired = r["desired"].as_str().ok_or("a route without `desired`")?;
    let what = match desired.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["dev", dev, ..] => format!("dev {dev}"),
        [kind, ..] => (*kind).to_owned(),
        [] => return Err("an empty `desired`".into()),
    };
    Ok(Route {
        table: r["table"].as_u64().ok_or("a route without `table`")? as u32,
        destination: r["destination"]
            .as_str()
            .ok_or("a route without `destination`")?
            .to_owned(),
        metric: r["metric"].as_u64().unwrap_or(0) as u32,
        what,
    })
}

fn kernel_route(r: &Value) -> Result<Route, String> {
    let table = match &r["table"] {
        Value::Null => 254,
        Value::String(s) if s == "main" => 254,
        Value::String(s) if s == "local" => 255,
        Value::String(s) if s == "default" => 253,
        Value::String(s) => s.parse().map_err(|_| format!("table {s}"))?,
        Value::Number(n) => n.as_u64().unwrap_or(0) as u32,
        other => return Err(format!("table {other}")),
    };
    let what = match (r["type"].as_str(), r["dev"].as_str()) {
        (None | Some("unicast"), Some(dev)) => format!("dev {dev}"),
        (Some(kind), _) => kind.to_owned(),
        (None, None) => return Err(format!("a kernel route without type or dev: {r}")),
    };
    let destination = match r["dst"].as_str().ok_or("a kernel route without `dst`")? {
        "default" => "0.0.0.0/0".to_owned(),
        d if d.contains('/') => d.to_owned(),
        d => format!("{d}/32"),
    };
    Ok(Route {
        table,
        destination,
        metric: r["metric"].as_u64().unwrap_or(0) as u32,
        what,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wanted() -> Value {
        json!({"protocol": 99, "routes": [
            {"group": "remote", "link": "interconnect", "destination": "10.2.0.0/16",
             "table": 254, "metric": 100, "desired": "dev skt0 mtu 1420", "in_sync": true},
            {"group": "remote", "destination": "10.2.0.0/16", "table": 254, "metric": 4000,
             "desired": "unreachable", "in_sync": true},
        ]})
    }

    #[test]
    fn the_kernel_holding_what_is_wanted_is_no_drift() {
        let kernel = json!([
            {"dst": "10.2.0.0/16", "dev": "skt0", "protocol": "99", "metric": 100, "mtu": 1420},
            {"type": "unreachable", "dst": "10.2.0.0/16", "table": "main", "metric": 4000},
        ]);
        assert_eq!(drift(&wanted(), &kernel), Ok(Drift::default()));
    }

    #[test]
    fn a_route_on_the_wrong_link_a_stray_one_and_a_second_one_are_each_counted() {
        // The switch left the old route at another metric and put the new one on skt1.
        let kernel = json!([
            {"dst": "10.2.0.0/16", "dev": "skt1", "metric": 100},
            {"dst": "10.2.0.0/16", "dev": "skt0", "metric": 101},
            {"type": "unreachable", "dst": "10.2.0.0/16", "metric": 4000},
            {"dst": "10.9.0.0/16", "dev": "skt0", "table": "1000", "metric": 100},
        ]);
        let d = drift(&wanted(), &kernel).unwrap();
        assert_eq!(
            d,
            Drift {
                missing: 1,
                extra: 2,
                duplicate: 1
            },
            "{d}"
        );
        // Nothing in the kernel: everything is missing.
        let d = drift(&wanted(), &json!([])).unwrap();
        assert_eq!(d.missing, 2);
        assert!(!d.is_zero());
        assert!(drift(&json!({}), &json!([])).is_err());
    }
}
