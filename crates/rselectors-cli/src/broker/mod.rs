//! The broker link: chat servers that share a room through Redis
//! (`chat-server --broker URL --room NAME`).
//!
//! The boundary: the chat server hands the link the messages its clients
//! sent (its other loops' with [`Broker::publish`] as they arrive, its
//! own at [`Broker::end_round`]) and takes the other servers' messages
//! from it ([`Broker::take_received`]) to deliver to its clients. Everything in
//! between lives here: two connections to Redis on the same selector as
//! the clients ([`publisher`], and [`subscriber`], which subscribes or
//! reads the stream: a subscribed or blocked connection can do nothing
//! else), the envelope ([`envelope`]), RESP ([`resp`]) and one
//! connection's life ([`redis`]); this file keeps the link's state as a
//! whole: outages, their warnings, and the counts.
//!
//! The event loop never waits for Redis: connects are non-blocking (only
//! a broker given by host name is resolved in place), and what goes to the
//! broker waits in a bounded queue. While the broker is slow or gone, the
//! link warns once per outage, counts what it could not forward, and
//! reconnects with capped exponential backoff and jitter; local clients
//! notice nothing.
//!
//! Names in Redis, for room `R`: the channel `rselectors:chat:R`
//! (`pubsub`), the stream `rselectors:chat:R` (`streams`, trimmed to
//! about [`STREAM_MAXLEN`] envelopes). Redis channels are not per
//! database, so on database `N` other than 0 the channel is
//! `rselectors:chat:R@N` (no room name has a `@`).

mod envelope;
mod publisher;
mod redis;
mod resp;
mod subscriber;
mod url;

pub use self::url::{BrokerUrl, PASSWORD_VAR};
use crate::logging::{debug, info, warning};
use envelope::Origin;
use publisher::{Enqueued, Publisher};
use redis::{Failure, Redis};
use rselectors::Events;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subscriber::Subscriber;

/// How the servers of a room exchange lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// PUBLISH / SUBSCRIBE: at most once; what is sent while a server's
    /// link is down is not forwarded (counted as dropped).
    Pubsub,
    /// A Redis stream (XADD / XREAD): what is sent while the broker is
    /// unreachable waits in the bounded queue and goes out when it is
    /// back; a server that was cut off reads on from the last entry it saw.
    Streams,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Pubsub => "pubsub",
            Mode::Streams => "streams",
        })
    }
}

/// `--broker`, `--room`, `--broker-mode`, `--broker-queue`.
#[derive(Debug, Clone)]
pub struct Config {
    pub url: BrokerUrl,
    pub room: String,
    pub mode: Mode,
    /// The most bytes of envelopes waiting for the broker.
    pub queue_limit: usize,
}

/// Checks a `--room` name: what goes into Redis names stays readable.
pub fn parse_room(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    match ok {
        true => Ok(name.to_owned()),
        false => Err("expected 1 to 64 letters, digits, '-', '_', '.' or ':'".to_owned()),
    }
}

/// Which of the link's two connections a socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Subscriber,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
        })
    }
}

/// How a chat server's selector watches the link's sockets (the server
/// implements it; the link owns the sockets).
pub trait Watch {
    /// Watches `fd`, the link's `role` connection, for `events`
    /// (`registered`: it is already, change it).
    fn watch(&mut self, fd: RawFd, role: Role, events: Events, registered: bool) -> io::Result<()>;
    /// Stops watching `fd`, before the link closes it.
    fn unwatch(&mut self, fd: RawFd);
}

/// One of the link's two connections ([`Publisher`], [`Subscriber`]):
/// what is the same about both.
trait Half {
    /// What it remembers of each command sent.
    type Request;

    fn redis(&mut self) -> &mut Redis<Self::Request>;

    /// Queues the handshake of a connection just made.
    fn connected(
        &mut self,
        url: &BrokerUrl,
        now: Instant,
        w: &mut impl Watch,
    ) -> Result<(), Failure>;

    /// Connects if an attempt is due.
    fn connect_if_due(
        &mut self,
        url: &BrokerUrl,
        now: Instant,
        w: &mut impl Watch,
    ) -> Result<(), Failure> {
        if self.redis().connect_if_due(url, now, w)? {
            self.connected(url, now, w)?;
        }
        Ok(())
    }

