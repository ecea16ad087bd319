//! Rooms as the caller sees them: its own (the city: all of its tenant's), one room, and the
//! invitations waiting for its answer.

use async_graphql::{Context, ID, Object, Result};

use entity::kinds::AuditOutcome;

use crate::authz::rooms::RoomViewer;
use crate::graphql::context::ContextExt as _;
use crate::graphql::rooms::{Invitation, Room, RoomConnection, RoomEdge, RoomStatus, room_for};
use crate::graphql::types::{PageInfo, total};
use crate::service::audit::Event;
use crate::service::rooms::{self, RoomScope};
use crate::service::{invitations, page, users};

#[derive(Default)]
pub struct RoomQuery;

#[Object]
impl RoomQuery {
    /// Members: their own rooms; CITY_ADMIN: all rooms of the tenant. Newest first.
    async fn rooms(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        status: Option<RoomStatus>,
    ) -> Result<RoomConnection> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let first = page::first(first)?;
        let after_id = page::after("rooms", after.as_deref())?;
        let city = crate::authz::rooms::tenant_may(&state.authz, &caller.user, "rooms", "read");
        let scope = if city {
            RoomScope::Tenant(caller.tenant.id)
        } else {
            RoomScope::Member {
                tenant_id: caller.tenant.id,
                user_id: caller.user.id,
            }
        };
        let found = rooms::list(&state.db, scope, status.map(Into::into), first, after_id).await?;
        let event = Event::new(caller.tenant.id, "rooms.list", AuditOutcome::Allowed)
            .by(&caller.origin(ctx.request()?))
            .detail("count", found.items.len());
        state.audit.read(event).await?;
        let cursors: Vec<String> = found
            .items
            .iter()
            .map(|r| page::cursor("rooms", r.id))
            .collect();
        let tz = caller.tz();
        let edges = found
            .items
            .into_iter()
            .zip(cursors.iter().cloned())
            .map(|(room, cursor)| {
                // Listed by the scope: the city sees it as the city, anyone else as a member.
                let member = !city || state.authz.is_room_member(caller.user.id, room.id);
                RoomEdge {
                    cursor,
                    node: Room {
                        viewer: RoomViewer {
                            room,
                            user_id: caller.user.id,
                            member,
                            city,
                            invitee: false,
                        },
                        tz,
                    },
                }
            })
            .collect();
        Ok(RoomConnection {
            page_info: PageInfo::forward(&cursors, found.has_next, after_id.is_some()),
            total_count: total(found.total),
            edges,
        })
    }

    /// One room: members, the city and invitees see it (invitees only its id and label).
    async fn room(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Room>> {
        let caller = ctx.caller().await?;
        let room = room_for(ctx, caller, users::parse_id(&id)?).await?;
        crate::graphql::rooms::audit_read(ctx, caller, "room.read", room.viewer.room.id).await?;
        Ok(Some(room))
    }

    /// The caller's invitations waiting for an answer.
    async fn my_invitations(&self, ctx: &Context<'_>) -> Result<Vec<Invitation>> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let tz = caller.tz();
        Ok(invitations::mine(&state.db, caller.user.id)
            .await?
            .into_iter()
            .map(|model| Invitation { model, tz })
            .collect())
    }
}
