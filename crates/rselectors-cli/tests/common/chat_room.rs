//! Chat servers sharing a room through the broker tests' redis, and what
//! their clients, consoles and logs show: starting and stopping them,
//! saying lines and checking who gets them, the closing broker counts,
//! envelopes put on the room by hand.

use super::chat_protocol::{self, parse_message};
use super::redis::RedisServer;
use super::{join, loopback_args, start_server_command, Peer, Proc, Server, BIN};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub const MODES: [&str; 2] = ["pubsub", "streams"];

/// Where the password may come from instead of the URL.
pub const PASSWORD_VAR: &str = "RSELECTORS_BROKER_PASSWORD";

/// Starts a chat server on loopback with `--broker url` and `extra`
/// arguments, its console on a pipe, `password` (if any) in the
/// environment; waits for `listening on`.
pub fn chat(url: &str, extra: &[&str], password: Option<&str>) -> Server {
    let mut command = Command::new(BIN);
    command.args(loopback_args("chat-server", &["--broker", url]));
    command.args(extra);
    command.env_remove(PASSWORD_VAR);
    if let Some(password) = password {
        command.env(PASSWORD_VAR, password);
    }
    start_server_command(command, Stdio::piped())
}

/// Like [`chat`], and waits until it has joined the room.
pub fn chat_joined(url: &str, extra: &[&str], password: Option<&str>) -> Server {
    let server = chat(url, extra, password);
    server.wait_stderr_line("joined room");
    server
}

/// The Redis channel (pubsub) or stream key of `room` (on database 0).
pub fn room_key(room: &str) -> String {
    format!("rselectors:chat:{room}")
}

/// A chat server in `mode` and `room` that has joined the room.
pub fn joined(redis: &RedisServer, mode: &str, room: &str) -> Server {
    chat_joined(&redis.url(), &["--broker-mode", mode, "--room", room], None)
}

/// One client of `server`, registered.
pub fn client(server: &Server) -> Peer {
    join(server, 1).pop().unwrap()
}

/// Reads the next line of `peer` and checks it is `expected`.
pub fn expect(peer: &mut Peer, expected: &[u8], what: &str) {
    let got = peer.read_line();
    assert!(
        got == expected,
        "{what}: expected {:?}, got {:?}",
        String::from_utf8_lossy(expected),
        String::from_utf8_lossy(&got)
    );
}

/// `line` as every client gets it from `sender`.
pub fn from(sender: &Peer, line: &[u8]) -> Vec<u8> {
    chat_protocol::message(line, sender.local_addr())
}

/// The first of `peers` says `line`; each of them, the sender too, gets
/// it next.
pub fn say<'a>(peers: impl IntoIterator<Item = &'a mut Peer>, line: &[u8], what: &str) {
    let mut peers = peers.into_iter();
    let sender = peers.next().expect("a sender");
    let message = from(sender, line);
    sender.send(&[line, b"\n"].concat());
    expect(sender, &message, what);
    for peer in peers {
        expect(peer, &message, what);
    }
}

/// The longest a line between two clients of one server may take while
/// the broker is gone or hangs: less than the link's reply timeout
/// (3 s), so a loop that waited for the broker would show.
pub const LOCAL_BOUND: Duration = Duration::from_millis(2500);

/// `peers[0]` says `line`; `peers[1]` gets it within [`LOCAL_BOUND`].
pub fn say_locally_at_once(peers: &mut [Peer], line: &[u8], what: &str) {
    let message = from(&peers[0], line);
    let sent = Instant::now();
    peers[0].send(&[line, b"\n"].concat());
    expect(&mut peers[1], &message, what);
    let took = sent.elapsed();
    assert!(took < LOCAL_BOUND, "{what}: a local line took {took:?}");
    expect(&mut peers[0], &message, what);
}

/// The lines `peer` reads before `marker` (which it reads too).
pub fn read_until(peer: &mut Peer, marker: &[u8]) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| Some(peer.read_line()).filter(|line| line != marker)).collect()
}

/// True if `received` is `expected` with some left out, in order.
pub fn in_order(received: &[Vec<u8>], expected: &[Vec<u8>]) -> bool {
    let mut rest = expected.iter();
    received.iter().all(|line| rest.any(|e| e == line))
}

