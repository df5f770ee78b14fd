//! Waiting: `select`, its retries and long waits, and the detached wait a
//! binding runs without holding the selector.

use super::{tag_of, Selector};
use crate::sys::{grow_cleared, readiness, Backend, Ready, ReadyList, Waiter};
use crate::sys::{WaiterOps, MAX_WAIT};
use crate::table::Slot;
use crate::{Error, Result};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

impl<B: Backend, F: AsRawFd, D> Selector<B, F, D> {
    /// Waits until a registered file object is ready or `timeout` passes
    /// (`None`: no limit; zero: just look), and returns how many ready
    /// events it found. Take them with [`Selector::next_ready`] (or read
    /// them with [`Selector::ready_keys`]), which skips any whose
    /// registration has gone since (so the count is an upper bound once
    /// the caller unregisters something).
    ///
    /// A timeout below the backend's resolution is rounded up, never down
    /// to a busy poll; one longer than a system call can wait (24.8 days)
    /// is waited in several, and `Duration::MAX` means no limit. A signal
    /// (`EINTR`) does not end the wait early: it resumes with the time that
    /// remains (PEP 475). To end it from another thread or a signal
    /// handler, register a [`crate::Waker`].
    pub fn select(&mut self, timeout: Option<Duration>) -> Result<usize> {
        let deadline = match timeout {
            Some(t) if t.is_zero() => None,
            Some(t) if t > MAX_WAIT => return self.select_long(t, true),
            Some(t) => Instant::now().checked_add(t),
            None => None,
        };
        match self.wait_once(timeout) {
            Err(e) if e.is_interrupted() => self.select_after_interrupt(timeout, deadline),
            other => other,
        }
    }

    /// [`Selector::select`] after a wait was interrupted: waits again for
    /// what remains until `deadline` (if `timeout` had one), until a wait
    /// is not interrupted. Out of line, so a server's hot loop does not
    /// carry a second copy of the wait.
    #[cold]
    #[inline(never)]
    fn select_after_interrupt(
        &mut self,
        timeout: Option<Duration>,
        deadline: Option<Instant>,
    ) -> Result<usize> {
        loop {
            let wait = deadline.map_or(timeout, |d| {
                Some(d.saturating_duration_since(Instant::now()))
            });
            match self.wait_once(wait) {
                Err(e) if e.is_interrupted() => {}
                other => return other,
            }
        }
    }

    /// A wait longer than one system call can make: turns of at most
    /// [`MAX_WAIT`] until one finds something or `timeout` has passed.
    /// `EINTR` is waited through if `retry`, returned if not. Out of line:
    /// it is the rare wait that reads the clock after each turn.
    #[cold]
    #[inline(never)]
    fn select_long(&mut self, timeout: Duration, retry: bool) -> Result<usize> {
        let deadline = Instant::now().checked_add(timeout);
        while let Some(turn) = next_turn(deadline) {
            match self.wait_once(turn) {
                Ok(0) => {}
                Err(e) if retry && e.is_interrupted() => {}
                other => return other,
            }
        }
        Ok(0)
    }

    /// One wait: like [`Selector::select`] but returns `EINTR` (see
    /// [`Error::is_interrupted`]) instead of retrying, for callers that act
    /// on signals (Python runs its handlers then). One system call, or as
    /// many as a timeout longer than one can wait (24.8 days) takes.
    #[inline(always)]
    pub fn select_once(&mut self, timeout: Option<Duration>) -> Result<usize> {
        match timeout {
            Some(t) if t > MAX_WAIT => self.select_long(t, false),
            _ => self.wait_once(timeout),
        }
    }

    /// One system call, for at most [`MAX_WAIT`].
    // Hot: once per wait of a server's loop.
    #[inline(always)]
    fn wait_once(&mut self, timeout: Option<Duration>) -> Result<usize> {
        let backend = self.backend.as_mut().ok_or(Error::Closed)?;
        self.cursor = 0;
        make_room(&mut self.ready, self.table.len());
        // Asked before the wait, next to the wait's own dispatch on the
        // backend.
        let tagged = backend.events_carry_tags();
        backend.wait(&mut self.ready, timeout)?;
        if tagged {
            // Each event names its registration: checked as it is taken.
            Ok(self.ready.entries.len())
        } else {
            Ok(self.resolve_ready(u64::MAX))
        }
    }

