//! `[ha]`: one gateway of a cloud's pair. Optional; without it the gateway is alone and always
//! active. The timings must leave the lease room: a keepalive every third of the TTL must be
//! answered before the next one is due, and the margin plus a write's deadline must fit in what
//! is left of the lease between keepalives.

use std::time::Duration;

use super::{known, name_of};
use crate::duration;
use crate::fields::{Fields, Got};
use crate::model::*;
use crate::parse::Entry;
use crate::raw::RawHa;
use crate::source::Sink;
use crate::values::{self, Invalid};

/// `Some(None)` without the section, `None` if it is bad.
pub(super) fn ha(entry: Option<&Entry<RawHa>>, sink: &mut Sink) -> Option<Option<Ha>> {
    let Some(e) = entry else {
        return Some(None);
    };
    let r = &e.value;
    let mut f = Fields::of(e, sink);
    let pair = name_of(&mut f, &r.pair, "pair", 63);
    let mut seen: Vec<String> = Vec::new();
    let etcd = f.non_empty_list(&r.etcd, "etcd", |f, text, span| match etcd_url(text) {
        Ok(()) if seen.iter().any(|s| s == text) => {
            f.report(
                span,
                "etcd",
                Invalid::new(
                    format!("{text:?} is listed twice"),
                    "list each member of the etcd cluster once",
                ),
            );
            None
        }
        Ok(()) => {
            seen.push(text.to_string());
            Some(text.to_string())
        }
        Err(e) => {
            f.report(span, "etcd", e);
            None
        }
    });
    let etcd = f.require(etcd, "etcd");
    let priority = f
        .int(&r.priority, "priority", 0..=255)
        .map(|n| n as u8)
        .or(DEFAULT_HA_PRIORITY);
    let preempt = r.preempt.as_ref().is_some_and(|b| *b.get_ref());
    let preempt_delay = f
        .duration(
            &r.preempt_delay,
            "preempt_delay",
            Duration::ZERO,
            Some(Duration::from_secs(3600)),
        )
        .or(DEFAULT_HA_PREEMPT_DELAY);
    let header = f.span();
    let ttl = f.duration(
        &r.lease_ttl,
        "lease_ttl",
        Duration::from_secs(1),
        Some(Duration::from_secs(60)),
    );
    if let Got::Is(d, span) = &ttl {
        if d.subsec_nanos() != 0 {
            f.error(
                span.clone(),
                format!(
                    "lease_ttl {} is not a whole number of seconds",
                    duration::format(*d)
                ),
                "etcd grants leases in whole seconds: write e.g. lease_ttl = \"2s\"",
            );
        }
    }
    let ttl = known(&ttl, DEFAULT_HA_LEASE_TTL, &header);
    let short = Duration::from_millis(10);
    let margin = f.duration(&r.margin, "margin", short, None);
    let margin = known(&margin, DEFAULT_HA_MARGIN, &header);
    let write = f.duration(&r.write_deadline, "write_deadline", short, None);
    let write = known(&write, DEFAULT_HA_WRITE_DEADLINE, &header);
    let request = f.duration(&r.request_timeout, "request_timeout", short, None);
    let request = known(&request, DEFAULT_HA_REQUEST_TIMEOUT, &header);
    let (
        Some((ttl, _)),
        Some((margin, margin_span)),
        Some((write, _)),
        Some((request, request_span)),
    ) = (ttl, margin, write, request)
    else {
        return None;
    };
    let mut bad = false;
    if request >= ttl / 3 {
        f.error(
            request_span,
            format!(
                "request_timeout {} is not shorter than a third of lease_ttl {} (the keepalive interval)",
                duration::format(request),
                duration::format(ttl)
            ),
            "a keepalive must be answered before the next one is due: lower request_timeout \
             or raise lease_ttl",
        );
        bad = true;
    }
    if margin + write > ttl / 2 {
        f.error(
            margin_span,
            format!(
                "margin {} plus write_deadline {} is more than half of lease_ttl {}",
                duration::format(margin),
                duration::format(write),
                duration::format(ttl)
            ),
            "the active gateway must have lease left for a write between two keepalives: \
             lower margin or write_deadline, or raise lease_ttl",
        );
        bad = true;
    }
    if bad {
        return None;
    }
    Some(Some(Ha {
        pair: pair?,
        etcd: etcd?,
        priority: priority?,
        preempt,
        preempt_delay: preempt_delay?,
        lease_ttl: ttl,
        margin,
        write_deadline: write,
        request_timeout: request,
    }))
}

/// An etcd member's client URL: `http://host:port`, with nothing after the port.
fn etcd_url(text: &str) -> Result<(), Invalid> {
    if text.starts_with("https://") {
        return Err(Invalid::new(
            format!("{text:?}: TLS to etcd is not supported yet"),
            "reach the cluster over the VPC with http://host:2379 (and firewall the port to the \
             pair and the witness)",
        ));
    }
    values::url(text, "http").map_err(|e| {
        Invalid::new(
            e.message,
            "write an etcd client URL, e.g. \"http://10.0.1.10:2379\"",
        )
    })?;
    let rest = &text["http://".len()..];
    if rest.contains(['/', '?', '#']) && !rest.ends_with('/') || rest.matches('/').count() > 1 {
        return Err(Invalid::new(
            format!("{text:?} has a path"),
            "write only the scheme, host and port, e.g. \"http://10.0.1.10:2379\"",
        ));
    }
    Ok(())
}
