//! The chat server's console: whatever stdin is, the server serves,
//! stays quiet and stops on a signal.

mod common;

use common::*;
use std::fs::File;
use std::process::Stdio;

/// Everything the tests below allow a server to write, stdout and stderr
/// together: a few log lines, not a flood.
const QUIET: usize = 64 * 1024;

/// A chat server reading `device` as its console serves two clients,
/// turns the console off, writes little, and stops on SIGTERM.
fn serves_with_endless_stdin(device: &str, threads: &str) {
    let stdin = Stdio::from(File::open(device).unwrap());
    let mut server = start_on_loopback_with("chat-server", &["--threads", threads], stdin);
    let mut peers = join(&server, 2);
    let from = peers[0].local_addr();
    peers[0].send(b"anyone?\n");
    for peer in &mut peers {
        assert_eq!(
            peer.read_line(),
            chat_protocol::message(b"anyone?", from),
            "{device}"
        );
    }
    // It has given up on the endless input by now, so it is done writing
    // about it.
    server.wait_stderr_line("console off: 1048576 bytes of input without a command");
    server.signal("TERM");
    assert!(
        server.wait_exit().success(),
        "{device}: {}",
        server.stderr()
    );
    server.wait_stdout_line("stopped (SIGTERM): 2 connections served");
    let written = server.stdout_bytes().len() + server.stderr().len();
    assert!(
        written < QUIET,
        "{device}: {written} bytes of output; stderr starts {:?}",
        &server.stderr()[..server.stderr().len().min(500)]
    );
    for peer in &mut peers {
        assert_eq!(peer.read_to_close(), b"", "{device}");
    }
}

#[test]
fn chat_server_with_dev_zero_as_stdin_serves_and_stops_on_sigterm() {
    serves_with_endless_stdin("/dev/zero", "1");
}

#[test]
fn chat_server_with_dev_urandom_as_stdin_serves_and_stops_on_sigterm() {
    serves_with_endless_stdin("/dev/urandom", "1");
}

#[test]
fn chat_server_threads_with_dev_zero_as_stdin_serves_and_stops_on_sigterm() {
    serves_with_endless_stdin("/dev/zero", "2");
}

/// Unknown commands and overlong lines get a few warnings, then a count;
/// `list` and `quit` act, in order; what follows `quit` is not read.
#[test]
fn console_file_warns_a_few_times_about_bad_lines_and_runs_the_commands() {
    let mut input = Vec::new();
    for i in 0..1000 {
        input.extend_from_slice(format!("nonsense {i}\n").as_bytes());
    }
    input.extend_from_slice(&vec![b'x'; 10_000]);
    input.extend_from_slice(b"\n  list\t\n\n\nquit\nlist\n");
    let file = TempFile::new("console-bad-lines", &input);
    let mut server = start_on_loopback_with("chat-server", &[], file.stdin());
    assert!(server.wait_exit().success(), "{}", server.stderr());
    server.wait_stdout_line("stopped (console quit)");
    let stdout = server.stdout();
    let stderr = server.stderr();
    // One `list`: the one before `quit`.
    assert_eq!(stdout.matches("registered in the").count(), 1, "{stdout}");
    assert!(stdout.contains("listener 127.0.0.1:"), "{stdout}");
    // The 1001 bad lines: a few warnings, the rest counted.
    let shown = stderr.matches("[warn] console: unknown command").count()
        + stderr
            .matches("[warn] console: line longer than 4096 bytes")
            .count();
    assert!((1..=10).contains(&shown), "{stderr}");
    let suppressed: usize = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("[warn] console: "))
        .filter_map(|l| l.strip_suffix(" more such warnings suppressed"))
        .map(|n| n.parse::<usize>().unwrap())
        .sum();
    assert_eq!(shown + suppressed, 1001, "{stderr}");
    assert!(
        stderr.contains("unknown command 'nonsense 0' (commands: list, quit)"),
        "{stderr}"
    );
}

/// A long file of `list` commands is read a chunk per turn: a SIGTERM
/// that comes while it is being read stops the server before the end of
/// the file (the old code read it all through first).
#[test]
fn sigterm_stops_the_server_in_the_middle_of_a_long_console_file() {
    const LISTS: usize = 100_000;
    let file = TempFile::new("console-many-lists", &b"list\n".repeat(LISTS));
    let mut server = start_on_loopback_with("chat-server", &[], file.stdin());
    server.wait_stdout_line("registered in the");
    server.signal("TERM");
    assert!(server.wait_exit().success(), "{}", server.stderr());
    server.wait_stdout_line("stopped (SIGTERM)");
    let lists = server.stdout().matches("registered in the").count();
    assert!(lists < LISTS, "all {lists} commands ran before the signal");
    assert!(!server.stderr().contains("end of input"));
}
