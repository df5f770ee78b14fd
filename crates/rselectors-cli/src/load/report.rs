//! What a run counts and how it reports: the tally, the progress line on
//! stderr and the summary line on stdout.

use super::Settings;
use crate::logging::warning;
use hdrhistogram::Histogram;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

/// Errors described on stderr; the rest are only counted.
const ERRORS_SHOWN: u64 = 5;

/// A latency histogram.
#[derive(Debug)]
pub(super) struct Latency {
    ns: Histogram<u64>,
}

impl Latency {
    pub fn new() -> io::Result<Latency> {
        // 1 ns to 1 minute, 3 significant digits.
        let ns = Histogram::new_with_bounds(1, 60_000_000_000, 3)
            .map_err(|e| io::Error::other(format!("histogram: {e}")))?;
        Ok(Latency { ns })
    }

    /// Records one latency, from `since` to `now`.
    pub fn record(&mut self, since: Instant, now: Instant) {
        let ns = now.saturating_duration_since(since).as_nanos();
        self.ns
            .saturating_record(u64::try_from(ns).unwrap_or(u64::MAX));
    }

    /// Quantile `q` in microseconds; 0 when nothing was recorded.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.ns.is_empty() {
            0.0
        } else {
            self.ns.value_at_quantile(q) as f64 / 1000.0
        }
    }
}

/// Counts of a run and its latency histogram.
#[derive(Debug)]
pub(super) struct Tally {
    /// Messages echoed in full (churn: connections done; chat: deliveries).
    pub msgs: u64,
    pub errors: u64,
    latency: Latency,
}

impl Tally {
    pub fn new() -> io::Result<Tally> {
        Ok(Tally {
            msgs: 0,
            errors: 0,
            latency: Latency::new()?,
        })
    }

    /// Counts one message that took from `since` to `now`.
    pub fn message(&mut self, since: Instant, now: Instant) {
        self.msgs += 1;
        self.latency.record(since, now);
    }

    /// Counts an error; the first few are described on stderr.
    pub fn error(&mut self, what: std::fmt::Arguments<'_>) {
        self.errors += 1;
        if self.errors <= ERRORS_SHOWN {
            warning!("{what}");
        } else if self.errors == ERRORS_SHOWN + 1 {
            warning!("more errors: only counted from now on");
        }
    }

    /// Counts `count` errors at once, described as `what` (if any).
    pub fn errors(&mut self, count: u64, what: std::fmt::Arguments<'_>) {
        if count > 0 {
            self.error(what);
            self.errors += count - 1;
        }
    }

    fn quantile_us(&self, q: f64) -> f64 {
        self.latency.quantile_us(q)
    }
}

/// The once-a-second progress line on stderr, when it is a terminal.
#[derive(Debug)]
pub(super) struct Progress {
    enabled: bool,
    start: Instant,
    next: Instant,
    shown: bool,
}

impl Progress {
    pub fn new(start: Instant) -> Progress {
        Progress {
            enabled: io::stderr().is_terminal(),
            start,
            next: start + Duration::from_secs(1),
            shown: false,
        }
    }

    /// When the next line is due, if progress is shown at all.
    pub fn due(&self) -> Option<Instant> {
        self.enabled.then_some(self.next)
    }

    /// Prints the line if it is due.
    pub fn tick(&mut self, now: Instant, tally: &Tally) {
        if !self.enabled || now < self.next {
            return;
        }
        let elapsed = now.duration_since(self.start).as_secs_f64();
        let _ = write!(
            io::stderr(),
            "\r{elapsed:6.1}s  msgs={}  msgs/s={:.0}  errors={}   ",
            tally.msgs,
            tally.msgs as f64 / elapsed.max(1e-9),
            tally.errors
        );
        self.shown = true;
        while self.next <= now {
            self.next += Duration::from_secs(1);
        }
    }

    /// Ends the progress line before the summary.
    pub fn finish(&self) {
        if self.shown {
            let _ = writeln!(io::stderr());
        }
    }
}

/// `count` per second over `elapsed`.
pub(super) fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// The summary line's fields, in order.
#[derive(Debug)]
pub(super) struct Summary<'a> {
    pub settings: &'a Settings,
    pub mode: &'a str,
    pub tally: &'a Tally,
    pub elapsed: Duration,
    /// Fields between the latencies and `errors=`.
    pub extra: String,
}

impl Summary<'_> {
    pub fn print(&self) {
        let msgs_per_s = per_second(self.tally.msgs, self.elapsed);
        let mib_per_s = msgs_per_s * self.settings.size as f64 / (1024.0 * 1024.0);
        crate::logging::say!(
            "conns={} size={} mode={} pipeline={} msgs={} msgs_per_s={:.1} mib_per_s={:.3} \
             p50_us={:.1} p99_us={:.1} p999_us={:.1}{} errors={}",
            self.settings.conns,
            self.settings.size,
            self.mode,
            self.settings.pipeline,
            self.tally.msgs,
            msgs_per_s,
            mib_per_s,
            self.tally.quantile_us(0.5),
            self.tally.quantile_us(0.99),
            self.tally.quantile_us(0.999),
            self.extra,
            self.tally.errors
        );
    }
}
