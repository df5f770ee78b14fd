//! Signals that stop the servers: SIGHUP (the terminal closed) as SIGTERM
//! does, unless started under `nohup`; and no thread to deliver them.

mod common;

use common::*;
use std::process::{Command, Stdio};

/// Starts `server` (with `extra` arguments), serves one echo or chat line,
/// sends SIGHUP and expects the summary and exit status 0.
fn stops_on_sighup(server: &str, extra: &[&str]) {
    let args = loopback_args(server, extra);
    let mut server = start_server(&args);
    let mut peer = Peer::connect(server.addr);
    peer.send(b"hi\n");
    let reply = peer.read_line();
    assert!(reply.ends_with(b"\n"), "{reply:?}");
    server.signal("HUP");
    let status = server.wait_exit();
    assert!(
        status.success(),
        "{args:?}: {status:?}\n{}",
        server.stderr()
    );
    let summary = server.wait_stdout_line("stopped (");
    let expected = format!(
        "stopped (SIGHUP): 1 connections served, 3 bytes in, {} bytes out",
        reply.len()
    );
    assert_eq!(summary, expected, "{args:?}");
    server.wait_stderr_line("received SIGHUP, stopping");
    assert_eq!(peer.read_to_close(), b"", "{args:?}");
}

#[test]
fn sighup_stops_the_echo_server_with_its_summary() {
    stops_on_sighup("echo-server", &[]);
}

#[test]
fn sighup_stops_the_echo_server_with_two_loops() {
    stops_on_sighup("echo-server", &["--threads", "2"]);
}

#[test]
fn sighup_stops_the_chat_server_with_its_summary() {
    stops_on_sighup("chat-server", &[]);
}

#[test]
fn sighup_stops_the_chat_server_with_two_loops() {
    stops_on_sighup("chat-server", &["--threads", "2"]);
}

/// `nohup` ignores SIGHUP so that a server outlives its terminal: the
/// server leaves it ignored.
#[test]
fn under_nohup_sighup_is_ignored_and_sigterm_still_stops() {
    if Command::new("nohup").arg("true").status().is_err() {
        eprintln!("note: no nohup here; skipping");
        return;
    }
    for threads in ["1", "2"] {
        let mut command = Command::new("nohup");
        command
            .arg(BIN)
            .args(loopback_args("echo-server", &["--threads", threads]));
        let mut server = start_server_command(command, Stdio::null());
        server.signal("HUP");
        // Still serving after the SIGHUP: the echo comes back.
        let mut peer = Peer::connect(server.addr);
        peer.send(b"still here\n");
        assert_eq!(peer.read_line(), b"still here\n");
        assert!(server.is_running());
        server.signal("TERM");
        assert!(server.wait_exit().success(), "{}", server.stderr());
        server.wait_stdout_line("stopped (SIGTERM): 1 connections served");
    }
}

/// The threads of process `pid`, or `None` where /proc does not list them.
fn threads_of(pid: u32) -> Option<usize> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(tasks.count())
}

/// Signals reach the loop through a socket in its selector, not through a
/// thread: a server runs one thread per event loop (a second thread would
/// make every wait go through the C library's cancellation wrapper). The
/// idle timeout is off, as it may have a timer thread of its own.
#[test]
fn servers_run_one_thread_per_event_loop() {
    if threads_of(std::process::id()).is_none() {
        eprintln!("note: no /proc/PID/task here; skipping");
        return;
    }
    for server in ["echo-server", "chat-server"] {
        for threads in [1, 2] {
            let count = threads.to_string();
            let args = loopback_args(server, &["--idle-timeout", "0", "--threads", &count]);
            let mut server = start_server(&args);
            // Served: every loop's thread is started by then.
            let mut peer = Peer::connect(server.addr);
            peer.send(b"hi\n");
            assert!(peer.read_line().ends_with(b"\n"), "{args:?}");
            assert_eq!(threads_of(server.pid()), Some(threads), "{args:?}");
            server.signal("TERM");
            assert!(
                server.wait_exit().success(),
                "{args:?}: {}",
                server.stderr()
            );
            server.wait_stdout_line("stopped (SIGTERM): 1 connections served");
        }
    }
}
