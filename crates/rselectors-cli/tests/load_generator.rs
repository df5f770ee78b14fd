//! The load generator, `rselectors load`: against the real servers, and
//! against a peer that corrupts what it echoes.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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

/// The chat summary's keys with one server and one sender, in order.
const CHAT_KEYS: [&str; 13] = [
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
    "lines",
    "deliveries_per_s",
    "errors",
];

/// The keys of a summary line, in order.
fn keys(load: &Proc) -> Vec<String> {
    load.stdout()
        .split_whitespace()
        .filter_map(|field| Some(field.split_once('=')?.0.to_owned()))
        .collect()
}

#[test]
fn chat_with_one_server_and_one_sender_keeps_its_summary() {
    let server = start_on_loopback("chat-server", &["-q"]);
    let (ok, fields, load) = run_load(server.addr, &["--chat", "2", "--duration", "0.5"]);
    assert!(ok, "{fields:?}\n{}", load.stderr());
    assert_eq!(keys(&load), CHAT_KEYS, "{}", load.stdout());
}

/// The chat summary's keys over several servers or senders, in order.
const MULTI_CHAT_KEYS: [&str; 20] = [
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
    "lines",
    "deliveries_per_s",
    "servers",
    "senders",
    "xp50_us",
    "xp99_us",
    "xp999_us",
    "lost",
    "dup",
    "errors",
];

/// Checks a chat run over several addresses or senders that went right:
/// `listeners` listeners got every line, none lost or twice.
fn check_multi_chat(fields: &HashMap<String, String>, load: &Proc, listeners: f64, senders: f64) {
    assert_eq!(keys(load), MULTI_CHAT_KEYS, "{}", load.stdout());
    assert_eq!(number(fields, "senders"), senders, "{fields:?}");
    for key in ["errors", "lost", "dup"] {
        assert_eq!(number(fields, key), 0.0, "{key}: {fields:?}");
    }
    let lines = number(fields, "lines");
    let in_flight = senders * number(fields, "pipeline");
    let deliveries = number(fields, "msgs");
    assert!(lines > in_flight, "{fields:?}");
    // Each line reaches every listener; the last few may be in flight at
    // the end (checked then, not counted).
    assert!(deliveries >= listeners * (lines - in_flight), "{fields:?}");
    assert!(deliveries <= listeners * lines, "{fields:?}");
}

#[test]
fn chat_over_two_addresses_of_one_server_gets_every_line_everywhere_once() {
    let server = start_on_loopback("chat-server", &["-q"]);
    let addr = server.addr.to_string();
    let args = [
        "--addr",
        &addr,
        "--chat",
        "5",
        "--pipeline",
        "4",
        "--duration",
        "1",
    ];
    let (ok, fields, load) = run_load(server.addr, &args);
    assert!(ok, "{fields:?}\n{}", load.stderr());
    // One sender per address by default.
    check_multi_chat(&fields, &load, 5.0, 2.0);
    assert_eq!(number(&fields, "servers"), 2.0, "{fields:?}");
    // Listeners 2 and 4 are on the second address, sender 0 on the first.
    assert!(number(&fields, "xp50_us") > 0.0, "{fields:?}");
    assert!(number(&fields, "xp999_us") >= number(&fields, "xp50_us"));
}

#[test]
fn chat_with_several_senders_on_one_server_checks_them_all() {
    let server = start_on_loopback("chat-server", &["-q"]);
    let args = [
        "--chat",
        "3",
        "--senders",
        "3",
        "--pipeline",
        "2",
        "--duration",
        "0.5",
    ];
    let (ok, fields, load) = run_load(server.addr, &args);
    assert!(ok, "{fields:?}\n{}", load.stderr());
    check_multi_chat(&fields, &load, 3.0, 3.0);
    assert_eq!(number(&fields, "servers"), 1.0, "{fields:?}");
    // No line crossed servers.
    assert_eq!(number(&fields, "xp50_us"), 0.0, "{fields:?}");
}

#[test]
fn chat_servers_that_share_nothing_fail_the_handshake_naming_them() {
    let first = start_on_loopback("chat-server", &["-q"]);
    let second = start_on_loopback("chat-server", &["-q"]);
    let other = second.addr.to_string();
    let args = ["--addr", &other, "--chat", "2", "--duration", "0.5"];
    let started = Instant::now();
    let mut load = run_against("load", first.addr, &args, Stdio::null());
    assert!(!load.wait_exit().success(), "{}", load.stderr());
    // The handshake's timeout, not --duration or the tests' TIMEOUT.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(load.stdout(), "", "no summary without a handshake");
    let (a, b) = (first.addr, second.addr);
    let stderr = load.stderr();
    for silent in [
        format!("server 2 ({b}) delivered no line sent through server 1 ({a})"),
        format!("server 1 ({a}) delivered no line sent through server 2 ({b})"),
    ] {
        assert!(stderr.contains(&silent), "{silent:?} in:\n{stderr}");
    }
    assert!(stderr.contains("handshake"), "{stderr}");
}

