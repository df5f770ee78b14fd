//! `select`: CPython's `test_select`, `test_select_read_write`,
//! `test_selector`, `test_empty_select`, `test_timeout`,
//! `test_select_interrupt_*` and `test_empty_select_timeout`, plus
//! timeout conversion, hang-up reporting, `Waker` and `FD_SETSIZE`.

use crate::common::{
    by_fd, dup_at_least, install_sigalrm_counter, open, pipe, quirks, raise_fd_limit, raw,
    select_all, send_sigalrm, sigalrms_seen, socketpair, BackendUnderTest, ClosedFile, XorShift,
};
use rselectors::{Backend, BackendKind, Error, ErrorKind, Events, Fd, Selector, Waker};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// A bound for waits that should end at once: generous, never asserted tight.
const SOON: Duration = Duration::from_secs(5);

crate::per_backend!(
    select_reports_what_is_ready,
    select_read_write_in_one_call,
    selector_passes_messages_between_pairs,
    empty_select,
    timeouts_zero_none_and_positive,
    tiny_timeout_is_rounded_up,
    huge_timeout_does_not_wrap,
    eintr_is_retried_with_the_remaining_time,
    eintr_is_retried_without_timeout,
    select_once_returns_eintr,
    hang_up_and_errors_reported_as_cpython,
    waker_wakes_a_select_blocked_in_another_thread,
    fd_setsize,
    select_with_an_fd_closed_behind_the_back: exclusive,
);

/// CPython's `test_select`.
fn select_reports_what_is_ready<M: BackendUnderTest>() {
    let mut sel = open::<M, UnixStream, &str>();
    let (rd, wr) = socketpair();
    let wfd = wr.as_raw_fd();
    sel.register(rd, Events::READ, "rd").unwrap();
    sel.register(wr, Events::WRITE, "wr").unwrap();

    assert_eq!(sel.select(None).unwrap(), 1);
    let ready: Vec<_> = sel
        .ready_keys()
        .map(|(key, events)| (key.fd, key.data, events))
        .collect();
    assert_eq!(ready, [(wfd, "wr", Events::WRITE)]);
    assert_eq!(sel.next_ready(), Some((wfd, Events::WRITE)));
    assert_eq!(sel.next_ready(), None);
    assert_eq!(sel.ready_keys().count(), 0);
}

/// CPython's `test_select_read_write` (gh-110038): both events of one fd in
/// one call; each bit seen once.
fn select_read_write_in_one_call<M: BackendUnderTest>() {
    let mut sel = open::<M, UnixStream, ()>();
    let (sock1, mut sock2) = socketpair();
    let fd = sock1.as_raw_fd();
    sock2.write_all(b"foo").unwrap();
    sel.register(sock1, Events::READ | Events::WRITE, ())
        .unwrap();

    let n = sel.select(None).unwrap();
    assert!((1..=2).contains(&n), "{n}");
    let (mut seen_read, mut seen_write) = (false, false);
    while let Some((ready_fd, events)) = sel.next_ready() {
        assert_eq!(ready_fd, fd);
        assert!(!events.is_empty() && (Events::READ | Events::WRITE).contains(events));
        if events.contains(Events::READ) {
            assert!(!seen_read);
            seen_read = true;
        }
        if events.contains(Events::WRITE) {
            assert!(!seen_write);
            seen_write = true;
        }
    }
    assert!(seen_read && seen_write);
}

/// CPython's `test_selector`: messages through 12 socket pairs, one at a
/// time, to a writer chosen among the ready ones.
fn selector_passes_messages_between_pairs<M: BackendUnderTest>() {
    const NUM_SOCKETS: usize = 12;
    const MSG: &[u8] = b" This is a test.";
    let mut sel = open::<M, UnixStream, usize>();
    let mut peer_of = std::collections::HashMap::new();
    let mut writers = Vec::new();
    for i in 0..NUM_SOCKETS {
        let (rd, wr) = socketpair();
        let (rfd, wfd) = (rd.as_raw_fd(), wr.as_raw_fd());
        peer_of.insert(wfd, rfd);
        peer_of.insert(rfd, wfd);
        sel.register(rd, Events::READ, i).unwrap();
        sel.register(wr, Events::WRITE, i).unwrap();
        writers.push(wfd);
    }
    let mut random = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut bufs = Vec::new();
    while !writers.is_empty() {
        let ready = select_all(&mut sel, SOON);
        let ready_writers: Vec<_> = ready
            .iter()
            .filter(|(_, events)| events.contains(Events::WRITE))
            .map(|&(fd, _)| fd)
            .collect();
        assert!(!ready_writers.is_empty(), "no sockets ready for writing");
        let wfd = ready_writers[random.below(ready_writers.len())];
        let key = sel.get_key_mut(wfd).unwrap();
        key.fileobj.write_all(MSG).unwrap();

        let ready_readers: Vec<_> = select_all(&mut sel, SOON)
            .into_iter()
            .filter(|(_, events)| events.contains(Events::READ))
            .map(|(fd, _)| fd)
            .collect();
        assert_eq!(ready_readers, [peer_of[&wfd]]);
        let rfd = ready_readers[0];
        let mut buf = [0; MSG.len()];
        sel.get_key_mut(rfd)
            .unwrap()
            .fileobj
            .read_exact(&mut buf)
            .unwrap();
        bufs.push(buf);
        sel.unregister(wfd).unwrap();
        sel.unregister(rfd).unwrap();
        writers.retain(|&w| w != wfd);
    }
    assert!(bufs.iter().all(|b| b == MSG) && bufs.len() == NUM_SOCKETS);
    assert!(sel.is_empty());
}

