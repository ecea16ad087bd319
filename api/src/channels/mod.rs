//! Delivery channels of notifications that leave the server: Web Push (RFC 8030/8291/8292),
//! a tenant's push gateway for native apps (Matrix push-gateway shaped JSON, HMAC-signed),
//! and e-mail over SMTP. A channel sees ids, the kind, urgency and counts, never content.
//!
//! Which notification goes where, when, and how often it is retried is `notify`'s business;
//! this module sends one notification (or one digest) through one channel and says how it went
//! ([`Outcome`]). Reasons in `Retry`/`Failed` name the class of failure and a status code,
//! never a URL (a Web Push endpoint is a bearer token), an address, a secret or content.
//!
//! # Web Push (browsers)
//! * The front-end reads `vapidPublicKey` (the tenant's P-256 key, uncompressed, base64url;
//!   generated once, private half sealed with the master key) and calls
//!   `PushManager.subscribe({ userVisibleOnly: true, applicationServerKey })`, then
//!   `registerPushSubscription(endpoint, p256dh, auth, deviceLabel)` with
//!   `subscription.toJSON()`'s `endpoint`, `keys.p256dh`, `keys.auth`. The endpoint must be
//!   https and, unless `push_allow_private_endpoints`, not a loopback/private IP literal;
//!   `p256dh` a valid uncompressed P-256 point (65 bytes) and `auth` 16 bytes, both base64url.
//! * Each push is one POST to the endpoint, body encrypted per RFC 8291 (`aes128gcm`, one
//!   record, rs 4096, a fresh ECDH key per message), with headers `TTL: 86400`,
//!   `Urgency: high` (urgent) or `normal`, `Topic: <notification id, 32 hex>` (a retried
//!   message replaces one still queued), `Content-Encoding: aes128gcm`, and
//!   `Authorization: vapid t=<JWT>, k=<vapidPublicKey>`; the ES256 JWT has `aud` = the
//!   endpoint's origin, `exp` = now + 12 h, `sub` = `vapid_subject` (default `public_url`).
//! * The service worker's `push` event gets, as `event.data.json()`:
//!   `{"notification_id": UUID, "kind": "NOTE_POSTED"|"MENTION"|…, "room_id": UUID|null,
//!   "event_id": UUID|null, "urgent": bool, "unread_count": int}`. Nothing else: it shows a
//!   generic text ("新しいお知らせがあります") and fetches details over the authenticated API.
//!   Use `notification_id` as the `tag` of `showNotification`: a retried delivery then
//!   replaces the shown notification instead of adding a second one.
//! * 2xx is delivered; 404/410 removes the subscription; 408/425/429/5xx, timeouts and
//!   connection errors are `Retry`; other 4xx are `Failed`. With several subscriptions, any
//!   transient failure makes the whole delivery `Retry` (every subscription gets it again).
//!
//! # Push gateway (native apps)
//! * Per tenant: `renkei tenant push-gateway set --tenant S --url https://… --secret-env VAR`
//!   (secret ≥ 32 characters, sealed with the master key). Apps register their device token
//!   with `registerPushDevice(appId, pushkey, deviceLabel)`.
//! * One POST per notification and user to the URL, `Content-Type: application/json`,
//!   `X-Renkei-Signature: sha256=<hex HMAC-SHA256(secret, exact body bytes)>`,
//!   `X-Renkei-Notification-Id: <UUID>` (drop duplicates by it), body in the shape of the
//!   Matrix push gateway API (`/_matrix/push/v1/notify`, `event_id_only` format):
//!   `{"notification": {"id": UUID, "event_id": UUID, "room_id": UUID (when there is one),
//!   "type": kind, "prio": "high"|"low", "counts": {"unread": int}, "devices": [{"app_id",
//!   "pushkey", "pushkey_ts": unix seconds, "data": {"format": "event_id_only"}}]}}`.
//!   `event_id` is the note/invitation/application id, or the notification id when none.
//! * The gateway answers 200 `{"rejected": [pushkey, …]}`; those pushkeys are removed. 5xx,
//!   429, timeouts are `Retry`; other 4xx (e.g. 401 on a bad signature) `Failed`.
//!
//! # E-mail
//! * `smtp_url` (`smtp://` STARTTLS required, `smtps://` implicit TLS, `?tls=none` plain),
//!   optional `USER:PASSWORD@`, `smtp_from`, `smtp_ca_file`, `smtp_timeout_seconds`.
//! * To the user's `email`; `From: smtp_from`, `Subject: 【Renkei】新しいお知らせがあります`
//!   (`【Renkei・至急】…` when urgent; `…N件あります` for a digest), `Date`, and
//!   `Message-ID: <notification-id@from-domain>` (digest: `<digest.<hash of ids>@…>`), so a
//!   retried mail has the same id. A text/plain body in Japanese and English: one generic
//!   line per item (kind only, `【至急 / URGENT】` when urgent) and the link `<public_url>/`.
//! * A 5xx answer is `Failed`; 4xx, timeouts, TLS and connection errors are `Retry`.

