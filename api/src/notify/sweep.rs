//! The periodic certificate expiry notices: each active certificate once within 30 days of
//! its end, and again within 7. Idempotent by the notification's unique key, so every
//! instance may run it at any time.

use std::collections::BTreeMap;

use chrono::Duration;
use sea_orm::{ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _};

use entity::certificate;
use entity::kinds::CertificateStatus;
use entity::notification::NotificationKind;

use crate::config::Config;
use crate::error::AppResult;
use crate::notify::{Notice, write_in};
use crate::service::now;

/// Writes the expiry notices that are due and not yet written; how many it wrote.
pub async fn certificates(db: &DatabaseConnection, config: &Config) -> AppResult<usize> {
    let at = now();
    let soon = certificate::Entity::find()
        .filter(certificate::Column::Status.eq(CertificateStatus::Active))
        .filter(certificate::Column::NotAfter.gt(at))
        .filter(certificate::Column::NotAfter.lte(at + Duration::days(30)))
        .all(db)
        .await?;
    let mut by_tenant: BTreeMap<uuid::Uuid, Vec<Notice>> = BTreeMap::new();
    for c in soon {
        let (kind, days) = if c.not_after <= at + Duration::days(7) {
            (NotificationKind::CertificateExpiring7, 7)
        } else {
            (NotificationKind::CertificateExpiring30, 30)
        };
        by_tenant.entry(c.tenant_id).or_default().push(Notice {
            user_id: c.user_id,
            kind,
            dedup_key: format!("certificate-expiry-{days}:{}", c.id),
            room_id: None,
            event_id: Some(c.id),
            note_category: None,
            urgent: false,
        });
    }
    let mut written = 0;
    for (tenant_id, notices) in by_tenant {
        let txn = crate::db::begin_write(db).await?;
        written += write_in(&txn, config, tenant_id, notices, true)
            .await?
            .notifications;
        txn.commit().await?;
    }
    Ok(written)
}