    /// Keeps the ready entries of registrations older than `serial_limit`
    /// that are ready for one of their key's events, stamped with the
    /// registration's serial.
    // Out of line: only the backends whose events carry no tags need it,
    // and they scan a table per wait anyway.
    #[inline(never)]
    fn resolve_ready(&mut self, serial_limit: u64) -> usize {
        let table = &self.table;
        let keep = |r: &mut Ready, found: Option<&Slot<F, D>>| match found {
            Some(slot) if slot.serial < serial_limit => {
                r.tag = tag_of(slot.serial);
                readiness(r.bits).intersects(slot.key.events)
            }
            _ => false,
        };
        // Without keys beyond the dense table, a loop without the call that
        // would look for them.
        if table.is_dense() {
            let dense = |r: &mut Ready| keep(r, table.get_dense(r.fd).flatten());
            self.ready.entries.retain_mut(dense);
        } else {
            self.ready.entries.retain_mut(|r| keep(r, table.get(r.fd)));
        }
        self.ready.entries.len()
    }

    /// Takes a wait out of the selector, to run where the selector is not
    /// borrowed: a binding releases its lock (Python: the GIL) while it
    /// waits, so other threads can register, unregister or close
    /// meanwhile, as they can with CPython's selectors. Give the result to
    /// [`Selector::attach_wait`].
    ///
    /// Ordinary Rust code wants [`Selector::select`] (and a [`crate::Waker`]
    /// to stop it from another thread).
    pub fn detach_wait(&mut self) -> Result<DetachedWait<B::Waiter>> {
        let backend = self.backend.as_mut().ok_or(Error::Closed)?;
        let mut ready = std::mem::take(&mut self.ready);
        self.cursor = 0;
        make_room(&mut ready, self.table.len());
        Ok(DetachedWait {
            waiter: backend.detach(),
            ready,
            first_new_serial: self.next_serial,
        })
    }

    /// Brings back a detached wait and makes its results those of the
    /// last `select` (see [`Selector::next_ready`]); returns how many are
    /// ready. Results for registrations removed meanwhile are never
    /// delivered. An epoll wait watches the live interest set, so it also
    /// reports registrations made meanwhile, as CPython's does (each event
    /// names its registration, so one for the file that had the number
    /// before is told apart). A wait on a snapshot (poll, select) saw only
    /// the files registered when it was detached: its results for numbers
    /// registered since are dropped, and the next `select` reports them.
    pub fn attach_wait(&mut self, wait: DetachedWait<B::Waiter>) -> Result<usize> {
        let backend = self.backend.as_mut().ok_or(Error::Closed)?;
        let tagged = wait.waiter.events_carry_tags();
        backend.reattach(wait.waiter);
        self.ready = wait.ready;
        self.cursor = 0;
        if tagged {
            Ok(self.ready.entries.len())
        } else {
            Ok(self.resolve_ready(wait.first_new_serial))
        }
    }
}

/// Empties `ready` and gives it room for one entry per registration, so
/// that a backend's `wait` never allocates; in steady state this is one
/// comparison. (With nothing registered, epoll's wait makes room for the
/// one entry it must offer the kernel.)
fn make_room(ready: &mut ReadyList, registered: usize) {
    ready.entries.clear();
    grow_cleared(&mut ready.entries, registered);
}

/// A wait taken out of a selector by [`Selector::detach_wait`]; `Send`, and
/// borrows nothing, so it can wait on another thread or without a lock.
#[derive(Debug)]
pub struct DetachedWait<W> {
    waiter: W,
    ready: ReadyList,
    /// Registrations from this serial on were made after the wait was
    /// detached; what it saw for their descriptor numbers was another file.
    first_new_serial: u64,
}

impl<W: Waiter> DetachedWait<W> {
    /// One wait; `EINTR` is returned (see [`Error::is_interrupted`]) for
    /// the caller to retry. One system call, or as many as a timeout longer
    /// than one can wait (24.8 days) takes. Results replace those of an
    /// earlier call on this `DetachedWait`.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.ready.entries.clear();
        match timeout {
            Some(t) if t > MAX_WAIT => self.wait_long(t),
            _ => Ok(self.waiter.wait(&mut self.ready, timeout)?),
        }
    }

    /// [`DetachedWait::wait`] in turns, as [`Selector::select_once`] waits.
    #[cold]
    #[inline(never)]
    fn wait_long(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now().checked_add(timeout);
        while let Some(turn) = next_turn(deadline) {
            self.waiter.wait(&mut self.ready, turn)?;
            if !self.ready.entries.is_empty() {
                break;
            }
        }
        Ok(())
    }
}

/// The timeout of the next turn of a long wait until `deadline`: at most
/// [`MAX_WAIT`], none for no deadline (a timeout too long for `Instant`
/// to hold its end), and no turn once the deadline has passed.
fn next_turn(deadline: Option<Instant>) -> Option<Option<Duration>> {
    let Some(deadline) = deadline else {
        return Some(None);
    };
    let left = deadline.checked_duration_since(Instant::now())?;
    (!left.is_zero()).then_some(Some(left.min(MAX_WAIT)))
}
