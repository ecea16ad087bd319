//! A municipality running its own network: its users, facilities, rooms and CA.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub slug: String,
    pub name: String,
    /// IANA zone used to render times for this tenant's users.
    pub time_zone: String,
    /// `MODERN` or `LEGACY`: default PKCS#12 encoding of issued certificates.
    pub pkcs12_encoding: String,
    /// Rule ⑫: facility admins may manage their own staff's certificates and passwords.
    pub facility_admin_delegation: bool,
    pub certificate_validity_days: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    #[sea_orm(has_many)]
    pub facilities: HasMany<super::facility::Entity>,
    #[sea_orm(has_many)]
    pub users: HasMany<super::user::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
