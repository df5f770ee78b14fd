//! The descriptors behind [`crate::Waker`]: an eventfd where the OS has
//! one, else a pipe whose read end is what the selector watches.
//!
//! Both take the same 8-byte write (eventfd only accepts a whole `u64`; a
//! pipe takes it atomically, being below `PIPE_BUF`) and the same draining
//! read, so a waker needs only to know which descriptor to write to.

use super::cvt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A waker's descriptors: `read` is registered in selectors and drained;
/// wake-ups are written to `write`, or to `read` itself if `write` is
/// `None` (an eventfd).
#[derive(Debug)]
pub(crate) struct WakeFds {
    pub(crate) read: OwnedFd,
    pub(crate) write: Option<OwnedFd>,
}

/// The platform's waker descriptors: an eventfd on Linux and Android.
#[cfg(eventfd)]
pub(crate) fn open() -> io::Result<WakeFds> {
    // SAFETY: eventfd takes no pointers; a non-negative return is a new
    // descriptor owned by no one else.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    Ok(WakeFds {
        // SAFETY: see above.
        read: unsafe { OwnedFd::from_raw_fd(fd) },
        write: None,
    })
}

/// The platform's waker descriptors: a pipe where there is no eventfd.
#[cfg(not(eventfd))]
pub(crate) fn open() -> io::Result<WakeFds> {
    open_pipe()
}

/// A non-blocking, close-on-exec pipe: (read end, write end).
#[cfg(any(test, not(eventfd)))]
pub(crate) fn open_pipe() -> io::Result<WakeFds> {
    let mut fds: [libc::c_int; 2] = [-1, -1];
    #[cfg(pipe2)]
    {
        // SAFETY: pipe2 writes two descriptors into a live 2-int array.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    }
    #[cfg(not(pipe2))]
    {
        // SAFETY: pipe writes two descriptors into a live 2-int array.
        cvt(unsafe { libc::pipe(fds.as_mut_ptr()) })?;
    }
    // SAFETY: on success both numbers are new descriptors owned by no one
    // else; owned from here, they are closed on any error below.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    #[cfg(not(pipe2))]
    for fd in [&read, &write] {
        // Without pipe2 the flags come one call later: another thread's
        // fork+exec in between inherits the pipe, which then only lives
        // on in that program (as with any OS lacking pipe2).
        set_flag(fd, libc::F_GETFD, libc::F_SETFD, libc::FD_CLOEXEC)?;
        set_flag(fd, libc::F_GETFL, libc::F_SETFL, libc::O_NONBLOCK)?;
    }
    Ok(WakeFds {
        read,
        write: Some(write),
    })
}

/// Adds `flag` to the flags `get` reads and `set` writes.
#[cfg(not(pipe2))]
fn set_flag(fd: &OwnedFd, get: libc::c_int, set: libc::c_int, flag: libc::c_int) -> io::Result<()> {
    // SAFETY: F_GETFD / F_GETFL take no argument and read the open
    // descriptor's flags.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), get) })?;
    // SAFETY: F_SETFD / F_SETFL take an int and only change those flags.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), set, flags | flag) })?;
    Ok(())
}

impl WakeFds {
    /// Makes `read` readable. Async-signal-safe: one write(2).
    pub(crate) fn signal(&self) -> io::Result<()> {
        let fd = self.write.as_ref().unwrap_or(&self.read);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an open descriptor.
        let n = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if n < 0 {
            let e = io::Error::last_os_error();
            // EAGAIN: the counter is at its maximum or the pipe is full, so
            // a wake-up is pending anyway.
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Takes every pending wake-up; returns whether there was one.
    pub(crate) fn drain(&self) -> io::Result<bool> {
        let mut woken = false;
        let mut buf = [0u64; 8];
        loop {
            // SAFETY: reads at most 64 bytes into a live 64-byte buffer
            // from an open descriptor.
            let n = unsafe {
                libc::read(
                    self.read.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    std::mem::size_of_val(&buf),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return if e.kind() == io::ErrorKind::WouldBlock {
                    Ok(woken)
                } else {
                    Err(e)
                };
            }
            woken |= n > 0;
            // An eventfd is reset by one read; a pipe is empty once a read
            // comes back short.
            if self.write.is_none() || (n as usize) < std::mem::size_of_val(&buf) {
                return Ok(woken);
            }
        }
    }
}

/// The flags `cmd` (`F_GETFD` or `F_GETFL`) reads from `fd`.
#[cfg(test)]
pub(crate) fn flags(fd: std::os::fd::RawFd, cmd: libc::c_int) -> io::Result<libc::c_int> {
    // SAFETY: F_GETFD / F_GETFL take no argument and only read flags.
    cvt(unsafe { libc::fcntl(fd, cmd) })
}
