//! `--threads N`: several event loops sharing one listening socket.

mod common;

use common::*;
use std::process::Stdio;
use std::thread;

#[test]
fn echo_server_with_two_loops_echoes_fifty_clients() {
    let mut server = start_on_loopback("echo-server", &["--threads", "2"]);
    let mut peers: Vec<Peer> = (0..50).map(|_| Peer::connect(server.addr)).collect();
    let mut total = 0;
    for (i, peer) in peers.iter_mut().enumerate() {
        let message = format!("client {i} says {}\n", "x".repeat(i * 37));
        peer.send(message.as_bytes());
        total += message.len();
    }
    for (i, peer) in peers.iter_mut().enumerate() {
        let expected = format!("client {i} says {}\n", "x".repeat(i * 37));
        assert_eq!(peer.read_line(), expected.as_bytes(), "client {i}");
    }
    server.signal("TERM");
    assert!(server.wait_exit().success(), "{}", server.stderr());
    // One summary for both loops.
    let summary =
        format!("stopped (SIGTERM): 50 connections served, {total} bytes in, {total} bytes out");
    assert!(server.stdout().contains(&summary), "{}", server.stdout());
    assert_eq!(server.stdout().matches("stopped").count(), 1);
    for peer in &mut peers {
        assert_eq!(peer.read_to_close(), b"");
    }
}

#[test]
fn chat_lines_reach_the_clients_of_every_loop() {
    let mut server = start_on_loopback("chat-server", &["--threads", "2"]);
    // Eight clients: whichever loop accepts first takes each one, so both
    // loops probably get some (and if they do not, broadcasting must work
    // all the same).
    let mut peers = join(&server, 8);
    let mut expected = Vec::new();
    for (i, peer) in peers.iter_mut().enumerate() {
        let text = format!("line {i}");
        peer.send(format!("{text}\n").as_bytes());
        expected.push(chat_protocol::message(text.as_bytes(), peer.local_addr()));
    }
    expected.sort();
    let mut bytes_out = 0;
    for (i, peer) in peers.iter_mut().enumerate() {
        // Lines from clients of different loops may come in any order.
        let mut got: Vec<Vec<u8>> = (0..8).map(|_| peer.read_line()).collect();
        got.sort();
        assert_eq!(got, expected, "client {i}");
        bytes_out += got.iter().map(Vec::len).sum::<usize>();
    }
    server.signal("TERM");
    assert!(server.wait_exit().success(), "{}", server.stderr());
    let bytes_in: usize = (0..8).map(|i| format!("line {i}\n").len()).sum();
    let summary = format!(
        "stopped (SIGTERM): 8 connections served, {bytes_in} bytes in, {bytes_out} bytes out"
    );
    assert!(server.stdout().contains(&summary), "{}", server.stdout());
    for peer in &mut peers {
        assert_eq!(peer.read_to_close(), b"");
    }
}

#[test]
fn chat_console_lists_every_loop_and_quit_stops_them_all() {
    let mut server = start_on_loopback_with("chat-server", &["--threads", "3"], Stdio::piped());
    let mut peers = join(&server, 6);
    // A line goes round once every loop has published its count.
    let from = peers[0].local_addr();
    peers[0].send(b"hello\n");
    for peer in &mut peers {
        assert_eq!(peer.read_line(), chat_protocol::message(b"hello", from));
    }
    server.write_stdin(b"list\n");
    server.wait_stdout_line("event loop 1: ");
    server.wait_stdout_line("event loop 2: ");
    server.quit_from_console(6, &mut peers);
}

#[test]
fn load_chat_against_two_loops_loses_nothing() {
    let server = start_on_loopback("chat-server", &["--threads", "2", "-q"]);
    let args = ["--chat", "6", "--pipeline", "4", "--duration", "1"];
    let (ok, fields, load) = run_load(server.addr, &args);
    let stdout = load.stdout();
    assert!(ok, "{stdout}\n{}", load.stderr());
    assert_eq!(
        fields.get("errors").map(String::as_str),
        Some("0"),
        "{stdout}"
    );
    let deliveries: u64 = fields["msgs"].parse().unwrap();
    assert!(deliveries > 0, "{stdout}");
}

#[test]
fn threads_with_port_zero_share_one_port() {
    // Several servers at once: each gets its own port, all loops of one
    // server the same one (else clients of the other loops would fail).
    let servers: Vec<Server> = (0..2)
        .map(|_| start_on_loopback("echo-server", &["--threads", "4"]))
        .collect();
    assert_ne!(servers[0].addr, servers[1].addr);
    let handles: Vec<_> = servers
        .iter()
        .map(|server| {
            let addr = server.addr;
            thread::spawn(move || {
                for i in 0..20 {
                    let mut peer = Peer::connect(addr);
                    let message = format!("{i}\n");
                    peer.send(message.as_bytes());
                    assert_eq!(peer.read_line(), message.as_bytes());
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
}