pub mod ece;
mod email;
pub mod gateway;
pub mod targets;
pub mod vapid;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use entity::{push_pushkey, push_subscription};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};
use sea_orm::{ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _, Set};
use secrecy::ExposeSecret as _;
use uuid::Uuid;

use crate::auth::pki::MasterKey;
use crate::config::{Config, SmtpConfig, SmtpTls};

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
    /// For push services and gateways: https only, no redirects, `push_timeout_seconds`.
    http: reqwest::Client,
    smtp: Option<Smtp>,
    vapid_subject: Option<String>,
    /// Base of the link in e-mails, without a trailing slash.
    public_url: Option<String>,
}

struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Channels(..)")
    }
}

/// How one push to one target went.
enum Attempt {
    Delivered,
    /// 404/410 from a push service: the subscription is gone.
    Gone,
    Transient(String),
    Permanent(String),
}

fn read_pem_file(setting: &str, path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{setting} {}: {e}", path.display()))
}

fn http_status_attempt(what: &str, status: reqwest::StatusCode) -> Attempt {
    match status.as_u16() {
        200..=299 => Attempt::Delivered,
        404 | 410 => Attempt::Gone,
        408 | 425 | 429 | 500..=599 => Attempt::Transient(format!("{what} answered {status}")),
        _ => Attempt::Permanent(format!("{what} answered {status}")),
    }
}

fn request_error_attempt(what: &str, e: &reqwest::Error) -> Attempt {
    // reqwest's messages name the URL, which for Web Push holds the subscription's token.
    if e.is_timeout() {
        Attempt::Transient(format!("{what} timed out"))
    } else if e.is_connect() {
        Attempt::Transient(format!("{what} unreachable"))
    } else if e.is_builder() {
        Attempt::Permanent(format!("{what} URL refused"))
    } else {
        Attempt::Transient(format!("{what} request failed"))
    }
}

impl Channels {
    pub fn new(config: &Config, master_key: Arc<MasterKey>) -> anyhow::Result<Self> {
        let settings = &config.channels;
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.push_timeout)
            .connect_timeout(settings.push_timeout)
            .https_only(true)
            .user_agent(concat!("renkei/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.push_ca_file {
            let pem = read_pem_file("push_ca_file", path)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                anyhow::anyhow!(
                    "push_ca_file {} holds no PEM certificate: {e}",
                    path.display()
                )
            })?;
            if certs.is_empty() {
                anyhow::bail!("push_ca_file {} holds no PEM certificate", path.display());
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build()?;
        let smtp = match &settings.smtp {
            None => None,
            Some(s) => Some(Smtp {
                transport: smtp_transport(s)?,
                from: s.from.clone(),
            }),
        };
        Ok(Channels {
            inner: Arc::new(Inner {
                master_key,
                http,
                smtp,
                vapid_subject: settings.vapid_subject.clone(),
                public_url: config.public_url.clone(),
            }),
        })
    }

