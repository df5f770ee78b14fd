//! What the echo and chat servers share: one event loop's [`Server`],
//! which dispatches events to a client handler, accepts, handles
//! signals, closes clients and prints the closing summary.
//!
//! Everything one event loop watches is one [`Source`] registered in one
//! selector; the selector owns the client sockets, so unregistering a
//! client and dropping the key is what closes it (the [`Acceptor`] owns
//! the listener, which the selector watches by number).
//!
//! | module | what |
//! |---|---|
//! | [`listen`] | binding: `--addr`, one socket or `--reuse-port` |
//! | [`accept`] | accepting, pacing, pausing when descriptors run out |
//! | [`loops`] | 1 to N loops (`--threads`), and what they tell each other |
//! | [`limits`] | the memory budget and the idle timeout |

mod accept;
pub mod limits;
mod listen;
pub mod loops;
use limits::IdleTimer;

use crate::budget;
use crate::conn::{is_disconnect, Conn, Next};
use crate::logging::{self, debug, info, say, warning, Level};
use crate::signals::Signals;
use crate::stdin::Stdin;
use accept::Acceptor;
pub use listen::set_reuse_port;
use rselectors::{AnySelector, BackendKind, Events, Waker};
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::ops::AddAssign;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// Per-connection state of a server.
pub trait Client {
    /// Whether [`Client::new`] needs the peer's address. If not, and
    /// per-connection logging is off, connections are accepted without it
    /// (no address to copy out and parse per connection).
    const KEEPS_PEER: bool = false;
    /// What the owner of the server tells the connections it accepts
    /// from now on (see [`Server::context_mut`]).
    type Context: Default;
    /// State for a connection just accepted from `peer` (given whenever
    /// [`Client::KEEPS_PEER`]).
    fn new(conn: Conn, peer: Option<SocketAddr>, context: &Self::Context) -> Self;
    /// The connection.
    fn conn(&self) -> &Conn;
    /// The connection, mutably.
    fn conn_mut(&mut self) -> &mut Conn;
    /// The peer's address, for clients that keep it (the echo server does
    /// not: 32 bytes per connection it has no use for).
    fn peer(&self) -> Option<SocketAddr> {
        None
    }
    /// Bytes in and out of this client, for the line that logs its
    /// disconnection (for clients that keep the peer's address). The
    /// server's totals are counted in [`Stats`] at each read and write.
    fn traffic(&self) -> (u64, u64) {
        (0, 0)
    }
    /// Bytes held on the client's behalf, as charged to the memory budget.
    fn held(&self) -> usize {
        self.conn().held()
    }
    /// True if it has made no progress since the last [`Client::mark`]
    /// with what it holds (see `Conn::stalled`).
    fn stalled(&self) -> bool {
        self.conn().stalled()
    }
    /// Notes its progress, for [`Client::stalled`].
    fn mark(&mut self) {
        self.conn_mut().mark();
    }
}

/// Where a client is logged: its address if kept, else its descriptor.
struct Who(Option<SocketAddr>, RawFd);

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(peer) => write!(f, "{peer}"),
            None => write!(f, "fd {}", self.1),
        }
    }
}

/// A file object a server watches.
pub enum Source<C> {
    /// The listening socket's descriptor. The [`Server`] owns the socket
    /// (and outlives the registration), so accepting needs no lookup.
    Listener(RawFd),
    /// This loop's waker: woken by the other loops (`--threads`).
    Waker(Waker),
    /// The signals that stop the server (the loop that handles them).
    /// Boxed: one per process, kept out of the size of every key.
    Signals(Box<Signals>),
    /// Standard input, read as console commands.
    Console(Stdin),
    /// Ticks of the idle timeout (see [`limits`]).
    IdleTimer(IdleTimer),
    /// A connection of the chat server's broker link, which owns the
    /// socket and stops watching it before closing it
    /// ([`crate::broker::Watch`]).
    Broker(RawFd, crate::broker::Role),
    /// A client connection and its state.
    Client(C),
}

