//! A browser's Web Push subscription (RFC 8030 endpoint, RFC 8291 keys) of one user.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "push_subscriptions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    /// The push service's URL for this browser (https).
    pub endpoint: String,
    /// The browser's P-256 public key, uncompressed, base64url without padding.
    pub p256dh: String,
    /// The 16-byte authentication secret, base64url without padding.
    pub auth: String,
    pub device_label: Option<String>,
    pub created_at: DateTimeUtc,
    pub last_success_at: Option<DateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}
