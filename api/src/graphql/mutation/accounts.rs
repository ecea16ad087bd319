//! Administration of accounts and certificates: CITY_ADMIN, or FACILITY_ADMIN for its own
//! facility's users where the tenant delegates it (rule ⑫).

use async_graphql::{Context, ID, Object, Result};
use sea_orm::EntityTrait as _;

use entity::kinds::AccountStatus;

use crate::authz::{self, AdminScope};
use crate::error::AppError;
use crate::graphql::context::{Caller, ContextExt as _};
use crate::graphql::types::{
    Certificate, CertificateIssuance, ExternalIdentity, Facility, Pkcs12Encoding, Tenant, User,
};
use crate::service::{accounts, certificates, facilities, forms, tenants, users};
use crate::state::AppState;

#[derive(Default)]
pub struct AccountMutation;

async fn admin_of(
    state: &AppState,
    caller: &Caller,
    user_id: &ID,
    scope: AdminScope,
) -> Result<authz::UserAdmin, AppError> {
    let id = users::parse_id(user_id)?;
    let target = users::by_id(&state.db, id)
        .await?
        .ok_or(AppError::NotFound)?;
    authz::user_admin(&caller.user, &caller.tenant, target, scope)
}

#[Object]
impl AccountMutation {
    /// A new certificate for one of the user's devices, returned once as PKCS#12. `encoding`
    /// defaults to the tenant's setting; LEGACY suits older iOS and Android.
    async fn issue_certificate(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        device_label: String,
        encoding: Option<Pkcs12Encoding>,
    ) -> Result<CertificateIssuance> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let cap = admin_of(state, caller, &user_id, AdminScope::Delegable).await?;
        let issuance = certificates::issue(
            &state.db,
            &state.master_key,
            &caller.tenant,
            &cap.target,
            &device_label,
            encoding.map(Into::into),
            &caller.origin(ctx.request()?),
        )
        .await?;
        Ok(CertificateIssuance::from_issuance(issuance, caller.tz()))
    }

    /// Revokes a certificate (lost device, renewal): the CRL is regenerated, sessions bound to
    /// it end, and new handshakes with it are refused.
    async fn revoke_certificate(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: String,
    ) -> Result<Certificate> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let cert_id = users::parse_id(&id)?;
        let cert = entity::certificate::Entity::find_by_id(cert_id)
            .one(&state.db)
            .await
            .map_err(AppError::from)?
            .ok_or(AppError::NotFound)?;
        let owner = users::by_id(&state.db, cert.user_id)
            .await?
            .ok_or(AppError::NotFound)?;
        let cap = authz::user_admin(&caller.user, &caller.tenant, owner, AdminScope::Delegable)?;
        let origin = caller.origin(ctx.request()?);
        let txn = crate::db::begin_write(&state.db)
            .await
            .map_err(AppError::from)?;
        let revoked = certificates::revoke(&txn, &state.master_key, cert, &reason, &origin).await?;
        txn.commit().await.map_err(AppError::from)?;
        let ended = state
            .sessions
            .revoke_user_certificate(cap.target.id, &revoked.fingerprint_sha256)
            .await
            .map_err(AppError::unavailable)?;
        accounts::record_session_revocations(
            state,
            &cap.target,
            &origin,
            ended,
            "certificate_revoked",
        )
        .await?;
        state.trust_changed().await;
        Ok(Certificate {
            model: revoked,
            tz: caller.tz(),
        })
    }

    /// Lifts a lockout before it expires.
    async fn unlock_user(&self, ctx: &Context<'_>, id: ID) -> Result<User> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let cap = admin_of(state, caller, &id, AdminScope::Delegable).await?;
        let user = accounts::unlock_user(state, cap, &caller.origin(ctx.request()?)).await?;
        Ok(User::new(user, caller.tz()))
    }

    /// A new one-time password (shown once); the user must change it at next login, and every
    /// session of the user ends.
    async fn reset_password(&self, ctx: &Context<'_>, id: ID) -> Result<String> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let cap = admin_of(state, caller, &id, AdminScope::Delegable).await?;
        let (_, password) =
            accounts::reset_password(state, cap, &caller.origin(ctx.request()?)).await?;
        Ok(secrecy::ExposeSecret::expose_secret(&password).to_string())
    }
}

/// What only the city does: suspension and reactivation, facility status, the delegation.
#[derive(Default)]
pub struct CityAccountMutation;

