//! `load --chat N`: broadcast fan-out of the chat server.
//!
//! N listening connections and one sender. The sender keeps `--pipeline`
//! lines in flight: it sends the next one when a line has reached every
//! connection (itself included, since the server echoes to the sender
//! too), so the server's backlogs stay bounded however slow it is. A line
//! carries its sequence number and is padded to `--size` bytes; every
//! connection must receive every line, in order, byte for byte, as the
//! chat protocol ([`crate::chat_protocol`]) relays it. A delivery is one
//! line arriving at one listener; its latency runs from the moment the
//! sender queued it.
//!
//! A connection that the server has not registered yet would miss lines,
//! so the run starts with a handshake: the sender sends `sync` lines until
//! every connection has received one.

use super::harness::{failed, Load, Workload};
use super::report::{per_second, Summary, Tally};
use super::Settings;
use crate::chat_protocol::{self, parse_message, MAX_LINE, MAX_MESSAGE};
use crate::conn::{Next, CONNECT_TIMEOUT, READ_CHUNK};
use rselectors::Events;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How often the sender repeats its `sync` line during the handshake.
const SYNC_EVERY: Duration = Duration::from_millis(20);

/// Text of the handshake lines (followed by a number).
const SYNC: &[u8] = b"sync ";

/// The sender's slot; listeners are 1..=N.
const SENDER: usize = 0;

/// One connection (the sender or a listener) as a receiver of lines.
#[derive(Debug, Default)]
struct Receiver {
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
#[derive(Debug)]
struct Line {
    sent_at: Instant,
    /// The message every connection must receive, without the newline.
    expected: Vec<u8>,
    /// Connections that have not received it yet.
    waiting: usize,
}

/// The lines in flight and what the sender has queued; apart from the
/// receivers so that a line can be checked while its receiver and the
/// read buffer are borrowed.
#[derive(Debug)]
struct Fanout {
    /// Lines in flight, oldest first; the oldest has number `first_seq`.
    in_flight: VecDeque<Line>,
    first_seq: u64,
    /// Lines sent (measured ones).
    lines: u64,
    /// The sender's address, as the server names it in every message
    /// (set once the sender is connected).
    sender: SocketAddr,
    /// The handshake is over: lines are being measured.
    started: bool,
    /// Connections that take part (connected, synced, not failed).
    receiving: usize,
    /// Bytes the sender queued and has not written yet.
    out: Vec<u8>,
    size: usize,
}

impl Fanout {
    /// The text of line `seq`: its number, then filler up to `size` bytes.
    fn text(&self, seq: u64) -> Vec<u8> {
        let mut text = seq.to_string().into_bytes();
        let filler = (text.len() as u64..self.size as u64).map(|j| b'a' + ((seq + j) % 26) as u8);
        text.extend(filler);
        text
    }

    /// Queues the next measured line for the sender.
    fn queue_line(&mut self, now: Instant) {
        let seq = self.first_seq + self.in_flight.len() as u64;
        let text = self.text(seq);
        self.out.extend_from_slice(&text);
        self.out.push(b'\n');
        let mut expected = chat_protocol::message(&text, self.sender);
        expected.pop(); // the newline
        self.in_flight.push_back(Line {
            sent_at: now,
            expected,
            waiting: self.receiving,
        });
        self.lines += 1;
    }

    /// Handles one complete line (no newline) received by slot `slot`;
    /// the reason if it is wrong.
    fn received(
        &mut self,
        slot: usize,
        receiver: &mut Receiver,
        line: &[u8],
        now: Instant,
        tally: &mut Tally,
    ) -> Result<(), String> {
        let seq = receiver.next_seq;
        let in_flight = seq
            .checked_sub(self.first_seq)
            .map(|i| i as usize)
            .filter(|&i| i < self.in_flight.len());
        if let Some(i) = in_flight {
            let sent = &mut self.in_flight[i];
            if line == sent.expected {
                receiver.measuring = true;
                sent.waiting -= 1;
                if slot != SENDER {
                    tally.message(sent.sent_at, now);
                }
                receiver.next_seq += 1;
                self.retire();
                return Ok(());
            }
        }
        // Not the line due next: a handshake line, or wrong.
        if parse_message(line).is_some_and(|(text, _)| text.starts_with(SYNC)) {
            if receiver.measuring {
                return Err("a sync line after measured lines".to_owned());
            }
            receiver.synced = true;
            return Ok(());
        }
        match in_flight {
            None => Err(format!(
                "line {seq} came before it was sent: {}",
                show(line)
            )),
            Some(i) => Err(format!(
                "line {seq} differs: expected {}, got {}",
                show(&self.in_flight[i].expected),
                show(line)
            )),
        }
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

/// The chat workload: a receiver per slot, the lines in flight, and the
/// buffer every read goes to.
#[derive(Debug)]
struct Chat {
    receivers: Vec<Receiver>,
    fanout: Fanout,
    read_buf: Vec<u8>,
    /// Lines the sender keeps in flight (`--pipeline`).
    window: usize,
}

impl Chat {
    /// READ, plus WRITE for the sender while it has bytes queued.
    fn interest(&self, slot: usize) -> Events {
        if slot == SENDER && !self.fanout.out.is_empty() {
            Events::READ | Events::WRITE
        } else {
            Events::READ
        }
    }

    /// One write of what the sender has queued, on the sender's `stream`.
    fn write_queued(&mut self, stream: &TcpStream) -> Next {
        if self.fanout.out.is_empty() {
            return Next::Keep;
        }
        match (&*stream).write(&self.fanout.out) {
            Ok(n) => {
                self.fanout.out.drain(..n);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return failed("write", e),
        }
        Next::Wait(self.interest(SENDER))
    }

    /// One read on slot `slot`'s `stream`, and the lines it completes.
    fn read(&mut self, slot: usize, stream: &TcpStream, tally: &mut Tally) -> io::Result<()> {
        let n = match (&*stream).read(&mut self.read_buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ))
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("read: {e}"))),
        };
        let now = Instant::now();
        let receiver = &mut self.receivers[slot];
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
            outcome = self.fanout.received(slot, receiver, line, now, tally);
            partial.clear();
            rest = &rest[end + 1..];
            if outcome.is_err() {
                break;
            }
        }
        if outcome.is_ok() {
            partial.extend_from_slice(rest);
            if partial.len() >= MAX_MESSAGE {
                outcome = Err(format!("a line longer than {} bytes", MAX_MESSAGE - 1));
            }
        }
        receiver.partial = partial;
        outcome.map_err(|why| io::Error::new(io::ErrorKind::InvalidData, why))
    }
}

