//! Coarse shipping (`[ship] interval_s`), the sampler's side: the agent samples at full
//! rate (the Prometheus endpoint and the file sink see every interval) and ships one
//! point per series per window of UTC time.
//!
//! Each tick's points get their `gpu_s` first (per interval, by
//! [`inferwatt_core::gpu_time`]: after a fold the interval's shares are gone), then join
//! the open [`ShipWindow`]. Closed windows wait in `unspooled` until the spool has them.
//! The open window and the closed ones not yet spooled go into the state file in the
//! same save as the tick's `pending` points ([`CoarseShip::wal`]), before any sink gets
//! the tick. After a kill, [`owed`] hands the spool those windows (a re-sent one is
//! identical, so the collector drops it as a duplicate) and `pending` to the file sink
//! only: a fine point and a window's folded point can share a timestamp with different
//! values, which the collector would keep first-come and drop the other.

use inferwatt_core::lineproto::{encode, Point};
use inferwatt_ship::{ShipHandle, ShipWindow};

use super::AgentState;

/// Most bytes of closed windows kept for a spool that refuses them; beyond it they are
/// dropped with an error (the file sink still has every interval).
pub const MAX_UNSPOOLED_BYTES: usize = 1 << 20;

/// The open window and the closed windows not yet spooled.
#[derive(Debug)]
pub struct CoarseShip {
    interval_s: f64,
    window: ShipWindow,
    /// Closed windows' points not yet in the spool, as line protocol, oldest first.
    unspooled: String,
}

impl CoarseShip {
    /// Windows of `interval_s` seconds (validated by the config).
    pub fn new(interval_s: f64) -> CoarseShip {
        CoarseShip {
            interval_s,
            window: ShipWindow::new(interval_s),
            unspooled: String::new(),
        }
    }

    /// The window length, in seconds.
    pub fn interval_s(&self) -> f64 {
        self.interval_s
    }

    /// Adds `gpu_s` to one tick's `model_energy` points, in place (before they are
    /// encoded for the file sink and the state, so every copy agrees).
    pub fn prepare(points: &mut [Point]) {
        inferwatt_core::gpu_time::set_gpu_seconds(points);
    }

    /// Adds one tick's points (prepared) to the open window; a closed window joins the
    /// unspooled ones. The tick that carries the agent's downtime is a window of its own:
    /// folded with the intervals after it, its `gap` label (and its seconds as not
    /// measured, in data quality) would give way to theirs.
    pub fn push(&mut self, points: Vec<Point>, downtime: bool) {
        let closed = if downtime {
            self.window.push_alone(points)
        } else {
            self.window.push(points)
        };
        self.keep_points(&closed);
    }

    /// Closes the open window (at shutdown): it joins the unspooled ones.
    pub fn close(&mut self) {
        let closed = self.window.flush();
        self.keep_points(&closed);
    }

    /// What the state file keeps: the open window's folded points and the closed windows
    /// not yet spooled, as line protocol.
    pub fn wal(&self) -> (Option<String>, Option<String>) {
        let open = match encode(&self.window.snapshot()) {
            Ok(body) if !body.is_empty() => Some(body),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode the open shipping window for the state");
                None
            }
        };
        let closed = (!self.unspooled.is_empty()).then(|| self.unspooled.clone());
        (open, closed)
    }

    /// Hands the closed windows to the spool; what it refuses is kept for the next tick.
    pub fn spool(&mut self, handle: &ShipHandle) {
        if self.unspooled.is_empty() {
            return;
        }
        match handle.enqueue_encoded(&self.unspooled) {
            Ok(()) => self.unspooled.clear(),
            Err(e) => {
                tracing::warn!(error = %e, bytes = self.unspooled.len(), "cannot spool the closed shipping window; retrying next interval");
                self.limit();
            }
        }
    }

    /// Keeps line protocol owed to the spool (a previous run's windows that the spool
    /// refused at start), to be spooled with the next closed window.
    pub fn keep(&mut self, body: &str) {
        self.unspooled.push_str(body);
        if !body.is_empty() && !body.ends_with('\n') {
            self.unspooled.push('\n');
        }
        self.limit();
    }

    fn keep_points(&mut self, points: &[Point]) {
        if points.is_empty() {
            return;
        }
        match encode(points) {
            Ok(body) => self.keep(&body),
            Err(e) => tracing::warn!(error = %e, "cannot encode a closed shipping window"),
        }
    }

    fn limit(&mut self) {
        if self.unspooled.len() > MAX_UNSPOOLED_BYTES {
            tracing::error!(
                bytes = self.unspooled.len(),
                "the spool keeps refusing the closed shipping windows; dropping them (the file sink has every interval)"
            );
            self.unspooled.clear();
        }
    }
}

/// What the previous run's state still owes the sinks after a stop or a kill.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Owed {
    /// The last interval, for the file sink (which checks its own tail).
    pub file: Option<String>,
    /// Batches for the spool, oldest first.
    pub spool: Vec<String>,
}

