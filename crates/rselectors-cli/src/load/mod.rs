//! `load`: a load generator for the echo and chat servers, in the spirit
//! of `redis-benchmark`, on `rselectors` itself.
//!
//! One thread, one selector, level-triggered: a connection reads once per
//! READ event and asks for WRITE only while it has bytes the socket did
//! not take. Every byte that comes back is checked; a connection that
//! gets a wrong byte (or is closed, or cannot connect) counts as an error
//! and stops. The run ends by itself after `--duration` and prints one
//! summary line on stdout:
//!
//! ```text
//! conns=100 size=64 mode=pingpong pipeline=1 msgs=912345 msgs_per_s=182469.0
//! mib_per_s=11.137 p50_us=520.1 p99_us=810.0 p999_us=1021.0 errors=0
//! ```
//!
//! (one line; churn adds `conns_per_s=` before `errors=`, `--chat` adds
//! `lines=` and `deliveries_per_s=`). Live progress goes to stderr once a
//! second, only when stderr is a terminal. The exit status is non-zero
//! when there were errors.

mod chat;
mod echo;

use crate::logging::warning;
use crate::{parse_seconds, Common};
use clap::{value_parser, Args, ValueEnum};
use hdrhistogram::Histogram;
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, IsTerminal, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// How long connecting (all the connections of pingpong and stream, each
/// one of churn) may take before it counts as an error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes one READ event reads at most.
const READ_CHUNK: usize = 64 * 1024;

/// The most bytes one connection may have in flight (`--pipeline` times
/// `--size`): the pattern they are cut from is this long.
const MAX_IN_FLIGHT: usize = 64 * 1024 * 1024;

/// Errors described on stderr; the rest are only counted.
const ERRORS_SHOWN: u64 = 5;

/// What each connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Send --pipeline messages, wait for all their echo, repeat.
    #[value(name = "pingpong")]
    PingPong,
    /// Keep --pipeline messages in flight.
    Stream,
    /// Connect, send --pipeline messages, read their echo, close, repeat
    /// (to a server on IPv4 loopback, from 127.0.0.1-250 in turn).
    Churn,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::PingPong => "pingpong",
            Mode::Stream => "stream",
            Mode::Churn => "churn",
        }
    }
}

/// The `load` subcommand's options.
#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    common: Common,
    /// Connections (concurrent connection slots for churn).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = value_parser!(u32).range(1..=1_000_000))]
    conns: u32,
    /// Bytes per message; with --chat, bytes of text per line.
    #[arg(long, value_name = "BYTES", default_value_t = 64,
          value_parser = value_parser!(u32).range(1..=16 * 1024 * 1024))]
    size: u32,
    /// How long to run, in seconds.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    duration: Duration,
    /// What each connection does.
    #[arg(long, value_enum, default_value_t = Mode::PingPong)]
    mode: Mode,
    /// Messages per round trip (pingpong), in flight (stream), or per
    /// connection (churn); with --chat, lines in flight.
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = value_parser!(u32).range(1..=65_536))]
    pipeline: u32,
    /// Measure a chat server's broadcast: N listening connections and one
    /// sender; reports deliveries per second and delivery latency.
    #[arg(long, value_name = "N", conflicts_with_all = ["mode", "conns"],
          value_parser = value_parser!(u32).range(1..=100_000))]
    chat: Option<u32>,
}

/// The run's settings, checked.
struct Settings {
    addr: SocketAddr,
    kind: rselectors::BackendKind,
    conns: usize,
    size: usize,
    duration: Duration,
    mode: Mode,
    pipeline: usize,
}

/// Runs the load; an error if the run had errors (after the summary).
pub fn run(args: &LoadArgs) -> io::Result<()> {
    let size = args.size as usize;
    let pipeline = args.pipeline as usize;
    if size.saturating_mul(pipeline) > MAX_IN_FLIGHT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--pipeline {pipeline} times --size {size} is {} bytes in flight per \
                 connection: at most {MAX_IN_FLIGHT}",
                size.saturating_mul(pipeline)
            ),
        ));
    }
    let settings = Settings {
        addr: resolve(&args.common.addr)?,
        kind: args.common.selector,
        conns: args.chat.unwrap_or(args.conns) as usize,
        size,
        duration: args.duration,
        mode: args.mode,
        pipeline,
    };
    let errors = match args.chat {
        Some(_) => chat::run(&settings)?,
        None => echo::run(&settings)?,
    };
    if errors > 0 {
        return Err(io::Error::other(format!(
            "{errors} errors (see the summary)"
        )));
    }
    Ok(())
}

