//! A map from descriptor number to `T`, sized by what it holds.
//!
//! Descriptors are small dense integers (the kernel hands out the lowest
//! free number), so most entries live in `dense`, a vector indexed by
//! number: a lookup is one bounds check and one load, and nothing moves on
//! insert or remove (the choice of libev and of a hand-written epoll loop).
//! But a process may hold many files, and one registration of a high
//! number (every `subprocess.communicate()` of a busy Python process) must
//! not cost a slot for every number below it. So `dense` never grows past
//! `max(DENSE_MIN, DENSE_PER_ENTRY * len)` slots; a descriptor beyond that
//! goes to `sparse`, a `BTreeMap`, which is ordered (iteration stays in
//! descriptor order: `dense`, then `sparse`) and small when it holds a few.
//! `dense` takes over the entries of `sparse` below its new end when it
//! grows, and hands back those beyond its new end when registrations go
//! and it is more than twice its bound (the slack keeps one register /
//! unregister pair from moving entries back and forth).
//!
//! A two-level page table would not do: its directory is sized by the
//! highest number again (or is a map itself), and every lookup would pay a
//! second dependent load.
//!
//! Panics: only `T`'s `Drop` can run user code here, and no path but
//! [`FdMap::clear`] (and the map's own drop) drops a `T`: insert, remove
//! and the moves between `dense` and `sparse` move values. `clear` resets
//! the counts before it drops anything, so an unwinding `Drop` leaves an
//! empty, usable map. (Allocation failure aborts.)

use std::collections::{btree_map, BTreeMap};
use std::fmt;
use std::os::fd::RawFd;

/// Slots `dense` may always have, however few entries there are.
const DENSE_MIN: usize = 64;
/// Slots `dense` may have per entry beyond that: room for a server whose
/// descriptors are shared by several event loops, or interleaved with
/// files it does not register.
const DENSE_PER_ENTRY: usize = 8;

/// The most slots `dense` may grow to while the map holds `len` entries.
fn dense_bound(len: usize) -> usize {
    DENSE_MIN.max(len.saturating_mul(DENSE_PER_ENTRY))
}

/// The entry count below which `dense`, `dense_len` slots long, is more
/// than twice [`dense_bound`] of it, and shrinks.
fn shrink_threshold(dense_len: usize) -> u32 {
    if dense_len <= 2 * DENSE_MIN {
        0
    } else {
        // Below 2^31: `dense` ends at a descriptor (an i32) plus one.
        ((dense_len - 1) / (2 * DENSE_PER_ENTRY) + 1) as u32
    }
}

/// The index of `fd` in `dense`: a negative number wraps to one past any
/// index, like a large one, and is never stored.
#[inline(always)]
fn index(fd: RawFd) -> usize {
    fd as u32 as usize
}

/// Values keyed by non-negative descriptor number (see the module doc).
pub(crate) struct FdMap<T> {
    /// `dense[fd]` holds `fd`'s value, for every `fd < dense.len()`.
    dense: Vec<Option<T>>,
    /// Entries at or beyond `dense.len()`.
    sparse: BTreeMap<u32, T>,
    /// Entries in both (32 bits, as descriptors are, which keeps the map
    /// and the poll backend that holds one small).
    len: u32,
    /// `shrink_threshold(dense.len())`, kept so that `remove` compares once.
    shrink_below: u32,
}

