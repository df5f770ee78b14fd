//! The publishing half of the link: this server's messages go out in
//! envelopes, in order, through a bounded queue.

use super::envelope::{self, Origin};
use super::redis::{Failure, Redis};
use super::resp::{self, Reply};
use super::{
    BrokerUrl, Half, Mode, Role, Throttled, Watch, HEARTBEAT, REPLY_TIMEOUT, STREAM_MAXLEN,
};
use crate::logging::warning;
use rselectors::Events;
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::time::Instant;

/// What a publisher command was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    Auth,
    Select,
    /// The last of the handshake, and the heartbeat.
    Ping,
    Envelope,
}

/// An envelope on its way to the broker, as the command that sends it.
#[derive(Debug)]
struct Queued {
    command: Vec<u8>,
    lines: usize,
}

/// What became of a body handed to [`Publisher::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Queued,
    /// Not forwarded: the link is down (pubsub).
    Dropped,
    /// Not forwarded: the queue is full.
    Full,
}

/// The connection that publishes, and what waits for it.
#[derive(Debug)]
pub struct Publisher {
    redis: Redis<Sent>,
    /// The handshake is done: envelopes may go.
    ready: bool,
    mode: Mode,
    /// The channel or stream key.
    key: Vec<u8>,
    origin: Origin,
    /// The last envelope number used.
    seq: u64,
    /// Envelopes for the broker; the first `in_flight` are sent and not
    /// answered yet.
    queue: VecDeque<Queued>,
    in_flight: usize,
    queued_bytes: usize,
    /// The most bytes the queue may hold.
    limit: usize,
    /// Lines the broker took.
    pub sent: u64,
    /// Lines not forwarded.
    pub dropped: u64,
    refused_warning: Throttled,
}

impl Publisher {
    pub fn new(mode: Mode, key: Vec<u8>, origin: Origin, limit: usize) -> Publisher {
        Publisher {
            redis: Redis::new(Role::Publisher, 4096),
            ready: false,
            mode,
            key,
            origin,
            seq: 0,
            queue: VecDeque::new(),
            in_flight: 0,
            queued_bytes: 0,
            limit,
            sent: 0,
            dropped: 0,
            refused_warning: Throttled::default(),
        }
    }

    pub fn fd(&self) -> Option<RawFd> {
        self.redis.fd()
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The channel or stream it publishes to.
    pub fn key(&self) -> String {
        String::from_utf8_lossy(&self.key).into_owned()
    }

    /// True if nothing waits for the broker.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Lines waiting for the broker (queued, or sent and not answered).
    pub fn queued_lines(&self) -> u64 {
        self.queue.iter().map(|q| q.lines as u64).sum()
    }

    /// Seals `body` (whole messages) into the next envelope and queues it,
    /// unless it is not to be forwarded (then its lines count as dropped).
    pub fn enqueue(&mut self, body: &[u8]) -> Enqueued {
        let lines = memchr::memchr_iter(b'\n', body).count();
        if self.mode == Mode::Pubsub && !self.ready {
            self.dropped += lines as u64;
            return Enqueued::Dropped;
        }
        if self.queued_bytes + body.len() > self.limit {
            self.dropped += lines as u64;
            return Enqueued::Full;
        }
        self.seq += 1;
        // The envelope is written into the command in place.
        let header = envelope::header(self.origin, self.seq);
        let envelope: [&[u8]; 2] = [&header, body];
        let mut command = Vec::with_capacity(header.len() + body.len() + 96);
        match self.mode {
            Mode::Pubsub => {
                resp::command_ending_with(&mut command, &[b"PUBLISH", &self.key], &envelope)
            }
            Mode::Streams => {
                let maxlen = STREAM_MAXLEN.to_string();
                let xadd: [&[u8]; 7] = [
                    b"XADD",
                    &self.key,
                    b"MAXLEN",
                    b"~",
                    maxlen.as_bytes(),
                    b"*",
                    b"m",
                ];
                resp::command_ending_with(&mut command, &xadd, &envelope);
            }
        }
        self.queued_bytes += command.len();
        self.queue.push_back(Queued { command, lines });
        Enqueued::Queued
    }

    /// Sends what is queued and not sent yet, as far as the socket takes it.
    pub fn flush(&mut self, now: Instant, w: &mut impl Watch) -> Result<(), Failure> {
        if self.ready {
            while self.in_flight < self.queue.len() {
                let queued = &self.queue[self.in_flight];
                self.redis.queue(&queued.command, Sent::Envelope, now);
                self.in_flight += 1;
            }
        }
        self.redis.flush(w)
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
            match (self.redis.answered(now), reply) {
                (Some(Sent::Envelope), reply) => self.answered(reply, url, now),
                (Some(_), Reply::Error(e)) => return Err(Failure::Refused(e)),
                (Some(Sent::Ping), reply) if reply.bytes() != Some(b"PONG") => {
                    return Err(Failure::unexpected(&reply))
                }
                (Some(Sent::Ping), _) if !self.ready => {
                    self.ready = true;
                    became_ready = true;
                    self.redis.settled();
                }
                (Some(_), _) => {}
                (None, reply) => return Err(Failure::unexpected(&reply)),
            }
        }
        self.flush(now, w)?;
        Ok(became_ready)
    }

