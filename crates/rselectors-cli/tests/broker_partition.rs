//! A real network partition, not only a killed broker: Redis and two chat
//! servers on three hosts (network namespaces joined by veth links), then
//! one server's link to the broker is cut while the broker stays up, and
//! restored. That server's local chat goes on, the other server does not
//! notice, and once the link is back the cut-off server catches up
//! (`streams`: every line of the partition, exactly once, in order) or
//! resumes (`pubsub`: new lines cross both ways, nothing twice).
//!
//! ```text
//!            root namespace (this test and its clients)
//!              | net 3                            | net 4
//!   s1: chat-server 0.0.0.0:9001        s2: chat-server 0.0.0.0:9001
//!              | net 1 (the link cut)             | net 2
//!              +------------- b: redis-server ----+
//! ```
//!
//! Net `n` of scenario `k` is `10.77.(8k+n).0/30`: `.1` on the broker's
//! (or the root's) side, `.2` on the server's. Needs root and `ip netns`;
//! skipped with a message where either is missing.

mod common;

use common::chat_protocol;
use common::{Proc, BIN};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest any one wait in this file may take.
const WAIT: Duration = Duration::from_secs(30);

/// The least a partition lasts: long enough for the heartbeat to find it
/// (a reply is overdue after 3 s) and then for a reconnect attempt to fail
/// against the cut link (a silently dropped connect gives up after 3 s).
/// A deliberate duration, not a wait for something to happen.
const HOLD: Duration = Duration::from_secs(8);

/// Local delivery while the link is cut must stay this prompt: the event
/// loop never waits for Redis.
const LOCAL_DELIVERY: Duration = Duration::from_secs(2);

/// Where each chat server listens, in its own namespace.
const CHAT_PORT: u16 = 9001;

/// How a link is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// A `blackhole` queueing discipline on both ends of the veth: every
    /// packet is dropped in silence, so TCP sees no reset and no error,
    /// connects time out; only the heartbeat can tell. (`netem loss 100%`
    /// does the same but is a module many kernels lack; `blackhole` comes
    /// with every kernel that has `tc`.)
    Silent,
    /// The server's end of the veth set down (the cable pulled): packets
    /// go nowhere; new connects fail at once with no route.
    LinkDown,
}

/// A command's failure, with what it said.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// Runs a command that must work once namespaces do.
fn must(program: &str, args: &[&str]) {
    run(program, args).unwrap_or_else(|e| panic!("{e}"));
}

/// The namespaces of this test's process start with this.
const PREFIX: &str = "rselpart-";

/// Deletes namespaces left by an earlier run of this test that died
/// without cleaning up (its PID is in the name and gone), and ends what
/// still runs in them, so their addresses cannot clash with this run's.
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for name in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        end_processes_in(name);
        let _ = run("ip", &["netns", "del", name]);
    }
}

/// Kills what runs in namespace `name` (only this test's processes ever
/// run there).
fn end_processes_in(name: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = run("kill", &["-KILL", pid]);
    }
}

/// The hosts of one scenario: namespaces `b` (the broker), `s1`, `s2`
/// and their links, deleted on drop (after the processes in them, which
/// are declared after it and so dropped first).
#[derive(Debug)]
struct Network {
    /// Which scenario: picks the subnets, so scenarios run in parallel.
    scenario: u8,
    /// The namespaces made so far.
    namespaces: Vec<String>,
    /// The veth ends in the root namespace.
    root_links: Vec<String>,
}

