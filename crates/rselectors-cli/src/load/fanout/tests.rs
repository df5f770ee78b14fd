//! The books of `load --chat`, line by line.

use super::{label, Fanout, Lost};
use crate::chat_protocol::message;
use crate::load::report::Tally;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const SENDER_0: &str = "127.0.0.1:1000";
const SENDER_1: &str = "127.0.0.1:1001";

/// Two senders on servers 0 and 1, one listener (slot 2) on server 1,
/// past the handshake; lines of 16 bytes of text.
fn fanout() -> Fanout {
    let mut fanout = Fanout::new(2, 1, 16, |slot| slot % 2).unwrap();
    fanout.set_sender_addr(0, SENDER_0.parse().unwrap());
    fanout.set_sender_addr(1, SENDER_1.parse().unwrap());
    fanout.start(|_| true);
    fanout
}

/// What a receiver gets for sender `id`'s line `seq`.
fn relayed(fanout: &Fanout, id: usize, seq: u64) -> Vec<u8> {
    let addr: SocketAddr = [SENDER_0, SENDER_1][id].parse().unwrap();
    let mut line = message(&fanout.text(id, seq), addr);
    line.pop();
    line
}

/// Slot `slot` receives sender `id`'s line `seq`, as relayed.
fn deliver(fanout: &mut Fanout, slot: usize, id: usize, seq: u64) -> Result<(), String> {
    let line = relayed(fanout, id, seq);
    receive(fanout, slot, &line)
}

fn receive(fanout: &mut Fanout, slot: usize, line: &[u8]) -> Result<(), String> {
    fanout.received(slot, line, Instant::now(), &mut Tally::new().unwrap())
}

#[test]
fn a_line_names_its_sender_and_number() {
    let fanout = fanout();
    let text = fanout.text(1, 42);
    assert_eq!(text.len(), 16);
    assert!(text.starts_with(b"1.42"), "{text:?}");
    assert_eq!(label(&text), Some((1, 42)));
    assert_eq!(label(b"1.x"), None);
    assert_eq!(label(b"x.1"), None);
    assert_eq!(label(b"99999999999999999999.1"), None);
}

#[test]
fn every_receiver_gets_every_line_once_then_it_retires() {
    let mut fanout = fanout();
    let now = Instant::now();
    fanout.queue_line(0, now);
    fanout.queue_line(1, now);
    assert_eq!(fanout.senders[0].out, b"0.0defghijklmnop\n");
    for sender in &mut fanout.senders {
        sender.out.clear(); // written
    }
    for slot in 0..3 {
        for id in 0..2 {
            let line = relayed(&fanout, id, 0);
            receive(&mut fanout, slot, &line).unwrap();
        }
    }
    assert_eq!((fanout.in_flight(0), fanout.in_flight(1)), (0, 0));
    assert!(fanout.delivered());
    assert_eq!(fanout.lost(), (0, None));
    // The listener is on server 1: sender 0's line crossed.
    assert!(fanout.cross.quantile_us(0.5) > 0.0);
}

#[test]
fn a_skipped_line_is_lost_unless_it_comes_late_which_is_an_error() {
    let mut fanout = fanout();
    let now = Instant::now();
    for _ in 0..3 {
        fanout.queue_line(0, now);
    }
    let line_2 = relayed(&fanout, 0, 2);
    receive(&mut fanout, 2, &line_2).unwrap();
    // Lines 0 and 1 no longer wait for slot 2.
    let lost = fanout.lost();
    // Slots 0 and 1 never got any of the 3; slot 2 skipped 2.
    assert_eq!(lost.0, 3 + 3 + 2);
    assert_eq!(
        lost.1,
        Some(Lost {
            slot: 0,
            sender: 0,
            seq: 0
        })
    );
    let line_0 = relayed(&fanout, 0, 0);
    let late = receive(&mut fanout, 2, &line_0).unwrap_err();
    assert!(late.contains("came after later ones"), "{late}");
    // Slots 0 and 1 get all three: only slot 2's line 1 is missing.
    for slot in 0..2 {
        for seq in 0..3 {
            let line = relayed(&fanout, 0, seq);
            receive(&mut fanout, slot, &line).unwrap();
        }
    }
    assert_eq!(fanout.in_flight(0), 0, "skipped lines do not hold it up");
    assert_eq!(fanout.lost().0, 1);
}

