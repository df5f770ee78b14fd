//! `chat-server`: seed 000's `CharServer`.
//!
//! Every line a client sends goes to every client as
//! `your msg = <line> from <ip>:<port>`; `quit` or an empty line leaves
//! (the protocol: [`crate::chat_protocol`]). The console on stdin takes
//! `list` (print what is registered, as the seed's `input()` loop does)
//! and `quit` (stop), but on the same thread as everything else (see
//! [`crate::console`]).
//!
//! What the seed does not guard against, this does: a client that never
//! reads is cut off once its backlog passes `--max-backlog` (memory stays
//! bounded and the others keep chatting); a line over [`MAX_LINE`] bytes
//! gets an error line and the connection is closed; bytes that are not
//! UTF-8 are relayed as they are.
//!
//! Fan-out is coalesced as Redis does it: the lines broadcast during one
//! round of events (every event one wait returned) go into one batch,
//! and at the end of the round each client gets the whole batch with one
//! write (or, behind a backlog, one append to its output). Nothing waits
//! for more: the batch holds only what the round read, and a batch that
//! reaches [`ROUND_BATCH`] bytes goes out at once. A client accepted
//! during a round gets only what was broadcast after it joined.
//!
//! With `--threads N` there are N event loops (see
//! [`crate::server::loops`]). At the end of a round a loop also posts the
//! lines its clients sent to every other loop's inbox (one lock and at
//! most one wake-up per loop per round); each of them delivers them to
//! its own clients with its next round. Loop 0 has the console and the
//! signals.
//!
//! With `--broker`, loop 0 also holds the link to the other servers of
//! the room ([`crate::broker`]): it hands the link every line of every
//! loop, and delivers what the link brings (and posts it to the other
//! loops) as it does another loop's lines.

use crate::broker::{self, Broker};
use crate::budget::{self, Held};
use crate::chat_protocol::{self, Said, LINE_TOO_LONG, MAX_LINE};
use crate::conn::{Conn, Next, Received, READ_CHUNK};
use crate::console::Console;
use crate::lines::LineBuffer;
use crate::logging::{say, warning};
use crate::server::loops::{self, Link};
use crate::server::{Client, Event, Readiness, Server, Stats};
use rselectors::{BackendKind, Events};
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A round's batch goes out once it holds this much, without waiting for
/// the end of the round: what a slow client copies stays bounded.
const ROUND_BATCH: usize = 64 * 1024;

/// After a client is told its line was too long, how long it has to read
/// the error before the connection is closed anyway. Closing at once
/// while it is still sending would reset the connection and could throw
/// away the error line before the client reads it.
const LINGER: Duration = Duration::from_secs(2);

/// A chat connection.
pub struct ChatClient {
    conn: Conn,
    /// Who it is: named in what it says, and in logs.
    peer: SocketAddr,
    /// How its messages end: `" from <peer>\n"` (see
    /// [`chat_protocol::signature`]).
    signature: Box<[u8]>,
    /// Bytes read from it and written to it.
    traffic: (u64, u64),
    /// Received bytes not yet split into lines.
    lines: LineBuffer,
    /// Set when the connection is closing after an error line: input is
    /// discarded, and the connection is closed at end of input or at this
    /// instant, whichever comes first.
    closing_deadline: Option<Instant>,
    /// Its end of input was read, for this reason: the server closes it
    /// once it has had the round's lines so far.
    left: Option<&'static str>,
    /// Whole lines taken from it (wrapping): its input's progress.
    lines_taken: u32,
    /// `lines_taken` at the last memory check, if an unfinished line was
    /// held then (see [`Client::stalled`]).
    lines_seen: Option<u32>,
    /// How much of the round's batch it has had, or must not have (it was
    /// broadcast before the client joined).
    had: usize,
}

impl Client for ChatClient {
    const KEEPS_PEER: bool = true;
    /// How long the round's batch is now.
    type Context = usize;

