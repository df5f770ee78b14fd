//! `SelectorKey` and `Fd`, the file object for a bare descriptor number.

use crate::Events;
use std::os::fd::{AsRawFd, RawFd};

/// A registration: Python's `SelectorKey(fileobj, fd, events, data)`.
///
/// The selector owns the key, and with it the file object and the data;
/// `unregister` hands both back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorKey<F, D> {
    /// The registered file object (a socket, a pipe end, an [`Fd`], ...).
    pub fileobj: F,
    /// Its file descriptor, read once at `register`.
    pub fd: RawFd,
    /// The events it waits for.
    pub events: Events,
    /// The caller's data, attached at `register` or `modify`.
    pub data: D,
}

/// Mutable access to a registered key's file object and data; the
/// descriptor and events stay read-only because the selector's state
/// depends on them (change events with `modify`).
#[derive(Debug)]
pub struct KeyMut<'a, F, D> {
    /// The registered file object.
    pub fileobj: &'a mut F,
    /// Its file descriptor.
    pub fd: RawFd,
    /// The events it waits for.
    pub events: Events,
    /// The caller's data.
    pub data: &'a mut D,
}

impl<'a, F, D> KeyMut<'a, F, D> {
    /// The mutable view of a stored key.
    #[inline]
    pub(crate) fn of(key: &'a mut SelectorKey<F, D>) -> Self {
        KeyMut {
            fileobj: &mut key.fileobj,
            fd: key.fd,
            events: key.events,
            data: &mut key.data,
        }
    }
}

/// A bare file descriptor number as a file object, for descriptors the
/// selector must not own or close (Python's `register(fd_int, ...)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fd(pub RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}
