//! `cargo bench -p rselectors`: our selectors side by side with a raw
//! `epoll_wait` loop and with mio, in one run.
//!
//! Two workloads, for N registered descriptors (100, 1,000, 10,000; the
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
//!   `select/short_lived.rs`). In the table, N is the descriptor number.
//!
//! mio is edge-triggered: a descriptor that stays readable is reported
//! once, not at every poll. A mio user who wants to see it again must
//! re-arm it with `Registry::reregister` (one `epoll_ctl` per descriptor).
//! So `mio_rearm` re-registers every event it was given, which is the
//! cheapest way for mio to report the same K ready descriptors at every
//! poll; `mio_edge_no_rearm` is shown too, for transparency: after its first
//! poll it reports nothing, so it measures an `epoll_wait` that returns 0.
//!
//! After the criterion groups, a table (medians of 11 timed runs in which the
//! contenders take turns) gives ns per iteration and the ratios to the raw
//! loop and to mio, which criterion does not print. It is skipped when a filter is given,
//! since a ratio needs every contender of its row.
//!
//! Short run: `cargo bench -p rselectors -- --quick` (or `RSEL_BENCH_QUICK=1`).
//! Only the table: `RSEL_BENCH_TABLE_ONLY=1`. Criterion's HTML plots (slow to
//! draw): `RSEL_BENCH_PLOTS=1`. `cargo test --benches` runs every routine
//! once, as a test.
//!
//! `unsafe` appears here only for the raw libc contender and `setrlimit`: a
//! benchmark is not shipped code, and each block says why it is sound.

#[path = "peers.rs"]
mod peers;
#[path = "short_lived.rs"]
mod short_lived;

use criterion::Criterion;
use peers::{Mio, RawEpoll};
use rselectors::{
    AnySelector, Backend, BackendKind, EpollSelector, Events, Fd, PollSelector, SelectSelector,
    Selector,
};
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Registered descriptors per run.
const SIZES: [usize; 3] = [100, 1_000, 10_000];
/// Ready descriptors per run (only those with K <= N).
const READY: [usize; 2] = [1, 100];
/// `select(2)` is O(highest fd) and stops at FD_SETSIZE: not run above this.
const SELECT_MAX_N: usize = 1_000;
/// Descriptors besides the pool: stdio, the selectors' own, criterion's files.
const FD_MARGIN: usize = 64;
/// Timed runs per row of the table, interleaved; the median is printed.
const TABLE_RUNS: usize = 11;

const NOTE: &str = "\
mio is edge-triggered: a descriptor that stays readable is reported once. To see the K
ready descriptors at every poll, `mio_rearm` calls Registry::reregister on each event it
gets (one epoll_ctl each: what a mio user must do to observe level state again);
`mio_edge_no_rearm` does not, so after its first poll it measures an epoll_wait that
returns 0 events. Ours and the raw loop are level-triggered: one epoll_wait per select.";

/// Criterion's options that take a value (the value is not a filter).
#[rustfmt::skip]
const VALUE_OPTIONS: &[&str] = &[
    "-c", "--color", "--colour", "-s", "--save-baseline", "-b", "--baseline",
    "--baseline-lenient", "--load-baseline", "--sample-size", "--warm-up-time",
    "--measurement-time", "--nresamples", "--noise-threshold", "--confidence-level",
    "--significance-level", "--profile-time", "--plotting-backend", "--output-format",
    "--format",
];

/// What the closing table does in this run.
#[derive(Clone, Copy, PartialEq)]
enum Table {
    /// `cargo bench`: timed runs, printed.
    Timed,
    /// `cargo test --benches`, `--profile-time`: every contender runs once.
    Once,
    /// `--list`, or a filter was given (a row needs all its contenders).
    Off,
}

/// How this run was asked for.
struct Settings {
    /// `--quick` or `RSEL_BENCH_QUICK=1`: a short run.
    quick: bool,
    /// `RSEL_BENCH_TABLE_ONLY=1`: skip criterion, print only the table.
    table_only: bool,
    table: Table,
}

