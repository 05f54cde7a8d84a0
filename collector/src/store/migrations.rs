//! Versioned schema migrations, tracked in SQLite's `PRAGMA user_version`.
//!
//! Each entry of [`MIGRATIONS`] moves the schema from version `i` to `i + 1`; a migration
//! is never edited once released, only followed by a new one.

use rusqlite::Connection;

use super::StoreError;

/// The schema, one step per version.
///
/// - `series`: one row per (measurement, tag set), with the tags as a JSON object and the
///   tags the reports group by as columns.
/// - `points`: every accepted point, fields as a JSON object; its primary key
///   (series, timestamp) is the deduplication key.
/// - `*_raw`: the numeric fields of the five wire measurements, keyed by time first for
///   range scans.
/// - `*_rollup`: sums per series and time bucket, at two levels (`level` = bucket width in
///   seconds: 3600 and 86400), maintained in the transaction that inserts the point.
/// - `tokens`: SHA-256 of write tokens and the site/host each may write.
///
/// Version 2 (see `MIGRATION_2`) spreads intervals over the buckets they cover, adds the
/// GPU time of model rows, the agents' idle policy, the ingest time of points and the
/// files imported.
///
/// Version 3 (see `MIGRATION_3`) keeps each model row's split method.
pub const MIGRATIONS: &[&str] = &[MIGRATION_1, MIGRATION_2, MIGRATION_3];

