//! Who wants to hear what, how: a user's channels and quiet hours, per-room levels, and the
//! tenant's switches. Absent rows are the defaults (every channel on, quiet 22:00–07:00 in the
//! tenant's time zone, every room ALL).

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveTime, TimeZone as _, Timelike as _, Utc};
use chrono_tz::Tz;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
};
use uuid::Uuid;

use entity::notification_delivery::Channel;
use entity::notification_room_level::RoomLevel;
use entity::{notification_preference, notification_room_level, notification_tenant_setting};

use crate::error::{AppError, AppResult};
use crate::service::now;

pub const DEFAULT_QUIET_START: i32 = 22 * 60;
pub const DEFAULT_QUIET_END: i32 = 7 * 60;

/// On/off per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switches {
    pub in_app: bool,
    pub web_push: bool,
    pub gateway: bool,
    pub email: bool,
}

impl Default for Switches {
    fn default() -> Self {
        Switches {
            in_app: true,
            web_push: true,
            gateway: true,
            email: true,
        }
    }
}

impl Switches {
    pub fn on(&self, channel: Channel) -> bool {
        match channel {
            Channel::InApp => self.in_app,
            Channel::WebPush => self.web_push,
            Channel::Gateway => self.gateway,
            Channel::Email => self.email,
        }
    }

    pub fn and(self, other: Switches) -> Switches {
        Switches {
            in_app: self.in_app && other.in_app,
            web_push: self.web_push && other.web_push,
            gateway: self.gateway && other.gateway,
            email: self.email && other.email,
        }
    }
}

/// Quiet hours: minutes after local midnight; `start > end` spans midnight, `start == end`
/// is never quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start_minute: i32,
    pub end_minute: i32,
}

impl QuietHours {
    /// When the quiet period that contains `at` ends, or `None` when `at` is not quiet.
    pub fn end_after(&self, at: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let (s, e) = (self.start_minute, self.end_minute);
        if s == e {
            return None;
        }
        let local = at.with_timezone(&tz);
        let m = i32::try_from(local.hour() * 60 + local.minute()).unwrap_or(0);
        let (inside, tomorrow) = if s < e {
            (s <= m && m < e, false)
        } else if m >= s {
            (true, true)
        } else {
            (m < e, false)
        };
        if !inside {
            return None;
        }
        let mut day = local.date_naive();
        if tomorrow {
            day = day.succ_opt()?;
        }
        let end =
            NaiveTime::from_hms_opt(u32::try_from(e / 60).ok()?, u32::try_from(e % 60).ok()?, 0)?;
        // A gap (DST; none in Japan) moves the end to the first valid minute after it.
        let local_end = day.and_time(end);
        tz.from_local_datetime(&local_end)
            .earliest()
            .or_else(|| {
                tz.from_local_datetime(&(local_end + Duration::hours(1)))
                    .earliest()
            })
            .map(|t| t.with_timezone(&Utc))
    }
}

/// "22:00" → minutes after midnight, or BAD_USER_INPUT naming `field`.
pub fn parse_hhmm(field: &str, value: &str) -> AppResult<i32> {
    let bad = || AppError::bad_input(field, "a time of day like 22:00");
    let t = NaiveTime::parse_from_str(value.trim(), "%H:%M").map_err(|_| bad())?;
    i32::try_from(t.hour() * 60 + t.minute()).map_err(|_| bad())
}

pub fn format_hhmm(minutes: i32) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// A user's preferences with the defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preferences {
    pub channels: Switches,
    /// `None`: quiet hours are off.
    pub quiet: Option<QuietHours>,
    pub quiet_start_minute: i32,
    pub quiet_end_minute: i32,
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences {
            channels: Switches::default(),
            quiet: Some(QuietHours {
                start_minute: DEFAULT_QUIET_START,
                end_minute: DEFAULT_QUIET_END,
            }),
            quiet_start_minute: DEFAULT_QUIET_START,
            quiet_end_minute: DEFAULT_QUIET_END,
        }
    }
}

