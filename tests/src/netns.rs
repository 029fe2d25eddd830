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
