//! The chat server's console: commands on stdin, read on the event loop's
//! thread in bounded amounts, so that no input can keep the loop from
//! serving clients or from seeing a signal.
//!
//! A terminal or a pipe is one more file object in the selector: one read
//! of at most [`CONSOLE_READ`] bytes per readiness event. What the selector
//! refuses as unpollable (epoll says `EPERM` for regular files and for
//! devices such as `/dev/null`, `/dev/zero`, `/dev/urandom`) never blocks
//! either: it is read one chunk per turn of the event loop, whose wait does
//! not block meanwhile, until its end ([`Console::wait_until`]).
//!
//! Commands are `list` and `quit`, blanks around them ignored; a blank
//! line does nothing. An unknown command or a line over [`MAX_LINE`] bytes
//! gets a warning, at most [`WARNINGS_PER_WINDOW`] a second, then a count
//! of those left out. After [`MAX_JUNK`] bytes without a command the
//! console turns off: nobody types that much that is not a command, so it
//! is something like `< /dev/zero`, and reading on would only burn a core.

use crate::logging::{debug, info, warning};
use crate::server::{Client, Server};
use crate::signals;
use crate::stdin::{self, Stdin};
use std::fmt;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// The longest command line kept; longer lines are ignored (with a
/// warning) up to their newline.
pub const MAX_LINE: usize = 4096;

/// Bytes read from stdin at most per readiness event (per loop turn for
/// input that cannot be polled).
const CONSOLE_READ: usize = 4096;

/// Bytes of input in a row without a command after which the console
/// turns off.
const MAX_JUNK: u64 = 1024 * 1024;

/// Warnings about console input shown per [`WARNING_WINDOW`]; the rest
/// are counted, and the count shown once the window is over.
const WARNINGS_PER_WINDOW: u32 = 3;
const WARNING_WINDOW: Duration = Duration::from_secs(1);

/// A command typed on the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Show what is registered.
    List,
    /// Stop the server.
    Quit,
}

/// Where console input comes from.
#[derive(Debug)]
enum Input {
    /// No console (any more).
    Off,
    /// Stdin, registered in the server's selector at this descriptor.
    Watched(RawFd),
    /// Stdin that cannot be polled and never blocks: read a chunk per turn.
    Unpollable(Stdin),
}

/// The console of one server (loop 0 of `--threads`).
#[derive(Debug)]
pub struct Console {
    input: Input,
    parser: Parser,
    buf: Vec<u8>,
}

impl Console {
    /// No console: for the loops other than the first.
    pub fn off() -> Console {
        Console {
            input: Input::Off,
            parser: Parser::new(),
            buf: Vec::new(),
        }
    }

    /// Takes stdin as the console of `server`: watched by its selector,
    /// or read a chunk per turn if it cannot be polled.
    pub fn start<C: Client>(server: &mut Server<C>) -> Console {
        let mut console = Console::off();
        if let Err(e) = signals::ignore_background_terminal_reads() {
            debug!("cannot ignore SIGTTIN: {e}");
        }
        let Some(input) = Stdin::open() else {
            debug!("stdin is closed: no console");
            return console;
        };
        console.buf = vec![0; CONSOLE_READ];
        match server.register_console(input) {
            Ok(fd) => {
                console.input = Input::Watched(fd);
                info!("console: type `list` to show connections, `quit` to stop");
            }
            Err(e) if stdin::is_unpollable(&e) => {
                // A regular file or a device such as /dev/null: it cannot
                // be polled, and reading it never blocks.
                debug!("stdin cannot be polled ({e}): reading it a chunk per turn");
                if let Some(input) = Stdin::open() {
                    console.input = Input::Unpollable(input);
                }
            }
            Err(e) => warning!("no console: cannot watch stdin: {e}"),
        }
        console
    }

