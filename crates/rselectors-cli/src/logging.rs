//! Plain leveled logging to stderr: `-q` warnings only, default info,
//! `-v` debug. Program output (replies, `listening on`, summaries) goes to
//! stdout; logs never do.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

/// How much is logged; a message is printed when its level is at most this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// Something went wrong that the program handles.
    Warn = 0,
    /// Connects, disconnects, starts and stops.
    Info = 1,
    /// Per-connection detail: resets, half-closes, backend choices.
    Debug = 2,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the most detailed level that is printed.
pub fn set_max_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// True if messages of `level` are printed.
#[inline]
pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Prints one log line; the macros below call it once they have found
/// `level` enabled. A failing stderr is ignored: logging must never take
/// the program down (`eprintln!` would panic on `EPIPE`).
///
/// The line is formatted first and written with one `write(2)`: stderr is
/// unbuffered, so `writeln!` straight to it costs a system call per
/// formatted piece (about twenty for a `connected` line).
///
/// Cold and out of line: the hot loops log behind level checks, and their
/// busy code stays compact (see docs/performance.md).
#[cold]
#[inline(never)]
pub fn log(level: Level, args: fmt::Arguments<'_>) {
    let line = format!("[{}] {args}\n", level.label());
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Logs at `level`, `format!`-style. The level is checked first, inline,
/// so a disabled message costs one load and compare: no call, and no
/// argument is evaluated or formatted.
macro_rules! log_at {
    ($level:expr, $($arg:tt)*) => {
        if $crate::logging::enabled($level) {
            $crate::logging::log($level, format_args!($($arg)*))
        }
    };
}
/// Logs at warn level, `format!`-style.
macro_rules! warning {
    ($($arg:tt)*) => { $crate::logging::log_at!($crate::logging::Level::Warn, $($arg)*) };
}
/// Logs at info level, `format!`-style.
macro_rules! info {
    ($($arg:tt)*) => { $crate::logging::log_at!($crate::logging::Level::Info, $($arg)*) };
}
/// Logs at debug level, `format!`-style.
macro_rules! debug {
    ($($arg:tt)*) => { $crate::logging::log_at!($crate::logging::Level::Debug, $($arg)*) };
}
pub(crate) use {debug, info, log_at, warning};

/// Writes one line of program output to stdout and flushes it, so that a
/// script reading through a pipe sees it at once. Errors (a closed pipe)
/// are ignored for the same reason as in [`log`].
pub fn output(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{args}");
    let _ = out.flush();
}

/// Prints a line of program output, `format!`-style (see [`output`]).
macro_rules! say {
    ($($arg:tt)*) => { $crate::logging::output(format_args!($($arg)*)) };
}
pub(crate) use say;
