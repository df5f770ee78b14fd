//! Fan-out load driver: the same lines offered to `rselectors chat-server` and
//! to `redis-server` (PUBLISH to SUBSCRIBEd connections), for `bench/fanout.py`.
//!
//! N listeners; either one extra connection sends (`--senders one`) or every
//! listener sends too (`--senders all`, lines taken in turn, so the total
//! rate is the same). `--mode latency` sends the next line once the previous
//! one reached every listener; `--mode rate` sends `--burst` lines every
//! `burst / rate` seconds, so that several lines meet the server in one
//! loop turn, whatever the server. Every listener must receive every line
//! once, in each sender's order, byte for byte (chat: with the right
//! sender's address); anything else counts as an error. A delivery is one
//! line reaching one listener; its latency runs from just before the line's
//! `write` to just after the `read` that brought it.
//!
//! `--control`: after connecting (and, for chat, once a `sync` line has
//! reached every listener; for Redis, once every `SUBSCRIBE` is confirmed)
//! print `ready` and wait for a line on stdin; after the run and its drain,
//! print the summary and wait for stdin to close before closing the
//! connections. So the caller can measure the server over exactly the run.
//!
//! mio (edge-triggered): each readable event reads until `WouldBlock` or a
//! short read (data that arrives later raises a new event).

mod tally;
mod wire;

use bench_peers::{die, flag_value};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{self, BufRead, Read, Write};
use std::mem;
use std::time::{Duration, Instant};
use tally::{Histogram, InFlight};
use wire::{Frame, Proto, Stamp};

/// How often the chat handshake repeats its `sync` line.
const SYNC_EVERY: Duration = Duration::from_millis(20);
/// How long connecting and the handshake may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Errors printed in full (the rest are only counted).
const ERRORS_SHOWN: u64 = 10;

#[derive(Debug)]
struct Settings {
    proto: Proto,
    addr: String,
    listeners: usize,
    all_send: bool,
    /// Lines per second and lines per burst; `None`: one line at a time.
    rate: Option<(f64, usize)>,
    duration: Duration,
    size: usize,
    max_lines: u64,
    max_in_flight: usize,
    drain: Duration,
    control: bool,
}

fn number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match flag_value(name) {
        None => default,
        Some(text) => text
            .parse()
            .unwrap_or_else(|_| die(&format!("--{name}"), format!("bad value {text:?}"))),
    }
}

impl Settings {
    fn from_args() -> Self {
        let proto = match flag_value("server").as_deref() {
            Some("chat") => Proto::Chat,
            Some("redis") => Proto::Redis,
            other => die("--server", format!("chat or redis, not {other:?}")),
        };
        let all_send = match flag_value("senders").as_deref() {
            None | Some("one") => false,
            Some("all") => true,
            Some(other) => die("--senders", format!("one or all, not {other:?}")),
        };
        let rate = match flag_value("mode").as_deref() {
            None | Some("latency") => None,
            Some("rate") => Some((number("rate", 4000.0), number("burst", 4usize).max(1))),
            Some(other) => die("--mode", format!("latency or rate, not {other:?}")),
        };
        Settings {
            proto,
            addr: flag_value("addr").unwrap_or_else(|| die("--addr", "missing")),
            listeners: number("listeners", 10usize).max(1),
            all_send,
            rate,
            duration: Duration::from_secs_f64(number("duration", 2.0)),
            size: number("size", 64),
            max_lines: number("max-lines", 0),
            max_in_flight: number("max-in-flight", 4096usize).max(1),
            drain: Duration::from_secs_f64(number("drain", 5.0)),
            control: std::env::args().any(|a| a == "--control"),
        }
    }
}

/// One connection to the server.
#[derive(Debug)]
struct Peer {
    stream: TcpStream,
    /// Received bytes not yet parsed into frames.
    input: Vec<u8>,
    /// Bytes queued for the server, of which `written` are gone.
    output: Vec<u8>,
    written: usize,
    listener: Option<usize>,
    /// Its address as the server names it (chat puts it in every line).
    local: Vec<u8>,
    /// Handshake: it received a `sync` line (chat) or its `SUBSCRIBE`
    /// was confirmed (Redis); for Redis, also its `HELLO` answered.
    synced: bool,
    hello: bool,
    closed: bool,
}

