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
//!
//! The workloads, [`echo`] (pingpong, stream, churn) and [`chat`], say what
//! a connection does with each event; [`harness`] connects, reconnects and
//! polls them and runs the clock; [`report`] counts and prints.

mod chat;
mod echo;
mod harness;
mod report;

use crate::{parse_seconds, Common};
use clap::{value_parser, Args, ValueEnum};
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
#[derive(Debug)]
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
