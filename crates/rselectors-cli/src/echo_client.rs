//! `echo-client`: seed 003's client. It registers the socket for
//! READ | WRITE, sends its messages as the socket becomes writable,
//! switches to READ only with `modify` once everything is sent, and exits
//! when every byte came back, checking each byte as it arrives.

use crate::conn::{connect, Conn, Received, READ_CHUNK};
use crate::logging::say;
use rselectors::{AnySelector, BackendKind, Events};
use std::io;
use std::time::{Duration, Instant};

/// Seed 003's messages, sent when none are given.
pub const DEFAULT_MESSAGES: [&str; 2] = ["It will be repeated.", "This is the message.  "];

/// How many bytes of a message or reply are shown in progress lines.
const SHOWN: usize = 72;

/// Sends `messages` to the echo server at `addr` and checks the echo;
/// an error says what differed, or what was missing at `timeout`.
pub fn run(
    addr: &str,
    kind: BackendKind,
    messages: &[Vec<u8>],
    timeout: Duration,
) -> io::Result<()> {
    let expected: Vec<u8> = messages.concat();
    let deadline = Instant::now() + timeout;
    let stream = connect(addr)?;
    let peer = stream.peer_addr()?;
    say!("connected to {peer}");
    let mut sel: AnySelector<Conn, ()> = AnySelector::with_kind(kind)?;
    let fd = sel
        .register(Conn::new(stream)?, Events::READ | Events::WRITE, ())?
        .fd;
    let mut outgoing = messages.iter();
    let mut all_sent = false;
    let mut received = 0;
    let mut buf = vec![0; READ_CHUNK];
    while !(all_sent && received == expected.len()) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "timed out after {timeout:?}: {received} of {} bytes came back",
                    expected.len()
                ),
            ));
        }
        sel.select(Some(left))?;
        while let Some((_, mask)) = sel.next_ready() {
            let conn = sel.get_key_mut(fd)?.fileobj;
            if mask.contains(Events::READ) {
                match conn.receive(&mut buf)? {
                    Received::Data(n) => {
                        check_echo(&expected, received, &buf[..n])?;
                        say!("received {}", show(&buf[..n]));
                        received += n;
                    }
                    Received::WouldBlock => {}
                    Received::Eof => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "the server closed the connection after {received} of {} bytes came back",
                                expected.len()
                            ),
                        ))
                    }
                }
            }
            if mask.contains(Events::WRITE) && !all_sent {
                if conn.pending() > 0 {
                    conn.flush()?;
                } else if let Some(message) = outgoing.next() {
                    say!("sending {}", show(message));
                    conn.send(message)?;
                }
                if conn.pending() == 0 && outgoing.len() == 0 {
                    say!("switching to read-only");
                    sel.modify_events(fd, Events::READ)?;
                    all_sent = true;
                }
            }
        }
    }
    say!("all {} bytes came back identical", expected.len());
    sel.close();
    Ok(())
}

/// Checks `chunk`, received at offset `at` of the echo, against what was
/// sent.
fn check_echo(expected: &[u8], at: usize, chunk: &[u8]) -> io::Result<()> {
    let wanted = &expected[at.min(expected.len())..];
    let same = chunk.iter().zip(wanted).position(|(got, want)| got != want);
    let differs_at = match same {
        Some(i) => i,
        None if chunk.len() > wanted.len() => wanted.len(),
        None => return Ok(()),
    };
    let offset = at + differs_at;
    let from = differs_at.saturating_sub(16);
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the echo differs from what was sent at byte {offset}: sent {}, received {}",
            show(&wanted[from.min(wanted.len())..]),
            show(&chunk[from..]),
        ),
    ))
}

/// Bytes as an escaped, quoted string, cut to [`SHOWN`] bytes.
fn show(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(SHOWN)];
    let mut text = format!("\"{}\"", shown.escape_ascii());
    if bytes.len() > SHOWN {
        text.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    text
}
