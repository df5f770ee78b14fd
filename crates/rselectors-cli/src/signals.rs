//! SIGINT, SIGTERM and SIGHUP as selector events.
//!
//! The core's `signal` module does the work (the handler, and the one
//! `unsafe` call it needs); this names the signals the servers stop on.
//! SIGHUP (the terminal closed) stops a server as SIGTERM does, unless the
//! server was started with SIGHUP ignored (`nohup`): then it stays ignored.

use crate::logging::debug;
use rselectors::{signal, Waker};
use std::io;

/// Routes SIGINT, SIGTERM and SIGHUP (unless ignored from the start) to
/// `waker`. Once per process.
pub fn install(waker: &Waker) -> io::Result<()> {
    let mut signals = vec![libc::SIGINT, libc::SIGTERM];
    if ignored_from_the_start(libc::SIGHUP) {
        debug!("SIGHUP is ignored (nohup): it does not stop the server");
    } else {
        signals.push(libc::SIGHUP);
    }
    signal::wake_on(waker, &signals)
}

/// Whether `signo` was ignored when the program started (`nohup` ignores
/// SIGHUP), read from the `SigIgn` mask in /proc/self/status; false if
/// that cannot be read.
fn ignored_from_the_start(signo: libc::c_int) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| (1..=64).contains(&signo) && mask & (1 << (signo - 1)) != 0)
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
        libc::SIGHUP => Some("SIGHUP"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::ignored_from_the_start;

    #[test]
    fn reads_the_ignored_signals_of_this_process() {
        // The test harness does not ignore SIGTERM; SIGKILL cannot be.
        assert!(!ignored_from_the_start(libc::SIGTERM));
        assert!(!ignored_from_the_start(libc::SIGKILL));
        assert!(!ignored_from_the_start(0));
        assert!(!ignored_from_the_start(65));
        // What the chat console does to SIGTTIN shows.
        super::ignore_background_terminal_reads().unwrap();
        assert!(ignored_from_the_start(libc::SIGTTIN));
    }
}
