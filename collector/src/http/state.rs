//! What every handler shares: [`AppState`] (config, store, authenticator, metrics,
//! forwarding) and the read authorisation and factors choice of the report and series
//! routes.

use std::sync::Arc;

use inferwatt_ship::ShipHandle;

use super::error::ApiError;
use crate::config::{AuthMode, Config};
use crate::http::auth::{AuthError, Authenticator};
use crate::metrics::Metrics;
use crate::reporting::FactorsChoice;
use crate::store::{ReportStore, Store, VictoriaStore};

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// The SQLite store (with the VictoriaMetrics backend: an in-memory one, holding no
    /// points and no tokens; tokens then come from the config).
    pub store: Arc<Store>,
    /// `[store] backend = "victoriametrics"`: where points go and reports read.
    pub victoria: Option<Arc<VictoriaStore>>,
    pub auth: Arc<Authenticator>,
    pub metrics: Arc<Metrics>,
    /// `[forward]`: the spool accepted points are enqueued to after their write commits.
    pub forward: Option<ShipHandle>,
    /// Permits for writes in progress (`max_concurrent_writes`).
    pub write_permits: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// Read access to reports and series: a valid token when `report_auth` asks for one.
    pub fn authorize_read(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        if !self.config.report_needs_token() {
            return Ok(());
        }
        self.auth
            .authenticate(authorization, &self.store)
            .map(|_| ())
            .map_err(|e| match e {
                AuthError::Store(e) => ApiError::Internal(e.to_string()),
                e => ApiError::Unauthorized(e),
            })
    }

    /// Where reports read: VictoriaMetrics when configured, else the SQLite store.
    pub fn reports(&self) -> &dyn ReportStore {
        match &self.victoria {
            Some(v) => v.as_ref(),
            None => self.store.as_ref(),
        }
    }

    /// This state, storing in and reporting from VictoriaMetrics.
    pub fn with_victoria(mut self, v: Arc<VictoriaStore>) -> AppState {
        self.victoria = Some(v);
        self
    }

    /// The factors reports use: the config's `[factors]`, else the built-in defaults.
    pub fn factors_choice(&self) -> FactorsChoice {
        match &self.config.factors {
            Some(f) => FactorsChoice::from_config(f.clone(), &self.config.base_dir),
            None => FactorsChoice::builtin(),
        }
    }
    /// State over an opened store; logs loudly when authentication is off.
    pub fn new(config: Config, store: Arc<Store>) -> AppState {
        if config.auth == AuthMode::None {
            tracing::warn!(
                listen = %config.listen,
                "AUTHENTICATION IS OFF (auth = \"none\"): anyone who can reach this address can write any site's data; use it for loopback demos only"
            );
        }
        let permits = config.max_concurrent_writes.max(1);
        AppState {
            auth: Arc::new(Authenticator::new(&config)),
            config: Arc::new(config),
            store,
            victoria: None,
            metrics: Arc::new(Metrics::default()),
            forward: None,
            write_permits: Arc::new(tokio::sync::Semaphore::new(permits)),
        }
    }

    /// This state, forwarding accepted points through `handle` (see `[forward]`).
    pub fn with_forward(mut self, handle: ShipHandle) -> AppState {
        self.forward = Some(handle);
        self
    }

    /// Enqueues the points of a committed write for forwarding (blocking: the spool
    /// fsyncs). Duplicates are forwarded again, which InfluxDB and VictoriaMetrics store
    /// once. A spool failure is logged, not answered: the points are already stored here.
    pub fn forward_points(&self, points: &[inferwatt_core::lineproto::Point]) {
        let Some(handle) = &self.forward else {
            return;
        };
        if let Err(e) = handle.enqueue(points) {
            tracing::error!(points = points.len(), error = %e, "cannot spool points for forwarding; they are stored here but will not be forwarded");
        }
    }
}
