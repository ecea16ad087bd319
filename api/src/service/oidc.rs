//! Federated login of city staff through their municipality's identity provider (OpenID
//! Connect, authorization code flow with PKCE S256, `state` and `nonce`). The provider
//! replaces the password, never the certificate: the flow must run over a TLS connection that
//! carries the client certificate of the user linked to the provider's subject, from start to
//! callback, and the result is the same certificate-bound login session as `login`.
//!
//! A tenant has at most one provider (`tenant_idps`, client secret sealed with the master key
//! like CA keys). Users are linked to subjects by a CITY_ADMIN, or at their first federated
//! login by a verified e-mail address when the tenant allows it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdTokenClaims, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    TokenResponse as _,
};
use sea_orm::sea_query::{Expr, Func};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, DatabaseConnection, EntityTrait as _,
    ExprTrait as _, QueryFilter as _, QuerySelect as _,
};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use entity::kinds::{AccountStatus, AuditOutcome, CertificateStatus, Role};
use entity::tenant_ca::SealedKey;
use entity::{external_identity, facility, tenant, tenant_idp, user};

use crate::auth::pki::MasterKey;
use crate::auth::session::NewSession;
use crate::auth::trust::PeerCertificate;
use crate::config::Config;
use crate::error::{AppError, AppResult};
use crate::service::audit::{self, Event, Origin};
use crate::service::{certificates, now, tenants};
use crate::state::AppState;

/// How long a started login may take at the provider.
pub const FLOW_TTL: Duration = Duration::from_secs(600);

/// How long a provider's discovery document and keys are reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);

const MAX_SUBJECT: usize = 255;

/// A tenant's provider as the operator sets it (`renkei tenant oidc set`).
pub struct IdpConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub allowed_roles: Vec<Role>,
    pub link_by_email: bool,
}

impl std::fmt::Debug for IdpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("allowed_roles", &self.allowed_roles)
            .field("link_by_email", &self.link_by_email)
            .finish_non_exhaustive()
    }
}

/// `CITY_ADMIN,FACILITY_ADMIN` → roles. The platform operator never logs in this way.
pub fn parse_roles(list: &str) -> AppResult<Vec<Role>> {
    let mut roles = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let role: Role = serde_json::from_value(serde_json::Value::String(name.to_owned()))
            .map_err(|_| {
                AppError::bad_input(
                    "allowedRoles",
                    format!("'{name}' is not one of CITY_ADMIN, FACILITY_ADMIN, STAFF"),
                )
            })?;
        if role == Role::PlatformOperator {
            return Err(AppError::bad_input(
                "allowedRoles",
                "the platform operator cannot use federated login",
            ));
        }
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    if roles.is_empty() {
        return Err(AppError::bad_input(
            "allowedRoles",
            "name at least one role, e.g. CITY_ADMIN",
        ));
    }
    Ok(roles)
}

fn role_name(role: Role) -> String {
    match serde_json::to_value(role) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{role:?}"),
    }
}

pub fn roles_of(idp: &tenant_idp::Model) -> Vec<Role> {
    parse_roles(&idp.allowed_roles).unwrap_or_default()
}

fn validate_issuer(issuer: &str) -> AppResult<IssuerUrl> {
    let url = IssuerUrl::new(issuer.to_owned())
        .map_err(|_| AppError::bad_input("issuer", "the issuer must be a URL"))?;
    if url.url().scheme() != "https" {
        return Err(AppError::bad_input(
            "issuer",
            "the issuer must be an https:// URL",
        ));
    }
    Ok(url)
}

