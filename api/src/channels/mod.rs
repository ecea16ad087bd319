//! Delivery channels of notifications that leave the server: Web Push (RFC 8030/8291/8292),
//! a tenant's push gateway for native apps (Matrix push-gateway shaped JSON, HMAC-signed),
//! and e-mail over SMTP. A channel sees ids, the kind, urgency and counts, never content.
//!
//! Which notification goes where, when, and how often it is retried is `notify`'s business;
//! this module sends one notification (or one digest) through one channel and says how it went.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use uuid::Uuid;

use crate::auth::pki::MasterKey;
use crate::config::Config;

/// One notification as a channel sees it: ids and counts only, nothing a patient could be
/// recognised by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub notification_id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    /// The notification kind as text, e.g. `NOTE_POSTED`, `MENTION`, `INVITATION`.
    pub kind: String,
    pub room_id: Option<Uuid>,
    /// The note, invitation, application … the notification is about.
    pub event_id: Option<Uuid>,
    pub urgent: bool,
    /// The recipient's unread notifications.
    pub unread_count: u64,
}

/// How one delivery through one channel went. Reasons never carry secrets or content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by every target (push service, gateway, SMTP server).
    Sent,
    /// Nothing to send to: no subscription, no pushkey, no address, or the channel is not
    /// configured.
    NoTarget,
    /// Transient: timeout, connection refused, 5xx, 429, SMTP temporary failure. Try later.
    Retry(String),
    /// Permanent: retrying cannot help.
    Failed(String),
}

/// The senders, shared by the delivery workers of one instance. Cheap to clone.
#[derive(Clone)]
pub struct Channels {
    inner: Arc<Inner>,
}

struct Inner {
    master_key: Arc<MasterKey>,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Channels(..)")
    }
}

impl Channels {
    pub fn new(config: &Config, master_key: Arc<MasterKey>) -> anyhow::Result<Self> {
        let _ = config;
        Ok(Channels {
            inner: Arc::new(Inner { master_key }),
        })
    }

    /// Every Web Push subscription of `n.user_id`; a push service answering 404/410 removes
    /// that subscription.
    pub async fn web_push(&self, db: &DatabaseConnection, n: &Outbound) -> Outcome {
        let _ = (db, n, &self.inner.master_key);
        Outcome::Retry("not built yet".into())
    }

    /// The tenant's push gateway, every native pushkey of `n.user_id`.
    pub async fn gateway(&self, db: &DatabaseConnection, n: &Outbound) -> Outcome {
        let _ = (db, n);
        Outcome::Retry("not built yet".into())
    }

    /// One e-mail to the user's contact address; `items.len() > 1` is a digest. The text
    /// carries no patient data: "a new note in one of your patient rooms" and a link built from
    /// `public_url`.
    pub async fn email(
        &self,
        db: &DatabaseConnection,
        user_id: Uuid,
        items: &[Outbound],
    ) -> Outcome {
        let _ = (db, user_id, items);
        Outcome::Retry("not built yet".into())
    }
}
