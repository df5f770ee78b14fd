//! The peers our selectors are set against: a hand-written `epoll_wait`
//! loop on `libc` (the floor) and mio.

use crate::contenders::Contender;
use mio::{Interest, Token};
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// The floor: epoll with libc directly, fd in the event's data, per-fd data
/// in a `Vec` indexed by fd. What our front does, without the front.
pub(crate) struct RawEpoll {
    epfd: OwnedFd,
    events: Vec<libc::epoll_event>,
    data_by_fd: Vec<u64>,
    spare: RawFd,
}

impl RawEpoll {
    pub(crate) fn open(fds: &[RawFd], spare: RawFd) -> Box<dyn Contender> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a
        // new descriptor nobody else owns.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(epfd >= 0, "epoll_create1: {}", io::Error::last_os_error());
        // SAFETY: see above.
        let epfd = unsafe { OwnedFd::from_raw_fd(epfd) };
        let highest = fds.iter().copied().max().unwrap_or(0) as usize;
        let mut data_by_fd = vec![u64::MAX; highest + 1];
        let mut raw = RawEpoll {
            epfd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; fds.len().max(1)],
            data_by_fd: Vec::new(),
            spare,
        };
        for (i, &fd) in fds.iter().enumerate() {
            raw.ctl(libc::EPOLL_CTL_ADD, fd).expect("epoll_ctl ADD");
            data_by_fd[fd as usize] = i as u64;
        }
        raw.data_by_fd = data_by_fd;
        Box::new(raw)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: `epfd` is our open epoll descriptor; `event` is a live
        // epoll_event the kernel only reads.
        if unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Contender for RawEpoll {
    fn name(&self) -> &'static str {
        "raw_epoll"
    }

    fn round(&mut self) -> (usize, u64) {
        let max = self.events.len() as libc::c_int;
        // SAFETY: the buffer holds `max` initialised events the kernel may
        // overwrite; `epfd` is open.
        let n =
            unsafe { libc::epoll_wait(self.epfd.as_raw_fd(), self.events.as_mut_ptr(), max, 0) };
        assert!(n >= 0, "epoll_wait: {}", io::Error::last_os_error());
        let (mut count, mut sum) = (0, 0);
        for event in &self.events[..n as usize] {
            let (flags, fd) = (event.events, event.u64 as usize);
            if flags & libc::EPOLLIN as u32 != 0 {
                count += 1;
                sum += self.data_by_fd[fd];
            }
        }
        (count, sum)
    }

    fn register_pair(&mut self) {
        self.ctl(libc::EPOLL_CTL_ADD, self.spare)
            .expect("epoll_ctl ADD");
        self.ctl(libc::EPOLL_CTL_DEL, self.spare)
            .expect("epoll_ctl DEL");
    }
}

/// mio's `Poll`, token `i` for registration `i`, data in a token-indexed
/// `Vec` (a slab); `rearm` says whether each event is re-armed (see `NOTE`).
pub(crate) struct Mio {
    name: &'static str,
    poll: mio::Poll,
    events: mio::Events,
    data_by_token: Vec<u64>,
    stream_by_token: Vec<MioView>,
    rearm: bool,
    spare: MioView,
}

/// A pool socket as a mio source, without owning it. (mio's `SourceFd`
/// needs its `os-ext` feature, which the crate's dev-dependency leaves off.)
pub(crate) type MioView = ManuallyDrop<mio::net::UnixStream>;

pub(crate) fn mio_view(fd: RawFd) -> MioView {
    // SAFETY: `fd` is an open socket owned by the pool, which outlives every
    // contender; ManuallyDrop keeps this view from ever closing it.
    ManuallyDrop::new(unsafe { mio::net::UnixStream::from_raw_fd(fd) })
}

impl Mio {
    pub(crate) fn open(
        name: &'static str,
        fds: &[RawFd],
        spare: RawFd,
        rearm: bool,
    ) -> Box<dyn Contender> {
        let poll = mio::Poll::new().expect("mio::Poll::new");
        let mut stream_by_token: Vec<MioView> = fds.iter().map(|&fd| mio_view(fd)).collect();
        for (i, stream) in stream_by_token.iter_mut().enumerate() {
            poll.registry()
                .register(&mut **stream, Token(i), Interest::READABLE)
                .expect("mio register");
        }
        Box::new(Mio {
            name,
            poll,
            events: mio::Events::with_capacity(fds.len().max(1)),
            data_by_token: (0..fds.len() as u64).collect(),
            stream_by_token,
            rearm,
            spare: mio_view(spare),
        })
    }
}

impl Contender for Mio {
    fn name(&self) -> &'static str {
        self.name
    }

    fn round(&mut self) -> (usize, u64) {
        self.poll
            .poll(&mut self.events, Some(Duration::ZERO))
            .expect("mio poll");
        let (mut count, mut sum) = (0, 0);
        for event in self.events.iter() {
            let token = event.token();
            if event.is_readable() {
                count += 1;
                sum += self.data_by_token[token.0];
            }
            if self.rearm {
                let stream = &mut *self.stream_by_token[token.0];
                self.poll
                    .registry()
                    .reregister(stream, token, Interest::READABLE)
                    .expect("mio reregister");
            }
        }
        (count, sum)
    }

    fn register_pair(&mut self) {
        let registry = self.poll.registry();
        let token = Token(self.stream_by_token.len());
        registry
            .register(&mut *self.spare, token, Interest::READABLE)
            .expect("mio register");
        registry
            .deregister(&mut *self.spare)
            .expect("mio deregister");
    }

    fn reports_level(&self) -> bool {
        self.rearm
    }
}
