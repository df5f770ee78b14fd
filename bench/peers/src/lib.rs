//! What the peer echo servers share: the command line, the listener, the
//! announcement, and a connection's unsent tail.
//!
//! Every server takes `--addr HOST:PORT` (default `127.0.0.1:0`), binds, and prints
//! `listening on ADDR` on stdout, flushed, so that the benchmark driver can learn the
//! port. Servers run until a signal kills them; the driver reads their rusage with
//! `wait4`, which works for a process killed by SIGTERM too.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};

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

/// Binds `--addr`, non-blocking, and returns the listener with its address
/// (exiting on failure).
pub fn bind_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind(listen_addr()).unwrap_or_else(|e| die("bind", e));
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| die("set_nonblocking", e));
    let local = listener
        .local_addr()
        .unwrap_or_else(|e| die("local_addr", e));
    (listener, local)
}

/// Writes as much of `buf` as `out` takes now; returns the count (short on
/// `WouldBlock`).
pub fn write_some<W: Write>(mut out: W, buf: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < buf.len() {
        match out.write(&buf[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// The unsent tail of a partial write: bytes read but not yet written back.
#[derive(Debug, Default)]
pub struct Pending {
    bytes: Vec<u8>,
    /// How much of `bytes` has been written already.
    sent: usize,
}

impl Pending {
    /// True when nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Holds `tail`, the part of a reply the socket did not take.
    pub fn hold(&mut self, tail: &[u8]) {
        self.bytes.clear();
        self.bytes.extend_from_slice(tail);
        self.sent = 0;
    }

    /// What is left to write.
    pub fn rest(&self) -> &[u8] {
        &self.bytes[self.sent..]
    }

    /// Notes `n` more bytes written; true when that drained it.
    pub fn wrote(&mut self, n: usize) -> bool {
        self.sent += n;
        let drained = self.sent == self.bytes.len();
        if drained {
            self.bytes.clear();
            self.sent = 0;
        }
        drained
    }
}
