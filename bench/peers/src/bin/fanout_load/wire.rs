//! What the driver says to each server, and how it reads what comes back.
//!
//! Chat (`rselectors chat-server`): a client sends `text\n` and every client
//! receives `your msg = text from ip:port\n`. Redis: every connection speaks
//! RESP3 (`HELLO 3`), so that a subscribed connection may also `PUBLISH`, as
//! a chat client both listens and talks; a listener `SUBSCRIBE`s to [`ROOM`],
//! a line goes out as `PUBLISH room text` and arrives as the push
//! `>3 message room text`; the publisher gets the number of receivers back.
//!
//! A line's text carries its [`Stamp`], then filler up to the line size.

use std::io::Write;

/// The one channel every Redis listener subscribes to.
pub const ROOM: &[u8] = b"room";

/// What the chat server puts around a relayed line.
const CHAT_PREFIX: &[u8] = b"your msg = ";
const CHAT_FROM: &[u8] = b" from ";

/// The text of the chat handshake lines (relayed like any line, never measured).
pub const SYNC: &[u8] = b"sync";

/// Which server the driver talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Chat,
    Redis,
}

/// Who sent a line, its number among that sender's lines, and its number
/// among all lines (which finds its send time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub sender: u32,
    pub nth: u32,
    pub global: u64,
}

/// Appends the text of the line `stamp`, padded with filler to `size` bytes
/// (longer if the stamp alone is).
pub fn line_text(out: &mut Vec<u8>, stamp: Stamp, size: usize) {
    let start = out.len();
    // Writing to a Vec cannot fail.
    let _ = write!(out, "s{} n{} g{} ", stamp.sender, stamp.nth, stamp.global);
    let filler = (out.len() - start..size).map(|i| b'a' + (i % 26) as u8);
    out.extend(filler);
}

/// The stamp at the start of a line's text, if it has one.
pub fn parse_stamp(text: &[u8]) -> Option<Stamp> {
    let mut fields = text.split(|&b| b == b' ');
    let mut number = |tag: u8| -> Option<u64> {
        let field = fields.next()?.strip_prefix(&[tag])?;
        std::str::from_utf8(field).ok()?.parse().ok()
    };
    Some(Stamp {
        sender: u32::try_from(number(b's')?).ok()?,
        nth: u32::try_from(number(b'n')?).ok()?,
        global: number(b'g')?,
    })
}

/// Appends what a sender writes to say `text`.
pub fn encode_line(proto: Proto, out: &mut Vec<u8>, text: &[u8]) {
    match proto {
        Proto::Chat => {
            out.extend_from_slice(text);
            out.push(b'\n');
        }
        Proto::Redis => encode_command(out, &[b"PUBLISH", ROOM, text]),
    }
}

/// Appends a RESP command (an array of bulk strings).
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let _ = write!(out, "*{}\r\n", args.len());
    for arg in args {
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// One thing a connection received.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A relayed line: its text, and (chat only) the sender's address as
    /// the server names it.
    Line(&'a [u8], Option<&'a [u8]>),
    /// A chat handshake line.
    Sync,
    /// Redis confirmed a `SUBSCRIBE`.
    Subscribed,
    /// Redis answered a `PUBLISH`: this many subscribers received it.
    Receivers(i64),
    /// Anything else well-formed (the `HELLO` reply).
    Other,
}

/// The first whole frame in `buf` and the bytes it takes; `None` until one
/// has fully arrived.
pub fn next_frame(proto: Proto, buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, String> {
    match proto {
        Proto::Chat => chat_frame(buf),
        Proto::Redis => resp_frame(buf),
    }
}

fn chat_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, String> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let line = &buf[..end];
    let parsed = line.strip_prefix(CHAT_PREFIX).and_then(|rest| {
        let at = rest
            .windows(CHAT_FROM.len())
            .rposition(|w| w == CHAT_FROM)?;
        Some((&rest[..at], &rest[at + CHAT_FROM.len()..]))
    });
    match parsed {
        Some((text, _)) if text == SYNC => Ok(Some((Frame::Sync, end + 1))),
        Some((text, from)) => Ok(Some((Frame::Line(text, Some(from)), end + 1))),
        None => Err(format!("not a relayed line: {}", show(line))),
    }
}

