//! Chat servers sharing a room through a real `redis-server`
//! (`chat-server --broker`): delivery across servers, the broker going
//! away, slow or coming back, foreign payloads on the room, passwords,
//! bad URLs, rooms. Every test starts its own redis on a free port;
//! without `redis-server` installed they are skipped (they fail in CI).

mod common;

use common::chat_protocol;
use common::redis::*;
use common::*;
use std::time::{Duration, Instant};

/// The longest a server's link may take to come back once redis answers
/// again: the reconnect backoff's cap (2 s) and slack for a loaded machine.
const RESUME_BOUND: Duration = Duration::from_secs(6);

const PASSWORD: &str = "s3cret-PW";

/// The redis that `start` gave, or the test returns (skipped: `start`
/// said why).
macro_rules! redis_or_skip {
    ($start:expr) => {
        match $start {
            Some(redis) => redis,
            None => return,
        }
    };
}

#[test]
fn every_line_reaches_every_client_of_three_servers_once_in_order() {
    let redis = redis_or_skip!(RedisServer::start());
    for mode in MODES {
        let room = format!("three-{mode}");
        let by_name = format!("redis://localhost:{}", redis.port());
        let args = ["--broker-mode", mode, "--room", &room];
        let mut servers = vec![joined(&redis, mode, &room), joined(&redis, mode, &room)];
        servers.push(chat_joined(&by_name, &args, None));
        let mut peers: Vec<Peer> = servers.iter().flat_map(|s| join(s, 2)).collect();
        let lines: Vec<_> = (0..peers.len())
            .map(|i| lines_of(&format!("{mode} {i}"), 20))
            .collect();
        all_send_and_all_get_everything(&mut peers, &lines, mode);
        for server in &mut servers {
            let summary = stop(server);
            assert_eq!(summary.received, 80, "{mode}: {summary:?}");
            assert_eq!(summary.sent + summary.unsent, 40, "{mode}: {summary:?}");
            assert_eq!(summary.dropped + summary.skipped, 0, "{mode}: {summary:?}");
        }
    }
}

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
fn garbage_on_the_room_is_skipped_with_one_warning_and_chat_goes_on() {
    let redis = redis_or_skip!(RedisServer::start());
    for mode in MODES {
        let room = format!("junk-{mode}");
        let key = room_key(&room);
        let mut a_server = joined(&redis, mode, &room);
        let mut b_server = joined(&redis, mode, &room);
        let mut a = join(&a_server, 2);
        let mut b = client(&b_server);

        let newer = b"rselectors-chat/2 0123456789abcdef 1\nyour msg = v2 from 1.2.3.4:5\n";
        let not_chat = b"rselectors-chat/1 0123456789abcdef 1\nhello, not a chat message\n";
        let huge = vec![b'x'; 1 << 20];
        let payloads: [&[u8]; 4] = [b"junk", newer, not_chat, &huge];
        for payload in payloads {
            put(&redis, mode, &room, payload);
        }
        let mut foreign = payloads.len() as u64;
        if mode == "streams" {
            redis.run(&format!("XADD {key} * other x")).ok();
            redis.run(&format!("XADD {key} * m junk extra x")).ok();
            foreign += 2;
        } else {
            let subscribers = redis.run(&format!("PUBLISH {key} ping?"));
            assert_eq!(subscribers.integer(), 2, "both servers subscribe");
            foreign += 1;
        }

        // Each server reads the room in order: a real line after the
        // garbage shows that it has read all of it.
        say(a.iter_mut().chain([&mut b]), b"real", mode);
        say([&mut b].into_iter().chain(&mut a), b"real too", mode);
        for server in [&mut a_server, &mut b_server] {
            assert!(server.is_running(), "{mode}");
            let warning = server.wait_stderr_line("skipped ");
            assert!(warning.contains(&room_key(&room)), "{warning}");
            assert_logged(server, "skipped ", 1);
            assert_logged(server, "link down", 0);
            let listed = list_broker(server);
            let skipped = format!("skipped {foreign},");
            assert!(listed.contains(&skipped), "{mode}: {listed}");
        }
        assert_eq!(stop(&mut b_server).skipped, foreign, "{mode}");
    }
}

#[test]
fn a_server_stopped_with_sigterm_leaves_the_others_chatting() {
    let redis = redis_or_skip!(RedisServer::start());
    for mode in MODES {
        let room = format!("term-{mode}");
        let a_server = joined(&redis, mode, &room);
        let b_server = joined(&redis, mode, &room);
        let mut c_server = joined(&redis, mode, &room);
        let (mut a, mut b) = (client(&a_server), client(&b_server));
        let mut c = client(&c_server);
        say([&mut a, &mut b, &mut c], b"all three", mode);

        // Lines before, during and after the third server's stop.
        let lines = lines_of(mode, 30);
        a.send(&wire(&lines[..10]));
        c_server.signal("TERM");
        a.send(&wire(&lines[10..20]));
        let summary = stop(&mut c_server);
        assert_eq!(summary.dropped + summary.skipped, 0, "{summary:?}");
        a.send(&wire(&lines[20..]));
        for line in &lines {
            let message = from(&a, line);
            expect(&mut b, &message, mode);
            expect(&mut a, &message, mode);
        }
        say([&mut b, &mut a], b"still here", mode);
        for server in [&a_server, &b_server] {
            assert_logged(server, "link down", 0);
        }
    }
}

