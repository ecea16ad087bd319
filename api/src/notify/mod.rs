//! Notifications (issue 20): which events notify whom, written as outbox rows in the event's
//! own transaction, the in-app inbox, preferences, and the worker that delivers the rows over
//! the external channels (`crate::channels`). A notification carries ids, its kind, urgency
//! and counts, never content: whoever receives one fetches the rest over the API.
//!
//! Writing: [`write_in`] takes one [`Notice`] per recipient, drops those the recipient's
//! preferences or the tenant's switches exclude, and inserts a `notification` row (the inbox
//! entry) plus one `notification_delivery` row per channel that is on, with its due time
//! (quiet hours, the e-mail digest). Nothing is sent here: the worker (`worker.rs`) claims due
//! rows afterwards, so a slow channel never slows the request that caused the event.

pub mod inbox;
pub mod prefs;
pub mod sweep;
pub mod transport;
pub mod worker;

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
};
use uuid::Uuid;

use entity::kinds::{AccountStatus, NoteCategory, Role};
use entity::notification::NotificationKind;
use entity::notification_delivery::{Channel, DeliveryState};
use entity::notification_room_level::RoomLevel;
use entity::{
    application, invitation, note, notification, notification_delivery, room, room_member, tenant,
    user,
};

use crate::config::Config;
use crate::error::AppResult;
use crate::service::now;

pub use prefs::{Preferences, QuietHours, Switches};

/// The external channels, in the order deliveries are written.
pub const EXTERNAL: [Channel; 3] = [Channel::WebPush, Channel::Gateway, Channel::Email];

/// One notification to write: who, what, about which room and object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub user_id: Uuid,
    pub kind: NotificationKind,
    /// Names the event for this recipient; a second notice with the same key is dropped.
    pub dedup_key: String,
    pub room_id: Option<Uuid>,
    pub event_id: Option<Uuid>,
    pub note_category: Option<NoteCategory>,
    pub urgent: bool,
}

/// Note kinds follow the recipient's room level and need a current membership at send time.
pub fn is_note_kind(kind: NotificationKind) -> bool {
    matches!(
        kind,
        NotificationKind::NotePosted | NotificationKind::Mention | NotificationKind::Reply
    )
}

/// Whether a room level lets this notification through.
pub fn level_allows(level: RoomLevel, kind: NotificationKind, urgent: bool) -> bool {
    match level {
        RoomLevel::All => true,
        RoomLevel::MentionsAndUrgent => {
            !is_note_kind(kind) || urgent || kind == NotificationKind::Mention
        }
        RoomLevel::Muted => !is_note_kind(kind),
    }
}

/// The next digest time after `at`: every `minutes` from the epoch, so every row of a window
/// shares it (0: none, send at once).
fn digest_due(at: DateTime<Utc>, minutes: u32) -> Option<DateTime<Utc>> {
    if minutes == 0 {
        return None;
    }
    let step = i64::from(minutes) * 60;
    let next = (at.timestamp().div_euclid(step) + 1) * step;
    DateTime::from_timestamp(next, 0)
}

/// E-mail at once for urgent notes, mentions and account matters; other notes wait for the digest.
fn email_at_once(n: &Notice) -> bool {
    n.urgent
        || !matches!(
            n.kind,
            NotificationKind::NotePosted | NotificationKind::Reply
        )
}

/// What one write needs to know about a recipient.
struct Recipient {
    status: AccountStatus,
    has_email: bool,
}

/// What writing needs of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct WriteSettings {
    pub digest_minutes: u32,
    /// For a tenant whose zone does not parse.
    pub default_tz: chrono_tz::Tz,
}

impl WriteSettings {
    /// For notices that never wait for a digest (everything but ordinary notes).
    pub const IMMEDIATE: WriteSettings = WriteSettings {
        digest_minutes: 0,
        default_tz: chrono_tz::Asia::Tokyo,
    };
}