    /// Whether e-mail can be sent at all (`smtp_url` set).
    pub fn email_configured(&self) -> bool {
        self.inner.smtp.is_some()
    }

    /// Whether Web Push can be sent at all (a VAPID subject is known).
    pub fn web_push_configured(&self) -> bool {
        self.inner.vapid_subject.is_some()
    }

    /// Every Web Push subscription of `n.user_id`; a push service answering 404/410 removes
    /// that subscription.
    pub async fn web_push(&self, db: &DatabaseConnection, n: &Outbound) -> Outcome {
        let Some(subject) = &self.inner.vapid_subject else {
            return Outcome::NoTarget;
        };
        let subscriptions = match targets::subscriptions_of(db, n.user_id).await {
            Ok(s) => s,
            Err(e) => return database_retry("push subscriptions", e),
        };
        let subscriptions: Vec<_> = subscriptions
            .into_iter()
            .filter(|s| s.tenant_id == n.tenant_id)
            .collect();
        if subscriptions.is_empty() {
            return Outcome::NoTarget;
        }
        let key = match vapid::key(db, &self.inner.master_key, n.tenant_id).await {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(tenant = %n.tenant_id, error = format!("{e:#}"), "VAPID key unavailable");
                return Outcome::Retry("the tenant's VAPID key is unavailable".into());
            }
        };
        let payload = web_push_payload(n).to_string();
        let attempts = futures_util::future::join_all(
            subscriptions
                .iter()
                .map(|sub| self.push_one(&key, subject, sub, n, payload.as_bytes())),
        )
        .await;
        let mut summary = Summary::default();
        for (sub, attempt) in subscriptions.iter().zip(attempts) {
            match &attempt {
                Attempt::Delivered => {
                    let update = push_subscription::ActiveModel {
                        id: Set(sub.id),
                        last_success_at: Set(Some(chrono::Utc::now())),
                        ..Default::default()
                    };
                    if let Err(e) = push_subscription::Entity::update(update).exec(db).await {
                        tracing::warn!(subscription = %sub.id, error = %e, "could not note a delivered push");
                    }
                }
                Attempt::Gone => {
                    tracing::info!(subscription = %sub.id, user = %n.user_id, "push service says the subscription is gone; removing it");
                    if let Err(e) = push_subscription::Entity::delete_by_id(sub.id)
                        .exec(db)
                        .await
                    {
                        tracing::warn!(subscription = %sub.id, error = %e, "could not remove a gone push subscription");
                    }
                }
                Attempt::Transient(reason) | Attempt::Permanent(reason) => {
                    tracing::warn!(subscription = %sub.id, notification = %n.notification_id, reason, "web push not delivered");
                }
            }
            summary.add(attempt);
        }
        summary.outcome()
    }

    async fn push_one(
        &self,
        key: &vapid::VapidKey,
        subject: &str,
        sub: &push_subscription::Model,
        n: &Outbound,
        payload: &[u8],
    ) -> Attempt {
        const WHAT: &str = "push service";
        let Ok(endpoint) = reqwest::Url::parse(&sub.endpoint) else {
            return Attempt::Gone;
        };
        let (Ok(ua_public), Ok(auth)) = (B64URL.decode(&sub.p256dh), B64URL.decode(&sub.auth))
        else {
            return Attempt::Gone;
        };
        let body = match ece::encrypt(&ua_public, &auth, payload) {
            Ok(b) => b,
            Err(e) => return Attempt::Permanent(e.to_string()),
        };
        let authorization = match key.authorization(&endpoint, subject) {
            Ok(a) => a,
            Err(e) => return Attempt::Transient(format!("VAPID token: {e}")),
        };
        let request = self
            .inner
            .http
            .post(endpoint)
            .header("TTL", WEB_PUSH_TTL_SECONDS.to_string())
            .header("Urgency", if n.urgent { "high" } else { "normal" })
            // A retried message replaces one the push service still holds.
            .header("Topic", n.notification_id.simple().to_string())
            .header("Content-Encoding", "aes128gcm")
            .header("Content-Type", "application/octet-stream")
            .header("Authorization", authorization)
            .body(body);
        match request.send().await {
            Ok(response) => http_status_attempt(WHAT, response.status()),
            Err(e) => request_error_attempt(WHAT, &e),
        }
    }

    /// The tenant's push gateway, every native pushkey of `n.user_id`; pushkeys the gateway
    /// answers in `rejected` are removed.
    pub async fn gateway(&self, db: &DatabaseConnection, n: &Outbound) -> Outcome {
        const WHAT: &str = "push gateway";
        let gw = match gateway::get(db, &self.inner.master_key, n.tenant_id).await {
            Ok(Some(g)) => g,
            Ok(None) => return Outcome::NoTarget,
            Err(e) => {
                tracing::error!(tenant = %n.tenant_id, error = format!("{e:#}"), "push gateway settings unavailable");
                return Outcome::Retry("the tenant's push gateway settings are unavailable".into());
            }
        };
        let pushkeys = match targets::pushkeys_of(db, n.user_id).await {
            Ok(k) => k,
            Err(e) => return database_retry("pushkeys", e),
        };
        let pushkeys: Vec<_> = pushkeys
            .into_iter()
            .filter(|k| k.tenant_id == n.tenant_id)
            .collect();
        if pushkeys.is_empty() {
            return Outcome::NoTarget;
        }
        let body = gateway_payload(n, &pushkeys).to_string();
        let request = self
            .inner
            .http
            .post(&gw.url)
            .header("Content-Type", "application/json")
            .header(
                gateway::SIGNATURE_HEADER,
                gateway::signature(&gw.secret, body.as_bytes()),
            )
            .header(gateway::NOTIFICATION_HEADER, n.notification_id.to_string())
            .body(body);
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Summary::of(request_error_attempt(WHAT, &e)),
        };
        let status = response.status();
        match http_status_attempt(WHAT, status) {
            Attempt::Delivered => {}
            // A gateway's 404 is its misconfiguration, not a gone device.
            Attempt::Gone => return Outcome::Failed(format!("{WHAT} answered {status}")),
            other => return Summary::of(other),
        }
        let rejected: Vec<String> = match response.json::<GatewayAnswer>().await {
            Ok(a) => a.rejected,
            Err(_) => Vec::new(),
        };
        let ours: Vec<Uuid> = pushkeys
            .iter()
            .filter(|k| rejected.contains(&k.pushkey))
            .map(|k| k.id)
            .collect();
        if !ours.is_empty() {
            tracing::info!(user = %n.user_id, count = ours.len(), "push gateway rejected pushkeys; removing them");
            if let Err(e) = push_pushkey::Entity::delete_many()
                .filter(push_pushkey::Column::Id.is_in(ours.clone()))
                .exec(db)
                .await
            {
                tracing::warn!(error = %e, "could not remove rejected pushkeys");
            }
        }
        if ours.len() == pushkeys.len() {
            Outcome::NoTarget
        } else {
            Outcome::Sent
        }
    }

    /// One e-mail to the user's contact address; `items.len() > 1` is a digest. The text
    /// carries no patient data: what kind of thing happened, and a link built from
    /// `public_url`.
    pub async fn email(
        &self,
        db: &DatabaseConnection,
        user_id: Uuid,
        items: &[Outbound],
    ) -> Outcome {
        let Some(smtp) = &self.inner.smtp else {
            return Outcome::NoTarget;
        };
        if items.is_empty() {
            return Outcome::NoTarget;
        }
        let user = match entity::user::Entity::find_by_id(user_id).one(db).await {
            Ok(Some(u)) => u,
            Ok(None) => return Outcome::NoTarget,
            Err(e) => return database_retry("the recipient", e.into()),
        };
        let Some(address) = user
            .email
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
        else {
            return Outcome::NoTarget;
        };
        let Ok(to) = address.parse::<lettre::Address>() else {
            return Outcome::Failed("the recipient's e-mail address is not valid".into());
        };
        let message = match email::message(
            &smtp.from,
            Mailbox::new(None, to),
            items,
            self.inner.public_url.as_deref(),
        ) {
            Ok(m) => m,
            Err(e) => return Outcome::Failed(format!("building the e-mail failed: {e}")),
        };
        match smtp.transport.send(message).await {
            Ok(_) => Outcome::Sent,
            Err(e) => {
                let outcome = email::outcome_of(&e);
                tracing::warn!(user = %user_id, outcome = ?outcome, "e-mail not delivered");
                outcome
            }
        }
    }
}

