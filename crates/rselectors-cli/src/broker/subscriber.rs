//! The receiving half of the link: the other servers' envelopes in,
//! checked, each delivered once.
//!
//! In pubsub mode it is subscribed to the room's channel; in streams mode
//! it reads the room's stream with `XREAD BLOCK` from the last entry it
//! saw, so that after an outage it reads on where it stopped.

use super::envelope::{self, Delivered, Opened, Origin, MAX_ENVELOPE};
use super::redis::{Failure, Redis};
use super::resp::{self, Reply};
use super::{BrokerUrl, Half, Mode, Role, Throttled, Watch, HEARTBEAT, REPLY_TIMEOUT};
use crate::logging::warning;
use rselectors::Events;
use std::fmt;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `XREAD BLOCK`, in milliseconds: the reader's reply comes at least this
/// often, which doubles as its heartbeat.
const READ_BLOCK_MS: u64 = 1000;

/// Entries one `XREAD` returns at most.
const READ_COUNT: u32 = 64;

/// What a subscriber command was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Asked {
    Auth,
    Select,
    Subscribe,
    Ping,
    /// `XREVRANGE key + - COUNT 1`: where the stream ends now.
    Top,
    Read,
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

/// The connection that receives, and what it has received.
#[derive(Debug)]
pub struct Subscriber {
    redis: Redis<Asked>,
    /// Subscribed, or reading the stream.
    ready: bool,
    mode: Mode,
    key: Vec<u8>,
    /// This server's own envelopes come back: skipped.
    origin: Origin,
    delivered: Delivered,
    /// The last stream entry read.
    last_id: Option<StreamId>,
    /// Other servers' messages, for the chat server to take.
    received: Vec<Arc<[u8]>>,
    /// Lines from other servers.
    pub lines: u64,
    /// Payloads that were not envelopes this server reads.
    pub skipped: u64,
    skipped_warning: Throttled,
}

impl Subscriber {
    pub fn new(mode: Mode, key: Vec<u8>, origin: Origin) -> Subscriber {
        Subscriber {
            redis: Redis::new(Role::Subscriber, MAX_ENVELOPE),
            ready: false,
            mode,
            key,
            origin,
            delivered: Delivered::default(),
            last_id: None,
            received: Vec::new(),
            lines: 0,
            skipped: 0,
            skipped_warning: Throttled::default(),
        }
    }