impl<C: Client> AsRawFd for Source<C> {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Source::Listener(fd) => *fd,
            Source::Waker(waker) => waker.as_raw_fd(),
            Source::Signals(signals) => signals.as_raw_fd(),
            Source::Console(stdin) => stdin.as_raw_fd(),
            Source::IdleTimer(timer) => timer.as_raw_fd(),
            Source::Broker(fd, _) => *fd,
            Source::Client(client) => client.conn().as_raw_fd(),
        }
    }
}

/// What a client is registered for, and which of those events are ready.
#[derive(Debug, Clone, Copy)]
pub struct Readiness {
    pub registered: Events,
    pub ready: Events,
}

/// An event the server hands to its owner; accepts and signals are dealt
/// with inside [`Server::dispatch`].
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// The console (stdin) is readable.
    Console(RawFd),
    /// A client's handler asked for the whole server (see
    /// [`Server::dispatch`]).
    Client(RawFd),
    /// The loop's waker went off: another loop may have posted to this
    /// one's inbox or asked it to stop.
    Wake,
    /// A broker link's connection is ready.
    Broker(RawFd, Events),
}

/// What a server did over its life; added up over the loops of
/// `--threads`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Connections accepted.
    pub served: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
}

impl AddAssign for Stats {
    fn add_assign(&mut self, other: Stats) {
        self.served += other.served;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
    }
}

/// Prints the closing summary line.
fn print_summary(reason: &str, stats: Stats) {
    say!(
        "stopped ({reason}): {} connections served, {} bytes in, {} bytes out",
        stats.served,
        stats.bytes_in,
        stats.bytes_out
    );
}

impl<C: Client> crate::broker::Watch for Server<C> {
    fn watch(
        &mut self,
        fd: RawFd,
        role: crate::broker::Role,
        events: Events,
        registered: bool,
    ) -> io::Result<()> {
        let result = match registered {
            true => self.sel.modify_events(fd, events).map(|_| ()),
            false => self
                .sel
                .register(Source::Broker(fd, role), events, ())
                .map(|_| ())
                .map_err(|e| e.error),
        };
        result.map_err(|e| io::Error::other(format!("selector: {e}")))
    }

    fn unwatch(&mut self, fd: RawFd) {
        if let Ok(key) = self.sel.get_key(fd) {
            if matches!(key.fileobj, Source::Broker(..)) {
                let _ = self.sel.unregister(fd);
            }
        }
    }
}

/// A listening server's selector and bookkeeping.
pub struct Server<C: Client> {
    sel: AnySelector<Source<C>, ()>,
    /// Declared after `sel`, so that its listener is closed after the
    /// selector that watches it.
    acceptor: Acceptor,
    /// Clients connected now.
    clients: usize,
    stats: Stats,
    /// Handed to every client accepted (see [`Client::Context`]).
    context: C::Context,
    stop_reason: Option<String>,
    /// The idle tick this loop last saw (see [`limits`]).
    tick: u16,
    /// When clients were last checked for whom to cut off for memory.
    shed_at: Option<Instant>,
    /// Whether the memory budget was exceeded at the end of the last
    /// round (see [`Server::end_round`]).
    over_budget: bool,
}

impl<C: Client> Server<C> {
    /// One event loop: a selector of `kind` watching `listener`, `waker`
    /// and, if given, `signals`, which then stop it.
    pub fn on_listener(
        listener: TcpListener,
        kind: BackendKind,
        waker: Waker,
        signals: Option<Signals>,
    ) -> io::Result<Server<C>> {
        let acceptor = Acceptor::new(listener)?;
        let mut sel = AnySelector::with_kind(kind)?;
        sel.register(Source::Listener(acceptor.fd()), Events::READ, ())?;
        sel.register(Source::Waker(waker), Events::READ, ())?;
        if let Some(signals) = signals {
            sel.register(Source::Signals(Box::new(signals)), Events::READ, ())?;
        }
        if let Some(timer) = IdleTimer::for_timeout()? {
            sel.register(Source::IdleTimer(timer), Events::READ, ())?;
        }
        debug!("selector: {kind}");
        Ok(Server {
            sel,
            acceptor,
            clients: 0,
            stats: Stats::default(),
            context: C::Context::default(),
            stop_reason: None,
            tick: 0,
            shed_at: None,
            over_budget: false,
        })
    }