impl From<notification_preference::Model> for Preferences {
    fn from(m: notification_preference::Model) -> Self {
        Preferences {
            channels: Switches {
                in_app: m.in_app,
                web_push: m.web_push,
                gateway: m.gateway,
                email: m.email,
            },
            quiet: m.quiet_hours.then_some(QuietHours {
                start_minute: m.quiet_start_minute,
                end_minute: m.quiet_end_minute,
            }),
            quiet_start_minute: m.quiet_start_minute,
            quiet_end_minute: m.quiet_end_minute,
        }
    }
}

/// The preferences of these users (defaults for those without a row).
pub async fn of_users(
    db: &impl ConnectionTrait,
    users: &[Uuid],
) -> AppResult<HashMap<Uuid, Preferences>> {
    let rows = notification_preference::Entity::find()
        .filter(notification_preference::Column::UserId.is_in(users.iter().copied()))
        .all(db)
        .await?;
    let mut out: HashMap<Uuid, Preferences> =
        users.iter().map(|u| (*u, Preferences::default())).collect();
    for row in rows {
        out.insert(row.user_id, row.into());
    }
    Ok(out)
}

pub async fn of_user(db: &impl ConnectionTrait, user: Uuid) -> AppResult<Preferences> {
    Ok(of_users(db, &[user])
        .await?
        .remove(&user)
        .unwrap_or_default())
}

/// The tenant's switches (all on without a row).
pub async fn tenant_switches(db: &impl ConnectionTrait, tenant_id: Uuid) -> AppResult<Switches> {
    Ok(notification_tenant_setting::Entity::find_by_id(tenant_id)
        .one(db)
        .await?
        .map(|m| Switches {
            in_app: m.in_app,
            web_push: m.web_push,
            gateway: m.gateway,
            email: m.email,
        })
        .unwrap_or_default())
}

pub async fn set_tenant_switches(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    s: Switches,
) -> AppResult<()> {
    notification_tenant_setting::Entity::insert(notification_tenant_setting::ActiveModel {
        tenant_id: Set(tenant_id),
        in_app: Set(s.in_app),
        web_push: Set(s.web_push),
        gateway: Set(s.gateway),
        email: Set(s.email),
        updated_at: Set(now()),
    })
    .on_conflict(
        OnConflict::column(notification_tenant_setting::Column::TenantId)
            .update_columns([
                notification_tenant_setting::Column::InApp,
                notification_tenant_setting::Column::WebPush,
                notification_tenant_setting::Column::Gateway,
                notification_tenant_setting::Column::Email,
                notification_tenant_setting::Column::UpdatedAt,
            ])
            .to_owned(),
    )
    .exec(db)
    .await?;
    Ok(())
}

pub async fn save(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    user_id: Uuid,
    p: &Preferences,
) -> AppResult<()> {
    notification_preference::Entity::insert(notification_preference::ActiveModel {
        user_id: Set(user_id),
        tenant_id: Set(tenant_id),
        in_app: Set(p.channels.in_app),
        web_push: Set(p.channels.web_push),
        gateway: Set(p.channels.gateway),
        email: Set(p.channels.email),
        quiet_hours: Set(p.quiet.is_some()),
        quiet_start_minute: Set(p.quiet_start_minute),
        quiet_end_minute: Set(p.quiet_end_minute),
        updated_at: Set(now()),
    })
    .on_conflict(
        OnConflict::column(notification_preference::Column::UserId)
            .update_columns([
                notification_preference::Column::InApp,
                notification_preference::Column::WebPush,
                notification_preference::Column::Gateway,
                notification_preference::Column::Email,
                notification_preference::Column::QuietHours,
                notification_preference::Column::QuietStartMinute,
                notification_preference::Column::QuietEndMinute,
                notification_preference::Column::UpdatedAt,
            ])
            .to_owned(),
    )
    .exec(db)
    .await?;
    Ok(())
}

