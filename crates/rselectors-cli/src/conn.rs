//! One non-blocking TCP connection with an output buffer.
//!
//! Nothing here ever blocks and no byte is ever dropped: what the socket
//! does not take now waits in the buffer, and the owner asks the selector
//! for WRITE (see [`Conn::interest`]) until it is gone.

use crate::budget::Held;
use rselectors::Events;
use rustix::io::Errno;
#[cfg(not(target_vendor = "apple"))]
use rustix::net::SocketFlags;
use rustix::net::{AddressFamily, SendFlags, SocketType};
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

/// How much one readiness event reads at most: large enough for bulk
/// transfers, small enough that one busy peer cannot starve the others.
pub const READ_CHUNK: usize = 64 * 1024;

/// Once this much of a slowly drained buffer is written, the rest moves
/// to the front, so that the buffer does not grow forever.
const COMPACT_AFTER: usize = 256 * 1024;

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

/// What a connection's handler wants done after an event: the servers'
/// client handlers and the load generator's connections both answer it.
#[derive(Debug)]
pub enum Next {
    /// Nothing: the registered events stay right.
    Keep,
    /// Wait for these events instead.
    Wait(Events),
    /// Close it, for this reason (it is done, or the peer is).
    Close(&'static str),
    /// Its I/O failed: close it after logging the error.
    Failed(io::Error),
}

/// A connected, non-blocking TCP stream and its pending output.
///
/// Kept small (16 bytes) because a server holds one per connection: the
/// output buffer is allocated only while bytes wait in it, and who the
/// peer is and how many bytes went each way is the owner's business (the
/// methods return the counts).
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    /// Bytes queued and not yet written; `None` while there are none.
    out: Option<Box<Pending>>,
    write_shut: bool,
    /// The peer sent end of stream (a read returned 0).
    read_done: bool,
    /// The server's idle tick when the connection last did something
    /// (see `crate::server::idle`).
    active_at: u16,
}

/// Queued output: `buf[start..]` is not written yet.
#[derive(Debug, Default)]
struct Pending {
    /// Charged to the memory budget.
    buf: Held,
    start: usize,
    /// Writes that sent something since the buffer was created.
    progress: u32,
    /// `progress` at the server's last check (see [`Conn::stalled`]); `None`
    /// if the buffer did not exist then.
    seen: Option<u32>,
}

impl Conn {
    /// Takes over `stream`, making it non-blocking and turning Nagle's
    /// algorithm off.
    pub fn new(stream: TcpStream) -> io::Result<Conn> {
        stream.set_nonblocking(true)?;
        set_nodelay(&stream)?;
        Ok(Conn::wrap(stream))
    }

    /// Takes over `stream`, accepted with `SOCK_NONBLOCK` from a listener
    /// that has `TCP_NODELAY` set (every server's: see `Acceptor::new`):
    /// where accepted sockets inherit it
    /// ([`ACCEPT_INHERITS_NODELAY`]) this makes no system call.
    #[inline]
    pub fn accepted(stream: TcpStream) -> io::Result<Conn> {
        if !ACCEPT_INHERITS_NODELAY {
            set_nodelay(&stream)?;
        }
        Ok(Conn::wrap(stream))
    }

    fn wrap(stream: TcpStream) -> Conn {
        Conn {
            stream,
            out: None,
            write_shut: false,
            read_done: false,
            active_at: 0,
        }
    }

    /// Bytes queued and not yet written.
    #[inline]
    pub fn pending(&self) -> usize {
        self.out.as_ref().map_or(0, |p| p.buf.len() - p.start)
    }

    /// Bytes held for the connection's output (the buffer's capacity),
    /// as charged to the memory budget.
    pub fn held(&self) -> usize {
        self.out.as_ref().map_or(0, |p| p.buf.capacity())
    }

    /// Records that the connection did something at idle tick `tick`.
    #[inline]
    pub fn touch(&mut self, tick: u16) {
        self.active_at = tick;
    }

