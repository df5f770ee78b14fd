//! In steady state `select()` and `next_ready()` allocate nothing: a
//! counting global allocator proves it over thousands of calls, with 100
//! registered socket pairs of which 50 are readable, on every backend.

mod common;

use common::{open, socketpair, BackendUnderTest};
use rselectors::Events;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The system allocator, counting allocations made by threads that asked
/// for it (the test harness's own threads allocate at will meanwhile).
struct CountingAllocator;

thread_local! {
    // `const` and destructor-free: using them cannot allocate or recurse.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    let counting = COUNTING.try_with(Cell::get).unwrap_or(false);
    if counting {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees carry over; counting touches only
// const thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded as is (see above).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded as is (see above).
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded as is (see above).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is (see above).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Allocations made by this thread while running `f`.
fn allocations_during(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

/// One round of select + drain, touching each ready key's data.
fn round<B: rselectors::Backend>(
    sel: &mut rselectors::Selector<B, UnixStream, usize>,
    timeout: Option<Duration>,
) {
    let n = sel.select(timeout).unwrap();
    let mut seen = 0;
    while let Some((fd, events)) = sel.next_ready() {
        let key = sel.get_key(fd).unwrap();
        black_box((key.data, events));
        seen += 1;
    }
    assert!(n == READABLE && seen == READABLE);
}

const REGISTERED: usize = 100;
const READABLE: usize = 50;

// One at a time: the select backend needs descriptors below FD_SETSIZE.
per_backend!(steady_state_select_allocates_nothing: exclusive);

fn steady_state_select_allocates_nothing<M: BackendUnderTest>() {
    let mut sel = open::<M, UnixStream, usize>();
    let mut peers = Vec::new();
    for i in 0..REGISTERED {
        let (rd, mut peer) = socketpair();
        if i % 2 == 0 {
            peer.write_all(b"x").unwrap();
        }
        sel.register(rd, Events::READ, i).unwrap();
        peers.push(peer);
    }

    for _ in 0..10 {
        round(&mut sel, Some(Duration::ZERO));
    }

    let zero = allocations_during(|| {
        for _ in 0..10_000 {
            round(&mut sel, Some(Duration::ZERO));
        }
    });
    assert_eq!(zero, 0, "select(Some(0)) allocated");
    // Positive and absent timeouts take other paths (deadline, -1).
    let waiting = allocations_during(|| {
        for _ in 0..500 {
            round(&mut sel, Some(Duration::from_millis(100)));
            round(&mut sel, None);
        }
    });
    assert_eq!(waiting, 0, "select with a timeout allocated");
    // The counter works: this allocates.
    assert!(allocations_during(|| drop(black_box(vec![1u8; 16]))) > 0);
}