/// The first released schema.
const MIGRATION_1: &str = r#"
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    series_key TEXT NOT NULL UNIQUE,
    measurement TEXT NOT NULL,
    tags TEXT NOT NULL,
    site TEXT NOT NULL DEFAULT '',
    host TEXT NOT NULL DEFAULT '',
    gpu_uuid TEXT NOT NULL DEFAULT '',
    gpu_name TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    server TEXT NOT NULL DEFAULT '',
    country TEXT NOT NULL DEFAULT '',
    zone TEXT NOT NULL DEFAULT ''
);
CREATE TABLE points (
    series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    fields TEXT NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
CREATE INDEX points_by_ts ON points (ts);

CREATE TABLE gpu_raw (
    ts INTEGER NOT NULL, series_id INTEGER NOT NULL, source TEXT NOT NULL,
    energy_j REAL NOT NULL, interval_s REAL NOT NULL,
    PRIMARY KEY (ts, series_id)
) WITHOUT ROWID;
CREATE TABLE model_energy_raw (
    ts INTEGER NOT NULL, series_id INTEGER NOT NULL,
    active_j REAL NOT NULL, idle_j REAL NOT NULL, host_j REAL NOT NULL, interval_s REAL NOT NULL,
    PRIMARY KEY (ts, series_id)
) WITHOUT ROWID;
CREATE TABLE model_usage_raw (
    ts INTEGER NOT NULL, series_id INTEGER NOT NULL,
    requests INTEGER NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
    interval_s REAL NOT NULL,
    PRIMARY KEY (ts, series_id)
) WITHOUT ROWID;
CREATE TABLE host_energy_raw (
    ts INTEGER NOT NULL, series_id INTEGER NOT NULL, source TEXT NOT NULL,
    cpu_j REAL NOT NULL, dram_j REAL NOT NULL, interval_s REAL NOT NULL,
    PRIMARY KEY (ts, series_id)
) WITHOUT ROWID;
CREATE TABLE site_raw (
    ts INTEGER NOT NULL, series_id INTEGER NOT NULL,
    pue REAL, wue_l_per_kwh REAL, interval_s REAL NOT NULL,
    PRIMARY KEY (ts, series_id)
) WITHOUT ROWID;

CREATE TABLE gpu_rollup (
    level INTEGER NOT NULL, bucket INTEGER NOT NULL, series_id INTEGER NOT NULL,
    source TEXT NOT NULL,
    energy_j REAL NOT NULL, interval_s REAL NOT NULL, points INTEGER NOT NULL,
    PRIMARY KEY (level, bucket, series_id, source)
) WITHOUT ROWID;
CREATE TABLE model_energy_rollup (
    level INTEGER NOT NULL, bucket INTEGER NOT NULL, series_id INTEGER NOT NULL,
    active_j REAL NOT NULL, idle_j REAL NOT NULL, host_j REAL NOT NULL,
    interval_s REAL NOT NULL, points INTEGER NOT NULL,
    PRIMARY KEY (level, bucket, series_id)
) WITHOUT ROWID;
CREATE TABLE model_usage_rollup (
    level INTEGER NOT NULL, bucket INTEGER NOT NULL, series_id INTEGER NOT NULL,
    requests INTEGER NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
    interval_s REAL NOT NULL, points INTEGER NOT NULL,
    PRIMARY KEY (level, bucket, series_id)
) WITHOUT ROWID;
CREATE TABLE host_energy_rollup (
    level INTEGER NOT NULL, bucket INTEGER NOT NULL, series_id INTEGER NOT NULL,
    source TEXT NOT NULL,
    cpu_j REAL NOT NULL, dram_j REAL NOT NULL, interval_s REAL NOT NULL, points INTEGER NOT NULL,
    PRIMARY KEY (level, bucket, series_id, source)
) WITHOUT ROWID;
-- The latest site row (by timestamp) of each bucket.
CREATE TABLE site_rollup (
    level INTEGER NOT NULL, bucket INTEGER NOT NULL, series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL, pue REAL, wue_l_per_kwh REAL, points INTEGER NOT NULL,
    PRIMARY KEY (level, bucket, series_id)
) WITHOUT ROWID;

CREATE TABLE tokens (
    sha256 TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    host TEXT NOT NULL,
    created_ns INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// Version 2:
/// - `points.ingested_ns`: when the point was stored. Retention deletes a raw row only
///   when both its timestamp and its ingest time are older than the raw horizon, so an
///   import of old data stays deduplicable for the whole raw retention after it arrives
///   (rows stored before v2 count as ingested at the epoch).
/// - `model_energy_*.gpu_s`: the model's share of the GPU's time in the interval (the
///   interval × its share of the GPU's energy in that interval, computed when stored).
///   v1 rows did not carry it: their full interval is taken, which over-counts GPU time
///   only where several models shared a GPU before the upgrade.
/// - `site_*.idle_policy`: the idle policy the agent ran (`resident`, `separate`), NULL
///   when the point did not say.
/// - `meta`: store-wide values (`max_interval_ns`: the longest interval stored, which
///   bounds the raw rows a period's edges must read).
/// - `imports`: SHA-256 of every file imported, so the same file is not imported twice.
/// - `folded_raw`: the `folded_points` count of points the agent's spool folded, so a
///   report reads it by time instead of scanning every point's fields; and an index of
///   `gap` rows for the report's gap list.
const MIGRATION_2: &str = r#"
ALTER TABLE points ADD COLUMN ingested_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE model_energy_raw ADD COLUMN gpu_s REAL NOT NULL DEFAULT 0;
ALTER TABLE model_energy_rollup ADD COLUMN gpu_s REAL NOT NULL DEFAULT 0;
UPDATE model_energy_raw SET gpu_s = interval_s;
UPDATE model_energy_rollup SET gpu_s = interval_s;
ALTER TABLE site_raw ADD COLUMN idle_policy TEXT;
ALTER TABLE site_rollup ADD COLUMN idle_policy TEXT;
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO meta (key, value)
  SELECT 'max_interval_ns', CAST(COALESCE(MAX(m), 0) * 1e9 AS INTEGER) FROM (
    SELECT MAX(interval_s) AS m FROM gpu_raw UNION ALL SELECT MAX(interval_s) FROM model_energy_raw
    UNION ALL SELECT MAX(interval_s) FROM model_usage_raw UNION ALL SELECT MAX(interval_s) FROM host_energy_raw);
CREATE TABLE imports (sha256 TEXT PRIMARY KEY, path TEXT NOT NULL, points INTEGER NOT NULL, imported_ns INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE folded_raw (
    ts INTEGER NOT NULL, series_id INTEGER NOT NULL, folded_points INTEGER NOT NULL,
    PRIMARY KEY (ts, series_id)
) WITHOUT ROWID;
INSERT INTO folded_raw (ts, series_id, folded_points)
  SELECT ts, series_id, CAST(json_extract(fields, '$.folded_points') AS INTEGER) FROM points
  WHERE instr(fields, '"folded_points"') > 0;
CREATE INDEX gpu_raw_gaps ON gpu_raw (ts) WHERE source = 'gap';
"#;

/// Version 3:
/// - `model_split_*`: the GPU energy (`active_j + idle_j`) of every `model_energy` row by
///   its split `method` (`power_model`, `sm_util`, `memory`, `equal`, `mig`, `none`), raw
///   and spread over the rollup buckets like the other typed tables, so a report's data
///   quality gives the share of energy each method split. Rows stored before v3 have no
///   entry: the report counts their energy as `unrecorded`.
const MIGRATION_3: &str = r#"
CREATE TABLE model_split_raw (
    ts INTEGER NOT NULL, series_id INTEGER NOT NULL, method TEXT NOT NULL,
    energy_j REAL NOT NULL, interval_s REAL NOT NULL,
    PRIMARY KEY (ts, series_id)
) WITHOUT ROWID;
CREATE TABLE model_split_rollup (
    level INTEGER NOT NULL, bucket INTEGER NOT NULL, series_id INTEGER NOT NULL,
    method TEXT NOT NULL,
    energy_j REAL NOT NULL, interval_s REAL NOT NULL, points INTEGER NOT NULL,
    PRIMARY KEY (level, bucket, series_id, method)
) WITHOUT ROWID;
"#;

/// Brings the database to the latest schema version, one transaction per step.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let latest = MIGRATIONS.len() as i64;
    if current > latest {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: latest,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "database schema migrated");
    }
    Ok(())
}