/// The level of each of these users in the room (ALL without a row).
pub async fn room_levels(
    db: &impl ConnectionTrait,
    room_id: Uuid,
    users: &[Uuid],
) -> AppResult<HashMap<Uuid, RoomLevel>> {
    let rows = notification_room_level::Entity::find()
        .filter(notification_room_level::Column::RoomId.eq(room_id))
        .filter(notification_room_level::Column::UserId.is_in(users.iter().copied()))
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|r| (r.user_id, r.level)).collect())
}

/// Every room level a user set (rooms at ALL have no row).
pub async fn levels_of_user(
    db: &impl ConnectionTrait,
    user_id: Uuid,
) -> AppResult<Vec<notification_room_level::Model>> {
    Ok(notification_room_level::Entity::find()
        .filter(notification_room_level::Column::UserId.eq(user_id))
        .all(db)
        .await?)
}

pub async fn set_room_level(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    room_id: Uuid,
    level: RoomLevel,
) -> AppResult<()> {
    if level == RoomLevel::All {
        notification_room_level::Entity::delete_many()
            .filter(notification_room_level::Column::UserId.eq(user_id))
            .filter(notification_room_level::Column::RoomId.eq(room_id))
            .exec(db)
            .await?;
        return Ok(());
    }
    notification_room_level::Entity::insert(notification_room_level::ActiveModel {
        user_id: Set(user_id),
        room_id: Set(room_id),
        level: Set(level),
        updated_at: Set(now()),
    })
    .on_conflict(
        OnConflict::columns([
            notification_room_level::Column::UserId,
            notification_room_level::Column::RoomId,
        ])
        .update_columns([
            notification_room_level::Column::Level,
            notification_room_level::Column::UpdatedAt,
        ])
        .to_owned(),
    )
    .exec(db)
    .await?;
    Ok(())
}

/// What `updateNotificationPreferences` changes; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub in_app: Option<bool>,
    pub web_push: Option<bool>,
    pub gateway: Option<bool>,
    pub email: Option<bool>,
    pub quiet_hours: Option<bool>,
    pub quiet_start: Option<String>,
    pub quiet_end: Option<String>,
    pub rooms: Vec<(Uuid, RoomLevel)>,
}

/// Most room levels one update sets.
pub const MAX_ROOMS: usize = 200;

/// Applies `change` to the user's preferences in one transaction, audited
/// `notification.preferences`. Room levels only for rooms the user is a current member of
/// (FORBIDDEN otherwise, nothing changed).
pub async fn update(
    db: &sea_orm::DatabaseConnection,
    user: &entity::user::Model,
    change: Change,
    origin: &crate::service::audit::Origin,
) -> AppResult<Preferences> {
    use crate::service::audit::{self, Event};
    use entity::kinds::AuditOutcome;
    if change.rooms.len() > MAX_ROOMS {
        return Err(AppError::bad_input(
            "rooms",
            format!("at most {MAX_ROOMS} rooms at once"),
        ));
    }
    let start = change
        .quiet_start
        .as_deref()
        .map(|v| parse_hhmm("quietHoursStart", v))
        .transpose()?;
    let end = change
        .quiet_end
        .as_deref()
        .map(|v| parse_hhmm("quietHoursEnd", v))
        .transpose()?;
    let txn = crate::db::begin_write(db).await?;
    let mut p = of_user(&txn, user.id).await?;
    let c = &mut p.channels;
    c.in_app = change.in_app.unwrap_or(c.in_app);
    c.web_push = change.web_push.unwrap_or(c.web_push);
    c.gateway = change.gateway.unwrap_or(c.gateway);
    c.email = change.email.unwrap_or(c.email);
    p.quiet_start_minute = start.unwrap_or(p.quiet_start_minute);
    p.quiet_end_minute = end.unwrap_or(p.quiet_end_minute);
    let quiet_on = change.quiet_hours.unwrap_or(p.quiet.is_some());
    p.quiet = quiet_on.then_some(QuietHours {
        start_minute: p.quiet_start_minute,
        end_minute: p.quiet_end_minute,
    });
    save(&txn, user.tenant_id, user.id, &p).await?;
    for (room_id, level) in &change.rooms {
        if crate::service::memberships::current(&txn, *room_id, user.id)
            .await?
            .is_none()
        {
            return Err(AppError::Forbidden);
        }
        set_room_level(&txn, user.id, *room_id, *level).await?;
    }
    let mut event = Event::new(
        user.tenant_id,
        "notification.preferences",
        AuditOutcome::Allowed,
    )
    .by(origin)
    .target("user", user.id)
    .detail("inApp", p.channels.in_app)
    .detail("webPush", p.channels.web_push)
    .detail("gateway", p.channels.gateway)
    .detail("email", p.channels.email)
    .detail("quietHours", p.quiet.is_some());
    if !change.rooms.is_empty() {
        event = event.detail("rooms", change.rooms.len());
    }
    audit::record(&txn, event).await?;
    txn.commit().await?;
    Ok(p)
}

