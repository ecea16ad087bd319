//! Invitations to rooms: only ACTIVE users of the room's tenant, answered by the invitee
//! alone, expiring after `invitation_ttl_days`. Accepting makes the membership; accept and
//! revoke race safely (a conditional UPDATE out of PENDING gives one winner).

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, Set,
};
use uuid::Uuid;

use entity::kinds::{AccountStatus, AuditOutcome, InvitationStatus, RoomStatus};
use entity::{invitation, room, user};

use crate::authz::rooms::RoomAdmin;
use crate::config::Config;
use crate::error::{AppError, AppResult};
use crate::service::audit::{self, Event, Origin};
use crate::service::{enum_name, memberships, now};

/// The status as the invitee sees it: a PENDING invitation past its expiry is EXPIRED.
pub fn effective_status(inv: &invitation::Model) -> InvitationStatus {
    if inv.status == InvitationStatus::Pending && inv.expires_at <= now() {
        InvitationStatus::Expired
    } else {
        inv.status
    }
}

/// The user's open (pending, unexpired) invitation to the room, if any.
pub async fn pending_for(
    db: &impl ConnectionTrait,
    room_id: Uuid,
    user_id: Uuid,
) -> AppResult<Option<invitation::Model>> {
    Ok(invitation::Entity::find()
        .filter(invitation::Column::RoomId.eq(room_id))
        .filter(invitation::Column::InviteeId.eq(user_id))
        .filter(invitation::Column::Status.eq(InvitationStatus::Pending))
        .filter(invitation::Column::ExpiresAt.gt(now()))
        .one(db)
        .await?)
}

/// Marks the pair's expired PENDING invitation EXPIRED, so a new one can be made.
async fn expire_stale_in(db: &impl ConnectionTrait, room_id: Uuid, user_id: Uuid) -> AppResult<()> {
    invitation::Entity::update_many()
        .col_expr(
            invitation::Column::Status,
            Expr::value(enum_name(&InvitationStatus::Expired)),
        )
        .filter(invitation::Column::RoomId.eq(room_id))
        .filter(invitation::Column::InviteeId.eq(user_id))
        .filter(invitation::Column::Status.eq(InvitationStatus::Pending))
        .filter(invitation::Column::ExpiresAt.lte(now()))
        .exec(db)
        .await?;
    Ok(())
}

/// Invites `invitees` to the OPEN room, in the caller's transaction. `field` names the list in
/// errors. Other tenants' or unknown users: NOT_FOUND; not ACTIVE, already a member or already
/// invited: CONFLICT.
#[allow(clippy::too_many_arguments)]
pub async fn invite_in(
    db: &impl ConnectionTrait,
    config: &Config,
    room: &room::Model,
    invitees: &[Uuid],
    invited_by: Uuid,
    application_id: Option<Uuid>,
    field: &str,
    origin: &Origin,
) -> AppResult<Vec<invitation::Model>> {
    if room.status != RoomStatus::Open {
        return Err(AppError::Conflict(format!(
            "the room is {}: nobody can be invited",
            enum_name(&room.status)
        )));
    }
    if invitees.len() > 200 {
        return Err(AppError::bad_input(field, "at most 200 people at once"));
    }
    let mut seen = std::collections::HashSet::new();
    let ttl = Duration::days(i64::from(config.invitation_ttl_days));
    let mut made = Vec::new();
    for &user_id in invitees {
        if !seen.insert(user_id) {
            continue;
        }
        let invitee = user::Entity::find_by_id(user_id)
            .one(db)
            .await?
            .filter(|u| u.tenant_id == room.tenant_id)
            .ok_or(AppError::NotFound)?;
        if invitee.status != AccountStatus::Active {
            return Err(AppError::Conflict(format!(
                "{} is {} and cannot be invited",
                invitee.login_id,
                enum_name(&invitee.status)
            )));
        }
        if memberships::current(db, room.id, user_id).await?.is_some() {
            return Err(AppError::Conflict(format!(
                "{} is already a member of the room",
                invitee.login_id
            )));
        }
        expire_stale_in(db, room.id, user_id).await?;
        if pending_for(db, room.id, user_id).await?.is_some() {
            return Err(AppError::Conflict(format!(
                "{} is already invited to the room",
                invitee.login_id
            )));
        }
        let at = now();
        let created = invitation::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(room.tenant_id),
            room_id: Set(room.id),
            invitee_id: Set(user_id),
            invited_by: Set(invited_by),
            application_id: Set(application_id),
            status: Set(InvitationStatus::Pending),
            created_at: Set(at),
            expires_at: Set(at + ttl),
            answered_at: Set(None),
            answered_by: Set(None),
        }
        .insert(db)
        .await
        .map_err(|e| match e.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => AppError::Conflict(format!(
                "{} is already invited to the room",
                invitee.login_id
            )),
            _ => e.into(),
        })?;
        let event = Event::new(room.tenant_id, "invitation.create", AuditOutcome::Allowed)
            .by(origin)
            .room(room.id)
            .target("invitation", created.id)
            .detail("inviteeId", user_id.to_string());
        audit::record(db, event).await?;
        made.push(created);
    }
    crate::notify::invited_in(db, config, &made).await?;
    Ok(made)
}

