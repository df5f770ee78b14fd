//! `kqueue(2)` (macOS, iOS, the BSDs): CPython's `KqueueSelector`.
//!
//! One filter per event kind (`EVFILT_READ`, `EVFILT_WRITE`), each carrying
//! its registration's tag in `udata`, level-triggered. A descriptor can
//! come back twice from one wait (once per filter): the wait buffer has room
//! for two events per registration (CPython gh-110038), and the events of
//! one descriptor are merged into one ready entry.
//!
//! Changes go to the kernel with `EV_RECEIPT`, one call for both filters,
//! each change answered by its own receipt (errno or 0) and no pending event
//! drained. That tells a refused filter from an accepted one, so `add` takes
//! back the half that was accepted, and `modify` and `remove` need no record
//! of which filters a descriptor has: they set or delete both and let
//! "no such filter" (`ENOENT`) pass, as deleting what is not there.

use super::{cvt, grow_cleared, Backend, BackendOps, ReadyList, Waiter, WaiterOps, MAX_WAIT};
use crate::Events;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// The type of `kevent`'s `filter` and `flags` fields (NetBSD widens both).
#[cfg(target_os = "netbsd")]
type Filter = u32;
#[cfg(target_os = "netbsd")]
type Flags = u32;
#[cfg(not(target_os = "netbsd"))]
type Filter = i16;
#[cfg(not(target_os = "netbsd"))]
type Flags = u16;

/// The filter of each event kind, in the order changes are made.
const FILTERS: [(Events, Filter); 2] = [
    (Events::READ, libc::EVFILT_READ),
    (Events::WRITE, libc::EVFILT_WRITE),
];

/// The `kqueue` backend of `KqueueSelector`. Opaque: see [`Backend`].
#[derive(Debug)]
pub struct KqueueBackend {
    /// Shared with detached waiters, so closing the selector while one
    /// waits cannot close (and let the number be reused) under it.
    kq: Arc<OwnedFd>,
    /// `kq`'s number, read from the backend itself rather than through the
    /// `Arc` on every call.
    kq_raw: RawFd,
    /// What `kevent` returns, kept between waits; lent to a detached waiter.
    events: EventBuffer,
}

/// A detached wait on the same kqueue, from
/// [`Selector::detach_wait`](crate::Selector::detach_wait). Opaque. It sees
/// the live interest set, registrations made after it was detached
/// included.
#[derive(Debug)]
pub struct KqueueWaiter {
    kq: Arc<OwnedFd>,
    events: EventBuffer,
}

/// A reused buffer of kernel events.
#[derive(Default)]
struct EventBuffer(Vec<libc::kevent>);

// SAFETY: `kevent` is `!Send` and `!Sync` only for its `udata` pointer, in
// which this backend stores a registration's tag as an integer; it is never
// dereferenced, so moving or sharing the buffer between threads is moving
// or sharing integers.
unsafe impl Send for EventBuffer {}
// SAFETY: as for `Send`.
unsafe impl Sync for EventBuffer {}

impl std::fmt::Debug for EventBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBuffer")
            .field("capacity", &self.0.capacity())
            .finish()
    }
}

/// A change of one filter of `fd` (`EV_SET`, which libc does not have),
/// with `EV_RECEIPT`; `tag` goes to `udata` and comes back with each event.
fn change(fd: RawFd, filter: Filter, flags: Flags, tag: u32) -> libc::kevent {
    // SAFETY: `kevent` holds integers, a pointer and (FreeBSD) an array of
    // integers: all-zero bytes are a valid value of each (a null `udata`).
    let mut kev: libc::kevent = unsafe { std::mem::zeroed() };
    // The selector passes non-negative descriptors only.
    kev.ident = fd as libc::uintptr_t;
    kev.filter = filter;
    kev.flags = flags | libc::EV_RECEIPT;
    // An integer in the pointer (or, on older NetBSD, `intptr_t`) field.
    kev.udata = tag as usize as _;
    kev
}

/// Up to one change per filter, applied in one call.
struct Changes {
    list: [libc::kevent; 2],
    len: usize,
}