    /// Waits for events, at most until `deadline` (the caller's own timer).
    pub fn wait(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        // The busy case, no timer, accepting, memory within the budget:
        // no clock to read.
        let timeout = match (deadline, self.acceptor.retry_at()) {
            (None, None) if !self.over_budget => None,
            _ => self.timeout_until(deadline)?,
        };
        self.sel.select(timeout)?;
        Ok(())
    }

    /// How long to wait for `deadline`, the retry of a paused accept or
    /// the next memory check while the budget is exceeded, whichever comes
    /// first, after resuming accepting if it is due.
    // Out of line: off the busy path (no timer, accepting).
    #[inline(never)]
    fn timeout_until(&mut self, deadline: Option<Instant>) -> io::Result<Option<Duration>> {
        self.resume_accepting_if_due()?;
        let deadline = [deadline, self.acceptor.retry_at(), self.next_shed()]
            .into_iter()
            .flatten()
            .min();
        Ok(deadline.map(|d| d.saturating_duration_since(Instant::now())))
    }

    /// The next event of the last [`Server::wait`] that the owner handles
    /// itself. Client events go to `on_client` with the client at hand
    /// (found with one table lookup) and its [`Readiness`]; it returns what
    /// the client wants next, or `None` to have the event handed out as
    /// [`Event::Client`] (for work that needs the whole server, such as a
    /// chat line for every client). Accepts, signals and idle ticks are
    /// dealt with here.
    #[inline]
    pub fn dispatch<H>(&mut self, mut on_client: H) -> Option<Event>
    where
        H: FnMut(&mut C, Readiness, &mut Stats) -> Option<Next>,
    {
        loop {
            let (key, ready) = self.sel.next_ready_mut()?;
            let fd = key.fd;
            // Clients first, tested alone: one compare instead of a jump
            // table on the busy path.
            let next = if let Source::Client(client) = key.fileobj {
                let readiness = Readiness {
                    registered: key.events,
                    ready,
                };
                match on_client(client, readiness, &mut self.stats) {
                    Some(next) => next,
                    None => return Some(Event::Client(fd)),
                }
            } else {
                match key.fileobj {
                    Source::Client(_) => unreachable!("handled above"),
                    Source::Listener(_) => {
                        self.accept_ready();
                        continue;
                    }
                    Source::Waker(waker) => {
                        // Reset before the owner looks at its inbox, so that a
                        // post made after this point wakes the loop again.
                        let _ = waker.reset();
                        return Some(Event::Wake);
                    }
                    Source::Signals(signals) => {
                        if let Some(signal) = signals.take() {
                            self.stop_on_signal(signal);
                        }
                        continue;
                    }
                    Source::Console(_) => return Some(Event::Console(fd)),
                    Source::Broker(..) => return Some(Event::Broker(fd, ready)),
                    Source::IdleTimer(_) => {
                        self.idle_timer_ready(fd);
                        continue;
                    }
                }
            };
            self.apply(fd, next);
        }
    }

    /// Runs `handle` on the client at `fd` (if there is one), with the
    /// events it is registered for and the stats to count its I/O in, and
    /// does what it returns: the way to act on a client outside
    /// [`Server::dispatch`], with one lookup.
    #[inline]
    pub fn handle_client<H>(&mut self, fd: RawFd, handle: H)
    where
        H: FnOnce(&mut C, Events, &mut Stats) -> Next,
    {
        let Ok(key) = self.sel.get_key_mut(fd) else {
            return;
        };
        let Source::Client(client) = key.fileobj else {
            return;
        };
        let next = handle(client, key.events, &mut self.stats);
        self.apply(fd, next);
    }

    /// Does what a client's handler asked for.
    #[inline(always)]
    fn apply(&mut self, fd: RawFd, next: Next) {
        match next {
            Next::Keep => {}
            Next::Wait(events) => self.set_interest(fd, Some(events), ""),
            Next::Close(reason) => self.remove_client(fd, reason),
            Next::Failed(e) => self.close_after_error(fd, e),
        }
    }

    // Out of line: once in a server's life.
    #[cold]
    #[inline(never)]
    fn stop_on_signal(&mut self, signal: &str) {
        info!("received {signal}, stopping");
        self.request_stop(signal);
    }

