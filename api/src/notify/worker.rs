//! The delivery worker, one per instance: claims due delivery rows, checks at send time that
//! the recipient still wants them (channel and room settings, membership, suspension), hands
//! them to the channel, and records the outcome with a conditional update (and the audit
//! event `notification.sent` / `notification.failed`) in one transaction.
//!
//! Claims: on PostgreSQL `SELECT … FOR UPDATE SKIP LOCKED` then an update to SENDING with a
//! lease (`notification_claim_seconds`), so several instances take disjoint rows and a crashed
//! instance's rows are taken over once its lease ends; SQLite serves one instance, whose write
//! lock serialises claims. Every later state change requires the row to still be SENDING under
//! this worker's claim, so a row is finished once, by one worker.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt as _;
use rand::Rng as _;
use sea_orm::sea_query::{Expr, ExprTrait as _, LockBehavior, LockType};
use sea_orm::{
    ColumnTrait as _, Condition, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _,
};
use uuid::Uuid;

use entity::kinds::{AccountStatus, AuditOutcome, Role};
use entity::notification::NotificationKind;
use entity::notification_delivery::{self as delivery, Channel, DeliveryState};
use entity::notification_room_level::RoomLevel;
use entity::{notification, room_member, user};

use crate::error::AppResult;
use crate::events::LiveEvent;
use crate::notify::{is_note_kind, level_allows, prefs};
use crate::service::audit::{self, Event};
use crate::service::{enum_name, now};
use crate::state::AppState;

pub use crate::notify::transport::{Outbound, Outcome, Transport};

/// Rows claimed per round.
pub const BATCH: u64 = 200;
/// Sends in flight at once per instance.
const PARALLEL: usize = 16;
/// Longest reason kept on a row.
const REASON_MAX: usize = 200;

/// Wakes this instance's worker (after a commit that wrote notifications).
#[derive(Clone, Default)]
pub struct Wake(Arc<tokio::sync::Notify>);

impl Wake {
    pub fn wake(&self) {
        self.0.notify_one();
    }

    async fn wait(&self, max: std::time::Duration) {
        let _ = tokio::time::timeout(max, self.0.notified()).await;
    }
}

/// Runs until the task is aborted.
pub async fn run(state: AppState, transport: Arc<dyn Transport>) {
    let worker = Uuid::now_v7();
    loop {
        let claimed = match round(&state, transport.as_ref(), worker).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = ?e, "notification delivery round failed");
                0
            }
        };
        if claimed < BATCH {
            state
                .notify
                .wait(state.config.notification_worker_interval)
                .await;
        }
    }
}