/// Sets (or replaces) the tenant's provider. The secret is sealed with the master key, bound
/// to the tenant.
pub async fn configure(
    db: &DatabaseConnection,
    master_key: &MasterKey,
    tenant_slug: &str,
    config: IdpConfig,
) -> AppResult<tenant_idp::Model> {
    let tenant = tenants::by_slug(db, tenant_slug)
        .await?
        .ok_or(AppError::NotFound)?;
    validate_issuer(&config.issuer)?;
    let client_id = config.client_id.trim();
    if client_id.is_empty() || client_id.len() > 255 {
        return Err(AppError::bad_input(
            "clientId",
            "the client ID must be 1 to 255 characters",
        ));
    }
    if config.client_secret.expose_secret().is_empty() {
        return Err(AppError::bad_input(
            "clientSecret",
            "the client secret is empty",
        ));
    }
    if config.allowed_roles.is_empty() || config.allowed_roles.contains(&Role::PlatformOperator) {
        return Err(AppError::bad_input(
            "allowedRoles",
            "name CITY_ADMIN, FACILITY_ADMIN and/or STAFF",
        ));
    }
    let sealed = master_key
        .encrypt(
            config.client_secret.expose_secret().as_bytes(),
            &secret_aad(tenant.id),
        )
        .map_err(|e| AppError::internal(anyhow::anyhow!("sealing the client secret: {e:?}")))?;
    let roles: Vec<String> = config.allowed_roles.iter().map(|r| role_name(*r)).collect();
    let model = tenant_idp::Model {
        tenant_id: tenant.id,
        issuer: config.issuer.clone(),
        client_id: client_id.to_owned(),
        client_secret_sealed: SealedKey(sealed),
        allowed_roles: roles.join(","),
        link_by_email: config.link_by_email,
        updated_at: now(),
    };
    let txn = crate::db::begin_write(db).await?;
    let existing = tenant_idp::Entity::find_by_id(tenant.id).one(&txn).await?;
    let active: tenant_idp::ActiveModel = model.clone().into();
    let saved = if existing.is_some() {
        active.reset_all().update(&txn).await?
    } else {
        active.insert(&txn).await?
    };
    let event = Event::new(tenant.id, "tenant.idp_set", AuditOutcome::Allowed)
        .target("tenant", tenant.id)
        .detail("issuer", config.issuer)
        .detail("clientId", client_id)
        .detail("allowedRoles", roles.join(","))
        .detail("linkByEmail", config.link_by_email);
    audit::record(&txn, event).await?;
    txn.commit().await?;
    Ok(saved)
}

/// Removes the tenant's provider and every link to it. False when it had none.
pub async fn remove(db: &DatabaseConnection, tenant_slug: &str) -> AppResult<bool> {
    let tenant = tenants::by_slug(db, tenant_slug)
        .await?
        .ok_or(AppError::NotFound)?;
    let txn = crate::db::begin_write(db).await?;
    let Some(idp) = tenant_idp::Entity::find_by_id(tenant.id).one(&txn).await? else {
        txn.rollback().await?;
        return Ok(false);
    };
    let links = external_identity::Entity::delete_many()
        .filter(external_identity::Column::TenantId.eq(tenant.id))
        .filter(external_identity::Column::Issuer.eq(&idp.issuer))
        .exec(&txn)
        .await?;
    tenant_idp::Entity::delete_by_id(tenant.id)
        .exec(&txn)
        .await?;
    let event = Event::new(tenant.id, "tenant.idp_remove", AuditOutcome::Allowed)
        .target("tenant", tenant.id)
        .detail("issuer", idp.issuer)
        .detail("linksRemoved", links.rows_affected);
    audit::record(&txn, event).await?;
    txn.commit().await?;
    Ok(true)
}

pub async fn idp_of(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
) -> AppResult<Option<tenant_idp::Model>> {
    Ok(tenant_idp::Entity::find_by_id(tenant_id).one(db).await?)
}

fn secret_aad(tenant_id: Uuid) -> Vec<u8> {
    let mut aad = b"renkei-oidc-client-secret:".to_vec();
    aad.extend_from_slice(tenant_id.as_bytes());
    aad
}

fn client_secret(master_key: &MasterKey, idp: &tenant_idp::Model) -> AppResult<ClientSecret> {
    let plain = master_key
        .decrypt(&idp.client_secret_sealed.0, &secret_aad(idp.tenant_id))
        .map_err(|e| AppError::internal(anyhow::anyhow!("opening the client secret: {e:?}")))?;
    let text = String::from_utf8(plain.expose_secret().to_vec())
        .map_err(|_| AppError::internal(anyhow::anyhow!("client secret is not UTF-8")))?;
    Ok(ClientSecret::new(text))
}

// ---------------------------------------------------------------------------------------------
// Account links.

