//! Live events of rooms and users, for GraphQL subscriptions. A change is published after its
//! transaction commits. With Redis every instance receives every event over one pub/sub
//! channel (also the instance that published it), so a subscriber on any instance sees a note
//! posted on any other; without Redis (the embedded default) they go through an in-process
//! broadcast. Events name what changed; subscribers read it from the database with their own
//! permissions, so an event never carries content past an authorization check.

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::redis_store::RedisHandle;

pub const EVENTS_CHANNEL: &str = "live-events";

/// How many events a slow subscriber may fall behind before it skips some.
const BACKLOG: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LiveEvent {
    NotePosted {
        room_id: Uuid,
        note_id: Uuid,
    },
    NoteChanged {
        room_id: Uuid,
        note_id: Uuid,
    },
    VitalsRecorded {
        room_id: Uuid,
        record_id: Uuid,
    },
    MembershipChanged {
        room_id: Uuid,
        user_id: Uuid,
        joined: bool,
    },
    RoomStatusChanged {
        room_id: Uuid,
    },
    /// For `myEvents` of `user_id`.
    Mention {
        user_id: Uuid,
        room_id: Uuid,
        note_id: Uuid,
    },
    /// For `myEvents` of `user_id`.
    Invitation {
        user_id: Uuid,
        room_id: Uuid,
        invitation_id: Uuid,
    },
    /// A new entry in `user_id`'s notification inbox (`myEvents`).
    Notification {
        user_id: Uuid,
        notification_id: Uuid,
        kind: String,
        room_id: Option<Uuid>,
        event_id: Option<Uuid>,
        urgent: bool,
    },
}

impl LiveEvent {
    /// The room whose subscribers see this event (not for the personal ones).
    pub fn room_id(&self) -> Option<Uuid> {
        match self {
            LiveEvent::NotePosted { room_id, .. }
            | LiveEvent::NoteChanged { room_id, .. }
            | LiveEvent::VitalsRecorded { room_id, .. }
            | LiveEvent::MembershipChanged { room_id, .. }
            | LiveEvent::RoomStatusChanged { room_id } => Some(*room_id),
            LiveEvent::Mention { .. }
            | LiveEvent::Invitation { .. }
            | LiveEvent::Notification { .. } => None,
        }
    }

    /// The user whose `myEvents` carries this event.
    pub fn for_user(&self) -> Option<Uuid> {
        match self {
            LiveEvent::Mention { user_id, .. }
            | LiveEvent::Invitation { user_id, .. }
            | LiveEvent::Notification { user_id, .. } => Some(*user_id),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct EventBus {
    local: broadcast::Sender<LiveEvent>,
    redis: Option<RedisHandle>,
}

impl EventBus {
    pub fn new(redis: Option<RedisHandle>) -> Self {
        let (local, _) = broadcast::channel(BACKLOG);
        EventBus { local, redis }
    }

    /// Every event from now on (of every room and user: subscribers filter).
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.local.subscribe()
    }

    /// Publishes after a commit. A failure to reach Redis is logged, and the event still
    /// reaches this instance's subscribers; nothing that was committed is undone by it.
    pub async fn publish(&self, events: impl IntoIterator<Item = LiveEvent>) {
        for event in events {
            match &self.redis {
                Some(redis) => {
                    let sent = match serde_json::to_string(&event) {
                        Ok(json) => redis.publish(EVENTS_CHANNEL, &json).await,
                        Err(e) => Err(e.into()),
                    };
                    if let Err(e) = sent {
                        tracing::warn!(error = %e, "could not publish a live event; only this instance's subscribers get it");
                        self.deliver(event);
                    }
                }
                None => self.deliver(event),
            }
        }
    }

    /// Hands an event to this instance's subscribers (none listening is fine).
    pub fn deliver(&self, event: LiveEvent) {
        let _ = self.local.send(event);
    }

    /// A message from the Redis channel.
    pub fn on_message(&self, payload: &str) {
        match serde_json::from_str::<LiveEvent>(payload) {
            Ok(event) => self.deliver(event),
            Err(e) => tracing::warn!(error = %e, "ignoring a malformed live event"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn events_round_trip_through_json() {
        let event = LiveEvent::MembershipChanged {
            room_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            joined: false,
        };
        let json = serde_json::to_string(&event).unwrap();
        assert!(json.contains("\"type\":\"MEMBERSHIP_CHANGED\""));
        assert_eq!(serde_json::from_str::<LiveEvent>(&json).unwrap(), event);
    }

    #[tokio::test]
    async fn without_redis_subscribers_of_this_instance_receive_events() {
        let bus = EventBus::new(None);
        let mut rx = bus.subscribe();
        let event = LiveEvent::RoomStatusChanged {
            room_id: Uuid::now_v7(),
        };
        bus.publish([event.clone()]).await;
        assert_eq!(rx.recv().await.unwrap(), event);
        bus.on_message("not json");
        assert!(rx.try_recv().is_err());
    }
}
