//! A tenant's identity provider for federated login of its staff (OpenID Connect).

use sea_orm::entity::prelude::*;

use crate::tenant_ca::SealedKey;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenant_idps")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    /// The issuer exactly as the provider's discovery document states it.
    pub issuer: String,
    pub client_id: String,
    /// Sealed with the master key, like CA keys.
    pub client_secret_sealed: SealedKey,
    /// Roles that may log in this way, comma-separated (`CITY_ADMIN,FACILITY_ADMIN`).
    pub allowed_roles: String,
    /// Link an unlinked subject at its first login by a verified e-mail address.
    pub link_by_email: bool,
    pub updated_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
