//! Helpers shared by the integration tests: the backends under test, a
//! macro that runs one generic test body against each of them, and makers
//! for socket pairs, pipes and descriptors at chosen numbers.
//!
//! The few `unsafe` blocks of the tests live here, each a single libc call
//! with a `// SAFETY:` comment; test bodies stay safe.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use rselectors::{AnyBackend, AnySelector, Backend, BackendKind, Events, Fd, Selector};
use std::cell::Cell;
use std::io::{PipeReader, PipeWriter};
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Once, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// A backend a generic test body runs against: a concrete backend type,
/// or [`AnyBackend`] opened for one kind.
pub trait BackendUnderTest: 'static {
    /// The backend type the selector is built over.
    type Backend: Backend;
    /// Which mechanism it is, for the few places where backends differ
    /// legitimately (as they do in CPython).
    const KIND: BackendKind;
    /// Opens a selector over a fresh backend.
    fn open<F: AsRawFd, D>() -> Selector<Self::Backend, F, D>;
}

/// The backend `B` itself (`EpollSelector`, …).
pub struct Direct<B>(PhantomData<B>);

/// [`AnyBackend`] opened with `B`'s kind (`AnySelector`).
pub struct AnyOf<B>(PhantomData<B>);

/// Both of the above for each backend of the registry.
macro_rules! under_test {
    (() $({ [$($cfg:tt)*] $dflt:tt $kind:ident $name:literal $module:ident $ty:ident $($_:tt)* })*) => {
        $(
            #[cfg($($cfg)*)]
            impl BackendUnderTest for Direct<rselectors::sys::$module::$ty> {
                type Backend = rselectors::sys::$module::$ty;
                const KIND: BackendKind = BackendKind::$kind;
                fn open<F: AsRawFd, D>() -> Selector<Self::Backend, F, D> {
                    Selector::new().expect("open backend")
                }
            }

            #[cfg($($cfg)*)]
            impl BackendUnderTest for AnyOf<rselectors::sys::$module::$ty> {
                type Backend = AnyBackend;
                const KIND: BackendKind = BackendKind::$kind;
                fn open<F: AsRawFd, D>() -> AnySelector<F, D> {
                    AnySelector::with_kind(Self::KIND).expect("open backend")
                }
            }
        )*
    };
}
rselectors::for_each_backend!(under_test);

