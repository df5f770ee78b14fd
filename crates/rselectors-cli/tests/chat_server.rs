//! `rselectors chat-server`, driven over loopback.

mod common;

use common::chat_protocol::{LINE_TOO_LONG, MAX_LINE};
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn broadcasts_to_three_clients_with_every_selector() {
    for selector in SELECTORS {
        let server = start_on_loopback("chat-server", &["--selector", selector]);
        let mut peers = join(&server, 3);
        let from = peers[1].local_addr();
        peers[1].send(b"hello, everyone\n");
        for peer in &mut peers {
            assert_eq!(
                peer.read_line(),
                chat_protocol::message(b"hello, everyone", from),
                "{selector}"
            );
        }
        // CRLF line endings are stripped, several lines in one write split.
        let from = peers[2].local_addr();
        peers[2].send(b"one\r\ntwo\n");
        for peer in &mut peers {
            assert_eq!(
                peer.read_line(),
                chat_protocol::message(b"one", from),
                "{selector}"
            );
            assert_eq!(
                peer.read_line(),
                chat_protocol::message(b"two", from),
                "{selector}"
            );
        }
    }
}

#[test]
fn quit_and_empty_line_leave_and_the_others_go_on() {
    let server = start_on_loopback("chat-server", &[]);
    let mut peers = join(&server, 3);
    peers[0].send(b"quit\n");
    assert_eq!(peers[0].read_to_close(), b"");
    peers[1].send(b"  \n");
    assert_eq!(peers[1].read_to_close(), b"");
    server.wait_stderr_count("disconnected", 2);
    let from = peers[2].local_addr();
    peers[2].send(b"alone now\n");
    assert_eq!(
        peers[2].read_line(),
        chat_protocol::message(b"alone now", from)
    );
}

#[test]
fn console_list_and_quit_through_stdin() {
    let mut server = start_on_loopback_with("chat-server", &[], Stdio::piped());
    let mut peers = join(&server, 2);
    server.write_stdin(b"list\n");
    let peer_line = server.wait_stdout_line(&format!("client   {}", peers[0].local_addr()));
    assert!(peer_line.trim_start().starts_with("fd "), "{peer_line}");
    server.wait_stdout_line(&format!("client   {}", peers[1].local_addr()));
    server.wait_stdout_line("listener");
    server.wait_stdout_line("console (stdin)");

    let from = peers[0].local_addr();
    peers[0].send(b"bye\n");
    assert_eq!(peers[0].read_line(), chat_protocol::message(b"bye", from));
    assert_eq!(peers[1].read_line(), chat_protocol::message(b"bye", from));

    server.quit_from_console(2, &mut peers);
}