/// CPython's `test_empty_select` and kqueue's `test_empty_select_timeout`:
/// nothing registered, the timeout still applies.
fn empty_select<M: BackendUnderTest>() {
    let mut sel = open::<M, UnixStream, ()>();
    assert_eq!(sel.select(Some(Duration::ZERO)).unwrap(), 0);
    times_out_empty(&mut sel, Duration::from_millis(50));
    assert_eq!(sel.next_ready(), None);
}

/// CPython's `test_timeout`.
fn timeouts_zero_none_and_positive<M: BackendUnderTest>() {
    let mut sel = open::<M, UnixStream, ()>();
    let (rd, wr) = socketpair();
    let (rfd, wfd) = (rd.as_raw_fd(), wr.as_raw_fd());
    sel.register(wr, Events::WRITE, ()).unwrap();
    let start = Instant::now();
    assert_eq!(sel.select(Some(Duration::ZERO)).unwrap(), 1);
    assert_eq!(sel.select(None).unwrap(), 1);
    assert_eq!(sel.select(Some(Duration::MAX)).unwrap(), 1);
    assert!(start.elapsed() < SOON);

    // Keep the returned socket: dropping it would hang up `rd`'s peer.
    let _wr = sel.unregister(wfd).unwrap();
    sel.register(rd, Events::READ, ()).unwrap();
    let start = Instant::now();
    assert_eq!(sel.select(Some(Duration::ZERO)).unwrap(), 0);
    assert!(start.elapsed() < SOON);

    times_out_empty(&mut sel, Duration::from_millis(200));
    assert!(sel.get_key(rfd).is_ok());
}

/// A timeout below the backend's resolution is rounded up, never truncated
/// to a zero-time poll: select(2) counts microseconds, poll(2),
/// epoll_wait(2) and /dev/poll milliseconds, kevent(2) nanoseconds.
fn tiny_timeout_is_rounded_up<M: BackendUnderTest>() {
    let mut sel = open::<M, UnixStream, ()>();
    let (rd, _wr) = socketpair();
    sel.register(rd, Events::READ, ()).unwrap();
    let resolution = match M::KIND.name() {
        "select" => Duration::from_micros(1),
        // kevent(2) takes a timespec, as CPython's KqueueSelector passes it.
        "kqueue" => Duration::from_nanos(1),
        _ => Duration::from_millis(1),
    };
    for timeout in [
        Duration::from_nanos(1),
        Duration::from_micros(1),
        Duration::from_nanos(1_001),
        Duration::from_micros(999),
    ] {
        let start = Instant::now();
        assert_eq!(sel.select(Some(timeout)).unwrap(), 0);
        let elapsed = start.elapsed();
        assert!(
            elapsed >= timeout && elapsed >= resolution,
            "{timeout:?} took {elapsed:?}"
        );
    }
}