pub async fn links_of(
    db: &impl ConnectionTrait,
    user_id: Uuid,
) -> AppResult<Vec<external_identity::Model>> {
    Ok(external_identity::Entity::find()
        .filter(external_identity::Column::UserId.eq(user_id))
        .all(db)
        .await?)
}

/// Who may link: the user must hold a role the tenant's provider accepts.
fn check_linkable(idp: &tenant_idp::Model, user: &user::Model) -> AppResult<()> {
    if !roles_of(idp).contains(&user.role) {
        return Err(AppError::bad_input(
            "userId",
            format!(
                "{} users cannot use federated login here (allowed: {})",
                role_name(user.role),
                idp.allowed_roles
            ),
        ));
    }
    Ok(())
}

async fn insert_link(
    db: &impl ConnectionTrait,
    idp: &tenant_idp::Model,
    user: &user::Model,
    subject: &str,
    method: &str,
    by: Option<Uuid>,
) -> AppResult<external_identity::Model> {
    let taken = external_identity::Entity::find()
        .filter(external_identity::Column::TenantId.eq(idp.tenant_id))
        .filter(external_identity::Column::Issuer.eq(&idp.issuer))
        .filter(
            sea_orm::Condition::any()
                .add(external_identity::Column::Subject.eq(subject))
                .add(external_identity::Column::UserId.eq(user.id)),
        )
        .one(db)
        .await?;
    if let Some(link) = taken {
        return Err(AppError::Conflict(if link.user_id == user.id {
            "the user is already linked to an account of this provider".into()
        } else {
            "this subject is already linked to another user".into()
        }));
    }
    let model = external_identity::Model {
        id: Uuid::now_v7(),
        tenant_id: idp.tenant_id,
        user_id: user.id,
        issuer: idp.issuer.clone(),
        subject: subject.to_owned(),
        method: method.to_owned(),
        linked_by: by,
        linked_at: now(),
    };
    // The unique indexes decide a race between two linkers.
    external_identity::ActiveModel::from(model.clone())
        .insert(db)
        .await
        .map_err(|e| match AppError::from(e) {
            AppError::Internal(_) => {
                AppError::Conflict("this subject or user was linked meanwhile".into())
            }
            other => other,
        })?;
    Ok(model)
}

/// A CITY_ADMIN links `user_id` of its tenant to `subject` at the tenant's provider.
pub async fn link(
    db: &DatabaseConnection,
    origin: &Origin,
    tenant_id: Uuid,
    user_id: Uuid,
    issuer: &str,
    subject: &str,
) -> AppResult<external_identity::Model> {
    let user = crate::service::users::in_tenant(db, tenant_id, user_id).await?;
    let Some(idp) = idp_of(db, tenant_id).await? else {
        return Err(AppError::bad_input(
            "issuer",
            "this tenant has no identity provider; the operator sets one with `renkei tenant oidc set`",
        ));
    };
    if issuer.trim() != idp.issuer {
        return Err(AppError::bad_input(
            "issuer",
            format!("the tenant's identity provider is {}", idp.issuer),
        ));
    }
    let subject = subject.trim();
    if subject.is_empty() || subject.chars().count() > MAX_SUBJECT {
        return Err(AppError::bad_input(
            "subject",
            "the subject must be 1 to 255 characters",
        ));
    }
    check_linkable(&idp, &user)?;
    let txn = crate::db::begin_write(db).await?;
    let link = insert_link(&txn, &idp, &user, subject, "ADMIN", origin.actor_id).await?;
    let event = Event::new(tenant_id, "identity.link", AuditOutcome::Allowed)
        .by(origin)
        .target("user", user.id)
        .detail("issuer", idp.issuer.clone())
        .detail("method", "ADMIN");
    audit::record(&txn, event).await?;
    txn.commit().await?;
    Ok(link)
}

