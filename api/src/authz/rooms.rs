//! Capabilities for patient rooms. Room content is reachable only through a [`RoomAccess`]
//! (a current member), room management only through a [`RoomAdmin`] (the city); both are made
//! here, from the casbin enforcer's decision, and nowhere else.

use sea_orm::ConnectionTrait;
use uuid::Uuid;

use entity::{room, user};

use crate::authz::enforcer::{Authorizer, room_domain, tenant_domain};
use crate::error::{AppError, AppResult};

/// The caller is a current member of `room`: it reads the room's content, and writes it while
/// the room is OPEN with a valid consent (checked again in the writing transaction).
#[derive(Debug, Clone)]
pub struct RoomAccess {
    pub room: room::Model,
    pub user_id: Uuid,
}

/// The caller is CITY_ADMIN of the room's tenant: it manages the room (invitations, members,
/// consents, closing) without reading its clinical content.
#[derive(Debug, Clone)]
pub struct RoomAdmin {
    pub room: room::Model,
    pub admin_id: Uuid,
}

/// The caller may open rooms in its tenant (CITY_ADMIN).
#[derive(Debug, Clone, Copy)]
pub struct RoomOpener {
    pub tenant_id: Uuid,
    pub admin_id: Uuid,
}

/// How the caller stands to one room it may see at all.
#[derive(Debug, Clone)]
pub struct RoomViewer {
    pub room: room::Model,
    pub user_id: Uuid,
    pub member: bool,
    pub city: bool,
    /// Holds a pending invitation: sees the room's id and patient label, nothing else.
    pub invitee: bool,
}

impl RoomViewer {
    /// The room's content (patient, notes, vitals, care information): members only.
    pub fn access(&self) -> AppResult<RoomAccess> {
        if self.member {
            Ok(RoomAccess {
                room: self.room.clone(),
                user_id: self.user_id,
            })
        } else {
            Err(AppError::Forbidden)
        }
    }

    /// Members and consents: members and the city.
    pub fn sees_members(&self) -> AppResult<()> {
        if self.member || self.city {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        }
    }

    /// Invitations: the city.
    pub fn admin(&self) -> AppResult<RoomAdmin> {
        if self.city {
            Ok(RoomAdmin {
                room: self.room.clone(),
                admin_id: self.user_id,
            })
        } else {
            Err(AppError::Forbidden)
        }
    }
}

/// The caller's tenant role, as its row (just read for this request) says, in the enforcer.
fn tenant_allowed(authz: &Authorizer, caller: &user::Model, obj: &str, act: &str) -> bool {
    authz.ensure_tenant_role(caller.id, caller.tenant_id, caller.role);
    authz.allowed(caller.id, &tenant_domain(caller.tenant_id), obj, act)
}

fn same_tenant(caller: &user::Model, room: &room::Model) -> AppResult<()> {
    // Other tenants' rooms do not exist for the caller.
    if room.tenant_id == caller.tenant_id {
        Ok(())
    } else {
        Err(AppError::NotFound)
    }
}

pub fn opener(authz: &Authorizer, caller: &user::Model) -> AppResult<RoomOpener> {
    if tenant_allowed(authz, caller, "rooms", "manage") {
        Ok(RoomOpener {
            tenant_id: caller.tenant_id,
            admin_id: caller.id,
        })
    } else {
        Err(AppError::Forbidden)
    }
}

pub fn admin(authz: &Authorizer, caller: &user::Model, room: room::Model) -> AppResult<RoomAdmin> {
    same_tenant(caller, &room)?;
    if tenant_allowed(authz, caller, "rooms", "manage") {
        Ok(RoomAdmin {
            room,
            admin_id: caller.id,
        })
    } else {
        Err(AppError::Forbidden)
    }
}

pub fn member(
    authz: &Authorizer,
    caller: &user::Model,
    room: room::Model,
) -> AppResult<RoomAccess> {
    same_tenant(caller, &room)?;
    if authz.allowed(caller.id, &room_domain(room.id), "content", "read") {
        Ok(RoomAccess {
            room,
            user_id: caller.id,
        })
    } else {
        Err(AppError::Forbidden)
    }
}

/// Whether a member may ask for more members / for closure (`act` on `obj` in the room).
pub fn member_may(
    authz: &Authorizer,
    caller: &user::Model,
    room: &room::Model,
    obj: &str,
    act: &str,
) -> bool {
    room.tenant_id == caller.tenant_id && authz.allowed(caller.id, &room_domain(room.id), obj, act)
}

/// Whether the caller's tenant role allows `act` on `obj` in its tenant.
pub fn tenant_may(authz: &Authorizer, caller: &user::Model, obj: &str, act: &str) -> bool {
    tenant_allowed(authz, caller, obj, act)
}

/// Who may look at `room` at all: members, the city, and invitees with a pending invitation.
pub async fn viewer(
    db: &impl ConnectionTrait,
    authz: &Authorizer,
    caller: &user::Model,
    room: room::Model,
) -> AppResult<RoomViewer> {
    same_tenant(caller, &room)?;
    let member = authz.allowed(caller.id, &room_domain(room.id), "content", "read");
    let city = tenant_allowed(authz, caller, "rooms", "read");
    let invitee = if member || city {
        false
    } else {
        crate::service::invitations::pending_for(db, room.id, caller.id)
            .await?
            .is_some()
    };
    if !(member || city || invitee) {
        return Err(AppError::Forbidden);
    }
    Ok(RoomViewer {
        room,
        user_id: caller.id,
        member,
        city,
        invitee,
    })
}
