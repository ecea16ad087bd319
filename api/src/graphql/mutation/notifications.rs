//! The caller's inbox read state and notification preferences; the tenant's channel switches
//! (CITY_ADMIN).

use async_graphql::{Context, ID, Object, Result};

use crate::error::AppError;
use crate::graphql::context::ContextExt as _;
use crate::graphql::query::notifications::{
    NotificationChannels, NotificationPreferences, NotificationPreferencesInput, preferences_of,
};
use crate::notify::{inbox, prefs};
use crate::service::users;

#[derive(Default)]
pub struct NotificationMutation;

#[Object]
impl NotificationMutation {
    /// Marks the caller's notifications read: those in `ids`, or every one with `all: true`.
    /// Returns the unread count after.
    async fn mark_notifications_read(
        &self,
        ctx: &Context<'_>,
        ids: Option<Vec<ID>>,
        #[graphql(default_with = "Some(false)")] all: Option<bool>,
    ) -> Result<i32> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let mark = match (all.unwrap_or(false), ids) {
            (true, _) => inbox::Mark::All,
            (false, Some(ids)) => inbox::Mark::Ids(
                ids.iter()
                    .map(|id| {
                        users::parse_id(id).map_err(|_| AppError::bad_input("ids", "not an id"))
                    })
                    .collect::<Result<Vec<_>, AppError>>()?,
            ),
            (false, None) => {
                return Err(AppError::bad_input("ids", "give ids, or all: true").into());
            }
        };
        inbox::mark_read(&state.db, caller.user.id, mark).await?;
        Ok(crate::graphql::types::total(
            inbox::unread_count(&state.db, caller.user.id).await?,
        ))
    }

    /// Changes the caller's notification preferences (what is left out stays).
    async fn update_notification_preferences(
        &self,
        ctx: &Context<'_>,
        input: NotificationPreferencesInput,
    ) -> Result<NotificationPreferences> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let mut rooms = Vec::new();
        for r in input.rooms.unwrap_or_default() {
            let id = users::parse_id(&r.room_id)
                .map_err(|_| AppError::bad_input("rooms.roomId", "not an id"))?;
            ctx.request()?.note_room(id);
            rooms.push((id, r.level.into()));
        }
        let change = prefs::Change {
            in_app: input.in_app,
            web_push: input.web_push,
            gateway: input.gateway,
            email: input.email,
            quiet_hours: input.quiet_hours_enabled,
            quiet_start: input.quiet_hours_start,
            quiet_end: input.quiet_hours_end,
            rooms,
        };
        prefs::update(
            &state.db,
            &caller.user,
            change,
            &caller.origin(ctx.request()?),
        )
        .await?;
        preferences_of(&state.db, caller).await
    }

    /// Turns notification channels on or off for the whole tenant (CITY_ADMIN).
    async fn set_tenant_notification_channels(
        &self,
        ctx: &Context<'_>,
        input: NotificationChannels,
    ) -> Result<NotificationChannels> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let cap = crate::authz::city_admin(&caller.user)?;
        let set =
            prefs::update_tenant(&state.db, cap, input.into(), &caller.origin(ctx.request()?))
                .await?;
        Ok(set.into())
    }
}