    fn new(conn: Conn, peer: Option<SocketAddr>, batch_len: &usize) -> Self {
        debug_assert!(peer.is_some(), "KEEPS_PEER: the server passes the address");
        // Always given (KEEPS_PEER); the unspecified address otherwise.
        let peer = peer.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        ChatClient {
            conn,
            peer,
            signature: chat_protocol::signature(peer).into_boxed_slice(),
            traffic: (0, 0),
            lines: LineBuffer::new(MAX_LINE),
            closing_deadline: None,
            left: None,
            lines_taken: 0,
            lines_seen: None,
            had: *batch_len,
        }
    }
    fn conn(&self) -> &Conn {
        &self.conn
    }
    fn conn_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
    fn peer(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }
    fn traffic(&self) -> (u64, u64) {
        self.traffic
    }
    fn held(&self) -> usize {
        self.conn.held() + self.lines.held()
    }
    /// Its output is not leaving, or it holds an unfinished line it has
    /// not finished since the last check (slowloris).
    fn stalled(&self) -> bool {
        self.conn.stalled() || self.lines_seen == Some(self.lines_taken)
    }
    fn mark(&mut self) {
        self.conn.mark();
        self.lines_seen = (self.lines.len() > 0).then_some(self.lines_taken);
    }
}

impl ChatClient {
    /// [`Conn::receive`], counted.
    fn receive(&mut self, buf: &mut [u8], stats: &mut Stats) -> io::Result<Received> {
        let received = self.conn.receive(buf)?;
        if let Received::Data(n) = received {
            self.traffic.0 += n as u64;
            stats.bytes_in += n as u64;
        }
        Ok(received)
    }

    /// [`Conn::send`], counted; what it sends is activity at idle tick
    /// `tick`.
    fn send(&mut self, bytes: &[u8], tick: u16, stats: &mut Stats) -> io::Result<()> {
        let written = self.conn.send(bytes)?;
        self.sent(written, tick, stats);
        Ok(())
    }

    /// [`Conn::flush`], counted, like [`ChatClient::send`].
    fn flush(&mut self, tick: u16, stats: &mut Stats) -> io::Result<()> {
        let written = self.conn.flush()?;
        self.sent(written, tick, stats);
        Ok(())
    }

    fn sent(&mut self, written: usize, tick: u16, stats: &mut Stats) {
        self.traffic.1 += written as u64;
        stats.bytes_out += written as u64;
        if written > 0 {
            self.conn.touch(tick);
        }
    }

    /// Handles a client's `readiness`, as far as the client alone is
    /// concerned: writes what is queued, reads what came. `None` when it
    /// read bytes for the server to take lines from, or its end of input
    /// (see [`ChatServer::take_lines`]).
    fn ready(
        &mut self,
        Readiness { registered, ready }: Readiness,
        scratch: &mut [u8],
        tick: u16,
        stats: &mut Stats,
    ) -> Option<Next> {
        if ready.contains(Events::WRITE) {
            if let Err(e) = self.flush(tick, stats) {
                return Some(Next::Failed(e));
            }
            if self.closing_deadline.is_some() && self.conn.pending() == 0 {
                if let Err(e) = self.conn.shutdown_write() {
                    return Some(Next::Failed(e));
                }
            }
        }
        if ready.contains(Events::READ) {
            match self.receive(scratch, stats) {
                // Draining what it still sends after the error, until it
                // closes.
                Ok(Received::Data(_)) if self.closing_deadline.is_some() => {}
                Ok(Received::Data(n)) => {
                    self.lines.push(&scratch[..n]);
                    return None;
                }
                Ok(Received::WouldBlock) => {}
                Ok(Received::Eof) => {
                    self.left = Some(match self.closing_deadline {
                        Some(_) => "closed after the error",
                        None => "closed by peer",
                    });
                    return None;
                }
                Err(e) => return Some(Next::Failed(e)),
            }
        }
        Some(self.next(registered))
    }

