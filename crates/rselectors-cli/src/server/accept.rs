//! Listening and accepting: binding (with `SO_REUSEPORT` only under
//! `--reuse-port`), accepting in batches (or one at a time while
//! connections come one at a time) without the peer's address unless it
//! is wanted, and pausing when file descriptors run out.

use super::{Client, Server, Source, Who};
use crate::conn::Conn;
use crate::logging::{self, debug, info, warning, Level};
use rselectors::{Events, Rejected};
use rustix::io::Errno;
#[cfg(not(target_vendor = "apple"))]
use rustix::net::SocketFlags;
use socket2::{Domain, SockRef, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// How long accepting stays paused after it failed for lack of file
/// descriptors (or memory), unless a connection closes first.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Connections accepted per readiness event, so that a flood of connects
/// does not starve the clients already connected.
const ACCEPT_BATCH: usize = 64;

/// Listener events that accept one connection each after a drain of the
/// queue found at most one (see [`AcceptPace`]).
const SINGLES_AFTER_SHORT_DRAIN: u8 = 3;

/// While accepting flaps between failing and working (each close frees
/// one descriptor, taken by the next connection), warn at most this often.
const ACCEPT_WARNING_EVERY: Duration = Duration::from_secs(10);

/// The kernel's queue of connections not yet accepted (capped by
/// `net.core.somaxconn`): room for a thousand clients connecting at once.
const LISTEN_BACKLOG: i32 = 1024;

impl<C: Client> Server<C> {
    /// The listener is readable: accepts the waiting connections (as many
    /// as [`AcceptPace`] says), or pauses accepting if the OS refuses for a
    /// reason that lasts.
    pub(super) fn accept_ready(&mut self) {
        if C::KEEPS_PEER || logging::enabled(Level::Info) {
            self.accept_batch_with_peers();
        } else {
            self.accept_batch::<false>();
        }
    }

    /// The copy of the accept loop that asks for addresses, out of line:
    /// inlined next to the busy copy, it spread the event loop's hot code
    /// over more instruction-cache lines.
    #[inline(never)]
    fn accept_batch_with_peers(&mut self) {
        self.accept_batch::<true>();
    }

    /// [`Server::accept_ready`], asking for the peer's address if
    /// `WITH_PEER`. Two copies of the loop, so that the busy one (no
    /// address) has no `Option<SocketAddr>` to carry per connection.
    #[inline(always)]
    fn accept_batch<const WITH_PEER: bool>(&mut self) {
        let limit = self.accept_pace.limit();
        for taken in 0..limit {
            match accept_nonblocking(&self.listener, WITH_PEER) {
                Ok((stream, peer)) => {
                    if self.accept_failing {
                        self.accepting_again();
                    }
                    self.add_client(stream, peer);
                }
                Err(Errno::AGAIN) => {
                    self.accept_pace.emptied_after(taken);
                    return;
                }
                Err(e) if died_in_queue(e) => {
                    debug!("accept: {}", io::Error::from(e));
                }
                Err(e) => {
                    self.pause_accepting(&e.into());
                    return;
                }
            }
        }
    }

    /// The first accept that works after some failed.
    #[cold]
    fn accepting_again(&mut self) {
        self.accept_failing = false;
        if self.accept_warned {
            info!("accepting connections again");
        } else {
            debug!("accepting connections again");
        }
    }

    /// Accept failed for a reason that lasts (EMFILE, ENFILE, ENOMEM...):
    /// stop watching the listener, keep serving the connections we have,
    /// and try again when one closes or after [`ACCEPT_RETRY`].
    #[cold]
    #[inline(never)]
    fn pause_accepting(&mut self, error: &io::Error) {
        let now = Instant::now();
        let warn_now = !self.accept_failing
            && self
                .accept_warned_at
                .is_none_or(|at| now.duration_since(at) >= ACCEPT_WARNING_EVERY);
        if warn_now {
            warning!(
                "cannot accept: {error}; serving the {} open connections, \
                 accepting again when one closes (retry every {} ms)",
                self.client_count(),
                ACCEPT_RETRY.as_millis()
            );
            self.accept_warned_at = Some(now);
        } else {
            debug!("cannot accept: {error}");
        }
        if !self.accept_failing {
            self.accept_failing = true;
            self.accept_warned = warn_now;
        }
        if self.sel.unregister(self.listener.as_raw_fd()).is_ok() {
            self.paused = Some(now + ACCEPT_RETRY);
        }
    }

    /// Watches the listener again once a pause's retry time has come.
    pub(super) fn resume_accepting_if_due(&mut self) -> io::Result<()> {
        match self.paused {
            Some(retry_at) if retry_at <= Instant::now() => {}
            _ => return Ok(()),
        }
        let source = Source::Listener(self.listener.as_raw_fd());
        self.sel.register(source, Events::READ, ())?;
        self.paused = None;
        Ok(())
    }

    /// Registers a connection just accepted (closing it, with a warning,
    /// if the selector refuses it).
    #[inline(always)]
    fn add_client(&mut self, stream: TcpStream, peer: Option<SocketAddr>) {
        let fd = stream.as_raw_fd();
        let mut conn = match Conn::accepted(stream) {
            Ok(conn) => conn,
            Err(e) => {
                debug!("{}: cannot set up the connection: {e}", Who(peer, fd));
                return;
            }
        };
        conn.touch(self.tick);
        match self
            .sel
            .register(Source::Client(C::new(conn, peer)), Events::READ, ())
        {
            Ok(_) => {
                self.stats.served += 1;
                self.clients += 1;
                // `peer` is known whenever info lines are logged.
                info!("connected {} (fd {fd})", Who(peer, fd));
            }
            Err(refused) => refuse(refused, peer),
        }
    }
}

/// Logs a connection the selector refused; dropping it closes it.
#[cold]
#[inline(never)]
fn refuse<C: Client>(refused: Rejected<Source<C>, ()>, peer: Option<SocketAddr>) {
    let fd = refused.fileobj.as_raw_fd();
    // Accepted without the address (the busy path): ask now, on this rare
    // one, so the warning names the peer.
    let peer = match &refused.fileobj {
        Source::Client(client) if peer.is_none() => client.conn().peer_addr(),
        _ => peer,
    };
    warning!("refusing {}: {}", Who(peer, fd), refused.error);
}

/// Whether an accept failed for this one connection only: it died in the
/// queue, or (Linux) accept passed on a network error pending on it. The
/// next one may be fine.
#[inline]
fn died_in_queue(e: Errno) -> bool {
    // ENONET is not in the BSDs' or macOS's errno.
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "illumos",
        target_os = "solaris"
    ))]
    if e == Errno::NONET {
        return true;
    }
    matches!(
        e,
        Errno::CONNABORTED
            | Errno::INTR
            | Errno::PROTO
            | Errno::NETDOWN
            | Errno::NOPROTOOPT
            | Errno::HOSTDOWN
            | Errno::HOSTUNREACH
            | Errno::OPNOTSUPP
            | Errno::NETUNREACH
    )
}