impl Changes {
    fn new() -> Self {
        // SAFETY: as in `change`: all-zero bytes are a valid `kevent`.
        let zero: libc::kevent = unsafe { std::mem::zeroed() };
        Changes {
            list: [zero; 2],
            len: 0,
        }
    }

    fn push(&mut self, kev: libc::kevent) {
        self.list[self.len] = kev;
        self.len += 1;
    }

    fn as_slice(&self) -> &[libc::kevent] {
        &self.list[..self.len]
    }

    /// Applies the changes and returns each one's errno (0: applied), in
    /// the order they were pushed; `Err` if the call itself failed, which
    /// says nothing of which changes were made.
    fn apply(&self, kq: RawFd) -> io::Result<[i32; 2]> {
        let changes = self.as_slice();
        let mut receipts = Changes::new();
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `changes` is `len` (<= 2) initialised kevents, read only;
        // `receipts.list` is a separate array with room for `len` kevents,
        // and the kernel writes at most `nevents` = `len` there; `zero`
        // outlives the call. `kq` is the caller's open kqueue. With
        // `EV_RECEIPT` on every change, each gets an `EV_ERROR` receipt and
        // the call returns them without collecting (or blocking for) events.
        let n = cvt(unsafe {
            libc::kevent(
                kq,
                changes.as_ptr(),
                changes.len() as _,
                receipts.list.as_mut_ptr(),
                changes.len() as _,
                &zero,
            )
        })?;
        // A receipt names its change by filter (each change here has its
        // own). A change without one was applied: a kernel that predates
        // `EV_RECEIPT` only reports errors, and a pending event it might
        // return instead has no `EV_ERROR` and is skipped (it stays pending:
        // the filters are level-triggered).
        let mut errors = [0; 2];
        for receipt in &receipts.list[..(n as usize).min(changes.len())] {
            if receipt.flags & libc::EV_ERROR == 0 {
                continue;
            }
            if let Some(i) = changes.iter().position(|c| c.filter == receipt.filter) {
                errors[i] = receipt.data as i32;
            }
        }
        Ok(errors)
    }
}

/// Deletes both filters of `fd`, and returns the first error other than
/// "no such filter" (`EBADF` if `fd` was closed: the kernel then has
/// dropped its filters already).
fn delete_filters(kq: RawFd, fd: RawFd) -> io::Result<()> {
    let mut changes = Changes::new();
    for (_, filter) in FILTERS {
        changes.push(change(fd, filter, libc::EV_DELETE, 0));
    }
    first_error(changes.apply(kq)?, libc::ENOENT)
}

/// The first of `errors` that is neither 0 nor `ignored`.
fn first_error(errors: [i32; 2], ignored: i32) -> io::Result<()> {
    match errors.into_iter().find(|&e| e != 0 && e != ignored) {
        Some(e) => Err(io::Error::from_raw_os_error(e)),
        None => Ok(()),
    }
}

/// `timeout` for `kevent`, cut to [`MAX_WAIT`] (the selector waits longer in
/// turns). Nanoseconds, so nothing to round.
fn timespec(timeout: Duration) -> libc::timespec {
    let t = timeout.min(MAX_WAIT);
    libc::timespec {
        // At most 24.8 days of seconds: fits a 32-bit `time_t`.
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    }
}

/// One `kevent` wait into `events`, with room for two events per
/// registration (the selector gives `ready` room for one per
/// registration), then each ready descriptor once onto `ready`.
fn wait_into(
    kq: RawFd,
    events: &mut EventBuffer,
    ready: &mut ReadyList,
    timeout: Option<Duration>,
) -> io::Result<()> {
    let buffer = &mut events.0;
    buffer.clear();
    // At least one: with no room, kevent returns at once, whatever the
    // timeout (CPython's `max_ev or 1`, bpo-29255).
    let room = ready.entries.capacity().max(1).saturating_mul(2);
    grow_cleared(buffer, room);
    let max = room.min(libc::c_int::MAX as usize);
    let ts = timeout.map(timespec);
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const _);
    // SAFETY: no changes (null, 0); the event list has capacity for `max`
    // kevents (`grow_cleared`) and the kernel writes at most `max`, whole
    // structs it fills in; `ts_ptr` is null or points to `ts`, which lives
    // across the call. `kq` is the caller's open kqueue.
    let n = cvt(unsafe {
        libc::kevent(
            kq,
            std::ptr::null(),
            0,
            buffer.as_mut_ptr(),
            max as _,
            ts_ptr,
        )
    })?;
    // SAFETY: kevent returned `n` (<= max <= capacity) and initialised the
    // first `n` entries.
    unsafe { buffer.set_len(n as usize) };
    push_merged(ready, buffer, |kev| {
        (kev.ident as RawFd, kev.filter, kev.udata as usize as u32)
    });
    Ok(())
}

