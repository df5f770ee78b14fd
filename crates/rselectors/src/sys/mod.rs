//! The operating-system side: one file per readiness mechanism.
//!
//! A backend only translates. It keeps the kernel's interest set in step
//! with `add` / `modify` / `remove`, and `wait` makes exactly one system
//! call and reports what came back as [`Events`]. Every rule of the API
//! (validation, the key table, EINTR retries, masking) lives in
//! [`crate::Selector`]. A new backend (io_uring, …) is one more file
//! implementing `BackendOps` and [`Backend`] (and `WaiterOps` and
//! [`Waiter`] for its detached wait), plus its line in the list of
//! `registry`.
//!
//! Not part of the API: public (and hidden) only for the users of
//! `for_each_backend!` (this package's tests and benches), which name a
//! backend by its module. The backend types the API needs are re-exported
//! at the crate root, next to their aliases.

use crate::Events;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::time::Duration;

mod registry;
pub(crate) mod wake;

// One module per backend of this platform, from the list in `registry`.
crate::for_each_backend!(registry::declare_modules);
pub(crate) use registry::selector_aliases;
pub use registry::{AnyBackend, AnyWaiter, BackendKind, UnknownBackend};

/// The backend of a [`Selector<B, F, D>`](crate::Selector): the `B` of
/// [`DefaultSelector`](crate::DefaultSelector) and the other aliases
/// (`EpollSelector`, `PollSelector`, …), and of
/// [`AnySelector`](crate::AnySelector) ([`AnyBackend`]).
///
/// Name it to write code generic over the backend (`fn serve<B:
/// Backend>(sel: &mut Selector<B, F, D>)`); every operation is on the
/// [`Selector`](crate::Selector). The trait is sealed: the backends are
/// this crate's, one per readiness mechanism, so adding one, or changing
/// what a backend and the selector tell each other, breaks no user.
pub trait Backend: BackendOps {
    /// What [`Selector::detach_wait`](crate::Selector::detach_wait) takes
    /// out, inside a [`DetachedWait`](crate::DetachedWait).
    type Waiter: Waiter;
}

/// The wait of a [`DetachedWait`](crate::DetachedWait): what a
/// [`Backend`] hands out to wait without its selector. Sealed, as
/// [`Backend`] is.
pub trait Waiter: WaiterOps {}

pub(crate) use ops::{BackendOps, WaiterOps};

/// What a backend does, for the selector only: a private module, so that
/// [`Backend`] and [`Waiter`] are sealed.
mod ops {
    use super::{Backend, ReadyList};
    use crate::Events;
    use std::io;
    use std::os::fd::RawFd;
    use std::time::Duration;

    /// A readiness mechanism of the operating system.
    pub trait BackendOps {
        /// Opens the kernel object (if the mechanism has one).
        fn open() -> io::Result<Self>
        where
            Self: Sized;

        /// The mechanism's name: `"select"`, `"poll"`, `"epoll"`.
        fn name(&self) -> &'static str;

        /// The first descriptor the mechanism cannot watch, if there is one
        /// (`FD_SETSIZE` for `select(2)`).
        fn fd_limit(&self) -> Option<RawFd> {
            None
        }

        /// Starts watching `fd` for `events`. The selector has checked that
        /// `fd` is not negative, not watched yet, below
        /// [`BackendOps::fd_limit`], and that `events` is a valid mask.
        /// `tag` names the registration; a backend that can store it in the
        /// kernel reports it with each event (see
        /// [`BackendOps::events_carry_tags`]).
        fn add(&mut self, fd: RawFd, events: Events, tag: u32) -> io::Result<()>;

        /// Changes the events of a watched `fd` (registered with `tag`).
        fn modify(&mut self, fd: RawFd, events: Events, tag: u32) -> io::Result<()>;

        /// Stops watching `fd`. The selector forgets the key whatever this
        /// returns: the descriptor may have been closed already.
        fn remove(&mut self, fd: RawFd) -> io::Result<()>;

        /// Stops watching `fd`, which the caller is about to close. A backend
        /// whose kernel forgets a descriptor at its last close (epoll) makes
        /// no system call; the others `remove` it.
        fn forget(&mut self, fd: RawFd) -> io::Result<()> {
            self.remove(fd)
        }