/// Removes the link of `user_id` to `issuer`.
pub async fn unlink(
    db: &DatabaseConnection,
    origin: &Origin,
    tenant_id: Uuid,
    user_id: Uuid,
    issuer: &str,
) -> AppResult<()> {
    let user = crate::service::users::in_tenant(db, tenant_id, user_id).await?;
    let txn = crate::db::begin_write(db).await?;
    let removed = external_identity::Entity::delete_many()
        .filter(external_identity::Column::TenantId.eq(tenant_id))
        .filter(external_identity::Column::UserId.eq(user.id))
        .filter(external_identity::Column::Issuer.eq(issuer.trim()))
        .exec(&txn)
        .await?;
    if removed.rows_affected == 0 {
        txn.rollback().await?;
        return Err(AppError::NotFound);
    }
    let event = Event::new(tenant_id, "identity.unlink", AuditOutcome::Allowed)
        .by(origin)
        .target("user", user.id)
        .detail("issuer", issuer.trim());
    audit::record(&txn, event).await?;
    txn.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The provider client: discovery cached per issuer, our own HTTP client.

/// A provider's metadata and keys, and when they were fetched.
type Discovered = (Instant, Arc<CoreProviderMetadata>);

/// Talks to identity providers: never follows redirects (a provider cannot bounce us to an
/// internal address), times out, trusts the public roots plus `oidc_ca_file`.
#[derive(Clone)]
pub struct Providers {
    http: reqwest::Client,
    discovered: Arc<parking_lot::Mutex<HashMap<String, Discovered>>>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers").finish_non_exhaustive()
    }
}

impl Providers {
    pub fn new(config: &Config) -> anyhow::Result<Providers> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.oidc_timeout)
            .connect_timeout(config.oidc_timeout)
            .https_only(false)
            .user_agent(concat!("renkei/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.oidc_ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("reading oidc_ca_file {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                anyhow::anyhow!(
                    "oidc_ca_file {} holds no PEM certificate: {e}",
                    path.display()
                )
            })?;
            if certs.is_empty() {
                anyhow::bail!("oidc_ca_file {} holds no PEM certificate", path.display());
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Providers {
            http: builder.build()?,
            discovered: Arc::default(),
        })
    }

    /// The provider's metadata and keys; `fresh` skips the cache (after a key rotation).
    pub async fn discover(
        &self,
        issuer: &str,
        fresh: bool,
    ) -> AppResult<Arc<CoreProviderMetadata>> {
        if !fresh
            && let Some((at, metadata)) = self.discovered.lock().get(issuer)
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(metadata.clone());
        }
        let url = validate_issuer(issuer)?;
        let metadata = CoreProviderMetadata::discover_async(url, &self.http)
            .await
            .map_err(|e| {
                AppError::unavailable(anyhow::anyhow!(
                    "OpenID discovery of {issuer} failed: {}",
                    error_chain(&e)
                ))
            })?;
        let metadata = Arc::new(metadata);
        self.discovered
            .lock()
            .insert(issuer.to_owned(), (Instant::now(), metadata.clone()));
        Ok(metadata)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// The flow.

/// Why a federated login failed: the audit's `reason` and the front-end's `oidc_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    RateLimited,
    BadState,
    IdpError,
    CodeRejected,
    BadToken,
    WrongIssuer,
    WrongAudience,
    ExpiredToken,
    BadNonce,
    UnlinkedSubject,
    NoCertificate,
    CertificateMismatch,
    RoleNotAllowed,
    Suspended,
    Locked,
    /// The provider or our own stores could not answer.
    ServiceError,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::RateLimited => "rate_limited",
            Failure::BadState => "bad_state",
            Failure::IdpError => "idp_error",
            Failure::CodeRejected => "code_rejected",
            Failure::BadToken => "bad_token",
            Failure::WrongIssuer => "wrong_issuer",
            Failure::WrongAudience => "wrong_audience",
            Failure::ExpiredToken => "expired_token",
            Failure::BadNonce => "bad_nonce",
            Failure::UnlinkedSubject => "unlinked_subject",
            Failure::NoCertificate => "no_certificate",
            Failure::CertificateMismatch => "certificate_mismatch",
            Failure::RoleNotAllowed => "role_not_allowed",
            Failure::Suspended => "suspended",
            Failure::Locked => "locked",
            Failure::ServiceError => "service_error",
        }
    }
}

/// What the start of a flow leaves in the session store, under its `state`.
#[derive(Serialize, Deserialize)]
struct Pending {
    tenant_id: Uuid,
    issuer: String,
    nonce: String,
    pkce_verifier: String,
    cert_fingerprint: String,
    redirect_uri: String,
}

fn flow_key(state: &str) -> String {
    format!("oidc-flow:{}", crate::auth::session::token_hash(state))
}

