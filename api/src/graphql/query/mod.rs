//! Root query, merged from one object per domain.

use async_graphql::MergedObject;

mod audit;
mod session;

#[derive(MergedObject, Default)]
pub struct Query(session::SessionQuery, audit::AuditQuery);