    /// Stops watching its socket (the server is stopping).
    fn close(&mut self, w: &mut impl Watch) {
        self.redis().unwatch(w);
    }

    /// `ready` on its socket, as far as the connection goes: finishes
    /// connecting (then starts the handshake), writes, reads.
    fn transfer(
        &mut self,
        ready: Events,
        url: &BrokerUrl,
        now: Instant,
        w: &mut impl Watch,
    ) -> Result<(), Failure> {
        if self.redis().ready(ready, now)? {
            self.connected(url, now, w)?;
        }
        Ok(())
    }
}

/// The stream is trimmed to about this many envelopes (`XADD MAXLEN ~`):
/// how far behind a server that was cut off can catch up.
pub const STREAM_MAXLEN: u32 = 10_000;

/// An idle connection sends `PING` this often, so that a dead link is
/// found without waiting for TCP.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long a reply may take before the connection is given up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);

/// Warnings about what the link skips or the broker refuses come at most
/// this often, each with a count of what it stands for.
const WARNING_EVERY: Duration = Duration::from_secs(10);

/// A warning for repeated events, given at most every [`WARNING_EVERY`].
#[derive(Debug, Default)]
struct Throttled {
    /// Events since the last warning.
    unwarned: u64,
    warned_at: Option<Instant>,
}

impl Throttled {
    /// Counts one event; `Some(events)` if a warning for them is due now.
    fn due(&mut self, now: Instant) -> Option<u64> {
        self.unwarned += 1;
        let due = self.warned_at.is_none_or(|at| now >= at + WARNING_EVERY);
        if !due {
            return None;
        }
        self.warned_at = Some(now);
        Some(std::mem::take(&mut self.unwarned))
    }
}

/// What the link did; `list` and the closing summary show it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Lines the broker took.
    pub sent: u64,
    /// Lines from other servers, delivered here.
    pub received: u64,
    /// Lines not forwarded: sent while the link was down (pubsub), or
    /// with the queue full, or refused by the broker.
    pub dropped: u64,
    /// Lines waiting for the broker.
    pub queued: u64,
    /// Payloads on the room's channel or stream that were not envelopes
    /// this server reads.
    pub skipped: u64,
    /// Times the link came back after an outage.
    pub reconnects: u64,
}

/// An outage of the link.
#[derive(Debug)]
struct Outage {
    since: Instant,
    /// Lines dropped when it began.
    dropped_before: u64,
    /// Lines that waited for the broker when the publisher was back.
    waited: Option<u64>,
}

/// The link to the other servers of one chat server's room.
#[derive(Debug)]
pub struct Broker {
    config: Config,
    publisher: Publisher,
    subscriber: Subscriber,
    /// Other loops' messages published this round, sealed at
    /// [`Broker::end_round`].
    outgoing: Vec<u8>,
    /// `None` while the link is up (or before its first attempt).
    outage: Option<Outage>,
    /// The queue-full warning was given since the queue was last empty.
    queue_warned: bool,
    /// The link has been up once.
    joined_once: bool,
    reconnects: u64,
    /// xorshift state, for jitter.
    random: u64,
}

impl Broker {
    /// The link of `config`: it connects at its first [`Broker::end_round`].
    pub fn new(config: Config) -> Broker {
        let key = match (config.mode, config.url.db) {
            (Mode::Pubsub, db) if db != 0 => format!("rselectors:chat:{}@{db}", config.room),
            _ => format!("rselectors:chat:{}", config.room),
        }
        .into_bytes();
        let origin = Origin::random();
        Broker {
            publisher: Publisher::new(config.mode, key.clone(), origin, config.queue_limit),
            subscriber: Subscriber::new(config.mode, key, origin),
            outgoing: Vec::new(),
            outage: None,
            queue_warned: false,
            joined_once: false,
            reconnects: 0,
            random: origin.seed(),
            config,
        }
    }

