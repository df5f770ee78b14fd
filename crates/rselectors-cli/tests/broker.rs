//! Chat servers sharing a room through a real `redis-server`
//! (`chat-server --broker`) while the broker is up: delivery across
//! servers, once and in order; rooms and databases kept apart; foreign
//! payloads on the room skipped; passwords and ACL users; bad flags;
//! servers with `--threads`. The broker going away, hanging or being slow
//! is in `broker_outages.rs`. Every test starts its own redis on a free
//! port; without `redis-server` installed they are skipped (they fail in
//! CI).

mod common;

use common::chat_protocol;
use common::chat_room::*;
use common::redis::RedisServer;
use common::redis_client::Reply;
use common::*;

const PASSWORD: &str = "s3cret-PW";

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

/// `load --chat` over two servers joined by the broker: every line of
/// every sender reaches every listener on both servers exactly once, in
/// order (the load generator checks each byte and counts what is lost
/// or repeated), and the summary names the servers and senders.
#[test]
fn the_load_generator_sees_every_line_once_across_two_servers() {
    let redis = redis_or_skip!(RedisServer::start());
    for mode in MODES {
        let room = format!("load-{mode}");
        let mut servers = [joined(&redis, mode, &room), joined(&redis, mode, &room)];
        let second = servers[1].addr.to_string();
        let args = [
            "--addr",
            &second,
            "--chat",
            "6",
            "--pipeline",
            "4",
            "--duration",
            "0.5",
        ];
        let (ok, fields, load) = run_load(servers[0].addr, &args);
        assert!(ok, "{mode}: {fields:?}\n{}", load.stderr());
        for (key, expected) in [
            ("servers", "2"),
            ("senders", "2"),
            ("lost", "0"),
            ("dup", "0"),
            ("errors", "0"),
        ] {
            assert_eq!(
                fields.get(key).map(String::as_str),
                Some(expected),
                "{mode}: {fields:?}"
            );
        }
        let crossed: f64 = fields["xp50_us"].parse().unwrap();
        assert!(crossed > 0.0, "{mode}: no line crossed servers: {fields:?}");
        for server in &mut servers {
            let summary = stop(server);
            assert!(
                summary.sent > 0 && summary.received > 0,
                "{mode}: {summary:?}"
            );
            assert_eq!(summary.dropped + summary.skipped, 0, "{mode}: {summary:?}");
        }
    }
}