impl Settings {
    fn from_env() -> Settings {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let has = |flag: &str| args.iter().any(|a| a == flag);
        let env_on = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0");
        let mut filtered = false;
        let mut words = args.iter();
        while let Some(arg) = words.next() {
            if VALUE_OPTIONS.contains(&arg.as_str()) {
                words.next();
            } else if !arg.starts_with('-') {
                filtered = true;
            }
        }
        let table = if has("--list") || filtered {
            Table::Off
        } else if has("--bench") && !has("--test") && !has("--profile-time") {
            Table::Timed
        } else {
            Table::Once
        };
        Settings {
            quick: has("--quick") || env_on("RSEL_BENCH_QUICK"),
            table_only: env_on("RSEL_BENCH_TABLE_ONLY"),
            table,
        }
    }
}

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
trait Contender {
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
#[derive(Clone, Copy, PartialEq)]
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

/// One row of the closing table.
struct Row {
    workload: &'static str,
    variant: &'static str,
    n: usize,
    k: Option<usize>,
    /// ns per iteration, one per timed run (runs of a row's contenders alternate).
    runs: Vec<f64>,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// ns per call of `op` for each contender, once per timed run: calibrated to
/// about `target` per run, runs interleaved across contenders so that a
/// burst of load elsewhere on the machine hits them all alike.
fn time_each(
    contenders: &mut [Box<dyn Contender>],
    op: fn(&mut dyn Contender),
    target: Duration,
    runs: usize,
) -> Vec<Vec<f64>> {
    let iterations: Vec<u64> = contenders
        .iter_mut()
        .map(|v| {
            let mut iters = 1u64;
            loop {
                let start = Instant::now();
                (0..iters).for_each(|_| op(v.as_mut()));
                let took = start.elapsed();
                if took >= target / 8 || iters >= 1 << 30 {
                    let scale = target.as_secs_f64() / took.as_secs_f64().max(1e-9);
                    break ((iters as f64 * scale).ceil() as u64).max(1);
                }
                iters *= 2;
            }
        })
        .collect();
    let mut samples = vec![Vec::with_capacity(runs); contenders.len()];
    for _ in 0..runs {
        for (i, v) in contenders.iter_mut().enumerate() {
            let start = Instant::now();
            (0..iterations[i]).for_each(|_| op(v.as_mut()));
            samples[i].push(start.elapsed().as_nanos() as f64 / iterations[i] as f64);
        }
    }
    samples
}

fn select_op(v: &mut dyn Contender) {
    black_box(v.round());
}

fn register_op(v: &mut dyn Contender) {
    v.register_pair();
}

/// Runs `op` of every contender as one criterion group (unless `criterion`
/// is `None`), then times it for the table; returns the table's rows.
fn measure(
    criterion: Option<&mut Criterion>,
    group: String,
    all: &mut [Box<dyn Contender>],
    op: fn(&mut dyn Contender),
    timing: Option<(Duration, usize)>,
) -> Vec<(&'static str, Vec<f64>)> {
    if let Some(criterion) = criterion {
        let mut group = criterion.benchmark_group(group);
        for v in all.iter_mut() {
            group.bench_function(v.name(), |b| b.iter(|| op(v.as_mut())));
        }
        group.finish();
    }
    let Some((target, runs)) = timing else {
        return Vec::new();
    };
    let runs = time_each(all, op, target, runs);
    all.iter().map(|v| v.name()).zip(runs).collect()
}

pub fn main() {
    let settings = Settings::from_env();
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

    let (warm_up, measure_time, samples) = if settings.quick {
        (Duration::from_millis(100), Duration::from_millis(300), 10)
    } else {
        (Duration::from_secs(1), Duration::from_secs(3), 30)
    };
    // Plots take seconds per benchmark to draw: only on request.
    let mut criterion = Criterion::default();
    if std::env::var_os("RSEL_BENCH_PLOTS").is_none() {
        criterion = criterion.without_plots();
    }
    let mut criterion = criterion
        .warm_up_time(warm_up)
        .measurement_time(measure_time)
        .sample_size(samples)
        .configure_from_args();
    if settings.quick {
        criterion = criterion.nresamples(10_000);
    }
    if settings.table == Table::Timed {
        println!("{NOTE}\n");
    }
    // Per row of the table: a timed run of about `target`, `runs` times.
    let timing = match (settings.table, settings.quick) {
        (Table::Off, _) => None,
        (Table::Once, _) => Some((Duration::ZERO, 1)),
        (Table::Timed, true) => Some((Duration::from_millis(3), TABLE_RUNS)),
        (Table::Timed, false) => Some((Duration::from_millis(10), TABLE_RUNS)),
    };
    let mut with_criterion = (!settings.table_only).then_some(&mut criterion);

    let mut rows = Vec::new();
    for &n in &sizes {
        for k in READY.into_iter().filter(|&k| k <= n) {
            let chosen = pool.make_ready(n, k).expect("make descriptors ready");
            let mut all = contenders(&pool, n, Workload::Select);
            for v in all.iter_mut() {
                check_rounds(v.as_mut(), &chosen);
            }
            let group = format!("select_N{n}_K{k}");
            let timed = measure(
                with_criterion.as_deref_mut(),
                group,
                &mut all,
                select_op,
                timing,
            );
            rows.extend(timed.into_iter().map(|(variant, runs)| Row {
                workload: "select",
                variant,
                n,
                k: Some(k),
                runs,
            }));
        }
        let mut all = contenders(&pool, n, Workload::RegisterPair);
        let group = format!("register_unregister_N{n}");
        let timed = measure(
            with_criterion.as_deref_mut(),
            group,
            &mut all,
            register_op,
            timing,
        );
        rows.extend(timed.into_iter().map(|(variant, runs)| Row {
            workload: "reg+unreg",
            variant,
            n,
            k: None,
            runs,
        }));
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
        let mut all = short_lived::contenders(fd);
        let group = format!("open_register_close_fd{fd}");
        let timed = measure(
            with_criterion.as_deref_mut(),
            group,
            &mut all,
            register_op,
            timing,
        );
        rows.extend(timed.into_iter().map(|(variant, runs)| Row {
            workload: "open+reg",
            variant,
            n: fd as usize,
            k: None,
            runs,
        }));
    }
    if !settings.table_only {
        criterion.final_summary();
    }
    match settings.table {
        Table::Timed => print_table(&rows),
        Table::Once => eprintln!("table: every contender ran once (timed under `cargo bench`)"),
        Table::Off => eprintln!("table: skipped (it needs every contender: give no filter)"),
    }
}

/// Prints the table of medians with ratios to the raw loop and to mio
/// (re-armed), then the targets for our epoll `select`.
fn print_table(rows: &[Row]) {
    let find = |row: &Row, variant: &str| {
        rows.iter()
            .find(|r| {
                r.workload == row.workload && r.n == row.n && r.k == row.k && r.variant == variant
            })
            .map(|r| median(row.runs.iter().zip(&r.runs).map(|(a, b)| a / b).collect()))
    };
    let ratio = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.2}"));
    println!("\nns/iter: median of {TABLE_RUNS} timed runs, the contenders of a row taking turns.");
    println!("x raw, x mio: median over those runs of the time relative to raw_epoll, and to mio");
    println!("(mio_rearm for select), in the same run; lower is faster. open+reg: a new");
    println!("selector, one registration at descriptor N, unregister, close.");
    if !rows.iter().any(|r| r.variant == "select") {
        println!("(select backend skipped: descriptors at or above FD_SETSIZE)");
    }
    println!(
        "{:<10} {:<18} {:>6} {:>4} {:>12} {:>7} {:>7}",
        "workload", "variant", "N", "K", "ns/iter", "x raw", "x mio"
    );
    for row in rows {
        let k = row.k.map_or("-".to_owned(), |k| k.to_string());
        println!(
            "{:<10} {:<18} {:>6} {:>4} {:>12.1} {:>7} {:>7}",
            row.workload,
            row.variant,
            row.n,
            k,
            median(row.runs.clone()),
            ratio(find(row, "raw_epoll")),
            ratio(find(row, "mio_rearm").or_else(|| find(row, "mio"))),
        );
    }
    println!(
        "\nTargets for our epoll select (within 1.2x of raw_epoll, no slower than mio_rearm):"
    );
    for row in rows
        .iter()
        .filter(|r| r.workload == "select" && r.variant == "epoll")
    {
        let (raw, mio) = (find(row, "raw_epoll"), find(row, "mio_rearm"));
        let ok = raw.is_some_and(|x| x <= 1.2) && mio.is_some_and(|x| x <= 1.0);
        println!(
            "  N={:<6} K={:<4} x raw {} x mio {}  {}",
            row.n,
            row.k.unwrap_or(0),
            ratio(raw),
            ratio(mio),
            if ok { "ok" } else { "MISSED" }
        );
    }
}
