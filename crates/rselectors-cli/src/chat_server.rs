//! `chat-server`: seed 000's `CharServer`.
//!
//! Every line a client sends goes to every client as
//! `your msg = <line> from <ip>:<port>`; `quit` or an empty line leaves.
//! The console on stdin takes `list` (print what is registered, as the
//! seed's `input()` loop does) and `quit` (stop), but on the same thread
//! as everything else (see [`crate::console`]).
//!
//! What the seed does not guard against, this does: a client that never
//! reads is cut off once its backlog passes `--max-backlog` (memory stays
//! bounded and the others keep chatting); a line over [`MAX_LINE`] bytes
//! gets an error line and the connection is closed; bytes that are not
//! UTF-8 are relayed as they are.
//!
//! With `--threads N` there are N event loops (see [`crate::loops`]). A
//! loop delivers a line to its own clients at once and collects what it
//! broadcast during one round of events; at the end of the round it posts
//! that batch to every other loop's inbox (one lock and at most one
//! wake-up per loop per round), and each of them appends it to its own
//! clients' output. Loop 0 has the console and the signals.

use crate::chat_protocol::{self, Said, LINE_TOO_LONG, MAX_LINE};
use crate::conn::{Conn, Received, READ_CHUNK};
use crate::console::Console;
use crate::lines::LineBuffer;
use crate::logging::{say, warning};
use crate::loops::{self, Loops};
use crate::server::{print_summary, Client, Event, Server};
use crate::signals::{FirstLoopSignals, Signals};
use rselectors::{BackendKind, Events, Waker};
use std::io;
use std::mem;
use std::net::{SocketAddr, TcpListener};
use std::ops::ControlFlow;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Bytes read from it and written to it.
    traffic: (u64, u64),
    /// Received bytes not yet split into lines.
    lines: LineBuffer,
    /// Set when the connection is closing after an error line: input is
    /// discarded, and the connection is closed at end of input or at this
    /// instant, whichever comes first.
    closing_deadline: Option<Instant>,
    /// Whole lines taken from it (wrapping): its input's progress.
    lines_taken: u32,
    /// `lines_taken` at the last memory check, if an unfinished line was
    /// held then (see [`Client::stalled`]).
    lines_seen: Option<u32>,
}

impl Client for ChatClient {
    const KEEPS_PEER: bool = true;

    fn new(conn: Conn, peer: Option<SocketAddr>) -> Self {
        debug_assert!(peer.is_some(), "KEEPS_PEER: the server passes the address");
        ChatClient {
            conn,
            // Always given (KEEPS_PEER); the unspecified address otherwise.
            peer: peer.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            traffic: (0, 0),
            lines: LineBuffer::new(MAX_LINE),
            closing_deadline: None,
            lines_taken: 0,
            lines_seen: None,
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
    fn receive(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        let received = self.conn.receive(buf)?;
        if let Received::Data(n) = received {
            self.traffic.0 += n as u64;
        }
        Ok(received)
    }

    /// [`Conn::send`], counted; what it sends is activity at idle tick
    /// `tick`.
    fn send(&mut self, bytes: &[u8], tick: u16) -> io::Result<()> {
        let written = self.conn.send(bytes)?;
        self.traffic.1 += written as u64;
        if written > 0 {
            self.conn.touch(tick);
        }
        Ok(())
    }

    /// [`Conn::flush`], counted, like [`ChatClient::send`].
    fn flush(&mut self, tick: u16) -> io::Result<()> {
        let written = self.conn.flush()?;
        self.traffic.1 += written as u64;
        if written > 0 {
            self.conn.touch(tick);
        }
        Ok(())
    }
}

/// What the loops of `--threads` post to each other: bytes for all their
/// clients (whole lines, in the order they were broadcast).
type Broadcast = Arc<[u8]>;

/// A loop's link to the other loops.
struct Peers<'a> {
    loops: &'a Loops<Broadcast>,
    /// This loop's number.
    index: usize,
    /// What this loop broadcast during the current round, for the others.
    outgoing: Vec<u8>,
    /// Reused list to take the inbox into.
    inbox: Vec<Broadcast>,
}

/// The chat server's state around the shared [`Server`] (one per loop).
struct ChatServer<'a> {
    server: Server<ChatClient>,
    /// The other loops, if there are any.
    peers: Option<Peers<'a>>,
    max_backlog: usize,
    console: Console,
    /// Reused buffers: a read, a broadcast message, the list of clients.
    scratch: Vec<u8>,
    message: Vec<u8>,
    fds: Vec<RawFd>,
    /// Clients closing after an error line, with their deadlines.
    lingering: Vec<(RawFd, Instant)>,
}

