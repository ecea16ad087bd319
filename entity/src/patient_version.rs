//! The patient as it was before an `updatePatient`.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "patient_versions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub room_id: Uuid,
    pub patient: Json,
    pub replaced_at: DateTimeUtc,
    pub replaced_by: Uuid,
}

impl ActiveModelBehavior for ActiveModel {}
