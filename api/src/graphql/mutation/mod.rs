//! Root mutation, merged from one object per domain.

use async_graphql::MergedObject;

mod accounts;
mod applications;
mod content;
mod notifications;
mod push;
mod rooms;
mod session;

#[derive(MergedObject, Default)]
pub struct Mutation(
    session::SessionMutation,
    applications::ApplicationMutation,
    accounts::AccountMutation,
    accounts::CityAccountMutation,
    rooms::RoomMutation,
    content::ContentMutation,
    notifications::NotificationMutation,
    push::PushMutation,
);
