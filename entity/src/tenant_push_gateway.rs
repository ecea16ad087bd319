//! A tenant's push gateway for native apps (the front-end vendor's FCM/APNs relay).

use sea_orm::entity::prelude::*;

use crate::tenant_ca::SealedKey;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenant_push_gateways")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    /// Where notifications are POSTed (https).
    pub url: String,
    /// The HMAC-SHA256 key of the body signature, sealed with the master key.
    pub secret_sealed: SealedKey,
    pub updated_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
