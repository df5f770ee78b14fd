//! `load --chat N`: broadcast fan-out of one chat server, or of several
//! sharing a room (`--addr` given once per server).
//!
//! N listening connections and S senders (`--senders`, by default one
//! per server), each spread round-robin over the servers. Each sender
//! keeps `--pipeline` lines in flight: it sends the next one when a line
//! has reached every connection (the senders included, since a server
//! echoes to the sender too), so the servers' backlogs stay bounded
//! however slow they are; a line still missing somewhere after 2 s no
//! longer holds its sender back (it counts as lost if it never comes).
//! Every connection must receive every line of every sender once, after
//! that sender's earlier lines, byte for byte as the chat protocol
//! ([`crate::chat_protocol`]) relays it, naming the sender's address as
//! its own server sees it ([`super::fanout`] keeps the books). A delivery
//! is one line arriving at one listener; its latency runs from the moment
//! the sender queued it. Deliveries to a listener on another server than
//! the sender's are also measured apart: the cross-server latency.
//!
//! A connection that a server has not registered yet would miss lines, as
//! would one on a server whose link to the others has not joined yet, so
//! the run starts with a handshake: every sender sends `sync` lines until
//! every connection has received one from every sender. A server that
//! delivers nothing from another's senders in time ends the run with an
//! error naming both.
//!
//! After `--duration` the senders stop; lines still in flight get 2 s to
//! arrive (they are checked, not counted as deliveries), then every line
//! a connection never got counts as lost.

use super::fanout::Fanout;
use super::harness::{failed, Load, Workload};
use super::report::{per_second, Summary, Tally};
use super::{Outcome, Settings};
use crate::chat_protocol::{MAX_LINE, MAX_MESSAGE};
use crate::conn::{Next, CONNECT_TIMEOUT, READ_CHUNK};
use crate::logging::warning;
use rselectors::Events;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How often the senders repeat their `sync` lines during the handshake.
const SYNC_EVERY: Duration = Duration::from_millis(20);

/// How long the handshake may take (a server's link to the others may
/// still be joining).
const SYNC_TIMEOUT: Duration = CONNECT_TIMEOUT;

/// How long a line may take to reach every connection: after this it no
/// longer holds its sender back, and after the run the lines in flight
/// get this long to arrive before those missing count as lost.
const LATE: Duration = Duration::from_secs(2);

/// The most (connection, sender) pairs: each connection keeps a count per
/// sender.
const MAX_PAIRS: usize = 10_000_000;

/// The chat workload: the books, a partial line per slot, and the buffer
/// every read goes to.
#[derive(Debug)]
struct Chat {
    fanout: Fanout,
    /// Received bytes of a line not complete yet, per slot.
    partials: Vec<Vec<u8>>,
    read_buf: Vec<u8>,
    /// Lines each sender keeps in flight (`--pipeline`).
    window: usize,
    /// Senders: slots `0..senders`; listeners after them.
    senders: usize,
    /// The servers, as `--addr` gave them.
    servers: Vec<SocketAddr>,
}

impl Chat {
    /// Slots in all.
    fn slots(&self) -> usize {
        self.partials.len()
    }

    /// READ, plus WRITE for a sender while it has bytes queued.
    fn interest(&self, slot: usize) -> Events {
        match self.fanout.senders.get(slot) {
            Some(sender) if !sender.out.is_empty() => Events::READ | Events::WRITE,
            _ => Events::READ,
        }
    }

    /// How an error message names server `server`.
    fn describe_server(&self, server: usize) -> String {
        format!("server {} ({})", server + 1, self.servers[server])
    }

    /// One write of what sender `id` has queued, on its `stream`.
    fn write_queued(&mut self, id: usize, stream: &TcpStream) -> Next {
        let out = &mut self.fanout.senders[id].out;
        if out.is_empty() {
            return Next::Keep;
        }
        match (&*stream).write(out) {
            Ok(n) => {
                out.drain(..n);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return failed("write", e),
        }
        Next::Wait(self.interest(id))
    }

    /// One read on slot `slot`'s `stream`, and the lines it completes.
    fn read(&mut self, slot: usize, stream: &TcpStream, tally: &mut Tally) -> io::Result<()> {
        let n = match (&*stream).read(&mut self.read_buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ))
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("read: {e}"))),
        };
        let now = Instant::now();
        let mut partial = std::mem::take(&mut self.partials[slot]);
        let mut outcome = Ok(());
        let mut rest = &self.read_buf[..n];
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let line = if partial.is_empty() {
                &rest[..end]
            } else {
                partial.extend_from_slice(&rest[..end]);
                &partial[..]
            };
            outcome = self.fanout.received(slot, line, now, tally);
            partial.clear();
            rest = &rest[end + 1..];
            if outcome.is_err() {
                break;
            }
        }
        if outcome.is_ok() {
            partial.extend_from_slice(rest);
            if partial.len() >= MAX_MESSAGE {
                outcome = Err(format!("a line longer than {} bytes", MAX_MESSAGE - 1));
            }
        }
        self.partials[slot] = partial;
        outcome.map_err(|why| io::Error::new(io::ErrorKind::InvalidData, why))
    }
}

