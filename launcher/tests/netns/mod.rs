//! Two "machines" on this one: two network namespaces of their own, joined by a veth pair with
//! private addresses, for tests and benchmarks of a link that leaves loopback
//! (`launcher/tests/two_hosts.rs`, `host-model/examples/two_hosts.rs`; docs/user-guide.md, "Two
//! hosts"). Needs root and `ip` (iproute2).
//!
//! Namespace `A` (index 0) gets `10.77.<n>.1/24`, `B` (index 1) `10.77.<n>.2/24`, both with
//! loopback up; names carry the pid, so concurrent runs do not meet. Everything the pair started
//! ([`NetnsPair::adopt`]) and every process still inside either namespace is killed, and both
//! namespaces are deleted, when the pair is dropped, on success and on panic alike. `unsafe`
//! only in `signal` (`kill(2)`).

#![allow(dead_code)] // each user needs a different part

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Index of the namespace the simulation runs in.
pub const A: usize = 0;
/// Index of the namespace its host (QEMU, the host model) runs in.
pub const B: usize = 1;

/// The line a simulation prints on stderr once its channels are bound.
pub const SIM_READY: &str = "cosim-sim: ready endpoint=";

/// Runs `ip ARGS`; panics with its stderr if it fails, and says so if `ip` is missing.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `ip` ({e}): the two-host tests need iproute2 (scripts/install-deps.sh installs it; \
             apt-get install iproute2)"
        )
    });
    assert!(
        out.status.success(),
        "`ip {}` failed ({}): {}(the two-host tests need root: they create network namespaces)",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair; see the module docs.
pub struct NetnsPair {
    /// Namespace names, `cosim-<tag>-<pid>-a` and `...-b`.
    pub ns: [String; 2],
    /// The veth end in each namespace.
    pub veth: [String; 2],
    /// Each namespace's address on the veth (without the prefix length).
    pub addr: [String; 2],
    children: Vec<(String, Child)>,
}

impl NetnsPair {
    /// Creates both namespaces and the link, and brings everything up.
    pub fn create(tag: &str) -> Self {
        let pid = std::process::id();
        let n = pid % 250 + 1;
        let pair = Self {
            ns: [format!("cosim-{tag}-{pid}-a"), format!("cosim-{tag}-{pid}-b")],
            // Created directly inside the namespaces, so the names only need to be unique there.
            veth: ["cosim-a".to_string(), "cosim-b".to_string()],
            addr: [format!("10.77.{n}.1"), format!("10.77.{n}.2")],
            children: Vec::new(),
        };
        // A namespace of a crashed earlier run with our pid would make `add` fail.
        for ns in &pair.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
        for ns in &pair.ns {
            ip(&["netns", "add", ns]);
        }
        let [na, nb] = &pair.ns;
        let [va, vb] = &pair.veth;
        ip(&["link", "add", va, "netns", na, "type", "veth", "peer", "name", vb, "netns", nb]);
        for i in [A, B] {
            let (ns, veth) = (&pair.ns[i], &pair.veth[i]);
            ip(&["-n", ns, "addr", "add", &format!("{}/24", pair.addr[i]), "dev", veth]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", veth, "up"]);
        }
        pair
    }

    /// `ip netns exec <ns[side]> program`, stdin from /dev/null.
    pub fn command(&self, side: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns[side]]).arg(program).stdin(Stdio::null());
        c
    }

    /// Sets namespace `side`'s end of the veth down or up (`ip -n <ns> link set <veth> down|up`).
    pub fn set_link(&self, side: usize, up: bool) {
        ip(&["-n", &self.ns[side], "link", "set", &self.veth[side], if up { "up" } else { "down" }]);
    }

    /// Keeps `child` to be stopped when the pair is dropped (SIGTERM, then SIGKILL).
    pub fn adopt(&mut self, name: &str, child: Child) -> u32 {
        let pid = child.id();
        self.children.push((name.to_string(), child));
        pid
    }

    /// The adopted child `pid`'s exit status, if it has ended.
    pub fn try_wait(&mut self, pid: u32) -> Option<std::process::ExitStatus> {
        let (_, c) = self.children.iter_mut().find(|(_, c)| c.id() == pid)?;
        c.try_wait().ok().flatten()
    }

    /// Starts `sim --endpoint endpoint args...` in namespace `side` with `COSIM_KEY_FILE=key`,
    /// output to `log`, and waits up to 60 s for its ready line. Panics with the log if it does
    /// not come.
    pub fn start_sim(&mut self, side: usize, sim: &Path, endpoint: &str, args: &[&str], key: &Path, log: &Path) -> u32 {
        let timeout = Duration::from_secs(60);
        assert!(sim.is_file(), "simulation {} is missing: build it (make sim-gemm sim-test)", sim.display());
        let out = std::fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let mut cmd = self.command(side, sim);
        cmd.arg("--endpoint").arg(endpoint).args(args);
        cmd.stdout(out.try_clone().expect("dup log")).stderr(out);
        cmd.env("COSIM_KEY_FILE", key);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", sim.display()));
        let pid = self.adopt("simulation", child);
        let t0 = Instant::now();
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains(SIM_READY) {
                return pid;
            }
            if let Some(st) = self.try_wait(pid) {
                panic!("simulation {} --endpoint {endpoint} exited ({st}) before it was ready:\n{text}", sim.display());
            }
            assert!(t0.elapsed() < timeout, "simulation not ready within {timeout:?}; log {}:\n{text}", log.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Pids of the processes inside namespace `side`.
    fn pids_in(&self, side: usize) -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", &self.ns[side]])
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default()
    }
}

#[allow(unsafe_code)]
fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid we started, or that lives in a namespace we created; no memory
    // is involved.
    unsafe {
        libc::kill(pid, sig);
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Our children first, newest first (a launcher stops its QEMU on SIGTERM, within 35 s).
        while let Some((name, mut c)) = self.children.pop() {
            if c.try_wait().ok().flatten().is_some() {
                continue;
            }
            signal(c.id() as i32, libc::SIGTERM);
            let t0 = Instant::now();
            while c.try_wait().ok().flatten().is_none() && t0.elapsed() < Duration::from_secs(35) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if c.try_wait().ok().flatten().is_none() {
                eprintln!("netns: {name} (pid {}) ignored SIGTERM; killing it", c.id());
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // Anything still inside our namespaces (e.g. a QEMU whose launcher was killed).
        for side in [A, B] {
            for pid in self.pids_in(side) {
                eprintln!("netns: killing pid {pid}, left in {}", self.ns[side]);
                signal(pid, libc::SIGKILL);
            }
        }
        let t0 = Instant::now();
        while [A, B].iter().any(|&s| !self.pids_in(s).is_empty()) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Deleting a namespace removes its end of the veth, and with it the pair.
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
