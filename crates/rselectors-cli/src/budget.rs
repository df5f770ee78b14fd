//! The memory budget: bytes a server holds on behalf of its clients
//! (output not yet sent, input not yet made into lines), counted
//! process-wide over every event loop, against one limit (`--max-memory`).
//!
//! Every such byte lives in a [`Held`] buffer, which charges the budget
//! for its capacity as it grows and refunds it when it shrinks or goes,
//! so the count is exact whatever path frees it. What the servers do with
//! the count (stop reading, then cut off clients) is in `crate::server`.

use memmap2::MmapMut;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes held in [`Held`] buffers now.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// The limit; no limit until [`set_limit`] is called.
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Sets the process-wide limit.
pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// The process-wide limit.
pub fn limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Bytes held now, over every loop.
pub fn held() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// True past three quarters of the limit: clients whose output is not
/// leaving are no longer read (back-pressure), so that they stop adding
/// to it before anyone has to be cut off.
#[inline]
pub fn tight() -> bool {
    let limit = limit();
    held() > limit - limit / 4
}

/// Whether to read from a client with `pending` bytes of output queued:
/// not while memory is tight and its output is not leaving.
#[inline]
pub fn may_read(pending: usize) -> bool {
    pending == 0 || !tight()
}

/// True past the limit: the clients holding the most must go.
#[inline]
pub fn exceeded() -> bool {
    held() > limit()
}

/// How far to bring the count down once it went over: back under the
/// level where back-pressure starts, so one cut-off is not followed at once
/// by the next.
pub fn target() -> usize {
    let limit = limit();
    limit / 2 + limit / 8
}

/// Buffers at least this large live in an anonymous memory mapping of
/// their own, given back to the OS the moment they shrink or go: in the
/// allocator's heap, the memory of many large buffers freed at once stays
/// resident behind whatever small allocation was made after them.
const MAPPED_FROM: usize = 16 * 1024;

/// A byte buffer charged to the budget for its capacity.
#[derive(Debug, Default)]
pub struct Held {
    storage: Storage,
}

#[derive(Debug)]
enum Storage {
    Heap(Vec<u8>),
    /// `map[..len]` holds the bytes.
    Mapped {
        map: MmapMut,
        len: usize,
    },
}

impl Default for Storage {
    fn default() -> Self {
        Storage::Heap(Vec::new())
    }
}

impl Held {
    /// The bytes.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        match &self.storage {
            Storage::Heap(vec) => vec,
            Storage::Mapped { map, len } => &map[..*len],
        }
    }

    /// How many bytes it holds.
    #[inline]
    pub fn len(&self) -> usize {
        match &self.storage {
            Storage::Heap(vec) => vec.len(),
            Storage::Mapped { len, .. } => *len,
        }
    }

    /// Bytes charged for it.
    #[inline]
    pub fn capacity(&self) -> usize {
        match &self.storage {
            Storage::Heap(vec) => vec.capacity(),
            Storage::Mapped { map, .. } => map.len(),
        }
    }

    /// Appends `bytes`, charging any growth of the capacity.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let before = self.capacity();
        let needed = self.len() + bytes.len();
        let fits = match &self.storage {
            // A small heap buffer grows by itself; a large one (where a
            // mapping was refused) only up to its capacity.
            Storage::Heap(vec) => needed <= MAPPED_FROM || needed <= vec.capacity(),
            Storage::Mapped { map, .. } => needed <= map.len(),
        };
        if !fits {
            self.move_to(needed.next_power_of_two());
        }
        match &mut self.storage {
            Storage::Heap(vec) => vec.extend_from_slice(bytes),
            Storage::Mapped { map, len } => {
                // `move_to` made room: a mapping is never smaller than asked.
                map[*len..needed].copy_from_slice(bytes);
                *len = needed;
            }
        }
        self.recharge(before);
    }

    /// Drops the first `n` bytes. The capacity shrinks with the contents
    /// once it is mostly unused, so a buffer that was large once does not
    /// stay charged (and resident) at that size.
    pub fn consume(&mut self, n: usize) {
        let before = self.capacity();
        match &mut self.storage {
            Storage::Heap(vec) => {
                vec.drain(..n);
                if vec.capacity() > 4 * vec.len().max(4096) {
                    vec.shrink_to(2 * vec.len());
                }
            }
            Storage::Mapped { map, len } => {
                map.copy_within(n..*len, 0);
                *len -= n;
                if map.len() > 4 * *len {
                    self.move_to(2 * self.len());
                }
            }
        }
        self.recharge(before);
    }

    /// Empties it, keeping its memory (and the charge) for what comes next.
    pub fn empty(&mut self) {
        match &mut self.storage {
            Storage::Heap(vec) => vec.clear(),
            Storage::Mapped { len, .. } => *len = 0,
        }
    }

    /// Empties it and frees its memory.
    pub fn clear(&mut self) {
        let before = self.capacity();
        self.storage = Storage::default();
        self.recharge(before);
    }

    /// Moves the contents to storage for `capacity` bytes: a mapping if
    /// that is large, else the heap. If the OS refuses a mapping, the heap
    /// it is (where running out of memory ends the process, as any
    /// allocation does).
    fn move_to(&mut self, capacity: usize) {
        let bytes = self.as_slice();
        let storage = if capacity > MAPPED_FROM {
            match map_anon(capacity) {
                Ok(mut map) => {
                    map[..bytes.len()].copy_from_slice(bytes);
                    Some(Storage::Mapped {
                        map,
                        len: bytes.len(),
                    })
                }
                Err(_) => None,
            }
        } else {
            None
        };
        self.storage = storage.unwrap_or_else(|| {
            let mut vec = Vec::with_capacity(capacity.max(bytes.len()));
            vec.extend_from_slice(bytes);
            Storage::Heap(vec)
        });
    }

    fn recharge(&self, before: usize) {
        let after = self.capacity();
        if after > before {
            HELD.fetch_add(after - before, Ordering::Relaxed);
        } else if after < before {
            HELD.fetch_sub(before - after, Ordering::Relaxed);
        }
    }
}