/// A started flow: where to send the browser, and the `state` its cookie carries.
pub struct Started {
    pub authorize_url: String,
    pub state: String,
}

/// The tenant and its provider for `/auth/oidc/{tenant}/…`; NOT_FOUND when either is missing.
pub async fn tenant_with_idp(
    db: &impl ConnectionTrait,
    slug: &str,
) -> AppResult<(tenant::Model, tenant_idp::Model)> {
    let tenant = tenants::by_slug(db, slug)
        .await?
        .ok_or(AppError::NotFound)?;
    let idp = idp_of(db, tenant.id).await?.ok_or(AppError::NotFound)?;
    Ok((tenant, idp))
}

/// The certificate on the connection, if it is an ACTIVE one of the tenant.
async fn tenant_certificate(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    peer: &PeerCertificate,
) -> AppResult<Option<entity::certificate::Model>> {
    Ok(certificates::by_fingerprint(db, &peer.fingerprint_sha256)
        .await?
        .filter(|c| {
            c.tenant_id == tenant_id && c.status == CertificateStatus::Active && c.not_after > now()
        }))
}

/// Starts a login at the tenant's provider for the certificate on this connection; `redirect_uri`
/// is None when the request named no usable host.
pub async fn start(
    state: &AppState,
    tenant: &tenant::Model,
    idp: &tenant_idp::Model,
    peer: Option<&PeerCertificate>,
    redirect_uri: Option<String>,
) -> AppResult<Started> {
    let peer = peer.ok_or(AppError::CertificateRequired)?;
    if tenant_certificate(&state.db, tenant.id, peer)
        .await?
        .is_none()
    {
        return Err(AppError::CertificateRequired);
    }
    let redirect_uri = redirect_uri.ok_or_else(|| {
        AppError::bad_input("host", "the request names no usable host; set public_url")
    })?;
    let metadata = state.oidc.discover(&idp.issuer, false).await?;
    let redirect = RedirectUrl::new(redirect_uri.clone())
        .map_err(|e| AppError::internal(anyhow::anyhow!("redirect URI {redirect_uri}: {e}")))?;
    let client = CoreClient::from_provider_metadata(
        (*metadata).clone(),
        ClientId::new(idp.client_id.clone()),
        None,
    )
    .set_redirect_uri(redirect);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge)
        .url();
    let pending = Pending {
        tenant_id: tenant.id,
        issuer: idp.issuer.clone(),
        nonce: nonce.secret().clone(),
        pkce_verifier: verifier.secret().clone(),
        cert_fingerprint: peer.fingerprint_sha256.clone(),
        redirect_uri,
    };
    let json = serde_json::to_string(&pending).map_err(AppError::internal)?;
    state
        .sessions
        .put_once(&flow_key(csrf.secret()), &json, FLOW_TTL)
        .await
        .map_err(AppError::unavailable)?;
    Ok(Started {
        authorize_url: url.to_string(),
        state: csrf.secret().clone(),
    })
}

/// What the provider sent back to the callback, and what the browser and connection carry.
pub struct Callback<'a> {
    pub code: Option<&'a str>,
    pub state: Option<&'a str>,
    pub error: Option<&'a str>,
    pub cookie_state: Option<&'a str>,
    pub peer: Option<&'a PeerCertificate>,
    pub ip: std::net::IpAddr,
}

pub struct Finished {
    pub session: NewSession,
    pub user: user::Model,
}

/// A refusal, with what the audit should say about it.
pub struct Refused {
    pub failure: Failure,
    pub user: Option<user::Model>,
    /// The cause behind a service error or a token check, for the server log only.
    pub detail: Option<String>,
    /// The provider's subject, when the token was good but names nobody here: the audit event
    /// carries it (with the certificate serial) so a CITY_ADMIN can link the right user.
    pub subject: Option<String>,
}

fn refuse(failure: Failure) -> Refused {
    Refused {
        failure,
        user: None,
        detail: None,
        subject: None,
    }
}

fn refuse_user(failure: Failure, user: &user::Model) -> Refused {
    Refused {
        failure,
        user: Some(user.clone()),
        detail: None,
        subject: None,
    }
}

