//! `close`, dropping, `get_key`, `get_map` and `fileno`: CPython's
//! `test_close`, `test_context_manager`, `test_get_key`, `test_get_map`
//! and `test_fileno`; and a `close` whose file object panics in `Drop`.

use crate::common::{open, quirks, socketpair, BackendUnderTest};
use rselectors::{Error, ErrorKind, Events};
use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

crate::per_backend!(
    close_makes_every_call_fail,
    drop_closes_the_owned_file_objects,
    get_key_and_get_key_mut,
    get_map_is_a_live_read_only_view,
    get_map_iterates_in_descriptor_order,
    fileno_is_the_kernel_object,
    close_survives_a_panicking_drop,
);

/// True once the peer of `stream` was closed (a read returns end of file).
fn peer_closed(mut stream: &UnixStream) -> bool {
    let mut buf = [0; 16];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == IoErrorKind::WouldBlock => false,
        Err(e) => panic!("read: {e}"),
    }
}

fn assert_closed<T: std::fmt::Debug>(result: Result<T, Error>) {
    let error = result.unwrap_err();
    assert!(matches!(error, Error::Closed), "{error:?}");
    assert_eq!(error.kind(), ErrorKind::Runtime);
}

/// CPython's `test_close`: afterwards every call raises RuntimeError, and
/// `close` itself may be called again.
fn close_makes_every_call_fail<M: BackendUnderTest>() {
    let mut sel = open::<M, UnixStream, u32>();
    let (rd, rd_peer) = socketpair();
    let (wr, wr_peer) = socketpair();
    let (rfd, wfd) = (rd.as_raw_fd(), wr.as_raw_fd());
    sel.register(rd, Events::READ, 1).unwrap();
    sel.register(wr, Events::WRITE, 2).unwrap();
    // Leave an event untaken: close drops it.
    assert_eq!(sel.select(Some(Duration::from_secs(5))).unwrap(), 1);

    sel.close();
    assert!(sel.is_closed());
    sel.close();
    assert!(sel.is_closed());

    assert_eq!(sel.next_ready(), None);
    assert_eq!(sel.ready_keys().count(), 0);
    assert_closed(sel.get_key(rfd).map(|_| ()));
    assert_closed(sel.get_key(wfd).map(|_| ()));
    assert_closed(sel.get_key_mut(rfd).map(|_| ()));
    assert_closed(sel.unregister(rfd).map(|_| ()));
    assert_closed(sel.modify(rfd, Events::WRITE, 3).map(|_| ()));
    assert_closed(sel.modify_events(rfd, Events::WRITE).map(|_| ()));
    assert_closed(sel.select(Some(Duration::ZERO)));
    assert_closed(sel.select(None));
    assert_closed(sel.select_once(None));
    assert_closed(sel.fileno());
    assert_eq!(sel.backend_name(), None);

    // The map is empty (CPython: the old mapping raises KeyError).
    let map = sel.get_map();
    assert!(map.is_empty() && map.get(rfd).is_none() && !map.contains_key(wfd));
    assert_eq!((sel.len(), sel.is_empty()), (0, true));

    // register refuses, and hands the file object and data back.
    let (new, _new_peer) = socketpair();
    let new_fd = new.as_raw_fd();
    let rejected = sel.register(new, Events::READ, 4).unwrap_err();
    assert!(matches!(rejected.error, Error::Closed));
    assert_eq!((rejected.fileobj.as_raw_fd(), rejected.data), (new_fd, 4));

    // The selector owned both sockets: closing it closed them.
    assert!(peer_closed(&rd_peer));
    assert!(peer_closed(&wr_peer));
}

/// CPython's `test_context_manager`: leaving the scope closes the selector
/// and what it owns.
fn drop_closes_the_owned_file_objects<M: BackendUnderTest>() {
    let (rd, rd_peer) = socketpair();
    let (wr, wr_peer) = socketpair();
    {
        let mut sel = open::<M, UnixStream, ()>();
        sel.register(rd, Events::READ, ()).unwrap();
        sel.register(wr, Events::WRITE, ()).unwrap();
        assert!(!peer_closed(&rd_peer));
    }
    assert!(peer_closed(&rd_peer));
    assert!(peer_closed(&wr_peer));
}

