//! What every live stream of an instance shares, so that the work of one event does not grow
//! with the number of subscribers:
//!
//! - [`LiveFeed`] reads the row an event names (note, vital record, room) once per instance
//!   and hands the same row to every stream; each stream still decides with its own standing
//!   whether to deliver it (membership, room).
//! - [`LiveAudit`] records what live streams delivered as one `notes.read` / `vitals.read`
//!   event per stream and room per [`AUDIT_WINDOW`], naming every note or record delivered,
//!   rather than one event per delivery: the audit still says who received what and when (to
//!   the window), and its volume follows the number of readers, not readers times events.
//! - WebSocket connections share one set of [`Loaders`](crate::graphql::loaders::Loaders) per
//!   instance, so the authors of a note delivered to 500 streams are read in one statement.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use sea_orm::DatabaseConnection;
use tokio::sync::broadcast;
use uuid::Uuid;

use entity::{note, room, vital_record};

use crate::events::{EventBus, LiveEvent};
use crate::service::audit::{AuditLog, Event};
use crate::service::{notes, rooms};

/// How many resolved events a slow stream may fall behind before it skips some.
const BACKLOG: usize = 4096;

/// Events resolved at the same time; results still go out in the order they were published.
const RESOLVE_AHEAD: usize = 16;

/// How long live deliveries of one stream and room are gathered into one audit event.
pub const AUDIT_WINDOW: Duration = Duration::from_secs(1);

/// Streams are flushed in this many slices spread over the window (stream id modulo), so 500
/// subscribers give 50 audit events every 100 ms rather than 500 at once: a steady trickle for
/// the read-event writer instead of a burst each second. (Bursts once held the tenant's only
/// audit chain, and so the next posted note; reads now have a chain of their own.)
const AUDIT_SLICES: u64 = 10;

/// An event with the row it names, read once for all streams of the instance.
#[derive(Debug)]
pub struct Resolved {
    pub event: LiveEvent,
    pub content: Content,
}

#[derive(Debug)]
pub enum Content {
    Note(note::Model),
    Vital(vital_record::Model),
    Room(room::Model),
    /// The event carries all it needs (membership changes, mentions).
    None,
}

#[derive(Clone)]
pub struct LiveFeed {
    sender: broadcast::Sender<Arc<Resolved>>,
}

impl Default for LiveFeed {
    fn default() -> Self {
        let (sender, _) = broadcast::channel(BACKLOG);
        LiveFeed { sender }
    }
}

impl LiveFeed {
    /// Every resolved event from now on (streams filter by room or user).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Resolved>> {
        self.sender.subscribe()
    }

    /// Resolves the bus's events until the process ends. A row that cannot be read is logged
    /// and its event skipped; the stream of events goes on.
    pub async fn run(&self, bus: &EventBus, db: &DatabaseConnection) {
        let mut raw = bus.subscribe();
        let events = async_stream_of(&mut raw);
        let resolved = events
            .map(|event| async move {
                match resolve(db, &event).await {
                    Ok(content) => Some(Resolved { event, content }),
                    Err(e) => {
                        tracing::warn!(error = ?e, event = ?event, "a live event could not be read; not delivered");
                        None
                    }
                }
            })
            .buffered(RESOLVE_AHEAD);
        futures_util::pin_mut!(resolved);
        while let Some(item) = resolved.next().await {
            if let Some(item) = item {
                // No stream listening is fine.
                let _ = self.sender.send(Arc::new(item));
            }
        }
    }
}

