//! A property test: random sequences of register / modify / unregister /
//! write / read / select / close-behind-the-back on socket pairs and pipes,
//! run in lockstep against every backend of the registry (directly and
//! through `AnySelector`) and a simple model.
//!
//! Each backend must match the model: the same error kind for every call,
//! the same keys after every call, the same ready set (as (file, events))
//! for every `select`. The backends share the files, so where the model
//! says they agree, their ready sets must also equal one another's.
//!
//! The model knows where the mechanisms differ legitimately, as they do in
//! CPython: the crate docs list it ("Portability", in `src/lib.rs`), and
//! `common::Quirks` says it per backend.
//!
//! The files sit at small descriptor numbers, as the kernel hands them out,
//! and at high ones far apart (see [`World::new`]), so that the key table
//! and the poll backend's index hold some in their dense part and some
//! beyond it.
//!
//! `PROPTEST_CASES` overrides the number of cases (256 by default).

mod common;

use common::{dup_at_least, quirks, raise_fd_limit, AnyOf, BackendUnderTest, ClosedFile, Direct};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rselectors::{Backend, BackendKind, ErrorKind, Events, Fd, Selector};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// What a file is, which decides how it becomes ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Socket,
    PipeRead,
    PipeWrite,
}

/// The files of every case: two socket pairs and two pipes, by index, with
/// the index of the other end.
const FILES: [(End, usize); 8] = [
    (End::Socket, 1),
    (End::Socket, 0),
    (End::Socket, 3),
    (End::Socket, 2),
    (End::PipeRead, 5),
    (End::PipeWrite, 4),
    (End::PipeRead, 7),
    (End::PipeWrite, 6),
];

/// Unread writes a socket may hold: keeps the writer's send buffer far
/// from full, so sockets stay writable as the model assumes.
const MAX_UNREAD_WRITES: usize = 8;

#[derive(Debug, Clone)]
enum Op {
    Register {
        file: usize,
        mask: u32,
    },
    /// `modify` with new data, or `modify_events` when `new_data` is false.
    Modify {
        file: usize,
        mask: u32,
        new_data: bool,
    },
    Unregister {
        file: usize,
    },
    /// Writes `len` bytes from `file` to its other end.
    Write {
        file: usize,
        len: usize,
    },
    ReadAll {
        file: usize,
    },
    Select,
    /// `select`, take one event, unregister `file`, take the rest.
    SelectUnregistering {
        file: usize,
    },
    /// Closes `file` while it may be registered.
    Close {
        file: usize,
    },
}

fn mask() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 1u32..=3, 1 => Just(0u32), 1 => prop_oneof![Just(4u32), Just(7u32)]]
}

fn op() -> impl Strategy<Value = Op> {
    let file = 0..FILES.len();
    prop_oneof![
        4 => (file.clone(), mask()).prop_map(|(file, mask)| Op::Register { file, mask }),
        2 => (file.clone(), mask(), any::<bool>())
            .prop_map(|(file, mask, new_data)| Op::Modify { file, mask, new_data }),
        2 => file.clone().prop_map(|file| Op::Unregister { file }),
        3 => (file.clone(), 1..64usize).prop_map(|(file, len)| Op::Write { file, len }),
        2 => file.clone().prop_map(|file| Op::ReadAll { file }),
        4 => Just(Op::Select),
        1 => file.clone().prop_map(|file| Op::SelectUnregistering { file }),
        1 => file.prop_map(|file| Op::Close { file }),
    ]
}

/// The shared files and what is known about them.
struct World {
    files: Vec<Option<File>>,
    fds: Vec<RawFd>,
    /// Bytes written to each file by its other end and not read yet.
    unread: Vec<usize>,
    unread_writes: Vec<usize>,
}

impl World {
    /// Two socket pairs and two pipes: the first pair and pipe where the
    /// kernel puts them (small numbers), the second pair moved to numbers
    /// far beyond them but below `FD_SETSIZE`, the second pipe to numbers
    /// above it when the descriptor limit allows (select refuses those).
    fn new() -> World {
        let far = far_numbers();
        let mut files = Vec::new();
        for pair in 0..2 {
            let (a, b) = UnixStream::pair().unwrap();
            for end in [OwnedFd::from(a), OwnedFd::from(b)] {
                files.push(File::from(moved(end, (pair == 1).then_some(far.0))));
            }
        }
        for pipe in 0..2 {
            let (rd, wr) = std::io::pipe().unwrap();
            for end in [OwnedFd::from(rd), OwnedFd::from(wr)] {
                files.push(File::from(moved(end, (pipe == 1).then_some(far.1))));
            }
        }
        World {
            fds: files.iter().map(|f| f.as_raw_fd()).collect(),
            files: files.into_iter().map(Some).collect(),
            unread: vec![0; FILES.len()],
            unread_writes: vec![0; FILES.len()],
        }
    }