#[test]
fn a_bad_second_address_is_a_clear_error() {
    let server = start_on_loopback("chat-server", &["-q"]);
    let addr = server.addr;
    // Not an address: refused before anything connects.
    let args = [
        "--addr",
        "127.0.0.1:99999",
        "--chat",
        "2",
        "--duration",
        "0.5",
    ];
    let mut load = run_against("load", addr, &args, Stdio::null());
    assert_eq!(load.wait_exit().code(), Some(2), "{}", load.stderr());
    assert!(
        load.stderr().contains("invalid port '99999'"),
        "{}",
        load.stderr()
    );
    assert_eq!(load.stdout(), "");
    // Nobody there: its connections fail, each named, and so does the run.
    let nobody = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let nobody_text = nobody.to_string();
    let args = ["--addr", &nobody_text, "--chat", "2", "--duration", "0.5"];
    let (ok, fields, load) = run_load(addr, &args);
    assert!(!ok, "{fields:?}");
    // Sender 1 and listener 2 were for the second server.
    assert_eq!(number(&fields, "errors"), 2.0, "{fields:?}");
    let stderr = load.stderr();
    let named = format!("listener 2 on server 2 ({nobody}): cannot connect");
    assert!(stderr.contains(&named), "{named:?} in:\n{stderr}");
    // The echo modes take one address.
    let addr_text = addr.to_string();
    let mut load = run_against("load", addr, &["--addr", &addr_text], Stdio::null());
    assert!(!load.wait_exit().success());
    let stderr = load.stderr();
    assert!(
        stderr.contains("--addr is given 2 times: only --chat spreads"),
        "{stderr}"
    );
}

/// What a [`fake_chat_relay`] does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Sends sender 0's line 5 twice to one connection.
    Duplicate,
    /// Never sends sender 0's line 5 to one connection.
    Lose,
}

/// A chat relay standing for `servers` chat servers sharing a room: a
/// port each, a thread per connection, each line to every connection as
/// the chat protocol says, naming the sender as its port saw it. Lines
/// cross from one port to another only `link_after` after the start (a
/// broker link joining), and `fault`, if any, is done to sender 0's
/// line 5. Runs until `stop` is set.
fn fake_chat_relay(
    servers: usize,
    link_after: Duration,
    fault: Option<Fault>,
    stop: Arc<AtomicBool>,
) -> (Vec<SocketAddr>, thread::JoinHandle<()>) {
    let listeners: Vec<TcpListener> = (0..servers)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let handle = thread::spawn(move || {
        let started = Instant::now();
        let deadline = started + TIMEOUT;
        // Each connection's writing half and the port it came through.
        let writers: Arc<Mutex<Vec<(usize, TcpStream)>>> = Arc::default();
        let mut relays = Vec::new();
        for listener in &listeners {
            listener.set_nonblocking(true).unwrap();
        }
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let accepted = listeners
                .iter()
                .enumerate()
                .find_map(|(port, l)| l.accept().ok().map(|(s, peer)| (port, s, peer)));
            let Some((port, stream, peer)) = accepted else {
                thread::sleep(Duration::from_millis(5));
                continue;
            };
            stream.set_nonblocking(false).unwrap();
            writers
                .lock()
                .unwrap()
                .push((port, stream.try_clone().unwrap()));
            let writers = Arc::clone(&writers);
            relays.push(thread::spawn(move || {
                let mut lines = std::io::BufReader::new(stream);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match std::io::BufRead::read_until(&mut lines, b'\n', &mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    line.pop();
                    let message = chat_protocol::message(&line, peer);
                    let linked = started.elapsed() >= link_after;
                    let faulty = line.starts_with(b"0.5") && !line[3].is_ascii_digit();
                    for (i, (to, writer)) in writers.lock().unwrap().iter_mut().enumerate() {
                        let copies = match (faulty && i == 1, fault) {
                            _ if *to != port && !linked => 0,
                            (true, Some(Fault::Duplicate)) => 2,
                            (true, Some(Fault::Lose)) => 0,
                            _ => 1,
                        };
                        for _ in 0..copies {
                            let _ = writer.write_all(&message);
                        }
                    }
                }
            }));
        }
        // Unblocks the relays' reads.
        for (_, writer) in writers.lock().unwrap().iter() {
            let _ = writer.shutdown(std::net::Shutdown::Both);
        }
        for relay in relays {
            let _ = relay.join();
        }
    });
    (addrs, handle)
}

