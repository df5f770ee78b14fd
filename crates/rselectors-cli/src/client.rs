//! `client`: the interactive line client of seeds 002 and 004, done right.
//!
//! The seeds' clients block in `input()` and look at the socket only after
//! the user typed, so a chat broadcast shows up a line late. This one
//! watches stdin and the socket in one selector: what the server sends is
//! printed as it arrives, and what the user types goes out as soon as the
//! socket takes it. At end of input it half-closes the connection and
//! waits for the replies still coming: until the server closes, or until
//! it has been silent for `--wait` seconds.

use crate::conn::{connect, Conn, Received, READ_CHUNK};
use crate::logging::{debug, info, warning};
use crate::stdin::{is_unpollable, Stdin};
use rselectors::{AnySelector, BackendKind, Events};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// Reading stdin pauses while this much input waits to be sent...
const PAUSE_INPUT_AT: usize = 1024 * 1024;
/// ...and resumes when the backlog is down to this.
const RESUME_INPUT_AT: usize = 256 * 1024;

/// What the client watches: the connection, or standard input.
#[derive(Debug)]
enum Endpoint {
    Server(Conn),
    Input(Stdin),
}

impl AsRawFd for Endpoint {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Endpoint::Server(conn) => conn.as_raw_fd(),
            Endpoint::Input(input) => input.as_raw_fd(),
        }
    }
}

/// Where standard input stands.
#[derive(Debug)]
enum Input {
    /// Registered in the selector at this descriptor.
    Watched(RawFd),
    /// Taken out of the selector while the server is slow to take input.
    Paused(Stdin),
    /// A regular file or /dev/null: cannot be polled, never blocks; read
    /// whenever the backlog has room.
    Unpollable(Stdin),
    /// At its end (or closed from the start).
    Ended,
}

/// The client's selector and state.
#[derive(Debug)]
struct LineClient {
    sel: AnySelector<Endpoint, ()>,
    server_fd: RawFd,
    input: Input,
    /// Once input ended: when to give up waiting for more replies.
    quiet_deadline: Option<Instant>,
    wait: Duration,
    scratch: Vec<u8>,
}

/// Connects to `addr` and relays stdin to the server and the server to
/// stdout, until the server closes or input ends and replies stop.
pub fn run(addr: &str, kind: BackendKind, wait: Duration) -> io::Result<()> {
    let stream = connect(addr)?;
    let peer = stream.peer_addr()?;
    let mut sel = AnySelector::with_kind(kind)?;
    let conn = Conn::new(stream)?;
    let server_fd = sel.register(Endpoint::Server(conn), Events::READ, ())?.fd;
    info!("connected to {peer}; lines you type are sent, replies print as they arrive");
    let mut client = LineClient {
        sel,
        server_fd,
        input: Input::Ended,
        quiet_deadline: None,
        wait,
        scratch: vec![0; READ_CHUNK],
    };
    client.open_input()?;
    client.run()
}

/// The connection to the server, registered at `fd`.
fn server_conn(sel: &mut AnySelector<Endpoint, ()>, fd: RawFd) -> io::Result<&mut Conn> {
    match sel.get_key_mut(fd)?.fileobj {
        Endpoint::Server(conn) => Ok(conn),
        Endpoint::Input(_) => Err(io::Error::other("lost track of the connection")),
    }
}

impl LineClient {
    fn open_input(&mut self) -> io::Result<()> {
        let Some(input) = Stdin::open() else {
            self.input_ended();
            return Ok(());
        };
        match self.sel.register(Endpoint::Input(input), Events::READ, ()) {
            Ok(key) => self.input = Input::Watched(key.fd),
            Err(refused) => {
                let unpollable = is_unpollable(&refused.error);
                match refused.fileobj {
                    Endpoint::Input(input) if unpollable => self.input = Input::Unpollable(input),
                    _ => {
                        warning!("cannot watch stdin: {}", refused.error);
                        self.input_ended();
                    }
                }
            }
        }
        Ok(())
    }

    fn run(&mut self) -> io::Result<()> {
        loop {
            let more_input_now = self.read_unpollable_input()?;
            let timeout = if more_input_now {
                Some(Duration::ZERO)
            } else {
                self.quiet_deadline
                    .map(|d| d.saturating_duration_since(Instant::now()))
            };
            self.sel.select(timeout)?;
            while let Some((fd, mask)) = self.sel.next_ready() {
                if fd != self.server_fd {
                    self.input_readable(fd)?;
                    continue;
                }
                if mask.contains(Events::WRITE) {
                    self.server_writable()?;
                }
                if mask.contains(Events::READ) && !self.server_readable()? {
                    info!("the server closed the connection");
                    return Ok(());
                }
            }
            self.update_server_interest()?;
            if self.quiet_deadline.is_some_and(|d| Instant::now() >= d) {
                debug!("no reply for {:?} after end of input", self.wait);
                return Ok(());
            }
        }
    }

