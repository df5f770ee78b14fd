//! The broker link: chat servers that share a room through Redis
//! (`chat-server --broker URL --room NAME`).
//!
//! The boundary: the chat server hands the link the messages its clients
//! sent ([`Broker::publish`], then [`Broker::flush`] at the end of a
//! round) and takes the other servers' messages from it
//! ([`Broker::take_received`]) to deliver to its clients. Everything in
//! between lives here: two connections to Redis on the same selector as
//! the clients (one publishes, one subscribes or reads the stream: a
//! subscribed or blocked connection can do nothing else), the envelope
//! ([`envelope`]), RESP ([`resp`]), reconnecting and counting.
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
//! about [`STREAM_MAXLEN`] envelopes).

mod envelope;
mod redis;
mod resp;
mod url;

pub use self::url::{BrokerUrl, PASSWORD_VAR};
use crate::logging::{debug, info, warning};
use envelope::{Delivered, Opened, Origin, MAX_ENVELOPE};
use redis::{Failure, Redis};
use resp::Reply;
use rselectors::Events;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// How a chat server's selector watches the link's sockets (the server
/// implements it; the link owns the sockets).
pub trait Watch {
    /// Watches `fd` for `events` (`registered`: it is already, change it).
    fn watch(&mut self, fd: RawFd, events: Events, registered: bool) -> io::Result<()>;
    /// Stops watching `fd`, before the link closes it.
    fn unwatch(&mut self, fd: RawFd);
}

/// The stream is trimmed to about this many envelopes (`XADD MAXLEN ~`):
/// how far behind a server that was cut off can catch up.
pub const STREAM_MAXLEN: u32 = 10_000;

/// An idle connection sends `PING` this often, so that a dead link is
/// found without waiting for TCP.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long a reply may take before the connection is given up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);

/// `XREAD BLOCK`, in milliseconds: the reader's reply comes at least this
/// often, which doubles as its heartbeat.
const READ_BLOCK_MS: u64 = 1000;

/// Entries one `XREAD` returns at most.
const READ_COUNT: u32 = 64;

/// Warnings about what was skipped on the room's channel come at most
/// this often.
const SKIPPED_WARNING_EVERY: Duration = Duration::from_secs(10);

/// What a publisher command was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Auth,
    Select,
    /// The last of the handshake, and the heartbeat.
    Ping,
    Envelope,
}

/// What a subscriber command was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Auth,
    Select,
    Subscribe,
    Ping,
    /// `XREVRANGE key + - COUNT 1`: where the stream ends now.
    Top,
    Read,
}

/// An envelope on its way to the broker, as the command that sends it.
#[derive(Debug)]
struct Queued {
    command: Vec<u8>,
    lines: usize,
}

/// A stream entry id, `ms-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct StreamId(u64, u64);

