//! An earlier body of a note: kept on every edit and on deletion.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "note_revisions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub note_id: Uuid,
    pub body: String,
    /// When this body was written (the note's creation or the edit that wrote it).
    pub written_at: DateTimeUtc,
    /// When an edit (or the deletion) replaced it.
    pub replaced_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