    /// The client registered at `fd`.
    pub fn client(&self, fd: RawFd) -> Option<&C> {
        match self.sel.get_key(fd).ok()?.fileobj {
            Source::Client(ref client) => Some(client),
            _ => None,
        }
    }

    /// The client registered at `fd`, mutably.
    pub fn client_mut(&mut self, fd: RawFd) -> Option<&mut C> {
        match self.sel.get_key_mut(fd).ok()?.fileobj {
            Source::Client(client) => Some(client),
            _ => None,
        }
    }

    /// What clients accepted from now on are told when they are made.
    pub fn context_mut(&mut self) -> &mut C::Context {
        &mut self.context
    }

    /// The client registered at `fd` and the stats to count its I/O in.
    pub fn client_io(&mut self, fd: RawFd) -> Option<(&mut C, &mut Stats)> {
        match self.sel.get_key_mut(fd).ok()?.fileobj {
            Source::Client(client) => Some((client, &mut self.stats)),
            _ => None,
        }
    }

    /// Fills `fds` with the descriptor of every client.
    pub fn client_fds(&self, fds: &mut Vec<RawFd>) {
        fds.clear();
        let clients = self
            .sel
            .get_map()
            .into_iter()
            .filter_map(|key| match key.fileobj {
                Source::Client(_) => Some(key.fd),
                _ => None,
            });
        fds.extend(clients);
    }

    /// How many clients are connected.
    pub fn client_count(&self) -> usize {
        self.clients
    }

    /// Waits for READ (if `want_read`, and the memory budget allows it:
    /// see [`budget::may_read`]) and for WRITE while output is queued;
    /// closes the client with `done_reason` when it wants neither.
    pub fn update_interest(&mut self, fd: RawFd, want_read: bool, done_reason: &str) {
        let Some(client) = self.client(fd) else {
            return;
        };
        let conn = client.conn();
        let events = conn.interest(want_read && budget::may_read(conn.pending()));
        self.set_interest(fd, events, done_reason);
    }

    /// Waits for `events` on the client at `fd`; closes it with
    /// `done_reason` when `None`.
    fn set_interest(&mut self, fd: RawFd, events: Option<Events>, done_reason: &str) {
        match events {
            None => self.remove_client(fd, done_reason),
            Some(events) => {
                if let Err(e) = self.sel.modify_events(fd, events) {
                    self.modify_refused(fd, e);
                }
            }
        }
    }

    /// The selector refused to change `fd`'s events: the client goes.
    #[cold]
    #[inline(never)]
    fn modify_refused(&mut self, fd: RawFd, e: rselectors::Error) {
        warning!("cannot change the events of fd {fd}: {e}");
        if let rselectors::Error::Os(_) = e {
            // The OS refused: the selector has dropped the key (and with
            // it closed the socket), as CPython does.
            self.client_gone();
        } else {
            self.close_client(fd, format_args!("selector refused it: {e}"));
        }
    }

    /// Unregisters and closes the client at `fd`, logging `reason`.
    pub fn close_client(&mut self, fd: RawFd, reason: impl fmt::Display) {
        if self.client(fd).is_some() {
            self.remove_client(fd, reason);
        }
    }

    /// [`Server::close_client`] for an `fd` known to be a client's (one
    /// that a client handler was just called for): no lookup to check.
    // Forced inline: it ends every connection's life in `dispatch` (see
    // docs/performance.md).
    #[inline(always)]
    fn remove_client(&mut self, fd: RawFd, reason: impl fmt::Display) {
        // The key's drop below closes the socket, the only descriptor of
        // it (accepted with SOCK_CLOEXEC, never duplicated): the kernel
        // drops it from epoll then, so no EPOLL_CTL_DEL is needed.
        let Ok(key) = self.sel.unregister_closing(fd) else {
            return;
        };
        debug_assert!(matches!(key.fileobj, Source::Client(_)));
        if let Source::Client(client) = key.fileobj {
            if logging::enabled(Level::Info) {
                let (bytes_in, bytes_out) = client.traffic();
                let who = Who(client.peer(), fd);
                if client.peer().is_some() {
                    info!(
                        "disconnected {who} ({reason}; {bytes_in} bytes in, {bytes_out} bytes out)"
                    );
                } else {
                    info!("disconnected {who} ({reason})");
                }
            }
        }
        self.client_gone();
    }

