//! SIGINT, SIGTERM and SIGHUP as selector events, and SIGTTIN kept from
//! stopping a server in the background.
//!
//! `signal-hook` owns the handlers: they chain with any other handler of
//! the process and write a byte to one end of a socket pair whose other
//! end, [`Signals`], the event loop that handles signals watches as one
//! more file object in its selector (as `signal-hook-mio` does). No thread
//! relays them: a second thread would make every wait of the loop go
//! through the C library's cancellation-point wrapper. The library
//! installs no handler.
//!
//! SIGHUP (the terminal closed) stops a server as SIGTERM does, unless the
//! server was started with SIGHUP ignored (`nohup`): then it stays ignored.

use crate::logging::debug;
use nix::sys::signal::{SigSet, Signal};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;
use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::Command;

/// The signals that stop a server, delivered through a socket to watch
/// for READ; [`Signals::take`] once it is readable.
#[derive(Debug)]
pub struct Signals {
    delivery: SignalDelivery<UnixStream, SignalOnly>,
    /// Whether SIGHUP is among them (not if ignored from the start).
    hangup: bool,
}

impl Signals {
    /// Routes SIGINT, SIGTERM and SIGHUP (unless ignored from the start)
    /// to a new socket. Signals that arrive before it is watched wait in
    /// the socket.
    pub fn install() -> io::Result<Signals> {
        let mut signals = vec![SIGINT, SIGTERM];
        let hangup = match ignored_from_the_start(SIGHUP) {
            Some(false) => true,
            Some(true) => {
                debug!("SIGHUP is ignored (nohup): it does not stop the server");
                false
            }
            None => {
                debug!("cannot tell whether SIGHUP is ignored: left as it is");
                false
            }
        };
        if hangup {
            signals.push(SIGHUP);
        }
        // Both ends stay blocking: the handler sends and `take` receives
        // with a per-call no-wait flag.
        let (read, write) = UnixStream::pair()?;
        let delivery = SignalDelivery::with_pipe(read, write, SignalOnly, signals)?;
        Ok(Signals { delivery, hangup })
    }

    /// Empties the socket; the name of a signal received since the last
    /// call, if any.
    pub fn take(&mut self) -> Option<&'static str> {
        let mut taken = None;
        for signo in self.delivery.pending() {
            taken = taken.or(name(signo));
        }
        taken
    }

    /// What the console's `list` says of it.
    pub fn describe(&self) -> &'static str {
        if self.hangup {
            "signals (SIGINT, SIGTERM, SIGHUP)"
        } else {
            "signals (SIGINT, SIGTERM)"
        }
    }
}

impl AsRawFd for Signals {
    fn as_raw_fd(&self) -> RawFd {
        self.delivery.get_read().as_raw_fd()
    }
}

/// The name of a signal that stops a server.
fn name(signo: c_int) -> Option<&'static str> {
    match signo {
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
fn ignored_from_the_start(signo: c_int) -> Option<bool> {
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
    use super::{ignored_by_ps, ignored_from_the_start, parse_mask, Signals};
    use nix::sys::signal::{SigSet, Signal};
    use rselectors::{AnySelector, BackendKind, Events};
    use signal_hook::consts::SIGTERM;
    use std::time::Duration;

    #[test]
    fn reads_the_ignored_signals_of_this_process() {
        // The test harness does not ignore SIGTERM; SIGKILL cannot be.
        assert_eq!(ignored_from_the_start(SIGTERM), Some(false));
        assert_eq!(
            ignored_from_the_start(signal_hook::consts::SIGKILL),
            Some(false)
        );
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

    /// A signal makes the socket readable in a selector, with no thread
    /// in between; taking it empties the socket.
    #[test]
    fn a_signal_is_a_readable_socket_taken_once() {
        let mut sel: AnySelector<Signals, ()> =
            AnySelector::with_kind(BackendKind::DEFAULT).unwrap();
        let fd = sel
            .register(Signals::install().unwrap(), Events::READ, ())
            .unwrap()
            .fd;
        assert_eq!(sel.select(Some(Duration::ZERO)).unwrap(), 0);
        // Handled on this thread before `raise` returns.
        signal_hook::low_level::raise(SIGTERM).unwrap();
        assert_eq!(sel.select(Some(Duration::from_secs(5))).unwrap(), 1);
        assert_eq!(sel.next_ready(), Some((fd, Events::READ)));
        let signals = sel.get_key_mut(fd).unwrap().fileobj;
        assert_eq!(signals.take(), Some("SIGTERM"));
        assert_eq!(signals.take(), None);
        assert_eq!(sel.select(Some(Duration::ZERO)).unwrap(), 0);
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
