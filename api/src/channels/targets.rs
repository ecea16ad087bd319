//! Where a user's notifications can be pushed: Web Push subscriptions of browsers and pushkeys
//! of native apps, each the user's own. Input is parsed here, so a stored row is always usable.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use entity::kinds::AuditOutcome;
use entity::{push_pushkey, push_subscription};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};
use uuid::Uuid;

use crate::config::ChannelsConfig;
use crate::error::{AppError, AppResult};
use crate::service::audit::{self, Event, Origin};

const MAX_URL_CHARS: usize = 2048;
const MAX_LABEL_CHARS: usize = 100;
const MAX_PUSHKEY_CHARS: usize = 512;
const MAX_APP_ID_CHARS: usize = 128;

/// An https URL a push may be sent to: no credentials, and not into the server's own network
/// unless `push_allow_private_endpoints` says so (tests).
pub fn parse_push_url(
    field: &'static str,
    text: &str,
    config: &ChannelsConfig,
) -> AppResult<reqwest::Url> {
    let text = text.trim();
    if text.chars().count() > MAX_URL_CHARS {
        return Err(AppError::bad_input(field, "at most 2048 characters"));
    }
    let url = reqwest::Url::parse(text).map_err(|_| AppError::bad_input(field, "not a URL"))?;
    if url.scheme() != "https" {
        return Err(AppError::bad_input(field, "must be an https:// URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(AppError::bad_input(
            field,
            "must not carry a user or password",
        ));
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| AppError::bad_input(field, "has no host"))?;
    let private = match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        Ok(std::net::IpAddr::V4(ip)) => is_private_v4(ip),
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback()
                || ip.is_unspecified()
                || (ip.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (ip.segments()[0] & 0xffc0) == 0xfe80 // link local
                || ip.to_ipv4_mapped().is_some_and(is_private_v4)
        }
        Err(_) => {
            let d = host.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
    };
    if private && !config.push_allow_private_endpoints {
        return Err(AppError::bad_input(
            field,
            "must not point at a loopback or private address",
        ));
    }
    Ok(url)
}

fn is_private_v4(ip: std::net::Ipv4Addr) -> bool {
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || (ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64) // 100.64/10, shared
}

/// base64url (padding tolerated) of exactly `len` bytes.
fn parse_b64url(field: &'static str, text: &str, len: usize) -> AppResult<Vec<u8>> {
    let bytes = B64URL
        .decode(text.trim().trim_end_matches('='))
        .map_err(|_| AppError::bad_input(field, "not base64url"))?;
    if bytes.len() != len {
        return Err(AppError::bad_input(
            field,
            format!("must decode to {len} bytes"),
        ));
    }
    Ok(bytes)
}

fn parse_label(label: Option<&str>) -> AppResult<Option<String>> {
    match label.map(str::trim).filter(|l| !l.is_empty()) {
        None => Ok(None),
        Some(l) if l.chars().count() > MAX_LABEL_CHARS => {
            Err(AppError::bad_input("deviceLabel", "at most 100 characters"))
        }
        Some(l) if l.chars().any(char::is_control) => Err(AppError::bad_input(
            "deviceLabel",
            "must not contain control characters",
        )),
        Some(l) => Ok(Some(l.to_owned())),
    }
}

/// A browser's subscription as `PushManager.subscribe()` hands it out.
pub struct NewSubscription<'a> {
    pub endpoint: &'a str,
    pub p256dh: &'a str,
    pub auth: &'a str,
    pub device_label: Option<&'a str>,
}

/// Stores the caller's subscription; the same endpoint registered again (a browser
/// re-subscribing, or another user on a shared browser) replaces the old row.
pub async fn register_subscription(
    db: &DatabaseConnection,
    config: &ChannelsConfig,
    tenant_id: Uuid,
    user_id: Uuid,
    input: NewSubscription<'_>,
    origin: &Origin,
) -> AppResult<push_subscription::Model> {
    let endpoint = parse_push_url("endpoint", input.endpoint, config)?;
    let p256dh = parse_b64url("p256dh", input.p256dh, 65)?;
    if !super::ece::is_valid_p256_point(&p256dh) {
        return Err(AppError::bad_input(
            "p256dh",
            "not an uncompressed P-256 public key",
        ));
    }
    let auth = parse_b64url("auth", input.auth, 16)?;
    let device_label = parse_label(input.device_label)?;
    let row = push_subscription::Model {
        id: Uuid::now_v7(),
        tenant_id,
        user_id,
        endpoint: endpoint.to_string(),
        p256dh: B64URL.encode(&p256dh),
        auth: B64URL.encode(&auth),
        device_label,
        created_at: chrono::Utc::now(),
        last_success_at: None,
    };
    let txn = db.begin().await?;
    push_subscription::Entity::delete_many()
        .filter(push_subscription::Column::Endpoint.eq(row.endpoint.clone()))
        .exec(&txn)
        .await?;
    push_subscription::Entity::insert(push_subscription::ActiveModel::from(row.clone()))
        .exec_without_returning(&txn)
        .await?;
    audit::record(
        &txn,
        Event::new(tenant_id, "push.subscribe", AuditOutcome::Allowed)
            .by(origin)
            .target("push_subscription", row.id),
    )
    .await?;
    txn.commit().await?;
    Ok(row)
}

