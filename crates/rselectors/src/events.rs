//! The event mask: `EVENT_READ` and `EVENT_WRITE` as a bit set.

bitflags::bitflags! {
    /// What a registration waits for, and what `select()` reports as ready.
    ///
    /// The values are those of Python's `selectors.EVENT_READ` (1) and
    /// `selectors.EVENT_WRITE` (2), so a mask crosses the Python boundary as is.
    ///
    /// `repr(transparent)` over `u32`, a layout this crate promises: any
    /// 32 bits are a valid value.
    #[repr(transparent)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Events: u32 {
        /// The file object is readable (`selectors.EVENT_READ`).
        const READ = 1;
        /// The file object is writable (`selectors.EVENT_WRITE`).
        const WRITE = 2;
    }
}

impl Events {
    /// `Some(mask)` if `bits` is a mask `register` accepts: not empty and no
    /// bit other than `READ` and `WRITE`. CPython raises `ValueError` otherwise.
    pub fn from_mask(bits: u32) -> Option<Events> {
        Events::from_bits(bits).filter(|e| !e.is_empty())
    }

    /// True if this mask may be registered (see [`Events::from_mask`]).
    pub fn is_valid_mask(self) -> bool {
        Events::from_mask(self.bits()).is_some()
    }
}