#[test]
fn a_password_joins_when_right_and_never_shows() {
    let redis = redis_or_skip!(RedisServer::start_with(&["--requirepass", PASSWORD]));
    let port = redis.port();
    let in_url = format!("redis://:{PASSWORD}@127.0.0.1:{port}");
    let mut a_server = chat_joined(&in_url, &[], None);
    let mut b_server = chat_joined(&redis.url(), &[], Some(PASSWORD));
    let (mut a, mut b) = (client(&a_server), client(&b_server));
    say([&mut b, &mut a], b"authenticated", "password");
    for server in [&mut a_server, &mut b_server] {
        let listed = list_broker(server);
        assert!(listed.contains(": connected;"), "{listed}");
        never_shows(server, PASSWORD);
    }

    let wrong = "wrong-PW-42";
    let wrong_url = format!("redis://:{wrong}@127.0.0.1:{port}");
    refused_but_serving(chat(&wrong_url, &[], None), "WRONGPASS", &[wrong]);
    refused_but_serving(chat(&redis.url(), &[], Some(wrong)), "WRONGPASS", &[wrong]);
    refused_but_serving(chat(&redis.url(), &[], None), "NOAUTH", &[PASSWORD]);
}

#[test]
fn an_acl_user_joins_with_a_password_escaped_in_the_url_or_in_the_environment() {
    let redis = redis_or_skip!(RedisServer::start());
    let (secret, escaped) = ("pw2:acl@Se/cret%", "pw2%3Aacl%40Se%2Fcret%25");
    redis
        .run(&format!("ACL SETUSER chat on >{secret} ~* &* +@all"))
        .ok();
    let url = format!("redis://chat:{escaped}@127.0.0.1:{}", redis.port());
    let mut a_server = chat_joined(&url, &[], None);
    let user_only = format!("redis://chat@127.0.0.1:{}", redis.port());
    let mut b_server = chat_joined(&user_only, &[], Some(secret));
    let (mut a, mut b) = (client(&a_server), client(&b_server));
    say([&mut a, &mut b], b"as chat", "acl");
    for server in [&mut a_server, &mut b_server] {
        let listed = list_broker(server);
        assert!(listed.contains("redis://chat@127.0.0.1:"), "{listed}");
        never_shows(server, secret);
        never_shows(server, escaped);
    }
}

#[test]
fn bad_broker_values_are_refused_before_anything_starts() {
    for (url, why) in [
        ("http://x:1", "scheme"),
        ("redis://h", "port"),
        ("redis://h:99999", "port '99999'"),
        ("redis://[::1]", "port"),
        ("redis://:secret@h:0", "port '0'"),
    ] {
        let stderr = refused(&loopback_args("chat-server", &["--broker", url]));
        assert!(stderr.contains("invalid --broker URL"), "{url}: {stderr}");
        assert!(stderr.contains(why), "{url}: {stderr}");
        assert!(!stderr.contains("secret"), "{url}: {stderr}");
    }
    let stderr = refused(&loopback_args("chat-server", &["--room", "r"]));
    assert!(stderr.contains("--broker"), "{stderr}");
    let long = "r".repeat(65);
    for room in ["two words", "", &long, "caf\u{e9}", "a@1"] {
        let args = ["--broker", "redis://127.0.0.1:1", "--room", room];
        let stderr = refused(&loopback_args("chat-server", &args));
        assert!(stderr.contains("--room"), "{room:?}: {stderr}");
    }
    let echo = loopback_args("echo-server", &["--broker", "redis://127.0.0.1:1"]);
    let stderr = refused(&echo);
    assert!(stderr.contains("chat-server"), "{stderr}");
}

#[test]
fn servers_with_two_loops_each_share_the_room() {
    let redis = redis_or_skip!(RedisServer::start());
    let two_loops = || chat_joined(&redis.url(), &["--threads", "2"], None);
    let servers = [two_loops(), two_loops()];
    // Enough clients that the kernel spreads them over both loops.
    let mut peers: Vec<Peer> = servers.iter().flat_map(|s| join(s, 6)).collect();
    let lines: Vec<_> = (0..peers.len())
        .map(|i| lines_of(&format!("threads {i}"), 3))
        .collect();
    all_send_and_all_get_everything(&mut peers, &lines, "--threads 2");
}

