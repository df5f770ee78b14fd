//! Hostile clients cannot grow a server without bound: 1,000 connections
//! that each push 2 MiB and never read leave the server small, responsive
//! to a normal client, and it gives the memory back when they go.

mod common;

use common::*;
use rselectors::{DefaultSelector, Events};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Hostile connections per server.
const HOSTILE: usize = 1000;
/// What each of them tries to send.
const PUSH: usize = 2 * 1024 * 1024;
/// The resident memory the server must stay under, in KiB.
const RSS_LIMIT_KIB: u64 = 256 * 1024;
/// How close to its resident memory before the push the server must come
/// back once the hostile clients are gone, in KiB.
const RECOVERED_KIB: u64 = 16 * 1024;
/// With no socket writable for this long, and the server using almost no
/// CPU meanwhile, it has stopped reading them all: the attack has done
/// what it can.
const STALLED_AFTER: Duration = Duration::from_secs(1);
/// The whole push is bounded in time.
const PUSH_FOR: Duration = Duration::from_secs(60);

/// Raises this process's soft limit on open files to the hard one (the
/// server, its child, inherits it); false if there still is no room.
fn room_for(fds: u64) -> bool {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    if now < fds {
        eprintln!("skipped: {now} open files allowed, {fds} needed");
        return false;
    }
    true
}

/// A connection whose kernel buffers hold little, as a hostile client
/// would open it: what it sends waits in the server, not in the kernel.
fn connect_with_small_buffers(addr: SocketAddr) -> TcpStream {
    use rustix::net::{connect, socket, sockopt, AddressFamily, SocketType};
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = socket(family, SocketType::STREAM, None).expect("socket");
    sockopt::set_socket_send_buffer_size(&fd, 4096).unwrap();
    sockopt::set_socket_recv_buffer_size(&fd, 4096).unwrap();
    connect(&fd, &addr).expect("connect");
    TcpStream::from(fd)
}

/// Resident memory of `pid` now, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Opens [`HOSTILE`] connections and writes `chunk` on each, over and
/// over, until each has sent [`PUSH`] bytes or the server stops reading
/// all of them; reads nothing. Returns the connections, still open, and
/// the bytes sent.
fn push_and_never_read(server: &Server, chunk: &[u8]) -> (Vec<TcpStream>, usize) {
    let addr = server.addr;
    let mut sel: DefaultSelector<TcpStream, usize> = DefaultSelector::new().unwrap();
    let mut sent = vec![0usize; HOSTILE];
    for i in 0..HOSTILE {
        let stream = connect_with_small_buffers(addr);
        stream.set_nonblocking(true).unwrap();
        sel.register(stream, Events::WRITE, i).unwrap();
    }
    let started = Instant::now();
    let mut left = HOSTILE;
    let mut done = Vec::new();
    let mut cpu = server.cpu_time();
    while left > 0 && started.elapsed() < PUSH_FOR {
        if sel.select(Some(STALLED_AFTER)).unwrap() == 0 {
            // Nothing writable: the server reads none of them, unless it is
            // still busy with what it has read.
            let now = server.cpu_time();
            if now - cpu < STALLED_AFTER / 20 {
                break;
            }
            cpu = now;
            continue;
        }
        cpu = server.cpu_time();
        while let Some((fd, _)) = sel.next_ready() {
            let key = sel.get_key(fd).unwrap();
            let i = key.data;
            let want = (PUSH - sent[i]).min(chunk.len());
            match (&key.fileobj).write(&chunk[..want]) {
                Ok(n) => sent[i] += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The server cut it off: that is allowed.
                Err(_) => sent[i] = PUSH,
            }
            if sent[i] == PUSH {
                done.push(sel.unregister(fd).unwrap().fileobj);
                left -= 1;
            }
        }
    }
    let total = sent.iter().sum();
    let fds: Vec<_> = sel.get_map().fds().collect();
    let rest = fds
        .into_iter()
        .map(|fd| sel.unregister(fd).unwrap().fileobj);
    done.extend(rest);
    (done, total)
}

