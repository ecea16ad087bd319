//! Room memberships: one row per membership period (joined, left, invited by, removed by,
//! reason). These rows are the truth the authorization enforcer is loaded from; every change
//! here is followed, after commit, by `authz::sync::users_changed` for the users concerned.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _, Set,
};
use uuid::Uuid;

use entity::kinds::AuditOutcome;
use entity::{room, room_member};

use crate::authz::rooms::RoomAdmin;
use crate::error::{AppError, AppResult};
use crate::service::audit::{self, Event, Origin};
use crate::service::{forms, invitations, now};

/// Starts a membership (an accepted invitation), in the caller's transaction.
pub async fn join_in(
    db: &impl ConnectionTrait,
    room: &room::Model,
    user_id: Uuid,
    invited_by: Option<Uuid>,
    invitation_id: Option<Uuid>,
) -> AppResult<room_member::Model> {
    let joined = room_member::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(room.tenant_id),
        room_id: Set(room.id),
        user_id: Set(user_id),
        invited_by: Set(invited_by),
        invitation_id: Set(invitation_id),
        joined_at: Set(now()),
        left_at: Set(None),
        removed_by: Set(None),
        leave_reason: Set(None),
    }
    .insert(db)
    .await
    .map_err(|e| match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
            AppError::Conflict("already a member of the room".into())
        }
        _ => e.into(),
    })?;
    Ok(joined)
}

/// The user's current membership of the room, if any.
pub async fn current(
    db: &impl ConnectionTrait,
    room_id: Uuid,
    user_id: Uuid,
) -> AppResult<Option<room_member::Model>> {
    Ok(room_member::Entity::find()
        .filter(room_member::Column::RoomId.eq(room_id))
        .filter(room_member::Column::UserId.eq(user_id))
        .filter(room_member::Column::LeftAt.is_null())
        .one(db)
        .await?)
}

/// Whether the user is a current member, holding a shared lock on its membership row until the
/// transaction ends (PostgreSQL), so a removal cannot slip between this check and the write.
pub async fn is_current_locked(
    db: &impl ConnectionTrait,
    room_id: Uuid,
    user_id: Uuid,
) -> AppResult<bool> {
    let mut select = room_member::Entity::find()
        .filter(room_member::Column::RoomId.eq(room_id))
        .filter(room_member::Column::UserId.eq(user_id))
        .filter(room_member::Column::LeftAt.is_null());
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        select = select.lock_shared();
    }
    Ok(select.one(db).await?.is_some())
}

/// The room's current members, in joining order.
pub async fn of_room(
    db: &impl ConnectionTrait,
    room_id: Uuid,
) -> AppResult<Vec<room_member::Model>> {
    Ok(room_member::Entity::find()
        .filter(room_member::Column::RoomId.eq(room_id))
        .filter(room_member::Column::LeftAt.is_null())
        .order_by_asc(room_member::Column::JoinedAt)
        .all(db)
        .await?)
}

/// Ends memberships matching `filter` (current ones only) with a reason; returns the ended rows.
async fn end_in(
    db: &impl ConnectionTrait,
    ending: Vec<room_member::Model>,
    removed_by: Option<Uuid>,
    reason: &str,
    origin: &Origin,
) -> AppResult<Vec<room_member::Model>> {
    let at = now();
    let mut ended = Vec::with_capacity(ending.len());
    for m in ending {
        let moved = room_member::Entity::update_many()
            .col_expr(room_member::Column::LeftAt, Expr::value(at))
            .col_expr(room_member::Column::RemovedBy, Expr::value(removed_by))
            .col_expr(
                room_member::Column::LeaveReason,
                Expr::value(reason.to_string()),
            )
            .filter(room_member::Column::Id.eq(m.id))
            .filter(room_member::Column::LeftAt.is_null())
            .exec(db)
            .await?;
        if moved.rows_affected == 1 {
            let event = Event::new(m.tenant_id, "member.remove", AuditOutcome::Allowed)
                .by(origin)
                .room(m.room_id)
                .target("user", m.user_id)
                .detail("reason", reason.to_string());
            audit::record(db, event).await?;
            ended.push(m);
        }
    }
    Ok(ended)
}

/// `removeRoomMember` (CITY_ADMIN): ends one membership. CONFLICT when the user is not a
/// current member. The caller applies the change to the enforcer after commit.
pub async fn remove(
    db: &sea_orm::DatabaseConnection,
    admin: &RoomAdmin,
    user_id: Uuid,
    reason: &str,
    origin: &Origin,
) -> AppResult<room::Model> {
    let reason = forms::reason("reason", reason)?;
    let txn = crate::db::begin_write(db).await?;
    let Some(membership) = current(&txn, admin.room.id, user_id).await? else {
        return Err(AppError::Conflict(
            "the user is not a member of the room".into(),
        ));
    };
    end_in(
        &txn,
        vec![membership],
        Some(admin.admin_id),
        &reason,
        origin,
    )
    .await?;
    let room = crate::service::rooms::reload(&txn, admin.room.id).await?;
    txn.commit().await?;
    Ok(room)
}

/// Ends every room membership and revokes every pending invitation of `users`, in the
/// caller's (suspension's) transaction; returns how many memberships ended. The caller
/// applies the change to the enforcer after commit (`accounts::finish_suspension`).
pub async fn end_for_suspended_users(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    users: &[Uuid],
    origin: &Origin,
) -> AppResult<u64> {
    if users.is_empty() {
        return Ok(0);
    }
    let current = room_member::Entity::find()
        .filter(room_member::Column::TenantId.eq(tenant_id))
        .filter(room_member::Column::UserId.is_in(users.iter().copied()))
        .filter(room_member::Column::LeftAt.is_null())
        .all(db)
        .await?;
    let ended = end_in(db, current, origin.actor_id, "account suspended", origin).await?;
    invitations::revoke_pending_of_users_in(db, tenant_id, users, origin).await?;
    Ok(ended.len() as u64)
}
