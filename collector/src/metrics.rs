//! The collector's own Prometheus metrics (`GET /metrics`): points written, duplicates and
//! conflicts ignored, points refused as too old, bytes received, requests by status.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::store::WriteOutcome;

/// Counters since start.
#[derive(Debug, Default)]
pub struct Metrics {
    points_written: AtomicU64,
    duplicates: AtomicU64,
    conflicts: AtomicU64,
    bytes: AtomicU64,
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    conflict_logged: AtomicBool,
}

impl Metrics {
    /// Counts what one committed write did.
    pub fn record_write(&self, o: &WriteOutcome) {
        self.points_written.fetch_add(o.written, Ordering::Relaxed);
        self.duplicates.fetch_add(o.duplicates, Ordering::Relaxed);
        self.conflicts.fetch_add(o.conflicts, Ordering::Relaxed);
    }

    /// Counts request body bytes as received (before decompression).
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one answered request.
    pub fn record_request(&self, path: &str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((path.to_string(), status)).or_insert(0) += 1;
        }
    }

    /// True the first time it is called: conflicts are logged once per process, then
    /// only counted.
    pub fn first_conflict(&self) -> bool {
        !self.conflict_logged.swap(true, Ordering::Relaxed)
    }

    /// Points written so far.
    pub fn points_written(&self) -> u64 {
        self.points_written.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            &mut out,
            "inferwatt_collector_points_written_total",
            "Points stored.",
            self.points_written.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "inferwatt_collector_points_duplicate_total",
            "Points ignored because the same measurement, tag set and timestamp was stored.",
            self.duplicates.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "inferwatt_collector_points_conflicting_total",
            "Duplicate points whose fields differed from the stored ones (the first were kept).",
            self.conflicts.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "inferwatt_collector_received_bytes_total",
            "Write request body bytes received, before decompression.",
            self.bytes.load(Ordering::Relaxed),
        );
        let name = "inferwatt_collector_http_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP requests answered, by path and status."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        if let Ok(m) = self.requests.lock() {
            for ((path, status), v) in m.iter() {
                let _ = writeln!(out, "{name}{{path=\"{path}\",status=\"{status}\"}} {v}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts() {
        let m = Metrics::default();
        m.record_write(&WriteOutcome {
            written: 3,
            duplicates: 2,
            conflicts: 1,
            first_conflict: None,
        });
        m.record_request("/api/v2/write", 204);
        m.record_request("/api/v2/write", 204);
        let text = m.render();
        assert!(
            text.contains("inferwatt_collector_points_written_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("inferwatt_collector_points_duplicate_total 2\n"),
            "{text}"
        );
        assert!(
            text.contains("inferwatt_collector_http_requests_total{path=\"/api/v2/write\",status=\"204\"} 2\n"),
            "{text}"
        );
    }
}
