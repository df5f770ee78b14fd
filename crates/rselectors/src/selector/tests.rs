//! Waits longer than one system call can make. In unit tests one wait is
//! cut to 50 ms (`MAX_WAIT`), so a timeout of 200 ms takes the turns that a
//! timeout beyond 24.8 days takes in a program.

use crate::sys::MAX_WAIT;
use crate::{AnySelector, BackendKind, Events};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

/// Four turns of `MAX_WAIT`.
const LONG: Duration = Duration::from_millis(200);
/// When the writer of the tests that wait for an event writes: after two
/// turns, so a wait that ended at its first turn is seen.
const WRITE_AFTER: Duration = Duration::from_millis(120);
/// The three ways to wait: `select`, `select_once`, a detached wait.
const WAYS: [&str; 3] = ["select", "select_once", "detached"];

/// Waits on `sel` the way named `how`; returns what it found.
fn wait(sel: &mut AnySelector<UnixStream, ()>, how: &str, timeout: Duration) -> usize {
    match how {
        "select" => sel.select(Some(timeout)).unwrap(),
        "select_once" => sel.select_once(Some(timeout)).unwrap(),
        _ => {
            let mut detached = sel.detach_wait().unwrap();
            detached.wait(Some(timeout)).unwrap();
            sel.attach_wait(detached).unwrap()
        }
    }
}

/// A selector of `kind` watching the read end of a new socket pair;
/// returns it with the other end.
fn watching(kind: BackendKind) -> (AnySelector<UnixStream, ()>, UnixStream) {
    let (end, peer) = UnixStream::pair().unwrap();
    let mut sel = AnySelector::with_kind(kind).unwrap();
    sel.register(end, Events::READ, ()).unwrap();
    (sel, peer)
}

#[test]
fn a_wait_longer_than_one_call_lasts_its_whole_timeout() {
    assert_eq!(MAX_WAIT, Duration::from_millis(50));
    for &kind in BackendKind::ALL {
        let (mut sel, _peer) = watching(kind);
        for how in WAYS {
            let start = Instant::now();
            let found = wait(&mut sel, how, LONG);
            let elapsed = start.elapsed();
            assert_eq!(found, 0, "{kind} {how}");
            assert!(elapsed >= LONG, "{kind} {how}: over after {elapsed:?}");
            assert!(elapsed < LONG + Duration::from_secs(5), "{kind} {how}");
        }
    }
}

/// A long wait ends with the first event, in whichever turn it comes;
/// `Duration::MAX` (past what `Instant` can hold) waits without limit.
#[test]
fn a_long_wait_ends_with_the_first_event() {
    for &kind in BackendKind::ALL {
        let (mut sel, peer) = watching(kind);
        let fd = sel.get_map().fds().next().unwrap();
        for how in WAYS {
            for timeout in [Duration::from_secs(60), Duration::MAX] {
                let mut writer = peer.try_clone().unwrap();
                let write = thread::spawn(move || {
                    thread::sleep(WRITE_AFTER);
                    writer.write_all(b"x").unwrap();
                });
                let start = Instant::now();
                let found = wait(&mut sel, how, timeout);
                let elapsed = start.elapsed();
                write.join().unwrap();
                assert_eq!(found, 1, "{kind} {how} {timeout:?}: after {elapsed:?}");
                assert!(elapsed >= WRITE_AFTER, "{kind} {how}: {elapsed:?}");
                assert_eq!(sel.next_ready(), Some((fd, Events::READ)));
                let mut byte = [0];
                (&sel.get_key(fd).unwrap().fileobj)
                    .read_exact(&mut byte)
                    .unwrap();
            }
        }
        // Ready already: no wait at all, whatever the timeout.
        (&peer).write_all(b"x").unwrap();
        for how in WAYS {
            let start = Instant::now();
            assert_eq!(wait(&mut sel, how, Duration::MAX), 1, "{kind} {how}");
            assert!(start.elapsed() < Duration::from_secs(5));
        }
    }
}
