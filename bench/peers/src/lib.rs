//! Shared helpers for the peer echo servers and the temporary load generator.
//!
//! Every server takes `--addr HOST:PORT` (default `127.0.0.1:0`), binds, and prints
//! `listening on ADDR` on stdout, flushed, so that the benchmark driver can learn the
//! port. Servers run until a signal kills them; the driver reads their rusage with
//! `wait4`, which works for a process killed by SIGTERM too.

use std::io::Write;
use std::net::SocketAddr;

/// Size of the per-loop read buffer shared by the servers (one `read` per event).
pub const READ_BUF_SIZE: usize = 64 * 1024;

/// Returns the value of `--NAME VALUE` (or `--NAME=VALUE`) from the process arguments.
pub fn flag_value(name: &str) -> Option<String> {
    let long = format!("--{name}");
    let with_eq = format!("--{name}=");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == long {
            return args.next();
        }
        if let Some(value) = arg.strip_prefix(&with_eq) {
            return Some(value.to_string());
        }
    }
    None
}

/// Parses `--addr` (default `127.0.0.1:0`), exiting with status 2 on a bad value.
pub fn listen_addr() -> SocketAddr {
    let text = flag_value("addr").unwrap_or_else(|| "127.0.0.1:0".to_string());
    match text.parse() {
        Ok(addr) => addr,
        Err(err) => {
            eprintln!("bad --addr {text:?}: {err}");
            std::process::exit(2);
        }
    }
}

/// Prints `listening on ADDR` and flushes, so a driver reading a pipe sees it at once.
pub fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    // A closed stdout only loses the announcement; the server still serves.
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}

/// Prints an error and exits with status 1: setup failures of a bench binary.
pub fn die(context: &str, err: impl std::fmt::Display) -> ! {
    eprintln!("{context}: {err}");
    std::process::exit(1);
}