    /// What it waits for now that it was registered for `registered`:
    /// READ (unless the memory budget says not to read: see
    /// [`budget::may_read`]), and WRITE while output is queued.
    fn next(&self, registered: Events) -> Next {
        let may_read = budget::may_read(self.conn.pending());
        self.conn.next(may_read, registered, "done")
    }
}

/// Sends `messages` to `client`, registered for `registered`, unless it
/// is closing after an error; cuts it off if its backlog passes
/// `max_backlog`.
// Forced inline: it runs once per delivery (see docs/performance.md).
#[inline(always)]
fn give(
    client: &mut ChatClient,
    registered: Events,
    stats: &mut Stats,
    messages: &[u8],
    tick: u16,
    max_backlog: usize,
) -> Next {
    if messages.is_empty() || client.closing_deadline.is_some() {
        return Next::Keep;
    }
    if let Err(e) = client.send(messages, tick, stats) {
        return Next::Failed(e);
    }
    let backlog = client.conn.pending();
    if backlog > max_backlog {
        warning!(
            "cutting off {}: {backlog} bytes wait to be sent to it, over the \
             limit of {max_backlog} (--max-backlog); it is not reading",
            client.peer,
        );
        return Next::Close("backlog over the limit");
    }
    client.next(registered)
}

/// What the loops of `--threads` post to each other: bytes for all their
/// clients (whole lines, in the order they were broadcast).
type Broadcast = Arc<[u8]>;

/// The chat server's state around one loop's [`Server`].
struct ChatServer<'a> {
    server: &'a mut Server<ChatClient>,
    /// The other loops.
    link: Link<'a, Broadcast>,
    /// What this round broadcast, for this loop's clients (charged to the
    /// memory budget).
    batch: Held,
    /// What this loop's clients sent during the current round, for the
    /// other loops.
    outgoing: Vec<u8>,
    /// Reused list to take the inbox into.
    inbox: Vec<Broadcast>,
    max_backlog: usize,
    console: Console,
    /// Reused buffers: a read, a broadcast message, the list of clients.
    scratch: Vec<u8>,
    message: Vec<u8>,
    fds: Vec<RawFd>,
    /// Clients closing after an error line, with their deadlines.
    lingering: Vec<(RawFd, Instant)>,
    /// The link to the other servers of the room (loop 0, `--broker`).
    broker: Option<Broker>,
    /// Reused list to take what the broker brought into.
    from_broker: Vec<Broadcast>,
}

/// Runs the chat server with `threads` event loops until SIGINT, SIGTERM
/// or the console's `quit`; with `broker`, in a room shared with other
/// servers.
pub fn run(
    addr: &str,
    kind: BackendKind,
    max_backlog: usize,
    threads: usize,
    broker: Option<&broker::Config>,
) -> io::Result<()> {
    loops::serve(addr, kind, threads, |server, link| {
        let mut chat = ChatServer::new(server, link, max_backlog);
        if link.index == 0 {
            chat.console = Console::start(chat.server);
            chat.broker = broker.cloned().map(Broker::new);
        }
        let result = chat.event_loop();
        if let Some(broker) = &mut chat.broker {
            say!("{}", broker.close(chat.server));
        }
        result
    })
}

impl<'a> ChatServer<'a> {
    fn new(
        server: &'a mut Server<ChatClient>,
        link: Link<'a, Broadcast>,
        max_backlog: usize,
    ) -> Self {
        ChatServer {
            server,
            link,
            batch: Held::default(),
            outgoing: Vec::new(),
            inbox: Vec::new(),
            max_backlog,
            console: Console::off(),
            scratch: vec![0; READ_CHUNK],
            message: Vec::new(),
            fds: Vec::new(),
            lingering: Vec::new(),
            broker: None,
            from_broker: Vec::new(),
        }
    }

