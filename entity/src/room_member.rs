//! One membership period of a user in a room; `left_at` is set when it ends. The truth from
//! which the authorization enforcer is loaded.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "room_members")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub room_id: Uuid,
    pub user_id: Uuid,
    pub invited_by: Option<Uuid>,
    pub invitation_id: Option<Uuid>,
    pub joined_at: DateTimeUtc,
    pub left_at: Option<DateTimeUtc>,
    pub removed_by: Option<Uuid>,
    pub leave_reason: Option<String>,
}

impl ActiveModelBehavior for ActiveModel {}