    /// When the event loop's wait must end, given the loop's own
    /// `deadline`: at once while unpollable input is left to read.
    pub fn wait_until(&self, deadline: Option<Instant>) -> Option<Instant> {
        match self.input {
            Input::Unpollable(_) => Some(Instant::now()),
            _ => deadline,
        }
    }

    /// The console at `fd` is readable: reads one chunk and runs its
    /// commands (`list` prints with the `list` callback).
    pub fn readable<C: Client>(
        &mut self,
        server: &mut Server<C>,
        fd: RawFd,
        list: impl FnMut(&Server<C>),
    ) {
        if !matches!(self.input, Input::Watched(watched) if watched == fd) {
            return;
        }
        let Some(input) = server.console_mut(fd) else {
            return;
        };
        let read = input.read(&mut self.buf);
        self.take(server, read, list);
    }

    /// Once per turn of the event loop: reads one chunk of input that
    /// cannot be polled, if any is left, and runs its commands.
    pub fn turn<C: Client>(&mut self, server: &mut Server<C>, list: impl FnMut(&Server<C>)) {
        let Input::Unpollable(input) = &mut self.input else {
            return;
        };
        if server.is_stopping() {
            return;
        }
        let read = input.read(&mut self.buf);
        self.take(server, read, list);
    }

    /// Handles the outcome of one read of the console.
    fn take<C: Client>(
        &mut self,
        server: &mut Server<C>,
        read: std::io::Result<usize>,
        mut list: impl FnMut(&Server<C>),
    ) {
        let now = Instant::now();
        let mut run = |command| match command {
            Command::List => list(server),
            Command::Quit => {
                info!("console: quit");
                server.request_stop("console quit");
            }
        };
        let outcome = match read {
            Ok(0) => {
                // A last command without a newline still counts.
                if self.parser.end_of_input(now, &mut run) == Fed::Quit {
                    Fed::Quit
                } else {
                    Fed::Ended
                }
            }
            Ok(n) => self.parser.feed(&self.buf[..n], now, &mut run),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
                // A background job reading its terminal (SIGTTIN ignored).
                info!("console off: running in the background of a terminal");
                Fed::Off
            }
            Err(e) => {
                warning!("console: {e}; console off");
                Fed::Off
            }
        };
        if outcome == Fed::More {
            return;
        }
        self.parser.warnings.flush();
        // The console is done with: at its end, a quit, an error, or junk.
        match outcome {
            Fed::Ended if !server.is_stopping() => {
                info!("console: end of input; serving until SIGINT or SIGTERM");
            }
            Fed::Junk => warning!(
                "console off: {MAX_JUNK} bytes of input without a command \
                 (`list`, `quit`); the rest of stdin is ignored"
            ),
            _ => {}
        }
        if let Input::Watched(fd) = std::mem::replace(&mut self.input, Input::Off) {
            server.remove_console(fd);
        }
    }
}

/// What became of a chunk of console input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fed {
    /// Read on.
    More,
    /// `quit`: the rest is not read.
    Quit,
    /// End of input.
    Ended,
    /// The console is off (a read failed).
    Off,
    /// [`MAX_JUNK`] bytes without a command.
    Junk,
}

/// Console input split into lines and commands, with its warnings.
#[derive(Debug)]
struct Parser {
    /// The line so far (at most [`MAX_LINE`] bytes).
    line: Vec<u8>,
    /// The line so far is over [`MAX_LINE`]: ignored up to its newline.
    overlong: bool,
    /// Bytes since the last command.
    junk: u64,
    warnings: Warnings,
}

impl Parser {
    fn new() -> Parser {
        Parser {
            line: Vec::new(),
            overlong: false,
            junk: 0,
            warnings: Warnings::default(),
        }
    }

