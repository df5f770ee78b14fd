//! The generic front: every rule of the selectors API, for any backend.

use crate::sys::{readiness, AnyBackend, Backend, BackendKind, Ready, ReadyList};
use crate::table::{KeyTable, Map, Slot};
use crate::{Error, Events, KeyMut, Rejected, Result, SelectorKey};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// A selector: Python's `BaseSelector`, over the backend `B`, owning file
/// objects of type `F` with data of type `D`.
///
/// Use the aliases: [`DefaultSelector`](crate::DefaultSelector), one per
/// backend of the platform ([`PollSelector`](crate::PollSelector),
/// [`SelectSelector`](crate::SelectSelector), `EpollSelector`, …), or
/// [`AnySelector`] to pick the backend at run time.
///
/// `select` stores what is ready inside the selector; [`Selector::next_ready`]
/// hands it out one event at a time by value, so between two events the
/// caller holds no borrow and may register, modify and unregister anything.
pub struct Selector<B, F, D> {
    /// `None` once closed.
    backend: Option<B>,
    table: KeyTable<F, D>,
    ready: ReadyList,
    /// Next entry of `ready` that `next_ready` looks at.
    cursor: usize,
    /// Serial number of the next registration.
    next_serial: u64,
}

/// A selector whose backend is chosen at run time by [`BackendKind`].
pub type AnySelector<F, D> = Selector<AnyBackend, F, D>;

impl<F, D> AnySelector<F, D> {
    /// Opens a selector with the backend of that kind.
    pub fn with_kind(kind: BackendKind) -> io::Result<Self> {
        Ok(Selector::with_backend(AnyBackend::open_kind(kind)?))
    }
}

impl<B: Backend, F: AsRawFd, D> Selector<B, F, D> {
    /// Opens a selector over a new backend.
    pub fn new() -> io::Result<Self> {
        Ok(Selector::with_backend(B::open()?))
    }
}

impl<B, F, D> Selector<B, F, D> {
    /// Wraps an open backend.
    pub(crate) fn with_backend(backend: B) -> Self {
        Selector {
            backend: Some(backend),
            table: KeyTable::new(),
            ready: ReadyList::default(),
            cursor: 0,
            next_serial: 0,
        }
    }
}

impl<B: Backend, F: AsRawFd, D> Selector<B, F, D> {
    fn backend(&mut self) -> Result<&mut B> {
        self.backend.as_mut().ok_or(Error::Closed)
    }

