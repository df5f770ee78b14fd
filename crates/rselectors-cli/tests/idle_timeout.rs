//! `--idle-timeout`: a connection that sends nothing and is sent nothing
//! (chat: sends no whole line) for that long is closed; one that keeps
//! doing something is not.

mod common;

use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const IDLE: &str = "0.6";
const IDLE_FOR: Duration = Duration::from_millis(600);
/// How long the active clients keep going: several timeouts.
const ACTIVE_FOR: Duration = Duration::from_millis(2000);
/// How often they do something: well within a timeout.
const EVERY: Duration = Duration::from_millis(100);

/// Starts `server` (`echo-server`, `chat-server`) with the tests' timeout.
fn start_with_idle_timeout(server: &str) -> Server {
    start_on_loopback(server, &["--idle-timeout", IDLE])
}

/// Waits (bounded) for the server to close `peer`; how long that took.
fn closed_after(peer: &mut Peer, since: Instant) -> Duration {
    let mut buf = [0; 256];
    loop {
        match peer.stream.read(&mut buf) {
            Ok(0) | Err(_) => return since.elapsed(),
            Ok(_) => {}
        }
    }
}

#[test]
fn echo_closes_silent_connections_and_keeps_busy_ones() {
    let server = start_with_idle_timeout("echo-server");
    let started = Instant::now();
    let mut silent = Peer::connect(server.addr);
    let mut busy = Peer::connect(server.addr);
    while started.elapsed() < ACTIVE_FOR {
        busy.send(b"ping\n");
        assert_eq!(busy.read_line(), b"ping\n", "the busy client was cut off");
        std::thread::sleep(EVERY);
    }
    let waited = closed_after(&mut silent, started);
    assert!(waited >= IDLE_FOR, "closed after {waited:?}");
    server.wait_stderr_line("idle for more than");
    busy.send(b"still here\n");
    assert_eq!(busy.read_line(), b"still here\n");
}

#[test]
fn chat_closes_a_client_that_never_finishes_a_line() {
    let server = start_with_idle_timeout("chat-server");
    let started = Instant::now();
    let mut slowloris = Peer::connect(server.addr);
    // A byte at a time, never a newline: input, but nothing complete.
    let mut waited = None;
    while started.elapsed() < ACTIVE_FOR + ACTIVE_FOR {
        if slowloris.stream.write_all(b"x").is_err() {
            waited = Some(started.elapsed());
            break;
        }
        std::thread::sleep(EVERY);
    }
    let waited = waited.unwrap_or_else(|| closed_after(&mut slowloris, started));
    assert!(waited >= IDLE_FOR, "closed after {waited:?}");
    server.wait_stderr_line("idle for more than");
}

#[test]
fn chat_keeps_a_silent_listener_while_the_room_talks() {
    let server = start_with_idle_timeout("chat-server");
    let started = Instant::now();
    let mut talker = Peer::connect(server.addr);
    let mut listener = Peer::connect(server.addr);
    let talker_addr = talker.local_addr();
    let mut sent = 0;
    while started.elapsed() < ACTIVE_FOR {
        talker.send(format!("line {sent}\n").as_bytes());
        let expected = chat_protocol::message(format!("line {sent}").as_bytes(), talker_addr);
        assert_eq!(talker.read_line(), expected);
        assert_eq!(listener.read_line(), expected, "the listener was cut off");
        sent += 1;
        std::thread::sleep(EVERY);
    }
    // Once the room is quiet, both go.
    let waited = closed_after(&mut listener, started);
    assert!(waited >= ACTIVE_FOR, "closed after {waited:?}");
}

#[test]
fn the_defaults_are_stated_and_values_too_small_are_refused() {
    let help = std::process::Command::new(BIN)
        .args(["echo-server", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--idle-timeout"), "{help}");
    assert!(help.contains("[default: 300]"), "{help}");
    assert!(help.contains("--max-memory"), "{help}");
    assert!(help.contains("[default: 64M]"), "{help}");
    for (flag, value, says) in [
        ("--idle-timeout", "0.001", "below the shortest timeout"),
        ("--max-memory", "1K", "below the smallest budget"),
        ("--max-memory", "lots", "invalid size 'lots'"),
    ] {
        for server in ["echo-server", "chat-server"] {
            let out = std::process::Command::new(BIN)
                .args(loopback_args(server, &[flag, value]))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && stderr.contains(says),
                "{server} {flag} {value}: {stderr}"
            );
        }
    }
}

#[test]
fn zero_turns_the_timeout_off() {
    let mut server = start_on_loopback_with(
        "chat-server",
        &["--idle-timeout", "0"],
        std::process::Stdio::piped(),
    );
    server.write_stdin(b"list\n");
    server.wait_stdout_line("console (stdin)");
    assert!(
        !server.stdout().contains("idle timer"),
        "{}",
        server.stdout()
    );
    let mut with = start_on_loopback_with("chat-server", &[], std::process::Stdio::piped());
    with.write_stdin(b"list\n");
    with.wait_stdout_line("idle timer (--idle-timeout)");
}
