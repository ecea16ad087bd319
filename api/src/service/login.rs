//! Two-factor login: a client certificate of the tenant's CA that belongs to the user, and the
//! user's password. Neither alone logs in. Failures lock accounts and are rate-limited per IP.

use std::net::IpAddr;

use sea_orm::{ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, Set};
use secrecy::SecretString;

use entity::kinds::{AccountStatus, CertificateStatus};
use entity::{facility, tenant, user};

use crate::auth::session::{NewSession, SessionRecord};
use crate::auth::trust::PeerCertificate;
use crate::error::{AppError, AppResult};
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
}

impl From<AppError> for LoginFailure {
    fn from(error: AppError) -> Self {
        LoginFailure {
            error,
            reason: FailureReason::ServiceError,
            user: None,
            tenant: None,
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
    }
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
        return Err(fail(
            AppError::RateLimited {
                retry_after_seconds: ip.retry_after_seconds,
            },
            FailureReason::RateLimited,
            None,
            None,
        ));
    }
    let result = attempt(state, &req).await;
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

fn counts_against_ip(reason: FailureReason) -> bool {
    !matches!(
        reason,
        FailureReason::RateLimited | FailureReason::ServiceError
    )
}

async fn attempt(state: &AppState, req: &LoginRequest<'_>) -> Result<LoginSuccess, LoginFailure> {
    let db = &state.db;
    let Some(peer) = req.peer else {
        return Err(fail(
            AppError::CertificateRequired,
            FailureReason::NoCertificate,
            None,
            None,
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
    let user = user::Entity::find()
        .filter(user::Column::TenantId.eq(tenant.id))
        .filter(user::Column::LoginId.eq(req.login_id))
        .one(db)
        .await
        .map_err(AppError::from)?;
    let Some(user) = user else {
        state.hasher.verify_dummy(req.password.clone()).await;
        return Err(fail(
            bad_credentials(),
            FailureReason::UnknownUser,
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
        let locked = record_failure(state, &user).await?;
        let error = if let Some(seconds) = locked {
            AppError::AccountLocked {
                retry_after_seconds: Some(seconds),
            }
        } else {
            bad_credentials()
        };
        let reason = if locked.is_some() {
            FailureReason::Locked
        } else {
            FailureReason::WrongPassword
        };
        return Err(fail(error, reason, Some(&user), Some(&tenant)));
    }
    // Both factors must be the same person's.
    if certificate.user_id != user.id {
        return Err(fail(
            AppError::CertificateRequired,
            FailureReason::CertificateOfAnotherUser,
            Some(&user),
            Some(&tenant),
        ));
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

    let user = if user.failed_login_count != 0 || user.status == AccountStatus::Locked {
        let mut active: user::ActiveModel = user.into();
        active.failed_login_count = Set(0);
        active.status = Set(AccountStatus::Active);
        active.locked_until = Set(None);
        active.updated_at = Set(at);
        active.update(db).await.map_err(AppError::from)?
    } else {
        user
    };
    let session = state
        .sessions
        .create(user.id, tenant.id, &peer.fingerprint_sha256)
        .await
        .map_err(AppError::unavailable)?;
    Ok(LoginSuccess {
        session,
        user,
        tenant,
    })
}

/// Counts a wrong password; locks the account when the threshold is reached.
/// Returns the lockout length in seconds when this failure locked it.
async fn record_failure(state: &AppState, user: &user::Model) -> AppResult<Option<u64>> {
    use sea_orm::ExprTrait as _;
    use sea_orm::sea_query::Expr;
    // Increment in SQL so concurrent failures all count.
    user::Entity::update_many()
        .col_expr(
            user::Column::FailedLoginCount,
            Expr::col(user::Column::FailedLoginCount).add(1),
        )
        .filter(user::Column::Id.eq(user.id))
        .exec(&state.db)
        .await?;
    let fresh = user::Entity::find_by_id(user.id)
        .one(&state.db)
        .await?
        .ok_or(AppError::NotFound)?;
    let max = i32::try_from(state.config.login_max_failures).unwrap_or(i32::MAX);
    if fresh.failed_login_count < max {
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
    active.update(&state.db).await?;
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
