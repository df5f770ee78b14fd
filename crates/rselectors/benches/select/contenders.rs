//! What the library's benchmarks measure, shared by the criterion benches
//! (`benches/select.rs`) and the ratio table (`examples/bench_ratios.rs`):
//! our selectors side by side with a raw `epoll_wait` loop and with mio.
//!
//! Three workloads, for N registered descriptors (100, 1,000, 10,000; the
//! `select(2)` backend only up to 1,000) of which K (1, 100) are readable,
//! and a third with a selector of its own:
//!
//! * `select`: one wait with a zero timeout, then every ready event taken
//!   and its per-descriptor data looked up (`next_ready` + `get_key` for
//!   us, an fd-indexed `Vec` for the raw loop, a token-indexed `Vec` for
//!   mio), so every contender does the same work.
//! * `register_unregister`: one spare descriptor registered and unregistered
//!   again on a selector that holds the N descriptors.
//! * `open_register_close`: a new selector, one registration at descriptor
//!   number 19,999 (and 999,999 if the descriptor limit allows), unregister,
//!   close: what Python's `subprocess.communicate()` does (see
//!   `short_lived.rs`). In the table, N is the descriptor number.
//!
//! mio is edge-triggered: a descriptor that stays readable is reported
//! once, not at every poll. A mio user who wants to see it again must
//! re-arm it with `Registry::reregister` (one `epoll_ctl` per descriptor).
//! So `mio_rearm` re-registers every event it was given, which is the
//! cheapest way for mio to report the same K ready descriptors at every
//! poll; `mio_edge_no_rearm` is shown too, for transparency: after its first
//! poll it reports nothing, so it measures an `epoll_wait` that returns 0.
//!
//! `unsafe` appears here only for the raw libc contender and `setrlimit`: a
//! benchmark is not shipped code, and each block says why it is sound.

use crate::peers::{Mio, RawEpoll};
use crate::short_lived;
use rselectors::{
    AnySelector, Backend, BackendKind, EpollSelector, Events, Fd, PollSelector, SelectSelector,
    Selector,
};
use std::fmt;
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Registered descriptors per run.
const SIZES: [usize; 3] = [100, 1_000, 10_000];
/// Ready descriptors per run (only those with K <= N).
const READY: [usize; 2] = [1, 100];
/// `select(2)` is O(highest fd) and stops at FD_SETSIZE: not run above this.
const SELECT_MAX_N: usize = 1_000;
/// Descriptors besides the pool: stdio, the selectors' own, criterion's files.
const FD_MARGIN: usize = 64;

/// Raises the soft `RLIMIT_NOFILE` towards `wanted` (never above the hard
/// limit) and returns the soft limit in force.
fn raise_fd_limit(wanted: usize) -> io::Result<(usize, usize)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the live struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let wanted = wanted as libc::rlim_t;
    if limit.rlim_cur < wanted {
        limit.rlim_cur = wanted.min(limit.rlim_max);
        // SAFETY: setrlimit reads one live, initialised rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let clamp = |v: libc::rlim_t| usize::try_from(v).unwrap_or(usize::MAX);
    Ok((clamp(limit.rlim_cur), clamp(limit.rlim_max)))
}

/// Connected socket pairs whose ends are all registered: end `i`'s peer is
/// end `i ^ 1`. An end is made readable by writing one byte from its peer
/// (and never reading it), idle again by reading that byte back. Using
/// both ends keeps 10,000 registered descriptors within 10,000 open files.
#[derive(Debug)]
struct Pool {
    ends: Vec<UnixStream>,
    readable: Vec<bool>,
    /// Opened first, so it has a low number (select(2) needs < FD_SETSIZE),
    /// never readable: the descriptor of `register_unregister`.
    spare: (UnixStream, UnixStream),
}

impl Pool {
    fn open(ends: usize) -> io::Result<Pool> {
        let spare = UnixStream::pair()?;
        let mut all = Vec::with_capacity(ends);
        while all.len() < ends {
            let (a, b) = UnixStream::pair()?;
            a.set_nonblocking(true)?;
            b.set_nonblocking(true)?;
            all.extend([a, b]);
        }
        Ok(Pool {
            readable: vec![false; all.len()],
            ends: all,
            spare,
        })
    }