    /// The backend's name: `"select"`, `"poll"` or `"epoll"`.
    pub fn backend_name(&self) -> Option<&'static str> {
        self.backend.as_ref().map(|b| b.name())
    }

    fn check_new(&self, fd: RawFd, events: Events) -> Result<()> {
        let backend = self.backend.as_ref().ok_or(Error::Closed)?;
        if !events.is_valid_mask() {
            return Err(Error::InvalidEvents(events.bits()));
        }
        if fd < 0 {
            return Err(Error::InvalidFd(fd));
        }
        if self.table.get(fd).is_some() {
            return Err(Error::AlreadyRegistered(fd));
        }
        match backend.fd_limit() {
            Some(limit) if fd >= limit => Err(Error::FdOutOfRange { fd, limit }),
            _ => Ok(()),
        }
    }

    /// Registers `fileobj` for `events`, with `data` attached.
    ///
    /// Refused (and `fileobj` and `data` handed back in [`Rejected`]) for an
    /// empty or unknown mask, a negative descriptor, a descriptor that is
    /// registered already, one the backend cannot watch, a closed
    /// selector, or when the OS refuses (epoll gives `EPERM` for a regular
    /// file). A refused registration leaves nothing behind.
    // Hot: once per connection; inlined so the checks fold for a known file.
    #[inline(always)]
    pub fn register(
        &mut self,
        fileobj: F,
        events: Events,
        data: D,
    ) -> Result<&SelectorKey<F, D>, Rejected<F, D>> {
        let fd = fileobj.as_raw_fd();
        let serial = self.next_serial;
        let checked = self.check_new(fd, events);
        let added = checked.and_then(|()| Ok(self.backend()?.add(fd, events, tag_of(serial))?));
        if let Err(error) = added {
            return Err(Rejected {
                error,
                fileobj,
                data,
            });
        }
        self.next_serial += 1;
        let key = SelectorKey {
            fileobj,
            fd,
            events,
            data,
        };
        Ok(&self.table.insert(Slot { key, serial }).key)
    }

    /// Unregisters `fd` and hands back its key, with the file object and data.
    ///
    /// Works after the descriptor was closed behind the selector's back,
    /// and after its number was reused by another file, which it leaves
    /// alone. Ready events of this registration not yet taken from
    /// [`Selector::next_ready`] are dropped.
    pub fn unregister(&mut self, fd: RawFd) -> Result<SelectorKey<F, D>> {
        // The OS may have forgotten the descriptor already (closed, EBADF /
        // ENOENT); CPython ignores that too, and the key goes either way.
        self.take_key(fd, false)
    }

    /// Unregisters `fd`, whose file the caller closes right away, and
    /// hands back its key: [`Selector::unregister`] minus the system call
    /// that is wasted when the file is about to be closed anyway (epoll
    /// forgets a file at its last close, so a server that closes a
    /// connection saves one `epoll_ctl` per connection).
    ///
    /// The caller must close the file object at once, and hold no other
    /// descriptor of the same open file (from `dup` or a child process):
    /// otherwise epoll keeps reporting it, and its events would be taken for
    /// a later registration of the same number.
    #[inline(always)]
    pub fn unregister_closing(&mut self, fd: RawFd) -> Result<SelectorKey<F, D>> {
        self.take_key(fd, true)
    }

    /// Removes `fd`'s key from the table and tells the backend, which
    /// `forget`s it if the file is `closing`, or `remove`s it.
    // Hot: once per connection; a flag rather than a closure, so that the
    // choice is made where the caller's `closing` is a constant.
    #[inline(always)]
    fn take_key(&mut self, fd: RawFd, closing: bool) -> Result<SelectorKey<F, D>> {
        let backend = self.backend.as_mut().ok_or(Error::Closed)?;
        if fd < 0 {
            return Err(Error::InvalidFd(fd));
        }
        let slot = self.table.remove(fd).ok_or(Error::NotRegistered(fd))?;
        let _ = if closing {
            backend.forget(fd)
        } else {
            backend.remove(fd)
        };
        Ok(slot.key)
    }

    /// Changes the events and the data of `fd`'s registration.
    ///
    /// A change of data alone makes no system call. When the OS refuses
    /// the new events, the registration is removed (its key dropped) and
    /// the OS error returned, as CPython does (bpo-30014).
    pub fn modify(&mut self, fd: RawFd, events: Events, data: D) -> Result<&SelectorKey<F, D>> {
        self.set_events(fd, events)?;
        let key = &mut self.known_slot_mut(fd).key;
        key.data = data;
        Ok(key)
    }

    /// Changes the events of `fd`'s registration and keeps its data (the
    /// seeds' `modify(sock, EVENT_READ)`, without handing the data back in).
    pub fn modify_events(&mut self, fd: RawFd, events: Events) -> Result<&SelectorKey<F, D>> {
        self.set_events(fd, events)?;
        Ok(&self.known_slot_mut(fd).key)
    }

    /// The rules of `modify` for the events.
    fn set_events(&mut self, fd: RawFd, events: Events) -> Result<()> {
        let backend = self.backend.as_mut().ok_or(Error::Closed)?;
        // CPython looks the file object up before it checks the mask.
        let slot = registered(self.table.get_mut(fd), fd)?;
        if !events.is_valid_mask() {
            return Err(Error::InvalidEvents(events.bits()));
        }
        if slot.key.events != events {
            if let Err(e) = backend.modify(fd, events, tag_of(slot.serial)) {
                let _ = backend.remove(fd);
                self.table.remove(fd);
                return Err(Error::Os(e));
            }
            slot.key.events = events;
        }
        Ok(())
    }

    /// The slot of `fd`, which the caller has just found registered.
    #[inline]
    fn known_slot_mut(&mut self, fd: RawFd) -> &mut Slot<F, D> {
        match self.table.get_mut(fd) {
            Some(slot) => slot,
            None => unreachable!("the descriptor was just found registered"),
        }
    }

    /// The key of a stored ready entry, and the events to report, if its
    /// registration still stands: the one check every way of taking events
    /// goes through.
    #[inline]
    fn live_key(&self, r: &Ready) -> Option<(&SelectorKey<F, D>, Events)> {
        let slot = self.table.get(r.fd)?;
        Some((&slot.key, live_events(slot, r)?))
    }

    /// The next ready descriptor of the last `select`, with the events it
    /// is ready for, or `None` when all were taken.
    ///
    /// An event whose registration was unregistered since `select`
    /// returned is skipped, even if the descriptor number was registered
    /// again; events are masked with the key's current events.
    #[inline]
    pub fn next_ready(&mut self) -> Option<(RawFd, Events)> {
        loop {
            let r = *self.ready.entries.get(self.cursor)?;
            self.cursor += 1;
            // Hot: once per ready event. A key beyond the dense table is
            // the rare case, looked up on a path of its own.
            match self.table.get_dense(r.fd) {
                Some(Some(slot)) => {
                    if let Some(events) = live_events(slot, &r) {
                        return Some((r.fd, events));
                    }
                }
                Some(None) => {}
                None => {
                    if let Some(events) = live_events_sparse(&self.table, &r) {
                        return Some((r.fd, events));
                    }
                }
            }
        }
    }

    /// [`Selector::next_ready`] with the key at hand: the file object
    /// and data of the next ready registration, mutable, found with one
    /// table lookup. The selector stays borrowed while the key is held.
    #[inline]
    pub fn next_ready_mut(&mut self) -> Option<(KeyMut<'_, F, D>, Events)> {
        let r = *self.ready.entries.get(self.cursor)?;
        self.cursor += 1;
        if let Some(Some(slot)) = self.table.get_dense(r.fd) {
            if let Some(events) = live_events(slot, &r) {
                // The lookup just made, reused.
                return Some((KeyMut::of(&mut self.known_slot_mut(r.fd).key), events));
            }
        }
        // Rare: a key beyond the dense table, or an event whose
        // registration has gone (the handler of an earlier event of this
        // wait removed it).
        self.next_ready_mut_slow(r)
    }

    /// [`Selector::next_ready_mut`] for an entry `r` that was not live in
    /// the dense table.
    #[cold]
    #[inline(never)]
    fn next_ready_mut_slow(&mut self, r: Ready) -> Option<(KeyMut<'_, F, D>, Events)> {
        let (fd, events) = match self.live_key(&r) {
            Some((_, events)) => (r.fd, events),
            None => self.next_ready()?,
        };
        Some((KeyMut::of(&mut self.known_slot_mut(fd).key), events))
    }

    /// The ready keys of the last `select` not yet taken by `next_ready`,
    /// with their events: Python's `select()` list, read-only.
    pub fn ready_keys(&self) -> impl Iterator<Item = (&SelectorKey<F, D>, Events)> {
        self.ready.entries[self.cursor..]
            .iter()
            .filter_map(move |r| self.live_key(r))
    }

    /// The key registered for `fd`.
    // The table first: a key found means the selector is open (closing
    // empties the table), so the usual call is the lookup alone.
    pub fn get_key(&self, fd: RawFd) -> Result<&SelectorKey<F, D>> {
        match self.table.get(fd) {
            Some(slot) => Ok(&slot.key),
            None => Err(no_key(self.backend.is_none(), fd)),
        }
    }

    /// Mutable access to `fd`'s file object and data.
    pub fn get_key_mut(&mut self, fd: RawFd) -> Result<KeyMut<'_, F, D>> {
        let closed = self.backend.is_none();
        match self.table.get_mut(fd) {
            Some(slot) => Ok(KeyMut::of(&mut slot.key)),
            None => Err(no_key(closed, fd)),
        }
    }

    /// A read-only view of every registration (empty once closed).
    pub fn get_map(&self) -> Map<'_, F, D> {
        Map { table: &self.table }
    }

    /// Number of registrations.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// The backend's kernel object (epoll's descriptor), if it has one.
    pub fn fileno(&self) -> Result<Option<RawFd>> {
        self.backend
            .as_ref()
            .map(|b| b.fileno())
            .ok_or(Error::Closed)
    }

    /// True once [`Selector::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.backend.is_none()
    }

    /// Closes the backend and drops every key (closing the file objects
    /// the selector owns). Idempotent; every later call but `close`
    /// returns [`Error::Closed`]. Dropping the selector closes it too.
    pub fn close(&mut self) {
        // The keys last, and out of the table before any is dropped: a
        // file object's `Drop` that panics leaves a closed, empty selector.
        self.backend = None;
        self.ready.entries.clear();
        self.cursor = 0;
        self.table.clear();
    }
}

