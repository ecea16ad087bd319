//! Applications as their submitters and the city follow them, and the applicant's public
//! status lookup.

use async_graphql::{Context, ID, Object, Result};

use crate::authz;
use crate::graphql::applications::{
    Application, ApplicationConnection, ApplicationKind, ApplicationStatus,
};
use crate::graphql::context::ContextExt as _;
use crate::service::{applications, page, users};

#[derive(Default)]
pub struct ApplicationQuery;

#[Object]
impl ApplicationQuery {
    /// CITY_ADMIN: every application of the tenant; FACILITY_ADMIN: its facility's; STAFF:
    /// its own. Newest first.
    async fn applications(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        kind: Option<ApplicationKind>,
        status: Option<ApplicationStatus>,
    ) -> Result<ApplicationConnection> {
        let caller = ctx.caller().await?;
        let first = page::first(first)?;
        let after = page::after("applications", after.as_deref())?;
        let state = ctx.state()?;
        let found = applications::list(
            &state.db,
            authz::application_scope(&caller.user),
            kind.map(Into::into),
            status.map(Into::into),
            first,
            after,
        )
        .await?;
        Ok(ApplicationConnection::new(
            found,
            after.is_some(),
            caller.tz(),
        ))
    }

    /// One application in the caller's scope (NOT_FOUND for other tenants' ids).
    async fn application(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Application>> {
        let caller = ctx.caller().await?;
        let id = users::parse_id(&id)?;
        let state = ctx.state()?;
        let model =
            applications::get(&state.db, authz::application_scope(&caller.user), id).await?;
        Ok(Some(Application {
            model,
            tz: caller.tz(),
        }))
    }

    /// Public: an applicant follows its registration by reference number and the contact
    /// e-mail it gave. `tenant` (slug) narrows the search to one municipality.
    async fn application_status(
        &self,
        ctx: &Context<'_>,
        reference_number: String,
        contact_email: String,
        tenant: Option<String>,
    ) -> Result<Option<ApplicationStatus>> {
        let state = ctx.state()?;
        let request = ctx.request()?;
        let status = applications::status_for_applicant(
            state,
            tenant.as_deref(),
            &reference_number,
            &contact_email,
            request.client_ip,
        )
        .await?;
        Ok(status.map(Into::into))
    }
}