    /// The broker answered the oldest envelope in flight.
    fn answered(&mut self, reply: Reply, url: &BrokerUrl, now: Instant) {
        let Some(queued) = self.queue.pop_front() else {
            return;
        };
        self.in_flight = self.in_flight.saturating_sub(1);
        self.queued_bytes -= queued.command.len();
        if let Reply::Error(e) = reply {
            self.dropped += queued.lines as u64;
            if let Some(refused) = self.refused_warning.due(now) {
                warning!(
                    "broker {url} refused {refused} envelopes of lines for the other \
                     servers (dropped); the last error: {e}"
                );
            }
        } else {
            self.sent += queued.lines as u64;
        }
    }

    /// Pings the broker if nothing was sent for a [`HEARTBEAT`], so that a
    /// dead link is found without waiting for TCP; gives up on a
    /// connection or reply that is overdue.
    pub fn check(&mut self, now: Instant, w: &mut impl Watch) -> Result<(), Failure> {
        if let Some(failure) = self.redis.overdue(now, REPLY_TIMEOUT) {
            return Err(failure);
        }
        if self.ready && self.redis.idle_for(now, HEARTBEAT) {
            self.redis
                .queue(&resp::command_bytes(&[b"PING"]), Sent::Ping, now);
            self.redis.flush(w)?;
        }
        Ok(())
    }

    /// When it next needs [`Publisher::check`] or a connection attempt.
    pub fn deadline(&self) -> Instant {
        self.redis.deadline(REPLY_TIMEOUT, HEARTBEAT)
    }

    /// Closes the connection until the next attempt. Envelopes in flight
    /// may or may not have been taken: in streams mode they are sent
    /// again (receivers deliver each once); in pubsub mode they and the
    /// rest of the queue are dropped.
    pub fn failed(&mut self, w: &mut impl Watch, now: Instant, jitter: f64) {
        self.redis.close(w, now, jitter);
        self.ready = false;
        self.in_flight = 0;
        if self.mode == Mode::Pubsub {
            self.dropped += self.queued_lines();
            self.queue.clear();
            self.queued_bytes = 0;
        }
    }
}

impl Half for Publisher {
    type Request = Sent;

    fn redis(&mut self) -> &mut Redis<Sent> {
        &mut self.redis
    }

    /// The handshake: `AUTH` and `SELECT` as `url` asks, then `PING`,
    /// whose answer makes it ready.
    fn connected(
        &mut self,
        url: &BrokerUrl,
        now: Instant,
        w: &mut impl Watch,
    ) -> Result<(), Failure> {
        self.redis.handshake(url, Sent::Auth, Sent::Select, now);
        self.redis
            .queue(&resp::command_bytes(&[b"PING"]), Sent::Ping, now);
        self.redis.flush(w)
    }
}
