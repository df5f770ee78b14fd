//! Splitting a byte stream into lines, with a cap on line length.

use crate::budget::Held;
use std::ops::ControlFlow;

/// A line was longer than the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong;

/// Bytes received and not yet split into lines. Bytes are bytes: a line
/// need not be UTF-8.
///
/// Memory stays bounded: past `max_len` bytes without a newline the
/// buffer reports [`LineTooLong`] instead of growing.
#[derive(Debug, Default)]
pub struct LineBuffer {
    /// Charged to the memory budget.
    buf: Held,
    /// `buf[..scanned]` has no newline left, so it is not searched again.
    scanned: usize,
    max_len: usize,
}

impl LineBuffer {
    /// An empty buffer for lines of at most `max_len` bytes (not counting
    /// the line terminator).
    pub fn new(max_len: usize) -> LineBuffer {
        LineBuffer {
            buf: Held::default(),
            scanned: 0,
            max_len,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Forgets everything buffered.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.scanned = 0;
    }

    /// Bytes buffered (an incomplete line, or lines not yet taken).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Bytes charged to the memory budget for it.
    pub fn held(&self) -> usize {
        self.buf.capacity()
    }

    /// Calls `each` with every complete line, in order, without its `\n`
    /// or `\r\n`, until it returns `Break`; the rest stays buffered.
    ///
    /// `Err(LineTooLong)` when a complete line, or the incomplete one at
    /// the end, is over the cap; lines before it were handed out.
    pub fn for_each_line<F>(&mut self, mut each: F) -> Result<(), LineTooLong>
    where
        F: FnMut(&[u8]) -> ControlFlow<()>,
    {
        let mut consumed = 0;
        let mut outcome = Ok(());
        loop {
            let Some(pos) = memchr::memchr(b'\n', &self.buf.as_slice()[self.scanned..]) else {
                self.scanned = self.buf.len();
                // One byte of slack: a trailing '\r' may belong to "\r\n".
                if self.buf.len() - consumed > self.max_len + 1 {
                    outcome = Err(LineTooLong);
                }
                break;
            };
            let end = self.scanned + pos;
            let raw = &self.buf.as_slice()[consumed..end];
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            consumed = end + 1;
            self.scanned = consumed;
            if line.len() > self.max_len {
                outcome = Err(LineTooLong);
                break;
            }
            if each(line).is_break() {
                break;
            }
        }
        self.buf.consume(consumed);
        self.scanned -= consumed;
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(buf: &mut LineBuffer) -> (Vec<Vec<u8>>, Result<(), LineTooLong>) {
        let mut lines = Vec::new();
        let result = buf.for_each_line(|line| {
            lines.push(line.to_vec());
            ControlFlow::Continue(())
        });
        (lines, result)
    }

    #[test]
    fn splits_across_pushes_and_strips_terminators() {
        let mut buf = LineBuffer::new(16);
        buf.push(b"one\r\ntw");
        assert_eq!(collect(&mut buf), (vec![b"one".to_vec()], Ok(())));
        buf.push(b"o\n\nthree");
        assert_eq!(
            collect(&mut buf),
            (vec![b"two".to_vec(), b"".to_vec()], Ok(()))
        );
        assert_eq!(buf.len(), 5);
        buf.push(b"\n");
        assert_eq!(collect(&mut buf), (vec![b"three".to_vec()], Ok(())));
        assert_eq!(buf.len(), 0);
    }

    #[test]
    fn keeps_non_utf8_bytes() {
        let mut buf = LineBuffer::new(16);
        buf.push(b"\xff\xfe\x00x\n");
        assert_eq!(collect(&mut buf), (vec![b"\xff\xfe\x00x".to_vec()], Ok(())));
    }

    #[test]
    fn caps_line_length() {
        let mut buf = LineBuffer::new(4);
        buf.push(b"abcd\r\nabcde\nlater\n");
        assert_eq!(
            collect(&mut buf),
            (vec![b"abcd".to_vec()], Err(LineTooLong))
        );

        let mut buf = LineBuffer::new(4);
        buf.push(b"abcd\r");
        assert_eq!(collect(&mut buf), (vec![], Ok(())));
        buf.push(b"x");
        assert_eq!(collect(&mut buf), (vec![], Err(LineTooLong)));
    }

    #[test]
    fn break_leaves_the_rest() {
        let mut buf = LineBuffer::new(16);
        buf.push(b"a\nb\nc");
        let mut seen = Vec::new();
        let result = buf.for_each_line(|line| {
            seen.push(line.to_vec());
            ControlFlow::Break(())
        });
        assert_eq!((seen, result), (vec![b"a".to_vec()], Ok(())));
        assert_eq!(collect(&mut buf), (vec![b"b".to_vec()], Ok(())));
    }
}
