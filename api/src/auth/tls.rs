//! The HTTPS listener: rustls server configuration, the accept loop, and the per-connection
//! facts (peer address, client certificate chain) every request carries.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::ExposeSecret as _;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::auth::trust::PeerCertificate;
use crate::config::Config;

/// What the TLS handshake established, inserted into every request of the connection.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    pub remote_addr: SocketAddr,
    /// The client certificate, when the client presented one that verified: parsed and
    /// fingerprinted once per connection, not per request.
    pub peer: Option<PeerCertificate>,
}

/// The server's certificate and key, loaded once at start.
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl ServerIdentity {
    /// Uses the configured PEM files, or a self-signed localhost certificate kept in
    /// `<data_dir>/tls/` (generated on first start, reused after).
    pub fn load(config: &Config) -> anyhow::Result<ServerIdentity> {
        let (cert_path, key_path) = match &config.tls {
            Some(files) => (files.cert.clone(), files.key.clone()),
            None => {
                let dir = config.data_dir.join("tls");
                let cert = dir.join("server.crt");
                let key = dir.join("server.key");
                if !cert.exists() || !key.exists() {
                    generate_self_signed(&dir, &cert, &key)?;
                    tracing::info!(cert = %cert.display(), "generated a self-signed localhost TLS certificate");
                }
                (cert, key)
            }
        };
        let chain = CertificateDer::pem_file_iter(&cert_path)
            .with_context(|| format!("reading TLS certificate {}", cert_path.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing TLS certificate {}", cert_path.display()))?;
        if chain.is_empty() {
            anyhow::bail!(
                "TLS certificate {} holds no certificate",
                cert_path.display()
            );
        }
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .with_context(|| format!("reading TLS key {}", key_path.display()))?;
        Ok(ServerIdentity { chain, key })
    }
}

fn generate_self_signed(dir: &Path, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let (cert_pem, key_pem) = crate::auth::pki::self_signed_server_certificate()
        .context("generating a self-signed certificate")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::fsutil::write_private(key, key_pem.expose_secret().as_bytes())?;
    std::fs::write(cert, cert_pem).with_context(|| format!("writing {}", cert.display()))?;
    Ok(())
}

/// The TLS configuration new connections use; replaced at run time when trust changes.
#[derive(Clone)]
pub struct TlsConfigHandle(Arc<RwLock<Arc<ServerConfig>>>);

impl TlsConfigHandle {
    pub fn new(config: ServerConfig) -> Self {
        TlsConfigHandle(Arc::new(RwLock::new(Arc::new(config))))
    }
    pub fn current(&self) -> Arc<ServerConfig> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
    pub fn replace(&self, config: ServerConfig) {
        match self.0.write() {
            Ok(mut guard) => *guard = Arc::new(config),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(config),
        }
    }
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TLS connections until `shutdown` resolves, then lets in-flight requests finish
/// for at most `grace` before returning.
pub async fn serve(
    listener: TcpListener,
    tls: TlsConfigHandle,
    router: Router,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote_addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(tls.current());
        let router = router.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%remote_addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote_addr, "TLS handshake timed out");
                    return;
                }
            };
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| PeerCertificate::from_der(leaf.clone().into_owned()));
            let info = ConnectionInfo { remote_addr, peer };
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(info.clone());
                router.clone().oneshot(req)
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%remote_addr, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "shutting down: finishing in-flight requests"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!(grace_seconds = grace.as_secs(), "grace period over; closing remaining connections"),
    }
}
