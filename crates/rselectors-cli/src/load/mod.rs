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
//! `lines=` and `deliveries_per_s=`). A chat run over several servers
//! (`--addr` given more than once) or with more than one sender then adds
//! `servers=K senders=S`, the delivery latency of lines that crossed
//! from one server to another, `xp50_us= xp99_us= xp999_us=`, and the
//! lines a connection never got, `lost=`, or got twice, `dup=`:
//!
//! ```text
//! conns=4 size=64 mode=chat pipeline=1 msgs=52000 msgs_per_s=52000.0
//! mib_per_s=3.174 p50_us=70.1 p99_us=150.0 p999_us=300.0 lines=26000
//! deliveries_per_s=52000.0 servers=2 senders=2 xp50_us=80.2 xp99_us=160.0
//! xp999_us=310.0 lost=0 dup=0 errors=0
//! ```
//!
//! Live progress goes to stderr once a second, only when stderr is a
//! terminal. The exit status is non-zero when there were errors, lost
//! lines or duplicated ones.
//!
//! The workloads, [`echo`] (pingpong, stream, churn) and [`chat`] (with
//! its bookkeeping of lines, [`fanout`]), say what a connection does with
//! each event; [`harness`] connects, reconnects and polls them and runs
//! the clock; [`report`] counts and prints.

mod chat;
mod echo;
mod fanout;
mod harness;
mod report;

use crate::{parse_addr, parse_seconds, parse_selector};
use clap::{value_parser, ArgAction, Args, ValueEnum};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// The most bytes one connection may have in flight (`--pipeline` times
/// `--size`): the pattern they are cut from is this long.
const MAX_IN_FLIGHT: usize = 64 * 1024 * 1024;

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
    /// Server to connect to; IPv6 as [::1]:9999. With --chat, give it once
    /// per server to spread the listeners and senders over them.
    // The comment is clap's help text, shown as written: not a link.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long = "addr", value_name = "ADDR", default_value = "127.0.0.1:9999",
          action = ArgAction::Append, value_parser = parse_addr)]
    addrs: Vec<String>,
    /// I/O multiplexing mechanism: default (the platform's best), or one
    /// the platform has: epoll (Linux, Android, illumos), devpoll (illumos,
    /// Solaris), kqueue (macOS, the BSDs), poll, select.
    #[arg(long, default_value = "default", value_name = "KIND", value_parser = parse_selector)]
    selector: rselectors::BackendKind,
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
    /// connection (churn); with --chat, lines in flight per sender.
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = value_parser!(u32).range(1..=65_536))]
    pipeline: u32,
    /// Measure chat servers' broadcast: N listening connections, spread
    /// round-robin over the --addr servers, and --senders senders; checks
    /// that every line reaches every connection once, in order; reports
    /// deliveries per second and delivery latency.
    #[arg(long, value_name = "N", conflicts_with_all = ["mode", "conns"],
          value_parser = value_parser!(u32).range(1..=100_000))]
    chat: Option<u32>,
    /// With --chat: connections that send lines, spread round-robin over
    /// the --addr servers [default: one per --addr]
    #[arg(long, value_name = "S", requires = "chat",
          value_parser = value_parser!(u32).range(1..=MAX_SENDERS as i64))]
    senders: Option<u32>,
}

/// The most `--senders`: every connection keeps a count per sender.
const MAX_SENDERS: u32 = 1000;

/// The run's settings, checked.
#[derive(Debug)]
struct Settings {
    /// The servers, as `--addr` gave them (one, but with --chat).
    addrs: Vec<SocketAddr>,
    kind: rselectors::BackendKind,
    /// Connections; with --chat, listeners.
    conns: usize,
    /// Chat senders (1 without --chat).
    senders: usize,
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
    if args.chat.is_none() && args.addrs.len() > 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--addr is given {} times: only --chat spreads its connections over \
                 several servers",
                args.addrs.len()
            ),
        ));
    }
    let settings = Settings {
        addrs: args
            .addrs
            .iter()
            .map(|addr| resolve(addr))
            .collect::<io::Result<_>>()?,
        kind: args.selector,
        conns: args.chat.unwrap_or(args.conns) as usize,
        senders: args.senders.map_or(args.addrs.len(), |s| s as usize),
        size,
        duration: args.duration,
        mode: args.mode,
        pipeline,
    };
    let outcome = match args.chat {
        Some(_) => chat::run(&settings)?,
        None => Outcome {
            errors: echo::run(&settings)?,
            ..Outcome::default()
        },
    };
    outcome.check()
}

/// What went wrong in a run, as its summary counts it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    errors: u64,
    /// Chat lines a connection never got.
    lost: u64,
    /// Chat lines a connection got twice.
    dup: u64,
}

impl Outcome {
    /// An error if anything went wrong.
    fn check(self) -> io::Result<()> {
        let mut problems = Vec::new();
        let count = |n: u64, one: &str, many: &str| match n {
            1 => format!("1 {one}"),
            _ => format!("{n} {many}"),
        };
        if self.errors > 0 {
            problems.push(count(self.errors, "error", "errors"));
        }
        if self.lost > 0 {
            problems.push(count(self.lost, "line lost", "lines lost"));
        }
        if self.dup > 0 {
            problems.push(count(self.dup, "line duplicated", "lines duplicated"));
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "{} (see the summary)",
            problems.join(", ")
        )))
    }
}

/// The first address of `addr` (it may be a host name).
fn resolve(addr: &str) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve '{addr}': {e}")))?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: no address")))
}
