//! SIGINT and SIGTERM as selector events.
//!
//! The core's `signal` module does the work (the handler, and the one
//! `unsafe` call it needs); this names the signals the servers stop on.

use rselectors::{signal, Waker};
use std::io;

/// Routes SIGINT and SIGTERM to `waker`. Once per process.
pub fn install(waker: &Waker) -> io::Result<()> {
    signal::wake_on(waker, &[libc::SIGINT, libc::SIGTERM])
}

/// Makes a read of the terminal from a background job fail with `EIO`
/// instead of stopping the whole server (SIGTTIN), so that
/// `rselectors chat-server &` keeps serving; the console then turns off.
pub fn ignore_background_terminal_reads() -> io::Result<()> {
    signal::ignore(libc::SIGTTIN)
}

/// The name of the signal received since the last call, if any.
pub fn take_received() -> Option<&'static str> {
    match signal::take_received()? {
        libc::SIGINT => Some("SIGINT"),
        libc::SIGTERM => Some("SIGTERM"),
        _ => None,
    }
}
