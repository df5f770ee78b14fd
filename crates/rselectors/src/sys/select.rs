//! `select(2)`: two `fd_set`s, limited to descriptors below `FD_SETSIZE`.

use super::{check_open, cvt, Backend, BackendOps, ReadyList, Waiter, WaiterOps, MAX_WAIT};
use crate::Events;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// The `select` backend of [`crate::SelectSelector`]. Opaque: see
/// [`Backend`].
#[derive(Debug)]
pub struct SelectBackend {
    interest: Interest,
}

/// What `select(2)` is asked to watch. The backend keeps one; every wait,
/// detached or not, waits on a copy (select(2) overwrites its sets).
#[derive(Clone, Copy)]
struct Interest {
    readers: libc::fd_set,
    writers: libc::fd_set,
    /// Highest watched descriptor, or -1.
    max_fd: RawFd,
}

impl std::fmt::Debug for Interest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interest")
            .field("max_fd", &self.max_fd)
            .finish_non_exhaustive()
    }
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
        let interest = &mut self.interest;
        set(&mut interest.readers, fd, events.contains(Events::READ));
        set(&mut interest.writers, fd, events.contains(Events::WRITE));
    }
}

impl BackendOps for SelectBackend {
    fn open() -> io::Result<Self> {
        Ok(SelectBackend {
            interest: Interest {
                readers: empty_set(),
                writers: empty_set(),
                max_fd: -1,
            },
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
        self.interest.max_fd = self.interest.max_fd.max(fd);
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, events: Events, _tag: u32) -> io::Result<()> {
        if !(0..=self.interest.max_fd).contains(&fd) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        self.watch(fd, events);
        Ok(())
    }

    fn remove(&mut self, fd: RawFd) -> io::Result<()> {
        if !(0..=self.interest.max_fd).contains(&fd) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        self.watch(fd, Events::empty());
        let interest = &mut self.interest;
        while interest.max_fd >= 0
            && !is_set(&interest.readers, interest.max_fd)
            && !is_set(&interest.writers, interest.max_fd)
        {
            interest.max_fd -= 1;
        }
        Ok(())
    }

    #[inline]
    fn wait(&mut self, ready: &mut ReadyList, timeout: Option<Duration>) -> io::Result<()> {
        self.detach().wait(ready, timeout)
    }

    fn detach(&mut self) -> SelectWaiter {
        SelectWaiter {
            interest: self.interest,
        }
    }

    fn reattach(&mut self, _waiter: SelectWaiter) {}
}

impl Backend for SelectBackend {
    type Waiter = SelectWaiter;
}

/// A detached `select`, from
/// [`Selector::detach_wait`](crate::Selector::detach_wait). Opaque: a copy
/// of the backend's interest.
#[derive(Debug, Clone, Copy)]
pub struct SelectWaiter {
    interest: Interest,
}

impl WaiterOps for SelectWaiter {
    fn wait(&mut self, ready: &mut ReadyList, timeout: Option<Duration>) -> io::Result<()> {
        let Interest {
            readers: mut readable,
            writers: mut writable,
            max_fd,
        } = self.interest;
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
                max_fd + 1,
                &mut readable,
                &mut writable,
                std::ptr::null_mut(),
                tv_ptr,
            )
        })?;
        let mut left = n;
        let mut fd = 0;
        while left > 0 && fd <= max_fd {
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
