//! Chat servers sharing a room through a real `redis-server` when the
//! broker fails them: killed, hung, restarted, slow, cutting one server
//! off or not there yet; a full queue, the reconnect backoff, a server
//! out of descriptors, SIGTERM with the broker gone. Local chat never
//! waits for the broker, and the link comes back by itself. Every test
//! starts its own redis on a free port; without `redis-server` installed
//! they are skipped (they fail in CI).

mod common;

use common::chat_protocol;
use common::chat_room::*;
use common::redis::RedisServer;
use common::*;
use std::time::{Duration, Instant};

/// The longest a server's link may take to come back once redis answers
/// again: the reconnect backoff's cap (2 s) and slack for a loaded machine.
const RESUME_BOUND: Duration = Duration::from_secs(6);

#[test]
fn a_killed_broker_stops_nothing_local_and_the_link_comes_back() {
    let mut redis = redis_or_skip!(RedisServer::start());
    for mode in MODES {
        let room = format!("outage-{mode}");
        let mut a_server = joined(&redis, mode, &room);
        let mut b_server = joined(&redis, mode, &room);
        let mut a = join(&a_server, 2);
        let mut b = client(&b_server);
        say(a.iter_mut().chain([&mut b]), b"before", mode);

        redis.stop();
        a_server.wait_stderr_line("link down (");
        b_server.wait_stderr_line("link down (");
        let during: Vec<Vec<u8>> = (0..5).map(|i| format!("during {i}").into_bytes()).collect();
        for line in &during {
            say_locally_at_once(&mut a, line, mode);
        }
        let b_during = from(&b, b"b during");
        say([&mut b], b"b during", mode);
        let listed = list_broker(&mut a_server);
        assert!(listed.contains(": not connected;"), "{mode}: {listed}");
        assert!(a_server.is_running() && b_server.is_running(), "{mode}");

        let restarted = Instant::now();
        redis.restart();
        a_server.wait_stderr_line("link up after");
        b_server.wait_stderr_line("link up after");
        let took = restarted.elapsed();
        assert!(took < RESUME_BOUND, "{mode}: back after {took:?}");

        if mode == "streams" {
            // Nothing sent during the outage is lost or repeated.
            for line in &during {
                expect(&mut b, &from(&a[0], line), "streams: queued");
            }
            for peer in &mut a {
                expect(peer, &b_during, "streams: queued");
            }
        }
        // Chat resumes; what the pubsub link dropped does not come late,
        // nothing comes twice (it would come before these).
        say(a.iter_mut().chain([&mut b]), b"after", mode);
        say([&mut b].into_iter().chain(&mut a), b"final", mode);

        for server in [&a_server, &b_server] {
            assert_logged(server, "link down (", 1);
            assert_logged(server, "cannot join", 0);
        }
        let (a_summary, b_summary) = (stop(&mut a_server), stop(&mut b_server));
        assert_eq!(a_summary.reconnects, 1, "{mode}: {a_summary:?}");
        assert_eq!(b_summary.reconnects, 1, "{mode}: {b_summary:?}");
        if mode == "pubsub" {
            assert!(a_summary.dropped >= 5, "{a_summary:?}");
            assert!(b_summary.dropped >= 1, "{b_summary:?}");
        } else {
            assert_eq!(
                (a_summary.dropped, a_summary.unsent),
                (0, 0),
                "{a_summary:?}"
            );
            assert_eq!(a_summary.received, 2, "{a_summary:?}");
            assert_eq!(b_summary.received, 7, "{b_summary:?}");
        }
    }
}

#[test]
fn a_server_started_before_the_broker_joins_when_it_appears() {
    let mut redis = redis_or_skip!(RedisServer::start());
    for mode in MODES {
        redis.stop();
        let room = format!("late-{mode}");
        let early = chat(
            &redis.url(),
            &["--broker-mode", mode, "--room", &room],
            None,
        );
        early.wait_stderr_line("cannot join (");
        let mut a = join(&early, 2);
        say(&mut a, b"alone", mode);

        redis.restart();
        early.wait_stderr_line("joined room");
        let late = joined(&redis, mode, &room);
        let mut b = client(&late);
        say([&mut b].into_iter().chain(&mut a), b"hello early", mode);
        say(a.iter_mut().rev().chain([&mut b]), b"hello late", mode);
        assert_logged(&early, "cannot join", 1);
    }
}