/// Time-to-live a push service keeps an undelivered message: a day (RFC 8030 §5.2).
pub const WEB_PUSH_TTL_SECONDS: u32 = 86_400;

#[derive(serde::Deserialize)]
struct GatewayAnswer {
    #[serde(default)]
    rejected: Vec<String>,
}

fn database_retry(what: &str, e: crate::error::AppError) -> Outcome {
    tracing::warn!(error = ?e, "reading {what} for a notification failed");
    Outcome::Retry(format!("reading {what} failed"))
}

/// Folds the attempts at every target into one outcome: any transient failure makes the whole
/// delivery a retry (every target is tried again; payloads carry the notification id, and
/// Web Push messages its `Topic`, so a front-end shows a repeat once), else sent if any
/// target took it.
#[derive(Default)]
struct Summary {
    delivered: usize,
    transient: Option<String>,
    permanent: Option<String>,
}

impl Summary {
    fn add(&mut self, attempt: Attempt) {
        match attempt {
            Attempt::Delivered => self.delivered += 1,
            Attempt::Gone => {}
            Attempt::Transient(r) => self.transient = Some(r),
            Attempt::Permanent(r) => self.permanent = Some(r),
        }
    }

    fn outcome(self) -> Outcome {
        if let Some(r) = self.transient {
            Outcome::Retry(r)
        } else if self.delivered > 0 {
            Outcome::Sent
        } else if let Some(r) = self.permanent {
            Outcome::Failed(r)
        } else {
            Outcome::NoTarget
        }
    }