fn service(e: impl std::fmt::Debug) -> Refused {
    Refused {
        failure: Failure::ServiceError,
        user: None,
        detail: Some(format!("{e:?}")),
        subject: None,
    }
}

/// Finishes a federated login; every outcome is audited (`login.success` or `login.failure`
/// with method `oidc`, the issuer and the reason).
pub async fn finish(
    state: &AppState,
    tenant: &tenant::Model,
    idp: &tenant_idp::Model,
    callback: Callback<'_>,
) -> Result<Finished, Failure> {
    let config = &state.config;
    let ip_key = format!("login-failures:{}", callback.ip);
    let origin = Origin {
        actor_id: None,
        session_hash: None,
        ip: Some(callback.ip.to_string()),
        certificate_serial: callback.peer.map(|p| p.serial_hex.clone()),
    };
    let limited = match state
        .limiter
        .check(
            &ip_key,
            config.login_ip_max_failures,
            config.login_ip_window,
        )
        .await
    {
        Ok(decision) => !decision.allowed,
        Err(e) => {
            tracing::warn!(error = %e, "rate limiter unavailable for a federated login");
            return Err(Failure::ServiceError);
        }
    };
    let result = if limited {
        Err(refuse(Failure::RateLimited))
    } else {
        attempt(state, tenant, idp, &callback, &origin).await
    };
    match result {
        Ok(finished) => Ok(finished),
        Err(refused) => {
            if let Some(detail) = &refused.detail {
                tracing::info!(reason = refused.failure.as_str(), detail = %detail, "federated login refused");
            }
            let mut event = Event::new(tenant.id, "login.failure", AuditOutcome::Failed)
                .by(&origin)
                .detail("method", "oidc")
                .detail("issuer", idp.issuer.clone())
                .detail("reason", refused.failure.as_str());
            if let Some(user) = &refused.user {
                event = event.actor(Some(user.id)).target("user", user.id);
            }
            if let Some(subject) = refused.subject {
                event = event.detail("subject", subject);
            }
            if let Err(e) = audit::record_now(&state.db, event).await {
                tracing::error!(error = ?e, "audit: could not record a failed federated login");
            }
            if !matches!(
                refused.failure,
                Failure::RateLimited | Failure::ServiceError
            ) && let Err(e) = state
                .limiter
                .hit(
                    &ip_key,
                    config.login_ip_max_failures,
                    config.login_ip_window,
                )
                .await
            {
                tracing::warn!(error = %e, "rate limiter unavailable for a federated login");
            }
            Err(refused.failure)
        }
    }
}

