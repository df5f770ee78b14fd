//! `eventfd(2)`: the kernel object behind [`crate::Waker`].

use super::cvt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Opens a non-blocking, close-on-exec eventfd with a zero counter.
pub(crate) fn open() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; a non-negative return is a new
    // descriptor owned by no one else.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: see above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to the counter. Async-signal-safe: one write(2).
pub(crate) fn signal(fd: &OwnedFd) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an open eventfd.
    let n = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    if n < 0 {
        let e = io::Error::last_os_error();
        // EAGAIN: the counter is at its maximum, so a wake-up is pending anyway.
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(e);
        }
    }
    Ok(())
}

/// Resets the counter to zero; returns whether it was non-zero.
pub(crate) fn drain(fd: &OwnedFd) -> io::Result<bool> {
    let mut count: u64 = 0;
    // SAFETY: reads 8 bytes into a live u64 from an open eventfd.
    let n = unsafe { libc::read(fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(true)
}
