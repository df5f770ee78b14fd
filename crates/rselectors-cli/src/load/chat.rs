//! `load --chat N`: broadcast fan-out of the chat server.
//!
//! N listening connections and one sender. The sender keeps `--pipeline`
//! lines in flight: it sends the next one when a line has reached every
//! connection (itself included, since the server echoes to the sender
//! too), so the server's backlogs stay bounded however slow it is. A line
//! carries its sequence number and is padded to `--size` bytes; every
//! connection must receive every line, in order, byte for byte, as the
//! server formats it (`your msg = <text> from <sender>`). A delivery is one
//! line arriving at one listener; its latency runs from the moment the
//! sender queued it.
//!
//! A connection that the server has not registered yet would miss lines,
//! so the run starts with a handshake: the sender sends `sync` lines until
//! every connection has received one.

use super::{
    connect_result, start_connect, wait_time, Progress, Settings, Summary, Tally, CONNECT_TIMEOUT,
    READ_CHUNK,
};
use crate::chat_protocol::MAX_LINE;
use rselectors::{AnySelector, Events};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// How often the sender repeats its `sync` line during the handshake.
const SYNC_EVERY: Duration = Duration::from_millis(20);

/// Text of the handshake lines (followed by a number).
const SYNC: &[u8] = b"sync ";

/// What the chat server puts before each line it relays.
const PREFIX: &[u8] = b"your msg = ";

/// The sender's index among the connections; listeners are 1..=N.
const SENDER: usize = 0;

/// One connection (the sender or a listener) as a receiver of lines.
struct Receiver {
    fd: Option<RawFd>,
    connected: bool,
    /// It received a `sync` line: the server has registered it.
    synced: bool,
    /// It received a measured line (`sync` lines are over for it).
    measuring: bool,
    /// Sequence number of the next line it must receive.
    next_seq: u64,
    /// Received bytes of a line not complete yet.
    partial: Vec<u8>,
}

/// A line in flight.
struct Line {
    sent_at: Instant,
    /// The line as every connection must receive it, without the newline.
    expected: Vec<u8>,
    /// Connections that have not received it yet.
    waiting: usize,
}

/// Lines in flight and the counts; apart from the selector so that a
/// line can be checked while the read buffer is borrowed.
struct Fanout {
    /// Lines in flight, oldest first; the oldest has number `first_seq`.
    in_flight: VecDeque<Line>,
    first_seq: u64,
    /// Lines sent (measured ones).
    lines: u64,
    /// The sender's address as the server prints it.
    sender: String,
    /// The handshake is over: lines are being measured.
    started: bool,
    /// Connections that take part (connected, synced, not failed).
    receiving: usize,
    /// Bytes the sender queued and has not written yet.
    out: Vec<u8>,
    size: usize,
    tally: Tally,
}

impl Fanout {
    /// The text of line `seq`: its number, then filler up to `size` bytes.
    fn text(&self, seq: u64) -> Vec<u8> {
        let mut text = seq.to_string().into_bytes();
        let filler = (text.len() as u64..self.size as u64).map(|j| b'a' + ((seq + j) % 26) as u8);
        text.extend(filler);
        text
    }

    /// What every connection receives for `text`.
    fn relayed(&self, text: &[u8]) -> Vec<u8> {
        let mut line = PREFIX.to_vec();
        line.extend_from_slice(text);
        line.extend_from_slice(b" from ");
        line.extend_from_slice(self.sender.as_bytes());
        line
    }

    /// Queues the next measured line for the sender.
    fn queue_line(&mut self, now: Instant) {
        let seq = self.first_seq + self.in_flight.len() as u64;
        let text = self.text(seq);
        self.out.extend_from_slice(&text);
        self.out.push(b'\n');
        let expected = self.relayed(&text);
        self.in_flight.push_back(Line {
            sent_at: now,
            expected,
            waiting: self.receiving,
        });
        self.lines += 1;
    }

    /// Handles one complete line (no newline) received by connection
    /// `index`; the reason if it is wrong.
    fn received(
        &mut self,
        index: usize,
        receiver: &mut Receiver,
        line: &[u8],
        now: Instant,
    ) -> Result<(), String> {
        if line.starts_with(PREFIX) && line[PREFIX.len()..].starts_with(SYNC) {
            if receiver.measuring {
                return Err("a sync line after measured lines".to_owned());
            }
            receiver.synced = true;
            return Ok(());
        }
        receiver.measuring = true;
        let seq = receiver.next_seq;
        let Some(sent) = seq
            .checked_sub(self.first_seq)
            .and_then(|i| self.in_flight.get_mut(i as usize))
        else {
            return Err(format!(
                "line {seq} came before it was sent: {}",
                show(line)
            ));
        };
        if line != sent.expected {
            return Err(format!(
                "line {seq} differs: expected {}, got {}",
                show(&sent.expected),
                show(line)
            ));
        }
        sent.waiting -= 1;
        if index != SENDER {
            self.tally.message(sent.sent_at, now);
        }
        receiver.next_seq += 1;
        self.retire();
        Ok(())
    }

