//! Running the collector: opens the store, starts retention, binds the listener (plain
//! TCP, or TLS with rustls and the `ring` provider when `[tls]` is set) and serves
//! [`crate::api::app`] until Ctrl-C or SIGTERM, finishing requests in flight; with
//! `[forward]`, runs the shipper that forwards accepted points.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::api::{app, AppState};
use crate::config::{Config, TlsConfig};
use crate::store::{retention, Store, StoreError, VictoriaStore};

/// Why the server cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on '{addr}': {source}; change 'listen' in the config or stop what uses that port")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read TLS {what} '{path}': {message}; check 'tls.{key}' in the config")]
    TlsFile {
        what: &'static str,
        key: &'static str,
        path: String,
        message: String,
    },
    #[error("TLS configuration refused: {0}; check that 'tls.key_file' matches 'tls.cert_file'")]
    Tls(#[from] rustls::Error),
    #[error("[forward]: {0}")]
    Forward(#[from] inferwatt_ship::ShipError),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Builds the rustls acceptor from PEM files.
pub fn tls_acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, ServeError> {
    let certs = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServeError::TlsFile {
            what: "certificate",
            key: "cert_file",
            path: tls.cert_file.display().to_string(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(ServeError::TlsFile {
            what: "certificate",
            key: "cert_file",
            path: tls.cert_file.display().to_string(),
            message: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|e| ServeError::TlsFile {
        what: "private key",
        key: "key_file",
        path: tls.key_file.display().to_string(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A listener yielding TLS streams; handshakes run in their own tasks so a slow client
/// cannot hold up others.
struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task ended: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Serves `state` on an already bound listener until `shutdown` completes.
pub async fn serve_on(
    tcp: TcpListener,
    state: AppState,
    tls: Option<TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let router = app(state);
    match tls {
        None => {
            axum::serve(tcp, router)
                .with_graceful_shutdown(shutdown)
                .await?
        }
        Some(acceptor) => {
            axum::serve(TlsListener::new(tcp, acceptor)?, router)
                .with_graceful_shutdown(shutdown)
                .await?
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// Opens the store at `config.db_path`.
pub fn open_store(db_path: &Path) -> Result<Arc<Store>, ServeError> {
    Ok(Arc::new(Store::open(db_path)?))
}

/// The VictoriaMetrics backend of `config`, if that is its backend: built on the current
/// runtime, its dedup flag checked (see [`VictoriaStore::check_dedup`]).
pub async fn open_victoria(config: &Config) -> Result<Option<Arc<VictoriaStore>>, ServeError> {
    let Some(cfg) = config.store.victoria() else {
        return Ok(None);
    };
    let vm = VictoriaStore::new(&cfg, tokio::runtime::Handle::current())?;
    vm.check_dedup().await?;
    Ok(Some(Arc::new(vm)))
}

/// `inferwatt-collector serve`: runs until Ctrl-C or SIGTERM.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let victoria = open_victoria(&config).await?;
    // With VictoriaMetrics the collector keeps nothing on disk: an in-memory store only
    // answers token lookups (none: tokens come from the config's [[tokens]]).
    let store = match &victoria {
        Some(_) => Arc::new(Store::open_in_memory()?),
        None => open_store(&config.db_path)?,
    };
    let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
    let tcp = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let local = tcp.local_addr()?;
    let retention_task = victoria.is_none().then(|| {
        tokio::spawn(retention::run_periodically(
            store.clone(),
            config.raw_retention_days,
            config.rollup_retention_days,
            Duration::from_secs(config.retention_interval_s),
        ))
    });
    match &config.store.victoria() {
        Some(v) => tracing::info!(
            listen = %local,
            tls = tls.is_some(),
            write_url = %v.write_url,
            query_url = %v.query_url,
            "collector listening, storing in VictoriaMetrics"
        ),
        None => tracing::info!(
            listen = %local,
            tls = tls.is_some(),
            db = %config.db_path.display(),
            "collector listening"
        ),
    }
    let forward = config.forward.clone();
    let mut state = AppState::new(config, store);
    if let Some(v) = victoria {
        state = state.with_victoria(v);
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut forward_task = None;
    if let Some(cfg) = forward {
        let (shipper, handle) = inferwatt_ship::Shipper::open(cfg)?;
        state = state.with_forward(handle);
        forward_task = Some(tokio::spawn(shipper.run(stop_rx)));
    }
    let result = serve_on(tcp, state, tls, shutdown_signal()).await;
    if let Some(task) = retention_task {
        task.abort();
    }
    // The shipper flushes for at most `shutdown_flush_s`, then leaves the rest spooled.
    let _ = stop_tx.send(true);
    if let Some(task) = forward_task {
        let _ = task.await;
    }
    result
}