    fn fds(&self, n: usize) -> Vec<RawFd> {
        self.ends[..n].iter().map(|s| s.as_raw_fd()).collect()
    }

    fn spare_fd(&self) -> RawFd {
        self.spare.0.as_raw_fd()
    }

    /// Makes exactly K of the first N ends readable, spread evenly, and
    /// returns their indexes (each registration's data is its index).
    fn make_ready(&mut self, n: usize, k: usize) -> io::Result<Vec<usize>> {
        let chosen: Vec<usize> = (0..k).map(|j| j * n / k).collect();
        let mut wanted = vec![false; self.ends.len()];
        for &i in &chosen {
            wanted[i] = true;
        }
        for (i, &want) in wanted.iter().enumerate() {
            if self.readable[i] && !want {
                (&self.ends[i]).read_exact(&mut [0])?;
            } else if !self.readable[i] && want {
                (&self.ends[i ^ 1]).write_all(&[1])?;
            }
            self.readable[i] = want;
        }
        Ok(chosen)
    }
}

/// One contender, holding N registered descriptors; registration `i`'s data
/// is `i`.
pub trait Contender {
    /// Short name, used as criterion's function id and in the table.
    fn name(&self) -> &'static str;
    /// One wait with a zero timeout; takes every ready event and looks up its
    /// data. Returns how many were readable and the sum of their data.
    fn round(&mut self) -> (usize, u64);
    /// Registers the pool's spare descriptor, then unregisters it.
    fn register_pair(&mut self);
    /// False when a descriptor that stays ready is reported only once.
    fn reports_level(&self) -> bool {
        true
    }
}

/// One of our selectors, used as the seeds use it.
struct Ours<B> {
    name: &'static str,
    sel: Selector<B, Fd, u64>,
    spare: RawFd,
}

fn ours<B: Backend + 'static>(
    name: &'static str,
    mut sel: Selector<B, Fd, u64>,
    fds: &[RawFd],
    spare: RawFd,
) -> Box<dyn Contender> {
    for (i, &fd) in fds.iter().enumerate() {
        sel.register(Fd(fd), Events::READ, i as u64)
            .map_err(|r| r.into_error())
            .expect("register a pool descriptor");
    }
    Box::new(Ours { name, sel, spare })
}

impl<B: Backend> Contender for Ours<B> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn round(&mut self) -> (usize, u64) {
        self.sel.select(Some(Duration::ZERO)).expect("select");
        let (mut count, mut sum) = (0, 0);
        while let Some((fd, events)) = self.sel.next_ready() {
            let key = self.sel.get_key(fd).expect("a ready fd is registered");
            if events.contains(Events::READ) {
                count += 1;
                sum += key.data;
            }
        }
        (count, sum)
    }

    fn register_pair(&mut self) {
        self.sel
            .register(Fd(self.spare), Events::READ, u64::MAX)
            .map_err(|r| r.into_error())
            .expect("register the spare");
        self.sel
            .unregister(self.spare)
            .expect("unregister the spare");
    }
}

/// Which work a set of contenders is built for.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Workload {
    Select,
    RegisterPair,
}

/// Every contender over the first `n` descriptors of the pool.
fn contenders(pool: &Pool, n: usize, workload: Workload) -> Vec<Box<dyn Contender>> {
    let fds = pool.fds(n);
    let spare = pool.spare_fd();
    let mut all = vec![
        ours(
            "epoll",
            EpollSelector::new().expect("open epoll"),
            &fds,
            spare,
        ),
        ours("poll", PollSelector::new().expect("open poll"), &fds, spare),
    ];
    if select_fits(&fds, spare) {
        let sel = SelectSelector::new().expect("open select");
        all.push(ours("select", sel, &fds, spare));
    }
    let any = AnySelector::with_kind(BackendKind::Epoll).expect("open any(epoll)");
    all.push(ours("any_epoll", any, &fds, spare));
    all.push(RawEpoll::open(&fds, spare));
    if workload == Workload::Select {
        all.push(Mio::open("mio_rearm", &fds, spare, true));
        all.push(Mio::open("mio_edge_no_rearm", &fds, spare, false));
    } else {
        all.push(Mio::open("mio", &fds, spare, true));
    }
    all
}

