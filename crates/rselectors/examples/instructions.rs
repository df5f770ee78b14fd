//! The library's hot paths, one scenario at a time, for counting their
//! user-space instructions under callgrind (repeatable on a loaded machine,
//! where timings are not):
//!
//! ```sh
//! cargo build --release -p rselectors --example instructions
//! for n in 1000 2000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/instructions epoll_select_k100 $n 2>&1 | grep Collected
//! done   # (second - first) / 1000 = instructions per iteration
//! ```
//!
//! Each scenario sets up, then runs its operation `iterations` times; the
//! difference between two runs of different lengths cancels the setup.
//! `instructions list` names the scenarios. The system calls are counted as
//! the one instruction that enters the kernel. The `epoll` scenarios run
//! on the platform's default backend: epoll on Linux.
//!
//! `unsafe` appears only for `fcntl(F_DUPFD)`, which puts a descriptor at a
//! chosen number; the block says why it is sound.

use rselectors::{AnySelector, Backend, BackendKind, DefaultSelector, Events, Fd, PollSelector};
use rselectors::{SelectSelector, Selector};
use std::hint::black_box;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Registered descriptors in the steady-state scenarios.
const N: usize = 100;

const SCENARIOS: &[&str] = &[
    "epoll_select_k1",
    "epoll_select_k100",
    "epoll_select_mut_k100",
    "epoll_select_100ms_k1",
    "any_epoll_select_k100",
    "poll_select_k100",
    "select_select_k100",
    "epoll_reg_unreg",
    "poll_reg_unreg",
    "any_epoll_reg_unreg",
    "epoll_new_reg_close_low",
    "epoll_new_reg_close_19000",
    "poll_new_reg_close_19000",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scenario = args.first().map_or("list", String::as_str);
    let iterations: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1_000);
    if scenario == "list" || !SCENARIOS.contains(&scenario) {
        SCENARIOS.iter().for_each(|s| println!("{s}"));
        return;
    }
    let pairs: Vec<(UnixStream, UnixStream)> = (0..N)
        .map(|_| UnixStream::pair().expect("socketpair"))
        .collect();
    let spare = UnixStream::pair().expect("socketpair");
    let ready = |k: usize| {
        for (rd, _) in &pairs[..k] {
            (&*rd).write_all(b"x").expect("write");
        }
    };
    let fds: Vec<RawFd> = pairs.iter().map(|(_, far)| far.as_raw_fd()).collect();
    let spare_fd = spare.0.as_raw_fd();
    let zero = Some(Duration::ZERO);
    // The `_kK` scenarios: K of the N registered descriptors readable.
    let k = match scenario.rsplit('_').next() {
        Some("k1") => 1,
        Some("k100") => N,
        _ => 0,
    };
    ready(k);
    match scenario {
        "epoll_select_k1" => {
            let sel = filled(DefaultSelector::new().expect("epoll"), &fds);
            select_rounds(sel, iterations, zero, 1);
        }
        "epoll_select_k100" => {
            let sel = filled(DefaultSelector::new().expect("epoll"), &fds);
            select_rounds(sel, iterations, zero, N);
        }
        "epoll_select_mut_k100" => {
            let mut sel = filled(DefaultSelector::new().expect("epoll"), &fds);
            for _ in 0..iterations {
                sel.select(zero).expect("select");
                let mut sum = 0;
                while let Some((key, _)) = sel.next_ready_mut() {
                    *key.data += 1;
                    sum += *key.data;
                }
                black_box(sum);
            }
        }
        "epoll_select_100ms_k1" => {
            let sel = filled(DefaultSelector::new().expect("epoll"), &fds);
            select_rounds(sel, iterations, Some(Duration::from_millis(100)), 1);
        }
        "any_epoll_select_k100" => {
            let sel = AnySelector::with_kind(BackendKind::DEFAULT).expect("any");
            select_rounds(filled(sel, &fds), iterations, zero, N);
        }
        "poll_select_k100" => {
            let sel = filled(PollSelector::new().expect("poll"), &fds);
            select_rounds(sel, iterations, zero, N);
        }
        "select_select_k100" => {
            let sel = filled(SelectSelector::new().expect("select"), &fds);
            select_rounds(sel, iterations, zero, N);
        }
        "epoll_reg_unreg" => {
            let sel = filled(DefaultSelector::new().expect("epoll"), &fds);
            reg_unreg(sel, spare_fd, iterations);
        }
        "poll_reg_unreg" => {
            let sel = filled(PollSelector::new().expect("poll"), &fds);
            reg_unreg(sel, spare_fd, iterations);
        }
        "any_epoll_reg_unreg" => {
            let sel = AnySelector::with_kind(BackendKind::DEFAULT).expect("any");
            reg_unreg(filled(sel, &fds), spare_fd, iterations);
        }
        "epoll_new_reg_close_low" => {
            new_reg_close::<DefaultSelector<Fd, u64>>(spare_fd, iterations)
        }
        "epoll_new_reg_close_19000" => {
            let high = dup_at(&spare.0, 19_000);
            new_reg_close::<DefaultSelector<Fd, u64>>(high.as_raw_fd(), iterations);
        }
        "poll_new_reg_close_19000" => {
            let high = dup_at(&spare.0, 19_000);
            new_reg_close::<PollSelector<Fd, u64>>(high.as_raw_fd(), iterations);
        }
        _ => unreachable!("checked against SCENARIOS"),
    }
}

