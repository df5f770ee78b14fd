//! `epoll(7)`: level-triggered; each event's data is the descriptor and
//! its registration's tag, and `epoll_wait` writes straight into the
//! selector's ready list (laid out as `epoll_event`s, see `Ready`), which
//! keeps epoll's bits as they came (they are poll's).

use super::{
    cvt, grow_cleared, poll_bits, timeout_millis, Backend, BackendOps, ReadyList, Waiter, WaiterOps,
};
use crate::Events;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// The `epoll` backend of [`crate::EpollSelector`]. Opaque: see
/// [`Backend`].
#[derive(Debug)]
pub struct EpollBackend {
    /// Shared with detached waiters, so closing the selector while one
    /// waits cannot close (and let the number be reused) under it.
    epfd: Arc<OwnedFd>,
    /// `epfd`'s number, copied here so that a wait or a `ctl` reads it
    /// from the selector itself, not through the `Arc` on every call.
    epfd_raw: RawFd,
}

/// A detached `epoll_wait`, from
/// [`Selector::detach_wait`](crate::Selector::detach_wait). Opaque.
#[derive(Debug)]
pub struct EpollWaiter {
    epfd: Arc<OwnedFd>,
}

/// `EPOLLIN` / `EPOLLOUT`, which are poll's numbers (asserted next to `Ready`).
fn interest(events: Events) -> u32 {
    u32::from(poll_bits(events) as u16)
}

/// One `epoll_wait` into `ready`'s spare capacity, which the front sizes
/// like the table (one entry per registration, CPython's `max_ev`), so a
/// single call can report everything that is ready.
#[inline]
fn wait_into(epfd: RawFd, ready: &mut ReadyList, timeout: Option<Duration>) -> io::Result<()> {
    let entries = &mut ready.entries;
    // Empty already (the front clears it, see `Backend::wait`); with
    // nothing registered it may have no room, and the kernel needs one.
    grow_cleared(entries, 1);
    let max = entries.capacity().min(libc::c_int::MAX as usize) as libc::c_int;
    // SAFETY: `Ready` has the size, field offsets and (at least) the
    // alignment of `epoll_event` (the assertions next to it), any bytes are
    // valid for its integer fields (its padding, which the kernel leaves
    // alone, is `MaybeUninit`), and the buffer has room for `max` (>= 1) of
    // them; the kernel writes at most `max`, and nothing if `epfd` is not
    // an open epoll descriptor (EBADF, EINVAL); the callers pass the one
    // they hold.
    let n = cvt(unsafe {
        libc::epoll_wait(
            epfd,
            entries.as_mut_ptr().cast::<libc::epoll_event>(),
            max,
            timeout_millis(timeout),
        )
    })?;
    // Each entry's `bits` are epoll's, which are poll's: nothing to translate.
    // SAFETY: epoll_wait initialised the first `n` (<= max <= capacity)
    // entries.
    unsafe { entries.set_len(n as usize) };
    Ok(())
}

impl EpollBackend {
    /// The event data is the descriptor (low 32 bits) and the
    /// registration's tag (high 32 bits).
    #[inline]
    fn ctl(&self, op: libc::c_int, fd: RawFd, events: Events, tag: u32) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: interest(events),
            u64: fd as u32 as u64 | (tag as u64) << 32,
        };
        // SAFETY: `epfd_raw` is the number of `epfd`, an open epoll
        // descriptor owned by `self`, and `event` is a valid epoll_event
        // that outlives the call (the kernel copies it; for EPOLL_CTL_DEL it
        // is ignored but must be non-null on kernels before 2.6.9).
        cvt(unsafe { libc::epoll_ctl(self.epfd_raw, op, fd, &mut event) })?;
        Ok(())
    }
}

impl BackendOps for EpollBackend {
    fn open() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative return is a
        // new descriptor that nothing else owns, so OwnedFd may take it.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: see above: `fd` is open and owned by no one else.
        let epfd = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(EpollBackend { epfd, epfd_raw: fd })
    }

    fn name(&self) -> &'static str {
        "epoll"
    }

    // Hot: once per connection, from `register`.
    #[inline]
    fn add(&mut self, fd: RawFd, events: Events, tag: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, tag)
    }

    fn modify(&mut self, fd: RawFd, events: Events, tag: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, tag)
    }

    fn events_carry_tags(&self) -> bool {
        true
    }

    fn remove(&mut self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, Events::empty(), 0)
    }

    /// No `EPOLL_CTL_DEL`: closing the last descriptor of the open file
    /// removes it from every epoll set. Linux's rule; illumos's epoll, built
    /// on /dev/poll, does not promise it, so there `forget` is `remove`.
    #[cfg(linux_like)]
    fn forget(&mut self, _fd: RawFd) -> io::Result<()> {
        Ok(())
    }

    #[inline]
    fn wait(&mut self, ready: &mut ReadyList, timeout: Option<Duration>) -> io::Result<()> {
        wait_into(self.epfd_raw, ready, timeout)
    }

    fn fileno(&self) -> Option<RawFd> {
        Some(self.epfd_raw)
    }

    fn detach(&mut self) -> EpollWaiter {
        EpollWaiter {
            epfd: Arc::clone(&self.epfd),
        }
    }

    fn reattach(&mut self, _waiter: EpollWaiter) {}
}

impl Backend for EpollBackend {
    type Waiter = EpollWaiter;
}

impl WaiterOps for EpollWaiter {
    fn wait(&mut self, ready: &mut ReadyList, timeout: Option<Duration>) -> io::Result<()> {
        wait_into(self.epfd.as_raw_fd(), ready, timeout)
    }

    fn events_carry_tags(&self) -> bool {
        true
    }
}

impl Waiter for EpollWaiter {}
