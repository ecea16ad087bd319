//! Issue 7, end to end: what members put into a patient room. Notes (validation, idempotent
//! retries, edits with revisions, soft deletion, paging with cursors, 既読), attachments
//! (sniffed types, limits, downloads), vitals (ranges, order, time window), the patient record
//! and care information (versions, optimistic locking), the FHIR export, who may do any of it,
//! what a CLOSED room still allows, the audit trail, and 50 clients posting at once.
//!
//! The exact behaviour is pinned in the issue's spec; live updates are in `room_live`. Runs on
//! both databases (`RENKEI_TEST_DB=sqlite|postgres`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound as _, Utc};
use sea_orm::{ConnectionTrait as _, DbBackend, Statement};
use serde_json::{Value, json};
use uuid::Uuid;

use entity::kinds::Role;
use renkei_tests::{Gql, Person, TestApp, TestClient, UploadFile};

use crate::rooms::{
    CLOSE_ROOM, INVITE, Kita, REQUEST_CLOSURE, WITHDRAW_CONSENT, expect_bad_input, expect_code,
    id_of, parse_time, patient, room_events, room_with, str_of, yamada,
};

// ---------------------------------------------------------------------------------------------
// queries
// ---------------------------------------------------------------------------------------------

macro_rules! note_fields {
    () => {
        "id category body createdAt editedAt deletedAt deletionReason author { id } room { id } replyTo { id body } mentions { id } attachments { id fileName contentType sizeBytes sha256 url } revisions { body editedAt } readBy { user { id } readAt }"
    };
}

macro_rules! vital_fields {
    () => {
        "id measuredAt recordedBy { id } systolicMmHg diastolicMmHg pulsePerMin temperatureCelsius spo2Percent respiratoryRatePerMin weightKg bloodGlucoseMgDl note"
    };
}

const POST_NOTE: &str = concat!(
    "mutation($i:PostNoteInput!){ postNote(input:$i){ ",
    note_fields!(),
    " } }"
);
const EDIT_NOTE: &str = concat!(
    "mutation($id:ID!,$b:String!){ editNote(id:$id, body:$b){ ",
    note_fields!(),
    " } }"
);
const DELETE_NOTE: &str = concat!(
    "mutation($id:ID!,$r:String!){ deleteNote(id:$id, reason:$r){ ",
    note_fields!(),
    " } }"
);
/// Every note of a room with all its fields (the first 100).
const NOTES_FULL: &str = concat!(
    "query($id:ID!){ room(id:$id){ id notes(first: 100){ totalCount edges { node { ",
    note_fields!(),
    " } } } } }"
);
/// A page of notes, light.
const NOTES_PAGE: &str = "query($id:ID!,$f:Int,$a:String,$l:Int,$b:String,$c:NoteCategory){ room(id:$id){ id notes(first:$f, after:$a, last:$l, before:$b, category:$c){ totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { cursor node { id body category } } } } }";
const MARK_READ: &str = "mutation($r:ID!,$n:ID!){ markRead(roomId:$r, upToNoteId:$n) }";
const UNREAD: &str = "query($id:ID!){ room(id:$id){ id unreadCount } }";
const UPLOAD: &str = "mutation($r:ID!,$file:Upload!){ uploadAttachment(roomId:$r, file:$file){ id fileName contentType sizeBytes sha256 url } }";
const RECORD_VITALS: &str = concat!(
    "mutation($i:VitalInput!){ recordVitals(input:$i){ ",
    vital_fields!(),
    " } }"
);
const VITALS: &str = concat!(
    "query($id:ID!,$from:DateTime,$to:DateTime,$f:Int,$a:String){ room(id:$id){ id vitals(from:$from, to:$to, first:$f, after:$a){ totalCount pageInfo { hasNextPage endCursor } edges { cursor node { ",
    vital_fields!(),
    " } } } } }"
);
const UPDATE_PATIENT: &str = "mutation($r:ID!,$p:PatientInput!){ updatePatient(roomId:$r, patient:$p){ name nameKana birthDate sex address phone careLevel keyPerson primaryPhysician careManager notes } }";
const ROOM_PATIENT_LABEL: &str = "query($id:ID!){ room(id:$id){ id patientLabel patient { name nameKana birthDate careLevel } } }";
const UPDATE_CARE: &str = "mutation($r:ID!,$k:CareInfoKind!,$c:String!,$v:Int){ updateCareInfo(roomId:$r, kind:$k, content:$c, expectedVersion:$v){ kind content version updatedAt updatedBy { id } } }";
const CARE_INFO: &str = "query($id:ID!){ room(id:$id){ id careInfo { kind content version updatedAt updatedBy { id } } } }";
const ACCESS_REPORT_FULL: &str =
    "query($r:ID!){ roomAccessReport(roomId:$r){ id action roomId outcome actor { id } } }";

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// Kita with a room whose members are a doctor of the clinic and a nurse of the care facility.
struct Ward {
    k: Kita,
    doc: Person,
    doc_c: TestClient,
    nurse: Person,
    nurse_c: TestClient,
    room: String,
}

impl Ward {
    async fn new() -> Ward {
        Ward::with_env(&[]).await
    }

    async fn with_env(pairs: &[(&str, &str)]) -> Ward {
        let k = Kita::with_env(pairs).await;
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
        Ward {
            k,
            doc,
            doc_c,
            nurse,
            nurse_c,
            room,
        }
    }

    /// Another room with `members` (who accept) and the patient 佐藤 花子.
    async fn second_room(&self, members: &[(&Person, &TestClient)]) -> String {
        id_of(
            &room_with(
                &self.k.city,
                patient("佐藤 花子", "サトウ ハナコ", "1932-03-04"),
                members,
                &[],
            )
            .await,
        )
    }
}

fn note_input(room: &str, body: &str) -> Value {
    json!({ "roomId": room, "body": body })
}

async fn post(client: &TestClient, input: Value) -> Gql {
    client.graphql(POST_NOTE, json!({ "i": input })).await
}

/// Posts `body` and returns the note.
async fn post_ok(client: &TestClient, room: &str, body: &str) -> Value {
    let resp = post(client, note_input(room, body)).await;
    resp.ok()["postNote"].clone()
}

fn id_set(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(id_of)
        .collect()
}

