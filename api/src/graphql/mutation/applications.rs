//! Filing the city's forms and reviewing them.

use async_graphql::{Context, ID, Json, Object, Result};

use crate::authz;
use crate::graphql::applications::{Application, RegistrationInput, ReviewResult};
use crate::graphql::context::ContextExt as _;
use crate::service::audit::Origin;
use crate::service::{applications, facilities, users};

#[derive(Default)]
pub struct ApplicationMutation;

#[Object]
impl ApplicationMutation {
    /// Registration of a facility and its staff (forms 4 + 1-2 or 2-2A + 5). No session
    /// needed; rate limited per client IP.
    async fn submit_registration(
        &self,
        ctx: &Context<'_>,
        input: RegistrationInput,
    ) -> Result<Application> {
        let state = ctx.state()?;
        let request = ctx.request()?;
        // Someone logged in may file it too; a stale token does not stop a public form.
        let caller = if request.session_token.is_some() {
            ctx.caller().await.ok()
        } else {
            None
        };
        let origin = match caller {
            Some(caller) => caller.origin(request),
            None => Origin {
                ip: Some(request.client_ip.to_string()),
                certificate_serial: request.peer.as_ref().map(|p| p.serial_hex.clone()),
                ..Origin::default()
            },
        };
        let (tenant, form) = input.into_form();
        let (model, tenant) = applications::submit_registration(
            state,
            &tenant,
            form,
            caller.map(|c| &c.user),
            &origin,
            request.client_ip,
        )
        .await?;
        let tz = tenant.time_zone.parse().unwrap_or(chrono_tz::Asia::Tokyo);
        Ok(Application { model, tz })
    }

    /// Change of facility details or staff (form 7), by the facility's admin.
    async fn submit_change(
        &self,
        ctx: &Context<'_>,
        facility_id: ID,
        payload: Json<serde_json::Value>,
    ) -> Result<Application> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let facility =
            facilities::in_tenant(&state.db, caller.tenant.id, users::parse_id(&facility_id)?)
                .await?;
        let cap = authz::facility_admin_of(&caller.user, facility)?;
        let model = applications::submit_change(
            &state.db,
            &cap,
            &caller.tenant,
            payload.0,
            &caller.origin(ctx.request()?),
        )
        .await?;
        Ok(Application {
            model,
            tz: caller.tz(),
        })
    }

    /// Stopping IDs (form 3), by the facility's admin: some users, or with `wholeFacility`
    /// the facility and everyone in it.
    async fn submit_suspension(
        &self,
        ctx: &Context<'_>,
        user_ids: Vec<ID>,
        reason: String,
        #[graphql(default = false)] whole_facility: bool,
    ) -> Result<Application> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        // Other tenants' ids do not exist, whoever asks: looked up before the role check.
        let mut targets = Vec::with_capacity(user_ids.len());
        for id in &user_ids {
            targets
                .push(users::in_tenant(&state.db, caller.tenant.id, users::parse_id(id)?).await?);
        }
        let facility_id = caller
            .user
            .facility_id
            .ok_or(crate::error::AppError::Forbidden)?;
        let facility = facilities::in_tenant(&state.db, caller.tenant.id, facility_id).await?;
        let cap = authz::facility_admin_of(&caller.user, facility)?;
        let model = applications::submit_suspension(
            &state.db,
            &cap,
            &caller.tenant,
            targets,
            &reason,
            whole_facility,
            &caller.origin(ctx.request()?),
        )
        .await?;
        Ok(Application {
            model,
            tz: caller.tz(),
        })
    }

    /// The submitter takes back an application not yet reviewed.
    async fn withdraw_application(&self, ctx: &Context<'_>, id: ID) -> Result<Application> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let model = applications::withdraw(
            &state.db,
            &caller.user,
            users::parse_id(&id)?,
            &caller.origin(ctx.request()?),
        )
        .await?;
        Ok(Application {
            model,
            tz: caller.tz(),
        })
    }

    /// CITY_ADMIN approves (carrying out the form) or rejects (with a note) an application.
    async fn review_application(
        &self,
        ctx: &Context<'_>,
        id: ID,
        approve: bool,
        note: Option<String>,
    ) -> Result<ReviewResult> {
        let caller = ctx.caller().await?;
        let cap = authz::city_admin(&caller.user)?;
        let state = ctx.state()?;
        let since = crate::service::now();
        let review = applications::review(
            state,
            cap,
            &caller.tenant,
            users::parse_id(&id)?,
            approve,
            note.as_deref(),
            &caller.origin(ctx.request()?),
        )
        .await?;
        crate::service::invitations::announce_since(state, caller.tenant.id, since).await;
        if let Some(room) = &review.room {
            state
                .events
                .publish([crate::events::LiveEvent::RoomStatusChanged { room_id: room.id }])
                .await;
        }
        let room = match &review.room {
            Some(room) => Some(crate::graphql::rooms::room_for(ctx, caller, room.id).await?),
            None => None,
        };
        Ok(ReviewResult::new(review, caller.tz(), room))
    }
}