    /// Splits `bytes` into lines and hands `run` their commands, until a
    /// `quit`.
    fn feed(&mut self, mut bytes: &[u8], now: Instant, run: &mut impl FnMut(Command)) -> Fed {
        self.warnings.tick(now);
        loop {
            let (part, rest) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => (&bytes[..i], Some(&bytes[i + 1..])),
                None => (bytes, None),
            };
            self.append(part, now);
            let Some(rest) = rest else {
                break;
            };
            self.junk += 1; // the newline
            if self.end_line(now, run) == Fed::Quit {
                return Fed::Quit;
            }
            bytes = rest;
        }
        if self.junk > MAX_JUNK {
            Fed::Junk
        } else {
            Fed::More
        }
    }

    /// End of input: what is left is the last line.
    fn end_of_input(&mut self, now: Instant, run: &mut impl FnMut(Command)) -> Fed {
        if self.line.is_empty() && !self.overlong {
            return Fed::Ended;
        }
        self.end_line(now, run)
    }

    /// Adds `part` to the current line (or skips it, past the cap).
    fn append(&mut self, part: &[u8], now: Instant) {
        self.junk += part.len() as u64;
        if self.overlong {
            return;
        }
        if self.line.len() + part.len() > MAX_LINE {
            self.overlong = true;
            self.line = Vec::new();
            self.warnings.warn(
                now,
                format_args!("line longer than {MAX_LINE} bytes ignored"),
            );
        } else {
            self.line.extend_from_slice(part);
        }
    }

    /// The current line is complete: runs its command, if it is one.
    fn end_line(&mut self, now: Instant, run: &mut impl FnMut(Command)) -> Fed {
        if std::mem::take(&mut self.overlong) {
            return Fed::More;
        }
        let command = match self.line.trim_ascii() {
            b"" => None,
            b"list" => Some(Command::List),
            b"quit" => Some(Command::Quit),
            unknown => {
                let shown = &unknown[..unknown.len().min(40)];
                let more = if shown.len() < unknown.len() {
                    "..."
                } else {
                    ""
                };
                self.warnings.warn(
                    now,
                    format_args!(
                        "unknown command '{}{more}' (commands: list, quit)",
                        shown.escape_ascii()
                    ),
                );
                None
            }
        };
        self.line.clear();
        match command {
            None => Fed::More,
            Some(command) => {
                self.junk = 0;
                run(command);
                if command == Command::Quit {
                    Fed::Quit
                } else {
                    Fed::More
                }
            }
        }
    }
}

/// Warnings about console input, rate-limited.
#[derive(Debug, Default)]
struct Warnings {
    /// When the current window began.
    window_start: Option<Instant>,
    /// Warnings shown in it.
    shown: u32,
    /// Warnings left out and not yet counted in the log.
    suppressed: u64,
}

impl Warnings {
    /// Logs `what`, unless [`WARNINGS_PER_WINDOW`] were shown already in
    /// this window: then counts it.
    fn warn(&mut self, now: Instant, what: fmt::Arguments<'_>) {
        self.tick(now);
        if self.window_start.is_none() {
            self.window_start = Some(now);
        }
        if self.shown < WARNINGS_PER_WINDOW {
            self.shown += 1;
            warning!("console: {what}");
        } else {
            self.suppressed += 1;
        }
    }

    /// Ends the window if it is over, logging what it left out.
    fn tick(&mut self, now: Instant) {
        if let Some(start) = self.window_start {
            if now.saturating_duration_since(start) >= WARNING_WINDOW {
                self.flush();
            }
        }
    }

    /// Logs the count of warnings left out, if any; a new window begins
    /// with the next warning.
    fn flush(&mut self) {
        if self.suppressed > 0 {
            warning!("console: {} more such warnings suppressed", self.suppressed);
        }
        self.suppressed = 0;
        self.shown = 0;
        self.window_start = None;
    }
}

