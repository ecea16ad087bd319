//! A registered medical institution or care provider (事業所).

use sea_orm::entity::prelude::*;

use crate::kinds::{AccountStatus, FacilityKind};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "facilities")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// `F0012`: the number in the city's register; staff log in as `f0012-001`.
    pub code: Option<String>,
    pub kind: FacilityKind,
    pub name: String,
    pub address: Option<String>,
    pub phone: Option<String>,
    pub representative_name: Option<String>,
    pub inside_municipality: bool,
    pub status: AccountStatus,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    #[sea_orm(belongs_to, from = "tenant_id", to = "id")]
    pub tenant: BelongsTo<super::tenant::Entity>,
    #[sea_orm(has_many)]
    pub users: HasMany<super::user::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
