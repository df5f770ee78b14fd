//! CPython's `ScalableSelectorMixIn.test_above_fd_setsize`: poll and epoll
//! watch more than `FD_SETSIZE` (1,024) descriptors and report each one
//! correctly; select refuses the ones at or above the limit at `register`
//! and keeps working with the others.

mod common;

use common::{open, raise_fd_limit, raw, select_all, socketpair, BackendUnderTest};
use rselectors::{BackendKind, Error, Events, Fd};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// Socket pairs per test: 2,200 descriptors, well above FD_SETSIZE.
const PAIRS: usize = 1_100;

// One instance at a time, so the descriptor limit needs room for one.
per_backend!(above_fd_setsize: exclusive);

fn above_fd_setsize<M: BackendUnderTest>() {
    let limit = libc::FD_SETSIZE as RawFd;
    if let Err(why) = raise_fd_limit(2 * PAIRS as u64 + 256) {
        println!("skipped: cannot raise RLIMIT_NOFILE: {why}");
        return;
    }
    let pairs: Vec<_> = (0..PAIRS).map(|_| socketpair()).collect();
    let mut sel = open::<M, Fd, usize>();
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    let mut refused = 0;
    for (i, (rd, wr)) in pairs.iter().enumerate() {
        for (end, events) in [(rd, Events::READ), (wr, Events::WRITE)] {
            let fd = end.as_raw_fd();
            match sel.register(raw(end), events, i) {
                Ok(_) if events == Events::READ => readers.push((i, fd)),
                Ok(_) => writers.push(fd),
                Err(rejected) => {
                    assert_eq!(M::KIND, BackendKind::Select, "{:?}", rejected.error);
                    assert!(
                        matches!(rejected.error, Error::FdOutOfRange { fd: f, limit: l } if f == fd && l == limit),
                        "{:?}",
                        rejected.error
                    );
                    refused += 1;
                }
            }
        }
    }
    let highest = sel.get_map().fds().max().unwrap();
    if M::KIND == BackendKind::Select {
        assert!(
            refused > 0 && highest < limit,
            "{refused} refused, highest {highest}"
        );
    } else {
        assert_eq!(refused, 0);
        assert!(highest >= 2 * limit, "highest fd {highest}");
    }
    assert_eq!(sel.len(), 2 * PAIRS - refused);

    // Every writer is ready; so is every other reader, once written to.
    let mut expected: Vec<_> = writers.iter().map(|&fd| (fd, Events::WRITE)).collect();
    for &(i, fd) in &readers {
        if i % 2 == 0 {
            (&pairs[i].1).write_all(b"x").unwrap();
            expected.push((fd, Events::READ));
        }
    }
    expected.sort_by_key(|&(fd, _)| fd);
    let ready = select_all(&mut sel, Duration::from_secs(5));
    assert_eq!(ready.len(), expected.len());
    assert_eq!(ready, expected);
    for &(fd, _) in &ready {
        let key = sel.get_key(fd).unwrap();
        assert_eq!(key.fileobj, Fd(fd));
    }

    // Read it all: only the writers remain ready.
    for &(i, _) in &readers {
        if i % 2 == 0 {
            let mut byte = [0];
            (&pairs[i].0).read_exact(&mut byte).unwrap();
        }
    }
    expected.retain(|&(_, events)| events == Events::WRITE);
    assert_eq!(select_all(&mut sel, Duration::from_secs(5)), expected);
}