impl StreamId {
    fn parse(text: &[u8]) -> Option<StreamId> {
        let text = std::str::from_utf8(text).ok()?;
        let (ms, seq) = text.split_once('-')?;
        Some(StreamId(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
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
    /// The queue-full warning was given.
    queue_warned: bool,
}

/// The link to the broker of one chat server.
#[derive(Debug)]
pub struct Broker {
    config: Config,
    /// The channel or stream key.
    key: Vec<u8>,
    origin: Origin,
    /// The last envelope number used.
    seq: u64,
    publisher: Redis<Sent>,
    subscriber: Redis<Asked>,
    /// The publisher finished its handshake.
    publisher_ready: bool,
    /// The subscriber is subscribed, or reading the stream.
    subscriber_ready: bool,
    /// Envelopes for the broker; the first `in_flight` are sent and not
    /// answered yet.
    queue: VecDeque<Queued>,
    in_flight: usize,
    queued_bytes: usize,
    /// Messages published this round, sealed at [`Broker::flush`].
    outgoing: Vec<u8>,
    delivered: Delivered,
    /// Other servers' messages, for the chat server to take.
    received: Vec<Arc<[u8]>>,
    /// The last stream entry read.
    last_id: Option<StreamId>,
    counts: Counts,
    /// `None` while the link is up (or before its first attempt).
    outage: Option<Outage>,
    /// The link has been up once.
    joined_once: bool,
    /// Skipped payloads not warned about yet, and when the last warning was.
    skipped_unwarned: u64,
    skipped_warned_at: Option<Instant>,
    /// xorshift state, for jitter.
    random: u64,
}

impl Broker {
    pub fn new(config: Config) -> Broker {
        let key = format!("rselectors:chat:{}", config.room).into_bytes();
        let origin = Origin::random();
        Broker {
            key,
            origin,
            seq: 0,
            publisher: Redis::new("publisher", MAX_ENVELOPE),
            subscriber: Redis::new("subscriber", MAX_ENVELOPE),
            publisher_ready: false,
            subscriber_ready: false,
            queue: VecDeque::new(),
            in_flight: 0,
            queued_bytes: 0,
            outgoing: Vec::new(),
            delivered: Delivered::default(),
            received: Vec::new(),
            last_id: None,
            counts: Counts::default(),
            outage: None,
            joined_once: false,
            skipped_unwarned: 0,
            skipped_warned_at: None,
            random: origin_seed(origin),
            config,
        }
    }

    /// Messages (whole, as clients get them) this server's clients sent,
    /// for the other servers: they go out at [`Broker::flush`].
    pub fn publish(&mut self, messages: &[u8]) {
        self.outgoing.extend_from_slice(messages);
    }

    /// Moves the other servers' messages received so far into `into`.
    pub fn take_received(&mut self, into: &mut Vec<Arc<[u8]>>) {
        into.append(&mut self.received);
    }

    /// Lines waiting for the broker.
    pub fn queued_lines(&self) -> u64 {
        self.queue.iter().map(|q| q.lines as u64).sum()
    }

    /// Seals what was published this round into envelopes, queues them
    /// (or, down in pubsub mode or with the queue full, drops them) and
    /// writes what it can. Call at the end of every round.
    pub fn flush(&mut self, w: &mut impl Watch) {
        if !self.outgoing.is_empty() {
            let outgoing = std::mem::take(&mut self.outgoing);
            for body in envelope::bodies(&outgoing) {
                self.enqueue(body);
            }
            self.outgoing = outgoing;
            self.outgoing.clear();
        }
        self.send_queued(Instant::now());
        if let Err(failure) = self.publisher.flush(w) {
            self.publisher_failed(failure, Instant::now(), w);
        }
    }

    fn enqueue(&mut self, body: &[u8]) {
        let lines = memchr::memchr_iter(b'\n', body).count();
        let forwarding = match self.config.mode {
            Mode::Pubsub => self.publisher_ready,
            Mode::Streams => true,
        };
        if !forwarding {
            self.counts.dropped += lines as u64;
            return;
        }
        if self.queued_bytes + body.len() > self.config.queue_limit {
            self.counts.dropped += lines as u64;
            self.queue_full();
            return;
        }
        self.seq += 1;
        let mut sealed = Vec::new();
        envelope::seal(&mut sealed, self.origin, self.seq, body);
        let mut command = Vec::with_capacity(sealed.len() + 96);
        match self.config.mode {
            Mode::Pubsub => resp::command(&mut command, &[b"PUBLISH", &self.key, &sealed]),
            Mode::Streams => {
                let maxlen = STREAM_MAXLEN.to_string();
                let args: [&[u8]; 7] = [
                    b"XADD",
                    &self.key,
                    b"MAXLEN",
                    b"~",
                    maxlen.as_bytes(),
                    b"*",
                    b"m",
                ];
                resp::command(&mut command, &[&args[..], &[&sealed[..]]].concat());
            }
        }
        self.queued_bytes += command.len();
        self.queue.push_back(Queued { command, lines });
    }

    #[cold]
    fn queue_full(&mut self) {
        let limit = self.config.queue_limit;
        match &mut self.outage {
            Some(outage) if !outage.queue_warned => outage.queue_warned = true,
            Some(_) => return,
            None => {}
        }
        warning!(
            "broker {}: {limit} bytes wait for it (--broker-queue): lines for \
             the other servers are dropped until it takes them",
            self.config.url
        );
    }

    /// Writes the queued envelopes not sent yet (the publisher ready).
    fn send_queued(&mut self, now: Instant) {
        if !self.publisher_ready {
            return;
        }
        while self.in_flight < self.queue.len() {
            let queued = &self.queue[self.in_flight];
            self.publisher.queue(&queued.command, Sent::Envelope, now);
            self.in_flight += 1;
        }
    }

    /// Handles `ready` on the link's socket `fd`.
    pub fn ready(&mut self, fd: RawFd, ready: Events, w: &mut impl Watch) {
        let now = Instant::now();
        if self.publisher.fd() == Some(fd) {
            if let Err(failure) = self.publisher_ready_io(ready, now, w) {
                self.publisher_failed(failure, now, w);
            }
        } else if self.subscriber.fd() == Some(fd) {
            if let Err(failure) = self.subscriber_ready_io(ready, now, w) {
                self.subscriber_failed(failure, now, w);
            }
        }
    }

    /// Connects what is due, gives up on what is overdue, sends
    /// heartbeats. Call at the end of every round.
    pub fn tick(&mut self, w: &mut impl Watch) {
        let now = Instant::now();
        if let Some(failure) = self.publisher.overdue(now, REPLY_TIMEOUT) {
            self.publisher_failed(failure, now, w);
        }
        let patience = self.subscriber_patience();
        if let Some(failure) = self.subscriber.overdue(now, patience) {
            self.subscriber_failed(failure, now, w);
        }
        match self.publisher.connect_if_due(&self.config.url, now, w) {
            Ok(true) => self.publisher_connected(now, w),
            Ok(false) => {}
            Err(failure) => self.publisher_failed(failure, now, w),
        }
        match self.subscriber.connect_if_due(&self.config.url, now, w) {
            Ok(true) => self.subscriber_connected(now, w),
            Ok(false) => {}
            Err(failure) => self.subscriber_failed(failure, now, w),
        }
        if self.publisher_ready && self.publisher.idle_for(now, HEARTBEAT) {
            self.ping_publisher(now, w);
        }
        if self.config.mode == Mode::Pubsub
            && self.subscriber_ready
            && self.subscriber.idle_for(now, HEARTBEAT)
        {
            self.subscriber
                .queue(&command(&[b"PING"]), Asked::Ping, now);
            if let Err(failure) = self.subscriber.flush(w) {
                self.subscriber_failed(failure, now, w);
            }
        }
    }

    fn ping_publisher(&mut self, now: Instant, w: &mut impl Watch) {
        self.publisher.queue(&command(&[b"PING"]), Sent::Ping, now);
        if let Err(failure) = self.publisher.flush(w) {
            self.publisher_failed(failure, now, w);
        }
    }

    /// When the link next needs [`Broker::tick`].
    pub fn deadline(&self) -> Instant {
        let publisher = self.publisher.deadline(REPLY_TIMEOUT, HEARTBEAT);
        let subscriber = self
            .subscriber
            .deadline(self.subscriber_patience(), HEARTBEAT);
        publisher.min(subscriber)
    }

    fn subscriber_patience(&self) -> Duration {
        match self.config.mode {
            Mode::Pubsub => REPLY_TIMEOUT,
            Mode::Streams => REPLY_TIMEOUT + Duration::from_millis(READ_BLOCK_MS),
        }
    }

    fn publisher_connected(&mut self, now: Instant, w: &mut impl Watch) {
        handshake(
            &self.config.url,
            &mut self.publisher,
            Sent::Auth,
            Sent::Select,
            now,
        );
        self.ping_publisher(now, w);
    }

    fn subscriber_connected(&mut self, now: Instant, w: &mut impl Watch) {
        handshake(
            &self.config.url,
            &mut self.subscriber,
            Asked::Auth,
            Asked::Select,
            now,
        );
        let subscriber = &mut self.subscriber;
        match self.config.mode {
            Mode::Pubsub => {
                subscriber.queue(&command(&[b"SUBSCRIBE", &self.key]), Asked::Subscribe, now)
            }
            Mode::Streams => subscriber.queue(
                &command(&[b"XREVRANGE", &self.key, b"+", b"-", b"COUNT", b"1"]),
                Asked::Top,
                now,
            ),
        }
        if let Err(failure) = self.subscriber.flush(w) {
            self.subscriber_failed(failure, now, w);
        }
    }

    fn publisher_ready_io(
        &mut self,
        ready: Events,
        now: Instant,
        w: &mut impl Watch,
    ) -> Result<(), Failure> {
        if self.publisher.ready(ready, now)? {
            self.publisher_connected(now, w);
        }
        while let Some(reply) = self.publisher.reply()? {
            let request = self.publisher.answered(now);
            match (request, reply) {
                (Some(Sent::Envelope), reply) => self.envelope_answered(reply),
                (Some(_), Reply::Error(e)) => return Err(Failure::Refused(e)),
                (Some(Sent::Ping), _) if !self.publisher_ready => {
                    self.publisher_ready = true;
                    self.publisher.settled();
                    self.send_queued(now);
                    self.maybe_joined(now);
                }
                (Some(_), _) => {}
                (None, reply) => return Err(unexpected(&reply)),
            }
        }
        self.publisher.flush(w)
    }

    /// The broker answered the oldest envelope in flight.
    fn envelope_answered(&mut self, reply: Reply) {
        let Some(queued) = self.queue.pop_front() else {
            return;
        };
        self.in_flight = self.in_flight.saturating_sub(1);
        self.queued_bytes -= queued.command.len().min(self.queued_bytes);
        if let Reply::Error(e) = reply {
            self.counts.dropped += queued.lines as u64;
            warning!(
                "broker {} refused {} lines: {e}",
                self.config.url,
                queued.lines
            );
        } else {
            self.counts.sent += queued.lines as u64;
        }
    }

    fn subscriber_ready_io(
        &mut self,
        ready: Events,
        now: Instant,
        w: &mut impl Watch,
    ) -> Result<(), Failure> {
        if self.subscriber.ready(ready, now)? {
            self.subscriber_connected(now, w);
        }
        while let Some(reply) = self.subscriber.reply()? {
            if self.config.mode == Mode::Pubsub {
                if let Some(payload) = pushed_message(&reply) {
                    self.take_payload(payload, now);
                    continue;
                }
            }
            let request = self.subscriber.answered(now);
            match (request, reply) {
                (Some(_), Reply::Error(e)) => return Err(Failure::Refused(e)),
                (Some(Asked::Subscribe), _) => {
                    self.subscriber_ready = true;
                    self.subscriber.settled();
                    self.maybe_joined(now);
                }
                (Some(Asked::Top), reply) => {
                    let top = reply
                        .items()
                        .and_then(|entries| entries.first())
                        .and_then(|entry| entry.items()?.first()?.bytes())
                        .and_then(StreamId::parse);
                    // Reading on from the last entry seen, unless the
                    // stream now ends before it: the broker lost it (a
                    // restart without persistence), so all of it is new.
                    let from = match (self.last_id, top) {
                        (Some(last), Some(top)) if top >= last => last,
                        (Some(_), _) => StreamId(0, 0),
                        (None, top) => top.unwrap_or(StreamId(0, 0)),
                    };
                    self.last_id = Some(from);
                    self.subscriber_ready = true;
                    self.subscriber.settled();
                    self.read_stream(now);
                    self.maybe_joined(now);
                }
                (Some(Asked::Read), reply) => {
                    self.take_entries(&reply, now);
                    self.read_stream(now);
                }
                (Some(_), _) => {}
                (None, reply) => return Err(unexpected(&reply)),
            }
        }
        self.subscriber.flush(w)
    }

    fn read_stream(&mut self, now: Instant) {
        let from = self.last_id.unwrap_or(StreamId(0, 0)).to_string();
        let (block, count) = (READ_BLOCK_MS.to_string(), READ_COUNT.to_string());
        let read = command(&[
            b"XREAD",
            b"COUNT",
            count.as_bytes(),
            b"BLOCK",
            block.as_bytes(),
            b"STREAMS",
            &self.key,
            from.as_bytes(),
        ]);
        self.subscriber.queue(&read, Asked::Read, now);
    }

    /// The entries of an `XREAD` reply (`Nil` when it timed out).
    fn take_entries(&mut self, reply: &Reply, now: Instant) {
        let entries = reply
            .items()
            .and_then(|streams| streams.first())
            .and_then(|stream| stream.items()?.get(1)?.items());
        for entry in entries.unwrap_or_default() {
            let Some([id, fields]) = entry.items() else {
                self.skip("a stream entry of an unknown shape", now);
                continue;
            };
            if let Some(id) = id.bytes().and_then(StreamId::parse) {
                self.last_id = Some(id);
            }
            match fields.items() {
                Some([name, value]) if name.bytes() == Some(b"m") => match value {
                    Reply::Bulk(payload) => self.take_payload(payload, now),
                    Reply::TooLong(_) => self.skip("an entry too long to be an envelope", now),
                    _ => self.skip("an entry of an unknown shape", now),
                },
                _ => self.skip("an entry with other fields than this server writes", now),
            }
        }
    }

    /// A payload from the room's channel or stream.
    fn take_payload(&mut self, payload: &[u8], now: Instant) {
        match envelope::open(payload) {
            Opened::Envelope { origin, .. } if origin == self.origin => {}
            Opened::Envelope {
                origin,
                seq,
                body,
                lines,
            } => {
                if self.delivered.first_time(origin, seq) {
                    self.counts.received += lines as u64;
                    self.received.push(Arc::from(body));
                }
            }
            Opened::Newer(version) => {
                let what = format!("an envelope of version {version} (this server reads 1)");
                self.skip_owned(what, now)
            }
            Opened::Foreign(why) => self.skip(why, now),
        }
    }

    fn skip(&mut self, why: &'static str, now: Instant) {
        self.skip_owned(why.to_owned(), now);
    }

    /// Skips a payload that is not an envelope this server reads, with a
    /// warning at most every [`SKIPPED_WARNING_EVERY`].
    #[cold]
    fn skip_owned(&mut self, why: String, now: Instant) {
        self.counts.skipped += 1;
        self.skipped_unwarned += 1;
        let due = self
            .skipped_warned_at
            .is_none_or(|at| now >= at + SKIPPED_WARNING_EVERY);
        if due {
            warning!(
                "broker {}: skipped {} payloads on {} that are not chat lines of \
                 this server's version (the last: {why}); clients see none of them",
                self.config.url,
                self.skipped_unwarned,
                String::from_utf8_lossy(&self.key)
            );
            self.skipped_unwarned = 0;
            self.skipped_warned_at = Some(now);
        }
    }

    fn maybe_joined(&mut self, now: Instant) {
        if !(self.publisher_ready && self.subscriber_ready) {
            return;
        }
        match self.outage.take() {
            Some(outage) => {
                self.counts.reconnects += u64::from(self.joined_once);
                let dropped = self.counts.dropped - outage.dropped_before;
                let lost = match self.config.mode {
                    Mode::Pubsub => format!("{dropped} lines were not forwarded"),
                    Mode::Streams => format!(
                        "{} queued lines go out now, {dropped} were dropped",
                        self.queued_lines()
                    ),
                };
                info!(
                    "broker {}: link up after {:.1} s down ({lost})",
                    self.config.url,
                    now.duration_since(outage.since).as_secs_f64()
                );
            }
            None => info!(
                "broker {}: joined room {} ({})",
                self.config.url, self.config.room, self.config.mode
            ),
        }
        self.joined_once = true;
    }

    fn publisher_failed(&mut self, failure: Failure, now: Instant, w: &mut impl Watch) {
        let jitter = self.jitter();
        self.publisher.close(w, now, jitter);
        self.publisher_ready = false;
        match self.config.mode {
            // Envelopes in flight may or may not have been taken: sent
            // again (receivers deliver each once).
            Mode::Streams => self.in_flight = 0,
            Mode::Pubsub => {
                self.counts.dropped += self.queue.drain(..).map(|q| q.lines as u64).sum::<u64>();
                self.queued_bytes = 0;
                self.in_flight = 0;
            }
        }
        self.link_failed(self.publisher.role, failure, now);
    }

    fn subscriber_failed(&mut self, failure: Failure, now: Instant, w: &mut impl Watch) {
        let jitter = self.jitter();
        self.subscriber.close(w, now, jitter);
        self.subscriber_ready = false;
        self.link_failed(self.subscriber.role, failure, now);
    }

    /// Warns once per outage.
    fn link_failed(&mut self, role: &str, failure: Failure, now: Instant) {
        let url = &self.config.url;
        if self.outage.is_some() {
            debug!("broker {url}: {role}: {failure}");
            return;
        }
        self.outage = Some(Outage {
            since: now,
            dropped_before: self.counts.dropped,
            queue_warned: false,
        });
        let what = match self.config.mode {
            Mode::Pubsub => "lines for the other servers are dropped".to_owned(),
            Mode::Streams => format!(
                "lines for the other servers wait (up to {} bytes, --broker-queue)",
                self.config.queue_limit
            ),
        };
        let joined = match self.joined_once {
            true => "link down",
            false => "cannot join",
        };
        warning!(
            "broker {url}: {joined} ({role}: {failure}); local chat goes on, {what} \
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
        let state = match (self.publisher_ready, self.subscriber_ready) {
            (true, true) => "connected",
            (false, false) => "not connected",
            _ => "partly connected",
        };
        let c = self.counts;
        let queued = match self.config.mode {
            Mode::Pubsub => String::new(),
            Mode::Streams => format!(", {} queued", self.queued_lines()),
        };
        format!(
            "broker   {} room {} ({}, {}): {state}; lines sent {}, received {}, \
             dropped {}{queued}, skipped {}, reconnects {}",
            self.config.url,
            self.config.room,
            self.config.mode,
            String::from_utf8_lossy(&self.key),
            c.sent,
            c.received,
            c.dropped,
            c.skipped,
            c.reconnects
        )
    }

    /// The closing summary's broker line; sends what it can first.
    pub fn close(&mut self, w: &mut impl Watch) -> String {
        self.flush(w);
        let c = self.counts;
        let queued = self.queued_lines();
        for redis_fd in [self.publisher.fd(), self.subscriber.fd()]
            .into_iter()
            .flatten()
        {
            w.unwatch(redis_fd);
        }
        format!(
            "broker: {} lines sent, {} received, {} dropped, {queued} unsent, {} skipped, {} reconnects",
            c.sent, c.received, c.dropped, c.skipped, c.reconnects
        )
    }
}

/// `AUTH` and `SELECT` as `url` asks, queued on `redis`.
fn handshake<R>(url: &BrokerUrl, redis: &mut Redis<R>, auth: R, select: R, now: Instant) {
    if let Some(password) = &url.password {
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = &url.user {
            args.push(user.as_bytes());
        }
        args.push(password.as_bytes());
        redis.queue(&command(&args), auth, now);
    }
    if url.db != 0 {
        let db = url.db.to_string();
        redis.queue(&command(&[b"SELECT", db.as_bytes()]), select, now);
    }
}

/// A command of `args` as bytes.
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    resp::command(&mut out, args);
    out
}

/// The payload of a pushed `message` (pubsub).
fn pushed_message(reply: &Reply) -> Option<&[u8]> {
    match reply.items()? {
        [kind, _channel, payload] if kind.bytes() == Some(b"message") => match payload {
            Reply::Bulk(payload) => Some(payload),
            // Too long to be an envelope: skipped as foreign.
            _ => Some(b""),
        },
        _ => None,
    }
}

fn unexpected(reply: &Reply) -> Failure {
    Failure::Refused(format!("unexpected reply {reply:?}"))
}

fn origin_seed(origin: Origin) -> u64 {
    origin
        .to_string()
        .bytes()
        .fold(0x9e37_79b9_7f4a_7c15, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
        | 1
}
