//! `/dev/poll` (illumos, Solaris), CPython's `select.devpoll`: the kernel
//! keeps the interest set, changed by writing `pollfd` entries to the
//! device, and the `DP_POLL` ioctl waits and copies out the ready entries.
//!
//! The kernel ORs the events of every entry written for a descriptor into
//! what it has cached for that number, so a changed interest is written as
//! `POLLREMOVE` first, then the new events, as CPython's `modify` does.
//! Unlike CPython, which queues entries and writes them before the next
//! poll, each change is written at once (one `write`, the cost of one
//! `epoll_ctl`): a refused change is then reported by the call that made
//! it, as the front requires. A `/dev/poll` handle does not forget a
//! descriptor when it is closed (a closed one is reported as `POLLNVAL`,
//! as by `poll(2)`), so `forget` removes it like `remove`. Modified after
//! it was closed, such a descriptor is accepted and then never reported:
//! the kernel caches no file for it, as with CPython's `DevpollSelector`.
//!
//! Limits (CPython sizes its queue and result buffer to `RLIMIT_NOFILE`):
//! the kernel refuses one write of more entries than `RLIMIT_NOFILE`
//! (`EINVAL`) and cuts a `DP_POLL` buffer of more than twice that (the man
//! page has `DP_POLL` refuse one of `OPEN_MAX` or more). Here a write
//! carries at most two entries, and the result buffer has one entry per
//! registration: registered descriptors are open ones other than the
//! handle, so fewer than the limit. Neither rule is reached and nothing
//! reads the limit.
//!
//! The handle belongs to the process that first uses it (another gets
//! `EACCES`), hence `O_CLOEXEC`.

use super::{
    check_open, cvt, grow_cleared, poll_bits, timeout_millis, Backend, BackendOps, ReadyList,
    Waiter, WaiterOps,
};
use crate::Events;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

// What libc does not define, from illumos-gate `usr/src/uts/common/sys/`:
// `devpoll.h` (`DPIOC`, `DP_POLL`, `struct dvpoll`) and `poll.h`
// (`POLLREMOVE`, `nfds_t`). Solaris has the same values and layout (both
// descend from the OpenSolaris header; OpenJDK's Solaris `/dev/poll`
// selector declares these very numbers and fields).

/// `DPIOC | 1`, with `DPIOC` = `0xD0 << 8`.
const DP_POLL: libc::c_int = (0xD0 << 8) | 1;

/// An `events` value (exactly this, alone) that removes the descriptor
/// from the handle's set.
const POLLREMOVE: libc::c_short = 0x0800;

/// `struct dvpoll`. illumos appends `sigset_t *dp_setp`, which only
/// `DP_PPOLL` reads: for `DP_POLL` the kernel copies in the fields up to
/// it, which are these.
#[repr(C)]
struct DvPoll {
    /// Where the kernel writes the ready entries.
    dp_fds: *mut libc::pollfd,
    /// How many entries `dp_fds` has room for (an `nfds_t`, `unsigned
    /// long`, in the header; the man page's `int` would misplace
    /// `dp_timeout` on 64-bit systems).
    dp_nfds: libc::nfds_t,
    /// Milliseconds; -1 waits without limit.
    dp_timeout: libc::c_int,
}

// The header's layout: a pointer, an `unsigned long`, an `int`.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(offset_of!(DvPoll, dp_nfds) == 8);
    assert!(offset_of!(DvPoll, dp_timeout) == 16);
    assert!(size_of::<libc::pollfd>() == 8);
};

/// The `/dev/poll` backend of `DevpollSelector`. Opaque: see [`Backend`].
#[derive(Debug)]
pub struct DevpollBackend {
    /// Shared with detached waiters, so closing the selector while one
    /// waits cannot close (and let the number be reused) under it.
    dpfd: Arc<OwnedFd>,
    /// `dpfd`'s number, read from the backend itself on every call.
    dpfd_raw: RawFd,
    /// How many descriptors are registered: the size of a wait's buffer.
    registered: usize,
    /// What `DP_POLL` copies out, kept between waits.
    results: Vec<libc::pollfd>,
}

/// A detached `DP_POLL` on the selector's handle, from
/// [`Selector::detach_wait`](crate::Selector::detach_wait). Opaque.
///
/// It polls the live set, but its results name descriptors only, so the
/// selector drops those for registrations made after it was detached (as
/// for a `poll` snapshot).
#[derive(Debug)]
pub struct DevpollWaiter {
    dpfd: Arc<OwnedFd>,
    /// The registrations when it was detached: the size of its buffer.
    registered: usize,
    results: Vec<libc::pollfd>,
}