#[Object]
impl CityAccountMutation {
    /// Links a user of the caller's tenant to a subject at the tenant's identity provider, so
    /// the user can log in through it (certificate still required). CITY_ADMIN.
    async fn link_external_identity(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        issuer: String,
        subject: String,
    ) -> Result<ExternalIdentity> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let cap = admin_of(state, caller, &user_id, AdminScope::CityOnly).await?;
        let origin = caller.origin(ctx.request()?);
        let model = crate::service::oidc::link(
            &state.db,
            &origin,
            caller.tenant.id,
            cap.target.id,
            &issuer,
            &subject,
        )
        .await?;
        Ok(ExternalIdentity {
            model,
            tz: caller.tz(),
        })
    }

    /// Removes the user's link to `issuer`; NOT_FOUND when there is none. CITY_ADMIN.
    async fn unlink_external_identity(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        issuer: String,
    ) -> Result<bool> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let cap = admin_of(state, caller, &user_id, AdminScope::CityOnly).await?;
        let origin = caller.origin(ctx.request()?);
        crate::service::oidc::unlink(&state.db, &origin, caller.tenant.id, cap.target.id, &issuer)
            .await?;
        Ok(true)
    }

    /// Stops one ID at once (CITY_ADMIN): sessions end, certificates are revoked, room
    /// memberships end.
    async fn suspend_user(&self, ctx: &Context<'_>, id: ID, reason: String) -> Result<User> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let cap = admin_of(state, caller, &id, AdminScope::CityOnly).await?;
        if cap.target.id == caller.user.id {
            return Err(AppError::bad_input("id", "you cannot suspend yourself").into());
        }
        if cap.target.status == AccountStatus::Suspended {
            return Err(AppError::Conflict("the account is already suspended".into()).into());
        }
        let reason = forms::reason("reason", &reason)?;
        let origin = caller.origin(ctx.request()?);
        let txn = crate::db::begin_write(&state.db)
            .await
            .map_err(AppError::from)?;
        let suspension = accounts::suspend_in(
            &txn,
            &state.master_key,
            caller.tenant.id,
            vec![cap.target],
            &reason,
            &origin,
        )
        .await?;
        txn.commit().await.map_err(AppError::from)?;
        accounts::finish_suspension(state, &suspension, &origin).await?;
        let user = suspension
            .users
            .into_iter()
            .next()
            .ok_or_else(|| AppError::Conflict("the account is already suspended".into()))?;
        Ok(User::new(user, caller.tz()))
    }

    /// Lifts a suspension (CITY_ADMIN). The user then needs a new certificate.
    async fn reactivate_user(&self, ctx: &Context<'_>, id: ID) -> Result<User> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let cap = admin_of(state, caller, &id, AdminScope::CityOnly).await?;
        let txn = crate::db::begin_write(&state.db)
            .await
            .map_err(AppError::from)?;
        let user =
            accounts::reactivate_user(&txn, cap.target, &caller.origin(ctx.request()?)).await?;
        txn.commit().await.map_err(AppError::from)?;
        // Its tenant role comes back (its room memberships do not: they ended).
        crate::authz::sync::users_changed(state, &[user.id]).await;
        Ok(User::new(user, caller.tz()))
    }

    /// Suspends a facility and everyone in it (CITY_ADMIN).
    async fn suspend_facility(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: String,
    ) -> Result<Facility> {
        let caller = ctx.caller().await?;
        let cap = authz::city_admin(&caller.user)?;
        let state = ctx.state()?;
        let facility =
            facilities::in_tenant(&state.db, cap.tenant_id, users::parse_id(&id)?).await?;
        if facility.status == AccountStatus::Suspended {
            return Err(AppError::Conflict("the facility is already suspended".into()).into());
        }
        let reason = forms::reason("reason", &reason)?;
        let origin = caller.origin(ctx.request()?);
        let txn = crate::db::begin_write(&state.db)
            .await
            .map_err(AppError::from)?;
        let (facility, suspension) =
            accounts::suspend_facility_in(&txn, &state.master_key, facility, &reason, &origin)
                .await?;
        txn.commit().await.map_err(AppError::from)?;
        accounts::finish_suspension(state, &suspension, &origin).await?;
        Ok(Facility { model: facility })
    }

    /// Lifts a facility's suspension (CITY_ADMIN); its users stay suspended until each is
    /// reactivated with `reactivateUser`.
    async fn reactivate_facility(&self, ctx: &Context<'_>, id: ID) -> Result<Facility> {
        let caller = ctx.caller().await?;
        let cap = authz::city_admin(&caller.user)?;
        let state = ctx.state()?;
        let facility =
            facilities::in_tenant(&state.db, cap.tenant_id, users::parse_id(&id)?).await?;
        if facility.status != AccountStatus::Suspended {
            return Err(AppError::Conflict("the facility is not suspended".into()).into());
        }
        let txn = crate::db::begin_write(&state.db)
            .await
            .map_err(AppError::from)?;
        let facility = facilities::set_status(
            &txn,
            facility,
            AccountStatus::Active,
            None,
            &caller.origin(ctx.request()?),
        )
        .await?;
        txn.commit().await.map_err(AppError::from)?;
        Ok(Facility { model: facility })
    }

    /// Switches rule ⑫ for the caller's tenant (CITY_ADMIN): whether facility admins may
    /// issue and revoke certificates, unlock and reset passwords of their own staff.
    async fn set_facility_admin_delegation(
        &self,
        ctx: &Context<'_>,
        enabled: bool,
    ) -> Result<Tenant> {
        let caller = ctx.caller().await?;
        let cap = authz::city_admin(&caller.user)?;
        let state = ctx.state()?;
        let txn = crate::db::begin_write(&state.db)
            .await
            .map_err(AppError::from)?;
        let tenant = tenants::set_facility_admin_delegation(
            &txn,
            cap.tenant_id,
            enabled,
            &caller.origin(ctx.request()?),
        )
        .await?;
        txn.commit().await.map_err(AppError::from)?;
        Ok(Tenant::from(&tenant))
    }
}