/// CPython's `test_get_key`, and mutable access to the file object and data.
fn get_key_and_get_key_mut<M: BackendUnderTest>() {
    let mut sel = open::<M, UnixStream, String>();
    let (rd, mut peer) = socketpair();
    let fd = rd.as_raw_fd();
    sel.register(rd, Events::READ, "data".to_owned()).unwrap();
    let key = sel.get_key(fd).unwrap();
    assert_eq!(
        (key.fd, key.events, key.data.as_str()),
        (fd, Events::READ, "data")
    );
    assert_eq!(key.fileobj.as_raw_fd(), fd);

    for unknown in [999_999, fd + 1000] {
        let error = sel.get_key(unknown).unwrap_err();
        assert!(matches!(error, Error::NotRegistered(f) if f == unknown));
        assert_eq!(error.kind(), ErrorKind::Key);
        assert!(matches!(
            sel.get_key_mut(unknown),
            Err(Error::NotRegistered(_))
        ));
    }

    let key = sel.get_key_mut(fd).unwrap();
    assert_eq!((key.fd, key.events), (fd, Events::READ));
    key.data.push_str(" changed");
    key.fileobj.write_all(b"hi").unwrap();
    assert_eq!(sel.get_key(fd).unwrap().data, "data changed");
    let mut buf = [0; 2];
    peer.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi");
}

/// CPython's `test_get_map`: a read-only view that follows the selector.
fn get_map_is_a_live_read_only_view<M: BackendUnderTest>() {
    let mut sel = open::<M, UnixStream, &str>();
    let (rd, wr) = socketpair();
    let (rfd, wfd) = (rd.as_raw_fd(), wr.as_raw_fd());

    let map = sel.get_map();
    assert!(map.is_empty());
    assert_eq!(map.len(), 0);
    assert_eq!(map.iter().count(), 0);

    sel.register(rd, Events::READ, "data").unwrap();
    let map = sel.get_map();
    assert!(map.contains_key(rfd));
    assert!(!map.contains_key(wfd) && !map.contains_key(999_999) && !map.contains_key(-1));
    let key = map.get(rfd).unwrap();
    assert_eq!((key.fd, key.events, key.data), (rfd, Events::READ, "data"));
    assert_eq!(map.len(), 1);
    assert_eq!(map.fds().collect::<Vec<_>>(), [rfd]);
    assert_eq!(map.iter().map(|k| k.data).collect::<Vec<_>>(), ["data"]);
    assert!(map.get(999_999).is_none());

    sel.register(wr, Events::WRITE, "other").unwrap();
    let map = sel.get_map();
    assert_eq!(map.len(), 2);
    assert_eq!(map.iter().len(), 2);
    let mut fds: Vec<_> = map.fds().collect();
    fds.sort();
    let mut expected = [rfd, wfd];
    expected.sort();
    assert_eq!(fds, expected);
    let mut seen: Vec<_> = map.into_iter().map(|k| (k.fd, k.events, k.data)).collect();
    seen.sort_by_key(|&(fd, _, _)| fd);
    let mut want = vec![(rfd, Events::READ, "data"), (wfd, Events::WRITE, "other")];
    want.sort_by_key(|&(fd, _, _)| fd);
    assert_eq!(seen, want);

    sel.unregister(rfd).unwrap();
    let map = sel.get_map();
    assert_eq!(map.len(), 1);
    assert!(!map.contains_key(rfd) && map.contains_key(wfd));
    assert_eq!(map.fds().collect::<Vec<_>>(), [wfd]);
    assert_eq!(sel.len(), 1);
}

