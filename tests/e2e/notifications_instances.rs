//! Issue 20 on two instances of one deployment (same database, same Redis prefix): notes
//! posted through both, every delivery claimed once and sent once. The inbox entry on
//! `myEvents` is the channel seen here: a delivery sent by both workers would reach the
//! subscriber twice (Redis carries each instance's events to every instance).

use std::collections::BTreeMap;

use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
use serde_json::{Value, json};

use entity::notification_delivery::{Channel, DeliveryState};
use renkei_tests::{TestOptions, spawn_app_with, ws};

use crate::notifications::{eventually, post};
use crate::rooms::{env, id_of, room_with, str_of, yamada};

const NOTES: usize = 40;

#[tokio::test]
async fn two_instances_deliver_each_notification_exactly_once() {
    let settings = env(&[("RENKEI_NOTIFICATION_WORKER_INTERVAL_MS", "50")]);
    let a = spawn_app_with(TestOptions {
        redis: Some(true),
        env: settings.clone(),
        ..Default::default()
    })
    .await;
    let b = spawn_app_with(TestOptions {
        redis: Some(true),
        env: settings,
        share_with: Some(a.shared_backends()),
        ..Default::default()
    })
    .await;
    let admin = a.create_tenant("kita").await;
    let city = a.ready_session(&admin).await;
    let facility = a.create_facility(admin.tenant_id, "Clinic").await;
    let doc = a
        .create_user(&admin, "doc", entity::kinds::Role::Staff, Some(facility))
        .await;
    let nurse = a
        .create_user(&admin, "nurse", entity::kinds::Role::Staff, Some(facility))
        .await;
    let doc_c = a.ready_session(&doc).await;
    let nurse_a = a.ready_session(&nurse).await;
    let room = id_of(&room_with(&city, yamada(), &[(&doc, &doc_c), (&nurse, &nurse_a)], &[]).await);
    let nurse_b = b.client_for(&nurse).with_token(ws::token_of(&nurse_a));

    // The doctor listens on B.
    let doc_token = ws::token_of(&doc_c);
    let mut live = ws::live(&b, &doc, &doc_token).await;
    ws::subscribe_settled(&mut live, "me", "subscription { myEvents }", json!({})).await;

    let mut notes = Vec::new();
    for i in 0..NOTES {
        let client = if i % 2 == 0 { &nurse_a } else { &nurse_b };
        notes.push(str_of(&post(client, &room, json!({})).await["id"]).to_string());
    }

    // Every note reaches the subscriber once.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    while notes.iter().any(|n| !seen.contains_key(n)) {
        let event: Value = ws::next_event(&mut live, "me", "myEvents", "inbox entries").await;
        if event["type"] == "NOTIFICATION" {
            *seen
                .entry(str_of(&event["eventId"]).to_string())
                .or_default() += 1;
        }
    }
    // Then every row is finished, each claimed by one worker once.
    let db = &a.db;
    eventually("every in-app delivery is SENT", || async {
        entity::notification_delivery::Entity::find()
            .filter(entity::notification_delivery::Column::Channel.eq(Channel::InApp))
            .filter(entity::notification_delivery::Column::UserId.eq(doc.id))
            .all(db)
            .await
            .unwrap()
            .iter()
            .filter(|d| d.state == DeliveryState::Sent)
            .count()
            >= NOTES
    })
    .await;
    let rows = entity::notification_delivery::Entity::find()
        .filter(entity::notification_delivery::Column::UserId.eq(doc.id))
        .filter(entity::notification_delivery::Column::Channel.eq(Channel::InApp))
        .all(db)
        .await
        .unwrap();
    for d in &rows {
        assert_eq!(d.attempts, 1, "claimed more than once: {d:?}");
    }
    let workers: std::collections::BTreeSet<_> = rows.iter().filter_map(|d| d.claimed_by).collect();
    // A sentinel after all SENT rows: anything sent twice would have arrived before it.
    let last = str_of(&post(&nurse_a, &room, json!({})).await["id"]).to_string();
    loop {
        let event: Value = ws::next_event(&mut live, "me", "myEvents", "the sentinel").await;
        if event["type"] != "NOTIFICATION" {
            continue;
        }
        let id = str_of(&event["eventId"]).to_string();
        if id == last {
            break;
        }
        *seen.entry(id).or_default() += 1;
    }
    for n in &notes {
        assert_eq!(
            seen.get(n),
            Some(&1),
            "note {n} reached the subscriber {seen:?}"
        );
    }
    assert!(!workers.is_empty());
}