/// The select backend runs up to SELECT_MAX_N, when every fd is below FD_SETSIZE.
fn select_fits(fds: &[RawFd], spare: RawFd) -> bool {
    let below = |fd: &RawFd| (*fd as usize) < libc::FD_SETSIZE;
    fds.len() <= SELECT_MAX_N && fds.iter().all(below) && below(&spare)
}

/// Checks that a contender sees exactly the K ready registrations, twice
/// (once for an edge-triggered one, then nothing).
fn check_rounds(v: &mut dyn Contender, chosen: &[usize]) {
    let expected = (chosen.len(), chosen.iter().map(|&i| i as u64).sum::<u64>());
    assert_eq!(v.round(), expected, "{}: first select", v.name());
    let again = if v.reports_level() { expected } else { (0, 0) };
    assert_eq!(v.round(), again, "{}: second select", v.name());
}

/// One operation timed on every contender of a row: a criterion group, a
/// row of the ratio table.
pub struct Case {
    /// `select`, `reg+unreg` or `open+reg`.
    pub workload: &'static str,
    /// Registered descriptors (`open+reg`: the one descriptor's number).
    pub n: usize,
    /// Ready descriptors (`select` only).
    pub k: Option<usize>,
    pub contenders: Vec<Box<dyn Contender>>,
    pub op: fn(&mut dyn Contender),
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("group", &self.group())
            .field("contenders", &self.contenders.len())
            .finish_non_exhaustive()
    }
}

impl Case {
    /// The criterion group's name.
    pub fn group(&self) -> String {
        match (self.workload, self.k) {
            ("select", Some(k)) => format!("select_N{}_K{k}", self.n),
            ("reg+unreg", _) => format!("register_unregister_N{}", self.n),
            _ => format!("open_register_close_fd{}", self.n),
        }
    }
}

fn select_op(v: &mut dyn Contender) {
    black_box(v.round());
}

fn register_op(v: &mut dyn Contender) {
    v.register_pair();
}

/// Builds every case in turn, each contender checked to see the K ready
/// descriptors, and hands it to `run` (the descriptors stay open until it
/// returns).
pub fn each_case(mut run: impl FnMut(Case)) {
    let wanted_ends = SIZES.iter().copied().max().unwrap_or(0);
    let (soft, hard) = raise_fd_limit(wanted_ends + 2 + FD_MARGIN).expect("RLIMIT_NOFILE");
    // Each pool end is one registered descriptor; cap N if the limit is short.
    let max_n = wanted_ends.min(soft.saturating_sub(2 + FD_MARGIN) & !1);
    if max_n < wanted_ends {
        println!(
            "N capped at {max_n}: RLIMIT_NOFILE is {soft} (hard {hard}), {} wanted",
            wanted_ends + 2 + FD_MARGIN
        );
    }
    let mut sizes: Vec<usize> = SIZES.iter().map(|&n| n.min(max_n)).collect();
    sizes.dedup();
    let mut pool = Pool::open(max_n).expect("open the socket pairs");
    for &n in &sizes {
        for k in READY.into_iter().filter(|&k| k <= n) {
            let chosen = pool.make_ready(n, k).expect("make descriptors ready");
            let mut all = contenders(&pool, n, Workload::Select);
            for v in all.iter_mut() {
                check_rounds(v.as_mut(), &chosen);
            }
            run(Case {
                workload: "select",
                n,
                k: Some(k),
                contenders: all,
                op: select_op,
            });
        }
        run(Case {
            workload: "reg+unreg",
            n,
            k: None,
            contenders: contenders(&pool, n, Workload::RegisterPair),
            op: register_op,
        });
    }
    // Far above the pool: the highest numbers the limit allows.
    let limit = match raise_fd_limit(1 << 20) {
        Ok((soft, _)) => soft,
        Err(e) => {
            println!("RLIMIT_NOFILE not raised for open+reg: {e}");
            soft
        }
    };
    for high in short_lived::high_descriptors(&pool.spare.0, limit) {
        let fd = high.as_raw_fd();
        run(Case {
            workload: "open+reg",
            n: fd as usize,
            k: None,
            contenders: short_lived::contenders(fd),
            op: register_op,
        });
    }
}
