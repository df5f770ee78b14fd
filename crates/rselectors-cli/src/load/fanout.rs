//! The bookkeeping of `load --chat`: which lines each sender has in
//! flight, what each connection has received from each sender, and the
//! check of every line that arrives.
//!
//! Slots `0..S` are the senders, the others listeners; every slot is also
//! a receiver, since the server relays a line to its sender too. A
//! sender's line carries the sender's id and its sequence number
//! (`<id>.<seq>`, then filler up to `--size` bytes) and every receiver
//! must get it once, after the sender's earlier lines, byte for byte as
//! the chat protocol relays it. A receiver that gets a later line first
//! has skipped the ones between: they no longer hold up the sender, and
//! count as lost unless they come after all (then they came out of order,
//! an error).

use super::report::{Latency, Tally};
use crate::chat_protocol::{self, parse_message, FROM, PREFIX};
use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

/// Text of the handshake lines: `sync <sender id> <round>`.
const SYNC: &[u8] = b"sync ";

/// A line in flight.
#[derive(Debug)]
struct Line {
    sent_at: Instant,
    /// The message every connection must receive, without the newline.
    expected: Vec<u8>,
    /// Connections that have neither received nor skipped it yet.
    waiting: usize,
}

/// One sender's lines.
#[derive(Debug)]
pub(super) struct Sender {
    /// What ends its every message: its address as its server names it
    /// (set once connected; see [`chat_protocol::signature`]).
    signature: Vec<u8>,
    /// The server it sends through (an index into `--addr`).
    server: usize,
    /// Lines in flight, oldest first; the oldest has number `first_seq`.
    in_flight: VecDeque<Line>,
    first_seq: u64,
    /// The first this many lines in flight are late: they no longer hold
    /// the sender back (see [`Fanout::expire`]).
    late: usize,
    /// Bytes queued and not written yet.
    pub out: Vec<u8>,
    /// Its connection failed: its lines no longer count as lost.
    gone: bool,
}

impl Sender {
    /// Number of the next line it sends.
    fn next_seq(&self) -> u64 {
        self.first_seq + self.in_flight.len() as u64
    }

    /// Forgets the oldest lines once every connection has had them.
    fn retire(&mut self) {
        while self.in_flight.front().is_some_and(|l| l.waiting == 0) {
            self.in_flight.pop_front();
            self.first_seq += 1;
            self.late = self.late.saturating_sub(1);
        }
    }
}

/// What one receiver has had from one sender.
#[derive(Debug, Default, Clone)]
struct FromSender {
    /// It received a `sync` line from that sender.
    synced: bool,
    /// It received a measured line (that sender's `sync` lines are over).
    measuring: bool,
    /// Sequence number of the next line it must receive.
    next_seq: u64,
    /// Lines it skipped (a later one came first) and has not had since.
    missing: BTreeSet<u64>,
}

/// One connection as a receiver of lines.
#[derive(Debug)]
struct Receiver {
    /// The server it is connected to (an index into `--addr`).
    server: usize,
    /// It takes part: every line sent waits for it.
    active: bool,
    /// Per sender.
    from: Vec<FromSender>,
}

/// A line a receiver never got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Lost {
    pub slot: usize,
    pub sender: usize,
    pub seq: u64,
}

/// Every sender's lines in flight and what every receiver has had.
#[derive(Debug)]
pub(super) struct Fanout {
    pub senders: Vec<Sender>,
    receivers: Vec<Receiver>,
    /// Bytes of text per line.
    size: usize,
    /// Deliveries to listeners count in the tally (not while draining).
    tallying: bool,
    /// Receivers that take part.
    receiving: usize,
    /// Measured lines sent, by every sender.
    pub lines: u64,
    /// Latency of deliveries to a listener on another server than the
    /// sender's.
    pub cross: Latency,
    /// Lines a receiver got a second time.
    pub dup: u64,
}

impl Fanout {
    /// `senders` senders and `listeners` listeners, on the servers
    /// `server(slot)` names; lines of `size` bytes of text.
    pub fn new(
        senders: usize,
        listeners: usize,
        size: usize,
        server: impl Fn(usize) -> usize,
    ) -> std::io::Result<Fanout> {
        Ok(Fanout {
            senders: (0..senders)
                .map(|slot| Sender {
                    signature: Vec::new(),
                    server: server(slot),
                    in_flight: VecDeque::new(),
                    first_seq: 0,
                    late: 0,
                    out: Vec::new(),
                    gone: false,
                })
                .collect(),
            receivers: (0..senders + listeners)
                .map(|slot| Receiver {
                    server: server(slot),
                    active: false,
                    from: vec![FromSender::default(); senders],
                })
                .collect(),
            size,
            tallying: true,
            receiving: 0,
            lines: 0,
            cross: Latency::new()?,
            dup: 0,
        })
    }

