//! Temporary load generator for the echo benchmarks (to be replaced by `rselectors load`,
//! which takes the same flags and prints the same summary line).
//!
//! ```text
//! loadgen --addr 127.0.0.1:PORT --conns N --size BYTES --duration SECS \
//!         --mode pingpong|stream|churn [--pipeline K]
//! ```
//!
//! * `pingpong`: each connection sends one message and waits for its full echo.
//! * `stream`: each connection keeps `--pipeline K` messages in flight.
//! * `churn`: each of N slots connects, sends one message, reads the echo, closes, repeats;
//!   `msgs` counts completed connections and `conns_per_s` is printed too.
//!
//! Every echoed byte is checked: connection `i` sends the byte `(offset + i) % 251` at
//! stream offset `offset`, so a lost, repeated, reordered or crossed byte is an error.
//! Single thread, non-blocking, on `mio`. Ends with one line:
//! `conns=.. size=.. mode=.. pipeline=.. msgs=.. msgs_per_s=.. mib_per_s=.. p50_us=..
//! p99_us=.. p999_us=.. [conns_per_s=..] errors=..`

use std::collections::VecDeque;
use std::io::{self, IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bench_peers::{die, flag_value, READ_BUF_SIZE};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Period of the pattern; a prime, so message and pattern boundaries rarely align.
const PATTERN_PERIOD: usize = 251;

/// What each connection does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    PingPong,
    Stream,
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

/// Parsed command line.
struct Args {
    addr: SocketAddr,
    conns: usize,
    size: usize,
    duration: Duration,
    mode: Mode,
    /// Messages in flight per connection (1 for pingpong and churn).
    pipeline: usize,
}

/// Parses a flag with a default, exiting with status 2 on a bad value.
fn parse_flag<T: std::str::FromStr>(name: &str, default: &str) -> T {
    let text = flag_value(name).unwrap_or_else(|| default.to_string());
    text.parse().unwrap_or_else(|_| {
        eprintln!("bad --{name} {text:?}");
        std::process::exit(2);
    })
}

fn parse_args() -> Args {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("usage: loadgen --addr HOST:PORT --conns N --size BYTES --duration SECS --mode pingpong|stream|churn [--pipeline K]");
        std::process::exit(0);
    }
    let mode = match flag_value("mode").as_deref().unwrap_or("pingpong") {
        "pingpong" => Mode::PingPong,
        "stream" => Mode::Stream,
        "churn" => Mode::Churn,
        other => {
            eprintln!("bad --mode {other:?} (pingpong|stream|churn)");
            std::process::exit(2);
        }
    };
    let addr = flag_value("addr").unwrap_or_else(|| {
        eprintln!("--addr HOST:PORT is required");
        std::process::exit(2);
    });
    let addr: SocketAddr = addr.parse().unwrap_or_else(|_| {
        eprintln!("bad --addr {addr:?}");
        std::process::exit(2);
    });
    let conns: usize = parse_flag("conns", "1");
    let size: usize = parse_flag("size", "64");
    let secs: f64 = parse_flag("duration", "5");
    let pipeline: usize = parse_flag("pipeline", "1");
    if conns == 0 || size == 0 || pipeline == 0 || !(secs > 0.0 && secs < 86_400.0) {
        eprintln!("--conns, --size, --pipeline must be > 0 and --duration in (0, 86400)");
        std::process::exit(2);
    }
    Args {
        addr,
        conns,
        size,
        duration: Duration::from_secs_f64(secs),
        mode,
        pipeline: if mode == Mode::Stream { pipeline } else { 1 },
    }
}

/// One client connection and its position in the byte stream.
struct Client {
    stream: Option<TcpStream>,
    connected: bool,
    /// Pattern phase of this connection, so crossed connections are detected.
    salt: usize,
    /// Bytes the messages issued so far add up to.
    target: u64,
    /// Bytes written so far.
    sent: u64,
    /// Bytes echoed back and verified so far.
    received: u64,
    msgs_issued: u64,
    msgs_done: u64,
    /// Issue time of each message not yet fully echoed (churn: connect start).
    issue_times: VecDeque<Instant>,
}

/// Totals over all connections.
struct Totals {
    msgs: u64,
    errors: u64,
    latency_ns: Histogram<u64>,
}

/// Shared state of the run that event handlers need.
struct Ctx<'a> {
    args: &'a Args,
    pattern: Vec<u8>,
    read_buf: Vec<u8>,
    deadline: Instant,
    totals: Totals,
}

