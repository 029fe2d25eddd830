//! The rules of each section and list entry, and building the [`Config`] from what passed.
//!
//! Every key is read through [`Fields`], which reports what is wrong with the entry's label and
//! the value's place; rules that involve two keys of the same entry (timeout ≤ interval,
//! reuse_below < suppress_above) live here too, one submodule per subject. Rules across entries
//! (unique names, references, overlapping destinations) are in `relations`. The config is built
//! only when nothing was reported as an error, so a built config always satisfies every rule.

mod dns;
mod routing;
mod sections;

use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;

use crate::fields::{Fields, Got};
use crate::keys::KeyFiles;
use crate::model::*;
use crate::parse::RawConfig;
use crate::relations;
use crate::source::{Sink, Span};
use crate::values::{self, Invalid};

use dns::{dns_group, dns_provider};
use routing::{link, probe, route_group};
use sections::{agent, control, health, metrics, routes};

/// Checks everything and returns the config if there was no error.
pub(crate) fn build(
    raw: &RawConfig,
    path: &Path,
    keys: &KeyFiles,
    sink: &mut Sink,
) -> Option<Config> {
    let agent = agent(raw.agent.as_ref(), sink);
    let control = control(raw.control.as_ref(), sink);
    let metrics = metrics(raw.metrics.as_ref(), sink);
    let routes = routes(raw.routes.as_ref(), sink);
    let health = health(raw.health.as_ref(), raw.damping.as_ref(), sink);
    let default_table = routes.as_ref().map_or(MAIN_TABLE, |r| r.table);
    let links: Vec<_> = raw.links.iter().map(|e| link(e, keys, sink)).collect();
    let probes: Vec<_> = raw.probes.iter().map(|e| probe(e, sink)).collect();
    let route_groups: Vec<_> = raw
        .route_groups
        .iter()
        .map(|e| route_group(e, default_table, sink))
        .collect();
    let dns_providers: Vec<_> = raw
        .dns_providers
        .iter()
        .map(|e| dns_provider(e, keys, sink))
        .collect();
    let dns_groups: Vec<_> = raw.dns_groups.iter().map(|e| dns_group(e, sink)).collect();
    relations::check(raw, default_table, sink);
    if sink.error_count() > 0 {
        return None;
    }
    Some(Config {
        path: path.to_path_buf(),
        agent: agent?,
        control: control?,
        metrics: metrics?,
        routes: routes?,
        health: health?,
        links: links.into_iter().collect::<Option<_>>()?,
        probes: probes.into_iter().collect::<Option<_>>()?,
        route_groups: route_groups.into_iter().collect::<Option<_>>()?,
        dns_providers: dns_providers.into_iter().collect::<Option<_>>()?,
        dns_groups: dns_groups.into_iter().collect::<Option<_>>()?,
    })
}

pub(super) fn name(f: &mut Fields, field: &crate::raw::Text, max: usize) -> Option<String> {
    let got = f.parsed(field, "name", |s| {
        values::object_name(s, max).map(|()| s.to_string())
    });
    f.require(got, "name")
}

pub(super) fn absolute_path(text: &str) -> Result<PathBuf, Invalid> {
    let path = Path::new(text);
    if text.is_empty() || !path.is_absolute() {
        return Err(Invalid::new(
            format!("{text:?} is not an absolute path"),
            "write a path starting with '/'",
        ));
    }
    Ok(path.to_path_buf())
}

/// The value and its place (the default's place is the entry header), or `None` if bad.
pub(super) fn known<V: Clone>(got: &Got<V>, default: V, header: &Span) -> Option<(V, Span)> {
    match got {
        Got::Is(v, span) => Some((v.clone(), span.clone())),
        Got::Absent => Some((default, header.clone())),
        Got::Bad => None,
    }
}

/// A CIDR that must be a network address (routes and allowed IPs).
pub(super) fn network(f: &mut Fields, key: &str, text: &str, span: Span) -> Option<IpNetwork> {
    match values::cidr(text) {
        Ok(net) if net.ip() == net.network() => Some(net),
        Ok(net) => {
            let fixed = values::network_of(&net);
            f.report(
                span,
                key,
                Invalid::new(
                    format!("{text} has host bits set"),
                    format!("did you mean {fixed}?"),
                ),
            );
            None
        }
        Err(e) => {
            f.report(span, key, e);
            None
        }
    }
}