/// An anonymous mapping of `len` bytes (in this crate's tests, refused
/// while the test flag `REFUSE_MAPPINGS` says so).
fn map_anon(len: usize) -> std::io::Result<MmapMut> {
    #[cfg(test)]
    if tests::REFUSE_MAPPINGS.with(std::cell::Cell::get) {
        return Err(std::io::ErrorKind::OutOfMemory.into());
    }
    MmapMut::map_anon(len)
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.fetch_sub(self.capacity(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Makes this thread's mappings fail, as under an address-space
        /// limit or past `vm.max_map_count`.
        pub(super) static REFUSE_MAPPINGS: Cell<bool> = const { Cell::new(false) };
    }

    #[test]
    fn a_refused_mapping_falls_back_to_the_heap() {
        REFUSE_MAPPINGS.with(|refuse| refuse.set(true));
        let mut buf = Held::default();
        let mut model = Vec::new();
        for i in 0..40u8 {
            let bytes = [i; 7000];
            buf.extend_from_slice(&bytes);
            model.extend_from_slice(&bytes);
            assert!(matches!(buf.storage, Storage::Heap(_)));
        }
        buf.consume(100_000);
        model.drain(..100_000);
        assert_eq!(buf.as_slice(), &model[..]);
        REFUSE_MAPPINGS.with(|refuse| refuse.set(false));
        buf.extend_from_slice(&[1; 1_000_000]);
        assert!(matches!(buf.storage, Storage::Mapped { .. }));
    }

    /// What making a buffer with `make` charged. Other tests of this
    /// process hold buffers too, so the count is exact only when none of
    /// them moved it meanwhile: try a few times.
    fn charged_by(make: impl Fn() -> Held) -> Option<(usize, usize)> {
        (0..1000).find_map(|_| {
            let before = held();
            let buf = make();
            let charged = held().wrapping_sub(before);
            let capacity = buf.capacity();
            drop(buf);
            (held() == before).then_some((charged, capacity))
        })
    }

    #[test]
    fn a_buffer_is_charged_its_capacity_and_refunded_when_it_goes() {
        let (charged, capacity) = charged_by(|| {
            let mut buf = Held::default();
            buf.extend_from_slice(&[1; 5000]);
            buf.consume(1000);
            buf.extend_from_slice(&[2; 3000]);
            buf
        })
        .expect("a quiet moment to count in");
        assert!(capacity >= 7000);
        assert_eq!(charged, capacity);
        let mut buf = Held::default();
        buf.extend_from_slice(&[1; 100_000]);
        buf.consume(99_000);
        assert_eq!(buf.as_slice(), &[1; 1000][..]);
        assert!(buf.capacity() < 100_000, "shrunk once mostly empty");
        buf.clear();
        assert_eq!(buf.capacity(), 0);
    }

    #[test]
    fn holds_what_a_vec_would_through_growth_and_shrinking() {
        let mut buf = Held::default();
        let mut model = Vec::new();
        let mut state = 12345u32;
        for step in 0..2000u32 {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let size = (state >> 8) as usize % 40_000;
            if step % 3 == 2 {
                let n = size.min(model.len());
                buf.consume(n);
                model.drain(..n);
            } else {
                let bytes: Vec<u8> = (0..size).map(|i| (i as u32 ^ step) as u8).collect();
                buf.extend_from_slice(&bytes);
                model.extend_from_slice(&bytes);
            }
            assert_eq!(buf.as_slice(), &model[..], "step {step}");
            assert!(buf.capacity() >= buf.len());
        }
    }
}