/// `peer` sends `lines` one at a time, each once it has come back: one
/// envelope each.
pub fn say_one_a_round(peer: &mut Peer, lines: &[Vec<u8>]) {
    for line in lines {
        say([&mut *peer], line, "local");
    }
}

/// `lines` as one write.
pub fn wire(lines: &[Vec<u8>]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| [&l[..], b"\n"].concat())
        .collect()
}

/// `sender` writes `lines` in one write while it and `listeners` read:
/// each gets all of them, in order.
pub fn burst(sender: &mut Peer, listeners: Vec<&mut Peer>, lines: &[Vec<u8>], what: &str) {
    let expected: Vec<Vec<u8>> = lines.iter().map(|line| from(sender, line)).collect();
    let wire = wire(lines);
    let mut writer = sender.stream.try_clone().unwrap();
    thread::scope(|scope| {
        scope.spawn(move || std::io::Write::write_all(&mut writer, &wire).unwrap());
        for peer in listeners.into_iter().chain([sender]) {
            let expected = &expected;
            scope.spawn(move || {
                for (i, message) in expected.iter().enumerate() {
                    assert!(peer.read_line() == *message, "{what}: line {i}");
                }
            });
        }
    });
}

/// The messages of `received` that `sender` sent, in order.
pub fn of_sender(received: &[Vec<u8>], sender: SocketAddr) -> Vec<Vec<u8>> {
    let sender = sender.to_string();
    received
        .iter()
        .filter(|message| {
            let (_, from) = parse_message(message.strip_suffix(b"\n").unwrap())
                .unwrap_or_else(|| panic!("not a chat message: {message:?}"));
            from == sender.as_bytes()
        })
        .cloned()
        .collect()
}

/// Each of `peers` sends its `lines[i]` (all at once, from threads);
/// then every peer must get every line of every sender exactly once, in
/// each sender's order, as `your msg = <line> from <sender>`.
pub fn all_send_and_all_get_everything(peers: &mut [Peer], lines: &[Vec<Vec<u8>>], what: &str) {
    thread::scope(|scope| {
        for (peer, lines) in peers.iter().zip(lines) {
            let mut stream = peer.stream.try_clone().unwrap();
            scope.spawn(move || {
                for line in lines {
                    let wire = [line.as_slice(), b"\n"].concat();
                    std::io::Write::write_all(&mut stream, &wire).unwrap();
                }
            });
        }
    });
    let senders: Vec<SocketAddr> = peers.iter().map(Peer::local_addr).collect();
    let total: usize = lines.iter().map(Vec::len).sum();
    for (i, peer) in peers.iter_mut().enumerate() {
        let received: Vec<Vec<u8>> = (0..total).map(|_| peer.read_line()).collect();
        for (sender, lines) in senders.iter().zip(lines) {
            let expected: Vec<Vec<u8>> = lines
                .iter()
                .map(|line| chat_protocol::message(line, *sender))
                .collect();
            let got = of_sender(&received, *sender);
            assert!(got == expected, "{what}: client {i}, from {sender}");
        }
    }
}

/// `count` lines from sender `tag`, some not UTF-8.
pub fn lines_of(tag: &str, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let mut line = format!("{tag} line {i} ").into_bytes();
            let odd: &[u8] = b"caf\xc3\xa9 \xff\xfe\x00\t end";
            line.extend_from_slice(&odd[..i % (odd.len() + 1)]);
            line
        })
        .collect()
}

/// [`lines_of`], each `pad` bytes longer.
pub fn padded_lines(tag: &str, count: usize, pad: usize) -> Vec<Vec<u8>> {
    let mut lines = lines_of(tag, count);
    for line in &mut lines {
        line.resize(line.len() + pad, b'.');
    }
    lines
}

/// The counts of a closing summary's broker line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub sent: u64,
    pub received: u64,
    pub dropped: u64,
    pub unsent: u64,
    pub skipped: u64,
    pub reconnects: u64,
}