impl From<&Config> for WriteSettings {
    fn from(c: &Config) -> Self {
        WriteSettings {
            digest_minutes: c.notification_email_digest_minutes,
            default_tz: c.default_time_zone,
        }
    }
}

/// How many were written.
#[derive(Debug, Default)]
pub struct Written {
    pub notifications: usize,
}

/// Writes the notices in the caller's transaction: one notification row each (unless every
/// channel of its recipient is off, the room is muted for it or it is not ACTIVE) and one
/// delivery row per channel that is on. `once`: notices whose key was already written are
/// skipped (the periodic sweep and the first-login notice); otherwise keys are fresh by
/// construction and the rows go in two statements.
pub async fn write_in(
    db: &impl ConnectionTrait,
    settings: impl Into<WriteSettings>,
    tenant_id: Uuid,
    notices: Vec<Notice>,
    once: bool,
) -> AppResult<Written> {
    if notices.is_empty() {
        return Ok(Written::default());
    }
    let settings: WriteSettings = settings.into();
    let at = now();
    let mut users: Vec<Uuid> = notices.iter().map(|n| n.user_id).collect();
    users.sort_unstable();
    users.dedup();
    let recipients: HashMap<Uuid, Recipient> = user::Entity::find()
        .filter(user::Column::Id.is_in(users.iter().copied()))
        .filter(user::Column::TenantId.eq(tenant_id))
        .all(db)
        .await?
        .into_iter()
        .map(|u| {
            (
                u.id,
                Recipient {
                    status: u.status,
                    has_email: u.email.as_deref().is_some_and(|e| !e.trim().is_empty()),
                },
            )
        })
        .collect();
    let preferences = prefs::of_users(db, &users).await?;
    let tenant_switches = prefs::tenant_switches(db, tenant_id).await?;
    let tz = tenant::Entity::find_by_id(tenant_id)
        .one(db)
        .await?
        .and_then(|t| t.time_zone.parse::<chrono_tz::Tz>().ok())
        .unwrap_or(settings.default_tz);
    let mut levels: HashMap<(Uuid, Uuid), RoomLevel> = HashMap::new();
    let mut rooms: Vec<Uuid> = notices
        .iter()
        .filter(|n| is_note_kind(n.kind))
        .filter_map(|n| n.room_id)
        .collect();
    rooms.sort_unstable();
    rooms.dedup();
    for room_id in rooms {
        for (user_id, level) in prefs::room_levels(db, room_id, &users).await? {
            levels.insert((user_id, room_id), level);
        }
    }

    let mut rows = Vec::new();
    let mut deliveries = Vec::new();
    for n in notices {
        let Some(recipient) = recipients.get(&n.user_id) else {
            continue;
        };
        if recipient.status == AccountStatus::Suspended {
            continue;
        }
        if let Some(room_id) = n.room_id {
            let level = levels
                .get(&(n.user_id, room_id))
                .copied()
                .unwrap_or(RoomLevel::All);
            if !level_allows(level, n.kind, n.urgent) {
                continue;
            }
        }
        let p = preferences.get(&n.user_id).copied().unwrap_or_default();
        let mut on = p.channels.and(tenant_switches);
        on.email &= recipient.has_email;
        if !(on.in_app || on.web_push || on.gateway || on.email) {
            continue;
        }
        let id = Uuid::now_v7();
        let quiet_end = match p.quiet {
            Some(q) if !n.urgent => q.end_after(at, tz),
            _ => None,
        };
        let mut channels = Vec::with_capacity(4);
        if on.in_app {
            channels.push((Channel::InApp, at, false));
        }
        for channel in EXTERNAL {
            if !on.on(channel) {
                continue;
            }
            let (due, digest) = if channel == Channel::Email && !email_at_once(&n) {
                match digest_due(at, settings.digest_minutes) {
                    Some(due) => (due, true),
                    None => (at, false),
                }
            } else {
                (at, false)
            };
            let due = quiet_end.map_or(due, |end| end.max(due));
            channels.push((channel, due, digest));
        }
        rows.push((
            id,
            notification::ActiveModel {
                id: Set(id),
                tenant_id: Set(tenant_id),
                user_id: Set(n.user_id),
                kind: Set(n.kind),
                dedup_key: Set(n.dedup_key),
                room_id: Set(n.room_id),
                event_id: Set(n.event_id),
                note_category: Set(n.note_category),
                urgent: Set(n.urgent),
                in_app: Set(on.in_app),
                created_at: Set(at),
                read_at: Set(None),
            },
        ));
        deliveries.push((id, n.user_id, channels));
    }
    if rows.is_empty() {
        return Ok(Written::default());
    }
    let mut kept: Vec<Uuid> = Vec::new();
    if once {
        for (id, row) in rows {
            let inserted = notification::Entity::insert(row)
                .on_conflict(
                    OnConflict::columns([
                        notification::Column::UserId,
                        notification::Column::DedupKey,
                    ])
                    .do_nothing()
                    .to_owned(),
                )
                .exec_without_returning(db)
                .await?;
            if inserted == 1 {
                kept.push(id);
            }
        }
    } else {
        kept = rows.iter().map(|(id, _)| *id).collect();
        notification::Entity::insert_many(rows.into_iter().map(|(_, row)| row))
            .exec(db)
            .await?;
    }
    let written = kept.len();
    let delivery_rows: Vec<notification_delivery::ActiveModel> = deliveries
        .into_iter()
        .filter(|(id, _, _)| kept.contains(id))
        .flat_map(|(id, user_id, channels)| {
            channels.into_iter().map(move |(channel, due, digest)| {
                notification_delivery::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    notification_id: Set(id),
                    tenant_id: Set(tenant_id),
                    user_id: Set(user_id),
                    channel: Set(channel),
                    state: Set(DeliveryState::Pending),
                    digest: Set(digest),
                    due_at: Set(due),
                    attempts: Set(0),
                    claimed_by: Set(None),
                    claimed_until: Set(None),
                    last_error: Set(None),
                    created_at: Set(at),
                    finished_at: Set(None),
                }
            })
        })
        .collect();
    if !delivery_rows.is_empty() {
        notification_delivery::Entity::insert_many(delivery_rows)
            .exec(db)
            .await?;
    }
    Ok(Written {
        notifications: written,
    })
}