async fn attempt(
    state: &AppState,
    tenant: &tenant::Model,
    idp: &tenant_idp::Model,
    callback: &Callback<'_>,
    origin: &Origin,
) -> Result<Finished, Refused> {
    let db = &state.db;
    // The state names the flow; the cookie proves this browser started it.
    let Some(flow_state) = callback.state.filter(|s| !s.is_empty()) else {
        return Err(refuse(Failure::BadState));
    };
    if callback.cookie_state != Some(flow_state) {
        return Err(refuse(Failure::BadState));
    }
    let Some(json) = state
        .sessions
        .take_once(&flow_key(flow_state))
        .await
        .map_err(service)?
    else {
        return Err(refuse(Failure::BadState));
    };
    let pending: Pending = serde_json::from_str(&json).map_err(service)?;
    if pending.tenant_id != tenant.id || pending.issuer != idp.issuer {
        return Err(refuse(Failure::BadState));
    }
    if callback.error.is_some() {
        return Err(Refused {
            failure: Failure::IdpError,
            user: None,
            detail: callback.error.map(|e| e.chars().take(64).collect()),
            subject: None,
        });
    }
    let Some(peer) = callback.peer else {
        return Err(refuse(Failure::NoCertificate));
    };
    if peer.fingerprint_sha256 != pending.cert_fingerprint {
        return Err(refuse(Failure::CertificateMismatch));
    }
    let Some(code) = callback.code.filter(|c| !c.is_empty()) else {
        return Err(refuse(Failure::IdpError));
    };

    let claims = exchange(state, idp, &pending, code).await?;
    let subject = claims.subject().as_str().to_owned();

    // The subject's user, or (first login, when allowed) the user with its verified e-mail.
    let linked = external_identity::Entity::find()
        .filter(external_identity::Column::TenantId.eq(tenant.id))
        .filter(external_identity::Column::Issuer.eq(&idp.issuer))
        .filter(external_identity::Column::Subject.eq(&subject))
        .one(db)
        .await
        .map_err(service)?;
    let (user, link_now) = match linked {
        Some(link) => {
            let user = user::Entity::find_by_id(link.user_id)
                .one(db)
                .await
                .map_err(service)?
                .ok_or_else(|| service("linked user vanished"))?;
            (user, false)
        }
        None => match by_verified_email(db, tenant.id, idp, &claims)
            .await
            .map_err(service)?
        {
            Some(user) => (user, true),
            None => {
                return Err(Refused {
                    subject: Some(subject),
                    ..refuse(Failure::UnlinkedSubject)
                });
            }
        },
    };

    // The certificate is the second factor: it must be this user's.
    let certificate = tenant_certificate(db, tenant.id, peer)
        .await
        .map_err(service)?;
    if certificate.is_none_or(|c| c.user_id != user.id) {
        return Err(refuse_user(Failure::CertificateMismatch, &user));
    }
    if !roles_of(idp).contains(&user.role) {
        return Err(refuse_user(Failure::RoleNotAllowed, &user));
    }
    let at = now();
    if user.status == AccountStatus::Locked && user.locked_until.is_none_or(|until| until > at) {
        return Err(refuse_user(Failure::Locked, &user));
    }
    let facility_suspended = match user.facility_id {
        Some(fid) => facility::Entity::find_by_id(fid)
            .one(db)
            .await
            .map_err(service)?
            .is_some_and(|f| f.status == AccountStatus::Suspended),
        None => false,
    };
    if user.status == AccountStatus::Suspended || facility_suspended {
        return Err(refuse_user(Failure::Suspended, &user));
    }

    if link_now {
        let txn = crate::db::begin_write(db).await.map_err(service)?;
        match insert_link(&txn, idp, &user, &subject, "EMAIL", None).await {
            Ok(_) => {}
            Err(AppError::Conflict(_)) => return Err(refuse_user(Failure::UnlinkedSubject, &user)),
            Err(e) => return Err(service(e)),
        }
        let event = Event::new(tenant.id, "identity.link", AuditOutcome::Allowed)
            .by(origin)
            .actor(Some(user.id))
            .target("user", user.id)
            .detail("issuer", idp.issuer.clone())
            .detail("method", "EMAIL");
        audit::record(&txn, event).await.map_err(service)?;
        txn.commit().await.map_err(service)?;
    }

    let session = state
        .sessions
        .create_with(user.id, tenant.id, &peer.fingerprint_sha256, true)
        .await
        .map_err(service)?;
    let event = Event::new(tenant.id, "login.success", AuditOutcome::Allowed)
        .by(origin)
        .actor(Some(user.id))
        .session(session.token_hash.clone())
        .target("user", user.id)
        .detail("method", "oidc")
        .detail("issuer", idp.issuer.clone());
    match crate::service::login::finish_login(db, user, at, event).await {
        Ok(user) => Ok(Finished { session, user }),
        Err(e) => {
            // No session without its login event.
            if let Err(revoke) = state.sessions.revoke(&session.token_hash).await {
                tracing::error!(error = ?revoke, "could not end a session whose login was not recorded");
            }
            Err(service(e))
        }
    }
}