/// Where a backend differs from the others, as the mechanisms do in
/// CPython; the model and the conformance suite both read it. Keyed by
/// name, so that kqueue's and /dev/poll's are stated before their lines
/// exist (CPython's behaviour and their kernels', not run here); a backend
/// not named here fails its tests until it states its own.
pub struct Quirks {
    /// What `select` does about a registered file closed behind its back.
    pub closed_file: ClosedFile,
    /// A pipe's read end whose writer is gone is reported to a WRITE
    /// interest too (`POLLHUP`); select(2) counts it as readable only.
    pub hang_up_wakes_writer: bool,
    /// Descriptors at or above `FD_SETSIZE` are refused (`ValueError`).
    pub below_fd_setsize: bool,
    /// The mechanism is a kernel object with a descriptor (`fileno()`).
    pub kernel_object: bool,
    /// Regular files are refused (`EPERM`) rather than always ready.
    pub refuses_regular_files: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedFile {
    /// select(2): `EBADF` for the whole wait.
    FailsTheWait,
    /// poll(2): `POLLNVAL`, i.e. both events.
    ReportsBoth,
    /// epoll: the kernel dropped it; a `modify` that changes its events
    /// fails with `EBADF` and the selector forgets the key.
    Forgotten,
}

pub fn quirks(kind: BackendKind) -> Quirks {
    let (closed_file, hang_up_wakes_writer, kernel_object) = match kind.name() {
        "select" => (ClosedFile::FailsTheWait, false, false),
        "poll" => (ClosedFile::ReportsBoth, true, false),
        // Solaris and illumos report POLLNVAL for a closed descriptor
        // that was not removed, as poll(2) does.
        "devpoll" => (ClosedFile::ReportsBoth, true, true),
        // Closing a descriptor deletes its knotes; CPython's `modify`
        // (unregister, then register with EV_ADD) then fails with EBADF
        // and leaves the file unregistered, as with epoll.
        "epoll" | "kqueue" => (ClosedFile::Forgotten, true, true),
        other => panic!("state the quirks of backend {other:?} in tests/common"),
    };
    Quirks {
        closed_file,
        hang_up_wakes_writer,
        below_fd_setsize: kind.name() == "select",
        kernel_object,
        // epoll_ctl refuses regular files (EPERM); the others call them
        // always ready.
        refuses_regular_files: kind.name() == "epoll",
    }
}

/// A new selector over `M`'s backend.
pub fn open<M: BackendUnderTest, F: AsRawFd, D>() -> Selector<M::Backend, F, D> {
    M::open()
}

/// Instantiates generic test bodies `fn name<M: BackendUnderTest>()` once
/// per backend of the registry, directly and through `AnySelector`: as
/// `select::name`, `poll::name`, `epoll::name`, …, and `any::select::name`,
/// `any::poll::name`, `any::epoll::name`, ….
///
/// Attributes before a name (`#[ignore = "..."]`) go onto every
/// instance. A name followed by `: exclusive` runs while no other test of
/// the binary runs (see [`fd_lock`]); the others run side by side.
#[macro_export]
macro_rules! per_backend {
    ((@each $tests:tt)
        $({ [$($cfg:tt)*] $dflt:tt $kind:ident $name:literal $module:ident $ty:ident $($_:tt)* })*) => {
        $(
            #[cfg($($cfg)*)]
            $crate::per_backend!(@one $module, $crate::common::Direct<rselectors::sys::$module::$ty>; $tests);
        )*
        mod any {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[cfg($($cfg)*)]
                $crate::per_backend!(@one $module, $crate::common::AnyOf<rselectors::sys::$module::$ty>; $tests);
            )*
        }
    };
    (@one $module:ident, $under_test:ty;
        [$($(#[$attr:meta])* $name:ident $(: $lock:ident)?),* $(,)?]) => {
        mod $module {
            $(
                #[test]
                $(#[$attr])*
                fn $name() {
                    let _fds = $crate::common::fd_lock(stringify!($($lock)?));
                    super::$name::<$under_test>();
                }
            )*
        }
    };
    // Listed last: it matches anything.
    ($($tests:tt)*) => {
        rselectors::for_each_backend!($crate::per_backend, @each [$($tests)*]);
    };
}

/// Tests run on parallel threads of one process, which share descriptor
/// numbers. A test that closes a descriptor behind a selector's back and
/// then relies on the number staying free takes this lock exclusively.
static FD_NUMBERS: RwLock<()> = RwLock::new(());

/// The lock a test generated by `per_backend!` holds: `"exclusive"` or
/// `""` (shared).
pub fn fd_lock(kind: &str) -> FdLock {
    match kind {
        "" => FdLock::Shared(shared_fds()),
        "exclusive" => FdLock::Exclusive(exclusive_fds()),
        other => panic!("unknown lock {other:?}: write `name: exclusive`"),
    }
}

/// A guard of [`fd_lock`], held for its side effect.
pub enum FdLock {
    /// Other tests may run.
    Shared(RwLockReadGuard<'static, ()>),
    /// No other test runs.
    Exclusive(RwLockWriteGuard<'static, ()>),
}

/// Held by ordinary tests: they may run together.
pub fn shared_fds() -> RwLockReadGuard<'static, ()> {
    FD_NUMBERS.read().unwrap_or_else(|e| e.into_inner())
}

/// Held by a test that needs no other test to open descriptors meanwhile.
pub fn exclusive_fds() -> RwLockWriteGuard<'static, ()> {
    FD_NUMBERS.write().unwrap_or_else(|e| e.into_inner())
}

/// A connected, non-blocking Unix stream socket pair.
pub fn socketpair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("nonblocking");
    b.set_nonblocking(true).expect("nonblocking");
    (a, b)
}

/// `n` socket pairs whose first ends are readable: (readable end, peer).
pub fn readable_pairs(n: usize) -> Vec<(UnixStream, UnixStream)> {
    use std::io::Write;
    (0..n)
        .map(|_| {
            let (rd, mut peer) = socketpair();
            peer.write_all(b"x").unwrap();
            (rd, peer)
        })
        .collect()
}

/// A pipe: (read end, write end), blocking.
pub fn pipe() -> (PipeReader, PipeWriter) {
    std::io::pipe().expect("pipe")
}

/// The bare descriptor number of `f`, as a file object the selector does not own.
pub fn raw(f: &impl AsRawFd) -> Fd {
    Fd(f.as_raw_fd())
}

/// Makes descriptor `target` refer to `source`'s file, atomically closing
/// what `target` referred to before (`dup2`): the way to reuse a number
/// that no other thread can take in between. Returns `target`, which now
/// owns the new reference.
pub fn dup2_onto(source: &impl AsFd, target: OwnedFd) -> OwnedFd {
    // SAFETY: both descriptors are open and owned (`source` borrowed,
    // `target` by value); dup2 replaces `target`'s file without changing
    // its number, so `target` still owns exactly one open descriptor.
    let ret = unsafe { libc::dup2(source.as_fd().as_raw_fd(), target.as_raw_fd()) };
    assert_eq!(
        ret,
        target.as_raw_fd(),
        "dup2: {}",
        std::io::Error::last_os_error()
    );
    target
}

/// A close-on-exec duplicate of `source` numbered `min` or above
/// (`fcntl(F_DUPFD_CLOEXEC)`).
pub fn dup_at_least(source: &impl AsFd, min: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes an integer argument and only creates
    // a descriptor; `source` is open for the duration of the call.
    let fd = unsafe { libc::fcntl(source.as_fd().as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Raises the soft `RLIMIT_NOFILE` to at least `wanted` (within the hard
/// limit). Returns the soft limit now in force, or why it could not be
/// raised enough.
pub fn raise_fd_limit(wanted: u64) -> Result<u64, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    // `rlim_t` is signed on some systems; a negative limit is none (infinity).
    let (cur, max) = (as_u64(limit.rlim_cur), as_u64(limit.rlim_max));
    if cur >= wanted {
        return Ok(cur);
    }
    if max < wanted {
        return Err(format!(
            "hard RLIMIT_NOFILE is {}, {} wanted",
            limit.rlim_max, wanted
        ));
    }
    limit.rlim_cur = libc::rlim_t::try_from(wanted).expect("below the hard limit");
    // SAFETY: setrlimit reads one rlimit from a live local.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
    }
    Ok(wanted)
}

/// Raises the soft `RLIMIT_NOFILE` as far as the hard limit allows (at most
/// 2^21), and returns the soft limit in force: the highest descriptor the
/// OS can hand out is one below it.
pub fn raise_fd_limit_to_hard() -> Result<u64, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    raise_fd_limit(
        as_u64(limit.rlim_max)
            .min(1 << 21)
            .max(as_u64(limit.rlim_cur)),
    )
}

/// A resource limit as a `u64` (a negative one, where `rlim_t` is signed,
/// is `RLIM_INFINITY`).
// `rlim_t` is `u64` on Linux, `i64` on FreeBSD.
#[allow(clippy::useless_conversion)]
fn as_u64(limit: libc::rlim_t) -> u64 {
    u64::try_from(limit).unwrap_or(u64::MAX)
}

thread_local! {
    /// SIGALRMs handled on this thread. A `const` thread-local without a
    /// destructor is a plain TLS slot, so the handler may touch it.
    static SIGALRMS: Cell<usize> = const { Cell::new(0) };
}

extern "C" fn count_sigalrm(_signal: libc::c_int) {
    SIGALRMS.with(|n| n.set(n.get() + 1));
}

/// Installs (once per process) a SIGALRM handler that only counts, without
/// `SA_RESTART`, so a wait it interrupts fails with `EINTR`.
pub fn install_sigalrm_counter() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: an all-zero sigaction is a valid value (empty mask, no
        // flags); the handler is an `extern "C"` fn that only updates a
        // thread-local counter, which is async-signal-safe.
        let ret = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = count_sigalrm as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut())
        };
        assert_eq!(ret, 0, "sigaction: {}", std::io::Error::last_os_error());
    });
}

