//! The providers of a config: one backend per `[[dns_provider]]` and per cloud route table,
//! built when a config is loaded (start-up, reload) and handed to the actions adapter. Building
//! does no I/O (credentials are fetched when first needed); a provider that cannot be built
//! (an OCI key ring refuses) is recorded with the reason, and its targets fail with it.

use std::sync::Arc;
use std::time::Duration;

use isthmus_actions::aws::{
    CredentialChain, CredentialSettings, Ec2RouteTable, Ec2RouteTableSettings, Route53,
    Route53Settings,
};
use isthmus_actions::command::ExecDns;
use isthmus_actions::oci::{
    KeyFormat, OciAuth, OciDns, OciDnsConfig, OciRouteTable, OciRouteTableConfig, RsaKey,
};
use isthmus_actions::rfc2136::{Rfc2136, Rfc2136Settings, TsigAlgorithm, TsigKey};
use isthmus_actions::{DnsBackend, RouteTableBackend};
use isthmus_config::{Config, DnsProvider, DnsProviderKind, OciKeyFormat};

use super::{Backends, Cloud, Pacing};

/// How long the metadata service may take per request (it is a link-local service).
const IMDS_TIMEOUT: Duration = Duration::from_secs(2);

/// The backends and pacing of `config`.
pub fn build(config: &Config) -> Arc<Backends> {
    let a = &config.actions;
    let pacing: Pacing = a.clone();
    let mut b = Backends {
        pacing,
        ..Backends::default()
    };
    // One credentials chain per config, shared by every AWS provider: IMDS is asked once.
    let chain = Arc::new(CredentialChain::new(
        CredentialSettings {
            profile: config.aws.as_ref().and_then(|a| a.profile.clone()),
            credentials_file: config.aws.as_ref().and_then(|a| a.credentials_file.clone()),
            imds_endpoint: config.aws.as_ref().and_then(|a| a.imds_endpoint.clone()),
            timeout: IMDS_TIMEOUT,
        },
        std::env::vars(),
    ));
    let oci_auth = config.oci.as_ref().map(|o| {
        let format = match o.key.format {
            OciKeyFormat::Pkcs8 => KeyFormat::Pkcs8,
            OciKeyFormat::Pkcs1 => KeyFormat::Pkcs1,
        };
        RsaKey::from_der(o.key.der.expose(), format)
            .map(|key| {
                Arc::new(OciAuth {
                    tenancy: o.tenancy.clone(),
                    user: o.user.clone(),
                    fingerprint: o.fingerprint.clone(),
                    key,
                })
            })
            .map_err(|e| format!("the OCI API key {}: {e}", o.key_file.display()))
    });
    for p in &config.dns_providers {
        if let Some(m) = p.min_interval {
            b.dns_min_interval.insert(p.name.clone(), m);
        }
        match dns_backend(config, p, &chain, oci_auth.as_ref()) {
            Ok(backend) => {
                b.dns.insert(p.name.clone(), backend);
            }
            Err(e) => {
                tracing::error!(provider = %p.name, error = %e, "DNS provider unusable");
                b.broken.insert(p.name.clone(), e);
            }
        }
    }
    // A gateway of a pair writes route tables within its write deadline: a write the old
    // active abandoned lands before the new one's first (docs/ha.md).
    let table_timeout = config
        .ha
        .as_ref()
        .map_or(a.timeout, |h| a.timeout.min(h.write_deadline));
    for g in &config.route_groups {
        for t in &g.aws_route_tables {
            let Some(aws) = &config.aws else { continue };
            let table: Arc<dyn RouteTableBackend> =
                Arc::new(Ec2RouteTable::new(Ec2RouteTableSettings {
                    route_table_id: t.id.clone(),
                    region: aws.region.clone(),
                    endpoint: aws.ec2_endpoint.clone(),
                    chain: chain.clone(),
                    timeout: table_timeout,
                }));
            b.tables.insert((Cloud::Aws, t.id.clone()), table);
        }
        for t in &g.oci_route_tables {
            let Some(oci) = &config.oci else { continue };
            let built = match &oci_auth {
                Some(Ok(auth)) => OciRouteTable::new(OciRouteTableConfig {
                    route_table_id: t.id.clone(),
                    endpoint: oci.iaas_endpoint.clone(),
                    region: oci.region.clone(),
                    auth: auth.clone(),
                    timeout: table_timeout,
                })
                .map_err(|f| f.message),
                Some(Err(e)) => Err(e.clone()),
                None => Err("no [oci] section".into()),
            };
            match built {
                Ok(table) => {
                    b.tables.insert((Cloud::Oci, t.id.clone()), Arc::new(table));
                }
                Err(e) => {
                    tracing::error!(table = %t.id, error = %e, "OCI route table unusable");
                    b.broken.insert(t.id.clone(), e);
                }
            }
        }
    }
    Arc::new(b)
}

fn dns_backend(
    config: &Config,
    p: &DnsProvider,
    chain: &Arc<CredentialChain>,
    oci_auth: Option<&Result<Arc<OciAuth>, String>>,
) -> Result<Arc<dyn DnsBackend>, String> {
    let timeout = config.actions.timeout;
    Ok(match p.kind {
        DnsProviderKind::Rfc2136 => {
            let (Some(server), Some(zone)) = (p.server, p.zone.clone()) else {
                return Err("rfc2136 needs server and zone".into());
            };
            let key = p.tsig.as_ref().map(|k| TsigKey {
                name: k.name.clone(),
                algorithm: match k.algorithm {
                    isthmus_config::TsigAlgorithm::HmacSha256 => TsigAlgorithm::HmacSha256,
                    isthmus_config::TsigAlgorithm::HmacSha384 => TsigAlgorithm::HmacSha384,
                    isthmus_config::TsigAlgorithm::HmacSha512 => TsigAlgorithm::HmacSha512,
                },
                secret: zeroize::Zeroizing::new(k.secret.expose().to_vec()),
            });
            let zone = if zone.ends_with('.') {
                zone
            } else {
                format!("{zone}.")
            };
            Arc::new(
                Rfc2136::new(Rfc2136Settings {
                    server,
                    zone,
                    key,
                    timeout,
                })
                .map_err(|f| f.message)?,
            )
        }
        DnsProviderKind::Route53 => Arc::new(Route53::new(Route53Settings {
            hosted_zone_id: p.hosted_zone_id.clone().unwrap_or_default(),
            endpoint: p.endpoint.clone(),
            chain: chain.clone(),
            timeout,
            insync_timeout: config.actions.verify_timeout,
        })),
        DnsProviderKind::Oci => {
            let (Some(oci), Some(auth)) = (&config.oci, oci_auth) else {
                return Err("an oci provider needs the [oci] section".into());
            };
            let auth = auth.clone()?;
            Arc::new(
                OciDns::new(OciDnsConfig {
                    zone: p.zone.clone().unwrap_or_default(),
                    view_id: p.view_id.clone(),
                    endpoint: oci.dns_endpoint.clone(),
                    region: oci.region.clone(),
                    auth,
                    timeout,
                })
                .map_err(|f| f.message)?,
            )
        }
        DnsProviderKind::Exec => Arc::new(ExecDns {
            provider: p.name.clone(),
            argv: p.command.clone(),
            timeout: p.timeout.unwrap_or(timeout),
        }),
    })
}
