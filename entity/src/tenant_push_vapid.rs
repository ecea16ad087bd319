//! A tenant's VAPID key pair (RFC 8292), generated once; browsers subscribe with its public key.

use sea_orm::entity::prelude::*;

use crate::tenant_ca::SealedKey;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenant_push_vapid_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    /// Uncompressed P-256 point, base64url without padding (the `applicationServerKey`).
    pub public_key: String,
    /// PKCS#8 of the private key, sealed with the master key.
    pub private_key_sealed: SealedKey,
    pub created_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