        /// Waits up to `timeout` (`None`: forever) with one system call, and
        /// pushes each ready descriptor once onto `ready` (which comes
        /// empty), with the kernel's `poll(2)`-style bits as they came back.
        /// The selector asks for at most 24.8 days (`c_int::MAX` ms) and
        /// waits longer in turns; a backend cuts a longer `timeout` to that.
        ///
        /// The selector turns them into [`Events`] when the event is taken
        /// (see `readiness`) and masks with the key. It gives `ready` room
        /// for one entry per registration, so pushing never allocates.
        fn wait(&mut self, ready: &mut ReadyList, timeout: Option<Duration>) -> io::Result<()>;

        /// The kernel object's descriptor (epoll's), if there is one.
        fn fileno(&self) -> Option<RawFd> {
            None
        }

        /// True if every event `wait` reports carries the `tag` of the
        /// registration it belongs to ([`ReadyList::push_tagged`]), read
        /// back from the kernel (epoll's event data). The selector then
        /// checks each event against its registration lazily, as it is
        /// taken, instead of looking every one up after the wait.
        fn events_carry_tags(&self) -> bool {
            false
        }

        /// Takes out what a wait needs (the kernel object, or a snapshot of
        /// the interest set) so that it can wait while the selector is used
        /// from elsewhere: see [`crate::Selector::detach_wait`].
        fn detach(&mut self) -> <Self as Backend>::Waiter
        where
            Self: Backend;

        /// Gives back the buffers of a detached waiter, for reuse.
        fn reattach(&mut self, waiter: <Self as Backend>::Waiter)
        where
            Self: Backend;
    }

    /// A wait that runs without its selector ([`BackendOps::detach`]).
    pub trait WaiterOps: Send {
        /// Like [`BackendOps::wait`].
        fn wait(&mut self, ready: &mut ReadyList, timeout: Option<Duration>) -> io::Result<()>;

        /// As [`BackendOps::events_carry_tags`]. A wait on the kernel's live
        /// interest set (epoll) also reports registrations made after it was
        /// detached, under their own tags; one on a snapshot (poll, select)
        /// reports, for a number registered later, the file that had the
        /// number before.
        fn events_carry_tags(&self) -> bool {
            false
        }
    }
}

/// One ready descriptor, as stored between `select()` and `next_ready()`.
///
/// Laid out like the kernel's `struct epoll_event` whose data is
/// `fd | tag << 32`, so that `epoll_wait` writes straight into the ready
/// list: no second buffer, no copy, and no pass over it either, since
/// `bits` keeps the kernel's bits (epoll's and poll's are the same numbers)
/// until the selector hands the event out. The other backends push entries.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
// Where `epoll_event` is not packed, the kernel stores its data word as one
// 64-bit value: give the entries its alignment (the size is 16 there anyway).
#[cfg_attr(
    all(epoll, not(any(target_arch = "x86", target_arch = "x86_64"))),
    repr(align(8))
)]
pub(crate) struct Ready {
    /// What the kernel reported, in `poll(2)`'s bits ([`readiness`]
    /// translates them).
    pub(crate) bits: u32,
    /// `epoll_event` is packed on x86 and x86-64 (12 bytes) and padded to
    /// 16 bytes elsewhere; the kernel does not write the padding.
    _pad: MaybeUninit<[u32; READY_PAD]>,
    #[cfg(target_endian = "little")]
    pub(crate) fd: RawFd,
    /// The tag of the registration the event was for: the low 32 bits of
    /// its serial (two registrations of one number look alike only if
    /// exactly 2^32 registrations lie between them while an event of the
    /// first is still pending).
    pub(crate) tag: u32,
    #[cfg(target_endian = "big")]
    pub(crate) fd: RawFd,
}

#[cfg(epoll)]
const READY_PAD: usize = (std::mem::size_of::<libc::epoll_event>() - 12) / 4;
#[cfg(not(epoll))]
const READY_PAD: usize = 0;