/// Pushes the events of one wait, each read as `(descriptor, filter,
/// tag)` by `key`, onto `ready` (empty): `POLLIN` for the read filter,
/// `POLLOUT` for the write filter, both in one entry when both filters of
/// one registration fired.
///
/// As CPython, the filter alone decides: `EV_EOF` (peer gone) on the read
/// filter is readable and on the write filter writable, and so is an
/// `EV_ERROR` entry (a wait without changes has none; the file's own call
/// then reports the error). Other filters are not this backend's.
///
/// The two events of a descriptor often come one after the other, and
/// merge as they are pushed. kqueue does not promise that: when a read and
/// a write event found no partner next to them, the kernel's events are
/// first sorted by descriptor, in place, so that every pair is adjacent.
/// Merging before pushing keeps to one entry per registration, the room
/// the selector gives `ready`; nothing is allocated, and a wait of readers
/// alone (a server's usual wait) costs two short passes and no sort.
fn push_merged<T>(
    ready: &mut ReadyList,
    events: &mut [T],
    key: impl Fn(&T) -> (RawFd, Filter, u32),
) {
    if has_scattered_pairs(events, &key) {
        events.sort_unstable_by_key(|e| {
            let (fd, _, tag) = key(e);
            (fd, tag)
        });
    }
    for event in events.iter() {
        let (fd, filter, tag) = key(event);
        let Some(bits) = poll_bits_of(filter) else {
            continue;
        };
        if let Some(last) = ready.entries.last_mut() {
            if last.fd == fd && last.tag == tag && last.bits != bits {
                last.bits |= bits;
                continue;
            }
        }
        ready.push_bits(fd, bits as u16, tag);
    }
}

/// `POLLIN` for the read filter, `POLLOUT` for the write filter.
fn poll_bits_of(filter: Filter) -> Option<u32> {
    if filter == libc::EVFILT_READ {
        Some(libc::POLLIN as u32)
    } else if filter == libc::EVFILT_WRITE {
        Some(libc::POLLOUT as u32)
    } else {
        None
    }
}

/// True if some read event and some write event have no partner (the
/// other filter of their registration) right before or after them, so
/// that pushing in order could leave one registration in two entries.
fn has_scattered_pairs<T>(events: &[T], key: impl Fn(&T) -> (RawFd, Filter, u32)) -> bool {
    let (mut lone_reads, mut lone_writes) = (0usize, 0usize);
    // The last event counted as lone, which the next one may pair.
    let mut open: Option<(RawFd, Filter, u32)> = None;
    for event in events {
        let (fd, filter, tag) = key(event);
        if poll_bits_of(filter).is_none() {
            continue;
        }
        if let Some((open_fd, open_filter, open_tag)) = open.take() {
            if open_fd == fd && open_tag == tag && open_filter != filter {
                if open_filter == libc::EVFILT_READ {
                    lone_reads -= 1;
                } else {
                    lone_writes -= 1;
                }
                continue;
            }
        }
        if filter == libc::EVFILT_READ {
            lone_reads += 1;
        } else {
            lone_writes += 1;
        }
        open = Some((fd, filter, tag));
    }
    lone_reads > 0 && lone_writes > 0
}

