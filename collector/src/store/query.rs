//! Report queries: sums per series over a period `(from_ns, to_ns]`, read from the daily
//! rollups for whole UTC days, the hourly rollups for whole hours, and the raw rows for
//! the partial edges. Rows are per series (and per `source` where it is a field); the
//! report groups them further.

use std::collections::HashMap;

use rusqlite::{params, Connection};

use super::rollup::bucket_of;
use super::{Store, StoreError, HOUR_NS, LEVELS};

/// A piece of a period: `(lo, hi]` read from raw rows, or whole buckets `[lo, hi)` of a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Segment {
    Raw { lo: i64, hi: i64 },
    Rollup { level: i64, lo: i64, hi: i64 },
}

/// Splits `(from, to]` into whole buckets of the coarsest level that fits, then finer
/// levels, then raw edges.
pub(crate) fn segments(from: i64, to: i64) -> Vec<Segment> {
    let mut out = Vec::new();
    split(from, to, &LEVELS, &mut out);
    out
}

fn split(from: i64, to: i64, levels: &[(i64, i64)], out: &mut Vec<Segment>) {
    if from >= to {
        return;
    }
    let Some(((width, level), rest)) = levels.split_first() else {
        out.push(Segment::Raw { lo: from, hi: to });
        return;
    };
    // First bucket starting at or after `from`, last bucket ending at or before `to`.
    let a = from.div_euclid(*width) * width
        + if from.rem_euclid(*width) == 0 {
            0
        } else {
            *width
        };
    let b = to.div_euclid(*width) * width;
    if a < b {
        split(from, a, rest, out);
        out.push(Segment::Rollup {
            level: *level,
            lo: a,
            hi: b,
        });
        split(b, to, rest, out);
    } else {
        split(from, to, rest, out);
    }
}

/// Sums of `gpu` points of one GPU and energy `source`.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuEnergyRow {
    pub site: String,
    pub host: String,
    pub gpu_uuid: String,
    pub gpu_name: String,
    /// `counter`, `integrated`, `gap` (or `unknown` when the point had none).
    pub source: String,
    pub energy_j: f64,
    pub interval_s: f64,
    pub points: i64,
}

impl GpuEnergyRow {
    /// GPU-hours covered: the sum of `interval_s` / 3600.
    pub fn gpu_hours(&self) -> f64 {
        self.interval_s / 3600.0
    }
}

/// Sums of `model_energy` points of one (site, host, gpu_uuid, model, server).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEnergyRow {
    pub site: String,
    pub host: String,
    pub gpu_uuid: String,
    pub model: String,
    pub server: String,
    pub active_j: f64,
    pub idle_j: f64,
    pub host_j: f64,
    pub interval_s: f64,
    pub points: i64,
}

/// Sums of `model_usage` points of one (site, host, model, server).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelUsageRow {
    pub site: String,
    pub host: String,
    pub model: String,
    pub server: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub interval_s: f64,
    pub points: i64,
}

/// Sums of `host_energy` points of one (site, host, source).
#[derive(Debug, Clone, PartialEq)]
pub struct HostEnergyRow {
    pub site: String,
    pub host: String,
    pub source: String,
    pub cpu_j: f64,
    pub dram_j: f64,
    pub interval_s: f64,
    pub points: i64,
}

/// The latest `site` point of a site at or before the end of a period.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteRow {
    pub site: String,
    pub country: String,
    pub zone: String,
    pub pue: Option<f64>,
    pub wue_l_per_kwh: Option<f64>,
    /// Timestamp of that point.
    pub ts: i64,
}

/// Sums (and point count) per (series id, group key).
type Sums<const N: usize> = HashMap<(i64, String), ([f64; N], i64)>;

