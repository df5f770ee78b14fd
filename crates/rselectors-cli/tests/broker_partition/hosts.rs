//! The hosts of a partition scenario: network namespaces `b` (the
//! broker), `s1` and `s2`, joined by veth links to each other and to the
//! root namespace; cutting and restoring the link between s1 and the
//! broker; and removing what a run that died left behind.

use std::process::{self, Command, Stdio};

/// How the link is cut. None makes TCP see a reset or an error on the
/// established connections: only the heartbeat finds the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// A `blackhole` queueing discipline on both ends of the veth drops
    /// every packet in silence; connects time out. (`netem loss 100%`
    /// does the same, but is a module many kernels lack; `blackhole` is
    /// in every kernel that has `tc`.)
    Silent,
    /// s1's end of the veth set down (the cable pulled): new connects
    /// fail at once, with no route.
    LinkDown,
    /// A `blackhole` on the broker's end only: what s1 sends reaches
    /// Redis and is carried out, but no reply comes back, so what s1
    /// sends again once the link is back is in the stream twice.
    RepliesLost,
}

/// Runs `command` (its words split on spaces): its output, or why not.
pub fn run(command: &str) -> Result<String, String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let out = Command::new(words[0])
        .args(&words[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{command}: {e}"))?;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_owned();
    match out.status.success() {
        true => Ok(text(&out.stdout)),
        false => Err(format!(
            "`{command}` failed ({}): {}",
            out.status,
            text(&out.stderr)
        )),
    }
}

/// [`run`]s a command made by `format!`.
macro_rules! sh {
    ($($format:tt)*) => {
        run(&format!($($format)*))
    };
}

/// The namespaces of this file's tests, and their links in the root
/// namespace, are named with this, then the test process's PID.
const PREFIX: &str = "rsel";

/// The PID in `name`, one of these tests' namespaces or links.
fn pid_in(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(PREFIX)?;
    Some(rest.split(|c: char| !c.is_ascii_digit()).next()?).filter(|pid| !pid.is_empty())
}

/// Deletes namespaces and links left by a run of these tests that died
/// without cleaning up (the PID in their names is gone), and ends what
/// still runs there, so that their addresses cannot clash with this
/// run's. (A link would outlive its namespace a while: connections cut
/// off by the partition keep it until they give up.)
fn remove_stale() {
    // Gone, or a zombie (no command line).
    let gone = |pid: &str| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .is_empty()
    };
    let stale = |name: &&str| pid_in(name).is_some_and(gone);
    for name in run("ip netns list")
        .unwrap_or_default()
        .split_whitespace()
        .filter(stale)
    {
        remove_namespace(name);
    }
    let links = run("ip -o link show").unwrap_or_default();
    let names = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1)?.split('@').next());
    for link in names.filter(stale) {
        let _ = sh!("ip link del {link}");
    }
}

/// Kills what runs in namespace `name` (only these tests' servers run
/// there) and deletes it, with its veth links.
fn remove_namespace(name: &str) {
    let pids = sh!("ip netns pids {name}").unwrap_or_default();
    for pid in pids.split_whitespace() {
        let _ = sh!("kill -KILL {pid}");
    }
    let _ = sh!("ip netns del {name}");
}

/// The hosts of one scenario: namespaces `b` (the broker), `s1`, `s2`
/// and their links, deleted on drop (after the processes in them, which
/// are made after it and so dropped first).
#[derive(Debug)]
pub struct Network {
    /// Which scenario: picks the names and subnets, so that scenarios
    /// run in parallel.
    scenario: u8,
    /// The namespaces made so far.
    namespaces: Vec<String>,
    /// The veth ends in the root namespace.
    root_links: Vec<String>,
}

