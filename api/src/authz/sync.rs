//! Keeping every instance's enforcer in step with the tables.
//!
//! The code path that changes a membership or an account calls [`users_changed`] after its
//! transaction commits: this instance re-reads those users' rows at once, and a message on
//! Redis pub/sub tells every other instance to do the same. A message names users, not the
//! change, so applying one twice, late or out of order still ends at the rows' current state.
//! A periodic full reload ([`full_reload`]) is the safety net for a lost message.

use sea_orm::{
    ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _, QuerySelect as _,
};
use uuid::Uuid;

use entity::kinds::{AccountStatus, Role};
use entity::{room_member, user};

use crate::authz::enforcer::{Authorizer, Snapshot};
use crate::error::AppResult;
use crate::state::AppState;

/// Channel on which instances tell each other whose memberships or roles changed.
pub const AUTHZ_CHANNEL: &str = "authz-changed";

/// Users per pub/sub message (a facility's suspension may name hundreds).
const USERS_PER_MESSAGE: usize = 500;

/// Everything the enforcer holds, read from the tables.
pub async fn snapshot(db: &impl ConnectionTrait) -> AppResult<Snapshot> {
    let tenant_roles: Vec<(Uuid, Uuid, Role)> = user::Entity::find()
        .select_only()
        .column(user::Column::Id)
        .column(user::Column::TenantId)
        .column(user::Column::Role)
        .filter(user::Column::Status.ne(AccountStatus::Suspended))
        .into_tuple()
        .all(db)
        .await?;
    let memberships: Vec<(Uuid, Uuid)> = room_member::Entity::find()
        .select_only()
        .column(room_member::Column::UserId)
        .column(room_member::Column::RoomId)
        .filter(room_member::Column::LeftAt.is_null())
        .into_tuple()
        .all(db)
        .await?;
    Ok(Snapshot {
        tenant_roles,
        memberships,
    })
}

/// Applies the current rows of `users` to this instance's enforcer.
pub async fn apply_users(
    db: &impl ConnectionTrait,
    authz: &Authorizer,
    users: &[Uuid],
) -> AppResult<()> {
    if users.is_empty() {
        return Ok(());
    }
    let rows = user::Entity::find()
        .filter(user::Column::Id.is_in(users.iter().copied()))
        .all(db)
        .await?;
    let memberships: Vec<(Uuid, Uuid)> = room_member::Entity::find()
        .select_only()
        .column(room_member::Column::UserId)
        .column(room_member::Column::RoomId)
        .filter(room_member::Column::UserId.is_in(users.iter().copied()))
        .filter(room_member::Column::LeftAt.is_null())
        .into_tuple()
        .all(db)
        .await?;
    for row in rows {
        let rooms: Vec<Uuid> = memberships
            .iter()
            .filter(|(u, _)| *u == row.id)
            .map(|(_, r)| *r)
            .collect();
        let role = (row.status != AccountStatus::Suspended).then_some(row.role);
        authz.set_user(row.id, row.tenant_id, role, &rooms);
    }
    Ok(())
}

/// After a commit that changed memberships or accounts of `users`: applies them here at once
/// and tells the other instances.
pub async fn users_changed(state: &AppState, users: &[Uuid]) {
    if users.is_empty() {
        return;
    }
    if let Err(e) = apply_users(&state.db, &state.authz, users).await {
        tracing::error!(error = ?e, "applying membership changes to the enforcer failed; the periodic reload will");
    }
    if let Some(redis) = &state.redis {
        for chunk in users.chunks(USERS_PER_MESSAGE) {
            let message = chunk
                .iter()
                .map(Uuid::to_string)
                .collect::<Vec<_>>()
                .join(",");
            if let Err(e) = redis.publish(AUTHZ_CHANNEL, &message).await {
                tracing::warn!(error = %e, "could not announce a membership change; others pick it up on their next reload");
            }
        }
    }
}

/// A message from another instance: the users whose rows to re-read.
pub async fn on_message(state: &AppState, message: &str) {
    let users: Vec<Uuid> = message
        .split(',')
        .filter_map(|id| Uuid::parse_str(id.trim()).ok())
        .collect();
    if let Err(e) = apply_users(&state.db, &state.authz, &users).await {
        tracing::warn!(error = ?e, "applying a membership change message failed; the periodic reload will");
    }
}

/// Replaces the enforcer's groupings with the tables' current state; users changed while the
/// snapshot was read are applied again afterwards.
pub async fn full_reload(db: &impl ConnectionTrait, authz: &Authorizer) -> AppResult<usize> {
    authz.begin_reload();
    let snapshot = match snapshot(db).await {
        Ok(s) => s,
        Err(e) => {
            authz.abort_reload();
            return Err(e);
        }
    };
    let again = authz.finish_reload(snapshot);
    apply_users(db, authz, &again).await?;
    Ok(authz.groupings())
}