#[test]
fn keeps_serving_when_stdin_is_dev_null_a_closed_pipe_or_a_file() {
    let file = std::env::temp_dir().join(format!("rselectors-console-{}", std::process::id()));
    std::fs::write(&file, b"list\n").unwrap();
    let inputs: Vec<(&str, Stdio)> = vec![
        ("/dev/null", Stdio::null()),
        ("a closed pipe", Stdio::piped()),
        ("a file", Stdio::from(std::fs::File::open(&file).unwrap())),
    ];
    for (what, stdin) in inputs {
        let mut server = start_on_loopback_with("chat-server", &[], stdin);
        server.close_stdin();
        server.wait_stderr_line("console: end of input");
        let mut peers = join(&server, 2);
        let from = peers[0].local_addr();
        peers[0].send(b"still up\n");
        assert_eq!(
            peers[1].read_line(),
            chat_protocol::message(b"still up", from),
            "{what}"
        );
        assert!(server.is_running(), "{what}");
        if what == "a file" {
            server.wait_stdout_line("listener");
        }
    }
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn sigint_summary_counts_bytes() {
    let mut server = start_on_loopback("chat-server", &[]);
    let mut peers = join(&server, 2);
    let from = peers[0].local_addr();
    peers[0].send(b"hi\n");
    let line = chat_protocol::message(b"hi", from);
    assert_eq!(peers[0].read_line(), line);
    assert_eq!(peers[1].read_line(), line);
    server.signal("INT");
    assert!(server.wait_exit().success());
    let expected = format!(
        "stopped (SIGINT): 2 connections served, 3 bytes in, {} bytes out",
        2 * line.len()
    );
    assert!(server.stdout().contains(&expected), "{}", server.stdout());
}

#[test]
fn over_long_line_gets_an_error_and_non_utf8_is_relayed() {
    let server = start_on_loopback("chat-server", &[]);
    let mut peers = join(&server, 3);

    // Not UTF-8: relayed byte for byte.
    let from = peers[0].local_addr();
    peers[0].send(b"\xff\xfe caf\xe9 \x80\n");
    assert_eq!(
        peers[1].read_line(),
        chat_protocol::message(b"\xff\xfe caf\xe9 \x80", from)
    );
    assert_eq!(
        peers[0].read_line(),
        chat_protocol::message(b"\xff\xfe caf\xe9 \x80", from)
    );
    assert_eq!(
        peers[2].read_line(),
        chat_protocol::message(b"\xff\xfe caf\xe9 \x80", from)
    );

    // Exactly MAX_LINE (64 KiB) is allowed.
    let longest = vec![b'w'; MAX_LINE];
    let from = peers[2].local_addr();
    peers[2].send(&[&longest[..], b"\n"].concat());
    for peer in &mut peers {
        assert_eq!(peer.read_line(), chat_protocol::message(&longest, from));
    }

    // One byte more, with and without a newline: error line, then close.
    peers[0].send(&[&vec![b'x'; MAX_LINE + 1][..], b"\n"].concat());
    let error = peers[0].read_line();
    assert_eq!(error, LINE_TOO_LONG, "{error:?}");
    assert_eq!(peers[0].read_to_close(), b"");
    peers[1].send(&vec![b'y'; 200 * 1024]);
    let error = peers[1].read_line();
    assert_eq!(error, LINE_TOO_LONG, "{error:?}");
    assert_eq!(peers[1].read_to_close(), b"");

    // The others chat on.
    let from = peers[2].local_addr();
    peers[2].send(b"ok\n");
    assert_eq!(peers[2].read_line(), chat_protocol::message(b"ok", from));
    server.wait_stderr_count(&format!("sent a line longer than {MAX_LINE} bytes"), 2);
}

#[test]
fn a_client_that_never_reads_is_cut_off_and_memory_stays_bounded() {
    let server = start_on_loopback("chat-server", &["--max-backlog", "262144"]);
    let mut peers = join(&server, 2);
    let mut sleeper = peers.remove(0);
    let talker = peers.remove(0);
    let sleeper_addr = sleeper.local_addr();

    // The talker sends without pause and drains its own echoes, until the
    // server cuts the sleeper off (or 256 MiB went by: then it failed).
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer = talker.stream.try_clone().unwrap();
    let writer_stop = Arc::clone(&stop);
    let sender = thread::spawn(move || {
        let line = [&[b'z'; 1000][..], b"\n"].concat();
        let mut sent = 0usize;
        while !writer_stop.load(Ordering::SeqCst) && sent < 256 << 20 {
            writer.write_all(&line).unwrap();
            sent += line.len();
        }
    });
    let mut reader = talker.stream.try_clone().unwrap();
    let reader_stop = Arc::clone(&stop);
    reader
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let drainer = thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        // After the stop, drain on until 200 ms of silence.
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if reader_stop.load(Ordering::SeqCst) {
                        break;
                    }
                }
                Err(e) => panic!("the talker's read failed: {e}"),
            }
        }
    });

    server.wait_stderr_line(&format!("cutting off {sleeper_addr}"));
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    drainer.join().unwrap();

    // The sleeper finds what the kernel held for it, then the end.
    let started = Instant::now();
    let backlog = sleeper.read_to_close();
    assert!(!backlog.is_empty());
    assert!(started.elapsed() < TIMEOUT);

    // Everyone else keeps chatting.
    let mut newcomer = join(&server, 1).remove(0);
    let from = newcomer.local_addr();
    newcomer.send(b"still chatting\n");
    assert_eq!(
        newcomer.read_line(),
        chat_protocol::message(b"still chatting", from)
    );

    // The cut-off kept memory bounded: far below what went through.
    let peak_kib = server.peak_memory_kib();
    assert!(peak_kib < 64 * 1024, "peak memory {peak_kib} KiB");
}

#[test]
fn vanishing_and_resetting_clients_are_harmless() {
    let server = start_on_loopback("chat-server", &["-v"]);
    drop(TcpStream::connect(server.addr).unwrap());
    let mut half = Peer::connect(server.addr);
    half.send(b"half\n");
    half.shutdown_write();
    let mut abrupt = TcpStream::connect(server.addr).unwrap();
    abrupt.write_all(b"partial line without newline").unwrap();
    drop(abrupt);
    server.wait_stderr_count("disconnected", 3);
    let mut peers = join(&server, 1);
    let from = peers[0].local_addr();
    peers[0].send(b"fine\n");
    assert_eq!(peers[0].read_line(), chat_protocol::message(b"fine", from));
}

#[test]
fn ipv6_peers_are_named_in_brackets() {
    if !ipv6_loopback() {
        return;
    }
    let server = start_server(&["chat-server", "--addr", "[::1]:0"]);
    let mut peers = join(&server, 2);
    let from = peers[0].local_addr();
    assert!(from.to_string().starts_with("[::1]:"));
    peers[0].send(b"over IPv6\n");
    assert_eq!(
        peers[1].read_line(),
        chat_protocol::message(b"over IPv6", from)
    );
}
