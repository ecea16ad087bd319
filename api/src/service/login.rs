//! Two-factor login: a client certificate of the tenant's CA that belongs to the user, and the
//! user's password. Neither alone logs in. Failures lock accounts and are rate-limited per IP.

use std::net::IpAddr;

use sea_orm::{ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, Set};
use secrecy::SecretString;

use entity::kinds::{AccountStatus, AuditOutcome, CertificateStatus};
use entity::{facility, tenant, user};
use uuid::Uuid;

use crate::auth::session::{NewSession, SessionRecord};
use crate::auth::trust::PeerCertificate;
use crate::error::{AppError, AppResult};
use crate::service::audit::{self, Event, Origin};
use crate::service::{certificates, now, tenants};
use crate::state::AppState;

pub struct LoginRequest<'a> {
    pub tenant_slug: &'a str,
    pub login_id: &'a str,
    pub password: SecretString,
    pub peer: Option<&'a PeerCertificate>,
    pub ip: IpAddr,
}

pub struct LoginSuccess {
    pub session: NewSession,
    pub user: user::Model,
    pub tenant: tenant::Model,
}

/// Why a login failed, for the audit log (the client sees only the contract code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    RateLimited,
    NoCertificate,
    UnknownTenant,
    ForeignCertificate,
    CertificateNotActive,
    UnknownUser,
    WrongPassword,
    CertificateOfAnotherUser,
    Locked,
    Suspended,
    /// The database or session store failed; not the caller's doing.
    ServiceError,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::RateLimited => "rate_limited",
            FailureReason::NoCertificate => "no_certificate",
            FailureReason::UnknownTenant => "unknown_tenant",
            FailureReason::ForeignCertificate => "foreign_certificate",
            FailureReason::CertificateNotActive => "certificate_not_active",
            FailureReason::UnknownUser => "unknown_user",
            FailureReason::WrongPassword => "wrong_password",
            FailureReason::CertificateOfAnotherUser => "certificate_of_another_user",
            FailureReason::Locked => "locked",
            FailureReason::Suspended => "suspended",
            FailureReason::ServiceError => "service_error",
        }
    }
}

pub struct LoginFailure {
    pub error: AppError,
    pub reason: FailureReason,
    /// The account the attempt was against, when known.
    pub user: Option<user::Model>,
    pub tenant: Option<tenant::Model>,
    /// Already in the audit log (written with the failed-attempt count it changed).
    pub audited: bool,
}

impl From<AppError> for LoginFailure {
    fn from(error: AppError) -> Self {
        LoginFailure {
            error,
            reason: FailureReason::ServiceError,
            user: None,
            tenant: None,
            audited: false,
        }
    }
}

fn fail(
    error: AppError,
    reason: FailureReason,
    user: Option<&user::Model>,
    tenant: Option<&tenant::Model>,
) -> LoginFailure {
    LoginFailure {
        error,
        reason,
        user: user.cloned(),
        tenant: tenant.cloned(),
        audited: false,
    }
}

/// Longest attempted login ID kept in the audit log.
const MAX_LOGGED_LOGIN_ID: usize = 64;

/// A login event with what the connection says: client IP and certificate serial.
fn login_event(
    req: &LoginRequest<'_>,
    tenant_id: Uuid,
    action: &'static str,
    outcome: AuditOutcome,
) -> Event {
    Event::new(tenant_id, action, outcome).by(&Origin {
        actor_id: None,
        session_hash: None,
        ip: Some(req.ip.to_string()),
        certificate_serial: req.peer.map(|p| p.serial_hex.clone()),
    })
}

fn failure_event(
    req: &LoginRequest<'_>,
    tenant_id: Uuid,
    reason: FailureReason,
    user: Option<&user::Model>,
) -> Event {
    let login_id: String = req.login_id.chars().take(MAX_LOGGED_LOGIN_ID).collect();
    let mut event = login_event(req, tenant_id, "login.failure", AuditOutcome::Failed)
        .detail("reason", reason.as_str())
        .detail("loginId", login_id);
    if let Some(user) = user {
        event = event.actor(Some(user.id)).target("user", user.id);
    }
    event
}

/// The same words for an unknown login ID and a wrong password, so they cannot be told apart.
fn bad_credentials() -> AppError {
    AppError::Unauthenticated
}

