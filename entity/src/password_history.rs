//! Earlier password hashes of a user, so the last few cannot be reused.

use sea_orm::entity::prelude::*;

use crate::user::PasswordHash;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "password_history")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub password_hash: PasswordHash,
    pub created_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