impl Drop for Console {
    /// The count of warnings left out, when the server stops before the
    /// window is over.
    fn drop(&mut self) {
        self.parser.warnings.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(parser: &mut Parser, bytes: &[u8], now: Instant) -> (Vec<Command>, Fed) {
        let mut commands = Vec::new();
        let fed = parser.feed(bytes, now, &mut |c| commands.push(c));
        (commands, fed)
    }

    #[test]
    fn commands_are_list_and_quit_with_blanks_around() {
        let mut parser = Parser::new();
        let now = Instant::now();
        let (commands, fed) = feed_all(&mut parser, b"list\n  list \r\n\n\tli", now);
        assert_eq!(
            (commands, fed),
            (vec![Command::List, Command::List], Fed::More)
        );
        let (commands, fed) = feed_all(&mut parser, b"st\nbogus\nquit\nlist\n", now);
        assert_eq!(
            (commands, fed),
            (vec![Command::List, Command::Quit], Fed::Quit)
        );
    }

    #[test]
    fn a_last_command_without_a_newline_counts() {
        let mut parser = Parser::new();
        let now = Instant::now();
        assert_eq!(feed_all(&mut parser, b"quit", now), (vec![], Fed::More));
        let mut commands = Vec::new();
        let fed = parser.end_of_input(now, &mut |c| commands.push(c));
        assert_eq!((commands, fed), (vec![Command::Quit], Fed::Quit));
        assert_eq!(
            Parser::new().end_of_input(now, &mut |_| panic!()),
            Fed::Ended
        );
    }

    #[test]
    fn an_overlong_line_is_skipped_to_its_newline() {
        let mut parser = Parser::new();
        let now = Instant::now();
        let long = vec![b'l'; MAX_LINE + 1];
        let (commands, _) = feed_all(&mut parser, &long, now);
        assert!(commands.is_empty());
        // The end of the long line is not a command of its own.
        let (commands, fed) = feed_all(&mut parser, b"list\nlist\n", now);
        assert_eq!((commands, fed), (vec![Command::List], Fed::More));
        // The longest line allowed.
        let mut longest = vec![b' '; MAX_LINE - 4];
        longest.extend_from_slice(b"list\n");
        let (commands, _) = feed_all(&mut parser, &longest, now);
        assert_eq!(commands, vec![Command::List]);
        assert_eq!(parser.warnings.shown, 1);
    }

    #[test]
    fn endless_input_without_a_command_turns_the_console_off() {
        let mut parser = Parser::new();
        let now = Instant::now();
        let zeros = [0u8; CONSOLE_READ];
        let mut fed_bytes = 0;
        loop {
            let (commands, fed) = feed_all(&mut parser, &zeros, now);
            assert!(commands.is_empty());
            fed_bytes += zeros.len() as u64;
            if fed == Fed::Junk {
                break;
            }
            assert_eq!(fed, Fed::More);
            assert!(fed_bytes <= MAX_JUNK);
        }
        assert!(fed_bytes > MAX_JUNK);
        // A command now and then keeps it on.
        let mut parser = Parser::new();
        let mut chunk = b"\nlist\n".to_vec();
        chunk.resize(CONSOLE_READ, b'x');
        for _ in 0..2 * MAX_JUNK / CONSOLE_READ as u64 {
            assert_eq!(feed_all(&mut parser, &chunk, now).1, Fed::More);
        }
    }

    #[test]
    fn warnings_are_rate_limited_and_counted() {
        let mut warnings = Warnings::default();
        let start = Instant::now();
        for _ in 0..10 {
            warnings.warn(start, format_args!("test"));
        }
        assert_eq!((warnings.shown, warnings.suppressed), (3, 7));
        // Within the window: still counted.
        warnings.warn(start + WARNING_WINDOW / 2, format_args!("test"));
        assert_eq!((warnings.shown, warnings.suppressed), (3, 8));
        // A new window: the count is logged, warnings show again.
        warnings.warn(start + WARNING_WINDOW, format_args!("test"));
        assert_eq!((warnings.shown, warnings.suppressed), (1, 0));
    }
}