/// How many connections the listener's next readiness event accepts.
///
/// Draining the queue ends with an `accept4` that fails with `EAGAIN`: one
/// wasted system call per connection when connections come one at a time
/// (short connections, one after another). So after a drain that found at
/// most one, the next [`SINGLES_AFTER_SHORT_DRAIN`] events accept one
/// connection each and stop there. Nothing waits longer for it: the
/// listener is level-triggered, so a connection still queued makes the
/// loop's next wait (which it makes anyway) report the listener again.
/// Then a drain again, so that a burst is found within a few events and
/// taken in batches of [`ACCEPT_BATCH`]. (nginx accepts one per event by
/// default, `multi_accept off`, without the drains.)
#[derive(Debug, Default)]
pub(super) struct AcceptPace {
    singles_left: u8,
}

impl AcceptPace {
    /// The most connections to accept for this event.
    fn limit(&mut self) -> usize {
        if self.singles_left > 0 {
            self.singles_left -= 1;
            1
        } else {
            ACCEPT_BATCH
        }
    }

    /// The queue was found empty after `taken` connections came off it
    /// in this event (in a drain, or at the one try of a single event).
    fn emptied_after(&mut self, taken: usize) {
        if taken <= 1 {
            self.singles_left = SINGLES_AFTER_SHORT_DRAIN;
        }
    }
}

