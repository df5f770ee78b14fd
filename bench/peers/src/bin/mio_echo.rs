//! Echo server on `mio` (edge-triggered, its only mode), written the way mio asks.
//!
//! Edge-triggered readiness means a readable event must be drained until `WouldBlock`,
//! which costs one extra `read` per wakeup compared with the level-triggered raw loop.
//! Each chunk read is written straight back; a partial write buffers the rest, stops
//! reading and reregisters for WRITABLE only. When the tail is drained the connection
//! reregisters for READABLE, which re-arms the edge so unread data is reported again.

use std::io::{self, Read};

use bench_peers::{announce, bind_listener, die, write_some, Pending, READ_BUF_SIZE};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

/// Token of the listening socket; connections use their slot index plus one.
const LISTENER: Token = Token(0);
/// Events fetched per `Poll::poll`.
const MAX_EVENTS: usize = 1024;

/// One accepted connection and the unsent tail of a partial write.
struct Conn {
    stream: TcpStream,
    pending: Pending,
}

/// What the event handler decided for a connection.
enum Outcome {
    Keep,
    Close,
}

/// Reads until `WouldBlock` (edge-triggered contract), echoing each chunk.
fn on_readable(poll: &Poll, token: Token, conn: &mut Conn, buf: &mut [u8]) -> io::Result<Outcome> {
    loop {
        let n = match conn.stream.read(buf) {
            Ok(0) => return Ok(Outcome::Close),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Outcome::Keep),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let sent = write_some(&mut conn.stream, &buf[..n])?;
        if sent < n {
            conn.pending.hold(&buf[sent..n]);
            poll.registry()
                .reregister(&mut conn.stream, token, Interest::WRITABLE)?;
            return Ok(Outcome::Keep);
        }
    }
}

/// Writes the buffered tail; once drained, re-arms READABLE.
fn on_writable(poll: &Poll, token: Token, conn: &mut Conn) -> io::Result<Outcome> {
    let sent = write_some(&mut conn.stream, conn.pending.rest())?;
    if conn.pending.wrote(sent) {
        poll.registry()
            .reregister(&mut conn.stream, token, Interest::READABLE)?;
    }
    Ok(Outcome::Keep)
}

fn main() {
    let (listener, local) = bind_listener();
    let mut listener = TcpListener::from_std(listener);
    let mut poll = Poll::new().unwrap_or_else(|e| die("Poll::new", e));
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .unwrap_or_else(|e| die("register(listener)", e));
    announce(local);

    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free_slots: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(MAX_EVENTS);
    let mut buf = vec![0u8; READ_BUF_SIZE];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            die("poll", e);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    let mut stream = match listener.accept() {
                        Ok((stream, _)) => stream,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        // EMFILE and friends: stop; edge-triggered, so the rest waits for
                        // the next connection attempt (acceptable for a benchmark peer).
                        Err(_) => break,
                    };
                    // Same as every peer: no Nagle delay on small echoes.
                    let _ = stream.set_nodelay(true);
                    let slot = free_slots.pop().unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    let token = Token(slot + 1);
                    if poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE)
                        .is_err()
                    {
                        free_slots.push(slot);
                        continue;
                    }
                    conns[slot] = Some(Conn {
                        stream,
                        pending: Pending::default(),
                    });
                }
                continue;
            }
            let slot = event.token().0 - 1;
            let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            let outcome = if !conn.pending.is_empty() {
                on_writable(&poll, event.token(), conn)
            } else {
                on_readable(&poll, event.token(), conn, &mut buf)
            };
            if !matches!(outcome, Ok(Outcome::Keep)) {
                // Dropping the stream closes it, which also removes it from epoll.
                conns[slot] = None;
                free_slots.push(slot);
            }
        }
    }
}
