//! `echo-server`: every byte back (seeds 001, 003, 004), or upper-cased
//! with `--upper` (seed 002).
//!
//! Unlike the seeds' `conn.send(data)`, which drops what the socket does
//! not take, replies go through the connection's output buffer; while a
//! peer is slow to read, the server stops reading from it (backpressure),
//! so memory per connection stays bounded however much it sends.
//!
//! With `--threads N` there are N independent event loops (see
//! [`crate::server::loops`]); they only talk to each other to stop.

use crate::budget;
use crate::conn::{Conn, Next, Received, READ_CHUNK};
use crate::logging::debug;
use crate::server::loops::{self, Link};
use crate::server::{Client, Event, Readiness, Server, Stats};
use rselectors::{BackendKind, Events};
use std::io;
use std::net::SocketAddr;

/// Reading from a peer pauses while this much of its echo is unsent (or
/// while any is, when the memory budget is tight).
const HIGH_WATER: usize = 256 * 1024;

/// An echo connection.
///
/// Just the connection (16 bytes): a server holds one per client, and the
/// peer's end of stream (finish writing, then close) is the connection's
/// [`Conn::read_done`].
pub struct EchoClient {
    conn: Conn,
}

impl Client for EchoClient {
    type Context = ();
    fn new(conn: Conn, _peer: Option<SocketAddr>, _: &()) -> Self {
        EchoClient { conn }
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
        let pending = self.conn.pending();
        !self.conn.read_done() && pending < HIGH_WATER && budget::may_read(pending)
    }
}

/// Runs the echo server with `threads` event loops until SIGINT or
/// SIGTERM.
pub fn run(addr: &str, kind: BackendKind, upper: bool, threads: usize) -> io::Result<()> {
    loops::serve(addr, kind, threads, |server, link: Link<'_, ()>| {
        event_loop(server, upper, link)
    })
}

/// Serves until a stop is requested: by a signal, or by another loop.
// Out of line: the hot loop compiles as its own function (see
// docs/performance.md).
#[inline(never)]
fn event_loop(server: &mut Server<EchoClient>, upper: bool, link: Link<'_, ()>) -> io::Result<()> {
    let mut scratch = vec![0; READ_CHUNK];
    while !server.is_stopping() {
        server.wait(None)?;
        let tick = server.tick();
        let mut on_client = |client: &mut EchoClient, readiness, stats: &mut Stats| {
            Some(serve(client, readiness, &mut scratch, upper, tick, stats))
        };
        // Client events are handled inside dispatch; only these come out.
        while let Some(event) = server.dispatch(&mut on_client) {
            if let Event::Wake = event {
                if let Some(reason) = link.stop_reason() {
                    server.request_stop(&reason);
                }
            }
        }
        server.end_round();
    }
    Ok(())
}

/// Handles a client's `readiness`: at most one write of queued bytes,
/// then at most one read and one write of its echo (upper-cased if
/// `upper`). Activity is stamped with idle tick `tick`.
#[inline]
fn serve(
    client: &mut EchoClient,
    Readiness { registered, ready }: Readiness,
    scratch: &mut [u8],
    upper: bool,
    tick: u16,
    stats: &mut Stats,
) -> Next {
    if ready.contains(Events::WRITE) {
        match client.conn.flush() {
            Ok(written) => {
                stats.bytes_out += written as u64;
                if written > 0 {
                    client.conn.touch(tick);
                }
            }
            Err(e) => return Next::Failed(e),
        }
    }
    // `ready` is masked with `registered`, which is always what
    // `interest` last asked for: READ in it means the client wanted to
    // read then. Since then, only the memory budget can have changed that.
    if ready.contains(Events::READ) && budget::may_read(client.conn.pending()) {
        match client.conn.receive(scratch) {
            Ok(Received::Data(n)) => {
                stats.bytes_in += n as u64;
                client.conn.touch(tick);
                let reply = &mut scratch[..n];
                if upper {
                    // Python's bytes.upper(): ASCII letters only, so any
                    // other byte (UTF-8 or not) goes back as it came.
                    reply.make_ascii_uppercase();
                }
                match client.conn.send(reply) {
                    Ok(written) => {
                        stats.bytes_out += written as u64;
                        // The usual case: the echo went out whole, so nothing
                        // is queued (a send behind queued bytes writes none),
                        // and READ alone stays right.
                        if written == n && registered == Events::READ {
                            return Next::Keep;
                        }
                    }
                    Err(e) => return Next::Failed(e),
                }
            }
            Ok(Received::Eof) => {
                debug!(
                    "a peer sent end of stream; {} bytes still to echo",
                    client.conn.pending()
                );
            }
            Ok(Received::WouldBlock) => {}
            Err(e) => return Next::Failed(e),
        }
    }
    client
        .conn
        .next(client.wants_read(), registered, "closed by peer")
}

#[cfg(test)]
mod tests {
    use super::EchoClient;
    use crate::server::Source;
    use std::mem::size_of;

    /// A server holds one per connection: idle connections stay cheap.
    #[test]
    fn an_echo_client_in_the_selector_takes_16_bytes() {
        assert_eq!(size_of::<EchoClient>(), 16);
        assert_eq!(size_of::<Source<EchoClient>>(), 16);
    }
}
