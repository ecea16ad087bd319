//! A user's account at the tenant's identity provider (issuer + subject).

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "external_identities")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub issuer: String,
    pub subject: String,
    /// `ADMIN` (linked by a CITY_ADMIN) or `EMAIL` (at a first login by verified e-mail).
    pub method: String,
    pub linked_by: Option<Uuid>,
    pub linked_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