#[derive(Debug)]
struct Driver {
    s: Settings,
    poll: Poll,
    peers: Vec<Peer>,
    /// Peer index of each sender.
    senders: Vec<usize>,
    /// Lines each sender has sent.
    sent_nth: Vec<u32>,
    /// For listener `l` and sender `s`, at `l * senders + s`: the number of
    /// the next line due from that sender.
    next_nth: Vec<u32>,
    flight: InFlight,
    latency: Histogram,
    lines: u64,
    deliveries: u64,
    replies: u64,
    errors: u64,
    /// Bursts that went out late, merged with the next one(s).
    late_bursts: u64,
    scratch: Vec<u8>,
    text: Vec<u8>,
    dirty: Vec<usize>,
}

impl Driver {
    fn connect(s: Settings) -> io::Result<Self> {
        let poll = Poll::new()?;
        let count = s.listeners + usize::from(!s.all_send);
        let mut peers = Vec::with_capacity(count);
        for i in 0..count {
            let std_stream = std::net::TcpStream::connect(&s.addr)?;
            std_stream.set_nodelay(true)?;
            std_stream.set_nonblocking(true)?;
            let local = std_stream.local_addr()?.to_string().into_bytes();
            let mut stream = TcpStream::from_std(std_stream);
            poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            peers.push(Peer {
                stream,
                input: Vec::new(),
                output: Vec::new(),
                written: 0,
                listener: (i < s.listeners).then_some(i),
                local,
                synced: false,
                hello: s.proto == Proto::Chat,
                closed: false,
            });
        }
        let senders: Vec<usize> = if s.all_send {
            (0..s.listeners).collect()
        } else {
            vec![s.listeners]
        };
        Ok(Driver {
            next_nth: vec![0; s.listeners * senders.len()],
            sent_nth: vec![0; senders.len()],
            senders,
            flight: InFlight::new(s.listeners as u32),
            latency: Histogram::new(),
            lines: 0,
            deliveries: 0,
            replies: 0,
            errors: 0,
            late_bursts: 0,
            scratch: vec![0; 256 * 1024],
            text: Vec::new(),
            dirty: Vec::new(),
            poll,
            peers,
            s,
        })
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.errors <= ERRORS_SHOWN {
            eprintln!("fanout_load: {what}");
        }
    }