pub async fn login(state: &AppState, req: LoginRequest<'_>) -> Result<LoginSuccess, LoginFailure> {
    let config = &state.config;
    let ip_key = format!("login-failures:{}", req.ip);
    let ip = state
        .limiter
        .check(
            &ip_key,
            config.login_ip_max_failures,
            config.login_ip_window,
        )
        .await
        .map_err(AppError::unavailable)?;
    if !ip.allowed {
        let failure = fail(
            AppError::RateLimited {
                retry_after_seconds: ip.retry_after_seconds,
            },
            FailureReason::RateLimited,
            None,
            None,
        );
        audit_failure(state, &req, &failure).await;
        return Err(failure);
    }
    let result = attempt(state, &req).await;
    if let Err(failure) = &result
        && !failure.audited
    {
        audit_failure(state, &req, failure).await;
    }
    if let Err(failure) = &result
        && counts_against_ip(failure.reason)
    {
        state
            .limiter
            .hit(
                &ip_key,
                config.login_ip_max_failures,
                config.login_ip_window,
            )
            .await
            .map_err(AppError::unavailable)?;
    }
    result
}

/// Files a failed attempt under its tenant. An attempt naming no existing tenant has nowhere
/// to go: it is logged to the server log only. The failure is answered even if this fails.
async fn audit_failure(state: &AppState, req: &LoginRequest<'_>, failure: &LoginFailure) {
    let tenant_id = match &failure.tenant {
        Some(t) => Some(t.id),
        None => tenants::by_slug(&state.db, req.tenant_slug)
            .await
            .ok()
            .flatten()
            .map(|t| t.id),
    };
    let Some(tenant_id) = tenant_id else {
        return;
    };
    let event = failure_event(req, tenant_id, failure.reason, failure.user.as_ref());
    if let Err(e) = audit::record_now(&state.db, event).await {
        tracing::error!(error = ?e, reason = failure.reason.as_str(), "audit: could not record a failed login");
    }
}

fn counts_against_ip(reason: FailureReason) -> bool {
    !matches!(
        reason,
        FailureReason::RateLimited | FailureReason::ServiceError
    )
}

async fn attempt(state: &AppState, req: &LoginRequest<'_>) -> Result<LoginSuccess, LoginFailure> {
    let db = &state.db;
    let Some(peer) = req.peer else {
        let tenant = tenants::by_slug(db, req.tenant_slug).await?;
        return Err(fail(
            AppError::CertificateRequired,
            FailureReason::NoCertificate,
            None,
            tenant.as_ref(),
        ));
    };
    let Some(tenant) = tenants::by_slug(db, req.tenant_slug).await? else {
        state.hasher.verify_dummy(req.password.clone()).await;
        return Err(fail(
            bad_credentials(),
            FailureReason::UnknownTenant,
            None,
            None,
        ));
    };
    let certificate = certificates::by_fingerprint(db, &peer.fingerprint_sha256).await?;
    let certificate = match certificate {
        Some(c) if c.tenant_id == tenant.id => c,
        _ => {
            return Err(fail(
                AppError::CertificateRequired,
                FailureReason::ForeignCertificate,
                None,
                Some(&tenant),
            ));
        }
    };
    if certificate.status != CertificateStatus::Active || certificate.not_after <= now() {
        return Err(fail(
            AppError::CertificateRequired,
            FailureReason::CertificateNotActive,
            None,
            Some(&tenant),
        ));
    }
    // The certificate names its user: any other login ID gets one answer, CERTIFICATE_REQUIRED
    // (not this user's certificate), whether it exists and whatever the password, after the
    // same Argon2id work, so one certificate cannot be used to test other people's passwords.
    // It counts against the IP like any failed login; the named account is left untouched.
    let owner = user::Entity::find_by_id(certificate.user_id)
        .one(db)
        .await
        .map_err(AppError::from)?;
    let Some(user) = owner.filter(|u| u.login_id == req.login_id) else {
        state.hasher.verify_dummy(req.password.clone()).await;
        return Err(fail(
            AppError::CertificateRequired,
            FailureReason::CertificateOfAnotherUser,
            None,
            Some(&tenant),
        ));
    };

    // A locked account is refused before the password is tried: guessing stops for the lockout.
    let at = now();
    if user.status == AccountStatus::Locked {
        match user.locked_until {
            Some(until) if until <= at => {} // lock expired: this attempt decides
            until => {
                let retry_after_seconds =
                    until.map(|u| u64::try_from((u - at).num_seconds().max(1)).unwrap_or(1));
                return Err(fail(
                    AppError::AccountLocked {
                        retry_after_seconds,
                    },
                    FailureReason::Locked,
                    Some(&user),
                    Some(&tenant),
                ));
            }
        }
    }

    let verified = match &user.password_hash {
        Some(hash) => state
            .hasher
            .verify(req.password.clone(), &hash.0)
            .await
            .map_err(|e| AppError::internal(anyhow::anyhow!("password verification: {e:?}")))?,
        None => {
            state.hasher.verify_dummy(req.password.clone()).await;
            false
        }
    };
    if !verified {
        let locked = record_failure(state, req, &user).await?;
        let error = if let Some(seconds) = locked {
            AppError::AccountLocked {
                retry_after_seconds: Some(seconds),
            }
        } else {
            bad_credentials()
        };
        let mut failure = fail(
            error,
            FailureReason::WrongPassword,
            Some(&user),
            Some(&tenant),
        );
        failure.audited = true;
        return Err(failure);
    }
    let facility_suspended = match user.facility_id {
        Some(fid) => facility::Entity::find_by_id(fid)
            .one(db)
            .await
            .map_err(AppError::from)?
            .is_some_and(|f| f.status == AccountStatus::Suspended),
        None => false,
    };
    if user.status == AccountStatus::Suspended || facility_suspended {
        return Err(fail(
            AppError::AccountSuspended,
            FailureReason::Suspended,
            Some(&user),
            Some(&tenant),
        ));
    }

    let session = state
        .sessions
        .create(user.id, tenant.id, &peer.fingerprint_sha256)
        .await
        .map_err(AppError::unavailable)?;
    let event = login_event(req, tenant.id, "login.success", AuditOutcome::Allowed)
        .actor(Some(user.id))
        .session(session.token_hash.clone())
        .target("user", user.id);
    match finish_login(db, user, at, event).await {
        Ok(user) => Ok(LoginSuccess {
            session,
            user,
            tenant,
        }),
        Err(e) => {
            // No session without its login event.
            if let Err(revoke) = state.sessions.revoke(&session.token_hash).await {
                tracing::error!(error = ?revoke, "could not end a session whose login was not recorded");
            }
            Err(e.into())
        }
    }
}