/// Sums per (series, group key) over every segment of the period. `raw` and `rollup` are
/// `SELECT series_id, key, v1, …, points` queries whose last three parameters are
/// (lo, hi) and, for rollups, the level first.
fn sum_segments<const N: usize>(
    conn: &Connection,
    from: i64,
    to: i64,
    raw: &str,
    rollup: &str,
) -> Result<Sums<N>, StoreError> {
    let mut acc: Sums<N> = HashMap::new();
    for seg in segments(from, to) {
        let (mut stmt, p) = match seg {
            Segment::Raw { lo, hi } => (conn.prepare_cached(raw)?, [0, lo, hi]),
            Segment::Rollup { level, lo, hi } => (conn.prepare_cached(rollup)?, [level, lo, hi]),
        };
        let mut rows = match seg {
            Segment::Raw { .. } => stmt.query(params![p[1], p[2]])?,
            Segment::Rollup { .. } => stmt.query(params![p[0], p[1], p[2]])?,
        };
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let key: String = r.get(1)?;
            let e = acc.entry((id, key)).or_insert(([0.0; N], 0));
            for (i, v) in e.0.iter_mut().enumerate() {
                *v += r.get::<_, f64>(2 + i)?;
            }
            e.1 += r.get::<_, i64>(2 + N)?;
        }
    }
    Ok(acc)
}

/// Tag columns of a series.
fn series_tags(conn: &Connection, id: i64) -> Result<[String; 8], StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT site, host, gpu_uuid, gpu_name, model, server, country, zone FROM series WHERE id = ?1",
    )?;
    Ok(stmt.query_row([id], |r| {
        Ok([
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
        ])
    })?)
}