/// The first address of `addr` (it may be a host name).
fn resolve(addr: &str) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve '{addr}': {e}")))?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: no address")))
}

/// How many loopback source addresses churn connects from, in turn (see
/// [`churn_source`]).
const CHURN_SOURCES: usize = 250;

/// The address churn's `n`th connection to `server` binds to before it
/// connects, if any: 127.0.0.1 to 127.0.0.250 in turn when the server is
/// on IPv4 loopback (the whole 127.0.0.0/8 is local).
///
/// Why: the side that closes first, here the load generator, keeps each
/// closed connection in TIME_WAIT for a minute, holding its source address
/// and port. From one source address, `connect` then finds a port only by
/// scanning past them (on loopback Linux lets it reuse one after a second,
/// `tcp_tw_reuse`), and the scan grows until connections per second match
/// the ports it may take: about 14,000 per second on the reference machine
/// whatever the server, the load generator's core spent in `connect`.
/// Bound to an address first, a connection takes its port in `bind`, where
/// only TIME_WAIT on the same address and port is in the way: 250
/// addresses of ~28,000 ports each, held a minute, leave room for over
/// 100,000 connections per second.
fn churn_source(server: SocketAddr, n: usize) -> Option<SocketAddr> {
    match server {
        SocketAddr::V4(v4) if v4.ip().is_loopback() => {
            let last = 1 + (n % CHURN_SOURCES) as u8;
            Some(SocketAddr::from(([127, 0, 0, last], 0)))
        }
        _ => None,
    }
}