#[test]
fn a_second_copy_is_a_duplicate_and_wrong_bytes_an_error() {
    let mut fanout = fanout();
    fanout.queue_line(0, Instant::now());
    let line = relayed(&fanout, 0, 0);
    receive(&mut fanout, 2, &line).unwrap();
    receive(&mut fanout, 2, &line).unwrap();
    assert_eq!(fanout.dup, 1);
    let mut wrong = line.clone();
    *wrong.last_mut().unwrap() ^= 1;
    let differs = receive(&mut fanout, 1, &wrong).unwrap_err();
    assert!(differs.contains("line 0 of sender 0 differs"), "{differs}");
    let early = deliver(&mut fanout, 1, 0, 1).unwrap_err();
    assert!(early.contains("came before it was sent"), "{early}");
    let foreign = receive(&mut fanout, 1, b"hello").unwrap_err();
    assert!(foreign.contains("not a chat message"), "{foreign}");
}

#[test]
fn sync_lines_mark_their_sender_and_end_with_its_measured_lines() {
    let mut fanout = Fanout::new(2, 1, 16, |slot| slot % 2).unwrap();
    fanout.set_sender_addr(0, SENDER_0.parse().unwrap());
    fanout.set_sender_addr(1, SENDER_1.parse().unwrap());
    fanout.queue_sync(1, 7);
    assert_eq!(fanout.senders[1].out, b"sync 1 7\n");
    let sync = |addr: &str| {
        let mut line = message(b"sync 1 7", addr.parse().unwrap());
        line.pop();
        line
    };
    receive(&mut fanout, 2, &sync(SENDER_1)).unwrap();
    assert!(fanout.synced(2, 1) && !fanout.synced(2, 0));
    // From another address than the sender's: wrong.
    assert!(receive(&mut fanout, 2, &sync(SENDER_0)).is_err());
    fanout.start(|_| true);
    fanout.queue_line(1, Instant::now());
    deliver(&mut fanout, 2, 1, 0).unwrap();
    let after = receive(&mut fanout, 2, &sync(SENDER_1)).unwrap_err();
    assert!(after.contains("after its measured lines"), "{after}");
}

#[test]
fn a_late_line_stops_holding_its_sender_back_and_may_still_come() {
    let mut fanout = fanout();
    let sent = Instant::now();
    fanout.queue_line(0, sent);
    fanout.queue_line(0, sent + Duration::from_secs(1));
    assert_eq!(fanout.holding(0), 2);
    fanout.expire(0, sent + Duration::from_millis(1));
    assert_eq!((fanout.holding(0), fanout.in_flight(0)), (1, 2));
    assert_eq!(fanout.lost().0, 6, "still missing, not lost for good yet");
    for slot in 0..3 {
        deliver(&mut fanout, slot, 0, 0).unwrap();
    }
    assert_eq!((fanout.holding(0), fanout.in_flight(0)), (1, 1));
    assert_eq!(fanout.lost().0, 3);
}

#[test]
fn a_connection_that_drops_out_holds_nothing_up() {
    let mut fanout = fanout();
    fanout.queue_line(0, Instant::now());
    for slot in 0..2 {
        deliver(&mut fanout, slot, 0, 0).unwrap();
    }
    fanout.drop_out(2);
    assert_eq!(fanout.in_flight(0), 0);
    // A sender that drops out: its lines are not lost.
    fanout.queue_line(0, Instant::now());
    fanout.drop_out(0);
    assert_eq!(fanout.lost().0, 0);
    assert!(fanout.delivered());
}