/// Runs `load --chat` with `args` against a [`fake_chat_relay`] with
/// `fault`.
fn load_faulty_chat(fault: Fault, args: &[&str]) -> (bool, HashMap<String, String>, Proc) {
    let stop = Arc::new(AtomicBool::new(false));
    let (addrs, peer) = fake_chat_relay(1, Duration::ZERO, Some(fault), Arc::clone(&stop));
    let run = run_load(addrs[0], args);
    stop.store(true, Ordering::Relaxed);
    peer.join().unwrap();
    run
}

#[test]
fn a_line_lost_or_twice_fails_the_run() {
    // Several senders: counted apart.
    let args = [
        "--chat",
        "2",
        "--senders",
        "2",
        "--pipeline",
        "4",
        "--duration",
        "0.5",
    ];
    let (ok, fields, load) = load_faulty_chat(Fault::Lose, &args);
    assert!(!ok, "{fields:?}");
    assert_eq!(number(&fields, "lost"), 1.0, "{fields:?}");
    assert_eq!(number(&fields, "dup"), 0.0, "{fields:?}");
    assert_eq!(number(&fields, "errors"), 0.0, "{fields:?}");
    let stderr = load.stderr();
    assert!(stderr.contains("never got line 5 of sender 0"), "{stderr}");
    assert!(stderr.contains("error: 1 line lost"), "{stderr}");
    let (ok, fields, load) = load_faulty_chat(Fault::Duplicate, &args);
    assert!(!ok, "{fields:?}");
    assert_eq!(number(&fields, "dup"), 1.0, "{fields:?}");
    assert_eq!(number(&fields, "lost"), 0.0, "{fields:?}");
    assert!(
        load.stderr().contains("error: 1 line duplicated"),
        "{}",
        load.stderr()
    );
    // One server, one sender: today's summary, so they are errors there.
    let args = ["--chat", "2", "--pipeline", "4", "--duration", "0.5"];
    for fault in [Fault::Lose, Fault::Duplicate] {
        let (ok, fields, load) = load_faulty_chat(fault, &args);
        assert!(!ok, "{fields:?}");
        assert_eq!(number(&fields, "errors"), 1.0, "{fields:?}");
        assert!(!fields.contains_key("lost"), "{fields:?}");
        let said = match fault {
            Fault::Lose => "1 line lost",
            Fault::Duplicate => "1 line came twice",
        };
        assert!(
            load.stderr().contains(said),
            "{said:?} in {}",
            load.stderr()
        );
    }
}

#[test]
fn a_lost_line_holds_its_sender_back_for_a_while_only() {
    // One line in flight: without a limit the sender would wait for
    // line 5 to the end of the run.
    let args = ["--chat", "2", "--pipeline", "1", "--duration", "3"];
    let (ok, fields, load) = load_faulty_chat(Fault::Lose, &args);
    assert!(!ok, "{fields:?}");
    assert_eq!(number(&fields, "errors"), 1.0, "{fields:?}");
    assert!(number(&fields, "lines") > 6.0, "{fields:?}");
    assert!(load.stderr().contains("1 line lost"), "{}", load.stderr());
}

#[test]
fn chat_across_two_linked_servers_waits_for_the_link_and_measures_crossings() {
    let stop = Arc::new(AtomicBool::new(false));
    let link_after = Duration::from_millis(300);
    let (addrs, relay) = fake_chat_relay(2, link_after, None, Arc::clone(&stop));
    let second = addrs[1].to_string();
    let args = [
        "--addr",
        &second,
        "--chat",
        "4",
        "--pipeline",
        "2",
        "--duration",
        "1",
    ];
    let started = Instant::now();
    let (ok, fields, load) = run_load(addrs[0], &args);
    stop.store(true, Ordering::Relaxed);
    relay.join().unwrap();
    assert!(ok, "{fields:?}\n{}", load.stderr());
    // The handshake waited for the link (lines sent before it would have
    // been lost), then the run took --duration.
    assert!(started.elapsed() >= link_after + Duration::from_secs(1));
    check_multi_chat(&fields, &load, 4.0, 2.0);
    assert_eq!(number(&fields, "servers"), 2.0, "{fields:?}");
    assert!(number(&fields, "xp50_us") > 0.0, "{fields:?}");
}