/// Claims up to `limit` due rows matching `extra` for `worker`.
async fn claim(
    db: &DatabaseConnection,
    worker: Uuid,
    lease: Duration,
    limit: u64,
    extra: Condition,
) -> AppResult<Vec<delivery::Model>> {
    let at = now();
    let txn = crate::db::begin_write(db).await?;
    let due = Condition::any()
        .add(
            Condition::all()
                .add(delivery::Column::State.eq(DeliveryState::Pending))
                .add(delivery::Column::DueAt.lte(at)),
        )
        .add(
            Condition::all()
                .add(delivery::Column::State.eq(DeliveryState::Sending))
                .add(delivery::Column::ClaimedUntil.lt(at)),
        );
    let mut select = delivery::Entity::find()
        .select_only()
        .column(delivery::Column::Id)
        .filter(due)
        .filter(extra)
        .order_by_asc(delivery::Column::DueAt)
        .limit(limit);
    if txn.get_database_backend() == DbBackend::Postgres {
        select = select.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    let ids: Vec<Uuid> = select.into_tuple().all(&txn).await?;
    if ids.is_empty() {
        txn.commit().await?;
        return Ok(Vec::new());
    }
    delivery::Entity::update_many()
        .col_expr(
            delivery::Column::State,
            Expr::value(enum_name(&DeliveryState::Sending)),
        )
        .col_expr(delivery::Column::ClaimedBy, Expr::value(worker))
        .col_expr(delivery::Column::ClaimedUntil, Expr::value(at + lease))
        .col_expr(
            delivery::Column::Attempts,
            Expr::col(delivery::Column::Attempts).add(1),
        )
        .filter(delivery::Column::Id.is_in(ids.iter().copied()))
        .exec(&txn)
        .await?;
    let rows = delivery::Entity::find()
        .filter(delivery::Column::Id.is_in(ids))
        .all(&txn)
        .await?;
    txn.commit().await?;
    Ok(rows)
}

/// What became of one claimed row.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Finish {
    Sent,
    /// Not sent on purpose (no target, turned off, left the room, suspended).
    Skipped(&'static str),
    Retry(String),
    Failed(String),
}

fn short(reason: &str) -> String {
    reason.chars().take(REASON_MAX).collect()
}

/// The delay before try `attempts + 1`: doubling from the base up to the limit, then a random
/// point in its upper half, so retries of many rows spread out.
pub fn backoff(
    attempts: i32,
    base: std::time::Duration,
    max: std::time::Duration,
) -> std::time::Duration {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(0);
    let delay = base.saturating_mul(2u32.saturating_pow(exp)).min(max);
    let half = delay / 2;
    let jitter = rand::rng().random_range(0..=half.as_millis().min(u128::from(u64::MAX)) as u64);
    half + std::time::Duration::from_millis(jitter)
}

/// Send-time facts about the recipients of a batch.
struct Context {
    users: HashMap<Uuid, user::Model>,
    /// (user, room) pairs with a current membership.
    members: HashSet<(Uuid, Uuid)>,
    levels: HashMap<(Uuid, Uuid), RoomLevel>,
    channels: HashMap<Uuid, prefs::Switches>,
    unread: HashMap<Uuid, u64>,
}

async fn context(
    db: &DatabaseConnection,
    notifications: &HashMap<Uuid, notification::Model>,
) -> AppResult<Context> {
    let mut user_ids: Vec<Uuid> = notifications.values().map(|n| n.user_id).collect();
    user_ids.sort_unstable();
    user_ids.dedup();
    let users: HashMap<Uuid, user::Model> = user::Entity::find()
        .filter(user::Column::Id.is_in(user_ids.iter().copied()))
        .all(db)
        .await?
        .into_iter()
        .map(|u| (u.id, u))
        .collect();
    let mut room_ids: Vec<Uuid> = notifications.values().filter_map(|n| n.room_id).collect();
    room_ids.sort_unstable();
    room_ids.dedup();
    let members: HashSet<(Uuid, Uuid)> = if room_ids.is_empty() {
        HashSet::new()
    } else {
        room_member::Entity::find()
            .filter(room_member::Column::RoomId.is_in(room_ids.iter().copied()))
            .filter(room_member::Column::UserId.is_in(user_ids.iter().copied()))
            .filter(room_member::Column::LeftAt.is_null())
            .all(db)
            .await?
            .into_iter()
            .map(|m| (m.user_id, m.room_id))
            .collect()
    };
    let mut levels = HashMap::new();
    for room_id in &room_ids {
        for (user_id, level) in prefs::room_levels(db, *room_id, &user_ids).await? {
            levels.insert((user_id, *room_id), level);
        }
    }
    let preferences = prefs::of_users(db, &user_ids).await?;
    let mut tenants: HashMap<Uuid, prefs::Switches> = HashMap::new();
    let mut channels = HashMap::new();
    for (id, u) in &users {
        let tenant = match tenants.get(&u.tenant_id) {
            Some(t) => *t,
            None => {
                let t = prefs::tenant_switches(db, u.tenant_id).await?;
                tenants.insert(u.tenant_id, t);
                t
            }
        };
        let p = preferences.get(id).copied().unwrap_or_default();
        channels.insert(*id, p.channels.and(tenant));
    }
    let mut unread = HashMap::new();
    for id in &user_ids {
        unread.insert(*id, crate::notify::inbox::unread_count(db, *id).await?);
    }
    Ok(Context {
        users,
        members,
        levels,
        channels,
        unread,
    })
}

impl Context {
    /// Why this row must not go out now, if so.
    fn hold(&self, n: &notification::Model, channel: Channel) -> Option<&'static str> {
        let Some(u) = self.users.get(&n.user_id) else {
            return Some("recipient gone");
        };
        if u.status == AccountStatus::Suspended {
            return Some("recipient suspended");
        }
        if !self.channels.get(&n.user_id).is_some_and(|c| c.on(channel)) {
            return Some("channel turned off");
        }
        if let Some(room_id) = n.room_id {
            // The city hears of closure requests without being a member.
            let city_notice =
                n.kind == NotificationKind::RoomClosureRequested && u.role == Role::CityAdmin;
            let needs_membership = is_note_kind(n.kind)
                || matches!(
                    n.kind,
                    NotificationKind::RoomClosureRequested | NotificationKind::RoomClosed
                );
            if needs_membership && !city_notice && !self.members.contains(&(n.user_id, room_id)) {
                return Some("recipient is no longer a member of the room");
            }
            let level = self
                .levels
                .get(&(n.user_id, room_id))
                .copied()
                .unwrap_or(RoomLevel::All);
            if !level_allows(level, n.kind, n.urgent) {
                return Some("room muted or limited");
            }
        }
        None
    }

    fn outbound(&self, n: &notification::Model) -> Outbound {
        Outbound {
            notification_id: n.id,
            tenant_id: n.tenant_id,
            user_id: n.user_id,
            kind: enum_name(&n.kind),
            room_id: n.room_id,
            event_id: n.event_id,
            urgent: n.urgent,
            unread_count: self.unread.get(&n.user_id).copied().unwrap_or(0),
        }
    }
}