/// Clears the failure count and the lockout, and records the login, in one transaction.
pub(crate) async fn finish_login(
    db: &sea_orm::DatabaseConnection,
    user: user::Model,
    at: chrono::DateTime<chrono::Utc>,
    event: Event,
) -> AppResult<user::Model> {
    let txn = crate::db::begin_write(db).await?;
    let user = if user.failed_login_count != 0 || user.status == AccountStatus::Locked {
        let mut active: user::ActiveModel = user.into();
        active.failed_login_count = Set(0);
        active.status = Set(AccountStatus::Active);
        active.locked_until = Set(None);
        active.updated_at = Set(at);
        active.update(&txn).await?
    } else {
        user
    };
    crate::notify::login_in(&txn, &user, &event).await?;
    audit::record(&txn, event).await?;
    txn.commit().await?;
    Ok(user)
}

/// Counts a wrong password and records the failed login; locks the account (recording that
/// too) when the threshold is reached, all in one transaction. Returns the lockout length in
/// seconds when this failure locked it.
async fn record_failure(
    state: &AppState,
    req: &LoginRequest<'_>,
    user: &user::Model,
) -> AppResult<Option<u64>> {
    use sea_orm::ExprTrait as _;
    use sea_orm::sea_query::Expr;
    let txn = crate::db::begin_write(&state.db).await?;
    // Increment in SQL so concurrent failures all count.
    user::Entity::update_many()
        .col_expr(
            user::Column::FailedLoginCount,
            Expr::col(user::Column::FailedLoginCount).add(1),
        )
        .filter(user::Column::Id.eq(user.id))
        .exec(&txn)
        .await?;
    let fresh = user::Entity::find_by_id(user.id)
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound)?;
    audit::record(
        &txn,
        failure_event(
            req,
            user.tenant_id,
            FailureReason::WrongPassword,
            Some(user),
        ),
    )
    .await?;
    let max = i32::try_from(state.config.login_max_failures).unwrap_or(i32::MAX);
    if fresh.failed_login_count < max {
        txn.commit().await?;
        return Ok(None);
    }
    let at = now();
    let until = at
        + chrono::Duration::from_std(state.config.lockout).unwrap_or(chrono::Duration::minutes(15));
    let mut active: user::ActiveModel = fresh.into();
    active.status = Set(AccountStatus::Locked);
    active.locked_until = Set(Some(until));
    active.failed_login_count = Set(0);
    active.updated_at = Set(at);
    active.update(&txn).await?;
    let lock = Event::new(user.tenant_id, "account.lock", AuditOutcome::Allowed)
        .target("user", user.id)
        .detail("reason", "failed_logins")
        .detail("failures", max)
        .detail("until", until.to_rfc3339());
    audit::record(&txn, lock).await?;
    txn.commit().await?;
    Ok(Some(state.config.lockout.as_secs()))
}

/// The session behind a request, if it is alive and the request comes over the certificate it
/// is bound to.
pub async fn resume(
    state: &AppState,
    token: &str,
    peer: Option<&PeerCertificate>,
) -> AppResult<(String, SessionRecord)> {
    let hash = crate::auth::session::token_hash(token);
    let record = state
        .sessions
        .touch(&hash)
        .await
        .map_err(AppError::unavailable)?
        .ok_or(AppError::Unauthenticated)?;
    match peer {
        Some(p) if p.fingerprint_sha256 == record.cert_fingerprint => Ok((hash, record)),
        _ => Err(AppError::Unauthenticated),
    }
}