/// Trades the code (with the PKCE verifier) for tokens and checks the ID token: signature
/// against the provider's keys, `iss`, `aud`, `exp` and our `nonce`.
async fn exchange(
    state: &AppState,
    idp: &tenant_idp::Model,
    pending: &Pending,
    code: &str,
) -> Result<CoreIdTokenClaims, Refused> {
    let secret = client_secret(&state.master_key, idp).map_err(service)?;
    let redirect = RedirectUrl::new(pending.redirect_uri.clone()).map_err(service)?;
    let metadata = state
        .oidc
        .discover(&idp.issuer, false)
        .await
        .map_err(service)?;
    let client = CoreClient::from_provider_metadata(
        (*metadata).clone(),
        ClientId::new(idp.client_id.clone()),
        Some(secret.clone()),
    )
    .set_redirect_uri(redirect.clone());
    let request = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(service)?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()));
    let response = match request.request_async(&state.oidc.http).await {
        Ok(response) => response,
        Err(RequestTokenError::ServerResponse(e)) => {
            return Err(Refused {
                failure: Failure::CodeRejected,
                user: None,
                detail: Some(e.to_string()),
                subject: None,
            });
        }
        Err(e) => return Err(service(error_chain(&e))),
    };
    let Some(id_token) = response.id_token() else {
        return Err(Refused {
            failure: Failure::BadToken,
            user: None,
            detail: Some("no ID token in the token response".into()),
            subject: None,
        });
    };
    let nonce = Nonce::new(pending.nonce.clone());
    let verified = id_token
        .claims(&client.id_token_verifier(), &nonce)
        .cloned();
    let verified = match verified {
        // The provider may have rotated its keys since we cached them: look once more.
        Err(ClaimsVerificationError::SignatureVerification(_)) => {
            let metadata = state
                .oidc
                .discover(&idp.issuer, true)
                .await
                .map_err(service)?;
            let client = CoreClient::from_provider_metadata(
                (*metadata).clone(),
                ClientId::new(idp.client_id.clone()),
                Some(secret),
            )
            .set_redirect_uri(redirect);
            id_token
                .claims(&client.id_token_verifier(), &nonce)
                .cloned()
        }
        other => other,
    };
    verified.map_err(|e| {
        let failure = match &e {
            ClaimsVerificationError::Expired(_) => Failure::ExpiredToken,
            ClaimsVerificationError::InvalidAudience(_) => Failure::WrongAudience,
            ClaimsVerificationError::InvalidIssuer(_) => Failure::WrongIssuer,
            ClaimsVerificationError::InvalidNonce(_) => Failure::BadNonce,
            _ => Failure::BadToken,
        };
        Refused {
            failure,
            user: None,
            detail: Some(e.to_string()),
            subject: None,
        }
    })
}

/// With e-mail linking on: the one user of the tenant whose address equals the token's
/// verified `email` and who has no link to this provider yet.
async fn by_verified_email(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    idp: &tenant_idp::Model,
    claims: &CoreIdTokenClaims,
) -> AppResult<Option<user::Model>> {
    if !idp.link_by_email || claims.email_verified() != Some(true) {
        return Ok(None);
    }
    let Some(email) = claims.email() else {
        return Ok(None);
    };
    let wanted = email.as_str().trim().to_lowercase();
    if wanted.is_empty() {
        return Ok(None);
    }
    let candidates: Vec<user::Model> = user::Entity::find()
        .filter(user::Column::TenantId.eq(tenant_id))
        .filter(Expr::expr(Func::lower(Expr::col(user::Column::Email))).eq(wanted))
        .limit(2)
        .all(db)
        .await?;
    // None or several: an address shared by two accounts never picks one.
    if candidates.len() != 1 {
        return Ok(None);
    }
    Ok(candidates.into_iter().next())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn roles_parse_from_the_cli_list() {
        assert_eq!(
            parse_roles("CITY_ADMIN, FACILITY_ADMIN,CITY_ADMIN").unwrap(),
            vec![Role::CityAdmin, Role::FacilityAdmin]
        );
        for bad in ["", " , ", "ADMIN", "PLATFORM_OPERATOR"] {
            assert!(
                matches!(parse_roles(bad), Err(AppError::BadUserInput { ref field, .. }) if field == "allowedRoles"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn issuers_must_be_https() {
        assert!(validate_issuer("https://sso.example.jp/realms/kita").is_ok());
        assert!(validate_issuer("http://sso.example.jp").is_err());
        assert!(validate_issuer("not a url").is_err());
    }

    #[test]
    fn the_client_secret_never_shows_in_debug_output() {
        let config = IdpConfig {
            issuer: "https://sso.example.jp".into(),
            client_id: "renkei".into(),
            client_secret: SecretString::from("s3cr3t-value"),
            allowed_roles: vec![Role::CityAdmin],
            link_by_email: false,
        };
        let shown = format!("{config:?}");
        assert!(
            shown.contains("renkei") && !shown.contains("s3cr3t"),
            "{shown}"
        );
    }
}
