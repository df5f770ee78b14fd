//! The chat server's coalesced fan-out: lines read in one round go to
//! each client with one write, and still every client gets every line
//! exactly once, byte for byte, in each sender's order.

mod common;

use common::chat_protocol::{self, LINE_TOO_LONG, MAX_LINE};
use common::*;
use std::net::SocketAddr;
use std::thread;

/// `count` distinct lines from sender `tag`, of varied lengths and bytes
/// (not all UTF-8), as one write's worth.
fn burst(tag: u8, count: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut wire = Vec::new();
    let mut lines = Vec::new();
    for i in 0..count {
        let mut line = format!("{tag}:{i}:").into_bytes();
        line.extend((0..i % 97).map(|j| b"abc\xff\xfe xyz"[(i + j) % 9]));
        wire.extend_from_slice(&line);
        wire.push(b'\n');
        lines.push(line);
    }
    (wire, lines)
}

/// Reads `count` lines from `peer`.
fn read_messages(peer: &mut Peer, count: usize) -> Vec<Vec<u8>> {
    (0..count).map(|_| peer.read_line()).collect()
}

/// The lines of the `received` messages that `sender` sent, in order.
fn from_sender(received: &[Vec<u8>], sender: SocketAddr) -> Vec<Vec<u8>> {
    let sender = sender.to_string();
    received
        .iter()
        .filter_map(|message| {
            let message = message.strip_suffix(b"\n").unwrap();
            let (line, from) = chat_protocol::parse_message(message)
                .unwrap_or_else(|| panic!("not a chat message: {message:?}"));
            (from == sender.as_bytes()).then(|| line.to_vec())
        })
        .collect()
}

/// A sender writes thousands of lines in one write; with one loop and
/// with three, every listener (the sender too) gets each exactly once, in
/// order, byte for byte.
#[test]
fn a_burst_in_one_write_reaches_every_listener_once_in_order() {
    for threads in ["1", "3"] {
        let server = start_on_loopback("chat-server", &["--threads", threads]);
        let mut peers = join(&server, 12);
        let sender = peers[0].local_addr();
        let (wire, lines) = burst(0, 5_000);
        peers[0].send(&wire);
        for (i, peer) in peers.iter_mut().enumerate() {
            let received = read_messages(peer, lines.len());
            assert_eq!(
                from_sender(&received, sender),
                lines,
                "listener {i}, --threads {threads}"
            );
        }
    }
}

/// Several senders burst at once: each listener gets all their lines,
/// each sender's in its order, whatever the interleaving.
#[test]
fn concurrent_bursts_keep_each_senders_order() {
    for threads in ["1", "2"] {
        let server = start_on_loopback("chat-server", &["--threads", threads]);
        let mut peers = join(&server, 8);
        let senders: Vec<SocketAddr> = peers[..3].iter().map(Peer::local_addr).collect();
        let bursts: Vec<_> = (0..3).map(|tag| burst(tag, 2_000)).collect();
        thread::scope(|scope| {
            for (peer, (wire, _)) in peers.iter().zip(&bursts) {
                let mut stream = peer.stream.try_clone().unwrap();
                scope.spawn(move || std::io::Write::write_all(&mut stream, wire).unwrap());
            }
        });
        let total = bursts.iter().map(|(_, lines)| lines.len()).sum();
        for (i, peer) in peers.iter_mut().enumerate() {
            let received = read_messages(peer, total);
            for (sender, (_, lines)) in senders.iter().zip(&bursts) {
                assert_eq!(
                    &from_sender(&received, *sender),
                    lines,
                    "listener {i}, sender {sender}, --threads {threads}"
                );
            }
        }
    }
}

/// A line and `quit` in one write: the sender gets its own line (sent in
/// the same round) before the server closes the connection.
#[test]
fn a_line_then_quit_in_one_write_is_delivered_first() {
    let server = start_on_loopback("chat-server", &[]);
    let mut peers = join(&server, 2);
    let from = peers[0].local_addr();
    peers[0].send(b"goodbye, all\nquit\n");
    let expected = chat_protocol::message(b"goodbye, all", from);
    assert_eq!(peers[0].read_to_close(), expected);
    assert_eq!(peers[1].read_line(), expected);
}

/// Lines before an over-long one in the same write arrive before the
/// error line, and the other clients get them too.
#[test]
fn lines_before_a_too_long_one_come_before_the_error() {
    let server = start_on_loopback("chat-server", &[]);
    let mut peers = join(&server, 2);
    let from = peers[0].local_addr();
    let mut wire = b"first\nsecond\n".to_vec();
    wire.extend(std::iter::repeat_n(b'x', MAX_LINE + 1));
    wire.push(b'\n');
    peers[0].send(&wire);
    let mut expected = chat_protocol::message(b"first", from);
    expected.extend(chat_protocol::message(b"second", from));
    assert_eq!(peers[1].read_line(), chat_protocol::message(b"first", from));
    assert_eq!(
        peers[1].read_line(),
        chat_protocol::message(b"second", from)
    );
    expected.extend_from_slice(LINE_TOO_LONG);
    assert_eq!(peers[0].read_exact(expected.len()), expected);
}

/// With a backlog cap, a listener that never reads is cut off during a
/// long run of bursts, while listeners that read get every line in order.
#[test]
fn a_listener_that_never_reads_is_cut_off_and_the_others_get_everything() {
    let server = start_on_loopback(
        "chat-server",
        &["--threads", "2", "--max-backlog", "131072"],
    );
    let mut peers = join(&server, 5);
    let mut idle = peers.pop().unwrap();
    let sender = peers[0].local_addr();
    let rounds: Vec<_> = (0..40).map(|r| burst(r, 2_000)).collect();
    let expected: Vec<Vec<u8>> = rounds.iter().flat_map(|(_, l)| l.clone()).collect();
    let mut writer = peers[0].stream.try_clone().unwrap();
    thread::scope(|scope| {
        scope.spawn(|| {
            for (wire, _) in &rounds {
                std::io::Write::write_all(&mut writer, wire).unwrap();
            }
        });
        for (i, peer) in peers.iter_mut().enumerate() {
            let expected = &expected;
            scope.spawn(move || {
                let received = read_messages(peer, expected.len());
                assert_eq!(&from_sender(&received, sender), expected, "listener {i}");
            });
        }
    });
    server.wait_stderr_line("backlog over the limit");
    let got = idle.read_to_close();
    let sent: usize = expected.iter().map(|line| line.len()).sum();
    assert!(got.len() < sent, "{} of {sent} bytes", got.len());
}
