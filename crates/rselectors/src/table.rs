//! The fd-to-key table: O(1) lookup by descriptor, no moves, memory
//! proportional to what is registered (see [`FdMap`]).

use crate::fdmap::{FdMap, Values};
use crate::SelectorKey;
use std::fmt;
use std::os::fd::RawFd;

/// One registration and the serial number that tells it apart from any
/// later registration of the same descriptor number.
#[derive(Debug)]
pub(crate) struct Slot<F, D> {
    pub(crate) key: SelectorKey<F, D>,
    pub(crate) serial: u64,
}

/// Keys by descriptor: a vector indexed by fd for the small, dense numbers
/// the kernel hands out, so an event finds its key with one load, and an
/// ordered map for the few far beyond them ([`FdMap`]).
#[derive(Debug)]
pub(crate) struct KeyTable<F, D> {
    slots: FdMap<Slot<F, D>>,
}

impl<F, D> KeyTable<F, D> {
    pub(crate) fn new() -> Self {
        KeyTable {
            slots: FdMap::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// `fd`'s slot, if it is registered.
    #[inline]
    pub(crate) fn get(&self, fd: RawFd) -> Option<&Slot<F, D>> {
        self.slots.get(fd)
    }

    /// `fd`'s place in the dense part of the table (`Some(None)`: not
    /// registered), or `None` for a descriptor beyond it, which only
    /// [`KeyTable::get`] finds.
    #[inline]
    pub(crate) fn get_dense(&self, fd: RawFd) -> Option<Option<&Slot<F, D>>> {
        self.slots.get_dense(fd)
    }

    /// True if every key is in the dense part ([`KeyTable::get_dense`]).
    pub(crate) fn is_dense(&self) -> bool {
        self.slots.is_dense()
    }

    /// `fd`'s slot, mutable, if it is registered.
    #[inline]
    pub(crate) fn get_mut(&mut self, fd: RawFd) -> Option<&mut Slot<F, D>> {
        self.slots.get_mut(fd)
    }

    /// Inserts a key whose fd (non-negative) is not in the table yet.
    // Hot: once per connection, from `register`.
    #[inline(always)]
    pub(crate) fn insert(&mut self, slot: Slot<F, D>) -> &mut Slot<F, D> {
        self.slots.insert(slot.key.fd, slot)
    }

    /// Takes `fd`'s slot out, if it is registered.
    #[inline]
    pub(crate) fn remove(&mut self, fd: RawFd) -> Option<Slot<F, D>> {
        self.slots.remove(fd)
    }

    /// Drops every key; the table is empty and consistent even if a file
    /// object's `Drop` panics meanwhile.
    pub(crate) fn clear(&mut self) {
        self.slots.clear();
    }

    pub(crate) fn keys(&self) -> Keys<'_, F, D> {
        Keys {
            inner: self.slots.values(),
        }
    }
}

/// A read-only view of the registered keys: Python's `get_map()`.
pub struct Map<'a, F, D> {
    pub(crate) table: &'a KeyTable<F, D>,
}

impl<'a, F, D> Map<'a, F, D> {
    /// Number of registered file objects.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// The key registered for `fd`.
    pub fn get(&self, fd: RawFd) -> Option<&'a SelectorKey<F, D>> {
        self.table.get(fd).map(|s| &s.key)
    }

    /// True if `fd` is registered.
    pub fn contains_key(&self, fd: RawFd) -> bool {
        self.table.get(fd).is_some()
    }

    /// Every registered key, in the order of their descriptors.
    pub fn iter(&self) -> Keys<'a, F, D> {
        self.table.keys()
    }

    /// Every registered descriptor, in the order of [`Map::iter`].
    pub fn fds(&self) -> impl ExactSizeIterator<Item = RawFd> + 'a {
        self.table.keys().map(|k| k.fd)
    }
}

impl<'a, F, D> IntoIterator for Map<'a, F, D> {
    type Item = &'a SelectorKey<F, D>;
    type IntoIter = Keys<'a, F, D>;

    fn into_iter(self) -> Self::IntoIter {
        self.table.keys()
    }
}

/// The keys by descriptor, as Python prints a `get_map()`.
impl<F: fmt::Debug, D: fmt::Debug> fmt::Debug for Map<'_, F, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|k| (k.fd, k)))
            .finish()
    }
}

impl<F, D> Clone for Map<'_, F, D> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<F, D> Copy for Map<'_, F, D> {}

/// Iterator over registered keys, from [`Map::iter`].
pub struct Keys<'a, F, D> {
    inner: Values<'a, Slot<F, D>>,
}

impl<'a, F, D> Iterator for Keys<'a, F, D> {
    type Item = &'a SelectorKey<F, D>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|slot| &slot.key)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<F, D> ExactSizeIterator for Keys<'_, F, D> {}

impl<F, D> fmt::Debug for Keys<'_, F, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("left", &self.inner.len())
            .finish_non_exhaustive()
    }
}
