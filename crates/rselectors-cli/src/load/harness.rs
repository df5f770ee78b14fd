//! What every workload of `load` shares: its connections, registered in
//! one level-triggered selector under their slot numbers; connecting them
//! all before a run or one at a time during it; connecting a slot again
//! when the workload asks; and the run's counts and clock.
//!
//! A [`Workload`] says what its connections do with each event, as a
//! [`Next`]; [`Load`] does it.

use super::report::{Progress, Tally};
use super::Settings;
use crate::conn::{set_nodelay, tcp_socket, Next, CONNECT_TIMEOUT};
use rselectors::{AnySelector, Events};
use rustix::io::Errno;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// What one workload's connections do; [`Load`] connects them, waits for
/// their events, and acts on the [`Next`] they answer.
pub(super) trait Workload: Sized {
    /// How error messages name slot `slot`'s connection.
    fn name(&self, slot: usize) -> String;

    /// Which server slot `slot` connects to: an index into `--addr`.
    fn server(&self, _slot: usize) -> usize {
        0
    }

    /// Slot `slot` starts connecting (again) at `now`.
    fn connecting(&mut self, _slot: usize, _now: Instant) {}

    /// Slot `slot`'s connect succeeded.
    fn connected(&mut self, slot: usize, stream: &TcpStream, tally: &mut Tally) -> Next;

    /// Readiness `mask` on slot `slot`'s connected `stream`.
    fn ready(&mut self, slot: usize, stream: &TcpStream, mask: Events, tally: &mut Tally) -> Next;

    /// Slot `slot`'s connection was closed (`failed`, or because the
    /// workload was done with it) at `now`: when to connect the slot again,
    /// if at all. Zero, for a connection that did not fail, means at once.
    fn closed(&mut self, slot: usize, failed: bool, now: Instant) -> Option<Duration>;

    /// Called before each wait of the measured run; false ends the run.
    fn before_wait(_load: &mut Load<Self>, _now: Instant) -> bool {
        true
    }

    /// When the workload has something to do even if no event comes.
    fn wake_at(&self) -> Option<Instant> {
        None
    }
}

/// Where a slot's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Closed,
    /// Registered for WRITE at this descriptor: writable means the
    /// connect ended, one way or the other.
    Connecting(RawFd),
    Connected(RawFd),
}

impl Slot {
    fn fd(self) -> Option<RawFd> {
        match self {
            Slot::Closed => None,
            Slot::Connecting(fd) | Slot::Connected(fd) => Some(fd),
        }
    }
}

/// A run's connections, the selector they are registered in, its counts
/// and its workload.
#[derive(Debug)]
pub(super) struct Load<W> {
    sel: AnySelector<TcpStream, usize>,
    /// The servers, as `--addr` gave them.
    addrs: Vec<SocketAddr>,
    slots: Vec<Slot>,
    /// Open connections.
    live: usize,
    /// Slots to connect again, and when.
    reconnect_at: Vec<(usize, Instant)>,
    /// Connect each time from another loopback address (see
    /// [`churn_source`]).
    vary_source: bool,
    /// Connects started so far (which source address the next one uses).
    connects: usize,
    pub tally: Tally,
    pub work: W,
}

impl<W: Workload> Load<W> {
    /// `slots` connection slots, none connected yet, for `work`.
    pub fn new(settings: &Settings, slots: usize, work: W) -> io::Result<Load<W>> {
        Ok(Load {
            sel: AnySelector::with_kind(settings.kind)?,
            addrs: settings.addrs.clone(),
            slots: vec![Slot::Closed; slots],
            live: 0,
            reconnect_at: Vec::new(),
            vary_source: false,
            connects: 0,
            tally: Tally::new()?,
            work,
        })
    }

    /// Connects each time from another loopback address (churn).
    pub fn vary_source(&mut self) {
        self.vary_source = true;
    }

    /// True while slot `slot` has a connection (connecting or connected).
    pub fn is_open(&self, slot: usize) -> bool {
        self.slots[slot] != Slot::Closed
    }

    /// Slot `slot`'s socket, if it has one.
    pub fn stream(&self, slot: usize) -> Option<&TcpStream> {
        let fd = self.slots[slot].fd()?;
        self.sel.get_key(fd).ok().map(|key| &key.fileobj)
    }

    /// Starts connecting slot `slot`.
    pub fn open(&mut self, slot: usize) {
        let now = Instant::now();
        self.work.connecting(slot, now);
        let addr = self.addrs[self.work.server(slot)];
        let source = if self.vary_source {
            self.connects += 1;
            churn_source(addr, self.connects - 1)
        } else {
            None
        };
        let registered = start_connect(addr, source)
            .map_err(|e| e.to_string())
            .and_then(|s| match self.sel.register(s, Events::WRITE, slot) {
                Ok(key) => Ok(key.fd),
                Err(refused) => Err(refused.error.to_string()),
            });
        match registered {
            Ok(fd) => {
                self.slots[slot] = Slot::Connecting(fd);
                self.live += 1;
            }
            Err(e) => {
                self.tally
                    .error(format_args!("cannot connect to {addr}: {e}"));
                self.after_close(slot, true, now);
            }
        }
    }

