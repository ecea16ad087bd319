//! Issue 20: who may call which notification query and mutation, as one table, in the style of
//! `room_permissions`. Every caller (anonymous, the room's member, STAFF outside the room, a
//! FACILITY_ADMIN, the CITY_ADMIN, another tenant's CITY_ADMIN) calls every field; the answer
//! must be the table's, and the database is read before and after: an inbox shows only the
//! caller's own entries, marking another's entries read changes nothing, a room level is set
//! only by a member, and a tenant's switches only by its own CITY_ADMIN.
//!
//! Runs on both databases (`RENKEI_TEST_DB=sqlite|postgres`).

use sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _};
use serde_json::json;

use entity::kinds::Role;
use renkei_tests::TestClient;

use crate::notifications::{INBOX, MARK, PREFS, TENANT_CHANNELS, Team, UNREAD, UPDATE_PREFS, post};
use crate::rooms::str_of;

const OK: &str = "ok";
const UNAUTH: &str = "UNAUTHENTICATED";
const FORBID: &str = "FORBIDDEN";

const CALLERS: [&str; 6] = [
    "anonymous",
    "the room's member",
    "STAFF outside the room",
    "FACILITY_ADMIN",
    "CITY_ADMIN",
    "CITY_ADMIN of another tenant",
];

const TABLE: &[(&str, [&str; 6])] = &[
    ("myNotifications", [UNAUTH, OK, OK, OK, OK, OK]),
    ("unreadNotificationCount", [UNAUTH, OK, OK, OK, OK, OK]),
    ("notificationPreferences", [UNAUTH, OK, OK, OK, OK, OK]),
    ("markNotificationsRead", [UNAUTH, OK, OK, OK, OK, OK]),
    (
        "updateNotificationPreferences(room)",
        [UNAUTH, OK, FORBID, FORBID, FORBID, FORBID],
    ),
    (
        "setTenantNotificationChannels",
        [UNAUTH, FORBID, FORBID, FORBID, OK, OK],
    ),
];

fn outcome(resp: &renkei_tests::Gql) -> String {
    match resp.code() {
        None => OK.to_string(),
        Some(code) => code.to_string(),
    }
}

#[tokio::test]
async fn every_caller_gets_the_tables_answer_and_sees_only_its_own_notifications() {
    let t = Team::new(&[]).await;
    let (outsider, outsider_c) = t.k.staff("outsider", t.k.a).await;
    let (fa, fa_c) = t.k.person("fa", Role::FacilityAdmin, t.k.a).await;
    let other = t.k.app.create_tenant("other").await;
    let other_c = t.k.app.ready_session(&other).await;
    let anonymous = t.k.app.client();

    // The doctor has an unread entry of the nurse's note.
    let note = post(&t.nurse_c, &t.room, json!({})).await;
    let doc_entry = t.doc_c.graphql(INBOX, json!({ "f": 1 })).await;
    let doc_entry = doc_entry.ok()["myNotifications"]["edges"][0]["node"].clone();
    assert_eq!(doc_entry["eventId"], note["id"]);
    let doc_entry_id = str_of(&doc_entry["id"]).to_string();

    let callers: [(&TestClient, Option<uuid::Uuid>); 6] = [
        (&anonymous, None),
        (&t.doc_c, Some(t.doc.id)),
        (&outsider_c, Some(outsider.id)),
        (&fa_c, Some(fa.id)),
        (&t.k.city, Some(t.k.admin.id)),
        (&other_c, Some(other.id)),
    ];
    let mut mismatches = Vec::new();
    for (field, expected) in TABLE {
        for (i, (client, user)) in callers.iter().enumerate() {
            // The doctor itself marks its own entry last (below), not here.
            let resp = match *field {
                "myNotifications" => client.graphql(INBOX, json!({ "f": 100 })).await,
                "unreadNotificationCount" => client.graphql(UNREAD, json!({})).await,
                "notificationPreferences" => client.graphql(PREFS, json!({})).await,
                "markNotificationsRead" => {
                    let ids = if i == 1 { json!([]) } else { json!([doc_entry_id]) };
                    client.graphql(MARK, json!({ "ids": ids })).await
                }
                "updateNotificationPreferences(room)" => {
                    client
                        .graphql(
                            UPDATE_PREFS,
                            json!({ "i": { "email": false, "rooms": [{ "roomId": t.room, "level": "MUTED" }] } }),
                        )
                        .await
                }
                "setTenantNotificationChannels" => {
                    // Each CITY_ADMIN switches its own tenant's e-mail off.
                    client
                        .graphql(
                            TENANT_CHANNELS,
                            json!({ "i": { "inApp": true, "webPush": true, "gateway": true, "email": false } }),
                        )
                        .await
                }
                other => unreachable!("{other}"),
            };
            let got = outcome(&resp);
            if got != expected[i] {
                mismatches.push(format!(
                    "{field} as {}: expected {}, got {got} ({:?})",
                    CALLERS[i],
                    expected[i],
                    resp.errors()
                ));
                continue;
            }
            // What an allowed call shows is the caller's own.
            if got == OK && *field == "myNotifications" {
                let edges = resp.ok()["myNotifications"]["edges"]
                    .as_array()
                    .unwrap()
                    .clone();
                let user = user.unwrap();
                for e in &edges {
                    let id = uuid::Uuid::parse_str(str_of(&e["node"]["id"])).unwrap();
                    let row = entity::notification::Entity::find_by_id(id)
                        .one(&t.k.app.db)
                        .await
                        .unwrap()
                        .unwrap();
                    assert_eq!(row.user_id, user, "{} sees another's entry", CALLERS[i]);
                }
                if i != 1 {
                    assert!(
                        !edges.iter().any(|e| e["node"]["id"] == json!(doc_entry_id)),
                        "{} sees the doctor's entry",
                        CALLERS[i]
                    );
                }
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));

    // Nobody but the doctor marked its entry read.
    let row =
        entity::notification::Entity::find_by_id(uuid::Uuid::parse_str(&doc_entry_id).unwrap())
            .one(&t.k.app.db)
            .await
            .unwrap()
            .unwrap();
    assert!(
        row.read_at.is_none(),
        "another caller marked the doctor's entry read"
    );
    let after = t
        .doc_c
        .graphql(MARK, json!({ "ids": [doc_entry_id] }))
        .await;
    after.ok();
    let row = entity::notification::Entity::find_by_id(row.id)
        .one(&t.k.app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(row.read_at.is_some());

    // Only the member's room level exists; refused updates changed nothing else either.
    let levels = entity::notification_room_level::Entity::find()
        .all(&t.k.app.db)
        .await
        .unwrap();
    assert_eq!(levels.len(), 1, "{levels:?}");
    assert_eq!(levels[0].user_id, t.doc.id);
    let prefs_rows = entity::notification_preference::Entity::find()
        .filter(entity::notification_preference::Column::Email.eq(false))
        .count(&t.k.app.db)
        .await
        .unwrap();
    assert_eq!(prefs_rows, 1, "only the member's update went through");

    // Each CITY_ADMIN switched its own tenant only.
    let switches = entity::notification_tenant_setting::Entity::find()
        .all(&t.k.app.db)
        .await
        .unwrap();
    let mut tenants: Vec<uuid::Uuid> = switches.iter().map(|s| s.tenant_id).collect();
    tenants.sort();
    let mut expected = vec![t.k.admin.tenant_id, other.tenant_id];
    expected.sort();
    assert_eq!(tenants, expected);
}
