//! The `open+reg` workload: a new selector, one registration at a high
//! descriptor number, unregister, close. Python's `subprocess.communicate()`
//! does this at every call, in processes that may hold thousands of files,
//! so the number can be high while one descriptor is registered; the
//! Python benchmark sets the standard library's cost beside it.
//!
//! Rows for descriptor 19,999 and 999,999, those the descriptor limit
//! allows. The select backend is left out: it refuses descriptors at or
//! above `FD_SETSIZE`.

use crate::contenders::Contender;
use crate::peers::mio_view;
use mio::{Interest, Token};
use rselectors::{AnySelector, Backend, BackendKind, Events, Fd, Selector};
use std::hint::black_box;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The descriptor numbers of the rows, where the limit allows them.
const NUMBERS: [RawFd; 2] = [19_999, 999_999];

/// Duplicates of `file` at each of [`NUMBERS`] below `limit` (the soft
/// `RLIMIT_NOFILE`), for as long as the workload runs. Prints the numbers
/// it had to leave out.
pub(crate) fn high_descriptors(file: &impl AsRawFd, limit: usize) -> Vec<OwnedFd> {
    let mut found = Vec::new();
    for fd in NUMBERS {
        if fd as usize >= limit {
            println!("open+reg at fd {fd} skipped: RLIMIT_NOFILE is {limit}");
            continue;
        }
        // SAFETY: F_DUPFD_CLOEXEC takes an integer argument and only creates
        // a descriptor, which nothing else owns when OwnedFd takes it.
        let new = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, fd) };
        if new != fd {
            let why = io::Error::last_os_error();
            println!("open+reg at fd {fd} skipped: F_DUPFD gave {new} ({why})");
            if new >= 0 {
                // SAFETY: as above: `new` is ours alone; this closes it.
                drop(unsafe { OwnedFd::from_raw_fd(new) });
            }
            continue;
        }
        // SAFETY: as above.
        found.push(unsafe { OwnedFd::from_raw_fd(new) });
    }
    found
}

/// Every contender of the workload, for descriptor `fd`.
pub(crate) fn contenders(fd: RawFd) -> Vec<Box<dyn Contender>> {
    let short = |name: &'static str, cycle: fn(RawFd)| -> Box<dyn Contender> {
        Box::new(ShortLived { name, fd, cycle })
    };
    vec![
        short("epoll", ours::<rselectors::sys::epoll::EpollBackend>),
        short("poll", ours::<rselectors::sys::poll::PollBackend>),
        short("any_epoll", any_epoll),
        short("raw_epoll", raw_epoll),
        short("mio", mio),
    ]
}

/// One contender: `cycle` opens, registers `fd`, unregisters and closes.
struct ShortLived {
    name: &'static str,
    fd: RawFd,
    cycle: fn(RawFd),
}

impl Contender for ShortLived {
    fn name(&self) -> &'static str {
        self.name
    }

    fn round(&mut self) -> (usize, u64) {
        unreachable!("the open+reg workload times register_pair only")
    }

    fn register_pair(&mut self) {
        (self.cycle)(self.fd);
    }
}

fn ours<B: Backend>(fd: RawFd) {
    cycle(Selector::<B, Fd, u64>::new().expect("open"), fd);
}

fn any_epoll(fd: RawFd) {
    cycle(
        AnySelector::with_kind(BackendKind::Epoll).expect("open"),
        fd,
    );
}

fn cycle<B: Backend>(mut sel: Selector<B, Fd, u64>, fd: RawFd) {
    sel.register(Fd(fd), Events::READ, 7)
        .map_err(|r| r.into_error())
        .expect("register");
    black_box(sel.unregister(fd).expect("unregister"));
    sel.close();
}

/// The floor: the four system calls, and no table at all.
fn raw_epoll(fd: RawFd) {
    // SAFETY: epoll_create1 takes no pointers; a non-negative result is a
    // new descriptor that nothing else owns.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(epfd >= 0, "epoll_create1: {}", io::Error::last_os_error());
    // SAFETY: see above.
    let epfd = unsafe { OwnedFd::from_raw_fd(epfd) };
    for op in [libc::EPOLL_CTL_ADD, libc::EPOLL_CTL_DEL] {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: `epfd` is our open epoll descriptor; `event` is a live
        // epoll_event the kernel only reads.
        let ret = unsafe { libc::epoll_ctl(epfd.as_raw_fd(), op, fd, &mut event) };
        assert_eq!(ret, 0, "epoll_ctl: {}", io::Error::last_os_error());
    }
}

fn mio(fd: RawFd) {
    let poll = mio::Poll::new().expect("mio::Poll::new");
    let mut source = mio_view(fd);
    let registry = poll.registry();
    registry
        .register(&mut *source, Token(0), Interest::READABLE)
        .expect("mio register");
    registry.deregister(&mut *source).expect("mio deregister");
}
