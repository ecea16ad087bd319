//! Users: reading them and what they belong to, and creating accounts.

use sea_orm::{ActiveModelTrait as _, ConnectionTrait, EntityTrait as _, Set};
use uuid::Uuid;

use entity::kinds::{AccountStatus, AuditOutcome, Occupation, Role};
use entity::{facility, tenant, user};

use crate::error::{AppError, AppResult};
use crate::service::audit::{self, Event, Origin};
use crate::service::forms::StaffChange;
use crate::service::{enum_name, now};

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

/// A new account: random initial password already hashed, to be changed at first login.
pub struct NewUser {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub facility_id: Option<Uuid>,
    pub login_id: String,
    pub display_name: String,
    pub display_name_kana: Option<String>,
    pub email: Option<String>,
    pub occupation: Occupation,
    pub role: Role,
    pub password_hash: String,
}

/// Inserts an ACTIVE account that must change its initial password, recording `user.create`.
pub async fn insert(
    db: &impl ConnectionTrait,
    new: NewUser,
    origin: &Origin,
) -> AppResult<user::Model> {
    let at = now();
    let created = user::ActiveModel {
        id: Set(new.id),
        tenant_id: Set(new.tenant_id),
        facility_id: Set(new.facility_id),
        login_id: Set(new.login_id),
        display_name: Set(new.display_name),
        display_name_kana: Set(new.display_name_kana),
        email: Set(new.email),
        occupation: Set(new.occupation),
        role: Set(new.role),
        status: Set(AccountStatus::Active),
        password_hash: Set(Some(user::PasswordHash(new.password_hash))),
        must_change_password: Set(true),
        password_changed_at: Set(None),
        pledge_accepted_at: Set(None),
        pledge_version: Set(None),
        failed_login_count: Set(0),
        locked_until: Set(None),
        suspension_reason: Set(None),
        created_at: Set(at),
        updated_at: Set(at),
    }
    .insert(db)
    .await?;
    let mut event = Event::new(created.tenant_id, "user.create", AuditOutcome::Allowed)
        .by(origin)
        .target("user", created.id)
        .detail("loginId", created.login_id.clone())
        .detail("role", enum_name(&created.role));
    if let Some(facility) = created.facility_id {
        event = event.detail("facilityId", facility.to_string());
    }
    audit::record(db, event).await?;
    Ok(created)
}

/// A user of the caller's tenant, or NOT_FOUND (other tenants' ids do not exist).
pub async fn in_tenant(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    id: Uuid,
) -> AppResult<user::Model> {
    by_id(db, id)
        .await?
        .filter(|u| u.tenant_id == tenant_id)
        .ok_or(AppError::NotFound)
}

/// Applies form 7's change to one person (name, kana, occupation, e-mail, facility admin
/// flag) and records `user.update` naming the changed fields.
pub async fn apply_change(
    db: &impl ConnectionTrait,
    current: user::Model,
    change: &StaffChange,
    origin: &Origin,
) -> AppResult<user::Model> {
    let mut fields = Vec::new();
    let mut active: user::ActiveModel = current.clone().into();
    if let Some(name) = &change.display_name {
        active.display_name = Set(name.clone());
        fields.push("displayName");
    }
    if let Some(kana) = &change.display_name_kana {
        active.display_name_kana = Set(Some(kana.clone()));
        fields.push("displayNameKana");
    }
    if let Some(occupation) = change.occupation {
        active.occupation = Set(occupation);
        fields.push("occupation");
    }
    if let Some(email) = &change.email {
        active.email = Set(Some(email.clone()));
        fields.push("email");
    }
    if let Some(admin) = change.facility_admin {
        let role = if admin {
            Role::FacilityAdmin
        } else {
            Role::Staff
        };
        if role != current.role {
            active.role = Set(role);
            fields.push("role");
        }
    }
    if fields.is_empty() {
        return Ok(current);
    }
    active.updated_at = Set(now());
    let updated = active.update(db).await?;
    let event = Event::new(updated.tenant_id, "user.update", AuditOutcome::Allowed)
        .by(origin)
        .target("user", updated.id)
        .detail("fields", fields.join(","))
        .detail("role", enum_name(&updated.role));
    audit::record(db, event).await?;
    Ok(updated)
}
