//! What the echo and chat servers share: the listener and accepting (in
//! [`accept`], with a back-off when file descriptors run out), signals,
//! the console's registration, closing clients, and the closing summary.
//!
//! Everything one event loop watches is one [`Source`] registered in one
//! selector; the selector owns the client sockets, so unregistering a
//! client and dropping the key is what closes it (the [`Server`] owns the
//! listener, which the selector watches by number). With `--threads N`
//! there are N such loops (see [`crate::loops`]), each a [`Server`] of its
//! own.

mod accept;
pub mod limits;
use limits::IdleTimer;

use crate::budget;
use crate::conn::{is_disconnect, set_nodelay, Conn, Next};
use crate::logging::{self, debug, info, say, warning, Level};
use crate::signals::Signals;
use crate::stdin::Stdin;
use accept::AcceptPace;
pub use accept::{bind_listener, listen_on, on_first_address};
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
    /// State for a connection just accepted from `peer` (given whenever
    /// [`Client::KEEPS_PEER`]).
    fn new(conn: Conn, peer: Option<SocketAddr>) -> Self;
    /// The connection.
    fn conn(&self) -> &Conn;
    /// The connection, mutably.
    fn conn_mut(&mut self) -> &mut Conn;
    /// The peer's address, for clients that keep it (the echo server does
    /// not: 32 bytes per connection it has no use for).
    fn peer(&self) -> Option<SocketAddr> {
        None
    }
    /// Bytes in and out that the client counted itself, added to the
    /// server's [`Stats`] when it closes; clients that count straight into
    /// the stats (see [`Server::dispatch`]) keep none.
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
            Source::Client(client) => client.conn().as_raw_fd(),
        }
    }
}

/// An event the server hands to its owner; accepts and signals are dealt
/// with inside [`Server::next_event`].
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// The console (stdin) is readable.
    Console(RawFd),
    /// A client is ready for these events.
    Client(RawFd, Events),
    /// The loop's waker went off: another loop may have posted to this
    /// one's inbox or asked it to stop.
    Wake,
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
pub fn print_summary(reason: &str, stats: Stats) {
    say!(
        "stopped ({reason}): {} connections served, {} bytes in, {} bytes out",
        stats.served,
        stats.bytes_in,
        stats.bytes_out
    );
}

/// A listening server's selector and bookkeeping.
pub struct Server<C> {
    sel: AnySelector<Source<C>, ()>,
    /// Declared after `sel`, so it is closed after the selector that
    /// watches it.
    listener: TcpListener,
    local_addr: SocketAddr,
    /// Clients connected now.
    clients: usize,
    /// While accepting is paused, when to try again. The listener is
    /// out of the selector then, so that a full accept queue does not make
    /// every `select()` return at once.
    paused: Option<Instant>,
    /// How many connections the listener's next event accepts.
    accept_pace: AcceptPace,
    /// True from a failed accept until the next successful one: logs the
    /// trouble once, not every 100 ms.
    accept_failing: bool,
    /// When the last warning about failing accepts was logged.
    accept_warned_at: Option<Instant>,
    /// Whether this episode of failing accepts was logged as a warning
    /// (then its end is logged at info level too).
    accept_warned: bool,
    stats: Stats,
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
    /// Binds `addr`, opens a selector of `kind` that watches the signals
    /// that stop the server, and prints `listening on ADDR`.
    pub fn bind(addr: &str, kind: BackendKind) -> io::Result<Server<C>> {
        let listener = bind_listener(addr, false)?;
        let signals = Signals::install()?;
        let server = Server::on_listener(listener, kind, Waker::new()?, Some(signals))?;
        say!("listening on {}", server.local_addr);
        Ok(server)
    }

    /// One event loop: a selector of `kind` watching `listener`, `waker`
    /// and, if given, `signals`, which then stop it.
    pub fn on_listener(
        listener: TcpListener,
        kind: BackendKind,
        waker: Waker,
        signals: Option<Signals>,
    ) -> io::Result<Server<C>> {
        let local_addr = listener.local_addr()?;
        // Inherited by every connection it accepts (see `Conn::accepted`):
        // one system call per loop instead of one per connection.
        set_nodelay(&listener)?;
        let mut sel = AnySelector::with_kind(kind)?;
        sel.register(Source::Listener(listener.as_raw_fd()), Events::READ, ())?;
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
            listener,
            local_addr,
            clients: 0,
            paused: None,
            accept_pace: AcceptPace::default(),
            accept_failing: false,
            accept_warned_at: None,
            accept_warned: false,
            stats: Stats::default(),
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
        let timeout = match (deadline, &self.paused) {
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
        let deadline = [deadline, self.paused, self.next_shed()]
            .into_iter()
            .flatten()
            .min();
        Ok(deadline.map(|d| d.saturating_duration_since(Instant::now())))
    }

    /// The next event of the last [`Server::wait`] for the owner to handle.
    pub fn next_event(&mut self) -> Option<Event> {
        self.dispatch(|_, _, _, _| None)
    }

    /// Like [`Server::next_event`], but client events go to `on_client`
    /// with the client at hand (found with one table lookup), the events
    /// it is registered for and those it is ready for; it returns `None`
    /// to have the event handed out as [`Event::Client`] instead. The
    /// client handler of a busy server runs here, so that the usual case,
    /// a message read and its reply written whole, costs no other lookup.
    #[inline]
    pub fn dispatch<H>(&mut self, mut on_client: H) -> Option<Event>
    where
        H: FnMut(&mut C, Events, Events, &mut Stats) -> Option<Next>,
    {
        loop {
            let (key, ready) = self.sel.next_ready_mut()?;
            let fd = key.fd;
            // Clients first, tested alone: one compare instead of a jump
            // table on the busy path.
            let next = if let Source::Client(client) = key.fileobj {
                match on_client(client, key.events, ready, &mut self.stats) {
                    Some(next) => next,
                    None => return Some(Event::Client(fd, ready)),
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
                    Source::IdleTimer(_) => {
                        self.idle_timer_ready(fd);
                        continue;
                    }
                }
            };
            match next {
                Next::Keep => {}
                Next::Wait(events) => self.set_interest(fd, Some(events), ""),
                Next::Close(reason) => self.remove_client(fd, reason),
                Next::Failed(e) => self.close_after_error(fd, e),
            }
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
    // Always inlined: called once per connection from `dispatch`, where
    // the call's prologue and the key's moves through the stack fold away
    // (LLVM would not inline it on its own; `#[inline]` was not enough).
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
            let (bytes_in, bytes_out) = client.traffic();
            self.stats.bytes_in += bytes_in;
            self.stats.bytes_out += bytes_out;
            if logging::enabled(Level::Info) {
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
        // A descriptor is free again: accept now rather than at the timer.
        if let Some(retry_at) = &mut self.paused {
            *retry_at = Instant::now();
        }
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
                    Source::Listener(_) => format!("listener {}", self.local_addr),
                    Source::Waker(_) => "waker (other event loops)".to_owned(),
                    Source::Signals(signals) => signals.describe().to_owned(),
                    Source::Console(_) => "console (stdin)".to_owned(),
                    Source::IdleTimer(_) => "idle timer (--idle-timeout)".to_owned(),
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
        if self.paused.is_some() {
            let what = format!(
                "listener {} (paused: out of file descriptors)",
                self.local_addr
            );
            entries.push((self.listener.as_raw_fd(), what));
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

    /// Closes every client, closes the selector, and prints the one-line
    /// summary.
    pub fn finish(self) {
        let reason = self.stop_reason.clone();
        let stats = self.close_all();
        print_summary(reason.as_deref().unwrap_or("done"), stats);
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