    /// A connection dropped out: the lines it still waited for wait for
    /// one connection less.
    fn drop_out(&mut self, receiver: &Receiver) {
        if !self.started {
            return;
        }
        self.receiving -= 1;
        let from = receiver.next_seq.saturating_sub(self.first_seq) as usize;
        for line in self.in_flight.iter_mut().skip(from) {
            line.waiting -= 1;
        }
        self.retire();
    }

    /// Forgets the oldest lines once everyone has them.
    fn retire(&mut self) {
        while self.in_flight.front().is_some_and(|l| l.waiting == 0) {
            self.in_flight.pop_front();
            self.first_seq += 1;
        }
    }
}

/// A line for an error message: lossy UTF-8, cut short.
fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]);
    if bytes.len() > 80 {
        format!("{text:?}...")
    } else {
        format!("{text:?}")
    }
}

struct ChatLoad {
    sel: AnySelector<TcpStream, usize>,
    receivers: Vec<Receiver>,
    fanout: Fanout,
    read_buf: Vec<u8>,
    /// The longest line a connection may receive.
    max_line: usize,
}

impl ChatLoad {
    /// Connects the sender and the listeners.
    fn connect_all(&mut self, addr: SocketAddr) -> io::Result<()> {
        for index in 0..self.receivers.len() {
            let registered = start_connect(addr, None).and_then(|stream| {
                let key = self.sel.register(stream, Events::WRITE, index)?;
                Ok(key.fd)
            });
            match registered {
                Ok(fd) => self.receivers[index].fd = Some(fd),
                Err(e) => self
                    .fanout
                    .tally
                    .error(format_args!("cannot connect to {addr}: {e}")),
            }
        }
        let give_up = Instant::now() + CONNECT_TIMEOUT;
        loop {
            let connecting = self
                .receivers
                .iter()
                .any(|r| r.fd.is_some() && !r.connected);
            let now = Instant::now();
            if !connecting || now >= give_up {
                break;
            }
            self.turn(give_up - now)?;
        }
        for index in 0..self.receivers.len() {
            if self.receivers[index].fd.is_some() && !self.receivers[index].connected {
                self.fail(index, "no connect in time");
            }
        }
        Ok(())
    }

    /// Sends `sync` lines until every connection has received one.
    fn handshake(&mut self) -> io::Result<()> {
        let give_up = Instant::now() + CONNECT_TIMEOUT;
        let mut next_sync = Instant::now();
        let mut round = 0u64;
        loop {
            let now = Instant::now();
            let waiting = self.receivers.iter().any(|r| r.fd.is_some() && !r.synced);
            if !waiting || now >= give_up || self.receivers[SENDER].fd.is_none() {
                break;
            }
            if now >= next_sync {
                round += 1;
                self.fanout.out.extend_from_slice(SYNC);
                self.fanout.out.extend(round.to_string().bytes());
                self.fanout.out.push(b'\n');
                self.flush_sender();
                next_sync = now + SYNC_EVERY;
            }
            self.turn(next_sync.min(give_up).saturating_duration_since(now))?;
        }
        for index in 0..self.receivers.len() {
            if self.receivers[index].fd.is_some() && !self.receivers[index].synced {
                self.fail(index, "no sync line came in time");
            }
        }
        self.fanout.receiving = self.receivers.iter().filter(|r| r.fd.is_some()).count();
        self.fanout.started = true;
        Ok(())
    }

    /// Waits at most `wait` and handles the events.
    fn turn(&mut self, wait: Duration) -> io::Result<()> {
        self.sel.select(Some(wait))?;
        while let Some((fd, mask)) = self.sel.next_ready() {
            if let Ok(key) = self.sel.get_key(fd) {
                let index = key.data;
                self.ready(index, mask);
            }
        }
        Ok(())
    }

    fn ready(&mut self, index: usize, mask: Events) {
        let Some(fd) = self.receivers[index].fd else {
            return;
        };
        if !self.receivers[index].connected {
            let result = match self.sel.get_key(fd) {
                Ok(key) => connect_result(&key.fileobj),
                Err(e) => Err(io::Error::other(e.to_string())),
            };
            match result {
                Ok(()) => {
                    self.receivers[index].connected = true;
                    self.update_interest(index);
                }
                Err(e) => self.fail(index, &format!("cannot connect: {e}")),
            }
            return;
        }
        if mask.contains(Events::WRITE) && index == SENDER {
            self.flush_sender();
        }
        if mask.contains(Events::READ) {
            self.read(index, fd);
        }
    }

