//! The echo workloads: `pingpong`, `stream` and `churn`.
//!
//! Connection `i` sends the byte `(offset + i) % 251` at stream offset
//! `offset`, so a lost, repeated, reordered or crossed byte shows up as a
//! difference in what comes back.

use super::harness::{failed, Load, Workload};
use super::report::{per_second, Summary, Tally};
use super::{Mode, Settings};
use crate::conn::{Next, READ_CHUNK};
use rselectors::Events;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Period of the byte pattern: a prime, so that message boundaries and
/// the pattern rarely line up.
const PATTERN_PERIOD: usize = 251;

/// A churn slot whose connection failed connects again after this long
/// (so a server that is down costs a few connects per second, not a spin).
const CHURN_RETRY: Duration = Duration::from_millis(10);

/// One connection slot of an echo workload and where its connection is
/// in its byte stream.
#[derive(Debug)]
struct EchoSlot {
    /// Pattern phase of this slot.
    salt: usize,
    /// When the connect started (churn measures connect to last echo).
    started: Instant,
    /// Bytes the messages issued so far add up to.
    target: u64,
    /// Bytes written.
    sent: u64,
    /// Bytes echoed and checked.
    received: u64,
    /// Messages issued.
    issued: u64,
    /// Messages echoed in full.
    echoed: u64,
    /// When each message not yet echoed in full was issued.
    issue_times: VecDeque<Instant>,
}

/// What every connection of an echo workload sends, and when.
#[derive(Debug)]
struct Traffic {
    mode: Mode,
    size: u64,
    pipeline: u64,
    /// The byte pattern, long enough to cut any phase of a whole
    /// `pipeline` of messages (or a read) from.
    pattern: Vec<u8>,
    /// Messages are issued only before this instant (none while connecting).
    issue_until: Option<Instant>,
}

impl Traffic {
    /// The pattern bytes of slot `salt` at stream offsets `from..from + len`.
    fn pattern_at(&self, salt: usize, from: u64, len: usize) -> &[u8] {
        let start = ((from + salt as u64) % PATTERN_PERIOD as u64) as usize;
        &self.pattern[start..start + len]
    }
}

/// The echo workload: its slots, what they send, and the buffer every
/// read goes to.
#[derive(Debug)]
struct Echo {
    slots: Vec<EchoSlot>,
    traffic: Traffic,
    read_buf: Vec<u8>,
}

impl Workload for Echo {
    fn name(&self, slot: usize) -> String {
        format!("connection {slot}")
    }

    fn connecting(&mut self, slot: usize, now: Instant) {
        let echo = &mut self.slots[slot];
        *echo = EchoSlot::new(echo.salt, now);
    }

    fn connected(&mut self, slot: usize, stream: &TcpStream, _tally: &mut Tally) -> Next {
        self.slots[slot].start(stream, &self.traffic)
    }

    fn ready(&mut self, slot: usize, stream: &TcpStream, mask: Events, tally: &mut Tally) -> Next {
        self.slots[slot].ready(stream, mask, &self.traffic, &mut self.read_buf, tally)
    }

    fn closed(&mut self, _slot: usize, failed: bool, now: Instant) -> Option<Duration> {
        let running = self.traffic.issue_until.is_some_and(|t| now < t);
        if self.traffic.mode != Mode::Churn || !running {
            None
        } else if failed {
            Some(CHURN_RETRY)
        } else {
            // Its messages came back: the next connection, at once.
            Some(Duration::ZERO)
        }
    }
}

impl EchoSlot {
    fn new(salt: usize, now: Instant) -> EchoSlot {
        EchoSlot {
            salt,
            started: now,
            target: 0,
            sent: 0,
            received: 0,
            issued: 0,
            echoed: 0,
            issue_times: VecDeque::new(),
        }
    }

    /// Issues the first messages (if the run has begun) and writes them.
    fn start(&mut self, stream: &TcpStream, traffic: &Traffic) -> Next {
        self.issue(traffic, Instant::now());
        match self.write(stream, traffic) {
            Ok(_) => Next::Wait(self.interest()),
            Err(e) => failed("write", e),
        }
    }

