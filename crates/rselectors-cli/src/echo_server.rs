//! `echo-server`: every byte back (seeds 001, 003, 004), or upper-cased
//! with `--upper` (seed 002).
//!
//! Unlike the seeds' `conn.send(data)`, which drops what the socket does
//! not take, replies go through the connection's output buffer; while a
//! peer is slow to read, the server stops reading from it (backpressure),
//! so memory per connection stays bounded however much it sends.
//!
//! With `--threads N` there are N independent event loops (see
//! [`crate::loops`]); they only talk to each other to stop.

use crate::conn::{Conn, Received, READ_CHUNK};
use crate::logging::{debug, say};
use crate::loops::{self, Loops};
use crate::server::{print_summary, Client, Event, Server, Stats};
use crate::signals;
use rselectors::{BackendKind, Events};
use std::io;
use std::os::fd::RawFd;

/// Reading from a peer pauses while this much of its echo is unsent.
const HIGH_WATER: usize = 1024 * 1024;

/// An echo connection.
pub struct EchoClient {
    conn: Conn,
    /// The peer sent end of stream: finish writing, then close.
    peer_done: bool,
}

impl Client for EchoClient {
    fn new(conn: Conn) -> Self {
        EchoClient {
            conn,
            peer_done: false,
        }
    }
    fn conn(&self) -> &Conn {
        &self.conn
    }
    fn conn_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

impl EchoClient {
    fn wants_read(&self) -> bool {
        !self.peer_done && self.conn.pending() < HIGH_WATER
    }
}

/// Runs the echo server with `threads` event loops until SIGINT or
/// SIGTERM.
pub fn run(addr: &str, kind: BackendKind, upper: bool, threads: usize) -> io::Result<()> {
    if threads <= 1 {
        let mut server: Server<EchoClient> = Server::bind(addr, kind)?;
        event_loop(&mut server, upper, None)?;
        server.finish();
        return Ok(());
    }
    let listeners = loops::bind_listeners(addr, threads)?;
    let loops: Loops<()> = Loops::new(threads)?;
    signals::install(&loops.waker(0))?;
    say!("listening on {}", listeners[0].local_addr()?);
    let stats = loops::run(&loops, listeners, |index, listener| {
        let waker = loops.waker(index);
        let mut server: Server<EchoClient> =
            Server::on_listener(listener, kind, waker, index == 0)?;
        event_loop(&mut server, upper, Some(&loops))?;
        if let Some(reason) = server.stop_reason() {
            loops.stop_all(reason);
        }
        Ok::<Stats, io::Error>(server.close_all())
    })?;
    let reason = loops.stop_reason();
    print_summary(reason.as_deref().unwrap_or("done"), stats);
    Ok(())
}

/// Serves until a stop is requested: by a signal, or by another loop of
/// `loops`.
fn event_loop(
    server: &mut Server<EchoClient>,
    upper: bool,
    loops: Option<&Loops<()>>,
) -> io::Result<()> {
    let mut scratch = vec![0; READ_CHUNK];
    while !server.is_stopping() {
        server.wait(None)?;
        while let Some(event) = server.next_event() {
            match event {
                Event::Client(fd, mask) => serve(server, fd, mask, &mut scratch, upper),
                Event::Wake => {
                    if let Some(reason) = loops.and_then(Loops::stop_reason) {
                        server.request_stop(&reason);
                    }
                }
                Event::Console(_) => {}
            }
        }
    }
    Ok(())
}

fn serve(
    server: &mut Server<EchoClient>,
    fd: RawFd,
    mask: Events,
    scratch: &mut [u8],
    upper: bool,
) {
    let Some((client, registered)) = server.client_and_events_mut(fd) else {
        return;
    };
    if mask.contains(Events::WRITE) {
        if let Err(e) = client.conn.flush() {
            return server.close_after_error(fd, e);
        }
    }
    if mask.contains(Events::READ) && client.wants_read() {
        match client.conn.receive(scratch) {
            Ok(Received::Data(n)) => {
                let reply = &mut scratch[..n];
                if upper {
                    // Python's bytes.upper(): ASCII letters only, so any
                    // other byte (UTF-8 or not) goes back as it came.
                    reply.make_ascii_uppercase();
                }
                if let Err(e) = client.conn.send(reply) {
                    return server.close_after_error(fd, e);
                }
            }
            Ok(Received::Eof) => {
                debug!(
                    "{} sent end of stream; {} bytes still to echo",
                    client.conn.peer(),
                    client.conn.pending()
                );
                client.peer_done = true;
            }
            Ok(Received::WouldBlock) => {}
            Err(e) => return server.close_after_error(fd, e),
        }
    }
    let want_read = client.wants_read();
    // The usual case, a reply written whole: nothing changes, and the
    // client need not be looked up again.
    if client.conn.interest(want_read) == Some(registered) {
        return;
    }
    server.update_interest(fd, want_read, "closed by peer");
}
