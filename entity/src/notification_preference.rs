//! A user's notification choices; no row means the defaults.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notification_preferences")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    pub in_app: bool,
    pub web_push: bool,
    pub gateway: bool,
    pub email: bool,
    /// Whether quiet hours apply to push and e-mail.
    pub quiet_hours: bool,
    /// Minutes after midnight in the tenant's time zone.
    pub quiet_start_minute: i32,
    pub quiet_end_minute: i32,
    pub updated_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