impl Network {
    /// Makes the hosts and links, or says why it cannot (no root, no
    /// `ip netns`): `None` then, and the test is skipped.
    fn create(scenario: u8) -> Option<Network> {
        remove_stale_namespaces();
        let mut net = Network {
            scenario,
            namespaces: Vec::new(),
            root_links: Vec::new(),
        };
        let first = net.ns("b");
        if let Err(e) = run("ip", &["netns", "add", &first]) {
            eprintln!("skipped: network namespaces unavailable ({e})");
            return None;
        }
        net.namespaces.push(first);
        for host in ["s1", "s2"] {
            let name = net.ns(host);
            must("ip", &["netns", "add", &name]);
            net.namespaces.push(name);
        }
        for host in ["b", "s1", "s2"] {
            must("ip", &["-n", &net.ns(host), "link", "set", "lo", "up"]);
        }
        for server in [1, 2] {
            let (host, subnet) = (format!("s{server}"), net.subnet(server));
            // The broker's end is named after the server, the server's
            // `tob`: the link that is cut is `tob` in s1, `tos1` in b.
            net.veth(("b", &host), (&format!("to{host}"), "tob"), &subnet);
            let root_end = format!("rp{}x{scenario}{server}", std::process::id());
            net.root_links.push(root_end.clone());
            net.veth(("", &host), (&root_end, "toroot"), &net.subnet(server + 2));
        }
        Some(net)
    }

    /// The namespace of `host`.
    fn ns(&self, host: &str) -> String {
        format!("{PREFIX}{}-{}-{host}", std::process::id(), self.scenario)
    }

    /// Net `n`'s first three octets.
    fn subnet(&self, n: u8) -> String {
        format!("10.77.{}", 8 * self.scenario + n)
    }

    /// `ip` in `host`'s namespace (`""`: the root namespace).
    fn ip_in(&self, host: &str, args: &[&str]) {
        let ns = self.ns(host);
        let mut all = vec![];
        if !host.is_empty() {
            all.extend(["-n", ns.as_str()]);
        }
        all.extend_from_slice(args);
        must("ip", &all);
    }

    /// A veth pair between `hosts` named `names`, `.1` and `.2` on
    /// `subnet`, both ends up.
    fn veth(&self, hosts: (&str, &str), names: (&str, &str), subnet: &str) {
        let mut add = vec!["link", "add", names.0];
        let first_ns = self.ns(hosts.0);
        if !hosts.0.is_empty() {
            add.extend(["netns", first_ns.as_str()]);
        }
        let second_ns = self.ns(hosts.1);
        add.extend(["type", "veth", "peer", "name", names.1, "netns", &second_ns]);
        must("ip", &add);
        for (host, name, end) in [(hosts.0, names.0, 1), (hosts.1, names.1, 2)] {
            let address = format!("{subnet}.{end}/30");
            self.ip_in(host, &["addr", "add", &address, "dev", name]);
            self.ip_in(host, &["link", "set", name, "up"]);
        }
    }