    fn event_loop(&mut self) -> io::Result<()> {
        while !self.server.is_stopping() {
            let lingering = self.lingering.iter().map(|&(_, at)| at).min();
            let broker = self.broker.as_ref().map(Broker::deadline);
            let deadline = lingering.into_iter().chain(broker).min();
            self.server.wait(self.console.wait_until(deadline))?;
            let tick = self.server.tick();
            loop {
                let scratch = &mut self.scratch;
                let on_client = |client: &mut ChatClient, readiness, stats: &mut Stats| {
                    client.ready(readiness, scratch, tick, stats)
                };
                let Some(event) = self.server.dispatch(on_client) else {
                    break;
                };
                match event {
                    Event::Client(fd) => self.take_lines(fd),
                    Event::Console(fd) => self.console_input(Some(fd)),
                    Event::Wake => self.woken(),
                    Event::Broker(fd, ready) => self.broker_ready(fd, ready),
                }
            }
            self.deliver_batch();
            self.console_input(None);
            self.close_expired_lingering();
            self.end_round();
            self.server.end_round();
        }
        Ok(())
    }

    /// Another loop posted lines for our clients, or asked us to stop.
    fn woken(&mut self) {
        let mut inbox = mem::take(&mut self.inbox);
        self.link.take_inbox(&mut inbox);
        if !inbox.is_empty() {
            // This loop's lines so far first, then the others' as posted.
            self.deliver_batch();
            for batch in inbox.drain(..) {
                if let Some(broker) = &mut self.broker {
                    broker.publish(&batch);
                }
                self.deliver_to_all(&batch);
            }
        }
        self.inbox = inbox;
        if let Some(reason) = self.link.stop_reason() {
            self.server.request_stop(&reason);
        }
    }

    /// Lines from the other servers of the room (the broker link's
    /// socket `fd` is `ready`): delivered here after this loop's lines so
    /// far, and posted to the other loops.
    fn broker_ready(&mut self, fd: RawFd, ready: Events) {
        let Some(broker) = &mut self.broker else {
            return;
        };
        broker.ready(fd, ready, self.server);
        let mut received = mem::take(&mut self.from_broker);
        broker.take_received(&mut received);
        if !received.is_empty() {
            self.deliver_batch();
            for batch in received.drain(..) {
                for other in self.link.others() {
                    self.link.loops.post(other, Arc::clone(&batch));
                }
                self.deliver_to_all(&batch);
            }
        }
        self.from_broker = received;
    }

    /// Sends what this round broadcast to the other loops and the broker,
    /// and tells the other loops how many clients this loop has.
    fn end_round(&mut self) {
        if self.link.has_others() {
            let loops = self.link.loops;
            loops.publish_clients(self.link.index, self.server.client_count());
            if !self.outgoing.is_empty() {
                let batch: Broadcast = Arc::from(self.outgoing.as_slice());
                for other in self.link.others() {
                    loops.post(other, Arc::clone(&batch));
                }
            }
        }
        if let Some(broker) = &mut self.broker {
            broker.end_round(&self.outgoing, self.server);
        }
        self.outgoing.clear();
    }

    /// Console input: the console at `fd` is readable, or (`None`) the
    /// loop's turn to read input that cannot be polled.
    fn console_input(&mut self, fd: Option<RawFd>) {
        let link = self.link;
        let broker = self.broker.as_ref();
        let list = |server: &Server<ChatClient>| {
            for text in server.describe() {
                say!("{text}");
            }
            for other in link.others() {
                let clients = link.loops.clients(other);
                say!("event loop {other}: {clients} clients");
            }
            if let Some(broker) = broker {
                say!("{}", broker.describe());
            }
        };
        match fd {
            Some(fd) => self.console.readable(self.server, fd, list),
            None => self.console.turn(self.server, list),
        }
    }

