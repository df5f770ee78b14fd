//! The envelope: what one chat server puts on the room's channel or stream
//! for the others, version 1.
//!
//! ```text
//! rselectors-chat/1 <origin> <seq>\n<messages>
//! ```
//!
//! - `origin`: 16 lowercase hex digits naming the server process that sent
//!   it (random at each start), so that a server skips its own envelopes
//!   when the broker hands them back;
//! - `seq`: that server's envelope number, from 1, one more per envelope:
//!   a receiver delivers an envelope only if its number is above the last
//!   one it delivered from that origin, so an envelope published twice (a
//!   `XADD` retried after its reply was lost) is delivered once;
//! - `messages`: one or more chat messages exactly as clients receive them
//!   (`your msg = <line> from <ip>:<port>\n`, the sender's address as its
//!   own server sees it), the line's bytes as sent (UTF-8 or not), each at
//!   most [`MAX_MESSAGE`] bytes, together at most [`MAX_BODY`].
//!
//! Anything else is not an envelope: a receiver skips it, and shows
//! clients nothing of it.

use crate::chat_protocol::{parse_message, MAX_MESSAGE};
use memchr::{memchr_iter, memrchr};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};

/// What every envelope starts with, before its version.
pub const MAGIC: &[u8] = b"rselectors-chat/";

/// The version this server writes and reads.
pub const VERSION: u32 = 1;

/// The most bytes of messages one envelope carries (more go in more
/// envelopes); at least one longest message.
pub const MAX_BODY: usize = 256 * 1024;

/// The longest envelope: [`MAX_BODY`] and its header.
pub const MAX_ENVELOPE: usize = MAX_BODY + 64;

/// Whose envelope it is: 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin([u8; 16]);

impl Origin {
    /// A new random origin (`RandomState` is seeded from the OS's random
    /// source; the process id and the clock add to it).
    pub fn random() -> Origin {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            hasher.write_u128(since.as_nanos());
        }
        Origin::from_u64(hasher.finish())
    }

    /// A seed for a random number generator.
    pub fn seed(self) -> u64 {
        self.0.iter().fold(0x9e37_79b9_7f4a_7c15, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }) | 1
    }

    fn from_u64(n: u64) -> Origin {
        let mut hex = [0u8; 16];
        for (i, digit) in hex.iter_mut().enumerate() {
            *digit = b"0123456789abcdef"[(n >> (60 - 4 * i)) as usize & 0xf];
        }
        Origin(hex)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Always ASCII hex.
        f.write_str(std::str::from_utf8(&self.0).unwrap_or("?"))
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origin({self})")
    }
}

/// The header of envelope `seq` of `origin`: what goes before its body.
pub fn header(origin: Origin, seq: u64) -> Vec<u8> {
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(format!("{VERSION} {origin} {seq}\n").as_bytes());
    header
}

/// Appends the envelope of `body` (whole messages) to `out`.
#[cfg(test)]
pub fn seal(out: &mut Vec<u8>, origin: Origin, seq: u64, body: &[u8]) {
    out.extend_from_slice(&header(origin, seq));
    out.extend_from_slice(body);
}

/// Cuts `messages` (whole messages) into bodies of at most [`MAX_BODY`]
/// bytes, at message ends.
pub fn bodies(mut messages: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if messages.is_empty() {
            return None;
        }
        let cut = if messages.len() <= MAX_BODY {
            messages.len()
        } else {
            // A message is shorter than a body: an end is within reach.
            memrchr(b'\n', &messages[..MAX_BODY]).map_or(MAX_BODY, |i| i + 1)
        };
        let (body, rest) = messages.split_at(cut);
        messages = rest;
        Some(body)
    })
}

/// What a payload found on the room's channel or stream is.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened<'a> {
    /// An envelope of this version: deliver `body` (once).
    Envelope {
        origin: Origin,
        seq: u64,
        body: &'a [u8],
        lines: usize,
    },
    /// An envelope of a version this server does not read.
    Newer(u32),
    /// Not an envelope, for this reason.
    Foreign(&'static str),
}

/// Reads `payload`, checking every message in it.
pub fn open(payload: &[u8]) -> Opened<'_> {
    let Some(rest) = payload.strip_prefix(MAGIC) else {
        return Opened::Foreign("not an rselectors envelope");
    };
    let Some(end) = rest
        .iter()
        .position(|&b| b == b'\n')
        .filter(|&end| end <= 64)
    else {
        return Opened::Foreign("an envelope header with no end");
    };
    let Ok(header) = std::str::from_utf8(&rest[..end]) else {
        return Opened::Foreign("an envelope header that is not text");
    };
    let mut fields = header.split(' ');
    let version = match fields.next().map(str::parse::<u32>) {
        Some(Ok(version)) => version,
        _ => return Opened::Foreign("an envelope with a bad version"),
    };
    if version != VERSION {
        return Opened::Newer(version);
    }
    let (Some(origin), Some(seq), None) = (fields.next(), fields.next(), fields.next()) else {
        return Opened::Foreign("an envelope header with bad fields");
    };
    let origin_ok = origin.len() == 16
        && origin
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let (true, Ok(seq)) = (origin_ok, seq.parse::<u64>()) else {
        return Opened::Foreign("an envelope header with bad fields");
    };
    let mut hex = [0u8; 16];
    hex.copy_from_slice(origin.as_bytes());
    let body = &rest[end + 1..];
    if body.is_empty() || body.len() > MAX_BODY || !body.ends_with(b"\n") {
        return Opened::Foreign("an envelope with a bad body");
    }
    let mut start = 0;
    let mut lines = 0;
    for end in memchr_iter(b'\n', body) {
        let message = &body[start..end];
        if message.len() + 1 > MAX_MESSAGE || parse_message(message).is_none() {
            return Opened::Foreign("an envelope with a message not in the chat's format");
        }
        start = end + 1;
        lines += 1;
    }
    Opened::Envelope {
        origin: Origin(hex),
        seq,
        body,
        lines,
    }
}

