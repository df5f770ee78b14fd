//! One connection to Redis on the event loop's selector: connecting
//! without blocking, commands out, replies in, and when to give up on it.
//! What the commands are and what their replies mean is the link's
//! business ([`super`]); `R` is what it remembers of each command sent.

use super::resp::{self, Parser, ProtocolError, Reply};
use super::{BrokerUrl, Role, Watch};
use crate::conn::{self, Conn, Received};
use rselectors::Events;
use rustix::io::Errno;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The first pause before reconnecting, and the longest.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// One read takes at most this much.
const READ_CHUNK: usize = 64 * 1024;

/// Where a connection is.
#[derive(Debug)]
enum State {
    /// Not connected; the next attempt is due then.
    Down {
        retry_at: Instant,
    },
    /// A non-blocking connect in progress, since then.
    Connecting {
        conn: Conn,
        since: Instant,
    },
    Up {
        conn: Conn,
    },
}

/// A connection to the broker.
#[derive(Debug)]
pub struct Redis<R> {
    /// Which connection of the link it is, for `list`.
    role: Role,
    state: State,
    /// The commands sent and not answered yet, oldest first.
    pub requests: VecDeque<R>,
    /// Received bytes: `input[start..end]` is not parsed yet; past `end`,
    /// room for the next read (zeroed once, when the buffer grows).
    input: Vec<u8>,
    start: usize,
    end: usize,
    parser: Parser,
    max_reply: usize,
    /// Since when the oldest unanswered command has waited (or the
    /// connection made progress last).
    waiting_since: Option<Instant>,
    /// When a command was last sent (for heartbeats).
    last_sent: Instant,
    /// The pause before the next attempt after this one fails.
    backoff: Duration,
    /// Which of the host's addresses to try next.
    attempt: usize,
    /// The events it is registered for, if it is.
    registered: Option<Events>,
}

/// Why a connection was given up.
#[derive(Debug)]
pub enum Failure {
    Io(io::Error),
    Protocol(ProtocolError),
    /// The broker answered with an error, or something unexpected.
    Refused(String),
    Closed,
    /// Nothing came for that long while a reply was due.
    Silent(Duration),
    ConnectTimeout,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Io(e) => write!(f, "{e}"),
            Failure::Protocol(e) => write!(f, "{e}"),
            Failure::Refused(e) => write!(f, "{e}"),
            Failure::Closed => f.write_str("the broker closed the connection"),
            Failure::Silent(d) => write!(f, "no reply for {:.1} s", d.as_secs_f64()),
            Failure::ConnectTimeout => {
                write!(f, "connecting took over {} s", CONNECT_TIMEOUT.as_secs())
            }
        }
    }
}

impl Failure {
    /// A reply nothing was asked for.
    pub fn unexpected(reply: &Reply) -> Failure {
        let mut text = format!("{reply:?}");
        text.truncate(200);
        Failure::Refused(format!("an unexpected reply: {text}"))
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Io(e)
    }
}

impl<R> Redis<R> {
    /// A connection to be made at once; replies' bulk strings over
    /// `max_reply` bytes are skipped.
    pub fn new(role: Role, max_reply: usize) -> Redis<R> {
        let now = Instant::now();
        Redis {
            role,
            state: State::Down { retry_at: now },
            requests: VecDeque::new(),
            input: Vec::new(),
            start: 0,
            end: 0,
            parser: Parser::new(max_reply),
            max_reply,
            waiting_since: None,
            last_sent: now,
            backoff: BACKOFF_FIRST,
            attempt: 0,
            registered: None,
        }
    }