/// One `DP_POLL` on `dpfd` into `results` (room for `registered`
/// entries, at least), then the ready entries onto `ready`.
fn wait_into(
    dpfd: RawFd,
    results: &mut Vec<libc::pollfd>,
    registered: usize,
    ready: &mut ReadyList,
    timeout: Option<Duration>,
) -> io::Result<()> {
    // The ioctl returns the count as an `int`.
    let room = registered.min(libc::c_int::MAX as usize);
    results.clear();
    grow_cleared(results, room);
    let mut request = DvPoll {
        dp_fds: results.as_mut_ptr(),
        dp_nfds: room as libc::nfds_t,
        dp_timeout: timeout_millis(timeout),
    };
    // SAFETY: `request` is a live `struct dvpoll` (layout asserted above)
    // that the kernel only reads; its `dp_fds` has room for `dp_nfds`
    // pollfd entries, and the kernel copies out at most that many (with
    // none it only sleeps and never touches `dp_fds`, so the dangling
    // pointer of an empty vector is not used). `dpfd` is the handle the
    // caller holds; were it not a /dev/poll handle the call would fail
    // without writing (ENOTTY, EBADF).
    let n = cvt(unsafe { libc::ioctl(dpfd, DP_POLL, &mut request) })? as usize;
    // SAFETY: the kernel wrote whole pollfd entries (plain integers) into
    // the first `n` slots, and `n` is at most `room`, the capacity; `min`
    // keeps that true whatever the return value.
    unsafe { results.set_len(n.min(room)) };
    // One entry per descriptor, its `revents` poll(2)'s bits.
    for p in results.iter() {
        ready.push_revents(p.fd, p.revents);
    }
    Ok(())
}

/// The entry that removes `fd` from the set.
fn removal(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: POLLREMOVE,
        revents: 0,
    }
}

/// The entry that adds `events` to `fd`'s interest.
fn interest(fd: RawFd, events: Events) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: poll_bits(events),
        revents: 0,
    }
}

