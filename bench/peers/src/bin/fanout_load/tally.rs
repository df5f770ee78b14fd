//! The lines in flight and the latency of every delivery.

use std::collections::VecDeque;
use std::time::Instant;

/// Latency histogram, log-linear: exact below 128 ns, then 64 buckets per
/// power of two (under 1.6% apart), so percentiles need no stored samples.
#[derive(Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_ns: u64,
}

const LINEAR: u64 = 128;
const SUB_BITS: u32 = 6;

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; Self::bucket(u64::MAX) + 1],
            total: 0,
            max_ns: 0,
        }
    }

    fn bucket(ns: u64) -> usize {
        if ns < LINEAR {
            return ns as usize;
        }
        let exp = 63 - ns.leading_zeros(); // >= 7
        let sub = (ns >> (exp - SUB_BITS)) & ((1 << SUB_BITS) - 1);
        (LINEAR + u64::from(exp - 7) * (1 << SUB_BITS) + sub) as usize
    }

    /// The smallest value that falls in `bucket`.
    fn floor(bucket: usize) -> u64 {
        let bucket = bucket as u64;
        if bucket < LINEAR {
            return bucket;
        }
        let exp = (bucket - LINEAR) / (1 << SUB_BITS) + 7;
        let sub = (bucket - LINEAR) % (1 << SUB_BITS);
        ((1 << SUB_BITS) + sub) << (exp - u64::from(SUB_BITS))
    }

    pub fn record(&mut self, ns: u64) {
        self.counts[Self::bucket(ns)] += 1;
        self.total += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }

    /// The value at quantile `q` (0..=1), as its bucket's lower bound.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::floor(bucket);
            }
        }
        self.max_ns
    }
}

/// A line sent and not yet received by every listener.
#[derive(Debug)]
struct Flight {
    sent_at: Instant,
    waiting: u32,
}

/// The lines in flight, by global number, oldest first.
#[derive(Debug)]
pub struct InFlight {
    lines: VecDeque<Flight>,
    /// Global number of the front line.
    first: u64,
    listeners: u32,
}

impl InFlight {
    pub fn new(listeners: u32) -> Self {
        InFlight {
            lines: VecDeque::new(),
            first: 0,
            listeners,
        }
    }

    /// The next line's global number.
    pub fn next_global(&self) -> u64 {
        self.first + self.lines.len() as u64
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Deliveries still owed for the lines in flight.
    pub fn owed(&self) -> u64 {
        self.lines.iter().map(|f| u64::from(f.waiting)).sum()
    }

    /// Notes that the line numbered [`InFlight::next_global`] went out at `now`.
    pub fn sent(&mut self, now: Instant) {
        self.lines.push_back(Flight {
            sent_at: now,
            waiting: self.listeners,
        });
    }

    /// A listener received line `global` at `now`: its latency in ns, or
    /// `None` for a line not in flight (never sent, or already received by
    /// every listener: a duplicate).
    pub fn delivered(&mut self, global: u64, now: Instant) -> Option<u64> {
        let index = usize::try_from(global.checked_sub(self.first)?).ok()?;
        let flight = self.lines.get_mut(index)?;
        if flight.waiting == 0 {
            return None;
        }
        flight.waiting -= 1;
        let ns = now.saturating_duration_since(flight.sent_at).as_nanos() as u64;
        while self.lines.front().is_some_and(|f| f.waiting == 0) {
            self.lines.pop_front();
            self.first += 1;
        }
        Some(ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for ns in (0..10_000_000u64).step_by(997) {
            let bucket = Histogram::bucket(ns);
            assert!(bucket >= last);
            last = bucket;
            let floor = Histogram::floor(bucket);
            assert!(floor <= ns && ns - floor <= ns / 60 + 1, "{ns} -> {floor}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::new();
        for ns in 1..=100 {
            h.record(ns);
        }
        assert_eq!(h.quantile_ns(0.5), 50);
        assert_eq!(h.quantile_ns(0.99), 99);
        assert_eq!(h.total(), 100);
    }
}
