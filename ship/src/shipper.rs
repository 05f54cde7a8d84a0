//! The shipper: the [`ShipHandle`] producers enqueue through (durable, no network) and
//! the [`Shipper`] task that drains the spool in order to the write API, with backoff,
//! jitter, `Retry-After`, a dead-letter file for rejected batches, and a bounded flush on
//! shutdown. It owns the counters behind [`ShipStats`].

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use inferwatt_core::lineproto::Point;
use tokio::sync::{watch, Notify};

use crate::client::{Outcome, WriteClient};
use crate::config::ShipConfig;
use crate::spool::{Batch, Spool, SpoolError};
use crate::ShipError;

/// File in the spool directory where rejected batches are kept, with the server's reason.
pub const DEAD_LETTER_FILE: &str = "dead-letter.lp";

/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Shipping health, for the agent's and collector's `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ShipStats {
    /// Bytes of spooled batches not yet delivered.
    pub spool_bytes: u64,
    /// Spooled batches not yet delivered.
    pub spool_batches: u64,
    /// Points the server acknowledged since start.
    pub sent_points_total: u64,
    /// Failed write attempts since start (each retried).
    pub send_failures_total: u64,
    /// Write requests the server rejected for good since start (kept in the dead-letter file).
    pub rejected_batches_total: u64,
    /// Points in those rejected requests.
    pub rejected_points_total: u64,
    /// Points merged away by folding on overflow since start.
    pub folded_points_total: u64,
    /// Spooled batches that went into a fold since start.
    pub folded_batches_total: u64,
    /// Torn or corrupt spool records found and cut off since start.
    pub torn_records_total: u64,
    /// Enqueues refused because the spool was full and could not be folded further.
    pub refused_enqueues_total: u64,
    /// When the server last acknowledged a write (Unix seconds); `None` before the first.
    pub last_success_unix_s: Option<f64>,
}

#[derive(Debug, Default)]
struct Counters {
    sent_points: AtomicU64,
    send_failures: AtomicU64,
    rejected_batches: AtomicU64,
    rejected_points: AtomicU64,
    last_success_ms: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    spool: Mutex<Spool>,
    notify: Notify,
    counters: Counters,
}

impl Shared {
    fn spool(&self) -> MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs a spool operation off the async worker threads (it fsyncs).
async fn with_spool<T: Send + 'static>(
    shared: &Arc<Shared>,
    op: impl FnOnce(&mut Spool) -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, ShipError> {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || op(&mut shared.spool()))
        .await
        .map_err(|e| ShipError::Task(e.to_string()))?
        .map_err(ShipError::from)
}

/// Producers' side: durable enqueue and statistics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShipHandle {
    shared: Arc<Shared>,
}

impl ShipHandle {
    /// Durably appends points as one batch (fsync before returning Ok); no network.
    /// Points without a timestamp get the current time, so a replay keeps them stable.
    pub fn enqueue(&self, points: &[Point]) -> Result<(), ShipError> {
        if points.is_empty() {
            return Ok(());
        }
        let mut body = String::with_capacity(points.len() * 160);
        let now = unix_ns();
        for p in points {
            let line = if p.timestamp.is_some() {
                p.to_line()
            } else {
                p.clone().at(now).to_line()
            };
            body.push_str(&line.map_err(SpoolError::from)?);
            body.push('\n');
        }
        self.shared.spool().append(body.as_bytes())?;
        self.shared.notify.notify_one();
        Ok(())
    }

    /// Durably appends an interval already encoded as line protocol (every line with
    /// its timestamp, newline-terminated), so a producer that encodes once for its own
    /// write-ahead record does not encode again (fsync before returning Ok).
    pub fn enqueue_encoded(&self, body: &str) -> Result<(), ShipError> {
        if body.is_empty() {
            return Ok(());
        }
        self.shared.spool().append(body.as_bytes())?;
        self.shared.notify.notify_one();
        Ok(())
    }

    /// Current shipping statistics.
    pub fn stats(&self) -> ShipStats {
        let (spool_bytes, spool_batches, sc) = {
            let s = self.shared.spool();
            (s.live_bytes(), s.batches() as u64, s.counters)
        };
        let c = &self.shared.counters;
        let last_ms = c.last_success_ms.load(Ordering::Relaxed);
        ShipStats {
            spool_bytes,
            spool_batches,
            sent_points_total: c.sent_points.load(Ordering::Relaxed),
            send_failures_total: c.send_failures.load(Ordering::Relaxed),
            rejected_batches_total: c.rejected_batches.load(Ordering::Relaxed),
            rejected_points_total: c.rejected_points.load(Ordering::Relaxed),
            folded_points_total: sc.folded_points_total,
            folded_batches_total: sc.folded_batches_total,
            torn_records_total: sc.torn_records_total,
            refused_enqueues_total: sc.refused_enqueues_total,
            last_success_unix_s: (last_ms > 0).then(|| last_ms as f64 / 1000.0),
        }
    }
}

/// Sending side: owns the client and drains the spool.
#[derive(Debug)]
pub struct Shipper {
    cfg: ShipConfig,
    client: WriteClient,
    shared: Arc<Shared>,
    rng: u64,
}

impl Shipper {
    /// Validates the configuration, opens and recovers the spool directory, builds the client.
    pub fn open(cfg: ShipConfig) -> Result<(Shipper, ShipHandle), ShipError> {
        cfg.validate()?;
        let spool = Spool::open(&cfg.spool_dir, cfg.spool_max_bytes)?;
        let client = WriteClient::new(&cfg)?;
        let shared = Arc::new(Shared {
            spool: Mutex::new(spool),
            notify: Notify::new(),
            counters: Counters::default(),
        });
        let seed = unix_ns() as u64 ^ (u64::from(std::process::id()) << 32) | 1;
        let handle = ShipHandle {
            shared: shared.clone(),
        };
        Ok((
            Shipper {
                cfg,
                client,
                shared,
                rng: seed,
            },
            handle,
        ))
    }

    /// Sends spooled batches in order until `shutdown` turns true (or its sender is
    /// dropped); then keeps sending for at most `shutdown_flush_s` and leaves the rest on disk.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let flush_interval = Duration::from_secs_f64(self.cfg.flush_interval_s);
        let mut last_send: Option<Instant> = None;
        let mut failures_in_row: u32 = 0;
        tracing::info!(url = %self.client.url(), "shipping");
        loop {
            if *shutdown.borrow() {
                break;
            }
            let (batches, points) = {
                let s = self.shared.spool();
                (s.batches(), s.pending_points(self.cfg.batch_max_points))
            };
            let wait = if batches == 0 {
                Some(None)
            } else if (points as usize) < self.cfg.batch_max_points {
                last_send
                    .map(|t| t + flush_interval)
                    .filter(|&due| due > Instant::now())
                    .map(Some)
            } else {
                None
            };
            if let Some(until) = wait {
                let sleep = async {
                    match until {
                        Some(t) => tokio::time::sleep_until(t.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = self.shared.notify.notified() => {}
                    () = sleep => {}
                    r = shutdown.changed() => if r.is_err() { break },
                }
                continue;
            }
            last_send = Some(Instant::now());
            let delay = match self.send_one(None).await {
                Ok(true) => {
                    if failures_in_row > 0 {
                        tracing::info!(
                            failures = failures_in_row,
                            "server reachable again; delivering the spool"
                        );
                    }
                    failures_in_row = 0;
                    continue;
                }
                Ok(false) => return,
                Err(Retry {
                    reason,
                    retry_after,
                }) => {
                    failures_in_row = failures_in_row.saturating_add(1);
                    if failures_in_row == 1 {
                        tracing::warn!(url = %self.client.url(), %reason, "write failed; spooling and retrying with backoff");
                    } else {
                        tracing::debug!(%reason, attempt = failures_in_row, "write failed again");
                    }
                    match retry_after {
                        Some(d) => d.min(MAX_RETRY_AFTER),
                        None => self.backoff(failures_in_row),
                    }
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                r = shutdown.changed() => if r.is_err() { break },
            }
        }
        self.flush_on_shutdown().await;
    }

    /// Sends what it can within `shutdown_flush_s`, one attempt per batch.
    async fn flush_on_shutdown(&mut self) {
        let deadline = Instant::now() + Duration::from_secs_f64(self.cfg.shutdown_flush_s);
        while Instant::now() < deadline {
            match self.send_one(Some(deadline)).await {
                Ok(true) => {}
                Ok(false) | Err(_) => break,
            }
        }
        let left = self.shared.spool().batches();
        if left > 0 {
            tracing::info!(
                batches = left,
                "stopping; undelivered batches stay in the spool for the next start"
            );
        }
    }

    /// Takes and sends one batch. `Ok(true)`: it was delivered or dead-lettered;
    /// `Ok(false)`: nothing to send; `Err`: retry later.
    async fn send_one(&mut self, deadline: Option<Instant>) -> Result<bool, Retry> {
        let max = self.cfg.batch_max_points;
        let batch = match with_spool(&self.shared, move |s| s.take_batch(max)).await {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(false),
            Err(e) => return Err(spool_trouble(e)),
        };
        let outcome = match deadline {
            None => self.client.write(&batch.body).await,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, self.client.write(&batch.body)).await {
                    Ok(o) => o,
                    Err(_) => Outcome::Retry {
                        reason: "shutdown deadline reached".into(),
                        retry_after: None,
                    },
                }
            }
        };
        match outcome {
            Outcome::Committed => {
                // Counted before the spool forgets the batch, so a reader that sees the
                // spool empty sees every point it held as sent (the victoria test read
                // the stats between the two and found the last batch missing).
                let c = &self.shared.counters;
                c.sent_points.fetch_add(batch.points, Ordering::Relaxed);
                c.last_success_ms
                    .store(unix_ns() as u64 / 1_000_000, Ordering::Relaxed);
                let n = batch.records;
                with_spool(&self.shared, move |s| s.ack(n))
                    .await
                    .map_err(spool_trouble)?;
                Ok(true)
            }
            Outcome::Rejected { status, message } => {
                self.dead_letter(batch, status, message).await?;
                Ok(true)
            }
            Outcome::Retry {
                reason,
                retry_after,
            } => {
                self.shared
                    .counters
                    .send_failures
                    .fetch_add(1, Ordering::Relaxed);
                Err(Retry {
                    reason,
                    retry_after,
                })
            }
        }
    }

    /// Keeps a rejected batch in the dead-letter file (durably), then drops it from the spool.
    async fn dead_letter(&self, batch: Batch, status: u16, message: String) -> Result<(), Retry> {
        let path = self.cfg.spool_dir.join(DEAD_LETTER_FILE);
        let url = self.client.url().to_string();
        let one_line = message.replace(['\n', '\r'], " ");
        // Status 0: refused here before sending (it cannot be put in the server's format).
        let why = if status == 0 {
            format!("not sent: {one_line}")
        } else {
            format!("HTTP {status}: {one_line}")
        };
        tracing::error!(
            status,
            message = %one_line,
            points = batch.points,
            dead_letter = %path.display(),
            "a batch was rejected for good; kept it in the dead-letter file"
        );
        let (n, points) = (batch.records, batch.points);
        with_spool(&self.shared, move |s| {
            let io = |source| SpoolError::Io {
                path: path.clone(),
                source,
            };
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io)?;
            let header = format!(
                "# rejected at {} for {url}: {why}\n",
                unix_ns() / 1_000_000_000
            );
            let mut buf = header.into_bytes();
            buf.extend_from_slice(&batch.body);
            f.write_all(&buf).and_then(|()| f.sync_data()).map_err(io)?;
            s.ack(n)
        })
        .await
        .map_err(spool_trouble)?;
        let c = &self.shared.counters;
        c.rejected_batches.fetch_add(1, Ordering::Relaxed);
        c.rejected_points.fetch_add(points, Ordering::Relaxed);
        Ok(())
    }

    /// Exponential backoff with jitter: uniformly in [half, all] of min·2^(n-1), capped.
    fn backoff(&mut self, failures: u32) -> Duration {
        let exp = 2f64.powi(failures.saturating_sub(1).min(60) as i32);
        let base = (self.cfg.backoff_min_s * exp).min(self.cfg.backoff_max_s);
        // xorshift64: jitter needs spread, not cryptographic quality.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_secs_f64(base * (0.5 + 0.5 * unit))
    }
}

/// A failed attempt and what the server asked for.
#[derive(Debug)]
struct Retry {
    reason: String,
    retry_after: Option<Duration>,
}

fn spool_trouble(e: ShipError) -> Retry {
    tracing::error!(error = %e, "spool operation failed; retrying");
    Retry {
        reason: e.to_string(),
        retry_after: None,
    }
}

fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
