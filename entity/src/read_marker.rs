//! 既読: one forward move of a user's read marker in a room.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "read_markers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub room_id: Uuid,
    pub user_id: Uuid,
    /// Every note up to this one (by id) counts as read from `read_at`.
    pub up_to_note_id: Uuid,
    pub read_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