    pub fn fd(&self) -> Option<RawFd> {
        self.redis.fd()
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Moves the other servers' messages received so far into `into`.
    pub fn take_received(&mut self, into: &mut Vec<Arc<[u8]>>) {
        into.append(&mut self.received);
    }

    /// Handles `ready` on its socket: true when it just became ready.
    pub fn ready(
        &mut self,
        ready: Events,
        url: &BrokerUrl,
        now: Instant,
        w: &mut impl Watch,
    ) -> Result<bool, Failure> {
        self.transfer(ready, url, now, w)?;
        let mut became_ready = false;
        while let Some(reply) = self.redis.reply()? {
            if self.mode == Mode::Pubsub {
                if let Some(payload) = pushed_message(&reply) {
                    self.take_payload(payload, url, now);
                    continue;
                }
            }
            match (self.redis.answered(now), reply) {
                (Some(_), Reply::Error(e)) => return Err(Failure::Refused(e)),
                (Some(Asked::Subscribe), reply) => {
                    let kind = reply.items().and_then(|items| items.first()?.bytes());
                    if kind != Some(b"subscribe") {
                        return Err(Failure::unexpected(&reply));
                    }
                    became_ready = true;
                }
                (Some(Asked::Top), reply) if reply.items().is_none() => {
                    return Err(Failure::unexpected(&reply))
                }
                (Some(Asked::Top), reply) => {
                    self.start_reading(&reply);
                    self.read_stream(now);
                    became_ready = true;
                }
                (Some(Asked::Read), reply) => {
                    self.take_entries(&reply, url, now);
                    self.read_stream(now);
                }
                (Some(_), _) => {}
                (None, reply) => return Err(Failure::unexpected(&reply)),
            }
        }
        if became_ready {
            self.ready = true;
            self.redis.settled();
        }
        self.redis.flush(w)?;
        Ok(became_ready)
    }

    /// Where to read the stream from, given the `XREVRANGE` reply (the
    /// entry it ends with, if any): on from the last entry seen, unless
    /// the stream now ends before it. Then the broker lost it (a restart
    /// without persistence), and all of it is new.
    fn start_reading(&mut self, reply: &Reply) {
        let top = reply
            .items()
            .and_then(|entries| entries.first())
            .and_then(|entry| entry.items()?.first()?.bytes())
            .and_then(StreamId::parse);
        let from = match (self.last_id, top) {
            (Some(last), Some(top)) if top >= last => last,
            (Some(_), _) => StreamId(0, 0),
            (None, top) => top.unwrap_or(StreamId(0, 0)),
        };
        self.last_id = Some(from);
    }

    fn read_stream(&mut self, now: Instant) {
        let from = self.last_id.unwrap_or(StreamId(0, 0)).to_string();
        let (block, count) = (READ_BLOCK_MS.to_string(), READ_COUNT.to_string());
        let read = resp::command_bytes(&[
            b"XREAD",
            b"COUNT",
            count.as_bytes(),
            b"BLOCK",
            block.as_bytes(),
            b"STREAMS",
            &self.key,
            from.as_bytes(),
        ]);
        self.redis.queue(&read, Asked::Read, now);
    }

    /// The entries of an `XREAD` reply (`Nil` when it timed out).
    fn take_entries(&mut self, reply: &Reply, url: &BrokerUrl, now: Instant) {
        let entries = reply
            .items()
            .and_then(|streams| streams.first())
            .and_then(|stream| stream.items()?.get(1)?.items());
        for entry in entries.unwrap_or_default() {
            let Some([id, fields]) = entry.items() else {
                self.skip("a stream entry of an unknown shape", url, now);
                continue;
            };
            if let Some(id) = id.bytes().and_then(StreamId::parse) {
                self.last_id = Some(id);
            }
            match fields.items() {
                Some([name, Reply::Bulk(payload)]) if name.bytes() == Some(b"m") => {
                    self.take_payload(payload, url, now)
                }
                Some([name, Reply::TooLong(_)]) if name.bytes() == Some(b"m") => {
                    self.skip("an entry too long to be an envelope", url, now)
                }
                _ => self.skip(
                    "an entry with other fields than this server writes",
                    url,
                    now,
                ),
            }
        }
    }

    /// A payload from the room's channel or stream.
    fn take_payload(&mut self, payload: &[u8], url: &BrokerUrl, now: Instant) {
        match envelope::open(payload) {
            Opened::Envelope { origin, .. } if origin == self.origin => {}
            Opened::Envelope {
                origin,
                seq,
                body,
                lines,
            } => {
                if self.delivered.first_time(origin, seq) {
                    self.lines += lines as u64;
                    self.received.push(Arc::from(body));
                }
            }
            Opened::Newer(version) => {
                let why = format!("an envelope of version {version}; this server reads 1");
                self.skip(&why, url, now)
            }
            Opened::Foreign(why) => self.skip(why, url, now),
        }
    }

    /// Skips a payload that is not an envelope this server reads, with a
    /// warning at most every [`super::WARNING_EVERY`].
    #[cold]
    fn skip(&mut self, why: &str, url: &BrokerUrl, now: Instant) {
        self.skipped += 1;
        if let Some(skipped) = self.skipped_warning.due(now) {
            warning!(
                "broker {url}: skipped {skipped} payloads on {} that are not chat lines of \
                 this server's version (the last: {why}); clients see none of them",
                String::from_utf8_lossy(&self.key)
            );
        }
    }

    /// Pings a subscribed connection that was quiet for a [`HEARTBEAT`]
    /// (the stream reader's blocked `XREAD` answers every
    /// [`READ_BLOCK_MS`] anyway); gives up on a connection or reply that
    /// is overdue.
    pub fn check(&mut self, now: Instant, w: &mut impl Watch) -> Result<(), Failure> {
        if let Some(failure) = self.redis.overdue(now, self.patience()) {
            return Err(failure);
        }
        if self.mode == Mode::Pubsub && self.ready && self.redis.idle_for(now, HEARTBEAT) {
            self.redis
                .queue(&resp::command_bytes(&[b"PING"]), Asked::Ping, now);
            self.redis.flush(w)?;
        }
        Ok(())
    }

    /// How long a reply may take.
    fn patience(&self) -> Duration {
        match self.mode {
            Mode::Pubsub => REPLY_TIMEOUT,
            Mode::Streams => REPLY_TIMEOUT + Duration::from_millis(READ_BLOCK_MS),
        }
    }

    /// When it next needs [`Subscriber::check`] or a connection attempt.
    pub fn deadline(&self) -> Instant {
        self.redis.deadline(self.patience(), HEARTBEAT)
    }

    /// Closes the connection until the next attempt.
    pub fn failed(&mut self, w: &mut impl Watch, now: Instant, jitter: f64) {
        self.redis.close(w, now, jitter);
        self.ready = false;
    }
}

impl Half for Subscriber {
    type Request = Asked;

