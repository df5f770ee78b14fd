//! `register`, `unregister` and `modify`: CPython's `test_register`,
//! `test_unregister*`, `test_modify*` and `EpollSelectorTestCase.test_register_file`.
//! `test_modify`'s and `test_modify_unregister`'s counts of system calls
//! need a test backend, which only the crate can make: they are unit tests
//! (`src/selector/system_calls.rs`).

use crate::common::{
    by_fd, dup2_onto, open, pipe, quirks, raw, select_all, socketpair, BackendUnderTest, ClosedFile,
};
use rselectors::{Error, ErrorKind, Events, Fd};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

const SOON: Duration = Duration::from_secs(5);

/// A file object that is either owned or a bare number, to register "the
/// same descriptor through a different object" as CPython's tests do.
#[derive(Debug)]
enum FileObj {
    Stream(UnixStream),
    Raw(Fd),
}

impl AsRawFd for FileObj {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            FileObj::Stream(s) => s.as_raw_fd(),
            FileObj::Raw(fd) => fd.0,
        }
    }
}

/// Reads one byte that must be there already.
fn read_byte(mut from: impl Read) -> u8 {
    let mut byte = [0];
    from.read_exact(&mut byte).expect("a byte is ready");
    byte[0]
}

crate::per_backend!(
    register_returns_the_key,
    register_refuses_a_bad_mask,
    register_refuses_a_negative_fd,
    register_refuses_the_same_fd_twice,
    register_regular_file,
    unregister_hands_the_key_back,
    unregister_unknown_or_twice,
    unregister_after_fd_close,
    unregister_after_fd_close_and_reuse,
    modify_events_and_data,
    modify_unregistered_with_bad_mask_is_key_error,
    lookups_of_a_negative_fd_are_value_errors,
    modify_on_fd_closed_behind_the_back: exclusive,
);

fn register_returns_the_key<M: BackendUnderTest>() {
    let mut sel = open::<M, UnixStream, &str>();
    let (rd, _wr) = socketpair();
    let fd = rd.as_raw_fd();
    let key = sel.register(rd, Events::READ, "data").unwrap();
    assert_eq!(key.fileobj.as_raw_fd(), fd);
    assert_eq!(key.fd, fd);
    assert_eq!(key.events, Events::READ);
    assert_eq!(key.data, "data");
    assert_eq!(sel.len(), 1);
    assert_eq!(sel.get_key(fd).unwrap().data, "data");
}

fn register_refuses_a_bad_mask<M: BackendUnderTest>() {
    let mut sel = open::<M, UnixStream, u32>();
    let (mut rd, mut wr) = socketpair();
    for bits in [0, 4, 999_999, u32::MAX] {
        let rejected = sel
            .register(rd, Events::from_bits_retain(bits), bits)
            .unwrap_err();
        assert!(
            matches!(rejected.error, Error::InvalidEvents(b) if b == bits),
            "{bits:#x}: {:?}",
            rejected.error
        );
        assert_eq!(rejected.error.kind(), ErrorKind::Value);
        assert_eq!(rejected.data, bits);
        rd = rejected.fileobj;
    }
    assert!(sel.is_empty());
    // The socket came back open.
    wr.write_all(b"x").unwrap();
    assert_eq!(read_byte(&mut rd), b'x');

    // CPython: register(0, 999999); the mask is refused before anything else.
    let mut by_number = open::<M, Fd, ()>();
    let rejected = by_number
        .register(Fd(0), Events::from_bits_retain(999_999), ())
        .unwrap_err();
    assert_eq!(rejected.error.kind(), ErrorKind::Value);
    assert!(by_number.is_empty());
}

fn register_refuses_a_negative_fd<M: BackendUnderTest>() {
    let mut sel = open::<M, Fd, ()>();
    for fd in [-10, -1, RawFd::MIN] {
        let rejected = sel.register(Fd(fd), Events::READ, ()).unwrap_err();
        assert!(
            matches!(rejected.error, Error::InvalidFd(f) if f == fd),
            "{:?}",
            rejected.error
        );
        assert_eq!(rejected.error.kind(), ErrorKind::Value);
        assert_eq!(rejected.fileobj, Fd(fd));
    }
    assert!(sel.is_empty());
}

fn register_refuses_the_same_fd_twice<M: BackendUnderTest>() {
    let mut sel = open::<M, FileObj, u32>();
    let (rd, mut wr) = socketpair();
    let fd = rd.as_raw_fd();
    sel.register(FileObj::Stream(rd), Events::READ, 1).unwrap();

    // The same number twice, and the same descriptor through another object.
    for again in [FileObj::Raw(Fd(fd)), FileObj::Raw(Fd(fd))] {
        let rejected = sel.register(again, Events::WRITE, 2).unwrap_err();
        assert!(matches!(rejected.error, Error::AlreadyRegistered(f) if f == fd));
        assert_eq!(rejected.error.kind(), ErrorKind::Key);
        assert_eq!((rejected.fileobj.as_raw_fd(), rejected.data), (fd, 2));
    }
    // The first registration is untouched, in the table and in the OS.
    let key = sel.get_key(fd).unwrap();
    assert_eq!((key.events, key.data), (Events::READ, 1));
    assert_eq!(sel.len(), 1);
    wr.write_all(b"x").unwrap();
    assert_eq!(select_all(&mut sel, SOON), [(fd, Events::READ)]);
}