    fn of(attempt: Attempt) -> Outcome {
        let mut s = Summary::default();
        s.add(attempt);
        s.outcome()
    }
}

/// What a browser's service worker receives, decrypted (see the module docs).
pub fn web_push_payload(n: &Outbound) -> serde_json::Value {
    serde_json::json!({
        "notification_id": n.notification_id,
        "kind": n.kind,
        "room_id": n.room_id,
        "event_id": n.event_id,
        "urgent": n.urgent,
        "unread_count": n.unread_count,
    })
}

/// The body POSTed to a push gateway (see the module docs).
pub fn gateway_payload(n: &Outbound, pushkeys: &[push_pushkey::Model]) -> serde_json::Value {
    let devices: Vec<_> = pushkeys
        .iter()
        .map(|k| {
            serde_json::json!({
                "app_id": k.app_id,
                "pushkey": k.pushkey,
                "pushkey_ts": k.pushkey_ts.timestamp(),
                "data": { "format": "event_id_only" },
            })
        })
        .collect();
    let mut notification = serde_json::json!({
        "id": n.notification_id,
        "event_id": n.event_id.unwrap_or(n.notification_id),
        "type": n.kind,
        "prio": if n.urgent { "high" } else { "low" },
        "counts": { "unread": n.unread_count },
        "devices": devices,
    });
    if let Some(room_id) = n.room_id {
        notification["room_id"] = serde_json::json!(room_id);
    }
    serde_json::json!({ "notification": notification })
}

