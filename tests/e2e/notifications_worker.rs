//! Issue 20, point 5: the delivery worker against the channel interface (`notify::transport::
//! Transport`, which `channels::Channels` implements). The server runs no worker of its own
//! here (`notification_worker_interval_ms = 0`); the test drives rounds of the real worker
//! code on the real server's database with a transport that answers as told and records what
//! it was handed, so retries, limits, leases, digests and concurrent rounds are exact and need
//! no clock. Deliveries through the real peers are in `notifications_peers`.
//!
//! Runs on both databases (`RENKEI_TEST_DB=sqlite|postgres`).

use std::collections::HashMap;
use std::sync::Mutex;

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _};
use serde_json::json;
use uuid::Uuid;

use entity::notification_delivery::{self as delivery, Channel, DeliveryState};
use renkei::notify::transport::{Outbound, Outcome, Transport};
use renkei::notify::worker;

use crate::notifications::{Team, deliveries, post};
use crate::rooms::str_of;

/// Answers per channel as configured; records every call.
#[derive(Default)]
struct Scripted {
    answers: Mutex<HashMap<Channel, Outcome>>,
    calls: Mutex<Vec<(Channel, Vec<Outbound>)>>,
}

impl Scripted {
    fn answer(&self, channel: Channel, outcome: Outcome) {
        self.answers.lock().unwrap().insert(channel, outcome);
    }
    fn outcome(&self, channel: Channel, items: Vec<Outbound>) -> Outcome {
        self.calls.lock().unwrap().push((channel, items));
        self.answers
            .lock()
            .unwrap()
            .get(&channel)
            .cloned()
            .unwrap_or(Outcome::Sent)
    }
    fn calls(&self, channel: Channel) -> Vec<Vec<Outbound>> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _)| *c == channel)
            .map(|(_, i)| i.clone())
            .collect()
    }
}

#[async_trait::async_trait]
impl Transport for Scripted {
    async fn web_push(&self, _: &DatabaseConnection, n: &Outbound) -> Outcome {
        self.outcome(Channel::WebPush, vec![n.clone()])
    }
    async fn gateway(&self, _: &DatabaseConnection, n: &Outbound) -> Outcome {
        self.outcome(Channel::Gateway, vec![n.clone()])
    }
    async fn email(&self, _: &DatabaseConnection, _: Uuid, items: &[Outbound]) -> Outcome {
        self.outcome(Channel::Email, items.to_vec())
    }
}

async fn team(extra: &[(&str, &str)]) -> Team {
    let mut env = vec![
        ("RENKEI_NOTIFICATION_WORKER_INTERVAL_MS", "0"),
        ("RENKEI_NOTIFICATION_RETRY_BASE_SECONDS", "60"),
        ("RENKEI_NOTIFICATION_MAX_ATTEMPTS", "3"),
        ("RENKEI_NOTIFICATION_EMAIL_DIGEST_MINUTES", "0"),
    ];
    env.extend_from_slice(extra);
    let t = Team::new(&env).await;
    for who in [t.doc.id, t.nurse.id] {
        t.k.app
            .edit_user(who, |u| {
                u.email = sea_orm::Set(Some(format!("{who}@example.jp")));
            })
            .await;
    }
    // Quiet hours would hold everything at night; these tests are not about them.
    for c in [&t.doc_c, &t.nurse_c] {
        c.graphql(
            crate::notifications::UPDATE_PREFS,
            json!({ "i": { "quietHoursEnabled": false } }),
        )
        .await
        .ok();
    }
    // The set-up's own notifications (the invitations) go out first, apart.
    worker::round(t.k.app.state(), &Scripted::default(), Uuid::now_v7())
        .await
        .unwrap();
    t
}