    /// Closes slot `slot`'s connection, if open; true if it was.
    fn close(&mut self, slot: usize) -> bool {
        let Some(fd) = self.slots[slot].fd() else {
            return false;
        };
        // Dropping the key closes the socket.
        let _ = self.sel.unregister(fd);
        self.slots[slot] = Slot::Closed;
        self.live -= 1;
        true
    }

    /// Counts an error on slot `slot` and closes its connection.
    pub fn fail(&mut self, slot: usize, why: impl fmt::Display) {
        let name = self.work.name(slot);
        self.tally.error(format_args!("{name}: {why}"));
        if self.close(slot) {
            self.after_close(slot, true, Instant::now());
        }
    }

    /// Asks the workload whether and when to connect slot `slot` again.
    fn after_close(&mut self, slot: usize, failed: bool, now: Instant) {
        match self.work.closed(slot, failed, now) {
            Some(wait) if wait.is_zero() && !failed => self.open(slot),
            Some(wait) => self.reconnect_at.push((slot, now + wait)),
            None => {}
        }
    }

    /// Connects again the slots whose time has come.
    fn reconnect_due(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.reconnect_at.len() {
            if self.reconnect_at[i].1 <= now {
                let (slot, _) = self.reconnect_at.swap_remove(i);
                self.open(slot);
            } else {
                i += 1;
            }
        }
    }

    /// Does what slot `slot`'s handler answered.
    fn follow(&mut self, slot: usize, next: Next) {
        match next {
            Next::Keep => {}
            Next::Wait(events) => {
                let Some(fd) = self.slots[slot].fd() else {
                    return;
                };
                if let Err(e) = self.sel.modify_events(fd, events) {
                    self.fail(slot, format_args!("selector: {e}"));
                }
            }
            Next::Close(_) => {
                if self.close(slot) {
                    self.after_close(slot, false, Instant::now());
                }
            }
            Next::Failed(e) => self.fail(slot, e),
        }
    }

    /// Runs `act` on slot `slot`'s connection, if it is connected, and
    /// does what it answers.
    pub fn act(&mut self, slot: usize, act: impl FnOnce(&mut W, &TcpStream, &mut Tally) -> Next) {
        let Slot::Connected(fd) = self.slots[slot] else {
            return;
        };
        let Ok(key) = self.sel.get_key(fd) else {
            return;
        };
        let next = act(&mut self.work, &key.fileobj, &mut self.tally);
        self.follow(slot, next);
    }

    /// Handles readiness `mask` on `fd`.
    fn event(&mut self, fd: RawFd, mask: Events) {
        let Ok(key) = self.sel.get_key(fd) else {
            return;
        };
        let slot = key.data;
        let next = match self.slots[slot] {
            Slot::Connected(_) => self.work.ready(slot, &key.fileobj, mask, &mut self.tally),
            Slot::Connecting(_) => match connect_result(&key.fileobj) {
                Ok(()) => {
                    self.slots[slot] = Slot::Connected(fd);
                    self.work.connected(slot, &key.fileobj, &mut self.tally)
                }
                Err(e) => failed("cannot connect", e),
            },
            Slot::Closed => return,
        };
        self.follow(slot, next);
    }

    /// Waits at most `wait` for events and handles them.
    pub fn poll_events(&mut self, wait: Duration) -> io::Result<()> {
        self.sel.select(Some(wait))?;
        while let Some((fd, mask)) = self.sel.next_ready() {
            self.event(fd, mask);
        }
        Ok(())
    }

    /// Connects every slot and waits until each is connected, or failed,
    /// or [`CONNECT_TIMEOUT`] has passed (then it counts as an error).
    pub fn connect_all(&mut self) -> io::Result<()> {
        for slot in 0..self.slots.len() {
            self.open(slot);
        }
        let give_up = Instant::now() + CONNECT_TIMEOUT;
        loop {
            let connecting = self.slots.iter().any(|s| matches!(s, Slot::Connecting(_)));
            let now = Instant::now();
            if !connecting || now >= give_up {
                break;
            }
            self.poll_events(give_up - now)?;
        }
        let secs = CONNECT_TIMEOUT.as_secs();
        for slot in 0..self.slots.len() {
            if matches!(self.slots[slot], Slot::Connecting(_)) {
                self.fail(slot, format_args!("no connect in {secs} s"));
            }
        }
        Ok(())
    }

