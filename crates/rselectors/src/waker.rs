//! `Waker`: ends a `select()` that another thread is blocked in.

use crate::sys::eventfd;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

/// A cloneable handle that wakes a selector from any thread, or from a
/// signal handler ([`Waker::wake`] is one `write(2)` to an eventfd).
///
/// Register a clone for [`crate::Events::READ`]; once woken, the selector
/// reports it readable until [`Waker::reset`] is called.
///
/// ```
/// use rselectors::{EpollSelector, Events, Waker};
/// use std::time::Duration;
///
/// let waker = Waker::new()?;
/// let mut sel = EpollSelector::new()?;
/// sel.register(waker.clone(), Events::READ, "waker")?;
/// let remote = waker.clone();
/// std::thread::spawn(move || remote.wake());
/// assert_eq!(sel.select(Some(Duration::from_secs(10)))?, 1);
/// waker.reset()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Waker {
    fd: Arc<OwnedFd>,
}

impl Waker {
    /// Creates a waker (an eventfd).
    pub fn new() -> io::Result<Waker> {
        Ok(Waker {
            fd: Arc::new(eventfd::open()?),
        })
    }

    /// Makes the waker readable, waking any `select()` it is registered in.
    pub fn wake(&self) -> io::Result<()> {
        eventfd::signal(&self.fd)
    }

    /// True if both handles share one eventfd (one is a clone of the other).
    pub fn same_as(&self, other: &Waker) -> bool {
        std::sync::Arc::ptr_eq(&self.fd, &other.fd)
    }

    /// Clears pending wake-ups; returns whether there was one.
    pub fn reset(&self) -> io::Result<bool> {
        eventfd::drain(&self.fd)
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