    /// Sender `id` is connected from `addr`.
    pub fn set_sender_addr(&mut self, id: usize, addr: SocketAddr) {
        self.senders[id].signature = chat_protocol::signature(addr);
    }

    /// True if slot `slot` has had a `sync` line from sender `id`.
    pub fn synced(&self, slot: usize, id: usize) -> bool {
        self.receivers[slot].from[id].synced
    }

    /// The server of slot `slot`.
    pub fn server(&self, slot: usize) -> usize {
        self.receivers[slot].server
    }

    /// Queues sender `id`'s `sync` line of round `round`.
    pub fn queue_sync(&mut self, id: usize, round: u64) {
        let out = &mut self.senders[id].out;
        out.extend_from_slice(SYNC);
        out.extend(format!("{id} {round}\n").bytes());
    }

    /// Ends the handshake: the slots `active` says take part from now on.
    pub fn start(&mut self, active: impl Fn(usize) -> bool) {
        for (slot, receiver) in self.receivers.iter_mut().enumerate() {
            receiver.active = active(slot);
        }
        self.receiving = self.receivers.iter().filter(|r| r.active).count();
    }

    /// Stops counting deliveries in the tally (the run is over; what
    /// comes now is only checked).
    pub fn stop_tallying(&mut self) {
        self.tallying = false;
    }

    /// Lines sender `id` has in flight.
    #[cfg(test)]
    fn in_flight(&self, id: usize) -> usize {
        self.senders[id].in_flight.len()
    }

    /// Lines sender `id` has in flight that hold it back: those not late.
    pub fn holding(&self, id: usize) -> usize {
        let sender = &self.senders[id];
        sender.in_flight.len() - sender.late
    }

    /// When sender `id`'s oldest line that is not late yet was sent, if
    /// it is still sending.
    pub fn oldest_on_time(&self, id: usize) -> Option<Instant> {
        let sender = &self.senders[id];
        if sender.gone {
            return None;
        }
        sender.in_flight.get(sender.late).map(|line| line.sent_at)
    }

    /// Sender `id`'s lines sent before `deadline` are late: a line some
    /// connection never gets must not stop its sender for good. They are
    /// still checked when they come, and lost if they never do.
    pub fn expire(&mut self, id: usize, deadline: Instant) {
        let sender = &mut self.senders[id];
        while sender
            .in_flight
            .get(sender.late)
            .is_some_and(|line| line.sent_at < deadline)
        {
            sender.late += 1;
        }
    }

    /// The text of sender `id`'s line `seq`: `<id>.<seq>`, then filler up
    /// to `size` bytes.
    fn text(&self, id: usize, seq: u64) -> Vec<u8> {
        let mut text = format!("{id}.{seq}").into_bytes();
        let filler = (text.len() as u64..self.size as u64).map(|j| b'a' + ((seq + j) % 26) as u8);
        text.extend(filler);
        text
    }

    /// Queues sender `id`'s next measured line.
    pub fn queue_line(&mut self, id: usize, now: Instant) {
        let seq = self.senders[id].next_seq();
        let text = self.text(id, seq);
        let sender = &mut self.senders[id];
        sender.out.extend_from_slice(&text);
        sender.out.push(b'\n');
        let mut expected = Vec::new();
        chat_protocol::write_message_signed(&mut expected, &text, &sender.signature);
        expected.pop(); // the newline
        sender.in_flight.push_back(Line {
            sent_at: now,
            expected,
            waiting: self.receiving,
        });
        sender.retire();
        self.lines += 1;
    }