    /// Broadcasts the whole lines the client at `fd` has sent, then waits
    /// for what it needs next.
    fn take_lines(&mut self, fd: RawFd) {
        let tick = self.server.tick();
        let Some(client) = self.server.client_mut(fd) else {
            return;
        };
        if let Some(reason) = client.left {
            return self.leave(fd, reason);
        }
        let signature = mem::take(&mut client.signature);
        let mut lines = mem::take(&mut client.lines);
        let mut leaving = None;
        let mut taken = 0u32;
        let result = lines.for_each_line(|line| {
            let line = match chat_protocol::said(line) {
                Said::Line(line) => line,
                Said::Leave(reason) => {
                    leaving = Some(reason);
                    return ControlFlow::Break(());
                }
            };
            taken = taken.wrapping_add(1);
            let delivered = self.broadcast(line, &signature);
            if delivered && self.server.client(fd).is_none() {
                return ControlFlow::Break(()); // cut off by the delivery
            }
            ControlFlow::Continue(())
        });
        if let Some(client) = self.server.client_mut(fd) {
            client.signature = signature;
        }
        if let Some(reason) = leaving {
            self.leave(fd, reason);
        } else if result.is_err() {
            self.reject_long_line(fd);
        } else if let Some(client) = self.server.client_mut(fd) {
            client.lines = lines;
            client.lines_taken = client.lines_taken.wrapping_add(taken);
            if taken > 0 {
                client.conn.touch(tick); // whole lines: activity
            } else {
                // No delivery to it set its events after its write.
                self.server.update_interest(fd, true, "done");
            }
        }
    }

    /// Sends `your msg = <line> from <peer>` (the sender's `signature`) to
    /// every client: this loop's with the round's batch, the other loops'
    /// at the end of the round. True if the batch went out (a delivery may
    /// cut clients off).
    fn broadcast(&mut self, line: &[u8], signature: &[u8]) -> bool {
        let mut message = mem::take(&mut self.message);
        message.clear();
        chat_protocol::write_message_signed(&mut message, line, signature);
        if self.link.has_others() || self.broker.is_some() {
            self.outgoing.extend_from_slice(&message);
        }
        let delivered = self.add_to_batch(&message);
        self.message = message;
        delivered
    }

    /// Adds `messages` to the round's batch for this loop's clients; a full
    /// batch goes out at once (then true).
    fn add_to_batch(&mut self, messages: &[u8]) -> bool {
        self.batch.extend_from_slice(messages);
        *self.server.context_mut() = self.batch.len();
        if self.batch.len() < ROUND_BATCH {
            return false;
        }
        self.deliver_batch();
        true
    }

    /// Gives every client of this loop what it has not had of the round's
    /// batch, and empties the batch.
    fn deliver_batch(&mut self) {
        if self.batch.len() == 0 {
            return;
        }
        let mut fds = mem::take(&mut self.fds);
        self.server.client_fds(&mut fds);
        for &fd in &fds {
            self.catch_up(fd, 0);
        }
        self.fds = fds;
        if self.batch.capacity() > 2 * ROUND_BATCH {
            self.batch.clear(); // a batch past its cap (a line of up to MAX_LINE)
        } else {
            self.batch.empty();
        }
        *self.server.context_mut() = 0;
        // The batch may have been copied to many backlogs.
        self.server.end_round();
    }

    /// Sends the client at `fd` what it has not had of the round's batch
    /// (then it has had `had` of it), cutting it off if its backlog passes
    /// the limit.
    fn catch_up(&mut self, fd: RawFd, had: usize) {
        let batch = self.batch.as_slice();
        let (tick, max_backlog) = (self.server.tick(), self.max_backlog);
        self.server.handle_client(fd, |client, registered, stats| {
            let unsent = &batch[client.had.min(batch.len())..];
            client.had = had;
            give(client, registered, stats, unsent, tick, max_backlog)
        });
    }

    /// Sends `messages` to every client of this loop (lines another loop
    /// posted: every client here has had none of them).
    fn deliver_to_all(&mut self, messages: &[u8]) {
        let (tick, max_backlog) = (self.server.tick(), self.max_backlog);
        let mut fds = mem::take(&mut self.fds);
        self.server.client_fds(&mut fds);
        for &fd in &fds {
            self.server.handle_client(fd, |client, registered, stats| {
                give(client, registered, stats, messages, tick, max_backlog)
            });
        }
        self.fds = fds;
        self.server.end_round();
    }

