//! A tiny blocking RESP client: one command, one reply, to look into the
//! broker tests' redis or to put things on a room's channel or stream.

use super::TIMEOUT;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

/// A RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Array(Vec<Reply>),
    Nil,
}

impl Reply {
    /// The text of a simple or bulk string ("" for anything else).
    pub fn text(&self) -> String {
        match self {
            Reply::Simple(s) => s.clone(),
            Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        }
    }

    /// The texts of an array of strings.
    pub fn texts(&self) -> Vec<String> {
        match self {
            Reply::Array(items) => items.iter().map(Reply::text).collect(),
            other => panic!("not an array: {other:?}"),
        }
    }

    pub fn integer(&self) -> i64 {
        match self {
            Reply::Integer(n) => *n,
            other => panic!("not an integer: {other:?}"),
        }
    }

    /// Panics unless the command succeeded (`+OK`, an id...).
    pub fn ok(&self) -> &Reply {
        assert!(!matches!(self, Reply::Error(_)), "redis said {self:?}");
        self
    }
}

/// A blocking connection that sends one command and reads its reply.
#[derive(Debug)]
pub struct RespClient {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
}

impl RespClient {
    pub fn connect(addr: SocketAddr) -> std::io::Result<RespClient> {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        Ok(RespClient {
            reader: BufReader::new(stream.try_clone()?),
            stream,
        })
    }

    pub fn call(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        let mut wire = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            wire.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            wire.extend_from_slice(arg);
            wire.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&wire)?;
        self.read_reply()
    }

    fn read_reply(&mut self) -> std::io::Result<Reply> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line)?;
        let Some(line) = line.strip_suffix(b"\r\n") else {
            return Err(invalid("a reply line without CRLF"));
        };
        let (&kind, rest) = line.split_first().ok_or_else(|| invalid("empty"))?;
        let rest = String::from_utf8_lossy(rest).into_owned();
        let number = || rest.parse::<i64>().map_err(|_| invalid("a bad length"));
        Ok(match kind {
            b'+' => Reply::Simple(rest),
            b'-' => Reply::Error(rest),
            b':' => Reply::Integer(number()?),
            b'$' if number()? < 0 => Reply::Nil,
            b'$' => {
                let mut bulk = vec![0; number()? as usize + 2];
                self.reader.read_exact(&mut bulk)?;
                bulk.truncate(bulk.len() - 2);
                Reply::Bulk(bulk)
            }
            b'*' if number()? < 0 => Reply::Nil,
            b'*' => Reply::Array(
                (0..number()?)
                    .map(|_| self.read_reply())
                    .collect::<std::io::Result<_>>()?,
            ),
            _ => return Err(invalid("an unknown reply type")),
        })
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("RESP: {what}"))
}