/// A non-blocking TCP socket connecting to `addr` (from `source`, if
/// given; port 0 there lets the kernel pick): register it for WRITE, then
/// ask [`connect_result`] once it is writable.
fn start_connect(addr: SocketAddr, source: Option<SocketAddr>) -> io::Result<TcpStream> {
    #[cfg(not(target_vendor = "apple"))]
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    // No `SOCK_NONBLOCK` on macOS: a second system call.
    #[cfg(target_vendor = "apple")]
    let socket = {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        socket
    };
    // Messages are small and must not wait to be coalesced.
    socket.set_tcp_nodelay(true)?;
    if let Some(source) = source {
        socket.bind(&source.into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

/// Whether a connect started by [`start_connect`], now reported
/// writable, succeeded.
fn connect_result(stream: &TcpStream) -> io::Result<()> {
    match stream.take_error()? {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Counts of a run and its latency histogram.
struct Tally {
    /// Messages echoed in full (churn: connections done; chat: deliveries).
    msgs: u64,
    errors: u64,
    latency_ns: Histogram<u64>,
}

impl Tally {
    fn new() -> io::Result<Tally> {
        // 1 ns to 1 minute, 3 significant digits.
        let latency_ns = Histogram::new_with_bounds(1, 60_000_000_000, 3)
            .map_err(|e| io::Error::other(format!("histogram: {e}")))?;
        Ok(Tally {
            msgs: 0,
            errors: 0,
            latency_ns,
        })
    }

    /// Counts one message that took from `since` to `now`.
    fn message(&mut self, since: Instant, now: Instant) {
        self.msgs += 1;
        let ns = now.saturating_duration_since(since).as_nanos();
        self.latency_ns
            .saturating_record(u64::try_from(ns).unwrap_or(u64::MAX));
    }

    /// Counts an error; the first few are described on stderr.
    fn error(&mut self, what: std::fmt::Arguments<'_>) {
        self.errors += 1;
        if self.errors <= ERRORS_SHOWN {
            warning!("{what}");
        } else if self.errors == ERRORS_SHOWN + 1 {
            warning!("more errors: only counted from now on");
        }
    }

    fn quantile_us(&self, q: f64) -> f64 {
        if self.latency_ns.is_empty() {
            0.0
        } else {
            self.latency_ns.value_at_quantile(q) as f64 / 1000.0
        }
    }
}

/// The once-a-second progress line on stderr, when it is a terminal.
struct Progress {
    enabled: bool,
    start: Instant,
    next: Instant,
    shown: bool,
}

impl Progress {
    fn new(start: Instant) -> Progress {
        Progress {
            enabled: io::stderr().is_terminal(),
            start,
            next: start + Duration::from_secs(1),
            shown: false,
        }
    }

    /// When the next line is due, if progress is shown at all.
    fn due(&self) -> Option<Instant> {
        self.enabled.then_some(self.next)
    }

    /// Prints the line if it is due.
    fn tick(&mut self, now: Instant, tally: &Tally) {
        if !self.enabled || now < self.next {
            return;
        }
        let elapsed = now.duration_since(self.start).as_secs_f64();
        let _ = write!(
            io::stderr(),
            "\r{elapsed:6.1}s  msgs={}  msgs/s={:.0}  errors={}   ",
            tally.msgs,
            tally.msgs as f64 / elapsed.max(1e-9),
            tally.errors
        );
        self.shown = true;
        while self.next <= now {
            self.next += Duration::from_secs(1);
        }
    }

    /// Ends the progress line before the summary.
    fn finish(&self) {
        if self.shown {
            let _ = writeln!(io::stderr());
        }
    }
}

/// How long to wait in `select()`: until `deadline` or the next progress
/// line, whichever is first.
fn wait_time(now: Instant, deadline: Instant, progress: &Progress) -> Duration {
    let until = progress.due().map_or(deadline, |due| due.min(deadline));
    until.saturating_duration_since(now)
}

/// The summary line's fields, in order.
struct Summary<'a> {
    settings: &'a Settings,
    mode: &'a str,
    tally: &'a Tally,
    elapsed: Duration,
    /// Fields between the latencies and `errors=`.
    extra: String,
}

impl Summary<'_> {
    fn msgs_per_s(&self) -> f64 {
        self.tally.msgs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn print(&self) {
        let msgs_per_s = self.msgs_per_s();
        let mib_per_s = msgs_per_s * self.settings.size as f64 / (1024.0 * 1024.0);
        crate::logging::say!(
            "conns={} size={} mode={} pipeline={} msgs={} msgs_per_s={:.1} mib_per_s={:.3} \
             p50_us={:.1} p99_us={:.1} p999_us={:.1}{} errors={}",
            self.settings.conns,
            self.settings.size,
            self.mode,
            self.settings.pipeline,
            self.tally.msgs,
            msgs_per_s,
            mib_per_s,
            self.tally.quantile_us(0.5),
            self.tally.quantile_us(0.99),
            self.tally.quantile_us(0.999),
            self.extra,
            self.tally.errors
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{churn_source, start_connect, CHURN_SOURCES};
    use crate::test_support::accept_within_seconds;
    use std::net::{SocketAddr, TcpListener};

    #[test]
    fn churn_on_ipv4_loopback_connects_from_many_addresses_in_turn() {
        let server: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        let sources: Vec<_> = (0..CHURN_SOURCES + 1)
            .map(|n| churn_source(server, n).unwrap())
            .collect();
        assert_eq!(sources[0], "127.0.0.1:0".parse().unwrap());
        assert_eq!(sources[249], "127.0.0.250:0".parse().unwrap());
        assert_eq!(sources[250], sources[0]);
        for elsewhere in ["[::1]:9999", "192.0.2.1:9999"] {
            assert_eq!(churn_source(elsewhere.parse().unwrap(), 0), None);
        }
    }

    /// The server sees the connection come from the chosen address.
    #[test]
    fn a_connection_bound_to_a_source_comes_from_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let source = churn_source(server, 6).unwrap();
        // The connect completes in the background.
        let _client = start_connect(server, Some(source)).unwrap();
        let (_accepted, peer) = accept_within_seconds(&listener);
        assert_eq!(peer.ip(), source.ip());
    }
}
