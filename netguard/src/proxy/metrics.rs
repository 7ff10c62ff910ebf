//! Request counters of the proxy, per app: requests by status class and a duration histogram.
//!
//! Every worker thread counts in its own shard of relaxed atomics, summed on reading: a request
//! that finishes adds to its app's counters under its worker's uncontended read lock (the
//! first request of a new app name on a worker takes the write lock to add it). Apps removed by
//! a reload keep their counters, as Prometheus expects of counters.

use std::{
    collections::BTreeMap,
    sync::{
        PoisonError, RwLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

/// Upper bounds of the duration histogram, in seconds (Prometheus client defaults).
pub const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Status classes as labelled: `1xx` … `5xx`, and `none` for a connection that ended before
/// any status was sent.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// The app label of requests that matched no app (unknown host, refused before routing).
pub const NO_APP: &str = "-";

/// One app's counters.
#[derive(Debug, Default)]
pub struct AppMetrics {
    by_class: [AtomicU64; STATUS_CLASSES.len()],
    /// Per bucket, not cumulative; the last slot is `+Inf`.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

/// A consistent-enough copy of one app's counters for rendering.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppReading {
    pub by_class: [u64; STATUS_CLASSES.len()],
    /// Cumulative counts for each bound of [`DURATION_BUCKETS`], then `+Inf` (= count).
    pub cumulative: [u64; DURATION_BUCKETS.len() + 1],
    pub sum_seconds: f64,
}

impl AppReading {
    pub fn count(&self) -> u64 {
        self.cumulative[DURATION_BUCKETS.len()]
    }
}

fn class_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100) - 1,
        _ => STATUS_CLASSES.len() - 1,
    }
}

impl AppMetrics {
    fn record(&self, status: u16, duration: Duration) {
        self.by_class[class_index(status)].fetch_add(1, Relaxed);
        let secs = duration.as_secs_f64();
        let slot = DURATION_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Relaxed);
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    fn read(&self) -> AppReading {
        let mut r = AppReading::default();
        for (out, c) in r.by_class.iter_mut().zip(&self.by_class) {
            *out = c.load(Relaxed);
        }
        let mut running = 0;
        for (out, b) in r.cumulative.iter_mut().zip(&self.buckets) {
            running += b.load(Relaxed);
            *out = running;
        }
        r.sum_seconds = self.sum_micros.load(Relaxed) as f64 / 1e6;
        r
    }
}

/// One worker's counters by app name, on its own cache lines: workers never write the same
/// line per request.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    apps: RwLock<BTreeMap<String, AppMetrics>>,
}

/// The proxy's counters, hung off its shared state: one shard per worker thread, summed when
/// read.
#[derive(Debug)]
pub struct ProxyMetrics {
    shards: Box<[Shard]>,
    /// Connections answered 503 and closed because a connection cap was reached.
    refused: AtomicU64,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new(1)
    }
}

impl ProxyMetrics {
    /// Counters for `workers` worker threads.
    pub fn new(workers: usize) -> Self {
        ProxyMetrics {
            shards: (0..workers.max(1)).map(|_| Shard::default()).collect(),
            refused: AtomicU64::new(0),
        }
    }

    /// Counts one finished request (called where the router log line is written) in the
    /// calling worker's shard.
    pub fn record(&self, app: Option<&str>, status: u16, duration: Duration) {
        let name = app.unwrap_or(NO_APP);
        let shard = super::state::this_workers(&self.shards);
        {
            let apps = shard.apps.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(m) = apps.get(name) {
                m.record(status, duration);
                return;
            }
        }
        shard
            .apps
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_owned())
            .or_default()
            .record(status, duration);
    }

    pub fn count_refused(&self) {
        self.refused.fetch_add(1, Relaxed);
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    /// Every app seen so far, by name (sorted), summed over the workers.
    pub fn read(&self) -> Vec<(String, AppReading)> {
        let mut sum: BTreeMap<String, AppReading> = BTreeMap::new();
        for shard in &self.shards {
            let apps = shard.apps.read().unwrap_or_else(PoisonError::into_inner);
            for (name, m) in apps.iter() {
                let r = m.read();
                let total = sum.entry(name.clone()).or_default();
                for (t, x) in total.by_class.iter_mut().zip(r.by_class) {
                    *t += x;
                }
                for (t, x) in total.cumulative.iter_mut().zip(r.cumulative) {
                    *t += x;
                }
                total.sum_seconds += r.sum_seconds;
            }
        }
        sum.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_summed() {
        let m = ProxyMetrics::new(2);
        m.record(Some("shop"), 200, Duration::from_millis(3));
        std::thread::scope(|scope| {
            scope.spawn(|| {
                crate::proxy::state::set_worker(1);
                m.record(Some("shop"), 500, Duration::from_millis(30));
                m.record(Some("blog"), 200, Duration::from_millis(3));
            });
        });
        // Worker 1 counted in its own shard.
        assert_eq!(m.shards[1].apps.read().unwrap().len(), 2);
        let r = m.read();
        let names: Vec<&str> = r.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["blog", "shop"]);
        assert_eq!(r[1].1.by_class, [0, 1, 0, 0, 1, 0]);
        assert_eq!(r[1].1.count(), 2);
        assert_eq!(r[1].1.cumulative[0], 1);
        assert!((r[1].1.sum_seconds - 0.033).abs() < 1e-9);
        assert_eq!(r[0].1.count(), 1);
    }

    #[test]
    fn classes_buckets_and_sum() {
        let m = ProxyMetrics::default();
        m.record(Some("shop"), 200, Duration::from_millis(3));
        m.record(Some("shop"), 204, Duration::from_millis(30));
        m.record(Some("shop"), 503, Duration::from_secs(20));
        m.record(None, 404, Duration::from_micros(10));
        m.record(Some("shop"), 0, Duration::ZERO);
        let r = m.read();
        assert_eq!(r.len(), 2);
        let (name, shop) = &r[1];
        assert_eq!(name, "shop");
        assert_eq!(shop.by_class, [0, 2, 0, 0, 1, 1]);
        // 0 s and 3 ms ≤ 5 ms; 30 ms ≤ 50 ms; 20 s only in +Inf.
        assert_eq!(shop.cumulative[0], 2);
        assert_eq!(shop.cumulative[2], 2);
        assert_eq!(shop.cumulative[3], 3);
        assert_eq!(shop.cumulative[10], 3);
        assert_eq!(shop.count(), 4);
        assert!(
            (shop.sum_seconds - 20.033).abs() < 1e-9,
            "{}",
            shop.sum_seconds
        );
        assert_eq!(r[0].0, NO_APP);
        assert_eq!(r[0].1.by_class[3], 1);
    }
}
