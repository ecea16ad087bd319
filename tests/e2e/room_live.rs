//! Issue 7, live updates: graphql-transport-ws at `/graphql/ws` over TLS with the client
//! certificate the session is bound to, authenticated by `connection_init`. Origins are checked
//! at the upgrade; `roomEvents` streams a room's notes, edits, vitals, membership and status to
//! its members and ends within a second when the member leaves or logs out; `myEvents` brings
//! mentions and invitations; on PostgreSQL with Redis, events cross server instances.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

use renkei_tests::ws::{
    Frame, WAIT, Ws, connect, expect_json, live, next_event, recv, send, subscribe,
    subscribe_settled, token_of,
};
use renkei_tests::{Backend, Person, TestClient, TestOptions, spawn_app_with};

use crate::rooms::{
    ACCEPT, CLOSE_ROOM, INVITE, Kita, REMOVE_MEMBER, id_of, invitation_for, open_room, patient,
    room_with, str_of, yamada,
};

const ROOM_EVENTS: &str = "subscription($r:ID!){ roomEvents(roomId:$r){ __typename ... on NotePosted { note { id body author { id } } } ... on NoteChanged { note { id body deletedAt } } ... on VitalsRecorded { record { id } } ... on MembershipChanged { roomId user { id } joined } ... on RoomStatusChanged { room { id status } } } }";
const MY_EVENTS: &str = "subscription { myEvents }";
const POST_NOTE: &str = "mutation($i:PostNoteInput!){ postNote(input:$i){ id body } }";
const EDIT_NOTE: &str = "mutation($id:ID!,$b:String!){ editNote(id:$id, body:$b){ id body } }";
const DELETE_NOTE: &str =
    "mutation($id:ID!,$r:String!){ deleteNote(id:$id, reason:$r){ id deletedAt } }";
const RECORD_VITALS: &str = "mutation($i:VitalInput!){ recordVitals(input:$i){ id } }";

// The graphql-transport-ws client (`connect`, `live`, `subscribe`, `recv`, ...) is
// `renkei_tests::ws`, shared with the room content benchmark.

async fn post_note(client: &TestClient, room: &str, body: &str) -> Value {
    let resp = client
        .graphql(POST_NOTE, json!({ "i": { "roomId": room, "body": body } }))
        .await;
    resp.ok()["postNote"].clone()
}

/// A room of Kita whose members are a doctor and a nurse (each with a session).
struct LiveRoom {
    k: Kita,
    doc: Person,
    doc_c: TestClient,
    nurse: Person,
    nurse_c: TestClient,
    room: String,
}

impl LiveRoom {
    async fn new() -> LiveRoom {
        let k = Kita::new().await;
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
        LiveRoom {
            k,
            doc,
            doc_c,
            nurse,
            nurse_c,
            room,
        }
    }
}

/// Reads until `complete` for `id` comes; returns how long that took from `since`. Other
/// messages for `id` before it must not be notes posted after the leaving.
async fn until_complete(ws: &mut Ws, id: &str, since: Instant, what: &str) -> Duration {
    loop {
        match recv(ws, WAIT).await {
            Some(Frame::Json(msg)) if msg["type"] == "complete" && msg["id"] == id => {
                return since.elapsed();
            }
            Some(Frame::Json(msg)) if msg["type"] == "next" && msg["id"] == id => {
                let typename = &msg["payload"]["data"]["roomEvents"]["__typename"];
                assert!(
                    *typename == "MembershipChanged",
                    "{what}: only the leaving itself may come before `complete`: {msg}"
                );
            }
            other => panic!("{what}: expected `complete` for {id}, got {other:?}"),
        }
    }
}

