//! Echo server on the `polling` crate in level-triggered mode, shaped like the raw loop:
//! fd-keyed table, one read per readable event, write back, buffer the rest and switch
//! the interest to writable until drained.
//!
//! `polling` defaults to oneshot; `add_with_mode(.., PollMode::Level)` asks for level.
//! `Poller::add*` is `unsafe` because the caller must delete the source before closing
//! it; every close below deletes first.

use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use bench_peers::{announce, bind_listener, die, write_some, Pending, READ_BUF_SIZE};
use polling::{Event, Events, PollMode, Poller};

/// One accepted connection and the unsent tail of a partial write.
struct Conn {
    stream: TcpStream,
    pending: Pending,
}

/// Removes the connection from the poller, then drops (closes) it.
fn close_conn(poller: &Poller, table: &mut [Option<Conn>], key: usize) {
    if let Some(conn) = table[key].take() {
        let _ = poller.delete(&conn.stream);
    }
}

/// Switches the connection's interest (readable or writable, level mode); a
/// refusal closes it.
fn set_interest(poller: &Poller, table: &mut [Option<Conn>], key: usize, interest: Event) {
    let Some(conn) = table[key].as_ref() else {
        return;
    };
    if poller
        .modify_with_mode(&conn.stream, interest, PollMode::Level)
        .is_err()
    {
        close_conn(poller, table, key);
    }
}

/// One read, one write back; a partial write switches the interest to writable.
fn on_readable(poller: &Poller, table: &mut [Option<Conn>], key: usize, buf: &mut [u8]) {
    let Some(conn) = table[key].as_mut() else {
        return;
    };
    let n = match conn.stream.read(buf) {
        Ok(0) => return close_conn(poller, table, key),
        Ok(n) => n,
        Err(e)
            if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted =>
        {
            return
        }
        Err(_) => return close_conn(poller, table, key),
    };
    match write_some(&conn.stream, &buf[..n]) {
        Ok(sent) if sent == n => {}
        Ok(sent) => {
            conn.pending.hold(&buf[sent..n]);
            set_interest(poller, table, key, Event::writable(key));
        }
        Err(_) => close_conn(poller, table, key),
    }
}

/// Writes the buffered tail; once drained, switches back to readable.
fn on_writable(poller: &Poller, table: &mut [Option<Conn>], key: usize) {
    let Some(conn) = table[key].as_mut() else {
        return;
    };
    match write_some(&conn.stream, conn.pending.rest()) {
        Ok(sent) => {
            if conn.pending.wrote(sent) {
                set_interest(poller, table, key, Event::readable(key));
            }
        }
        Err(_) => close_conn(poller, table, key),
    }
}

fn main() {
    let (listener, local) = bind_listener();
    let poller = Poller::new().unwrap_or_else(|e| die("Poller::new", e));
    // The listener's key is its fd, like every connection's: one table, no collisions.
    let listen_key = listener.as_raw_fd() as usize;
    // SAFETY: the listener lives until the process exits, so it outlives its registration.
    unsafe { poller.add_with_mode(&listener, Event::readable(listen_key), PollMode::Level) }
        .unwrap_or_else(|e| die("Poller::add(listener)", e));
    announce(local);

    let mut table: Vec<Option<Conn>> = Vec::new();
    let mut buf = vec![0u8; READ_BUF_SIZE];
    let mut events = Events::new();
    loop {
        events.clear();
        if let Err(e) = poller.wait(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            die("wait", e);
        }
        for event in events.iter() {
            let key = event.key;
            if key == listen_key {
                loop {
                    let stream = match listener.accept() {
                        Ok((stream, _)) => stream,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        // WouldBlock, or EMFILE and friends: level mode retries later.
                        Err(_) => break,
                    };
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    // Same as every peer: no Nagle delay on small echoes.
                    let _ = stream.set_nodelay(true);
                    let fd_key = stream.as_raw_fd() as usize;
                    if table.len() <= fd_key {
                        table.resize_with(fd_key + 1, || None);
                    }
                    // SAFETY: the stream is stored in the table and `close_conn` deletes
                    // it from the poller before dropping it.
                    let added = unsafe {
                        poller.add_with_mode(&stream, Event::readable(fd_key), PollMode::Level)
                    };
                    if added.is_ok() {
                        table[fd_key] = Some(Conn {
                            stream,
                            pending: Pending::default(),
                        });
                    }
                }
                continue;
            }
            let writing = match table.get(key) {
                Some(Some(conn)) => !conn.pending.is_empty(),
                _ => continue,
            };
            if writing {
                on_writable(&poller, &mut table, key);
            } else {
                on_readable(&poller, &mut table, key, &mut buf);
            }
        }
    }
}