    /// Counts a client out whose socket is closed now.
    fn client_gone(&mut self) {
        self.clients -= 1;
        self.acceptor.retry_now();
    }

    /// Closes the client at `fd` after an I/O error on it. A peer that
    /// resets or vanishes is routine (debug); anything else is a warning.
    #[cold]
    #[inline(never)]
    pub fn close_after_error(&mut self, fd: RawFd, error: io::Error) {
        if let Some(client) = self.client(fd) {
            let peer = Who(client.peer(), fd);
            if is_disconnect(&error) {
                debug!("{peer}: {error}");
            } else {
                warning!("{peer}: {error}");
            }
        }
        self.close_client(fd, error);
    }

    /// Watches stdin as the console; the error if the selector refuses it.
    pub fn register_console(&mut self, stdin: Stdin) -> rselectors::Result<RawFd> {
        let key = self
            .sel
            .register(Source::Console(stdin), Events::READ, ())?;
        Ok(key.fd)
    }

    /// The console registered at `fd`.
    pub fn console_mut(&mut self, fd: RawFd) -> Option<&mut Stdin> {
        match self.sel.get_key_mut(fd).ok()?.fileobj {
            Source::Console(stdin) => Some(stdin),
            _ => None,
        }
    }

    /// Stops watching the console (after its end of input).
    pub fn remove_console(&mut self, fd: RawFd) {
        if self.console_mut(fd).is_some() {
            let _ = self.sel.unregister(fd);
        }
    }

    /// One line per registered file object, by descriptor: what the seed's
    /// console prints from `get_map()`.
    pub fn describe(&self) -> Vec<String> {
        let backend = self.sel.backend_name().unwrap_or("closed");
        let mut entries: Vec<(RawFd, String)> = self
            .sel
            .get_map()
            .into_iter()
            .map(|key| {
                let what = match &key.fileobj {
                    Source::Listener(_) => format!("listener {}", self.acceptor.local_addr()),
                    Source::Waker(_) => "waker (other event loops)".to_owned(),
                    Source::Signals(signals) => signals.describe().to_owned(),
                    Source::Console(_) => "console (stdin)".to_owned(),
                    Source::IdleTimer(_) => "idle timer (--idle-timeout)".to_owned(),
                    Source::Broker(_, role) => format!("broker link: {role}"),
                    Source::Client(client) => {
                        let conn = client.conn();
                        let who = Who(client.peer(), key.fd);
                        format!("client   {who} ({} bytes queued)", conn.pending())
                    }
                };
                (key.fd, what)
            })
            .collect();
        let mut lines = vec![format!(
            "{} registered in the {backend} selector:",
            entries.len()
        )];
        if self.acceptor.retry_at().is_some() {
            let what = format!(
                "listener {} (paused: out of file descriptors)",
                self.acceptor.local_addr()
            );
            entries.push((self.acceptor.fd(), what));
        }
        if let Ok(Some(fd)) = self.sel.fileno() {
            entries.push((
                fd,
                format!("the {backend} selector itself (not registered)"),
            ));
        }
        entries.sort();
        for (fd, what) in entries {
            lines.push(format!("  fd {fd:<4} {what}"));
        }
        lines
    }

    /// Asks the event loop to stop after the current events.
    pub fn request_stop(&mut self, reason: &str) {
        self.stop_reason.get_or_insert_with(|| reason.to_owned());
    }

    /// True once a stop was requested.
    pub fn is_stopping(&self) -> bool {
        self.stop_reason.is_some()
    }

    /// Why the server is stopping, once it is.
    pub fn stop_reason(&self) -> Option<&str> {
        self.stop_reason.as_deref()
    }

    /// Closes every client (after one last non-blocking flush) and the
    /// selector; what the server did.
    pub fn close_all(mut self) -> Stats {
        let mut fds = Vec::new();
        self.client_fds(&mut fds);
        for fd in fds {
            if let Some(client) = self.client_mut(fd) {
                let written = client.conn_mut().flush().unwrap_or(0);
                self.stats.bytes_out += written as u64;
            }
            self.close_client(fd, "server stopping");
        }
        self.sel.close();
        self.stats
    }
}
