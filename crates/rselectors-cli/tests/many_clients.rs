//! The servers under many clients: running out of file descriptors,
//! bursts of clients, and a thousand clients at once.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

const CLIENTS: usize = 1000;

fn prlimit_available() -> bool {
    Command::new("prlimit")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Skips (with a note) unless this process may open `needed` files.
fn enough_fds(needed: u64) -> bool {
    let limit = open_files_limit();
    if limit < needed {
        eprintln!("note: the open-files limit is {limit}, below {needed}; skipping");
    }
    limit >= needed
}

#[test]
fn out_of_file_descriptors_keeps_serving_without_spinning_and_recovers() {
    if !prlimit_available() {
        eprintln!("note: prlimit (util-linux) not found; skipping the EMFILE test");
        return;
    }
    // 64 descriptors: a handful for stdio, the selector, the waker and the
    // listener, and room for a few dozen clients.
    let mut command = Command::new("prlimit");
    command
        .args(["--nofile=64:64", BIN])
        .args(loopback_args("echo-server", &[]));
    let server = start_server_command(command, Stdio::null());

    // More clients than the server can take: the kernel queues the rest.
    let mut peers: Vec<Peer> = (0..90).map(|_| Peer::connect(server.addr)).collect();
    server.wait_stderr_line("cannot accept: Too many open files");
    let accepted = server.stderr().matches("] connected ").count();
    assert!(accepted > 20 && accepted < 64, "{accepted} accepted");

    // Existing clients are still served.
    peers[0].send(b"ping\n");
    assert_eq!(peers[0].read_line(), b"ping\n");

    // No busy loop: in one second the server uses a few milliseconds.
    let before = server.cpu_time();
    thread::sleep(Duration::from_secs(1));
    let used = server.cpu_time() - before;
    assert!(used < Duration::from_millis(200), "{used:?} of CPU in 1 s");

    // Free enough descriptors for everyone left: the queued clients get in.
    let queued_ones = peers.split_off(60);
    drop(peers);
    server.wait_stderr_line("accepting connections again");
    for (i, mut peer) in queued_ones.into_iter().enumerate() {
        let message = format!("late {i}\n");
        peer.send(message.as_bytes());
        assert_eq!(peer.read_line(), message.as_bytes());
    }
    assert!(!server.stderr().contains("panicked"));
}

#[test]
fn a_thousand_echo_clients_on_one_thread() {
    if !enough_fds(2 * CLIENTS as u64 + 100) {
        return;
    }
    let server = start_on_loopback("echo-server", &["-q"]);
    let mut peers: Vec<Peer> = (0..CLIENTS).map(|_| Peer::connect(server.addr)).collect();
    for (i, peer) in peers.iter_mut().enumerate() {
        peer.send(format!("client {i}\n").as_bytes());
    }
    for (i, peer) in peers.iter_mut().enumerate() {
        assert_eq!(peer.read_line(), format!("client {i}\n").as_bytes());
    }
    // A second round, now that all of them are connected at once.
    for (i, peer) in peers.iter_mut().enumerate().rev() {
        peer.send(format!("again {i}\n").as_bytes());
    }
    for (i, peer) in peers.iter_mut().enumerate() {
        assert_eq!(peer.read_line(), format!("again {i}\n").as_bytes());
    }
}

#[test]
fn a_burst_of_clients_after_clients_one_at_a_time_all_get_in() {
    let server = start_on_loopback("echo-server", &["-q"]);
    // One at a time, each gone before the next: the server accepts one
    // connection per listener event then (no drain of the queue).
    for i in 0..8 {
        let mut peer = Peer::connect(server.addr);
        peer.send(format!("single {i}\n").as_bytes());
        assert_eq!(peer.read_line(), format!("single {i}\n").as_bytes());
    }
    // Then many at once, more than the one-per-event events could take.
    let mut peers: Vec<Peer> = (0..200).map(|_| Peer::connect(server.addr)).collect();
    for (i, peer) in peers.iter_mut().enumerate() {
        peer.send(format!("burst {i}\n").as_bytes());
    }
    for (i, peer) in peers.iter_mut().enumerate() {
        assert_eq!(peer.read_line(), format!("burst {i}\n").as_bytes());
    }
}

#[test]
fn a_thousand_chat_clients_all_get_the_broadcast() {
    if !enough_fds(2 * CLIENTS as u64 + 100) {
        return;
    }
    let server = start_on_loopback("chat-server", &["--selector", "poll"]);
    let mut peers: Vec<Peer> = (0..CLIENTS).map(|_| Peer::connect(server.addr)).collect();
    server.wait_stderr_count("] connected ", CLIENTS);
    let from = peers[CLIENTS / 2].local_addr();
    peers[CLIENTS / 2].send(b"to all thousand\n");
    let line = chat_protocol::message(b"to all thousand", from);
    for peer in &mut peers {
        assert_eq!(peer.read_line(), line);
    }
}

#[test]
fn the_select_backend_refuses_clients_past_fd_setsize_and_serves_the_rest() {
    const MORE: usize = 1100;
    if !enough_fds(2 * MORE as u64 + 100) {
        return;
    }
    // Quiet: connections are accepted without their address, and the
    // warning still names the refused peer.
    let server = start_on_loopback("echo-server", &["--selector", "select", "-q"]);
    let mut peers: Vec<Peer> = (0..MORE).map(|_| Peer::connect(server.addr)).collect();
    server.wait_stderr_line("out of range in select()");
    assert!(
        server.stderr().contains("refusing 127.0.0.1:"),
        "{}",
        server.stderr()
    );
    let mut served = 0;
    let mut refused = 0;
    for (i, peer) in peers.iter_mut().enumerate() {
        let message = format!("client {i}\n");
        // A refused client's connection is closed: its write or read fails.
        if peer.stream.write_all(message.as_bytes()).is_err() {
            refused += 1;
            continue;
        }
        let mut reply = Vec::new();
        match BufReader::new(&peer.stream).read_until(b'\n', &mut reply) {
            Ok(_) if reply == message.as_bytes() => served += 1,
            Ok(_) | Err(_) => refused += 1,
        }
    }
    assert!(
        served > 1000 && refused > 0,
        "{served} served, {refused} refused"
    );
}
