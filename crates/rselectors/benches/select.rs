//! `cargo bench -p rselectors`: criterion's timings of our selectors beside
//! a raw `epoll_wait` loop and mio (the workloads: `select/contenders.rs`).
//! They measure epoll, so they run on Linux; elsewhere this says so.
//!
//! Criterion's own options apply: `-- --quick` for a short run, `-- --test`
//! to run every routine once, a name to filter. HTML plots (slow to draw)
//! with `RSEL_BENCH_PLOTS=1`. The ratios to the raw loop and to mio, which
//! criterion does not print: `cargo run --release -p rselectors --example
//! bench_ratios`.

#[cfg(target_os = "linux")]
#[path = "select/contenders.rs"]
mod contenders;
#[cfg(target_os = "linux")]
#[path = "select/peers.rs"]
mod peers;
#[cfg(target_os = "linux")]
#[path = "select/short_lived.rs"]
mod short_lived;

#[cfg(target_os = "linux")]
mod linux {
    use crate::contenders::each_case;
    use criterion::Criterion;
    use std::time::Duration;

    /// Every case as one criterion group, each contender a function in it.
    pub fn selectors(criterion: &mut Criterion) {
        each_case(|mut case| {
            let mut group = criterion.benchmark_group(case.group());
            let op = case.op;
            for v in case.contenders.iter_mut() {
                group.bench_function(v.name(), |b| b.iter(|| op(v.as_mut())));
            }
            group.finish();
        });
    }

    pub fn config() -> Criterion {
        let criterion = Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sample_size(30);
        // Plots take seconds per benchmark to draw: only on request.
        if std::env::var_os("RSEL_BENCH_PLOTS").is_some() {
            criterion
        } else {
            criterion.without_plots()
        }
    }

    criterion::criterion_group! {
        name = benches;
        config = config();
        targets = selectors
    }
}

#[cfg(target_os = "linux")]
criterion::criterion_main!(linux::benches);

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the benchmarks compare with a hand-written epoll loop: Linux only");
}