/// One note of the room as `client` reads it (from the first 100).
async fn read_note(client: &TestClient, room: &str, note: &str) -> Value {
    let resp = client.graphql(NOTES_FULL, json!({ "id": room })).await;
    resp.ok()["room"]["notes"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .find(|n| n["id"] == note)
        .unwrap_or_else(|| panic!("note {note} not listed: {}", resp.body))
}

async fn notes_total(client: &TestClient, room: &str) -> i64 {
    let resp = client
        .graphql(NOTES_PAGE, json!({ "id": room, "f": 1 }))
        .await;
    resp.ok()["room"]["notes"]["totalCount"]
        .as_i64()
        .unwrap_or_else(|| panic!("no totalCount: {}", resp.body))
}

/// A statement with `$1, $2 …` placeholders, rewritten to `?` on SQLite.
fn statement(app: &TestApp, sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    let backend = app.db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => sql.to_string(),
        _ => {
            let mut out = sql.to_string();
            for i in (1..=9).rev() {
                out = out.replace(&format!("${i}"), "?");
            }
            out
        }
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// `SELECT COUNT(*) …` straight from the database.
async fn sql_count(app: &TestApp, sql: &str, values: Vec<sea_orm::Value>) -> i64 {
    let row = app
        .db
        .query_one_raw(statement(app, sql, values))
        .await
        .unwrap()
        .expect("a row");
    row.try_get_by_index::<i64>(0).unwrap()
}

fn uuid(id: &str) -> Uuid {
    Uuid::parse_str(id).unwrap_or_else(|e| panic!("{id} is no UUID: {e}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .unwrap();
    suite
        .common
        .hash_provider
        .hash(bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `header` followed by varied filler bytes up to `len`.
fn padded(header: &[u8], len: usize) -> Vec<u8> {
    let mut out = header.to_vec();
    let mut i: u32 = 0;
    while out.len() < len {
        out.push((i.wrapping_mul(31).wrapping_add(7) % 251) as u8);
        i += 1;
    }
    out.truncate(len);
    out
}

fn jpeg(len: usize) -> Vec<u8> {
    let mut out = padded(
        &[
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00,
            0x00, 0x01, 0x00, 0x01, 0x00, 0x00,
        ],
        len,
    );
    let n = out.len();
    out[n - 2] = 0xFF;
    out[n - 1] = 0xD9;
    out
}

fn png(len: usize) -> Vec<u8> {
    padded(
        &[
            0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, b'I', b'H',
            b'D', b'R',
        ],
        len,
    )
}

fn pdf(len: usize) -> Vec<u8> {
    padded(b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n1 0 obj\n", len)
}

fn heic(len: usize) -> Vec<u8> {
    padded(
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic\x00\x00\x00\x00",
        len,
    )
}

fn mp4(len: usize) -> Vec<u8> {
    padded(
        b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41\x00\x00\x00\x08free",
        len,
    )
}

async fn upload(client: &TestClient, room: &str, name: &str, claimed: &str, bytes: &[u8]) -> Gql {
    client
        .graphql_upload(
            UPLOAD,
            json!({ "r": room, "file": null }),
            "variables.file",
            UploadFile {
                name,
                content_type: claimed,
                bytes,
            },
        )
        .await
}

/// Uploads a small JPEG and returns the attachment's id.
async fn upload_ok(client: &TestClient, room: &str, name: &str) -> String {
    let resp = upload(client, room, name, "image/jpeg", &jpeg(600)).await;
    id_of(&resp.ok()["uploadAttachment"])
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad escape in {s}")));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| panic!("not UTF-8 once decoded: {s}"))
}

fn tokyo(t: DateTime<Utc>) -> String {
    t.with_timezone(&chrono_tz::Asia::Tokyo).to_rfc3339()
}

fn at(value: &Value) -> DateTime<Utc> {
    parse_time(value).with_timezone(&Utc)
}

/// The edges' nodes of a connection under `room`.
fn nodes(resp: &Gql, connection: &str) -> Vec<Value> {
    resp.ok()["room"][connection]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("no edges: {}", resp.body))
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

fn bodies(resp: &Gql) -> Vec<String> {
    nodes(resp, "notes")
        .iter()
        .map(|n| str_of(&n["body"]).to_string())
        .collect()
}

fn page_info(resp: &Gql, connection: &str) -> Value {
    resp.ok()["room"][connection]["pageInfo"].clone()
}

fn cursors(resp: &Gql, connection: &str) -> Vec<String> {
    resp.ok()["room"][connection]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| str_of(&e["cursor"]).to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. postNote
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn post_note_validates_body_reply_mentions_and_attachments() {
    let w = Ward::new().await;
    let room = w.room.as_str();
    // A pending invitee, a user of another facility outside the room, and a second room.
    let pharm = w.k.user("pharm", Role::Staff, w.k.a).await;
    let invited =
        w.k.city
            .graphql(INVITE, json!({ "r": room, "u": [pharm.id.to_string()] }))
            .await;
    invited.ok();
    let stranger = w.k.user("stranger", Role::Staff, w.k.b).await;
    let other_room = w
        .second_room(&[(&w.doc, &w.doc_c), (&w.nurse, &w.nurse_c)])
        .await;

    // Body: trimmed non-empty, at most 10,000 characters (not bytes).
    for (what, body) in [
        ("an empty body", String::new()),
        ("a blank body", " \n\t ".to_string()),
        ("10,001 × あ", "あ".repeat(10_001)),
        ("10,001 ASCII characters", "a".repeat(10_001)),
    ] {
        expect_bad_input(&post(&w.doc_c, note_input(room, &body)).await, "body", what);
    }
    let long = post_ok(&w.doc_c, room, &"あ".repeat(10_000)).await;
    assert_eq!(
        str_of(&long["body"]).chars().count(),
        10_000,
        "10,000 × あ (30,000 bytes) is fine"
    );
    assert_eq!(long["category"], "CONTACT", "category defaults to CONTACT");
    assert_eq!(long["author"]["id"], w.doc.id.to_string());
    assert_eq!(long["room"]["id"], room);
    assert!(long["replyTo"].is_null());
    assert_eq!(long["mentions"], json!([]));
    assert_eq!(long["attachments"], json!([]));
    assert!(long["editedAt"].is_null() && long["deletedAt"].is_null());
    let report = post(
        &w.doc_c,
        json!({ "roomId": room, "body": "  訪問しました  ", "category": "VISIT_RECORD" }),
    )
    .await;
    let report = report.ok()["postNote"].clone();
    assert_eq!(report["category"], "VISIT_RECORD");

    // replyTo: a note of the same room only.
    let elsewhere = post_ok(&w.doc_c, &other_room, "別の部屋").await;
    for (what, reply_to) in [
        ("a note of another room", id_of(&elsewhere)),
        ("an unknown note", Uuid::new_v4().to_string()),
    ] {
        let mut input = note_input(room, "返信");
        input["replyToId"] = json!(reply_to);
        expect_bad_input(&post(&w.nurse_c, input).await, "replyToId", what);
    }
    let mut input = note_input(room, "返信です");
    input["replyToId"] = json!(id_of(&report));
    let reply = post(&w.nurse_c, input).await;
    let reply = reply.ok()["postNote"].clone();
    assert_eq!(reply["replyTo"]["id"], report["id"]);
    assert_eq!(reply["replyTo"]["body"], report["body"]);

    // Mentions: current members only; duplicates collapse.
    for (what, user) in [
        ("an invited-but-not-accepted user", pharm.id),
        ("a user of another facility outside the room", stranger.id),
        ("an unknown user", Uuid::new_v4()),
    ] {
        let mut input = note_input(room, "ご確認ください");
        input["mentionUserIds"] = json!([w.nurse.id.to_string(), user.to_string()]);
        expect_bad_input(&post(&w.doc_c, input).await, "mentionUserIds", what);
    }
    let mut input = note_input(room, "お二人ともご確認ください");
    input["mentionUserIds"] = json!([
        w.nurse.id.to_string(),
        w.nurse.id.to_string(),
        w.doc.id.to_string()
    ]);
    let mentioned = post(&w.doc_c, input).await;
    let mentioned = mentioned.ok()["postNote"].clone();
    assert_eq!(
        id_set(&mentioned["mentions"]),
        BTreeSet::from([w.nurse.id.to_string(), w.doc.id.to_string()])
    );
    assert_eq!(
        mentioned["mentions"].as_array().unwrap().len(),
        2,
        "duplicates collapse: {mentioned}"
    );

    // clientMutationId: at most 100 characters.
    let mut input = note_input(room, "長いキー");
    input["clientMutationId"] = json!("k".repeat(101));
    expect_bad_input(
        &post(&w.doc_c, input).await,
        "clientMutationId",
        "a key of 101 characters",
    );
    let mut input = note_input(room, "ちょうど100文字のキー");
    input["clientMutationId"] = json!("k".repeat(100));
    post(&w.doc_c, input).await.ok();

    // Attachments: the caller's own, unused uploads to this room.
    let mine = upload_ok(&w.doc_c, room, "mine.jpg").await;
    let nurses = upload_ok(&w.nurse_c, room, "nurses.jpg").await;
    let other_rooms = upload_ok(&w.doc_c, &other_room, "other.jpg").await;
    for (what, attachment) in [
        ("another user's upload", nurses.clone()),
        ("an upload to another room", other_rooms.clone()),
        ("an unknown attachment", Uuid::new_v4().to_string()),
    ] {
        let mut input = note_input(room, "写真です");
        input["attachmentIds"] = json!([attachment]);
        expect_bad_input(&post(&w.doc_c, input).await, "attachmentIds", what);
    }
    let before = notes_total(&w.doc_c, room).await;
    // Refused input leaves nothing behind: a bad mention next to a good attachment.
    let mut input = note_input(room, "写真です");
    input["attachmentIds"] = json!([mine]);
    input["mentionUserIds"] = json!([stranger.id.to_string()]);
    expect_bad_input(
        &post(&w.doc_c, input).await,
        "mentionUserIds",
        "a bad mention next to a good attachment",
    );
    assert_eq!(
        notes_total(&w.doc_c, room).await,
        before,
        "no note for refused input"
    );
    let mut input = note_input(room, "写真です");
    input["attachmentIds"] = json!([mine]);
    let with_photo = post(&w.doc_c, input).await;
    let with_photo = with_photo.ok()["postNote"].clone();
    let listed = with_photo["attachments"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{with_photo}");
    assert_eq!(listed[0]["id"], mine.as_str());
    assert_eq!(listed[0]["fileName"], "mine.jpg");
    assert_eq!(listed[0]["url"], format!("/attachments/{mine}"));
    let mut input = note_input(room, "同じ写真をもう一度");
    input["attachmentIds"] = json!([mine]);
    expect_bad_input(
        &post(&w.doc_c, input).await,
        "attachmentIds",
        "an attachment already used by a note",
    );
    assert_eq!(notes_total(&w.doc_c, room).await, before + 1);
    // As the others read it.
    let seen = read_note(&w.nurse_c, room, str_of(&with_photo["id"])).await;
    assert_eq!(id_set(&seen["attachments"]), BTreeSet::from([mine]));
    let seen = read_note(&w.nurse_c, room, str_of(&reply["id"])).await;
    assert_eq!(seen["replyTo"]["id"], report["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_client_mutation_id_returns_the_same_note_also_when_racing() {
    let w = Ward::new().await;
    let room = w.room.as_str();
    let keyed = |body: &str, key: &str| {
        let mut input = note_input(room, body);
        input["clientMutationId"] = json!(key);
        input
    };

    // Sequential retries.
    let first = post(&w.doc_c, keyed("血圧が高めです", "retry-1")).await;
    let first = first.ok()["postNote"].clone();
    for attempt in 0..2 {
        let again = post(&w.doc_c, keyed("血圧が高めです", "retry-1")).await;
        assert_eq!(
            again.ok()["postNote"]["id"],
            first["id"],
            "retry {attempt} must return the same note"
        );
    }
    // The key decides, not the body: a retry carrying another body is still the first note.
    let changed = post(&w.doc_c, keyed("血圧が高めです（再送）", "retry-1")).await;
    assert_eq!(changed.ok()["postNote"]["id"], first["id"]);
    assert_eq!(changed.ok()["postNote"]["body"], "血圧が高めです");
    assert_eq!(notes_total(&w.doc_c, room).await, 1, "one note for one key");

    // Another user may use the same key.
    let nurses = post(&w.nurse_c, keyed("了解しました", "retry-1")).await;
    let nurses = nurses.ok()["postNote"].clone();
    assert_ne!(nurses["id"], first["id"]);
    assert_eq!(nurses["author"]["id"], w.nurse.id.to_string());
    assert_eq!(notes_total(&w.doc_c, room).await, 2);

    // Racing: two (and then four) identical calls at once, each round a new key.
    for round in 0..6 {
        let key = format!("race-{round}");
        let input = keyed(&format!("同時送信 {round}"), &key);
        let ids: Vec<Value> = if round % 2 == 0 {
            let (a, b) = tokio::join!(post(&w.doc_c, input.clone()), post(&w.doc_c, input));
            vec![
                a.ok()["postNote"]["id"].clone(),
                b.ok()["postNote"]["id"].clone(),
            ]
        } else {
            let (a, b, c, d) = tokio::join!(
                post(&w.doc_c, input.clone()),
                post(&w.doc_c, input.clone()),
                post(&w.doc_c, input.clone()),
                post(&w.doc_c, input)
            );
            [a, b, c, d]
                .iter()
                .map(|r| r.ok()["postNote"]["id"].clone())
                .collect()
        };
        assert!(
            ids.iter().all(|id| *id == ids[0]),
            "round {round}: racing calls with one key returned different notes: {ids:?}"
        );
        let stored = sql_count(
            &w.k.app,
            "SELECT COUNT(*) FROM notes WHERE room_id = $1 AND client_mutation_id = $2",
            vec![uuid(room).into(), key.clone().into()],
        )
        .await;
        assert_eq!(stored, 1, "round {round}: one stored note for key {key}");
    }
    assert_eq!(notes_total(&w.doc_c, room).await, 2 + 6);
}

// ---------------------------------------------------------------------------------------------
// 2. editNote / deleteNote
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn edits_keep_revisions_deletion_is_soft_and_only_the_author_may() {
    let w = Ward::new().await;
    let room = w.room.as_str();
    let note = post_ok(&w.doc_c, room, "v1 初回訪問").await;
    let note_id = id_of(&note);
    let created = at(&note["createdAt"]);

    // Only the author; unknown ids are NOT_FOUND.
    expect_code(
        &w.nurse_c
            .graphql(EDIT_NOTE, json!({ "id": note_id, "b": "他人の編集" }))
            .await,
        "FORBIDDEN",
        "another member editing",
    );
    expect_code(
        &w.nurse_c
            .graphql(DELETE_NOTE, json!({ "id": note_id, "r": "他人の削除" }))
            .await,
        "FORBIDDEN",
        "another member deleting",
    );
    let unknown = Uuid::new_v4().to_string();
    expect_code(
        &w.doc_c
            .graphql(EDIT_NOTE, json!({ "id": unknown, "b": "x" }))
            .await,
        "NOT_FOUND",
        "editing an unknown note",
    );
    expect_code(
        &w.doc_c
            .graphql(DELETE_NOTE, json!({ "id": unknown, "r": "x" }))
            .await,
        "NOT_FOUND",
        "deleting an unknown note",
    );
    // Body rules as postNote.
    for (what, body) in [
        ("an empty body", String::new()),
        ("a blank body", "   ".to_string()),
        ("10,001 characters", "あ".repeat(10_001)),
    ] {
        expect_bad_input(
            &w.doc_c
                .graphql(EDIT_NOTE, json!({ "id": note_id, "b": body }))
                .await,
            "body",
            what,
        );
    }
    let unchanged = read_note(&w.nurse_c, room, &note_id).await;
    assert_eq!(unchanged["body"], "v1 初回訪問");
    assert_eq!(unchanged["revisions"], json!([]));
    assert!(unchanged["editedAt"].is_null());

    // Two edits: the earlier bodies, oldest first, each with when it was written.
    let edited = w
        .doc_c
        .graphql(EDIT_NOTE, json!({ "id": note_id, "b": "v2 訂正" }))
        .await;
    let edited = edited.ok()["editNote"].clone();
    assert_eq!(edited["body"], "v2 訂正");
    let first_edit = at(&edited["editedAt"]);
    assert!(first_edit >= created, "{edited}");
    let revisions = edited["revisions"].as_array().unwrap();
    assert_eq!(revisions.len(), 1, "{edited}");
    assert_eq!(revisions[0]["body"], "v1 初回訪問");
    assert_eq!(
        at(&revisions[0]["editedAt"]),
        created,
        "the original's editedAt is the note's createdAt"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let edited = w
        .doc_c
        .graphql(EDIT_NOTE, json!({ "id": note_id, "b": "v3 再訂正" }))
        .await;
    let edited = edited.ok()["editNote"].clone();
    let second_edit = at(&edited["editedAt"]);
    assert!(second_edit > first_edit, "{edited}");
    let seen = read_note(&w.nurse_c, room, &note_id).await;
    assert_eq!(seen["body"], "v3 再訂正");
    let revisions: Vec<(String, DateTime<Utc>)> = seen["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (str_of(&r["body"]).to_string(), at(&r["editedAt"])))
        .collect();
    assert_eq!(
        revisions,
        vec![
            ("v1 初回訪問".to_string(), created),
            ("v2 訂正".to_string(), first_edit)
        ],
        "revisions, oldest first, as another member reads them"
    );

    // Deletion: a reason is required.
    for (what, reason) in [
        ("an empty reason", String::new()),
        ("a blank reason", "  ".to_string()),
        ("a reason of 1,001 characters", "理".repeat(1_001)),
    ] {
        expect_bad_input(
            &w.doc_c
                .graphql(DELETE_NOTE, json!({ "id": note_id, "r": reason }))
                .await,
            "reason",
            what,
        );
    }
    let deleted = w
        .doc_c
        .graphql(
            DELETE_NOTE,
            json!({ "id": note_id, "r": "別の患者の記録でした" }),
        )
        .await;
    let deleted = deleted.ok()["deleteNote"].clone();
    assert_eq!(deleted["body"], "");
    assert!(deleted["deletedAt"].is_string(), "{deleted}");
    assert_eq!(deleted["deletionReason"], "別の患者の記録でした");
    assert_eq!(deleted["revisions"], json!([]));
    for reader in [&w.doc_c, &w.nurse_c] {
        let seen = read_note(reader, room, &note_id).await;
        assert_eq!(seen["body"], "", "a deleted note stays, empty: {seen}");
        assert_eq!(seen["revisions"], json!([]), "{seen}");
        assert_eq!(seen["deletionReason"], "別の患者の記録でした");
        assert!(seen["deletedAt"].is_string());
    }
    assert_eq!(
        notes_total(&w.nurse_c, room).await,
        1,
        "still in the timeline"
    );
    // The bodies are kept for the audit, the final one too.
    let kept = sql_count(
        &w.k.app,
        "SELECT COUNT(*) FROM note_revisions WHERE note_id = $1",
        vec![uuid(&note_id).into()],
    )
    .await;
    assert!(
        kept >= 3,
        "v1, v2 and v3 kept in note_revisions, found {kept}"
    );
    for body in ["v1 初回訪問", "v2 訂正", "v3 再訂正"] {
        let n = sql_count(
            &w.k.app,
            "SELECT COUNT(*) FROM note_revisions WHERE note_id = $1 AND body = $2",
            vec![uuid(&note_id).into(), body.into()],
        )
        .await;
        assert!(n >= 1, "{body} not kept in note_revisions");
    }
    expect_code(
        &w.doc_c
            .graphql(DELETE_NOTE, json!({ "id": note_id, "r": "もう一度" }))
            .await,
        "CONFLICT",
        "deleting a deleted note",
    );
    expect_code(
        &w.doc_c
            .graphql(EDIT_NOTE, json!({ "id": note_id, "b": "復活" }))
            .await,
        "CONFLICT",
        "editing a deleted note",
    );
}

// ---------------------------------------------------------------------------------------------
// 3. paging
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn notes_page_both_ways_with_cursors_that_survive_new_posts_and_filter_by_category() {
    let w = Ward::new().await;
    let room = w.room.as_str();
    // n00 … n11, every third a REPORT (n00, n03, n06, n09).
    for i in 0..12 {
        let category = if i % 3 == 0 { "REPORT" } else { "CONTACT" };
        let resp = post(
            &w.doc_c,
            json!({ "roomId": room, "body": format!("n{i:02}"), "category": category }),
        )
        .await;
        resp.ok();
    }
    let names =
        |range: &[i32]| -> Vec<String> { range.iter().map(|i| format!("n{i:02}")).collect() };
    let page = |vars: Value| {
        let client = w.doc_c.clone();
        let mut vars = vars;
        vars["id"] = json!(room);
        async move { client.graphql(NOTES_PAGE, vars).await }
    };

    let p1 = page(json!({ "f": 5 })).await;
    assert_eq!(bodies(&p1), names(&[11, 10, 9, 8, 7]), "newest first");
    assert_eq!(p1.ok()["room"]["notes"]["totalCount"], 12);
    assert_eq!(page_info(&p1, "notes")["hasNextPage"], true);
    let p1_end = str_of(&page_info(&p1, "notes")["endCursor"]).to_string();
    let p1_first_cursor = cursors(&p1, "notes")[0].clone();
    let p2 = page(json!({ "f": 5, "a": p1_end })).await;
    assert_eq!(bodies(&p2), names(&[6, 5, 4, 3, 2]));
    assert_eq!(page_info(&p2, "notes")["hasNextPage"], true);
    let p2_end = str_of(&page_info(&p2, "notes")["endCursor"]).to_string();
    let n02_cursor = cursors(&p2, "notes")[4].clone();

    // New posts arrive while paging: the next page neither repeats nor skips.
    for body in ["x0", "x1", "x2"] {
        post_ok(&w.nurse_c, room, body).await;
    }
    let p3 = page(json!({ "f": 5, "a": p2_end })).await;
    assert_eq!(bodies(&p3), names(&[1, 0]));
    assert_eq!(page_info(&p3, "notes")["hasNextPage"], false);
    assert_eq!(p3.ok()["room"]["notes"]["totalCount"], 15);
    let again = page(json!({ "f": 5, "a": p1_end })).await;
    assert_eq!(
        bodies(&again),
        names(&[6, 5, 4, 3, 2]),
        "an old cursor still means the same place"
    );
    let top = page(json!({ "f": 3 })).await;
    assert_eq!(bodies(&top), vec!["x2", "x1", "x0"]);

    // Backward: `before` a cursor gives the newer notes nearest to it, newest first.
    let back = page(json!({ "l": 3, "b": n02_cursor })).await;
    assert_eq!(bodies(&back), names(&[5, 4, 3]));
    assert_eq!(page_info(&back, "notes")["hasPreviousPage"], true);
    let back_start = str_of(&page_info(&back, "notes")["startCursor"]).to_string();
    let back2 = page(json!({ "l": 3, "b": back_start })).await;
    assert_eq!(bodies(&back2), names(&[8, 7, 6]));
    assert_eq!(page_info(&back2, "notes")["hasPreviousPage"], true);
    let newest = page(json!({ "l": 3, "b": p1_first_cursor })).await;
    assert_eq!(bodies(&newest), vec!["x2", "x1", "x0"]);
    assert_eq!(page_info(&newest, "notes")["hasPreviousPage"], false);
    let all_newer = page(json!({ "l": 50, "b": n02_cursor })).await;
    let mut expected = vec!["x2".to_string(), "x1".into(), "x0".into()];
    expected.extend(names(&[11, 10, 9, 8, 7, 6, 5, 4, 3]));
    assert_eq!(bodies(&all_newer), expected);
    assert_eq!(page_info(&all_newer, "notes")["hasPreviousPage"], false);
    let oldest = page(json!({ "l": 3 })).await;
    assert_eq!(
        bodies(&oldest),
        names(&[2, 1, 0]),
        "`last` alone: the oldest"
    );
    assert_eq!(page_info(&oldest, "notes")["hasPreviousPage"], true);

    let both = page(json!({ "f": 2, "l": 2 })).await;
    expect_code(&both, "BAD_USER_INPUT", "first and last together");

    // The category filter, counted and paged.
    let r1 = page(json!({ "f": 2, "c": "REPORT" })).await;
    assert_eq!(bodies(&r1), names(&[9, 6]));
    assert_eq!(r1.ok()["room"]["notes"]["totalCount"], 4);
    assert_eq!(page_info(&r1, "notes")["hasNextPage"], true);
    for n in nodes(&r1, "notes") {
        assert_eq!(n["category"], "REPORT");
    }
    let r2 =
        page(json!({ "f": 2, "c": "REPORT", "a": page_info(&r1, "notes")["endCursor"] })).await;
    assert_eq!(bodies(&r2), names(&[3, 0]));
    assert_eq!(page_info(&r2, "notes")["hasNextPage"], false);
    let r_back = page(json!({ "l": 1, "c": "REPORT", "b": cursors(&r2, "notes")[0] })).await;
    assert_eq!(bodies(&r_back), names(&[6]));
    let contact = page(json!({ "f": 50, "c": "CONTACT" })).await;
    assert_eq!(contact.ok()["room"]["notes"]["totalCount"], 11);
    let none = page(json!({ "f": 5, "c": "DISCHARGE" })).await;
    assert_eq!(none.ok()["room"]["notes"]["totalCount"], 0);
    assert!(bodies(&none).is_empty());
}

// ---------------------------------------------------------------------------------------------
// 4. 既読
// ---------------------------------------------------------------------------------------------

async fn unread(client: &TestClient, room: &str) -> i64 {
    let resp = client.graphql(UNREAD, json!({ "id": room })).await;
    resp.ok()["room"]["unreadCount"]
        .as_i64()
        .unwrap_or_else(|| panic!("no unreadCount: {}", resp.body))
}

async fn mark_read(client: &TestClient, room: &str, note: &Value) -> Gql {
    client
        .graphql(MARK_READ, json!({ "r": room, "n": note["id"] }))
        .await
}

fn readers(note: &Value) -> BTreeMap<String, DateTime<Utc>> {
    note["readBy"]
        .as_array()
        .unwrap_or_else(|| panic!("no readBy: {note}"))
        .iter()
        .map(|r| (str_of(&r["user"]["id"]).to_string(), at(&r["readAt"])))
        .collect()
}

#[tokio::test]
async fn read_markers_count_unread_notes_and_list_who_read_what() {
    let w = Ward::new().await;
    let room = w.room.as_str();
    let d1 = post_ok(&w.doc_c, room, "d1").await;
    let d2 = post_ok(&w.doc_c, room, "d2").await;
    let d3 = post_ok(&w.doc_c, room, "d3").await;
    let m1 = post_ok(&w.nurse_c, room, "m1").await;
    assert_eq!(
        unread(&w.nurse_c, room).await,
        3,
        "never marked: all of the others'"
    );
    assert_eq!(unread(&w.doc_c, room).await, 1);

    // Bad markers.
    let other_room = w.second_room(&[(&w.nurse, &w.nurse_c)]).await;
    let elsewhere = post_ok(&w.nurse_c, &other_room, "別の部屋").await;
    for (what, note) in [
        ("a note of another room", elsewhere["id"].clone()),
        ("an unknown note", json!(Uuid::new_v4().to_string())),
    ] {
        expect_bad_input(
            &w.nurse_c
                .graphql(MARK_READ, json!({ "r": room, "n": note }))
                .await,
            "upToNoteId",
            what,
        );
    }
    assert_eq!(unread(&w.nurse_c, room).await, 3);

    let before = Utc::now();
    let marked = mark_read(&w.nurse_c, room, &d2).await;
    let after = Utc::now();
    assert_eq!(marked.ok()["markRead"], 1, "d3 is still unread");
    assert_eq!(unread(&w.nurse_c, room).await, 1);
    // The marker never moves backwards.
    let back = mark_read(&w.nurse_c, room, &d1).await;
    assert_eq!(back.ok()["markRead"], 1);
    assert_eq!(unread(&w.nurse_c, room).await, 1);

    let r1 = readers(&read_note(&w.doc_c, room, str_of(&d1["id"])).await);
    let r2 = readers(&read_note(&w.doc_c, room, str_of(&d2["id"])).await);
    let r3 = readers(&read_note(&w.doc_c, room, str_of(&d3["id"])).await);
    assert_eq!(
        r1.keys().cloned().collect::<Vec<_>>(),
        vec![w.nurse.id.to_string()]
    );
    assert_eq!(r1, r2, "one markRead covered both");
    let first_read = r1[&w.nurse.id.to_string()];
    assert!(
        first_read >= before - chrono::Duration::seconds(1)
            && first_read <= after + chrono::Duration::seconds(1),
        "readAt {first_read} is the time of the markRead ({before} … {after})"
    );
    assert!(r3.is_empty(), "d3 unread: {r3:?}");

    // Later marks do not move the readAt of notes already covered.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let marked = mark_read(&w.nurse_c, room, &d3).await;
    assert_eq!(marked.ok()["markRead"], 0, "m1 is the nurse's own");
    let r1 = readers(&read_note(&w.doc_c, room, str_of(&d1["id"])).await);
    let r3 = readers(&read_note(&w.doc_c, room, str_of(&d3["id"])).await);
    assert_eq!(r1[&w.nurse.id.to_string()], first_read);
    assert!(r3[&w.nurse.id.to_string()] > first_read, "{r3:?}");

    // The author is never among the readers of its own note.
    let marked = mark_read(&w.doc_c, room, &m1).await;
    assert_eq!(marked.ok()["markRead"], 0);
    let r1 = readers(&read_note(&w.doc_c, room, str_of(&d1["id"])).await);
    assert!(!r1.contains_key(&w.doc.id.to_string()), "{r1:?}");
    let rm = readers(&read_note(&w.doc_c, room, str_of(&m1["id"])).await);
    assert_eq!(
        rm.keys().cloned().collect::<Vec<_>>(),
        vec![w.doc.id.to_string()]
    );

    // Deleted notes are not unread.
    let d4 = post_ok(&w.doc_c, room, "d4").await;
    let d5 = post_ok(&w.doc_c, room, "d5").await;
    assert_eq!(unread(&w.nurse_c, room).await, 2);
    w.doc_c
        .graphql(DELETE_NOTE, json!({ "id": d4["id"], "r": "重複" }))
        .await
        .ok();
    assert_eq!(unread(&w.nurse_c, room).await, 1);
    assert_eq!(mark_read(&w.nurse_c, room, &d5).await.ok()["markRead"], 0);
    assert_eq!(unread(&w.nurse_c, room).await, 0);
    assert_eq!(unread(&w.doc_c, room).await, 0);
}

// ---------------------------------------------------------------------------------------------
// 5. attachments
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn uploads_are_sniffed_and_limited_and_downloads_are_for_members_only() {
    let w = Ward::with_env(&[
        ("RENKEI_ATTACHMENT_MAX_BYTES", "2048"),
        ("RENKEI_ATTACHMENT_VIDEO_MAX_BYTES", "8192"),
    ])
    .await;
    let room = w.room.as_str();

    // The type comes from the bytes, the name loses its path.
    let photo = jpeg(1500);
    let resp = upload(
        &w.doc_c,
        room,
        "../../home/doc/検査 結果.jpg",
        "application/octet-stream",
        &photo,
    )
    .await;
    let attachment = resp.ok()["uploadAttachment"].clone();
    let attachment_id = id_of(&attachment);
    assert_eq!(attachment["fileName"], "検査 結果.jpg");
    assert_eq!(attachment["contentType"], "image/jpeg");
    assert_eq!(attachment["sizeBytes"], 1500);
    assert_eq!(attachment["sha256"], sha256_hex(&photo));
    assert_eq!(attachment["url"], format!("/attachments/{attachment_id}"));
    for (name, claimed, bytes, sniffed) in [
        (
            "scan.bin",
            "application/octet-stream",
            png(2048),
            "image/png",
        ),
        ("IMG_0001.HEIC", "image/heif", heic(900), "image/heic"),
        (
            "紹介状.pdf",
            "application/pdf",
            pdf(1200),
            "application/pdf",
        ),
        ("歩行.mp4", "video/mp4", mp4(8192), "video/mp4"),
        ("exact.jpg", "image/jpeg", jpeg(2048), "image/jpeg"),
    ] {
        let resp = upload(&w.doc_c, room, name, claimed, &bytes).await;
        assert!(resp.errors().is_empty(), "{name}: {}", resp.body);
        let got = &resp.data()["uploadAttachment"];
        assert_eq!(got["contentType"], sniffed, "{name}: {got}");
        assert_eq!(got["sizeBytes"], bytes.len(), "{name}");
        assert_eq!(got["sha256"], sha256_hex(&bytes), "{name}");
        assert_eq!(got["fileName"], name);
    }
    // Refused: other bytes whatever they claim, empty, one byte over the limit.
    for (what, name, claimed, bytes) in [
        (
            "text sent as a JPEG",
            "photo.jpg",
            "image/jpeg",
            b"hello, this is not a photo at all\n".repeat(10),
        ),
        ("an empty file", "empty.jpg", "image/jpeg", Vec::new()),
        ("a JPEG one byte over", "big.jpg", "image/jpeg", jpeg(2049)),
        (
            "a PDF one byte over",
            "big.pdf",
            "application/pdf",
            pdf(2049),
        ),
        ("a PNG one byte over", "big.png", "image/png", png(2049)),
        ("an MP4 one byte over", "big.mp4", "video/mp4", mp4(8193)),
    ] {
        expect_bad_input(
            &upload(&w.doc_c, room, name, claimed, &bytes).await,
            "file",
            what,
        );
    }
    let stored = sql_count(
        &w.k.app,
        "SELECT COUNT(*) FROM attachments WHERE room_id = $1",
        vec![uuid(room).into()],
    )
    .await;
    assert_eq!(stored, 6, "only the accepted uploads are stored");

    // Downloads: members get exactly the bytes.
    let url = format!("/attachments/{attachment_id}");
    for member in [&w.doc_c, &w.nurse_c] {
        let resp = member.get(&url).await;
        assert_eq!(resp.status(), 200);
        let headers = resp.headers().clone();
        assert_eq!(headers["content-type"], "image/jpeg");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let disposition = headers["content-disposition"].to_str().unwrap().to_string();
        // `attachment; filename*=UTF-8''<name>` (an ASCII `filename=` fallback may come too).
        let mut params = disposition.split(';').map(str::trim);
        assert_eq!(params.next(), Some("attachment"), "{disposition}");
        let params: Vec<&str> = params.collect();
        let encoded = params
            .iter()
            .find_map(|p| p.strip_prefix("filename*=UTF-8''"))
            .unwrap_or_else(|| panic!("no filename*=UTF-8'' in {disposition}"));
        assert!(
            encoded.is_ascii() && !encoded.contains(' '),
            "percent-encoded: {encoded}"
        );
        for fallback in params.iter().filter_map(|p| p.strip_prefix("filename=")) {
            assert!(
                fallback.is_ascii() && !fallback.contains('/') && !fallback.contains(".."),
                "fallback file name {fallback}"
            );
        }
        assert_eq!(percent_decode(encoded), "検査 結果.jpg");
        assert_eq!(resp.bytes().await.unwrap().as_ref(), photo.as_slice());
    }

    // No session, a bad one, or the token without its certificate: 401.
    let token = w.doc_c.token.clone().unwrap();
    for (what, client) in [
        ("no token", w.k.app.client_for(&w.doc)),
        (
            "an invalid token",
            w.k.app.client_for(&w.doc).with_token("not-a-session"),
        ),
        (
            "the token without a certificate",
            w.k.app.client().with_token(token.clone()),
        ),
        (
            "the token over another user's certificate",
            w.k.app.client_for(&w.nurse).with_token(token),
        ),
    ] {
        assert_eq!(client.get(&url).await.status(), 401, "{what}");
    }
    // A same-tenant non-member: 403; unknown and other tenants' ids: 404.
    let (outsider, outsider_c) = w.k.staff("outsider", w.k.b).await;
    assert_eq!(outsider_c.get(&url).await.status(), 403);
    assert_eq!(
        w.k.city.get(&url).await.status(),
        403,
        "the city is no member"
    );
    assert_eq!(
        w.doc_c
            .get(&format!("/attachments/{}", Uuid::new_v4()))
            .await
            .status(),
        404
    );
    let minami = w.k.app.create_tenant("minami").await;
    let minami_c = w.k.app.ready_session(&minami).await;
    assert_eq!(minami_c.get(&url).await.status(), 404);

    let events = room_events(&w.k.city, room).await;
    let count = |action: &str, actor: &Person, outcome: &str| {
        events
            .iter()
            .filter(|e| {
                e["action"] == action
                    && e["actor"]["id"] == actor.id.to_string()
                    && e["outcome"] == outcome
            })
            .count()
    };
    assert!(count("attachment.upload", &w.doc, "ALLOWED") >= 6);
    assert!(count("attachment.download", &w.doc, "ALLOWED") >= 1);
    assert!(count("attachment.download", &w.nurse, "ALLOWED") >= 1);
    assert!(
        count("attachment.download", &outsider, "DENIED") >= 1,
        "a refused download is audited as DENIED: {events:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. vitals
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn vitals_are_range_checked_per_field_and_listed_newest_first_within_from_and_to() {
    let w = Ward::new().await;
    let room = w.room.as_str();
    // Whole seconds, as a device would send them.
    let now = Utc::now().trunc_subsecs(0);
    let vitals = |values: Value| {
        let mut input = json!({ "roomId": room, "measuredAt": tokyo(now) });
        for (k, v) in values.as_object().unwrap() {
            input[k] = v.clone();
        }
        let client = w.doc_c.clone();
        async move { client.graphql(RECORD_VITALS, json!({ "i": input })).await }
    };

    expect_bad_input(&vitals(json!({})).await, "input", "no value at all");
    expect_bad_input(
        &vitals(json!({ "note": "測定できず" })).await,
        "input",
        "only a note",
    );
    let ranges: [(&str, Value, Value, Value, Value); 8] = [
        ("systolicMmHg", json!(39), json!(40), json!(300), json!(301)),
        (
            "diastolicMmHg",
            json!(19),
            json!(20),
            json!(200),
            json!(201),
        ),
        ("pulsePerMin", json!(19), json!(20), json!(250), json!(251)),
        (
            "temperatureCelsius",
            json!(29.9),
            json!(30.0),
            json!(45.0),
            json!(45.1),
        ),
        ("spo2Percent", json!(49), json!(50), json!(100), json!(101)),
        (
            "respiratoryRatePerMin",
            json!(3),
            json!(4),
            json!(80),
            json!(81),
        ),
        (
            "weightKg",
            json!(0.9),
            json!(1.0),
            json!(300.0),
            json!(300.1),
        ),
        (
            "bloodGlucoseMgDl",
            json!(9),
            json!(10),
            json!(1000),
            json!(1001),
        ),
    ];
    let mut accepted = 0;
    for (field, below, min, max, above) in &ranges {
        for bad in [below, above] {
            expect_bad_input(
                &vitals(json!({ *field: bad })).await,
                field,
                &format!("{field} = {bad}"),
            );
        }
        for good in [min, max] {
            let resp = vitals(json!({ *field: good })).await;
            assert!(resp.errors().is_empty(), "{field} = {good}: {}", resp.body);
            let record = &resp.data()["recordVitals"];
            assert_eq!(
                record[*field].as_f64(),
                good.as_f64(),
                "{field} echoed: {record}"
            );
            accepted += 1;
        }
    }
    // Diastolic below systolic when both are given.
    for (sys, dia) in [(120, 120), (100, 130)] {
        expect_bad_input(
            &vitals(json!({ "systolicMmHg": sys, "diastolicMmHg": dia })).await,
            "diastolicMmHg",
            &format!("{sys}/{dia}"),
        );
    }
    let bp = vitals(json!({ "systolicMmHg": 120, "diastolicMmHg": 119, "pulsePerMin": 70 })).await;
    let bp = bp.ok()["recordVitals"].clone();
    assert_eq!(bp["recordedBy"]["id"], w.doc.id.to_string());
    assert_eq!(at(&bp["measuredAt"]).timestamp(), now.timestamp());
    accepted += 1;
    // measuredAt at most 5 minutes ahead; a note of at most 2,000 characters.
    let mut input = json!({ "roomId": room, "measuredAt": tokyo(now + chrono::Duration::minutes(6)), "pulsePerMin": 70 });
    expect_bad_input(
        &w.doc_c
            .graphql(RECORD_VITALS, json!({ "i": input.clone() }))
            .await,
        "measuredAt",
        "six minutes in the future",
    );
    input["measuredAt"] = json!(tokyo(now + chrono::Duration::minutes(3)));
    w.doc_c
        .graphql(RECORD_VITALS, json!({ "i": input }))
        .await
        .ok();
    accepted += 1;
    expect_bad_input(
        &vitals(json!({ "pulsePerMin": 70, "note": "記".repeat(2_001) })).await,
        "note",
        "a note of 2,001 characters",
    );
    let noted = vitals(json!({ "temperatureCelsius": 36.5, "note": "記".repeat(2_000) })).await;
    assert_eq!(noted.ok()["recordVitals"]["temperatureCelsius"], 36.5);
    accepted += 1;

    // Order and window: three records two days ago, entered out of order.
    let base = now - chrono::Duration::days(2);
    let mut ids = BTreeMap::new();
    for (name, hours) in [("a", 1), ("b", 3), ("c", 2)] {
        let input = json!({
            "roomId": room,
            "measuredAt": tokyo(base + chrono::Duration::hours(hours)),
            "spo2Percent": 95 + hours,
        });
        let resp = w
            .nurse_c
            .graphql(RECORD_VITALS, json!({ "i": input }))
            .await;
        ids.insert(name, id_of(&resp.ok()["recordVitals"]));
        accepted += 1;
    }
    let window = |from: Option<i64>, to: Option<i64>| {
        let client = w.nurse_c.clone();
        let vars = json!({
            "id": room,
            "from": from.map(|h| tokyo(base + chrono::Duration::hours(h))),
            "to": to.map(|h| tokyo(base + chrono::Duration::hours(h))),
            "f": 100,
        });
        async move { client.graphql(VITALS, vars).await }
    };
    let listed_ids =
        |resp: &Gql| -> Vec<String> { nodes(resp, "vitals").iter().map(id_of).collect() };
    let both = window(Some(0), Some(3)).await;
    assert_eq!(
        listed_ids(&both),
        vec![ids["b"].clone(), ids["c"].clone(), ids["a"].clone()],
        "newest first by measuredAt, `to` inclusive"
    );
    assert_eq!(both.ok()["room"]["vitals"]["totalCount"], 3);
    let inner = window(Some(1), Some(2)).await;
    assert_eq!(
        listed_ids(&inner),
        vec![ids["c"].clone(), ids["a"].clone()],
        "from and to inclusive"
    );
    let from_only = window(Some(2), None).await;
    assert_eq!(
        from_only.ok()["room"]["vitals"]["totalCount"],
        accepted - 1,
        "from alone: everything but a"
    );
    let to_only = window(None, Some(1)).await;
    assert_eq!(listed_ids(&to_only), vec![ids["a"].clone()]);

    // Everything, newest first, and paged without overlap.
    let all = window(None, None).await;
    assert_eq!(all.ok()["room"]["vitals"]["totalCount"], accepted);
    let times: Vec<DateTime<Utc>> = nodes(&all, "vitals")
        .iter()
        .map(|n| at(&n["measuredAt"]))
        .collect();
    assert_eq!(times.len() as i64, accepted);
    assert!(
        times.windows(2).all(|p| p[0] >= p[1]),
        "newest first: {times:?}"
    );
    assert_eq!(
        times[0].timestamp(),
        (now + chrono::Duration::minutes(3)).timestamp()
    );
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let resp = w
            .doc_c
            .graphql(VITALS, json!({ "id": room, "f": 7, "a": after }))
            .await;
        paged.extend(listed_ids(&resp));
        let info = page_info(&resp, "vitals");
        if info["hasNextPage"] != true {
            break;
        }
        after = Some(str_of(&info["endCursor"]).to_string());
    }
    assert_eq!(
        paged,
        listed_ids(&all),
        "pages of 7 add up to the whole list"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. patient and care information
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn update_patient_validates_and_keeps_every_previous_version() {
    let w = Ward::new().await;
    let room = w.room.as_str();
    let versions = || {
        sql_count(
            &w.k.app,
            "SELECT COUNT(*) FROM patient_versions WHERE room_id = $1",
            vec![uuid(room).into()],
        )
    };
    assert_eq!(versions().await, 0);

    let mut bad = yamada();
    bad["nameKana"] = json!("やまだ たろう");
    expect_bad_input(
        &w.doc_c
            .graphql(UPDATE_PATIENT, json!({ "r": room, "p": bad }))
            .await,
        "patient.nameKana",
        "kana in hiragana",
    );
    let mut bad = yamada();
    bad["birthDate"] = json!("1899-12-31");
    expect_bad_input(
        &w.doc_c
            .graphql(UPDATE_PATIENT, json!({ "r": room, "p": bad }))
            .await,
        "patient.birthDate",
        "born before 1900",
    );
    assert_eq!(versions().await, 0, "refused updates keep nothing");

    let mut next = patient("山田 一郎", "ヤマダ イチロウ", "1941-06-02");
    next["careLevel"] = json!("CARE_3");
    let updated = w
        .doc_c
        .graphql(UPDATE_PATIENT, json!({ "r": room, "p": next }))
        .await;
    let updated = updated.ok()["updatePatient"].clone();
    assert_eq!(updated["name"], "山田 一郎");
    assert_eq!(updated["nameKana"], "ヤマダ イチロウ");
    assert_eq!(updated["birthDate"], "1941-06-02");
    assert_eq!(updated["careLevel"], "CARE_3");
    assert_eq!(versions().await, 1);
    for reader in [&w.nurse_c, &w.k.city] {
        let label = reader
            .graphql(
                "query($id:ID!){ room(id:$id){ id patientLabel } }",
                json!({ "id": room }),
            )
            .await;
        assert_eq!(label.ok()["room"]["patientLabel"], "山田 一. (1941)");
    }
    let seen = w
        .nurse_c
        .graphql(ROOM_PATIENT_LABEL, json!({ "id": room }))
        .await;
    assert_eq!(seen.ok()["room"]["patient"]["name"], "山田 一郎");
    assert_eq!(seen.ok()["room"]["patient"]["careLevel"], "CARE_3");

    let mut next = patient("山田 一郎", "ヤマダ イチロウ", "1941-06-02");
    next["careLevel"] = json!("CARE_4");
    w.nurse_c
        .graphql(UPDATE_PATIENT, json!({ "r": room, "p": next }))
        .await
        .ok();
    assert_eq!(versions().await, 2, "one row per update");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn care_info_is_versioned_and_racing_writers_have_exactly_one_winner() {
    let w = Ward::new().await;
    let room = w.room.as_str();
    let care = |client: &TestClient, kind: &str, content: &str, expected: Option<i64>| {
        let client = client.clone();
        let vars = json!({ "r": room, "k": kind, "c": content, "v": expected });
        async move { client.graphql(UPDATE_CARE, vars).await }
    };

    expect_bad_input(
        &care(&w.doc_c, "OTHER", &"あ".repeat(20_001), None).await,
        "content",
        "20,001 characters",
    );
    let other = care(&w.doc_c, "OTHER", &"あ".repeat(20_000), None).await;
    let other = other.ok()["updateCareInfo"].clone();
    assert_eq!(other["version"], 1);
    assert_eq!(other["kind"], "OTHER");

    // A new section starts at 1 with expectedVersion null or 0.
    let allergies = care(&w.nurse_c, "ALLERGIES", "ペニシリン", Some(0)).await;
    assert_eq!(allergies.ok()["updateCareInfo"]["version"], 1);
    let meds = care(&w.doc_c, "MEDICATIONS", "アムロジピン 5mg", None).await;
    let meds = meds.ok()["updateCareInfo"].clone();
    assert_eq!(meds["version"], 1);
    assert_eq!(meds["updatedBy"]["id"], w.doc.id.to_string());
    for (what, expected) in [
        ("null for an existing section", None),
        ("0 for an existing section", Some(0)),
        ("a version ahead", Some(2)),
    ] {
        expect_code(
            &care(&w.nurse_c, "MEDICATIONS", "上書き", expected).await,
            "CONFLICT",
            what,
        );
    }
    let meds = care(
        &w.nurse_c,
        "MEDICATIONS",
        "アムロジピン 5mg\n酸化マグネシウム",
        Some(1),
    )
    .await;
    let meds = meds.ok()["updateCareInfo"].clone();
    assert_eq!(meds["version"], 2);
    assert_eq!(meds["updatedBy"]["id"], w.nurse.id.to_string());
    expect_code(
        &care(&w.doc_c, "MEDICATIONS", "古い版から", Some(1)).await,
        "CONFLICT",
        "a stale version",
    );

    // Current versions only, in enum order, whoever wrote them.
    let listed = w.doc_c.graphql(CARE_INFO, json!({ "id": room })).await;
    let sections = listed.ok()["room"]["careInfo"].as_array().unwrap().clone();
    let summary: Vec<(String, i64, String)> = sections
        .iter()
        .map(|s| {
            (
                str_of(&s["kind"]).to_string(),
                s["version"].as_i64().unwrap(),
                str_of(&s["updatedBy"]["id"]).to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("MEDICATIONS".to_string(), 2, w.nurse.id.to_string()),
            ("ALLERGIES".to_string(), 1, w.nurse.id.to_string()),
            ("OTHER".to_string(), 1, w.doc.id.to_string()),
        ]
    );
    assert_eq!(sections[0]["content"], "アムロジピン 5mg\n酸化マグネシウム");
    assert!(at(&sections[0]["updatedAt"]) >= at(&sections[1]["updatedAt"]));

    // Two writers with the same expected version: one wins, the other is CONFLICT.
    care(&w.doc_c, "ADL", "自立", None).await.ok();
    let mut version = 1;
    let mut winners = BTreeMap::new();
    for round in 0..6 {
        let doc_says = format!("round {round}: doc");
        let nurse_says = format!("round {round}: nurse");
        let (d, n) = tokio::join!(
            care(&w.doc_c, "ADL", &doc_says, Some(version)),
            care(&w.nurse_c, "ADL", &nurse_says, Some(version))
        );
        let (winner, loser, said) = match (d.errors().is_empty(), n.errors().is_empty()) {
            (true, false) => (&d, &n, &doc_says),
            (false, true) => (&n, &d, &nurse_says),
            _ => panic!(
                "round {round}: exactly one writer must win: {} / {}",
                d.body, n.body
            ),
        };
        expect_code(loser, "CONFLICT", &format!("round {round}: the loser"));
        assert_eq!(winner.data()["updateCareInfo"]["version"], version + 1);
        version += 1;
        let listed = w.nurse_c.graphql(CARE_INFO, json!({ "id": room })).await;
        let adl = listed.ok()["room"]["careInfo"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == "ADL")
            .cloned()
            .expect("ADL listed");
        assert_eq!(
            adl["content"],
            said.as_str(),
            "round {round}: the winner's content"
        );
        assert_eq!(adl["version"], version);
        *winners
            .entry(if said == &doc_says { "doc" } else { "nurse" })
            .or_insert(0) += 1;
    }
    eprintln!("care info race winners: {winners:?}");
    let kinds: Vec<String> =
        w.doc_c.graphql(CARE_INFO, json!({ "id": room })).await.ok()["room"]["careInfo"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| str_of(&s["kind"]).to_string())
            .collect();
    assert_eq!(kinds, vec!["MEDICATIONS", "ALLERGIES", "ADL", "OTHER"]);
}

// ---------------------------------------------------------------------------------------------
// 8. FHIR
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn fhir_export_is_a_searchset_of_jp_core_vital_sign_observations() {
    let w = Ward::new().await;
    let room = w.room.as_str();
    let t1 = Utc::now() - chrono::Duration::hours(3);
    let t2 = Utc::now() - chrono::Duration::hours(1);
    let first = w
        .doc_c
        .graphql(
            RECORD_VITALS,
            json!({ "i": {
                "roomId": room, "measuredAt": tokyo(t1),
                "systolicMmHg": 132, "diastolicMmHg": 84, "pulsePerMin": 72, "temperatureCelsius": 36.6,
            } }),
        )
        .await;
    first.ok();
    let second = w
        .nurse_c
        .graphql(
            RECORD_VITALS,
            json!({ "i": {
                "roomId": room, "measuredAt": tokyo(t2),
                "spo2Percent": 97, "respiratoryRatePerMin": 16, "weightKg": 52.3, "bloodGlucoseMgDl": 110,
            } }),
        )
        .await;
    second.ok();

    let path = format!("/fhir/rooms/{room}/Observation");
    let resp = w.doc_c.get(&path).await;
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("application/fhir+json"),
        "Content-Type {content_type}"
    );
    let bundle: Value = resp.json().await.unwrap();
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "searchset");
    let entries = bundle["entry"].as_array().expect("entries");
    assert_eq!(
        entries.len(),
        7,
        "BP + pulse + temperature, then four: {bundle}"
    );
    assert_eq!(bundle["total"], 7);

    // LOINC -> (value, UCUM, when); blood pressure is a panel with two components.
    let expected: BTreeMap<&str, (f64, &str, DateTime<Utc>)> = BTreeMap::from([
        ("8867-4", (72.0, "/min", t1)),
        ("8310-5", (36.6, "Cel", t1)),
        ("2708-6", (97.0, "%", t2)),
        ("9279-1", (16.0, "/min", t2)),
        ("29463-7", (52.3, "kg", t2)),
        ("2339-0", (110.0, "mg/dL", t2)),
    ]);
    let mut seen = BTreeSet::new();
    for entry in entries {
        let obs = &entry["resource"];
        assert_eq!(obs["resourceType"], "Observation", "{obs}");
        assert_eq!(obs["status"], "final", "{obs}");
        assert!(
            obs["meta"]["profile"]
                .as_array()
                .is_some_and(|p| p.iter().any(|u| u
                    == "http://jpfhir.jp/fhir/core/StructureDefinition/JP_Observation_VitalSigns")),
            "JP Core profile: {obs}"
        );
        let category = &obs["category"][0]["coding"][0];
        assert_eq!(
            category["system"],
            "http://terminology.hl7.org/CodeSystem/observation-category"
        );
        assert_eq!(category["code"], "vital-signs");
        let coding = &obs["code"]["coding"][0];
        assert_eq!(coding["system"], "http://loinc.org", "{obs}");
        let code = str_of(&coding["code"]).to_string();
        let when = at(&obs["effectiveDateTime"]);
        if code == "85354-9" {
            assert_eq!(when.timestamp(), t1.timestamp(), "{obs}");
            let components: BTreeMap<String, Value> = obs["component"]
                .as_array()
                .unwrap_or_else(|| panic!("BP components: {obs}"))
                .iter()
                .map(|c| {
                    assert_eq!(c["code"]["coding"][0]["system"], "http://loinc.org");
                    (
                        str_of(&c["code"]["coding"][0]["code"]).to_string(),
                        c["valueQuantity"].clone(),
                    )
                })
                .collect();
            assert_eq!(components.len(), 2, "{obs}");
            for (loinc, value) in [("8480-6", 132.0), ("8462-4", 84.0)] {
                let q = &components[loinc];
                assert_eq!(q["value"].as_f64(), Some(value), "{loinc}: {q}");
                assert_eq!(q["unit"], "mm[Hg]", "{q}");
                assert_eq!(q["code"], "mm[Hg]", "{q}");
                assert_eq!(q["system"], "http://unitsofmeasure.org", "{q}");
            }
        } else {
            let (value, ucum, t) = expected
                .get(code.as_str())
                .unwrap_or_else(|| panic!("unexpected LOINC {code}: {obs}"));
            let q = &obs["valueQuantity"];
            assert_eq!(q["value"].as_f64(), Some(*value), "{code}: {q}");
            assert_eq!(q["unit"], *ucum, "{code}: {q}");
            assert_eq!(q["code"], *ucum, "{code}: {q}");
            assert_eq!(q["system"], "http://unitsofmeasure.org", "{code}: {q}");
            assert_eq!(when.timestamp(), t.timestamp(), "{code}");
        }
        assert!(seen.insert(code.clone()), "{code} twice");
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert!(seen.contains("85354-9"));

    // Members only.
    let (_outsider, outsider_c) = w.k.staff("outsider", w.k.b).await;
    assert_eq!(outsider_c.get(&path).await.status(), 403);
    assert_eq!(w.k.city.get(&path).await.status(), 403);
    assert_eq!(
        w.doc_c
            .get(&format!("/fhir/rooms/{}/Observation", Uuid::new_v4()))
            .await
            .status(),
        404
    );
    let minami = w.k.app.create_tenant("minami").await;
    let minami_c = w.k.app.ready_session(&minami).await;
    assert_eq!(minami_c.get(&path).await.status(), 404);
    assert_eq!(w.k.app.client_for(&w.doc).get(&path).await.status(), 401);

    let events = room_events(&w.k.city, room).await;
    assert!(
        events.iter().any(|e| e["action"] == "fhir.export"
            && e["actor"]["id"] == w.doc.id.to_string()
            && e["outcome"] == "ALLOWED"),
        "fhir.export audited: {events:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. who may
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn non_members_and_the_city_are_forbidden_and_other_tenants_get_not_found() {
    let w = Ward::new().await;
    let room = w.room.as_str();
    let note = post_ok(&w.doc_c, room, "診察しました").await;
    let (_outsider, outsider_c) = w.k.staff("outsider", w.k.b).await;
    let minami = w.k.app.create_tenant("minami").await;
    let minami_c = w.k.app.ready_session(&minami).await;
    let now = tokyo(Utc::now());

    let reads: Vec<(&str, &str)> = vec![
        (
            "Room.notes",
            "query($id:ID!){ room(id:$id){ id notes(first: 5){ totalCount edges { node { id body } } } } }",
        ),
        (
            "Room.vitals",
            "query($id:ID!){ room(id:$id){ id vitals(first: 5){ totalCount } } }",
        ),
        (
            "Room.careInfo",
            "query($id:ID!){ room(id:$id){ id careInfo { kind content } } }",
        ),
        ("Room.unreadCount", UNREAD),
        (
            "Room.patient",
            "query($id:ID!){ room(id:$id){ id patient { name } } }",
        ),
    ];
    let writes: Vec<(&str, &str, Value)> = vec![
        (
            "postNote",
            POST_NOTE,
            json!({ "i": note_input(room, "部外者") }),
        ),
        (
            "editNote",
            EDIT_NOTE,
            json!({ "id": note["id"], "b": "部外者の編集" }),
        ),
        (
            "deleteNote",
            DELETE_NOTE,
            json!({ "id": note["id"], "r": "部外者の削除" }),
        ),
        ("markRead", MARK_READ, json!({ "r": room, "n": note["id"] })),
        (
            "recordVitals",
            RECORD_VITALS,
            json!({ "i": { "roomId": room, "measuredAt": now, "pulsePerMin": 80 } }),
        ),
        (
            "updatePatient",
            UPDATE_PATIENT,
            json!({ "r": room, "p": patient("部外 者", "ブガイ シャ", "1950-01-01") }),
        ),
        (
            "updateCareInfo",
            UPDATE_CARE,
            json!({ "r": room, "k": "ADL", "c": "部外者", "v": null }),
        ),
    ];
    for (who, client, code) in [
        ("a same-tenant non-member", &outsider_c, "FORBIDDEN"),
        ("the CITY_ADMIN", &w.k.city, "FORBIDDEN"),
        ("another tenant's CITY_ADMIN", &minami_c, "NOT_FOUND"),
    ] {
        for (name, query) in &reads {
            let resp = client.graphql(query, json!({ "id": room })).await;
            expect_code(&resp, code, &format!("{who}: {name}"));
            let field = name.strip_prefix("Room.").unwrap();
            assert!(
                resp.data()["room"][field].is_null(),
                "{who}: {name} leaked: {}",
                resp.body
            );
        }
        for (name, query, vars) in &writes {
            let resp = client.graphql(query, vars.clone()).await;
            expect_code(&resp, code, &format!("{who}: {name}"));
        }
        let resp = upload(client, room, "x.jpg", "image/jpeg", &jpeg(300)).await;
        expect_code(&resp, code, &format!("{who}: uploadAttachment"));
    }

    // Nothing changed.
    let seen = read_note(&w.doc_c, room, str_of(&note["id"])).await;
    assert_eq!(seen["body"], "診察しました");
    assert!(seen["deletedAt"].is_null());
    assert_eq!(readers(&seen), BTreeMap::new());
    assert_eq!(notes_total(&w.doc_c, room).await, 1);
    let vitals = w.doc_c.graphql(VITALS, json!({ "id": room, "f": 5 })).await;
    assert_eq!(vitals.ok()["room"]["vitals"]["totalCount"], 0);
    let care = w.doc_c.graphql(CARE_INFO, json!({ "id": room })).await;
    assert_eq!(care.ok()["room"]["careInfo"], json!([]));
    let patient_now = w
        .doc_c
        .graphql(ROOM_PATIENT_LABEL, json!({ "id": room }))
        .await;
    assert_eq!(patient_now.ok()["room"]["patient"]["name"], "山田 太郎");
    let attachments = sql_count(
        &w.k.app,
        "SELECT COUNT(*) FROM attachments WHERE room_id = $1",
        vec![uuid(room).into()],
    )
    .await;
    assert_eq!(attachments, 0);
}

#[tokio::test]
async fn closing_closed_and_consentless_rooms_refuse_writes_but_members_still_read() {
    let w = Ward::new().await;
    let room = w.room.as_str();
    let note = post_ok(&w.doc_c, room, "最後の訪問").await;
    let now = tokyo(Utc::now());
    w.doc_c
        .graphql(
            RECORD_VITALS,
            json!({ "i": { "roomId": room, "measuredAt": now, "pulsePerMin": 64 } }),
        )
        .await
        .ok();
    w.doc_c
        .graphql(
            UPDATE_CARE,
            json!({ "r": room, "k": "ADL", "c": "全介助", "v": null }),
        )
        .await
        .ok();
    // `care` is the expected version that would be right if the room were open.
    let writes =
        |room: &str, note: &Value, care: Value| -> Vec<(&'static str, &'static str, Value)> {
            vec![
                (
                    "postNote",
                    POST_NOTE,
                    json!({ "i": note_input(room, "閉じた後") }),
                ),
                (
                    "editNote",
                    EDIT_NOTE,
                    json!({ "id": note["id"], "b": "閉じた後の編集" }),
                ),
                (
                    "deleteNote",
                    DELETE_NOTE,
                    json!({ "id": note["id"], "r": "閉じた後の削除" }),
                ),
                (
                    "recordVitals",
                    RECORD_VITALS,
                    json!({ "i": { "roomId": room, "measuredAt": now, "pulsePerMin": 80 } }),
                ),
                (
                    "updatePatient",
                    UPDATE_PATIENT,
                    json!({ "r": room, "p": patient("山田 太郎", "ヤマダ タロウ", "1940-05-02") }),
                ),
                (
                    "updateCareInfo",
                    UPDATE_CARE,
                    json!({ "r": room, "k": "ADL", "c": "一部介助", "v": care }),
                ),
            ]
        };

    // CLOSED by the city.
    let closed =
        w.k.city
            .graphql(CLOSE_ROOM, json!({ "r": room, "e": "ご逝去" }))
            .await;
    assert_eq!(closed.ok()["closeRoom"]["status"], "CLOSED");
    for (name, query, vars) in writes(room, &note, json!(1)) {
        expect_code(
            &w.doc_c.graphql(query, vars).await,
            "CONFLICT",
            &format!("{name} in a CLOSED room"),
        );
    }
    expect_code(
        &upload(&w.doc_c, room, "late.jpg", "image/jpeg", &jpeg(300)).await,
        "CONFLICT",
        "uploadAttachment in a CLOSED room",
    );
    // Reads and markRead still work.
    let seen = read_note(&w.nurse_c, room, str_of(&note["id"])).await;
    assert_eq!(seen["body"], "最後の訪問");
    let vitals = w
        .nurse_c
        .graphql(VITALS, json!({ "id": room, "f": 5 }))
        .await;
    assert_eq!(vitals.ok()["room"]["vitals"]["totalCount"], 1);
    let care = w.nurse_c.graphql(CARE_INFO, json!({ "id": room })).await;
    assert_eq!(care.ok()["room"]["careInfo"][0]["content"], "全介助");
    assert_eq!(unread(&w.nurse_c, room).await, 1);
    let marked = mark_read(&w.nurse_c, room, &note).await;
    assert_eq!(
        marked.ok()["markRead"],
        0,
        "markRead works in a CLOSED room"
    );
    assert_eq!(unread(&w.nurse_c, room).await, 0);
    let resp = w
        .nurse_c
        .get(&format!("/fhir/rooms/{room}/Observation"))
        .await;
    assert_eq!(resp.status(), 200, "the export is a read");

    // CLOSING: a member asked for the end of service.
    let closing = w
        .second_room(&[(&w.doc, &w.doc_c), (&w.nurse, &w.nurse_c)])
        .await;
    let early = post_ok(&w.nurse_c, &closing, "訪問終了予定").await;
    let asked = w
        .doc_c
        .graphql(
            REQUEST_CLOSURE,
            json!({ "r": closing, "why": "サービス終了" }),
        )
        .await;
    asked.ok();
    let status = w
        .doc_c
        .graphql(
            "query($id:ID!){ room(id:$id){ status } }",
            json!({ "id": closing }),
        )
        .await;
    assert_eq!(status.ok()["room"]["status"], "CLOSING");
    for (name, query, vars) in writes(&closing, &early, Value::Null) {
        let client = if name == "editNote" || name == "deleteNote" {
            &w.nurse_c
        } else {
            &w.doc_c
        };
        expect_code(
            &client.graphql(query, vars).await,
            "CONFLICT",
            &format!("{name} in a CLOSING room"),
        );
    }
    let marked = mark_read(&w.doc_c, &closing, &early).await;
    assert!(
        marked.errors().is_empty(),
        "markRead in a CLOSING room: {}",
        marked.body
    );

    // Every consent withdrawn: read-only.
    let consentless = room_with(
        &w.k.city,
        patient("鈴木 次郎", "スズキ ジロウ", "1945-12-31"),
        &[(&w.doc, &w.doc_c)],
        &[],
    )
    .await;
    let consentless_id = id_of(&consentless);
    let before = post_ok(&w.doc_c, &consentless_id, "同意撤回前").await;
    w.k.city
        .graphql(
            WITHDRAW_CONSENT,
            json!({ "id": consentless["consents"][0]["id"] }),
        )
        .await
        .ok();
    for (name, query, vars) in writes(&consentless_id, &before, Value::Null) {
        expect_code(
            &w.doc_c.graphql(query, vars).await,
            "CONFLICT",
            &format!("{name} with every consent withdrawn"),
        );
    }
    expect_code(
        &upload(
            &w.doc_c,
            &consentless_id,
            "late.jpg",
            "image/jpeg",
            &jpeg(300),
        )
        .await,
        "CONFLICT",
        "uploadAttachment with every consent withdrawn",
    );
    assert_eq!(
        read_note(&w.doc_c, &consentless_id, str_of(&before["id"])).await["body"],
        "同意撤回前"
    );
}

// ---------------------------------------------------------------------------------------------
// 10. audit
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_content_read_and_write_is_audited_with_the_room_id() {
    let w = Ward::new().await;
    let room = w.room.as_str();
    let doc = &w.doc_c;
    // Writes.
    let attachment = upload_ok(doc, room, "audit.jpg").await;
    let mut input = note_input(room, "監査対象");
    input["attachmentIds"] = json!([attachment]);
    let note = post(doc, input).await;
    let note = note.ok()["postNote"].clone();
    doc.graphql(
        EDIT_NOTE,
        json!({ "id": note["id"], "b": "監査対象（訂正）" }),
    )
    .await
    .ok();
    let other = post_ok(&w.nurse_c, room, "看護記録").await;
    mark_read(doc, room, &other).await.ok();
    let to_delete = post_ok(doc, room, "削除予定").await;
    doc.graphql(DELETE_NOTE, json!({ "id": to_delete["id"], "r": "誤記" }))
        .await
        .ok();
    doc.graphql(
        RECORD_VITALS,
        json!({ "i": { "roomId": room, "measuredAt": tokyo(Utc::now()), "pulsePerMin": 66 } }),
    )
    .await
    .ok();
    doc.graphql(
        UPDATE_PATIENT,
        json!({ "r": room, "p": patient("山田 太郎", "ヤマダ タロウ", "1940-05-01") }),
    )
    .await
    .ok();
    doc.graphql(
        UPDATE_CARE,
        json!({ "r": room, "k": "CARE_PLAN", "c": "週2回訪問", "v": null }),
    )
    .await
    .ok();
    // Reads.
    doc.graphql(
        "query($id:ID!){ room(id:$id){ id patient { name } notes(first: 5){ totalCount } vitals(first: 5){ totalCount } careInfo { kind } } }",
        json!({ "id": room }),
    )
    .await
    .ok();
    assert_eq!(
        doc.get(&format!("/attachments/{attachment}"))
            .await
            .status(),
        200
    );
    assert_eq!(
        doc.get(&format!("/fhir/rooms/{room}/Observation"))
            .await
            .status(),
        200
    );

    let events = room_events(&w.k.city, room).await;
    for e in &events {
        assert_eq!(e["roomId"], room, "filtered by room: {e}");
    }
    let actions = [
        "room.read",
        "notes.read",
        "vitals.read",
        "patient.read",
        "careinfo.read",
        "attachment.download",
        "fhir.export",
        "note.create",
        "note.edit",
        "note.delete",
        "note.read_marker",
        "attachment.upload",
        "vitals.record",
        "patient.update",
        "careinfo.update",
    ];
    for action in actions {
        assert!(
            events.iter().any(|e| e["action"] == action
                && e["actor"]["id"] == w.doc.id.to_string()
                && e["outcome"] == "ALLOWED"),
            "no ALLOWED {action} by doc with roomId {room}; events: {}",
            events
                .iter()
                .map(|e| format!("{}:{}", e["action"], e["outcome"]))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let report =
        w.k.city
            .graphql(ACCESS_REPORT_FULL, json!({ "r": room }))
            .await;
    let report = report.ok()["roomAccessReport"].as_array().unwrap().clone();
    for action in ["notes.read", "vitals.read", "patient.read", "careinfo.read"] {
        assert!(
            report
                .iter()
                .any(|e| e["action"] == action && e["actor"]["id"] == w.doc.id.to_string()),
            "{action} by doc missing from roomAccessReport"
        );
    }
    assert!(report.iter().all(|e| e["roomId"] == room));
}

// ---------------------------------------------------------------------------------------------
// 11. load
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_clients_posting_a_hundred_notes_each_with_retries_leave_exactly_five_thousand() {
    const CLIENTS: usize = 50;
    const NOTES: usize = 100;
    let k = Kita::new().await;
    // Five members, ten connections each: every client is its own TLS connection.
    let mut members = Vec::new();
    for i in 0..5 {
        let facility = if i % 2 == 0 { k.a } else { k.b };
        members.push(k.staff(&format!("member{i}"), facility).await);
    }
    let pairs: Vec<(&Person, &TestClient)> = members.iter().map(|(p, c)| (p, c)).collect();
    let room = id_of(&room_with(&k.city, yamada(), &pairs, &[]).await);

    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (person, session) = &members[c % members.len()];
        let client = k
            .app
            .client_for(person)
            .with_token(session.token.clone().unwrap());
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..NOTES {
                let input = json!({
                    "roomId": room,
                    "body": format!("client {c} note {n}"),
                    "clientMutationId": format!("load-{c}-{n}"),
                });
                if n % 10 == 9 {
                    // A retry racing the original: both answers name the same note.
                    let (a, b) = tokio::join!(post(&client, input.clone()), post(&client, input));
                    assert_eq!(
                        a.ok()["postNote"]["id"],
                        b.ok()["postNote"]["id"],
                        "client {c} note {n}: a retry made a second note"
                    );
                } else {
                    post(&client, input).await.ok();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let took = started.elapsed();
    eprintln!(
        "load: {} notes ({} requests) in {took:?}",
        CLIENTS * NOTES,
        CLIENTS * NOTES * 11 / 10
    );

    let stored = sql_count(
        &k.app,
        "SELECT COUNT(*) FROM notes WHERE room_id = $1",
        vec![uuid(&room).into()],
    )
    .await;
    assert_eq!(stored, (CLIENTS * NOTES) as i64);
    let keys = sql_count(
        &k.app,
        "SELECT COUNT(DISTINCT client_mutation_id) FROM notes WHERE room_id = $1",
        vec![uuid(&room).into()],
    )
    .await;
    assert_eq!(keys, (CLIENTS * NOTES) as i64);
    assert_eq!(
        notes_total(&members[0].1, &room).await,
        (CLIENTS * NOTES) as i64
    );
}
