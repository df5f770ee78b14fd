//! `poll(2)`: one `pollfd` per descriptor, kept between calls.

use super::{
    check_open, cvt, poll_bits, timeout_millis, Backend, BackendOps, ReadyList, Waiter, WaiterOps,
};
use crate::fdmap::FdMap;
use crate::Events;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// The `poll` backend of [`crate::PollSelector`]. Opaque: see
/// [`Backend`].
#[derive(Debug, Default)]
pub struct PollBackend {
    pollfds: Vec<libc::pollfd>,
    /// The index of each watched descriptor's entry in `pollfds`, in
    /// memory proportional to their count, not to their numbers.
    position: FdMap<u32>,
    /// Counts changes to `pollfds`, to tell whether a snapshot is current.
    generation: u64,
    /// The last detached waiter's snapshot, kept for reuse.
    spare: Snapshot,
}

#[derive(Debug, Default)]
struct Snapshot {
    pollfds: Vec<libc::pollfd>,
    generation: u64,
}

/// A detached `poll` over a snapshot of the interest set, from
/// [`Selector::detach_wait`](crate::Selector::detach_wait). Opaque.
#[derive(Debug)]
pub struct PollWaiter {
    snapshot: Snapshot,
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
    // poll(2) returns how many entries have non-zero `revents`.
    let found = pollfds.iter().filter(|p| p.revents != 0).take(n as usize);
    for p in found {
        ready.push_revents(p.fd, p.revents);
    }
    Ok(())
}

impl PollBackend {
    fn slot(&mut self, fd: RawFd) -> io::Result<&mut libc::pollfd> {
        let i = self.position.get(fd).copied();
        i.and_then(|i| self.pollfds.get_mut(i as usize))
            .filter(|p| p.fd == fd)
            .ok_or_else(not_watched)
    }
}

fn not_watched() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

impl BackendOps for PollBackend {
    fn open() -> io::Result<Self> {
        Ok(PollBackend::default())
    }

    fn name(&self) -> &'static str {
        "poll"
    }

    fn add(&mut self, fd: RawFd, events: Events, _tag: u32) -> io::Result<()> {
        // poll(2) takes any number; refuse a closed one as epoll does.
        check_open(fd)?;
        if !self.position.insert_new(fd, self.pollfds.len() as u32) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        self.generation += 1;
        self.pollfds.push(libc::pollfd {
            fd,
            events: poll_bits(events),
            revents: 0,
        });
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, events: Events, _tag: u32) -> io::Result<()> {
        self.slot(fd)?.events = poll_bits(events);
        self.generation += 1;
        Ok(())
    }

    // Hot: once per connection, from `unregister`.
    #[inline(always)]
    fn remove(&mut self, fd: RawFd) -> io::Result<()> {
        let i = self.position.remove(fd).ok_or_else(not_watched)? as usize;
        self.pollfds.swap_remove(i);
        self.generation += 1;
        if let Some(moved) = self.pollfds.get(i) {
            if let Some(position) = self.position.get_mut(moved.fd) {
                *position = i as u32;
            }
        }
        Ok(())
    }

    #[inline]
    fn wait(&mut self, ready: &mut ReadyList, timeout: Option<Duration>) -> io::Result<()> {
        wait_into(&mut self.pollfds, ready, timeout)
    }

    fn detach(&mut self) -> PollWaiter {
        let mut snapshot = std::mem::take(&mut self.spare);
        // poll(2) ignores `revents` on input, so a current snapshot is
        // reused as it is. Generation 0 is "never copied" (`add` bumps it).
        if snapshot.generation != self.generation || snapshot.pollfds.is_empty() {
            snapshot.pollfds.clear();
            snapshot.pollfds.extend_from_slice(&self.pollfds);
            snapshot.generation = self.generation;
        }
        PollWaiter { snapshot }
    }

    fn reattach(&mut self, waiter: PollWaiter) {
        self.spare = waiter.snapshot;
    }
}

impl Backend for PollBackend {
    type Waiter = PollWaiter;
}

impl WaiterOps for PollWaiter {
    fn wait(&mut self, ready: &mut ReadyList, timeout: Option<Duration>) -> io::Result<()> {
        wait_into(&mut self.snapshot.pollfds, ready, timeout)
    }
}

impl Waiter for PollWaiter {}