    /// Handles readiness `mask` on `stream`. Reads at most once; writes
    /// at most once unless the first write emptied the queue.
    fn ready(
        &mut self,
        stream: &TcpStream,
        mask: Events,
        traffic: &Traffic,
        read_buf: &mut [u8],
        tally: &mut Tally,
    ) -> Next {
        let mut socket_full = false;
        if mask.contains(Events::WRITE) && self.sent < self.target {
            match self.write(stream, traffic) {
                Ok(full) => socket_full = full,
                Err(e) => return failed("write", e),
            }
        }
        if mask.contains(Events::READ) {
            match (&*stream).read(read_buf) {
                Ok(0) => {
                    return Next::Failed(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the server closed the connection ({} of {} bytes echoed)",
                            self.received, self.sent
                        ),
                    ))
                }
                Ok(n) => {
                    let now = Instant::now();
                    if let Err(wrong) = self.check(&read_buf[..n], traffic) {
                        return Next::Failed(wrong);
                    }
                    if self.count_echoed(traffic, tally, now) {
                        return Next::Close("its messages came back");
                    }
                    self.issue(traffic, now);
                    if !socket_full && self.sent < self.target {
                        if let Err(e) = self.write(stream, traffic) {
                            return failed("write", e);
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return failed("read", e),
            }
        }
        Next::Wait(self.interest())
    }

    /// READ, and WRITE while bytes wait.
    fn interest(&self) -> Events {
        if self.sent < self.target {
            Events::READ | Events::WRITE
        } else {
            Events::READ
        }
    }

    /// Issues the messages the mode calls for now.
    fn issue(&mut self, traffic: &Traffic, now: Instant) {
        let Some(until) = traffic.issue_until else {
            return;
        };
        let in_flight = self.issued - self.echoed;
        let count = match traffic.mode {
            Mode::PingPong if in_flight == 0 && now < until => traffic.pipeline,
            Mode::Stream if now < until => traffic.pipeline - in_flight,
            Mode::Churn if self.issued == 0 => traffic.pipeline,
            _ => 0,
        };
        if count == 0 {
            return;
        }
        if traffic.mode != Mode::Churn {
            self.issue_times.extend((0..count).map(|_| now));
        }
        self.issued += count;
        self.target += count * traffic.size;
    }

    /// One `write(2)` of what is due; true if the socket took less (full).
    fn write(&mut self, stream: &TcpStream, traffic: &Traffic) -> io::Result<bool> {
        let due = (self.target - self.sent) as usize;
        if due == 0 {
            return Ok(false);
        }
        let bytes = traffic.pattern_at(self.salt, self.sent, due);
        loop {
            return match (&*stream).write(bytes) {
                Ok(0) => Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n as u64;
                    Ok(n < due)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// Checks the bytes just read, `got`, against what was sent.
    fn check(&mut self, got: &[u8], traffic: &Traffic) -> io::Result<()> {
        let n = got.len();
        if self.received + n as u64 > self.sent {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} bytes came back, {} were sent",
                    self.received + n as u64,
                    self.sent
                ),
            ));
        }
        let expected = traffic.pattern_at(self.salt, self.received, n);
        if let Some(i) = (0..n).find(|&i| got[i] != expected[i]) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "byte {} of the echo is {:#04x}, {:#04x} was sent",
                    self.received + i as u64,
                    got[i],
                    expected[i]
                ),
            ));
        }
        self.received += n as u64;
        Ok(())
    }

    /// Counts the messages now echoed in full; true when a churn
    /// connection is done.
    fn count_echoed(&mut self, traffic: &Traffic, tally: &mut Tally, now: Instant) -> bool {
        while self.received >= (self.echoed + 1) * traffic.size {
            self.echoed += 1;
            if let Some(issued) = self.issue_times.pop_front() {
                tally.message(issued, now);
            }
        }
        if traffic.mode == Mode::Churn && self.issued > 0 && self.echoed == self.issued {
            tally.message(self.started, now);
            return true;
        }
        false
    }
}

/// Runs an echo workload; the error count.
pub fn run(settings: &Settings) -> io::Result<u64> {
    let span = (settings.pipeline * settings.size).max(READ_CHUNK);
    let pattern = (0..PATTERN_PERIOD + span)
        .map(|i| (i % PATTERN_PERIOD) as u8)
        .collect();
    let created = Instant::now();
    let echo = Echo {
        slots: (0..settings.conns)
            .map(|i| EchoSlot::new(i % PATTERN_PERIOD, created))
            .collect(),
        traffic: Traffic {
            mode: settings.mode,
            size: settings.size as u64,
            pipeline: settings.pipeline as u64,
            pattern,
            issue_until: None,
        },
        read_buf: vec![0; READ_CHUNK],
    };
    let mut load = Load::new(settings, settings.conns, echo)?;
    let churn = settings.mode == Mode::Churn;
    if churn {
        load.vary_source();
    } else {
        load.connect_all()?;
    }
    let elapsed = load.run_for(settings.duration, |load, deadline| {
        load.work.traffic.issue_until = Some(deadline);
        for slot in 0..settings.conns {
            if churn {
                load.open(slot);
            } else {
                load.act(slot, |echo, stream, _| {
                    echo.slots[slot].start(stream, &echo.traffic)
                });
            }
        }
    })?;
    Summary {
        settings,
        mode: settings.mode.name(),
        tally: &load.tally,
        elapsed,
        extra: match settings.mode {
            Mode::Churn => format!(" conns_per_s={:.1}", per_second(load.tally.msgs, elapsed)),
            _ => String::new(),
        },
    }
    .print();
    Ok(load.tally.errors)
}