    pub fn fd(&self) -> Option<RawFd> {
        match &self.state {
            State::Down { .. } => None,
            State::Connecting { conn, .. } | State::Up { conn } => Some(conn.as_raw_fd()),
        }
    }

    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up { .. })
    }

    /// Starts connecting to `host:port` if an attempt is due: `Ok(true)`
    /// once connected (a connection on loopback may be made at once).
    ///
    /// A host name is resolved here, on the event loop (blocking: name it
    /// by address to avoid that).
    pub fn connect_if_due(
        &mut self,
        url: &BrokerUrl,
        now: Instant,
        w: &mut impl Watch,
    ) -> Result<bool, Failure> {
        match self.state {
            State::Down { retry_at } if retry_at <= now => {}
            _ => return Ok(false),
        }
        let (host, port) = (url.host.as_str(), url.port);
        let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(Failure::Refused(format!("{host}: no address")));
        }
        let addr = addrs[self.attempt % addrs.len()];
        self.attempt = self.attempt.wrapping_add(1);
        let socket = conn::tcp_socket(addr)?;
        let connected = match rustix::net::connect(&socket, &addr) {
            Ok(()) => true,
            Err(Errno::INPROGRESS) => false,
            Err(e) => return Err(Failure::Io(e.into())),
        };
        let conn = Conn::new(TcpStream::from(socket))?;
        (self.start, self.end) = (0, 0);
        self.parser = Parser::new(self.max_reply);
        self.requests.clear();
        self.waiting_since = None;
        self.state = match connected {
            true => State::Up { conn },
            false => State::Connecting { conn, since: now },
        };
        self.rewatch(w)?;
        Ok(connected)
    }

    /// Handles `ready` events: finishes connecting (`Ok(true)` when it
    /// just did), writes what is queued, reads what came.
    pub fn ready(&mut self, ready: Events, now: Instant) -> Result<bool, Failure> {
        match &mut self.state {
            State::Down { .. } => Ok(false),
            State::Connecting { conn, .. } => {
                let socket = rustix::fd::AsFd::as_fd(conn);
                let status = rustix::net::sockopt::socket_error(socket).map_err(io::Error::from)?;
                status.map_err(io::Error::from)?;
                let State::Connecting { conn, .. } =
                    std::mem::replace(&mut self.state, State::Down { retry_at: now })
                else {
                    unreachable!("matched above")
                };
                self.state = State::Up { conn };
                Ok(true)
            }
            State::Up { conn } => {
                if ready.contains(Events::WRITE) && conn.pending() > 0 && conn.flush()? > 0 {
                    self.waiting_since = self.waiting_since.map(|_| now);
                }
                if ready.contains(Events::READ) {
                    if self.input.len() - self.end < READ_CHUNK {
                        // Unparsed bytes to the front, then room to read.
                        self.input.copy_within(self.start..self.end, 0);
                        (self.start, self.end) = (0, self.end - self.start);
                        let room = self.end + READ_CHUNK;
                        if self.input.len() < room {
                            self.input.resize(room, 0);
                        }
                    }
                    let room = &mut self.input[self.end..self.end + READ_CHUNK];
                    match conn.receive(room)? {
                        Received::Eof => return Err(Failure::Closed),
                        Received::Data(n) => {
                            self.end += n;
                            if self.waiting_since.is_some() {
                                self.waiting_since = Some(now);
                            }
                        }
                        Received::WouldBlock => {}
                    }
                }
                Ok(false)
            }
        }
    }

    /// The next whole reply received, if any.
    pub fn reply(&mut self) -> Result<Option<Reply>, Failure> {
        let (used, reply) = self
            .parser
            .parse(&self.input[self.start..self.end])
            .map_err(Failure::Protocol)?;
        self.start += used;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        Ok(reply)
    }

    /// Queues `AUTH` and `SELECT` as `url` asks.
    pub fn handshake(&mut self, url: &BrokerUrl, auth: R, select: R, now: Instant) {
        if let Some(password) = &url.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &url.user {
                args.push(user.as_bytes());
            }
            args.push(password.as_bytes());
            self.queue(&resp::command_bytes(&args), auth, now);
        }
        if url.db != 0 {
            let db = url.db.to_string();
            self.queue(
                &resp::command_bytes(&[b"SELECT", db.as_bytes()]),
                select,
                now,
            );
        }
    }

    /// Queues `command` (for [`Redis::flush`]), remembering `request`.
    pub fn queue(&mut self, command: &[u8], request: R, now: Instant) {
        if let State::Up { conn } = &mut self.state {
            conn.queue(command);
            self.requests.push_back(request);
            self.waiting_since.get_or_insert(now);
            self.last_sent = now;
        }
    }

    /// The oldest command's reply is in: forgets it.
    pub fn answered(&mut self, now: Instant) -> Option<R> {
        let request = self.requests.pop_front();
        self.waiting_since = (!self.requests.is_empty()).then_some(now);
        request
    }

    /// Writes what is queued, as far as the socket takes it.
    pub fn flush(&mut self, w: &mut impl Watch) -> Result<(), Failure> {
        if let State::Up { conn } = &mut self.state {
            if conn.pending() > 0 {
                conn.flush()?;
            }
        }
        self.rewatch(w)?;
        Ok(())
    }

    /// Registers it for what it waits for now.
    fn rewatch(&mut self, w: &mut impl Watch) -> io::Result<()> {
        let (fd, events) = match &self.state {
            State::Down { .. } => return Ok(()),
            State::Connecting { conn, .. } => (conn.as_raw_fd(), Events::WRITE),
            State::Up { conn } => (
                conn.as_raw_fd(),
                conn.interest(true).unwrap_or(Events::READ),
            ),
        };
        if self.registered != Some(events) {
            w.watch(fd, self.role, events, self.registered.is_some())?;
            self.registered = Some(events);
        }
        Ok(())
    }

    /// Closes it; the next attempt comes after the backoff (doubling up
    /// to [`BACKOFF_MAX`]), shortened by up to half at random (`jitter`,
    /// in 0..1) so that servers cut off together do not all come back at
    /// the same instant.
    pub fn close(&mut self, w: &mut impl Watch, now: Instant, jitter: f64) {
        self.unwatch(w);
        // Given up: what the kernel still holds for it is dropped (a reset,
        // not a FIN after it), so that a line counted as not forwarded does
        // not reach the broker after all once the network is back.
        if let State::Connecting { conn, .. } | State::Up { conn } = &self.state {
            let _ = rustix::net::sockopt::set_socket_linger(conn, Some(Duration::ZERO));
        }
        let pause = self.backoff.mul_f64(1.0 - jitter.clamp(0.0, 1.0) / 2.0);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.state = State::Down {
            retry_at: now + pause,
        };
        self.requests.clear();
        self.waiting_since = None;
    }

    /// Stops watching its socket (also before it is dropped, when the
    /// server stops).
    pub fn unwatch(&mut self, w: &mut impl Watch) {
        if let (Some(fd), Some(_)) = (self.fd(), self.registered.take()) {
            w.unwatch(fd);
        }
    }

    /// Connected and answered: the next failure starts the backoff over.
    pub fn settled(&mut self) {
        self.backoff = BACKOFF_FIRST;
    }

    /// Why it should be given up now, if it should: a connection attempt
    /// or a reply overdue (`patience`: how long a reply may take).
    pub fn overdue(&self, now: Instant, patience: Duration) -> Option<Failure> {
        match &self.state {
            State::Connecting { since, .. } if now >= *since + CONNECT_TIMEOUT => {
                Some(Failure::ConnectTimeout)
            }
            State::Up { .. } => match self.waiting_since {
                Some(since) if now >= since + patience => Some(Failure::Silent(now - since)),
                _ => None,
            },
            _ => None,
        }
    }

    /// True if it is up, waits for no reply, and sent nothing for `idle`.
    pub fn idle_for(&self, now: Instant, idle: Duration) -> bool {
        self.is_up() && self.requests.is_empty() && now >= self.last_sent + idle
    }

    /// When it next needs attention: a retry, a connect or reply
    /// deadline, or (up and idle) a heartbeat after `idle`.
    pub fn deadline(&self, patience: Duration, idle: Duration) -> Instant {
        match &self.state {
            State::Down { retry_at } => *retry_at,
            State::Connecting { since, .. } => *since + CONNECT_TIMEOUT,
            State::Up { .. } => match self.waiting_since {
                Some(since) => since + patience,
                None => self.last_sent + idle,
            },
        }
    }
}
