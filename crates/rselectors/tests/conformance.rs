//! CPython's `Lib/test/test_selectors.py`, translated: every check of
//! `BaseSelectorTestCase` and of the per-backend classes, plus the rules
//! the Rust API adds (ownership, `next_ready` batches, `Waker`).
//!
//! Each generic body `fn name<M: BackendUnderTest>()` runs once per
//! backend of the registry (see `per_backend!` in `common`): `select`,
//! `poll`, `epoll`, … and `AnySelector` of each kind (`any::…`). `test_above_fd_setsize` is in
//! `many_fds.rs`.

mod common;

#[path = "conformance/batches.rs"]
mod batches;
#[path = "conformance/detached.rs"]
mod detached;
#[path = "conformance/lifecycle.rs"]
mod lifecycle;
#[path = "conformance/registration.rs"]
mod registration;
#[path = "conformance/waiting.rs"]
mod waiting;

use rselectors::{
    AnySelector, BackendKind, DefaultSelector, Error, ErrorKind, Fd, Rejected, UnknownBackend,
    Waker,
};
use std::io;

#[test]
fn error_kinds_name_the_python_exceptions() {
    let os = |errno| Error::Os(io::Error::from_raw_os_error(errno));
    let cases = [
        (Error::InvalidEvents(4), ErrorKind::Value),
        (Error::InvalidFd(-1), ErrorKind::Value),
        (
            Error::FdOutOfRange {
                fd: 2000,
                limit: 1024,
            },
            ErrorKind::Value,
        ),
        (Error::AlreadyRegistered(3), ErrorKind::Key),
        (Error::NotRegistered(3), ErrorKind::Key),
        (Error::Closed, ErrorKind::Runtime),
        (os(libc::EBADF), ErrorKind::Os),
    ];
    for (error, kind) in cases {
        assert_eq!(error.kind(), kind, "{error:?}");
        assert!(!error.to_string().is_empty());
        assert!(!error.is_interrupted());
        assert_eq!(error.raw_os_error().is_some(), kind == ErrorKind::Os);
    }
    assert_eq!(Error::Closed.to_string(), "Selector is closed");
    assert_eq!(Error::InvalidEvents(4).to_string(), "Invalid events: 4");
    assert_eq!(os(libc::EPERM).raw_os_error(), Some(libc::EPERM));
    assert!(os(libc::EINTR).is_interrupted());

    // Into io::Error: the OS error comes back as is, the others get a kind.
    let back: io::Error = os(libc::EBADF).into();
    assert_eq!(back.raw_os_error(), Some(libc::EBADF));
    let io_kind = |e: Error| io::Error::from(e).kind();
    assert_eq!(io_kind(Error::InvalidFd(-1)), io::ErrorKind::InvalidInput);
    assert_eq!(
        io_kind(Error::AlreadyRegistered(3)),
        io::ErrorKind::AlreadyExists
    );
    assert_eq!(io_kind(Error::NotRegistered(3)), io::ErrorKind::NotFound);

    // A Rejected registration is an error too, and keeps what it hands back.
    let rejected = Rejected {
        error: Error::AlreadyRegistered(5),
        fileobj: Fd(5),
        data: "data",
    };
    assert_eq!(
        rejected.to_string(),
        Error::AlreadyRegistered(5).to_string()
    );
    assert!(format!("{rejected:?}").contains("AlreadyRegistered"));
    assert_eq!(rejected.into_error().kind(), ErrorKind::Key);
}

/// CPython's `DefaultSelector`: the first of epoll, devpoll, kqueue, poll
/// and select that the platform has.
const CPYTHON_DEFAULT: &str = if cfg!(any(
    target_os = "linux",
    target_os = "android",
    target_os = "illumos"
)) {
    "epoll"
} else if cfg!(target_os = "solaris") {
    "devpoll"
} else if cfg!(kqueue) {
    "kqueue"
} else {
    "poll"
};

#[test]
fn backend_kinds_parse_by_name() {
    assert_eq!(BackendKind::DEFAULT.name(), CPYTHON_DEFAULT);
    assert_eq!("default".parse::<BackendKind>(), Ok(BackendKind::DEFAULT));
    let names: Vec<_> = BackendKind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(names[..2], ["select", "poll"], "worst first");
    assert_eq!(names.last(), Some(&CPYTHON_DEFAULT), "best last");
    #[cfg(target_os = "linux")]
    assert_eq!(
        BackendKind::ALL,
        &[BackendKind::Select, BackendKind::Poll, BackendKind::Epoll]
    );
    for &kind in BackendKind::ALL {
        assert_eq!(kind.name().parse::<BackendKind>(), Ok(kind));
        assert_eq!(kind.to_string(), kind.name());
    }
    let absent = ["epoll", "devpoll", "kqueue"]
        .into_iter()
        .filter(|name| !names.contains(name));
    for unknown in absent.chain(["", "EPOLL", " epoll", "Default", "select "]) {
        let error = unknown.parse::<BackendKind>().unwrap_err();
        assert_eq!(error, UnknownBackend(unknown.to_owned()));
        let message = error.to_string();
        assert!(message.contains(&format!("{unknown:?}")), "{message}");
        assert!(names.iter().all(|name| message.contains(name)), "{message}");
    }
}

#[test]
fn default_selector_is_cpythons_and_kinds_open_their_backend() {
    let _fds = common::shared_fds();
    let default = DefaultSelector::<Fd, ()>::new().unwrap();
    assert_eq!(default.backend_name(), Some(CPYTHON_DEFAULT));
    let any_default = AnySelector::<Fd, ()>::new().unwrap();
    assert_eq!(any_default.backend_name(), Some(CPYTHON_DEFAULT));
    for &kind in BackendKind::ALL {
        let sel = AnySelector::<Fd, ()>::with_kind(kind).unwrap();
        assert_eq!(sel.backend_name(), Some(kind.name()));
        assert!(format!("{sel:?}").contains(kind.name()));
    }
}

#[test]
fn waker_is_send_sync_clone() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<Waker>();
}