impl Workload for Chat {
    fn name(&self, slot: usize) -> String {
        let name = match slot {
            0 if self.senders == 1 => "the sender".to_owned(),
            _ if slot < self.senders => format!("sender {slot}"),
            _ => format!("listener {}", slot - self.senders + 1),
        };
        if self.servers.len() > 1 {
            format!("{name} on {}", self.describe_server(self.server(slot)))
        } else {
            name
        }
    }

    fn server(&self, slot: usize) -> usize {
        self.fanout.server(slot)
    }

    fn connected(&mut self, slot: usize, _stream: &TcpStream, _tally: &mut Tally) -> Next {
        Next::Wait(self.interest(slot))
    }

    fn ready(&mut self, slot: usize, stream: &TcpStream, mask: Events, tally: &mut Tally) -> Next {
        let mut next = Next::Keep;
        if mask.contains(Events::WRITE) && slot < self.senders {
            next = self.write_queued(slot, stream);
            if let Next::Failed(_) = next {
                return next;
            }
        }
        if mask.contains(Events::READ) {
            if let Err(e) = self.read(slot, stream, tally) {
                return Next::Failed(e);
            }
        }
        next
    }

    fn closed(&mut self, slot: usize, _failed: bool, _now: Instant) -> Option<Duration> {
        self.fanout.drop_out(slot);
        None
    }

    /// When a sender's oldest line becomes late.
    fn wake_at(&self) -> Option<Instant> {
        (0..self.senders)
            .filter_map(|id| self.fanout.oldest_on_time(id))
            .min()
            .map(|sent_at| sent_at + LATE)
    }

    /// Ends the run once every sender or every listener is gone; else
    /// keeps `--pipeline` lines in flight from each sender.
    fn before_wait(load: &mut Load<Chat>, now: Instant) -> bool {
        let (senders, slots) = (load.work.senders, load.work.slots());
        if !(senders..slots).any(|slot| load.is_open(slot)) {
            return false;
        }
        let mut sending = false;
        for id in 0..senders {
            if !load.is_open(id) {
                continue;
            }
            sending = true;
            if let Some(deadline) = now.checked_sub(LATE) {
                load.work.fanout.expire(id, deadline);
            }
            let room = load
                .work
                .window
                .saturating_sub(load.work.fanout.holding(id));
            for _ in 0..room {
                load.work.fanout.queue_line(id, now);
            }
            if room > 0 {
                load.act(id, |chat, stream, _| chat.write_queued(id, stream));
            }
        }
        sending
    }
}

impl Load<Chat> {
    /// Sends `sync` lines until every connection has received one from
    /// every sender; an error if a server delivered nothing from
    /// another's senders in time.
    fn handshake(&mut self) -> io::Result<()> {
        let (senders, slots) = (self.work.senders, self.work.slots());
        let give_up = Instant::now() + SYNC_TIMEOUT;
        let mut next_sync = Instant::now();
        let mut round = 0u64;
        loop {
            let now = Instant::now();
            if self.unsynced().next().is_none() || now >= give_up {
                break;
            }
            if now >= next_sync {
                round += 1;
                for id in 0..senders {
                    if !self.is_open(id) {
                        continue;
                    }
                    self.work.fanout.queue_sync(id, round);
                    self.act(id, |chat, stream, _| chat.write_queued(id, stream));
                }
                next_sync = now + SYNC_EVERY;
            }
            self.poll_events(next_sync.min(give_up).saturating_duration_since(now))?;
        }
        self.silent_servers()?;
        let unsynced: Vec<(usize, usize)> = self.unsynced().collect();
        for pairs in unsynced.chunk_by(|a, b| a.0 == b.0) {
            let slot = pairs[0].0;
            if senders == 1 {
                self.fail(slot, "no sync line came in time");
            } else {
                let from: Vec<String> = pairs.iter().map(|(_, id)| id.to_string()).collect();
                let from = from.join(", ");
                self.fail(
                    slot,
                    format_args!("no sync line came in time from sender {from}"),
                );
            }
        }
        let open: Vec<bool> = (0..slots).map(|slot| self.is_open(slot)).collect();
        self.work.fanout.start(|slot| open[slot]);
        Ok(())
    }

