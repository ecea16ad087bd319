//! The caller's notification inbox and preferences. Everything here is the caller's own:
//! scoped by its user id in SQL, so another user's notifications cannot be named.

use async_graphql::{ComplexObject, Context, Enum, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, FixedOffset};
use chrono_tz::Tz;

use entity::kinds::AuditOutcome;
use entity::notification;

use crate::graphql::context::ContextExt as _;
use crate::graphql::rooms::NoteCategory;
use crate::graphql::types::{PageInfo, local, total};
use crate::notify::{inbox, prefs};
use crate::service::audit::Event;
use crate::service::page;

/// What a notification is about. Its content is fetched over the API with the reader's own
/// permissions; the notification carries ids only.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::notification::NotificationKind")]
pub enum NotificationKind {
    NotePosted,
    Mention,
    Reply,
    Invitation,
    RoomClosureRequested,
    RoomClosed,
    ApplicationStatusChanged,
    ApplicationSubmitted,
    #[graphql(name = "CERTIFICATE_EXPIRING_30")]
    CertificateExpiring30,
    #[graphql(name = "CERTIFICATE_EXPIRING_7")]
    CertificateExpiring7,
    NewCertificateLogin,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::notification_room_level::RoomLevel")]
pub enum RoomNotificationLevel {
    All,
    MentionsAndUrgent,
    Muted,
}

pub struct Notification {
    pub model: notification::Model,
    pub tz: Tz,
}

#[Object]
impl Notification {
    async fn id(&self) -> ID {
        ID(self.model.id.to_string())
    }
    async fn kind(&self) -> NotificationKind {
        self.model.kind.into()
    }
    /// The room it concerns, if any.
    async fn room_id(&self) -> Option<ID> {
        self.model.room_id.map(|id| ID(id.to_string()))
    }
    /// The note, invitation, application or certificate it concerns.
    async fn event_id(&self) -> Option<ID> {
        self.model.event_id.map(|id| ID(id.to_string()))
    }
    async fn note_category(&self) -> Option<NoteCategory> {
        self.model.note_category.map(Into::into)
    }
    async fn urgent(&self) -> bool {
        self.model.urgent
    }
    async fn created_at(&self) -> DateTime<FixedOffset> {
        local(self.model.created_at, self.tz)
    }
    async fn read_at(&self) -> Option<DateTime<FixedOffset>> {
        self.model.read_at.map(|t| local(t, self.tz))
    }
}

#[derive(SimpleObject)]
pub struct NotificationEdge {
    pub cursor: String,
    pub node: Notification,
}

#[derive(SimpleObject)]
pub struct NotificationConnection {
    pub edges: Vec<NotificationEdge>,
    pub page_info: PageInfo,
    pub total_count: i32,
}

/// On/off per channel.
#[derive(SimpleObject, InputObject, Clone, Copy, Debug)]
#[graphql(input_name = "NotificationChannelsInput")]
pub struct NotificationChannels {
    pub in_app: bool,
    pub web_push: bool,
    pub gateway: bool,
    pub email: bool,
}

impl From<prefs::Switches> for NotificationChannels {
    fn from(s: prefs::Switches) -> Self {
        NotificationChannels {
            in_app: s.in_app,
            web_push: s.web_push,
            gateway: s.gateway,
            email: s.email,
        }
    }
}

impl From<NotificationChannels> for prefs::Switches {
    fn from(s: NotificationChannels) -> Self {
        prefs::Switches {
            in_app: s.in_app,
            web_push: s.web_push,
            gateway: s.gateway,
            email: s.email,
        }
    }
}

#[derive(SimpleObject)]
pub struct RoomNotificationSetting {
    pub room_id: ID,
    pub level: RoomNotificationLevel,
}

#[derive(InputObject)]
pub struct RoomNotificationLevelInput {
    pub room_id: ID,
    pub level: RoomNotificationLevel,
}

/// Partial: what is left out stays as it is.
#[derive(InputObject, Default)]
pub struct NotificationPreferencesInput {
    pub in_app: Option<bool>,
    pub web_push: Option<bool>,
    pub gateway: Option<bool>,
    pub email: Option<bool>,
    /// Quiet hours hold push and e-mail (not the inbox) until they end; urgent notes break through.
    pub quiet_hours_enabled: Option<bool>,
    /// "22:00", in the tenant's time zone.
    pub quiet_hours_start: Option<String>,
    pub quiet_hours_end: Option<String>,
    /// Per room: ALL (the default), MENTIONS_AND_URGENT, MUTED. Current rooms only.
    pub rooms: Option<Vec<RoomNotificationLevelInput>>,
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct NotificationPreferences {
    /// The caller's own switches.
    pub channels: NotificationChannels,
    /// The tenant's switches: a channel the tenant turned off stays off whatever the caller says.
    pub tenant_channels: NotificationChannels,
    pub quiet_hours_enabled: bool,
    pub quiet_hours_start: String,
    pub quiet_hours_end: String,
    /// The zone quiet hours are read in.
    pub time_zone: String,
    pub rooms: Vec<RoomNotificationSetting>,
}

#[ComplexObject]
impl NotificationPreferences {
    /// The channels that are on for the caller after the tenant's switches.
    async fn effective_channels(&self) -> NotificationChannels {
        NotificationChannels {
            in_app: self.channels.in_app && self.tenant_channels.in_app,
            web_push: self.channels.web_push && self.tenant_channels.web_push,
            gateway: self.channels.gateway && self.tenant_channels.gateway,
            email: self.channels.email && self.tenant_channels.email,
        }
    }
}

/// The caller's preferences as the API shows them.
pub async fn preferences_of(
    db: &sea_orm::DatabaseConnection,
    caller: &crate::graphql::context::Caller,
) -> Result<NotificationPreferences> {
    let p = prefs::of_user(db, caller.user.id).await?;
    let tenant = prefs::tenant_switches(db, caller.tenant.id).await?;
    let rooms = prefs::levels_of_user(db, caller.user.id)
        .await?
        .into_iter()
        .map(|r| RoomNotificationSetting {
            room_id: ID(r.room_id.to_string()),
            level: r.level.into(),
        })
        .collect();
    Ok(NotificationPreferences {
        channels: p.channels.into(),
        tenant_channels: tenant.into(),
        quiet_hours_enabled: p.quiet.is_some(),
        quiet_hours_start: prefs::format_hhmm(p.quiet_start_minute),
        quiet_hours_end: prefs::format_hhmm(p.quiet_end_minute),
        time_zone: caller.tz().name().to_string(),
        rooms,
    })
}

#[derive(Default)]
pub struct NotificationQuery;

#[Object]
impl NotificationQuery {
    /// The caller's inbox, newest first.
    async fn my_notifications(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        #[graphql(default_with = "Some(false)")] unread_only: Option<bool>,
    ) -> Result<NotificationConnection> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let first = page::first(first)?;
        let after_id = page::after("notifications", after.as_deref())?;
        let found = inbox::list(
            &state.db,
            caller.user.id,
            first,
            after_id,
            unread_only.unwrap_or(false),
        )
        .await?;
        let event = Event::new(
            caller.tenant.id,
            "notifications.list",
            AuditOutcome::Allowed,
        )
        .by(&caller.origin(ctx.request()?))
        .detail("count", found.items.len());
        state.audit.read(event).await?;
        let tz = caller.tz();
        let cursors: Vec<String> = found
            .items
            .iter()
            .map(|n| page::cursor("notifications", n.id))
            .collect();
        let edges = found
            .items
            .into_iter()
            .zip(cursors.iter().cloned())
            .map(|(model, cursor)| NotificationEdge {
                cursor,
                node: Notification { model, tz },
            })
            .collect();
        Ok(NotificationConnection {
            page_info: PageInfo::forward(&cursors, found.has_next, after_id.is_some()),
            total_count: total(found.total),
            edges,
        })
    }

    /// How many of the caller's inbox entries are unread.
    async fn unread_notification_count(&self, ctx: &Context<'_>) -> Result<i32> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        Ok(total(inbox::unread_count(&state.db, caller.user.id).await?))
    }

    /// The caller's notification preferences (defaults until changed).
    async fn notification_preferences(&self, ctx: &Context<'_>) -> Result<NotificationPreferences> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        preferences_of(&state.db, caller).await
    }
}