    /// The idle tick of the connection's last activity.
    pub fn active_at(&self) -> u16 {
        self.active_at
    }

    /// True when output was queued at the last [`Conn::mark`] and none of
    /// it has been written since: the peer is not reading. A server marks
    /// its clients at intervals, to find whom to cut off when memory runs
    /// short; output queued since the last mark is never stalled.
    pub fn stalled(&self) -> bool {
        self.out
            .as_ref()
            .is_some_and(|pending| pending.seen == Some(pending.progress))
    }

    /// Notes how far the output has gone, for [`Conn::stalled`].
    pub fn mark(&mut self) {
        if let Some(pending) = &mut self.out {
            pending.seen = Some(pending.progress);
        }
    }

    /// The peer's address, if the OS still knows it.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.stream.peer_addr().ok()
    }

    /// True once a read found the peer's end of stream.
    #[inline]
    pub fn read_done(&self) -> bool {
        self.read_done
    }

    /// One `read(2)` into `buf`.
    ///
    /// The system calls here go through `rustix` (a direct system call and
    /// an `Errno`), not `std`'s `Read` (libc's wrapper, `errno`, then an
    /// `io::Error` to classify): this runs once per message.
    #[inline]
    pub fn receive(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        loop {
            return match rustix::io::read(&self.stream, &mut *buf) {
                Ok(0) if !buf.is_empty() => {
                    self.read_done = true;
                    Ok(Received::Eof)
                }
                Ok(n) => Ok(Received::Data(n)),
                Err(Errno::AGAIN) => Ok(Received::WouldBlock),
                Err(Errno::INTR) => continue,
                Err(e) => Err(e.into()),
            };
        }
    }

    /// Queues `bytes` and writes as much as the socket takes now; returns
    /// how many were written. When nothing was queued before, the bytes go
    /// straight to the socket without being copied into the buffer first,
    /// and only what the socket did not take is copied.
    #[inline(always)]
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.out.is_some() {
            self.queue(bytes);
            return Ok(0);
        }
        let written = write_nonblocking(&mut self.stream, bytes)?;
        if written < bytes.len() {
            self.queue(&bytes[written..]);
        }
        Ok(written)
    }

    /// Queues `bytes` without writing. Out of line: the usual reply goes
    /// out whole, and [`Conn::send`] stays small.
    #[inline(never)]
    pub fn queue(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.out
            .get_or_insert_with(Box::default)
            .buf
            .extend_from_slice(bytes);
    }

    /// Writes queued bytes until none are left or the socket is full
    /// (one `write(2)`, see [`write_nonblocking`]); returns how many were
    /// written. A drained buffer is freed, so an idle connection holds no
    /// output memory.
    pub fn flush(&mut self) -> io::Result<usize> {
        let Some(pending) = &mut self.out else {
            return Ok(0);
        };
        let written =
            write_nonblocking(&mut self.stream, &pending.buf.as_slice()[pending.start..])?;
        pending.start += written;
        if written > 0 {
            pending.progress = pending.progress.wrapping_add(1);
        }
        if pending.start == pending.buf.len() {
            self.out = None;
        } else if pending.start >= COMPACT_AFTER && pending.start * 2 >= pending.buf.len() {
            // Most of the buffer is written: move the rest to the front, so
            // a peer that keeps reading slowly does not make it grow forever.
            pending.buf.consume(pending.start);
            pending.start = 0;
        }
        Ok(written)
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

    /// What a connection registered for `registered` waits for next (see
    /// [`Conn::interest`]): `Keep` if that is unchanged, `Close(done)` if
    /// it wants nothing more.
    #[inline]
    pub fn next(&self, want_read: bool, registered: Events, done: &'static str) -> Next {
        match self.interest(want_read) {
            Some(events) if events == registered => Next::Keep,
            Some(events) => Next::Wait(events),
            None => Next::Close(done),
        }
    }

    /// The events to wait for: READ if `want_read`, WRITE while output is
    /// queued; `None` when neither (the connection has nothing left to do).
    #[inline]
    pub fn interest(&self, want_read: bool) -> Option<Events> {
        let mut events = Events::empty();
        if want_read {
            events |= Events::READ;
        }
        if self.out.is_some() {
            events |= Events::WRITE;
        }
        (!events.is_empty()).then_some(events)
    }
}

