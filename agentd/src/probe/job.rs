//! Which target checks run where. A probe that a route group lists in `checks` runs over each
//! link of that group, its sockets bound to the link's tunnel interface (SO_BINDTODEVICE), so
//! that `netctl probes` shows whether the service answers over the backup path too, before a
//! failover needs it. Any other probe runs along the routes, i.e. over the active link.

use std::collections::BTreeSet;
use std::fmt;

use isthmus_config::{Config, Probe};

/// One scheduled check: a probe, and the link it is bound to, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub probe: Probe,
    pub via: Option<Via>,
}

/// The link a job runs over and its tunnel interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub link: String,
    pub device: String,
}

/// What a job's results are filed under.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobKey {
    pub probe: String,
    pub link: Option<String>,
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.link {
            Some(link) => write!(f, "{} via {link}", self.probe),
            None => f.write_str(&self.probe),
        }
    }
}

impl Job {
    pub fn key(&self) -> JobKey {
        JobKey {
            probe: self.probe.name.clone(),
            link: self.via.as_ref().map(|v| v.link.clone()),
        }
    }
}

impl From<Probe> for Job {
    /// Along the routes.
    fn from(probe: Probe) -> Job {
        Job { probe, via: None }
    }
}

/// The jobs of a config, in the order of `[[probe]]`, links in the order of the config.
pub fn jobs(config: &Config) -> Vec<Job> {
    let mut out = Vec::new();
    for probe in &config.probes {
        let checked_on: BTreeSet<&str> = config
            .route_groups
            .iter()
            .filter(|g| g.checks.contains(&probe.name))
            .flat_map(|g| g.links.iter().map(String::as_str))
            .collect();
        if checked_on.is_empty() {
            out.push(Job::from(probe.clone()));
            continue;
        }
        for link in config
            .links
            .iter()
            .filter(|l| checked_on.contains(l.name.as_str()))
        {
            out.push(Job {
                probe: probe.clone(),
                via: Some(Via {
                    link: link.name.clone(),
                    device: link.interface.clone(),
                }),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config(groups: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.key");
        std::fs::write(&key, "sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA=\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = |name: &str, iface: &str, port: u16, inner: &str, peer: &str| {
            format!(
                "[[link]]\nname = \"{name}\"\ninterface = \"{iface}\"\nprivate_key_file = \"k.key\"\n\
                 listen = \"192.0.2.1:{port}\"\npeer_public_key = \"sTW6GPMPj3UsueeSgjVcAqH7BCh92Kd0K7aReWmVlEA=\"\n\
                 peer_endpoint = \"192.0.2.2:{port}\"\nallowed_ips = [\"10.2.0.0/16\", \"{peer}/32\"]\n\
                 addresses = [\"{inner}/31\"]\n"
            )
        };
        let text = format!(
            "[agent]\nname = \"gw\"\n{}{}\
             [[probe]]\nname = \"db\"\nkind = \"tcp\"\ntarget = \"10.2.1.10:1522\"\n\
             [[probe]]\nname = \"app\"\nkind = \"icmp\"\ntarget = \"10.2.1.11\"\n{groups}",
            link("ic", "isth-ic", 51820, "10.255.0.0", "10.255.0.1"),
            link("inet", "isth-inet", 51821, "10.255.1.0", "10.255.1.1"),
        );
        isthmus_config::parse_str(
            &text,
            &dir.path().join("agentd.toml"),
            &isthmus_config::LoadOptions::default(),
        )
        .unwrap_or_else(|r| panic!("{:?}", r.diagnostics))
        .config
    }

    fn keys(config: &Config) -> Vec<String> {
        jobs(config).iter().map(|j| j.key().to_string()).collect()
    }

    #[test]
    fn checked_probes_run_over_each_link_of_their_groups_others_along_the_routes() {
        let unchecked = config(
            "[[route_group]]\nname = \"g\"\ndestinations = [\"10.2.0.0/16\"]\nlinks = [\"ic\", \"inet\"]\n",
        );
        assert_eq!(keys(&unchecked), ["db", "app"]);
        let checked = config(
            "[[route_group]]\nname = \"g\"\ndestinations = [\"10.2.0.0/16\"]\n\
             links = [\"inet\", \"ic\"]\nchecks = [\"db\"]\n",
        );
        // Links in config order, each once; the device is the link's interface.
        assert_eq!(keys(&checked), ["db via ic", "db via inet", "app"]);
        let jobs = jobs(&checked);
        assert_eq!(jobs[0].via.as_ref().unwrap().device, "isth-ic");
        assert!(jobs[2].via.is_none());
    }
}