/// `setTenantNotificationChannels` (CITY_ADMIN): the tenant's switches, audited.
pub async fn update_tenant(
    db: &sea_orm::DatabaseConnection,
    cap: crate::authz::CityAdmin,
    change: Switches,
    origin: &crate::service::audit::Origin,
) -> AppResult<Switches> {
    use crate::service::audit::{self, Event};
    use entity::kinds::AuditOutcome;
    let txn = crate::db::begin_write(db).await?;
    set_tenant_switches(&txn, cap.tenant_id, change).await?;
    let event = Event::new(
        cap.tenant_id,
        "notification.tenant_channels",
        AuditOutcome::Allowed,
    )
    .by(origin)
    .target("tenant", cap.tenant_id)
    .detail("inApp", change.in_app)
    .detail("webPush", change.web_push)
    .detail("gateway", change.gateway)
    .detail("email", change.email);
    audit::record(&txn, event).await?;
    txn.commit().await?;
    Ok(change)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(tz: Tz, h: u32, m: u32) -> DateTime<Utc> {
        tz.with_ymd_and_hms(2026, 12, 1, h, m, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn overnight_quiet_hours_end_the_next_morning() {
        let tz = chrono_tz::Asia::Tokyo;
        let q = QuietHours {
            start_minute: 22 * 60,
            end_minute: 7 * 60,
        };
        let end = tz.with_ymd_and_hms(2026, 12, 2, 7, 0, 0).unwrap();
        assert_eq!(
            q.end_after(at(tz, 23, 30), tz),
            Some(end.with_timezone(&Utc))
        );
        let same_day = tz.with_ymd_and_hms(2026, 12, 1, 7, 0, 0).unwrap();
        assert_eq!(
            q.end_after(at(tz, 3, 0), tz),
            Some(same_day.with_timezone(&Utc))
        );
        assert_eq!(q.end_after(at(tz, 7, 0), tz), None);
        assert_eq!(q.end_after(at(tz, 12, 0), tz), None);
        assert_eq!(q.end_after(at(tz, 21, 59), tz), None);
    }

    #[test]
    fn daytime_quiet_hours_and_empty_ones() {
        let tz = chrono_tz::Asia::Tokyo;
        let q = QuietHours {
            start_minute: 12 * 60,
            end_minute: 13 * 60,
        };
        assert!(q.end_after(at(tz, 12, 30), tz).is_some());
        assert_eq!(q.end_after(at(tz, 13, 0), tz), None);
        let never = QuietHours {
            start_minute: 600,
            end_minute: 600,
        };
        assert_eq!(never.end_after(at(tz, 10, 0), tz), None);
    }

    #[test]
    fn times_of_day_parse_and_print() {
        assert_eq!(parse_hhmm("start", "22:00").unwrap(), 1320);
        assert_eq!(format_hhmm(7 * 60 + 5), "07:05");
        assert!(parse_hhmm("start", "25:00").is_err());
        assert!(parse_hhmm("start", "noon").is_err());
    }
}
