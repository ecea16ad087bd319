//! What the worker needs of the external channels: `crate::channels::Channels` implements it
//! (a trait, so the worker's claims and retries do not depend on how a channel sends).

use sea_orm::DatabaseConnection;
use uuid::Uuid;

pub use crate::channels::{Outbound, Outcome};

#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    async fn web_push(&self, db: &DatabaseConnection, n: &Outbound) -> Outcome;
    async fn gateway(&self, db: &DatabaseConnection, n: &Outbound) -> Outcome;
    async fn email(&self, db: &DatabaseConnection, user_id: Uuid, items: &[Outbound]) -> Outcome;
}

#[async_trait::async_trait]
impl Transport for crate::channels::Channels {
    async fn web_push(&self, db: &DatabaseConnection, n: &Outbound) -> Outcome {
        crate::channels::Channels::web_push(self, db, n).await
    }
    async fn gateway(&self, db: &DatabaseConnection, n: &Outbound) -> Outcome {
        crate::channels::Channels::gateway(self, db, n).await
    }
    async fn email(&self, db: &DatabaseConnection, user_id: Uuid, items: &[Outbound]) -> Outcome {
        crate::channels::Channels::email(self, db, user_id, items).await
    }
}
