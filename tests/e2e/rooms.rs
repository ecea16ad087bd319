//! Issue 6, end to end: patient rooms. The city opens a room (patient, consent, invitations),
//! or approves a staff member's request for one; invitees see a masked label, accept, decline,
//! or let the invitation expire; members read the patient and ask for members or for the end of
//! service; the city revokes, removes, records and withdraws consents, and closes. Suspension
//! ends memberships for good, every action leaves an audit event naming the room, and an
//! invitation accepted and revoked at once has exactly one winner.
//!
//! The exact behaviour is pinned in the issue's spec; `room_permissions` holds the permission
//! matrix and `room_instances` the two-instance case. Helpers marked `pub(crate)` are shared
//! with them. Runs on both databases (`RENKEI_TEST_DB=sqlite|postgres`).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, FixedOffset, NaiveDate};
use sea_orm::{
    ActiveModelTrait as _, ConnectionTrait as _, EntityTrait as _, IntoActiveModel as _,
};
use sea_orm::{DbBackend, Set, Statement};
use serde_json::{Value, json};
use uuid::Uuid;

use entity::kinds::{AccountStatus, Role};
use renkei_tests::fixtures::identity_from_pkcs12;
use renkei_tests::{Gql, Person, TestApp, TestClient, TestOptions, spawn_app_with};

// ---------------------------------------------------------------------------------------------
// queries
// ---------------------------------------------------------------------------------------------

pub(crate) const OPEN_ROOM: &str = "mutation($p:PatientInput!,$c:ConsentInput!,$i:[ID!]!){ openRoom(patient:$p, consent:$c, inviteUserIds:$i){ id status openedAt closedAt endReason patientLabel members { user { id } } invitations { id status patientLabel createdAt expiresAt invitee { id } invitedBy { id } } consents { id consenter consenterName relationship consentedOn withdrawnAt recordedBy { id } } } }";
/// What the city sees of a room: everything but the clinical content.
pub(crate) const ROOM_CITY_VIEW: &str = "query($id:ID!){ room(id:$id){ id status openedAt closedAt endReason patientLabel members { user { id } joinedAt invitedBy { id } } invitations { id status createdAt expiresAt invitee { id } invitedBy { id } } consents { id consenter relationship withdrawnAt } } }";
/// What a member sees: the patient, members, consents and notes.
pub(crate) const ROOM_MEMBER_VIEW: &str = "query($id:ID!){ room(id:$id){ id status closedAt endReason patientLabel patient { name nameKana birthDate sex phone careLevel } members { user { id } joinedAt invitedBy { id } } consents { id withdrawnAt } notes(first: 20){ totalCount edges { node { id category body author { id } } } } } }";
pub(crate) const ROOM_SUMMARY: &str =
    "query($id:ID!){ room(id:$id){ id status openedAt closedAt endReason patientLabel } }";
pub(crate) const ROOM_PATIENT: &str = "query($id:ID!){ room(id:$id){ id patient { name } } }";
pub(crate) const ROOMS: &str = "query($n:Int,$a:String,$s:RoomStatus){ rooms(first:$n, after:$a, status:$s){ totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id status patientLabel } } } }";
pub(crate) const MY_INVITATIONS: &str = "{ myInvitations { id status patientLabel createdAt expiresAt room { id patientLabel } invitee { id } invitedBy { id } } }";
pub(crate) const INVITE: &str = "mutation($r:ID!,$u:[ID!]!){ inviteToRoom(roomId:$r, userIds:$u){ id status invitee { id } invitedBy { id } } }";
pub(crate) const REVOKE_INVITATION: &str =
    "mutation($id:ID!){ revokeInvitation(id:$id){ id status } }";
pub(crate) const ACCEPT: &str = "mutation($id:ID!){ acceptInvitation(id:$id){ id status } }";
pub(crate) const DECLINE: &str = "mutation($id:ID!){ declineInvitation(id:$id){ id status } }";
pub(crate) const REMOVE_MEMBER: &str = "mutation($r:ID!,$u:ID!,$why:String!){ removeRoomMember(roomId:$r, userId:$u, reason:$why){ id status members { user { id } } } }";
pub(crate) const CLOSE_ROOM: &str = "mutation($r:ID!,$e:String!){ closeRoom(roomId:$r, endReason:$e){ id status closedAt endReason } }";
pub(crate) const RECORD_CONSENT: &str = "mutation($r:ID!,$c:ConsentInput!){ recordConsent(roomId:$r, consent:$c){ id consenter consenterName relationship consentedOn withdrawnAt recordedBy { id } } }";
pub(crate) const WITHDRAW_CONSENT: &str =
    "mutation($id:ID!){ withdrawConsent(consentId:$id){ id withdrawnAt } }";
pub(crate) const REQUEST_ROOM: &str = "mutation($p:PatientInput!,$c:ConsentInput!,$m:[ID!]!){ requestRoom(patient:$p, consent:$c, memberIds:$m){ id kind status submittedBy { id } } }";
pub(crate) const REQUEST_MEMBERS: &str = "mutation($r:ID!,$u:[ID!]!){ requestRoomMembers(roomId:$r, userIds:$u){ id kind status submittedBy { id } } }";
pub(crate) const REQUEST_CLOSURE: &str = "mutation($r:ID!,$why:String!){ requestRoomClosure(roomId:$r, reason:$why){ id kind status submittedBy { id } } }";
pub(crate) const REVIEW: &str = "mutation($id:ID!,$a:Boolean!,$n:String){ reviewApplication(id:$id, approve:$a, note:$n){ application { id kind status } room { id status patientLabel invitations { id status invitee { id } } } } }";
pub(crate) const APPLICATIONS: &str = "query($k:ApplicationKind,$s:ApplicationStatus){ applications(first: 100, kind:$k, status:$s){ totalCount edges { node { id kind status } } } }";
pub(crate) const AUDIT: &str = "query($f:AuditFilter,$n:Int,$a:String){ auditEvents(filter:$f, first:$n, after:$a){ totalCount pageInfo { hasNextPage endCursor } edges { node { id action roomId outcome targetType targetId actor { id } } } } }";
pub(crate) const ACCESS_REPORT: &str =
    "query($r:ID!){ roomAccessReport(roomId:$r){ id action roomId outcome actor { id } } }";
const STATISTICS: &str = "{ tenantStatistics { roomsByStatus { key count } } }";
const SUSPEND_USER: &str =
    "mutation($id:ID!,$r:String!){ suspendUser(id:$id, reason:$r){ id status } }";
const REACTIVATE_USER: &str = "mutation($id:ID!){ reactivateUser(id:$id){ id status } }";
const ISSUE: &str = "mutation($u:ID!,$d:String!){ issueCertificate(userId:$u, deviceLabel:$d){ certificate { id fingerprintSha256 } pkcs12Base64 pkcs12Password } }";
const SUBMIT_SUSPENSION: &str = "mutation($u:[ID!]!,$r:String!){ submitSuspension(userIds:$u, reason:$r, wholeFacility: false){ id kind status } }";

// ---------------------------------------------------------------------------------------------
// helpers (shared with room_permissions and room_instances)
// ---------------------------------------------------------------------------------------------

pub(crate) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// A tenant `kita` with two facilities and the city's session.
pub(crate) struct Kita {
    pub(crate) app: TestApp,
    pub(crate) admin: Person,
    pub(crate) city: TestClient,
    /// A clinic.
    pub(crate) a: Uuid,
    /// A second facility.
    pub(crate) b: Uuid,
}

impl Kita {
    pub(crate) async fn new() -> Kita {
        Kita::with_env(&[]).await
    }

    pub(crate) async fn with_env(pairs: &[(&str, &str)]) -> Kita {
        let app = spawn_app_with(TestOptions {
            env: env(pairs),
            ..Default::default()
        })
        .await;
        let admin = app.create_tenant("kita").await;
        let a = app.create_facility(admin.tenant_id, "Kita Clinic").await;
        let b = app.create_facility(admin.tenant_id, "Kita Care").await;
        let city = app.ready_session(&admin).await;
        Kita {
            app,
            admin,
            city,
            a,
            b,
        }
    }

    /// A user of the tenant (no session).
    pub(crate) async fn user(&self, login: &str, role: Role, facility: Uuid) -> Person {
        self.app
            .create_user(&self.admin, login, role, Some(facility))
            .await
    }

    /// A STAFF member of `facility` with a working session.
    pub(crate) async fn staff(&self, login: &str, facility: Uuid) -> (Person, TestClient) {
        self.person(login, Role::Staff, facility).await
    }

    pub(crate) async fn person(
        &self,
        login: &str,
        role: Role,
        facility: Uuid,
    ) -> (Person, TestClient) {
        let person = self.user(login, role, facility).await;
        let client = self.app.ready_session(&person).await;
        (person, client)
    }
}

pub(crate) fn str_of(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, got {value}"))
}

pub(crate) fn id_of(value: &Value) -> String {
    str_of(&value["id"]).to_string()
}

/// Today in the tenants' time zone (every test tenant is in Asia/Tokyo).
pub(crate) fn today() -> NaiveDate {
    chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Tokyo)
        .date_naive()
}

pub(crate) fn days_ago(n: i64) -> String {
    (today() - chrono::Duration::days(n)).to_string()
}

/// A full patient record.
pub(crate) fn patient(name: &str, kana: &str, birth: &str) -> Value {
    json!({
        "name": name,
        "nameKana": kana,
        "birthDate": birth,
        "sex": "MALE",
        "address": "北区中央2-3-4",
        "phone": "03-1234-5678",
        "careLevel": "CARE_2",
        "keyPerson": "山田 花子（長女）090-1111-2222",
        "primaryPhysician": "北 一郎",
        "careManager": "南 二郎",
        "notes": "独居、日中は長女が訪問",
    })
}

