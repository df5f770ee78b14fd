//! The ratio table of the library's benchmarks: ns per iteration of every
//! contender of each case in `benches/select/contenders.rs` (our selectors,
//! a raw `epoll_wait` loop, mio), and the ratios to the raw loop and to mio,
//! which criterion does not print. Medians of 11 timed runs in which the
//! contenders of a row take turns, so that a burst of load elsewhere on the
//! machine hits them all alike.
//!
//! ```sh
//! cargo run --release -p rselectors --example bench_ratios            # about 1 min
//! cargo run --release -p rselectors --example bench_ratios -- --quick # shorter runs
//! cargo run -p rselectors --example bench_ratios -- --test            # each once, untimed
//! ```
//!
//! Linux only: the contenders are epoll loops.

#[cfg(target_os = "linux")]
#[path = "../benches/select/contenders.rs"]
mod contenders;
#[cfg(target_os = "linux")]
#[path = "../benches/select/peers.rs"]
mod peers;
#[cfg(target_os = "linux")]
#[path = "../benches/select/short_lived.rs"]
mod short_lived;

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the ratio table compares with a hand-written epoll loop: Linux only");
}

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(target_os = "linux")]
mod linux {
    use crate::contenders::{each_case, Contender};
    use std::time::{Duration, Instant};

    /// Timed runs per row of the table, interleaved; the median is printed.
    const TABLE_RUNS: usize = 11;

    const NOTE: &str = "\
mio is edge-triggered: a descriptor that stays readable is reported once. To see the K
ready descriptors at every poll, `mio_rearm` calls Registry::reregister on each event it
gets (one epoll_ctl each: what a mio user must do to observe level state again);
`mio_edge_no_rearm` does not, so after its first poll it measures an epoll_wait that
returns 0 events. Ours and the raw loop are level-triggered: one epoll_wait per select.";

    pub fn main() {
        let mut target = Duration::from_millis(10);
        let mut once = false;
        for arg in std::env::args().skip(1) {
            match arg.as_str() {
                "--quick" => target = Duration::from_millis(3),
                "--test" => once = true,
                _ => {
                    eprintln!("usage: bench_ratios [--quick | --test]");
                    std::process::exit(2);
                }
            }
        }
        if !once {
            println!("{NOTE}\n");
        }
        let mut rows = Vec::new();
        each_case(|mut case| {
            if once {
                for v in case.contenders.iter_mut() {
                    (case.op)(v.as_mut());
                }
                return;
            }
            let runs = time_each(&mut case.contenders, case.op, target, TABLE_RUNS);
            rows.extend(case.contenders.iter().zip(runs).map(|(v, runs)| Row {
                workload: case.workload,
                variant: v.name(),
                n: case.n,
                k: case.k,
                runs,
            }));
        });
        if once {
            println!("bench_ratios: every contender of every case ran once");
        } else {
            print_table(&rows);
        }
    }

    /// One row of the table.
    #[derive(Debug)]
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

    /// Prints the table of medians with ratios to the raw loop and to mio
    /// (re-armed), then the issue's targets for our epoll `select`.
    fn print_table(rows: &[Row]) {
        let find = |row: &Row, variant: &str| {
            rows.iter()
                .find(|r| {
                    r.workload == row.workload
                        && r.n == row.n
                        && r.k == row.k
                        && r.variant == variant
                })
                .map(|r| median(row.runs.iter().zip(&r.runs).map(|(a, b)| a / b).collect()))
        };
        let ratio = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.2}"));
        println!(
            "\nns/iter: median of {TABLE_RUNS} timed runs, the contenders of a row taking turns."
        );
        println!(
            "x raw, x mio: median over those runs of the time relative to raw_epoll, and to mio"
        );
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
}
