//! `rselectors client` and `rselectors echo-client`, against the servers.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpListener;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

/// Runs `rselectors client` against `server`.
fn client(server: &Server, extra: &[&str], stdin: Stdio) -> Proc {
    run_against("client", server.addr, extra, stdin)
}

#[test]
fn client_prints_broadcasts_as_they_arrive_and_sends_what_is_typed() {
    let chat = start_on_loopback("chat-server", &[]);
    let mut typist = client(&chat, &[], Stdio::piped());
    chat.wait_stderr_count("connected", 1);
    let mut other = Peer::connect(chat.addr);
    chat.wait_stderr_count("connected", 2);

    // Nothing typed yet: the broadcast must show up anyway.
    other.send(b"anyone there?\n");
    let line = chat_protocol::message(b"anyone there?", other.local_addr());
    assert_eq!(other.read_line(), line);
    typist.wait_stdout_line(String::from_utf8(line).unwrap().trim_end());

    typist.write_stdin(b"yes, me\n");
    let reply = other.read_line();
    let expected = [
        chat_protocol::PREFIX,
        b"yes, me",
        chat_protocol::FROM,
        b"127.0.0.1:",
    ]
    .concat();
    assert!(reply.starts_with(&expected), "{reply:?}");
    typist.wait_stdout_line(std::str::from_utf8(&reply).unwrap().trim_end());

    // End of input: the client half-closes, the server lets it go.
    typist.close_stdin();
    assert!(typist.wait_exit().success(), "{}", typist.stderr());
    other.send(b"still here\n");
    assert_eq!(
        other.read_line(),
        chat_protocol::message(b"still here", other.local_addr())
    );
}

#[test]
fn client_exits_when_the_server_closes() {
    let chat = start_on_loopback("chat-server", &[]);
    let mut leaver = client(&chat, &[], Stdio::piped());
    leaver.write_stdin(b"quit\n");
    // Stdin is still open; the server closing ends the client.
    assert!(leaver.wait_exit().success(), "{}", leaver.stderr());
    assert!(leaver.stderr().contains("the server closed the connection"));
}

#[test]
fn client_waits_for_replies_at_end_of_input_with_every_selector() {
    for selector in SELECTORS {
        let echo = start_on_loopback("echo-server", &["--selector", selector]);
        let input = TempFile::new(&format!("lines-{selector}"), b"abc\ndef\n");
        let mut piped = client(&echo, &["--selector", selector], input.stdin());
        assert!(
            piped.wait_exit().success(),
            "{selector}: {}",
            piped.stderr()
        );
        assert_eq!(piped.stdout(), "abc\ndef\n", "{selector}");

        let mut typed = client(&echo, &["--selector", selector], Stdio::piped());
        typed.write_stdin(b"typed line\n");
        typed.wait_stdout_line("typed line");
        typed.close_stdin();
        assert!(typed.wait_exit().success(), "{selector}");
        assert_eq!(typed.stdout(), "typed line\n", "{selector}");
    }
}

#[test]
fn client_with_dev_null_stdin_exits_promptly() {
    let echo = start_on_loopback("echo-server", &[]);
    let started = Instant::now();
    let mut quiet = client(&echo, &[], Stdio::null());
    assert!(quiet.wait_exit().success(), "{}", quiet.stderr());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(quiet.stdout(), "");
}

#[test]
fn client_stops_waiting_after_silence_if_the_server_does_not_close() {
    // A server that accepts and never answers nor closes.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let started = Instant::now();
    let mut patient = run_against("client", addr, &["--wait", "0.3"], Stdio::null());
    let (_held, _) = listener.accept().unwrap();
    assert!(patient.wait_exit().success(), "{}", patient.stderr());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn client_relays_megabytes_both_ways_without_loss() {
    let echo = start_on_loopback("echo-server", &[]);
    let data = pattern(3 * 1024 * 1024);

    // From a regular file (cannot be polled: read as the socket takes it).
    let input = TempFile::new("bulk", &data);
    let mut from_file = client(&echo, &[], input.stdin());
    assert!(from_file.wait_exit().success(), "{}", from_file.stderr());
    assert!(from_file.stdout_bytes() == data, "file: the echo differs");

    // From a pipe (polled; paused while the server is slow to take it).
    let mut from_pipe = client(&echo, &["--selector", "poll"], Stdio::piped());
    let mut stdin = from_pipe.take_stdin();
    let sent = data.clone();
    let writer = thread::spawn(move || stdin.write_all(&sent).unwrap());
    writer.join().unwrap();
    assert!(from_pipe.wait_exit().success(), "{}", from_pipe.stderr());
    assert!(from_pipe.stdout_bytes() == data, "pipe: the echo differs");
}

#[test]
fn client_reports_a_refused_connection() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut refused = run_against("client", addr, &[], Stdio::null());
    assert_eq!(refused.wait_exit().code(), Some(1));
    assert!(
        refused.stderr().contains("cannot connect to"),
        "{}",
        refused.stderr()
    );
}

#[test]
fn echo_client_checks_the_echo_with_every_selector() {
    let echo = start_on_loopback("echo-server", &[]);
    for selector in SELECTORS {
        let mut seed = run_against(
            "echo-client",
            echo.addr,
            &["--selector", selector],
            Stdio::null(),
        );
        assert!(seed.wait_exit().success(), "{selector}: {}", seed.stderr());
        let out = seed.stdout();
        assert!(out.contains("sending \"It will be repeated.\""), "{out}");
        assert!(out.contains("switching to read-only"), "{out}");
        assert!(out.contains("all 42 bytes came back identical"), "{out}");
    }
    let mut custom = run_against(
        "echo-client",
        echo.addr,
        &["one", "two", "three"],
        Stdio::null(),
    );
    assert!(custom.wait_exit().success());
    assert!(custom.stdout().contains("all 11 bytes came back identical"));
}

#[test]
fn echo_client_fails_clearly_when_the_echo_differs() {
    let upper = start_on_loopback("echo-server", &["--upper"]);
    let mut checker = run_against("echo-client", upper.addr, &["ABC-def"], Stdio::null());
    assert_eq!(checker.wait_exit().code(), Some(1));
    let err = checker.stderr();
    assert!(
        err.contains("the echo differs from what was sent at byte 4"),
        "{err}"
    );
}

#[test]
fn echo_client_times_out_when_nothing_comes_back() {
    let chat = start_on_loopback("chat-server", &[]);
    // No newline: the chat server waits for the end of the line forever.
    let mut waiting = run_against(
        "echo-client",
        chat.addr,
        &["--timeout", "0.5", "no newline"],
        Stdio::null(),
    );
    assert_eq!(waiting.wait_exit().code(), Some(1));
    assert!(
        waiting.stderr().contains("timed out"),
        "{}",
        waiting.stderr()
    );
}