// The layout `epoll_wait` writes: events, then the 64-bit data word whose
// low half is the descriptor and high half the tag.
#[cfg(epoll)]
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<Ready>() == size_of::<libc::epoll_event>());
    assert!(align_of::<Ready>() >= align_of::<libc::epoll_event>());
    assert!(offset_of!(Ready, bits) == offset_of!(libc::epoll_event, events));
    // The epoll backend leaves epoll's bits in `bits` as poll's.
    assert!(libc::EPOLLIN == libc::POLLIN as libc::c_int);
    assert!(libc::EPOLLOUT == libc::POLLOUT as libc::c_int);
    let data = offset_of!(libc::epoll_event, u64);
    #[cfg(target_endian = "little")]
    assert!(offset_of!(Ready, fd) == data && offset_of!(Ready, tag) == data + 4);
    #[cfg(target_endian = "big")]
    assert!(offset_of!(Ready, tag) == data && offset_of!(Ready, fd) == data + 4);
};

// One entry per registration stays allocated: keep it small.
#[cfg(target_arch = "x86_64")]
const _: () = assert!(std::mem::size_of::<Ready>() == 12);

/// Where a backend's `wait` puts what it found; owned by the selector and
/// reused, so steady-state waits allocate nothing.
#[derive(Debug, Default)]
pub struct ReadyList {
    pub(crate) entries: Vec<Ready>,
}

impl ReadyList {
    /// Reports `fd` ready for `events` (stored as `POLLIN` and `POLLOUT`).
    #[inline]
    pub fn push(&mut self, fd: RawFd, events: Events) {
        self.push_tagged(fd, events, 0);
    }

    /// Reports `fd` ready for `events`, for the registration `tag` (the
    /// one given to [`Backend::add`]; see [`Backend::tags_events`]).
    #[inline]
    pub fn push_tagged(&mut self, fd: RawFd, events: Events, tag: u32) {
        self.push_bits(fd, poll_bits(events) as u16, tag);
    }

    /// Reports `fd` ready with `poll(2)`'s `revents` as the kernel gave them.
    #[inline]
    pub(crate) fn push_revents(&mut self, fd: RawFd, revents: libc::c_short) {
        // Zero-extended (CPython's `& 0xffff`): every POLL* bit is positive.
        self.push_bits(fd, revents as u16, 0);
    }

    #[inline]
    fn push_bits(&mut self, fd: RawFd, revents: u16, tag: u32) {
        self.entries.push(Ready {
            bits: u32::from(revents),
            _pad: MaybeUninit::uninit(),
            fd,
            tag,
        });
    }
}

/// `events` in `poll(2)`'s bits: `POLLIN` for READ, `POLLOUT` for WRITE.
#[inline]
pub(crate) fn poll_bits(events: Events) -> libc::c_short {
    let mut bits = 0;
    if events.contains(Events::READ) {
        bits |= libc::POLLIN;
    }
    if events.contains(Events::WRITE) {
        bits |= libc::POLLOUT;
    }
    bits
}

/// CPython's translation of `poll(2)` / `epoll(7)` bits: anything but
/// "writable" (input, error, hang-up, invalid descriptor) wakes a reader,
/// anything but "readable" wakes a writer; the selector then masks with
/// the key's events.
#[inline]
pub(crate) fn readiness(bits: u32) -> Events {
    // The usual event, input alone, in one comparison.
    if bits == libc::POLLIN as u32 {
        return Events::READ;
    }
    let read = bits & !(libc::POLLOUT as u32) != 0;
    let write = bits & !(libc::POLLIN as u32) != 0;
    Events::from_bits_retain(u32::from(read) | u32::from(write) << 1)
}

/// Makes room for `wanted` entries in a buffer that was just cleared: a new
/// allocation rather than `reserve`, whose `realloc` would copy the whole
/// old capacity and so make it resident (idle connections would pay for
/// it in RSS); doubling keeps growth amortised.
#[inline]
pub(crate) fn grow_cleared<T>(buffer: &mut Vec<T>, wanted: usize) {
    debug_assert!(buffer.is_empty());
    if buffer.capacity() < wanted {
        reallocate(buffer, wanted);
    }
}

