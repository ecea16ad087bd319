//! A consent (form 8) to share the patient's information in its room.

use sea_orm::entity::prelude::*;

use crate::kinds::Consenter;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "consents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub room_id: Uuid,
    pub consenter: Consenter,
    pub consenter_name: String,
    pub relationship: Option<String>,
    pub consented_on: Date,
    pub recorded_by: Uuid,
    pub recorded_at: DateTimeUtc,
    pub withdrawn_by: Option<Uuid>,
    pub withdrawn_at: Option<DateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}
