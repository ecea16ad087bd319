//! Administration of accounts and certificates: CITY_ADMIN, or FACILITY_ADMIN for its own
//! facility's users where the tenant delegates it (rule ⑫).

use async_graphql::{Context, ID, Object, Result};
use sea_orm::EntityTrait as _;

use crate::authz::{self, AdminScope};
use crate::error::AppError;
use crate::graphql::context::{Caller, ContextExt as _};
use crate::graphql::types::{Certificate, CertificateIssuance, Pkcs12Encoding, User};
use crate::service::{accounts, certificates, users};
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
