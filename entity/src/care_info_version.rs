//! One version of a room's care information section; the current one has the greatest version.

use sea_orm::entity::prelude::*;

use crate::kinds::CareInfoKind;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "care_info_versions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub room_id: Uuid,
    pub kind: CareInfoKind,
    pub version: i32,
    pub content: String,
    pub updated_at: DateTimeUtc,
    pub updated_by: Uuid,
}

impl ActiveModelBehavior for ActiveModel {}
