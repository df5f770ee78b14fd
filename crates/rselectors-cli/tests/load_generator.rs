//! The load generator, `rselectors load`: against the real servers, and
//! against a peer that corrupts what it echoes.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The number in field `key` of a summary.
fn number(fields: &HashMap<String, String>, key: &str) -> f64 {
    fields
        .get(key)
        .unwrap_or_else(|| panic!("no {key}= in {fields:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{key}= is not a number: {e}"))
}

/// The summary's keys, in the order printed (`bench/run.py` reads them).
const KEYS: [&str; 11] = [
    "conns",
    "size",
    "mode",
    "pipeline",
    "msgs",
    "msgs_per_s",
    "mib_per_s",
    "p50_us",
    "p99_us",
    "p999_us",
    "errors",
];

#[test]
fn every_mode_against_the_echo_server_checks_out() {
    let server = start_on_loopback("echo-server", &["-q"]);
    let modes: [(&str, &[&str]); 4] = [
        ("pingpong", &["--conns", "4"]),
        (
            "pingpong",
            &["--conns", "3", "--size", "20000", "--pipeline", "2"],
        ),
        ("stream", &["--conns", "4", "--pipeline", "16"]),
        ("churn", &["--conns", "4"]),
    ];
    for (mode, extra) in modes {
        let mut args = vec!["--duration", "1", "--mode", mode];
        args.extend_from_slice(extra);
        let (ok, fields, load) = run_load(server.addr, &args);
        assert!(ok, "{mode}: exit status; stderr:\n{}", load.stderr());
        for key in KEYS {
            assert!(fields.contains_key(key), "{mode}: no {key}= in {fields:?}");
        }
        assert_eq!(fields["mode"], mode);
        assert_eq!(number(&fields, "errors"), 0.0, "{mode}: {fields:?}");
        assert!(number(&fields, "msgs") > 0.0, "{mode}: {fields:?}");
        assert!(number(&fields, "p50_us") > 0.0, "{mode}: {fields:?}");
        assert_eq!(
            fields.contains_key("conns_per_s"),
            mode == "churn",
            "{fields:?}"
        );
        // Piped stderr: no progress line.
        assert!(!load.stderr().contains("msgs/s"), "{}", load.stderr());
    }
}

#[test]
fn the_poll_and_select_selectors_drive_the_load_too() {
    let server = start_on_loopback("echo-server", &["-q"]);
    for selector in ["poll", "select"] {
        let args = ["--duration", "0.5", "--conns", "3", "--selector", selector];
        let (ok, fields, _) = run_load(server.addr, &args);
        assert!(ok, "{selector}: {fields:?}");
        assert!(number(&fields, "msgs") > 0.0, "{selector}: {fields:?}");
    }
}

/// An echo server that flips one bit of the 100th byte of every
/// connection, until `stop` is set.
fn corrupting_peer(stop: Arc<AtomicBool>) -> (SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let handle = thread::spawn(move || {
        let deadline = Instant::now() + TIMEOUT;
        let mut echoers = Vec::new();
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let stop = Arc::clone(&stop);
                    echoers.push(thread::spawn(move || {
                        stream.set_nonblocking(false).unwrap();
                        stream
                            .set_read_timeout(Some(Duration::from_millis(50)))
                            .unwrap();
                        let mut offset = 0usize;
                        let mut buf = [0u8; 4096];
                        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                            let n = match stream.read(&mut buf) {
                                Ok(0) => return,
                                Ok(n) => n,
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        ErrorKind::WouldBlock | ErrorKind::TimedOut
                                    ) =>
                                {
                                    continue
                                }
                                Err(_) => return,
                            };
                            if (offset..offset + n).contains(&99) {
                                buf[99 - offset] ^= 0x04;
                            }
                            offset += n;
                            if stream.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(5));
                }
                Err(_) => break,
            }
        }
        for echoer in echoers {
            let _ = echoer.join();
        }
    });
    (addr, handle)
}

#[test]
fn a_corrupted_echo_is_an_error_and_fails_the_run() {
    let stop = Arc::new(AtomicBool::new(false));
    let (addr, peer) = corrupting_peer(Arc::clone(&stop));
    let started = Instant::now();
    let (ok, fields, load) = run_load(addr, &["--duration", "3", "--conns", "2"]);
    stop.store(true, Ordering::Relaxed);
    peer.join().unwrap();
    assert!(!ok, "the run must fail: {fields:?}");
    assert_eq!(number(&fields, "errors"), 2.0, "{fields:?}");
    assert!(
        load.stderr().contains("byte 99 of the echo is"),
        "{}",
        load.stderr()
    );
    // Every connection failed: the run ends without waiting out --duration.
    assert!(started.elapsed() < Duration::from_secs(3), "{fields:?}");
}

#[test]
fn nobody_listening_counts_errors_and_ends() {
    // A port that was free a moment ago: connects are refused.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for mode in ["pingpong", "churn"] {
        let (ok, fields, _) = run_load(addr, &["--duration", "0.5", "--mode", mode]);
        assert!(!ok, "{mode}: {fields:?}");
        assert!(number(&fields, "errors") >= 1.0, "{mode}: {fields:?}");
        assert_eq!(number(&fields, "msgs"), 0.0, "{mode}: {fields:?}");
    }
}

#[test]
fn chat_fan_out_reports_deliveries() {
    let server = start_on_loopback("chat-server", &["-q"]);
    let (ok, fields, load) = run_load(server.addr, &["--chat", "3", "--duration", "1"]);
    assert!(ok, "{fields:?}\n{}", load.stderr());
    assert_eq!(fields["mode"], "chat");
    assert_eq!(fields["conns"], "3");
    assert_eq!(number(&fields, "errors"), 0.0, "{fields:?}");
    let lines = number(&fields, "lines");
    let deliveries = number(&fields, "msgs");
    assert!(lines > 0.0, "{fields:?}");
    // Each line reaches all three listeners; the last may be in flight.
    assert!(deliveries >= 3.0 * (lines - 1.0), "{fields:?}");
    assert!(deliveries <= 3.0 * lines, "{fields:?}");
    assert!(number(&fields, "deliveries_per_s") > 0.0, "{fields:?}");
    assert!(number(&fields, "p99_us") > 0.0, "{fields:?}");
}
