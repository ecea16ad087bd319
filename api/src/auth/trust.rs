//! Which client certificates the server trusts: every tenant's CA with its current CRL.
//! The verifier is rebuilt whenever a tenant is created or a certificate revoked, on this
//! instance at once and on the others through Redis pub/sub or the periodic refresh.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use axum::http::HeaderMap;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use sea_orm::{DatabaseConnection, EntityTrait as _};

use crate::auth::tls::{ConnectionInfo, ServerIdentity, TlsConfigHandle};
use crate::config::IpNet;

/// The client certificate a request carries after all checks, with what identifies it.
#[derive(Clone, Debug)]
pub struct PeerCertificate {
    pub der: CertificateDer<'static>,
    pub fingerprint_sha256: String,
    pub serial_hex: String,
}

impl PeerCertificate {
    pub fn from_der(der: CertificateDer<'static>) -> Option<PeerCertificate> {
        let info = crate::auth::pki::inspect_certificate(der.as_ref()).ok()?;
        Some(PeerCertificate {
            der,
            fingerprint_sha256: info.fingerprint_sha256,
            serial_hex: info.serial_hex,
        })
    }
}

struct Current {
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// What the verifier was built from, to skip rebuilding when nothing changed.
    generation: Vec<(uuid::Uuid, i64)>,
}

#[derive(Clone)]
pub struct TrustStore {
    tls: TlsConfigHandle,
    identity: Arc<ServerIdentity>,
    current: Arc<RwLock<Current>>,
}

impl TrustStore {
    pub fn new(tls: TlsConfigHandle, identity: Arc<ServerIdentity>) -> TrustStore {
        TrustStore {
            tls,
            identity,
            current: Arc::new(RwLock::new(Current {
                verifier: None,
                generation: Vec::new(),
            })),
        }
    }

    /// Re-reads every tenant CA and CRL; rebuilds the TLS configuration when they changed.
    /// Returns whether it did.
    pub async fn reload(&self, db: &DatabaseConnection) -> anyhow::Result<bool> {
        let cas = entity::tenant_ca::Entity::find()
            .all(db)
            .await
            .context("reading tenant CAs")?;
        let mut generation: Vec<(uuid::Uuid, i64)> =
            cas.iter().map(|c| (c.tenant_id, c.crl_number)).collect();
        generation.sort();
        if self.read().generation == generation && !generation.is_empty() {
            return Ok(false);
        }
        let verifier = if cas.is_empty() {
            None
        } else {
            let mut roots = RootCertStore::empty();
            let mut crls = Vec::with_capacity(cas.len());
            for ca in &cas {
                let der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes())
                    .with_context(|| format!("CA certificate of tenant {}", ca.tenant_id))?;
                roots
                    .add(der)
                    .with_context(|| format!("CA certificate of tenant {}", ca.tenant_id))?;
                crls.push(CertificateRevocationListDer::from(ca.crl_der.clone()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::new(rustls::crypto::ring::default_provider()),
            )
            .with_crls(crls)
            .allow_unauthenticated()
            // The server trusts many tenant CAs; naming them all to every client leaks the
            // tenant list and makes some clients pick the wrong certificate.
            .clear_root_hint_subjects()
            .build()
            .context("building the client certificate verifier")?;
            Some(verifier)
        };
        let config = server_config(&self.identity, verifier.clone())?;
        self.tls.replace(config);
        let mut current = self.write();
        current.verifier = verifier;
        current.generation = generation;
        tracing::info!(tenants = cas.len(), "client certificate trust reloaded");
        Ok(true)
    }

    /// Verifies a certificate that did not come through our own TLS handshake (proxy mode).
    pub fn verify(&self, der: &CertificateDer<'_>) -> bool {
        let Some(verifier) = self.read().verifier.clone() else {
            return false;
        };
        verifier
            .verify_client_cert(der, &[], UnixTime::now())
            .is_ok()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Current> {
        self.current.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The rustls server configuration: our identity, and client authentication optional so the
/// public endpoints (health, CA, CRL, registration) work without a certificate.
pub fn server_config(
    identity: &ServerIdentity,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
) -> anyhow::Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .context("TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Header nginx sets from `$ssl_client_escaped_cert`.
pub const CLIENT_CERT_HEADER: &str = "x-ssl-client-cert";

/// The client's certificate and address for one request. From a trusted proxy, the
/// certificate comes from `X-SSL-Client-Cert` (and is verified here, since nginx only passes it
/// on) and the address from `X-Forwarded-For`; from anyone else those headers are ignored.
pub fn client_identity(
    conn: &ConnectionInfo,
    headers: &HeaderMap,
    trusted_proxies: &[IpNet],
    trust: &TrustStore,
) -> (Option<PeerCertificate>, IpAddr) {
    let remote = conn.remote_addr.ip();
    if trusted_proxies.iter().any(|net| net.contains(remote)) {
        let ip = forwarded_for(headers).unwrap_or(remote);
        let cert = headers
            .get(CLIENT_CERT_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .and_then(|escaped| {
                let pem = percent_encoding::percent_decode_str(escaped)
                    .decode_utf8()
                    .ok()?;
                CertificateDer::from_pem_slice(pem.as_bytes()).ok()
            })
            .filter(|der| trust.verify(der))
            .and_then(PeerCertificate::from_der);
        return (cert, ip);
    }
    (conn.peer.clone(), remote)
}

/// The client address a trusted proxy reports: the last hop of `X-Forwarded-For`, which is the
/// one our proxy appended (earlier entries are whatever the client claimed).
fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    if let Some(ip) = headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
    {
        return Some(ip);
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .next_back()
}