    /// `program ARGS` in `host`'s namespace.
    fn command(&self, host: &str, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.ns(host), program])
            .args(args);
        command
    }

    /// `tc ARGS` in `host`'s namespace.
    fn tc(&self, host: &str, args: &[&str]) -> Result<(), String> {
        let ns = self.ns(host);
        let mut all = vec!["netns", "exec", ns.as_str(), "tc"];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Cuts the link between s1 and the broker; `Err` if this kernel
    /// cannot cut it that way.
    fn cut(&self, cut: Cut) -> Result<(), String> {
        match cut {
            Cut::Silent => {
                self.tc("s1", &["qdisc", "add", "dev", "tob", "root", "blackhole"])?;
                self.tc("b", &["qdisc", "add", "dev", "tos1", "root", "blackhole"])
            }
            Cut::LinkDown => {
                self.ip_in("s1", &["link", "set", "tob", "down"]);
                Ok(())
            }
        }
    }

    /// Restores the link [`Network::cut`] cut.
    fn restore(&self, cut: Cut) {
        match cut {
            Cut::Silent => {
                for (host, dev) in [("s1", "tob"), ("b", "tos1")] {
                    self.tc(host, &["qdisc", "del", "dev", dev, "root"])
                        .unwrap_or_else(|e| panic!("{e}"));
                }
            }
            Cut::LinkDown => self.ip_in("s1", &["link", "set", "tob", "up"]),
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for link in &self.root_links {
            let _ = run("ip", &["link", "del", link]);
        }
        for name in &self.namespaces {
            end_processes_in(name);
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// A directory in the temp directory, removed on drop.
#[derive(Debug)]
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("rselectors-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// True if `redis-server` is here. In CI (`CI=true`) its absence fails
/// the test; elsewhere the test is skipped, saying what to install.
fn redis_available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "redis-server not found (apt-get install -y redis-server)"
        );
        eprintln!("skipped: redis-server not found (apt-get install -y redis-server)");
    }
    found
}

/// `redis-server` on port 6379 in the broker's namespace, nothing saved.
fn start_redis(net: &Network, dir: &TempDir) -> Proc {
    let dir = dir.0.to_str().unwrap();
    let args = [
        "--port",
        "6379",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        dir,
        "--bind",
        "0.0.0.0",
        "--protected-mode",
        "no",
    ];
    let redis = Proc::spawn_command(net.command("b", "redis-server", &args), Stdio::null());
    redis.wait_stdout_line("Ready to accept connections");
    redis
}

/// A chat server in namespace `s<number>`, and where the root namespace
/// reaches it.
struct ChatServer {
    number: u8,
    proc: Proc,
    addr: SocketAddr,
}

impl std::fmt::Debug for ChatServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatServer")
            .field("number", &self.number)
            .field("pid", &self.proc.pid())
            .field("addr", &self.addr)
            .finish()
    }
}

impl ChatServer {
    /// Starts it, linked to the broker in `mode`, and waits until it has
    /// joined the room.
    fn start(net: &Network, number: u8, mode: &str) -> ChatServer {
        let listen = format!("0.0.0.0:{CHAT_PORT}");
        let broker = format!("redis://{}.1:6379", net.subnet(number));
        let args = [
            "chat-server",
            "--addr",
            &listen,
            "--broker",
            &broker,
            "--broker-mode",
            mode,
        ];
        let host = format!("s{number}");
        let proc = Proc::spawn_command(net.command(&host, BIN, &args), Stdio::null());
        proc.wait_stdout_line("listening on ");
        proc.wait_stderr_line(&format!("joined room chat ({mode})"));
        let addr = format!("{}.2:{CHAT_PORT}", net.subnet(number + 2));
        ChatServer {
            number,
            proc,
            addr: addr.parse().unwrap(),
        }
    }

    /// Its stderr lines containing `needle`.
    fn logged(&self, needle: &str) -> usize {
        self.proc
            .stderr()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Stops it with SIGTERM; its closing broker counts.
    fn stop(&mut self) -> BrokerCounts {
        self.proc.signal("TERM");
        assert!(self.proc.wait_exit().success(), "{}", self.proc.stderr());
        BrokerCounts::parse(&self.proc.wait_stdout_line("broker: "))
    }
}

/// The closing summary's `broker: N lines sent, N received, N dropped,
/// N unsent, N skipped, N reconnects`.
#[derive(Debug, Default, PartialEq, Eq)]
struct BrokerCounts {
    sent: u64,
    received: u64,
    dropped: u64,
    unsent: u64,
    skipped: u64,
    reconnects: u64,
}

impl BrokerCounts {
    fn parse(line: &str) -> BrokerCounts {
        let fields: HashMap<&str, u64> = line
            .trim_start_matches("broker: ")
            .split(", ")
            .filter_map(|field| {
                let mut words = field.split_whitespace();
                let n = words.next()?.parse().ok()?;
                Some((words.last()?, n))
            })
            .collect();
        let get = |name| {
            *fields
                .get(name)
                .unwrap_or_else(|| panic!("no {name:?} in {line:?}"))
        };
        BrokerCounts {
            sent: get("sent"),
            received: get("received"),
            dropped: get("dropped"),
            unsent: get("unsent"),
            skipped: get("skipped"),
            reconnects: get("reconnects"),
        }
    }
}

/// One chat client in the root namespace, and every message it got, as
/// (sender, line) in the order they came.
#[derive(Debug)]
struct Client {
    name: &'static str,
    server: u8,
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// Its address as its server sees it (and signs its lines with).
    me: String,
    got: Vec<(String, String)>,
}

impl Client {
    /// Connects to `server` and waits until the server has it, so it
    /// misses nothing said after.
    fn join(server: &ChatServer, name: &'static str) -> Client {
        let stream = TcpStream::connect_timeout(&server.addr, WAIT).expect("connect");
        let me = stream.local_addr().unwrap().to_string();
        server.proc.wait_stderr_line(&format!("connected {me} "));
        Client {
            name,
            server: server.number,
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
            me,
            got: Vec::new(),
        }
    }

    fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .expect("send");
    }

    /// The next message, read by `deadline`; `None` at end of stream.
    fn next_message(&mut self, deadline: Instant) -> Option<(String, String)> {
        let left = deadline.saturating_duration_since(Instant::now());
        let name = self.name;
        assert!(!left.is_zero(), "client {name}: no message by the deadline");
        self.stream.set_read_timeout(Some(left)).unwrap();
        let mut message = Vec::new();
        match self.reader.read_until(b'\n', &mut message) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "client {name}: nothing came in {WAIT:?}; got so far {:?}",
                    self.got
                )
            }
            Err(e) => panic!("client {name}: {e}"),
        }
        if message.is_empty() {
            return None;
        }
        let message = message
            .strip_suffix(b"\n")
            .unwrap_or_else(|| panic!("client {name}: cut short: {message:?}"));
        let (line, from) = chat_protocol::parse_message(message)
            .unwrap_or_else(|| panic!("client {name}: not a chat message: {message:?}"));
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        Some((text(from), text(line)))
    }

    /// Reads until `line` from `sender` has come; how long that took.
    fn wait_for(&mut self, sender: &str, line: &str) -> Duration {
        let start = Instant::now();
        let deadline = start + WAIT;
        let wanted = (sender.to_owned(), line.to_owned());
        while !self.got.contains(&wanted) {
            let message = self
                .next_message(deadline)
                .unwrap_or_else(|| panic!("client {}: closed before {line:?} came", self.name));
            self.got.push(message);
        }
        start.elapsed()
    }

    /// Reads what is left, up to the server's close.
    fn read_to_close(&mut self) {
        let deadline = Instant::now() + WAIT;
        while let Some(message) = self.next_message(deadline) {
            self.got.push(message);
        }
    }
}

/// When a line was said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Both servers joined, the link whole.
    Before,
    /// From the cut until s1 logged `link up after`.
    Cut,
    /// After that.
    After,
}

/// A line a client said.
#[derive(Debug)]
struct Said {
    sender: String,
    server: u8,
    line: String,
    phase: Phase,
}

/// Everything said in a scenario, in order.
#[derive(Debug, Default)]
struct Transcript(Vec<Said>);

impl Transcript {
    /// `client` says a new line in `phase`; the line.
    fn say(&mut self, client: &mut Client, phase: Phase) -> String {
        let line = format!("{} {phase:?} {}", client.name, self.0.len());
        client.send(&line);
        self.0.push(Said {
            sender: client.me.clone(),
            server: client.server,
            line: line.clone(),
            phase,
        });
        line
    }

    /// Lines `sender` said, in order.
    fn by(&self, sender: &str) -> Vec<&Said> {
        self.0.iter().filter(|s| s.sender == sender).collect()
    }

    /// Lines said on server `server`.
    fn on(&self, server: u8) -> u64 {
        self.0.iter().filter(|s| s.server == server).count() as u64
    }