/// Takes from `state` what the previous run may not have delivered: its last interval
/// for the file sink; for the spool, that interval if the run shipped every interval,
/// else its closed windows not yet spooled and its open window as it stood (its
/// timestamp is its own latest point; the rest of that window, sampled after the
/// restart, gets later timestamps, so no key collides).
pub fn owed(state: &mut AgentState) -> Owed {
    let file = state.pending.take();
    let mut spool = Vec::new();
    // Taken as well: a run that ships every interval never sets it, and a stale value
    // would keep its own last interval from the spool after its next kill.
    if state.ship_interval_s.take().is_none() {
        spool.extend(file.clone());
    }
    spool.extend(state.ship_closed.take());
    spool.extend(state.ship_open.take());
    spool.retain(|b| !b.is_empty());
    Owed { file, spool }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferwatt_core::lineproto::{decode, Precision};

    const S: i64 = 1_000_000_000;
    const T0: i64 = 1_796_083_200 * S;

    fn tick(ts: i64, a_j: f64, b_j: f64) -> Vec<Point> {
        let row = |model: &str, j: f64| {
            Point::new("model_energy")
                .tag("host", "h")
                .tag("gpu_uuid", "g")
                .tag("model", model)
                .float("active_j", j)
                .float("idle_j", 0.0)
                .float("interval_s", 1.0)
                .at(ts)
        };
        vec![
            Point::new("gpu")
                .tag("host", "h")
                .tag("gpu_uuid", "g")
                .float("energy_j", a_j + b_j)
                .float("interval_s", 1.0)
                .string("source", "counter")
                .at(ts),
            row("a", a_j),
            row("b", b_j),
        ]
    }

    fn points(body: &str) -> Vec<Point> {
        decode(body.as_bytes(), Precision::Nanoseconds, 0).expect("line protocol")
    }

    #[test]
    fn gpu_time_is_per_interval_and_survives_the_fold() {
        let mut c = CoarseShip::new(10.0);
        // a has all of the first interval's energy, b all of the second's: 1 s each.
        // From the window's sums (3 J and 1 J) it would be 1.5 s and 0.5 s.
        for (k, (a, b)) in [(3.0, 0.0), (0.0, 1.0)].into_iter().enumerate() {
            let mut pts = tick(T0 + (k as i64 + 1) * S, a, b);
            CoarseShip::prepare(&mut pts);
            c.push(pts, false);
        }
        c.close();
        let (open, closed) = c.wal();
        assert!(open.is_none());
        let pts = points(&closed.expect("the closed window"));
        let gpu_s = |m: &str| {
            pts.iter()
                .find(|p| p.tag_value("model") == Some(m))
                .and_then(|p| p.field_f64("gpu_s"))
        };
        assert_eq!(gpu_s("a"), Some(1.0));
        assert_eq!(gpu_s("b"), Some(1.0));
    }

    #[test]
    fn the_state_holds_the_open_window_and_the_closed_one_until_spooled() {
        let mut c = CoarseShip::new(5.0);
        c.push(tick(T0 + S, 1.0, 1.0), false);
        let (open, closed) = c.wal();
        assert!(open.is_some() && closed.is_none());
        c.push(tick(T0 + 6 * S, 1.0, 1.0), false);
        let (open, closed) = c.wal();
        assert_eq!(points(&open.expect("open")).len(), 3);
        assert_eq!(points(&closed.expect("closed")).len(), 3);
    }

    #[test]
    fn the_downtime_is_a_window_of_its_own() {
        let mut c = CoarseShip::new(60.0);
        c.push(tick(T0 + S, 1.0, 1.0), false);
        c.push(tick(T0 + 5 * S, 1.0, 1.0), true);
        let (open, closed) = c.wal();
        assert!(open.is_none());
        let ts: Vec<i64> = points(&closed.expect("closed"))
            .iter()
            .filter(|p| p.measurement == "gpu")
            .filter_map(|p| p.timestamp)
            .collect();
        assert_eq!(ts, vec![T0 + S, T0 + 5 * S]);
    }

    #[test]
    fn a_restart_spools_windows_and_never_a_coarse_runs_fine_interval() {
        let coarse = AgentState {
            pending: Some("fine\n".into()),
            ship_interval_s: Some(60.0),
            ship_open: Some("open\n".into()),
            ship_closed: Some("closed\n".into()),
            ..AgentState::default()
        };
        let mut s = coarse.clone();
        assert_eq!(
            owed(&mut s),
            Owed {
                file: Some("fine\n".into()),
                spool: vec!["closed\n".into(), "open\n".into()],
            }
        );
        assert_eq!(
            (s.pending, s.ship_interval_s, s.ship_open, s.ship_closed),
            (None, None, None, None),
            "nothing of a coarse run is left for a run that ships every interval"
        );
        // A run that shipped every interval: its last one goes to the spool as well.
        let mut fine = AgentState {
            pending: Some("fine\n".into()),
            ..AgentState::default()
        };
        assert_eq!(
            owed(&mut fine),
            Owed {
                file: Some("fine\n".into()),
                spool: vec!["fine\n".into()],
            }
        );
        assert_eq!(owed(&mut AgentState::default()), Owed::default());
    }

    #[test]
    fn what_the_spool_refuses_is_bounded() {
        let mut c = CoarseShip::new(60.0);
        c.keep(&"x".repeat(MAX_UNSPOOLED_BYTES - 1));
        assert!(c.wal().1.is_some());
        c.keep("y");
        assert!(c.wal().1.is_none(), "dropped past the bound");
    }
}
