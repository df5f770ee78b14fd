//! Signals as selector events: a handler that wakes a [`Waker`].
//!
//! The handler records which signal came and calls [`Waker::wake`] (one
//! `write(2)` to an eventfd, async-signal-safe). A server that registers
//! the same waker for READ sees a signal as a ready event at once, with no
//! window between checking a flag and going to sleep in `select()`.

use crate::Waker;
use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

/// The waker the handler wakes; set once, before any handler is installed.
static WAKER: OnceLock<Waker> = OnceLock::new();
/// The last signal received and not yet taken, or 0.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Makes each of `signals` wake `waker` (and be recorded for
/// [`take_received`]) instead of its default action. One waker per
/// process: a second call with another waker fails.
pub fn wake_on(waker: &Waker, signals: &[libc::c_int]) -> io::Result<()> {
    let installed = WAKER.get_or_init(|| waker.clone());
    if !installed.same_as(waker) {
        return Err(io::Error::other("signals wake another Waker already"));
    }
    for &signo in signals {
        set_disposition(
            signo,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        )?;
    }
    Ok(())
}

/// Ignores `signo` (`SIG_IGN`); for example SIGTTIN, so that a server
/// started in the background does not stop when it reads the terminal.
pub fn ignore(signo: libc::c_int) -> io::Result<()> {
    set_disposition(signo, libc::SIG_IGN)
}

/// The signal received since the last call, if any.
pub fn take_received() -> Option<libc::c_int> {
    match RECEIVED.swap(0, Ordering::SeqCst) {
        0 => None,
        signo => Some(signo),
    }
}

/// Runs in signal context: an atomic store, an atomic load
/// (`OnceLock::get`) and `write(2)`, all async-signal-safe.
extern "C" fn on_signal(signo: libc::c_int) {
    // The interrupted code may be about to read errno: leave it as it was.
    // SAFETY: __errno_location returns this thread's errno, always valid.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: as above.
    let saved = unsafe { *errno };
    RECEIVED.store(signo, Ordering::SeqCst);
    if let Some(waker) = WAKER.get() {
        // Nothing can be reported from here; the flag is set anyway.
        let _ = waker.wake();
    }
    // SAFETY: as above.
    unsafe { *errno = saved };
}

/// Sets what `signo` does, with `SA_RESTART` so that blocking calls
/// elsewhere (a read of stdin) resume rather than fail.
fn set_disposition(signo: libc::c_int, disposition: libc::sighandler_t) -> io::Result<()> {
    // SAFETY: `sigaction` is plain old data for which all-zero bytes are a
    // valid value (empty mask, no flags); `sigemptyset` and `sigaction` get
    // pointers to that live local. `disposition` is SIG_IGN or `on_signal`,
    // an `extern "C" fn(c_int)` as `sa_handler` expects (no SA_SIGINFO)
    // that does only async-signal-safe work. An invalid `signo` is refused
    // by the kernel with EINVAL.
    let ret = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = disposition;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signo, &action, std::ptr::null_mut())
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
