//! `select(2)`: two `fd_set`s, limited to descriptors below `FD_SETSIZE`.

use super::{check_open, cvt, Backend, BackendOps, ReadyList, Waiter, WaiterOps, MAX_WAIT};
use crate::Events;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// The `select` backend of [`crate::SelectSelector`]. Opaque: see
/// [`Backend`].
pub struct SelectBackend {
    readers: libc::fd_set,
    writers: libc::fd_set,
    /// Highest watched descriptor, or -1.
    max_fd: RawFd,
}

impl fmt::Debug for SelectBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_sets(f, "SelectBackend", self.max_fd)
    }
}

/// The `Debug` of the backend and of its waiter: the highest descriptor,
/// not the 256 bytes of the sets.
fn debug_sets(f: &mut fmt::Formatter<'_>, name: &str, max_fd: RawFd) -> fmt::Result {
    f.debug_struct(name)
        .field("max_fd", &max_fd)
        .finish_non_exhaustive()
}

const LIMIT: RawFd = libc::FD_SETSIZE as RawFd;

fn empty_set() -> libc::fd_set {
    // SAFETY: fd_set is a plain bit array for which all-zero bytes is a
    // valid (empty) value; FD_ZERO would write the same.
    unsafe { std::mem::zeroed() }
}

/// Every call below takes `fd` in `0..FD_SETSIZE`: the selector refuses other
/// descriptors at `register` (see `BackendOps::fd_limit`), and the debug
/// assertion keeps that promise visible.
fn set(set: &mut libc::fd_set, fd: RawFd, on: bool) {
    debug_assert!((0..LIMIT).contains(&fd));
    // SAFETY: `set` is a valid fd_set and `fd` is in range (see above).
    unsafe {
        if on {
            libc::FD_SET(fd, set)
        } else {
            libc::FD_CLR(fd, set)
        }
    }
}

fn is_set(set: &libc::fd_set, fd: RawFd) -> bool {
    debug_assert!((0..LIMIT).contains(&fd));
    // SAFETY: as in `set`.
    unsafe { libc::FD_ISSET(fd, set) }
}

impl SelectBackend {
    fn watch(&mut self, fd: RawFd, events: Events) {
        set(&mut self.readers, fd, events.contains(Events::READ));
        set(&mut self.writers, fd, events.contains(Events::WRITE));
    }
}

impl BackendOps for SelectBackend {
    fn open() -> io::Result<Self> {
        Ok(SelectBackend {
            readers: empty_set(),
            writers: empty_set(),
            max_fd: -1,
        })
    }

    fn name(&self) -> &'static str {
        "select"
    }

    fn fd_limit(&self) -> Option<RawFd> {
        Some(LIMIT)
    }

    fn add(&mut self, fd: RawFd, events: Events, _tag: u32) -> io::Result<()> {
        if !(0..LIMIT).contains(&fd) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // select(2) would fail every wait with EBADF: refuse it here instead.
        check_open(fd)?;
        self.watch(fd, events);
        self.max_fd = self.max_fd.max(fd);
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, events: Events, _tag: u32) -> io::Result<()> {
        if !(0..=self.max_fd).contains(&fd) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        self.watch(fd, events);
        Ok(())
    }

    fn remove(&mut self, fd: RawFd) -> io::Result<()> {
        if !(0..=self.max_fd).contains(&fd) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        self.watch(fd, Events::empty());
        while self.max_fd >= 0
            && !is_set(&self.readers, self.max_fd)
            && !is_set(&self.writers, self.max_fd)
        {
            self.max_fd -= 1;
        }
        Ok(())
    }

    #[inline]
    fn wait(&mut self, ready: &mut ReadyList, timeout: Option<Duration>) -> io::Result<()> {
        self.detach().wait(ready, timeout)
    }

    fn detach(&mut self) -> SelectWaiter {
        SelectWaiter {
            readers: self.readers,
            writers: self.writers,
            max_fd: self.max_fd,
        }
    }

    fn reattach(&mut self, _waiter: SelectWaiter) {}
}

impl Backend for SelectBackend {
    type Waiter = SelectWaiter;
}

/// A detached `select`, from
/// [`Selector::detach_wait`](crate::Selector::detach_wait). Opaque: a copy
/// of the two sets, which every wait copies anyway (select(2) overwrites
/// them).
#[derive(Clone, Copy)]
pub struct SelectWaiter {
    readers: libc::fd_set,
    writers: libc::fd_set,
    max_fd: RawFd,
}

impl fmt::Debug for SelectWaiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_sets(f, "SelectWaiter", self.max_fd)
    }
}

impl WaiterOps for SelectWaiter {
    fn wait(&mut self, ready: &mut ReadyList, timeout: Option<Duration>) -> io::Result<()> {
        let (mut readable, mut writable) = (self.readers, self.writers);
        // Round up to the microsecond; cut to MAX_WAIT as poll and epoll
        // are (the selector waits for the rest), far below time_t's range.
        let mut tv = timeout.map(|t| {
            let t = t.min(MAX_WAIT);
            let micros = t.subsec_nanos().div_ceil(1_000);
            let secs = t.as_secs() + u64::from(micros / 1_000_000);
            libc::timeval {
                tv_sec: secs as libc::time_t,
                tv_usec: (micros % 1_000_000) as libc::suseconds_t,
            }
        });
        let tv_ptr = tv.as_mut().map_or(std::ptr::null_mut(), |tv| tv as *mut _);
        // SAFETY: both sets are valid local fd_sets holding only descriptors
        // below FD_SETSIZE, `nfds` is at most FD_SETSIZE, and `tv_ptr` is
        // null or points to a live timeval.
        let n = cvt(unsafe {
            libc::select(
                self.max_fd + 1,
                &mut readable,
                &mut writable,
                std::ptr::null_mut(),
                tv_ptr,
            )
        })?;
        let mut left = n;
        let mut fd = 0;
        while left > 0 && fd <= self.max_fd {
            let mut events = Events::empty();
            // select(2) counts a descriptor once per set it is ready in.
            for (set, event) in [(&readable, Events::READ), (&writable, Events::WRITE)] {
                if is_set(set, fd) {
                    events |= event;
                    left -= 1;
                }
            }
            if !events.is_empty() {
                ready.push(fd, events);
            }
            fd += 1;
        }
        Ok(())
    }
}

impl Waiter for SelectWaiter {}