    /// The (slot, sender) pairs, both open, where the slot has not had a
    /// `sync` line from the sender yet.
    fn unsynced(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.work.slots())
            .filter(|&slot| self.is_open(slot))
            .flat_map(move |slot| {
                (0..self.work.senders)
                    .filter(move |&id| self.is_open(id) && !self.work.fanout.synced(slot, id))
                    .map(move |id| (slot, id))
            })
    }

    /// An error naming every server that delivered no `sync` line from
    /// the senders of another server, if any did not.
    fn silent_servers(&self) -> io::Result<()> {
        let fanout = &self.work.fanout;
        let servers = self.work.servers.len();
        let open_on = |server: usize, range: std::ops::Range<usize>| -> Vec<usize> {
            range
                .filter(|&slot| self.is_open(slot) && fanout.server(slot) == server)
                .collect()
        };
        let mut silent = Vec::new();
        for from in 0..servers {
            let senders = open_on(from, 0..self.work.senders);
            for to in (0..servers).filter(|&to| to != from) {
                let receivers = open_on(to, 0..self.work.slots());
                let reached = receivers
                    .iter()
                    .any(|&slot| senders.iter().any(|&id| fanout.synced(slot, id)));
                if !senders.is_empty() && !receivers.is_empty() && !reached {
                    silent.push(format!(
                        "{} delivered no line sent through {}",
                        self.work.describe_server(to),
                        self.work.describe_server(from)
                    ));
                }
            }
        }
        if silent.is_empty() {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "handshake: in {} s, {} (do the servers share a broker and room?)",
                SYNC_TIMEOUT.as_secs(),
                silent.join("; ")
            ),
        ))
    }

    /// Lets the lines in flight arrive, for at most [`LATE`].
    fn drain(&mut self) -> io::Result<()> {
        self.work.fanout.stop_tallying();
        let give_up = Instant::now() + LATE;
        loop {
            let now = Instant::now();
            if self.work.fanout.delivered() || now >= give_up {
                return Ok(());
            }
            self.poll_events(give_up - now)?;
        }
    }

    /// Counts the lines lost and got twice: apart when the summary shows
    /// them, else as errors.
    fn lost_and_dup(&mut self, apart: bool) -> Outcome {
        let (lost, first) = self.work.fanout.lost();
        let dup = self.work.fanout.dup;
        let first = first.map(|l| {
            let sender = if self.work.senders == 1 {
                String::new()
            } else {
                format!(" of sender {}", l.sender)
            };
            let name = self.work.name(l.slot);
            format!("{name} never got line {}{sender}", l.seq)
        });
        let secs = LATE.as_secs();
        if apart {
            if let Some(first) = first {
                let lost = lines(lost);
                warning!("{lost} lost ({secs} s after the end): {first}");
            }
            if dup > 0 {
                warning!("{} came twice", lines(dup));
            }
            return Outcome {
                errors: self.tally.errors,
                lost,
                dup,
            };
        }
        if let Some(first) = first {
            let described = lines(lost);
            self.tally.errors(
                lost,
                format_args!("{described} lost ({secs} s after the end): {first}"),
            );
        }
        self.tally
            .errors(dup, format_args!("{} came twice", lines(dup)));
        Outcome {
            errors: self.tally.errors,
            ..Outcome::default()
        }
    }
}

/// `1 line`, `2 lines`.
fn lines(count: u64) -> String {
    match count {
        1 => "1 line".to_owned(),
        _ => format!("{count} lines"),
    }
}

/// Runs the chat fan-out measurement; what went wrong.
pub fn run(settings: &Settings) -> io::Result<Outcome> {
    if settings.size > MAX_LINE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--size {} is over {MAX_LINE}, the chat server's line limit (--chat)",
                settings.size
            ),
        ));
    }
    let (senders, servers) = (settings.senders, settings.addrs.len());
    let slots = senders + settings.conns;
    if senders.saturating_mul(slots) > MAX_PAIRS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--senders {senders} with {slots} connections: at most {MAX_PAIRS} \
                 (connection, sender) pairs"
            ),
        ));
    }
    let server = |slot: usize| {
        let nth = if slot < senders { slot } else { slot - senders };
        nth % servers
    };
    let chat = Chat {
        fanout: Fanout::new(senders, settings.conns, settings.size, server)?,
        partials: vec![Vec::new(); slots],
        read_buf: vec![0; READ_CHUNK],
        window: settings.pipeline,
        senders,
        servers: settings.addrs.clone(),
    };
    let mut load = Load::new(settings, slots, chat)?;
    load.connect_all()?;
    for id in 0..senders {
        if let Some(stream) = load.stream(id) {
            let addr = stream.local_addr()?;
            load.work.fanout.set_sender_addr(id, addr);
        }
    }
    load.handshake()?;
    let elapsed = load.run_for(settings.duration, |_, _| {})?;
    load.drain()?;
    // One server and one sender: today's summary, every problem an error.
    let apart = servers > 1 || senders > 1;
    let outcome = load.lost_and_dup(apart);
    let fanout = &load.work.fanout;
    let mut extra = format!(
        " lines={} deliveries_per_s={:.1}",
        fanout.lines,
        per_second(load.tally.msgs, elapsed)
    );
    if apart {
        extra += &format!(
            " servers={servers} senders={senders} xp50_us={:.1} xp99_us={:.1} xp999_us={:.1} \
             lost={} dup={}",
            fanout.cross.quantile_us(0.5),
            fanout.cross.quantile_us(0.99),
            fanout.cross.quantile_us(0.999),
            outcome.lost,
            outcome.dup
        );
    }
    Summary {
        settings,
        mode: "chat",
        tally: &load.tally,
        elapsed,
        extra,
    }
    .print();
    Ok(outcome)
}