    /// One wait (at most `timeout`) and everything it reported.
    fn turn(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        match self.poll.poll(events, timeout) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            other => other?,
        }
        for event in events.iter() {
            let p = event.token().0;
            if event.is_writable() {
                self.flush(p);
            }
            if event.is_readable() || event.is_read_closed() {
                self.receive(p);
            }
        }
        Ok(())
    }

    /// Reads what peer `p` has until `WouldBlock`, then handles its frames.
    fn receive(&mut self, p: usize) {
        let mut input = mem::take(&mut self.peers[p].input);
        loop {
            match self.peers[p].stream.read(&mut self.scratch) {
                Ok(0) => {
                    if !self.peers[p].closed {
                        self.peers[p].closed = true;
                        self.error(format!("connection {p}: the server closed it"));
                    }
                    break;
                }
                Ok(n) => {
                    input.extend_from_slice(&self.scratch[..n]);
                    if n < self.scratch.len() {
                        // Drained for now: bytes that come later raise a new edge.
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.peers[p].closed = true;
                    self.error(format!("connection {p}: read: {e}"));
                    break;
                }
            }
        }
        let now = Instant::now();
        let mut used = 0;
        loop {
            match wire::next_frame(self.s.proto, &input[used..]) {
                Ok(Some((frame, len))) => {
                    self.frame(p, frame, now);
                    used += len;
                }
                Ok(None) => break,
                Err(what) => {
                    self.error(format!("connection {p}: {what}"));
                    used = input.len();
                    break;
                }
            }
        }
        input.drain(..used);
        self.peers[p].input = input;
    }

    fn frame(&mut self, p: usize, frame: Frame<'_>, now: Instant) {
        match frame {
            Frame::Line(text, from) => self.line(p, text, from, now),
            Frame::Sync | Frame::Subscribed => self.peers[p].synced = true,
            Frame::Other => self.peers[p].hello = true,
            Frame::Receivers(n) => {
                self.replies += 1;
                if n != self.s.listeners as i64 {
                    self.error(format!(
                        "PUBLISH reached {n} subscribers, not {}",
                        self.s.listeners
                    ));
                }
            }
        }
    }

    /// Checks a line received by peer `p` and counts it.
    fn line(&mut self, p: usize, text: &[u8], from: Option<&[u8]>, now: Instant) {
        let Some(stamp) = wire::parse_stamp(text) else {
            return self.error(format!("connection {p}: no stamp in {}", wire::show(text)));
        };
        let Some(&sender_peer) = self.senders.get(stamp.sender as usize) else {
            return self.error(format!(
                "connection {p}: unknown sender in {}",
                wire::show(text)
            ));
        };
        self.text.clear();
        wire::line_text(&mut self.text, stamp, self.s.size);
        if text != self.text.as_slice() {
            return self.error(format!("connection {p}: damaged line {}", wire::show(text)));
        }
        if from.is_some_and(|from| from != self.peers[sender_peer].local.as_slice()) {
            return self.error(format!(
                "connection {p}: line {} from the wrong address",
                stamp.global
            ));
        }
        let Some(listener) = self.peers[p].listener else {
            return; // the lone sender hearing itself (chat)
        };
        let slot = listener * self.senders.len() + stamp.sender as usize;
        let due = self.next_nth[slot];
        self.next_nth[slot] = stamp.nth.wrapping_add(1);
        if stamp.nth != due {
            self.error(format!(
                "listener {listener}: from sender {} got line {} where {due} was due",
                stamp.sender, stamp.nth
            ));
        }
        match self.flight.delivered(stamp.global, now) {
            Some(ns) => {
                self.latency.record(ns);
                self.deliveries += 1;
            }
            None => self.error(format!("listener {listener}: line {} twice", stamp.global)),
        }
    }

    /// Writes what peer `p` has queued, until `WouldBlock`.
    fn flush(&mut self, p: usize) {
        let peer = &mut self.peers[p];
        while peer.written < peer.output.len() {
            match peer.stream.write(&peer.output[peer.written..]) {
                Ok(n) => peer.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    peer.closed = true;
                    peer.output.clear();
                    peer.written = 0;
                    return self.error(format!("connection {p}: write: {e}"));
                }
            }
        }
        peer.output.clear();
        peer.written = 0;
    }

    /// Queues `count` lines (each from the sender whose turn it is), then
    /// writes each sender's queue once.
    fn send_lines(&mut self, count: usize, now: Instant) {
        for _ in 0..count {
            let global = self.flight.next_global();
            let sender = (global % self.senders.len() as u64) as usize;
            let stamp = Stamp {
                sender: sender as u32,
                nth: self.sent_nth[sender],
                global,
            };
            self.sent_nth[sender] += 1;
            self.text.clear();
            wire::line_text(&mut self.text, stamp, self.s.size);
            let p = self.senders[sender];
            if self.peers[p].output.is_empty() {
                self.dirty.push(p);
            }
            wire::encode_line(self.s.proto, &mut self.peers[p].output, &self.text);
            self.flight.sent(now);
            self.lines += 1;
        }
        let mut dirty = mem::take(&mut self.dirty);
        for &p in &dirty {
            self.flush(p);
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// Until every listener is known to the server.
    fn handshake(&mut self, events: &mut Events) -> io::Result<()> {
        let deadline = Instant::now() + SETUP_TIMEOUT;
        if self.s.proto == Proto::Redis {
            for p in 0..self.peers.len() {
                let mut out = mem::take(&mut self.peers[p].output);
                wire::encode_command(&mut out, &[b"HELLO", b"3"]);
                if self.peers[p].listener.is_some() {
                    wire::encode_command(&mut out, &[b"SUBSCRIBE", wire::ROOM]);
                }
                self.peers[p].output = out;
                self.flush(p);
            }
        }
        let mut next_sync = Instant::now();
        loop {
            let ready = self
                .peers
                .iter()
                .all(|p| p.hello && (p.synced || p.listener.is_none()));
            if ready {
                return Ok(());
            }
            let now = Instant::now();
            if now > deadline || self.errors > 0 {
                return Err(io::Error::other("handshake failed or timed out"));
            }
            if self.s.proto == Proto::Chat && now >= next_sync {
                let p = self.senders[0];
                wire::encode_line(Proto::Chat, &mut self.peers[p].output, wire::SYNC);
                self.flush(p);
                next_sync = now + SYNC_EVERY;
            }
            self.turn(events, Some(SYNC_EVERY))?;
        }
    }

    /// Sends for `--duration` (or `--max-lines`), then waits up to `--drain`
    /// for the lines in flight; returns how long the run took, to the
    /// last delivery.
    fn run(&mut self, events: &mut Events) -> io::Result<Duration> {
        let start = Instant::now();
        let stop_at = start + self.s.duration;
        let mut last_delivery = start;
        let mut drain_until = None;
        loop {
            let now = Instant::now();
            let cap_hit = self.s.max_lines > 0 && self.lines >= self.s.max_lines;
            if drain_until.is_none() && (now >= stop_at || cap_hit) {
                drain_until = Some(now + self.s.drain);
            }
            let timeout = match (drain_until, self.s.rate) {
                (Some(until), _) => {
                    if self.flight.len() == 0 && self.replies_done() {
                        break;
                    }
                    if now >= until {
                        let owed = self.flight.owed();
                        self.error(format!(
                            "{owed} deliveries lost (not received after the drain)"
                        ));
                        break;
                    }
                    until - now
                }
                (None, None) => {
                    if self.flight.len() == 0 {
                        self.send_lines(1, now);
                    }
                    stop_at - now
                }
                (None, Some((rate, burst))) => {
                    let tick = burst as f64 / rate;
                    let ticks = ((now - start).as_secs_f64() / tick).floor() as u64 + 1;
                    let due = ticks * burst as u64 - self.lines;
                    let room = self.s.max_in_flight.saturating_sub(self.flight.len()) as u64;
                    let count = due.min(room);
                    if count > burst as u64 {
                        self.late_bursts += 1;
                    }
                    if count > 0 {
                        self.send_lines(count as usize, now);
                    }
                    let next = start + Duration::from_secs_f64(ticks as f64 * tick);
                    next.min(stop_at).saturating_duration_since(now)
                }
            };
            let before = self.deliveries;
            self.turn(events, Some(timeout))?;
            if self.deliveries > before {
                last_delivery = Instant::now();
            }
        }
        Ok(last_delivery.max(start + Duration::from_micros(1)) - start)
    }

    /// Redis answers every PUBLISH; chat has no answer to wait for.
    fn replies_done(&self) -> bool {
        self.s.proto == Proto::Chat || self.replies >= self.lines
    }
}

/// CPU time this (single-threaded) process has had, from the scheduler's
/// exact count; 0 where /proc is missing.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

fn main() {
    let settings = Settings::from_args();
    let control = settings.control;
    let mut driver = Driver::connect(settings).unwrap_or_else(|e| die("connect", e));
    let mut events = Events::with_capacity(1024);
    driver
        .handshake(&mut events)
        .unwrap_or_else(|e| die("handshake", e));
    let stdin = io::stdin();
    if control {
        println!("ready");
        let _ = io::stdout().flush();
        let mut go = String::new();
        let _ = stdin.lock().read_line(&mut go);
    }
    let cpu_before = cpu_seconds();
    let elapsed = driver.run(&mut events).unwrap_or_else(|e| die("run", e));
    let driver_cpu = cpu_seconds() - cpu_before;
    let d = &driver;
    let secs = elapsed.as_secs_f64();
    let us = |q: f64| d.latency.quantile_ns(q) as f64 / 1e3;
    println!(
        "lines={} deliveries={} expected={} errors={} replies={} late_bursts={} \
         elapsed_s={secs:.4} lines_per_s={:.1} deliveries_per_s={:.1} \
         p50_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1} driver_cpu_s={driver_cpu:.4} \
         driver_busy={:.3}",
        d.lines,
        d.deliveries,
        d.lines * d.s.listeners as u64,
        d.errors,
        d.replies,
        d.late_bursts,
        d.lines as f64 / secs,
        d.latency.total() as f64 / secs,
        us(0.5),
        us(0.99),
        us(0.999),
        d.latency.max_ns() as f64 / 1e3,
        driver_cpu / secs,
    );
    let _ = io::stdout().flush();
    if control {
        // Keep the connections until the caller has read the server's counters.
        let mut rest = String::new();
        while stdin.lock().read_line(&mut rest).is_ok_and(|n| n > 0) {
            rest.clear();
        }
    }
    std::process::exit(i32::from(driver.errors > 0));
}
