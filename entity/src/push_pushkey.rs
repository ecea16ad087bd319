//! A native app's pushkey on one device, delivered through the tenant's push gateway.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "push_pushkeys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    /// The app's identifier at the gateway (`jp.example.renkei.ios`).
    pub app_id: String,
    /// The device token the gateway understands (FCM registration token, APNs token …).
    pub pushkey: String,
    pub device_label: Option<String>,
    /// When the app last registered this pushkey.
    pub pushkey_ts: DateTimeUtc,
    pub created_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
