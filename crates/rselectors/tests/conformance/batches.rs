//! Handling the events of one `select()`: the caller may register, modify
//! and unregister anything between two `next_ready` calls, including the
//! fd being handled; an event of a registration that is gone is never
//! delivered, even when its number was registered again.

use crate::common::{
    by_fd, dup2_onto, open, readable_pairs, select_all, socketpair, BackendUnderTest,
};
use rselectors::Events;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

const SOON: Duration = Duration::from_secs(5);

crate::per_backend!(
    event_unregistered_earlier_in_the_batch_is_not_delivered,
    event_of_a_reregistered_fd_is_not_delivered,
    mutate_while_iterating,
    a_hang_up_taken_after_modify_counts_for_the_new_events,
    select_replaces_the_previous_batch,
    next_ready_mut_hands_out_the_key,
    next_ready_mut_skips_a_stale_event_and_goes_on,
    unregister_closing_then_close: exclusive,
);

/// Two ready fds; handling the first unregisters the second, and a new,
/// readable socket takes the second's number and is registered: the stale
/// event must not be delivered, as the old key's or as the new one's.
fn event_unregistered_earlier_in_the_batch_is_not_delivered<M: BackendUnderTest>() {
    let mut sel = open::<M, rselectors::Fd, &str>();
    let mut pairs = readable_pairs(2);
    let fds: Vec<RawFd> = pairs.iter().map(|(rd, _)| rd.as_raw_fd()).collect();
    for &fd in &fds {
        sel.register(rselectors::Fd(fd), Events::READ, "old")
            .unwrap();
    }
    assert_eq!(sel.select(Some(SOON)).unwrap(), 2);
    let (first, events) = sel.next_ready().unwrap();
    assert_eq!(events, Events::READ);
    let other = if first == fds[0] { 1 } else { 0 };
    let other_fd = fds[other];

    assert_eq!(sel.unregister(other_fd).unwrap().data, "old");
    assert_eq!(sel.ready_keys().count(), 0);
    let (new_rd, mut new_peer) = socketpair();
    new_peer.write_all(b"y").unwrap();
    let (old_rd, _old_peer) = pairs.remove(other);
    let reused = dup2_onto(&new_rd, OwnedFd::from(old_rd));
    sel.register(rselectors::Fd(other_fd), Events::READ, "new")
        .unwrap();

    assert_eq!(sel.next_ready(), None, "a stale event was delivered");
    assert_eq!(sel.ready_keys().count(), 0);

    // The next select reports the new registration.
    let ready = select_all(&mut sel, SOON);
    assert_eq!(
        ready,
        by_fd(vec![(first, Events::READ), (other_fd, Events::READ)])
    );
    assert_eq!(sel.get_key(other_fd).unwrap().data, "new");
    drop(reused);
}

/// The same fd unregistered and registered again (same file) while its
/// event waits in the batch: the event belonged to the old registration.
fn event_of_a_reregistered_fd_is_not_delivered<M: BackendUnderTest>() {
    let mut sel = open::<M, UnixStream, u32>();
    let pairs = readable_pairs(2);
    let mut keep = Vec::new();
    for (i, (rd, peer)) in pairs.into_iter().enumerate() {
        sel.register(rd, Events::READ, i as u32).unwrap();
        keep.push(peer);
    }
    assert_eq!(sel.select(Some(SOON)).unwrap(), 2);
    let (first, _) = sel.next_ready().unwrap();
    let other = sel.get_map().fds().find(|&fd| fd != first).unwrap();
    let key = sel.unregister(other).unwrap();
    sel.register(key.fileobj, Events::READ, 99).unwrap();
    assert_eq!(sel.next_ready(), None, "a stale event was delivered");
    assert_eq!(select_all(&mut sel, SOON).len(), 2);
}

/// A selector with three readable sockets registered for READ, with data
/// 0, 1 and 2; and their peers, to keep the sockets open.
fn three_readable<M: BackendUnderTest>() -> (
    rselectors::Selector<M::Backend, UnixStream, u32>,
    Vec<UnixStream>,
) {
    let mut sel = open::<M, UnixStream, u32>();
    let mut peers = Vec::new();
    for (i, (rd, peer)) in readable_pairs(3).into_iter().enumerate() {
        sel.register(rd, Events::READ, i as u32).unwrap();
        peers.push(peer);
    }
    (sel, peers)
}

/// While handling an event: re-register and modify the fd being handled,
/// change another's data (its event stays), and narrow a third's events
/// (its event is masked by the key's current events, and goes).
fn mutate_while_iterating<M: BackendUnderTest>() {
    let (mut sel, _peers) = three_readable::<M>();
    assert_eq!(sel.select(Some(SOON)).unwrap(), 3);
    let (current, events) = sel.next_ready().unwrap();
    assert_eq!(events, Events::READ);

    // The fd being handled: unregister, register again, modify.
    let key = sel.unregister(current).unwrap();
    sel.register(key.fileobj, Events::READ, 10).unwrap();
    let key = sel
        .modify(current, Events::READ | Events::WRITE, 11)
        .unwrap();
    assert_eq!((key.events, key.data), (Events::READ | Events::WRITE, 11));

    let mut rest: Vec<RawFd> = sel.get_map().fds().filter(|&fd| fd != current).collect();
    rest.sort();
    let (kept, narrowed) = (rest[0], rest[1]);
    sel.modify(kept, Events::READ, 20).unwrap();
    sel.modify_events(narrowed, Events::WRITE).unwrap();
    let pending: Vec<_> = sel.ready_keys().map(|(k, e)| (k.fd, k.data, e)).collect();
    assert_eq!(pending, [(kept, 20, Events::READ)]);

    assert_eq!(sel.next_ready(), Some((kept, Events::READ)));
    assert_eq!(sel.next_ready(), None);

    let want = by_fd(vec![
        (current, Events::READ | Events::WRITE),
        (kept, Events::READ),
        (narrowed, Events::WRITE),
    ]);
    assert_eq!(select_all(&mut sel, SOON), want);
}

