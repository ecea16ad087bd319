//! Rooms: the city opens, invites, removes, records consents and closes; invitees answer;
//! members and facility admins ask (ROOM_* applications). Thin: the rules live in the services.

use async_graphql::{Context, ID, Object, Result};
use uuid::Uuid;

use crate::authz::rooms as room_authz;
use crate::error::AppError;
use crate::events::LiveEvent;
use crate::graphql::applications::Application;
use crate::graphql::context::{Caller, ContextExt as _};
use crate::graphql::rooms::{Consent, ConsentInput, Invitation, PatientInput, Room, room_for};
use crate::service::applications::{self, RoomCreationForm};
use crate::service::rooms::{self, ConsentForm, PatientForm};
use crate::service::{consents, invitations, memberships, users};

fn ids(list: &[ID]) -> Result<Vec<Uuid>> {
    Ok(list
        .iter()
        .map(|id| users::parse_id(id))
        .collect::<Result<Vec<_>, AppError>>()?)
}

/// The room `id` of the caller's tenant with the city's capability over it.
async fn admin_of(ctx: &Context<'_>, caller: &Caller, id: Uuid) -> Result<room_authz::RoomAdmin> {
    let state = ctx.state()?;
    ctx.request()?.note_room(id);
    let room = rooms::in_tenant(&state.db, caller.tenant.id, id).await?;
    Ok(room_authz::admin(&state.authz, &caller.user, room)?)
}

/// After a membership began or ended: the enforcers of every instance, then the room's live
/// subscribers.
async fn membership_changed(
    state: &crate::state::AppState,
    room_id: Uuid,
    user_id: Uuid,
    joined: bool,
) {
    crate::authz::sync::users_changed(state, &[user_id]).await;
    state
        .events
        .publish([LiveEvent::MembershipChanged {
            room_id,
            user_id,
            joined,
        }])
        .await;
}

#[derive(Default)]
pub struct RoomMutation;