/// The events to report for the stored ready entry `r` of `slot`'s
/// descriptor, if `r` is of that registration and for one of its events.
#[inline]
fn live_events<F, D>(slot: &Slot<F, D>, r: &Ready) -> Option<Events> {
    let events = readiness(r.bits) & slot.key.events;
    (tag_of(slot.serial) == r.tag && !events.is_empty()).then_some(events)
}

/// [`live_events`] for an entry beyond the dense table.
// Cold: only descriptors far above the others take it. Given the table
// alone, not the selector, which the caller is changing.
#[cold]
#[inline(never)]
fn live_events_sparse<F, D>(table: &KeyTable<F, D>, r: &Ready) -> Option<Events> {
    live_events(table.get(r.fd)?, r)
}

/// The 32-bit tag of a registration's serial, as stored with ready events.
fn tag_of(serial: u64) -> u32 {
    serial as u32
}

/// What the table `found` for `fd` of an open selector: `InvalidFd` for a
/// negative number (Python's `ValueError`, and never in the table),
/// `NotRegistered` for an unknown one (`KeyError`).
fn registered<T>(found: Option<T>, fd: RawFd) -> Result<T> {
    found.ok_or_else(|| no_key(false, fd))
}

/// Why `fd` has no key, in CPython's order: the selector is `closed`, the
/// number is negative, or it is not registered.
#[cold]
fn no_key(closed: bool, fd: RawFd) -> Error {
    if closed {
        Error::Closed
    } else if fd < 0 {
        Error::InvalidFd(fd)
    } else {
        Error::NotRegistered(fd)
    }
}

impl<B: Backend, F: AsRawFd, D> fmt::Debug for Selector<B, F, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selector")
            .field("backend", &self.backend_name())
            .field("registered", &self.table.len())
            .finish_non_exhaustive()
    }
}

mod wait;

pub use wait::DetachedWait;

#[cfg(test)]
mod system_calls;
#[cfg(test)]
mod tests;