/// SIGALRMs handled so far on the calling thread.
pub fn sigalrms_seen() -> usize {
    SIGALRMS.with(Cell::get)
}

/// Sends SIGALRM to `thread` (which must not have been joined yet).
pub fn send_sigalrm(thread: libc::pthread_t) {
    // SAFETY: `thread` comes from a live, not yet joined `JoinHandle`, so
    // it names a valid thread descriptor; SIGALRM's handler is installed.
    let ret = unsafe { libc::pthread_kill(thread, libc::SIGALRM) };
    assert!(ret == 0 || ret == libc::ESRCH, "pthread_kill: {ret}");
}

/// `events` sorted by fd, as [`drain`] returns them.
pub fn by_fd(mut events: Vec<(RawFd, Events)>) -> Vec<(RawFd, Events)> {
    events.sort_by_key(|&(fd, _)| fd);
    events
}

/// Takes every event of the last `select` from `sel`, sorted by fd.
pub fn drain<B: Backend, F: AsRawFd, D>(sel: &mut Selector<B, F, D>) -> Vec<(RawFd, Events)> {
    let mut events = Vec::new();
    while let Some(event) = sel.next_ready() {
        events.push(event);
    }
    events.sort_by_key(|&(fd, _)| fd);
    events
}

/// `select` with a bounded timeout, then every event, sorted by fd.
pub fn select_all<B: Backend, F: AsRawFd, D>(
    sel: &mut Selector<B, F, D>,
    timeout: Duration,
) -> Vec<(RawFd, Events)> {
    let n = sel.select(Some(timeout)).expect("select");
    let events = drain(sel);
    assert_eq!(n, events.len(), "select's count and next_ready disagree");
    events
}

/// A small deterministic generator (xorshift), for the "random" choices
/// CPython's tests make, reproducibly.
pub struct XorShift(pub u64);

impl XorShift {
    /// The next number below `bound` (> 0).
    pub fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}
