//! The chat clients of a partition scenario, in the root namespace, and
//! everything they said and got; the checks of what each client got.

use super::{stop, WAIT};
use crate::common::{chat_protocol, Server};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One chat client in the root namespace, and every message it got.
#[derive(Debug)]
pub struct Client {
    pub name: &'static str,
    /// Its server's number.
    server: u8,
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// Its address as its server sees it (and signs its lines with).
    pub me: String,
    /// (sender, line), in the order they came.
    got: Vec<(String, String)>,
}

impl Client {
    /// Connects to server `s<n>` and waits until the server has it, so
    /// that it misses nothing said after.
    pub fn join(server: &Server, n: u8, name: &'static str) -> Client {
        let stream = TcpStream::connect_timeout(&server.addr, WAIT).expect("connect");
        let me = stream.local_addr().unwrap().to_string();
        server.wait_stderr_line(&format!("connected {me} "));
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client {
            name,
            server: n,
            stream,
            reader,
            me,
            got: Vec::new(),
        }
    }

    /// The next message, read by `deadline`; `None` at end of stream.
    fn next_message(&mut self, deadline: Instant) -> Option<(String, String)> {
        let name = self.name;
        // At least 1 ms: zero would mean no timeout.
        let left = deadline.saturating_duration_since(Instant::now());
        let left = left.max(Duration::from_millis(1));
        self.stream.set_read_timeout(Some(left)).unwrap();
        let mut message = Vec::new();
        match self.reader.read_until(b'\n', &mut message) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "client {name}: nothing came by the deadline; got {:?}",
                    self.got
                )
            }
            Err(e) => panic!("client {name}: {e}"),
            Ok(0) => return None,
            Ok(_) => {}
        }
        let message = message.strip_suffix(b"\n");
        let parsed = message.and_then(chat_protocol::parse_message);
        let (line, from) = parsed.unwrap_or_else(|| panic!("client {name} got {message:?}"));
        let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
        Some((text(from), text(line)))
    }

    /// Reads until `line` from `sender` has come; how long that took.
    pub fn wait_for(&mut self, sender: &str, line: &str) -> Duration {
        let start = Instant::now();
        let wanted = (sender.to_owned(), line.to_owned());
        while !self.got.contains(&wanted) {
            let message = self.next_message(start + WAIT);
            let closed = || panic!("client {}: closed before {line:?} came", self.name);
            let message = message.unwrap_or_else(closed);
            self.got.push(message);
        }
        start.elapsed()
    }

    /// True if nothing has come that was not read yet.
    pub fn quiet(&mut self) -> bool {
        self.stream.set_nonblocking(true).unwrap();
        let peeked = self.stream.peek(&mut [0]);
        self.stream.set_nonblocking(false).unwrap();
        let nothing = matches!(peeked, Err(e) if e.kind() == ErrorKind::WouldBlock);
        self.reader.buffer().is_empty() && nothing
    }

    /// Reads what is left, up to the server's close.
    pub fn read_to_close(&mut self) {
        let deadline = Instant::now() + WAIT;
        while let Some(message) = self.next_message(deadline) {
            self.got.push(message);
        }
    }
}

/// When a line was said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Both servers in the room, the link whole.
    Before,
    /// From the cut until s1 logged `link up after`.
    Cut,
    /// During a cut too short for the heartbeat to notice.
    Blip,
    /// Since.
    After,
}

/// A line a client said.
#[derive(Debug)]
pub struct Said {
    pub sender: String,
    /// The sender's server.
    pub server: u8,
    pub line: String,
    pub phase: Phase,
}

/// Clients `a` and `b` on s1, `c` on s2.
pub const A: usize = 0;
pub const B: usize = 1;
pub const C: usize = 2;
pub const EVERYONE: [usize; 3] = [A, B, C];

/// The clients, and everything they said, in order.
#[derive(Debug)]
pub struct Chat {
    pub clients: [Client; 3],
    pub said: Vec<Said>,
}