/// A RESP value that is not an aggregate, or a mark for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar<'a> {
    Bytes(&'a [u8]),
    Int(i64),
    Error(&'a [u8]),
    Nested,
}

/// Aggregates deeper than this are refused (nothing here sends them).
const MAX_DEPTH: usize = 8;

fn resp_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, String> {
    let mut items = [Scalar::Nested; 3];
    let Some((top, end)) = resp_value(buf, 0, 0, Some(&mut items))? else {
        return Ok(None);
    };
    let frame = match top {
        Scalar::Int(n) => Frame::Receivers(n),
        Scalar::Error(text) => return Err(format!("redis error: {}", show(text))),
        Scalar::Bytes(_) => Frame::Other,
        Scalar::Nested => match items {
            [Scalar::Bytes(b"message"), Scalar::Bytes(_), Scalar::Bytes(text)] => {
                Frame::Line(text, None)
            }
            [Scalar::Bytes(b"subscribe"), _, _] => Frame::Subscribed,
            _ => Frame::Other,
        },
    };
    Ok(Some((frame, end)))
}

/// Parses the RESP value at `pos`: the value (aggregates as
/// [`Scalar::Nested`], their first three elements into `items` when given)
/// and where it ends; `None` while incomplete.
fn resp_value<'a>(
    buf: &'a [u8],
    pos: usize,
    depth: usize,
    mut items: Option<&mut [Scalar<'a>; 3]>,
) -> Result<Option<(Scalar<'a>, usize)>, String> {
    let Some(header_end) = find_crlf(buf, pos) else {
        return Ok(None);
    };
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let header = &buf[pos + 1..header_end];
    let after = header_end + 2;
    let number = || -> Result<i64, String> {
        std::str::from_utf8(header)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad RESP length or integer: {}", show(header)))
    };
    match kind {
        b'+' | b',' | b'#' | b'(' | b'_' => Ok(Some((Scalar::Bytes(header), after))),
        b'-' => Ok(Some((Scalar::Error(header), after))),
        b':' => Ok(Some((Scalar::Int(number()?), after))),
        b'$' | b'=' | b'!' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Scalar::Bytes(b""), after)));
            }
            let end = after + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            Ok(Some((Scalar::Bytes(&buf[after..end]), end + 2)))
        }
        b'*' | b'>' | b'~' | b'%' | b'|' => {
            if depth >= MAX_DEPTH {
                return Err("RESP nested too deep".to_owned());
            }
            let count = number()?.max(0) as usize * if matches!(kind, b'%' | b'|') { 2 } else { 1 };
            let mut at = after;
            for i in 0..count {
                let Some((item, end)) = resp_value(buf, at, depth + 1, None)? else {
                    return Ok(None);
                };
                if let Some(items) = items.as_deref_mut() {
                    if i < 3 {
                        items[i] = item;
                    }
                }
                at = end;
            }
            if kind == b'|' {
                // An attribute comes before the value it describes.
                return resp_value(buf, at, depth, items);
            }
            Ok(Some((Scalar::Nested, at)))
        }
        _ => Err(format!("not RESP: {}", show(&buf[pos..header_end]))),
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    rest.windows(2).position(|w| w == b"\r\n").map(|i| from + i)
}

/// `bytes` for an error message, shortened.
pub fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]);
    format!("{text:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_its_text() {
        let stamp = Stamp {
            sender: 7,
            nth: 42,
            global: 123_456,
        };
        let mut text = Vec::new();
        line_text(&mut text, stamp, 64);
        assert_eq!(text.len(), 64);
        assert_eq!(parse_stamp(&text), Some(stamp));
    }

    #[test]
    fn chat_frames() {
        let buf = b"your msg = sync from 127.0.0.1:5\nyour msg = s1 n2 g3 x from 127.0.0.1:6\npart";
        let (frame, used) = next_frame(Proto::Chat, buf).unwrap().unwrap();
        assert_eq!(frame, Frame::Sync);
        let (frame, more) = next_frame(Proto::Chat, &buf[used..]).unwrap().unwrap();
        assert_eq!(frame, Frame::Line(b"s1 n2 g3 x", Some(b"127.0.0.1:6")));
        assert_eq!(next_frame(Proto::Chat, &buf[used + more..]).unwrap(), None);
    }

    #[test]
    fn redis_frames() {
        let push = b">3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n$5\r\nhello\r\n";
        for cut in 0..push.len() {
            assert_eq!(next_frame(Proto::Redis, &push[..cut]).unwrap(), None);
        }
        let (frame, used) = next_frame(Proto::Redis, push).unwrap().unwrap();
        assert_eq!((frame, used), (Frame::Line(b"hello", None), push.len()));
        let sub = b">3\r\n$9\r\nsubscribe\r\n$4\r\nroom\r\n:1\r\n";
        assert_eq!(
            next_frame(Proto::Redis, sub).unwrap().unwrap().0,
            Frame::Subscribed
        );
        assert_eq!(
            next_frame(Proto::Redis, b":12\r\n").unwrap().unwrap().0,
            Frame::Receivers(12)
        );
        let hello = b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nmodes\r\n*0\r\n";
        assert_eq!(
            next_frame(Proto::Redis, hello).unwrap().unwrap(),
            (Frame::Other, hello.len())
        );
        assert!(next_frame(Proto::Redis, b"-ERR no\r\n").is_err());
        let mut publish = Vec::new();
        encode_line(Proto::Redis, &mut publish, b"hi");
        assert_eq!(
            publish,
            b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nroom\r\n$2\r\nhi\r\n"
        );
    }
}