fn smtp_transport(s: &SmtpConfig) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let mut tls = TlsParameters::builder(s.host.clone());
    if let Some(path) = &s.ca_file {
        let pem = read_pem_file("smtp_ca_file", path)?;
        let cert = lettre::transport::smtp::client::Certificate::from_pem(&pem).map_err(|_| {
            anyhow::anyhow!("smtp_ca_file {} holds no PEM certificate", path.display())
        })?;
        tls = tls.add_root_certificate(cert);
    }
    let tls = tls
        .build_rustls()
        .map_err(|e| anyhow::anyhow!("TLS settings of the mail server: {e}"))?;
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.clone())
        .port(s.port)
        .timeout(Some(s.timeout))
        .tls(match s.tls {
            SmtpTls::StartTls => Tls::Required(tls),
            SmtpTls::Implicit => Tls::Wrapper(tls),
            SmtpTls::None => Tls::None,
        });
    if let Some(user) = &s.user {
        let password = s
            .password
            .as_ref()
            .map(|p| p.expose_secret().to_owned())
            .unwrap_or_default();
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, SmtpTls};

    fn config(pairs: &[(&str, &str)]) -> Result<Config, crate::config::ConfigError> {
        Config::from_sources(
            None,
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn smtp_url_is_parsed_and_its_password_never_shown() {
        let c = config(&[
            (
                "RENKEI_SMTP_URL",
                "smtp://mailer:s3cr%40t-pw@mail.city.test",
            ),
            ("RENKEI_SMTP_FROM", "Renkei <renkei@city.test>"),
        ])
        .unwrap();
        let smtp = c.channels.smtp.as_ref().unwrap();
        assert_eq!(
            (smtp.host.as_str(), smtp.port, smtp.tls),
            ("mail.city.test", 587, SmtpTls::StartTls)
        );
        assert_eq!(smtp.user.as_deref(), Some("mailer"));
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cr") && !debug.contains("mailer"),
            "{debug}"
        );

        let c = config(&[
            ("RENKEI_SMTP_URL", "smtps://mail.city.test"),
            ("RENKEI_SMTP_FROM", "renkei@city.test"),
        ])
        .unwrap();
        let smtp = c.channels.smtp.unwrap();
        assert_eq!((smtp.port, smtp.tls), (465, SmtpTls::Implicit));

        for (url, from) in [
            ("http://u:s3cr@t@mail", "renkei@city.test"),
            ("smtp://u:s3cr3t@mail?tls=maybe", "renkei@city.test"),
            ("smtp://u:s3cr3t@mail", "not an address"),
        ] {
            let e = config(&[("RENKEI_SMTP_URL", url), ("RENKEI_SMTP_FROM", from)]).unwrap_err();
            assert!(!e.to_string().contains("s3cr"), "{e}");
        }
        let e = config(&[("RENKEI_SMTP_URL", "smtp://mail")]).unwrap_err();
        assert!(e.to_string().contains("SMTP_FROM"), "{e}");
    }

    #[test]
    fn vapid_subject_defaults_to_an_https_public_url_and_is_checked() {
        let c = config(&[("RENKEI_PUBLIC_URL", "https://renkei.city.test/")]).unwrap();
        assert_eq!(
            c.channels.vapid_subject.as_deref(),
            Some("https://renkei.city.test")
        );
        assert_eq!(config(&[]).unwrap().channels.vapid_subject, None);
        assert!(config(&[("RENKEI_VAPID_SUBJECT", "ops@city.test")]).is_err());
        let c = config(&[("RENKEI_VAPID_SUBJECT", "mailto:ops@city.test")]).unwrap();
        assert_eq!(
            c.channels.vapid_subject.as_deref(),
            Some("mailto:ops@city.test")
        );
    }
}