impl Chat {
    /// Client `speaker` says a new line in `phase`, and each client of
    /// `hearers` waits for it; the longest wait.
    pub fn say(&mut self, speaker: usize, hearers: &[usize], phase: Phase) -> Duration {
        self.say_many(speaker, 1, hearers, phase)
    }

    /// Client `speaker` says `count` new lines in one write, and each
    /// client of `hearers` waits for the last; the longest wait.
    pub fn say_many(
        &mut self,
        speaker: usize,
        count: usize,
        hearers: &[usize],
        phase: Phase,
    ) -> Duration {
        let client = &mut self.clients[speaker];
        let (sender, server) = (client.me.clone(), client.server);
        let mut wire = String::new();
        for _ in 0..count {
            // Ended by '.', so that no line is a part of another.
            let line = format!("{} {phase:?} {}.", client.name, self.said.len());
            wire.push_str(&line);
            wire.push('\n');
            let sender = sender.clone();
            self.said.push(Said {
                sender,
                server,
                line,
                phase,
            });
        }
        client.stream.write_all(wire.as_bytes()).expect("send");
        let last = self.said.last().unwrap().line.clone();
        let waits = hearers
            .iter()
            .map(|&i| self.clients[i].wait_for(&sender, &last));
        waits.max().unwrap_or_default()
    }

    /// Stops both servers with SIGTERM: each sends what it has and
    /// closes its clients, so reading up to the close shows anything that
    /// came twice. Checks what each client got; the servers' counts.
    pub fn finish(&mut self, s1: &mut Server, s2: &mut Server, mode: &str) -> ([u64; 6], [u64; 6]) {
        let counts = (stop(s1), stop(s2));
        for i in EVERYONE {
            self.clients[i].read_to_close();
            self.check(i, mode);
        }
        counts
    }

    /// What `sender` said, in order.
    fn by(&self, sender: &str) -> Vec<&Said> {
        self.said.iter().filter(|s| s.sender == sender).collect()
    }

    /// Lines said on server `n`.
    pub fn said_on(&self, n: u8) -> u64 {
        self.said.iter().filter(|s| s.server == n).count() as u64
    }

    /// Lines client `i` got from server `n`'s clients.
    pub fn got_from(&self, i: usize, n: u8) -> u64 {
        let got = &self.clients[i].got;
        got.iter()
            .filter(|(from, _)| self.by(from)[0].server == n)
            .count() as u64
    }

    /// Checks what client `i` got, from each sender: in `streams` mode,
    /// or from its own server, every line exactly once and in order. In
    /// `pubsub` mode, from the other server: in order, none twice, and
    /// every line said outside the partition (at most once: those said
    /// during it may be lost).
    fn check(&self, i: usize, mode: &str) {
        let client = &self.clients[i];
        let name = client.name;
        let senders: Vec<&str> = self.said.iter().map(|s| s.sender.as_str()).collect();
        for (sender, _) in &client.got {
            let known = senders.contains(&sender.as_str());
            assert!(known, "client {name} got a line from {sender}");
        }
        for sender in senders {
            let said = self.by(sender);
            let all: Vec<&str> = said.iter().map(|s| s.line.as_str()).collect();
            let got: Vec<&str> = client
                .got
                .iter()
                .filter(|(from, _)| from == sender)
                .map(|(_, line)| line.as_str())
                .collect();
            if mode == "streams" || said[0].server == client.server {
                assert_eq!(got, all, "client {name}, lines from {sender}");
                continue;
            }
            let mut rest = all.iter();
            for line in &got {
                let in_order = rest.any(|l| l == line);
                assert!(in_order, "client {name}: {line:?} again: {got:?}");
            }
            for s in said.iter().filter(|s| s.phase != Phase::Cut) {
                let line = &s.line;
                let found = got.contains(&line.as_str());
                assert!(found, "client {name}: no {line:?}: {got:?}");
            }
        }
    }
}
