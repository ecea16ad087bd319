//! Queries of the push channels: the tenant's VAPID key, and the caller's own subscriptions and
//! native devices. Nobody sees another user's.

use async_graphql::{Context, ID, Object, Result, SimpleObject};
use chrono::{DateTime, FixedOffset};

use crate::channels::{targets, vapid};
use crate::error::AppError;
use crate::graphql::context::ContextExt as _;
use crate::graphql::types::local;

/// A browser's Web Push subscription of the caller. The endpoint itself is not shown (it
/// works as a bearer token at the push service); its origin tells which service it is.
#[derive(SimpleObject)]
pub struct PushSubscription {
    pub id: ID,
    /// The push service, e.g. `https://fcm.googleapis.com`.
    pub endpoint_origin: String,
    pub device_label: Option<String>,
    pub created_at: DateTime<FixedOffset>,
    /// When a push service last accepted a message for it.
    pub last_success_at: Option<DateTime<FixedOffset>>,
}

impl PushSubscription {
    pub fn new(m: entity::push_subscription::Model, tz: chrono_tz::Tz) -> Self {
        let endpoint_origin = reqwest::Url::parse(&m.endpoint)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        PushSubscription {
            id: ID(m.id.to_string()),
            endpoint_origin,
            device_label: m.device_label,
            created_at: local(m.created_at, tz),
            last_success_at: m.last_success_at.map(|t| local(t, tz)),
        }
    }
}

/// A native app's registration for the tenant's push gateway. The pushkey is not shown.
#[derive(SimpleObject)]
pub struct PushDevice {
    pub id: ID,
    pub app_id: String,
    pub device_label: Option<String>,
    pub created_at: DateTime<FixedOffset>,
    pub pushkey_registered_at: DateTime<FixedOffset>,
}

impl PushDevice {
    pub fn new(m: entity::push_pushkey::Model, tz: chrono_tz::Tz) -> Self {
        PushDevice {
            id: ID(m.id.to_string()),
            app_id: m.app_id,
            device_label: m.device_label,
            created_at: local(m.created_at, tz),
            pushkey_registered_at: local(m.pushkey_ts, tz),
        }
    }
}

#[derive(Default)]
pub struct PushQuery;

#[Object]
impl PushQuery {
    /// The tenant's VAPID public key (uncompressed P-256, base64url): the
    /// `applicationServerKey` of `PushManager.subscribe()`. Generated on first use.
    async fn vapid_public_key(&self, ctx: &Context<'_>) -> Result<String> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        Ok(
            vapid::public_key(&state.db, &state.master_key, caller.tenant.id)
                .await
                .map_err(AppError::internal)?,
        )
    }

    /// The caller's Web Push subscriptions, newest first.
    async fn my_push_subscriptions(&self, ctx: &Context<'_>) -> Result<Vec<PushSubscription>> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let tz = caller.tz();
        Ok(targets::subscriptions_of(&state.db, caller.user.id)
            .await?
            .into_iter()
            .map(|m| PushSubscription::new(m, tz))
            .collect())
    }

    /// The caller's native app devices registered for the push gateway, newest first.
    async fn my_push_devices(&self, ctx: &Context<'_>) -> Result<Vec<PushDevice>> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let tz = caller.tz();
        Ok(targets::pushkeys_of(&state.db, caller.user.id)
            .await?
            .into_iter()
            .map(|m| PushDevice::new(m, tz))
            .collect())
    }
}