/// Runs the chat server with `threads` event loops until SIGINT, SIGTERM
/// or the console's `quit`.
pub fn run(addr: &str, kind: BackendKind, max_backlog: usize, threads: usize) -> io::Result<()> {
    if threads <= 1 {
        let mut chat = ChatServer::new(Server::bind(addr, kind)?, None, max_backlog);
        chat.start_console();
        chat.event_loop()?;
        chat.server.finish();
        return Ok(());
    }
    let listeners = loops::bind_listeners(addr, threads)?;
    let loops: Loops<Broadcast> = Loops::new(threads)?;
    let signals = FirstLoopSignals::install()?;
    say!("listening on {}", listeners[0].local_addr()?);
    let stats = loops::run(&loops, listeners, |index, listener| {
        let signals = signals.take(index);
        run_loop(&loops, index, listener, signals, kind, max_backlog)
    })?;
    let reason = loops.stop_reason();
    print_summary(reason.as_deref().unwrap_or("done"), stats);
    Ok(())
}

/// Loop `index` of `loops`, until one of them stops; `signals` stop it
/// (loop 0).
fn run_loop(
    loops: &Loops<Broadcast>,
    index: usize,
    listener: TcpListener,
    signals: Option<Signals>,
    kind: BackendKind,
    max_backlog: usize,
) -> io::Result<crate::server::Stats> {
    let waker: Waker = loops.waker(index);
    let server = Server::on_listener(listener, kind, waker, signals)?;
    let peers = Peers {
        loops,
        index,
        outgoing: Vec::new(),
        inbox: Vec::new(),
    };
    let mut chat = ChatServer::new(server, Some(peers), max_backlog);
    if index == 0 {
        chat.start_console();
    }
    chat.event_loop()?;
    if let Some(reason) = chat.server.stop_reason() {
        loops.stop_all(reason);
    }
    Ok(chat.server.close_all())
}

impl<'a> ChatServer<'a> {
    fn new(server: Server<ChatClient>, peers: Option<Peers<'a>>, max_backlog: usize) -> Self {
        ChatServer {
            server,
            peers,
            max_backlog,
            console: Console::off(),
            scratch: vec![0; READ_CHUNK],
            message: Vec::new(),
            fds: Vec::new(),
            lingering: Vec::new(),
        }
    }

    fn event_loop(&mut self) -> io::Result<()> {
        while !self.server.is_stopping() {
            let deadline = self.lingering.iter().map(|&(_, at)| at).min();
            self.server.wait(self.console.wait_until(deadline))?;
            while let Some(event) = self.server.next_event() {
                match event {
                    Event::Console(fd) => self.console_input(Some(fd)),
                    Event::Client(fd, mask) => self.client_ready(fd, mask),
                    Event::Wake => self.woken(),
                }
            }
            self.console_input(None);
            self.close_expired_lingering();
            self.end_round();
            self.server.end_round();
        }
        Ok(())
    }

    /// Another loop posted lines for our clients, or asked us to stop.
    fn woken(&mut self) {
        let Some(peers) = &mut self.peers else {
            return;
        };
        let mut inbox = mem::take(&mut peers.inbox);
        peers.loops.take_inbox(peers.index, &mut inbox);
        let stop_reason = peers.loops.stop_reason();
        for batch in inbox.drain(..) {
            self.deliver_to_all(&batch);
        }
        if let Some(peers) = &mut self.peers {
            peers.inbox = inbox;
        }
        if let Some(reason) = stop_reason {
            self.server.request_stop(&reason);
        }
    }

    /// Sends what this round broadcast to the other loops, and tells them
    /// how many clients this loop has.
    fn end_round(&mut self) {
        let Some(peers) = &mut self.peers else {
            return;
        };
        peers
            .loops
            .publish_clients(peers.index, self.server.client_count());
        if peers.outgoing.is_empty() {
            return;
        }
        let batch: Broadcast = Arc::from(peers.outgoing.as_slice());
        peers.outgoing.clear();
        for other in (0..peers.loops.len()).filter(|&i| i != peers.index) {
            peers.loops.post(other, Arc::clone(&batch));
        }
    }

    fn start_console(&mut self) {
        self.console = Console::start(&mut self.server);
    }

    /// Console input: the console at `fd` is readable, or (`None`) the
    /// loop's turn to read input that cannot be polled.
    fn console_input(&mut self, fd: Option<RawFd>) {
        let peers = self.peers.as_ref();
        let list = |server: &Server<ChatClient>| {
            for text in server.describe() {
                say!("{text}");
            }
            if let Some(peers) = peers {
                for other in (0..peers.loops.len()).filter(|&i| i != peers.index) {
                    let clients = peers.loops.clients(other);
                    say!("event loop {other}: {clients} clients");
                }
            }
        };
        match fd {
            Some(fd) => self.console.readable(&mut self.server, fd, list),
            None => self.console.turn(&mut self.server, list),
        }
    }

    fn client_ready(&mut self, fd: RawFd, mask: Events) {
        if mask.contains(Events::WRITE) {
            self.client_writable(fd);
        }
        if mask.contains(Events::READ) {
            self.client_readable(fd);
        }
    }