    /// Closes a client that asked to leave, after one last attempt to send
    /// what it has not received yet.
    fn leave(&mut self, fd: RawFd, reason: &'static str) {
        let tick = self.server.tick();
        let batch = self.batch.as_slice();
        self.server.handle_client(fd, |client, _, stats| {
            let unsent = &batch[client.had.min(batch.len())..];
            // Errors are moot: it is closing.
            if client.closing_deadline.is_none() && client.conn.pending() == 0 {
                let _ = client.send(unsent, tick, stats);
            } else {
                if client.closing_deadline.is_none() {
                    client.conn.queue(unsent);
                }
                let _ = client.flush(tick, stats);
            }
            Next::Close(reason)
        });
    }

    /// Tells the client its line is too long and closes the connection:
    /// the error line, then FIN, then close at its end of input or after
    /// [`LINGER`].
    fn reject_long_line(&mut self, fd: RawFd) {
        // The lines broadcast before this one come first.
        self.catch_up(fd, self.batch.len());
        let tick = self.server.tick();
        let Some((client, stats)) = self.server.client_io(fd) else {
            return;
        };
        warning!(
            "{} sent a line longer than {MAX_LINE} bytes; closing the connection",
            client.peer
        );
        client.lines.clear();
        let deadline = Instant::now() + LINGER;
        client.closing_deadline = Some(deadline);
        if let Err(e) = client.send(LINE_TOO_LONG, tick, stats) {
            return self.server.close_after_error(fd, e);
        }
        if client.conn.pending() == 0 {
            if let Err(e) = client.conn.shutdown_write() {
                return self.server.close_after_error(fd, e);
            }
        }
        self.lingering.push((fd, deadline));
        self.server.update_interest(fd, true, "done");
    }

    fn close_expired_lingering(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.lingering.len() {
            let (fd, deadline) = self.lingering[i];
            if deadline > now {
                i += 1;
                continue;
            }
            self.lingering.swap_remove(i);
            // The same deadline tells it is still the same connection.
            let same = self.server.client(fd).map(|c| c.closing_deadline) == Some(Some(deadline));
            if same {
                self.server.close_client(fd, "closed after the error");
            }
        }
    }
}

#[cfg(test)]
mod protocol_tests {
    use crate::chat_protocol::*;
    use std::net::SocketAddr;

    #[test]
    fn the_error_line_names_the_limit() {
        let expected = format!("error: line longer than {MAX_LINE} bytes;");
        assert!(LINE_TOO_LONG.starts_with(expected.as_bytes()));
    }

    #[test]
    fn empty_lines_and_quit_leave_anything_else_is_relayed_as_sent() {
        assert_eq!(said(b""), Said::Leave("sent an empty line"));
        assert_eq!(said(b" \t\r"), Said::Leave("sent an empty line"));
        assert_eq!(said(b"quit"), Said::Leave("sent quit"));
        assert_eq!(said(b" quit\r"), Said::Leave("sent quit"));
        assert_eq!(said(b"quit!"), Said::Line(b"quit!"));
        assert_eq!(said(b" hi \xff"), Said::Line(b" hi \xff"));
    }

    #[test]
    fn a_message_parses_back_into_its_line_and_sender() {
        let sender: SocketAddr = "[fe80::1%2]:65535".parse().unwrap();
        let line = b"a from b";
        let message = message(line, sender);
        assert_eq!(
            message,
            b"your msg = a from b from [fe80::1%2]:65535\n".to_vec()
        );
        let parsed = parse_message(message.strip_suffix(b"\n").unwrap());
        assert_eq!(parsed, Some((&line[..], &b"[fe80::1%2]:65535"[..])));
        assert_eq!(parse_message(b"hello"), None);
    }

    #[test]
    fn the_longest_message_fits_max_message() {
        let sender: SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535"
            .parse()
            .unwrap();
        assert!(message(&[b'x'; MAX_LINE], sender).len() <= MAX_MESSAGE);
    }
}
