//! `rselectors echo-server`, driven over loopback.

mod common;

use common::*;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

#[test]
fn echoes_with_every_selector() {
    for selector in SELECTORS {
        let server = start_on_loopback("echo-server", &["--selector", selector]);
        let mut first = Peer::connect(server.addr);
        let mut second = Peer::connect(server.addr);
        first.send(b"hello from one\n");
        second.send(b"hello from two\n");
        assert_eq!(second.read_line(), b"hello from two\n", "{selector}");
        assert_eq!(first.read_line(), b"hello from one\n", "{selector}");
        first.send(b"\x00\xff binary \x80\n");
        assert_eq!(first.read_line(), b"\x00\xff binary \x80\n", "{selector}");
    }
}

#[test]
fn echoes_16_mib_through_one_connection_intact() {
    let server = start_on_loopback("echo-server", &[]);
    let data = pattern(16 * 1024 * 1024);
    let mut peer = Peer::connect(server.addr);
    let mut writer = peer.stream.try_clone().unwrap();
    let sent = data.clone();
    // Write and read at once, as a real client must: the server never
    // holds more than its high-water mark, so neither side may wait for
    // the other to finish first.
    let sender = thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let echoed = peer.read_to_close();
    sender.join().unwrap();
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "the echo differs from what was sent");
}

#[test]
fn upper_replies_upper_cased_ascii() {
    let server = start_on_loopback("echo-server", &["--upper"]);
    let mut peer = Peer::connect(server.addr);
    peer.send("hello World é 123\n".as_bytes());
    assert_eq!(peer.read_line(), "HELLO WORLD é 123\n".as_bytes());
    peer.send(b"\xff\xfeabc\n");
    assert_eq!(peer.read_line(), b"\xff\xfeABC\n");
}

#[test]
fn sigterm_closes_clients_prints_summary_and_exits_0() {
    let mut server = start_on_loopback("echo-server", &[]);
    let mut peer = Peer::connect(server.addr);
    peer.send(b"12345");
    assert_eq!(peer.read_exact(5), b"12345");
    server.signal("TERM");
    assert!(server.wait_exit().success(), "{}", server.stderr());
    assert!(
        server
            .stdout()
            .contains("stopped (SIGTERM): 1 connections served, 5 bytes in, 5 bytes out"),
        "{}",
        server.stdout()
    );
    assert_eq!(peer.read_to_close(), b"");
}

#[test]
fn sigint_stops_gracefully() {
    let mut server = start_on_loopback("echo-server", &["--selector", "poll"]);
    let mut peer = Peer::connect(server.addr);
    peer.send(b"ab");
    assert_eq!(peer.read_exact(2), b"ab");
    server.signal("INT");
    assert!(server.wait_exit().success());
    assert!(server
        .stdout()
        .contains("stopped (SIGINT): 1 connections served, 2 bytes in, 2 bytes out"));
}

#[test]
fn survives_resets_half_closes_and_vanishing_clients() {
    let server = start_on_loopback("echo-server", &["-v"]);

    // Connects and vanishes without a byte.
    drop(TcpStream::connect(server.addr).unwrap());

    // Half-closes: the echo still comes back, then the server closes.
    let mut half = Peer::connect(server.addr);
    half.send(b"last words");
    half.shutdown_write();
    assert_eq!(half.read_to_close(), b"last words");

    // Resets (SO_LINGER 0) with an echo in flight.
    let mut reset = TcpStream::connect(server.addr).unwrap();
    rustix::net::sockopt::set_socket_linger(&reset, Some(std::time::Duration::ZERO)).unwrap();
    reset.write_all(&pattern(256 * 1024)).unwrap();
    drop(reset);

    // Resets while the server still has unread bytes from it.
    let mut abrupt = TcpStream::connect(server.addr).unwrap();
    abrupt.write_all(b"never read back").unwrap();
    drop(abrupt);

    server.wait_stderr_count("disconnected", 4);
    let mut fine = Peer::connect(server.addr);
    fine.send(b"still here\n");
    assert_eq!(fine.read_line(), b"still here\n");
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
}

#[test]
fn ipv6_loopback_works() {
    if !ipv6_loopback() {
        return;
    }
    let server = start_server(&["echo-server", "--addr", "[::1]:0"]);
    assert!(server.addr.is_ipv6());
    let mut peer = Peer::connect(server.addr);
    peer.send(b"over IPv6\n");
    assert_eq!(peer.read_line(), b"over IPv6\n");
}

#[test]
fn refuses_unknown_selector_and_bad_address() {
    let mut bad_selector = Proc::spawn(
        &["echo-server", "--selector", "kqueue"],
        std::process::Stdio::null(),
    );
    let status = bad_selector.wait_exit();
    assert_eq!(status.code(), Some(2));
    assert!(
        bad_selector.stderr().contains("unknown selector"),
        "{}",
        bad_selector.stderr()
    );

    // An address in use: a clear error and exit code 1.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = taken.local_addr().unwrap();
    let mut in_use = Proc::spawn(
        &["echo-server", "--addr", &addr.to_string()],
        std::process::Stdio::null(),
    );
    assert_eq!(in_use.wait_exit().code(), Some(1));
    assert!(
        in_use.stderr().contains("rselectors: error:"),
        "{}",
        in_use.stderr()
    );
    drop(taken);
}