    /// Handles one complete line (no newline) received by slot `slot`;
    /// the reason if it is wrong.
    pub fn received(
        &mut self,
        slot: usize,
        line: &[u8],
        now: Instant,
        tally: &mut Tally,
    ) -> Result<(), String> {
        let Some(text) = line.strip_prefix(PREFIX) else {
            return Err(format!("not a chat message: {}", show(line)));
        };
        if text.starts_with(SYNC) {
            return self.received_sync(slot, line);
        }
        let senders = self.senders.len();
        let Some((id, seq)) = label(text).filter(|&(id, _)| id < senders) else {
            return Err(format!("not a line of this run: {}", show(line)));
        };
        let receiver = &mut self.receivers[slot];
        let from = &mut receiver.from[id];
        let sender = &mut self.senders[id];
        if seq < from.next_seq {
            if from.missing.remove(&seq) {
                return Err(format!("line {seq} of sender {id} came after later ones"));
            }
            self.dup += 1;
            return Ok(());
        }
        // `from.next_seq` is in flight or next: its line waits for this
        // receiver.
        let index = seq.saturating_sub(sender.first_seq) as usize;
        let Some(sent) = sender.in_flight.get(index) else {
            return Err(format!(
                "line {seq} of sender {id} came before it was sent: {}",
                show(line)
            ));
        };
        if line != sent.expected {
            return Err(format!(
                "line {seq} of sender {id} differs: expected {}, got {}",
                show(&sent.expected),
                show(line)
            ));
        }
        let sent_at = sent.sent_at;
        let first = sender.first_seq;
        for skipped in from.next_seq..seq {
            sender.in_flight[(skipped - first) as usize].waiting -= 1;
            from.missing.insert(skipped);
        }
        sender.in_flight[index].waiting -= 1;
        from.next_seq = seq + 1;
        from.measuring = true;
        if self.tallying && slot >= senders {
            tally.message(sent_at, now);
            if receiver.server != sender.server {
                self.cross.record(sent_at, now);
            }
        }
        sender.retire();
        Ok(())
    }

    /// A `sync` line received by slot `slot`.
    fn received_sync(&mut self, slot: usize, line: &[u8]) -> Result<(), String> {
        let wrong = || format!("not a sync line of this run: {}", show(line));
        let (text, from) = parse_message(line).ok_or_else(wrong)?;
        let id = text[SYNC.len()..]
            .split(|&b| b == b' ')
            .next()
            .and_then(number)
            .and_then(|id| usize::try_from(id).ok())
            .filter(|&id| id < self.senders.len())
            .ok_or_else(wrong)?;
        let signature = &self.senders[id].signature;
        let addr = signature
            .strip_prefix(FROM)
            .and_then(|rest| rest.strip_suffix(b"\n"));
        if addr != Some(from) {
            return Err(wrong());
        }
        let from = &mut self.receivers[slot].from[id];
        if from.measuring {
            return Err(format!(
                "a sync line from sender {id} after its measured lines"
            ));
        }
        from.synced = true;
        Ok(())
    }

    /// Slot `slot`'s connection closed: the lines it still waited for wait
    /// for one connection less, and a sender's lines no longer count as
    /// lost.
    pub fn drop_out(&mut self, slot: usize) {
        if let Some(sender) = self.senders.get_mut(slot) {
            sender.gone = true;
        }
        let receiver = &mut self.receivers[slot];
        if !receiver.active {
            return;
        }
        receiver.active = false;
        self.receiving -= 1;
        for (from, sender) in receiver.from.iter().zip(&mut self.senders) {
            let from_index = from.next_seq.saturating_sub(sender.first_seq) as usize;
            for line in sender.in_flight.iter_mut().skip(from_index) {
                line.waiting -= 1;
            }
            sender.retire();
        }
    }

    /// True when every line of a sender still connected has reached every
    /// connection still taking part (or was skipped by it).
    pub fn delivered(&self) -> bool {
        self.senders
            .iter()
            .all(|s| s.gone || (s.in_flight.is_empty() && s.out.is_empty()))
    }

    /// The lines of senders still connected that a receiver still taking
    /// part never got: how many, and the first.
    pub fn lost(&self) -> (u64, Option<Lost>) {
        let mut count = 0;
        let mut first = None;
        for (slot, receiver) in self.receivers.iter().enumerate() {
            if !receiver.active {
                continue;
            }
            for (id, (from, sender)) in receiver.from.iter().zip(&self.senders).enumerate() {
                if sender.gone {
                    continue;
                }
                let never = sender.next_seq() - from.next_seq;
                count += from.missing.len() as u64 + never;
                let seq = from
                    .missing
                    .first()
                    .copied()
                    .or((never > 0).then_some(from.next_seq));
                if first.is_none() {
                    first = seq.map(|seq| Lost {
                        slot,
                        sender: id,
                        seq,
                    });
                }
            }
        }
        (count, first)
    }
}

/// The sender id and sequence number a measured line's text starts with
/// (`<id>.<seq>`, then filler that is not a digit).
fn label(text: &[u8]) -> Option<(usize, u64)> {
    let dot = text.iter().position(|&b| b == b'.')?;
    let id = usize::try_from(number(&text[..dot])?).ok()?;
    let rest = &text[dot + 1..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    Some((id, number(&rest[..digits])?))
}

/// The number `digits` spells in decimal, if it is one.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// A line for an error message: lossy UTF-8, cut short.
fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]);
    if bytes.len() > 80 {
        format!("{text:?}...")
    } else {
        format!("{text:?}")
    }
}

#[cfg(test)]
mod tests;
