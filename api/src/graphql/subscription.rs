//! Subscriptions over graphql-transport-ws (`/graphql/ws`): a room's live events for its
//! members, and the caller's own invitations and mentions. Each stream re-checks, before every
//! event and at least every 250 ms, that the caller is still a member (the enforcer, which
//! follows removals on every instance via pub/sub) and that its login session is alive (one
//! batched check per instance for all streams); when either fails, the stream completes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Context, ID, Json, Object, Result, SimpleObject, Subscription, Union};
use chrono_tz::Tz;
use futures_util::Stream;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use entity::kinds::AuditOutcome;

use crate::auth::session::SessionStore;
use crate::authz::enforcer::room_domain;
use crate::authz::rooms::RoomViewer;
use crate::events::LiveEvent;
use crate::graphql::content::{Note, VitalRecord, person};
use crate::graphql::context::{Caller, ContextExt as _};
use crate::graphql::live::{Content, Resolved};
use crate::graphql::rooms::{Room, room_for};
use crate::graphql::types::User;
use crate::service::audit::{Event, Origin};
use crate::service::users;
use crate::state::AppState;

/// How often a live stream re-checks membership and session at the latest.
const RECHECK: Duration = Duration::from_millis(250);

/// The login sessions live streams depend on. One task per instance asks the session store
/// about all of them at once every [`RECHECK`] and tells the streams of ended ones.
#[derive(Clone, Default)]
pub struct LiveSessions {
    inner: Arc<parking_lot::Mutex<HashMap<String, watch::Sender<bool>>>>,
}

impl LiveSessions {
    /// A receiver that turns `false` when the session ends.
    pub fn watch(&self, session_hash: &str) -> watch::Receiver<bool> {
        let mut map = self.inner.lock();
        map.entry(session_hash.to_string())
            .or_insert_with(|| watch::channel(true).0)
            .subscribe()
    }

    /// Checks the watched sessions until the process ends.
    pub async fn run(&self, sessions: &SessionStore) {
        let mut tick = tokio::time::interval(RECHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let hashes: Vec<String> = {
                let mut map = self.inner.lock();
                map.retain(|_, tx| tx.receiver_count() > 0);
                map.keys().cloned().collect()
            };
            if hashes.is_empty() {
                continue;
            }
            let alive = match sessions.alive(&hashes).await {
                Ok(alive) => alive,
                Err(e) => {
                    tracing::warn!(error = %e, "checking live sessions failed; trying again");
                    continue;
                }
            };
            let mut map = self.inner.lock();
            for (hash, alive) in hashes.iter().zip(alive) {
                if !alive && let Some(tx) = map.remove(hash) {
                    let _ = tx.send(false);
                }
            }
        }
    }
}

#[derive(SimpleObject)]
pub struct NotePosted {
    pub note: Note,
}

#[derive(SimpleObject)]
pub struct NoteChanged {
    pub note: Note,
}

#[derive(SimpleObject)]
pub struct VitalsRecorded {
    pub record: VitalRecord,
}

pub struct MembershipChanged {
    room_id: Uuid,
    user_id: Uuid,
    joined: bool,
    tz: Tz,
}

#[Object]
impl MembershipChanged {
    async fn room_id(&self) -> ID {
        ID(self.room_id.to_string())
    }
    async fn user(&self, ctx: &Context<'_>) -> Result<User> {
        person(ctx, self.user_id, self.tz).await
    }
    /// `false` when the membership ended.
    async fn joined(&self) -> bool {
        self.joined
    }
}

#[derive(SimpleObject)]
pub struct RoomStatusChanged {
    pub room: Room,
}

#[derive(Union)]
pub enum RoomEvent {
    NotePosted(NotePosted),
    NoteChanged(NoteChanged),
    VitalsRecorded(VitalsRecorded),
    MembershipChanged(MembershipChanged),
    RoomStatusChanged(RoomStatusChanged),
}

/// What one live stream holds between events.
struct Live {
    state: AppState,
    caller: Caller,
    origin: Origin,
    /// Names this stream in the gathered audit of its deliveries.
    stream: u64,
    events: broadcast::Receiver<Arc<Resolved>>,
    session: watch::Receiver<bool>,
    tick: tokio::time::Interval,
}