/// A hang-up reported for a reader, taken after the key was narrowed to
/// WRITE: masked with the key's events as they are when it is taken. poll
/// and epoll report the hang-up itself, which CPython counts as READ and
/// WRITE, so the event is delivered as WRITE; select(2) reported the fd
/// readable only, so nothing is left. Never READ, which is no longer asked.
fn a_hang_up_taken_after_modify_counts_for_the_new_events<M: BackendUnderTest>() {
    let mut sel = open::<M, UnixStream, ()>();
    let (rd, peer) = socketpair();
    let fd = rd.as_raw_fd();
    sel.register(rd, Events::READ, ()).unwrap();
    drop(peer);
    assert_eq!(sel.select(Some(SOON)).unwrap(), 1);
    sel.modify_events(fd, Events::WRITE).unwrap();
    let taken = sel.next_ready();
    if sel.backend_name() == Some("select") {
        assert_eq!(taken, None);
    } else {
        assert_eq!(taken, Some((fd, Events::WRITE)));
    }
}

/// Events not taken from one `select` are gone after the next one.
fn select_replaces_the_previous_batch<M: BackendUnderTest>() {
    let mut sel = open::<M, UnixStream, ()>();
    let (rd, mut peer) = socketpair();
    let fd = rd.as_raw_fd();
    sel.register(rd, Events::READ, ()).unwrap();
    peer.write_all(b"x").unwrap();
    assert_eq!(sel.select(Some(SOON)).unwrap(), 1);
    let mut buf = [0; 1];
    std::io::Read::read_exact(&mut sel.get_key_mut(fd).unwrap().fileobj, &mut buf).unwrap();
    assert_eq!(sel.select(Some(Duration::ZERO)).unwrap(), 0);
    assert_eq!(sel.next_ready(), None);
}

/// `next_ready_mut` reports what `next_ready` would, with the key's file
/// object and data at hand, mutable.
fn next_ready_mut_hands_out_the_key<M: BackendUnderTest>() {
    let mut sel = open::<M, UnixStream, u32>();
    let pairs = readable_pairs(3);
    let mut peers = Vec::new();
    for (rd, peer) in pairs {
        sel.register(rd, Events::READ | Events::WRITE, 0).unwrap();
        peers.push(peer);
    }
    sel.select(Some(SOON)).unwrap();
    let expected = by_fd(sel.ready_keys().map(|(k, e)| (k.fd, e)).collect());
    let mut seen = Vec::new();
    while let Some((key, events)) = sel.next_ready_mut() {
        assert_eq!(key.fileobj.as_raw_fd(), key.fd);
        *key.data += 1;
        seen.push((key.fd, events));
    }
    assert_eq!(by_fd(seen), expected);
    assert_eq!(expected.len(), 3);
    assert!(sel.get_map().iter().all(|k| k.data == 1));
}

/// `next_ready_mut` passes over an event whose registration went away
/// after `select` and hands out the live one after it.
fn next_ready_mut_skips_a_stale_event_and_goes_on<M: BackendUnderTest>() {
    let (mut sel, _peers) = three_readable::<M>();
    assert_eq!(sel.select(Some(SOON)).unwrap(), 3);
    let first = sel.next_ready_mut().unwrap().0.fd;
    let waiting: Vec<RawFd> = sel.ready_keys().map(|(k, _)| k.fd).collect();
    assert_eq!(waiting.len(), 2);
    sel.unregister(waiting[0]).unwrap();
    let (key, events) = sel
        .next_ready_mut()
        .expect("the live event after the stale one");
    assert_eq!((key.fd, events), (waiting[1], Events::READ));
    assert_ne!(key.fd, first);
    assert!(sel.next_ready_mut().is_none());
}

/// `unregister_closing` followed by the close: nothing more is reported
/// for the old file, and its number serves a new registration.
fn unregister_closing_then_close<M: BackendUnderTest>() {
    let mut sel = open::<M, UnixStream, &str>();
    let (rd, mut peer) = socketpair();
    peer.write_all(b"x").unwrap();
    let fd = rd.as_raw_fd();
    sel.register(rd, Events::READ, "old").unwrap();
    let key = sel.unregister_closing(fd).unwrap();
    assert_eq!(key.data, "old");
    drop(key);
    assert_eq!(select_all(&mut sel, Duration::ZERO), vec![]);
    let (idle, _idle_peer) = socketpair();
    let reused: OwnedFd = dup2_onto(&idle, OwnedFd::from(socketpair().0));
    let new = UnixStream::from(reused);
    let new_fd = new.as_raw_fd();
    sel.register(new, Events::READ, "new").unwrap();
    assert_eq!(select_all(&mut sel, Duration::ZERO), vec![]);
    assert_eq!(sel.unregister(new_fd).unwrap().data, "new");
    assert!(matches!(
        sel.unregister_closing(fd),
        Err(rselectors::Error::NotRegistered(_))
    ));
}