/// Accepts one connection, already non-blocking (`accept4` with
/// `SOCK_NONBLOCK`: one system call, where `accept` and then setting
/// the flag take two), with the peer's address if `with_peer`.
///
/// The error is an `Errno`: the usual outcome, `EAGAIN` once the queue is
/// empty, is told apart without building an `io::Error`.
#[inline]
fn accept_nonblocking(
    listener: &TcpListener,
    with_peer: bool,
) -> Result<(TcpStream, Option<SocketAddr>), Errno> {
    if with_peer {
        return accept_with_peer(listener);
    }
    #[cfg(not(target_vendor = "apple"))]
    let fd = rustix::net::accept_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)?;
    // macOS has no `accept4`. The descriptor is without close-on-exec for
    // a moment: the programs start no other program meanwhile.
    #[cfg(target_vendor = "apple")]
    let fd = {
        let fd = rustix::net::accept(listener)?;
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
        rustix::io::ioctl_fionbio(&fd, true)?;
        fd
    };
    Ok((fd.into(), None))
}

/// [`accept_nonblocking`] with the peer's address (out of line: the busy
/// path does without it).
#[inline(never)]
fn accept_with_peer(listener: &TcpListener) -> Result<(TcpStream, Option<SocketAddr>), Errno> {
    #[cfg(not(target_vendor = "apple"))]
    let accepted = SockRef::from(listener).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    // No `accept4` on macOS: socket2's `accept` sets close-on-exec.
    #[cfg(target_vendor = "apple")]
    let accepted = SockRef::from(listener).accept().and_then(|(socket, peer)| {
        socket.set_nonblocking(true)?;
        Ok((socket, peer))
    });
    // socket2's errors are the OS's, so each has an errno.
    let (socket, peer) = accepted.map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
    // Not TCP/IP: not something this listener can accept.
    let peer = peer.as_socket().ok_or(Errno::AFNOSUPPORT)?;
    Ok((socket.into(), Some(peer)))
}

/// A non-blocking listening socket on the first address of `addr` that
/// binds (`addr` may be a host name: `localhost:9999`); with `reuse_port`
/// or under `--reuse-port`, other sockets may listen on the same address
/// and port (`SO_REUSEPORT`).
pub fn bind_listener(addr: &str, reuse_port: bool) -> io::Result<TcpListener> {
    let reuse_port = reuse_port || crate::loops::reuse_port();
    on_first_address(addr, |candidate| listen_on(candidate, reuse_port))
}

/// `bind` on each address `addr` resolves to, until one works; else the
/// last error, naming its address.
pub fn on_first_address<T>(
    addr: &str,
    bind: impl Fn(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last_error = None;
    let candidates = addr
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve '{addr}': {e}")))?;
    for candidate in candidates {
        match bind(candidate) {
            Ok(bound) => return Ok(bound),
            Err(e) => last_error = Some(io::Error::new(e.kind(), format!("{candidate}: {e}"))),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: no address"))
    }))
}

