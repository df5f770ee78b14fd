//! RESP2, the Redis protocol, as far as the broker link speaks it: commands
//! out (arrays of bulk strings), replies in, parsed incrementally from
//! whatever bytes have arrived. No I/O here.
//!
//! Written here rather than taken from a crate: it is one small state
//! machine, and the link needs two things general-purpose parsers do not
//! give: a bulk string over a size limit is skipped as it streams in
//! (never buffered whole), and a parse can stop at any byte and resume.

use memchr::memchr;
use std::fmt;

/// The longest header line (`$123\r\n`, `-ERR ...\r\n`) taken.
const MAX_HEADER: usize = 64 * 1024;

/// Arrays nest at most this deep (an `XREAD` reply is 5 deep).
const MAX_DEPTH: usize = 8;

/// The most elements one array may announce.
const MAX_ARRAY: i64 = 1 << 20;

/// Appends the command `args` (an array of bulk strings) to `out`.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    header(out, b'*', args.len());
    for arg in args {
        bulk(out, &[arg]);
    }
}

/// Appends the command `args` and one last argument made of `last`'s
/// parts, written in place (not joined first).
pub fn command_ending_with(out: &mut Vec<u8>, args: &[&[u8]], last: &[&[u8]]) {
    header(out, b'*', args.len() + 1);
    for arg in args {
        bulk(out, &[arg]);
    }
    bulk(out, last);
}

/// Appends one bulk string, the concatenation of `parts`.
fn bulk(out: &mut Vec<u8>, parts: &[&[u8]]) {
    header(out, b'$', parts.iter().map(|part| part.len()).sum());
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\n");
}

/// The command `args` as bytes.
pub fn command_bytes(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    command(&mut out, args);
    out
}

fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// One reply, or one element of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(Vec<u8>),
    /// `-ERR ...`: the command failed.
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    /// The null bulk string or array.
    Nil,
    Array(Vec<Reply>),
    /// A bulk string longer than the parser's limit, of this many bytes,
    /// skipped unread.
    TooLong(usize),
}

impl Reply {
    /// The bytes of a bulk or status reply.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(bytes) | Reply::Status(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// The elements of an array reply.
    pub fn items(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// Bytes that are not RESP: the connection cannot be trusted any further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a Redis reply: {}", self.0)
    }
}

fn error<T>(what: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(what.into()))
}

/// An incremental reply parser.
#[derive(Debug)]
pub struct Parser {
    /// Arrays being filled: elements so far and how many are still due.
    open: Vec<(Vec<Reply>, usize)>,
    /// Bytes of a skipped bulk string (and its CRLF) still to come.
    skip: usize,
    /// Bulk strings longer than this are skipped.
    max_bulk: usize,
}

impl Parser {
    pub fn new(max_bulk: usize) -> Parser {
        Parser {
            open: Vec::new(),
            skip: 0,
            max_bulk,
        }
    }