/// Waits (bounded) until the server's resident memory is under `kib`.
fn wait_rss_below(server: &Server, kib: u64) -> u64 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let now = rss_kib(server.pid());
        if now < kib || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hostile_push(server_args: &[&str], chunk: &[u8], check_normal: impl Fn(SocketAddr)) {
    if !room_for(3 * HOSTILE as u64 + 100) {
        return;
    }
    let server = start_server(server_args);
    let before = rss_kib(server.pid());
    let (streams, sent) = push_and_never_read(&server, chunk);
    let during = rss_kib(server.pid());
    let peak = server.peak_memory_kib();
    let log = server.stderr();
    let tail: Vec<&str> = log.lines().rev().take(3).collect();
    eprintln!("server log ({} lines), last: {tail:?}", log.lines().count());
    eprintln!(
        "{server_args:?}: {sent} bytes pushed; RSS before {before} KiB, \
         after the push {during} KiB, peak {peak} KiB"
    );
    assert!(
        peak < RSS_LIMIT_KIB,
        "peak RSS {peak} KiB over {RSS_LIMIT_KIB} KiB{}",
        server.stderr()
    );
    // A client that reads normally is served while they hold on.
    check_normal(server.addr);
    drop(streams);
    let after = wait_rss_below(&server, before + RECOVERED_KIB);
    eprintln!("after they left: {after} KiB");
    assert!(
        after < before + RECOVERED_KIB,
        "the server kept {after} KiB after they left (started at {before} KiB)"
    );
    check_normal(server.addr);
}

#[test]
fn echo_server_survives_a_thousand_clients_that_never_read() {
    let chunk = pattern(64 * 1024);
    hostile_push(&loopback_args("echo-server", &[]), &chunk, |addr| {
        let mut peer = Peer::connect(addr);
        peer.send(b"still there?\n");
        assert_eq!(peer.read_line(), b"still there?\n");
    });
}

#[test]
fn echo_server_with_two_loops_survives_a_thousand_clients_that_never_read() {
    let chunk = pattern(64 * 1024);
    let args = loopback_args("echo-server", &["--threads", "2"]);
    hostile_push(&args, &chunk, |addr| {
        let mut peer = Peer::connect(addr);
        peer.send(b"still there?\n");
        assert_eq!(peer.read_line(), b"still there?\n");
    });
}

#[test]
fn chat_server_survives_a_thousand_clients_that_never_read() {
    // Lines of 1 KiB: each is broadcast to every connection.
    let mut chunk = Vec::new();
    while chunk.len() < 64 * 1024 {
        chunk.extend_from_slice(&[b'x'; 1023]);
        chunk.push(b'\n');
    }
    hostile_push(&loopback_args("chat-server", &[]), &chunk, |addr| {
        let mut peer = Peer::connect(addr);
        let me = peer.local_addr();
        peer.send(b"still there?\n");
        // Its own line comes back, after whatever others said before it.
        let expected = chat_protocol::message(b"still there?", me);
        loop {
            let line = peer.read_line();
            if line == expected {
                break;
            }
        }
        peer.send(b"quit\n");
    });
}

#[test]
fn chat_server_cuts_off_clients_that_hold_unfinished_lines_past_the_budget() {
    let server = start_on_loopback("chat-server", &["--max-memory", "4M"]);
    // 120 x 65,000 bytes of lines never finished: about twice the budget.
    let holders: Vec<Peer> = (0..120)
        .map(|_| {
            let mut peer = Peer::connect(server.addr);
            peer.send(&[b'x'; 65_000]);
            peer
        })
        .collect();
    server.wait_stderr_line("(--max-memory)");
    let mut normal = Peer::connect(server.addr);
    let me = normal.local_addr();
    normal.send(b"hello one\nhello two\n");
    assert_eq!(normal.read_line(), chat_protocol::message(b"hello one", me));
    assert_eq!(normal.read_line(), chat_protocol::message(b"hello two", me));
    drop(holders);
}
