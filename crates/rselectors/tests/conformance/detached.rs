//! Detached waits (`detach_wait` / `attach_wait`, what the Python module
//! uses to release the GIL), and descriptor numbers no table may be sized
//! by.

use crate::common::{by_fd, dup2_onto, open, readable_pairs, socketpair, BackendUnderTest};
use rselectors::{Error, Events, Fd};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

const SOON: Duration = Duration::from_secs(5);

crate::per_backend!(
    detached_wait_reports_like_select,
    epoll_wait_sees_registrations_made_while_detached,
    dropped_detached_wait_loses_no_capacity,
    registration_made_while_detached_gets_no_stale_event: exclusive,
    closed_or_huge_fd_is_refused,
);

fn ready_fds<M: BackendUnderTest>(
    sel: &mut rselectors::Selector<M::Backend, Fd, ()>,
) -> Vec<(RawFd, Events)> {
    let mut out = Vec::new();
    while let Some(e) = sel.next_ready() {
        out.push(e);
    }
    by_fd(out)
}

/// A wait run on another thread reports what `select` would.
fn detached_wait_reports_like_select<M: BackendUnderTest>() {
    let mut sel = open::<M, Fd, ()>();
    let pairs = readable_pairs(10);
    for (rd, _) in &pairs {
        sel.register(Fd(rd.as_raw_fd()), Events::READ, ()).unwrap();
    }
    let mut wait = sel.detach_wait().unwrap();
    let wait = std::thread::spawn(move || {
        wait.wait(Some(SOON)).unwrap();
        wait
    })
    .join()
    .unwrap();
    assert_eq!(sel.attach_wait(wait).unwrap(), 10);
    let detached = ready_fds::<M>(&mut sel);
    sel.select(Some(SOON)).unwrap();
    assert_eq!(detached, ready_fds::<M>(&mut sel));
    assert_eq!(detached.len(), 10);
}

/// A detached wait that is never attached again (its thread gave up)
/// must not shrink what later waits can report.
fn dropped_detached_wait_loses_no_capacity<M: BackendUnderTest>() {
    let mut sel = open::<M, Fd, ()>();
    let pairs = readable_pairs(10);
    for (rd, _) in &pairs {
        sel.register(Fd(rd.as_raw_fd()), Events::READ, ()).unwrap();
    }
    drop(sel.detach_wait().unwrap());
    for _ in 0..3 {
        assert_eq!(sel.select(Some(SOON)).unwrap(), 10);
    }
}

/// While a wait is detached, fd N is unregistered, closed, and its number
/// given to a new, idle socket that is registered: what the wait saw of
/// the old socket must not be reported for the new one (epoll: the event
/// names the old registration; poll, select: the wait ran on a snapshot
/// taken before the new registration).
fn registration_made_while_detached_gets_no_stale_event<M: BackendUnderTest>() {
    let mut sel = open::<M, Fd, ()>();
    let (old, mut old_peer) = socketpair();
    old_peer.write_all(b"x").unwrap();
    let fd = old.as_raw_fd();
    sel.register(Fd(fd), Events::READ, ()).unwrap();
    let mut wait = sel.detach_wait().unwrap();
    wait.wait(Some(SOON)).unwrap();
    sel.unregister(fd).unwrap();
    let (idle, _idle_peer) = socketpair();
    let reused: OwnedFd = dup2_onto(&idle, OwnedFd::from(old));
    assert_eq!(reused.as_raw_fd(), fd);
    sel.register(Fd(fd), Events::READ, ()).unwrap();
    sel.attach_wait(wait).unwrap();
    assert_eq!(sel.next_ready(), None);
    assert_eq!(sel.select(Some(Duration::ZERO)).unwrap(), 0);
}

/// A closed descriptor is refused by every backend (EBADF), and a huge
/// number costs nothing: no table is sized by it.
fn closed_or_huge_fd_is_refused<M: BackendUnderTest>() {
    let mut sel = open::<M, Fd, ()>();
    for fd in [i32::MAX, 1 << 24] {
        let err = sel.register(Fd(fd), Events::READ, ()).unwrap_err().error;
        assert!(
            matches!(err, Error::FdOutOfRange { .. }) || err.raw_os_error() == Some(libc::EBADF),
            "{err:?}"
        );
    }
    assert!(sel.is_empty());
}

/// An epoll wait that is already blocked reports a socket registered
/// afterwards (the Python module's select() in one thread, register() in
/// another: CPython's behaviour).
fn epoll_wait_sees_registrations_made_while_detached<M: BackendUnderTest>() {
    let mut sel = open::<M, Fd, ()>();
    if sel.backend_name() != Some("epoll") {
        return;
    }
    let mut wait = sel.detach_wait().unwrap();
    let (rd, mut peer) = socketpair();
    peer.write_all(b"x").unwrap();
    sel.register(Fd(rd.as_raw_fd()), Events::READ, ()).unwrap();
    wait.wait(Some(SOON)).unwrap();
    assert_eq!(sel.attach_wait(wait).unwrap(), 1);
    assert_eq!(sel.next_ready(), Some((rd.as_raw_fd(), Events::READ)));
}