#[test]
fn a_full_streams_queue_drops_and_counts_what_does_not_fit() {
    let mut redis = redis_or_skip!(RedisServer::start());
    let mode_and_queue = ["--broker-mode", "streams", "--broker-queue", "4K"];
    let mut a_server = chat_joined(&redis.url(), &mode_and_queue, None);
    let b_server = joined(&redis, "streams", "chat");
    let (mut a, mut b) = (client(&a_server), client(&b_server));

    redis.stop();
    a_server.wait_stderr_line("link down (");
    // Each line its own envelope: the first fill the queue.
    let lines = lines_of("queued", 100);
    say_one_a_round(&mut a, &lines);
    a_server.wait_stderr_line("wait for it (--broker-queue)");
    redis.restart();
    let up = a_server.wait_stderr_line("link up after");
    b_server.wait_stderr_line("link up after");
    // "link up after T s down (Q queued lines go out now, D were dropped)"
    let dropped: usize = up
        .rsplit_once(", ")
        .and_then(|(_, d)| d.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{up}"));
    assert!(dropped > 0 && dropped < lines.len(), "{up}");
    let kept = lines.len() - dropped;
    // What fitted goes out, in order, once; a marker put after it by
    // another writer comes next.
    for line in &lines[..kept] {
        expect(&mut b, &from(&a, line), "kept");
    }
    let (envelope, marker) = fake_envelope(1, b"marker");
    put(&redis, "streams", "chat", &envelope);
    expect(&mut b, &marker, "marker");
    let summary = stop(&mut a_server);
    assert_eq!(summary.dropped, dropped as u64, "{summary:?}");
    assert_eq!(summary.sent + summary.unsent, kept as u64, "{summary:?}");
    assert_logged(&a_server, "wait for it", 1);
}

#[test]
fn a_slow_broker_fills_the_queue_with_one_warning() {
    let redis = redis_or_skip!(RedisServer::start());
    for mode in MODES {
        let room = format!("slow-{mode}");
        let args = [
            "--broker-mode",
            mode,
            "--room",
            &room,
            "--broker-queue",
            "4K",
        ];
        let mut a_server = chat_joined(&redis.url(), &args, None);
        let b_server = joined(&redis, mode, &room);
        let (mut a, mut b) = (client(&a_server), client(&b_server));
        // Writes wait; the link stays up (well within its reply timeout).
        redis.run("CLIENT PAUSE 10000 WRITE").ok();
        // Quick (well within the reply timeout): about 25 lines fill 4K.
        let lines = lines_of(mode, 60);
        say_one_a_round(&mut a, &lines);
        a_server.wait_stderr_line("wait for it (--broker-queue)");
        redis.run("CLIENT UNPAUSE").ok();
        // Redis runs what it held back before a command that comes after
        // the unpause: the marker comes after every line that went out.
        let (envelope, marker) = fake_envelope(1, b"marker");
        put(&redis, mode, &room, &envelope);
        let expected: Vec<Vec<u8>> = lines.iter().map(|line| from(&a, line)).collect();
        // Lines go out in order, with gaps where the queue was full.
        let received = read_until(&mut b, &marker);
        assert!(in_order(&received, &expected), "{mode}");
        let kept = received.len();
        assert!(kept > 0 && kept < lines.len(), "{mode}: {kept} kept");
        let summary = stop(&mut a_server);
        assert_eq!(summary.dropped as usize, lines.len() - kept, "{summary:?}");
        assert_logged(&a_server, "wait for it", 1);
        assert_logged(&a_server, "link down", 0);
    }
}

#[test]
fn a_server_cut_off_from_the_broker_catches_up_in_streams_mode() {
    let redis = redis_or_skip!(RedisServer::start());
    let a_server = joined(&redis, "streams", "cut");
    let b_server = joined(&redis, "streams", "cut");
    let (mut a, mut b) = (client(&a_server), client(&b_server));
    let (a_addr, b_addr) = (a.local_addr(), b.local_addr());
    say([&mut a, &mut b], b"before", "before");

    // The broker stays up and keeps the stream; only B's link is cut.
    let ports = ports_connected_to(b_server.pid(), redis.port());
    assert_eq!(ports.len(), 2, "publisher and reader: {ports:?}");
    for port in ports {
        redis
            .run(&format!("CLIENT KILL ADDR 127.0.0.1:{port}"))
            .ok();
    }
    b_server.wait_stderr_line("link down (");
    let a_lines = lines_of("while B is cut off", 10);
    let b_lines = vec![b"from B, cut off".to_vec()];
    a.send(&wire(&a_lines));
    b.send(&wire(&b_lines));
    b_server.wait_stderr_line("link up after");
    // Each side gets both senders' lines once, each sender's in order.
    for peer in [&mut a, &mut b] {
        let received: Vec<Vec<u8>> = (0..11).map(|_| peer.read_line()).collect();
        for (sender, lines) in [(a_addr, &a_lines), (b_addr, &b_lines)] {
            let expected: Vec<Vec<u8>> = lines
                .iter()
                .map(|line| chat_protocol::message(line, sender))
                .collect();
            assert!(of_sender(&received, sender) == expected, "from {sender}");
        }
    }
    say([&mut a, &mut b], b"after", "after");
    assert_logged(&a_server, "link down", 0);
}

#[test]
fn a_hung_broker_is_given_up_and_rejoined_without_a_pause_or_a_repeat() {
    let redis = redis_or_skip!(RedisServer::start());
    for mode in MODES {
        let room = format!("hung-{mode}");
        let a_server = joined(&redis, mode, &room);
        let b_server = joined(&redis, mode, &room);
        let mut a = join(&a_server, 2);
        let mut b = client(&b_server);
        say(a.iter_mut().chain([&mut b]), b"before", mode);

        // Its sockets stay open and say nothing: only the link's own
        // timeouts find it out. Local lines do not wait for them.
        redis.signal("STOP");
        let lines = lines_of(&format!("{mode} hung"), 10);
        for (i, line) in lines.iter().enumerate() {
            if i == 5 {
                a_server.wait_stderr_line("link down (");
            }
            say_locally_at_once(&mut a, line, mode);
        }
        b_server.wait_stderr_line("link down (");
        redis.signal("CONT");
        a_server.wait_stderr_line("link up after");
        b_server.wait_stderr_line("link up after");

        // Streams: each line once, in order, though envelopes sent before
        // the link was given up may reach the stream twice. Pubsub: those
        // may arrive or not, in order, never twice.
        let (envelope, marker) = fake_envelope(1, b"marker");
        put(&redis, mode, &room, &envelope);
        let expected: Vec<Vec<u8>> = lines.iter().map(|line| from(&a[0], line)).collect();
        let received = read_until(&mut b, &marker);
        match mode {
            "streams" => assert!(received == expected, "{} lines", received.len()),
            _ => assert!(in_order(&received, &expected), "pubsub"),
        }
        for peer in &mut a {
            expect(peer, &marker, mode);
        }
        say([&mut b].into_iter().chain(&mut a), b"after", mode);
        for server in [&a_server, &b_server] {
            assert_logged(server, "link down (", 1);
            let warning = server.wait_stderr_line("link down (");
            assert!(warning.contains("no reply"), "{warning}");
        }
    }
}

#[test]
fn a_server_out_of_descriptors_keeps_its_link_to_the_room() {
    let redis = redis_or_skip!(RedisServer::start());
    if std::process::Command::new("prlimit")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("note: prlimit (util-linux) not found; skipping");
        return;
    }
    // 64 descriptors: the server's own, the link's two, a few dozen
    // clients.
    let mut command = std::process::Command::new("prlimit");
    command.args(["--nofile=64:64", BIN]);
    command.args(loopback_args("chat-server", &["--broker", &redis.url()]));
    let a_server = start_server_command(command, std::process::Stdio::null());
    a_server.wait_stderr_line("joined room");
    let b_server = joined(&redis, "pubsub", "chat");
    let mut b = client(&b_server);
    let mut peers: Vec<Peer> = (0..90).map(|_| Peer::connect(a_server.addr)).collect();
    a_server.wait_stderr_line("cannot accept: Too many open files");
    a_server.wait_stderr_line(&format!("connected {} ", peers[0].local_addr()));
    // Lines still cross both ways (the other clients of A get them too).
    say([&mut peers[0], &mut b], b"from a full server", "emfile");
    say([&mut b, &mut peers[0]], b"to a full server", "emfile");
    drop(peers);
    a_server.wait_stderr_line("accepting connections again");
    say([&mut client(&a_server), &mut b], b"room again", "emfile");
    assert_logged(&a_server, "link down", 0);
}