    fn is_open(&self, file: usize) -> bool {
        self.files[file].is_some()
    }

    fn write(&mut self, file: usize, len: usize) {
        let (end, peer) = FILES[file];
        if end == End::PipeRead || !self.is_open(peer) {
            return;
        }
        if self.unread_writes[peer] >= MAX_UNREAD_WRITES {
            return;
        }
        if let Some(f) = &mut self.files[file] {
            f.write_all(&vec![b'w'; len]).unwrap();
            self.unread[peer] += len;
            self.unread_writes[peer] += 1;
        }
    }

    fn read_all(&mut self, file: usize) {
        let unread = self.unread[file];
        if let Some(f) = &mut self.files[file] {
            let mut buf = vec![0; unread];
            f.read_exact(&mut buf).unwrap();
            self.unread[file] = 0;
            self.unread_writes[file] = 0;
        }
    }

    /// What `file` (open) is ready for, as `kind` reports it.
    fn readiness(&self, file: usize, kind: BackendKind) -> Events {
        let (end, peer) = FILES[file];
        let peer_gone = !self.is_open(peer);
        let mut events = Events::empty();
        match end {
            End::Socket => {
                events |= Events::WRITE;
                if self.unread[file] > 0 || peer_gone {
                    events |= Events::READ;
                }
            }
            End::PipeRead => {
                if self.unread[file] > 0 || peer_gone {
                    events |= Events::READ;
                }
                if peer_gone && quirks(kind).hang_up_wakes_writer {
                    events |= Events::WRITE;
                }
            }
            End::PipeWrite => {
                events |= Events::WRITE;
                // POLLERR: both.
                if peer_gone {
                    events |= Events::READ;
                }
            }
        }
        events
    }
}

/// Where `World::new` moves its far files: a number well beyond the small
/// ones but below `FD_SETSIZE`, and one above `FD_SETSIZE` (or, if the
/// descriptor limit cannot be raised to it, a second one below).
fn far_numbers() -> (RawFd, RawFd) {
    let setsize = libc::FD_SETSIZE as RawFd;
    let above = 4 * setsize;
    match raise_fd_limit(above as u64 + 64) {
        Ok(_) => (setsize / 2, above),
        Err(_) => (setsize / 2, setsize - 64),
    }
}

/// `end`, moved to the lowest free number at or above `at` if there is one.
fn moved(end: OwnedFd, at: Option<RawFd>) -> OwnedFd {
    match at {
        Some(at) => dup_at_least(&end, at).expect("F_DUPFD"),
        None => end,
    }
}

/// One backend under test, behind an object-safe face.
trait Subject {
    fn register(&mut self, fd: RawFd, events: Events, data: u32) -> Result<Key, ErrorKind>;
    fn modify(&mut self, fd: RawFd, events: Events, data: Option<u32>) -> Result<Key, ErrorKind>;
    fn unregister(&mut self, fd: RawFd) -> Result<Key, ErrorKind>;
    fn select(&mut self) -> Result<usize, ErrorKind>;
    fn next_ready(&mut self) -> Option<(RawFd, Events)>;
    fn key(&self, fd: RawFd) -> Option<Key>;
    fn len(&self) -> usize;
}

/// (fd, events, data) of a key.
type Key = (RawFd, Events, u32);

impl<B: Backend> Subject for Selector<B, Fd, u32> {
    fn register(&mut self, fd: RawFd, events: Events, data: u32) -> Result<Key, ErrorKind> {
        match Selector::register(self, Fd(fd), events, data) {
            Ok(k) => Ok((k.fd, k.events, k.data)),
            Err(rejected) => Err(rejected.error.kind()),
        }
    }
    fn modify(&mut self, fd: RawFd, events: Events, data: Option<u32>) -> Result<Key, ErrorKind> {
        let key = match data {
            Some(data) => Selector::modify(self, fd, events, data),
            None => self.modify_events(fd, events),
        };
        key.map(|k| (k.fd, k.events, k.data)).map_err(|e| e.kind())
    }
    fn unregister(&mut self, fd: RawFd) -> Result<Key, ErrorKind> {
        let k = Selector::unregister(self, fd).map_err(|e| e.kind())?;
        Ok((k.fd, k.events, k.data))
    }
    fn select(&mut self) -> Result<usize, ErrorKind> {
        Selector::select(self, Some(Duration::ZERO)).map_err(|e| e.kind())
    }
    fn next_ready(&mut self) -> Option<(RawFd, Events)> {
        Selector::next_ready(self)
    }
    fn key(&self, fd: RawFd) -> Option<Key> {
        let k = self.get_key(fd).ok()?;
        Some((k.fd, k.events, k.data))
    }
    fn len(&self) -> usize {
        Selector::len(self)
    }
}