impl Client {
    fn new(stream: TcpStream, connected: bool, salt: usize) -> Client {
        Client {
            stream: Some(stream),
            connected,
            salt,
            target: 0,
            sent: 0,
            received: 0,
            msgs_issued: 0,
            msgs_done: 0,
            issue_times: VecDeque::new(),
        }
    }
}

/// The pattern bytes of a connection with phase `salt` for stream offsets `from .. from + len`.
fn pattern_at(pattern: &[u8], salt: usize, from: u64, len: usize) -> &[u8] {
    let start = ((from + salt as u64) % PATTERN_PERIOD as u64) as usize;
    &pattern[start..start + len]
}

/// Why a connection stopped.
enum Stop {
    /// Churn: the one message was echoed; reconnect.
    Done,
    /// EOF, reset, wrong bytes: counted as an error.
    Failed,
}

/// Drives one connection as far as it goes without blocking. Edge-triggered (mio): every
/// direction is pushed until WouldBlock or until nothing is outstanding; Linux epoll also
/// reports data that arrives after a read stopped short of WouldBlock with nothing due.
fn drive(ctx: &mut Ctx, client: &mut Client) -> Result<(), Stop> {
    let Some(stream) = client.stream.as_mut() else {
        return Err(Stop::Failed);
    };
    if !client.connected {
        match stream.take_error() {
            Ok(None) => {}
            _ => return Err(Stop::Failed),
        }
        match stream.peer_addr() {
            Ok(_) => client.connected = true,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
            Err(_) => return Err(Stop::Failed),
        }
    }
    let size = ctx.args.size as u64;
    loop {
        let mut progressed = false;
        // Issue new messages while the pipeline has room and time is left.
        let in_flight = client.msgs_issued - client.msgs_done;
        let may_issue = match ctx.args.mode {
            Mode::Churn => client.msgs_issued == 0,
            _ => Instant::now() < ctx.deadline,
        };
        if may_issue && in_flight < ctx.args.pipeline as u64 {
            let now = Instant::now();
            for _ in in_flight..ctx.args.pipeline as u64 {
                // Churn already holds its connect time as the message's start.
                if ctx.args.mode != Mode::Churn {
                    client.issue_times.push_back(now);
                }
                client.msgs_issued += 1;
                client.target += size;
                if ctx.args.mode == Mode::Churn {
                    break;
                }
            }
            progressed = true;
        }
        // Write what is due.
        while client.sent < client.target {
            let len = (client.target - client.sent) as usize;
            let bytes = pattern_at(&ctx.pattern, client.salt, client.sent, len);
            match stream.write(bytes) {
                Ok(0) => return Err(Stop::Failed),
                Ok(n) => {
                    client.sent += n as u64;
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Stop::Failed),
            }
        }
        // Read and verify what is due.
        if client.received < client.sent {
            match stream.read(&mut ctx.read_buf) {
                Ok(0) => return Err(Stop::Failed),
                Ok(n) => {
                    if client.received + n as u64 > client.sent {
                        return Err(Stop::Failed);
                    }
                    let expected = pattern_at(&ctx.pattern, client.salt, client.received, n);
                    if ctx.read_buf[..n] != *expected {
                        return Err(Stop::Failed);
                    }
                    client.received += n as u64;
                    progressed = true;
                    let now = Instant::now();
                    while client.received >= (client.msgs_done + 1) * size {
                        client.msgs_done += 1;
                        ctx.totals.msgs += 1;
                        if let Some(issued) = client.issue_times.pop_front() {
                            let ns = now.duration_since(issued).as_nanos();
                            ctx.totals
                                .latency_ns
                                .saturating_record(u64::try_from(ns).unwrap_or(u64::MAX));
                        }
                    }
                    if ctx.args.mode == Mode::Churn && client.msgs_done == 1 {
                        return Err(Stop::Done);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => progressed = true,
                Err(_) => return Err(Stop::Failed),
            }
        }
        if !progressed {
            return Ok(());
        }
    }
}

/// Opens a non-blocking connection and registers it; `connected` is false until the
/// first writable event confirms it.
fn open_nonblocking(poll: &Poll, addr: SocketAddr, token: Token, salt: usize) -> Option<Client> {
    let mut stream = TcpStream::connect(addr).ok()?;
    let _ = stream.set_nodelay(true);
    poll.registry()
        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        .ok()?;
    let mut client = Client::new(stream, false, salt);
    // Churn latency runs from the connect call.
    client.issue_times.push_back(Instant::now());
    Some(client)
}

/// Connects with a blocking connect (setup, not measured), then switches to non-blocking.
fn open_blocking(poll: &Poll, addr: SocketAddr, token: Token, salt: usize) -> io::Result<Client> {
    let std_stream = std::net::TcpStream::connect(addr)?;
    std_stream.set_nodelay(true)?;
    std_stream.set_nonblocking(true)?;
    let mut stream = TcpStream::from_std(std_stream);
    poll.registry()
        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
    Ok(Client::new(stream, true, salt))
}

fn main() {
    let args = parse_args();
    let mut poll = Poll::new().unwrap_or_else(|e| die("Poll::new", e));
    let mut clients: Vec<Client> = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        let salt = i % PATTERN_PERIOD;
        let client = if args.mode == Mode::Churn {
            open_nonblocking(&poll, args.addr, Token(i), salt)
                .unwrap_or_else(|| die("connect", "churn connect failed"))
        } else {
            open_blocking(&poll, args.addr, Token(i), salt).unwrap_or_else(|e| die("connect", e))
        };
        clients.push(client);
    }
    // Pattern long enough for any in-flight span at any phase.
    let span = (args.pipeline * args.size).max(READ_BUF_SIZE);
    let pattern: Vec<u8> = (0..PATTERN_PERIOD + span)
        .map(|i| (i % PATTERN_PERIOD) as u8)
        .collect();
    let latency_ns =
        Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap_or_else(|e| die("histogram", e));
    let start = Instant::now();
    let mut ctx = Ctx {
        args: &args,
        pattern,
        read_buf: vec![0u8; READ_BUF_SIZE],
        deadline: start + args.duration,
        totals: Totals {
            msgs: 0,
            errors: 0,
            latency_ns,
        },
    };
    // Kick every connection once: pingpong/stream clients start sending at once.
    for client in clients.iter_mut() {
        if client.connected {
            if let Err(stop) = drive(&mut ctx, client) {
                finish(&mut ctx, client, stop);
            }
        }
    }
    let live_progress = io::stderr().is_terminal();
    let mut next_report = start + Duration::from_secs(1);
    let mut events = Events::with_capacity(1024);
    let mut live = clients.iter().filter(|c| c.stream.is_some()).count();
    while live > 0 {
        let now = Instant::now();
        if now >= ctx.deadline {
            break;
        }
        if live_progress && now >= next_report {
            eprint!(
                "\r{:>5.1}s msgs={} errors={}   ",
                now.duration_since(start).as_secs_f64(),
                ctx.totals.msgs,
                ctx.totals.errors
            );
            next_report += Duration::from_secs(1);
        }
        let timeout = (ctx.deadline - now).min(Duration::from_millis(100));
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            die("poll", e);
        }
        for event in events.iter() {
            let index = event.token().0;
            let Some(client) = clients.get_mut(index) else {
                continue;
            };
            if client.stream.is_none() {
                continue;
            }
            let Err(stop) = drive(&mut ctx, client) else {
                continue;
            };
            finish(&mut ctx, client, stop);
            if args.mode == Mode::Churn && Instant::now() < ctx.deadline {
                match open_nonblocking(&poll, args.addr, Token(index), client.salt) {
                    Some(fresh) => *client = fresh,
                    None => ctx.totals.errors += 1,
                }
            }
        }
        live = clients.iter().filter(|c| c.stream.is_some()).count();
    }
    let elapsed = start.elapsed().as_secs_f64();
    if live_progress {
        eprintln!();
    }
    print_summary(&args, &ctx.totals, elapsed);
}