/// A new kqueue descriptor, close-on-exec.
#[cfg(target_os = "netbsd")]
fn open_kqueue() -> io::Result<OwnedFd> {
    // SAFETY: kqueue1 takes no pointers; a non-negative return is a new
    // descriptor that nothing else owns, so OwnedFd may take it.
    let fd = cvt(unsafe { libc::kqueue1(libc::O_CLOEXEC) })?;
    // SAFETY: see above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new kqueue descriptor, close-on-exec (set right after, as CPython
/// does: these systems have no `kqueue1`).
#[cfg(not(target_os = "netbsd"))]
fn open_kqueue() -> io::Result<OwnedFd> {
    // SAFETY: kqueue takes no arguments; a non-negative return is a new
    // descriptor that nothing else owns, so OwnedFd may take it (and close
    // it if the next call fails).
    let kq = unsafe { OwnedFd::from_raw_fd(cvt(libc::kqueue())?) };
    // SAFETY: F_SETFD takes an int and changes only the descriptor's flags
    // (a new descriptor has no other flag to keep).
    cvt(unsafe { libc::fcntl(kq.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) })?;
    Ok(kq)
}

impl BackendOps for KqueueBackend {
    fn open() -> io::Result<Self> {
        let kq = open_kqueue()?;
        let kq_raw = kq.as_raw_fd();
        Ok(KqueueBackend {
            kq: Arc::new(kq),
            kq_raw,
            events: EventBuffer::default(),
        })
    }

    fn name(&self) -> &'static str {
        "kqueue"
    }

    /// Adds the filter of each event asked for, in one call; if the kernel
    /// refuses one (`EBADF` for a closed descriptor), the others are
    /// deleted again, so a refused registration leaves nothing behind
    /// (CPython leaves the read filter in place there).
    fn add(&mut self, fd: RawFd, events: Events, tag: u32) -> io::Result<()> {
        let mut changes = Changes::new();
        for (event, filter) in FILTERS {
            if events.contains(event) {
                changes.push(change(fd, filter, libc::EV_ADD, tag));
            }
        }
        let refused = match changes.apply(self.kq_raw) {
            Ok(errors) => first_error(errors, 0),
            Err(e) => Err(e),
        };
        if refused.is_err() {
            // Whatever went in comes out; what did not is "no such filter".
            let _ = delete_filters(self.kq_raw, fd);
        }
        refused
    }

    /// Adds the filters of `events` and deletes the others, in one call.
    /// A filter that stays is added again, which only sets its tag (the
    /// same) again; one that is not there is not deleted (`ENOENT`,
    /// passed). On an error the selector drops the registration, removing
    /// both filters.
    fn modify(&mut self, fd: RawFd, events: Events, tag: u32) -> io::Result<()> {
        let mut changes = Changes::new();
        for (event, filter) in FILTERS {
            let flags = if events.contains(event) {
                libc::EV_ADD
            } else {
                libc::EV_DELETE
            };
            changes.push(change(fd, filter, flags, tag));
        }
        let errors = changes.apply(self.kq_raw)?;
        // ENOENT can only come from a delete: an add creates the filter.
        first_error(errors, libc::ENOENT)
    }

    fn events_carry_tags(&self) -> bool {
        true
    }

    /// Deletes both filters. The selector ignores the result, as CPython
    /// ignores the `OSError` of its deletes: the descriptor may have been
    /// closed (its filters went with it) and its number reused.
    fn remove(&mut self, fd: RawFd) -> io::Result<()> {
        delete_filters(self.kq_raw, fd)
    }

    /// No system call: closing a descriptor deletes every filter of that
    /// descriptor (kqueue(2)), at each close, not only at the last one of
    /// the open file, so a `dup` elsewhere keeps nothing alive here.
    fn forget(&mut self, _fd: RawFd) -> io::Result<()> {
        Ok(())
    }

    fn wait(&mut self, ready: &mut ReadyList, timeout: Option<Duration>) -> io::Result<()> {
        wait_into(self.kq_raw, &mut self.events, ready, timeout)
    }

    fn fileno(&self) -> Option<RawFd> {
        Some(self.kq_raw)
    }

    /// The waiter shares the kqueue and takes the event buffer along
    /// (a wait on the backend meanwhile makes itself another).
    fn detach(&mut self) -> KqueueWaiter {
        KqueueWaiter {
            kq: Arc::clone(&self.kq),
            events: std::mem::take(&mut self.events),
        }
    }

    fn reattach(&mut self, waiter: KqueueWaiter) {
        if waiter.events.0.capacity() > self.events.0.capacity() {
            self.events = waiter.events;
        }
    }
}