/// A huge timeout must not wrap around when converted: `Duration::MAX` with
/// a ready fd returns at once, and a timeout whose milliseconds overflow a
/// C int (to a short wait if truncated) is ended by a `Waker`, not by time.
fn huge_timeout_does_not_wrap<M: BackendUnderTest>() {
    let mut sel = open::<M, Fd, &str>();
    let (rd, _wr) = socketpair();
    let waker = Waker::new().unwrap();
    sel.register(raw(&rd), Events::READ | Events::WRITE, "ready")
        .unwrap();
    let start = Instant::now();
    assert_eq!(
        select_all(&mut sel, Duration::MAX),
        [(rd.as_raw_fd(), Events::WRITE)]
    );
    assert!(start.elapsed() < SOON);

    sel.modify_events(rd.as_raw_fd(), Events::READ).unwrap();
    sel.register(raw(&waker), Events::READ, "waker").unwrap();
    let c_int_ms = 1u64 << 32;
    for timeout in [
        Duration::from_millis(c_int_ms + 5),
        Duration::from_millis(c_int_ms / 2 + 5),
        Duration::from_secs(u64::MAX / 4),
        Duration::MAX,
    ] {
        let remote = waker.clone();
        let start = Instant::now();
        let wake = thread::spawn(move || {
            thread::sleep(Duration::from_millis(60));
            remote.wake().unwrap();
        });
        let result = sel.select(Some(timeout));
        let elapsed = start.elapsed();
        wake.join().unwrap();
        assert_eq!(result.unwrap(), 1, "{timeout:?} ended after {elapsed:?}");
        assert!(
            elapsed >= Duration::from_millis(60),
            "{timeout:?}: {elapsed:?}"
        );
        assert_eq!(sel.next_ready(), Some((waker.as_raw_fd(), Events::READ)));
        assert!(waker.reset().unwrap());
    }
}

/// Runs `body` on a new thread while this one sends it SIGALRM every 20 ms
/// until it returns (at most 10 s of signals). Returns what `body` returned
/// and how many SIGALRMs the thread handled.
fn under_sigalrm<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> (T, usize) {
    install_sigalrm_counter();
    let done = Arc::new(AtomicBool::new(false));
    let finished = Arc::clone(&done);
    let handle = thread::spawn(move || {
        let value = body();
        finished.store(true, Ordering::SeqCst);
        (value, sigalrms_seen())
    });
    for _ in 0..500 {
        if done.load(Ordering::SeqCst) {
            break;
        }
        send_sigalrm(handle.as_pthread_t());
        thread::sleep(Duration::from_millis(20));
    }
    handle.join().unwrap()
}

/// CPython's `test_select_interrupt_noraise` (PEP 475): a signal whose
/// handler returns does not end the wait; it resumes with what remains.
fn eintr_is_retried_with_the_remaining_time<M: BackendUnderTest>() {
    let (rd, wr) = socketpair();
    let timeout = Duration::from_millis(500);
    let ((result, elapsed), signals) = under_sigalrm(move || {
        let mut sel = open::<M, UnixStream, ()>();
        sel.register(rd, Events::READ, ()).unwrap();
        let start = Instant::now();
        let result = sel.select(Some(timeout)).map_err(|e| e.to_string());
        (result, start.elapsed())
    });
    drop(wr);
    assert!(signals >= 1, "no signal arrived during the wait");
    assert_eq!(result, Ok(0));
    assert!(elapsed >= timeout, "cut short by a signal: {elapsed:?}");
    // Each retry waits for what remains, not for the whole timeout again
    // (signals keep coming for up to 10 s otherwise).
    assert!(elapsed < timeout + SOON, "{elapsed:?}");
}

/// `select(None)` retries too, and so do waits longer than one system
/// call can make (24.8 days, waited in turns), `Duration::MAX` included; a
/// `Waker` ends them.
fn eintr_is_retried_without_timeout<M: BackendUnderTest>() {
    for timeout in [None, Some(THIRTY_DAYS), Some(Duration::MAX)] {
        let waker = Waker::new().unwrap();
        let registered = waker.clone();
        let (started_tx, started_rx) = mpsc::channel();
        let remote = waker.clone();
        let stopper = thread::spawn(move || {
            started_rx.recv().unwrap();
            thread::sleep(Duration::from_millis(300));
            remote.wake().unwrap();
        });
        let ((result, elapsed), signals) = under_sigalrm(move || {
            let mut sel = open::<M, Waker, ()>();
            sel.register(registered, Events::READ, ()).unwrap();
            let start = Instant::now();
            started_tx.send(()).unwrap();
            let result = sel.select(timeout).map_err(|e| e.to_string());
            (result, start.elapsed())
        });
        stopper.join().unwrap();
        assert!(
            signals >= 1,
            "{timeout:?}: no signal arrived during the wait"
        );
        assert_eq!(result, Ok(1), "{timeout:?}: after {elapsed:?}");
        assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    }
}

/// Longer than one system call can wait (`c_int::MAX` ms, 24.8 days).
const THIRTY_DAYS: Duration = Duration::from_secs(30 * 24 * 3600);