/// Makes every pending row of these notifications due now (time passing, without waiting).
async fn due_now(db: &DatabaseConnection) {
    delivery::Entity::update_many()
        .col_expr(
            delivery::Column::DueAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .filter(delivery::Column::State.eq(DeliveryState::Pending))
        .exec(db)
        .await
        .unwrap();
}

async fn audit_of(t: &Team, action: &str) -> Vec<serde_json::Value> {
    let resp = t
        .k
        .city
        .graphql(
            "query($f:AuditFilter){ auditEvents(filter:$f, first: 100){ edges { node { action outcome targetId detail } } } }",
            json!({ "f": { "action": action } }),
        )
        .await;
    resp.ok()["auditEvents"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

#[tokio::test]
async fn transient_failures_back_off_then_fail_at_the_limit_and_every_outcome_is_audited() {
    let t = team(&[]).await;
    let state = t.k.app.state();
    let transport = Scripted::default();
    transport.answer(
        Channel::WebPush,
        Outcome::Retry("push service answered 500".into()),
    );
    transport.answer(Channel::Email, Outcome::NoTarget);
    let me = Uuid::now_v7();
    let note = post(&t.nurse_c, &t.room, json!({})).await;
    let note_id = str_of(&note["id"]).to_string();

    let before = chrono::Utc::now();
    worker::round(state, &transport, me).await.unwrap();
    let rows = deliveries(&t.k.app, t.doc.id, &note_id).await;
    let by: HashMap<Channel, &delivery::Model> = rows.iter().map(|d| (d.channel, d)).collect();
    assert_eq!(by[&Channel::InApp].state, DeliveryState::Sent);
    assert_eq!(by[&Channel::Gateway].state, DeliveryState::Sent);
    assert_eq!(by[&Channel::Email].state, DeliveryState::Skipped);
    let push = by[&Channel::WebPush];
    assert_eq!(push.state, DeliveryState::Pending);
    assert_eq!(push.attempts, 1);
    assert_eq!(
        push.last_error.as_deref(),
        Some("push service answered 500")
    );
    // First retry: within the upper half of the base delay (jitter).
    let delay = push.due_at - before;
    assert!(
        delay >= chrono::Duration::seconds(29) && delay <= chrono::Duration::seconds(61),
        "{delay:?}"
    );

    // Nothing is due: a round sends nothing more.
    worker::round(state, &transport, me).await.unwrap();
    assert_eq!(transport.calls(Channel::WebPush).len(), 1);
    // The second retry waits about twice as long.
    due_now(&t.k.app.db).await;
    let before = chrono::Utc::now();
    worker::round(state, &transport, me).await.unwrap();
    let push = deliveries(&t.k.app, t.doc.id, &note_id)
        .await
        .into_iter()
        .find(|d| d.channel == Channel::WebPush)
        .unwrap();
    assert_eq!(push.attempts, 2);
    let delay = push.due_at - before;
    assert!(
        delay >= chrono::Duration::seconds(59) && delay <= chrono::Duration::seconds(121),
        "{delay:?}"
    );
    // The third try is the last (max attempts 3).
    due_now(&t.k.app.db).await;
    worker::round(state, &transport, me).await.unwrap();
    let push = deliveries(&t.k.app, t.doc.id, &note_id)
        .await
        .into_iter()
        .find(|d| d.channel == Channel::WebPush)
        .unwrap();
    assert_eq!(push.state, DeliveryState::Failed);
    assert_eq!(push.attempts, 3);
    due_now(&t.k.app.db).await;
    worker::round(state, &transport, me).await.unwrap();
    // Each channel was handed the doctor's notification as often as it was tried, no more.
    let of_doc = |calls: Vec<Vec<Outbound>>| {
        calls
            .into_iter()
            .flatten()
            .filter(|o| {
                o.user_id == t.doc.id && o.event_id.map(|e| e.to_string()) == Some(note_id.clone())
            })
            .count()
    };
    assert_eq!(of_doc(transport.calls(Channel::WebPush)), 3);
    assert_eq!(of_doc(transport.calls(Channel::Gateway)), 1);
    let handed = &transport.calls(Channel::Gateway)[0][0];
    assert_eq!(handed.kind, "NOTE_POSTED");
    assert_eq!(handed.room_id.map(|r| r.to_string()), Some(t.room.clone()));
    assert!(handed.unread_count >= 1);

    // Audited: recipient, channel, event id; never the note's text.
    let sent = audit_of(&t, "notification.sent").await;
    let failed = audit_of(&t, "notification.failed").await;
    let doc = t.doc.id.to_string();
    assert!(
        sent.iter()
            .any(|e| e["detail"]["recipientId"] == doc.as_str()
                && e["detail"]["channel"] == "GATEWAY"
                && e["detail"]["eventId"] == note_id.as_str())
    );
    let fail = failed
        .iter()
        .find(|e| e["detail"]["recipientId"] == doc.as_str())
        .expect("notification.failed for the doctor");
    assert_eq!(fail["detail"]["channel"], "WEB_PUSH");
    assert_eq!(fail["outcome"], "FAILED");
    assert!(fail["detail"]["reason"].as_str().unwrap().contains("500"));
    for e in sent.iter().chain(&failed) {
        assert!(!e.to_string().contains("本日訪問"), "{e}");
    }
    // Skipped rows and in-app entries are not audited as sent.
    assert!(
        !sent
            .iter()
            .any(|e| e["detail"]["channel"] == "EMAIL" || e["detail"]["channel"] == "IN_APP")
    );
    // A permanent failure ends at once.
    transport.answer(
        Channel::Gateway,
        Outcome::Failed("gateway refused the pushkey".into()),
    );
    let second = post(&t.nurse_c, &t.room, json!({})).await;
    worker::round(state, &transport, me).await.unwrap();
    let gw = deliveries(&t.k.app, t.doc.id, str_of(&second["id"]))
        .await
        .into_iter()
        .find(|d| d.channel == Channel::Gateway)
        .unwrap();
    assert_eq!((gw.state, gw.attempts), (DeliveryState::Failed, 1));
}

#[tokio::test]
async fn concurrent_rounds_and_a_crashed_claim_deliver_each_row_exactly_once() {
    let t = team(&[]).await;
    let state = t.k.app.state();
    let transport = Scripted::default();
    let mut notes = Vec::new();
    for _ in 0..15 {
        notes.push(str_of(&post(&t.nurse_c, &t.room, json!({})).await["id"]).to_string());
    }
    // Two workers at once (two instances).
    let (a, b) = tokio::join!(
        worker::round(state, &transport, Uuid::now_v7()),
        worker::round(state, &transport, Uuid::now_v7())
    );
    let claimed = a.unwrap() + b.unwrap();
    assert_eq!(
        claimed as usize,
        notes.len() * 4,
        "every row claimed by one of them"
    );
    for channel in [Channel::WebPush, Channel::Gateway] {
        let mut handed: Vec<Uuid> = transport
            .calls(channel)
            .into_iter()
            .flatten()
            .map(|o| o.notification_id)
            .collect();
        let n = handed.len();
        handed.sort();
        handed.dedup();
        assert_eq!(handed.len(), n, "{channel:?} handed a notification twice");
        assert_eq!(n, notes.len());
    }

    // A claim whose worker died: not taken over during its lease, taken over after it.
    let note = post(&t.nurse_c, &t.room, json!({})).await;
    let rows = deliveries(&t.k.app, t.doc.id, str_of(&note["id"])).await;
    let push = rows.iter().find(|d| d.channel == Channel::WebPush).unwrap();
    let dead = Uuid::now_v7();
    let claim = |until: chrono::DateTime<chrono::Utc>| {
        delivery::Entity::update_many()
            .col_expr(delivery::Column::State, Expr::value("SENDING"))
            .col_expr(delivery::Column::ClaimedBy, Expr::value(dead))
            .col_expr(delivery::Column::ClaimedUntil, Expr::value(until))
            .col_expr(delivery::Column::Attempts, Expr::value(1))
            .filter(delivery::Column::Id.eq(push.id))
            .exec(&t.k.app.db)
    };
    claim(chrono::Utc::now() + chrono::Duration::minutes(5))
        .await
        .unwrap();
    let pushes = transport.calls(Channel::WebPush).len();
    worker::round(state, &transport, Uuid::now_v7())
        .await
        .unwrap();
    assert_eq!(
        transport.calls(Channel::WebPush).len(),
        pushes,
        "taken during the lease"
    );
    claim(chrono::Utc::now() - chrono::Duration::seconds(1))
        .await
        .unwrap();
    worker::round(state, &transport, Uuid::now_v7())
        .await
        .unwrap();
    assert_eq!(transport.calls(Channel::WebPush).len(), pushes + 1);
    let push = deliveries(&t.k.app, t.doc.id, str_of(&note["id"]))
        .await
        .into_iter()
        .find(|d| d.channel == Channel::WebPush)
        .unwrap();
    assert_eq!((push.state, push.attempts), (DeliveryState::Sent, 2));
}

#[tokio::test]
async fn ordinary_notes_wait_for_one_digest_while_mentions_and_urgent_mail_at_once() {
    let t = team(&[("RENKEI_NOTIFICATION_EMAIL_DIGEST_MINUTES", "15")]).await;
    let state = t.k.app.state();
    let transport = Scripted::default();
    let me = Uuid::now_v7();
    let mut ordinary = Vec::new();
    for _ in 0..3 {
        ordinary.push(str_of(&post(&t.nurse_c, &t.room, json!({})).await["id"]).to_string());
    }
    let mention = post(
        &t.nurse_c,
        &t.room,
        json!({ "mentionUserIds": [t.doc.id.to_string()] }),
    )
    .await;
    let urgent = post(&t.nurse_c, &t.room, json!({ "urgent": true })).await;
    for id in &ordinary {
        let mail = deliveries(&t.k.app, t.doc.id, id)
            .await
            .into_iter()
            .find(|d| d.channel == Channel::Email)
            .unwrap();
        assert!(mail.digest);
        assert!(mail.due_at > chrono::Utc::now(), "waits for the digest");
    }
    worker::round(state, &transport, me).await.unwrap();
    // The mention and the urgent note: at once, one mail each (or together), no ordinary note.
    let mailed: Vec<String> = transport
        .calls(Channel::Email)
        .into_iter()
        .flatten()
        .filter(|o| o.user_id == t.doc.id)
        .filter_map(|o| o.event_id.map(|e| e.to_string()))
        .collect();
    assert!(mailed.contains(&str_of(&mention["id"]).to_string()));
    assert!(mailed.contains(&str_of(&urgent["id"]).to_string()));
    assert!(!ordinary.iter().any(|o| mailed.contains(o)));

    // The digest time comes for the first one: all three go in one mail.
    let first = deliveries(&t.k.app, t.doc.id, &ordinary[0])
        .await
        .into_iter()
        .find(|d| d.channel == Channel::Email)
        .unwrap();
    delivery::Entity::update_many()
        .col_expr(
            delivery::Column::DueAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .filter(delivery::Column::Id.eq(first.id))
        .exec(&t.k.app.db)
        .await
        .unwrap();
    let before = transport.calls(Channel::Email).len();
    worker::round(state, &transport, me).await.unwrap();
    let digests: Vec<Vec<Outbound>> = transport.calls(Channel::Email)[before..]
        .iter()
        .filter(|items| items.iter().all(|o| o.user_id == t.doc.id))
        .cloned()
        .collect();
    assert_eq!(digests.len(), 1, "{digests:?}");
    let mut in_digest: Vec<String> = digests[0]
        .iter()
        .filter_map(|o| o.event_id.map(|e| e.to_string()))
        .collect();
    in_digest.sort();
    let mut want = ordinary.clone();
    want.sort();
    assert_eq!(in_digest, want);
    for id in &ordinary {
        let mail = deliveries(&t.k.app, t.doc.id, id)
            .await
            .into_iter()
            .find(|d| d.channel == Channel::Email)
            .unwrap();
        assert_eq!(mail.state, DeliveryState::Sent);
    }
}

#[tokio::test]
async fn nothing_a_patient_could_be_recognised_by_leaves_in_a_notification() {
    let t = team(&[("RENKEI_NOTIFICATION_EMAIL_DIGEST_MINUTES", "0")]).await;
    let state = t.k.app.state();
    let transport = Scripted::default();
    let mut live =
        renkei_tests::ws::live(&t.k.app, &t.doc, &renkei_tests::ws::token_of(&t.doc_c)).await;
    renkei_tests::ws::subscribe_settled(&mut live, "me", "subscription { myEvents }", json!({}))
        .await;
    // Everything the suite's fixture puts in this room that names the patient or the care.
    let mut secrets = vec![
        "山田".to_string(),
        "太郎".to_string(),
        "ヤマダ".to_string(),
        "山田 太. (1940)".to_string(),
        "1940-05-01".to_string(),
    ];
    let mut ids = Vec::new();
    for (i, extra) in [
        json!({}),
        json!({ "urgent": true }),
        json!({ "mentionUserIds": [t.doc.id.to_string()] }),
    ]
    .into_iter()
    .enumerate()
    {
        let body = format!("山田さん 血圧 158/96 服薬確認 {i}");
        let mut input = extra;
        input["body"] = json!(body);
        ids.push(str_of(&post(&t.nurse_c, &t.room, input).await["id"]).to_string());
        secrets.push(body);
    }
    worker::round(state, &transport, Uuid::now_v7())
        .await
        .unwrap();
    // What left: every item handed to every channel, every inbox entry on myEvents, the audit
    // events of the deliveries.
    let mut sent: Vec<String> = transport
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|(c, items)| format!("{c:?} {items:?}"))
        .collect();
    assert!(
        ids.iter()
            .all(|id| sent.iter().any(|s| s.contains(id.as_str()))),
        "every note went out: {sent:?}"
    );
    let mut seen = 0;
    while seen < ids.len() {
        let event =
            renkei_tests::ws::next_event(&mut live, "me", "myEvents", "inbox entries").await;
        if ids.iter().any(|id| event["eventId"] == id.as_str()) {
            seen += 1;
        }
        sent.push(event.to_string());
    }
    for action in ["notification.sent", "notification.failed"] {
        for e in audit_of(&t, action).await {
            sent.push(e.to_string());
        }
    }
    for s in &sent {
        for secret in &secrets {
            assert!(!s.contains(secret.as_str()), "{secret:?} left in {s}");
        }
    }
}
