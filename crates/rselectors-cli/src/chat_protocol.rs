//! The chat protocol of seed 000, in one place: what a client sends, what
//! the server relays, and the limit on a line. The server, `load --chat`
//! and the tests (which include this file) all speak it from here.
//!
//! A client sends lines ending in `\n`. A line that is empty or `quit`
//! (surrounding ASCII whitespace ignored) leaves the chat; any other line
//! goes to every client, the sender included, as
//! `your msg = <line> from <ip>:<port>\n`, the line's bytes as they came
//! (UTF-8 or not). A line over [`MAX_LINE`] bytes gets [`LINE_TOO_LONG`]
//! and the connection is closed.

// Included by the tests too (`tests/common`), which use only part of
// it; its own tests are the chat server's, so that they run once.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;

/// The longest line a client may send, in bytes (without its newline).
pub const MAX_LINE: usize = 64 * 1024;

/// What the server puts before each line it relays.
pub const PREFIX: &[u8] = b"your msg = ";

/// What separates a relayed line from its sender's address.
pub const FROM: &[u8] = b" from ";

/// The longest relayed message: the prefix, a line of [`MAX_LINE`] bytes,
/// [`FROM`], an IPv6 address with a scope and a port, and the newline.
pub const MAX_MESSAGE: usize = PREFIX.len() + MAX_LINE + FROM.len() + 64 + 1;

/// What a client whose line is over [`MAX_LINE`] gets before the server
/// closes the connection.
pub const LINE_TOO_LONG: &[u8] = b"error: line longer than 65536 bytes; closing the connection\n";

/// What a client's line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Said<'a> {
    /// Relay this line (as sent: whitespace is not trimmed) to everyone.
    Line(&'a [u8]),
    /// Leave the chat, for this reason (as the server logs it).
    Leave(&'static str),
}

/// What `line` (without its newline) asks for.
pub fn said(line: &[u8]) -> Said<'_> {
    match line.trim_ascii() {
        b"" => Said::Leave("sent an empty line"),
        b"quit" => Said::Leave("sent quit"),
        _ => Said::Line(line),
    }
}

/// Appends to `out` the message that relays `line` from `sender`.
pub fn write_message(out: &mut Vec<u8>, line: &[u8], sender: SocketAddr) {
    write_message_signed(out, line, &signature(sender));
}

/// What ends every message from `sender`: [`FROM`], its address and the
/// newline (made once per sender: formatting an address costs more than
/// the rest of a message).
pub fn signature(sender: SocketAddr) -> Vec<u8> {
    let mut signature = FROM.to_vec();
    // Writing to a Vec cannot fail.
    let _ = writeln!(signature, "{sender}");
    signature
}

/// Appends to `out` the message that relays `line`, ending in the
/// sender's [`signature`].
pub fn write_message_signed(out: &mut Vec<u8>, line: &[u8], signature: &[u8]) {
    out.reserve(PREFIX.len() + line.len() + signature.len());
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(line);
    out.extend_from_slice(signature);
}

/// The message that relays `line` from `sender`, newline included.
pub fn message(line: &[u8], sender: SocketAddr) -> Vec<u8> {
    let mut out = Vec::new();
    write_message(&mut out, line, sender);
    out
}

/// The line and the sender's address of a relayed `message` (without its
/// newline), if it is one.
pub fn parse_message(message: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = message.strip_prefix(PREFIX)?;
    let at = rest.windows(FROM.len()).rposition(|w| w == FROM)?;
    Some((&rest[..at], &rest[at + FROM.len()..]))
}