/// `inviteToRoom` (CITY_ADMIN).
pub async fn invite(
    db: &sea_orm::DatabaseConnection,
    config: &Config,
    admin: &RoomAdmin,
    invitees: &[Uuid],
    origin: &Origin,
) -> AppResult<Vec<invitation::Model>> {
    let txn = crate::db::begin_write(db).await?;
    let room = crate::service::rooms::reload(&txn, admin.room.id).await?;
    let made = invite_in(
        &txn,
        config,
        &room,
        invitees,
        admin.admin_id,
        None,
        "userIds",
        origin,
    )
    .await?;
    txn.commit().await?;
    Ok(made)
}

/// An invitation of the caller's tenant (NOT_FOUND otherwise).
pub async fn in_tenant(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    id: Uuid,
) -> AppResult<invitation::Model> {
    invitation::Entity::find_by_id(id)
        .one(db)
        .await?
        .filter(|i| i.tenant_id == tenant_id)
        .ok_or(AppError::NotFound)
}

async fn reload(db: &impl ConnectionTrait, id: Uuid) -> AppResult<invitation::Model> {
    invitation::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("invitation {id} vanished")))
}

/// Moves a PENDING, unexpired invitation to `to`; false when it was no longer open (answered,
/// revoked or expired: the other side of a race won).
async fn answer(
    db: &impl ConnectionTrait,
    id: Uuid,
    to: InvitationStatus,
    by: Uuid,
) -> AppResult<bool> {
    let at = now();
    let moved = invitation::Entity::update_many()
        .col_expr(invitation::Column::Status, Expr::value(enum_name(&to)))
        .col_expr(invitation::Column::AnsweredAt, Expr::value(at))
        .col_expr(invitation::Column::AnsweredBy, Expr::value(by))
        .filter(invitation::Column::Id.eq(id))
        .filter(invitation::Column::Status.eq(InvitationStatus::Pending))
        .filter(invitation::Column::ExpiresAt.gt(at))
        .exec(db)
        .await?;
    Ok(moved.rows_affected == 1)
}

fn no_longer_open(inv: &invitation::Model) -> AppError {
    AppError::Conflict(format!(
        "the invitation is {}",
        enum_name(&effective_status(inv))
    ))
}

fn event(inv: &invitation::Model, action: &'static str, origin: &Origin) -> Event {
    Event::new(inv.tenant_id, action, AuditOutcome::Allowed)
        .by(origin)
        .room(inv.room_id)
        .target("invitation", inv.id)
        .detail("inviteeId", inv.invitee_id.to_string())
}

/// `revokeInvitation` (CITY_ADMIN of the invitation's room).
pub async fn revoke(
    db: &sea_orm::DatabaseConnection,
    admin: &RoomAdmin,
    inv: &invitation::Model,
    origin: &Origin,
) -> AppResult<invitation::Model> {
    let txn = crate::db::begin_write(db).await?;
    if !answer(&txn, inv.id, InvitationStatus::Revoked, admin.admin_id).await? {
        return Err(no_longer_open(&reload(&txn, inv.id).await?));
    }
    audit::record(&txn, event(inv, "invitation.revoke", origin)).await?;
    let revoked = reload(&txn, inv.id).await?;
    txn.commit().await?;
    Ok(revoked)
}

/// `acceptInvitation` (the invitee): the membership starts. The caller applies it to the
/// enforcer after commit.
pub async fn accept(
    db: &sea_orm::DatabaseConnection,
    caller: &user::Model,
    inv: &invitation::Model,
    origin: &Origin,
) -> AppResult<room::Model> {
    if inv.invitee_id != caller.id {
        return Err(AppError::Forbidden);
    }
    let txn = crate::db::begin_write(db).await?;
    let room = crate::service::rooms::reload(&txn, inv.room_id).await?;
    if room.status == RoomStatus::Closed {
        return Err(AppError::Conflict("the room is closed".into()));
    }
    if !answer(&txn, inv.id, InvitationStatus::Accepted, caller.id).await? {
        return Err(no_longer_open(&reload(&txn, inv.id).await?));
    }
    memberships::join_in(&txn, &room, caller.id, Some(inv.invited_by), Some(inv.id)).await?;
    audit::record(&txn, event(inv, "invitation.accept", origin)).await?;
    txn.commit().await?;
    Ok(room)
}

