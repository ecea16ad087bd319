//! Queries about the caller's own session.

use async_graphql::{Context, Object, Result};

use crate::error::AppError;
use crate::graphql::types::Tenant;

#[derive(Default)]
pub struct SessionQuery;

#[Object]
impl SessionQuery {
    /// The tenant of the logged-in caller.
    async fn tenant(&self, _ctx: &Context<'_>) -> Result<Tenant> {
        // Sessions arrive with two-factor login; until then nobody is logged in.
        Err(AppError::Unauthenticated.into())
    }
}
