//! Accepting: one [`Acceptor`] per event loop owns the listening socket
//! and the state of accepting on it. It accepts in batches (or one at a
//! time while connections come one at a time), without the peer's address
//! unless it is wanted, and pauses when file descriptors run out.

use super::{Client, Server, Source, Who};
use crate::conn::{set_nodelay, Conn};
use crate::logging::{self, debug, info, warning, Level};
use rselectors::{Events, Rejected};
use rustix::io::Errno;
#[cfg(not(target_vendor = "apple"))]
use rustix::net::SocketFlags;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
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

/// One event loop's listening socket and the state of accepting on it.
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    local_addr: SocketAddr,
    /// While accepting is paused, when to try again. The listener is out
    /// of the selector then, so that a full accept queue does not make
    /// every wait return at once.
    paused: Option<Instant>,
    /// How many connections the listener's next event accepts.
    pace: AcceptPace,
    /// True from a failed accept until the next successful one: logs the
    /// trouble once, not every [`ACCEPT_RETRY`].
    failing: bool,
    /// When the last warning about failing accepts was logged.
    warned_at: Option<Instant>,
    /// Whether this episode of failing accepts was logged as a warning
    /// (then its end is logged at info level too).
    warned: bool,
}

impl Acceptor {
    /// Accepts on `listener` (non-blocking). Sets `TCP_NODELAY` on it:
    /// replies are small and interactive, and sockets accepted from it
    /// inherit the option where the OS passes it on (see
    /// [`Conn::accepted`]), one system call per loop instead of one per
    /// connection.
    pub fn new(listener: TcpListener) -> io::Result<Acceptor> {
        set_nodelay(&listener)?;
        Ok(Acceptor {
            local_addr: listener.local_addr()?,
            listener,
            paused: None,
            pace: AcceptPace::default(),
            failing: false,
            warned_at: None,
            warned: false,
        })
    }

    /// The listening socket's descriptor.
    pub fn fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// While accepting is paused, when it is tried again.
    pub fn retry_at(&self) -> Option<Instant> {
        self.paused
    }

    /// A descriptor is free again: try accepting now rather than at the
    /// retry time.
    pub fn retry_now(&mut self) {
        if let Some(retry_at) = &mut self.paused {
            *retry_at = Instant::now();
        }
    }

    /// The first accept that works after some failed.
    #[cold]
    fn accepting_again(&mut self) {
        self.failing = false;
        if self.warned {
            info!("accepting connections again");
        } else {
            debug!("accepting connections again");
        }
    }