impl DevpollBackend {
    /// Writes `entries` to the handle in one `write`. The kernel applies
    /// them in order under its writer lock, so a wait never sees the gap
    /// between a removal and the entry after it. It takes all or fails;
    /// a short count is reported as an error, as CPython does, since the
    /// rest of an entry cannot be sent on its own.
    fn write_entries(&self, entries: &[libc::pollfd]) -> io::Result<()> {
        let size = std::mem::size_of_val(entries);
        loop {
            // SAFETY: the pointer and `size` describe the live, initialised
            // slice `entries`, which write(2) only reads; `dpfd_raw` is the
            // number of `dpfd`, open while `self` lives.
            let n = unsafe { libc::write(self.dpfd_raw, entries.as_ptr().cast(), size) };
            if n == size as isize {
                return Ok(());
            }
            if n >= 0 {
                return Err(io::Error::other(format!(
                    "/dev/poll took {n} of {size} bytes of pollfd entries"
                )));
            }
            let error = io::Error::last_os_error();
            // EINTR comes only while waiting for another writer of the
            // handle, before any entry is applied: write them again.
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}

impl BackendOps for DevpollBackend {
    fn open() -> io::Result<Self> {
        let fd = loop {
            // SAFETY: the path is a NUL-terminated string that open(2) only
            // reads.
            let fd = unsafe { libc::open(c"/dev/poll".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
            match cvt(fd) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        // SAFETY: `fd` was just opened and nothing else owns it.
        let dpfd = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(DevpollBackend {
            dpfd,
            dpfd_raw: fd,
            registered: 0,
            results: Vec::new(),
        })
    }

    fn name(&self) -> &'static str {
        "devpoll"
    }

    fn add(&mut self, fd: RawFd, events: Events, _tag: u32) -> io::Result<()> {
        // The kernel accepts a closed descriptor (and reports POLLNVAL
        // later); refuse it as epoll does.
        check_open(fd)?;
        // The removal first: the new interest must not be ORed into one
        // the kernel still holds for the number (from a removal that
        // failed).
        self.write_entries(&[removal(fd), interest(fd, events)])?;
        self.registered += 1;
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, events: Events, _tag: u32) -> io::Result<()> {
        self.write_entries(&[removal(fd), interest(fd, events)])
    }

    fn remove(&mut self, fd: RawFd) -> io::Result<()> {
        // The selector forgets the key whatever this returns.
        self.registered = self.registered.saturating_sub(1);
        self.write_entries(&[removal(fd)])
    }

    fn wait(&mut self, ready: &mut ReadyList, timeout: Option<Duration>) -> io::Result<()> {
        wait_into(
            self.dpfd_raw,
            &mut self.results,
            self.registered,
            ready,
            timeout,
        )
    }

    fn fileno(&self) -> Option<RawFd> {
        Some(self.dpfd_raw)
    }

    fn detach(&mut self) -> DevpollWaiter {
        DevpollWaiter {
            dpfd: Arc::clone(&self.dpfd),
            registered: self.registered,
            // The buffer moves out and comes back: no second one unless
            // the selector waits itself meanwhile.
            results: std::mem::take(&mut self.results),
        }
    }

    fn reattach(&mut self, waiter: DevpollWaiter) {
        if waiter.results.capacity() > self.results.capacity() {
            self.results = waiter.results;
        }
    }
}

impl Backend for DevpollBackend {
    type Waiter = DevpollWaiter;
}

impl WaiterOps for DevpollWaiter {
    fn wait(&mut self, ready: &mut ReadyList, timeout: Option<Duration>) -> io::Result<()> {
        wait_into(
            self.dpfd.as_raw_fd(),
            &mut self.results,
            self.registered,
            ready,
            timeout,
        )
    }
}

impl Waiter for DevpollWaiter {}

#[cfg(test)]
mod tests {
    use super::DevpollBackend;
    use crate::sys::{readiness, BackendOps, ReadyList, WaiterOps};
    use crate::Events;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    /// What one wait of at most 1 s reports, as (descriptor, events).
    fn wait(backend: &mut DevpollBackend) -> Vec<(i32, Events)> {
        wait_for(backend, Duration::from_secs(1))
    }

    /// What one wait of at most `timeout` reports, as (descriptor, events).
    fn wait_for(backend: &mut DevpollBackend, timeout: Duration) -> Vec<(i32, Events)> {
        let mut ready = ReadyList::default();
        backend.wait(&mut ready, Some(timeout)).unwrap();
        ready
            .entries
            .iter()
            .map(|r| (r.fd, readiness(r.bits)))
            .collect()
    }

    /// A backend watching the near end of a new socket pair for `events`;
    /// returns it with both ends.
    fn watching(events: Events) -> (DevpollBackend, UnixStream, UnixStream) {
        let (near, far) = UnixStream::pair().unwrap();
        let mut backend = DevpollBackend::open().unwrap();
        backend.add(near.as_raw_fd(), events, 0).unwrap();
        (backend, near, far)
    }

    /// A narrower interest replaces the old one (POLLREMOVE first): a
    /// writable socket watched for reading only is not reported.
    #[test]
    fn modify_replaces_the_interest() {
        let (mut backend, near, mut far) = watching(Events::READ | Events::WRITE);
        let fd = near.as_raw_fd();
        assert_eq!(wait(&mut backend), [(fd, Events::WRITE)]);
        backend.modify(fd, Events::READ, 0).unwrap();
        assert_eq!(wait_for(&mut backend, Duration::ZERO), []);
        far.write_all(b"x").unwrap();
        assert_eq!(wait(&mut backend), [(fd, Events::READ)]);
    }

    /// A removed descriptor is not reported.
    #[test]
    fn remove_stops_reports() {
        let (mut backend, near, _far) = watching(Events::WRITE);
        backend.remove(near.as_raw_fd()).unwrap();
        assert_eq!(wait_for(&mut backend, Duration::ZERO), []);
    }

    /// A detached waiter polls the same handle with the moved buffer.
    #[test]
    fn a_detached_waiter_sees_the_set() {
        let (mut backend, near, _far) = watching(Events::WRITE);
        let mut waiter = backend.detach();
        let mut ready = ReadyList::default();
        waiter
            .wait(&mut ready, Some(Duration::from_secs(1)))
            .unwrap();
        assert_eq!(ready.entries.len(), 1);
        assert_eq!(ready.entries[0].fd, near.as_raw_fd());
        backend.reattach(waiter);
        assert!(backend.results.capacity() >= 1);
    }
}