/// CPython's `test_select_interrupt_exc`: `select_once` hands `EINTR` to
/// the caller (Python runs its signal handlers then), well before the
/// timeout, however long.
fn select_once_returns_eintr<M: BackendUnderTest>() {
    let (rd, wr) = socketpair();
    let ((result, elapsed), _signals) = under_sigalrm(move || {
        let mut sel = open::<M, UnixStream, ()>();
        sel.register(rd, Events::READ, ()).unwrap();
        let start = Instant::now();
        let mut results = Vec::new();
        // Also when the wait takes turns (beyond 24.8 days, or no limit).
        for timeout in [Duration::from_secs(30), THIRTY_DAYS, Duration::MAX] {
            let result = sel
                .select_once(Some(timeout))
                .map_err(|e| (e.is_interrupted(), e.kind(), e.raw_os_error()));
            results.push(result);
        }
        (results, start.elapsed())
    });
    drop(wr);
    let eintr = Err((true, ErrorKind::Os, Some(libc::EINTR)));
    assert_eq!(result, [eintr; 3]);
    assert!(elapsed < SOON, "{elapsed:?}");
}

/// Hang-up and error conditions are reported as CPython reports them (a
/// condition other than writable wakes readers, one other than readable
/// wakes writers), masked by what each key asked for.
fn hang_up_and_errors_reported_as_cpython<M: BackendUnderTest>() {
    let mut sel = open::<M, Fd, ()>();
    let (reader, reader_peer) = socketpair();
    let (writer, writer_peer) = socketpair();
    let (both, both_peer) = socketpair();
    let (pipe_rd, pipe_wr) = pipe();
    let (orphan_rd, orphan_wr) = pipe();
    let (hung_rd, hung_wr) = pipe();
    let (quiet, _quiet_peer) = socketpair();
    sel.register(raw(&reader), Events::READ, ()).unwrap();
    sel.register(raw(&writer), Events::WRITE, ()).unwrap();
    sel.register(raw(&both), Events::READ | Events::WRITE, ())
        .unwrap();
    sel.register(raw(&pipe_rd), Events::READ, ()).unwrap();
    sel.register(raw(&orphan_wr), Events::WRITE, ()).unwrap();
    sel.register(raw(&hung_rd), Events::READ | Events::WRITE, ())
        .unwrap();
    // Writable but not readable, registered for READ: masked away.
    sel.register(raw(&quiet), Events::READ, ()).unwrap();
    assert_eq!(
        select_all(&mut sel, Duration::ZERO),
        by_fd(vec![
            (writer.as_raw_fd(), Events::WRITE),
            (both.as_raw_fd(), Events::WRITE),
            (orphan_wr.as_raw_fd(), Events::WRITE),
        ])
    );

    drop((
        reader_peer,
        writer_peer,
        both_peer,
        pipe_wr,
        orphan_rd,
        hung_wr,
    ));
    // A pipe's hang-up (POLLHUP) wakes writers too under poll and epoll;
    // select(2) counts it as readable only. CPython differs alike.
    let hung_up = if quirks(M::KIND).hang_up_wakes_writer {
        Events::READ | Events::WRITE
    } else {
        Events::READ
    };
    assert_eq!(
        select_all(&mut sel, SOON),
        by_fd(vec![
            (reader.as_raw_fd(), Events::READ),
            (writer.as_raw_fd(), Events::WRITE),
            (both.as_raw_fd(), Events::READ | Events::WRITE),
            (pipe_rd.as_raw_fd(), Events::READ),
            (orphan_wr.as_raw_fd(), Events::WRITE),
            (hung_rd.as_raw_fd(), hung_up),
        ])
    );
    // READ on a hung-up socket means end of file.
    assert_eq!((&reader).read(&mut [0; 8]).unwrap(), 0);
}

/// An fd closed behind the selector's back: each mechanism answers as it
/// does under CPython. select(2) fails with `EBADF`; poll(2) reports
/// `POLLNVAL`, which counts as both events (masked by the key); epoll
/// forgot the fd when it was closed and reports nothing for it.
fn select_with_an_fd_closed_behind_the_back<M: BackendUnderTest>() {
    let mut sel = open::<M, Fd, ()>();
    let (gone, _gone_peer) = socketpair();
    let (live, _live_peer) = socketpair();
    let (gone_fd, live_fd) = (gone.as_raw_fd(), live.as_raw_fd());
    sel.register(raw(&gone), Events::READ, ()).unwrap();
    sel.register(raw(&live), Events::WRITE, ()).unwrap();
    drop(gone);

    let result = sel
        .select(Some(Duration::ZERO))
        .map(|_| crate::common::drain(&mut sel));
    match quirks(M::KIND).closed_file {
        ClosedFile::FailsTheWait => {
            let error = result.unwrap_err();
            assert_eq!(error.raw_os_error(), Some(libc::EBADF), "{error:?}");
            assert_eq!(sel.next_ready(), None);
        }
        ClosedFile::ReportsBoth => assert_eq!(
            result.unwrap(),
            by_fd(vec![(gone_fd, Events::READ), (live_fd, Events::WRITE)])
        ),
        ClosedFile::Forgotten => assert_eq!(result.unwrap(), [(live_fd, Events::WRITE)]),
    }
    // Unregistering it mends everything.
    sel.unregister(gone_fd).unwrap();
    assert_eq!(select_all(&mut sel, SOON), [(live_fd, Events::WRITE)]);
}

