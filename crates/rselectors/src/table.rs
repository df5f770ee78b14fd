//! The fd-to-key table: O(1) lookup by descriptor, no moves.

use crate::SelectorKey;
use std::os::fd::RawFd;

/// One registration and the serial number that tells it apart from any
/// later registration of the same descriptor number.
pub(crate) struct Slot<F, D> {
    pub(crate) key: SelectorKey<F, D>,
    pub(crate) serial: u64,
}

/// Keys indexed by descriptor: `slots[fd]` holds `fd`'s registration.
///
/// Descriptors are small dense integers (the kernel hands out the lowest
/// free number), so a vector indexed by fd is the fastest map: an event
/// finds its key with one load, and nothing moves on insert or remove (the
/// choice of libev and of a hand-written epoll loop). The price is one
/// slot per descriptor number up to the highest registered, used or not.
pub(crate) struct KeyTable<F, D> {
    slots: Vec<Option<Slot<F, D>>>,
    len: usize,
}

impl<F, D> KeyTable<F, D> {
    pub(crate) fn new() -> Self {
        KeyTable {
            slots: Vec::new(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// `fd`'s slot, if it is registered.
    #[inline]
    pub(crate) fn get(&self, fd: RawFd) -> Option<&Slot<F, D>> {
        // A negative number wraps to one past any index, like a large one.
        self.slots.get(fd as u32 as usize)?.as_ref()
    }

    /// `fd`'s slot, mutable, if it is registered.
    #[inline]
    pub(crate) fn get_mut(&mut self, fd: RawFd) -> Option<&mut Slot<F, D>> {
        self.slots.get_mut(fd as u32 as usize)?.as_mut()
    }

    /// Inserts a key whose fd (non-negative) is not in the table yet.
    // Always inlined into `register`, where it is the whole fast path.
    #[inline(always)]
    pub(crate) fn insert(&mut self, slot: Slot<F, D>) -> &mut Slot<F, D> {
        let fd = slot.key.fd as usize;
        debug_assert!(self.get(slot.key.fd).is_none());
        if fd >= self.slots.len() {
            self.grow(fd);
        }
        self.len += 1;
        self.slots[fd].insert(slot)
    }

    /// Makes room for descriptor number `fd`.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, fd: usize) {
        // `resize_with` reserves with amortised doubling, so a run of
        // increasing descriptors does not reallocate every time.
        self.slots.resize_with(fd + 1, || None);
    }

    /// Takes `fd`'s slot out, if it is registered.
    #[inline]
    pub(crate) fn remove(&mut self, fd: RawFd) -> Option<Slot<F, D>> {
        let slot = self.slots.get_mut(fd as u32 as usize)?.take()?;
        self.len -= 1;
        Some(slot)
    }

    pub(crate) fn clear(&mut self) {
        self.slots.clear();
        self.len = 0;
    }

    pub(crate) fn keys(&self) -> Keys<'_, F, D> {
        Keys {
            inner: self.slots.iter(),
            left: self.len,
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

impl<F, D> Clone for Map<'_, F, D> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<F, D> Copy for Map<'_, F, D> {}

/// Iterator over registered keys, from [`Map::iter`].
pub struct Keys<'a, F, D> {
    inner: std::slice::Iter<'a, Option<Slot<F, D>>>,
    /// Keys not yielded yet: the iterator stops at the last one.
    left: usize,
}

impl<'a, F, D> Iterator for Keys<'a, F, D> {
    type Item = &'a SelectorKey<F, D>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let slot = self.inner.by_ref().flatten().next()?;
        self.left -= 1;
        Some(&slot.key)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<F, D> ExactSizeIterator for Keys<'_, F, D> {}