/// 山田 太郎, born 1940-05-01: the spec's example.
pub(crate) fn yamada() -> Value {
    patient("山田 太郎", "ヤマダ タロウ", "1940-05-01")
}

/// A patient's own consent, given a month ago.
pub(crate) fn consent() -> Value {
    json!({ "consenter": "PATIENT", "consenterName": "山田 太郎", "consentedOn": days_ago(30) })
}

/// A family member's consent, given yesterday.
pub(crate) fn family_consent() -> Value {
    json!({
        "consenter": "FAMILY",
        "consenterName": "山田 花子",
        "relationship": "長女",
        "consentedOn": days_ago(1),
    })
}

pub(crate) fn ids(people: &[&Person]) -> Vec<String> {
    people.iter().map(|p| p.id.to_string()).collect()
}

/// Opens a room for `patient` inviting `invitees`; returns the `openRoom` answer.
pub(crate) async fn open_room(city: &TestClient, patient: Value, invitees: &[&Person]) -> Value {
    let resp = city
        .graphql(
            OPEN_ROOM,
            json!({ "p": patient, "c": consent(), "i": ids(invitees) }),
        )
        .await;
    resp.ok()["openRoom"].clone()
}

/// The id of `person`'s invitation in an answer listing the room's `invitations`.
pub(crate) fn invitation_for(room: &Value, person: &Person) -> String {
    let list = room["invitations"]
        .as_array()
        .unwrap_or_else(|| panic!("no invitations in {room}"));
    let mine: Vec<&Value> = list
        .iter()
        .filter(|i| i["invitee"]["id"] == person.id.to_string())
        .collect();
    assert!(
        !mine.is_empty(),
        "no invitation for {}: {room}",
        person.login_id
    );
    id_of(mine[mine.len() - 1])
}

/// Opens a room whose `members` accepted their invitations and whose `invitees` have not
/// answered yet; returns the `openRoom` answer.
pub(crate) async fn room_with(
    city: &TestClient,
    patient: Value,
    members: &[(&Person, &TestClient)],
    invitees: &[&Person],
) -> Value {
    let mut all: Vec<&Person> = members.iter().map(|(p, _)| *p).collect();
    all.extend_from_slice(invitees);
    let room = open_room(city, patient, &all).await;
    for (person, client) in members {
        let resp = client
            .graphql(ACCEPT, json!({ "id": invitation_for(&room, person) }))
            .await;
        assert_eq!(resp.ok()["acceptInvitation"]["id"], room["id"]);
    }
    room
}

pub(crate) async fn city_view(city: &TestClient, room: &str) -> Value {
    let resp = city.graphql(ROOM_CITY_VIEW, json!({ "id": room })).await;
    resp.ok()["room"].clone()
}

pub(crate) fn member_ids(room: &Value) -> BTreeSet<String> {
    room["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in {room}"))
        .iter()
        .map(|m| str_of(&m["user"]["id"]).to_string())
        .collect()
}

/// invitee id -> statuses of its invitations, oldest first (as listed).
pub(crate) fn invitation_statuses(room: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in room["invitations"]
        .as_array()
        .unwrap_or_else(|| panic!("no invitations in {room}"))
    {
        out.entry(str_of(&i["invitee"]["id"]).to_string())
            .or_default()
            .push(str_of(&i["status"]).to_string());
    }
    out
}

pub(crate) fn status_of_invitation(room: &Value, invitation: &str) -> String {
    room["invitations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == invitation)
        .map(|i| str_of(&i["status"]).to_string())
        .unwrap_or_else(|| panic!("invitation {invitation} not listed in {room}"))
}

pub(crate) fn expect_code(resp: &Gql, code: &str, what: &str) {
    assert_eq!(
        resp.code(),
        Some(code),
        "{what}: expected {code}, got {}",
        resp.body
    );
}

pub(crate) fn expect_bad_input(resp: &Gql, field: &str, what: &str) {
    assert_eq!(
        resp.code(),
        Some("BAD_USER_INPUT"),
        "{what}: expected BAD_USER_INPUT, got {}",
        resp.body
    );
    assert_eq!(
        resp.field(),
        Some(field),
        "{what}: extensions.field should be {field}: {}",
        resp.body
    );
}

/// The path of the first error, as strings (`["room", "patient"]`).
pub(crate) fn error_path(resp: &Gql) -> Vec<String> {
    resp.errors()
        .first()
        .and_then(|e| e["path"].as_array())
        .map(|p| {
            p.iter()
                .map(|s| match s {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Room ids of a `rooms` answer, in order.
pub(crate) fn room_ids(resp: &Gql) -> Vec<String> {
    resp.ok()["rooms"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("no edges in {}", resp.body))
        .iter()
        .map(|e| str_of(&e["node"]["id"]).to_string())
        .collect()
}

pub(crate) async fn my_invitations(client: &TestClient) -> Vec<Value> {
    let resp = client.graphql(MY_INVITATIONS, json!({})).await;
    resp.ok()["myInvitations"].as_array().unwrap().clone()
}

pub(crate) fn parse_time(value: &Value) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(str_of(value))
        .unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {value}"))
}

/// Moves an invitation's expiry into the past, straight in the `invitations` table.
pub(crate) async fn expire_invitation(app: &TestApp, invitation: &str) {
    let backend = app.db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => "UPDATE invitations SET expires_at = $1 WHERE id = $2",
        _ => "UPDATE invitations SET expires_at = ? WHERE id = ?",
    };
    let past = chrono::Utc::now() - chrono::Duration::minutes(5);
    let id = Uuid::parse_str(invitation).unwrap();
    let done = app
        .db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [past.into(), id.into()],
        ))
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1, "invitation {invitation} not found");
}

/// Sets a user's status straight in the database (no API side effects).
pub(crate) async fn set_status(app: &TestApp, user: Uuid, status: AccountStatus) {
    let row = entity::user::Entity::find_by_id(user)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut active = row.into_active_model();
    active.status = Set(status);
    if status == AccountStatus::Locked {
        active.failed_login_count = Set(5);
        active.locked_until = Set(Some(chrono::Utc::now() + chrono::Duration::hours(1)));
    }
    active.update(&app.db).await.unwrap();
}

/// Every audit event of one room, newest first (as the city reads them).
pub(crate) async fn room_events(city: &TestClient, room: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let resp = city
            .graphql(
                AUDIT,
                json!({ "f": { "roomId": room }, "n": 500, "a": after }),
            )
            .await;
        let conn = &resp.ok()["auditEvents"];
        for edge in conn["edges"].as_array().unwrap() {
            out.push(edge["node"].clone());
        }
        if conn["pageInfo"]["hasNextPage"] != true {
            return out;
        }
        after = Some(str_of(&conn["pageInfo"]["endCursor"]).to_string());
    }
}

fn counts(list: &Value) -> BTreeMap<String, i64> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|c| (str_of(&c["key"]).to_string(), c["count"].as_i64().unwrap()))
        .collect()
}

async fn rooms_total(client: &TestClient) -> i64 {
    let resp = client.graphql(ROOMS, json!({ "n": 100 })).await;
    resp.ok()["rooms"]["totalCount"].as_i64().unwrap()
}

async fn review(city: &TestClient, application: &str, approve: bool) -> Value {
    let resp = city
        .graphql(
            REVIEW,
            json!({ "id": application, "a": approve, "n": (!approve).then_some("要件を満たしていません") }),
        )
        .await;
    resp.ok()["reviewApplication"].clone()
}

// ---------------------------------------------------------------------------------------------
// 1. validation
// ---------------------------------------------------------------------------------------------

/// Changes a valid patient and consent into the case under test.
type Breaker = Box<dyn Fn(&mut Value, &mut Value)>;