    /// Prints what the server sent; false once it closed the connection.
    fn server_readable(&mut self) -> io::Result<bool> {
        let conn = server_conn(&mut self.sel, self.server_fd)?;
        match conn.receive(&mut self.scratch) {
            Ok(Received::Data(n)) => {
                let mut out = io::stdout().lock();
                out.write_all(&self.scratch[..n])?;
                out.flush()?;
                self.made_progress();
                Ok(true)
            }
            Ok(Received::WouldBlock) => Ok(true),
            Ok(Received::Eof) => Ok(false),
            Err(e) => Err(io::Error::new(e.kind(), format!("connection lost: {e}"))),
        }
    }

    fn server_writable(&mut self) -> io::Result<()> {
        let conn = server_conn(&mut self.sel, self.server_fd)?;
        let wrote = conn.flush()? > 0;
        let pending = conn.pending();
        if wrote {
            self.made_progress();
        }
        if pending <= RESUME_INPUT_AT {
            if let Input::Paused(_) = self.input {
                self.resume_input()?;
            }
        }
        Ok(())
    }

    fn input_readable(&mut self, fd: RawFd) -> io::Result<()> {
        let read = match self.sel.get_key_mut(fd)?.fileobj {
            Endpoint::Input(input) => input.read(&mut self.scratch),
            Endpoint::Server(_) => return Ok(()),
        };
        match read {
            Ok(0) => {
                self.sel.unregister(fd)?;
                self.input_ended();
                Ok(())
            }
            Ok(n) => self.send_input(n),
            Err(e) => {
                warning!("stdin: {e}");
                self.sel.unregister(fd)?;
                self.input_ended();
                Ok(())
            }
        }
    }

    /// Reads a chunk of an unpollable stdin if the backlog has room; true
    /// if there may be more to read at once.
    fn read_unpollable_input(&mut self) -> io::Result<bool> {
        let Input::Unpollable(input) = &mut self.input else {
            return Ok(false);
        };
        if server_conn(&mut self.sel, self.server_fd)?.pending() >= PAUSE_INPUT_AT {
            return Ok(false);
        }
        match input.read(&mut self.scratch) {
            Ok(0) => {
                self.input_ended();
                Ok(false)
            }
            Ok(n) => self.send_input(n).map(|()| true),
            Err(e) => {
                warning!("stdin: {e}");
                self.input_ended();
                Ok(false)
            }
        }
    }

    /// Sends the `n` bytes of input in `scratch`; pauses stdin if the
    /// server is not taking them.
    fn send_input(&mut self, n: usize) -> io::Result<()> {
        let conn = server_conn(&mut self.sel, self.server_fd)?;
        conn.send(&self.scratch[..n])?;
        let pending = conn.pending();
        self.made_progress();
        if pending >= PAUSE_INPUT_AT {
            if let Input::Watched(fd) = self.input {
                if let Endpoint::Input(input) = self.sel.unregister(fd)?.fileobj {
                    debug!("the server is slow to take input: pausing stdin");
                    self.input = Input::Paused(input);
                }
            }
        }
        Ok(())
    }

    fn resume_input(&mut self) -> io::Result<()> {
        let Input::Paused(input) = std::mem::replace(&mut self.input, Input::Ended) else {
            return Ok(());
        };
        match self.sel.register(Endpoint::Input(input), Events::READ, ()) {
            Ok(key) => self.input = Input::Watched(key.fd),
            Err(refused) => {
                warning!("cannot watch stdin again: {}", refused.error);
                self.input_ended();
            }
        }
        Ok(())
    }

    fn input_ended(&mut self) {
        debug!(
            "end of input; waiting for replies (up to {:?} of silence)",
            self.wait
        );
        self.input = Input::Ended;
        self.quiet_deadline = Some(Instant::now() + self.wait);
    }

    /// Something was sent or received: after end of input, that restarts
    /// the wait for replies.
    fn made_progress(&mut self) {
        if self.quiet_deadline.is_some() {
            self.quiet_deadline = Some(Instant::now() + self.wait);
        }
    }

    /// READ always, WRITE while input waits to be sent; after end of input,
    /// once all of it is sent, a half-close tells the server we are done.
    fn update_server_interest(&mut self) -> io::Result<()> {
        let input_ended = matches!(self.input, Input::Ended);
        let conn = server_conn(&mut self.sel, self.server_fd)?;
        if input_ended && conn.pending() == 0 {
            conn.shutdown_write()?;
        }
        let events = conn.interest(true).unwrap_or(Events::READ);
        self.sel.modify_events(self.server_fd, events)?;
        Ok(())
    }
}
