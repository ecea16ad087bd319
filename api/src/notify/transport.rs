//! What the worker needs of the external channels: `crate::channels::Channels` implements it
//! (a trait, so the worker's claims and retries do not depend on how a channel sends).

use sea_orm::DatabaseConnection;
use uuid::Uuid;

/// One notification as a channel sees it: ids and counts only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub notification_id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub kind: String,
    pub room_id: Option<Uuid>,
    pub event_id: Option<Uuid>,
    pub urgent: bool,
    pub unread_count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    NoTarget,
    Retry(String),
    Failed(String),
}

#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    async fn web_push(&self, db: &DatabaseConnection, n: &Outbound) -> Outcome;
    async fn gateway(&self, db: &DatabaseConnection, n: &Outbound) -> Outcome;
    async fn email(&self, db: &DatabaseConnection, user_id: Uuid, items: &[Outbound]) -> Outcome;
}

/// No external channel configured: every delivery has no target (the in-app inbox still works).
pub struct Unconfigured;

#[async_trait::async_trait]
impl Transport for Unconfigured {
    async fn web_push(&self, _: &DatabaseConnection, _: &Outbound) -> Outcome {
        Outcome::NoTarget
    }
    async fn gateway(&self, _: &DatabaseConnection, _: &Outbound) -> Outcome {
        Outcome::NoTarget
    }
    async fn email(&self, _: &DatabaseConnection, _: Uuid, _: &[Outbound]) -> Outcome {
        Outcome::NoTarget
    }
}