/// The growing of [`grow_cleared`].
#[cold] // once per new high of registrations
#[inline(never)]
fn reallocate<T>(buffer: &mut Vec<T>, wanted: usize) {
    *buffer = Vec::with_capacity(wanted.max(2 * buffer.capacity()));
}

/// The longest one wait may last: `poll(2)` and `epoll_wait(2)` take
/// whole milliseconds in a C `int` (24.8 days). The selector waits longer
/// in turns of at most this. 50 ms in this crate's unit tests, so that the
/// turns are tested in real time.
pub(crate) const MAX_WAIT: Duration = Duration::from_millis(MAX_WAIT_MS);
const MAX_WAIT_MS: u64 = if cfg!(test) {
    50
} else {
    libc::c_int::MAX as u64
};

/// `timeout` in whole milliseconds for `poll(2)` / `epoll_wait(2)`:
/// `-1` for none, rounded up (a 1 µs wait must not become a busy 0 ms
/// poll) and cut to [`MAX_WAIT`] (a huge wait must not wrap around to
/// negative; the selector waits for the rest).
pub(crate) fn timeout_millis(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(t) => {
            // u64 arithmetic: `as_millis` would divide a u128.
            let ms = t
                .as_secs()
                .saturating_mul(1_000)
                .saturating_add(u64::from(t.subsec_nanos().div_ceil(1_000_000)));
            ms.min(MAX_WAIT_MS) as libc::c_int
        }
    }
}

/// `Ok` if `fd` is an open descriptor, `EBADF` if not: what epoll_ctl
/// answers for a closed one, for the backends whose kernel call would not.
pub(crate) fn check_open(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD takes no argument and only reads the descriptor's flags.
    cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    Ok(())
}

/// Converts a `-1`-on-error libc return value into an `io::Result`.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

#[cfg(test)]
mod tests {
    use super::{readiness, timeout_millis, AnyBackend, MAX_WAIT};
    use crate::Events;
    use std::time::Duration;

    /// Rounded up, never to a busy 0 ms poll; cut to `MAX_WAIT`, never
    /// wrapped around to a negative (infinite) or short wait.
    #[test]
    fn timeouts_become_milliseconds_up_to_the_longest_wait() {
        let max = MAX_WAIT.as_millis() as libc::c_int;
        let cases = [
            (None, -1),
            (Some(Duration::ZERO), 0),
            (Some(Duration::from_nanos(1)), 1),
            (Some(Duration::from_micros(1_001)), 2),
            (Some(Duration::from_millis(7)), 7),
            (Some(MAX_WAIT), max),
            (Some(MAX_WAIT + Duration::from_nanos(1)), max),
            (Some(Duration::from_millis(1 << 32)), max),
            (Some(Duration::MAX), max),
        ];
        for (timeout, ms) in cases {
            assert_eq!(timeout_millis(timeout), ms, "{timeout:?}");
        }
    }

    /// The run-time-chosen backend stays small (select's `fd_set`s are
    /// boxed), so an `AnySelector` is not the size of the largest backend.
    #[test]
    fn any_backend_is_small() {
        assert!(std::mem::size_of::<AnyBackend>() <= 128);
        assert_eq!(
            std::mem::size_of::<Option<AnyBackend>>(),
            std::mem::size_of::<AnyBackend>()
        );
    }

    /// CPython's `PollSelector` / `EpollSelector` translation, bit by bit.
    #[test]
    fn readiness_translates_poll_bits_as_cpython_does() {
        let both = Events::READ | Events::WRITE;
        let cases = [
            (0, Events::empty()),
            (libc::POLLIN, Events::READ),
            (libc::POLLPRI, both),
            (libc::POLLOUT, Events::WRITE),
            (libc::POLLIN | libc::POLLOUT, both),
            (libc::POLLERR, both),
            (libc::POLLHUP, both),
            (libc::POLLNVAL, both),
            (libc::POLLIN | libc::POLLHUP, both),
        ];
        for (bits, events) in cases {
            assert_eq!(readiness(bits as u32), events, "bits {bits:#x}");
        }
    }
}