#[tokio::test]
async fn open_room_validates_the_patient_and_the_consent_field_by_field() {
    let k = Kita::new().await;
    let nurse = k.user("nurse", Role::Staff, k.a).await;
    let tomorrow = (today() + chrono::Duration::days(1)).to_string();
    let today_s = today().to_string();

    let cases: Vec<(&str, &str, Breaker)> = vec![
        (
            "an empty name",
            "patient.name",
            Box::new(|p, _| p["name"] = json!("")),
        ),
        (
            "a blank name",
            "patient.name",
            Box::new(|p, _| p["name"] = json!("   ")),
        ),
        (
            "a name without a space",
            "patient.name",
            Box::new(|p, _| p["name"] = json!("山田太郎")),
        ),
        (
            "a name of 101 characters",
            "patient.name",
            Box::new(|p, _| p["name"] = json!(format!("山田 {}", "郎".repeat(98)))),
        ),
        (
            "kana in hiragana",
            "patient.nameKana",
            Box::new(|p, _| p["nameKana"] = json!("やまだ たろう")),
        ),
        (
            "kana in latin letters",
            "patient.nameKana",
            Box::new(|p, _| p["nameKana"] = json!("Yamada Taro")),
        ),
        (
            "kana in half-width katakana",
            "patient.nameKana",
            Box::new(|p, _| p["nameKana"] = json!("ﾔﾏﾀﾞ ﾀﾛｳ")),
        ),
        (
            "kana mixed with kanji",
            "patient.nameKana",
            Box::new(|p, _| p["nameKana"] = json!("ヤマダ 太郎")),
        ),
        (
            "an empty kana",
            "patient.nameKana",
            Box::new(|p, _| p["nameKana"] = json!("")),
        ),
        (
            "born today",
            "patient.birthDate",
            Box::new(move |p, _| p["birthDate"] = json!(today().to_string())),
        ),
        (
            "born tomorrow",
            "patient.birthDate",
            Box::new(|p, _| {
                p["birthDate"] = json!((today() + chrono::Duration::days(1)).to_string())
            }),
        ),
        (
            "born before 1900",
            "patient.birthDate",
            Box::new(|p, _| p["birthDate"] = json!("1899-12-31")),
        ),
        (
            "a phone that is no Japanese number",
            "patient.phone",
            Box::new(|p, _| p["phone"] = json!("12345")),
        ),
        (
            "a phone with letters",
            "patient.phone",
            Box::new(|p, _| p["phone"] = json!("03-ABCD-5678")),
        ),
        (
            "an empty consenter name",
            "consent.consenterName",
            Box::new(|_, c| c["consenterName"] = json!("")),
        ),
        (
            "a family consent without relationship",
            "consent.relationship",
            Box::new(|_, c| {
                c["consenter"] = json!("FAMILY");
                c["consenterName"] = json!("山田 花子");
                c["relationship"] = Value::Null;
            }),
        ),
        (
            "a guardian's consent without relationship",
            "consent.relationship",
            Box::new(|_, c| {
                c["consenter"] = json!("GUARDIAN");
                c["consenterName"] = json!("成年後見人 佐藤");
                c.as_object_mut().unwrap().remove("relationship");
            }),
        ),
        (
            "a family consent with an empty relationship",
            "consent.relationship",
            Box::new(|_, c| {
                c["consenter"] = json!("FAMILY");
                c["relationship"] = json!("");
            }),
        ),
        (
            "a consent given tomorrow",
            "consent.consentedOn",
            Box::new(move |_, c| c["consentedOn"] = json!(tomorrow.clone())),
        ),
    ];
    for (what, field, breaker) in &cases {
        let mut p = yamada();
        let mut c = consent();
        breaker(&mut p, &mut c);
        let resp = k
            .city
            .graphql(OPEN_ROOM, json!({ "p": p, "c": c, "i": ids(&[&nurse]) }))
            .await;
        expect_bad_input(&resp, field, what);
    }
    assert_eq!(rooms_total(&k.city).await, 0, "no room for refused input");

    // Invitee ids: unknown and other tenant's are NOT_FOUND, a suspended user CONFLICT.
    let other_admin = k.app.create_tenant("minami").await;
    let stranger = k
        .app
        .create_user(&other_admin, "stranger", Role::Staff, None)
        .await;
    let suspended = k.user("suspended", Role::Staff, k.a).await;
    set_status(&k.app, suspended.id, AccountStatus::Suspended).await;
    for (what, invitee, code) in [
        ("an unknown user", Uuid::new_v4(), "NOT_FOUND"),
        ("another tenant's user", stranger.id, "NOT_FOUND"),
        ("a suspended user", suspended.id, "CONFLICT"),
    ] {
        let resp = k
            .city
            .graphql(
                OPEN_ROOM,
                json!({ "p": yamada(), "c": consent(), "i": [nurse.id.to_string(), invitee.to_string()] }),
            )
            .await;
        expect_code(&resp, code, what);
    }
    assert_eq!(
        rooms_total(&k.city).await,
        0,
        "no room for refused invitees"
    );

    // The edges that are fine: full-width spaces, 100 characters, 1900-01-01, a mobile number, a consent given
    // today, a patient's own consent without relationship, only the required fields.
    let accepted: Vec<(&str, Value, Value)> = vec![
        (
            "full-width spaces",
            patient("佐藤　花子", "サトウ　ハナコ", "1930-02-03"),
            consent(),
        ),
        (
            "a name of exactly 100 characters",
            patient(
                &format!("山田 {}", "郎".repeat(97)),
                "ヤマダ ロウ",
                "1950-01-01",
            ),
            consent(),
        ),
        (
            "born on 1900-01-01, a mobile number",
            {
                let mut p = patient("田中 一", "タナカ ハジメ", "1900-01-01");
                p["phone"] = json!("090-1234-5678");
                p
            },
            consent(),
        ),
        (
            "a consent given today",
            yamada(),
            json!({ "consenter": "PATIENT", "consenterName": "山田 太郎", "consentedOn": today_s }),
        ),
        (
            "a family consent with relationship",
            yamada(),
            family_consent(),
        ),
        (
            "only the required fields",
            json!({ "name": "鈴木 次郎", "nameKana": "スズキ ジロウ", "birthDate": "1945-12-31", "sex": "UNKNOWN" }),
            consent(),
        ),
    ];
    for (what, p, c) in accepted {
        let resp = k
            .city
            .graphql(OPEN_ROOM, json!({ "p": p, "c": c, "i": ids(&[&nurse]) }))
            .await;
        assert!(
            resp.errors().is_empty(),
            "{what}: should be accepted: {}",
            resp.body
        );
        assert_eq!(resp.data()["openRoom"]["status"], "OPEN", "{what}");
    }
    assert_eq!(rooms_total(&k.city).await, 6);

    // The label of a full-width-spaced name still reads `<family> <initial>. (<year>)`.
    let rooms = k.city.graphql(ROOMS, json!({ "n": 10 })).await;
    let labels: BTreeSet<String> = rooms.ok()["rooms"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| str_of(&e["node"]["patientLabel"]).to_string())
        .collect();
    for label in ["佐藤 花. (1930)", "田中 一. (1900)", "鈴木 次. (1945)"] {
        assert!(labels.contains(label), "{label} not in {labels:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. invitations
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn invitations_are_masked_then_accepted_declined_revoked_or_expired() {
    let k = Kita::new().await;
    let (doc, doc_c) = k.staff("doc", k.a).await;
    let (nurse, nurse_c) = k.staff("nurse", k.a).await;
    let (cm, cm_c) = k.staff("cm", k.b).await;
    let (pharm, pharm_c) = k.staff("pharm", k.a).await;

    let room = open_room(&k.city, yamada(), &[&doc, &nurse, &cm, &pharm]).await;
    let room_id = id_of(&room);
    assert_eq!(room["status"], "OPEN");
    assert_eq!(room["patientLabel"], "山田 太. (1940)");
    assert!(room["closedAt"].is_null() && room["endReason"].is_null());
    assert_eq!(
        member_ids(&room),
        BTreeSet::new(),
        "nobody is in before accepting"
    );
    let invitations = room["invitations"].as_array().unwrap();
    assert_eq!(invitations.len(), 4, "{room}");
    for i in invitations {
        assert_eq!(i["status"], "PENDING", "{i}");
        assert_eq!(i["invitedBy"]["id"], k.admin.id.to_string());
        assert_eq!(i["patientLabel"], "山田 太. (1940)");
    }
    let consents = room["consents"].as_array().unwrap();
    assert_eq!(consents.len(), 1);
    assert_eq!(consents[0]["consenter"], "PATIENT");
    assert_eq!(consents[0]["recordedBy"]["id"], k.admin.id.to_string());
    assert!(consents[0]["withdrawnAt"].is_null());

    // The invitee sees a masked label, never the name or the birth date.
    let mine = my_invitations(&doc_c).await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    let invitation = &mine[0];
    assert_eq!(invitation["status"], "PENDING");
    assert_eq!(invitation["patientLabel"], "山田 太. (1940)");
    assert_eq!(invitation["room"]["id"], room_id.as_str());
    assert_eq!(invitation["room"]["patientLabel"], "山田 太. (1940)");
    assert_eq!(invitation["invitee"]["id"], doc.id.to_string());
    assert_eq!(invitation["invitedBy"]["id"], k.admin.id.to_string());
    let text = invitation.to_string();
    assert!(
        !text.contains("太郎") && !text.contains("1940-05-01") && !text.contains("ヤマダ"),
        "{text}"
    );
    let ttl = parse_time(&invitation["expiresAt"]) - parse_time(&invitation["createdAt"]);
    assert!(
        (ttl - chrono::Duration::days(14)).num_seconds().abs() <= 60,
        "invitations last 14 days by default, got {ttl}"
    );
    let seen = doc_c.graphql(ROOM_SUMMARY, json!({ "id": room_id })).await;
    assert_eq!(seen.ok()["room"]["patientLabel"], "山田 太. (1940)");
    assert_eq!(seen.ok()["room"]["status"], "OPEN");
    let patient = doc_c.graphql(ROOM_PATIENT, json!({ "id": room_id })).await;
    expect_code(&patient, "FORBIDDEN", "an invitee reading the patient");
    assert_eq!(error_path(&patient), vec!["room", "patient"]);
    // Checked at the end, so that the rest of the journey runs either way.
    let refused_field = patient;

    // Accept: a member now, reading everything.
    let doc_invitation = id_of(invitation);
    let accepted = doc_c.graphql(ACCEPT, json!({ "id": doc_invitation })).await;
    assert_eq!(accepted.ok()["acceptInvitation"]["id"], room_id.as_str());
    assert!(my_invitations(&doc_c).await.is_empty());
    let view = doc_c
        .graphql(ROOM_MEMBER_VIEW, json!({ "id": room_id }))
        .await;
    let view = &view.ok()["room"];
    assert_eq!(view["patient"]["name"], "山田 太郎");
    assert_eq!(view["patient"]["nameKana"], "ヤマダ タロウ");
    assert_eq!(view["patient"]["birthDate"], "1940-05-01");
    assert_eq!(view["patient"]["phone"], "03-1234-5678");
    let members = view["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["user"]["id"], doc.id.to_string());
    assert_eq!(members[0]["invitedBy"]["id"], k.admin.id.to_string());
    assert!(members[0]["joinedAt"].is_string());
    expect_code(
        &doc_c.graphql(ACCEPT, json!({ "id": doc_invitation })).await,
        "CONFLICT",
        "accepting twice",
    );
    expect_code(
        &doc_c
            .graphql(DECLINE, json!({ "id": doc_invitation }))
            .await,
        "CONFLICT",
        "declining an accepted invitation",
    );

    // Decline: no access, and the answer is final.
    let nurse_invitation = invitation_for(&room, &nurse);
    let declined = nurse_c
        .graphql(DECLINE, json!({ "id": nurse_invitation }))
        .await;
    assert_eq!(declined.ok()["declineInvitation"]["status"], "DECLINED");
    assert!(my_invitations(&nurse_c).await.is_empty());
    expect_code(
        &nurse_c
            .graphql(ROOM_SUMMARY, json!({ "id": room_id }))
            .await,
        "FORBIDDEN",
        "a declined invitee reading the room",
    );
    expect_code(
        &nurse_c
            .graphql(ACCEPT, json!({ "id": nurse_invitation }))
            .await,
        "CONFLICT",
        "accepting after declining",
    );

    // Revoke by the city.
    let cm_invitation = invitation_for(&room, &cm);
    let revoked = k
        .city
        .graphql(REVOKE_INVITATION, json!({ "id": cm_invitation }))
        .await;
    assert_eq!(revoked.ok()["revokeInvitation"]["status"], "REVOKED");
    assert!(my_invitations(&cm_c).await.is_empty());
    expect_code(
        &cm_c.graphql(ACCEPT, json!({ "id": cm_invitation })).await,
        "CONFLICT",
        "accepting a revoked invitation",
    );
    expect_code(
        &cm_c.graphql(ROOM_SUMMARY, json!({ "id": room_id })).await,
        "FORBIDDEN",
        "a revoked invitee reading the room",
    );
    for (what, id) in [
        ("revoking twice", &cm_invitation),
        ("revoking an accepted invitation", &doc_invitation),
        ("revoking a declined invitation", &nurse_invitation),
    ] {
        expect_code(
            &k.city.graphql(REVOKE_INVITATION, json!({ "id": id })).await,
            "CONFLICT",
            what,
        );
    }

    // Expiry.
    let pharm_invitation = invitation_for(&room, &pharm);
    assert_eq!(my_invitations(&pharm_c).await.len(), 1);
    expire_invitation(&k.app, &pharm_invitation).await;
    assert!(
        my_invitations(&pharm_c).await.is_empty(),
        "an expired invitation is not listed"
    );
    expect_code(
        &pharm_c
            .graphql(ACCEPT, json!({ "id": pharm_invitation }))
            .await,
        "CONFLICT",
        "accepting an expired invitation",
    );
    expect_code(
        &pharm_c
            .graphql(DECLINE, json!({ "id": pharm_invitation }))
            .await,
        "CONFLICT",
        "declining an expired invitation",
    );
    expect_code(
        &pharm_c
            .graphql(ROOM_SUMMARY, json!({ "id": room_id }))
            .await,
        "FORBIDDEN",
        "an expired invitee reading the room",
    );

    // The city's view of it all.
    let view = city_view(&k.city, &room_id).await;
    assert_eq!(member_ids(&view), BTreeSet::from([doc.id.to_string()]));
    assert_eq!(status_of_invitation(&view, &doc_invitation), "ACCEPTED");
    assert_eq!(status_of_invitation(&view, &nurse_invitation), "DECLINED");
    assert_eq!(status_of_invitation(&view, &cm_invitation), "REVOKED");
    assert_eq!(status_of_invitation(&view, &pharm_invitation), "EXPIRED");

    // A field refused inside an allowed room is left out of the data (async-graphql 7 drops a
    // failed field rather than nulling its parent) and its error carries the field's path:
    // nothing of the patient reaches the invitee.
    let room = &refused_field.data()["room"];
    assert!(
        room.is_null() || room.get("patient").is_none(),
        "a refused field is not in the data: {}",
        refused_field.body
    );
}

#[tokio::test]
async fn inviting_refuses_members_pending_invitees_inactive_users_and_strangers() {
    let k = Kita::new().await;
    let (doc, doc_c) = k.staff("doc", k.a).await;
    let nurse = k.user("nurse", Role::Staff, k.a).await;
    let pharm = k.user("pharm", Role::Staff, k.a).await;
    let cm = k.user("cm", Role::Staff, k.b).await;
    let suspended = k.user("suspended", Role::Staff, k.a).await;
    let locked = k.user("locked", Role::Staff, k.b).await;
    let other_admin = k.app.create_tenant("minami").await;
    let stranger = k
        .app
        .create_user(&other_admin, "stranger", Role::Staff, None)
        .await;
    let room = room_with(&k.city, yamada(), &[(&doc, &doc_c)], &[&nurse]).await;
    let room_id = id_of(&room);

    let resp = k
        .city
        .graphql(
            SUSPEND_USER,
            json!({ "id": suspended.id.to_string(), "r": "退職" }),
        )
        .await;
    assert_eq!(resp.ok()["suspendUser"]["status"], "SUSPENDED");
    set_status(&k.app, locked.id, AccountStatus::Locked).await;

    let invite = |users: Vec<String>| {
        let city = k.city.clone();
        let room_id = room_id.clone();
        async move {
            city.graphql(INVITE, json!({ "r": room_id, "u": users }))
                .await
        }
    };
    for (what, user, code) in [
        ("a current member", doc.id, "CONFLICT"),
        ("a user with a pending invitation", nurse.id, "CONFLICT"),
        ("a suspended user", suspended.id, "CONFLICT"),
        ("a locked user", locked.id, "CONFLICT"),
        ("another tenant's user", stranger.id, "NOT_FOUND"),
        ("an unknown user", Uuid::new_v4(), "NOT_FOUND"),
    ] {
        expect_code(&invite(vec![user.to_string()]).await, code, what);
    }
    let view = city_view(&k.city, &room_id).await;
    assert_eq!(
        room["invitations"].as_array().unwrap().len(),
        view["invitations"].as_array().unwrap().len(),
        "no invitation was made by refused calls: {view}"
    );

    // Several at once, from two facilities.
    let resp = invite(ids(&[&pharm, &cm])).await;
    let made = resp.ok()["inviteToRoom"].as_array().unwrap();
    assert_eq!(made.len(), 2);
    let invitees: BTreeSet<&str> = made.iter().map(|i| str_of(&i["invitee"]["id"])).collect();
    assert_eq!(
        invitees,
        BTreeSet::from([pharm.id.to_string().as_str(), cm.id.to_string().as_str()])
    );
    for i in made {
        assert_eq!(i["status"], "PENDING");
        assert_eq!(i["invitedBy"]["id"], k.admin.id.to_string());
    }
    // The same person twice in a row: the second is a duplicate.
    expect_code(
        &invite(vec![pharm.id.to_string()]).await,
        "CONFLICT",
        "inviting again while pending",
    );

    // Once the pending invitation is answered (here: revoked), a new one may be made.
    let view = city_view(&k.city, &room_id).await;
    let nurse_invitation = invitation_for(&view, &nurse);
    k.city
        .graphql(REVOKE_INVITATION, json!({ "id": nurse_invitation }))
        .await
        .ok();
    let again = invite(vec![nurse.id.to_string()]).await;
    assert_eq!(again.ok()["inviteToRoom"][0]["status"], "PENDING");

    // Other tenants and unknown rooms.
    let stranger_c = k.app.ready_session(&stranger).await;
    let view = city_view(&k.city, &room_id).await;
    let pharm_invitation = invitation_for(&view, &pharm);
    for (what, query, vars) in [
        ("room", ROOM_SUMMARY, json!({ "id": room_id })),
        (
            "acceptInvitation",
            ACCEPT,
            json!({ "id": pharm_invitation }),
        ),
        (
            "declineInvitation",
            DECLINE,
            json!({ "id": pharm_invitation }),
        ),
        (
            "requestRoomMembers",
            REQUEST_MEMBERS,
            json!({ "r": room_id, "u": [stranger.id.to_string()] }),
        ),
    ] {
        expect_code(
            &stranger_c.graphql(query, vars).await,
            "NOT_FOUND",
            &format!("another tenant's staff: {what}"),
        );
    }
    let other_city = k.app.ready_session(&other_admin).await;
    expect_code(
        &other_city
            .graphql(
                INVITE,
                json!({ "r": room_id, "u": [stranger.id.to_string()] }),
            )
            .await,
        "NOT_FOUND",
        "another city inviting into our room",
    );
    expect_code(
        &k.city
            .graphql(
                INVITE,
                json!({ "r": Uuid::new_v4().to_string(), "u": [pharm.id.to_string()] }),
            )
            .await,
        "NOT_FOUND",
        "an unknown room",
    );
}

// ---------------------------------------------------------------------------------------------
// 3. rooms requested by staff (form 8 + 9) and members requested (form 9 / 7)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_staff_request_opens_the_room_on_approval_and_invites_the_submitter() {
    let k = Kita::with_env(&[("RENKEI_INVITATION_TTL_DAYS", "7")]).await;
    let (doc, doc_c) = k.staff("doc", k.a).await;
    let nurse = k.user("nurse", Role::Staff, k.a).await;
    let cm = k.user("cm", Role::Staff, k.b).await;
    let (head, head_c) = k.person("head", Role::FacilityAdmin, k.a).await;
    let other_admin = k.app.create_tenant("minami").await;
    let stranger = k
        .app
        .create_user(&other_admin, "stranger", Role::Staff, None)
        .await;

    // Validation names the field, as openRoom does.
    let mut bad = yamada();
    bad["nameKana"] = json!("やまだ たろう");
    expect_bad_input(
        &doc_c
            .graphql(
                REQUEST_ROOM,
                json!({ "p": bad, "c": consent(), "m": ids(&[&nurse]) }),
            )
            .await,
        "patient.nameKana",
        "requestRoom with hiragana",
    );
    let mut bad_consent = family_consent();
    bad_consent["relationship"] = Value::Null;
    expect_bad_input(
        &doc_c
            .graphql(
                REQUEST_ROOM,
                json!({ "p": yamada(), "c": bad_consent, "m": ids(&[&nurse]) }),
            )
            .await,
        "consent.relationship",
        "requestRoom with a family consent without relationship",
    );
    expect_code(
        &doc_c
            .graphql(
                REQUEST_ROOM,
                json!({ "p": yamada(), "c": consent(), "m": ids(&[&nurse, &stranger]) }),
            )
            .await,
        "NOT_FOUND",
        "requestRoom naming another tenant's user",
    );
    expect_code(
        &k.city
            .graphql(
                REQUEST_ROOM,
                json!({ "p": yamada(), "c": consent(), "m": ids(&[&nurse]) }),
            )
            .await,
        "FORBIDDEN",
        "the city requesting a room (it opens them)",
    );

    // A staff member asks; nothing opens until the city approves.
    let filed = doc_c
        .graphql(
            REQUEST_ROOM,
            json!({ "p": yamada(), "c": family_consent(), "m": ids(&[&nurse, &cm]) }),
        )
        .await;
    let filed = &filed.ok()["requestRoom"];
    assert_eq!(filed["kind"], "ROOM_CREATION");
    assert_eq!(filed["status"], "SUBMITTED");
    assert_eq!(filed["submittedBy"]["id"], doc.id.to_string());
    assert_eq!(rooms_total(&k.city).await, 0);
    assert!(my_invitations(&doc_c).await.is_empty());

    let result = review(&k.city, str_of(&filed["id"]), true).await;
    assert_eq!(result["application"]["status"], "APPROVED");
    assert_eq!(result["application"]["kind"], "ROOM_CREATION");
    let room = &result["room"];
    assert!(room.is_object(), "the approval answers the room: {result}");
    assert_eq!(room["status"], "OPEN");
    assert_eq!(room["patientLabel"], "山田 太. (1940)");
    let room_id = id_of(room);
    let view = city_view(&k.city, &room_id).await;
    let statuses = invitation_statuses(&view);
    assert_eq!(
        statuses,
        BTreeMap::from([
            (doc.id.to_string(), vec!["PENDING".to_string()]),
            (nurse.id.to_string(), vec!["PENDING".to_string()]),
            (cm.id.to_string(), vec!["PENDING".to_string()]),
        ]),
        "the listed users and the submitter are invited"
    );
    let consents = view["consents"].as_array().unwrap();
    assert_eq!(consents.len(), 1, "{view}");
    assert_eq!(consents[0]["consenter"], "FAMILY");
    assert_eq!(consents[0]["relationship"], "長女");

    // The submitter accepts like anyone else; the setting decides the invitations' lifetime.
    let mine = my_invitations(&doc_c).await;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["room"]["id"], room_id.as_str());
    let ttl = parse_time(&mine[0]["expiresAt"]) - parse_time(&mine[0]["createdAt"]);
    assert!(
        (ttl - chrono::Duration::days(7)).num_seconds().abs() <= 60,
        "RENKEI_INVITATION_TTL_DAYS=7, got {ttl}"
    );
    doc_c
        .graphql(ACCEPT, json!({ "id": id_of(&mine[0]) }))
        .await
        .ok();
    let read = doc_c.graphql(ROOM_PATIENT, json!({ "id": room_id })).await;
    assert_eq!(read.ok()["room"]["patient"]["name"], "山田 太郎");

    // A facility admin listing itself is invited once.
    let filed = head_c
        .graphql(
            REQUEST_ROOM,
            json!({ "p": patient("佐藤 花子", "サトウ ハナコ", "1932-03-04"), "c": consent(), "m": ids(&[&head, &nurse]) }),
        )
        .await;
    let result = review(&k.city, str_of(&filed.ok()["requestRoom"]["id"]), true).await;
    let second = id_of(&result["room"]);
    assert_ne!(second, room_id);
    let statuses = invitation_statuses(&city_view(&k.city, &second).await);
    assert_eq!(
        statuses,
        BTreeMap::from([
            (head.id.to_string(), vec!["PENDING".to_string()]),
            (nurse.id.to_string(), vec!["PENDING".to_string()]),
        ])
    );

    // Rejected: nothing is created.
    let filed = doc_c
        .graphql(
            REQUEST_ROOM,
            json!({ "p": patient("田中 三郎", "タナカ サブロウ", "1938-01-01"), "c": consent(), "m": ids(&[&nurse]) }),
        )
        .await;
    let result = review(&k.city, str_of(&filed.ok()["requestRoom"]["id"]), false).await;
    assert_eq!(result["application"]["status"], "REJECTED");
    assert!(result["room"].is_null(), "{result}");
    assert_eq!(rooms_total(&k.city).await, 2);
    let listed = k
        .city
        .graphql(APPLICATIONS, json!({ "k": "ROOM_CREATION" }))
        .await;
    assert_eq!(listed.ok()["applications"]["totalCount"], 3);
}

#[tokio::test]
async fn members_and_facility_admins_request_members_and_approval_invites_them() {
    let k = Kita::new().await;
    let (doc, doc_c) = k.staff("doc", k.a).await;
    let (pharm, pharm_c) = k.staff("pharm", k.a).await;
    let (nurse, nurse_c) = k.staff("nurse", k.a).await;
    let therapist = k.user("therapist", Role::Staff, k.a).await;
    let cm = k.user("cm", Role::Staff, k.b).await;
    let (_head, head_c) = k.person("head", Role::FacilityAdmin, k.a).await;
    let other_admin = k.app.create_tenant("minami").await;
    let stranger = k
        .app
        .create_user(&other_admin, "stranger", Role::Staff, None)
        .await;
    let room = room_with(&k.city, yamada(), &[(&doc, &doc_c)], &[]).await;
    let room_id = id_of(&room);
    let request = |client: &TestClient, users: Vec<String>| {
        let client = client.clone();
        let room_id = room_id.clone();
        async move {
            client
                .graphql(REQUEST_MEMBERS, json!({ "r": room_id, "u": users }))
                .await
        }
    };

    // A member asks, for people of any facility.
    let filed = request(&doc_c, ids(&[&pharm, &cm])).await;
    let filed = &filed.ok()["requestRoomMembers"];
    assert_eq!(filed["kind"], "ROOM_MEMBERSHIP");
    assert_eq!(filed["status"], "SUBMITTED");
    assert_eq!(filed["submittedBy"]["id"], doc.id.to_string());
    assert!(
        my_invitations(&pharm_c).await.is_empty(),
        "nothing before approval"
    );
    let result = review(&k.city, str_of(&filed["id"]), true).await;
    assert_eq!(result["application"]["status"], "APPROVED");
    assert_eq!(result["room"]["id"], room_id.as_str(), "{result}");
    let mine = my_invitations(&pharm_c).await;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["room"]["id"], room_id.as_str());
    assert_eq!(mine[0]["patientLabel"], "山田 太. (1940)");
    let statuses = invitation_statuses(&city_view(&k.city, &room_id).await);
    assert_eq!(statuses[&cm.id.to_string()], vec!["PENDING"]);

    // A facility admin who is no member: for its own facility's people only.
    let filed = request(&head_c, ids(&[&therapist])).await;
    let result = review(
        &k.city,
        str_of(&filed.ok()["requestRoomMembers"]["id"]),
        true,
    )
    .await;
    assert_eq!(result["room"]["id"], room_id.as_str());
    let statuses = invitation_statuses(&city_view(&k.city, &room_id).await);
    assert_eq!(statuses[&therapist.id.to_string()], vec!["PENDING"]);
    expect_code(
        &request(&head_c, vec![cm.id.to_string()]).await,
        "FORBIDDEN",
        "a facility admin asking for another facility's user",
    );

    // Nobody else.
    expect_code(
        &request(&nurse_c, vec![therapist.id.to_string()]).await,
        "FORBIDDEN",
        "staff who is no member",
    );
    expect_code(
        &request(&k.city, vec![nurse.id.to_string()]).await,
        "FORBIDDEN",
        "the city (it invites directly)",
    );
    expect_code(
        &request(&doc_c, vec![stranger.id.to_string()]).await,
        "NOT_FOUND",
        "a member asking for another tenant's user",
    );

    // Rejected: no invitation.
    let filed = request(&doc_c, ids(&[&nurse])).await;
    let result = review(
        &k.city,
        str_of(&filed.ok()["requestRoomMembers"]["id"]),
        false,
    )
    .await;
    assert_eq!(result["application"]["status"], "REJECTED");
    assert!(my_invitations(&nurse_c).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 4. consent, closure, closed rooms
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn closure_needs_a_valid_consent_and_a_rejected_closure_reopens_the_room() {
    let k = Kita::new().await;
    let (doc, doc_c) = k.staff("doc", k.a).await;
    let (nurse, nurse_c) = k.staff("nurse", k.a).await;
    let pharm = k.user("pharm", Role::Staff, k.a).await;
    let room = room_with(
        &k.city,
        yamada(),
        &[(&doc, &doc_c), (&nurse, &nurse_c)],
        &[],
    )
    .await;
    let room_id = id_of(&room);
    let first_consent = id_of(&room["consents"][0]);
    let reason = "施設入所のため在宅サービス終了";
    let closure = |client: &TestClient, why: &str| {
        let client = client.clone();
        let room_id = room_id.clone();
        let why = why.to_string();
        async move {
            client
                .graphql(REQUEST_CLOSURE, json!({ "r": room_id, "why": why }))
                .await
        }
    };

    // Withdrawn consent: the room is read-only, no closure request.
    let withdrawn = k
        .city
        .graphql(WITHDRAW_CONSENT, json!({ "id": first_consent }))
        .await;
    assert!(withdrawn.ok()["withdrawConsent"]["withdrawnAt"].is_string());
    expect_code(
        &k.city
            .graphql(WITHDRAW_CONSENT, json!({ "id": first_consent }))
            .await,
        "CONFLICT",
        "withdrawing a withdrawn consent",
    );
    expect_code(
        &closure(&doc_c, reason).await,
        "CONFLICT",
        "a closure request without a valid consent",
    );
    let read = doc_c.graphql(ROOM_PATIENT, json!({ "id": room_id })).await;
    assert_eq!(
        read.ok()["room"]["patient"]["name"],
        "山田 太郎",
        "still readable"
    );
    assert_eq!(
        city_view(&k.city, &room_id).await["status"],
        "OPEN",
        "the refused request changed nothing"
    );

    // A new consent (validated), then the request is allowed.
    let mut bad = family_consent();
    bad["relationship"] = Value::Null;
    expect_bad_input(
        &k.city
            .graphql(RECORD_CONSENT, json!({ "r": room_id, "c": bad }))
            .await,
        "consent.relationship",
        "recording a family consent without relationship",
    );
    let recorded = k
        .city
        .graphql(
            RECORD_CONSENT,
            json!({ "r": room_id, "c": family_consent() }),
        )
        .await;
    let recorded = &recorded.ok()["recordConsent"];
    assert_eq!(recorded["consenter"], "FAMILY");
    assert_eq!(recorded["relationship"], "長女");
    assert_eq!(recorded["recordedBy"]["id"], k.admin.id.to_string());
    assert!(recorded["withdrawnAt"].is_null());
    let consents = city_view(&k.city, &room_id).await["consents"].clone();
    assert_eq!(consents.as_array().unwrap().len(), 2, "{consents}");

    expect_bad_input(&closure(&doc_c, "").await, "reason", "an empty reason");
    let filed = closure(&doc_c, reason).await;
    let filed = &filed.ok()["requestRoomClosure"];
    assert_eq!(filed["kind"], "ROOM_CLOSURE");
    assert_eq!(filed["status"], "SUBMITTED");
    assert_eq!(filed["submittedBy"]["id"], doc.id.to_string());

    // CLOSING, with the end-of-service note in the room.
    let view = nurse_c
        .graphql(ROOM_MEMBER_VIEW, json!({ "id": room_id }))
        .await;
    let view = &view.ok()["room"];
    assert_eq!(view["status"], "CLOSING");
    let notes: Vec<&Value> = view["notes"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"])
        .filter(|n| n["category"] == "END_OF_SERVICE")
        .collect();
    assert_eq!(notes.len(), 1, "{view}");
    assert_eq!(notes[0]["body"], reason);
    assert_eq!(notes[0]["author"]["id"], doc.id.to_string());
    expect_code(
        &closure(&nurse_c, reason).await,
        "CONFLICT",
        "a second closure request while CLOSING",
    );
    expect_code(
        &k.city
            .graphql(INVITE, json!({ "r": room_id, "u": [pharm.id.to_string()] }))
            .await,
        "CONFLICT",
        "inviting into a CLOSING room",
    );

    // Rejected: OPEN again.
    let result = review(&k.city, str_of(&filed["id"]), false).await;
    assert_eq!(result["application"]["status"], "REJECTED");
    let view = city_view(&k.city, &room_id).await;
    assert_eq!(view["status"], "OPEN");
    assert!(view["closedAt"].is_null() && view["endReason"].is_null());

    // Asked again and approved: CLOSED with the reason.
    let filed = closure(&nurse_c, reason).await;
    let result = review(
        &k.city,
        str_of(&filed.ok()["requestRoomClosure"]["id"]),
        true,
    )
    .await;
    assert_eq!(result["application"]["status"], "APPROVED");
    let view = city_view(&k.city, &room_id).await;
    assert_eq!(view["status"], "CLOSED");
    assert_eq!(view["endReason"], reason);
    assert!(view["closedAt"].is_string());
    let closures = k
        .city
        .graphql(APPLICATIONS, json!({ "k": "ROOM_CLOSURE" }))
        .await;
    assert_eq!(closures.ok()["applications"]["totalCount"], 2);

    // The last members still read everything; nobody writes.
    let view = doc_c
        .graphql(ROOM_MEMBER_VIEW, json!({ "id": room_id }))
        .await;
    let view = &view.ok()["room"];
    assert_eq!(view["status"], "CLOSED");
    assert_eq!(view["patient"]["name"], "山田 太郎");
    assert!(view["notes"]["totalCount"].as_i64().unwrap() >= 2, "{view}");
    assert_closed_room_is_read_only(&k, &room_id, &doc_c, &pharm).await;
}

/// Every write on a CLOSED room is CONFLICT.
async fn assert_closed_room_is_read_only(
    k: &Kita,
    room_id: &str,
    member: &TestClient,
    outsider: &Person,
) {
    expect_code(
        &member
            .graphql(REQUEST_CLOSURE, json!({ "r": room_id, "why": "もう一度" }))
            .await,
        "CONFLICT",
        "a closure request on a CLOSED room",
    );
    expect_code(
        &k.city
            .graphql(
                INVITE,
                json!({ "r": room_id, "u": [outsider.id.to_string()] }),
            )
            .await,
        "CONFLICT",
        "inviting into a CLOSED room",
    );
    expect_code(
        &k.city
            .graphql(
                RECORD_CONSENT,
                json!({ "r": room_id, "c": family_consent() }),
            )
            .await,
        "CONFLICT",
        "recording a consent on a CLOSED room",
    );
    expect_code(
        &k.city
            .graphql(CLOSE_ROOM, json!({ "r": room_id, "e": "again" }))
            .await,
        "CONFLICT",
        "closing a CLOSED room",
    );
}

#[tokio::test]
async fn the_city_closes_a_room_its_members_still_read_and_nobody_writes() {
    let k = Kita::new().await;
    let (doc, doc_c) = k.staff("doc", k.a).await;
    let pharm = k.user("pharm", Role::Staff, k.a).await;
    let (late, late_c) = k.staff("late", k.b).await;
    let room = room_with(&k.city, yamada(), &[(&doc, &doc_c)], &[&late]).await;
    let room_id = id_of(&room);
    let late_invitation = invitation_for(&room, &late);

    expect_bad_input(
        &k.city
            .graphql(CLOSE_ROOM, json!({ "r": room_id, "e": "" }))
            .await,
        "endReason",
        "an empty end reason",
    );
    let closed = k
        .city
        .graphql(CLOSE_ROOM, json!({ "r": room_id, "e": "ご逝去" }))
        .await;
    let closed = &closed.ok()["closeRoom"];
    assert_eq!(closed["status"], "CLOSED");
    assert_eq!(closed["endReason"], "ご逝去");
    assert!(closed["closedAt"].is_string());

    let view = doc_c
        .graphql(ROOM_MEMBER_VIEW, json!({ "id": room_id }))
        .await;
    let view = &view.ok()["room"];
    assert_eq!(view["status"], "CLOSED");
    assert_eq!(view["endReason"], "ご逝去");
    assert_eq!(view["patient"]["name"], "山田 太郎");
    assert!(view["notes"]["totalCount"].is_number());
    let mine = doc_c.graphql(ROOMS, json!({ "n": 10 })).await;
    assert_eq!(room_ids(&mine), vec![room_id.clone()], "still listed");
    assert_closed_room_is_read_only(&k, &room_id, &doc_c, &pharm).await;
    // Nobody joins a CLOSED room either: an invitation still open when it closed is no way in.
    expect_code(
        &late_c
            .graphql(ACCEPT, json!({ "id": late_invitation }))
            .await,
        "CONFLICT",
        "accepting an invitation to a CLOSED room",
    );
    expect_code(
        &late_c.graphql(ROOM_PATIENT, json!({ "id": room_id })).await,
        "FORBIDDEN",
        "the late invitee reading the CLOSED room's patient",
    );
}

// ---------------------------------------------------------------------------------------------
// 5. leaving a room: removal and suspension
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn removing_a_member_ends_its_access() {
    let k = Kita::new().await;
    let (doc, doc_c) = k.staff("doc", k.a).await;
    let (nurse, nurse_c) = k.staff("nurse", k.a).await;
    let pharm = k.user("pharm", Role::Staff, k.a).await;
    let room = room_with(
        &k.city,
        yamada(),
        &[(&doc, &doc_c), (&nurse, &nurse_c)],
        &[&pharm],
    )
    .await;
    let room_id = id_of(&room);
    let remove = |user: &Person, why: &str| {
        let city = k.city.clone();
        let vars = json!({ "r": room_id, "u": user.id.to_string(), "why": why });
        async move { city.graphql(REMOVE_MEMBER, vars).await }
    };

    expect_bad_input(&remove(&doc, "").await, "reason", "an empty reason");
    let removed = remove(&doc, "担当交代").await;
    let removed = &removed.ok()["removeRoomMember"];
    assert_eq!(removed["id"], room_id.as_str());
    assert_eq!(member_ids(removed), BTreeSet::from([nurse.id.to_string()]));

    for query in [ROOM_SUMMARY, ROOM_PATIENT, ROOM_MEMBER_VIEW] {
        expect_code(
            &doc_c.graphql(query, json!({ "id": room_id })).await,
            "FORBIDDEN",
            "a removed member reading the room",
        );
    }
    let listed = doc_c.graphql(ROOMS, json!({ "n": 10 })).await;
    assert_eq!(listed.ok()["rooms"]["totalCount"], 0);
    assert!(room_ids(&listed).is_empty());
    expect_code(
        &doc_c
            .graphql(REQUEST_CLOSURE, json!({ "r": room_id, "why": "終了" }))
            .await,
        "FORBIDDEN",
        "a removed member asking for closure",
    );

    expect_code(
        &remove(&doc, "again").await,
        "CONFLICT",
        "removing a removed member",
    );
    expect_code(
        &remove(&pharm, "never joined").await,
        "CONFLICT",
        "removing an invitee who never joined",
    );
    let read = nurse_c
        .graphql(ROOM_PATIENT, json!({ "id": room_id }))
        .await;
    assert_eq!(read.ok()["room"]["patient"]["name"], "山田 太郎");
}

#[tokio::test]
async fn suspension_ends_memberships_and_reactivation_does_not_restore_them() {
    let k = Kita::new().await;
    let (doc, doc_c) = k.staff("doc", k.a).await;
    let (nurse, nurse_c) = k.staff("nurse", k.a).await;
    let (_head, head_c) = k.person("head", Role::FacilityAdmin, k.a).await;
    let first = id_of(
        &room_with(
            &k.city,
            yamada(),
            &[(&doc, &doc_c), (&nurse, &nurse_c)],
            &[],
        )
        .await,
    );
    let second = id_of(
        &room_with(
            &k.city,
            patient("佐藤 花子", "サトウ ハナコ", "1932-03-04"),
            &[(&doc, &doc_c)],
            &[],
        )
        .await,
    );
    let third = open_room(
        &k.city,
        patient("田中 三郎", "タナカ サブロウ", "1938-01-01"),
        &[&doc],
    )
    .await;
    let third_invitation = invitation_for(&third, &doc);

    // suspendUser: out of every room, the pending invitation no longer open.
    let resp = k
        .city
        .graphql(
            SUSPEND_USER,
            json!({ "id": doc.id.to_string(), "r": "端末紛失" }),
        )
        .await;
    assert_eq!(resp.ok()["suspendUser"]["status"], "SUSPENDED");
    for room in [&first, &second] {
        let view = city_view(&k.city, room).await;
        assert!(
            !member_ids(&view).contains(&doc.id.to_string()),
            "suspension ends the membership: {view}"
        );
    }
    let view = city_view(&k.city, &id_of(&third)).await;
    assert_ne!(
        status_of_invitation(&view, &third_invitation),
        "PENDING",
        "a suspended user's pending invitation ends too"
    );

    // Reactivated, with a new certificate: a user again, but in no room.
    let resp = k
        .city
        .graphql(REACTIVATE_USER, json!({ "id": doc.id.to_string() }))
        .await;
    assert_eq!(resp.ok()["reactivateUser"]["status"], "ACTIVE");
    let issued = k
        .city
        .graphql(ISSUE, json!({ "u": doc.id.to_string(), "d": "new phone" }))
        .await;
    let issued = &issued.ok()["issueCertificate"];
    let bundle = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(str_of(&issued["pkcs12Base64"]))
            .unwrap()
    };
    let mut back = doc.clone();
    back.identity_pem = identity_from_pkcs12(&bundle, str_of(&issued["pkcs12Password"]));
    back.certificate_id = Uuid::parse_str(str_of(&issued["certificate"]["id"])).unwrap();
    back.fingerprint = str_of(&issued["certificate"]["fingerprintSha256"]).to_string();
    let back_c = k.app.ready_session(&back).await;
    for room in [&first, &second] {
        expect_code(
            &back_c.graphql(ROOM_SUMMARY, json!({ "id": room })).await,
            "FORBIDDEN",
            "a reactivated user reading a room it was in",
        );
        expect_code(
            &back_c.graphql(ROOM_PATIENT, json!({ "id": room })).await,
            "FORBIDDEN",
            "a reactivated user reading a patient",
        );
    }
    let listed = back_c.graphql(ROOMS, json!({ "n": 10 })).await;
    assert_eq!(listed.ok()["rooms"]["totalCount"], 0);
    assert!(my_invitations(&back_c).await.is_empty());
    expect_code(
        &back_c
            .graphql(ACCEPT, json!({ "id": third_invitation }))
            .await,
        "CONFLICT",
        "accepting the invitation that ended with the suspension",
    );

    // Form 3: the facility admin asks, the city approves, the membership ends.
    let filed = head_c
        .graphql(
            SUBMIT_SUSPENSION,
            json!({ "u": [nurse.id.to_string()], "r": "退職" }),
        )
        .await;
    let result = review(&k.city, str_of(&filed.ok()["submitSuspension"]["id"]), true).await;
    assert_eq!(result["application"]["status"], "APPROVED");
    let view = city_view(&k.city, &first).await;
    assert_eq!(
        member_ids(&view),
        BTreeSet::new(),
        "form 3 ends memberships too: {view}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. lists and statistics
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rooms_are_listed_by_scope_newest_first_and_filtered_by_status() {
    let k = Kita::new().await;
    let (doc, doc_c) = k.staff("doc", k.a).await;
    let (nurse, nurse_c) = k.staff("nurse", k.a).await;
    let (_head, head_c) = k.person("head", Role::FacilityAdmin, k.a).await;
    let other_admin = k.app.create_tenant("minami").await;
    let other_city = k.app.ready_session(&other_admin).await;

    // r2 has an invitee who never answers: invitees are not members.
    let r1 = id_of(&room_with(&k.city, yamada(), &[(&doc, &doc_c)], &[]).await);
    let r2 = id_of(
        &open_room(
            &k.city,
            patient("佐藤 花子", "サトウ ハナコ", "1932-03-04"),
            &[&nurse],
        )
        .await,
    );
    let r3 = id_of(
        &room_with(
            &k.city,
            patient("田中 三郎", "タナカ サブロウ", "1938-01-01"),
            &[(&doc, &doc_c)],
            &[],
        )
        .await,
    );

    let all = k.city.graphql(ROOMS, json!({ "n": 10 })).await;
    assert_eq!(all.ok()["rooms"]["totalCount"], 3);
    assert_eq!(
        room_ids(&all),
        vec![r3.clone(), r2.clone(), r1.clone()],
        "the city: all, newest first"
    );
    let page = k.city.graphql(ROOMS, json!({ "n": 2 })).await;
    assert_eq!(room_ids(&page), vec![r3.clone(), r2.clone()]);
    assert_eq!(page.ok()["rooms"]["pageInfo"]["hasNextPage"], true);
    assert_eq!(page.ok()["rooms"]["totalCount"], 3);
    let rest = k
        .city
        .graphql(
            ROOMS,
            json!({ "n": 2, "a": page.ok()["rooms"]["pageInfo"]["endCursor"] }),
        )
        .await;
    assert_eq!(room_ids(&rest), vec![r1.clone()]);
    assert_eq!(rest.ok()["rooms"]["pageInfo"]["hasNextPage"], false);

    let mine = doc_c.graphql(ROOMS, json!({ "n": 10 })).await;
    assert_eq!(mine.ok()["rooms"]["totalCount"], 2);
    assert_eq!(
        room_ids(&mine),
        vec![r3.clone(), r1.clone()],
        "a member: its rooms"
    );
    for (who, client) in [
        ("staff in no room", &nurse_c),
        ("a facility admin", &head_c),
        ("another city", &other_city),
    ] {
        let resp = client.graphql(ROOMS, json!({ "n": 10 })).await;
        assert_eq!(resp.ok()["rooms"]["totalCount"], 0, "{who}");
        assert!(room_ids(&resp).is_empty(), "{who}");
    }

    k.city
        .graphql(CLOSE_ROOM, json!({ "r": r2, "e": "ご逝去" }))
        .await
        .ok();
    let closed = k
        .city
        .graphql(ROOMS, json!({ "n": 10, "s": "CLOSED" }))
        .await;
    assert_eq!(room_ids(&closed), vec![r2.clone()]);
    assert_eq!(closed.ok()["rooms"]["totalCount"], 1);
    let open = k.city.graphql(ROOMS, json!({ "n": 10, "s": "OPEN" })).await;
    assert_eq!(room_ids(&open), vec![r3.clone(), r1.clone()]);
    let mine_closed = doc_c
        .graphql(ROOMS, json!({ "n": 10, "s": "CLOSED" }))
        .await;
    assert!(room_ids(&mine_closed).is_empty());
}

#[tokio::test]
async fn tenant_statistics_count_rooms_by_status() {
    let k = Kita::new().await;
    let (doc, doc_c) = k.staff("doc", k.a).await;
    let other_admin = k.app.create_tenant("minami").await;
    let other_city = k.app.ready_session(&other_admin).await;
    let stats = |client: &TestClient| {
        let client = client.clone();
        async move {
            let resp = client.graphql(STATISTICS, json!({})).await;
            counts(&resp.ok()["tenantStatistics"]["roomsByStatus"])
        }
    };
    assert_eq!(stats(&k.city).await, BTreeMap::new());

    open_room(&k.city, yamada(), &[&doc]).await;
    open_room(
        &k.city,
        patient("佐藤 花子", "サトウ ハナコ", "1932-03-04"),
        &[&doc],
    )
    .await;
    let closing = id_of(
        &room_with(
            &k.city,
            patient("田中 三郎", "タナカ サブロウ", "1938-01-01"),
            &[(&doc, &doc_c)],
            &[],
        )
        .await,
    );
    doc_c
        .graphql(REQUEST_CLOSURE, json!({ "r": closing, "why": "終了" }))
        .await
        .ok();
    let closed = id_of(
        &open_room(
            &k.city,
            patient("鈴木 次郎", "スズキ ジロウ", "1945-12-31"),
            &[&doc],
        )
        .await,
    );
    k.city
        .graphql(CLOSE_ROOM, json!({ "r": closed, "e": "ご逝去" }))
        .await
        .ok();

    assert_eq!(
        stats(&k.city).await,
        BTreeMap::from([
            ("OPEN".to_string(), 2),
            ("CLOSING".to_string(), 1),
            ("CLOSED".to_string(), 1),
        ])
    );
    assert_eq!(
        stats(&other_city).await,
        BTreeMap::new(),
        "another tenant counts its own rooms only"
    );
    expect_code(
        &doc_c.graphql(STATISTICS, json!({})).await,
        "FORBIDDEN",
        "statistics for staff",
    );
}

// ---------------------------------------------------------------------------------------------
// 7. audit
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_room_action_is_audited_with_the_room_id() {
    let k = Kita::new().await;
    let (doc, doc_c) = k.staff("doc", k.a).await;
    let (nurse, nurse_c) = k.staff("nurse", k.a).await;
    let (cm, cm_c) = k.staff("cm", k.b).await;
    let pharm = k.user("pharm", Role::Staff, k.a).await;
    let (outsider, outsider_c) = k.staff("outsider", k.b).await;

    let room = open_room(&k.city, yamada(), &[&doc, &nurse, &cm, &pharm]).await;
    let room_id = id_of(&room);
    let consent_id = id_of(&room["consents"][0]);
    // Another room, whose events must not show up under the first one.
    let other = open_room(
        &k.city,
        patient("佐藤 花子", "サトウ ハナコ", "1932-03-04"),
        &[&doc],
    )
    .await;
    let other_id = id_of(&other);

    doc_c
        .graphql(ACCEPT, json!({ "id": invitation_for(&room, &doc) }))
        .await
        .ok();
    cm_c.graphql(ACCEPT, json!({ "id": invitation_for(&room, &cm) }))
        .await
        .ok();
    // An invitee's refused patient read is a denial, not a patient.read.
    expect_code(
        &nurse_c
            .graphql(ROOM_PATIENT, json!({ "id": room_id }))
            .await,
        "FORBIDDEN",
        "an invitee reading the patient",
    );
    nurse_c
        .graphql(DECLINE, json!({ "id": invitation_for(&room, &nurse) }))
        .await
        .ok();
    // Refusals naming the room in every way: its id as `room(id)` and as an argument
    // `roomId`, an invitation's id, a consent's id.
    expect_code(
        &nurse_c
            .graphql(ACCEPT, json!({ "id": invitation_for(&room, &pharm) }))
            .await,
        "FORBIDDEN",
        "accepting someone else's pending invitation",
    );
    expect_code(
        &outsider_c
            .graphql(ROOM_SUMMARY, json!({ "id": room_id }))
            .await,
        "FORBIDDEN",
        "an outsider reading the room",
    );
    expect_code(
        &outsider_c
            .graphql(REQUEST_CLOSURE, json!({ "r": room_id, "why": "終了" }))
            .await,
        "FORBIDDEN",
        "an outsider asking for closure",
    );
    k.city
        .graphql(
            REVOKE_INVITATION,
            json!({ "id": invitation_for(&room, &pharm) }),
        )
        .await
        .ok();
    let read = doc_c.graphql(ROOM_PATIENT, json!({ "id": room_id })).await;
    assert_eq!(read.ok()["room"]["patient"]["name"], "山田 太郎");
    expect_code(
        &doc_c
            .graphql(WITHDRAW_CONSENT, json!({ "id": consent_id }))
            .await,
        "FORBIDDEN",
        "a member withdrawing a consent",
    );

    k.city
        .graphql(
            RECORD_CONSENT,
            json!({ "r": room_id, "c": family_consent() }),
        )
        .await
        .ok();
    k.city
        .graphql(WITHDRAW_CONSENT, json!({ "id": consent_id }))
        .await
        .ok();
    k.city
        .graphql(
            REMOVE_MEMBER,
            json!({ "r": room_id, "u": cm.id.to_string(), "why": "担当交代" }),
        )
        .await
        .ok();
    let filed = doc_c
        .graphql(REQUEST_CLOSURE, json!({ "r": room_id, "why": "終了" }))
        .await;
    review(
        &k.city,
        str_of(&filed.ok()["requestRoomClosure"]["id"]),
        false,
    )
    .await;
    let closed = k
        .city
        .graphql(CLOSE_ROOM, json!({ "r": room_id, "e": "ご逝去" }))
        .await;
    assert_eq!(closed.ok()["closeRoom"]["status"], "CLOSED");

    let events = room_events(&k.city, &room_id).await;
    for e in &events {
        assert_eq!(e["roomId"], room_id.as_str(), "filtered by room: {e}");
    }
    let by = |action: &str, actor: &Person| {
        events
            .iter()
            .filter(|e| e["action"] == action && e["actor"]["id"] == actor.id.to_string())
            .count()
    };
    let admin = &k.admin;
    for (action, actor, at_least) in [
        ("room.open", admin, 1),
        ("invitation.create", admin, 1),
        ("invitation.accept", &doc, 1),
        ("invitation.accept", &cm, 1),
        ("invitation.decline", &nurse, 1),
        ("invitation.revoke", admin, 1),
        ("room.read", &doc, 1),
        ("patient.read", &doc, 1),
        ("authz.denied", &outsider, 2),
        ("authz.denied", &nurse, 1),
        ("authz.denied", &doc, 1),
        ("consent.record", admin, 1),
        ("consent.withdraw", admin, 1),
        ("member.remove", admin, 1),
        ("room.closure_request", &doc, 1),
        ("note.create", &doc, 1),
        ("room.reopen", admin, 1),
        ("room.close", admin, 1),
    ] {
        let n = by(action, actor);
        assert!(
            n >= at_least,
            "expected {at_least}+ {action} by {} with roomId {room_id}, found {n}; events: {}",
            actor.login_id,
            events
                .iter()
                .map(|e| format!("{}:{}", e["action"], e["actor"]["id"]))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    assert_eq!(
        by("room.open", admin),
        1,
        "one room.open for this room (the other room's is not listed)"
    );
    assert_eq!(
        by("room.read", &outsider),
        0,
        "a refused room(id) is no room.read"
    );
    assert_eq!(
        by("patient.read", &nurse),
        0,
        "a refused Room.patient is no patient.read"
    );
    for e in events.iter().filter(|e| e["action"] == "authz.denied") {
        assert_eq!(e["outcome"], "DENIED", "{e}");
    }

    // The other room has its own.
    let theirs = room_events(&k.city, &other_id).await;
    assert!(theirs.iter().any(|e| e["action"] == "room.open"));
    assert!(theirs.iter().all(|e| e["roomId"] == other_id.as_str()));

    // The disclosure report lists the reads.
    let report = k.city.graphql(ACCESS_REPORT, json!({ "r": room_id })).await;
    let report = report.ok()["roomAccessReport"].as_array().unwrap().clone();
    for action in ["room.read", "patient.read"] {
        assert!(
            report
                .iter()
                .any(|e| e["action"] == action && e["actor"]["id"] == doc.id.to_string()),
            "{action} by doc missing from roomAccessReport: {report:?}"
        );
    }
    assert!(report.iter().all(|e| e["roomId"] == room_id.as_str()));
}

// ---------------------------------------------------------------------------------------------
// 8. races
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_and_revoking_one_invitation_at_once_has_exactly_one_winner() {
    let k = Kita::new().await;
    let (doc, doc_c) = k.staff("doc", k.a).await;
    let mut winners = BTreeMap::new();
    for round in 0..5 {
        let room = open_room(
            &k.city,
            patient("山田 太郎", "ヤマダ タロウ", &format!("194{round}-05-01")),
            &[&doc],
        )
        .await;
        let room_id = id_of(&room);
        let invitation = invitation_for(&room, &doc);
        // Each side goes first in every other round.
        let accept = doc_c.graphql(ACCEPT, json!({ "id": invitation }));
        let revoke = k
            .city
            .graphql(REVOKE_INVITATION, json!({ "id": invitation }));
        let (accepted, revoked) = if round % 2 == 0 {
            tokio::join!(accept, revoke)
        } else {
            let (revoked, accepted) = tokio::join!(revoke, accept);
            (accepted, revoked)
        };
        let accept_won = accepted.errors().is_empty();
        let revoke_won = revoked.errors().is_empty();
        assert!(
            accept_won ^ revoke_won,
            "round {round}: exactly one must win: accept {} / revoke {}",
            accepted.body,
            revoked.body
        );
        let loser = if accept_won { &revoked } else { &accepted };
        expect_code(loser, "CONFLICT", &format!("round {round}: the loser"));
        let view = city_view(&k.city, &room_id).await;
        let is_member = member_ids(&view).contains(&doc.id.to_string());
        let status = status_of_invitation(&view, &invitation);
        let read = doc_c.graphql(ROOM_PATIENT, json!({ "id": room_id })).await;
        if accept_won {
            assert!(
                is_member,
                "round {round}: accepted but not a member: {view}"
            );
            assert_eq!(status, "ACCEPTED", "round {round}");
            assert_eq!(read.ok()["room"]["patient"]["name"], "山田 太郎");
        } else {
            assert!(!is_member, "round {round}: revoked but a member: {view}");
            assert_eq!(status, "REVOKED", "round {round}");
            expect_code(&read, "FORBIDDEN", &format!("round {round}: revoked"));
        }
        *winners
            .entry(if accept_won { "accept" } else { "revoke" })
            .or_insert(0) += 1;
    }
    eprintln!("accept/revoke race winners: {winners:?}");
}