    /// Messages (whole, as clients get them) that clients of the server's
    /// other loops sent, for the other servers: they go out at
    /// [`Broker::end_round`], before that round's own.
    pub fn publish(&mut self, messages: &[u8]) {
        self.outgoing.extend_from_slice(messages);
    }

    /// Moves the other servers' messages received so far into `into`.
    pub fn take_received(&mut self, into: &mut Vec<Arc<[u8]>>) {
        self.subscriber.take_received(into);
    }

    /// What the link did so far.
    pub fn counts(&self) -> Counts {
        Counts {
            sent: self.publisher.sent,
            received: self.subscriber.lines,
            dropped: self.publisher.dropped,
            queued: self.publisher.queued_lines(),
            skipped: self.subscriber.skipped,
            reconnects: self.reconnects,
        }
    }

    /// The end of a round: sends what was published and `own` (the
    /// messages this loop's clients sent this round), then connects what
    /// is due, gives up on what is overdue and sends heartbeats, all at
    /// one reading of the clock.
    pub fn end_round(&mut self, own: &[u8], w: &mut impl Watch) {
        let now = Instant::now();
        self.flush(own, now, w);
        self.tick(now, w);
    }

    /// Seals what was published and `own` into envelopes, queues them
    /// (or, down in pubsub mode or with the queue full, drops them) and
    /// writes what it can.
    fn flush(&mut self, own: &[u8], now: Instant, w: &mut impl Watch) {
        let published = std::mem::take(&mut self.outgoing);
        for body in envelope::bodies(&published).chain(envelope::bodies(own)) {
            if self.publisher.enqueue(body) == Enqueued::Full {
                self.queue_full();
            }
        }
        self.outgoing = published;
        self.outgoing.clear();
        if let Err(failure) = self.publisher.flush(now, w) {
            self.publisher_failed(failure, now, w);
        }
        self.queue_warned &= !self.publisher.is_empty();
    }

    /// Warns that the queue is full: once until it has drained, whether
    /// the broker is gone or only slow.
    #[cold]
    fn queue_full(&mut self) {
        if std::mem::replace(&mut self.queue_warned, true) {
            return;
        }
        warning!(
            "broker {}: {} bytes wait for it (--broker-queue): lines for the \
             other servers are dropped until it takes them",
            self.config.url,
            self.config.queue_limit
        );
    }

    /// Handles `ready` on the link's socket `fd`.
    pub fn ready(&mut self, fd: RawFd, ready: Events, w: &mut impl Watch) {
        let now = Instant::now();
        let url = &self.config.url;
        if self.publisher.fd() == Some(fd) {
            match self.publisher.ready(ready, url, now, w) {
                Ok(true) => self.publisher_up(now),
                Ok(false) => {}
                Err(failure) => self.publisher_failed(failure, now, w),
            }
        } else if self.subscriber.fd() == Some(fd) {
            match self.subscriber.ready(ready, url, now, w) {
                Ok(true) => self.joined(now),
                Ok(false) => {}
                Err(failure) => self.subscriber_failed(failure, now, w),
            }
        }
    }

    /// Connects what is due, gives up on what is overdue, sends
    /// heartbeats.
    fn tick(&mut self, now: Instant, w: &mut impl Watch) {
        let url = &self.config.url;
        let publisher = self.publisher.check(now, w);
        let publisher = publisher.and_then(|()| self.publisher.connect_if_due(url, now, w));
        if let Err(failure) = publisher {
            self.publisher_failed(failure, now, w);
        }
        let url = &self.config.url;
        let subscriber = self.subscriber.check(now, w);
        let subscriber = subscriber.and_then(|()| self.subscriber.connect_if_due(url, now, w));
        if let Err(failure) = subscriber {
            self.subscriber_failed(failure, now, w);
        }
    }

    /// When the link next needs [`Broker::end_round`].
    pub fn deadline(&self) -> Instant {
        self.publisher.deadline().min(self.subscriber.deadline())
    }

    /// The publisher is ready: what waited goes out now.
    fn publisher_up(&mut self, now: Instant) {
        let queued = self.publisher.queued_lines();
        if let Some(outage) = &mut self.outage {
            outage.waited = Some(queued);
        }
        self.joined(now);
    }

