//! `Waker`: ends a `select()` that another thread is blocked in.

use crate::sys::wake::{self, WakeFds};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;

/// A cloneable handle that wakes a selector from any thread, or from a
/// signal handler ([`Waker::wake`] is one `write(2)`).
///
/// Register a clone for [`crate::Events::READ`]; once woken, the selector
/// reports it readable until [`Waker::reset`] is called. It is a
/// descriptor like any other, so every backend watches it: an eventfd on
/// Linux and Android, elsewhere the read end of a non-blocking pipe whose
/// write end `wake` writes to. (kqueue's `EVFILT_USER` cannot stand in:
/// it is an event of one kqueue, not a descriptor that any selector, or
/// several, can register.)
///
/// ```
/// use rselectors::{DefaultSelector, Events, Waker};
/// use std::time::Duration;
///
/// let waker = Waker::new()?;
/// let mut sel = DefaultSelector::new()?;
/// sel.register(waker.clone(), Events::READ, "waker")?;
/// let remote = waker.clone();
/// std::thread::spawn(move || remote.wake());
/// assert_eq!(sel.select(Some(Duration::from_secs(10)))?, 1);
/// waker.reset()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Waker {
    fds: Arc<WakeFds>,
}

impl Waker {
    /// Creates a waker (an eventfd, or a pipe where there is none).
    pub fn new() -> io::Result<Waker> {
        Ok(Waker {
            fds: Arc::new(wake::open()?),
        })
    }

    /// A waker over a pipe whatever the platform, to test that kind here.
    #[cfg(test)]
    fn with_pipe() -> io::Result<Waker> {
        Ok(Waker {
            fds: Arc::new(wake::open_pipe()?),
        })
    }

    /// Makes the waker readable, waking any `select()` it is registered in.
    pub fn wake(&self) -> io::Result<()> {
        self.fds.signal()
    }

    /// True if both handles share one waker (one is a clone of the other).
    pub fn same_as(&self, other: &Waker) -> bool {
        Arc::ptr_eq(&self.fds, &other.fds)
    }

    /// Clears pending wake-ups; returns whether there was one.
    pub fn reset(&self) -> io::Result<bool> {
        self.fds.drain()
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fds.read.as_raw_fd()
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fds.read.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::Waker;
    use crate::sys::wake;
    use crate::{AnySelector, BackendKind, Events};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// Wakes, is seen by every backend, resets, and stays quiet after; many
    /// wake-ups (more than a pipe holds) are one pending wake-up.
    fn wakes_every_backend(waker: &Waker) {
        for &kind in BackendKind::ALL {
            let mut sel = AnySelector::with_kind(kind).unwrap();
            sel.register(waker.clone(), Events::READ, ()).unwrap();
            assert_eq!(sel.select(Some(Duration::ZERO)).unwrap(), 0, "{kind}");
            assert!(!waker.reset().unwrap(), "{kind}");

            let remote = waker.clone();
            let thread = std::thread::spawn(move || remote.wake().unwrap());
            assert_eq!(sel.select(Some(Duration::from_secs(10))).unwrap(), 1);
            let fd = waker.as_raw_fd();
            assert_eq!(sel.next_ready(), Some((fd, Events::READ)), "{kind}");
            thread.join().unwrap();
            // Still readable until reset.
            assert_eq!(sel.select(Some(Duration::ZERO)).unwrap(), 1, "{kind}");
            assert!(waker.reset().unwrap(), "{kind}");
            assert_eq!(sel.select(Some(Duration::ZERO)).unwrap(), 0, "{kind}");

            for _ in 0..20_000 {
                waker.wake().unwrap();
            }
            assert_eq!(sel.select(Some(Duration::ZERO)).unwrap(), 1, "{kind}");
            assert!(waker.reset().unwrap(), "{kind}");
            assert!(!waker.reset().unwrap(), "{kind}");
            assert_eq!(sel.select(Some(Duration::ZERO)).unwrap(), 0, "{kind}");
        }
    }

    #[test]
    fn platform_waker_wakes_every_backend() {
        wakes_every_backend(&Waker::new().unwrap());
    }

    /// The pipe that macOS and the BSDs get, tested here too.
    #[test]
    fn pipe_waker_wakes_every_backend() {
        wakes_every_backend(&Waker::with_pipe().unwrap());
    }

    /// Both ends of the pipe are non-blocking and close-on-exec, so a
    /// full pipe never blocks `wake` and no child program inherits them.
    #[test]
    fn pipe_waker_is_nonblocking_and_cloexec() {
        let waker = Waker::with_pipe().unwrap();
        let write = waker.fds.write.as_ref().expect("a pipe has a write end");
        for fd in [waker.as_raw_fd(), write.as_raw_fd()] {
            let fd_flags = wake::flags(fd, libc::F_GETFD).unwrap();
            let fl_flags = wake::flags(fd, libc::F_GETFL).unwrap();
            assert_ne!(fd_flags & libc::FD_CLOEXEC, 0, "fd {fd}");
            assert_ne!(fl_flags & libc::O_NONBLOCK, 0, "fd {fd}");
        }
    }
}