/// Closes a stopped connection, counting failures.
fn finish(ctx: &mut Ctx, client: &mut Client, stop: Stop) {
    if matches!(stop, Stop::Failed) {
        ctx.totals.errors += 1;
    }
    // Dropping closes the socket, which also removes it from epoll.
    client.stream = None;
}

fn print_summary(args: &Args, totals: &Totals, elapsed: f64) {
    let msgs_per_s = totals.msgs as f64 / elapsed;
    let mib_per_s = msgs_per_s * args.size as f64 / (1024.0 * 1024.0);
    let quantile_us = |q: f64| {
        if totals.latency_ns.is_empty() {
            0.0
        } else {
            totals.latency_ns.value_at_quantile(q) as f64 / 1000.0
        }
    };
    let churn = if args.mode == Mode::Churn {
        format!(" conns_per_s={msgs_per_s:.1}")
    } else {
        String::new()
    };
    println!(
        "conns={} size={} mode={} pipeline={} msgs={} msgs_per_s={:.1} mib_per_s={:.3} p50_us={:.1} p99_us={:.1} p999_us={:.1}{} errors={}",
        args.conns,
        args.size,
        args.mode.name(),
        args.pipeline,
        totals.msgs,
        msgs_per_s,
        mib_per_s,
        quantile_us(0.5),
        quantile_us(0.99),
        quantile_us(0.999),
        churn,
        totals.errors
    );
}
