//! The caller's own account (password, pledge) and administration of others' (unlock, reset,
//! suspension, reactivation), the latter only through capabilities from `authz`.

use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _, Set,
};
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use entity::kinds::{AccountStatus, AuditOutcome, CertificateStatus};
use entity::{certificate, facility, password_history, user};

use crate::auth::password::{PasswordError, PasswordPolicy};
use crate::auth::pki::{self, MasterKey, RevocationReason};
use crate::authz::UserAdmin;
use crate::error::{AppError, AppResult};
use crate::service::audit::{self, Event, Origin};
use crate::service::{certificates, facilities, memberships, now};
use crate::state::AppState;

/// The version of the staff pledge (form 6) a user accepts.
pub const PLEDGE_VERSION: &str = "2026-1";

fn password_input_error(field: &str, e: PasswordError) -> AppError {
    match e {
        PasswordError::Internal(detail) => {
            AppError::internal(anyhow::anyhow!("password hashing: {detail}"))
        }
        other => AppError::bad_input(field, other.to_string()),
    }
}

/// Changes the caller's password after checking the current one and the policy; ends the
/// caller's other sessions.
pub async fn change_password(
    state: &AppState,
    me: &user::Model,
    origin: &Origin,
    current: SecretString,
    new: SecretString,
) -> AppResult<()> {
    let event = |outcome| {
        Event::new(me.tenant_id, "password.change", outcome)
            .by(origin)
            .target("user", me.id)
    };
    let ok = match &me.password_hash {
        Some(hash) => state
            .hasher
            .verify(current, &hash.0)
            .await
            .map_err(|e| password_input_error("currentPassword", e))?,
        None => false,
    };
    let Some(hash) = me.password_hash.as_ref().filter(|_| ok) else {
        audit::record_now(
            &state.db,
            event(AuditOutcome::Failed).detail("reason", "wrong_current_password"),
        )
        .await?;
        return Err(AppError::bad_input(
            "currentPassword",
            "the current password is not correct",
        ));
    };
    let policy = PasswordPolicy::default();
    let mut names = vec![me.display_name.as_str()];
    if let Some(kana) = &me.display_name_kana {
        names.push(kana.as_str());
    }
    policy
        .check(new.expose_secret(), &me.login_id, &names)
        .map_err(|e| password_input_error("newPassword", e))?;
    // The current one and the four before it.
    let mut previous = vec![hash.0.clone()];
    let history = password_history::Entity::find()
        .filter(password_history::Column::UserId.eq(me.id))
        .order_by_desc(password_history::Column::CreatedAt)
        .limit(u64::try_from(policy.history.saturating_sub(1)).unwrap_or(4))
        .all(&state.db)
        .await?;
    previous.extend(history.into_iter().map(|h| h.password_hash.0));
    if state
        .hasher
        .matches_any(new.clone(), &previous)
        .await
        .map_err(|e| password_input_error("newPassword", e))?
    {
        return Err(password_input_error("newPassword", PasswordError::Reused));
    }
    set_password(state, me, new, false, event(AuditOutcome::Allowed)).await?;
    // Anyone else holding a session of this account is out.
    let mut ended = Vec::new();
    for (hash, _) in state
        .sessions
        .list_user(me.id)
        .await
        .map_err(AppError::unavailable)?
    {
        if origin.session_hash.as_deref() != Some(hash.as_str())
            && state
                .sessions
                .revoke(&hash)
                .await
                .map_err(AppError::unavailable)?
                .is_some()
        {
            ended.push(hash);
        }
    }
    record_session_revocations(state, me, origin, ended, "password_changed").await
}

/// One `session.revoke` event per ended session, in one transaction.
pub async fn record_session_revocations(
    state: &AppState,
    user: &user::Model,
    origin: &Origin,
    ended: Vec<String>,
    reason: &'static str,
) -> AppResult<()> {
    if ended.is_empty() {
        return Ok(());
    }
    let events = ended
        .into_iter()
        .map(|hash| {
            Event::new(user.tenant_id, "session.revoke", AuditOutcome::Allowed)
                .by(origin)
                .session(hash)
                .target("user", user.id)
                .detail("reason", reason)
        })
        .collect();
    let txn = crate::db::begin_write(&state.db).await?;
    audit::record_all(&txn, events).await?;
    txn.commit().await?;
    Ok(())
}

