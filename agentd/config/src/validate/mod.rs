//! The rules of each section and list entry, and building the [`Config`] from what passed.
//!
//! Every key is read through [`Fields`], which reports what is wrong with the entry's label and
//! the value's place; rules that involve two keys of the same entry (timeout ≤ interval,
//! reuse_below < suppress_above) live here too, one submodule per subject. Rules across entries
//! (unique names, references, overlapping destinations) are in `relations`. The config is built
//! only when nothing was reported as an error, so a built config always satisfies every rule.

mod actions;
mod cloud;
mod dns;
mod ha;
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

use actions::{actions, hook};
use cloud::{aws, oci};
use dns::{dns_group, dns_provider};
use ha::ha;
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
    let actions = actions(raw.actions.as_ref(), sink);
    let aws = aws(raw.aws.as_ref(), sink);
    let oci = oci(raw.oci.as_ref(), keys, sink);
    let hooks: Vec<_> = raw.hooks.iter().map(|e| hook(e, sink)).collect();
    let ha = ha(raw.ha.as_ref(), sink);
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
        actions: actions?,
        aws: aws?,
        oci: oci?,
        hooks: hooks.into_iter().collect::<Option<_>>()?,
        ha: ha?,
    })
}

/// A command run directly (no shell, no `$PATH`): a non-empty list whose first element is the
/// program's absolute path.
pub(super) fn command(f: &mut Fields, field: &crate::raw::Texts, key: &str) -> Got<Vec<String>> {
    let Some(list) = field else {
        return Got::Absent;
    };
    let items = list.get_ref();
    let Some(program) = items.first() else {
        f.error(
            list.span(),
            format!("{key} is empty"),
            "give the program's absolute path and its arguments, e.g. \
             [\"/usr/local/bin/notify\", \"--channel\", \"db\"]",
        );
        return Got::Bad;
    };
    if !Path::new(program.get_ref()).is_absolute() {
        f.error(
            program.span(),
            format!(
                "{key}: the program {:?} is not an absolute path",
                program.get_ref()
            ),
            "write the program's full path (e.g. \"/usr/local/bin/notify\"): agentd runs it \
             directly, without a shell or $PATH",
        );
        return Got::Bad;
    }
    if let Some(bad) = items.iter().find(|a| a.get_ref().contains('\0')) {
        f.error(
            bad.span(),
            format!("{key}: an argument contains a NUL character"),
            "remove the \\u0000: no program can receive it",
        );
        return Got::Bad;
    }
    Got::Is(
        items.iter().map(|a| a.get_ref().clone()).collect(),
        list.span(),
    )
}

pub(super) fn name(f: &mut Fields, field: &crate::raw::Text, max: usize) -> Option<String> {
    name_of(f, field, "name", max)
}

/// A required object name under `key`.
pub(super) fn name_of(
    f: &mut Fields,
    field: &crate::raw::Text,
    key: &str,
    max: usize,
) -> Option<String> {
    let got = f.parsed(field, key, |s| {
        values::object_name(s, max).map(|()| s.to_string())
    });
    f.require(got, key)
}

pub(super) fn absolute_path(text: &str) -> Result<PathBuf, Invalid> {
    if crate::redact::looks_like_secret(text) {
        return Err(Invalid::new(
            "the value looks like a key or secret itself, not a path (not shown)",
            "write the secret into a file that only root can read and give its absolute path",
        ));
    }
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