    fn redis(&mut self) -> &mut Redis<Asked> {
        &mut self.redis
    }

    /// The handshake, then `SUBSCRIBE` or, for a stream, where it ends.
    fn connected(
        &mut self,
        url: &BrokerUrl,
        now: Instant,
        w: &mut impl Watch,
    ) -> Result<(), Failure> {
        self.redis.handshake(url, Asked::Auth, Asked::Select, now);
        let (command, asked) = match self.mode {
            Mode::Pubsub => (
                resp::command_bytes(&[b"SUBSCRIBE", &self.key]),
                Asked::Subscribe,
            ),
            Mode::Streams => (
                resp::command_bytes(&[b"XREVRANGE", &self.key, b"+", b"-", b"COUNT", b"1"]),
                Asked::Top,
            ),
        };
        self.redis.queue(&command, asked, now);
        self.redis.flush(w)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn top(id: Option<&str>) -> Reply {
        let entries = id
            .map(|id| {
                vec![Reply::Array(vec![
                    Reply::Bulk(id.into()),
                    Reply::Array(vec![]),
                ])]
            })
            .unwrap_or_default();
        Reply::Array(entries)
    }

    fn subscriber() -> Subscriber {
        Subscriber::new(Mode::Streams, b"k".to_vec(), Origin::random())
    }

    #[test]
    fn a_stream_is_read_on_from_the_last_entry_seen_unless_it_was_lost() {
        let mut s = subscriber();
        s.start_reading(&top(None));
        assert_eq!(
            s.last_id,
            Some(StreamId(0, 0)),
            "no stream yet: all of it is new"
        );
        let mut s = subscriber();
        s.start_reading(&top(Some("17-3")));
        assert_eq!(
            s.last_id,
            Some(StreamId(17, 3)),
            "first join: only what comes next"
        );
        s.last_id = Some(StreamId(20, 0));
        s.start_reading(&top(Some("25-1")));
        assert_eq!(
            s.last_id,
            Some(StreamId(20, 0)),
            "back: on from where it was"
        );
        s.start_reading(&top(Some("19-9")));
        assert_eq!(
            s.last_id,
            Some(StreamId(0, 0)),
            "the stream ends before: it was lost"
        );
        s.last_id = Some(StreamId(20, 0));
        s.start_reading(&top(None));
        assert_eq!(s.last_id, Some(StreamId(0, 0)), "the stream is gone");
    }

    #[test]
    fn stream_ids_parse_and_order() {
        assert_eq!(
            StreamId::parse(b"1700000000000-12"),
            Some(StreamId(1_700_000_000_000, 12))
        );
        assert_eq!(StreamId(5, 0).to_string(), "5-0");
        assert!(StreamId(5, 10) > StreamId(5, 9) && StreamId(6, 0) > StreamId(5, 99));
        for bad in [&b"5"[..], b"a-1", b"1-", b"-1"] {
            assert_eq!(StreamId::parse(bad), None);
        }
    }

    #[test]
    fn only_pushed_messages_are_payloads() {
        let push = |kind: &str, payload: Reply| {
            Reply::Array(vec![
                Reply::Bulk(kind.into()),
                Reply::Bulk(b"ch".to_vec()),
                payload,
            ])
        };
        let message = push("message", Reply::Bulk(b"x".to_vec()));
        assert_eq!(pushed_message(&message), Some(&b"x"[..]));
        assert_eq!(
            pushed_message(&push("message", Reply::TooLong(9))),
            Some(&b""[..])
        );
        assert_eq!(pushed_message(&push("subscribe", Reply::Integer(1))), None);
        assert_eq!(pushed_message(&Reply::Status(b"OK".to_vec())), None);
    }
}