#[Object]
impl RoomMutation {
    /// Opens a room with the patient's consent (forms 8 + 9) and invites people (CITY_ADMIN).
    async fn open_room(
        &self,
        ctx: &Context<'_>,
        patient: PatientInput,
        consent: ConsentInput,
        invite_user_ids: Vec<ID>,
    ) -> Result<Room> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let opener = room_authz::opener(&state.authz, &caller.user)?;
        let today = rooms::today(&caller.tenant);
        let patient = PatientForm::from(patient).validated("patient", today)?;
        let consent = ConsentForm::from(consent).validated("consent", today)?;
        let invitees = ids(&invite_user_ids)?;
        let since = crate::service::now();
        let room = rooms::open(
            state,
            opener,
            &patient,
            &consent,
            &invitees,
            &caller.origin(ctx.request()?),
        )
        .await?;
        invitations::announce_since(state, caller.tenant.id, since).await;
        room_for(ctx, caller, room.id).await
    }

    /// Asks the city to open a room (ROOM_CREATION; any STAFF or FACILITY_ADMIN). Approval
    /// opens it and invites `memberIds` and the requester.
    async fn request_room(
        &self,
        ctx: &Context<'_>,
        patient: PatientInput,
        consent: ConsentInput,
        member_ids: Vec<ID>,
    ) -> Result<Application> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let form = RoomCreationForm {
            patient: patient.into(),
            consent: consent.into(),
            member_ids: ids(&member_ids)?,
        };
        let model = applications::submit_room_creation(
            &state.db,
            &state.authz,
            &caller.user,
            &caller.tenant,
            form,
            &caller.origin(ctx.request()?),
        )
        .await?;
        Ok(Application {
            model,
            tz: caller.tz(),
        })
    }

    /// Asks the city to invite people to a room (ROOM_MEMBERSHIP): a member of the room, or
    /// a FACILITY_ADMIN for its own facility's people.
    async fn request_room_members(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
        user_ids: Vec<ID>,
    ) -> Result<Application> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let id = users::parse_id(&room_id)?;
        ctx.request()?.note_room(id);
        let room = rooms::in_tenant(&state.db, caller.tenant.id, id).await?;
        let model = applications::submit_room_membership(
            state,
            &caller.user,
            &caller.tenant,
            room,
            &ids(&user_ids)?,
            &caller.origin(ctx.request()?),
        )
        .await?;
        Ok(Application {
            model,
            tz: caller.tz(),
        })
    }

    /// Ends the service (a member): posts an END_OF_SERVICE note with the reason, the room
    /// becomes CLOSING, and a ROOM_CLOSURE application goes to the city.
    async fn request_room_closure(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
        reason: String,
    ) -> Result<Application> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let access =
            crate::graphql::rooms::member_of(ctx, caller, users::parse_id(&room_id)?).await?;
        let model = rooms::request_closure(
            state,
            &access,
            caller.user.facility_id,
            &caller.tenant,
            &reason,
            &caller.origin(ctx.request()?),
        )
        .await?;

        Ok(Application {
            model,
            tz: caller.tz(),
        })
    }

    /// Invites ACTIVE users of the tenant to an OPEN room (CITY_ADMIN).
    async fn invite_to_room(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
        user_ids: Vec<ID>,
    ) -> Result<Vec<Invitation>> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let admin = admin_of(ctx, caller, users::parse_id(&room_id)?).await?;
        let made = invitations::invite(
            &state.db,
            &state.config,
            &admin,
            &ids(&user_ids)?,
            &caller.origin(ctx.request()?),
        )
        .await?;
        state
            .events
            .publish(
                made.iter()
                    .map(|i| LiveEvent::Invitation {
                        user_id: i.invitee_id,
                        room_id: i.room_id,
                        invitation_id: i.id,
                    })
                    .collect::<Vec<_>>(),
            )
            .await;
        let tz = caller.tz();
        Ok(made
            .into_iter()
            .map(|model| Invitation { model, tz })
            .collect())
    }

    /// Withdraws a pending invitation (CITY_ADMIN).
    async fn revoke_invitation(&self, ctx: &Context<'_>, id: ID) -> Result<Invitation> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let inv =
            invitations::in_tenant(&state.db, caller.tenant.id, users::parse_id(&id)?).await?;
        let admin = admin_of(ctx, caller, inv.room_id).await?;
        let model =
            invitations::revoke(&state.db, &admin, &inv, &caller.origin(ctx.request()?)).await?;
        Ok(Invitation {
            model,
            tz: caller.tz(),
        })
    }

    /// Ends one membership (CITY_ADMIN); the user loses access on every instance at once.
    async fn remove_room_member(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
        user_id: ID,
        reason: String,
    ) -> Result<Room> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let admin = admin_of(ctx, caller, users::parse_id(&room_id)?).await?;
        let user =
            users::in_tenant(&state.db, caller.tenant.id, users::parse_id(&user_id)?).await?;
        let room = memberships::remove(
            &state.db,
            &admin,
            user.id,
            &reason,
            &caller.origin(ctx.request()?),
        )
        .await?;
        membership_changed(state, room.id, user.id, false).await;
        room_for(ctx, caller, room.id).await
    }

    /// Closes a room into a read-only archive (CITY_ADMIN).
    async fn close_room(&self, ctx: &Context<'_>, room_id: ID, end_reason: String) -> Result<Room> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let admin = admin_of(ctx, caller, users::parse_id(&room_id)?).await?;
        let room = rooms::close(state, &admin, &end_reason, &caller.origin(ctx.request()?)).await?;
        state
            .events
            .publish([LiveEvent::RoomStatusChanged { room_id: room.id }])
            .await;
        room_for(ctx, caller, room.id).await
    }

    /// Records a consent (form 8) for a room that is not closed (CITY_ADMIN).
    async fn record_consent(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
        consent: ConsentInput,
    ) -> Result<Consent> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let admin = admin_of(ctx, caller, users::parse_id(&room_id)?).await?;
        let form = ConsentForm::from(consent).validated("consent", rooms::today(&caller.tenant))?;
        let model =
            consents::record(&state.db, &admin, &form, &caller.origin(ctx.request()?)).await?;
        Ok(Consent {
            model,
            tz: caller.tz(),
        })
    }

    /// Withdraws a consent (CITY_ADMIN); with no valid consent left the room is read-only.
    async fn withdraw_consent(&self, ctx: &Context<'_>, consent_id: ID) -> Result<Consent> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let consent =
            consents::in_tenant(&state.db, caller.tenant.id, users::parse_id(&consent_id)?).await?;
        let admin = admin_of(ctx, caller, consent.room_id).await?;
        let model =
            consents::withdraw(&state.db, &admin, &consent, &caller.origin(ctx.request()?)).await?;
        Ok(Consent {
            model,
            tz: caller.tz(),
        })
    }

    /// The invitee joins the room.
    async fn accept_invitation(&self, ctx: &Context<'_>, id: ID) -> Result<Room> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let inv =
            invitations::in_tenant(&state.db, caller.tenant.id, users::parse_id(&id)?).await?;
        ctx.request()?.note_room(inv.room_id);
        let room = invitations::accept(
            &state.db,
            &caller.user,
            &inv,
            &caller.origin(ctx.request()?),
        )
        .await?;
        membership_changed(state, room.id, caller.user.id, true).await;
        room_for(ctx, caller, room.id).await
    }

    /// The invitee declines.
    async fn decline_invitation(&self, ctx: &Context<'_>, id: ID) -> Result<Invitation> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let inv =
            invitations::in_tenant(&state.db, caller.tenant.id, users::parse_id(&id)?).await?;
        ctx.request()?.note_room(inv.room_id);
        let model = invitations::decline(
            &state.db,
            &caller.user,
            &inv,
            &caller.origin(ctx.request()?),
        )
        .await?;
        Ok(Invitation {
            model,
            tz: caller.tz(),
        })
    }
}