/// The seeds' chat server: one thread sits in `select()`, another stops it.
fn waker_wakes_a_select_blocked_in_another_thread<M: BackendUnderTest>() {
    let waker = Waker::new().unwrap();
    let registered = waker.clone();
    let (started_tx, started_rx) = mpsc::channel();
    let selecting = thread::spawn(move || {
        let mut sel = open::<M, Waker, &str>();
        let fd = sel.register(registered, Events::READ, "waker").unwrap().fd;
        started_tx.send(()).unwrap();
        let start = Instant::now();
        let n = sel.select(Some(Duration::from_secs(30))).unwrap();
        let elapsed = start.elapsed();
        let events = crate::common::drain(&mut sel);
        assert_eq!(events, [(fd, Events::READ)]);
        // Woken until reset; reset says whether there was a wake-up.
        assert_eq!(sel.select(Some(Duration::ZERO)).unwrap(), 1);
        let waker = sel.get_key(fd).unwrap().fileobj.clone();
        assert!(waker.reset().unwrap());
        assert!(!waker.reset().unwrap());
        assert_eq!(sel.select(Some(Duration::ZERO)).unwrap(), 0);
        // A wake-up before the wait ends it at once; several count as one.
        waker.wake().unwrap();
        waker.wake().unwrap();
        let again = sel.select(Some(Duration::from_secs(30))).unwrap();
        (n, elapsed, again)
    });
    started_rx.recv().unwrap();
    thread::sleep(Duration::from_millis(50));
    waker.wake().unwrap();
    let (n, elapsed, again) = selecting.join().unwrap();
    assert_eq!((n, again), (1, 1));
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

/// select(2) cannot watch an fd >= FD_SETSIZE: `register` refuses it with
/// a clear error (CPython: ValueError). poll and epoll take it.
fn fd_setsize<M: BackendUnderTest>() {
    let limit = libc::FD_SETSIZE as i32;
    if let Err(why) = raise_fd_limit(limit as u64 + 64) {
        println!("skipped: {why}");
        return;
    }
    let (rd, mut peer) = socketpair();
    let high = dup_at_least(&rd, limit).unwrap();
    let high_fd = high.as_raw_fd();
    assert!(high_fd >= limit);
    let mut sel = open::<M, OwnedFd, ()>();
    if M::KIND == BackendKind::Select {
        let rejected = sel.register(high, Events::READ, ()).unwrap_err();
        assert!(
            matches!(rejected.error, Error::FdOutOfRange { fd, limit: l } if fd == high_fd && l == limit),
            "{:?}",
            rejected.error
        );
        assert_eq!(rejected.error.kind(), ErrorKind::Value);
        assert!(rejected.error.to_string().contains("out of range"));
        assert_eq!(rejected.fileobj.as_raw_fd(), high_fd);
        assert!(sel.is_empty());
        // Below the limit all is well.
        sel.register(OwnedFd::from(rd), Events::READ, ()).unwrap();
        peer.write_all(b"x").unwrap();
        assert_eq!(select_all(&mut sel, SOON).len(), 1);
    } else {
        sel.register(high, Events::READ, ()).unwrap();
        peer.write_all(b"x").unwrap();
        assert_eq!(select_all(&mut sel, SOON), [(high_fd, Events::READ)]);
    }
}

/// A `select(timeout)` that finds nothing returns 0 after the whole
/// timeout (and not much later).
fn times_out_empty<B: Backend, F: AsRawFd, D>(sel: &mut Selector<B, F, D>, timeout: Duration) {
    let start = Instant::now();
    assert_eq!(sel.select(Some(timeout)).unwrap(), 0);
    let elapsed = start.elapsed();
    assert!(
        elapsed >= timeout && elapsed < timeout + SOON,
        "{elapsed:?}"
    );
}