/// The bus as a stream; a lag is logged and skipped over, and the stream ends with the bus.
fn async_stream_of(
    raw: &mut broadcast::Receiver<LiveEvent>,
) -> impl futures_util::Stream<Item = LiveEvent> + '_ {
    futures_util::stream::unfold(raw, |raw| async move {
        loop {
            match raw.recv().await {
                Ok(event) => return Some((event, raw)),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        skipped = n,
                        "the live feed fell behind the event bus and skipped events"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

async fn resolve(db: &DatabaseConnection, event: &LiveEvent) -> crate::error::AppResult<Content> {
    Ok(match event {
        LiveEvent::NotePosted { note_id, .. } | LiveEvent::NoteChanged { note_id, .. } => {
            match notes::by_ids(db, &[*note_id]).await?.into_iter().next() {
                Some(model) => Content::Note(model),
                None => return Err(crate::error::AppError::NotFound),
            }
        }
        LiveEvent::VitalsRecorded { record_id, .. } => Content::Vital(
            crate::service::vitals::by_id(db, *record_id)
                .await?
                .ok_or(crate::error::AppError::NotFound)?,
        ),
        LiveEvent::RoomStatusChanged { room_id } | LiveEvent::Invitation { room_id, .. } => {
            Content::Room(rooms::reload(db, *room_id).await?)
        }
        LiveEvent::MembershipChanged { .. }
        | LiveEvent::Mention { .. }
        | LiveEvent::Notification { .. } => Content::None,
    })
}

/// One stream's deliveries of one kind in one room, waiting for the next audit write.
struct Pending {
    event: Event,
    ids: Vec<String>,
}

/// (stream, room, action): what one gathered audit event covers.
type PendingKey = (u64, Uuid, &'static str);

/// Live deliveries gathered per stream, room and action; written every [`AUDIT_WINDOW`].
#[derive(Clone, Default)]
pub struct LiveAudit {
    pending: Arc<parking_lot::Mutex<HashMap<PendingKey, Pending>>>,
    streams: Arc<std::sync::atomic::AtomicU64>,
}

impl LiveAudit {
    /// A number naming one stream in the gathered events.
    pub fn stream_id(&self) -> u64 {
        self.streams
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Notes that `id` of `action` reached the stream; `event` says who (built once per stream).
    pub fn delivered(&self, stream: u64, event: &Event, id: Uuid) {
        let Some(room_id) = event.room_id else {
            return;
        };
        let mut pending = self.pending.lock();
        pending
            .entry((stream, room_id, event.action))
            .or_insert_with(|| Pending {
                event: event.clone(),
                ids: Vec::new(),
            })
            .ids
            .push(id.to_string());
    }

    /// Queues everything gathered with the other read events (at shutdown, and in tests).
    pub async fn flush(&self, audit: &AuditLog) {
        let batch: Vec<Pending> = {
            let mut pending = self.pending.lock();
            pending.drain().map(|(_, p)| p).collect()
        };
        Self::write(batch, audit).await;
    }

    /// What the streams of one slice gathered, taken out.
    fn take_slice(&self, slice: u64) -> Vec<Pending> {
        let mut pending = self.pending.lock();
        let keys: Vec<PendingKey> = pending
            .keys()
            .filter(|(stream, _, _)| stream % AUDIT_SLICES == slice)
            .copied()
            .collect();
        keys.iter().filter_map(|k| pending.remove(k)).collect()
    }

    async fn write(batch: Vec<Pending>, audit: &AuditLog) {
        for Pending { event, ids } in batch {
            let count = ids.len();
            let event = event
                .detail("live", true)
                .detail("count", count)
                .detail("ids", ids);
            if let Err(e) = audit.read(event).await {
                tracing::warn!(error = ?e, "auditing live deliveries failed");
            }
        }
    }

    /// Flushes each stream once per [`AUDIT_WINDOW`], one slice of the streams at a time,
    /// until the process ends (shutdown flushes everything once more).
    pub async fn run(&self, audit: &AuditLog) {
        let mut tick = tokio::time::interval(AUDIT_WINDOW / AUDIT_SLICES as u32);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut slice = 0;
        loop {
            tick.tick().await;
            Self::write(self.take_slice(slice), audit).await;
            slice = (slice + 1) % AUDIT_SLICES;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use entity::kinds::AuditOutcome;

    #[test]
    fn deliveries_of_one_stream_and_room_are_gathered_into_one_event() {
        let audit = LiveAudit::default();
        let tenant = Uuid::now_v7();
        let (room_a, room_b) = (Uuid::now_v7(), Uuid::now_v7());
        let (s1, s2) = (audit.stream_id(), audit.stream_id());
        assert_ne!(s1, s2);
        let event = |room| {
            Event::new(tenant, "notes.read", AuditOutcome::Allowed)
                .room(room)
                .target("room", room)
        };
        let notes: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        for n in &notes {
            audit.delivered(s1, &event(room_a), *n);
        }
        audit.delivered(s2, &event(room_a), notes[0]);
        audit.delivered(s1, &event(room_b), notes[1]);
        let pending = audit.pending.lock();
        assert_eq!(pending.len(), 3);
        let gathered = &pending[&(s1, room_a, "notes.read")];
        let expected: Vec<String> = notes.iter().map(Uuid::to_string).collect();
        assert_eq!(gathered.ids, expected);
        assert_eq!(pending[&(s2, room_a, "notes.read")].ids.len(), 1);
    }

    #[test]
    fn each_slice_takes_only_its_own_streams() {
        let audit = LiveAudit::default();
        let tenant = Uuid::now_v7();
        let room = Uuid::now_v7();
        let event = Event::new(tenant, "notes.read", AuditOutcome::Allowed).room(room);
        let streams: Vec<u64> = (0..AUDIT_SLICES * 2).map(|_| audit.stream_id()).collect();
        for stream in &streams {
            audit.delivered(*stream, &event, Uuid::now_v7());
        }
        let slice = streams[3] % AUDIT_SLICES;
        let taken = audit.take_slice(slice);
        assert_eq!(taken.len(), 2, "two streams of each slice");
        assert_eq!(audit.pending.lock().len(), streams.len() - 2);
        assert!(audit.take_slice(slice).is_empty(), "taken once");
        for other in (0..AUDIT_SLICES).filter(|s| *s != slice) {
            assert_eq!(audit.take_slice(other).len(), 2);
        }
        assert!(audit.pending.lock().is_empty());
    }
}