impl Network {
    /// Makes the hosts and links; `None` (the test is skipped, saying
    /// why) where this machine cannot: not root, no `ip netns`, no veth.
    pub fn create(scenario: u8) -> Option<Network> {
        remove_stale();
        let mut net = Network {
            scenario,
            namespaces: Vec::new(),
            root_links: Vec::new(),
        };
        match net.build() {
            Ok(()) => Some(net),
            Err(e) => {
                eprintln!("skipped: network namespaces unavailable ({e})");
                None
            }
        }
    }

    fn build(&mut self) -> Result<(), String> {
        for host in ["b", "s1", "s2"] {
            let ns = self.ns(host);
            sh!("ip netns add {ns}")?;
            self.namespaces.push(ns.clone());
            sh!("ip -n {ns} link set lo up")?;
            sh!("ip netns exec {ns} true")?;
        }
        let b = self.ns("b");
        for n in [1, 2] {
            let s = self.ns(&format!("s{n}"));
            // The broker's end is named after the server, the server's
            // `tob`: the link cut is `tob` in s1 and `tos1` in b.
            sh!("ip link add tos{n} netns {b} type veth peer name tob netns {s}")?;
            self.address(&b, &format!("tos{n}"), n, 1)?;
            self.address(&s, "tob", n, 2)?;
            let root = format!("{PREFIX}{}x{}{n}", process::id(), self.scenario);
            sh!("ip link add {root} type veth peer name toroot netns {s}")?;
            self.root_links.push(root.clone());
            self.address("", &root, n + 2, 1)?;
            self.address(&s, "toroot", n + 2, 2)?;
        }
        Ok(())
    }

    /// The namespace of `host`.
    pub fn ns(&self, host: &str) -> String {
        format!("{PREFIX}{}-{}-{host}", process::id(), self.scenario)
    }

    /// Net `n`'s first three octets.
    pub fn subnet(&self, n: u8) -> String {
        format!("10.77.{}", 8 * self.scenario + n)
    }

    /// Gives `dev` in namespace `ns` (`""`: the root's) address `.end`
    /// of net `n`, and sets it up.
    fn address(&self, ns: &str, dev: &str, n: u8, end: u8) -> Result<(), String> {
        let ip = match ns {
            "" => "ip".to_owned(),
            ns => format!("ip -n {ns}"),
        };
        let subnet = self.subnet(n);
        let taken = sh!("{ip} -o addr show to {subnet}.0/30")?;
        assert!(taken.is_empty(), "{subnet}.0/30 is taken already: {taken}");
        sh!("{ip} addr add {subnet}.{end}/30 dev {dev}")?;
        sh!("{ip} link set {dev} up").map(drop)
    }

    /// `program` in `host`'s namespace.
    pub fn command(&self, host: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns(host), program]);
        command
    }

    /// Cuts the link between s1 and the broker; `Err` if this kernel
    /// cannot cut it that way.
    pub fn cut(&self, cut: Cut) -> Result<(), String> {
        self.set_cut(cut, true)
    }

    /// Restores the link [`Network::cut`] cut.
    pub fn restore(&self, cut: Cut) {
        self.set_cut(cut, false).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Cuts (`on`) or restores the link.
    fn set_cut(&self, cut: Cut, on: bool) -> Result<(), String> {
        let (s1, b) = (self.ns("s1"), self.ns("b"));
        let (qdisc, link) = if on { ("add", "down") } else { ("del", "up") };
        let blackhole = |ns: &str, dev: &str| {
            sh!("ip netns exec {ns} tc qdisc {qdisc} dev {dev} root blackhole").map(drop)
        };
        match cut {
            Cut::Silent => blackhole(&s1, "tob").and_then(|()| blackhole(&b, "tos1")),
            Cut::RepliesLost => blackhole(&b, "tos1"),
            Cut::LinkDown => sh!("ip -n {s1} link set tob {link}").map(drop),
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for link in &self.root_links {
            let _ = sh!("ip link del {link}");
        }
        for name in &self.namespaces {
            remove_namespace(name);
        }
    }
}
