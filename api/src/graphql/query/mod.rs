//! Root query, merged from one object per domain.

use async_graphql::MergedObject;

mod applications;
mod audit;
pub(crate) mod notifications;
pub(crate) mod push;
mod register;
mod rooms;
mod session;

#[derive(MergedObject, Default)]
pub struct Query(
    session::SessionQuery,
    register::RegisterQuery,
    applications::ApplicationQuery,
    audit::AuditQuery,
    rooms::RoomQuery,
    notifications::NotificationQuery,
    push::PushQuery,
);
