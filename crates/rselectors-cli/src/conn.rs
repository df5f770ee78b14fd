//! One non-blocking TCP connection with an output buffer.
//!
//! Nothing here ever blocks and no byte is ever dropped: what the socket
//! does not take now waits in the buffer, and the owner asks the selector
//! for WRITE (see [`Conn::interest`]) until it is gone.

use rselectors::Events;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// How much one readiness event reads at most: large enough for bulk
/// transfers, small enough that one busy peer cannot starve the others.
pub const READ_CHUNK: usize = 64 * 1024;

/// A drained buffer bigger than this gives its memory back, so that one
/// burst does not pin megabytes per connection for its whole life.
const KEEP_CAPACITY: usize = 256 * 1024;

/// What one read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// This many bytes were read into the buffer.
    Data(usize),
    /// The peer will send nothing more (it closed or half-closed).
    Eof,
    /// Nothing to read right now.
    WouldBlock,
}

/// A connected, non-blocking TCP stream, its pending output and counters.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes `out[out_start..]` are queued and not yet written.
    out: Vec<u8>,
    out_start: usize,
    bytes_in: u64,
    bytes_out: u64,
    write_shut: bool,
}

impl Conn {
    /// Takes over `stream`, making it non-blocking.
    pub fn new(stream: TcpStream, peer: SocketAddr) -> io::Result<Conn> {
        stream.set_nonblocking(true)?;
        Conn::accepted(stream, peer)
    }

    /// Takes over `stream`, which is non-blocking already (accepted with
    /// `SOCK_NONBLOCK`).
    pub fn accepted(stream: TcpStream, peer: SocketAddr) -> io::Result<Conn> {
        // Replies are small and interactive; do not wait to coalesce them.
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            peer,
            out: Vec::new(),
            out_start: 0,
            bytes_in: 0,
            bytes_out: 0,
            write_shut: false,
        })
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Bytes read from the peer so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Bytes written to the peer so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.out.len() - self.out_start
    }

    /// One `read(2)` into `buf`.
    pub fn receive(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        loop {
            return match self.stream.read(buf) {
                Ok(0) if !buf.is_empty() => Ok(Received::Eof),
                Ok(n) => {
                    self.bytes_in += n as u64;
                    Ok(Received::Data(n))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Received::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// Queues `bytes` and writes as much as the socket takes now. When
    /// nothing was queued before, the bytes go straight to the socket
    /// without being copied into the buffer first.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut rest = bytes;
        if self.pending() == 0 {
            let written = self.write_some(rest)?;
            rest = &rest[written..];
        }
        self.queue(rest);
        Ok(())
    }

    /// Queues `bytes` without writing.
    pub fn queue(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.pending() == 0 {
            self.out.clear();
            self.out_start = 0;
        }
        self.out.extend_from_slice(bytes);
    }

    /// Writes queued bytes until none are left or the socket is full
    /// (one `write(2)`, see [`write_nonblocking`]).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.pending() > 0 {
            self.out_start += self.write_some_queued()?;
        }
        if self.pending() == 0 {
            if self.out.capacity() > KEEP_CAPACITY {
                self.out = Vec::new();
            } else {
                self.out.clear();
            }
            self.out_start = 0;
        } else if self.out_start >= KEEP_CAPACITY && self.out_start * 2 >= self.out.len() {
            // Most of the buffer is written: move the rest to the front, so
            // a peer that keeps reading slowly does not make it grow forever.
            self.out.drain(..self.out_start);
            self.out_start = 0;
        }
        Ok(())
    }

    fn write_some_queued(&mut self) -> io::Result<usize> {
        let Conn {
            stream,
            out,
            out_start,
            bytes_out,
            ..
        } = self;
        write_nonblocking(stream, &out[*out_start..], bytes_out)
    }

    fn write_some(&mut self, bytes: &[u8]) -> io::Result<usize> {
        write_nonblocking(&mut self.stream, bytes, &mut self.bytes_out)
    }

    /// Sends FIN once the queued bytes are out: the peer reads them, then
    /// end of stream. Idempotent. Call it when [`Conn::pending`] is 0.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        if self.write_shut {
            return Ok(());
        }
        self.write_shut = true;
        match self.stream.shutdown(Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
            _ => Ok(()),
        }
    }

    /// The events to wait for: READ if `want_read`, WRITE while output is
    /// queued; `None` when neither (the connection has nothing left to do).
    pub fn interest(&self, want_read: bool) -> Option<Events> {
        let mut events = Events::empty();
        if want_read {
            events |= Events::READ;
        }
        if self.pending() > 0 {
            events |= Events::WRITE;
        }
        (!events.is_empty()).then_some(events)
    }
}

/// Writes what the socket takes now (possibly nothing): the count written,
/// 0 if the socket is full.
///
/// One successful `write(2)` at most: a non-blocking TCP socket takes all
/// it has room for, so a short write means it is full, and trying again
/// would only cost a system call to hear `EAGAIN`. The rest waits for
/// WRITE readiness.
fn write_nonblocking(stream: &mut TcpStream, bytes: &[u8], counter: &mut u64) -> io::Result<usize> {
    if bytes.is_empty() {
        return Ok(0);
    }
    loop {
        return match stream.write(bytes) {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                *counter += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

/// True for the errors a peer causes by going away (reset, broken pipe,
/// abort): routine for a server, logged at debug level.
pub fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
            | io::ErrorKind::TimedOut
    )
}

/// How long connecting to a server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to the first address of `addr` that accepts (`addr` may be a
/// host name: `localhost:9999`); the error names the address.
pub fn connect(addr: &str) -> io::Result<TcpStream> {
    let mut last_error = None;
    for candidate in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&candidate, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                let message = format!("cannot connect to {candidate}: {e}");
                last_error = Some(io::Error::new(e.kind(), message));
            }
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: no address"))
    }))
}