/// A non-blocking socket listening on `addr` (see [`bind_listener`]).
pub fn listen_on(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // A restarted server can bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if reuse_port {
        share_port(&socket)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Lets other sockets listen on `socket`'s address and port, the kernel
/// spreading new connections over them (`SO_REUSEPORT`; on FreeBSD
/// `SO_REUSEPORT_LB`, since its `SO_REUSEPORT` does not spread them).
/// Refused elsewhere: illumos has no `SO_REUSEPORT`, and on macOS, NetBSD
/// and OpenBSD sockets sharing a port do not share its connections (one
/// of them would get them all).
fn share_port(socket: &Socket) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "dragonfly"))]
    return socket.set_reuse_port(true);
    #[cfg(target_os = "freebsd")]
    return socket.set_reuse_port_lb(true);
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "dragonfly",
        target_os = "freebsd"
    )))]
    {
        let _ = socket;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "--reuse-port is not supported on this system: sockets that share a port \
             do not share its connections here (--threads alone works: its loops share \
             one socket)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::{
        accept_nonblocking, listen_on, AcceptPace, Server, ACCEPT_BATCH, SINGLES_AFTER_SHORT_DRAIN,
    };
    use crate::conn::{set_nodelay, Conn};
    use crate::echo_server::EchoClient;
    use crate::logging::{self, Level};
    use crate::test_support::accept_within_seconds;
    use rselectors::{BackendKind, Waker};
    use std::net::TcpStream;
    use std::os::fd::AsRawFd;

    /// `Conn::accepted` sets no option where the OS passes the listener's
    /// `TCP_NODELAY` on (`Server::on_listener` sets it there): this fails
    /// if it does not.
    #[test]
    fn accepted_sockets_have_nodelay() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let listener = match listen_on(addr.parse().unwrap(), false) {
                Ok(listener) => listener,
                Err(_) if addr.starts_with('[') => continue, // no IPv6 here
                Err(e) => panic!("{addr}: {e}"),
            };
            // What `Server::on_listener` does.
            set_nodelay(&listener).unwrap();
            let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (stream, _) = accept_within_seconds(&listener);
            let conn = Conn::accepted(stream).unwrap();
            assert!(rustix::net::sockopt::tcp_nodelay(&conn).unwrap(), "{addr}");
        }
    }

    /// What the accept of the servers gives, with or without the peer's
    /// address: a non-blocking socket, closed on exec (one `accept4`, or
    /// three calls on macOS), and there with `SO_NOSIGPIPE` (macOS has no
    /// `MSG_NOSIGNAL`), inherited from the listener.
    #[test]
    fn accepted_sockets_are_nonblocking_and_close_on_exec() {
        use rustix::fs::{fcntl_getfl, OFlags};
        use rustix::io::{fcntl_getfd, FdFlags};
        let listener = listen_on("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = listener.local_addr().unwrap();
        for with_peer in [false, true] {
            // A blocking connect on loopback returns once the connection
            // is queued for accept.
            let client = TcpStream::connect(addr).unwrap();
            let (stream, peer) = accept_nonblocking(&listener, with_peer).unwrap();
            assert_eq!(peer, with_peer.then(|| client.local_addr().unwrap()));
            assert!(fcntl_getfl(&stream).unwrap().contains(OFlags::NONBLOCK));
            assert!(fcntl_getfd(&stream).unwrap().contains(FdFlags::CLOEXEC));
            #[cfg(target_vendor = "apple")]
            assert!(rustix::net::sockopt::socket_nosigpipe(&stream).unwrap());
        }
    }

    /// Two loops watch one listening socket (the default of `--threads`):
    /// the one that calls `accept4` first takes a connection, the other
    /// finds the queue empty (`EAGAIN`), keeps watching the listener and
    /// takes the next one.
    #[test]
    fn a_loop_that_loses_the_race_for_a_shared_listener_carries_on() {
        let first = listen_on("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = first.local_addr().unwrap();
        let second = first.try_clone().unwrap();
        let new_loop = |listener| -> Server<EchoClient> {
            let waker = Waker::new().unwrap();
            Server::on_listener(listener, BackendKind::DEFAULT, waker, None).unwrap()
        };
        let (mut a, mut b) = (new_loop(first), new_loop(second));
        // No `connected` lines among the test results.
        logging::set_max_level(Level::Warn);
        // A blocking connect on loopback returns once the connection is
        // queued for accept.
        let _one = TcpStream::connect(addr).unwrap();
        a.accept_ready();
        b.accept_ready();
        assert_eq!((a.client_count(), b.client_count()), (1, 0));
        assert!(b.paused.is_none() && !b.accept_failing);
        assert!(b.sel.get_key(b.listener.as_raw_fd()).is_ok());
        let _two = TcpStream::connect(addr).unwrap();
        b.accept_ready();
        a.accept_ready();
        assert_eq!((a.client_count(), b.client_count()), (1, 1));
        assert!(a.paused.is_none() && b.paused.is_none());
    }

    fn limits(pace: &mut AcceptPace, n: usize) -> Vec<usize> {
        (0..n).map(|_| pace.limit()).collect()
    }

    #[test]
    fn a_new_listener_drains_its_queue() {
        assert_eq!(AcceptPace::default().limit(), ACCEPT_BATCH);
    }

    #[test]
    fn after_a_drain_of_at_most_one_a_few_events_accept_one_then_drain_again() {
        for taken in [0, 1] {
            let mut pace = AcceptPace::default();
            pace.emptied_after(taken);
            let singles = usize::from(SINGLES_AFTER_SHORT_DRAIN);
            let mut expected = vec![1; singles];
            expected.push(ACCEPT_BATCH);
            assert_eq!(limits(&mut pace, singles + 1), expected);
        }
    }

    #[test]
    fn a_drain_that_found_several_keeps_draining() {
        let mut pace = AcceptPace::default();
        pace.emptied_after(2);
        assert_eq!(limits(&mut pace, 3), vec![ACCEPT_BATCH; 3]);
    }
}