    /// Parses from the front of `input`: how many bytes it used (the
    /// caller drops them) and the next whole reply, if they complete one.
    /// Call again with the rest until it returns `None`.
    pub fn parse(&mut self, input: &[u8]) -> Result<(usize, Option<Reply>), ProtocolError> {
        let mut at = 0;
        loop {
            if self.skip > 0 {
                let n = self.skip.min(input.len() - at);
                self.skip -= n;
                at += n;
                if self.skip > 0 {
                    return Ok((at, None));
                }
            }
            let rest = &input[at..];
            let Some(end) = memchr(b'\n', rest) else {
                if rest.len() > MAX_HEADER {
                    return error("a header line with no end");
                }
                return Ok((at, None));
            };
            if end < 2 || rest[end - 1] != b'\r' {
                return error("a line not ending in CRLF");
            }
            let line = &rest[1..end - 1];
            let mut used = end + 1;
            let value = match rest[0] {
                b'+' => Reply::Status(line.to_vec()),
                b'-' => Reply::Error(String::from_utf8_lossy(line).into_owned()),
                b':' => Reply::Integer(integer(line)?),
                b'_' => Reply::Nil,
                b'$' => match integer(line)? {
                    -1 => Reply::Nil,
                    len if len < 0 => return error("a negative length"),
                    len => {
                        let len = len as usize;
                        if len > self.max_bulk {
                            self.skip = len + 2;
                            Reply::TooLong(len)
                        } else {
                            let Some(body) = rest.get(used..used + len + 2) else {
                                return Ok((at, None)); // the rest is on its way
                            };
                            if !body.ends_with(b"\r\n") {
                                return error("a bulk string longer than announced");
                            }
                            used += len + 2;
                            Reply::Bulk(body[..len].to_vec())
                        }
                    }
                },
                b'*' => match integer(line)? {
                    -1 => Reply::Nil,
                    0 => Reply::Array(Vec::new()),
                    len if !(1..=MAX_ARRAY).contains(&len) => {
                        return error(format!("an array of {len} elements"))
                    }
                    len => {
                        if self.open.len() == MAX_DEPTH {
                            return error("arrays nested too deep");
                        }
                        let len = len as usize;
                        self.open.push((Vec::with_capacity(len.min(64)), len));
                        at += used;
                        continue;
                    }
                },
                kind => return error(format!("type byte {kind:#04x}")),
            };
            at += used;
            if let Some(reply) = self.complete(value) {
                return Ok((at, Some(reply)));
            }
        }
    }

    /// Puts `value` where it belongs; the whole reply if it ends one.
    fn complete(&mut self, mut value: Reply) -> Option<Reply> {
        loop {
            let Some((items, due)) = self.open.last_mut() else {
                return Some(value);
            };
            items.push(value);
            *due -= 1;
            if *due > 0 {
                return None;
            }
            let (items, _) = self.open.pop()?;
            value = Reply::Array(items);
        }
    }
}

