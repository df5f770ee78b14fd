//! `FdMap` against a `BTreeMap` model, and its bounds on memory.

use super::{dense_bound, shrink_threshold, FdMap, DENSE_MIN, DENSE_PER_ENTRY};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The invariants every operation keeps.
fn check<T: PartialEq + std::fmt::Debug>(map: &FdMap<T>, model: &BTreeMap<RawFd, T>) {
    assert_eq!(map.len(), model.len());
    let values: Vec<&T> = map.values().collect();
    assert_eq!(
        values,
        model.values().collect::<Vec<_>>(),
        "descriptor order"
    );
    assert_eq!(map.values().len(), model.len(), "exact size");
    for (&fd, value) in model {
        assert_eq!(map.get(fd), Some(value), "fd {fd}");
    }
    let dense_len = map.dense.len();
    assert!(
        dense_len <= 2 * dense_bound(map.len()),
        "{dense_len} slots for {} entries",
        map.len()
    );
    let below: Vec<_> = map
        .sparse
        .keys()
        .filter(|&&fd| (fd as usize) < dense_len)
        .collect();
    assert!(
        below.is_empty(),
        "sparse entries below dense's end: {below:?}"
    );
    assert_eq!(
        map.len(),
        map.dense.iter().flatten().count() + map.sparse.len()
    );
    assert_eq!(map.shrink_below, shrink_threshold(dense_len));
}

#[test]
fn a_high_descriptor_costs_no_slot_below_it() {
    let mut map = FdMap::new();
    *map.insert(1 << 20, 'a') = 'b';
    assert_eq!(map.dense_capacity(), 0);
    assert_eq!(map.get(1 << 20), Some(&'b'));
    assert_eq!(map.get((1 << 20) - 1), None);
    assert_eq!(map.get(-1), None);
    assert_eq!(map.get(RawFd::MAX), None);
    map.insert(RawFd::MAX, 'c');
    assert_eq!(map.values().collect::<String>(), "bc");
    assert_eq!(map.remove(1 << 20), Some('b'));
    assert_eq!(map.remove(RawFd::MAX), Some('c'));
    assert_eq!(map.remove(RawFd::MAX), None);
    assert_eq!((map.len(), map.dense_capacity()), (0, 0));
}

#[test]
fn dense_grows_within_its_bound_and_takes_over_sparse_entries() {
    let mut map = FdMap::new();
    let mut model = BTreeMap::new();
    let high = (DENSE_MIN * 4) as RawFd;
    map.insert(high, high);
    model.insert(high, high);
    assert_eq!((map.dense.len(), map.sparse.len()), (0, 1));
    // Dense descriptors from 0 up: once there are enough of them, `high`
    // is within the bound and moves into `dense` as it grows past it.
    for fd in 0..=high + 1 {
        if fd != high {
            map.insert(fd, fd);
            model.insert(fd, fd);
        }
        check(&map, &model);
    }
    assert!(map.sparse.is_empty());
    assert_eq!(map.dense.len(), high as usize + 2);
}

#[test]
fn dense_shrinks_and_frees_its_slots_when_entries_go() {
    let mut map = FdMap::new();
    let mut model = BTreeMap::new();
    for fd in 0..10_000 {
        map.insert(fd, fd);
        model.insert(fd, fd);
    }
    // Keep a few spread out: the low ones stay dense, the others move out.
    for fd in 0..10_000 {
        if ![3, 40, 5_000, 9_999].contains(&fd) {
            assert_eq!(map.remove(fd), model.remove(&fd));
        }
    }
    check(&map, &model);
    assert!(
        map.dense_capacity() <= 2 * DENSE_MIN,
        "{}",
        map.dense_capacity()
    );
    assert_eq!(
        map.sparse.keys().copied().collect::<Vec<_>>(),
        [5_000, 9_999]
    );
    for fd in [3, 40, 5_000, 9_999] {
        assert_eq!(map.remove(fd), Some(fd));
    }
    assert_eq!(map.len(), 0);
    assert!(map.sparse.is_empty() && map.dense_capacity() <= 2 * DENSE_MIN);
}

#[test]
fn one_entry_going_and_coming_back_moves_nothing() {
    // At the edge of the bound, a register / unregister pair must not
    // shrink and regrow `dense` every time.
    let mut map = FdMap::new();
    let n = 100;
    for fd in 0..n {
        map.insert(fd, ());
    }
    let last = (n as usize * DENSE_PER_ENTRY - 1) as RawFd;
    map.insert(last, ());
    let slots = map.dense.len();
    for _ in 0..1_000 {
        map.remove(last);
        map.insert(last, ());
        assert_eq!(map.dense.len(), slots);
    }
}

/// A value whose `Drop` panics once armed.
#[derive(Debug, PartialEq)]
struct Bomb(bool);

impl Drop for Bomb {
    fn drop(&mut self) {
        if self.0 && !std::thread::panicking() {
            panic!("a file object's Drop panicked");
        }
    }
}

#[test]
fn a_panicking_drop_during_clear_leaves_an_empty_usable_map() {
    let mut map = FdMap::new();
    for fd in [1, 2, 3, 1_000, 2_000] {
        map.insert(fd, Bomb(fd == 2));
    }
    let unwound = catch_unwind(AssertUnwindSafe(|| map.clear()));
    assert!(unwound.is_err(), "the Drop did panic");
    check(&map, &BTreeMap::new());
    map.insert(2, Bomb(false));
    map.insert(5_000, Bomb(false));
    assert_eq!(map.len(), 2);
    assert_eq!(map.values().count(), 2);
}

#[derive(Debug, Clone)]
enum Op {
    Insert(RawFd),
    Remove(RawFd),
}

/// Mostly small descriptors, some far out: both halves of the map, and
/// the moves between them as the bound follows the count.
fn fd() -> impl Strategy<Value = RawFd> {
    prop_oneof![6 => 0..200, 3 => 0..3_000, 1 => 1_000_000..1_000_010]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![3 => fd().prop_map(Op::Insert), 2 => fd().prop_map(Op::Remove)]
}

proptest! {
    #[test]
    fn fdmap_agrees_with_a_btreemap(ops in prop::collection::vec(op(), 1..400)) {
        let mut map = FdMap::new();
        let mut model = BTreeMap::new();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Insert(fd) if !model.contains_key(&fd) => {
                    assert_eq!(*map.insert(fd, step), step);
                    model.insert(fd, step);
                }
                Op::Insert(fd) => {
                    // A value is there: change it in place, as `modify` does.
                    *map.get_mut(fd).unwrap() = step;
                    model.insert(fd, step);
                }
                Op::Remove(fd) => assert_eq!(map.remove(fd), model.remove(&fd)),
            }
            check(&map, &model);
        }
        map.clear();
        check(&map, &BTreeMap::new());
    }
}