/// epoll(7) refuses a regular file with `EPERM` and nothing stays
/// registered; select(2) and poll(2) take it and call it always ready.
fn register_regular_file<M: BackendUnderTest>() {
    let mut sel = open::<M, File, ()>();
    let file = File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let fd = file.as_raw_fd();
    if quirks(M::KIND).refuses_regular_files {
        let rejected = sel.register(file, Events::READ, ()).unwrap_err();
        assert_eq!(rejected.error.kind(), ErrorKind::Os);
        assert_eq!(rejected.error.raw_os_error(), Some(libc::EPERM));
        assert!(matches!(sel.get_key(fd), Err(Error::NotRegistered(f)) if f == fd));
        assert!(sel.is_empty() && !sel.get_map().contains_key(fd));
        assert_eq!(sel.select(Some(Duration::ZERO)).unwrap(), 0);
        // The file came back open.
        let mut text = String::new();
        (&rejected.fileobj).read_to_string(&mut text).unwrap();
        assert!(text.contains("rselectors"));
    } else {
        sel.register(file, Events::READ | Events::WRITE, ())
            .unwrap();
        assert_eq!(
            select_all(&mut sel, SOON),
            [(fd, Events::READ | Events::WRITE)]
        );
    }
}

fn unregister_hands_the_key_back<M: BackendUnderTest>() {
    let mut sel = open::<M, UnixStream, String>();
    let (rd, mut wr) = socketpair();
    let fd = rd.as_raw_fd();
    sel.register(rd, Events::READ, "owned".to_owned()).unwrap();
    let key = sel.unregister(fd).unwrap();
    assert_eq!((key.fd, key.events), (fd, Events::READ));
    assert_eq!(key.data, "owned");
    assert!(sel.is_empty());
    // Ownership came back: the socket is open and ours.
    wr.write_all(b"y").unwrap();
    assert_eq!(read_byte(&key.fileobj), b'y');
    // And the OS forgot it: nothing is reported for it any more.
    wr.write_all(b"z").unwrap();
    assert_eq!(sel.select(Some(Duration::ZERO)).unwrap(), 0);
}

fn unregister_unknown_or_twice<M: BackendUnderTest>() {
    let mut sel = open::<M, UnixStream, ()>();
    let (rd, _wr) = socketpair();
    let fd = rd.as_raw_fd();
    sel.register(rd, Events::READ, ()).unwrap();
    sel.unregister(fd).unwrap();
    for unknown in [999_999, fd] {
        let error = sel.unregister(unknown).unwrap_err();
        assert!(matches!(error, Error::NotRegistered(f) if f == unknown));
        assert_eq!(error.kind(), ErrorKind::Key);
    }
}

/// CPython's `test_unregister_after_fd_close` and `..._after_socket_close`:
/// the descriptors (sockets and pipes) are closed while registered.
fn unregister_after_fd_close<M: BackendUnderTest>() {
    let mut sel = open::<M, Fd, &str>();
    let (rd, wr) = socketpair();
    let (pipe_rd, pipe_wr) = pipe();
    let fds = [
        (rd.as_raw_fd(), Events::READ),
        (wr.as_raw_fd(), Events::WRITE),
        (pipe_rd.as_raw_fd(), Events::READ),
        (pipe_wr.as_raw_fd(), Events::WRITE),
    ];
    for (fd, events) in fds {
        sel.register(Fd(fd), events, "closed").unwrap();
    }
    drop((rd, wr, pipe_rd, pipe_wr));
    for (fd, events) in fds {
        let key = sel.unregister(fd).unwrap();
        assert_eq!(
            (key.fileobj, key.events, key.data),
            (Fd(fd), events, "closed")
        );
    }
    assert!(sel.is_empty());
}