/// The caller's subscriptions, newest first.
pub async fn subscriptions_of(
    db: &impl ConnectionTrait,
    user_id: Uuid,
) -> AppResult<Vec<push_subscription::Model>> {
    Ok(push_subscription::Entity::find()
        .filter(push_subscription::Column::UserId.eq(user_id))
        .order_by_desc(push_subscription::Column::CreatedAt)
        .order_by_desc(push_subscription::Column::Id)
        .all(db)
        .await?)
}

/// Removes one of the caller's own subscriptions; another user's is `NOT_FOUND`, as if it did
/// not exist.
pub async fn remove_subscription(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    user_id: Uuid,
    id: Uuid,
    origin: &Origin,
) -> AppResult<()> {
    let txn = db.begin().await?;
    let removed = push_subscription::Entity::delete_many()
        .filter(push_subscription::Column::Id.eq(id))
        .filter(push_subscription::Column::UserId.eq(user_id))
        .exec(&txn)
        .await?;
    if removed.rows_affected == 0 {
        return Err(AppError::NotFound);
    }
    audit::record(
        &txn,
        Event::new(tenant_id, "push.unsubscribe", AuditOutcome::Allowed)
            .by(origin)
            .target("push_subscription", id),
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

/// A native app's registration for the push gateway.
pub struct NewPushkey<'a> {
    pub app_id: &'a str,
    pub pushkey: &'a str,
    pub device_label: Option<&'a str>,
}

fn parse_token(field: &'static str, text: &str, max: usize) -> AppResult<String> {
    let t = text.trim();
    if t.is_empty() {
        return Err(AppError::bad_input(field, "must not be empty"));
    }
    if t.chars().count() > max {
        return Err(AppError::bad_input(
            field,
            format!("at most {max} characters"),
        ));
    }
    if !t.chars().all(|c| c.is_ascii_graphic()) {
        return Err(AppError::bad_input(
            field,
            "printable ASCII without spaces only",
        ));
    }
    Ok(t.to_owned())
}

/// Stores the caller's pushkey; the same (app, pushkey) registered again moves to the caller
/// and refreshes `pushkey_ts`.
pub async fn register_pushkey(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    user_id: Uuid,
    input: NewPushkey<'_>,
    origin: &Origin,
) -> AppResult<push_pushkey::Model> {
    let app_id = parse_token("appId", input.app_id, MAX_APP_ID_CHARS)?;
    let pushkey = parse_token("pushkey", input.pushkey, MAX_PUSHKEY_CHARS)?;
    let device_label = parse_label(input.device_label)?;
    let now = chrono::Utc::now();
    let txn = db.begin().await?;
    push_pushkey::Entity::insert(push_pushkey::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant_id),
        user_id: Set(user_id),
        app_id: Set(app_id.clone()),
        pushkey: Set(pushkey.clone()),
        device_label: Set(device_label),
        pushkey_ts: Set(now),
        created_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([push_pushkey::Column::AppId, push_pushkey::Column::Pushkey])
            .update_columns([
                push_pushkey::Column::TenantId,
                push_pushkey::Column::UserId,
                push_pushkey::Column::DeviceLabel,
                push_pushkey::Column::PushkeyTs,
            ])
            .to_owned(),
    )
    .exec_without_returning(&txn)
    .await?;
    let row = push_pushkey::Entity::find()
        .filter(push_pushkey::Column::AppId.eq(app_id))
        .filter(push_pushkey::Column::Pushkey.eq(pushkey))
        .one(&txn)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("the pushkey just stored is gone")))?;
    audit::record(
        &txn,
        Event::new(tenant_id, "push.pushkey.register", AuditOutcome::Allowed)
            .by(origin)
            .target("push_pushkey", row.id),
    )
    .await?;
    txn.commit().await?;
    Ok(row)
}

pub async fn pushkeys_of(
    db: &impl ConnectionTrait,
    user_id: Uuid,
) -> AppResult<Vec<push_pushkey::Model>> {
    Ok(push_pushkey::Entity::find()
        .filter(push_pushkey::Column::UserId.eq(user_id))
        .order_by_desc(push_pushkey::Column::CreatedAt)
        .order_by_desc(push_pushkey::Column::Id)
        .all(db)
        .await?)
}

/// Removes one of the caller's own pushkeys (by id); another user's is `NOT_FOUND`.
pub async fn remove_pushkey(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    user_id: Uuid,
    id: Uuid,
    origin: &Origin,
) -> AppResult<()> {
    let txn = db.begin().await?;
    let removed = push_pushkey::Entity::delete_many()
        .filter(push_pushkey::Column::Id.eq(id))
        .filter(push_pushkey::Column::UserId.eq(user_id))
        .exec(&txn)
        .await?;
    if removed.rows_affected == 0 {
        return Err(AppError::NotFound);
    }
    audit::record(
        &txn,
        Event::new(tenant_id, "push.pushkey.remove", AuditOutcome::Allowed)
            .by(origin)
            .target("push_pushkey", id),
    )
    .await?;
    txn.commit().await?;
    Ok(())
}
