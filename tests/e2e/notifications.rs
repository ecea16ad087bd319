//! Issue 20, the core: which events notify whom (one inbox entry per recipient and event,
//! written with the event), the in-app inbox and its live entry on `myEvents`, preferences
//! (channels, room levels, quiet hours, the tenant's switches), and the outbox rows the
//! delivery worker sends from. Deliveries through the real peers are in `notifications_peers`.
//!
//! Runs on both databases (`RENKEI_TEST_DB=sqlite|postgres`).

use std::time::{Duration, Instant};

use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _};
use serde_json::{Value, json};
use uuid::Uuid;

use entity::kinds::Role;
use entity::notification_delivery::{Channel, DeliveryState};
use renkei_tests::fixtures::identity_from_pkcs12;
use renkei_tests::{Person, TestApp, TestClient, ws};

use crate::rooms::{
    CLOSE_ROOM, INVITE, Kita, REQUEST_CLOSURE, expect_bad_input, expect_code, id_of,
    invitation_for, open_room, patient, room_with, str_of, yamada,
};

pub(crate) const INBOX: &str = "query($f:Int,$a:String,$u:Boolean){ myNotifications(first:$f, after:$a, unreadOnly:$u){ totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id kind roomId eventId noteCategory urgent createdAt readAt } } } }";
pub(crate) const UNREAD: &str = "{ unreadNotificationCount }";
pub(crate) const MARK: &str =
    "mutation($ids:[ID!],$all:Boolean){ markNotificationsRead(ids:$ids, all:$all) }";
pub(crate) const PREFS: &str = "{ notificationPreferences { channels { inApp webPush gateway email } tenantChannels { inApp webPush gateway email } effectiveChannels { inApp webPush gateway email } quietHoursEnabled quietHoursStart quietHoursEnd timeZone rooms { roomId level } } }";
pub(crate) const UPDATE_PREFS: &str = "mutation($i:NotificationPreferencesInput!){ updateNotificationPreferences(input:$i){ channels { inApp webPush gateway email } effectiveChannels { inApp webPush gateway email } quietHoursEnabled quietHoursStart quietHoursEnd rooms { roomId level } } }";
pub(crate) const TENANT_CHANNELS: &str = "mutation($i:NotificationChannelsInput!){ setTenantNotificationChannels(input:$i){ inApp webPush gateway email } }";
pub(crate) const POST: &str =
    "mutation($i:PostNoteInput!){ postNote(input:$i){ id urgent category } }";
const ISSUE: &str = "mutation($u:ID!,$d:String!){ issueCertificate(userId:$u, deviceLabel:$d){ certificate { id fingerprintSha256 } pkcs12Base64 pkcs12Password } }";
const SUBMIT_SUSPENSION: &str = "mutation($u:[ID!]!,$r:String!){ submitSuspension(userIds:$u, reason:$r, wholeFacility: false){ id kind status } }";
const MY_EVENTS: &str = "subscription { myEvents }";

