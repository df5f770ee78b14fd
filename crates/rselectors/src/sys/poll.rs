//! `poll(2)`: one `pollfd` per descriptor, kept between calls.

use super::{cvt, timeout_millis, Backend, ReadyList, Waiter};
use crate::Events;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// The `poll` backend of [`crate::PollSelector`].
#[derive(Debug, Default)]
pub struct PollBackend {
    pollfds: Vec<libc::pollfd>,
    /// `position[fd]` is the index of fd's entry in `pollfds`.
    position: Vec<u32>,
    /// A buffer for the next detached waiter's snapshot.
    spare: Vec<libc::pollfd>,
}

/// A detached `poll`, over a snapshot of the interest set ([`Backend::detach`]).
#[derive(Debug)]
pub struct PollWaiter {
    pollfds: Vec<libc::pollfd>,
}

/// One `poll` over `pollfds`, results onto `ready`.
fn wait_into(
    pollfds: &mut [libc::pollfd],
    ready: &mut ReadyList,
    timeout: Option<Duration>,
) -> io::Result<()> {
    // SAFETY: the pointer and length describe a live slice of initialised
    // pollfd structs that poll(2) may write `revents` into.
    let n = cvt(unsafe {
        libc::poll(
            pollfds.as_mut_ptr(),
            pollfds.len() as libc::nfds_t,
            timeout_millis(timeout),
        )
    })?;
    if n > 0 {
        for p in pollfds.iter() {
            if p.revents != 0 {
                ready.push(p.fd, readiness(p.revents));
            }
        }
    }
    Ok(())
}

fn interest(events: Events) -> libc::c_short {
    let mut flags = 0;
    if events.contains(Events::READ) {
        flags |= libc::POLLIN;
    }
    if events.contains(Events::WRITE) {
        flags |= libc::POLLOUT;
    }
    flags
}

/// CPython's translation (see the epoll backend): error, hang-up and
/// invalid-descriptor conditions wake both readers and writers.
fn readiness(revents: libc::c_short) -> Events {
    let mut events = Events::empty();
    if revents & !libc::POLLOUT != 0 {
        events |= Events::READ;
    }
    if revents & !libc::POLLIN != 0 {
        events |= Events::WRITE;
    }
    events
}

impl PollBackend {
    fn slot(&mut self, fd: RawFd) -> io::Result<&mut libc::pollfd> {
        let i = self.position.get(fd as usize).copied();
        i.and_then(|i| self.pollfds.get_mut(i as usize))
            .filter(|p| p.fd == fd)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }
}

impl Backend for PollBackend {
    type Waiter = PollWaiter;

    fn open() -> io::Result<Self> {
        Ok(PollBackend::default())
    }

    fn name(&self) -> &'static str {
        "poll"
    }

    fn add(&mut self, fd: RawFd, events: Events) -> io::Result<()> {
        let i = fd as usize;
        if i >= self.position.len() {
            self.position.resize(i + 1, u32::MAX);
        }
        self.position[i] = self.pollfds.len() as u32;
        self.pollfds.push(libc::pollfd {
            fd,
            events: interest(events),
            revents: 0,
        });
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, events: Events) -> io::Result<()> {
        self.slot(fd)?.events = interest(events);
        Ok(())
    }

    fn remove(&mut self, fd: RawFd) -> io::Result<()> {
        self.slot(fd)?;
        let i = self.position[fd as usize] as usize;
        self.position[fd as usize] = u32::MAX;
        self.pollfds.swap_remove(i);
        if let Some(moved) = self.pollfds.get(i) {
            self.position[moved.fd as usize] = i as u32;
        }
        Ok(())
    }

    #[inline]
    fn wait(&mut self, ready: &mut ReadyList, timeout: Option<Duration>) -> io::Result<()> {
        wait_into(&mut self.pollfds, ready, timeout)
    }

    fn detach(&mut self) -> PollWaiter {
        let mut pollfds = std::mem::take(&mut self.spare);
        pollfds.clear();
        pollfds.extend_from_slice(&self.pollfds);
        PollWaiter { pollfds }
    }

    fn reattach(&mut self, waiter: PollWaiter) {
        self.spare = waiter.pollfds;
    }
}

impl Waiter for PollWaiter {
    fn wait(&mut self, ready: &mut ReadyList, timeout: Option<Duration>) -> io::Result<()> {
        wait_into(&mut self.pollfds, ready, timeout)
    }
}
