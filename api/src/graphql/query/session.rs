//! Queries about the caller and its tenant.

use async_graphql::{Context, ID, Object, Result};

use crate::authz;
use crate::graphql::context::ContextExt as _;
use crate::graphql::types::{Tenant, User};
use crate::service::audit::Event;
use crate::service::users;
use entity::kinds::AuditOutcome;

#[derive(Default)]
pub struct SessionQuery;

#[Object]
impl SessionQuery {
    /// The logged-in caller (answers even before the initial password is changed).
    async fn me(&self, ctx: &Context<'_>) -> Result<User> {
        let caller = ctx.caller_before_password_change().await?;
        Ok(User::new(caller.user.clone(), caller.tz()))
    }

    /// The tenant of the logged-in caller.
    async fn tenant(&self, ctx: &Context<'_>) -> Result<Tenant> {
        let caller = ctx.caller_before_pledge().await?;
        Ok(Tenant::from(&caller.tenant))
    }

    /// A user the caller may see: anyone of the tenant for CITY_ADMIN, the own facility's people
    /// otherwise. Null when there is no such user in the caller's tenant.
    async fn user(&self, ctx: &Context<'_>, id: ID) -> Result<Option<User>> {
        let caller = ctx.caller().await?;
        let Ok(id) = users::parse_id(&id) else {
            return Ok(None);
        };
        let state = ctx.state()?;
        let Some(target) = users::by_id(&state.db, id).await? else {
            return Ok(None);
        };
        if target.tenant_id != caller.user.tenant_id {
            return Ok(None);
        }
        if !authz::can_see_user(&caller.user, &target) {
            return Err(crate::error::AppError::Forbidden.into());
        }
        // Reading a person's account (name, occupation, certificates) is recorded.
        let event = Event::new(caller.tenant.id, "user.read", AuditOutcome::Allowed)
            .by(&caller.origin(ctx.request()?))
            .target("user", target.id);
        state.audit.read(event).await?;
        Ok(Some(User::new(target, caller.tz())))
    }
}