async fn set_password(
    state: &AppState,
    user: &user::Model,
    new: SecretString,
    must_change: bool,
    event: Event,
) -> AppResult<user::Model> {
    let new_hash = state
        .hasher
        .hash(new)
        .await
        .map_err(|e| password_input_error("newPassword", e))?;
    let at = now();
    let txn = crate::db::begin_write(&state.db).await?;
    if let Some(old) = &user.password_hash {
        password_history::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user.id),
            password_hash: Set(old.clone()),
            created_at: Set(at),
        }
        .insert(&txn)
        .await?;
    }
    let mut active: user::ActiveModel = user.clone().into();
    active.password_hash = Set(Some(user::PasswordHash(new_hash)));
    active.must_change_password = Set(must_change);
    active.password_changed_at = Set(Some(at));
    active.updated_at = Set(at);
    let updated = active.update(&txn).await?;
    audit::record(&txn, event).await?;
    txn.commit().await?;
    Ok(updated)
}

/// A new random one-time password for the target; every session of the target ends.
pub async fn reset_password(
    state: &AppState,
    cap: UserAdmin,
    origin: &Origin,
) -> AppResult<(user::Model, SecretString)> {
    let password = SecretString::from(pki::random_password(16));
    let event = Event::new(
        cap.target.tenant_id,
        "password.reset",
        AuditOutcome::Allowed,
    )
    .by(origin)
    .target("user", cap.target.id);
    let updated = set_password(state, &cap.target, password.clone(), true, event).await?;
    let ended = state
        .sessions
        .revoke_user(updated.id)
        .await
        .map_err(AppError::unavailable)?;
    record_session_revocations(state, &updated, origin, ended, "password_reset").await?;
    Ok((updated, password))
}

/// Lifts a lockout.
pub async fn unlock_user(
    state: &AppState,
    cap: UserAdmin,
    origin: &Origin,
) -> AppResult<user::Model> {
    let target = cap.target;
    if target.status == AccountStatus::Suspended {
        return Err(AppError::Conflict(
            "the account is suspended, not locked".into(),
        ));
    }
    let mut active: user::ActiveModel = target.into();
    active.status = Set(AccountStatus::Active);
    active.failed_login_count = Set(0);
    active.locked_until = Set(None);
    active.updated_at = Set(now());
    let txn = crate::db::begin_write(&state.db).await?;
    let updated = active.update(&txn).await?;
    let event = Event::new(updated.tenant_id, "account.unlock", AuditOutcome::Allowed)
        .by(origin)
        .target("user", updated.id);
    audit::record(&txn, event).await?;
    txn.commit().await?;
    Ok(updated)
}

/// Records the caller's pledge (form 6).
pub async fn accept_pledge(
    state: &AppState,
    me: &user::Model,
    origin: &Origin,
) -> AppResult<user::Model> {
    let mut active: user::ActiveModel = me.clone().into();
    active.pledge_accepted_at = Set(Some(now()));
    active.pledge_version = Set(Some(PLEDGE_VERSION.to_string()));
    active.updated_at = Set(now());
    let txn = crate::db::begin_write(&state.db).await?;
    let updated = active.update(&txn).await?;
    let event = Event::new(me.tenant_id, "pledge.accept", AuditOutcome::Allowed)
        .by(origin)
        .target("user", me.id)
        .detail("version", PLEDGE_VERSION);
    audit::record(&txn, event).await?;
    txn.commit().await?;
    Ok(updated)
}

/// What a suspension changed in the database; [`finish_suspension`] ends the sessions and
/// reloads TLS trust once it is committed.
#[derive(Debug, Default)]
pub struct Suspension {
    pub users: Vec<user::Model>,
    pub revoked_certificates: usize,
}