impl Workload for Chat {
    fn name(&self, slot: usize) -> String {
        match slot {
            SENDER => "the sender".to_owned(),
            _ => format!("listener {slot}"),
        }
    }

    fn connected(&mut self, slot: usize, _stream: &TcpStream, _tally: &mut Tally) -> Next {
        Next::Wait(self.interest(slot))
    }

    fn ready(&mut self, slot: usize, stream: &TcpStream, mask: Events, tally: &mut Tally) -> Next {
        let mut next = Next::Keep;
        if mask.contains(Events::WRITE) && slot == SENDER {
            next = self.write_queued(stream);
            if let Next::Failed(_) = next {
                return next;
            }
        }
        if mask.contains(Events::READ) {
            if let Err(e) = self.read(slot, stream, tally) {
                return Next::Failed(e);
            }
        }
        next
    }

    fn closed(&mut self, slot: usize, _failed: bool, _now: Instant) -> Option<Duration> {
        self.fanout.drop_out(&self.receivers[slot]);
        None
    }

    /// Ends the run once the sender or every listener is gone; else keeps
    /// `--pipeline` lines in flight.
    fn before_wait(load: &mut Load<Chat>, now: Instant) -> bool {
        let listening = (1..load.work.receivers.len()).any(|slot| load.is_open(slot));
        if !listening || !load.is_open(SENDER) {
            return false;
        }
        let fanout = &mut load.work.fanout;
        let before = fanout.lines;
        while fanout.in_flight.len() < load.work.window {
            fanout.queue_line(now);
        }
        if fanout.lines > before {
            load.act(SENDER, |chat, stream, _| chat.write_queued(stream));
        }
        true
    }
}

impl Load<Chat> {
    /// Sends `sync` lines until every connection has received one.
    fn handshake(&mut self) -> io::Result<()> {
        let slots = self.work.receivers.len();
        let give_up = Instant::now() + CONNECT_TIMEOUT;
        let mut next_sync = Instant::now();
        let mut round = 0u64;
        loop {
            let now = Instant::now();
            let waiting = (0..slots).any(|i| self.is_open(i) && !self.work.receivers[i].synced);
            if !waiting || now >= give_up || !self.is_open(SENDER) {
                break;
            }
            if now >= next_sync {
                round += 1;
                let out = &mut self.work.fanout.out;
                out.extend_from_slice(SYNC);
                out.extend(round.to_string().bytes());
                out.push(b'\n');
                self.act(SENDER, |chat, stream, _| chat.write_queued(stream));
                next_sync = now + SYNC_EVERY;
            }
            self.poll_events(next_sync.min(give_up).saturating_duration_since(now))?;
        }
        for slot in 0..slots {
            if self.is_open(slot) && !self.work.receivers[slot].synced {
                self.fail(slot, "no sync line came in time");
            }
        }
        self.work.fanout.receiving = (0..slots).filter(|&slot| self.is_open(slot)).count();
        self.work.fanout.started = true;
        Ok(())
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
    let chat = Chat {
        receivers: (0..=settings.conns).map(|_| Receiver::default()).collect(),
        fanout: Fanout {
            in_flight: VecDeque::new(),
            first_seq: 0,
            lines: 0,
            sender: SocketAddr::from(([0, 0, 0, 0], 0)),
            started: false,
            receiving: 0,
            out: Vec::new(),
            size: settings.size,
        },
        read_buf: vec![0; READ_CHUNK],
        window: settings.pipeline,
    };
    let mut load = Load::new(settings, settings.conns + 1, chat)?;
    load.connect_all()?;
    if let Some(sender) = load.stream(SENDER) {
        load.work.fanout.sender = sender.local_addr()?;
        load.handshake()?;
    }
    let elapsed = load.run_for(settings.duration, |_, _| {})?;
    Summary {
        settings,
        mode: "chat",
        tally: &load.tally,
        elapsed,
        extra: format!(
            " lines={} deliveries_per_s={:.1}",
            load.work.fanout.lines,
            per_second(load.tally.msgs, elapsed)
        ),
    }
    .print();
    Ok(load.tally.errors)
}