#[test]
fn rooms_do_not_share_lines_and_are_named_in_redis() {
    let redis = redis_or_skip!(RedisServer::start());
    for mode in MODES {
        let (red, blue) = (format!("red-{mode}"), format!("blue-{mode}"));
        let red_server = joined(&redis, mode, &red);
        let other_red = joined(&redis, mode, &red);
        let blue_server = joined(&redis, mode, &blue);
        let mut b = client(&blue_server);
        // The broker has passed it on once the other red server has it;
        // anything on blue after that comes to blue's clients after it.
        say(
            [&mut client(&red_server), &mut client(&other_red)],
            b"red only",
            mode,
        );
        let (envelope, marker) = fake_envelope(1, b"blue marker");
        put(&redis, mode, &blue, &envelope);
        expect(&mut b, &marker, mode);

        if mode == "pubsub" {
            let reply = redis.run("PUBSUB CHANNELS rselectors:chat:*");
            let mut channels = reply.texts();
            channels.sort();
            assert_eq!(channels, [room_key(&blue), room_key(&red)], "{reply:?}");
        } else {
            for room in [&red, &blue] {
                let len = redis.run(&format!("XLEN {}", room_key(room)));
                assert!(len.integer() > 0, "{room}: {len:?}");
            }
            let kind = redis.run(&format!("TYPE {}", room_key(&red)));
            assert_eq!(kind, Reply::Simple("stream".into()));
        }
    }
}

#[test]
fn an_envelope_put_twice_or_late_is_delivered_once() {
    let redis = redis_or_skip!(RedisServer::start());
    for mode in MODES {
        let room = format!("twice-{mode}");
        let mut server = joined(&redis, mode, &room);
        let mut peer = client(&server);
        let envelopes: Vec<_> = (1..=3)
            .map(|seq| fake_envelope(seq, format!("envelope {seq}").as_bytes()))
            .collect();
        // A retried publish repeats an envelope; an old one may come late.
        for i in [0, 0, 1, 0, 1, 2] {
            put(&redis, mode, &room, &envelopes[i].0);
        }
        for (_, message) in &envelopes {
            expect(&mut peer, message, mode);
        }
        let summary = stop(&mut server);
        assert_eq!((summary.received, summary.skipped), (3, 0), "{mode}");
    }
}

#[test]
fn a_burst_over_one_envelope_and_a_longest_line_cross_in_order() {
    let redis = redis_or_skip!(RedisServer::start());
    for mode in MODES {
        let room = format!("burst-{mode}");
        let a_server = joined(&redis, mode, &room);
        let b_server = joined(&redis, mode, &room);
        // About 700 KB of messages: several envelopes, sent in one write.
        let mut lines = padded_lines(mode, 4_000, 120);
        lines.push(vec![b'L'; chat_protocol::MAX_LINE]);
        let mut b = client(&b_server);
        burst(&mut client(&a_server), vec![&mut b], &lines, mode);
        // One byte more: refused, and not sent to the room either.
        let mut a = client(&a_server);
        a.send(&[&vec![b'L'; chat_protocol::MAX_LINE + 1][..], b"\n"].concat());
        assert_eq!(a.read_to_close(), chat_protocol::LINE_TOO_LONG, "{mode}");
        say([&mut client(&a_server), &mut b], b"next", mode);
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
fn a_listener_that_never_reads_is_cut_off_from_other_servers_lines() {
    let redis = redis_or_skip!(RedisServer::start());
    let a_server = joined(&redis, "pubsub", "chat");
    let b_server = chat_joined(&redis.url(), &["--max-backlog", "131072"], None);
    let mut b = join(&b_server, 2);
    let mut idle = b.pop().unwrap();
    // About 7 MB: more than the idle client's socket buffers and the
    // backlog cap take, less than Redis lets a subscriber fall behind by.
    let lines = padded_lines("for B", 40_000, 100);
    burst(&mut client(&a_server), vec![&mut b[0]], &lines, "reader");
    b_server.wait_stderr_line("backlog over the limit");
    let got = idle.read_to_close();
    // Less than the lines alone, without their prefixes and senders.
    let lines_bytes = wire(&lines).len();
    assert!(got.len() < lines_bytes, "{} of {lines_bytes}", got.len());
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
fn the_databases_of_one_redis_are_separate_brokers() {
    let redis = redis_or_skip!(RedisServer::start());
    for mode in MODES {
        let on = |db: u32| {
            let url = format!("{}/{db}", redis.url());
            chat_joined(&url, &["--broker-mode", mode, "--room", "same"], None)
        };
        let (one, other_one, two, other_two) = (on(1), on(1), on(2), on(2));
        let mut on_two = client(&two);
        // Redis has passed it on once the other server of db 1 has it; a
        // line on db 2 after that comes to db 2's clients after it.
        say([&mut client(&one), &mut client(&other_one)], b"db 1", mode);
        say([&mut client(&other_two), &mut on_two], b"db 2", mode);
    }
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