/// Stops `server` with SIGTERM; checks it exits well and that its broker
/// line comes before `stopped (SIGTERM)`; returns the counts.
pub fn stop(server: &mut Server) -> Summary {
    server.signal("TERM");
    assert!(server.wait_exit().success(), "{}", server.stderr());
    let stdout = server.stdout();
    let broker = stdout.lines().position(|l| l.starts_with("broker: "));
    let stopped = stdout
        .lines()
        .position(|l| l.starts_with("stopped (SIGTERM)"));
    let (Some(broker), Some(stopped)) = (broker, stopped) else {
        panic!("no broker line before the summary:\n{stdout}");
    };
    assert!(broker < stopped, "{stdout}");
    let line = stdout.lines().nth(broker).unwrap();
    let mut summary = Summary::default();
    for part in line.trim_start_matches("broker: ").split(", ") {
        let (n, what) = part.split_once(' ').unwrap();
        let n = n.parse().unwrap_or_else(|_| panic!("{line}"));
        let field = match what.split(' ').next_back().unwrap() {
            "sent" => &mut summary.sent,
            "received" => &mut summary.received,
            "dropped" => &mut summary.dropped,
            "unsent" => &mut summary.unsent,
            "skipped" => &mut summary.skipped,
            "reconnects" => &mut summary.reconnects,
            _ => panic!("unknown count in {line}"),
        };
        *field = n;
    }
    summary
}

/// The broker line of the console's `list` (once per server: it waits
/// for the first such line).
pub fn list_broker(server: &mut Server) -> String {
    server.write_stdin(b"list\n");
    server.wait_stdout_line("broker   redis://")
}

/// Checks that `count` lines of the server's log contain `needle`.
pub fn assert_logged(server: &Server, needle: &str, count: usize) {
    let stderr = server.stderr();
    let found = stderr.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(found, count, "{needle:?} in:\n{stderr}");
}

/// A valid envelope number `seq` from a made-up server: `line` from
/// 192.0.2.1:7; and the message clients get from it.
pub fn fake_envelope(seq: u64, line: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let message = chat_protocol::message(line, "192.0.2.1:7".parse().unwrap());
    let header = format!("rselectors-chat/1 00000000000000aa {seq}\n");
    ([header.as_bytes(), &message].concat(), message)
}

/// Puts `payload` on `room` as a server of `mode` would.
pub fn put(redis: &RedisServer, mode: &str, room: &str, payload: &[u8]) {
    let key = room_key(room);
    match mode {
        "pubsub" => redis.command(&[b"PUBLISH", key.as_bytes(), payload]),
        _ => redis.command(&[b"XADD", key.as_bytes(), b"*", b"m", payload]),
    }
    .ok();
}

/// Checks that nothing `server` wrote contains `secret`.
pub fn never_shows(server: &Server, secret: &str) {
    let (stdout, stderr) = (server.stdout(), server.stderr());
    assert!(!stdout.contains(secret), "{secret} in stdout:\n{stdout}");
    assert!(!stderr.contains(secret), "{secret} in stderr:\n{stderr}");
}

/// A server whose link cannot join: it says so once (with `why`), serves
/// its clients alone and lists the link as not connected.
pub fn refused_but_serving(mut server: Server, why: &str, secrets: &[&str]) {
    let warning = server.wait_stderr_line("cannot join (");
    assert!(warning.contains(why), "{warning}");
    say(&mut join(&server, 2), b"local", why);
    let listed = list_broker(&mut server);
    assert!(listed.contains(": not connected;"), "{listed}");
    assert_logged(&server, "cannot join", 1);
    assert_logged(&server, "joined room", 0);
    for secret in secrets {
        never_shows(&server, secret);
    }
}

/// Runs `rselectors ARGS`, which must fail before binding anything;
/// returns its stderr.
pub fn refused(args: &[&str]) -> String {
    let mut proc = Proc::spawn(args, Stdio::null());
    let status = proc.wait_exit();
    let stderr = proc.stderr();
    assert!(!status.success(), "{args:?} ran:\n{}", proc.stdout());
    assert!(
        !proc.stdout().contains("listening on"),
        "{args:?}: {}",
        proc.stdout()
    );
    stderr
}

/// The local ports of the TCP connections process `pid` has to `port` on
/// loopback (from /proc: its socket inodes, matched in /proc/net/tcp).
pub fn ports_connected_to(pid: u32, port: u16) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the process's descriptors")
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.ok()?.path()).ok()?;
            let inode = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?;
            Some(inode.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let port_of = |address: &str| u16::from_str_radix(address.rsplit_once(':')?.1, 16).ok();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, inode) = (fields.get(1)?, fields.get(2)?, fields.get(9)?);
            let mine = inodes.iter().any(|i| i == inode) && port_of(remote) == Some(port);
            mine.then(|| port_of(local)).flatten()
        })
        .collect()
}