    /// One read on connection `index`, and the lines it completes.
    fn read(&mut self, index: usize, fd: RawFd) {
        let n = match self.sel.get_key(fd) {
            Ok(key) => match (&key.fileobj).read(&mut self.read_buf) {
                Ok(0) => return self.fail(index, "the server closed the connection"),
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    return
                }
                Err(e) => return self.fail(index, &format!("read: {e}")),
            },
            Err(_) => return,
        };
        let now = Instant::now();
        let receiver = &mut self.receivers[index];
        let mut partial = std::mem::take(&mut receiver.partial);
        let mut outcome = Ok(());
        let mut rest = &self.read_buf[..n];
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let line = if partial.is_empty() {
                &rest[..end]
            } else {
                partial.extend_from_slice(&rest[..end]);
                &partial[..]
            };
            outcome = self.fanout.received(index, receiver, line, now);
            partial.clear();
            rest = &rest[end + 1..];
            if outcome.is_err() {
                break;
            }
        }
        if outcome.is_ok() {
            partial.extend_from_slice(rest);
            if partial.len() > self.max_line {
                outcome = Err(format!("a line longer than {} bytes", self.max_line));
            }
        }
        receiver.partial = partial;
        if let Err(why) = outcome {
            self.fail(index, &why);
        }
    }

    /// One write of what the sender has queued.
    fn flush_sender(&mut self) {
        let Some(fd) = self.receivers[SENDER].fd else {
            return;
        };
        if self.fanout.out.is_empty() {
            return;
        }
        let written = match self.sel.get_key(fd) {
            Ok(key) => (&key.fileobj).write(&self.fanout.out),
            Err(_) => return,
        };
        match written {
            Ok(n) => {
                self.fanout.out.drain(..n);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return self.fail(SENDER, &format!("write: {e}")),
        }
        self.update_interest(SENDER);
    }

    /// READ, plus WRITE for the sender while it has bytes queued.
    fn update_interest(&mut self, index: usize) {
        let Some(fd) = self.receivers[index].fd else {
            return;
        };
        let mut events = Events::READ;
        if index == SENDER && !self.fanout.out.is_empty() {
            events |= Events::WRITE;
        }
        if let Err(e) = self.sel.modify_events(fd, events) {
            self.fail(index, &format!("selector: {e}"));
        }
    }

    /// Counts an error on connection `index` and closes it.
    fn fail(&mut self, index: usize, why: &str) {
        let who = match index {
            SENDER => "the sender".to_owned(),
            _ => format!("listener {index}"),
        };
        self.fanout.tally.error(format_args!("{who}: {why}"));
        if let Some(fd) = self.receivers[index].fd.take() {
            let _ = self.sel.unregister(fd);
            self.fanout.drop_out(&self.receivers[index]);
        }
    }

    /// Queues new lines while fewer than `window` are in flight, and
    /// writes them.
    fn send_lines(&mut self, window: usize, now: Instant) {
        if self.receivers[SENDER].fd.is_none() {
            return;
        }
        let before = self.fanout.lines;
        while self.fanout.in_flight.len() < window {
            self.fanout.queue_line(now);
        }
        if self.fanout.lines > before {
            self.flush_sender();
        }
    }
}

/// Runs the chat fan-out measurement; the error count.
pub fn run(settings: &Settings) -> io::Result<u64> {
    if settings.size > MAX_LINE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--size {} is over {MAX_LINE}, the chat server's line limit (--chat)",
                settings.size
            ),
        ));
    }
    let receivers = (0..=settings.conns)
        .map(|_| Receiver {
            fd: None,
            connected: false,
            synced: false,
            measuring: false,
            next_seq: 0,
            partial: Vec::new(),
        })
        .collect();
    let mut load = ChatLoad {
        sel: AnySelector::with_kind(settings.kind)?,
        receivers,
        fanout: Fanout {
            in_flight: VecDeque::new(),
            first_seq: 0,
            lines: 0,
            sender: String::new(),
            started: false,
            receiving: 0,
            out: Vec::new(),
            size: settings.size,
            tally: Tally::new()?,
        },
        read_buf: vec![0; READ_CHUNK],
        // The prefix, the text, " from " and an IPv6 address with a port.
        max_line: settings.size + 128,
    };
    load.connect_all(settings.addr)?;
    if let Some(fd) = load.receivers[SENDER].fd {
        if let Ok(key) = load.sel.get_key(fd) {
            load.fanout.sender = key.fileobj.local_addr()?.to_string();
        }
        load.handshake()?;
    }
    let start = Instant::now();
    let deadline = start
        .checked_add(settings.duration)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "--duration is too long"))?;
    let mut progress = Progress::new(start);
    loop {
        let now = Instant::now();
        progress.tick(now, &load.fanout.tally);
        let listening = load.receivers[1..].iter().any(|r| r.fd.is_some());
        if now >= deadline || load.receivers[SENDER].fd.is_none() || !listening {
            break;
        }
        load.send_lines(settings.pipeline, now);
        load.turn(wait_time(now, deadline, &progress))?;
    }
    let elapsed = start.elapsed().min(settings.duration);
    progress.finish();
    let tally = &load.fanout.tally;
    Summary {
        settings,
        mode: "chat",
        tally,
        elapsed,
        extra: format!(
            " lines={} deliveries_per_s={:.1}",
            load.fanout.lines,
            tally.msgs as f64 / elapsed.as_secs_f64().max(1e-9)
        ),
    }
    .print();
    Ok(tally.errors)
}
