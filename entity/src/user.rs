//! A person with a login: one ID per person, never shared.

use sea_orm::entity::prelude::*;

use crate::kinds::{AccountStatus, Occupation, Role};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub facility_id: Option<Uuid>,
    pub login_id: String,
    pub display_name: String,
    pub display_name_kana: Option<String>,
    pub email: Option<String>,
    pub occupation: Occupation,
    pub role: Role,
    pub status: AccountStatus,
    /// Argon2id PHC string; `None` until a password is set.
    pub password_hash: Option<PasswordHash>,
    pub must_change_password: bool,
    pub password_changed_at: Option<DateTimeUtc>,
    pub pledge_accepted_at: Option<DateTimeUtc>,
    pub pledge_version: Option<String>,
    pub failed_login_count: i32,
    pub locked_until: Option<DateTimeUtc>,
    pub suspension_reason: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    #[sea_orm(belongs_to, from = "tenant_id", to = "id")]
    pub tenant: BelongsTo<super::tenant::Entity>,
    #[sea_orm(belongs_to, from = "facility_id", to = "id")]
    pub facility: BelongsTo<Option<super::facility::Entity>>,
    #[sea_orm(has_many)]
    pub certificates: HasMany<super::certificate::Entity>,
}

/// An Argon2id PHC string. Not a secret by itself, but kept out of logs all the same.
#[derive(Clone, PartialEq, Eq, DeriveValueType)]
pub struct PasswordHash(pub String);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

impl ActiveModelBehavior for ActiveModel {}