/// `sel` with every descriptor of `fds` registered for READ, data = index.
fn filled<B: Backend>(mut sel: Selector<B, Fd, u64>, fds: &[RawFd]) -> Selector<B, Fd, u64> {
    for (i, &fd) in fds.iter().enumerate() {
        sel.register(Fd(fd), Events::READ, i as u64)
            .map_err(|r| r.into_error())
            .expect("register");
    }
    sel
}

/// `select` then every event taken with its key's data, `iterations` times.
fn select_rounds<B: Backend>(
    mut sel: Selector<B, Fd, u64>,
    iterations: u64,
    timeout: Option<Duration>,
    expected: usize,
) {
    for _ in 0..iterations {
        sel.select(timeout).expect("select");
        let (mut seen, mut sum) = (0, 0);
        while let Some((fd, _)) = sel.next_ready() {
            sum += sel.get_key(fd).expect("registered").data;
            seen += 1;
        }
        assert_eq!(seen, expected);
        black_box(sum);
    }
}

/// One spare descriptor registered and unregistered, `iterations` times.
fn reg_unreg<B: Backend>(mut sel: Selector<B, Fd, u64>, fd: RawFd, iterations: u64) {
    for _ in 0..iterations {
        sel.register(Fd(fd), Events::READ, 7)
            .map_err(|r| r.into_error())
            .expect("register");
        black_box(sel.unregister(fd).expect("unregister"));
    }
}

/// A short-lived selector (what `subprocess.communicate` makes): open,
/// register `fd`, unregister, close; `iterations` times.
fn new_reg_close<S: Short>(fd: RawFd, iterations: u64) {
    for _ in 0..iterations {
        S::cycle(fd);
    }
}

trait Short {
    fn cycle(fd: RawFd);
}

impl<B: Backend> Short for Selector<B, Fd, u64> {
    fn cycle(fd: RawFd) {
        let mut sel = Selector::<B, Fd, u64>::new().expect("open");
        sel.register(Fd(fd), Events::READ, 7)
            .map_err(|r| r.into_error())
            .expect("register");
        black_box(sel.unregister(fd).expect("unregister"));
        sel.close();
    }
}

/// A duplicate of `file` at descriptor `fd` or above (raising the soft
/// descriptor limit if it is below).
fn dup_at(file: &UnixStream, fd: RawFd) -> OwnedFd {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write one live rlimit;
    // fcntl(F_DUPFD_CLOEXEC) takes an integer and only creates a descriptor,
    // which nothing else owns when OwnedFd takes it.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        let new = libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, fd);
        assert!(new >= fd, "F_DUPFD: {}", std::io::Error::last_os_error());
        OwnedFd::from_raw_fd(new)
    }
}
