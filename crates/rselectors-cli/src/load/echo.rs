//! The echo workloads: `pingpong`, `stream` and `churn`.
//!
//! Connection `i` sends the byte `(offset + i) % 251` at stream offset
//! `offset`, so a lost, repeated, reordered or crossed byte shows up as a
//! difference in what comes back.

use super::{
    churn_source, connect_result, start_connect, wait_time, Mode, Progress, Settings, Summary,
    Tally, CONNECT_TIMEOUT, READ_CHUNK,
};
use rselectors::{AnySelector, Events};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// Period of the byte pattern: a prime, so that message boundaries and
/// the pattern rarely line up.
const PATTERN_PERIOD: usize = 251;

/// A churn slot whose connection failed connects again after this long
/// (so a server that is down costs a few connects per second, not a spin).
const CHURN_RETRY: Duration = Duration::from_millis(10);

/// One connection slot and where it is in its byte stream.
struct Flow {
    /// The socket's descriptor while it is open (registered).
    fd: Option<RawFd>,
    connected: bool,
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
    issued: u64,
    done: u64,
    /// When each message not yet echoed in full was issued.
    issue_times: VecDeque<Instant>,
}

/// What a connection wants after an event.
enum Next {
    /// Wait for these events.
    Wait(Events),
    /// Churn: its messages came back; close it and open the next one.
    Done,
    /// It failed (the reason); close it and count an error.
    Failed(String),
}

/// Everything the connections share but the selector.
struct Work {
    mode: Mode,
    size: u64,
    pipeline: u64,
    pattern: Vec<u8>,
    read_buf: Vec<u8>,
    /// Messages are issued only before this instant (none while connecting).
    issue_until: Option<Instant>,
    tally: Tally,
}

impl Work {
    /// The pattern bytes of slot `salt` at stream offsets `from..from + len`.
    fn pattern_at(&self, salt: usize, from: u64, len: usize) -> &[u8] {
        let start = ((from + salt as u64) % PATTERN_PERIOD as u64) as usize;
        &self.pattern[start..start + len]
    }
}

impl Flow {
    fn new(salt: usize, now: Instant) -> Flow {
        Flow {
            fd: None,
            connected: false,
            salt,
            started: now,
            target: 0,
            sent: 0,
            received: 0,
            issued: 0,
            done: 0,
            issue_times: VecDeque::new(),
        }
    }

