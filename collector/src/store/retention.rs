//! Retention: deletes raw points older than `raw_retention_days` — by timestamp AND by
//! ingest time, so imported history stays deduplicable for the raw retention after it
//! arrives — and rollup buckets older than `rollup_retention_days` (0 keeps forever), and
//! the periodic task that applies it. Nothing is refused at write time for its age.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::params;

use super::{Store, StoreError};

const DAY_NS: i64 = 86_400_000_000_000;

/// Rows deleted by one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub raw_deleted: u64,
    pub rollup_deleted: u64,
}

/// The horizon of a retention of `raw_retention_days` at `now_ns`, or `None` when kept
/// forever.
pub fn raw_cutoff_ns(now_ns: i64, raw_retention_days: u32) -> Option<i64> {
    (raw_retention_days > 0).then(|| now_ns.saturating_sub(i64::from(raw_retention_days) * DAY_NS))
}

impl Store {
    /// Deletes raw rows with `ts <= now - raw_days` stored before that horizon too, and
    /// rollup buckets that end before
    /// `now - rollup_days`, in one transaction. 0 days keeps forever.
    pub fn apply_retention(
        &self,
        now_ns: i64,
        raw_days: u32,
        rollup_days: u32,
    ) -> Result<RetentionOutcome, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        let mut out = RetentionOutcome::default();
        if let Some(cut) = raw_cutoff_ns(now_ns, raw_days) {
            // A raw row goes when it is old AND was stored before the horizon: an import
            // of last year's data keeps its raw rows (its deduplication key) for the
            // retention period after it arrived.
            for table in [
                "gpu_raw",
                "model_energy_raw",
                "model_split_raw",
                "model_usage_raw",
                "host_energy_raw",
                "site_raw",
                "folded_raw",
            ] {
                tx.execute(
                    &format!(
                        "DELETE FROM {table} WHERE ts <= ?1 AND (series_id, ts) IN
                         (SELECT series_id, ts FROM points WHERE ts <= ?1 AND ingested_ns <= ?1)"
                    ),
                    params![cut],
                )?;
            }
            let n = tx.execute(
                "DELETE FROM points WHERE ts <= ?1 AND ingested_ns <= ?1",
                params![cut],
            )?;
            out.raw_deleted = n as u64;
        }
        if let Some(cut) = raw_cutoff_ns(now_ns, rollup_days) {
            for table in [
                "gpu_rollup",
                "model_energy_rollup",
                "model_split_rollup",
                "model_usage_rollup",
                "host_energy_rollup",
                "site_rollup",
            ] {
                // A bucket ends at bucket + level seconds.
                let n = tx.execute(
                    &format!("DELETE FROM {table} WHERE bucket + level * 1000000000 <= ?1"),
                    params![cut],
                )?;
                out.rollup_deleted += n as u64;
            }
        }
        tx.commit()?;
        Ok(out)
    }
}

/// Applies retention now and then every `every`, forever (spawn it; drop it to stop).
pub async fn run_periodically(store: Arc<Store>, raw_days: u32, rollup_days: u32, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let s = store.clone();
        let now = crate::now_ns();
        match tokio::task::spawn_blocking(move || s.apply_retention(now, raw_days, rollup_days))
            .await
        {
            Ok(Ok(o)) if o.raw_deleted + o.rollup_deleted > 0 => {
                tracing::info!(
                    raw_deleted = o.raw_deleted,
                    rollup_deleted = o.rollup_deleted,
                    "retention applied"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "retention pass failed; will retry"),
            Err(e) => tracing::warn!(error = %e, "retention task panicked; will retry"),
        }
    }
}
