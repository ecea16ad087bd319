//! An invitation to a room: the invitee becomes a member by accepting it.

use sea_orm::entity::prelude::*;

use crate::kinds::InvitationStatus;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "invitations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub room_id: Uuid,
    pub invitee_id: Uuid,
    pub invited_by: Uuid,
    /// The ROOM_CREATION / ROOM_MEMBERSHIP application whose approval made it, if any.
    pub application_id: Option<Uuid>,
    pub status: InvitationStatus,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub answered_at: Option<DateTimeUtc>,
    pub answered_by: Option<Uuid>,
}

impl ActiveModelBehavior for ActiveModel {}