    /// Checks all `client` got, from each sender: in `streams` mode, or
    /// from its own server, every line exactly once and in order. In
    /// `pubsub` mode, from the other server: in order, none twice, and
    /// every line said outside the partition (those said during it may be
    /// lost: at most once).
    fn check(&self, client: &Client, mode: &str) {
        let name = client.name;
        let senders: Vec<&str> = self.0.iter().map(|s| s.sender.as_str()).collect();
        for (sender, _) in &client.got {
            assert!(
                senders.contains(&sender.as_str()),
                "client {name} got a line from {sender}, who is not in the chat"
            );
        }
        for sender in senders {
            let said = self.by(sender);
            let got: Vec<&str> = client
                .got
                .iter()
                .filter(|(from, _)| from == sender)
                .map(|(_, line)| line.as_str())
                .collect();
            let all: Vec<&str> = said.iter().map(|s| s.line.as_str()).collect();
            if mode == "streams" || said[0].server == client.server {
                assert_eq!(got, all, "client {name}, lines from {sender}");
                continue;
            }
            let mut rest = all.iter();
            for line in &got {
                assert!(
                    rest.any(|l| l == line),
                    "client {name} got {line:?} twice or out of order: {got:?} of {all:?}"
                );
            }
            for s in said.iter().filter(|s| s.phase != Phase::Cut) {
                assert!(
                    got.contains(&s.line.as_str()),
                    "client {name} never got {:?}: {got:?}",
                    s.line
                );
            }
        }
    }
}

/// Clients `a` and `b` on s1, `c` on s2.
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// `speaker` says a line in `phase` and every client in `hearers` waits
/// for it; the longest wait.
fn say_to(
    said: &mut Transcript,
    clients: &mut [Client; 3],
    speaker: usize,
    hearers: &[usize],
    phase: Phase,
) -> Duration {
    let line = said.say(&mut clients[speaker], phase);
    let sender = clients[speaker].me.clone();
    hearers
        .iter()
        .map(|&i| clients[i].wait_for(&sender, &line))
        .max()
        .unwrap_or_default()
}