    /// Accept failed for a reason that lasts (EMFILE, ENFILE, ENOMEM...),
    /// with `open` connections being served: logs it (once per episode,
    /// and a warning at most every [`ACCEPT_WARNING_EVERY`]).
    #[cold]
    #[inline(never)]
    fn failed(&mut self, error: &io::Error, open: usize, now: Instant) {
        let warn_now = !self.failing
            && self
                .warned_at
                .is_none_or(|at| now.duration_since(at) >= ACCEPT_WARNING_EVERY);
        if warn_now {
            warning!(
                "cannot accept: {error}; serving the {open} open connections, \
                 accepting again when one closes (retry every {} ms)",
                ACCEPT_RETRY.as_millis()
            );
            self.warned_at = Some(now);
        } else {
            debug!("cannot accept: {error}");
        }
        if !self.failing {
            self.failing = true;
            self.warned = warn_now;
        }
    }
}

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
    /// off the busy path.
    #[inline(never)]
    fn accept_batch_with_peers(&mut self) {
        self.accept_batch::<true>();
    }

    /// [`Server::accept_ready`], asking for the peer's address if
    /// `WITH_PEER`. Two copies of the loop, so that the busy one (no
    /// address) has no `Option<SocketAddr>` to carry per connection.
    #[inline(always)]
    fn accept_batch<const WITH_PEER: bool>(&mut self) {
        let limit = self.acceptor.pace.limit();
        for taken in 0..limit {
            match accept_nonblocking(&self.acceptor.listener, WITH_PEER) {
                Ok((stream, peer)) => {
                    if self.acceptor.failing {
                        self.acceptor.accepting_again();
                    }
                    self.add_client(stream, peer);
                }
                Err(Errno::AGAIN) => {
                    self.acceptor.pace.emptied_after(taken);
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

    /// Stops watching the listener after accepting failed for a reason
    /// that lasts, keeps serving the connections there are, and tries
    /// again when one closes or after [`ACCEPT_RETRY`].
    #[cold]
    #[inline(never)]
    fn pause_accepting(&mut self, error: &io::Error) {
        let now = Instant::now();
        self.acceptor.failed(error, self.client_count(), now);
        if self.sel.unregister(self.acceptor.fd()).is_ok() {
            self.acceptor.paused = Some(now + ACCEPT_RETRY);
        }
    }

    /// Watches the listener again once a pause's retry time has come.
    pub(super) fn resume_accepting_if_due(&mut self) -> io::Result<()> {
        match self.acceptor.paused {
            Some(retry_at) if retry_at <= Instant::now() => {}
            _ => return Ok(()),
        }
        let source = Source::Listener(self.acceptor.fd());
        self.sel.register(source, Events::READ, ())?;
        self.acceptor.paused = None;
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
        match self.sel.register(
            Source::Client(C::new(conn, peer, &self.context)),
            Events::READ,
            (),
        ) {
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

/// Accepts one connection, already non-blocking and closed on exec
/// (`accept4`: one system call, where `accept` and then setting the flags
/// take three), with the peer's address if `with_peer`.
///
/// The error is an `Errno`: the usual outcome, `EAGAIN` once the queue is
/// empty, is told apart without building an `io::Error`.
#[inline]
fn accept_nonblocking(
    listener: &TcpListener,
    with_peer: bool,
) -> Result<(TcpStream, Option<SocketAddr>), Errno> {
    let (fd, peer) = if with_peer {
        let (fd, peer) = accept_with(listener, true)?;
        // Not TCP/IP: not something this listener can accept.
        let peer = peer.ok_or(Errno::AFNOSUPPORT)?;
        (fd, Some(SocketAddr::try_from(peer)?))
    } else {
        (accept_with(listener, false)?.0, None)
    };
    Ok((fd.into(), peer))
}

#[cfg(not(target_vendor = "apple"))]
#[inline(always)]
fn accept_with(
    listener: &TcpListener,
    with_peer: bool,
) -> Result<(std::os::fd::OwnedFd, Option<rustix::net::SocketAddrAny>), Errno> {
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    if with_peer {
        rustix::net::acceptfrom_with(listener, flags)
    } else {
        Ok((rustix::net::accept_with(listener, flags)?, None))
    }
}

/// macOS has no `accept4`. The descriptor is without close-on-exec for a
/// moment: the programs start no other program meanwhile.
#[cfg(target_vendor = "apple")]
fn accept_with(
    listener: &TcpListener,
    with_peer: bool,
) -> Result<(std::os::fd::OwnedFd, Option<rustix::net::SocketAddrAny>), Errno> {
    let (fd, peer) = if with_peer {
        rustix::net::acceptfrom(listener)?
    } else {
        (rustix::net::accept(listener)?, None)
    };
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
    rustix::io::ioctl_fionbio(&fd, true)?;
    Ok((fd, peer))
}

#[cfg(test)]
mod tests {
    use super::{accept_nonblocking, AcceptPace, Server, ACCEPT_BATCH, SINGLES_AFTER_SHORT_DRAIN};
    use crate::conn::{set_nodelay, Conn};
    use crate::echo_server::EchoClient;
    use crate::logging::{self, Level};
    use crate::server::listen::listen_on;
    use crate::test_support::accept_within_seconds;
    use rselectors::{BackendKind, Waker};
    use std::net::TcpStream;

    /// `Conn::accepted` sets no option where the OS passes the listener's
    /// `TCP_NODELAY` on (`Acceptor::new` sets it there): this fails if it
    /// does not.
    #[test]
    fn accepted_sockets_have_nodelay() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let listener = match listen_on(addr.parse().unwrap(), false) {
                Ok(listener) => listener,
                Err(_) if addr.starts_with('[') => continue, // no IPv6 here
                Err(e) => panic!("{addr}: {e}"),
            };
            // What `Acceptor::new` does.
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
        assert!(b.acceptor.paused.is_none() && !b.acceptor.failing);
        assert!(b.sel.get_key(b.acceptor.fd()).is_ok());
        let _two = TcpStream::connect(addr).unwrap();
        b.accept_ready();
        a.accept_ready();
        assert_eq!((a.client_count(), b.client_count()), (1, 1));
        assert!(a.acceptor.paused.is_none() && b.acceptor.paused.is_none());
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