    /// Handles readiness `mask` on `stream`. Reads at most once; writes at
    /// most once unless the first write emptied the queue.
    fn ready(&mut self, stream: &TcpStream, mask: Events, work: &mut Work) -> Next {
        if !self.connected {
            // Registered for WRITE only: writable means the connect ended.
            if let Err(e) = connect_result(stream) {
                return Next::Failed(format!("cannot connect: {e}"));
            }
            self.connected = true;
            self.issue(work, Instant::now());
            return match self.write(stream, work) {
                Ok(_) => Next::Wait(self.interest()),
                Err(e) => Next::Failed(format!("write: {e}")),
            };
        }
        let mut socket_full = false;
        if mask.contains(Events::WRITE) && self.sent < self.target {
            match self.write(stream, work) {
                Ok(full) => socket_full = full,
                Err(e) => return Next::Failed(format!("write: {e}")),
            }
        }
        if mask.contains(Events::READ) {
            match (&*stream).read(&mut work.read_buf) {
                Ok(0) => {
                    return Next::Failed(format!(
                        "the server closed the connection ({} of {} bytes echoed)",
                        self.received, self.sent
                    ))
                }
                Ok(n) => {
                    let now = Instant::now();
                    if let Err(why) = self.check(n, work) {
                        return Next::Failed(why);
                    }
                    if self.complete(work, now) {
                        return Next::Done;
                    }
                    self.issue(work, now);
                    if !socket_full && self.sent < self.target {
                        if let Err(e) = self.write(stream, work) {
                            return Next::Failed(format!("write: {e}"));
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Next::Failed(format!("read: {e}")),
            }
        }
        Next::Wait(self.interest())
    }

    /// READ once connected, WRITE while connecting or while bytes wait.
    fn interest(&self) -> Events {
        if !self.connected {
            Events::WRITE
        } else if self.sent < self.target {
            Events::READ | Events::WRITE
        } else {
            Events::READ
        }
    }

    /// Issues the messages the mode calls for now.
    fn issue(&mut self, work: &Work, now: Instant) {
        let Some(until) = work.issue_until else {
            return;
        };
        let in_flight = self.issued - self.done;
        let count = match work.mode {
            Mode::PingPong if in_flight == 0 && now < until => work.pipeline,
            Mode::Stream if now < until => work.pipeline - in_flight,
            Mode::Churn if self.issued == 0 => work.pipeline,
            _ => 0,
        };
        if count == 0 {
            return;
        }
        if work.mode != Mode::Churn {
            self.issue_times.extend((0..count).map(|_| now));
        }
        self.issued += count;
        self.target += count * work.size;
    }

    /// One `write(2)` of what is due; true if the socket took less (full).
    fn write(&mut self, stream: &TcpStream, work: &Work) -> io::Result<bool> {
        let due = (self.target - self.sent) as usize;
        if due == 0 {
            return Ok(false);
        }
        let bytes = work.pattern_at(self.salt, self.sent, due);
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

    /// Checks the `n` bytes just read against what was sent.
    fn check(&mut self, n: usize, work: &Work) -> Result<(), String> {
        if self.received + n as u64 > self.sent {
            return Err(format!(
                "{} bytes came back, {} were sent",
                self.received + n as u64,
                self.sent
            ));
        }
        let expected = work.pattern_at(self.salt, self.received, n);
        let got = &work.read_buf[..n];
        if let Some(i) = (0..n).find(|&i| got[i] != expected[i]) {
            return Err(format!(
                "byte {} of the echo is {:#04x}, {:#04x} was sent",
                self.received + i as u64,
                got[i],
                expected[i]
            ));
        }
        self.received += n as u64;
        Ok(())
    }

    /// Counts the messages now echoed in full; true when a churn
    /// connection is done.
    fn complete(&mut self, work: &mut Work, now: Instant) -> bool {
        while self.received >= (self.done + 1) * work.size {
            self.done += 1;
            if let Some(issued) = self.issue_times.pop_front() {
                work.tally.message(issued, now);
            }
        }
        if work.mode == Mode::Churn && self.issued > 0 && self.done == self.issued {
            work.tally.message(self.started, now);
            return true;
        }
        false
    }
}

/// The connections, their selector, and the run's counts.
struct EchoLoad {
    sel: AnySelector<TcpStream, usize>,
    addr: SocketAddr,
    flows: Vec<Flow>,
    work: Work,
    /// Open connections.
    live: usize,
    /// Churn slots to connect again, and when.
    retry: Vec<(usize, Instant)>,
    /// Churn connects started so far (which source address the next one
    /// uses).
    churn_connects: usize,
}

impl EchoLoad {
    /// Starts connecting slot `slot`.
    fn open(&mut self, slot: usize) {
        let now = Instant::now();
        let flow = &mut self.flows[slot];
        *flow = Flow::new(flow.salt, now);
        let source = match self.work.mode {
            Mode::Churn => {
                self.churn_connects += 1;
                churn_source(self.addr, self.churn_connects - 1)
            }
            _ => None,
        };
        let registered = start_connect(self.addr, source)
            .map_err(|e| e.to_string())
            .and_then(|s| match self.sel.register(s, Events::WRITE, slot) {
                Ok(key) => Ok(key.fd),
                Err(refused) => Err(refused.error.to_string()),
            });
        match registered {
            Ok(fd) => {
                flow.fd = Some(fd);
                self.live += 1;
            }
            Err(e) => {
                let addr = self.addr;
                self.work
                    .tally
                    .error(format_args!("cannot connect to {addr}: {e}"));
                self.retry_later(slot, now);
            }
        }
    }

    /// Closes slot `slot`'s connection, if open.
    fn close(&mut self, slot: usize) {
        if let Some(fd) = self.flows[slot].fd.take() {
            // Dropping the key closes the socket.
            let _ = self.sel.unregister(fd);
            self.live -= 1;
        }
    }

    /// Churn: connect slot `slot` again after [`CHURN_RETRY`].
    fn retry_later(&mut self, slot: usize, now: Instant) {
        if self.work.mode == Mode::Churn && self.work.issue_until.is_some_and(|t| now < t) {
            self.retry.push((slot, now + CHURN_RETRY));
        }
    }

    /// Reopens the churn slots whose retry time has come.
    fn retry_due(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.retry.len() {
            if self.retry[i].1 <= now {
                let (slot, _) = self.retry.swap_remove(i);
                self.open(slot);
            } else {
                i += 1;
            }
        }
    }

    fn ready(&mut self, fd: RawFd, mask: Events) {
        let Ok(key) = self.sel.get_key(fd) else {
            return;
        };
        let slot = key.data;
        let next = self.flows[slot].ready(&key.fileobj, mask, &mut self.work);
        match next {
            Next::Wait(events) => {
                if let Err(e) = self.sel.modify_events(fd, events) {
                    self.work.tally.error(format_args!("selector: {e}"));
                    self.close(slot);
                }
            }
            Next::Done => {
                self.close(slot);
                if self.work.issue_until.is_some_and(|t| Instant::now() < t) {
                    self.open(slot);
                }
            }
            Next::Failed(why) => {
                self.work
                    .tally
                    .error(format_args!("connection {slot}: {why}"));
                self.close(slot);
                self.retry_later(slot, Instant::now());
            }
        }
    }

    /// Waits for events until `until` and handles them.
    fn turn(&mut self, wait: Duration) -> io::Result<()> {
        self.sel.select(Some(wait))?;
        while let Some((fd, mask)) = self.sel.next_ready() {
            self.ready(fd, mask);
        }
        Ok(())
    }

    /// Pingpong and stream: waits until every connection is connected (or
    /// failed, or [`CONNECT_TIMEOUT`] passed).
    fn connect_all(&mut self) -> io::Result<()> {
        for slot in 0..self.flows.len() {
            self.open(slot);
        }
        let give_up = Instant::now() + CONNECT_TIMEOUT;
        loop {
            let connecting = self
                .flows
                .iter()
                .filter(|f| f.fd.is_some() && !f.connected)
                .count();
            let now = Instant::now();
            if connecting == 0 {
                return Ok(());
            }
            if now >= give_up {
                break;
            }
            self.turn(give_up - now)?;
        }
        for slot in 0..self.flows.len() {
            if self.flows[slot].fd.is_some() && !self.flows[slot].connected {
                let secs = CONNECT_TIMEOUT.as_secs();
                self.work
                    .tally
                    .error(format_args!("connection {slot}: no connect in {secs} s"));
                self.close(slot);
            }
        }
        Ok(())
    }

    /// Issues the first messages of every connected slot.
    fn kick(&mut self) {
        let now = Instant::now();
        for slot in 0..self.flows.len() {
            let flow = &mut self.flows[slot];
            let Some(fd) = flow.fd else {
                continue;
            };
            flow.issue(&self.work, now);
            let Ok(key) = self.sel.get_key(fd) else {
                continue;
            };
            let result = flow.write(&key.fileobj, &self.work);
            let events = flow.interest();
            if let Err(e) = result {
                self.work
                    .tally
                    .error(format_args!("connection {slot}: write: {e}"));
                self.close(slot);
            } else if let Err(e) = self.sel.modify_events(fd, events) {
                self.work.tally.error(format_args!("selector: {e}"));
                self.close(slot);
            }
        }
    }
}

/// Runs an echo workload; the error count.
pub fn run(settings: &Settings) -> io::Result<u64> {
    let span = (settings.pipeline * settings.size).max(READ_CHUNK);
    let pattern = (0..PATTERN_PERIOD + span)
        .map(|i| (i % PATTERN_PERIOD) as u8)
        .collect();
    let created = Instant::now();
    let mut load = EchoLoad {
        sel: AnySelector::with_kind(settings.kind)?,
        addr: settings.addr,
        flows: (0..settings.conns)
            .map(|i| Flow::new(i % PATTERN_PERIOD, created))
            .collect(),
        work: Work {
            mode: settings.mode,
            size: settings.size as u64,
            pipeline: settings.pipeline as u64,
            pattern,
            read_buf: vec![0; READ_CHUNK],
            issue_until: None,
            tally: Tally::new()?,
        },
        live: 0,
        retry: Vec::new(),
        churn_connects: 0,
    };
    if settings.mode != Mode::Churn {
        load.connect_all()?;
    }
    let start = Instant::now();
    let deadline = start
        .checked_add(settings.duration)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "--duration is too long"))?;
    load.work.issue_until = Some(deadline);
    if settings.mode == Mode::Churn {
        for slot in 0..load.flows.len() {
            load.open(slot);
        }
    } else {
        load.kick();
    }
    let mut progress = Progress::new(start);
    loop {
        let now = Instant::now();
        progress.tick(now, &load.work.tally);
        if now >= deadline {
            break;
        }
        load.retry_due(now);
        let next_retry = load.retry.iter().map(|&(_, at)| at).min();
        if load.live == 0 && next_retry.is_none() {
            break; // every connection failed
        }
        let mut wait = wait_time(now, deadline, &progress);
        if let Some(at) = next_retry {
            wait = wait.min(at.saturating_duration_since(now));
        }
        load.turn(wait)?;
    }
    let elapsed = start.elapsed().min(settings.duration);
    progress.finish();
    Summary {
        settings,
        mode: settings.mode.name(),
        tally: &load.work.tally,
        elapsed,
        extra: match settings.mode {
            Mode::Churn => format!(
                " conns_per_s={:.1}",
                load.work.tally.msgs as f64 / elapsed.as_secs_f64().max(1e-9)
            ),
            _ => String::new(),
        },
    }
    .print();
    Ok(load.work.tally.errors)
}