/// `declineInvitation` (the invitee).
pub async fn decline(
    db: &sea_orm::DatabaseConnection,
    caller: &user::Model,
    inv: &invitation::Model,
    origin: &Origin,
) -> AppResult<invitation::Model> {
    if inv.invitee_id != caller.id {
        return Err(AppError::Forbidden);
    }
    let txn = crate::db::begin_write(db).await?;
    if !answer(&txn, inv.id, InvitationStatus::Declined, caller.id).await? {
        return Err(no_longer_open(&reload(&txn, inv.id).await?));
    }
    audit::record(&txn, event(inv, "invitation.decline", origin)).await?;
    let declined = reload(&txn, inv.id).await?;
    txn.commit().await?;
    Ok(declined)
}

/// The caller's open invitations, newest first.
pub async fn mine(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<Vec<invitation::Model>> {
    Ok(invitation::Entity::find()
        .filter(invitation::Column::InviteeId.eq(user_id))
        .filter(invitation::Column::Status.eq(InvitationStatus::Pending))
        .filter(invitation::Column::ExpiresAt.gt(now()))
        .order_by_desc(invitation::Column::Id)
        .all(db)
        .await?)
}

/// Every invitation of the room, newest first (the city's view).
pub async fn of_room(
    db: &impl ConnectionTrait,
    room_id: Uuid,
) -> AppResult<Vec<invitation::Model>> {
    Ok(invitation::Entity::find()
        .filter(invitation::Column::RoomId.eq(room_id))
        .order_by_desc(invitation::Column::Id)
        .all(db)
        .await?)
}

async fn revoke_all_in(
    db: &impl ConnectionTrait,
    pending: Vec<invitation::Model>,
    by: Option<Uuid>,
    reason: &str,
    origin: &Origin,
) -> AppResult<()> {
    let at = now();
    for inv in pending {
        let moved = invitation::Entity::update_many()
            .col_expr(
                invitation::Column::Status,
                Expr::value(enum_name(&InvitationStatus::Revoked)),
            )
            .col_expr(invitation::Column::AnsweredAt, Expr::value(at))
            .col_expr(invitation::Column::AnsweredBy, Expr::value(by))
            .filter(invitation::Column::Id.eq(inv.id))
            .filter(invitation::Column::Status.eq(InvitationStatus::Pending))
            .exec(db)
            .await?;
        if moved.rows_affected == 1 {
            audit::record(
                db,
                event(&inv, "invitation.revoke", origin).detail("reason", reason.to_string()),
            )
            .await?;
        }
    }
    Ok(())
}

/// A room closes: its pending invitations are revoked.
pub async fn revoke_pending_of_room_in(
    db: &impl ConnectionTrait,
    room: &room::Model,
    by: Uuid,
    origin: &Origin,
) -> AppResult<()> {
    let pending = invitation::Entity::find()
        .filter(invitation::Column::RoomId.eq(room.id))
        .filter(invitation::Column::Status.eq(InvitationStatus::Pending))
        .all(db)
        .await?;
    revoke_all_in(db, pending, Some(by), "room closed", origin).await
}

/// Users are suspended: their pending invitations are revoked.
pub async fn revoke_pending_of_users_in(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    users: &[Uuid],
    origin: &Origin,
) -> AppResult<()> {
    let pending = invitation::Entity::find()
        .filter(invitation::Column::TenantId.eq(tenant_id))
        .filter(invitation::Column::InviteeId.is_in(users.iter().copied()))
        .filter(invitation::Column::Status.eq(InvitationStatus::Pending))
        .all(db)
        .await?;
    revoke_all_in(db, pending, origin.actor_id, "account suspended", origin).await
}

/// Tells the invitees of every invitation made in the tenant since `since` (their `myEvents`),
/// after the request that made them committed.
pub async fn announce_since(state: &crate::state::AppState, tenant_id: Uuid, since: DateTime<Utc>) {
    let made = invitation::Entity::find()
        .filter(invitation::Column::TenantId.eq(tenant_id))
        .filter(invitation::Column::Status.eq(InvitationStatus::Pending))
        .filter(invitation::Column::CreatedAt.gte(since))
        .all(&state.db)
        .await;
    match made {
        Ok(made) => {
            state
                .events
                .publish(
                    made.into_iter()
                        .map(|i| crate::events::LiveEvent::Invitation {
                            user_id: i.invitee_id,
                            room_id: i.room_id,
                            invitation_id: i.id,
                        }),
                )
                .await;
        }
        Err(e) => tracing::warn!(error = %e, "could not announce new invitations"),
    }
}