/// What one backend should have registered: file index -> (events, data).
struct Model {
    kind: BackendKind,
    keys: BTreeMap<usize, (Events, u32)>,
}

type ReadySet = BTreeSet<(usize, u32)>;

impl Model {
    /// The ready set `select` should report, or its error.
    fn expected_select(&self, world: &World) -> Result<ReadySet, ErrorKind> {
        let mut ready = ReadySet::new();
        for (&file, &(events, _)) in &self.keys {
            let reported = if world.is_open(file) {
                world.readiness(file, self.kind)
            } else {
                match quirks(self.kind).closed_file {
                    ClosedFile::FailsTheWait => return Err(ErrorKind::Os),
                    ClosedFile::ReportsBoth => Events::READ | Events::WRITE,
                    ClosedFile::Forgotten => Events::empty(),
                }
            } & events;
            if !reported.is_empty() {
                ready.insert((file, reported.bits()));
            }
        }
        Ok(ready)
    }
}

struct Lockstep {
    world: World,
    subjects: Vec<(&'static str, Box<dyn Subject>, Model)>,
}

/// Each backend of the registry, directly and through `AnySelector`.
macro_rules! every_subject {
    (() $({ [$($cfg:tt)*] $dflt:tt $kind:ident $name:literal $module:ident $ty:ident $($_:tt)* })*) => {{
        let mut subjects: Vec<(&'static str, Box<dyn Subject>, Model)> = vec![];
        $(
            #[cfg($($cfg)*)]
            subjects.push(subject::<Direct<rselectors::sys::$module::$ty>>($name));
            #[cfg($($cfg)*)]
            subjects.push(subject::<AnyOf<rselectors::sys::$module::$ty>>(concat!("any ", $name)));
        )*
        subjects
    }};
}

/// A fresh selector over `M`'s backend, named, with an empty model.
fn subject<M: BackendUnderTest>(name: &'static str) -> (&'static str, Box<dyn Subject>, Model) {
    let sel = Box::new(common::open::<M, Fd, u32>());
    let model = Model {
        kind: M::KIND,
        keys: BTreeMap::new(),
    };
    (name, sel, model)
}

impl Lockstep {
    // One push per backend, so where there is one `vec![…]` would do.
    #[allow(clippy::vec_init_then_push)]
    fn new() -> Lockstep {
        Lockstep {
            world: World::new(),
            subjects: rselectors::for_each_backend!(every_subject),
        }
    }

    fn file_of(&self, fd: RawFd) -> usize {
        self.world
            .fds
            .iter()
            .position(|&f| f == fd)
            .expect("a known fd")
    }

    fn apply(&mut self, step: u32, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Register { file, mask } => {
                let (fd, events) = (self.world.fds[file], Events::from_bits_retain(mask));
                for (name, sel, model) in &mut self.subjects {
                    let open = self.world.is_open(file);
                    let too_high =
                        quirks(model.kind).below_fd_setsize && fd >= libc::FD_SETSIZE as RawFd;
                    let expected = match model.keys.entry(file) {
                        _ if !events.is_valid_mask() => Err(ErrorKind::Value),
                        Entry::Occupied(_) => Err(ErrorKind::Key),
                        Entry::Vacant(_) if too_high => Err(ErrorKind::Value),
                        // Every backend refuses a closed descriptor (EBADF).
                        Entry::Vacant(_) if !open => Err(ErrorKind::Os),
                        Entry::Vacant(slot) => {
                            slot.insert((events, step));
                            Ok((fd, events, step))
                        }
                    };
                    prop_assert_eq!(sel.register(fd, events, step), expected, "{}", name);
                }
            }
            Op::Modify {
                file,
                mask,
                new_data,
            } => {
                let (fd, events) = (self.world.fds[file], Events::from_bits_retain(mask));
                let data = new_data.then_some(step);
                for (name, sel, model) in &mut self.subjects {
                    // CPython looks the file object up before it checks the mask.
                    let expected = match model.keys.get(&file).copied() {
                        None => Err(ErrorKind::Key),
                        _ if !events.is_valid_mask() => Err(ErrorKind::Value),
                        Some((old, _))
                            if old != events
                                && !self.world.is_open(file)
                                && quirks(model.kind).closed_file == ClosedFile::Forgotten =>
                        {
                            model.keys.remove(&file);
                            Err(ErrorKind::Os)
                        }
                        Some((_, old_data)) => {
                            let new = (events, data.unwrap_or(old_data));
                            model.keys.insert(file, new);
                            Ok((fd, new.0, new.1))
                        }
                    };
                    prop_assert_eq!(sel.modify(fd, events, data), expected, "{}", name);
                }
            }
            Op::Unregister { file } => {
                let fd = self.world.fds[file];
                for (name, sel, model) in &mut self.subjects {
                    let expected = match model.keys.remove(&file) {
                        Some((events, data)) => Ok((fd, events, data)),
                        None => Err(ErrorKind::Key),
                    };
                    prop_assert_eq!(sel.unregister(fd), expected, "{}", name);
                }
            }
            Op::Write { file, len } => self.world.write(file, len),
            Op::ReadAll { file } => self.world.read_all(file),
            Op::Close { file } => self.world.files[file] = None,
            Op::Select => self.select(None)?,
            Op::SelectUnregistering { file } => self.select(Some(file))?,
        }
        self.check_keys()
    }

    /// Selects on every backend and compares with the models; with
    /// `unregister`, unregisters that file after taking the first event.
    fn select(&mut self, unregister: Option<usize>) -> Result<(), TestCaseError> {
        let divergent = self.divergent();
        let mut plain_sets: Vec<(&str, ReadySet)> = Vec::new();
        for i in 0..self.subjects.len() {
            let expected = self.subjects[i].2.expected_select(&self.world);
            let (name, sel, model) = &mut self.subjects[i];
            let count = sel.select();
            let mut ready = Vec::new();
            if let Some(file) = unregister {
                ready.extend(sel.next_ready());
                let fd = self.world.fds[file];
                let want = match model.keys.remove(&file) {
                    Some((events, data)) => Ok((fd, events, data)),
                    None => Err(ErrorKind::Key),
                };
                prop_assert_eq!(sel.unregister(fd), want, "{}: unregister midway", name);
            }
            ready.extend(std::iter::from_fn(|| sel.next_ready()));
            let name: &'static str = name;
            let expected = match expected {
                Err(kind) => {
                    prop_assert_eq!(count, Err(kind), "{}: select", name);
                    prop_assert!(ready.is_empty(), "{}: events after an error", name);
                    continue;
                }
                Ok(expected) => expected,
            };
            prop_assert_eq!(count, Ok(expected.len()), "{}: select's count", name);
            let ready: ReadySet = ready
                .into_iter()
                .map(|(fd, events)| (self.file_of(fd), events.bits()))
                .collect();
            let mut want = expected;
            if let Some(file) = unregister {
                // Unregistered after the first event was taken: its event
                // is delivered only if it was that first one.
                if !ready.iter().any(|&(f, _)| f == file) {
                    want.retain(|&(f, _)| f != file);
                }
            } else {
                plain_sets.push((name, ready.clone()));
            }
            prop_assert_eq!(&ready, &want, "{}: ready set", name);
        }
        if !divergent {
            if let Some((first_name, first)) = plain_sets.first() {
                for (name, set) in &plain_sets[1..] {
                    prop_assert_eq!(set, first, "{} and {} disagree", name, first_name);
                }
            }
        }
        Ok(())
    }

    /// True where backends may legitimately report different ready sets:
    /// their registrations differ (epoll refused a closed file), a
    /// registered file is closed, or a pipe read end whose writer is gone is
    /// registered for WRITE.
    fn divergent(&self) -> bool {
        let first = &self.subjects[0].2.keys;
        self.subjects
            .iter()
            .any(|(_, _, model)| model.keys != *first)
            || first.iter().any(|(&file, &(events, _))| {
                let (end, peer) = FILES[file];
                !self.world.is_open(file)
                    || (end == End::PipeRead
                        && events.contains(Events::WRITE)
                        && !self.world.is_open(peer))
            })
    }

    /// Every backend's keys are its model's.
    fn check_keys(&self) -> Result<(), TestCaseError> {
        for (name, sel, model) in &self.subjects {
            prop_assert_eq!(sel.len(), model.keys.len(), "{}: len", name);
            for (file, &fd) in self.world.fds.iter().enumerate() {
                let want = model.keys.get(&file).map(|&(e, d)| (fd, e, d));
                prop_assert_eq!(sel.key(fd), want, "{}: key of file {}", name, file);
            }
        }
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn backends_agree_with_the_model(ops in prop::collection::vec(op(), 1..=40)) {
        let mut lockstep = Lockstep::new();
        for (step, op) in ops.iter().enumerate() {
            lockstep.apply(step as u32, op)?;
        }
    }
}