    fn client_writable(&mut self, fd: RawFd) {
        let tick = self.server.tick();
        let Some(client) = self.server.client_mut(fd) else {
            return;
        };
        if let Err(e) = client.flush(tick) {
            return self.server.close_after_error(fd, e);
        }
        if client.closing_deadline.is_some() && client.conn.pending() == 0 {
            if let Err(e) = client.conn.shutdown_write() {
                return self.server.close_after_error(fd, e);
            }
        }
        self.server.update_interest(fd, true, "done");
    }

    fn client_readable(&mut self, fd: RawFd) {
        let Some(client) = self.server.client_mut(fd) else {
            return;
        };
        let n = match client.receive(&mut self.scratch) {
            Ok(Received::Data(n)) => n,
            Ok(Received::WouldBlock) => return,
            Ok(Received::Eof) => {
                let reason = match client.closing_deadline {
                    Some(_) => "closed after the error",
                    None => "closed by peer",
                };
                return self.leave(fd, reason);
            }
            Err(e) => return self.server.close_after_error(fd, e),
        };
        if client.closing_deadline.is_some() {
            return; // Draining what it still sends, until it closes.
        }
        client.lines.push(&self.scratch[..n]);
        self.take_lines(fd);
    }

    /// Broadcasts the whole lines `fd` has sent. Each line is copied to
    /// every client, so the memory budget is checked after each one, not
    /// only at the end of the round.
    fn take_lines(&mut self, fd: RawFd) {
        let tick = self.server.tick();
        let Some(client) = self.server.client_mut(fd) else {
            return;
        };
        let peer = client.peer;
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
            self.broadcast(peer, line);
            taken = taken.wrapping_add(1);
            self.server.end_round();
            match self.server.client_mut(fd) {
                Some(client) => {
                    client.conn.touch(tick); // a whole line: activity
                    ControlFlow::Continue(())
                }
                None => ControlFlow::Break(()), // cut off during the broadcast
            }
        });
        if let Some(reason) = leaving {
            self.leave(fd, reason);
        } else if result.is_err() {
            self.reject_long_line(fd);
        } else if let Some(client) = self.server.client_mut(fd) {
            client.lines = lines;
            client.lines_taken = client.lines_taken.wrapping_add(taken);
        }
    }

    /// Sends `your msg = <line> from <peer>` to every client (those of the
    /// other loops at the end of the round).
    fn broadcast(&mut self, peer: SocketAddr, line: &[u8]) {
        let mut message = mem::take(&mut self.message);
        message.clear();
        chat_protocol::write_message(&mut message, line, peer);
        self.deliver_to_all(&message);
        if let Some(peers) = &mut self.peers {
            peers.outgoing.extend_from_slice(&message);
        }
        self.message = message;
    }

    /// Queues `message` for every client of this loop.
    fn deliver_to_all(&mut self, message: &[u8]) {
        let mut fds = mem::take(&mut self.fds);
        self.server.client_fds(&mut fds);
        for &fd in &fds {
            self.deliver(fd, message);
        }
        self.fds = fds;
    }

    /// Queues `message` for `fd`, cutting the client off if its backlog
    /// passes the limit.
    fn deliver(&mut self, fd: RawFd, message: &[u8]) {
        let tick = self.server.tick();
        let Some(client) = self.server.client_mut(fd) else {
            return;
        };
        if client.closing_deadline.is_some() {
            return;
        }
        if let Err(e) = client.send(message, tick) {
            return self.server.close_after_error(fd, e);
        }
        let backlog = client.conn.pending();
        if backlog > self.max_backlog {
            warning!(
                "cutting off {}: {backlog} bytes wait to be sent to it, over the \
                 limit of {} (--max-backlog); it is not reading",
                client.peer,
                self.max_backlog
            );
            return self.server.close_client(fd, "backlog over the limit");
        }
        self.server.update_interest(fd, true, "done");
    }

    /// Closes a client that asked to leave, after one last attempt to send
    /// what it has not received yet.
    fn leave(&mut self, fd: RawFd, reason: &str) {
        let tick = self.server.tick();
        if let Some(client) = self.server.client_mut(fd) {
            let _ = client.flush(tick);
        }
        self.server.close_client(fd, reason);
    }

    /// Tells the client its line is too long and closes the connection:
    /// the error line, then FIN, then close at its end of input or after
    /// [`LINGER`].
    fn reject_long_line(&mut self, fd: RawFd) {
        let tick = self.server.tick();
        let Some(client) = self.server.client_mut(fd) else {
            return;
        };
        warning!(
            "{} sent a line longer than {MAX_LINE} bytes; closing the connection",
            client.peer
        );
        client.lines.clear();
        let deadline = Instant::now() + LINGER;
        client.closing_deadline = Some(deadline);
        if let Err(e) = client.send(LINE_TOO_LONG, tick) {
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