    /// Logs the link coming up, when both halves are.
    fn joined(&mut self, now: Instant) {
        if !(self.publisher.is_ready() && self.subscriber.is_ready()) {
            return;
        }
        let url = &self.config.url;
        match self.outage.take() {
            // Not for a link that never joined (started before the broker).
            Some(outage) if self.joined_once => {
                self.reconnects += 1;
                let dropped = self.publisher.dropped - outage.dropped_before;
                let lost = match self.config.mode {
                    Mode::Pubsub => format!("{dropped} lines were not forwarded"),
                    Mode::Streams => format!(
                        "{} lines that waited are sent, {dropped} were dropped",
                        outage.waited.unwrap_or(0)
                    ),
                };
                let down = now.duration_since(outage.since).as_secs_f64();
                info!("broker {url}: link up after {down:.1} s down ({lost})");
            }
            _ => info!(
                "broker {url}: joined room {} ({})",
                self.config.room, self.config.mode
            ),
        }
        self.joined_once = true;
    }

    fn publisher_failed(&mut self, failure: Failure, now: Instant, w: &mut impl Watch) {
        let jitter = self.jitter();
        self.publisher.failed(w, now, jitter);
        self.link_failed(Role::Publisher, failure, now);
    }

    fn subscriber_failed(&mut self, failure: Failure, now: Instant, w: &mut impl Watch) {
        let jitter = self.jitter();
        self.subscriber.failed(w, now, jitter);
        self.link_failed(Role::Subscriber, failure, now);
    }

    /// Warns once per outage; what follows until the link is back is
    /// debug detail.
    fn link_failed(&mut self, role: Role, failure: Failure, now: Instant) {
        let url = &self.config.url;
        if self.outage.is_some() {
            debug!("broker {url}: {role}: {failure}");
            return;
        }
        self.outage = Some(Outage {
            since: now,
            dropped_before: self.publisher.dropped,
            waited: None,
        });
        let what = match self.config.mode {
            Mode::Pubsub => "lines for the other servers are dropped".to_owned(),
            Mode::Streams => format!(
                "lines for the other servers wait (up to {} bytes, --broker-queue)",
                self.config.queue_limit
            ),
        };
        let state = match self.joined_once {
            true => "link down",
            false => "cannot join",
        };
        let reason = failure.to_string();
        let hint = if reason.starts_with("NOAUTH") {
            format!(" (give the password in the URL or in {PASSWORD_VAR})")
        } else if reason.starts_with("WRONGPASS") {
            " (check the user and the password)".to_owned()
        } else {
            String::new()
        };
        warning!(
            "broker {url}: {state} ({role}: {reason}{hint}); local chat goes on, {what} \
             until it is back; reconnecting"
        );
    }

    /// A number in 0..1.
    fn jitter(&mut self) -> f64 {
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        (self.random >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One line for the console's `list`.
    pub fn describe(&self) -> String {
        let state = match (self.publisher.is_ready(), self.subscriber.is_ready()) {
            (true, true) => "connected",
            (false, false) => "not connected",
            _ => "partly connected",
        };
        let c = self.counts();
        let queued = match self.config.mode {
            Mode::Pubsub => String::new(),
            Mode::Streams => format!(", {} queued", c.queued),
        };
        format!(
            "broker   {} room {} ({}, {}): {state}; lines sent {}, \
             received {}, dropped {}{queued}, skipped {}, reconnects {}",
            self.config.url,
            self.config.room,
            self.config.mode,
            self.publisher.key(),
            c.sent,
            c.received,
            c.dropped,
            c.skipped,
            c.reconnects
        )
    }

    /// Sends what it can (no waiting), stops watching the link's sockets,
    /// and returns the closing summary's broker line.
    pub fn close(&mut self, w: &mut impl Watch) -> String {
        self.flush(&[], Instant::now(), w);
        self.publisher.close(w);
        self.subscriber.close(w);
        let c = self.counts();
        format!(
            "broker: {} lines sent, {} received, {} dropped, {} unsent, {} skipped, \
             {} reconnects",
            c.sent, c.received, c.dropped, c.queued, c.skipped, c.reconnects
        )
    }
}