fn finish_of(outcome: Outcome) -> Finish {
    match outcome {
        Outcome::Sent => Finish::Sent,
        Outcome::NoTarget => Finish::Skipped("no target"),
        Outcome::Retry(reason) => Finish::Retry(short(&reason)),
        Outcome::Failed(reason) => Finish::Failed(short(&reason)),
    }
}

/// One round: claim, check, send, record. Returns how many rows it claimed.
pub async fn round(state: &AppState, transport: &dyn Transport, worker: Uuid) -> AppResult<u64> {
    let db = &state.db;
    let lease = crate::notify::lease(&state.config);
    let mut claimed = claim(db, worker, lease, BATCH, Condition::all()).await?;
    let count = claimed.len() as u64;
    if claimed.is_empty() {
        return Ok(0);
    }
    // A digest takes every e-mail of its recipient that waits for the coming window (an
    // immediate mail goes alone).
    let horizon = now()
        + Duration::minutes(i64::from(std::cmp::max(
            state.config.notification_email_digest_minutes,
            1,
        )));
    let digest_users: HashSet<Uuid> = claimed
        .iter()
        .filter(|d| d.channel == Channel::Email && d.digest)
        .map(|d| d.user_id)
        .collect();
    for user_id in digest_users {
        let more = Condition::all()
            .add(delivery::Column::UserId.eq(user_id))
            .add(delivery::Column::Channel.eq(Channel::Email))
            .add(delivery::Column::Digest.eq(true));
        let mut extra = claim_waiting(db, worker, lease, more, horizon).await?;
        claimed.append(&mut extra);
    }

    let ids: Vec<Uuid> = claimed.iter().map(|d| d.notification_id).collect();
    let notifications: HashMap<Uuid, notification::Model> = notification::Entity::find()
        .filter(notification::Column::Id.is_in(ids))
        .all(db)
        .await?
        .into_iter()
        .map(|n| (n.id, n))
        .collect();
    let ctx = context(db, &notifications).await?;

    let mut done: Vec<(delivery::Model, Finish)> = Vec::with_capacity(claimed.len());
    let mut sends = Vec::new();
    let mut mails: HashMap<Uuid, Vec<delivery::Model>> = HashMap::new();
    let mut live = Vec::new();
    for d in claimed {
        let Some(n) = notifications.get(&d.notification_id) else {
            done.push((d, Finish::Skipped("notification gone")));
            continue;
        };
        if let Some(why) = ctx.hold(n, d.channel) {
            done.push((d, Finish::Skipped(why)));
            continue;
        }
        match d.channel {
            Channel::InApp => {
                live.push(LiveEvent::Notification {
                    user_id: n.user_id,
                    notification_id: n.id,
                    kind: enum_name(&n.kind),
                    room_id: n.room_id,
                    event_id: n.event_id,
                    urgent: n.urgent,
                });
                done.push((d, Finish::Sent));
            }
            Channel::Email => mails.entry(d.user_id).or_default().push(d),
            Channel::WebPush | Channel::Gateway => sends.push((d, ctx.outbound(n))),
        }
    }
    state.events.publish(live).await;

    let pushed: Vec<(delivery::Model, Finish)> = futures_util::stream::iter(sends)
        .map(|(d, out)| async move {
            let outcome = match d.channel {
                Channel::WebPush => transport.web_push(db, &out).await,
                _ => transport.gateway(db, &out).await,
            };
            (d, finish_of(outcome))
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    done.extend(pushed);

    let mailed: Vec<Vec<(delivery::Model, Finish)>> = futures_util::stream::iter(mails)
        .map(|(user_id, rows)| {
            let items: Vec<Outbound> = rows
                .iter()
                .filter_map(|d| notifications.get(&d.notification_id))
                .map(|n| ctx.outbound(n))
                .collect();
            async move {
                let finish = finish_of(transport.email(db, user_id, &items).await);
                rows.into_iter()
                    .map(|d| (d, finish.clone()))
                    .collect::<Vec<_>>()
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    done.extend(mailed.into_iter().flatten());

    record(state, worker, &notifications, done).await?;
    Ok(count)
}

/// Claims pending rows matching `extra` that fall due before `horizon` (the rest of a digest).
async fn claim_waiting(
    db: &DatabaseConnection,
    worker: Uuid,
    lease: Duration,
    extra: Condition,
    horizon: DateTime<Utc>,
) -> AppResult<Vec<delivery::Model>> {
    let at = now();
    let txn = crate::db::begin_write(db).await?;
    let mut select = delivery::Entity::find()
        .select_only()
        .column(delivery::Column::Id)
        .filter(delivery::Column::State.eq(DeliveryState::Pending))
        .filter(delivery::Column::DueAt.lte(horizon))
        .filter(extra)
        .limit(BATCH);
    if txn.get_database_backend() == DbBackend::Postgres {
        select = select.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    let ids: Vec<Uuid> = select.into_tuple().all(&txn).await?;
    if ids.is_empty() {
        txn.commit().await?;
        return Ok(Vec::new());
    }
    delivery::Entity::update_many()
        .col_expr(
            delivery::Column::State,
            Expr::value(enum_name(&DeliveryState::Sending)),
        )
        .col_expr(delivery::Column::ClaimedBy, Expr::value(worker))
        .col_expr(delivery::Column::ClaimedUntil, Expr::value(at + lease))
        .col_expr(
            delivery::Column::Attempts,
            Expr::col(delivery::Column::Attempts).add(1),
        )
        .filter(delivery::Column::Id.is_in(ids.iter().copied()))
        .filter(delivery::Column::State.eq(DeliveryState::Pending))
        .exec(&txn)
        .await?;
    let rows = delivery::Entity::find()
        .filter(delivery::Column::Id.is_in(ids))
        .filter(delivery::Column::ClaimedBy.eq(worker))
        .filter(delivery::Column::State.eq(DeliveryState::Sending))
        .all(&txn)
        .await?;
    txn.commit().await?;
    Ok(rows)
}

/// Writes every outcome of a round, each conditional on this worker's claim, with the audit
/// events of the external deliveries that ended, in one transaction.
async fn record(
    state: &AppState,
    worker: Uuid,
    notifications: &HashMap<Uuid, notification::Model>,
    done: Vec<(delivery::Model, Finish)>,
) -> AppResult<()> {
    let at = now();
    let config = &state.config;
    let txn = crate::db::begin_write(&state.db).await?;
    let mut events = Vec::new();
    let mut sent = Vec::new();
    let mut skipped = Vec::new();
    for (d, finish) in done {
        let finish = match finish {
            Finish::Retry(reason)
                if u32::try_from(d.attempts).unwrap_or(u32::MAX)
                    >= config.notification_max_attempts =>
            {
                Finish::Failed(format!("gave up after {} tries: {reason}", d.attempts))
            }
            other => other,
        };
        let mine = || {
            delivery::Entity::update_many()
                .filter(delivery::Column::Id.eq(d.id))
                .filter(delivery::Column::State.eq(DeliveryState::Sending))
                .filter(delivery::Column::ClaimedBy.eq(worker))
        };
        match &finish {
            Finish::Sent => sent.push(d.id),
            Finish::Skipped(_) => skipped.push(d.id),
            Finish::Retry(reason) => {
                let delay = backoff(
                    d.attempts,
                    config.notification_retry_base,
                    config.notification_retry_max,
                );
                let due = at + Duration::from_std(delay).unwrap_or_else(|_| Duration::minutes(1));
                mine()
                    .col_expr(
                        delivery::Column::State,
                        Expr::value(enum_name(&DeliveryState::Pending)),
                    )
                    .col_expr(delivery::Column::DueAt, Expr::value(due))
                    .col_expr(delivery::Column::LastError, Expr::value(reason.clone()))
                    .col_expr(
                        delivery::Column::ClaimedUntil,
                        Expr::value(Option::<DateTime<Utc>>::None),
                    )
                    .exec(&txn)
                    .await?;
                tracing::info!(channel = enum_name(&d.channel), attempts = d.attempts, reason = %reason, "notification delivery will be retried");
            }
            Finish::Failed(reason) => {
                let changed = mine()
                    .col_expr(
                        delivery::Column::State,
                        Expr::value(enum_name(&DeliveryState::Failed)),
                    )
                    .col_expr(delivery::Column::LastError, Expr::value(short(reason)))
                    .col_expr(delivery::Column::FinishedAt, Expr::value(at))
                    .exec(&txn)
                    .await?;
                if changed.rows_affected == 1 {
                    events.push(audit_event(
                        &d,
                        notifications,
                        "notification.failed",
                        Some(reason),
                    ));
                }
            }
        }
        if matches!(finish, Finish::Sent) && d.channel != Channel::InApp {
            events.push(audit_event(&d, notifications, "notification.sent", None));
        }
    }
    for (ids, to) in [
        (sent, DeliveryState::Sent),
        (skipped, DeliveryState::Skipped),
    ] {
        if ids.is_empty() {
            continue;
        }
        delivery::Entity::update_many()
            .col_expr(delivery::Column::State, Expr::value(enum_name(&to)))
            .col_expr(delivery::Column::FinishedAt, Expr::value(at))
            .filter(delivery::Column::Id.is_in(ids))
            .filter(delivery::Column::State.eq(DeliveryState::Sending))
            .filter(delivery::Column::ClaimedBy.eq(worker))
            .exec(&txn)
            .await?;
    }
    if !events.is_empty() {
        audit::record_all(&txn, events).await?;
    }
    txn.commit().await?;
    Ok(())
}

fn audit_event(
    d: &delivery::Model,
    notifications: &HashMap<Uuid, notification::Model>,
    action: &'static str,
    reason: Option<&str>,
) -> Event {
    let outcome = if reason.is_some() {
        AuditOutcome::Failed
    } else {
        AuditOutcome::Allowed
    };
    let mut event = Event::new(d.tenant_id, action, outcome)
        .target("notification", d.notification_id)
        .detail("recipientId", d.user_id.to_string())
        .detail("channel", enum_name(&d.channel))
        .detail("attempts", d.attempts);
    if let Some(n) = notifications.get(&d.notification_id) {
        event = event.detail("kind", enum_name(&n.kind));
        if let Some(id) = n.event_id {
            event = event.detail("eventId", id.to_string());
        }
        if let Some(room) = n.room_id {
            event = event.room(room);
        }
    }
    if let Some(reason) = reason {
        event = event.detail("reason", short(reason));
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_limit_with_jitter() {
        let base = std::time::Duration::from_secs(10);
        let max = std::time::Duration::from_secs(3600);
        for _ in 0..50 {
            let first = backoff(1, base, max);
            assert!(first >= base / 2 && first <= base, "{first:?}");
            let fourth = backoff(4, base, max);
            assert!(fourth >= base * 4 && fourth <= base * 8, "{fourth:?}");
            let late = backoff(30, base, max);
            assert!(late >= max / 2 && late <= max, "{late:?}");
        }
    }
}
