//! What the selector allocates, counted by a global allocator, on every
//! backend: in steady state `select()` and `next_ready()` allocate nothing
//! (thousands of calls, 100 registered socket pairs of which 50 are
//! readable); a registration at the highest descriptor number the OS can
//! hand out costs memory for one registration, not for every number below
//! it, and gives it all back when it goes.

mod common;

use common::{dup_at_least, open, raise_fd_limit_to_hard, socketpair, BackendUnderTest};
use rselectors::{BackendKind, Error, Events, Fd};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The system allocator, counting allocations made by threads that asked
/// for it (the test harness's own threads allocate at will meanwhile).
struct CountingAllocator;

thread_local! {
    // `const` and destructor-free: using them cannot allocate or recurse.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// Bytes asked for, by allocations and growing reallocations.
    static BYTES: Cell<u64> = const { Cell::new(0) };
    /// Bytes asked for minus bytes given back.
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

/// Notes an allocation of `new` bytes that replaces one of `old` bytes.
fn note_allocation(old: usize, new: usize) {
    if counting() {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        let _ = BYTES.try_with(|n| n.set(n.get() + new.saturating_sub(old) as u64));
        let _ = LIVE.try_with(|n| n.set(n.get() + new as i64 - old as i64));
    }
}

fn note_release(size: usize) {
    if counting() {
        let _ = LIVE.try_with(|n| n.set(n.get() - size as i64));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees carry over; counting touches only
// const thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(0, layout.size());
        // SAFETY: forwarded as is (see above).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(0, layout.size());
        // SAFETY: forwarded as is (see above).
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(layout.size(), new_size);
        // SAFETY: forwarded as is (see above).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_release(layout.size());
        // SAFETY: forwarded as is (see above).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Allocations made by this thread while running `f`.
fn allocations_during(f: impl FnOnce()) -> u64 {
    counted(f).1.allocations
}

/// What this thread allocated while running a piece of code.
#[derive(Debug)]
struct Counts {
    allocations: u64,
    /// Bytes asked for.
    bytes: u64,
    /// Bytes still held at the end (negative: more given back).
    live: i64,
}

/// Runs `f`, counting this thread's allocations.
fn counted<T>(f: impl FnOnce() -> T) -> (T, Counts) {
    ALLOCATIONS.with(|n| n.set(0));
    BYTES.with(|n| n.set(0));
    LIVE.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    let result = f();
    COUNTING.with(|c| c.set(false));
    let counts = Counts {
        allocations: ALLOCATIONS.with(Cell::get),
        bytes: BYTES.with(Cell::get),
        live: LIVE.with(Cell::get),
    };
    (result, counts)
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

// One at a time: the select backend needs descriptors below FD_SETSIZE,
// and the others use the highest descriptor numbers.
per_backend!(
    steady_state_select_allocates_nothing: exclusive,
    a_high_descriptor_costs_one_registration: exclusive,
    many_high_descriptors_cost_memory_by_their_count: exclusive,
);

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

/// Most a registration may allocate, wherever its descriptor is: far below
/// a slot per number up to a high descriptor.
const SMALL: u64 = 64 * 1024;
/// What a selector may keep after every registration went (the poll
/// backend keeps its `pollfd` vector's capacity).
const KEPT: i64 = 1024;

/// A descriptor at the highest number the OS can hand out, with its other
/// end, or why the test cannot run here.
fn highest_descriptor() -> Result<(OwnedFd, UnixStream), String> {
    let soft = raise_fd_limit_to_hard()?;
    let highest = soft.saturating_sub(1).min(i32::MAX as u64) as RawFd;
    if highest < 4 * libc::FD_SETSIZE as RawFd {
        return Err(format!("RLIMIT_NOFILE is only {soft}"));
    }
    let (end, peer) = socketpair();
    let high = dup_at_least(&end, highest).map_err(|e| format!("F_DUPFD {highest}: {e}"))?;
    Ok((high, peer))
}

fn a_high_descriptor_costs_one_registration<M: BackendUnderTest>() {
    let (high, _peer) = match highest_descriptor() {
        Ok(found) => found,
        Err(why) => return println!("skipped: {why}"),
    };
    let fd = high.as_raw_fd();
    // A short-lived selector, as `subprocess.communicate()` makes one.
    let (_, whole) = counted(|| {
        let mut sel = open::<M, Fd, u64>();
        let (registered, counts) = counted_inner(|| sel.register(Fd(fd), Events::READ, 7).is_ok());
        assert!(counts.bytes < SMALL, "register at fd {fd}: {counts:?}");
        if M::KIND == BackendKind::Select {
            assert!(!registered);
            let error = sel.register(Fd(fd), Events::READ, 7).unwrap_err().error;
            assert!(matches!(error, Error::FdOutOfRange { .. }), "{error:?}");
            return;
        }
        assert!(registered);
        assert_eq!(sel.get_map().fds().collect::<Vec<_>>(), [fd]);
        assert_eq!(sel.get_key(fd).unwrap().data, 7);
        assert_eq!(sel.unregister(fd).unwrap().data, 7);
        assert!(sel.is_empty());
        sel.close();
    });
    assert!(whole.bytes < SMALL, "open + register + close: {whole:?}");
    assert!(
        whole.live <= 0,
        "the selector is gone, its memory too: {whole:?}"
    );
}

/// [`counted`] within an outer count, which goes on including it.
fn counted_inner<T>(f: impl FnOnce() -> T) -> (T, Counts) {
    let before = (BYTES.with(Cell::get), LIVE.with(Cell::get));
    let result = f();
    let counts = Counts {
        allocations: 0,
        bytes: BYTES.with(Cell::get) - before.0,
        live: LIVE.with(Cell::get) - before.1,
    };
    (result, counts)
}

fn many_high_descriptors_cost_memory_by_their_count<M: BackendUnderTest>() {
    const MANY: usize = 64;
    let (high, _peer) = match highest_descriptor() {
        Ok(found) => found,
        Err(why) => return println!("skipped: {why}"),
    };
    if M::KIND == BackendKind::Select {
        return println!("skipped: select(2) refuses them all (see the test above)");
    }
    // MANY descriptors just below the highest, registered with a few low
    // ones that the kernel hands out as usual.
    let base = high.as_raw_fd() - MANY as RawFd;
    let far: Vec<OwnedFd> = (0..MANY as RawFd)
        .map(|i| dup_at_least(&high, base + i).expect("F_DUPFD"))
        .collect();
    let near: Vec<_> = (0..4).map(|_| socketpair()).collect();
    let mut fds: Vec<RawFd> = far.iter().map(AsRawFd::as_raw_fd).collect();
    fds.extend(near.iter().map(|(end, _)| end.as_raw_fd()));
    let mut sel = open::<M, Fd, usize>();
    let ((), counts) = counted(|| {
        for (i, &fd) in fds.iter().enumerate() {
            sel.register(Fd(fd), Events::READ | Events::WRITE, i)
                .map_err(|r| r.into_error())
                .expect("register");
        }
    });
    assert!(
        counts.bytes < SMALL,
        "{} registrations: {counts:?}",
        fds.len()
    );
    // In descriptor order, with an exact size, the low ones first.
    let mut sorted = fds.clone();
    sorted.sort_unstable();
    let map = sel.get_map();
    assert_eq!(map.iter().len(), fds.len());
    assert_eq!(map.fds().collect::<Vec<_>>(), sorted);
    // Every one is found and reported (all are writable).
    assert_eq!(sel.select(Some(Duration::from_secs(5))).unwrap(), fds.len());
    let mut seen = Vec::new();
    while let Some((key, events)) = sel.next_ready_mut() {
        assert_eq!(events, Events::WRITE);
        assert_eq!(fds[*key.data], key.fd);
        seen.push(key.fd);
    }
    seen.sort_unstable();
    assert_eq!(seen, sorted);
    let ((), counts) = counted(|| {
        for &fd in &fds {
            sel.unregister(fd).expect("unregister");
        }
    });
    assert!(sel.is_empty() && sel.get_map().iter().next().is_none());
    assert!(counts.live <= KEPT, "after every unregister: {counts:?}");
}
