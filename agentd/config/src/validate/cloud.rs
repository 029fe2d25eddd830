//! `[aws]` and `[oci]`: the clouds' API settings. Both sections are optional; `relations` asks
//! for them where something needs them (`aws_route_tables`, `oci_route_tables`, oci providers).
//! The OCI API key is loaded here, permission-checked like every key file.

use super::absolute_path;
use crate::fields::Fields;
use crate::keys::KeyFiles;
use crate::model::*;
use crate::parse::Entry;
use crate::raw::{RawAws, RawOci};
use crate::source::Sink;
use crate::values::{self, Invalid};

/// `Some(None)` without the section, `None` if it is bad.
pub(super) fn aws(entry: Option<&Entry<RawAws>>, sink: &mut Sink) -> Option<Option<Aws>> {
    let Some(e) = entry else {
        return Some(None);
    };
    let r = &e.value;
    let mut f = Fields::of(e, sink);
    let region = f.parsed(&r.region, "region", |s| {
        values::region(s, "AWS", "us-east-1")
    });
    let region = f.require(region, "region");
    let profile = f
        .parsed(&r.profile, "profile", |s| {
            let bad = s.is_empty()
                || s
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '[' | ']'));
            if bad {
                Err(Invalid::new(
                    format!("{s:?} is not a profile name"),
                    "write the name of a [profile] in the shared credentials file, e.g. \"default\"",
                ))
            } else {
                Ok(s.to_string())
            }
        })
        .optional();
    let credentials_file = f
        .parsed(&r.credentials_file, "credentials_file", absolute_path)
        .optional();
    let ec2_endpoint = f
        .parsed(&r.ec2_endpoint, "ec2_endpoint", values::endpoint_url)
        .optional();
    let imds_endpoint = f
        .parsed(&r.imds_endpoint, "imds_endpoint", values::endpoint_url)
        .optional();
    Some(Some(Aws {
        region: region?,
        profile: profile?,
        credentials_file: credentials_file?,
        ec2_endpoint: ec2_endpoint?,
        imds_endpoint: imds_endpoint?,
    }))
}

/// `Some(None)` without the section, `None` if it is bad.
pub(super) fn oci(
    entry: Option<&Entry<RawOci>>,
    keys: &KeyFiles,
    sink: &mut Sink,
) -> Option<Option<Oci>> {
    let Some(e) = entry else {
        return Some(None);
    };
    let r = &e.value;
    let mut f = Fields::of(e, sink);
    let region = f.parsed(&r.region, "region", |s| {
        values::region(s, "OCI", "us-ashburn-1")
    });
    let region = f.require(region, "region");
    let tenancy = f.parsed(&r.tenancy, "tenancy", |s| values::ocid(s, &["tenancy"]));
    let tenancy = f.require(tenancy, "tenancy");
    let user = f.parsed(&r.user, "user", |s| values::ocid(s, &["user"]));
    let user = f.require(user, "user");
    let fingerprint = f.parsed(&r.fingerprint, "fingerprint", values::fingerprint);
    let fingerprint = f.require(fingerprint, "fingerprint");
    let key = f.parsed(&r.key_file, "key_file", |s| keys.oci(s));
    let key = f.require(key, "key_file");
    let dns_endpoint = f
        .parsed(&r.dns_endpoint, "dns_endpoint", values::endpoint_url)
        .optional();
    let iaas_endpoint = f
        .parsed(&r.iaas_endpoint, "iaas_endpoint", values::endpoint_url)
        .optional();
    let key = key?;
    Some(Some(Oci {
        region: region?,
        tenancy: tenancy?,
        user: user?,
        fingerprint: fingerprint?,
        key: key.key,
        key_file: key.path,
        dns_endpoint: dns_endpoint?,
        iaas_endpoint: iaas_endpoint?,
    }))
}