/// Writes what the socket takes now (possibly nothing): the count written,
/// 0 if the socket is full.
///
/// One successful `send(2)` at most: a non-blocking TCP socket takes all
/// it has room for, so a short write means it is full, and trying again
/// would only cost a system call to hear `EAGAIN`. The rest waits for
/// WRITE readiness. `MSG_NOSIGNAL`: a peer that went away is an `EPIPE`
/// error, never a `SIGPIPE`.
#[inline]
fn write_nonblocking(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    if bytes.is_empty() {
        return Ok(0);
    }
    loop {
        return match rustix::net::send(&*stream, bytes, SEND_FLAGS) {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => Ok(n),
            Err(Errno::AGAIN) => Ok(0),
            Err(Errno::INTR) => continue,
            Err(e) => Err(e.into()),
        };
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
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

/// `MSG_NOSIGNAL`: a write to a peer that went away fails with `EPIPE`
/// instead of raising SIGPIPE. macOS has no such flag; there every socket
/// has `SO_NOSIGPIPE` instead: [`tcp_socket`] and std set it on the
/// sockets they make, and a socket accepted from a listener inherits it (a test checks
/// it: `accepted_sockets_have_nosigpipe`).
#[cfg(not(target_vendor = "apple"))]
const SEND_FLAGS: SendFlags = SendFlags::NOSIGNAL;
#[cfg(target_vendor = "apple")]
const SEND_FLAGS: SendFlags = SendFlags::empty();

/// Whether a socket accepted from a listener starts with the listener's
/// `TCP_NODELAY`, so that a server sets the option once on the listener
/// instead of once per connection (a test checks it on the machine at
/// hand: `accepted_sockets_have_nodelay`). Linux copies the listening
/// socket's options (its whole `tcp_sock`, Nagle's flag included); the
/// BSDs and macOS copy `TF_NODELAY` from the listener's `tcpcb`. illumos
/// is not known to: the option is set on each connection there.
pub const ACCEPT_INHERITS_NODELAY: bool = cfg!(any(
    target_os = "linux",
    target_os = "android",
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "netbsd",
    target_os = "openbsd"
));

/// A new non-blocking TCP socket for `addr`'s family, closed on exec: the
/// one place the programs make sockets (servers listen on them, the load
/// generator connects them).
pub fn tcp_socket(addr: SocketAddr) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    #[cfg(not(target_vendor = "apple"))]
    let socket = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    // macOS takes no flags at creation, and has no `MSG_NOSIGNAL`: the
    // socket gets `SO_NOSIGPIPE` (see `SEND_FLAGS`), which sockets accepted
    // from a listener inherit.
    #[cfg(target_vendor = "apple")]
    let socket = {
        let socket = rustix::net::socket(family, SocketType::STREAM, None)?;
        rustix::io::fcntl_setfd(&socket, rustix::io::FdFlags::CLOEXEC)?;
        rustix::io::ioctl_fionbio(&socket, true)?;
        rustix::net::sockopt::set_socket_nosigpipe(&socket, true)?;
        socket
    };
    Ok(socket)
}

/// Replies are small and interactive: do not wait to coalesce them.
/// (rustix: one direct system call.)
pub fn set_nodelay(stream: &impl AsFd) -> io::Result<()> {
    rustix::net::sockopt::set_tcp_nodelay(stream, true)?;
    Ok(())
}

/// How long connecting to a server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
