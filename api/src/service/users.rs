//! Reading users and what they belong to.

use sea_orm::{ConnectionTrait, EntityTrait as _};
use uuid::Uuid;

use entity::{facility, tenant, user};

use crate::error::{AppError, AppResult};

pub async fn by_id(db: &impl ConnectionTrait, id: Uuid) -> AppResult<Option<user::Model>> {
    Ok(user::Entity::find_by_id(id).one(db).await?)
}

pub async fn tenant_of(db: &impl ConnectionTrait, user: &user::Model) -> AppResult<tenant::Model> {
    tenant::Entity::find_by_id(user.tenant_id)
        .one(db)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("user {} has no tenant", user.id)))
}

pub async fn facility(db: &impl ConnectionTrait, id: Uuid) -> AppResult<Option<facility::Model>> {
    Ok(facility::Entity::find_by_id(id).one(db).await?)
}

/// Parses a GraphQL ID into a UUID; anything else names no object.
pub fn parse_id(id: &str) -> AppResult<Uuid> {
    Uuid::parse_str(id).map_err(|_| AppError::NotFound)
}