impl Live {
    fn new(state: &AppState, caller: &Caller, origin: Origin) -> Live {
        let mut tick = tokio::time::interval(RECHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Live {
            events: state.live_feed.subscribe(),
            session: state.live_sessions.watch(&caller.session_hash),
            stream: state.live_audit.stream_id(),
            state: state.clone(),
            caller: caller.clone(),
            origin,
            tick,
        }
    }

    fn session_alive(&self) -> bool {
        *self.session.borrow()
    }

    /// The next event, or `None` when the stream must end: the session ended, `still_allowed`
    /// says no (checked before each event and every [`RECHECK`]), or the feed closed.
    async fn next_event(&mut self, still_allowed: impl Fn(&Live) -> bool) -> Option<Arc<Resolved>> {
        loop {
            if !self.session_alive() || !still_allowed(self) {
                return None;
            }
            tokio::select! {
                received = self.events.recv() => match received {
                    Ok(event) => {
                        if !self.session_alive() || !still_allowed(self) {
                            return None;
                        }
                        return Some(event);
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "a live stream fell behind and skipped events");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.session.changed() => {}
                _ = self.tick.tick() => {}
            }
        }
    }

    /// Records that live content of the room reached the caller; gathered per stream and room
    /// and written with the other read events (see [`crate::graphql::live::LiveAudit`]).
    fn audit_delivery(&self, action: &'static str, room_id: Uuid, id: Uuid) {
        let event = Event::new(self.caller.tenant.id, action, AuditOutcome::Allowed)
            .by(&self.origin)
            .room(room_id)
            .target("room", room_id);
        self.state.live_audit.delivered(self.stream, &event, id);
    }
}

/// The room event a member sees for `resolved`, with the member's standing.
fn room_event(live: &Live, viewer: &RoomViewer, tz: Tz, resolved: &Resolved) -> Option<RoomEvent> {
    let room_id = viewer.room.id;
    match (&resolved.event, &resolved.content) {
        (
            event @ (LiveEvent::NotePosted { .. } | LiveEvent::NoteChanged { .. }),
            Content::Note(model),
        ) => {
            if model.room_id != room_id {
                return None;
            }
            live.audit_delivery("notes.read", room_id, model.id);
            let note = Note {
                model: model.clone(),
                tz,
                room: viewer.clone(),
            };
            Some(if matches!(event, LiveEvent::NotePosted { .. }) {
                RoomEvent::NotePosted(NotePosted { note })
            } else {
                RoomEvent::NoteChanged(NoteChanged { note })
            })
        }
        (LiveEvent::VitalsRecorded { .. }, Content::Vital(model)) => {
            if model.room_id != room_id {
                return None;
            }
            live.audit_delivery("vitals.read", room_id, model.id);
            Some(RoomEvent::VitalsRecorded(VitalsRecorded {
                record: VitalRecord {
                    model: model.clone(),
                    tz,
                },
            }))
        }
        (
            LiveEvent::MembershipChanged {
                room_id,
                user_id,
                joined,
            },
            _,
        ) => Some(RoomEvent::MembershipChanged(MembershipChanged {
            room_id: *room_id,
            user_id: *user_id,
            joined: *joined,
            tz,
        })),
        (LiveEvent::RoomStatusChanged { .. }, Content::Room(room)) => {
            Some(RoomEvent::RoomStatusChanged(RoomStatusChanged {
                room: Room {
                    viewer: RoomViewer {
                        room: room.clone(),
                        ..viewer.clone()
                    },
                    tz,
                },
            }))
        }
        _ => None,
    }
}

/// The `myEvents` payload for `resolved`, if it is the caller's.
fn my_event(live: &Live, resolved: &Resolved) -> Option<serde_json::Value> {
    if resolved.event.for_user() != Some(live.caller.user.id) {
        return None;
    }
    match (&resolved.event, &resolved.content) {
        (
            LiveEvent::Mention {
                room_id, note_id, ..
            },
            _,
        ) => Some(serde_json::json!({
            "type": "MENTION",
            "roomId": room_id,
            "noteId": note_id,
        })),
        (
            LiveEvent::Invitation {
                room_id,
                invitation_id,
                ..
            },
            Content::Room(room),
        ) => Some(serde_json::json!({
            "type": "INVITATION",
            "roomId": room_id,
            "invitationId": invitation_id,
            "patientLabel": room.patient_label,
        })),
        (
            LiveEvent::Notification {
                notification_id,
                kind,
                room_id,
                event_id,
                urgent,
                ..
            },
            _,
        ) => Some(serde_json::json!({
            "type": "NOTIFICATION",
            "notificationId": notification_id,
            "kind": kind,
            "roomId": room_id,
            "eventId": event_id,
            "urgent": urgent,
        })),
        _ => None,
    }
}

#[derive(Default)]
pub struct Subscription;

#[Subscription]
impl Subscription {
    /// Live events of one room (members only). Ends when the caller leaves the room or the
    /// session ends.
    async fn room_events(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
    ) -> Result<impl Stream<Item = RoomEvent> + use<>> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let id = users::parse_id(&room_id)?;
        let room = room_for(ctx, caller, id).await?;
        room.viewer.access()?;
        let origin = caller.origin(ctx.request()?);
        let event = Event::new(caller.tenant.id, "room.subscribe", AuditOutcome::Allowed)
            .by(&origin)
            .room(id)
            .target("room", id);
        state.audit.read(event).await?;
        let live = Live::new(state, caller, origin);
        let viewer = room.viewer;
        let tz = room.tz;
        let domain = room_domain(id);
        Ok(futures_util::stream::unfold(
            (live, viewer, tz, domain),
            |(mut live, viewer, tz, domain)| async move {
                let user_id = live.caller.user.id;
                loop {
                    let resolved = live
                        .next_event(|l| l.state.authz.allowed(user_id, &domain, "content", "read"))
                        .await?;
                    if resolved.event.room_id() != Some(viewer.room.id) {
                        continue;
                    }
                    if let Some(item) = room_event(&live, &viewer, tz, &resolved) {
                        return Some((item, (live, viewer, tz, domain)));
                    }
                }
            },
        ))
    }

    /// New invitations and mentions for the caller:
    /// `{"type":"INVITATION","invitationId","roomId","patientLabel"}` and
    /// `{"type":"MENTION","noteId","roomId"}`, and each new inbox entry:
    /// `{"type":"NOTIFICATION","notificationId","kind","roomId","eventId","urgent"}`.
    /// Ends when the session ends.
    async fn my_events(
        &self,
        ctx: &Context<'_>,
    ) -> Result<impl Stream<Item = Json<serde_json::Value>> + use<>> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let live = Live::new(state, caller, caller.origin(ctx.request()?));
        Ok(futures_util::stream::unfold(live, |mut live| async move {
            loop {
                let resolved = live.next_event(|_| true).await?;
                if let Some(item) = my_event(&live, &resolved) {
                    return Some((Json(item), live));
                }
            }
        }))
    }
}
