//! Mutations of the push channels: the caller registers and removes its own browsers' Web Push
//! subscriptions and its native apps' pushkeys. Each is audited.

use async_graphql::{Context, ID, Object, Result};

use crate::channels::targets;
use crate::error::AppError;
use crate::graphql::context::ContextExt as _;
use crate::graphql::query::push::{PushDevice, PushSubscription};

#[derive(Default)]
pub struct PushMutation;

fn parse_id(id: &ID) -> Result<uuid::Uuid, AppError> {
    uuid::Uuid::parse_str(id.as_str()).map_err(|_| AppError::NotFound)
}

#[Object]
impl PushMutation {
    /// Stores the browser's subscription (`PushSubscription.toJSON()`: `endpoint`,
    /// `keys.p256dh`, `keys.auth`). `endpoint` must be https; `p256dh` an uncompressed P-256
    /// point and `auth` 16 bytes, both base64url. The same endpoint again replaces the old one.
    async fn register_push_subscription(
        &self,
        ctx: &Context<'_>,
        endpoint: String,
        #[graphql(name = "p256dh")] p256dh: String,
        auth: String,
        device_label: Option<String>,
    ) -> Result<PushSubscription> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let row = targets::register_subscription(
            &state.db,
            &state.config.channels,
            caller.tenant.id,
            caller.user.id,
            targets::NewSubscription {
                endpoint: &endpoint,
                p256dh: &p256dh,
                auth: &auth,
                device_label: device_label.as_deref(),
            },
            &caller.origin(ctx.request()?),
        )
        .await?;
        Ok(PushSubscription::new(row, caller.tz()))
    }

    /// Removes one of the caller's subscriptions. Another user's is NOT_FOUND.
    async fn remove_push_subscription(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        targets::remove_subscription(
            &state.db,
            caller.tenant.id,
            caller.user.id,
            parse_id(&id)?,
            &caller.origin(ctx.request()?),
        )
        .await?;
        Ok(true)
    }

    /// Registers a native app's pushkey for the tenant's push gateway (`appId` names the app at
    /// the gateway, `pushkey` the device token it understands).
    async fn register_push_device(
        &self,
        ctx: &Context<'_>,
        app_id: String,
        pushkey: String,
        device_label: Option<String>,
    ) -> Result<PushDevice> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let row = targets::register_pushkey(
            &state.db,
            caller.tenant.id,
            caller.user.id,
            targets::NewPushkey {
                app_id: &app_id,
                pushkey: &pushkey,
                device_label: device_label.as_deref(),
            },
            &caller.origin(ctx.request()?),
        )
        .await?;
        Ok(PushDevice::new(row, caller.tz()))
    }

    /// Removes one of the caller's native devices. Another user's is NOT_FOUND.
    async fn remove_push_device(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        targets::remove_pushkey(
            &state.db,
            caller.tenant.id,
            caller.user.id,
            parse_id(&id)?,
            &caller.origin(ctx.request()?),
        )
        .await?;
        Ok(true)
    }
}