#[test]
fn sigterm_with_the_broker_gone_stops_at_once_and_counts_what_was_not_sent() {
    let mut redis = redis_or_skip!(RedisServer::start());
    for mode in MODES {
        let room = format!("gone-{mode}");
        let mut server = joined(&redis, mode, &room);
        let mut peers = join(&server, 2);
        redis.stop();
        server.wait_stderr_line("link down (");
        for line in lines_of(mode, 3) {
            say(&mut peers, &line, mode);
        }
        let stopping = Instant::now();
        let summary = stop(&mut server);
        let took = stopping.elapsed();
        assert!(took < LOCAL_BOUND, "{mode}: stopping took {took:?}");
        let expected = match mode {
            "pubsub" => (0, 3, 0),
            _ => (0, 0, 3),
        };
        let got = (summary.sent, summary.dropped, summary.unsent);
        assert_eq!(got, expected, "{mode}: {summary:?}");
        for peer in &mut peers {
            assert_eq!(peer.read_to_close(), b"", "{mode}");
        }
        redis.restart();
    }
}

#[test]
fn a_server_redis_drops_for_reading_too_slowly_comes_back_by_itself() {
    // Redis cuts a subscriber that falls 512 KB behind.
    let limit = ["--client-output-buffer-limit", "pubsub 512kb 256kb 1"];
    let redis = redis_or_skip!(RedisServer::start_with(&limit));
    let a_server = joined(&redis, "pubsub", "chat");
    let b_server = joined(&redis, "pubsub", "chat");
    let (mut a, mut b) = (client(&a_server), client(&b_server));
    say([&mut a, &mut b], b"before", "slow");

    // B reads nothing while A's client sends about 8 MB: more than the
    // socket buffers between redis and B hold.
    b_server.signal("STOP");
    let lines = padded_lines("while B sleeps", 60_000, 70);
    burst(&mut a, vec![], &lines, "A");
    let after = from(&a, b"after");
    let received = std::thread::scope(|scope| {
        let reader = scope.spawn(|| read_until(&mut b, &after));
        b_server.signal("CONT");
        b_server.wait_stderr_line("link down (");
        b_server.wait_stderr_line("link up after");
        say([&mut a], b"after", "slow");
        reader.join().unwrap()
    });
    // What came before the cut arrives in order; chat then goes on.
    let expected: Vec<Vec<u8>> = lines.iter().map(|line| from(&a, line)).collect();
    assert!(received.len() < lines.len(), "{} lines", received.len());
    assert!(in_order(&received, &expected), "{} lines", received.len());
    say([&mut b, &mut a], b"back", "slow");
    assert_logged(&b_server, "link down (", 1);
    assert_logged(&a_server, "link down", 0);
}

#[test]
fn reconnect_attempts_back_off_to_a_cap_of_two_seconds() {
    let mut redis = redis_or_skip!(RedisServer::start());
    redis.stop();
    // `-v` logs every failed attempt; the first is the warning.
    let server = chat(&redis.url(), &["-v"], None);
    let attempt = "publisher: Connection refused";
    // Pauses of 0.1, 0.2, 0.4, 0.8, 1.6 s, then 2 s: each cut by up to
    // half at random. The 7th and 8th are at the cap.
    server.wait_stderr_count(attempt, 7);
    let seventh = Instant::now();
    server.wait_stderr_count(attempt, 9);
    let two_pauses = seventh.elapsed();
    let (low, high) = (Duration::from_millis(1900), Duration::from_secs(6));
    assert!(two_pauses > low && two_pauses < high, "{two_pauses:?}");
    assert_logged(&server, "cannot join", 1);
}