/// The caller's inbox (newest first), nodes only.
pub(crate) async fn inbox(client: &TestClient) -> Vec<Value> {
    let resp = client.graphql(INBOX, json!({ "f": 100 })).await;
    resp.ok()["myNotifications"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

/// (kind, eventId) of each inbox entry, newest first.
pub(crate) async fn kinds(client: &TestClient) -> Vec<(String, String)> {
    inbox(client)
        .await
        .iter()
        .map(|n| {
            (
                str_of(&n["kind"]).to_string(),
                n["eventId"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

pub(crate) async fn unread(client: &TestClient) -> i64 {
    client.graphql(UNREAD, json!({})).await.ok()["unreadNotificationCount"]
        .as_i64()
        .unwrap()
}

pub(crate) async fn post(client: &TestClient, room: &str, input: Value) -> Value {
    let mut i = json!({ "roomId": room, "body": "本日訪問。特に変化なし。" });
    if let (Some(i), Some(extra)) = (i.as_object_mut(), input.as_object()) {
        for (k, v) in extra {
            i.insert(k.clone(), v.clone());
        }
    }
    client.graphql(POST, json!({ "i": i })).await.ok()["postNote"].clone()
}

/// A tenant with a room of a doctor (facility A) and a nurse (facility B), and facility A's admin.
pub(crate) struct Team {
    pub k: Kita,
    pub doc: Person,
    pub doc_c: TestClient,
    pub nurse: Person,
    pub nurse_c: TestClient,
    pub room: String,
}

impl Team {
    pub(crate) async fn new(env: &[(&str, &str)]) -> Team {
        let k = Kita::with_env(env).await;
        let (doc, doc_c) = k.staff("doc", k.a).await;
        let (nurse, nurse_c) = k.staff("nurse", k.b).await;
        let room = id_of(
            &room_with(
                &k.city,
                yamada(),
                &[(&doc, &doc_c), (&nurse, &nurse_c)],
                &[],
            )
            .await,
        );
        Team {
            k,
            doc,
            doc_c,
            nurse,
            nurse_c,
            room,
        }
    }
}

/// The delivery rows of the notifications of `event_id` for `user`.
pub(crate) async fn deliveries(
    app: &TestApp,
    user: Uuid,
    event_id: &str,
) -> Vec<entity::notification_delivery::Model> {
    let event = Uuid::parse_str(event_id).unwrap();
    let ids: Vec<Uuid> = entity::notification::Entity::find()
        .filter(entity::notification::Column::UserId.eq(user))
        .filter(entity::notification::Column::EventId.eq(event))
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    entity::notification_delivery::Entity::find()
        .filter(entity::notification_delivery::Column::NotificationId.is_in(ids))
        .order_by_asc(entity::notification_delivery::Column::Channel)
        .all(&app.db)
        .await
        .unwrap()
}

/// Waits (generously) until `check` holds, polling.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_note_notifies_every_other_member_once_and_the_inbox_reads_and_marks() {
    let t = Team::new(&[]).await;
    let before = kinds(&t.doc_c).await.len();
    let note = post(&t.nurse_c, &t.room, json!({ "category": "REPORT" })).await;
    assert_eq!(note["urgent"], false);

    let doc_inbox = inbox(&t.doc_c).await;
    assert_eq!(doc_inbox.len(), before + 1, "{doc_inbox:?}");
    let entry = &doc_inbox[0];
    assert_eq!(entry["kind"], "NOTE_POSTED");
    assert_eq!(entry["roomId"], t.room.as_str());
    assert_eq!(entry["eventId"], note["id"]);
    assert_eq!(entry["noteCategory"], "REPORT");
    assert_eq!(entry["urgent"], false);
    assert!(entry["readAt"].is_null());
    // The author hears nothing of its own note.
    assert!(
        !kinds(&t.nurse_c)
            .await
            .iter()
            .any(|(_, e)| e == str_of(&note["id"]))
    );

    // Read state: by id, then all; the count follows, unreadOnly filters.
    let unread_before = unread(&t.doc_c).await;
    assert!(unread_before >= 1);
    let after = t.doc_c.graphql(MARK, json!({ "ids": [entry["id"]] })).await;
    assert_eq!(after.ok()["markNotificationsRead"], unread_before - 1);
    let only_unread = t.doc_c.graphql(INBOX, json!({ "f": 100, "u": true })).await;
    assert!(
        !only_unread.ok()["myNotifications"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["node"]["id"] == entry["id"])
    );
    let all = t.doc_c.graphql(MARK, json!({ "all": true })).await;
    assert_eq!(all.ok()["markNotificationsRead"], 0);
    assert_eq!(unread(&t.doc_c).await, 0);
    expect_bad_input(
        &t.doc_c.graphql(MARK, json!({})).await,
        "ids",
        "neither ids nor all",
    );

    // Paging: newest first with cursors.
    for _ in 0..3 {
        post(&t.nurse_c, &t.room, json!({})).await;
    }
    let page = t.doc_c.graphql(INBOX, json!({ "f": 2 })).await;
    let page = &page.ok()["myNotifications"];
    assert_eq!(page["edges"].as_array().unwrap().len(), 2);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    let next = t
        .doc_c
        .graphql(INBOX, json!({ "f": 2, "a": page["pageInfo"]["endCursor"] }))
        .await;
    let next = &next.ok()["myNotifications"]["edges"];
    assert!(next[0]["node"]["id"].as_str() < page["edges"][1]["node"]["id"].as_str());
    expect_bad_input(
        &t.doc_c
            .graphql(INBOX, json!({ "f": 2, "a": "bogus" }))
            .await,
        "after",
        "a foreign cursor",
    );
}

#[tokio::test]
async fn mentions_replies_and_urgent_notes_are_their_own_kinds() {
    let t = Team::new(&[]).await;
    let (pt, pt_c) = t.k.staff("pt", t.k.b).await;
    let invited =
        t.k.city
            .graphql(INVITE, json!({ "r": t.room, "u": [pt.id.to_string()] }))
            .await;
    invited.ok();
    let room =
        t.k.city
            .graphql(crate::rooms::ROOM_CITY_VIEW, json!({ "id": t.room }))
            .await;
    let inv = invitation_for(&room.ok()["room"], &pt);
    pt_c.graphql(crate::rooms::ACCEPT, json!({ "id": inv }))
        .await
        .ok();
    assert!(
        kinds(&pt_c)
            .await
            .contains(&("INVITATION".to_string(), inv.clone()))
    );

    let doc_note = post(&t.doc_c, &t.room, json!({})).await;
    let reply = post(
        &t.nurse_c,
        &t.room,
        json!({ "replyToId": doc_note["id"], "mentionUserIds": [pt.id.to_string()] }),
    )
    .await;
    let doc_kinds = kinds(&t.doc_c).await;
    assert!(doc_kinds.contains(&("REPLY".into(), str_of(&reply["id"]).into())));
    let pt_kinds = kinds(&pt_c).await;
    assert!(pt_kinds.contains(&("MENTION".into(), str_of(&reply["id"]).into())));
    // One entry per recipient and event.
    assert_eq!(
        pt_kinds
            .iter()
            .filter(|(_, e)| e == str_of(&reply["id"]))
            .count(),
        1
    );

    let urgent = post(&t.nurse_c, &t.room, json!({ "urgent": true })).await;
    assert_eq!(urgent["urgent"], true);
    let entry = inbox(&t.doc_c).await.remove(0);
    assert_eq!(entry["eventId"], urgent["id"]);
    assert_eq!(entry["urgent"], true);
    let shown = t
        .doc_c
        .graphql(
            "query($id:ID!){ room(id:$id){ notes(first: 1){ edges { node { id urgent } } } } }",
            json!({ "id": t.room }),
        )
        .await;
    assert_eq!(
        shown.ok()["room"]["notes"]["edges"][0]["node"]["urgent"],
        true
    );
}

#[tokio::test]
async fn closure_applications_and_invitations_notify_the_people_concerned() {
    let t = Team::new(&[]).await;
    let (_fa, fa_c) = t.k.person("fa", Role::FacilityAdmin, t.k.a).await;

    // An invitation reaches the invitee at once, before any answer.
    let (ot, ot_c) = t.k.staff("ot", t.k.b).await;
    let opened = open_room(
        &t.k.city,
        patient("佐藤 花子", "サトウ ハナコ", "1932-03-04"),
        &[&ot],
    )
    .await;
    assert!(
        kinds(&ot_c)
            .await
            .contains(&("INVITATION".into(), invitation_for(&opened, &ot)))
    );

    // The end of service: the other members and the city hear of it.
    let app = t
        .doc_c
        .graphql(
            REQUEST_CLOSURE,
            json!({ "r": t.room, "why": "施設入所のため" }),
        )
        .await;
    let app_id = id_of(&app.ok()["requestRoomClosure"]);
    let closure = ("ROOM_CLOSURE_REQUESTED".to_string(), app_id.clone());
    assert!(kinds(&t.nurse_c).await.contains(&closure));
    assert!(kinds(&t.k.city).await.contains(&closure));
    assert!(!kinds(&t.doc_c).await.contains(&closure));
    // Not twice for the city: the closure request is the application.
    assert!(
        !kinds(&t.k.city)
            .await
            .contains(&("APPLICATION_SUBMITTED".into(), app_id.clone()))
    );

    // Closed: the members; the application (of facility A) changed status: A's admin.
    t.k.city
        .graphql(CLOSE_ROOM, json!({ "r": t.room, "e": "施設入所" }))
        .await
        .ok();
    let closed = ("ROOM_CLOSED".to_string(), t.room.clone());
    assert!(kinds(&t.doc_c).await.contains(&closed));
    assert!(kinds(&t.nurse_c).await.contains(&closed));
    assert!(
        kinds(&fa_c)
            .await
            .contains(&("APPLICATION_STATUS_CHANGED".into(), app_id.clone()))
    );

    // A new application reaches the city admins.
    let (victim, _) = t.k.staff("leaver", t.k.a).await;
    let filed = fa_c
        .graphql(
            SUBMIT_SUSPENSION,
            json!({ "u": [victim.id.to_string()], "r": "退職" }),
        )
        .await;
    let filed = id_of(&filed.ok()["submitSuspension"]);
    assert!(
        kinds(&t.k.city)
            .await
            .contains(&("APPLICATION_SUBMITTED".into(), filed))
    );
}

#[tokio::test]
async fn the_inbox_entry_arrives_on_my_events() {
    let t = Team::new(&[]).await;
    let mut live = ws::live(&t.k.app, &t.doc, &ws::token_of(&t.doc_c)).await;
    ws::subscribe_settled(&mut live, "me", MY_EVENTS, json!({})).await;
    let note = post(&t.nurse_c, &t.room, json!({ "urgent": true })).await;
    // Earlier entries (the invitation) may come first.
    let event = loop {
        let event = ws::next_event(&mut live, "me", "myEvents", "the inbox entry").await;
        if event["type"] == "NOTIFICATION" && event["eventId"] == note["id"] {
            break event;
        }
    };
    assert_eq!(event["kind"], "NOTE_POSTED");
    assert_eq!(event["roomId"], t.room.as_str());
    assert_eq!(event["eventId"], note["id"]);
    assert_eq!(event["urgent"], true);
    let id = str_of(&event["notificationId"]).to_string();
    assert_eq!(str_of(&inbox(&t.doc_c).await[0]["id"]), id);
    // Only ids: nothing of the note's text.
    assert!(!event.to_string().contains("本日訪問"));
    // The IN_APP delivery is done, once.
    let rows = deliveries(&t.k.app, t.doc.id, str_of(&note["id"])).await;
    let in_app: Vec<_> = rows
        .iter()
        .filter(|d| d.channel == Channel::InApp)
        .collect();
    assert_eq!(in_app.len(), 1);
    assert_eq!(in_app[0].state, DeliveryState::Sent);
}

#[tokio::test]
async fn room_levels_mute_or_limit_a_room_and_only_members_set_them() {
    let t = Team::new(&[]).await;
    let set =
        |level: &'static str| json!({ "i": { "rooms": [{ "roomId": t.room, "level": level }] } });
    let resp = t.doc_c.graphql(UPDATE_PREFS, set("MUTED")).await;
    assert_eq!(
        resp.ok()["updateNotificationPreferences"]["rooms"],
        json!([{ "roomId": t.room, "level": "MUTED" }])
    );
    let muted = post(&t.nurse_c, &t.room, json!({ "urgent": true })).await;
    let mention = post(
        &t.nurse_c,
        &t.room,
        json!({ "mentionUserIds": [t.doc.id.to_string()] }),
    )
    .await;
    let seen = kinds(&t.doc_c).await;
    assert!(!seen.iter().any(|(_, e)| e == str_of(&muted["id"])));
    assert!(!seen.iter().any(|(_, e)| e == str_of(&mention["id"])));

    t.doc_c
        .graphql(UPDATE_PREFS, set("MENTIONS_AND_URGENT"))
        .await
        .ok();
    let plain = post(&t.nurse_c, &t.room, json!({})).await;
    let urgent = post(&t.nurse_c, &t.room, json!({ "urgent": true })).await;
    let mention = post(
        &t.nurse_c,
        &t.room,
        json!({ "mentionUserIds": [t.doc.id.to_string()] }),
    )
    .await;
    let seen = kinds(&t.doc_c).await;
    assert!(!seen.iter().any(|(_, e)| e == str_of(&plain["id"])));
    assert!(seen.contains(&("NOTE_POSTED".into(), str_of(&urgent["id"]).into())));
    assert!(seen.contains(&("MENTION".into(), str_of(&mention["id"]).into())));

    // Back to ALL: the row goes, every note notifies again.
    let resp = t.doc_c.graphql(UPDATE_PREFS, set("ALL")).await;
    assert_eq!(
        resp.ok()["updateNotificationPreferences"]["rooms"],
        json!([])
    );
    let plain = post(&t.nurse_c, &t.room, json!({})).await;
    assert!(
        kinds(&t.doc_c)
            .await
            .contains(&("NOTE_POSTED".into(), str_of(&plain["id"]).into()))
    );
}

#[tokio::test]
async fn preferences_default_validate_and_switch_channels_off() {
    let t = Team::new(&[]).await;
    let p = t.doc_c.graphql(PREFS, json!({})).await;
    let p = &p.ok()["notificationPreferences"];
    let all_on = json!({ "inApp": true, "webPush": true, "gateway": true, "email": true });
    assert_eq!(p["channels"], all_on);
    assert_eq!(p["tenantChannels"], all_on);
    assert_eq!(p["quietHoursEnabled"], true);
    assert_eq!(p["quietHoursStart"], "22:00");
    assert_eq!(p["quietHoursEnd"], "07:00");
    assert_eq!(p["timeZone"], "Asia/Tokyo");

    expect_bad_input(
        &t.doc_c
            .graphql(UPDATE_PREFS, json!({ "i": { "quietHoursStart": "25:00" } }))
            .await,
        "quietHoursStart",
        "an hour past 24",
    );
    // The refused update changed nothing.
    let again = t.doc_c.graphql(PREFS, json!({})).await;
    assert_eq!(
        again.ok()["notificationPreferences"]["quietHoursStart"],
        "22:00"
    );

    let resp = t
        .doc_c
        .graphql(
            UPDATE_PREFS,
            json!({ "i": { "inApp": false, "email": false, "quietHoursStart": "21:30", "quietHoursEnabled": false } }),
        )
        .await;
    let p = &resp.ok()["updateNotificationPreferences"];
    assert_eq!(
        p["channels"],
        json!({ "inApp": false, "webPush": true, "gateway": true, "email": false })
    );
    assert_eq!(p["quietHoursStart"], "21:30");
    assert_eq!(p["quietHoursEnd"], "07:00");
    assert_eq!(p["quietHoursEnabled"], false);
    // In-app off: nothing in the inbox, but push still goes (its delivery rows exist).
    let note = post(&t.nurse_c, &t.room, json!({})).await;
    assert!(
        !kinds(&t.doc_c)
            .await
            .iter()
            .any(|(_, e)| e == str_of(&note["id"]))
    );
    let rows = deliveries(&t.k.app, t.doc.id, str_of(&note["id"])).await;
    let channels: Vec<Channel> = rows.iter().map(|d| d.channel).collect();
    assert_eq!(channels, vec![Channel::Gateway, Channel::WebPush]);

    // The tenant turns web push off: the staff sees it, and it is off for everyone.
    expect_code(
        &t.doc_c
            .graphql(
                TENANT_CHANNELS,
                json!({ "i": { "inApp": true, "webPush": false, "gateway": true, "email": true } }),
            )
            .await,
        "FORBIDDEN",
        "staff switching the tenant's channels",
    );
    let resp =
        t.k.city
            .graphql(
                TENANT_CHANNELS,
                json!({ "i": { "inApp": true, "webPush": false, "gateway": true, "email": true } }),
            )
            .await;
    assert_eq!(resp.ok()["setTenantNotificationChannels"]["webPush"], false);
    let p = t.doc_c.graphql(PREFS, json!({})).await;
    assert_eq!(
        p.ok()["notificationPreferences"]["effectiveChannels"],
        json!({ "inApp": false, "webPush": false, "gateway": true, "email": false })
    );
    let note = post(&t.nurse_c, &t.room, json!({})).await;
    let rows = deliveries(&t.k.app, t.doc.id, str_of(&note["id"])).await;
    let channels: Vec<Channel> = rows.iter().map(|d| d.channel).collect();
    assert_eq!(channels, vec![Channel::Gateway]);
}

#[tokio::test]
async fn quiet_hours_hold_push_and_email_until_they_end_and_urgent_breaks_through() {
    let t = Team::new(&[("RENKEI_NOTIFICATION_EMAIL_DIGEST_MINUTES", "0")]).await;
    t.k.app
        .edit_user(t.doc.id, |u| {
            u.email = sea_orm::Set(Some("doc@example.jp".into()));
        })
        .await;
    // Quiet from an hour ago to an hour from now, in the tenant's zone.
    let now = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Tokyo);
    let start = (now - chrono::Duration::hours(1))
        .format("%H:%M")
        .to_string();
    let end_local = now + chrono::Duration::hours(1);
    let end = end_local.format("%H:%M").to_string();
    t.doc_c
        .graphql(
            UPDATE_PREFS,
            json!({ "i": { "quietHoursStart": start, "quietHoursEnd": end } }),
        )
        .await
        .ok();
    let quiet = post(&t.nurse_c, &t.room, json!({})).await;
    let rows = deliveries(&t.k.app, t.doc.id, str_of(&quiet["id"])).await;
    assert_eq!(rows.len(), 4, "{rows:?}");
    for d in &rows {
        if d.channel == Channel::InApp {
            assert!(d.due_at <= chrono::Utc::now(), "the inbox is not held");
        } else {
            let held_until = d.due_at.with_timezone(&chrono_tz::Asia::Tokyo);
            assert_eq!(
                held_until.format("%H:%M").to_string(),
                end,
                "{:?} is held until the end of quiet hours",
                d.channel
            );
            assert!(d.due_at > chrono::Utc::now() + chrono::Duration::minutes(50));
            assert_eq!(d.state, DeliveryState::Pending);
        }
    }
    let urgent = post(&t.nurse_c, &t.room, json!({ "urgent": true })).await;
    // Urgent: due at once (the worker may already have tried it, which moves `due_at`).
    for d in deliveries(&t.k.app, t.doc.id, str_of(&urgent["id"])).await {
        assert!(
            d.attempts >= 1 || d.due_at <= chrono::Utc::now(),
            "urgent {:?} is not held: {d:?}",
            d.channel
        );
        assert!(d.due_at < chrono::Utc::now() + chrono::Duration::minutes(50));
    }
    // The held ones were never tried.
    for d in deliveries(&t.k.app, t.doc.id, str_of(&quiet["id"])).await {
        if d.channel != Channel::InApp {
            assert_eq!(d.attempts, 0, "{d:?}");
        }
    }
}

#[tokio::test]
async fn certificate_expiry_is_told_once_at_30_days_and_again_at_7() {
    use sea_orm::{ActiveModelTrait as _, IntoActiveModel as _, Set};
    let t = Team::new(&[]).await;
    let set_end = |days: i64| {
        let app = &t.k.app;
        let id = t.doc.certificate_id;
        async move {
            let cert = entity::certificate::Entity::find_by_id(id)
                .one(&app.db)
                .await
                .unwrap()
                .unwrap();
            let mut active = cert.into_active_model();
            active.not_after = Set(chrono::Utc::now() + chrono::Duration::days(days));
            active.update(&app.db).await.unwrap();
        }
    };
    let sweep = || async {
        renkei::notify::sweep::certificates(&t.k.app.state().db, &t.k.app.state().config)
            .await
            .unwrap()
    };
    let cert = t.doc.certificate_id.to_string();
    let count = |kind: &'static str| {
        let c = &t.doc_c;
        let cert = cert.clone();
        async move {
            kinds(c)
                .await
                .iter()
                .filter(|(k, e)| k == kind && *e == cert)
                .count()
        }
    };
    set_end(40).await;
    sweep().await;
    assert_eq!(count("CERTIFICATE_EXPIRING_30").await, 0);
    set_end(20).await;
    sweep().await;
    sweep().await;
    assert_eq!(count("CERTIFICATE_EXPIRING_30").await, 1);
    assert_eq!(count("CERTIFICATE_EXPIRING_7").await, 0);
    set_end(5).await;
    // Two instances sweeping at once write it once.
    let (a, b) = tokio::join!(sweep(), sweep());
    assert_eq!(a + b, 1);
    assert_eq!(count("CERTIFICATE_EXPIRING_30").await, 1);
    assert_eq!(count("CERTIFICATE_EXPIRING_7").await, 1);
}

#[tokio::test]
async fn a_login_with_a_certificate_never_used_before_tells_its_owner_once() {
    let t = Team::new(&[]).await;
    // Logged in before (the set-up) with this certificate: again, nothing.
    t.k.app.login(&t.doc).await;
    assert!(
        !kinds(&t.doc_c)
            .await
            .iter()
            .any(|(k, _)| k == "NEW_CERTIFICATE_LOGIN")
    );
    let issued =
        t.k.city
            .graphql(
                ISSUE,
                json!({ "u": t.doc.id.to_string(), "d": "new tablet" }),
            )
            .await;
    let issued = &issued.ok()["issueCertificate"];
    let bundle = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(str_of(&issued["pkcs12Base64"]))
            .unwrap()
    };
    let mut tablet = t.doc.clone();
    tablet.identity_pem = identity_from_pkcs12(&bundle, str_of(&issued["pkcs12Password"]));
    let cert_id = str_of(&issued["certificate"]["id"]).to_string();
    let tablet_c = t.k.app.login(&tablet).await;
    t.k.app.login(&tablet).await;
    let told: Vec<(String, String)> = kinds(&tablet_c)
        .await
        .into_iter()
        .filter(|(k, _)| k == "NEW_CERTIFICATE_LOGIN")
        .collect();
    assert_eq!(told, vec![("NEW_CERTIFICATE_LOGIN".to_string(), cert_id)]);
}

#[tokio::test]
async fn removal_from_the_room_stops_deliveries_already_written() {
    let t = Team::new(&[("RENKEI_NOTIFICATION_EMAIL_DIGEST_MINUTES", "0")]).await;
    // Quiet hours hold the nurse's push rows, so they are still waiting when she is removed.
    let now = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Tokyo);
    let start = (now - chrono::Duration::hours(1))
        .format("%H:%M")
        .to_string();
    let end = (now + chrono::Duration::hours(1))
        .format("%H:%M")
        .to_string();
    t.nurse_c
        .graphql(
            UPDATE_PREFS,
            json!({ "i": { "quietHoursStart": start, "quietHoursEnd": end } }),
        )
        .await
        .ok();
    let note = post(&t.doc_c, &t.room, json!({})).await;
    t.k.city
        .graphql(
            crate::rooms::REMOVE_MEMBER,
            json!({ "r": t.room, "u": t.nurse.id.to_string(), "why": "担当終了" }),
        )
        .await
        .ok();
    // Make them due now, as if quiet hours had ended.
    use sea_orm::sea_query::Expr;
    let ids: Vec<Uuid> = deliveries(&t.k.app, t.nurse.id, str_of(&note["id"]))
        .await
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids.len(), 3, "in-app, web push, gateway");
    entity::notification_delivery::Entity::update_many()
        .col_expr(
            entity::notification_delivery::Column::DueAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .filter(entity::notification_delivery::Column::Id.is_in(ids.clone()))
        .exec(&t.k.app.db)
        .await
        .unwrap();
    t.k.app.state().notify.wake();
    let app = &t.k.app;
    let nurse = t.nurse.id;
    let note_id = str_of(&note["id"]).to_string();
    eventually("the removed member's deliveries are skipped", || {
        let note_id = note_id.clone();
        async move {
            deliveries(app, nurse, &note_id)
                .await
                .iter()
                .filter(|d| d.channel != Channel::InApp)
                .all(|d| d.state == DeliveryState::Skipped)
        }
    })
    .await;
    for d in deliveries(app, nurse, &note_id).await {
        if d.channel != Channel::InApp {
            assert_eq!(d.attempts, 1, "checked at send time, not sent: {d:?}");
        }
    }
}