/// Ours, not CPython's (a dict keeps insertion order): the table is
/// indexed by descriptor, so `get_map` yields keys by ascending fd, skips
/// unregistered numbers, and knows exactly how many keys are left.
fn get_map_iterates_in_descriptor_order<M: BackendUnderTest>() {
    let mut sel = open::<M, UnixStream, usize>();
    let mut streams: Vec<UnixStream> = Vec::new();
    for _ in 0..3 {
        let (a, b) = socketpair();
        streams.push(a);
        streams.push(b);
    }
    let mut fds: Vec<_> = streams.iter().map(|s| s.as_raw_fd()).collect();
    // Registered highest first, so insertion order is the reverse of fd order.
    for (data, stream) in streams.into_iter().rev().enumerate() {
        sel.register(stream, Events::READ, data).unwrap();
    }
    fds.sort();
    assert_eq!(sel.get_map().fds().collect::<Vec<_>>(), fds);

    sel.unregister(fds[2]).unwrap();
    fds.remove(2);
    let map = sel.get_map();
    assert_eq!(map.fds().collect::<Vec<_>>(), fds);
    let mut keys = map.iter();
    assert_eq!(keys.len(), 5);
    assert_eq!(keys.next().map(|k| k.fd), Some(fds[0]));
    assert_eq!(keys.size_hint(), (4, Some(4)));
    assert_eq!(keys.map(|k| k.fd).collect::<Vec<_>>(), fds[1..]);
}

/// CPython's `test_fileno`: epoll has a kernel object, select and poll none.
fn fileno_is_the_kernel_object<M: BackendUnderTest>() {
    let sel = open::<M, UnixStream, ()>();
    let other = open::<M, UnixStream, ()>();
    match (sel.fileno().unwrap(), other.fileno().unwrap()) {
        (Some(fd), Some(other_fd)) => {
            assert!(quirks(M::KIND).kernel_object, "{:?}", M::KIND);
            assert!(fd >= 0 && other_fd >= 0 && fd != other_fd);
        }
        (None, None) => assert!(!quirks(M::KIND).kernel_object, "{:?}", M::KIND),
        mixed => panic!("{mixed:?}"),
    }
}

/// A file object that counts its drops, and panics in one if told to.
struct Touchy {
    stream: UnixStream,
    panics: bool,
    dropped: Arc<AtomicUsize>,
}

impl AsRawFd for Touchy {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

impl Drop for Touchy {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
        if self.panics && !std::thread::panicking() {
            panic!("a file object's Drop panicked");
        }
    }
}

/// A file object's `Drop` that panics while `close` drops the keys leaves
/// a selector that is closed, empty and consistent: every other key was
/// dropped, the map and the count agree, every call reports it closed.
fn close_survives_a_panicking_drop<M: BackendUnderTest>() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let mut sel = open::<M, Touchy, u32>();
    let mut peers = Vec::new();
    let mut fds = Vec::new();
    for i in 0..3 {
        let (stream, peer) = socketpair();
        let dropped = Arc::clone(&dropped);
        let touchy = Touchy {
            stream,
            panics: i == 1,
            dropped,
        };
        fds.push(sel.register(touchy, Events::WRITE, i).unwrap().fd);
        peers.push(peer);
    }
    assert_eq!(sel.select(Some(Duration::from_secs(5))).unwrap(), 3);

    let unwound = catch_unwind(AssertUnwindSafe(|| sel.close()));
    assert!(unwound.is_err(), "the Drop did panic");
    assert_eq!(dropped.load(Ordering::SeqCst), 3, "every key was dropped");
    assert!(sel.is_closed());
    assert_eq!((sel.len(), sel.is_empty()), (0, true));
    let map = sel.get_map();
    assert_eq!((map.len(), map.iter().len(), map.iter().count()), (0, 0, 0));
    assert!(!map.contains_key(fds[0]));
    assert_eq!(sel.next_ready().map(|(fd, _)| fd), None);
    assert_closed(sel.get_key(fds[2]).map(|_| ()));
    assert_closed(sel.select(Some(Duration::ZERO)));
    let (stream, _peer) = socketpair();
    let again = Touchy {
        stream,
        panics: false,
        dropped: Arc::clone(&dropped),
    };
    assert_closed(
        sel.register(again, Events::READ, 9)
            .map_err(|r| r.error)
            .map(|_| ()),
    );
    sel.close();
    // The rejected file object came back in `Rejected` and was dropped.
    assert_eq!(dropped.load(Ordering::SeqCst), 4);
    for peer in &peers {
        assert!(peer_closed(peer), "the selector closed its file objects");
    }
}