impl Store {
    /// `gpu` energy and interval sums per GPU and `source` over `(from_ns, to_ns]`.
    pub fn sum_gpu_energy(
        &self,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<GpuEnergyRow>, StoreError> {
        let conn = self.lock()?;
        let acc = sum_segments::<2>(
            &conn,
            from_ns,
            to_ns,
            "SELECT series_id, source, SUM(energy_j), SUM(interval_s), COUNT(*) FROM gpu_raw
             WHERE ts > ?1 AND ts <= ?2 GROUP BY series_id, source",
            "SELECT series_id, source, SUM(energy_j), SUM(interval_s), SUM(points) FROM gpu_rollup
             WHERE level = ?1 AND bucket >= ?2 AND bucket < ?3 GROUP BY series_id, source",
        )?;
        let mut out = Vec::with_capacity(acc.len());
        for ((id, source), ([energy_j, interval_s], points)) in acc {
            let [site, host, gpu_uuid, gpu_name, ..] = series_tags(&conn, id)?;
            out.push(GpuEnergyRow {
                site,
                host,
                gpu_uuid,
                gpu_name,
                source,
                energy_j,
                interval_s,
                points,
            });
        }
        out.sort_by(|a, b| {
            (&a.site, &a.host, &a.gpu_uuid, &a.source).cmp(&(
                &b.site,
                &b.host,
                &b.gpu_uuid,
                &b.source,
            ))
        });
        Ok(out)
    }

    /// `model_energy` sums per (site, host, gpu_uuid, model, server) over `(from_ns, to_ns]`.
    pub fn sum_model_energy(
        &self,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<ModelEnergyRow>, StoreError> {
        let conn = self.lock()?;
        let acc = sum_segments::<4>(
            &conn,
            from_ns,
            to_ns,
            "SELECT series_id, '', SUM(active_j), SUM(idle_j), SUM(host_j), SUM(interval_s), COUNT(*)
             FROM model_energy_raw WHERE ts > ?1 AND ts <= ?2 GROUP BY series_id",
            "SELECT series_id, '', SUM(active_j), SUM(idle_j), SUM(host_j), SUM(interval_s), SUM(points)
             FROM model_energy_rollup WHERE level = ?1 AND bucket >= ?2 AND bucket < ?3 GROUP BY series_id",
        )?;
        let mut out = Vec::with_capacity(acc.len());
        for ((id, _), ([active_j, idle_j, host_j, interval_s], points)) in acc {
            let [site, host, gpu_uuid, _, model, server, ..] = series_tags(&conn, id)?;
            out.push(ModelEnergyRow {
                site,
                host,
                gpu_uuid,
                model,
                server,
                active_j,
                idle_j,
                host_j,
                interval_s,
                points,
            });
        }
        out.sort_by(|a, b| {
            (&a.site, &a.host, &a.gpu_uuid, &a.model, &a.server).cmp(&(
                &b.site,
                &b.host,
                &b.gpu_uuid,
                &b.model,
                &b.server,
            ))
        });
        Ok(out)
    }

    /// `model_usage` sums per (site, host, model, server) over `(from_ns, to_ns]`.
    pub fn sum_model_usage(
        &self,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<ModelUsageRow>, StoreError> {
        let conn = self.lock()?;
        // Counts are summed as integers in SQL and carried through f64 only per segment,
        // exact below 2^53.
        let acc = sum_segments::<4>(
            &conn,
            from_ns,
            to_ns,
            "SELECT series_id, '', SUM(requests), SUM(input_tokens), SUM(output_tokens), SUM(interval_s), COUNT(*)
             FROM model_usage_raw WHERE ts > ?1 AND ts <= ?2 GROUP BY series_id",
            "SELECT series_id, '', SUM(requests), SUM(input_tokens), SUM(output_tokens), SUM(interval_s), SUM(points)
             FROM model_usage_rollup WHERE level = ?1 AND bucket >= ?2 AND bucket < ?3 GROUP BY series_id",
        )?;
        let mut out = Vec::with_capacity(acc.len());
        for ((id, _), ([requests, input_tokens, output_tokens, interval_s], points)) in acc {
            let [site, host, _, _, model, server, ..] = series_tags(&conn, id)?;
            out.push(ModelUsageRow {
                site,
                host,
                model,
                server,
                requests: requests as i64,
                input_tokens: input_tokens as i64,
                output_tokens: output_tokens as i64,
                interval_s,
                points,
            });
        }
        out.sort_by(|a, b| {
            (&a.site, &a.host, &a.model, &a.server).cmp(&(&b.site, &b.host, &b.model, &b.server))
        });
        Ok(out)
    }

    /// `host_energy` sums per (site, host, source) over `(from_ns, to_ns]`.
    pub fn sum_host_energy(
        &self,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<HostEnergyRow>, StoreError> {
        let conn = self.lock()?;
        let acc = sum_segments::<3>(
            &conn,
            from_ns,
            to_ns,
            "SELECT series_id, source, SUM(cpu_j), SUM(dram_j), SUM(interval_s), COUNT(*)
             FROM host_energy_raw WHERE ts > ?1 AND ts <= ?2 GROUP BY series_id, source",
            "SELECT series_id, source, SUM(cpu_j), SUM(dram_j), SUM(interval_s), SUM(points)
             FROM host_energy_rollup WHERE level = ?1 AND bucket >= ?2 AND bucket < ?3 GROUP BY series_id, source",
        )?;
        // Two series of one host (other tags) fold into one row per (site, host, source).
        let mut folded: HashMap<(String, String, String), HostEnergyRow> = HashMap::new();
        for ((id, source), ([cpu_j, dram_j, interval_s], points)) in acc {
            let [site, host, ..] = series_tags(&conn, id)?;
            let e = folded
                .entry((site.clone(), host.clone(), source.clone()))
                .or_insert(HostEnergyRow {
                    site,
                    host,
                    source,
                    cpu_j: 0.0,
                    dram_j: 0.0,
                    interval_s: 0.0,
                    points: 0,
                });
            e.cpu_j += cpu_j;
            e.dram_j += dram_j;
            e.interval_s += interval_s;
            e.points += points;
        }
        let mut out: Vec<HostEnergyRow> = folded.into_values().collect();
        out.sort_by(|a, b| (&a.site, &a.host, &a.source).cmp(&(&b.site, &b.host, &b.source)));
        Ok(out)
    }

    /// The latest `site` point of each site with a timestamp at or before `to_ns` (from raw
    /// rows while kept, else from the rollups' latest point per bucket).
    pub fn latest_sites(&self, to_ns: i64) -> Result<Vec<SiteRow>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT s.site, s.country, s.zone, x.pue, x.wue_l_per_kwh, MAX(x.ts)
             FROM (SELECT series_id, ts, pue, wue_l_per_kwh FROM site_raw WHERE ts <= ?1
                   UNION ALL
                   SELECT series_id, ts, pue, wue_l_per_kwh FROM site_rollup WHERE level = 3600 AND ts <= ?1) x
             JOIN series s ON s.id = x.series_id
             GROUP BY s.site ORDER BY s.site",
        )?;
        let rows = stmt.query_map([to_ns], |r| {
            Ok(SiteRow {
                site: r.get(0)?,
                country: r.get(1)?,
                zone: r.get(2)?,
                pue: r.get(3)?,
                wue_l_per_kwh: r.get(4)?,
                ts: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// `model_energy` sums of one (site, host, gpu_uuid, model, server) during one hour.
#[derive(Debug, Clone, PartialEq)]
pub struct HourlyModelEnergyRow {
    pub site: String,
    pub host: String,
    pub gpu_uuid: String,
    pub model: String,
    pub server: String,
    /// Start `b` of the hour bucket, which holds interval ends in `(b, b + 1 h]`.
    pub hour_start_ns: i64,
    pub active_j: f64,
    pub idle_j: f64,
    pub host_j: f64,
    pub interval_s: f64,
    pub points: i64,
}

/// `gpu` sums of one GPU during one hour, all `source`s together.
#[derive(Debug, Clone, PartialEq)]
pub struct HourlyGpuRow {
    pub site: String,
    pub host: String,
    pub gpu_uuid: String,
    pub gpu_name: String,
    pub hour_start_ns: i64,
    pub energy_j: f64,
    pub interval_s: f64,
    pub points: i64,
}

/// `model_usage` sums of one (site, host, model, server) during one hour.
#[derive(Debug, Clone, PartialEq)]
pub struct HourlyUsageRow {
    pub site: String,
    pub host: String,
    pub model: String,
    pub server: String,
    pub hour_start_ns: i64,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub interval_s: f64,
    pub points: i64,
}

/// One raw `gpu` point with `source = "gap"`.
#[derive(Debug, Clone, PartialEq)]
pub struct GapPointRow {
    pub site: String,
    pub host: String,
    pub gpu_uuid: String,
    /// Interval end.
    pub ts: i64,
    pub interval_s: f64,
    pub energy_j: f64,
}

/// Sums per (series id, hour start).
type HourSums<const N: usize> = HashMap<(i64, i64), ([f64; N], i64)>;

/// Sums per (series, hour) over `(from, to]`: whole hours from the hourly rollups, the
/// partial hours at both edges from raw rows, bucketed with [`bucket_of`] (so an edge
/// hour's row holds only the part of the hour inside the period). `raw` is a
/// `SELECT series_id, ts, v1, …, 1 … WHERE ts > ?1 AND ts <= ?2` query; `rollup` a
/// `SELECT series_id, bucket, v1, …, points … WHERE level = 3600 AND bucket >= ?1 AND
/// bucket < ?2` query.
fn sum_hours<const N: usize>(
    conn: &Connection,
    from: i64,
    to: i64,
    raw: &str,
    rollup: &str,
) -> Result<HourSums<N>, StoreError> {
    let mut acc: HourSums<N> = HashMap::new();
    if from >= to {
        return Ok(acc);
    }
    // First hour boundary at or after `from`, last at or before `to`.
    let a = from.div_euclid(HOUR_NS) * HOUR_NS
        + if from.rem_euclid(HOUR_NS) == 0 {
            0
        } else {
            HOUR_NS
        };
    let b = to.div_euclid(HOUR_NS) * HOUR_NS;
    let mut pieces: Vec<(bool, i64, i64)> = Vec::new();
    if a < b {
        pieces.push((false, from, a));
        pieces.push((true, a, b));
        pieces.push((false, b, to));
    } else {
        pieces.push((false, from, to));
    }
    for (is_rollup, lo, hi) in pieces {
        if lo >= hi {
            continue;
        }
        let mut stmt = conn.prepare_cached(if is_rollup { rollup } else { raw })?;
        let mut rows = stmt.query(params![lo, hi])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let t: i64 = r.get(1)?;
            let hour = if is_rollup { t } else { bucket_of(t, HOUR_NS) };
            let e = acc.entry((id, hour)).or_insert(([0.0; N], 0));
            for (i, v) in e.0.iter_mut().enumerate() {
                *v += r.get::<_, f64>(2 + i)?;
            }
            e.1 += r.get::<_, i64>(2 + N)?;
        }
    }
    Ok(acc)
}

/// Tag columns of series, read once per id.
struct TagCache<'c> {
    conn: &'c Connection,
    tags: HashMap<i64, [String; 8]>,
}

impl<'c> TagCache<'c> {
    fn new(conn: &'c Connection) -> Self {
        TagCache {
            conn,
            tags: HashMap::new(),
        }
    }

    fn get(&mut self, id: i64) -> Result<&[String; 8], StoreError> {
        if !self.tags.contains_key(&id) {
            let t = series_tags(self.conn, id)?;
            self.tags.insert(id, t);
        }
        self.tags.get(&id).ok_or(StoreError::Poisoned)
    }
}

impl Store {
    /// `model_energy` sums per (site, host, gpu_uuid, model, server, hour) over
    /// `(from_ns, to_ns]`, sorted by those keys. Whole hours come from the hourly
    /// rollups, the partial edge hours from raw rows (their `hour_start_ns` is still the
    /// hour's start).
    pub fn hourly_model_energy(
        &self,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<HourlyModelEnergyRow>, StoreError> {
        let conn = self.lock()?;
        let acc = sum_hours::<4>(
            &conn,
            from_ns,
            to_ns,
            "SELECT series_id, ts, active_j, idle_j, host_j, interval_s, 1
             FROM model_energy_raw WHERE ts > ?1 AND ts <= ?2",
            "SELECT series_id, bucket, active_j, idle_j, host_j, interval_s, points
             FROM model_energy_rollup WHERE level = 3600 AND bucket >= ?1 AND bucket < ?2",
        )?;
        let mut cache = TagCache::new(&conn);
        let mut out = Vec::with_capacity(acc.len());
        for ((id, hour), ([active_j, idle_j, host_j, interval_s], points)) in acc {
            let [site, host, gpu_uuid, _, model, server, ..] = cache.get(id)?;
            out.push(HourlyModelEnergyRow {
                site: site.clone(),
                host: host.clone(),
                gpu_uuid: gpu_uuid.clone(),
                model: model.clone(),
                server: server.clone(),
                hour_start_ns: hour,
                active_j,
                idle_j,
                host_j,
                interval_s,
                points,
            });
        }
        out.sort_by(|a, b| {
            (
                &a.site,
                &a.host,
                &a.gpu_uuid,
                &a.model,
                &a.server,
                a.hour_start_ns,
            )
                .cmp(&(
                    &b.site,
                    &b.host,
                    &b.gpu_uuid,
                    &b.model,
                    &b.server,
                    b.hour_start_ns,
                ))
        });
        Ok(out)
    }

    /// `gpu` sums per (site, host, gpu_uuid, hour) over `(from_ns, to_ns]`, every
    /// `source` together, sorted. Two series of one GPU (e.g. another `gpu_name` or
    /// `gpu_index` tag) fold into one row, keeping the first name in series order.
    pub fn hourly_gpu_energy(
        &self,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<HourlyGpuRow>, StoreError> {
        let conn = self.lock()?;
        let acc = sum_hours::<2>(
            &conn,
            from_ns,
            to_ns,
            "SELECT series_id, ts, energy_j, interval_s, 1 FROM gpu_raw WHERE ts > ?1 AND ts <= ?2",
            "SELECT series_id, bucket, energy_j, interval_s, points FROM gpu_rollup
             WHERE level = 3600 AND bucket >= ?1 AND bucket < ?2",
        )?;
        let mut ids: Vec<_> = acc.into_iter().collect();
        ids.sort_by_key(|(k, _)| *k);
        let mut cache = TagCache::new(&conn);
        let mut folded: HashMap<(String, String, String, i64), HourlyGpuRow> = HashMap::new();
        for ((id, hour), ([energy_j, interval_s], points)) in ids {
            let [site, host, gpu_uuid, gpu_name, ..] = cache.get(id)?;
            let e = folded
                .entry((site.clone(), host.clone(), gpu_uuid.clone(), hour))
                .or_insert_with(|| HourlyGpuRow {
                    site: site.clone(),
                    host: host.clone(),
                    gpu_uuid: gpu_uuid.clone(),
                    gpu_name: gpu_name.clone(),
                    hour_start_ns: hour,
                    energy_j: 0.0,
                    interval_s: 0.0,
                    points: 0,
                });
            e.energy_j += energy_j;
            e.interval_s += interval_s;
            e.points += points;
        }
        let mut out: Vec<HourlyGpuRow> = folded.into_values().collect();
        out.sort_by(|a, b| {
            (&a.site, &a.host, &a.gpu_uuid, a.hour_start_ns).cmp(&(
                &b.site,
                &b.host,
                &b.gpu_uuid,
                b.hour_start_ns,
            ))
        });
        Ok(out)
    }

    /// `model_usage` sums per (site, host, model, server, hour) over `(from_ns, to_ns]`,
    /// sorted.
    pub fn hourly_model_usage(
        &self,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<HourlyUsageRow>, StoreError> {
        let conn = self.lock()?;
        let acc = sum_hours::<4>(
            &conn,
            from_ns,
            to_ns,
            "SELECT series_id, ts, requests, input_tokens, output_tokens, interval_s, 1
             FROM model_usage_raw WHERE ts > ?1 AND ts <= ?2",
            "SELECT series_id, bucket, requests, input_tokens, output_tokens, interval_s, points
             FROM model_usage_rollup WHERE level = 3600 AND bucket >= ?1 AND bucket < ?2",
        )?;
        let mut cache = TagCache::new(&conn);
        let mut out = Vec::with_capacity(acc.len());
        for ((id, hour), ([requests, input_tokens, output_tokens, interval_s], points)) in acc {
            let [site, host, _, _, model, server, ..] = cache.get(id)?;
            out.push(HourlyUsageRow {
                site: site.clone(),
                host: host.clone(),
                model: model.clone(),
                server: server.clone(),
                hour_start_ns: hour,
                requests: requests as i64,
                input_tokens: input_tokens as i64,
                output_tokens: output_tokens as i64,
                interval_s,
                points,
            });
        }
        out.sort_by(|a, b| {
            (&a.site, &a.host, &a.model, &a.server, a.hour_start_ns).cmp(&(
                &b.site,
                &b.host,
                &b.model,
                &b.server,
                b.hour_start_ns,
            ))
        });
        Ok(out)
    }

    /// Raw `gpu` points with `source = "gap"` in `(from_ns, to_ns]`, by time. Only raw
    /// rows are read: gaps older than the raw retention are no longer listed one by one
    /// (their energy still counts in the rollups).
    pub fn gap_points(&self, from_ns: i64, to_ns: i64) -> Result<Vec<GapPointRow>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT s.site, s.host, s.gpu_uuid, g.ts, g.interval_s, g.energy_j
             FROM gpu_raw g JOIN series s ON s.id = g.series_id
             WHERE g.ts > ?1 AND g.ts <= ?2 AND g.source = 'gap'
             ORDER BY g.ts, s.site, s.host, s.gpu_uuid",
        )?;
        let rows = stmt.query_map(params![from_ns, to_ns], |r| {
            Ok(GapPointRow {
                site: r.get(0)?,
                host: r.get(1)?,
                gpu_uuid: r.get(2)?,
                ts: r.get(3)?,
                interval_s: r.get(4)?,
                energy_j: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Σ of the integer field `folded_points` (what the agent's spool adds to a point
    /// folded from several, see `inferwatt_ship::fold`) over stored points in
    /// `(from_ns, to_ns]`. Read from the raw points, so folds older than the raw
    /// retention no longer count.
    pub fn sum_folded_points(&self, from_ns: i64, to_ns: i64) -> Result<u64, StoreError> {
        let conn = self.lock()?;
        let n: Option<i64> = conn.query_row(
            "SELECT SUM(json_extract(fields, '$.folded_points')) FROM points
             WHERE ts > ?1 AND ts <= ?2 AND instr(fields, '\"folded_points\"') > 0",
            params![from_ns, to_ns],
            |r| r.get(0),
        )?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DAY_NS;

    #[test]
    fn segments_use_days_then_hours_then_raw() {
        let from = DAY_NS - HOUR_NS - 5;
        let to = 3 * DAY_NS + 2 * HOUR_NS + 7;
        assert_eq!(
            segments(from, to),
            vec![
                Segment::Raw {
                    lo: from,
                    hi: DAY_NS - HOUR_NS
                },
                Segment::Rollup {
                    level: 3600,
                    lo: DAY_NS - HOUR_NS,
                    hi: DAY_NS
                },
                Segment::Rollup {
                    level: 86400,
                    lo: DAY_NS,
                    hi: 3 * DAY_NS
                },
                Segment::Rollup {
                    level: 3600,
                    lo: 3 * DAY_NS,
                    hi: 3 * DAY_NS + 2 * HOUR_NS
                },
                Segment::Raw {
                    lo: 3 * DAY_NS + 2 * HOUR_NS,
                    hi: to
                },
            ]
        );
    }

    #[test]
    fn short_period_is_raw_only() {
        assert_eq!(segments(10, 20), vec![Segment::Raw { lo: 10, hi: 20 }]);
        assert_eq!(segments(20, 10), vec![]);
        assert_eq!(
            segments(0, HOUR_NS),
            vec![Segment::Rollup {
                level: 3600,
                lo: 0,
                hi: HOUR_NS
            }]
        );
    }
}