/// CPython's `test_unregister_after_fd_close_and_reuse`, and then some: the
/// numbers now name a new pipe and a new socket, the pipe also registered
/// in a second selector; unregistering the old keys must leave them alone.
fn unregister_after_fd_close_and_reuse<M: BackendUnderTest>() {
    let mut sel = open::<M, Fd, &str>();
    let (rd, wr) = socketpair();
    let (r, w) = (rd.as_raw_fd(), wr.as_raw_fd());
    sel.register(Fd(r), Events::READ, "old").unwrap();
    sel.register(Fd(w), Events::WRITE, "old").unwrap();

    // dup2 closes the old sockets and reuses their numbers atomically.
    let (pipe_rd, mut pipe_wr) = pipe();
    let (_peer, new_socket) = socketpair();
    let r_now = dup2_onto(&pipe_rd, OwnedFd::from(rd));
    let w_now = dup2_onto(&new_socket, OwnedFd::from(wr));
    drop((pipe_rd, new_socket));
    let mut other = open::<M, Fd, &str>();
    other.register(Fd(r), Events::READ, "other").unwrap();

    assert_eq!(sel.unregister(r).unwrap().data, "old");
    assert_eq!(sel.unregister(w).unwrap().data, "old");
    assert!(sel.is_empty());

    // The new files were not disturbed: still open, still watched by the
    // other selector, and registrable here again.
    pipe_wr.write_all(b"n").unwrap();
    assert_eq!(select_all(&mut other, SOON), [(r, Events::READ)]);
    sel.register(Fd(r), Events::READ, "new").unwrap();
    sel.register(Fd(w), Events::WRITE, "new").unwrap();
    assert_eq!(
        select_all(&mut sel, SOON),
        by_fd(vec![(r, Events::READ), (w, Events::WRITE)])
    );
    assert_eq!(read_byte(File::from(r_now)), b'n');
    drop(w_now);
}

/// CPython's `test_modify`.
fn modify_events_and_data<M: BackendUnderTest>() {
    let mut sel = open::<M, UnixStream, u32>();
    let (rd, _wr) = socketpair();
    let fd = rd.as_raw_fd();
    sel.register(rd, Events::READ, 1).unwrap();
    assert_eq!(sel.select(Some(Duration::ZERO)).unwrap(), 0);

    // Events.
    let key = sel.modify(fd, Events::WRITE, 1).unwrap();
    assert_eq!((key.fd, key.events, key.data), (fd, Events::WRITE, 1));
    assert_eq!(sel.get_key(fd).unwrap().events, Events::WRITE);
    assert_eq!(select_all(&mut sel, SOON), [(fd, Events::WRITE)]);

    // Data alone.
    let key = sel.modify(fd, Events::WRITE, 2).unwrap();
    assert_eq!((key.events, key.data), (Events::WRITE, 2));
    assert_eq!(sel.get_key(fd).unwrap().data, 2);

    // Events alone keep the data (the seeds' `modify(sock, EVENT_READ)`).
    let key = sel.modify_events(fd, Events::READ | Events::WRITE).unwrap();
    assert_eq!((key.events, key.data), (Events::READ | Events::WRITE, 2));

    // Unknown file object.
    for error in [
        sel.modify(999_999, Events::READ, 3).unwrap_err(),
        sel.modify_events(999_999, Events::READ).unwrap_err(),
    ] {
        assert!(matches!(error, Error::NotRegistered(999_999)));
        assert_eq!(error.kind(), ErrorKind::Key);
    }

    // A bad mask is refused and changes nothing (CPython's select variant
    // would unregister the fd, its poll variants would store the mask).
    for bits in [0, 4, 999_999] {
        let error = sel
            .modify(fd, Events::from_bits_retain(bits), 9)
            .unwrap_err();
        assert!(matches!(error, Error::InvalidEvents(b) if b == bits));
        assert_eq!(error.kind(), ErrorKind::Value);
    }
    let key = sel.get_key(fd).unwrap();
    assert_eq!((key.events, key.data), (Events::READ | Events::WRITE, 2));
}

fn modify_unregistered_with_bad_mask_is_key_error<M: BackendUnderTest>() {
    let mut sel = open::<M, Fd, ()>();
    let error = sel
        .modify(999_999, Events::from_bits_retain(4), ())
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Key, "{error:?}");
}

fn lookups_of_a_negative_fd_are_value_errors<M: BackendUnderTest>() {
    let mut sel = open::<M, Fd, ()>();
    assert_eq!(sel.unregister(-1).unwrap_err().kind(), ErrorKind::Value);
    assert_eq!(sel.get_key(-1).unwrap_err().kind(), ErrorKind::Value);
    assert_eq!(
        sel.modify(-1, Events::READ, ()).unwrap_err().kind(),
        ErrorKind::Value
    );
}

/// The same with a real refusal: an fd closed behind the selector's back.
/// Only epoll asks the OS, which says `EBADF` (CPython alike); select and
/// poll make no system call in `modify` and keep the key.
fn modify_on_fd_closed_behind_the_back<M: BackendUnderTest>() {
    let mut sel = open::<M, Fd, u32>();
    let (rd, _wr) = socketpair();
    let fd = rd.as_raw_fd();
    sel.register(raw(&rd), Events::READ, 1).unwrap();
    drop(rd);

    // A change of data alone succeeds everywhere: no system call is made.
    assert_eq!(sel.modify(fd, Events::READ, 2).unwrap().data, 2);

    let result = sel.modify_events(fd, Events::WRITE).map(|key| key.events);
    if quirks(M::KIND).closed_file == ClosedFile::Forgotten {
        let error = result.unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EBADF), "{error:?}");
        assert!(matches!(sel.get_key(fd), Err(Error::NotRegistered(_))));
        assert!(sel.is_empty());
    } else {
        assert_eq!(result.unwrap(), Events::WRITE);
        assert_eq!(sel.unregister(fd).unwrap().data, 2);
    }
}
