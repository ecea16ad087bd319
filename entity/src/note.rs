//! A post in a room's collaboration note (多職種連携ノート).

use sea_orm::entity::prelude::*;

use crate::kinds::NoteCategory;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub room_id: Uuid,
    pub author_id: Uuid,
    pub category: NoteCategory,
    pub body: String,
    pub reply_to_id: Option<Uuid>,
    pub client_mutation_id: Option<String>,
    pub created_at: DateTimeUtc,
    pub edited_at: Option<DateTimeUtc>,
    pub deleted_at: Option<DateTimeUtc>,
    pub deletion_reason: Option<String>,
    /// Marked urgent by its author: breaks through quiet hours and MENTIONS_AND_URGENT.
    pub urgent: bool,
}

impl ActiveModelBehavior for ActiveModel {}