/// Current members of the room, but `except`.
async fn members_of(
    db: &impl ConnectionTrait,
    room_id: Uuid,
    except: Option<Uuid>,
) -> AppResult<Vec<Uuid>> {
    let mut select = room_member::Entity::find()
        .filter(room_member::Column::RoomId.eq(room_id))
        .filter(room_member::Column::LeftAt.is_null());
    if let Some(except) = except {
        select = select.filter(room_member::Column::UserId.ne(except));
    }
    let mut ids: Vec<Uuid> = select
        .all(db)
        .await?
        .into_iter()
        .map(|m| m.user_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Active users of the tenant with this role (and facility).
async fn with_role(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    role: Role,
    facility_id: Option<Uuid>,
) -> AppResult<Vec<Uuid>> {
    let mut select = user::Entity::find()
        .filter(user::Column::TenantId.eq(tenant_id))
        .filter(user::Column::Role.eq(role))
        .filter(user::Column::Status.ne(AccountStatus::Suspended));
    if let Some(facility) = facility_id {
        select = select.filter(user::Column::FacilityId.eq(facility));
    }
    Ok(select.all(db).await?.into_iter().map(|u| u.id).collect())
}

/// A note was posted: every other current member hears of it; a mention or a reply to one's
/// own note is that person's kind of it instead.
pub async fn note_posted_in(
    db: &impl ConnectionTrait,
    config: &Config,
    created: &note::Model,
    mentions: &[Uuid],
) -> AppResult<Written> {
    let parent_author = match created.reply_to_id {
        Some(parent) => note::Entity::find_by_id(parent)
            .one(db)
            .await?
            .map(|p| p.author_id),
        None => None,
    };
    let notices = members_of(db, created.room_id, Some(created.author_id))
        .await?
        .into_iter()
        .map(|user_id| {
            let kind = if mentions.contains(&user_id) {
                NotificationKind::Mention
            } else if parent_author == Some(user_id) {
                NotificationKind::Reply
            } else {
                NotificationKind::NotePosted
            };
            Notice {
                user_id,
                kind,
                dedup_key: format!("note:{}", created.id),
                room_id: Some(created.room_id),
                event_id: Some(created.id),
                note_category: Some(created.category),
                urgent: created.urgent,
            }
        })
        .collect();
    write_in(db, config, created.tenant_id, notices, false).await
}

/// New invitations: each invitee.
pub async fn invited_in(
    db: &impl ConnectionTrait,
    config: &Config,
    made: &[invitation::Model],
) -> AppResult<Written> {
    let Some(first) = made.first() else {
        return Ok(Written::default());
    };
    let notices = made
        .iter()
        .map(|i| Notice {
            user_id: i.invitee_id,
            kind: NotificationKind::Invitation,
            dedup_key: format!("invitation:{}", i.id),
            room_id: Some(i.room_id),
            event_id: Some(i.id),
            note_category: None,
            urgent: false,
        })
        .collect();
    write_in(db, config, first.tenant_id, notices, false).await
}

/// The end of service was requested: the other members, and the city admins who close rooms
/// (the guide's "tell the city").
pub async fn closure_requested_in(
    db: &impl ConnectionTrait,
    config: &Config,
    room: &room::Model,
    requested_by: Uuid,
    application_id: Uuid,
) -> AppResult<Written> {
    let mut users = members_of(db, room.id, Some(requested_by)).await?;
    for admin in with_role(db, room.tenant_id, Role::CityAdmin, None).await? {
        if admin != requested_by && !users.contains(&admin) {
            users.push(admin);
        }
    }
    let notices = users
        .into_iter()
        .map(|user_id| Notice {
            user_id,
            kind: NotificationKind::RoomClosureRequested,
            dedup_key: format!("closure-request:{application_id}"),
            room_id: Some(room.id),
            event_id: Some(application_id),
            note_category: None,
            urgent: false,
        })
        .collect();
    write_in(db, config, room.tenant_id, notices, false).await
}

/// The room was closed: its members (who keep reading it).
pub async fn room_closed_in(
    db: &impl ConnectionTrait,
    config: &Config,
    room: &room::Model,
    closed_by: Uuid,
) -> AppResult<Written> {
    let notices = members_of(db, room.id, Some(closed_by))
        .await?
        .into_iter()
        .map(|user_id| Notice {
            user_id,
            kind: NotificationKind::RoomClosed,
            dedup_key: format!("room-closed:{}", room.id),
            room_id: Some(room.id),
            event_id: Some(room.id),
            note_category: None,
            urgent: false,
        })
        .collect();
    write_in(db, config, room.tenant_id, notices, false).await
}

/// A new application: the tenant's city admins (not the one who filed it). A ROOM_CLOSURE
/// tells them through [`closure_requested_in`] instead.
pub async fn application_filed_in(
    db: &impl ConnectionTrait,
    app: &application::Model,
) -> AppResult<Written> {
    if app.kind == entity::kinds::ApplicationKind::RoomClosure {
        return Ok(Written::default());
    }
    let notices = with_role(db, app.tenant_id, Role::CityAdmin, None)
        .await?
        .into_iter()
        .filter(|u| Some(*u) != app.submitted_by)
        .map(|user_id| Notice {
            user_id,
            kind: NotificationKind::ApplicationSubmitted,
            dedup_key: format!("application:{}", app.id),
            room_id: None,
            event_id: Some(app.id),
            note_category: None,
            urgent: false,
        })
        .collect();
    write_in(db, WriteSettings::IMMEDIATE, app.tenant_id, notices, false).await
}

/// An application changed status: its facility's admins.
pub async fn application_status_in(
    db: &impl ConnectionTrait,
    application_id: Uuid,
) -> AppResult<Written> {
    let Some(app) = application::Entity::find_by_id(application_id)
        .one(db)
        .await?
    else {
        return Ok(Written::default());
    };
    let Some(facility) = app.facility_id else {
        return Ok(Written::default());
    };
    let notices = with_role(db, app.tenant_id, Role::FacilityAdmin, Some(facility))
        .await?
        .into_iter()
        .map(|user_id| Notice {
            user_id,
            kind: NotificationKind::ApplicationStatusChanged,
            dedup_key: format!(
                "application-status:{}:{}",
                app.id,
                crate::service::enum_name(&app.status)
            ),
            room_id: None,
            event_id: Some(app.id),
            note_category: None,
            urgent: false,
        })
        .collect();
    write_in(db, WriteSettings::IMMEDIATE, app.tenant_id, notices, true).await
}

/// In a login's transaction, before its `login.success` event is recorded: when the user has
/// logged in before but never with this certificate, tells its owner (once per certificate).
/// A user's very first login is not news to them.
pub async fn login_in(
    db: &impl ConnectionTrait,
    user: &user::Model,
    login: &crate::service::audit::Event,
) -> AppResult<Written> {
    use entity::{audit_event, certificate};
    use sea_orm::QuerySelect as _;
    let Some(serial) = login.certificate_serial.as_deref() else {
        return Ok(Written::default());
    };
    let logins = || {
        audit_event::Entity::find()
            .filter(audit_event::Column::TenantId.eq(user.tenant_id))
            .filter(audit_event::Column::ActorId.eq(user.id))
            .filter(audit_event::Column::Action.eq("login.success"))
    };
    if logins().limit(1).one(db).await?.is_none() {
        return Ok(Written::default());
    }
    if logins()
        .filter(audit_event::Column::CertificateSerial.eq(serial))
        .limit(1)
        .one(db)
        .await?
        .is_some()
    {
        return Ok(Written::default());
    }
    let Some(cert) = certificate::Entity::find()
        .filter(certificate::Column::TenantId.eq(user.tenant_id))
        .filter(certificate::Column::SerialHex.eq(serial))
        .one(db)
        .await?
    else {
        return Ok(Written::default());
    };
    let (tenant_id, user_id, certificate_id) = (user.tenant_id, user.id, cert.id);
    let notice = Notice {
        user_id,
        kind: NotificationKind::NewCertificateLogin,
        dedup_key: format!("certificate-first-login:{certificate_id}"),
        room_id: None,
        event_id: Some(certificate_id),
        note_category: None,
        urgent: false,
    };
    write_in(db, WriteSettings::IMMEDIATE, tenant_id, vec![notice], true).await
}

/// How long a claim of a delivery lasts before another worker may take it over.
pub fn lease(config: &Config) -> Duration {
    Duration::from_std(config.notification_claim).unwrap_or_else(|_| Duration::minutes(5))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn digest_times_are_shared_by_a_window() {
        let a = DateTime::from_timestamp(1_000_000_000, 0).unwrap();
        let b = a + Duration::seconds(30);
        assert_eq!(digest_due(a, 15), digest_due(b, 15));
        assert!(digest_due(a, 15).unwrap() > a);
        assert_eq!(digest_due(a, 0), None);
    }

    #[test]
    fn room_levels_filter_note_kinds_only() {
        use NotificationKind::*;
        assert!(level_allows(RoomLevel::All, NotePosted, false));
        assert!(!level_allows(
            RoomLevel::MentionsAndUrgent,
            NotePosted,
            false
        ));
        assert!(!level_allows(RoomLevel::MentionsAndUrgent, Reply, false));
        assert!(level_allows(RoomLevel::MentionsAndUrgent, NotePosted, true));
        assert!(level_allows(RoomLevel::MentionsAndUrgent, Mention, false));
        assert!(!level_allows(RoomLevel::Muted, Mention, false));
        assert!(!level_allows(RoomLevel::Muted, NotePosted, true));
        assert!(level_allows(RoomLevel::Muted, RoomClosed, false));
    }
}