/// Suspends `users` (form 3, or `suspendUser`) in the caller's transaction: each becomes
/// SUSPENDED with the reason, every ACTIVE certificate is revoked (one new CRL), and their
/// room memberships and invitations end. Users already suspended are left as they are.
pub async fn suspend_in(
    db: &impl ConnectionTrait,
    master_key: &MasterKey,
    tenant_id: Uuid,
    users: Vec<user::Model>,
    reason: &str,
    origin: &Origin,
) -> AppResult<Suspension> {
    let at = now();
    let mut suspended = Vec::with_capacity(users.len());
    for target in users {
        if target.status == AccountStatus::Suspended {
            continue;
        }
        let mut active: user::ActiveModel = target.into();
        active.status = Set(AccountStatus::Suspended);
        active.suspension_reason = Set(Some(reason.to_string()));
        active.locked_until = Set(None);
        active.updated_at = Set(at);
        let updated = active.update(db).await?;
        let event = Event::new(tenant_id, "user.suspend", AuditOutcome::Allowed)
            .by(origin)
            .target("user", updated.id)
            .detail("reason", reason.to_string());
        audit::record(db, event).await?;
        suspended.push(updated);
    }
    let ids: Vec<Uuid> = suspended.iter().map(|u| u.id).collect();
    let certificates = certificate::Entity::find()
        .filter(certificate::Column::UserId.is_in(ids.iter().copied()))
        .filter(certificate::Column::Status.eq(CertificateStatus::Active))
        .all(db)
        .await?;
    let revoked_certificates = certificates.len();
    for cert in certificates {
        certificates::mark_revoked(
            db,
            cert,
            RevocationReason::PrivilegeWithdrawn.as_str(),
            origin,
        )
        .await?;
    }
    if revoked_certificates > 0 {
        certificates::regenerate_crl(db, master_key, tenant_id).await?;
    }
    memberships::end_for_suspended_users(db, tenant_id, &ids, origin).await?;
    Ok(Suspension {
        users: suspended,
        revoked_certificates,
    })
}

/// Suspends a facility and everyone in it (form 3 with `wholeFacility`, or `suspendFacility`)
/// in the caller's transaction. A facility already suspended keeps its status; its users not
/// yet suspended are suspended all the same.
pub async fn suspend_facility_in(
    db: &impl ConnectionTrait,
    master_key: &MasterKey,
    facility: facility::Model,
    reason: &str,
    origin: &Origin,
) -> AppResult<(facility::Model, Suspension)> {
    let facility = if facility.status == AccountStatus::Suspended {
        facility
    } else {
        facilities::set_status(db, facility, AccountStatus::Suspended, Some(reason), origin).await?
    };
    let people = user::Entity::find()
        .filter(user::Column::FacilityId.eq(facility.id))
        .all(db)
        .await?;
    let suspension = suspend_in(db, master_key, facility.tenant_id, people, reason, origin).await?;
    Ok((facility, suspension))
}

/// After the suspension committed: every session of the suspended users ends now (their next
/// request is refused anyway, as `resolve` checks the status), and TLS trust reloads.
pub async fn finish_suspension(
    state: &AppState,
    suspension: &Suspension,
    origin: &Origin,
) -> AppResult<()> {
    // Their memberships ended in the suspension's transaction: every instance drops them now.
    let ids: Vec<_> = suspension.users.iter().map(|u| u.id).collect();
    crate::authz::sync::users_changed(state, &ids).await;
    for user in &suspension.users {
        let ended = state
            .sessions
            .revoke_user(user.id)
            .await
            .map_err(AppError::unavailable)?;
        record_session_revocations(state, user, origin, ended, "account_suspended").await?;
    }
    if suspension.revoked_certificates > 0 {
        state.trust_changed().await;
    }
    Ok(())
}

/// Lifts a suspension (CITY_ADMIN). Certificates stay revoked: the user needs a new one.
pub async fn reactivate_user(
    db: &impl ConnectionTrait,
    target: user::Model,
    origin: &Origin,
) -> AppResult<user::Model> {
    if target.status != AccountStatus::Suspended {
        return Err(AppError::Conflict("the account is not suspended".into()));
    }
    if let Some(facility_id) = target.facility_id
        && crate::service::users::facility(db, facility_id)
            .await?
            .is_some_and(|f| f.status == AccountStatus::Suspended)
    {
        return Err(AppError::Conflict(
            "the user's facility is suspended: reactivate the facility first".into(),
        ));
    }
    let mut active: user::ActiveModel = target.into();
    active.status = Set(AccountStatus::Active);
    active.suspension_reason = Set(None);
    active.failed_login_count = Set(0);
    active.locked_until = Set(None);
    active.updated_at = Set(now());
    let updated = active.update(db).await?;
    let event = Event::new(updated.tenant_id, "user.reactivate", AuditOutcome::Allowed)
        .by(origin)
        .target("user", updated.id);
    audit::record(db, event).await?;
    Ok(updated)
}
