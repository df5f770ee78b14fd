//! SIGINT, SIGTERM and SIGHUP as selector events, and SIGTTIN kept from
//! stopping a server in the background.
//!
//! `signal-hook` owns the handlers: they write to its self-pipe and chain
//! with any other handler of the process, and a thread of ours turns each
//! signal into a wake-up of the event loop's [`Waker`] (whatever the
//! platform's waker is: an eventfd, a pipe, a kqueue user event), after
//! recording it for [`take_received`]. The library installs no handler.
//!
//! SIGHUP (the terminal closed) stops a server as SIGTERM does, unless the
//! server was started with SIGHUP ignored (`nohup`): then it stays ignored.

use crate::logging::debug;
use nix::sys::signal::{SigSet, Signal};
use rselectors::Waker;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::io;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;

/// The wakers that signals wake (one per server in the process).
static WAKERS: Mutex<Vec<Waker>> = Mutex::new(Vec::new());
/// Whether the handlers and the thread that relays signals are in place.
static RELAYING: Mutex<bool> = Mutex::new(false);
/// The last signal received and not yet taken, or 0.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Routes SIGINT, SIGTERM and SIGHUP (unless ignored from the start) to
/// `waker`: each one is recorded for [`take_received`] and wakes it.
pub fn install(waker: &Waker) -> io::Result<()> {
    let mut relaying = RELAYING.lock().unwrap_or_else(PoisonError::into_inner);
    if !*relaying {
        let mut signals = vec![SIGINT, SIGTERM];
        match ignored_from_the_start(SIGHUP) {
            Some(false) => signals.push(SIGHUP),
            Some(true) => debug!("SIGHUP is ignored (nohup): it does not stop the server"),
            None => debug!("cannot tell whether SIGHUP is ignored: left as it is"),
        }
        let signals = Signals::new(&signals)?;
        thread::Builder::new()
            .name("signals".to_owned())
            .spawn(move || relay(signals))?;
        *relaying = true;
    }
    lock_wakers().push(waker.clone());
    Ok(())
}

fn lock_wakers() -> std::sync::MutexGuard<'static, Vec<Waker>> {
    WAKERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records each signal, then wakes the event loops: a loop woken always
/// finds the signal that woke it.
fn relay(mut signals: Signals) {
    for signo in signals.forever() {
        RECEIVED.store(signo, Ordering::SeqCst);
        for waker in lock_wakers().iter() {
            // Fails only if the waker is saturated: awake anyway.
            let _ = waker.wake();
        }
    }
}

/// The name of the signal received since the last call, if any.
pub fn take_received() -> Option<&'static str> {
    match RECEIVED.swap(0, Ordering::SeqCst) {
        SIGINT => Some("SIGINT"),
        SIGTERM => Some("SIGTERM"),
        SIGHUP => Some("SIGHUP"),
        _ => None,
    }
}

/// Whether `signo` was ignored when the program started (`nohup` ignores
/// SIGHUP), or `None` if that cannot be told. Neither signal-hook nor
/// rustix reads a disposition without `unsafe`, so this asks the kernel's
/// own report: `/proc/self/status` (Linux, Android), else `ps`, whose
/// `sigignore` column the BSDs and macOS have.
fn ignored_from_the_start(signo: libc::c_int) -> Option<bool> {
    let mask = match std::fs::read_to_string("/proc/self/status") {
        Ok(status) => status
            .lines()
            .find_map(|line| line.strip_prefix("SigIgn:"))
            .and_then(parse_mask),
        Err(_) => ignored_by_ps(),
    }?;
    Some((1..=64).contains(&signo) && mask & (1 << (signo - 1)) != 0)
}

/// This process's mask of ignored signals as `ps -o sigignore=` shows it.
fn ignored_by_ps() -> Option<u64> {
    let pid = std::process::id().to_string();
    let output = Command::new("ps")
        .args(["-o", "sigignore=", "-p", &pid])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    parse_mask(std::str::from_utf8(&output.stdout).ok()?)
}

/// A signal mask in hexadecimal, bit `n - 1` for signal `n`.
fn parse_mask(text: &str) -> Option<u64> {
    u64::from_str_radix(text.trim(), 16).ok()
}

/// Makes a read of the terminal from a background job fail with `EIO`
/// instead of stopping the whole server (SIGTTIN), so that
/// `rselectors chat-server &` keeps serving; the console then turns off.
/// The signal is blocked in the calling thread, the one that reads the
/// console: for the terminal a blocked SIGTTIN is as good as an ignored
/// one (Linux, the BSDs, macOS and illumos all answer `EIO`), and it needs
/// no `unsafe` to set.
pub fn ignore_background_terminal_reads() -> io::Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTTIN);
    set.thread_block()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{ignored_by_ps, ignored_from_the_start, parse_mask};
    use nix::sys::signal::{SigSet, Signal};

    #[test]
    fn reads_the_ignored_signals_of_this_process() {
        // The test harness does not ignore SIGTERM; SIGKILL cannot be.
        assert_eq!(ignored_from_the_start(libc::SIGTERM), Some(false));
        assert_eq!(ignored_from_the_start(libc::SIGKILL), Some(false));
        assert_eq!(ignored_from_the_start(0), Some(false));
        assert_eq!(ignored_from_the_start(65), Some(false));
    }

    /// The way the BSDs and macOS are asked gives the same mask as
    /// /proc where both exist.
    #[test]
    fn ps_reports_the_same_mask_as_proc() {
        let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
            return;
        };
        let Some(by_ps) = ignored_by_ps() else {
            eprintln!("note: no ps with a sigignore column here; skipping");
            return;
        };
        let by_proc = status
            .lines()
            .find_map(|line| line.strip_prefix("SigIgn:"))
            .and_then(parse_mask);
        assert_eq!(Some(by_ps), by_proc);
    }

    #[test]
    fn parses_masks_of_both_widths() {
        assert_eq!(parse_mask("0000000000000001\n"), Some(1));
        assert_eq!(parse_mask(" 00380004"), Some(0x0038_0004));
        assert_eq!(parse_mask("-"), None);
    }

    #[test]
    fn background_terminal_reads_block_sigttin_in_this_thread() {
        std::thread::spawn(|| {
            super::ignore_background_terminal_reads().unwrap();
            let blocked = SigSet::thread_get_mask().unwrap();
            assert!(blocked.contains(Signal::SIGTTIN));
        })
        .join()
        .unwrap();
    }
}
