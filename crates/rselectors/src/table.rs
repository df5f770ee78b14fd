//! The fd-to-key table: O(1) lookup by descriptor, dense iteration.

use crate::SelectorKey;
use std::os::fd::RawFd;

/// One registration and the serial number that tells it apart from any
/// later registration of the same descriptor number.
pub(crate) struct Slot<F, D> {
    pub(crate) key: SelectorKey<F, D>,
    pub(crate) serial: u64,
}

const VACANT: u32 = u32::MAX;

/// Keys stored densely in `slots`; `index[fd]` is the key's position.
///
/// Descriptors are small dense integers, so a vector indexed by fd is both
/// the fastest map and a small one (4 bytes per descriptor number).
/// Removal swaps the last key into the hole, so both operations are O(1).
pub(crate) struct KeyTable<F, D> {
    slots: Vec<Slot<F, D>>,
    index: Vec<u32>,
}

impl<F, D> KeyTable<F, D> {
    pub(crate) fn new() -> Self {
        KeyTable {
            slots: Vec::new(),
            index: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Where `fd`'s slot is, for [`KeyTable::at_mut`].
    #[inline]
    pub(crate) fn position(&self, fd: RawFd) -> Option<usize> {
        // A negative number wraps to one past any index, like a large one.
        let i = *self.index.get(fd as u32 as usize)?;
        (i != VACANT).then_some(i as usize)
    }

    pub(crate) fn get(&self, fd: RawFd) -> Option<&Slot<F, D>> {
        self.position(fd).map(|i| &self.slots[i])
    }

    /// The slot at a position from [`KeyTable::position`].
    pub(crate) fn at(&self, i: usize) -> &Slot<F, D> {
        &self.slots[i]
    }

    /// The slot at a position from [`KeyTable::position`], mutable.
    pub(crate) fn at_mut(&mut self, i: usize) -> &mut Slot<F, D> {
        &mut self.slots[i]
    }

    /// Inserts a key whose fd (non-negative) is not in the table yet.
    // Always inlined into `register`, where it is the whole fast path.
    #[inline(always)]
    pub(crate) fn insert(&mut self, slot: Slot<F, D>) -> &mut Slot<F, D> {
        let fd = slot.key.fd as usize;
        debug_assert!(self.position(slot.key.fd).is_none());
        let i = self.slots.len();
        match self.index.get_mut(fd) {
            Some(entry) => *entry = i as u32,
            None => self.grow_index(fd, i),
        }
        self.slots.push(slot);
        &mut self.slots[i]
    }

    /// Makes room in the index for `fd` and points it at position `i`.
    #[cold]
    #[inline(never)]
    fn grow_index(&mut self, fd: usize, i: usize) {
        // `resize` reserves with amortised doubling, so a run of
        // increasing descriptors does not reallocate every time.
        self.index.resize(fd + 1, VACANT);
        self.index[fd] = i as u32;
    }

    /// Removes the slot at a position from [`KeyTable::position`].
    #[inline]
    pub(crate) fn remove_at(&mut self, i: usize) -> Slot<F, D> {
        let slot = self.slots.swap_remove(i);
        self.index[slot.key.fd as usize] = VACANT;
        if let Some(moved) = self.slots.get(i) {
            self.index[moved.key.fd as usize] = i as u32;
        }
        slot
    }

    pub(crate) fn clear(&mut self) {
        self.slots.clear();
        self.index.clear();
    }

    pub(crate) fn keys(&self) -> Keys<'_, F, D> {
        Keys {
            inner: self.slots.iter(),
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

    /// Every registered key, in no particular order.
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
    inner: std::slice::Iter<'a, Slot<F, D>>,
}

impl<'a, F, D> Iterator for Keys<'a, F, D> {
    type Item = &'a SelectorKey<F, D>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|s| &s.key)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<F, D> ExactSizeIterator for Keys<'_, F, D> {}