/// Nothing more for subscription `id` within `quiet`.
async fn assert_silent(ws: &mut Ws, id: &str, quiet: Duration, what: &str) {
    let deadline = Instant::now() + quiet;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match recv(ws, left).await {
            None => return,
            Some(Frame::Closed(_)) => return,
            Some(Frame::Json(msg)) => {
                assert!(msg["id"] != id, "{what}: a message after `complete`: {msg}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// connecting
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connection_init_needs_a_valid_token_over_the_bound_certificate() {
    let k = Kita::new().await;
    let (doc, doc_c) = k.staff("doc", k.a).await;
    let token = token_of(&doc_c);

    // The right token over the right certificate: acknowledged, and a subscription of the
    // caller's own events runs (an unauthenticated one would fail at once).
    let mut ws = live(&k.app, &doc, &token).await;
    subscribe(&mut ws, "mine", MY_EVENTS, json!({})).await;
    let early = recv(&mut ws, Duration::from_millis(700)).await;
    assert!(early.is_none(), "myEvents of a signed-in caller: {early:?}");

    // Bad tokens: the socket closes with 4403 instead of an ack.
    let stranger = k.user("stranger", entity::kinds::Role::Staff, k.b).await;
    let mut outcomes = Vec::new();
    for (what, who, init) in [
        (
            "a made-up token",
            Some(&doc),
            json!({ "authorization": "Bearer not-a-session" }),
        ),
        (
            "the token without a certificate",
            None,
            json!({ "authorization": format!("Bearer {token}") }),
        ),
        (
            "the token over another user's certificate",
            Some(&stranger),
            json!({ "authorization": format!("Bearer {token}") }),
        ),
    ] {
        let mut ws = connect(&k.app, who, None).await.unwrap();
        send(
            &mut ws,
            json!({ "type": "connection_init", "payload": init }),
        )
        .await;
        let got = recv(&mut ws, WAIT).await;
        let closed_4403 = matches!(got, Some(Frame::Closed(Some(4403))));
        outcomes.push((what, closed_4403, format!("{got:?}")));
    }
    assert!(
        outcomes.iter().all(|(_, ok, _)| *ok),
        "each should close with 4403: {outcomes:#?}"
    );
}

#[tokio::test]
async fn upgrades_from_foreign_origins_are_refused_with_403() {
    let k = Kita::with_env(&[(
        "RENKEI_ALLOWED_ORIGINS",
        "https://app.renkei.example, https://portal.kita.example",
    )])
    .await;
    let (doc, doc_c) = k.staff("doc", k.a).await;
    let token = token_of(&doc_c);
    let own = format!("https://127.0.0.1:{}", k.app.addr.port());

    // The request's own Host proves nothing (a rebinding page names its own): only
    // `allowed_origins` count.
    for origin in [
        own.as_str(),
        "https://evil.example",
        "http://127.0.0.1",
        "https://app.renkei.example.evil.example",
        "null",
    ] {
        match connect(&k.app, Some(&doc), Some(origin)).await {
            Err(tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 403, "Origin {origin}")
            }
            Err(e) => panic!("Origin {origin}: expected HTTP 403, got {e}"),
            Ok(_) => panic!("Origin {origin}: the upgrade was accepted"),
        }
    }
    for origin in [
        Some("https://app.renkei.example"),
        Some("https://portal.kita.example"),
        None,
    ] {
        let mut ws = connect(&k.app, Some(&doc), origin)
            .await
            .unwrap_or_else(|e| panic!("Origin {origin:?}: refused: {e}"));
        send(
            &mut ws,
            json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }),
        )
        .await;
        let ack = expect_json(&mut ws, &format!("Origin {origin:?}")).await;
        assert_eq!(ack["type"], "connection_ack", "Origin {origin:?}: {ack}");
    }
}

// ---------------------------------------------------------------------------------------------
// roomEvents
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn members_receive_notes_edits_vitals_membership_and_status_changes() {
    let r = LiveRoom::new().await;
    let room = r.room.as_str();
    let (pharm, pharm_c) = r.k.staff("pharm", r.k.a).await;
    let invited =
        r.k.city
            .graphql(INVITE, json!({ "r": room, "u": [pharm.id.to_string()] }))
            .await;
    let invitation = id_of(&invited.ok()["inviteToRoom"][0]);
    // A room next door, whose events must not show up.
    let next_door = id_of(
        &room_with(
            &r.k.city,
            patient("佐藤 花子", "サトウ ハナコ", "1932-03-04"),
            &[(&r.nurse, &r.nurse_c)],
            &[],
        )
        .await,
    );

    let mut ws = live(&r.k.app, &r.doc, &token_of(&r.doc_c)).await;
    subscribe_settled(&mut ws, "1", ROOM_EVENTS, json!({ "r": room })).await;

    post_note(&r.nurse_c, &next_door, "隣の部屋").await;
    let note = post_note(&r.nurse_c, room, "本日訪問します").await;
    let event = next_event(&mut ws, "1", "roomEvents", "a note posted").await;
    assert_eq!(event["__typename"], "NotePosted", "{event}");
    assert_eq!(
        event["note"]["id"], note["id"],
        "only this room's notes: {event}"
    );
    assert_eq!(event["note"]["body"], "本日訪問します");
    assert_eq!(event["note"]["author"]["id"], r.nurse.id.to_string());

    // The subscriber's own note too.
    let own = post_note(&r.doc_c, room, "了解です").await;
    let event = next_event(&mut ws, "1", "roomEvents", "own note").await;
    assert_eq!(event["__typename"], "NotePosted");
    assert_eq!(event["note"]["id"], own["id"]);

    r.nurse_c
        .graphql(
            EDIT_NOTE,
            json!({ "id": note["id"], "b": "本日午後に訪問します" }),
        )
        .await
        .ok();
    let event = next_event(&mut ws, "1", "roomEvents", "an edit").await;
    assert_eq!(event["__typename"], "NoteChanged", "{event}");
    assert_eq!(event["note"]["id"], note["id"]);
    assert_eq!(event["note"]["body"], "本日午後に訪問します");
    assert!(event["note"]["deletedAt"].is_null());

    r.nurse_c
        .graphql(DELETE_NOTE, json!({ "id": note["id"], "r": "予定変更" }))
        .await
        .ok();
    let event = next_event(&mut ws, "1", "roomEvents", "a deletion").await;
    assert_eq!(event["__typename"], "NoteChanged", "{event}");
    assert_eq!(event["note"]["id"], note["id"]);
    assert_eq!(event["note"]["body"], "");
    assert!(event["note"]["deletedAt"].is_string(), "{event}");

    let measured = chrono::Utc::now().to_rfc3339();
    let record = r
        .nurse_c
        .graphql(
            RECORD_VITALS,
            json!({ "i": { "roomId": room, "measuredAt": measured, "pulsePerMin": 78 } }),
        )
        .await;
    let record = record.ok()["recordVitals"].clone();
    let event = next_event(&mut ws, "1", "roomEvents", "vitals").await;
    assert_eq!(event["__typename"], "VitalsRecorded", "{event}");
    assert_eq!(event["record"]["id"], record["id"]);

    pharm_c
        .graphql(ACCEPT, json!({ "id": invitation }))
        .await
        .ok();
    let event = next_event(&mut ws, "1", "roomEvents", "a member joining").await;
    assert_eq!(event["__typename"], "MembershipChanged", "{event}");
    assert_eq!(event["roomId"], room);
    assert_eq!(event["user"]["id"], pharm.id.to_string());
    assert_eq!(event["joined"], true);

    r.k.city
        .graphql(
            REMOVE_MEMBER,
            json!({ "r": room, "u": pharm.id.to_string(), "why": "担当交代" }),
        )
        .await
        .ok();
    let event = next_event(&mut ws, "1", "roomEvents", "a member removed").await;
    assert_eq!(event["__typename"], "MembershipChanged", "{event}");
    assert_eq!(event["user"]["id"], pharm.id.to_string());
    assert_eq!(event["joined"], false);

    r.k.city
        .graphql(CLOSE_ROOM, json!({ "r": room, "e": "ご逝去" }))
        .await
        .ok();
    let event = next_event(&mut ws, "1", "roomEvents", "the room closing").await;
    assert_eq!(event["__typename"], "RoomStatusChanged", "{event}");
    assert_eq!(event["room"]["id"], room);
    assert_eq!(event["room"]["status"], "CLOSED");
}

#[tokio::test]
async fn a_non_member_subscribing_gets_forbidden() {
    let k = Kita::new().await;
    let (invitee, invitee_c) = k.staff("invitee", k.a).await;
    let (outsider, outsider_c) = k.staff("outsider", k.b).await;
    let room = id_of(&open_room(&k.city, yamada(), &[&invitee]).await);
    for (what, who, client) in [
        ("a same-tenant outsider", &outsider, &outsider_c),
        ("an invitee who has not accepted", &invitee, &invitee_c),
        ("the CITY_ADMIN", &k.admin, &k.city),
    ] {
        let mut ws = live(&k.app, who, &token_of(client)).await;
        subscribe(&mut ws, "1", ROOM_EVENTS, json!({ "r": room })).await;
        expect_refused(&mut ws, "1", "FORBIDDEN", what).await;
    }
}

/// A subscription refused by its resolver, as the graphql-transport-ws reference server
/// (graphql-ws) answers it: one `next` whose payload carries the error and no data, then
/// `complete`. (`error` messages are for documents that fail validation.)
async fn expect_refused(ws: &mut Ws, id: &str, code: &str, what: &str) {
    let msg = expect_json(ws, what).await;
    assert_eq!(msg["type"], "next", "{what}: {msg}");
    assert_eq!(msg["id"], id, "{what}: {msg}");
    assert!(msg["payload"]["data"].is_null(), "{what}: {msg}");
    assert_eq!(
        msg["payload"]["errors"][0]["extensions"]["code"], code,
        "{what}: {msg}"
    );
    let msg = expect_json(ws, what).await;
    assert_eq!(msg["type"], "complete", "{what}: {msg}");
    assert_eq!(msg["id"], id, "{what}: {msg}");
}

#[tokio::test]
async fn a_member_removed_mid_subscription_gets_complete_within_a_second() {
    let r = LiveRoom::new().await;
    let room = r.room.as_str();
    let mut ws = live(&r.k.app, &r.doc, &token_of(&r.doc_c)).await;
    subscribe_settled(&mut ws, "1", ROOM_EVENTS, json!({ "r": room })).await;
    let hello = post_note(&r.nurse_c, room, "こんにちは").await;
    let event = next_event(&mut ws, "1", "roomEvents", "before the removal").await;
    assert_eq!(event["note"]["id"], hello["id"], "{event}");

    let removing = Instant::now();
    r.k.city
        .graphql(
            REMOVE_MEMBER,
            json!({ "r": room, "u": r.doc.id.to_string(), "why": "担当交代" }),
        )
        .await
        .ok();
    let took = until_complete(&mut ws, "1", removing, "the removed member").await;
    assert!(
        took <= Duration::from_millis(1500),
        "`complete` came {took:?} after the removal"
    );
    post_note(&r.nurse_c, room, "退室後の投稿").await;
    assert_silent(
        &mut ws,
        "1",
        Duration::from_millis(700),
        "the removed member",
    )
    .await;

    // Subscribing again is refused.
    subscribe(&mut ws, "2", ROOM_EVENTS, json!({ "r": room })).await;
    expect_refused(&mut ws, "2", "FORBIDDEN", "subscribing again").await;
}

#[tokio::test]
async fn logging_out_completes_the_subscription_within_a_second() {
    let r = LiveRoom::new().await;
    let room = r.room.as_str();
    let mut ws = live(&r.k.app, &r.doc, &token_of(&r.doc_c)).await;
    subscribe_settled(&mut ws, "1", ROOM_EVENTS, json!({ "r": room })).await;
    let hello = post_note(&r.nurse_c, room, "こんにちは").await;
    let event = next_event(&mut ws, "1", "roomEvents", "before the logout").await;
    assert_eq!(event["note"]["id"], hello["id"], "{event}");

    let leaving = Instant::now();
    let out = r.doc_c.graphql("mutation { logout }", json!({})).await;
    assert_eq!(out.ok()["logout"], true);
    let took = until_complete(&mut ws, "1", leaving, "after logout").await;
    assert!(
        took <= Duration::from_millis(1500),
        "`complete` came {took:?} after the logout"
    );
    post_note(&r.nurse_c, room, "ログアウト後の投稿").await;
    assert_silent(&mut ws, "1", Duration::from_millis(700), "after logout").await;
}

// ---------------------------------------------------------------------------------------------
// myEvents
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn my_events_bring_mentions_and_invitations() {
    let r = LiveRoom::new().await;
    let room = r.room.as_str();
    // Inbox entries (issue 20) come on myEvents too; this test is about the others.
    r.nurse_c
        .graphql(
            "mutation { updateNotificationPreferences(input: { inApp: false }) { channels { inApp } } }",
            json!({}),
        )
        .await
        .ok();
    let mut ws = live(&r.k.app, &r.nurse, &token_of(&r.nurse_c)).await;
    subscribe_settled(&mut ws, "me", MY_EVENTS, json!({})).await;

    // A note without a mention brings nothing; one with a mention does.
    post_note(&r.doc_c, room, "全体連絡").await;
    let mention = r
        .doc_c
        .graphql(
            POST_NOTE,
            json!({ "i": { "roomId": room, "body": "看護師さん確認お願いします", "mentionUserIds": [r.nurse.id.to_string()] } }),
        )
        .await;
    let mention = mention.ok()["postNote"].clone();
    // The set-up's own invitation to `room` may still be on its way (events are published after
    // their transaction, through Redis on PostgreSQL): it is skipped, matched by content.
    let setup = |e: &Value| e["type"] == "INVITATION" && e["roomId"] == room;
    let event = next_event_skipping(&mut ws, "me", "myEvents", "a mention", setup).await;
    assert_eq!(event["type"], "MENTION", "{event}");
    assert_eq!(event["noteId"], mention["id"], "{event}");
    assert_eq!(event["roomId"], room, "{event}");

    // The doctor mentioning someone else is nothing for the nurse.
    r.doc_c
        .graphql(
            POST_NOTE,
            json!({ "i": { "roomId": room, "body": "自分宛て", "mentionUserIds": [r.doc.id.to_string()] } }),
        )
        .await
        .ok();
    let other = open_room(
        &r.k.city,
        patient("佐藤 花子", "サトウ ハナコ", "1932-03-04"),
        &[&r.nurse],
    )
    .await;
    let event = next_event_skipping(&mut ws, "me", "myEvents", "an invitation", setup).await;
    assert_eq!(event["type"], "INVITATION", "{event}");
    assert_eq!(event["invitationId"], invitation_for(&other, &r.nurse));
    assert_eq!(event["roomId"], other["id"]);
    assert_eq!(event["patientLabel"], "佐藤 花. (1932)");
    let quiet_until = Instant::now() + Duration::from_millis(500);
    while let Some(frame) = recv(
        &mut ws,
        quiet_until.saturating_duration_since(Instant::now()),
    )
    .await
    {
        match frame {
            Frame::Json(msg) if setup(&msg["payload"]["data"]["myEvents"]) => {}
            other => panic!("nothing else for the nurse, got {other:?}"),
        }
    }
}

/// Like `next_event`, but passes over events `skip` recognises (a set-up's late events).
async fn next_event_skipping(
    ws: &mut Ws,
    id: &str,
    field: &str,
    what: &str,
    skip: impl Fn(&Value) -> bool,
) -> Value {
    loop {
        let event = next_event(ws, id, field, what).await;
        if !skip(&event) {
            return event;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// two instances
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_subscriber_on_one_instance_receives_a_note_posted_on_the_other() {
    if renkei_tests::backend() != Backend::Postgres {
        // Two processes share events through Redis, which the suite only runs with PostgreSQL.
        return;
    }
    let a = spawn_app_with(TestOptions {
        redis: Some(true),
        ..Default::default()
    })
    .await;
    let b = spawn_app_with(TestOptions {
        redis: Some(true),
        share_with: Some(a.shared_backends()),
        ..Default::default()
    })
    .await;
    let admin = a.create_tenant("kita").await;
    let started = Instant::now();
    while b.client_for(&admin).get("/healthz").await.status() != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "B never trusted the new tenant's CA"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let facility = a.create_facility(admin.tenant_id, "Kita Clinic").await;
    let doc = a
        .create_user(&admin, "doc", entity::kinds::Role::Staff, Some(facility))
        .await;
    let nurse = a
        .create_user(&admin, "nurse", entity::kinds::Role::Staff, Some(facility))
        .await;
    let city = a.ready_session(&admin).await;
    let doc_b = b.ready_session(&doc).await;
    let nurse_a = a.ready_session(&nurse).await;
    let room = id_of(&room_with(&city, yamada(), &[(&doc, &doc_b), (&nurse, &nurse_a)], &[]).await);

    let mut ws = live(&b, &doc, &token_of(&doc_b)).await;
    subscribe_settled(&mut ws, "1", ROOM_EVENTS, json!({ "r": room })).await;
    let note = post_note(&nurse_a, &room, "Aから投稿").await;
    let event = next_event(&mut ws, "1", "roomEvents", "a note posted on A").await;
    assert_eq!(event["__typename"], "NotePosted", "{event}");
    assert_eq!(event["note"]["id"], note["id"]);
    assert_eq!(str_of(&event["note"]["body"]), "Aから投稿");
}

// ---------------------------------------------------------------------------------------------
// audit of live deliveries
// ---------------------------------------------------------------------------------------------

/// The live-delivery read events of `actor` with `action` (detail `live: true`), oldest first.
async fn live_reads(app: &renkei_tests::TestApp, actor: &Person, action: &str) -> Vec<Value> {
    use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _};
    // What the live stream gathered, then the read events queued behind it.
    app.state().live_audit.flush(&app.state().audit).await;
    app.state().audit.flush().await;
    entity::audit_event::Entity::find()
        .filter(entity::audit_event::Column::ActorId.eq(actor.id))
        .filter(entity::audit_event::Column::Action.eq(action))
        .order_by_asc(entity::audit_event::Column::Seq)
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| {
            let detail: Value = serde_json::from_str(&e.detail).unwrap();
            (detail["live"] == true).then(|| {
                json!({
                    "room": e.room_id.map(|r| r.to_string()),
                    "outcome": format!("{:?}", e.outcome),
                    "session": e.session_hash.is_some(),
                    "detail": detail,
                })
            })
        })
        .collect()
}

/// Every id the events list, with the `count` each event states checked against its list.
fn ids_in(events: &[Value]) -> Vec<String> {
    let mut ids = Vec::new();
    for event in events {
        let listed: Vec<String> = event["detail"]["ids"]
            .as_array()
            .unwrap_or_else(|| panic!("ids listed: {event}"))
            .iter()
            .map(|v| str_of(v).to_string())
            .collect();
        assert_eq!(
            event["detail"]["count"],
            listed.len(),
            "count matches the ids: {event}"
        );
        ids.extend(listed);
    }
    ids.sort();
    ids
}

#[tokio::test]
async fn live_deliveries_are_audited_as_reads_of_the_subscriber_gathered_per_stream() {
    let r = LiveRoom::new().await;
    let room = r.room.as_str();
    let mut ws = live(&r.k.app, &r.doc, &token_of(&r.doc_c)).await;
    subscribe_settled(&mut ws, "1", ROOM_EVENTS, json!({ "r": room })).await;

    let mut posted = Vec::new();
    for i in 0..5 {
        let note = post_note(&r.nurse_c, room, &format!("訪問記録 {i}")).await;
        posted.push(str_of(&note["id"]).to_string());
    }
    let mut delivered = Vec::new();
    for _ in 0..5 {
        let event = next_event(&mut ws, "1", "roomEvents", "a note posted").await;
        delivered.push(str_of(&event["note"]["id"]).to_string());
    }
    assert_eq!(delivered, posted, "every note delivered, in order");
    let measured = chrono::Utc::now().to_rfc3339();
    let record = r
        .nurse_c
        .graphql(
            RECORD_VITALS,
            json!({ "i": { "roomId": room, "measuredAt": measured, "pulsePerMin": 72 } }),
        )
        .await;
    let record = str_of(&record.ok()["recordVitals"]["id"]).to_string();
    let event = next_event(&mut ws, "1", "roomEvents", "vitals").await;
    assert_eq!(str_of(&event["record"]["id"]), record);

    let notes = live_reads(&r.k.app, &r.doc, "notes.read").await;
    assert!(!notes.is_empty(), "live deliveries are audited");
    for event in &notes {
        assert_eq!(event["room"], room, "{event}");
        assert_eq!(event["outcome"], "Allowed", "{event}");
        assert_eq!(event["session"], true, "the subscriber's session: {event}");
    }
    posted.sort();
    assert_eq!(
        ids_in(&notes),
        posted,
        "each delivered note audited exactly once"
    );
    let vitals = live_reads(&r.k.app, &r.doc, "vitals.read").await;
    assert_eq!(ids_in(&vitals), vec![record], "the vital record too");
    // The poster saw nothing live, so nothing live is recorded for them.
    assert!(
        live_reads(&r.k.app, &r.nurse, "notes.read")
            .await
            .is_empty(),
        "no live reads for someone not subscribed"
    );
}