/// The last envelope delivered from each origin.
#[derive(Debug, Default)]
pub struct Delivered {
    last: HashMap<Origin, (u64, u64)>,
    /// Counts lookups: the entry used longest ago goes first when full.
    clock: u64,
}

/// Origins remembered at most: a server that restarts is a new origin,
/// so old ones pile up.
const MAX_ORIGINS: usize = 4096;

impl Delivered {
    /// True if envelope `seq` of `origin` is to be delivered: it comes
    /// after every one delivered from there (then it counts as delivered).
    pub fn first_time(&mut self, origin: Origin, seq: u64) -> bool {
        self.clock += 1;
        if let Some((last, used)) = self.last.get_mut(&origin) {
            *used = self.clock;
            if seq <= *last {
                return false;
            }
            *last = seq;
            return true;
        }
        if self.last.len() >= MAX_ORIGINS {
            let oldest = self
                .last
                .iter()
                .min_by_key(|(_, &(_, used))| used)
                .map(|(o, _)| *o);
            if let Some(oldest) = oldest {
                self.last.remove(&oldest);
            }
        }
        self.last.insert(origin, (seq, self.clock));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat_protocol::message;

    fn sample() -> Vec<u8> {
        let mut body = message(b"hello \xff", "127.0.0.1:5000".parse().unwrap());
        body.extend(message(b"again", "[::1]:6000".parse().unwrap()));
        body
    }

    #[test]
    fn an_envelope_opens_to_what_was_sealed() {
        let origin = Origin::from_u64(0x0123_4567_89ab_cdef);
        assert_eq!(origin.to_string(), "0123456789abcdef");
        let mut out = Vec::new();
        seal(&mut out, origin, 7, &sample());
        assert!(out.starts_with(b"rselectors-chat/1 0123456789abcdef 7\n"));
        assert_eq!(
            open(&out),
            Opened::Envelope {
                origin,
                seq: 7,
                body: &sample(),
                lines: 2
            }
        );
        assert_ne!(Origin::random(), Origin::random());
    }

    #[test]
    fn anything_else_is_foreign_or_newer() {
        let body = sample();
        let sealed = |header: &[u8], body: &[u8]| [header, body].concat();
        assert_eq!(
            open(&sealed(b"rselectors-chat/2 0123456789abcdef 7\n", &body)),
            Opened::Newer(2)
        );
        for payload in [
            b"hello".to_vec(),
            Vec::new(),
            sealed(b"rselectors-chat/1 0123456789abcdef 7", &body),
            sealed(b"rselectors-chat/x 0123456789abcdef 7\n", &body),
            sealed(b"rselectors-chat/1 0123456789ABCDEF 7\n", &body),
            sealed(b"rselectors-chat/1 0123456789abcdef -7\n", &body),
            sealed(b"rselectors-chat/1 0123456789abcdef 7 8\n", &body),
            sealed(b"rselectors-chat/1 0123456789abcdef 7\n", b""),
            sealed(b"rselectors-chat/1 0123456789abcdef 7\n", b"your msg = x\n"),
            sealed(
                b"rselectors-chat/1 0123456789abcdef 7\n",
                &body[..body.len() - 1],
            ),
            sealed(
                b"rselectors-chat/1 0123456789abcdef 7\n",
                &[body.as_slice(), b"junk\n"].concat(),
            ),
        ] {
            assert!(
                matches!(open(&payload), Opened::Foreign(_)),
                "{:?}",
                String::from_utf8_lossy(&payload)
            );
        }
        let long = message(&vec![b'x'; MAX_MESSAGE], "1.2.3.4:5".parse().unwrap());
        let payload = sealed(b"rselectors-chat/1 0123456789abcdef 7\n", &long);
        assert!(matches!(open(&payload), Opened::Foreign(_)));
    }

    #[test]
    fn bodies_are_cut_at_message_ends() {
        let one = message(&vec![b'y'; 60_000], "1.2.3.4:5".parse().unwrap());
        let messages: Vec<u8> = one.iter().copied().cycle().take(one.len() * 10).collect();
        let bodies: Vec<&[u8]> = bodies(&messages).collect();
        assert_eq!(bodies.len(), 3);
        assert_eq!(bodies.concat(), messages);
        for body in bodies {
            assert!(body.len() <= MAX_BODY && body.len() % one.len() == 0);
        }
        assert_eq!(super::bodies(b"").count(), 0);
    }

    #[test]
    fn each_envelope_is_delivered_once_in_order() {
        let (a, b) = (Origin::from_u64(1), Origin::from_u64(2));
        let mut delivered = Delivered::default();
        assert!(delivered.first_time(a, 1));
        assert!(delivered.first_time(b, 1));
        assert!(!delivered.first_time(a, 1));
        assert!(delivered.first_time(a, 2));
        assert!(delivered.first_time(a, 5));
        assert!(!delivered.first_time(a, 3));
        for n in 10..10 + MAX_ORIGINS as u64 {
            delivered.first_time(Origin::from_u64(n), 1);
        }
        assert!(delivered.last.len() <= MAX_ORIGINS);
    }

    proptest::proptest! {
        #[test]
        fn any_payload_opens_without_a_panic(payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = open(&payload);
            let mut sealed = b"rselectors-chat/1 0123456789abcdef 1\n".to_vec();
            sealed.extend(&payload);
            let _ = open(&sealed);
        }
    }
}