impl<T> FdMap<T> {
    pub(crate) const fn new() -> Self {
        FdMap {
            dense: Vec::new(),
            sparse: BTreeMap::new(),
            len: 0,
            shrink_below: 0,
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// `fd`'s value, if there is one.
    #[inline]
    pub(crate) fn get(&self, fd: RawFd) -> Option<&T> {
        match self.dense.get(index(fd)) {
            Some(slot) => slot.as_ref(),
            None => self.get_sparse(fd),
        }
    }

    /// `fd`'s place in `dense` (`Some(None)`: no value), or `None` for a
    /// descriptor beyond it, which only [`FdMap::get`] finds.
    #[inline]
    pub(crate) fn get_dense(&self, fd: RawFd) -> Option<Option<&T>> {
        self.dense.get(index(fd)).map(Option::as_ref)
    }

    /// True if every value is in `dense` (found by [`FdMap::get_dense`]).
    #[inline]
    pub(crate) fn is_dense(&self) -> bool {
        self.sparse.is_empty()
    }

    // Cold: only descriptors far above the others live beyond `dense`.
    #[cold]
    #[inline(never)]
    fn get_sparse(&self, fd: RawFd) -> Option<&T> {
        self.sparse.get(&(fd as u32))
    }

    /// `fd`'s value, mutable, if there is one.
    #[inline]
    pub(crate) fn get_mut(&mut self, fd: RawFd) -> Option<&mut T> {
        let i = index(fd);
        if i < self.dense.len() {
            self.dense[i].as_mut()
        } else {
            self.get_sparse_mut(fd)
        }
    }

    #[cold]
    #[inline(never)]
    fn get_sparse_mut(&mut self, fd: RawFd) -> Option<&mut T> {
        self.sparse.get_mut(&(fd as u32))
    }

    /// Inserts `value` for `fd`, which is not negative and has no value.
    // Hot: once per connection, from `register`.
    #[inline(always)]
    pub(crate) fn insert(&mut self, fd: RawFd, value: T) -> &mut T {
        debug_assert!(fd >= 0 && self.get(fd).is_none());
        let i = index(fd);
        if i >= self.dense.len() {
            return self.insert_beyond(i, value);
        }
        self.len += 1;
        self.dense[i].insert(value)
    }

    /// Inserts `value` for `fd` (not negative) unless `fd` has a value
    /// already; returns whether it did.
    #[inline]
    pub(crate) fn insert_new(&mut self, fd: RawFd, value: T) -> bool {
        let i = index(fd);
        match self.dense.get_mut(i) {
            Some(Some(_)) => false,
            Some(slot) => {
                *slot = Some(value);
                self.len += 1;
                true
            }
            None => self.insert_new_beyond(i, value),
        }
    }

    #[cold]
    #[inline(never)]
    fn insert_new_beyond(&mut self, i: usize, value: T) -> bool {
        if self.sparse.contains_key(&(i as u32)) {
            return false;
        }
        self.insert_beyond(i, value);
        true
    }

    /// [`FdMap::insert`] beyond the end of `dense`: grows it if the bound
    /// allows, or puts the value in `sparse`.
    #[cold]
    #[inline(never)]
    fn insert_beyond(&mut self, i: usize, value: T) -> &mut T {
        if i < dense_bound(self.len() + 1) {
            self.grow_dense(i + 1);
            self.len += 1;
            return self.dense[i].insert(value);
        }
        let slot = self.sparse.entry(i as u32).or_insert(value);
        self.len += 1;
        slot
    }

    /// Lengthens `dense` to `new_len` slots, moving in the entries of
    /// `sparse` below that.
    fn grow_dense(&mut self, new_len: usize) {
        // `resize_with` reserves with amortised doubling, so a run of
        // increasing descriptors does not reallocate every time.
        self.dense.resize_with(new_len, || None);
        while let Some(entry) = self.sparse.first_entry() {
            let i = *entry.key() as usize;
            if i >= new_len {
                break;
            }
            self.dense[i] = Some(entry.remove());
        }
        self.release_sparse_if_empty();
        self.shrink_below = shrink_threshold(new_len);
    }

    /// Takes `fd`'s value out, if there is one.
    #[inline]
    pub(crate) fn remove(&mut self, fd: RawFd) -> Option<T> {
        let value = match self.dense.get_mut(index(fd)) {
            Some(slot) => slot.take()?,
            None => self.remove_sparse(fd)?,
        };
        self.len -= 1;
        if self.len < self.shrink_below {
            self.shrink_dense();
        }
        Some(value)
    }

    #[cold]
    #[inline(never)]
    fn remove_sparse(&mut self, fd: RawFd) -> Option<T> {
        let value = self.sparse.remove(&(fd as u32))?;
        self.release_sparse_if_empty();
        Some(value)
    }

    /// Frees the root node that an emptied `BTreeMap` keeps.
    fn release_sparse_if_empty(&mut self) {
        if self.sparse.is_empty() {
            self.sparse = BTreeMap::new();
        }
    }

    /// Cuts `dense` back to its bound (or to its last entry, if lower) and
    /// frees the rest; the entries beyond the new end go to `sparse`.
    #[cold]
    #[inline(never)]
    fn shrink_dense(&mut self) {
        let used = self
            .dense
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |i| i + 1);
        let keep = used.min(dense_bound(self.len()));
        for i in keep..used {
            if let Some(value) = self.dense[i].take() {
                self.sparse.insert(i as u32, value);
            }
        }
        self.dense.truncate(keep);
        self.dense.shrink_to_fit();
        self.shrink_below = shrink_threshold(keep);
    }

    /// Removes every entry and frees the storage.
    pub(crate) fn clear(&mut self) {
        // Out first, counts reset, then dropped: a `Drop` that panics
        // leaves an empty, consistent map behind.
        let dense = std::mem::take(&mut self.dense);
        let sparse = std::mem::take(&mut self.sparse);
        self.len = 0;
        self.shrink_below = 0;
        drop(dense);
        drop(sparse);
    }

    /// Every value, in the order of their descriptors.
    pub(crate) fn values(&self) -> Values<'_, T> {
        Values {
            dense: self.dense.iter(),
            sparse: self.sparse.values(),
            left: self.len(),
        }
    }

    /// Slots of `dense`, allocated ones (for tests of the bounds).
    #[cfg(test)]
    fn dense_capacity(&self) -> usize {
        self.dense.capacity()
    }
}

impl<T> Default for FdMap<T> {
    fn default() -> Self {
        FdMap::new()
    }
}

impl<T: fmt::Debug> fmt::Debug for FdMap<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dense = self.dense.iter().enumerate();
        let dense = dense.filter_map(|(fd, v)| Some((fd as u32, v.as_ref()?)));
        f.debug_map()
            .entries(dense.chain(self.sparse.iter().map(|(&fd, v)| (fd, v))))
            .finish()
    }
}

/// The values of an [`FdMap`], in descriptor order, with an exact size.
pub(crate) struct Values<'a, T> {
    dense: std::slice::Iter<'a, Option<T>>,
    sparse: btree_map::Values<'a, u32, T>,
    /// Values not yielded yet: the iterator stops at the last one.
    left: usize,
}

impl<'a, T> Iterator for Values<'a, T> {
    type Item = &'a T;

    fn next(&mut self) -> Option<&'a T> {
        if self.left == 0 {
            return None;
        }
        let value = match self.dense.by_ref().flatten().next() {
            Some(value) => value,
            None => self.sparse.next()?,
        };
        self.left -= 1;
        Some(value)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<T> ExactSizeIterator for Values<'_, T> {}

impl<T> fmt::Debug for Values<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Values")
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
