//! A server's port is its own unless both servers ask to share it
//! (`--reuse-port`): with `--threads` as without.

mod common;

use common::*;
use std::process::Stdio;

/// Starts `args` on `addr` and expects it to fail because the port is
/// taken, naming the address.
fn refused_port(args: &[&str], addr: &str) {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--addr", addr]);
    let mut second = Proc::spawn(&all, Stdio::null());
    let status = second.wait_exit();
    assert_eq!(status.code(), Some(1), "{all:?}: {}", second.stdout());
    let stderr = second.stderr();
    assert!(
        stderr.contains(&format!(
            "rselectors: error: {addr}: Address already in use"
        )),
        "{all:?}: {stderr}"
    );
    assert!(!second.stdout().contains("listening on"), "{all:?}");
}

/// The first server still has every connection: each echo comes back.
fn still_serves_alone(first: &Server, chat: bool) {
    for i in 0..8 {
        let mut peer = Peer::connect(first.addr);
        let text = format!("{i}");
        peer.send(format!("{text}\n").as_bytes());
        let expected = if chat {
            chat_protocol::message(text.as_bytes(), peer.local_addr())
        } else {
            format!("{text}\n").into_bytes()
        };
        assert_eq!(peer.read_line(), expected);
    }
}

#[test]
fn a_second_echo_server_with_threads_on_the_same_port_fails() {
    let first = start_on_loopback("echo-server", &["--threads", "2"]);
    let addr = first.addr.to_string();
    refused_port(&["echo-server", "--threads", "2"], &addr);
    refused_port(&["echo-server"], &addr);
    still_serves_alone(&first, false);
}

#[test]
fn a_chat_server_with_threads_on_an_echo_servers_port_fails() {
    let first = start_on_loopback("echo-server", &["--threads", "2"]);
    let addr = first.addr.to_string();
    refused_port(&["chat-server", "--threads", "2"], &addr);
    // Asking to share does not help when the first one did not.
    refused_port(&["chat-server", "--threads", "2", "--reuse-port"], &addr);
    still_serves_alone(&first, false);
}

#[test]
fn one_loop_and_threads_refuse_each_others_port() {
    let first = start_on_loopback("chat-server", &[]);
    let addr = first.addr.to_string();
    refused_port(&["echo-server", "--threads", "3"], &addr);
    still_serves_alone(&first, true);
}

#[test]
fn with_reuse_port_on_both_servers_both_listen() {
    for threads in ["1", "2"] {
        let first = start_on_loopback("echo-server", &["--threads", threads, "--reuse-port"]);
        let addr = first.addr.to_string();
        let second = start_server(&[
            "echo-server",
            "--addr",
            &addr,
            "--threads",
            threads,
            "--reuse-port",
        ]);
        assert_eq!(second.addr, first.addr);
        // Either may take a connection; every one is served.
        still_serves_alone(&first, false);
    }
}

#[test]
fn port_zero_gives_every_loop_the_same_port_with_or_without_reuse_port() {
    for extra in [&[][..], &["--reuse-port"][..]] {
        let mut args = vec!["--threads", "3", "-v"];
        args.extend_from_slice(extra);
        let mut server = start_on_loopback_with("chat-server", &args, Stdio::piped());
        // Every connection to the printed port is served, whichever loop
        // takes it.
        let mut peers = join(&server, 12);
        let from = peers[0].local_addr();
        peers[0].send(b"all here?\n");
        for peer in &mut peers {
            assert_eq!(
                peer.read_line(),
                chat_protocol::message(b"all here?", from),
                "{extra:?}"
            );
        }
        // The console lists one listener per loop 0, on the printed port.
        server.write_stdin(b"list\n");
        server.wait_stdout_line(&format!("listener {}", server.addr));
        server.quit_from_console(12, &mut peers);
    }
}