fn integer(text: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .map_or_else(|| error("a bad number"), Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reply in `input`, fed in pieces of `step` bytes.
    fn parse_all(input: &[u8], step: usize, max_bulk: usize) -> Result<Vec<Reply>, ProtocolError> {
        let mut parser = Parser::new(max_bulk);
        let mut buffer = Vec::new();
        let mut replies = Vec::new();
        for piece in input.chunks(step) {
            buffer.extend_from_slice(piece);
            loop {
                let (used, reply) = parser.parse(&buffer)?;
                buffer.drain(..used);
                match reply {
                    Some(reply) => replies.push(reply),
                    None => break,
                }
            }
        }
        assert!(buffer.is_empty(), "left over: {buffer:?}");
        Ok(replies)
    }

    const XREAD: &[u8] =
        b"*1\r\n*2\r\n$4\r\nroom\r\n*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nm\r\n$5\r\nhe\r\nl\r\n\
                           *2\r\n$3\r\n2-0\r\n*0\r\n";

    #[test]
    fn replies_parse_whatever_the_pieces() {
        let mut input = b"+OK\r\n-ERR wrong\r\n:42\r\n$-1\r\n*-1\r\n$0\r\n\r\n_\r\n".to_vec();
        input.extend_from_slice(XREAD);
        let expected = vec![
            Reply::Status(b"OK".to_vec()),
            Reply::Error("ERR wrong".into()),
            Reply::Integer(42),
            Reply::Nil,
            Reply::Nil,
            Reply::Bulk(Vec::new()),
            Reply::Nil,
            Reply::Array(vec![Reply::Array(vec![
                Reply::Bulk(b"room".to_vec()),
                Reply::Array(vec![
                    Reply::Array(vec![
                        Reply::Bulk(b"1-0".to_vec()),
                        Reply::Array(vec![
                            Reply::Bulk(b"m".to_vec()),
                            Reply::Bulk(b"he\r\nl".to_vec()),
                        ]),
                    ]),
                    Reply::Array(vec![Reply::Bulk(b"2-0".to_vec()), Reply::Array(vec![])]),
                ]),
            ])]),
        ];
        for step in 1..=input.len() {
            assert_eq!(
                parse_all(&input, step, 1024).unwrap(),
                expected,
                "step {step}"
            );
        }
    }

    #[test]
    fn a_bulk_string_over_the_limit_is_skipped_not_kept() {
        let input = b"*3\r\n$7\r\nmessage\r\n$10\r\n0123456789\r\n:1\r\n+OK\r\n";
        for step in 1..=input.len() {
            let replies = parse_all(input, step, 9).unwrap();
            assert_eq!(
                replies,
                [
                    Reply::Array(vec![
                        Reply::Bulk(b"message".to_vec()),
                        Reply::TooLong(10),
                        Reply::Integer(1)
                    ]),
                    Reply::Status(b"OK".to_vec())
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn what_is_not_resp_is_an_error() {
        for bad in [
            &b"?x\r\n"[..],
            b"+OK\n",
            b":x\r\n",
            b"$-2\r\n",
            b"$2\r\nabc\r\n",
            b"*99999999\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            assert!(parse_all(bad, bad.len(), 1024).is_err(), "{bad:?}");
        }
        let endless = vec![b'+'; MAX_HEADER + 2];
        assert!(parse_all(&endless, endless.len(), 1024).is_err());
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"PUBLISH", b"room", b"a\r\nb"]);
        assert_eq!(
            out,
            b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nroom\r\n$4\r\na\r\nb\r\n"
        );
        let mut in_place = Vec::new();
        command_ending_with(
            &mut in_place,
            &[b"PUBLISH", b"room"],
            &[b"a\r", b"", b"\nb"],
        );
        assert_eq!(in_place, out);
        assert_eq!(parse_all(b"*1\r\n$4\r\nPING\r\n", 1, 64).unwrap().len(), 1);
    }

    /// Any reply, encoded as Redis does.
    fn reply() -> impl proptest::strategy::Strategy<Value = Reply> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            "[a-zA-Z ]{0,12}".prop_map(|s| Reply::Status(s.into_bytes())),
            "[a-zA-Z ]{0,12}".prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Integer),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Reply::Bulk),
            Just(Reply::Nil),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(Reply::Array)
        })
    }

    fn encode(reply: &Reply, out: &mut Vec<u8>) {
        match reply {
            Reply::Status(s) => out.extend([b"+", &s[..], b"\r\n"].concat()),
            Reply::Error(e) => out.extend([b"-", e.as_bytes(), b"\r\n"].concat()),
            Reply::Integer(n) => out.extend(format!(":{n}\r\n").into_bytes()),
            Reply::Bulk(b) => {
                out.extend(format!("${}\r\n", b.len()).into_bytes());
                out.extend(b);
                out.extend(b"\r\n");
            }
            Reply::Nil => out.extend(b"$-1\r\n"),
            Reply::Array(items) => {
                out.extend(format!("*{}\r\n", items.len()).into_bytes());
                items.iter().for_each(|item| encode(item, out));
            }
            Reply::TooLong(_) => unreachable!("not generated"),
        }
    }

    proptest::proptest! {
        #[test]
        fn any_replies_parse_back_whatever_the_pieces(
            replies in proptest::collection::vec(reply(), 1..5),
            step in 1usize..64,
        ) {
            let mut input = Vec::new();
            replies.iter().for_each(|r| encode(r, &mut input));
            proptest::prop_assert_eq!(parse_all(&input, step, 1024).unwrap(), replies);
        }

        #[test]
        fn any_bytes_give_replies_or_an_error_never_a_panic(
            input in proptest::collection::vec(any_resp_byte(), 0..200),
            step in 1usize..32,
        ) {
            let mut parser = Parser::new(16);
            let mut buffer = Vec::new();
            'feed: for piece in input.chunks(step) {
                buffer.extend_from_slice(piece);
                loop {
                    match parser.parse(&buffer) {
                        Err(_) => break 'feed,
                        Ok((used, reply)) => {
                            proptest::prop_assert!(used <= buffer.len());
                            buffer.drain(..used);
                            if reply.is_none() {
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Bytes weighted towards what RESP is made of.
    fn any_resp_byte() -> impl proptest::strategy::Strategy<Value = u8> {
        use proptest::prelude::*;
        prop_oneof![
            proptest::sample::select(&b"+-:$*_\r\n0123456789-"[..]),
            any::<u8>(),
        ]
    }
}