impl Backend for KqueueBackend {
    type Waiter = KqueueWaiter;
}

impl WaiterOps for KqueueWaiter {
    fn wait(&mut self, ready: &mut ReadyList, timeout: Option<Duration>) -> io::Result<()> {
        wait_into(self.kq.as_raw_fd(), &mut self.events, ready, timeout)
    }

    fn events_carry_tags(&self) -> bool {
        true
    }
}

impl Waiter for KqueueWaiter {}

#[cfg(test)]
mod tests {
    use super::{push_merged, timespec, Filter, MAX_WAIT};
    use crate::sys::{readiness, ReadyList};
    use crate::Events;
    use std::time::Duration;

    const R: Filter = libc::EVFILT_READ;
    const W: Filter = libc::EVFILT_WRITE;

    /// A kernel event: descriptor, filter, tag.
    type Kevent = (i32, Filter, u32);
    /// A ready entry: descriptor, events, tag.
    type Entry = (i32, Events, u32);

    fn merged(events: &[Kevent]) -> Vec<Entry> {
        // Room for one entry per registration, as the selector gives.
        let mut ready = ReadyList::default();
        let registrations = events.iter().filter(|e| e.1 == R || e.1 == W);
        let mut distinct: Vec<_> = registrations.map(|&(fd, _, tag)| (fd, tag)).collect();
        distinct.sort();
        distinct.dedup();
        ready.entries.reserve_exact(distinct.len());
        let room = ready.entries.capacity();
        push_merged(&mut ready, &mut events.to_vec(), |&e| e);
        assert_eq!(ready.entries.capacity(), room, "the wait allocated");
        let mut out: Vec<_> = ready
            .entries
            .iter()
            .map(|r| (r.fd, readiness(r.bits), r.tag))
            .collect();
        out.sort_by_key(|&(fd, _, tag)| (fd, tag));
        out
    }

    /// One entry per registration, READ|WRITE when both filters fired,
    /// adjacent or not; the events of two registrations of one number (a
    /// stale tag) stay apart; other filters are dropped.
    #[test]
    fn events_of_one_descriptor_merge_into_one_entry() {
        let both = Events::READ | Events::WRITE;
        let cases: &[(&[Kevent], &[Entry])] = &[
            (&[], &[]),
            (&[(3, R, 0)], &[(3, Events::READ, 0)]),
            (&[(3, R, 0), (3, W, 0)], &[(3, both, 0)]),
            (&[(3, W, 0), (3, R, 0)], &[(3, both, 0)]),
            (
                &[(3, R, 0), (4, R, 1), (3, W, 0), (5, W, 2)],
                &[(3, both, 0), (4, Events::READ, 1), (5, Events::WRITE, 2)],
            ),
            (
                &[(3, R, 7), (3, W, 6)],
                &[(3, Events::READ, 7), (3, Events::WRITE, 6)],
            ),
            (
                &[(3, R, 0), (4, libc::EVFILT_TIMER, 9), (3, W, 0)],
                &[(3, both, 0)],
            ),
        ];
        for &(events, expected) in cases {
            assert_eq!(merged(events), expected, "{events:?}");
        }
    }

    /// Nanoseconds as they are, cut to the longest wait.
    #[test]
    fn timeouts_become_timespecs_up_to_the_longest_wait() {
        let t = timespec(Duration::from_nanos(1_500_000_001));
        assert_eq!((t.tv_sec, t.tv_nsec), (1, 500_000_001));
        let t = timespec(Duration::MAX);
        assert_eq!(t.tv_sec as u64, MAX_WAIT.as_secs());
        assert_eq!(t.tv_nsec as u32, MAX_WAIT.subsec_nanos());
    }
}