    /// The measured run: calls `begin` with its deadline, then handles
    /// events until the deadline, until every connection failed for good,
    /// or until the workload ends it; how long it ran.
    pub fn run_for(
        &mut self,
        duration: Duration,
        begin: impl FnOnce(&mut Self, Instant),
    ) -> io::Result<Duration> {
        let start = Instant::now();
        let deadline = start
            .checked_add(duration)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "--duration is too long"))?;
        begin(self, deadline);
        let mut progress = Progress::new(start);
        loop {
            let now = Instant::now();
            progress.tick(now, &self.tally);
            if now >= deadline {
                break;
            }
            self.reconnect_due(now);
            let next_reconnect = self.reconnect_at.iter().map(|&(_, at)| at).min();
            if self.live == 0 && next_reconnect.is_none() {
                break; // every connection failed
            }
            if !W::before_wait(self, now) {
                break;
            }
            let until = progress.due().map_or(deadline, |due| due.min(deadline));
            let until = next_reconnect.map_or(until, |at| at.min(until));
            let until = self.work.wake_at().map_or(until, |at| at.min(until));
            self.poll_events(until.saturating_duration_since(now))?;
        }
        progress.finish();
        Ok(start.elapsed().min(duration))
    }
}

/// A handler's answer to an I/O error: `what` failed.
pub(super) fn failed(what: &str, e: io::Error) -> Next {
    Next::Failed(io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// How many loopback source addresses churn connects from, in turn (see
/// [`churn_source`]).
const CHURN_SOURCES: usize = 250;

/// The address churn's `n`th connection to `server` binds to before it
/// connects, if any: 127.0.0.1 to 127.0.0.250 in turn when the server is
/// on IPv4 loopback (the whole 127.0.0.0/8 is local).
///
/// Why: the side that closes first, here the load generator, keeps each
/// closed connection in TIME_WAIT for a minute, holding its source address
/// and port. From one source address, `connect` then finds a port only by
/// scanning past them (on loopback Linux lets it reuse one after a second,
/// `tcp_tw_reuse`), and the scan grows until connections per second match
/// the ports it may take, the load generator's core spent in `connect`.
/// Bound to an address first, a connection takes its port in `bind`, where
/// only TIME_WAIT on the same address and port is in the way: 250
/// addresses of ~28,000 ports each, held a minute, leave room for over
/// 100,000 connections per second.
fn churn_source(server: SocketAddr, n: usize) -> Option<SocketAddr> {
    match server {
        SocketAddr::V4(v4) if v4.ip().is_loopback() => {
            let last = 1 + (n % CHURN_SOURCES) as u8;
            Some(SocketAddr::from(([127, 0, 0, last], 0)))
        }
        _ => None,
    }
}

/// A non-blocking TCP socket connecting to `addr` (from `source`, if
/// given; port 0 there lets the kernel pick): register it for WRITE, then
/// ask [`connect_result`] once it is writable.
fn start_connect(addr: SocketAddr, source: Option<SocketAddr>) -> io::Result<TcpStream> {
    let socket = tcp_socket(addr)?;
    // Messages are small and must not wait to be coalesced.
    set_nodelay(&socket)?;
    if let Some(source) = source {
        rustix::net::bind(&socket, &source)?;
    }
    match rustix::net::connect(&socket, &addr) {
        Ok(()) | Err(Errno::INPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(socket.into())
}

/// Whether a connect started by [`start_connect`], now reported
/// writable, succeeded.
fn connect_result(stream: &TcpStream) -> io::Result<()> {
    match stream.take_error()? {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::{churn_source, start_connect, CHURN_SOURCES};
    use crate::test_support::accept_within_seconds;
    use std::net::{SocketAddr, TcpListener};

    #[test]
    fn churn_on_ipv4_loopback_connects_from_many_addresses_in_turn() {
        let server: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        let sources: Vec<_> = (0..CHURN_SOURCES + 1)
            .map(|n| churn_source(server, n).unwrap())
            .collect();
        assert_eq!(sources[0], "127.0.0.1:0".parse().unwrap());
        assert_eq!(sources[249], "127.0.0.250:0".parse().unwrap());
        assert_eq!(sources[250], sources[0]);
        for elsewhere in ["[::1]:9999", "192.0.2.1:9999"] {
            assert_eq!(churn_source(elsewhere.parse().unwrap(), 0), None);
        }
    }

    /// The server sees the connection come from the chosen address.
    #[test]
    fn a_connection_bound_to_a_source_comes_from_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let source = churn_source(server, 6).unwrap();
        // The connect completes in the background.
        let _client = start_connect(server, Some(source)).unwrap();
        let (_accepted, peer) = accept_within_seconds(&listener);
        assert_eq!(peer.ip(), source.ip());
    }
}
