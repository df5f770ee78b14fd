//! The system calls the front makes, counted by a backend that wraps each
//! real one: CPython's `test_modify` and `test_modify_unregister`, which
//! use `unittest.mock` for the same purpose. Unit tests, because
//! [`Backend`] is sealed.

use crate::sys::{AnyBackend, Backend, BackendKind, BackendOps, ReadyList};
use crate::{Error, ErrorKind, Events, Selector};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What [`Counting`] saw, and whether its `modify` should fail.
#[derive(Debug, Default)]
struct Calls {
    add: AtomicUsize,
    modify: AtomicUsize,
    remove: AtomicUsize,
    fail_modify: AtomicBool,
}

/// A backend that counts the calls the front makes and can refuse `modify`.
#[derive(Debug)]
struct Counting<B> {
    inner: B,
    calls: Arc<Calls>,
}

impl<B: Backend> Backend for Counting<B> {
    type Waiter = B::Waiter;
}

impl<B: Backend> BackendOps for Counting<B> {
    fn open() -> io::Result<Self> {
        let calls = Arc::default();
        Ok(Counting {
            inner: B::open()?,
            calls,
        })
    }
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn fd_limit(&self) -> Option<RawFd> {
        self.inner.fd_limit()
    }
    fn add(&mut self, fd: RawFd, events: Events, tag: u32) -> io::Result<()> {
        self.calls.add.fetch_add(1, Ordering::SeqCst);
        self.inner.add(fd, events, tag)
    }
    fn modify(&mut self, fd: RawFd, events: Events, tag: u32) -> io::Result<()> {
        self.calls.modify.fetch_add(1, Ordering::SeqCst);
        if self.calls.fail_modify.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        self.inner.modify(fd, events, tag)
    }
    fn remove(&mut self, fd: RawFd) -> io::Result<()> {
        self.calls.remove.fetch_add(1, Ordering::SeqCst);
        self.inner.remove(fd)
    }
    fn wait(&mut self, ready: &mut ReadyList, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.wait(ready, timeout)
    }
    fn fileno(&self) -> Option<RawFd> {
        self.inner.fileno()
    }
    fn events_carry_tags(&self) -> bool {
        self.inner.events_carry_tags()
    }
    fn detach(&mut self) -> <Self as Backend>::Waiter {
        self.inner.detach()
    }
    fn reattach(&mut self, waiter: <Self as Backend>::Waiter) {
        self.inner.reattach(waiter)
    }
}

/// A selector over `inner` wrapped in [`Counting`], and what it counts.
fn counted<B: Backend, D>(inner: B) -> (Selector<Counting<B>, UnixStream, D>, Arc<Calls>) {
    let calls = Arc::new(Calls::default());
    let backend = Counting {
        inner,
        calls: Arc::clone(&calls),
    };
    (Selector::with_backend(backend), calls)
}

/// `$test(open, name)` for each backend of the registry, by its own type.
macro_rules! directly {
    (($test:ident) $({ [$($cfg:tt)*] $dflt:tt $kind:ident $name:literal $module:ident $ty:ident $($rest:tt)* })*) => {
        $(
            #[cfg($($cfg)*)]
            $test(|| <crate::sys::$module::$ty as BackendOps>::open().unwrap(), $name);
        )*
    };
}

/// Runs `$test(open, name)` for every backend of the registry, directly
/// and through [`AnyBackend`].
macro_rules! on_every_backend {
    ($test:ident) => {{
        crate::for_each_backend!(directly, $test);
        for &kind in BackendKind::ALL {
            $test(|| AnyBackend::open_kind(kind).unwrap(), kind.name());
        }
    }};
}

/// A non-blocking socket pair.
fn socketpair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// CPython's `test_modify` "shortcut": a change of data alone makes no
/// system call (and the key keeps its events).
#[test]
fn modify_data_only_makes_no_system_call() {
    fn check<B: Backend>(open: impl Fn() -> B, name: &str) {
        let (mut sel, calls) = counted::<B, u32>(open());
        let (rd, _wr) = socketpair();
        let fd = rd.as_raw_fd();
        sel.register(rd, Events::READ, 1).unwrap();
        assert_eq!(calls.add.load(Ordering::SeqCst), 1, "{name}");

        assert_eq!(sel.modify(fd, Events::READ, 2).unwrap().data, 2, "{name}");
        sel.modify_events(fd, Events::READ).unwrap();
        *sel.get_key_mut(fd).unwrap().data = 3;
        assert_eq!(calls.modify.load(Ordering::SeqCst), 0, "{name}");

        sel.modify(fd, Events::WRITE, 4).unwrap();
        assert_eq!(calls.modify.load(Ordering::SeqCst), 1, "{name}");
        assert_eq!(calls.remove.load(Ordering::SeqCst), 0, "{name}");
    }
    on_every_backend!(check);
}

/// CPython's `test_modify_unregister` (bpo-30014): when the OS refuses the
/// new events, the fd is unregistered, from the table and from the OS.
#[test]
fn modify_refused_by_the_os_unregisters() {
    fn check<B: Backend>(open: impl Fn() -> B, name: &str) {
        let (mut sel, calls) = counted::<B, ()>(open());
        let (rd, mut peer) = socketpair();
        let fd = rd.as_raw_fd();
        sel.register(rd, Events::READ, ()).unwrap();
        assert_eq!(sel.len(), 1, "{name}");
        calls.fail_modify.store(true, Ordering::SeqCst);

        let error = sel.modify(fd, Events::WRITE, ()).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Os, "{name}");
        assert_eq!(error.raw_os_error(), Some(libc::ENOMEM), "{name}");
        assert_eq!(sel.len(), 0, "{name}");
        assert!(
            matches!(sel.get_key(fd), Err(Error::NotRegistered(_))),
            "{name}"
        );
        assert_eq!(calls.remove.load(Ordering::SeqCst), 1, "{name}");
        // The key was dropped, and with it the socket the selector owned.
        let mut buf = [0; 1];
        assert_eq!(
            peer.read(&mut buf).unwrap(),
            0,
            "{name}: the owned socket is closed"
        );
        let _ = peer.write_all(b"x");
        assert_eq!(sel.select(Some(Duration::ZERO)).unwrap(), 0, "{name}");
    }
    on_every_backend!(check);
}