/// The scenario, in `mode`, with the link cut as `cut`; `scenario`
/// numbers it (its own subnets, so scenarios run in parallel).
fn partition(mode: &str, cut: Cut, scenario: u8) {
    let started = Instant::now();
    if !redis_available() {
        return;
    }
    // Dropped last: after every process in it.
    let Some(net) = Network::create(scenario) else {
        return;
    };
    let dir = TempDir::new(&format!("partition-{scenario}"));
    let _redis = start_redis(&net, &dir);
    let mut s1 = ChatServer::start(&net, 1, mode);
    let mut s2 = ChatServer::start(&net, 2, mode);
    let mut clients = [
        Client::join(&s1, "a"),
        Client::join(&s1, "b"),
        Client::join(&s2, "c"),
    ];
    let everyone = [A, B, C];
    let mut said = Transcript::default();

    // The link whole: chat crosses both ways.
    for speaker in everyone {
        say_to(&mut said, &mut clients, speaker, &everyone, Phase::Before);
    }

    if let Err(e) = net.cut(cut) {
        eprintln!("skipped: cannot cut a link this way here ({e})");
        return;
    }
    let cut_at = Instant::now();
    // At once, before the heartbeat finds the partition: local chat on
    // both sides goes on.
    let mut local = say_to(&mut said, &mut clients, A, &[A, B], Phase::Cut);
    local = local.max(say_to(&mut said, &mut clients, C, &[C], Phase::Cut));
    let down = s1.proc.wait_stderr_line("link down (");
    let detected = cut_at.elapsed();
    // Known down, reconnecting: still.
    local = local.max(say_to(&mut said, &mut clients, B, &[A, B], Phase::Cut));
    local = local.max(say_to(&mut said, &mut clients, C, &[C], Phase::Cut));
    assert!(
        local < LOCAL_DELIVERY,
        "local delivery took {local:?} while the link was cut"
    );
    if let Some(left) = (cut_at + HOLD).checked_duration_since(Instant::now()) {
        std::thread::sleep(left);
    }
    // s2's link never broke.
    assert_eq!(s2.logged("link down"), 0, "{}", s2.proc.stderr());
    assert_eq!(s2.logged("cannot join"), 0, "{}", s2.proc.stderr());
    local = local.max(say_to(&mut said, &mut clients, A, &[A, B], Phase::Cut));

    net.restore(cut);
    let restored_at = Instant::now();
    let up = s1.proc.wait_stderr_line("link up after");
    let recovered = restored_at.elapsed();
    if mode == "streams" {
        // Each side catches up with what the other said while cut off.
        for s in said.0.iter().filter(|s| s.phase == Phase::Cut) {
            let hearers = match s.server {
                1 => &[C][..],
                _ => &[A, B][..],
            };
            for &i in hearers {
                clients[i].wait_for(&s.sender, &s.line);
            }
        }
    }
    let caught_up = restored_at.elapsed();
    for speaker in everyone {
        say_to(&mut said, &mut clients, speaker, &everyone, Phase::After);
    }
    let resumed = restored_at.elapsed();

    // SIGTERM: each server sends what it has and closes its clients, so
    // reading to the close sees anything that came twice.
    let (counts1, counts2) = (s1.stop(), s2.stop());
    for client in &mut clients {
        client.read_to_close();
        said.check(client, mode);
    }
    assert_eq!(s1.logged("link down ("), 1, "warns once per outage");
    assert_eq!(s1.logged("link up after"), 1);
    let (on1, on2) = (said.on(1), said.on(2));
    let from_s1 = |i: usize| {
        let got = &clients[i].got;
        got.iter()
            .filter(|(from, _)| said.by(from)[0].server == 1)
            .count() as u64
    };
    let from_s2 = |i: usize| clients[i].got.len() as u64 - from_s1(i);
    assert_eq!(from_s2(A), from_s2(B), "a and b got the same from s2");
    let c1 = &counts1;
    assert_eq!(
        (c1.unsent, c1.skipped, c1.reconnects),
        (0, 0, 1),
        "s1 {c1:?}"
    );
    let c2 = &counts2;
    assert_eq!(
        (c2.dropped, c2.unsent, c2.skipped, c2.reconnects),
        (0, 0, 0, 0),
        "s2 {c2:?}"
    );
    assert_eq!(c2.sent, on2, "s2 {c2:?}");
    assert_eq!(c1.received, from_s2(A), "s1 {c1:?}");
    assert_eq!(c2.received, from_s1(C), "s2 {c2:?}");
    match mode {
        "streams" => {
            assert_eq!((c1.sent, c1.dropped), (on1, 0), "s1 {c1:?}");
            assert_eq!(c1.received, on2, "s1 {c1:?}");
        }
        _ => assert_eq!(c1.sent + c1.dropped, on1, "s1 {c1:?}"),
    }

    let secs = |d: Duration| d.as_secs_f64();
    eprintln!(
        "partition ({mode}, {cut:?}): link down {:.1} s after the cut [{}]; link up {:.1} s \
         after the restore [{}]; caught up {:.1} s, chat across resumed {:.1} s after it; \
         local delivery during the cut within {:.1} ms; s1 {c1:?}; s2 {c2:?}; {:.1} s in all",
        secs(detected),
        down.trim(),
        secs(recovered),
        up.trim(),
        secs(caught_up),
        secs(resumed),
        local.as_secs_f64() * 1000.0,
        secs(started.elapsed()),
    );
}

#[test]
fn streams_cut_silently_catches_up() {
    partition("streams", Cut::Silent, 0);
}

#[test]
fn pubsub_cut_silently_resumes() {
    partition("pubsub", Cut::Silent, 1);
}

#[test]
fn streams_link_down_catches_up() {
    partition("streams", Cut::LinkDown, 2);
}

#[test]
fn pubsub_link_down_resumes() {
    partition("pubsub", Cut::LinkDown, 3);
}
