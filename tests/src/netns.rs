//! A network namespace owned by a test.

use std::process::Command;

pub struct Netns {
    name: String,
}

impl Netns {
    /// Create `isth-<tag...>` with its loopback up.
    pub fn new(tag: &str) -> Netns {
        crate::require_root();
        let name = format!("isth-{}", crate::unique(tag));
        run(&["netns", "add", &name]);
        let ns = Netns { name };
        run(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Give processes started with `ip netns exec` in this namespace their own `/etc/hosts`
    /// (iproute2 bind-mounts `/etc/netns/<name>/hosts` over it). Rewriting keeps the inode, so
    /// running processes see the change.
    pub fn set_hosts(&self, text: &str) {
        let dir = std::path::Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).expect("creating /etc/netns/<ns>");
        std::fs::write(dir.join("hosts"), text).expect("writing the namespace's hosts file");
    }

    /// Give processes started with `ip netns exec` in this namespace their own
    /// `/etc/resolv.conf` (bind-mounted from `/etc/netns/<name>/resolv.conf`, removed on drop
    /// with the namespace's other files), e.g. to point glibc at a resolver inside it.
    pub fn set_resolv_conf(&self, text: &str) {
        let dir = std::path::Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).expect("creating /etc/netns/<ns>");
        std::fs::write(dir.join("resolv.conf"), text).expect("writing the namespace's resolv.conf");
    }

    /// Give the namespace these addresses (`"192.0.2.1/24"`) on an interface of its own, up
    /// (a veth pair with both ends inside: there is no dummy module on these machines), so that
    /// sockets can bind them. No packet leaves the namespace.
    pub fn add_addresses(&self, addresses: &[&str]) {
        run(&[
            "-n", &self.name, "link", "add", "under0", "type", "veth", "peer", "name", "under1",
        ]);
        for a in addresses {
            run(&["-n", &self.name, "addr", "add", a, "dev", "under0"]);
        }
        for dev in ["under0", "under1"] {
            run(&["-n", &self.name, "link", "set", dev, "up"]);
        }
    }

    /// Turn on IPv4 forwarding here (a router or gateway namespace).
    pub fn forward_ipv4(&self) {
        run(&[
            "netns",
            "exec",
            &self.name,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
    }

    /// Run `f` on a thread of its own inside the namespace (`setns` moves only the calling
    /// thread), for sockets that a test opens itself. Panics in `f` reach the caller.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = std::path::Path::new("/run/netns").join(&self.name);
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("opening the namespace");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        });
        thread
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// `ip -n NAME ARGS`, which must work; its output.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("running ip");
        assert!(
            out.status.success(),
            "ip -n {} {}: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A command that runs inside the namespace (`ip netns exec` execs it: same PID).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        // The per-namespace files of `set_hosts` and `set_resolv_conf`, if any.
        let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(&self.name));
    }
}

fn run(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
