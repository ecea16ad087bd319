//! Consents (form 8): a room is opened only with one, and without a valid one it is read-only.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, QueryOrder as _, Set,
};
use uuid::Uuid;

use entity::kinds::{AuditOutcome, RoomStatus};
use entity::{consent, room};

use crate::authz::rooms::RoomAdmin;
use crate::error::{AppError, AppResult};
use crate::service::audit::{self, Event, Origin};
use crate::service::now;
use crate::service::rooms::ConsentForm;

pub async fn insert_in(
    db: &impl ConnectionTrait,
    room: &room::Model,
    form: &ConsentForm,
    recorded_by: Uuid,
    origin: &Origin,
) -> AppResult<consent::Model> {
    let created = consent::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(room.tenant_id),
        room_id: Set(room.id),
        consenter: Set(form.consenter),
        consenter_name: Set(form.consenter_name.clone()),
        relationship: Set(form.relationship.clone()),
        consented_on: Set(form.consented_on),
        recorded_by: Set(recorded_by),
        recorded_at: Set(now()),
        withdrawn_by: Set(None),
        withdrawn_at: Set(None),
    }
    .insert(db)
    .await?;
    let event = Event::new(room.tenant_id, "consent.record", AuditOutcome::Allowed)
        .by(origin)
        .room(room.id)
        .target("consent", created.id)
        .detail("consenter", crate::service::enum_name(&created.consenter));
    audit::record(db, event).await?;
    Ok(created)
}

/// `recordConsent` (CITY_ADMIN): a CLOSED room takes no new consent.
pub async fn record(
    db: &sea_orm::DatabaseConnection,
    admin: &RoomAdmin,
    form: &ConsentForm,
    origin: &Origin,
) -> AppResult<consent::Model> {
    let txn = crate::db::begin_write(db).await?;
    let room = crate::service::rooms::reload(&txn, admin.room.id).await?;
    if room.status == RoomStatus::Closed {
        return Err(AppError::Conflict("the room is closed".into()));
    }
    let created = insert_in(&txn, &room, form, admin.admin_id, origin).await?;
    txn.commit().await?;
    Ok(created)
}

/// A consent of the caller's tenant (NOT_FOUND otherwise).
pub async fn in_tenant(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    id: Uuid,
) -> AppResult<consent::Model> {
    consent::Entity::find_by_id(id)
        .one(db)
        .await?
        .filter(|c| c.tenant_id == tenant_id)
        .ok_or(AppError::NotFound)
}

/// `withdrawConsent` (CITY_ADMIN of the consent's room). CONFLICT when already withdrawn.
pub async fn withdraw(
    db: &sea_orm::DatabaseConnection,
    admin: &RoomAdmin,
    consent: &consent::Model,
    origin: &Origin,
) -> AppResult<consent::Model> {
    let txn = crate::db::begin_write(db).await?;
    let moved = consent::Entity::update_many()
        .col_expr(consent::Column::WithdrawnAt, Expr::value(now()))
        .col_expr(consent::Column::WithdrawnBy, Expr::value(admin.admin_id))
        .filter(consent::Column::Id.eq(consent.id))
        .filter(consent::Column::WithdrawnAt.is_null())
        .exec(&txn)
        .await?;
    if moved.rows_affected != 1 {
        return Err(AppError::Conflict(
            "the consent is already withdrawn".into(),
        ));
    }
    let remaining = valid_count(&txn, consent.room_id).await?;
    let event = Event::new(consent.tenant_id, "consent.withdraw", AuditOutcome::Allowed)
        .by(origin)
        .room(consent.room_id)
        .target("consent", consent.id)
        .detail("validConsentsLeft", remaining);
    audit::record(&txn, event).await?;
    let withdrawn = consent::Entity::find_by_id(consent.id)
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound)?;
    txn.commit().await?;
    Ok(withdrawn)
}

async fn valid_count(db: &impl ConnectionTrait, room_id: Uuid) -> AppResult<u64> {
    Ok(consent::Entity::find()
        .filter(consent::Column::RoomId.eq(room_id))
        .filter(consent::Column::WithdrawnAt.is_null())
        .count(db)
        .await?)
}

/// Whether a consent not withdrawn is on file: without one the room is read-only.
pub async fn has_valid(db: &impl ConnectionTrait, room_id: Uuid) -> AppResult<bool> {
    Ok(valid_count(db, room_id).await? > 0)
}

/// The room's consents, oldest first.
pub async fn for_room(db: &impl ConnectionTrait, room_id: Uuid) -> AppResult<Vec<consent::Model>> {
    Ok(consent::Entity::find()
        .filter(consent::Column::RoomId.eq(room_id))
        .order_by_asc(consent::Column::Id)
        .all(db)
        .await?)
}
