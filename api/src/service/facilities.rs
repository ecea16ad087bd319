//! Facilities (事業所) in the city's register: creation with a readable code, changes from
//! form 7, suspension (form 3 for a whole facility) and reactivation.

use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    Set,
};
use uuid::Uuid;

use entity::facility;
use entity::kinds::{AccountStatus, AuditOutcome, FacilityKind};

use crate::error::{AppError, AppResult};
use crate::service::audit::{self, Event, Origin};
use crate::service::{counters, now};

/// What a new facility is made of (validated by `forms`).
#[derive(Debug, Clone)]
pub struct NewFacility {
    pub kind: FacilityKind,
    pub name: String,
    pub address: String,
    pub phone: String,
    pub representative_name: String,
    pub inside_municipality: bool,
}

/// `F0012` from register number 12.
pub fn code_of(number: i64) -> String {
    format!("F{number:04}")
}

/// The next register code of the tenant (taken, never reused).
pub async fn take_code(db: &impl ConnectionTrait, tenant_id: Uuid) -> AppResult<String> {
    Ok(code_of(counters::take(db, tenant_id, "facility", 1).await?))
}

/// The facility's code, giving it one first if it has none (facilities made before codes).
pub async fn ensure_code(
    db: &impl ConnectionTrait,
    facility: &facility::Model,
) -> AppResult<String> {
    if let Some(code) = &facility.code {
        return Ok(code.clone());
    }
    let code = take_code(db, facility.tenant_id).await?;
    // Only if still without one: a concurrent caller may have given it one meanwhile.
    facility::Entity::update_many()
        .col_expr(
            facility::Column::Code,
            sea_orm::sea_query::Expr::value(code.clone()),
        )
        .filter(facility::Column::Id.eq(facility.id))
        .filter(facility::Column::Code.is_null())
        .exec(db)
        .await?;
    facility::Entity::find_by_id(facility.id)
        .one(db)
        .await?
        .and_then(|f| f.code)
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("facility {} has no code", facility.id)))
}

/// Inserts a facility with `code` and records `facility.create`.
pub async fn insert(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    id: Uuid,
    code: String,
    new: NewFacility,
    origin: &Origin,
) -> AppResult<facility::Model> {
    let at = now();
    let created = facility::ActiveModel {
        id: Set(id),
        tenant_id: Set(tenant_id),
        code: Set(Some(code)),
        kind: Set(new.kind),
        name: Set(new.name),
        address: Set(Some(new.address)),
        phone: Set(Some(new.phone)),
        representative_name: Set(Some(new.representative_name)),
        inside_municipality: Set(new.inside_municipality),
        status: Set(AccountStatus::Active),
        created_at: Set(at),
        updated_at: Set(at),
    }
    .insert(db)
    .await?;
    let event = Event::new(tenant_id, "facility.create", AuditOutcome::Allowed)
        .by(origin)
        .target("facility", created.id)
        .detail("code", created.code.clone().unwrap_or_default())
        .detail("name", created.name.clone());
    audit::record(db, event).await?;
    Ok(created)
}

/// Creates a facility outside any application (operator tools and tests): takes a code and
/// inserts, in the caller's transaction.
pub async fn create(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    new: NewFacility,
    origin: &Origin,
) -> AppResult<facility::Model> {
    let code = take_code(db, tenant_id).await?;
    insert(db, tenant_id, Uuid::now_v7(), code, new, origin).await
}

/// Changed facility details (form 7); `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FacilityChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub representative_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inside_municipality: Option<bool>,
}

impl FacilityChanges {
    pub fn is_empty(&self) -> bool {
        *self == FacilityChanges::default()
    }
}

/// Applies form 7's facility part and records `facility.update` with the changed fields.
pub async fn apply_changes(
    db: &impl ConnectionTrait,
    facility: facility::Model,
    changes: &FacilityChanges,
    origin: &Origin,
) -> AppResult<facility::Model> {
    let mut changed = Vec::new();
    let mut active: facility::ActiveModel = facility.clone().into();
    if let Some(name) = &changes.name {
        active.name = Set(name.clone());
        changed.push("name");
    }
    if let Some(address) = &changes.address {
        active.address = Set(Some(address.clone()));
        changed.push("address");
    }
    if let Some(phone) = &changes.phone {
        active.phone = Set(Some(phone.clone()));
        changed.push("phone");
    }
    if let Some(rep) = &changes.representative_name {
        active.representative_name = Set(Some(rep.clone()));
        changed.push("representativeName");
    }
    if let Some(inside) = changes.inside_municipality {
        active.inside_municipality = Set(inside);
        changed.push("insideMunicipality");
    }
    if changed.is_empty() {
        return Ok(facility);
    }
    active.updated_at = Set(now());
    let updated = active.update(db).await?;
    let event = Event::new(updated.tenant_id, "facility.update", AuditOutcome::Allowed)
        .by(origin)
        .target("facility", updated.id)
        .detail("fields", changed.join(","));
    audit::record(db, event).await?;
    Ok(updated)
}

/// Sets the facility's status and records `facility.suspend` / `facility.reactivate`.
pub async fn set_status(
    db: &impl ConnectionTrait,
    facility: facility::Model,
    status: AccountStatus,
    reason: Option<&str>,
    origin: &Origin,
) -> AppResult<facility::Model> {
    let action = match status {
        AccountStatus::Suspended => "facility.suspend",
        AccountStatus::Active | AccountStatus::Locked => "facility.reactivate",
    };
    let mut active: facility::ActiveModel = facility.into();
    active.status = Set(status);
    active.updated_at = Set(now());
    let updated = active.update(db).await?;
    let mut event = Event::new(updated.tenant_id, action, AuditOutcome::Allowed)
        .by(origin)
        .target("facility", updated.id);
    if let Some(reason) = reason {
        event = event.detail("reason", reason.to_string());
    }
    audit::record(db, event).await?;
    Ok(updated)
}

/// The facility of the caller's tenant, or NOT_FOUND (other tenants' ids do not exist).
pub async fn in_tenant(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    id: Uuid,
) -> AppResult<facility::Model> {
    crate::service::users::facility(db, id)
        .await?
        .filter(|f| f.tenant_id == tenant_id)
        .ok_or(AppError::NotFound)
}
