//! The city's register: facilities, users and the statistics the city reports (duty ①).

use async_graphql::{Context, ID, Object, Result, SimpleObject};

use entity::kinds::AuditOutcome;

use crate::authz;
use crate::graphql::context::ContextExt as _;
use crate::graphql::types::{
    AccountStatus, Facility, FacilityConnection, FacilityKind, Occupation, Role, UserConnection,
    total,
};
use crate::service::audit::Event;
use crate::service::{facilities, page, register, users};

#[derive(Default)]
pub struct RegisterQuery;

#[derive(SimpleObject)]
pub struct CountByKey {
    pub key: String,
    pub count: i32,
}

#[derive(SimpleObject)]
pub struct TenantStatistics {
    /// key = facility id.
    pub users_by_facility: Vec<CountByKey>,
    pub users_by_occupation: Vec<CountByKey>,
    pub users_by_status: Vec<CountByKey>,
    pub facilities_by_kind: Vec<CountByKey>,
    /// Rooms by status (OPEN, CLOSING, CLOSED).
    pub rooms_by_status: Vec<CountByKey>,
}

fn keyed(counts: Vec<(String, u64)>) -> Vec<CountByKey> {
    counts
        .into_iter()
        .map(|(key, n)| CountByKey {
            key,
            count: total(n),
        })
        .collect()
}

#[Object]
impl RegisterQuery {
    /// CITY_ADMIN: every facility of the tenant; others: their own facility.
    async fn facilities(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        kind: Option<FacilityKind>,
        status: Option<AccountStatus>,
    ) -> Result<FacilityConnection> {
        let caller = ctx.caller().await?;
        let scope = authz::register_scope(&caller.user)?;
        let first = page::first(first)?;
        let after = page::after("facilities", after.as_deref())?;
        let filter = register::FacilityFilter {
            kind: kind.map(Into::into),
            status: status.map(Into::into),
        };
        let state = ctx.state()?;
        let found = register::facilities(&state.db, scope, &filter, first, after).await?;
        Ok(FacilityConnection::new(found, after.is_some()))
    }

    /// One facility the caller may see (NOT_FOUND for other tenants' ids).
    async fn facility(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Facility>> {
        let caller = ctx.caller().await?;
        let scope = authz::register_scope(&caller.user)?;
        let id = users::parse_id(&id)?;
        let state = ctx.state()?;
        let model = facilities::in_tenant(&state.db, caller.tenant.id, id).await?;
        scope.facility(&model)?;
        Ok(Some(Facility { model }))
    }

    /// CITY_ADMIN: every user of the tenant; others: their own facility's people.
    #[allow(clippy::too_many_arguments)]
    async fn users(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        facility_id: Option<ID>,
        status: Option<AccountStatus>,
        occupation: Option<Occupation>,
        role: Option<Role>,
    ) -> Result<UserConnection> {
        let caller = ctx.caller().await?;
        let scope = authz::register_scope(&caller.user)?;
        let first = page::first(first)?;
        let after = page::after("users", after.as_deref())?;
        let state = ctx.state()?;
        let facility_id = match facility_id {
            Some(id) => {
                let facility =
                    facilities::in_tenant(&state.db, caller.tenant.id, users::parse_id(&id)?)
                        .await?;
                Some(scope.facility(&facility)?)
            }
            None => None,
        };
        let filter = register::UserFilter {
            facility_id,
            status: status.map(Into::into),
            occupation: occupation.map(Into::into),
            role: role.map(Into::into),
        };
        let found = register::users(&state.db, scope, &filter, first, after).await?;
        // Reading the register of people is recorded like reading one person.
        let mut event = Event::new(caller.tenant.id, "users.list", AuditOutcome::Allowed)
            .by(&caller.origin(ctx.request()?))
            .detail("returned", found.items.len().to_string());
        if let Some(facility_id) = facility_id {
            event = event.detail("facilityId", facility_id.to_string());
        }
        state.audit.read(event).await?;
        Ok(UserConnection::new(found, after.is_some(), caller.tz()))
    }

    /// Counts of the register (CITY_ADMIN).
    async fn tenant_statistics(&self, ctx: &Context<'_>) -> Result<TenantStatistics> {
        let caller = ctx.caller().await?;
        let cap = authz::city_admin(&caller.user)?;
        let state = ctx.state()?;
        let stats = register::statistics(&state.db, cap.tenant_id).await?;
        Ok(TenantStatistics {
            users_by_facility: keyed(stats.users_by_facility),
            users_by_occupation: keyed(stats.users_by_occupation),
            users_by_status: keyed(stats.users_by_status),
            facilities_by_kind: keyed(stats.facilities_by_kind),
            rooms_by_status: keyed(
                crate::service::rooms::count_by_status(&state.db, cap.tenant_id)
                    .await?
                    .into_iter()
                    .map(|(k, n)| (k, u64::try_from(n).unwrap_or(0)))
                    .collect(),
            ),
        })
    }
}
