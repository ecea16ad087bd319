//! Issue 5, end to end: the city's paper forms made digital. A facility registers without an
//! account (public, rate limited, validated field by field), follows its application by reference
//! number and e-mail, and the city's approval creates the facility, its staff's IDs, initial
//! passwords and certificates in one go; its people then log in, change the password, accept the
//! pledge and work. Changes (form 7) and suspensions (form 3) go the same way; the city also
//! suspends and reactivates directly and switches the facility admins' delegation. The register
//! (`facilities`, `users`, `Facility.staff`, `tenantStatistics`) and the application lists are
//! scoped by role, and every change leaves its audit events.
//!
//! Runs on both databases (`RENKEI_TEST_DB=sqlite|postgres`).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use chrono::Datelike as _;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, IntoActiveModel as _,
    PaginatorTrait as _, QueryFilter as _, Set,
};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use uuid::Uuid;

use entity::kinds::{AccountStatus, CertificateStatus, FacilityKind, Occupation, Role};
use renkei_tests::fixtures::identity_from_pkcs12;
use renkei_tests::{Gql, Person, TestApp, TestClient, TestOptions, spawn_app_with};

macro_rules! application_fields {
    () => {
        "id referenceNumber kind status submittedAt payload reviewedAt reviewNote \
         facility { id code name status phone } submittedBy { id } reviewedBy { id }"
    };
}

const SUBMIT_REGISTRATION: &str = concat!(
    "mutation($i:RegistrationInput!){ submitRegistration(input:$i){ ",
    application_fields!(),
    " } }"
);
const SUBMIT_CHANGE: &str = concat!(
    "mutation($f:ID!,$p:JSON!){ submitChange(facilityId:$f, payload:$p){ ",
    application_fields!(),
    " } }"
);
const SUBMIT_SUSPENSION: &str = concat!(
    "mutation($u:[ID!]!,$r:String!,$w:Boolean!){ submitSuspension(userIds:$u, reason:$r, wholeFacility:$w){ ",
    application_fields!(),
    " } }"
);
const WITHDRAW: &str = concat!(
    "mutation($id:ID!){ withdrawApplication(id:$id){ ",
    application_fields!(),
    " } }"
);
const REVIEW: &str = concat!(
    "mutation($id:ID!,$a:Boolean!,$n:String){ reviewApplication(id:$id, approve:$a, note:$n){ application { ",
    application_fields!(),
    " } issued { initialPassword user { id loginId displayName displayNameKana occupation role status \
     mustChangePassword facility { id } } certificate { certificate { id serialNumber fingerprintSha256 \
     deviceLabel status } pkcs12Base64 pkcs12Password } } } }"
);
const APPLICATION: &str = concat!(
    "query($id:ID!){ application(id:$id){ ",
    application_fields!(),
    " } }"
);
const APPLICATIONS: &str = "query($n:Int,$a:String,$k:ApplicationKind,$s:ApplicationStatus){ applications(first:$n, after:$a, kind:$k, status:$s){ totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id kind status } } } }";
const APPLICATION_STATUS: &str = "query($r:String!,$e:String!,$t:String){ applicationStatus(referenceNumber:$r, contactEmail:$e, tenant:$t) }";
const LOGIN: &str = "mutation($t:String!,$l:String!,$p:String!){ login(tenant:$t, loginId:$l, password:$p){ token mustChangePassword mustAcceptPledge user { id loginId role } } }";
const CHANGE_PASSWORD: &str =
    "mutation($c:String!,$n:String!){ changePassword(currentPassword:$c, newPassword:$n) }";
const ACCEPT_PLEDGE: &str = "mutation { acceptPledge { id pledgeAcceptedAt } }";
const USERS: &str = "query($n:Int,$a:String,$f:ID,$s:AccountStatus,$o:Occupation,$r:Role){ users(first:$n, after:$a, facilityId:$f, status:$s, occupation:$o, role:$r){ totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id loginId role status occupation facility { id } } } } }";
const FACILITIES: &str = "query($n:Int,$a:String,$k:FacilityKind,$s:AccountStatus){ facilities(first:$n, after:$a, kind:$k, status:$s){ totalCount pageInfo { hasNextPage endCursor } edges { node { id code name kind status } } } }";
const FACILITY: &str = "query($id:ID!,$n:Int,$a:String){ facility(id:$id){ id code name phone address representativeName insideMunicipality status staff(first:$n, after:$a){ totalCount pageInfo { hasNextPage endCursor } edges { node { id } } } } }";
const USER: &str = "query($id:ID!){ user(id:$id){ id loginId displayName displayNameKana occupation role status facility { id } certificates { id serialNumber status } } }";
const STATISTICS: &str = "{ tenantStatistics { usersByFacility { key count } usersByOccupation { key count } usersByStatus { key count } facilitiesByKind { key count } roomsByStatus { key count } } }";
const TENANT: &str = "{ tenant { slug facilityAdminDelegation } }";
const SUSPEND_USER: &str =
    "mutation($id:ID!,$r:String!){ suspendUser(id:$id, reason:$r){ id status } }";
const REACTIVATE_USER: &str = "mutation($id:ID!){ reactivateUser(id:$id){ id status } }";
const SUSPEND_FACILITY: &str =
    "mutation($id:ID!,$r:String!){ suspendFacility(id:$id, reason:$r){ id status } }";
const REACTIVATE_FACILITY: &str = "mutation($id:ID!){ reactivateFacility(id:$id){ id status } }";
const SET_DELEGATION: &str = "mutation($e:Boolean!){ setFacilityAdminDelegation(enabled:$e){ slug facilityAdminDelegation } }";
const ISSUE: &str = "mutation($u:ID!,$d:String!){ issueCertificate(userId:$u, deviceLabel:$d){ certificate { id status deviceLabel } pkcs12Base64 pkcs12Password } }";
const REVOKE: &str =
    "mutation($id:ID!,$r:String!){ revokeCertificate(id:$id, reason:$r){ id status } }";
const UNLOCK: &str = "mutation($id:ID!){ unlockUser(id:$id){ id status } }";
const RESET: &str = "mutation($id:ID!){ resetPassword(id:$id) }";

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// An app whose public per-IP limits are out of the way (every test submits from 127.0.0.1).
async fn spawn() -> TestApp {
    spawn_with(&[]).await
}

async fn spawn_with(extra: &[(&str, &str)]) -> TestApp {
    let mut pairs = vec![
        ("RENKEI_REGISTRATION_IP_MAX_SUBMISSIONS", "1000"),
        ("RENKEI_APPLICATION_STATUS_IP_MAX_LOOKUPS", "1000"),
    ];
    pairs.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    pairs.extend_from_slice(extra);
    spawn_app_with(TestOptions {
        env: env(&pairs),
        ..Default::default()
    })
    .await
}

fn staff_entry(
    name: &str,
    kana: Option<&str>,
    occupation: &str,
    facility_admin: bool,
    device: &str,
) -> Value {
    let mut entry = json!({
        "displayName": name,
        "occupation": occupation,
        "facilityAdmin": facility_admin,
        "deviceLabel": device,
    });
    if let Some(kana) = kana {
        entry["displayNameKana"] = json!(kana);
    }
    entry
}

/// A valid registration: a clinic with its admin (a physician) and a nurse.
fn registration(tenant: &str, facility_name: &str) -> Value {
    json!({
        "tenant": tenant,
        "facility": {
            "kind": "MEDICAL_INSTITUTION",
            "name": facility_name,
            "address": "北区中央1-2-3",
            "phone": "03-1234-5678",
            "representativeName": "山田 太郎",
            "insideMunicipality": true,
        },
        "staff": [
            staff_entry("山田 太郎", Some("ヤマダ タロウ"), "PHYSICIAN", true, "phone"),
            {
                "displayName": "鈴木 花子",
                "displayNameKana": "スズキ ハナコ",
                "occupation": "NURSE",
                "email": "suzuki@kita-clinic.example.jp",
                "facilityAdmin": false,
                "deviceLabel": "tablet",
            },
        ],
        "representativePledgeAccepted": true,
        "contactEmail": "office@kita-clinic.example.jp",
    })
}

/// A registration with `n` staff, the first of them the facility admin.
fn registration_with_staff(tenant: &str, facility_name: &str, n: usize) -> Value {
    let mut input = registration(tenant, facility_name);
    input["staff"] = Value::Array(
        (0..n)
            .map(|i| {
                staff_entry(
                    &format!("職員 {i}"),
                    None,
                    "CARE_WORKER",
                    i == 0,
                    &format!("device {i}"),
                )
            })
            .collect(),
    );
    input
}

async fn submit_registration(client: &TestClient, input: &Value) -> Gql {
    client
        .graphql(SUBMIT_REGISTRATION, json!({ "i": input }))
        .await
}

/// Submits a registration that must be accepted; returns the application.
async fn registered(client: &TestClient, input: &Value) -> Value {
    let resp = submit_registration(client, input).await;
    resp.ok()["submitRegistration"].clone()
}

async fn review(client: &TestClient, id: &str, approve: bool, note: Option<&str>) -> Gql {
    client
        .graphql(REVIEW, json!({ "id": id, "a": approve, "n": note }))
        .await
}

async fn submit_change(client: &TestClient, facility_id: impl ToString, payload: Value) -> Gql {
    client
        .graphql(
            SUBMIT_CHANGE,
            json!({ "f": facility_id.to_string(), "p": payload }),
        )
        .await
}

async fn submit_suspension(
    client: &TestClient,
    user_ids: &[Uuid],
    reason: &str,
    whole_facility: bool,
) -> Gql {
    let ids: Vec<String> = user_ids.iter().map(Uuid::to_string).collect();
    client
        .graphql(
            SUBMIT_SUSPENSION,
            json!({ "u": ids, "r": reason, "w": whole_facility }),
        )
        .await
}

async fn status_of(
    client: &TestClient,
    reference: &str,
    email: &str,
    tenant: Option<&str>,
) -> Value {
    let resp = client
        .graphql(
            APPLICATION_STATUS,
            json!({ "r": reference, "e": email, "t": tenant }),
        )
        .await;
    resp.ok()["applicationStatus"].clone()
}

/// What approving a registration produced.
struct Approved {
    application: Value,
    facility_id: Uuid,
    issued: Vec<Value>,
}

async fn register_and_approve(app: &TestApp, city: &TestClient, input: &Value) -> Approved {
    let submitted = registered(&app.client(), input).await;
    let resp = review(city, str_of(&submitted["id"]), true, None).await;
    let result = resp.ok()["reviewApplication"].clone();
    let facility_id = uuid_of(&result["application"]["facility"]["id"]);
    Approved {
        application: result["application"].clone(),
        facility_id,
        issued: result["issued"].as_array().unwrap().clone(),
    }
}

fn str_of(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, got {value}"))
}

fn uuid_of(value: &Value) -> Uuid {
    Uuid::parse_str(str_of(value)).unwrap()
}

/// The person an `IssuedCredential` describes, with the bundle opened as a device would.
fn issued_person(tenant: &Person, issued: &Value) -> Person {
    let certificate = &issued["certificate"];
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(str_of(&certificate["pkcs12Base64"]))
        .unwrap();
    Person {
        id: uuid_of(&issued["user"]["id"]),
        tenant: tenant.tenant.clone(),
        tenant_id: tenant.tenant_id,
        login_id: str_of(&issued["user"]["loginId"]).to_string(),
        password: str_of(&issued["initialPassword"]).to_string(),
        identity_pem: identity_from_pkcs12(&bundle, str_of(&certificate["pkcs12Password"])),
        certificate_id: uuid_of(&certificate["certificate"]["id"]),
        fingerprint: str_of(&certificate["certificate"]["fingerprintSha256"]).to_string(),
    }
}

fn expect_bad_input(resp: &Gql, field: &str, what: &str) {
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

fn expect_code(resp: &Gql, code: &str, what: &str) {
    assert_eq!(
        resp.code(),
        Some(code),
        "{what}: expected {code}, got {}",
        resp.body
    );
}

/// `R<4 digits>-<6 digits>`.
fn is_reference_number(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 12
        && bytes[0] == b'R'
        && bytes[5] == b'-'
        && bytes[1..5].iter().all(u8::is_ascii_digit)
        && bytes[6..].iter().all(u8::is_ascii_digit)
}

/// The year in the tenant's time zone (every test tenant is in Asia/Tokyo).
fn tokyo_year() -> i32 {
    chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Tokyo)
        .year()
}

fn reference(n: u32) -> String {
    format!("R{}-{n:06}", tokyo_year())
}

fn node_ids(connection: &Value) -> Vec<String> {
    connection["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("not a connection: {connection}"))
        .iter()
        .map(|e| str_of(&e["node"]["id"]).to_string())
        .collect()
}

fn id_set<I: ToString>(ids: impl IntoIterator<Item = I>) -> BTreeSet<String> {
    ids.into_iter().map(|i| i.to_string()).collect()
}

fn counts(list: &Value) -> BTreeMap<String, i64> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|c| (str_of(&c["key"]).to_string(), c["count"].as_i64().unwrap()))
        .collect()
}

async fn application_rows(app: &TestApp, tenant_id: Uuid) -> u64 {
    entity::application::Entity::find()
        .filter(entity::application::Column::TenantId.eq(tenant_id))
        .count(&app.db)
        .await
        .unwrap()
}

async fn user_row(app: &TestApp, id: Uuid) -> entity::user::Model {
    entity::user::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .expect("user exists")
}

async fn facility_row(app: &TestApp, id: Uuid) -> entity::facility::Model {
    entity::facility::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .expect("facility exists")
}

async fn users_of_facility(app: &TestApp, facility_id: Uuid) -> Vec<entity::user::Model> {
    entity::user::Entity::find()
        .filter(entity::user::Column::FacilityId.eq(facility_id))
        .all(&app.db)
        .await
        .unwrap()
}

async fn certificates_of(app: &TestApp, user_id: Uuid) -> Vec<entity::certificate::Model> {
    entity::certificate::Entity::find()
        .filter(entity::certificate::Column::UserId.eq(user_id))
        .all(&app.db)
        .await
        .unwrap()
}

async fn update_user(app: &TestApp, id: Uuid, change: impl FnOnce(&mut entity::user::ActiveModel)) {
    let mut active = user_row(app, id).await.into_active_model();
    change(&mut active);
    active.update(&app.db).await.unwrap();
}

/// A facility of a given kind, made through the same service function the fixture uses.
async fn create_facility_of_kind(
    app: &TestApp,
    tenant_id: Uuid,
    name: &str,
    kind: FacilityKind,
) -> Uuid {
    let txn = renkei::db::begin_write(&app.db).await.unwrap();
    let facility = renkei::service::facilities::create(
        &txn,
        tenant_id,
        renkei::service::facilities::NewFacility {
            kind,
            name: name.into(),
            address: "2-2 Minami".into(),
            phone: "03-1111-2222".into(),
            representative_name: "Rep".into(),
            inside_municipality: true,
        },
        &renkei::service::audit::Origin::default(),
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    facility.id
}

/// Audit events of the tenant with this action.
async fn audit_events(
    app: &TestApp,
    tenant_id: Uuid,
    action: &str,
) -> Vec<entity::audit_event::Model> {
    entity::audit_event::Entity::find()
        .filter(entity::audit_event::Column::TenantId.eq(tenant_id))
        .filter(entity::audit_event::Column::Action.eq(action))
        .all(&app.db)
        .await
        .unwrap()
}

/// Target ids of the tenant's events with this action, each with how often it occurs.
async fn audit_targets(app: &TestApp, tenant_id: Uuid, action: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for event in audit_events(app, tenant_id, action).await {
        *out.entry(event.target_id.unwrap_or_default()).or_insert(0) += 1;
    }
    out
}

/// A certificate made straight with the tenant's CA, bypassing the API (which refuses
/// suspended users one): lets a test reach `login` past the TLS handshake once the user's
/// own certificates are revoked.
async fn identity_bypassing_the_api(app: &TestApp, user_id: Uuid) -> Vec<u8> {
    let user = user_row(app, user_id).await;
    let tenant = renkei::service::users::tenant_of(&app.db, &user)
        .await
        .unwrap();
    let ca = renkei::service::certificates::load_ca(&app.db, &app.state().master_key, tenant.id)
        .await
        .unwrap();
    let issuance = renkei::service::certificates::issue_with_ca(
        &app.db,
        &ca,
        &tenant,
        &user,
        "spare",
        None,
        &renkei::service::audit::Origin::default(),
    )
    .await
    .unwrap();
    identity_from_pkcs12(
        &issuance.pkcs12_der,
        issuance.pkcs12_password.expose_secret(),
    )
}

async fn login_with(app: &TestApp, identity: &[u8], person: &Person) -> Gql {
    app.client_with_identity(identity)
        .graphql(
            LOGIN,
            json!({ "t": person.tenant, "l": person.login_id, "p": person.password }),
        )
        .await
}

/// The serial numbers the tenant's CRL lists (via `openssl crl`), upper-case hex without
/// leading zeros.
async fn crl_serials(app: &TestApp, tenant: &str) -> BTreeSet<String> {
    let resp = app.client().get(&format!("/pki/{tenant}/crl")).await;
    assert_eq!(resp.status(), 200);
    let der = resp.bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenant.crl");
    std::fs::write(&path, &der).unwrap();
    let out = tokio::process::Command::new("openssl")
        .args([
            "crl",
            "-inform",
            "DER",
            "-in",
            path.to_str().unwrap(),
            "-noout",
            "-text",
        ])
        .output()
        .await
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl crl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Serial Number:"))
        .map(normal_serial)
        .collect()
}

fn normal_serial(hex: &str) -> String {
    let hex = hex.trim().replace(':', "").to_uppercase();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

/// A session's next request after its user was suspended: refused, one way or the other.
async fn expect_session_ended(client: &TestClient, what: &str) {
    let resp = client.graphql(TENANT, json!({})).await;
    assert!(
        matches!(resp.code(), Some("UNAUTHENTICATED" | "ACCOUNT_SUSPENDED")),
        "{what}: the session should have ended: {}",
        resp.body
    );
}

/// Changes a valid registration input into the case under test.
type Breaker = fn(&mut Value);

/// A password every rule accepts.
fn strong_password() -> String {
    format!("Tq{}-8#Lw", &Uuid::new_v4().simple().to_string()[..10])
}

/// A form-7 line changing one person, every field given.
fn change_entry(
    user_id: impl ToString,
    name: &str,
    kana: &str,
    occupation: &str,
    email: &str,
    facility_admin: bool,
) -> Value {
    json!({
        "userId": user_id.to_string(),
        "displayName": name,
        "displayNameKana": kana,
        "occupation": occupation,
        "email": email,
        "facilityAdmin": facility_admin,
    })
}

// ---------------------------------------------------------------------------------------------
// 1. the whole journey
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_facility_registers_anonymously_is_approved_and_its_people_log_in_and_work() {
    let app = spawn().await;
    let admin = app.create_tenant("kita").await;
    let city = app.ready_session(&admin).await;
    let anonymous = app.client();

    // Submitted without an account.
    let mut input = registration("kita", "Kita Home Clinic");
    input["contactEmail"] = json!("Office@Kita-Clinic.example.jp");
    let submitted = registered(&anonymous, &input).await;
    assert_eq!(submitted["kind"], "REGISTRATION");
    assert_eq!(submitted["status"], "SUBMITTED");
    assert!(submitted["submittedBy"].is_null(), "{submitted}");
    assert!(submitted["facility"].is_null(), "{submitted}");
    assert!(submitted["reviewedBy"].is_null(), "{submitted}");
    let number = str_of(&submitted["referenceNumber"]).to_string();
    assert!(is_reference_number(&number), "{number}");
    assert_eq!(number, reference(1));
    // The payload is the validated form, re-serialised, without secrets.
    let payload = &submitted["payload"];
    assert_eq!(payload["facility"]["name"], "Kita Home Clinic");
    assert_eq!(payload["facility"]["phone"], "03-1234-5678");
    assert_eq!(payload["staff"][1]["displayNameKana"], "スズキ ハナコ");
    assert_eq!(payload["staff"][0]["facilityAdmin"], true);
    assert!(
        !payload.to_string().to_lowercase().contains("password"),
        "{payload}"
    );
    let application_id = str_of(&submitted["id"]).to_string();

    // Public status, by reference number and the contact e-mail in any case.
    for email in [
        "office@kita-clinic.example.jp",
        "OFFICE@KITA-CLINIC.EXAMPLE.JP",
        "Office@Kita-Clinic.example.jp",
    ] {
        assert_eq!(
            status_of(&anonymous, &number, email, None).await,
            "SUBMITTED",
            "{email}"
        );
    }
    assert_eq!(
        status_of(
            &anonymous,
            &number,
            "office@kita-clinic.example.jp",
            Some("kita")
        )
        .await,
        "SUBMITTED"
    );
    assert!(
        status_of(&anonymous, &number, "someone@else.example.jp", None)
            .await
            .is_null()
    );
    assert!(
        status_of(
            &anonymous,
            &reference(2),
            "office@kita-clinic.example.jp",
            None
        )
        .await
        .is_null()
    );

    // The city approves: facility F0001 and one ID per staff line, in order.
    let resp = review(&city, &application_id, true, None).await;
    let result = &resp.ok()["reviewApplication"];
    let application = &result["application"];
    assert_eq!(application["status"], "APPROVED");
    assert_eq!(application["reviewedBy"]["id"], admin.id.to_string());
    assert!(application["reviewedAt"].is_string());
    assert_eq!(application["facility"]["code"], "F0001");
    assert_eq!(application["facility"]["name"], "Kita Home Clinic");
    assert_eq!(application["facility"]["status"], "ACTIVE");
    let facility_id = uuid_of(&application["facility"]["id"]);
    let issued = result["issued"].as_array().unwrap();
    assert_eq!(issued.len(), 2, "{result}");
    let expected = [
        (
            "f0001-001",
            "FACILITY_ADMIN",
            "山田 太郎",
            "PHYSICIAN",
            "phone",
        ),
        ("f0001-002", "STAFF", "鈴木 花子", "NURSE", "tablet"),
    ];
    for (credential, (login_id, role, name, occupation, device)) in issued.iter().zip(expected) {
        let user = &credential["user"];
        assert_eq!(user["loginId"], login_id, "{credential}");
        assert_eq!(user["role"], role, "{credential}");
        assert_eq!(user["displayName"], name, "{credential}");
        assert_eq!(user["occupation"], occupation, "{credential}");
        assert_eq!(user["status"], "ACTIVE", "{credential}");
        assert_eq!(user["mustChangePassword"], true, "{credential}");
        assert_eq!(user["facility"]["id"], facility_id.to_string());
        assert_eq!(
            str_of(&credential["initialPassword"]).chars().count(),
            16,
            "{credential}"
        );
        let certificate = &credential["certificate"];
        assert_eq!(certificate["certificate"]["deviceLabel"], device);
        assert_eq!(certificate["certificate"]["status"], "ACTIVE");
        assert!(str_of(&certificate["pkcs12Password"]).chars().count() >= 16);
        assert!(!str_of(&certificate["pkcs12Base64"]).is_empty());
    }
    assert_ne!(issued[0]["initialPassword"], issued[1]["initialPassword"]);
    let stored = facility_row(&app, facility_id).await;
    assert_eq!(stored.code.as_deref(), Some("F0001"));
    assert_eq!(stored.status, AccountStatus::Active);
    assert_eq!(users_of_facility(&app, facility_id).await.len(), 2);
    assert_eq!(
        status_of(&anonymous, &number, "office@kita-clinic.example.jp", None).await,
        "APPROVED"
    );

    // The facility admin's first login, with the PKCS#12 and the initial password.
    let head = issued_person(&admin, &issued[0]);
    let device = app.client_for(&head);
    let login = login_with(&app, &head.identity_pem, &head).await;
    let payload = &login.ok()["login"];
    assert_eq!(payload["mustChangePassword"], true);
    assert_eq!(payload["mustAcceptPledge"], true);
    assert_eq!(payload["user"]["role"], "FACILITY_ADMIN");
    let client = device.with_token(str_of(&payload["token"]));
    expect_code(
        &client.graphql(FACILITIES, json!({})).await,
        "PASSWORD_CHANGE_REQUIRED",
        "facilities before the password change",
    );
    let weak = client
        .graphql(
            CHANGE_PASSWORD,
            json!({ "c": head.password, "n": "password" }),
        )
        .await;
    expect_bad_input(&weak, "newPassword", "a weak new password");
    let changed = client
        .graphql(
            CHANGE_PASSWORD,
            json!({ "c": head.password, "n": strong_password() }),
        )
        .await;
    assert_eq!(changed.ok()["changePassword"], true);
    expect_code(
        &client.graphql(FACILITIES, json!({})).await,
        "PLEDGE_REQUIRED",
        "facilities before the pledge",
    );
    let pledged = client.graphql(ACCEPT_PLEDGE, json!({})).await;
    assert!(pledged.ok()["acceptPledge"]["pledgeAcceptedAt"].is_string());

    // Another facility of the city, registered later.
    let other = app.create_facility(admin.tenant_id, "Minami Care").await;
    let outsider = app
        .create_user(&admin, "minami1", Role::Staff, Some(other))
        .await;

    // Its own facility only, its own people only.
    let facilities = client.graphql(FACILITIES, json!({})).await;
    let facilities = &facilities.ok()["facilities"];
    assert_eq!(facilities["totalCount"], 1, "{facilities}");
    assert_eq!(node_ids(facilities), vec![facility_id.to_string()]);
    let all = city.graphql(FACILITIES, json!({})).await;
    assert_eq!(all.ok()["facilities"]["totalCount"], 2);
    let users = client.graphql(USERS, json!({})).await;
    let users = &users.ok()["users"];
    assert_eq!(users["totalCount"], 2, "{users}");
    assert_eq!(
        id_set(node_ids(users)),
        id_set(issued.iter().map(|c| str_of(&c["user"]["id"]).to_string()))
    );
    assert!(!node_ids(users).contains(&outsider.id.to_string()));

    // ... and files a change for it.
    let change = submit_change(
        &client,
        facility_id,
        json!({ "facility": { "phone": "03-5555-0101" } }),
    )
    .await;
    let change = &change.ok()["submitChange"];
    assert_eq!(change["kind"], "CHANGE");
    assert_eq!(change["status"], "SUBMITTED");
    assert_eq!(change["facility"]["id"], facility_id.to_string());
    assert_eq!(change["submittedBy"]["id"], head.id.to_string());
    assert_eq!(change["referenceNumber"], reference(2));
    // Only registrations are followed publicly.
    assert!(
        status_of(
            &anonymous,
            &reference(2),
            "office@kita-clinic.example.jp",
            None
        )
        .await
        .is_null()
    );

    // The nurse logs in with its own bundle too, and must change its password first.
    let nurse = issued_person(&admin, &issued[1]);
    let login = login_with(&app, &nurse.identity_pem, &nurse).await;
    assert_eq!(login.ok()["login"]["mustChangePassword"], true);
    assert_eq!(login.ok()["login"]["user"]["role"], "STAFF");
}

// ---------------------------------------------------------------------------------------------
// 2. registration: validation, rate limit, reference numbers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn registration_validation_names_the_offending_field_and_stores_nothing() {
    let app = spawn().await;
    let admin = app.create_tenant("kita").await;
    let anonymous = app.client();

    let cases: Vec<(&str, &str, Breaker)> = vec![
        ("unknown tenant", "tenant", |i: &mut Value| {
            i["tenant"] = json!("nowhere")
        }),
        ("blank facility name", "facility.name", |i: &mut Value| {
            i["facility"]["name"] = json!("   ")
        }),
        (
            "facility name of 201 characters",
            "facility.name",
            |i: &mut Value| i["facility"]["name"] = json!("医".repeat(201)),
        ),
        ("empty address", "facility.address", |i: &mut Value| {
            i["facility"]["address"] = json!("")
        }),
        (
            "control character in representative",
            "facility.representativeName",
            |i: &mut Value| i["facility"]["representativeName"] = json!("山田\u{7}太郎"),
        ),
        ("phone too short", "facility.phone", |i: &mut Value| {
            i["facility"]["phone"] = json!("12345")
        }),
        (
            "phone not starting with 0",
            "facility.phone",
            |i: &mut Value| i["facility"]["phone"] = json!("3-1234-56789"),
        ),
        ("phone with 12 digits", "facility.phone", |i: &mut Value| {
            i["facility"]["phone"] = json!("090-1234-56789")
        }),
        ("phone with letters", "facility.phone", |i: &mut Value| {
            i["facility"]["phone"] = json!("03-1234-5678 ext")
        }),
        (
            "+81 with too few digits",
            "facility.phone",
            |i: &mut Value| i["facility"]["phone"] = json!("+81-3-1234"),
        ),
        (
            "hiragana kana",
            "staff[1].displayNameKana",
            |i: &mut Value| i["staff"][1]["displayNameKana"] = json!("すずき はなこ"),
        ),
        ("latin kana", "staff[1].displayNameKana", |i: &mut Value| {
            i["staff"][1]["displayNameKana"] = json!("Suzuki Hanako")
        }),
        (
            "empty display name",
            "staff[0].displayName",
            |i: &mut Value| i["staff"][0]["displayName"] = json!(""),
        ),
        (
            "display name of 101 characters",
            "staff[1].displayName",
            |i: &mut Value| i["staff"][1]["displayName"] = json!("a".repeat(101)),
        ),
        (
            "staff e-mail with a space",
            "staff[1].email",
            |i: &mut Value| i["staff"][1]["email"] = json!("suzuki hanako@example.jp"),
        ),
        (
            "staff e-mail without a dot in the domain",
            "staff[1].email",
            |i: &mut Value| i["staff"][1]["email"] = json!("suzuki@localhost"),
        ),
        (
            "staff e-mail with an empty local part",
            "staff[1].email",
            |i: &mut Value| i["staff"][1]["email"] = json!("@example.jp"),
        ),
        (
            "device label of 65 characters",
            "staff[0].deviceLabel",
            |i: &mut Value| i["staff"][0]["deviceLabel"] = json!("d".repeat(65)),
        ),
        (
            "empty device label",
            "staff[1].deviceLabel",
            |i: &mut Value| i["staff"][1]["deviceLabel"] = json!(""),
        ),
        (
            "contact e-mail without @",
            "contactEmail",
            |i: &mut Value| i["contactEmail"] = json!("office.example.jp"),
        ),
        (
            "contact e-mail with two @",
            "contactEmail",
            |i: &mut Value| i["contactEmail"] = json!("office@@example.jp"),
        ),
        (
            "contact e-mail with a space",
            "contactEmail",
            |i: &mut Value| i["contactEmail"] = json!("office@exa mple.jp"),
        ),
        ("no staff", "staff", |i: &mut Value| i["staff"] = json!([])),
        ("no facility admin", "staff", |i: &mut Value| {
            i["staff"][0]["facilityAdmin"] = json!(false)
        }),
        ("201 staff", "staff", |i: &mut Value| {
            let entry = i["staff"][0].clone();
            i["staff"] = Value::Array(vec![entry; 201]);
        }),
        (
            "pledge not accepted",
            "representativePledgeAccepted",
            |i: &mut Value| i["representativePledgeAccepted"] = json!(false),
        ),
    ];
    let mut wrong = Vec::new();
    for (what, field, breaker) in &cases {
        let mut input = registration("kita", "Kita Clinic");
        breaker(&mut input);
        let resp = submit_registration(&anonymous, &input).await;
        if resp.code() != Some("BAD_USER_INPUT") || resp.field() != Some(field) {
            wrong.push(format!(
                "{what}: expected BAD_USER_INPUT {field}, got {}",
                resp.body
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        application_rows(&app, admin.tenant_id).await,
        0,
        "nothing stored"
    );

    // What the rules allow goes through.
    let accepted: Vec<(&str, Breaker)> = vec![
        ("landline", |i: &mut Value| {
            i["facility"]["phone"] = json!("03-1234-5678")
        }),
        ("mobile", |i: &mut Value| {
            i["facility"]["phone"] = json!("090-1234-5678")
        }),
        ("parentheses and spaces", |i: &mut Value| {
            i["facility"]["phone"] = json!("(03) 1234 5678")
        }),
        ("digits only", |i: &mut Value| {
            i["facility"]["phone"] = json!("0312345678")
        }),
        ("+81 landline", |i: &mut Value| {
            i["facility"]["phone"] = json!("+81-3-1234-5678")
        }),
        ("+81 mobile", |i: &mut Value| {
            i["facility"]["phone"] = json!("+81 90 1234 5678")
        }),
        ("kana with ー and ・", |i: &mut Value| {
            i["staff"][0]["displayNameKana"] = json!("ヤマダ・タロー")
        }),
        ("no kana, no e-mail, default device", |i: &mut Value| {
            i["staff"] = json!([{ "displayName": "佐藤", "occupation": "CARE_MANAGER", "facilityAdmin": true }]);
        }),
        ("care provider", |i: &mut Value| {
            i["facility"]["kind"] = json!("CARE_PROVIDER")
        }),
    ];
    for (what, variant) in &accepted {
        let mut input = registration("kita", "Kita Clinic");
        variant(&mut input);
        let resp = submit_registration(&anonymous, &input).await;
        assert!(resp.errors().is_empty(), "{what}: {}", resp.body);
        assert_eq!(resp.data()["submitRegistration"]["status"], "SUBMITTED");
    }
    assert_eq!(
        application_rows(&app, admin.tenant_id).await,
        accepted.len() as u64
    );
    // Defaults are filled in the stored form.
    let mut input = registration("kita", "Defaults Clinic");
    input["staff"] =
        json!([{ "displayName": "佐藤", "occupation": "CARE_MANAGER", "facilityAdmin": true }]);
    let submitted = registered(&anonymous, &input).await;
    assert_eq!(submitted["payload"]["staff"][0]["deviceLabel"], "default");
}

#[tokio::test]
async fn registrations_and_status_lookups_are_rate_limited_per_ip() {
    let app = spawn_with(&[
        ("RENKEI_REGISTRATION_IP_MAX_SUBMISSIONS", "2"),
        ("RENKEI_APPLICATION_STATUS_IP_MAX_LOOKUPS", "3"),
    ])
    .await;
    let admin = app.create_tenant("kita").await;
    let anonymous = app.client();

    let first = registered(&anonymous, &registration("kita", "One Clinic")).await;
    registered(&anonymous, &registration("kita", "Two Clinic")).await;
    let third = submit_registration(&anonymous, &registration("kita", "Three Clinic")).await;
    expect_code(&third, "RATE_LIMITED", "the third registration");
    let retry = third.errors()[0]["extensions"]["retryAfterSeconds"]
        .as_i64()
        .unwrap_or_else(|| panic!("no retryAfterSeconds: {}", third.body));
    assert!(retry > 0 && retry <= 3600, "{}", third.body);
    assert_eq!(application_rows(&app, admin.tenant_id).await, 2);

    // Status lookups have their own allowance.
    let number = str_of(&first["referenceNumber"]);
    for _ in 0..3 {
        assert_eq!(
            status_of(&anonymous, number, "office@kita-clinic.example.jp", None).await,
            "SUBMITTED"
        );
    }
    let fourth = anonymous
        .graphql(
            APPLICATION_STATUS,
            json!({ "r": number, "e": "office@kita-clinic.example.jp" }),
        )
        .await;
    expect_code(&fourth, "RATE_LIMITED", "the fourth status lookup");
    assert!(
        fourth.errors()[0]["extensions"]["retryAfterSeconds"]
            .as_i64()
            .is_some_and(|s| s > 0),
        "{}",
        fourth.body
    );
}

#[tokio::test]
async fn reference_numbers_are_sequential_and_unique_per_tenant() {
    let app = spawn().await;
    let kita = app.create_tenant("kita").await;
    let minami = app.create_tenant("minami").await;
    let anonymous = app.client();

    let mut got: Vec<(String, String)> = Vec::new();
    for tenant in ["kita", "minami", "kita", "kita", "minami"] {
        let submitted = registered(&anonymous, &registration(tenant, "Clinic")).await;
        got.push((
            tenant.into(),
            str_of(&submitted["referenceNumber"]).to_string(),
        ));
    }
    let expected: Vec<(String, String)> = [
        ("kita", 1),
        ("minami", 1),
        ("kita", 2),
        ("kita", 3),
        ("minami", 2),
    ]
    .into_iter()
    .map(|(t, n)| (t.to_string(), reference(n)))
    .collect();
    assert_eq!(got, expected);

    // Both tenants have an R…-000001 with the same contact e-mail: `tenant` tells them apart.
    let city = app.ready_session(&kita).await;
    let first_of_kita = entity::application::Entity::find()
        .filter(entity::application::Column::TenantId.eq(kita.tenant_id))
        .filter(entity::application::Column::ReferenceNumber.eq(reference(1)))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    review(&city, &first_of_kita.id.to_string(), true, None)
        .await
        .ok();
    let email = "office@kita-clinic.example.jp";
    assert_eq!(
        status_of(&anonymous, &reference(1), email, Some("kita")).await,
        "APPROVED"
    );
    assert_eq!(
        status_of(&anonymous, &reference(1), email, Some("minami")).await,
        "SUBMITTED"
    );
    assert_eq!(
        status_of(&anonymous, &reference(3), email, Some("kita")).await,
        "SUBMITTED"
    );
    assert!(
        status_of(&anonymous, &reference(3), email, Some("minami"))
            .await
            .is_null(),
        "minami has no third application"
    );

    // Concurrent submissions still get distinct, consecutive numbers.
    let inputs: Vec<Value> = (0..5)
        .map(|i| registration("kita", &format!("Clinic {i}")))
        .collect();
    let results = futures_util::future::join_all(
        inputs
            .iter()
            .map(|input| submit_registration(&anonymous, input)),
    )
    .await;
    let numbers: BTreeSet<String> = results
        .iter()
        .map(|r| str_of(&r.ok()["submitRegistration"]["referenceNumber"]).to_string())
        .collect();
    assert_eq!(numbers, (4..=8).map(reference).collect::<BTreeSet<_>>());

    for tenant in [&kita, &minami] {
        let rows = entity::application::Entity::find()
            .filter(entity::application::Column::TenantId.eq(tenant.tenant_id))
            .all(&app.db)
            .await
            .unwrap();
        let distinct: BTreeSet<&str> = rows.iter().map(|r| r.reference_number.as_str()).collect();
        assert_eq!(
            distinct.len(),
            rows.len(),
            "duplicates in {}",
            tenant.tenant
        );
        assert!(
            rows.iter()
                .all(|r| is_reference_number(&r.reference_number))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. review and withdrawal
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_reviewed_application_cannot_be_reviewed_again_and_rejection_needs_a_note() {
    let app = spawn().await;
    let admin = app.create_tenant("kita").await;
    let city = app.ready_session(&admin).await;
    let anonymous = app.client();

    let approved = registered(&anonymous, &registration("kita", "Approved Clinic")).await;
    let approved_id = str_of(&approved["id"]);
    review(&city, approved_id, true, None).await.ok();
    expect_code(
        &review(&city, approved_id, true, None).await,
        "CONFLICT",
        "approving twice",
    );
    expect_code(
        &review(&city, approved_id, false, Some("too late")).await,
        "CONFLICT",
        "rejecting an approved application",
    );

    let refused = registered(&anonymous, &registration("kita", "Refused Clinic")).await;
    let refused_id = str_of(&refused["id"]);
    expect_bad_input(
        &review(&city, refused_id, false, None).await,
        "note",
        "rejection without a note",
    );
    expect_bad_input(
        &review(&city, refused_id, false, Some("")).await,
        "note",
        "rejection with an empty note",
    );
    expect_bad_input(
        &review(&city, refused_id, false, Some(&"x".repeat(2001))).await,
        "note",
        "rejection with a note of 2001 characters",
    );
    let resp = review(&city, refused_id, false, Some("書類に不備があります")).await;
    let result = &resp.ok()["reviewApplication"];
    assert_eq!(result["application"]["status"], "REJECTED");
    assert_eq!(result["application"]["reviewNote"], "書類に不備があります");
    assert_eq!(
        result["application"]["reviewedBy"]["id"],
        admin.id.to_string()
    );
    assert!(result["application"]["facility"].is_null());
    assert_eq!(result["issued"], json!([]));
    expect_code(
        &review(&city, refused_id, true, None).await,
        "CONFLICT",
        "approving a rejected application",
    );
    assert_eq!(
        status_of(
            &anonymous,
            str_of(&refused["referenceNumber"]),
            "office@kita-clinic.example.jp",
            None
        )
        .await,
        "REJECTED"
    );

    // Nothing was created for the rejected one: one facility, its two people and the admin.
    let facilities = entity::facility::Entity::find()
        .filter(entity::facility::Column::TenantId.eq(admin.tenant_id))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(facilities.len(), 1);
    assert_eq!(facilities[0].name, "Approved Clinic");
    let users = entity::user::Entity::find()
        .filter(entity::user::Column::TenantId.eq(admin.tenant_id))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(users, 3);
}

#[tokio::test]
async fn only_the_submitter_withdraws_and_a_withdrawn_application_cannot_be_reviewed() {
    let app = spawn().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let head = app
        .create_user(&admin, "head", Role::FacilityAdmin, Some(facility))
        .await;
    let deputy = app
        .create_user(&admin, "deputy", Role::FacilityAdmin, Some(facility))
        .await;
    let nurse = app
        .create_user(&admin, "nurse", Role::Staff, Some(facility))
        .await;
    let city = app.ready_session(&admin).await;
    let head_client = app.ready_session(&head).await;
    let deputy_client = app.ready_session(&deputy).await;
    let nurse_client = app.ready_session(&nurse).await;

    let change = submit_change(
        &head_client,
        facility,
        json!({ "facility": { "address": "北区中央9-9" } }),
    )
    .await;
    let id = str_of(&change.ok()["submitChange"]["id"]).to_string();
    for (who, client) in [
        ("another admin of the facility", &deputy_client),
        ("the city", &city),
        ("a staff member", &nurse_client),
    ] {
        expect_code(
            &client.graphql(WITHDRAW, json!({ "id": id })).await,
            "FORBIDDEN",
            who,
        );
    }
    let withdrawn = head_client.graphql(WITHDRAW, json!({ "id": id })).await;
    assert_eq!(withdrawn.ok()["withdrawApplication"]["status"], "WITHDRAWN");
    expect_code(
        &review(&city, &id, true, None).await,
        "CONFLICT",
        "approving a withdrawn application",
    );
    expect_code(
        &head_client.graphql(WITHDRAW, json!({ "id": id })).await,
        "CONFLICT",
        "withdrawing twice",
    );
    // The facility was not changed.
    assert_eq!(
        facility_row(&app, facility).await.address.as_deref(),
        Some("1-1 Chuo")
    );

    // A registration filed by someone logged in carries the submitter, who may withdraw it.
    let own = registered(&nurse_client, &registration("kita", "Branch Clinic")).await;
    assert_eq!(own["submittedBy"]["id"], nurse.id.to_string());
    expect_code(
        &head_client
            .graphql(WITHDRAW, json!({ "id": own["id"] }))
            .await,
        "FORBIDDEN",
        "withdrawing a colleague's registration",
    );
    let withdrawn = nurse_client
        .graphql(WITHDRAW, json!({ "id": own["id"] }))
        .await;
    assert_eq!(withdrawn.ok()["withdrawApplication"]["status"], "WITHDRAWN");
    assert_eq!(
        status_of(
            &app.client(),
            str_of(&own["referenceNumber"]),
            "office@kita-clinic.example.jp",
            None
        )
        .await,
        "WITHDRAWN"
    );
}

#[tokio::test]
async fn two_city_admins_approving_at_once_create_one_set_of_accounts() {
    let app = spawn().await;
    let admin = app.create_tenant("kita").await;
    let second = app
        .create_user(&admin, "admin2", Role::CityAdmin, None)
        .await;
    let one = app.ready_session(&admin).await;
    let two = app.ready_session(&second).await;

    for round in 0..3 {
        let name = format!("Race Clinic {round}");
        let submitted = registered(&app.client(), &registration_with_staff("kita", &name, 3)).await;
        let vars = json!({ "id": submitted["id"], "a": true, "n": null });
        let (a, b) = tokio::join!(one.graphql(REVIEW, vars.clone()), two.graphql(REVIEW, vars));
        let outcomes: BTreeSet<Option<&str>> = [a.code(), b.code()].into_iter().collect();
        assert_eq!(
            outcomes,
            BTreeSet::from([None, Some("CONFLICT")]),
            "round {round}: one approval wins, the other conflicts: {} / {}",
            a.body,
            b.body
        );
        let winner = if a.code().is_none() { &a } else { &b };
        let result = &winner.ok()["reviewApplication"];
        let code = str_of(&result["application"]["facility"]["code"]);
        assert!(
            code.len() == 5
                && code.starts_with('F')
                && code[1..].bytes().all(|b| b.is_ascii_digit()),
            "{code}"
        );
        let login_ids: Vec<&str> = result["issued"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| str_of(&c["user"]["loginId"]))
            .collect();
        let expected: Vec<String> = (1..=3)
            .map(|n| format!("{}-{n:03}", code.to_lowercase()))
            .collect();
        assert_eq!(login_ids, expected, "round {round}");

        let facilities = entity::facility::Entity::find()
            .filter(entity::facility::Column::TenantId.eq(admin.tenant_id))
            .filter(entity::facility::Column::Name.eq(name.as_str()))
            .all(&app.db)
            .await
            .unwrap();
        assert_eq!(facilities.len(), 1, "round {round}: one facility");
        let users = users_of_facility(&app, facilities[0].id).await;
        assert_eq!(users.len(), 3, "round {round}: one account per staff line");
        for user in &users {
            assert_eq!(certificates_of(&app, user.id).await.len(), 1);
        }
        let approvals = audit_targets(&app, admin.tenant_id, "application.approve").await;
        assert_eq!(approvals.get(str_of(&submitted["id"])), Some(&1));
    }
}

// ---------------------------------------------------------------------------------------------
// 4. change (form 7)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_approved_change_updates_the_facility_adds_staff_and_changes_staff() {
    let app = spawn().await;
    let admin = app.create_tenant("kita").await;
    let city = app.ready_session(&admin).await;
    let approved = register_and_approve(&app, &city, &registration("kita", "Kita Clinic")).await;
    let facility = approved.facility_id;
    let yamada = issued_person(&admin, &approved.issued[0]);
    let suzuki = issued_person(&admin, &approved.issued[1]);
    let head = app.ready_session(&yamada).await;

    let payload = json!({
        "facility": { "phone": "03-9999-0000" },
        "addStaff": [
            { "displayName": "田中 一郎", "displayNameKana": "タナカ イチロウ", "occupation": "CARE_MANAGER",
              "email": "tanaka@kita-clinic.example.jp", "facilityAdmin": false, "deviceLabel": "laptop" }
        ],
        "changeStaff": [
            change_entry(suzuki.id, "鈴木 花子", "スズキ ハナコ", "PHARMACIST", "hanako@kita-clinic.example.jp", true),
            change_entry(yamada.id, "山田 太郎", "ヤマダ タロウ", "PHYSICIAN", "yamada@kita-clinic.example.jp", false),
        ],
    });
    let resp = submit_change(&head, facility, payload).await;
    let change = &resp.ok()["submitChange"];
    assert_eq!(change["kind"], "CHANGE");
    assert_eq!(change["status"], "SUBMITTED");
    assert_eq!(change["payload"]["addStaff"][0]["displayName"], "田中 一郎");
    assert_eq!(
        change["payload"]["changeStaff"][0]["occupation"],
        "PHARMACIST"
    );
    assert_eq!(change["payload"]["facility"]["phone"], "03-9999-0000");
    // Nothing applied before approval.
    assert_eq!(
        facility_row(&app, facility).await.phone.as_deref(),
        Some("03-1234-5678")
    );

    let resp = review(&city, str_of(&change["id"]), true, None).await;
    let result = &resp.ok()["reviewApplication"];
    assert_eq!(result["application"]["status"], "APPROVED");
    let issued = result["issued"].as_array().unwrap();
    assert_eq!(
        issued.len(),
        1,
        "only the added person gets credentials: {result}"
    );
    let added = &issued[0];
    assert_eq!(added["user"]["displayName"], "田中 一郎");
    assert_eq!(added["user"]["loginId"], "f0001-003");
    assert_eq!(added["user"]["role"], "STAFF");
    assert_eq!(added["user"]["occupation"], "CARE_MANAGER");
    assert_eq!(added["user"]["mustChangePassword"], true);
    assert_eq!(added["user"]["facility"]["id"], facility.to_string());
    assert_eq!(added["certificate"]["certificate"]["deviceLabel"], "laptop");
    assert_eq!(str_of(&added["initialPassword"]).chars().count(), 16);
    // The added person can log in with what was issued.
    let tanaka = issued_person(&admin, added);
    let login = login_with(&app, &tanaka.identity_pem, &tanaka).await;
    assert_eq!(login.ok()["login"]["user"]["id"], tanaka.id.to_string());

    let shown = city
        .graphql(FACILITY, json!({ "id": facility.to_string() }))
        .await;
    let shown = &shown.ok()["facility"];
    assert_eq!(shown["phone"], "03-9999-0000");
    assert_eq!(shown["name"], "Kita Clinic", "untouched fields stay");
    assert_eq!(shown["staff"]["totalCount"], 3);

    let user = city
        .graphql(USER, json!({ "id": suzuki.id.to_string() }))
        .await;
    let user = &user.ok()["user"];
    assert_eq!(user["occupation"], "PHARMACIST");
    assert_eq!(user["role"], "FACILITY_ADMIN");
    assert_eq!(
        user_row(&app, suzuki.id).await.email.as_deref(),
        Some("hanako@kita-clinic.example.jp")
    );
    let user = city
        .graphql(USER, json!({ "id": yamada.id.to_string() }))
        .await;
    assert_eq!(user.ok()["user"]["role"], "STAFF");
    assert_eq!(users_of_facility(&app, facility).await.len(), 3);

    // Audited in the change's transaction.
    assert_eq!(
        audit_targets(&app, admin.tenant_id, "facility.update")
            .await
            .get(&facility.to_string()),
        Some(&1)
    );
    let updates = audit_targets(&app, admin.tenant_id, "user.update").await;
    assert_eq!(updates.get(&suzuki.id.to_string()), Some(&1), "{updates:?}");
    assert_eq!(updates.get(&yamada.id.to_string()), Some(&1), "{updates:?}");
    assert_eq!(
        audit_targets(&app, admin.tenant_id, "user.create")
            .await
            .get(&tanaka.id.to_string()),
        Some(&1)
    );
}

#[tokio::test]
async fn change_validation_names_the_field_and_keeps_a_facility_admin() {
    let app = spawn().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let other_facility = app.create_facility(admin.tenant_id, "Minami Clinic").await;
    let head = app
        .create_user(&admin, "head", Role::FacilityAdmin, Some(facility))
        .await;
    let nurse = app
        .create_user(&admin, "nurse", Role::Staff, Some(facility))
        .await;
    let outsider = app
        .create_user(&admin, "outsider", Role::Staff, Some(other_facility))
        .await;
    let client = app.ready_session(&head).await;
    let entry = |id: Uuid, admin_flag: bool| {
        change_entry(
            id,
            "看護 師",
            "カンゴ シ",
            "NURSE",
            "n@example.jp",
            admin_flag,
        )
    };

    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "a user of another facility",
            json!({ "changeStaff": [entry(outsider.id, false)] }),
            "changeStaff[0].userId",
        ),
        (
            "an unknown user",
            json!({ "changeStaff": [entry(Uuid::new_v4(), false)] }),
            "changeStaff[0].userId",
        ),
        (
            "the same user twice",
            json!({ "changeStaff": [entry(nurse.id, false), entry(nurse.id, false)] }),
            "changeStaff[1].userId",
        ),
        (
            "the last facility admin stepping down",
            json!({ "changeStaff": [entry(head.id, false)] }),
            "changeStaff",
        ),
        ("an empty payload", json!({}), "payload"),
        (
            "only empty parts",
            json!({ "facility": {}, "addStaff": [], "changeStaff": [] }),
            "payload",
        ),
        ("not an object", json!("change the phone"), "payload"),
        (
            "an unknown occupation",
            json!({ "addStaff": [{ "displayName": "新人", "occupation": "WIZARD" }] }),
            "addStaff[0].occupation",
        ),
        (
            "hiragana kana of an added person",
            json!({ "addStaff": [{ "displayName": "新人", "displayNameKana": "しんじん", "occupation": "NURSE" }] }),
            "addStaff[0].displayNameKana",
        ),
        (
            "a bad phone",
            json!({ "facility": { "phone": "123" } }),
            "facility.phone",
        ),
        (
            "a bad changed e-mail",
            json!({ "changeStaff": [change_entry(nurse.id, "看護 師", "カンゴ シ", "NURSE", "no-at-sign", false)] }),
            "changeStaff[0].email",
        ),
    ];
    let mut wrong = Vec::new();
    for (what, payload, field) in cases {
        let resp = submit_change(&client, facility, payload).await;
        if resp.code() != Some("BAD_USER_INPUT") || resp.field() != Some(field) {
            wrong.push(format!(
                "{what}: expected BAD_USER_INPUT {field}, got {}",
                resp.body
            ));
        }
    }
    // Unknown keys, at any depth, are named.
    for (key, payload) in [
        (
            "bogus",
            json!({ "facility": { "phone": "03-1111-1111" }, "bogus": 1 }),
        ),
        ("fax", json!({ "facility": { "fax": "03-1111-1111" } })),
        (
            "age",
            json!({ "addStaff": [{ "displayName": "新人", "occupation": "NURSE", "age": 30 }] }),
        ),
    ] {
        let resp = submit_change(&client, facility, payload).await;
        let message = resp.errors().first().map(|e| e["message"].to_string());
        let named = resp.field().is_some_and(|f| f.contains(key))
            || message.is_some_and(|m| m.contains(key));
        if resp.code() != Some("BAD_USER_INPUT") || !named {
            wrong.push(format!(
                "unknown key {key}: expected BAD_USER_INPUT naming it, got {}",
                resp.body
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        application_rows(&app, admin.tenant_id).await,
        0,
        "nothing stored"
    );

    // Handing the role over in one change is fine.
    let handover = submit_change(
        &client,
        facility,
        json!({ "changeStaff": [entry(head.id, false), entry(nurse.id, true)] }),
    )
    .await;
    assert_eq!(handover.ok()["submitChange"]["status"], "SUBMITTED");
}

#[tokio::test]
async fn approval_rechecks_that_a_facility_admin_remains() {
    let app = spawn().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let first = app
        .create_user(&admin, "first", Role::FacilityAdmin, Some(facility))
        .await;
    let second = app
        .create_user(&admin, "second", Role::FacilityAdmin, Some(facility))
        .await;
    let city = app.ready_session(&admin).await;
    let first_client = app.ready_session(&first).await;
    let second_client = app.ready_session(&second).await;
    let demote = |id: Uuid| json!({ "changeStaff": [change_entry(id, "職員", "ショクイン", "NURSE", "s@example.jp", false)] });

    // Each is valid on its own: the other admin remains.
    let drop_second = submit_change(&first_client, facility, demote(second.id)).await;
    let drop_first = submit_change(&second_client, facility, demote(first.id)).await;
    let drop_second = str_of(&drop_second.ok()["submitChange"]["id"]).to_string();
    let drop_first = str_of(&drop_first.ok()["submitChange"]["id"]).to_string();

    review(&city, &drop_second, true, None).await.ok();
    expect_code(
        &review(&city, &drop_first, true, None).await,
        "CONFLICT",
        "approving a change that would leave no facility admin",
    );
    assert_eq!(user_row(&app, first.id).await.role, Role::FacilityAdmin);
    assert_eq!(user_row(&app, second.id).await.role, Role::Staff);
}

// ---------------------------------------------------------------------------------------------
// 5. suspension (form 3)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_approved_suspension_ends_sessions_revokes_certificates_and_blocks_login() {
    let app = spawn().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let other_facility = app.create_facility(admin.tenant_id, "Minami Clinic").await;
    let head = app
        .create_user(&admin, "head", Role::FacilityAdmin, Some(facility))
        .await;
    let leaving = app
        .create_user(&admin, "leaving", Role::Staff, Some(facility))
        .await;
    let staying = app
        .create_user(&admin, "staying", Role::Staff, Some(facility))
        .await;
    let outsider = app
        .create_user(&admin, "outsider", Role::Staff, Some(other_facility))
        .await;
    let city = app.ready_session(&admin).await;
    let head_client = app.ready_session(&head).await;
    let leaving_client = app.ready_session(&leaving).await;
    let staying_client = app.ready_session(&staying).await;

    // What the form refuses.
    expect_bad_input(
        &submit_suspension(&head_client, &[], "退職", false).await,
        "userIds",
        "no users and not the whole facility",
    );
    expect_bad_input(
        &submit_suspension(&head_client, &[leaving.id], "", false).await,
        "reason",
        "an empty reason",
    );
    expect_bad_input(
        &submit_suspension(&head_client, &[leaving.id], &"理".repeat(501), false).await,
        "reason",
        "a reason of 501 characters",
    );
    expect_code(
        &submit_suspension(&head_client, &[outsider.id], "退職", false).await,
        "FORBIDDEN",
        "another facility's user",
    );
    expect_code(
        &submit_suspension(&head_client, &[Uuid::new_v4()], "退職", false).await,
        "NOT_FOUND",
        "an unknown user",
    );

    let resp = submit_suspension(&head_client, &[leaving.id], "退職", false).await;
    let application = &resp.ok()["submitSuspension"];
    assert_eq!(application["kind"], "SUSPENSION");
    assert_eq!(application["status"], "SUBMITTED");
    assert_eq!(application["facility"]["id"], facility.to_string());
    // Still working until the city approves.
    leaving_client.graphql(TENANT, json!({})).await.ok();

    let serial = {
        let user = city
            .graphql(USER, json!({ "id": leaving.id.to_string() }))
            .await;
        str_of(&user.ok()["user"]["certificates"][0]["serialNumber"]).to_string()
    };
    assert!(
        !crl_serials(&app, "kita")
            .await
            .contains(&normal_serial(&serial))
    );

    let resp = review(&city, str_of(&application["id"]), true, None).await;
    let result = &resp.ok()["reviewApplication"];
    assert_eq!(result["application"]["status"], "APPROVED");
    assert_eq!(result["issued"], json!([]));

    // The session ends at once.
    expect_session_ended(&leaving_client, "the suspended user's session").await;
    // Status and certificates as the city sees them.
    let user = city
        .graphql(USER, json!({ "id": leaving.id.to_string() }))
        .await;
    let user = &user.ok()["user"];
    assert_eq!(user["status"], "SUSPENDED");
    let certificates = user["certificates"].as_array().unwrap();
    assert!(!certificates.is_empty());
    assert!(
        certificates.iter().all(|c| c["status"] == "REVOKED"),
        "{certificates:?}"
    );
    let stored = user_row(&app, leaving.id).await;
    assert_eq!(stored.status, AccountStatus::Suspended);
    assert_eq!(stored.suspension_reason.as_deref(), Some("退職"));
    // The CRL lists the serial.
    assert!(
        crl_serials(&app, "kita")
            .await
            .contains(&normal_serial(&serial)),
        "serial {serial} not in the CRL"
    );
    // Even with a certificate the TLS layer accepts, login is refused.
    let spare = identity_bypassing_the_api(&app, leaving.id).await;
    expect_code(
        &login_with(&app, &spare, &leaving).await,
        "ACCOUNT_SUSPENDED",
        "login of the suspended user",
    );

    // The others carry on.
    staying_client.graphql(TENANT, json!({})).await.ok();
    head_client.graphql(TENANT, json!({})).await.ok();
    assert_eq!(
        user_row(&app, staying.id).await.status,
        AccountStatus::Active
    );
    assert_eq!(
        facility_row(&app, facility).await.status,
        AccountStatus::Active
    );

    // Suspending an already suspended user is a conflict.
    expect_code(
        &submit_suspension(&head_client, &[leaving.id], "再度", false).await,
        "CONFLICT",
        "suspending a suspended user",
    );

    // Audited.
    let target = leaving.id.to_string();
    assert_eq!(
        audit_targets(&app, admin.tenant_id, "user.suspend")
            .await
            .get(&target),
        Some(&1)
    );
    assert_eq!(
        audit_targets(&app, admin.tenant_id, "certificate.revoke")
            .await
            .get(&leaving.certificate_id.to_string()),
        Some(&1)
    );
    assert!(
        !audit_events(&app, admin.tenant_id, "session.revoke")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn suspending_a_whole_facility_suspends_it_and_everyone_in_it() {
    let app = spawn().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let other_facility = app.create_facility(admin.tenant_id, "Minami Clinic").await;
    let head = app
        .create_user(&admin, "head", Role::FacilityAdmin, Some(facility))
        .await;
    let nurse = app
        .create_user(&admin, "nurse", Role::Staff, Some(facility))
        .await;
    let outsider = app
        .create_user(&admin, "outsider", Role::Staff, Some(other_facility))
        .await;
    let city = app.ready_session(&admin).await;
    let head_client = app.ready_session(&head).await;
    let nurse_client = app.ready_session(&nurse).await;
    let outsider_client = app.ready_session(&outsider).await;

    let resp = submit_suspension(&head_client, &[], "閉院", true).await;
    let application = &resp.ok()["submitSuspension"];
    assert_eq!(application["facility"]["id"], facility.to_string());
    review(&city, str_of(&application["id"]), true, None)
        .await
        .ok();

    assert_eq!(
        facility_row(&app, facility).await.status,
        AccountStatus::Suspended
    );
    let shown = city
        .graphql(FACILITY, json!({ "id": facility.to_string() }))
        .await;
    assert_eq!(shown.ok()["facility"]["status"], "SUSPENDED");
    let suspended = city.graphql(FACILITIES, json!({ "s": "SUSPENDED" })).await;
    assert_eq!(
        node_ids(&suspended.ok()["facilities"]),
        vec![facility.to_string()]
    );
    for person in [&head, &nurse] {
        let user = user_row(&app, person.id).await;
        assert_eq!(user.status, AccountStatus::Suspended, "{}", person.login_id);
        assert!(
            certificates_of(&app, person.id)
                .await
                .iter()
                .all(|c| c.status == CertificateStatus::Revoked),
            "{}",
            person.login_id
        );
    }
    expect_session_ended(&nurse_client, "the nurse's session").await;
    expect_session_ended(&head_client, "the facility admin's session").await;
    let spare = identity_bypassing_the_api(&app, nurse.id).await;
    expect_code(
        &login_with(&app, &spare, &nurse).await,
        "ACCOUNT_SUSPENDED",
        "login of a user of the suspended facility",
    );

    // The other facility is untouched.
    outsider_client.graphql(TENANT, json!({})).await.ok();
    assert_eq!(
        facility_row(&app, other_facility).await.status,
        AccountStatus::Active
    );
    assert_eq!(
        audit_targets(&app, admin.tenant_id, "facility.suspend")
            .await
            .get(&facility.to_string()),
        Some(&1)
    );
}

// ---------------------------------------------------------------------------------------------
// 6. direct administration
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_city_suspends_and_reactivates_users_and_facilities_directly() {
    let app = spawn().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let other_facility = app.create_facility(admin.tenant_id, "Minami Clinic").await;
    let head = app
        .create_user(&admin, "head", Role::FacilityAdmin, Some(facility))
        .await;
    let nurse = app
        .create_user(&admin, "nurse", Role::Staff, Some(facility))
        .await;
    let clerk = app
        .create_user(&admin, "clerk", Role::Staff, Some(facility))
        .await;
    let outsider = app
        .create_user(&admin, "outsider", Role::Staff, Some(other_facility))
        .await;
    let city = app.ready_session(&admin).await;
    let nurse_client = app.ready_session(&nurse).await;
    let id = |p: &Person| json!({ "id": p.id.to_string() });

    // One user.
    expect_bad_input(
        &city
            .graphql(
                SUSPEND_USER,
                json!({ "id": admin.id.to_string(), "r": "test" }),
            )
            .await,
        "id",
        "suspending oneself",
    );
    let suspended = city
        .graphql(
            SUSPEND_USER,
            json!({ "id": nurse.id.to_string(), "r": "端末紛失" }),
        )
        .await;
    assert_eq!(suspended.ok()["suspendUser"]["status"], "SUSPENDED");
    expect_session_ended(&nurse_client, "the suspended nurse's session").await;
    assert_eq!(
        certificates_of(&app, nurse.id).await[0].status,
        CertificateStatus::Revoked
    );
    expect_code(
        &city
            .graphql(
                SUSPEND_USER,
                json!({ "id": nurse.id.to_string(), "r": "again" }),
            )
            .await,
        "CONFLICT",
        "suspending twice",
    );
    expect_code(
        &city
            .graphql(
                ISSUE,
                json!({ "u": nurse.id.to_string(), "d": "new phone" }),
            )
            .await,
        "CONFLICT",
        "a certificate for a suspended user",
    );
    expect_code(
        &city.graphql(REACTIVATE_USER, id(&clerk)).await,
        "CONFLICT",
        "reactivating an active user",
    );
    let reactivated = city.graphql(REACTIVATE_USER, id(&nurse)).await;
    assert_eq!(reactivated.ok()["reactivateUser"]["status"], "ACTIVE");
    expect_code(
        &city.graphql(REACTIVATE_USER, id(&nurse)).await,
        "CONFLICT",
        "reactivating twice",
    );
    // The old certificate stays revoked; a new one can be issued now.
    assert_eq!(
        certificates_of(&app, nurse.id).await[0].status,
        CertificateStatus::Revoked
    );
    let issued = city
        .graphql(
            ISSUE,
            json!({ "u": nurse.id.to_string(), "d": "new phone" }),
        )
        .await;
    assert_eq!(
        issued.ok()["issueCertificate"]["certificate"]["status"],
        "ACTIVE"
    );

    // A whole facility.
    let resp = city
        .graphql(
            SUSPEND_FACILITY,
            json!({ "id": facility.to_string(), "r": "休止" }),
        )
        .await;
    assert_eq!(resp.ok()["suspendFacility"]["status"], "SUSPENDED");
    for person in [&head, &nurse, &clerk] {
        assert_eq!(
            user_row(&app, person.id).await.status,
            AccountStatus::Suspended,
            "{}",
            person.login_id
        );
    }
    assert_eq!(
        user_row(&app, outsider.id).await.status,
        AccountStatus::Active
    );
    expect_code(
        &city
            .graphql(
                SUSPEND_FACILITY,
                json!({ "id": facility.to_string(), "r": "again" }),
            )
            .await,
        "CONFLICT",
        "suspending a suspended facility",
    );
    expect_code(
        &city.graphql(REACTIVATE_USER, id(&clerk)).await,
        "CONFLICT",
        "reactivating a user of a suspended facility",
    );
    let resp = city
        .graphql(REACTIVATE_FACILITY, json!({ "id": facility.to_string() }))
        .await;
    assert_eq!(resp.ok()["reactivateFacility"]["status"], "ACTIVE");
    // Its users stay suspended until each is reactivated.
    let still = city
        .graphql(
            USERS,
            json!({ "f": facility.to_string(), "s": "SUSPENDED" }),
        )
        .await;
    assert_eq!(still.ok()["users"]["totalCount"], 3);
    let resp = city.graphql(REACTIVATE_USER, id(&clerk)).await;
    assert_eq!(resp.ok()["reactivateUser"]["status"], "ACTIVE");
    assert_eq!(
        user_row(&app, head.id).await.status,
        AccountStatus::Suspended
    );

    for (action, target) in [
        ("user.suspend", nurse.id.to_string()),
        ("user.reactivate", nurse.id.to_string()),
        ("user.reactivate", clerk.id.to_string()),
        ("facility.suspend", facility.to_string()),
        ("facility.reactivate", facility.to_string()),
    ] {
        assert!(
            audit_targets(&app, admin.tenant_id, action)
                .await
                .contains_key(&target),
            "no {action} event for {target}"
        );
    }
}

#[tokio::test]
async fn without_delegation_a_facility_admin_may_no_longer_manage_its_staffs_credentials() {
    let app = spawn().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let head = app
        .create_user(&admin, "head", Role::FacilityAdmin, Some(facility))
        .await;
    let nurse = app
        .create_user(&admin, "nurse", Role::Staff, Some(facility))
        .await;
    let city = app.ready_session(&admin).await;
    let head_client = app.ready_session(&head).await;

    let tenant = head_client.graphql(TENANT, json!({})).await;
    assert_eq!(
        tenant.ok()["tenant"]["facilityAdminDelegation"],
        true,
        "on by default"
    );
    let unlocked = head_client
        .graphql(UNLOCK, json!({ "id": nurse.id.to_string() }))
        .await;
    assert_eq!(unlocked.ok()["unlockUser"]["id"], nurse.id.to_string());

    let off = city.graphql(SET_DELEGATION, json!({ "e": false })).await;
    assert_eq!(
        off.ok()["setFacilityAdminDelegation"]["facilityAdminDelegation"],
        false
    );
    assert_eq!(off.ok()["setFacilityAdminDelegation"]["slug"], "kita");
    let tenant = head_client.graphql(TENANT, json!({})).await;
    assert_eq!(tenant.ok()["tenant"]["facilityAdminDelegation"], false);

    for (what, query, vars) in [
        ("unlockUser", UNLOCK, json!({ "id": nurse.id.to_string() })),
        (
            "resetPassword",
            RESET,
            json!({ "id": nurse.id.to_string() }),
        ),
        (
            "issueCertificate",
            ISSUE,
            json!({ "u": nurse.id.to_string(), "d": "tablet" }),
        ),
        (
            "revokeCertificate",
            REVOKE,
            json!({ "id": nurse.certificate_id.to_string(), "r": "lost" }),
        ),
    ] {
        expect_code(&head_client.graphql(query, vars).await, "FORBIDDEN", what);
    }
    assert_eq!(certificates_of(&app, nurse.id).await.len(), 1);
    assert_eq!(
        certificates_of(&app, nurse.id).await[0].status,
        CertificateStatus::Active
    );
    // The city still may.
    city.graphql(UNLOCK, json!({ "id": nurse.id.to_string() }))
        .await
        .ok();

    let on = city.graphql(SET_DELEGATION, json!({ "e": true })).await;
    assert_eq!(
        on.ok()["setFacilityAdminDelegation"]["facilityAdminDelegation"],
        true
    );
    let issued = head_client
        .graphql(ISSUE, json!({ "u": nurse.id.to_string(), "d": "tablet" }))
        .await;
    assert_eq!(
        issued.ok()["issueCertificate"]["certificate"]["deviceLabel"],
        "tablet"
    );
    assert_eq!(
        audit_events(&app, admin.tenant_id, "tenant.update")
            .await
            .len(),
        2
    );
}

// ---------------------------------------------------------------------------------------------
// 7. the register
// ---------------------------------------------------------------------------------------------

/// Facility A (medical) with its admin, a pharmacist, a locked nurse and a suspended nurse;
/// facility B (care) with its admin and a staff member whose lock has expired.
struct Register {
    admin: Person,
    a: Uuid,
    b: Uuid,
    head_a: Person,
    pharmacist: Person,
    locked: Person,
    suspended: Person,
    head_b: Person,
    unlocked: Person,
}

async fn register_setup(app: &TestApp) -> Register {
    let admin = app.create_tenant("kita").await;
    let a = create_facility_of_kind(
        app,
        admin.tenant_id,
        "Kita Clinic",
        FacilityKind::MedicalInstitution,
    )
    .await;
    let b = create_facility_of_kind(
        app,
        admin.tenant_id,
        "Kita Care",
        FacilityKind::CareProvider,
    )
    .await;
    let head_a = app
        .create_user(&admin, "head-a", Role::FacilityAdmin, Some(a))
        .await;
    let pharmacist = app.create_user(&admin, "pharm", Role::Staff, Some(a)).await;
    let locked = app
        .create_user(&admin, "locked", Role::Staff, Some(a))
        .await;
    let suspended = app.create_user(&admin, "gone", Role::Staff, Some(a)).await;
    let head_b = app
        .create_user(&admin, "head-b", Role::FacilityAdmin, Some(b))
        .await;
    let unlocked = app
        .create_user(&admin, "unlocked", Role::Staff, Some(b))
        .await;
    update_user(app, pharmacist.id, |u| {
        u.occupation = Set(Occupation::Pharmacist)
    })
    .await;
    update_user(app, head_b.id, |u| {
        u.occupation = Set(Occupation::CareManager)
    })
    .await;
    update_user(app, unlocked.id, |u| {
        u.occupation = Set(Occupation::CareManager);
        u.status = Set(AccountStatus::Locked);
        u.locked_until = Set(Some(chrono::Utc::now() - chrono::Duration::minutes(5)));
    })
    .await;
    update_user(app, locked.id, |u| {
        u.status = Set(AccountStatus::Locked);
        u.locked_until = Set(Some(chrono::Utc::now() + chrono::Duration::hours(1)));
    })
    .await;
    update_user(app, suspended.id, |u| {
        u.status = Set(AccountStatus::Suspended)
    })
    .await;
    Register {
        admin,
        a,
        b,
        head_a,
        pharmacist,
        locked,
        suspended,
        head_b,
        unlocked,
    }
}

async fn user_ids(client: &TestClient, vars: Value) -> (i64, BTreeSet<String>) {
    let resp = client.graphql(USERS, vars.clone()).await;
    let users = &resp.ok()["users"];
    (
        users["totalCount"].as_i64().unwrap(),
        id_set(node_ids(users)),
    )
}

#[tokio::test]
async fn the_user_register_filters_pages_and_is_scoped_to_the_callers_facility() {
    let app = spawn().await;
    let r = register_setup(&app).await;
    let city = app.ready_session(&r.admin).await;
    let ids = |people: &[&Person]| id_set(people.iter().map(|p| p.id));
    let a = r.a.to_string();
    let b = r.b.to_string();

    let everyone = ids(&[
        &r.admin,
        &r.head_a,
        &r.pharmacist,
        &r.locked,
        &r.suspended,
        &r.head_b,
        &r.unlocked,
    ]);
    let cases: Vec<(&str, Value, BTreeSet<String>)> = vec![
        ("everyone", json!({}), everyone),
        (
            "facility A",
            json!({ "f": a }),
            ids(&[&r.head_a, &r.pharmacist, &r.locked, &r.suspended]),
        ),
        (
            "facility B",
            json!({ "f": b }),
            ids(&[&r.head_b, &r.unlocked]),
        ),
        (
            "suspended",
            json!({ "s": "SUSPENDED" }),
            ids(&[&r.suspended]),
        ),
        (
            "locked (the expired lock is not)",
            json!({ "s": "LOCKED" }),
            ids(&[&r.locked]),
        ),
        (
            "active (with the expired lock)",
            json!({ "s": "ACTIVE" }),
            ids(&[&r.admin, &r.head_a, &r.pharmacist, &r.head_b, &r.unlocked]),
        ),
        (
            "pharmacists",
            json!({ "o": "PHARMACIST" }),
            ids(&[&r.pharmacist]),
        ),
        (
            "care managers",
            json!({ "o": "CARE_MANAGER" }),
            ids(&[&r.head_b, &r.unlocked]),
        ),
        (
            "facility admins",
            json!({ "r": "FACILITY_ADMIN" }),
            ids(&[&r.head_a, &r.head_b]),
        ),
        (
            "staff of A",
            json!({ "f": a, "r": "STAFF" }),
            ids(&[&r.pharmacist, &r.locked, &r.suspended]),
        ),
        (
            "active staff of A",
            json!({ "f": a, "r": "STAFF", "s": "ACTIVE" }),
            ids(&[&r.pharmacist]),
        ),
    ];
    for (what, vars, expected) in cases {
        let (total, got) = user_ids(&city, vars).await;
        assert_eq!(got, expected, "{what}");
        assert_eq!(total, expected.len() as i64, "{what}: totalCount");
    }

    // Reading the register is audited (read events are written in batches: wait a little).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let reads = audit_events(&app, r.admin.tenant_id, "users.list").await;
        if reads.iter().any(|e| e.actor_id == Some(r.admin.id)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no users.list event by the city admin: {reads:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Pages of one.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let resp = city
            .graphql(USERS, json!({ "f": a, "n": 1, "a": after }))
            .await;
        let page = &resp.ok()["users"];
        assert_eq!(page["totalCount"], 4);
        let edges = page["edges"].as_array().unwrap();
        assert_eq!(edges.len(), 1, "{page}");
        seen.push(str_of(&edges[0]["node"]["id"]).to_string());
        if page["pageInfo"]["hasNextPage"] == false {
            break;
        }
        assert!(seen.len() < 4, "hasNextPage on the last page: {page}");
        after = Some(str_of(&page["pageInfo"]["endCursor"]).to_string());
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(
        id_set(&seen),
        ids(&[&r.head_a, &r.pharmacist, &r.locked, &r.suspended])
    );
    expect_bad_input(
        &city.graphql(USERS, json!({ "n": 0 })).await,
        "first",
        "first: 0",
    );
    expect_bad_input(
        &city.graphql(USERS, json!({ "n": 101 })).await,
        "first",
        "first: 101",
    );

    // A facility's own people see their facility only.
    let head_a = app.ready_session(&r.head_a).await;
    let pharmacist = app.ready_session(&r.pharmacist).await;
    for (who, client) in [("facility admin", &head_a), ("staff", &pharmacist)] {
        let (total, got) = user_ids(client, json!({})).await;
        assert_eq!(
            got,
            ids(&[&r.head_a, &r.pharmacist, &r.locked, &r.suspended]),
            "{who}"
        );
        assert_eq!(total, 4, "{who}");
        let (_, own) = user_ids(client, json!({ "f": a, "r": "FACILITY_ADMIN" })).await;
        assert_eq!(own, ids(&[&r.head_a]), "{who}");
        expect_code(
            &client.graphql(USERS, json!({ "f": b })).await,
            "FORBIDDEN",
            &format!("{who} asking for another facility"),
        );
    }
}

#[tokio::test]
async fn facilities_staff_and_statistics_follow_the_callers_role() {
    let app = spawn().await;
    let r = register_setup(&app).await;
    let city = app.ready_session(&r.admin).await;
    let head_a = app.ready_session(&r.head_a).await;
    let head_b = app.ready_session(&r.head_b).await;
    let pharmacist = app.ready_session(&r.pharmacist).await;

    // facilities: the city all, ordered by code; others their own.
    let all = city.graphql(FACILITIES, json!({})).await;
    let all = &all.ok()["facilities"];
    assert_eq!(all["totalCount"], 2);
    assert_eq!(node_ids(all), vec![r.a.to_string(), r.b.to_string()]);
    let codes: Vec<&str> = all["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| str_of(&e["node"]["code"]))
        .collect();
    assert_eq!(
        codes,
        vec!["F0001", "F0002"],
        "numbered per tenant, ordered by code"
    );
    let care = city
        .graphql(FACILITIES, json!({ "k": "CARE_PROVIDER" }))
        .await;
    assert_eq!(node_ids(&care.ok()["facilities"]), vec![r.b.to_string()]);
    for (who, client, own) in [
        ("A's admin", &head_a, r.a),
        ("A's staff", &pharmacist, r.a),
        ("B's admin", &head_b, r.b),
    ] {
        let resp = client.graphql(FACILITIES, json!({})).await;
        assert_eq!(
            node_ids(&resp.ok()["facilities"]),
            vec![own.to_string()],
            "{who}"
        );
    }

    // Facility.staff: the city, or a member of that facility.
    for (who, client) in [
        ("the city", &city),
        ("A's admin", &head_a),
        ("A's staff", &pharmacist),
    ] {
        let resp = client
            .graphql(FACILITY, json!({ "id": r.a.to_string() }))
            .await;
        let staff = &resp.ok()["facility"]["staff"];
        assert_eq!(staff["totalCount"], 4, "{who}");
        assert_eq!(
            id_set(node_ids(staff)),
            id_set([r.head_a.id, r.pharmacist.id, r.locked.id, r.suspended.id]),
            "{who}"
        );
    }
    let page = city
        .graphql(FACILITY, json!({ "id": r.a.to_string(), "n": 3 }))
        .await;
    let staff = &page.ok()["facility"]["staff"];
    assert_eq!(node_ids(staff).len(), 3);
    assert_eq!(staff["pageInfo"]["hasNextPage"], true);
    let rest = city
        .graphql(
            FACILITY,
            json!({ "id": r.a.to_string(), "n": 3, "a": staff["pageInfo"]["endCursor"] }),
        )
        .await;
    let rest = &rest.ok()["facility"]["staff"];
    assert_eq!(node_ids(rest).len(), 1);
    assert_eq!(rest["pageInfo"]["hasNextPage"], false);
    expect_code(
        &head_b
            .graphql(FACILITY, json!({ "id": r.a.to_string() }))
            .await,
        "FORBIDDEN",
        "B's admin looking at A",
    );
    expect_code(
        &city
            .graphql(FACILITY, json!({ "id": Uuid::new_v4().to_string() }))
            .await,
        "NOT_FOUND",
        "an unknown facility",
    );
    let other_admin = app.create_tenant("minami").await;
    let other_city = app.ready_session(&other_admin).await;
    expect_code(
        &other_city
            .graphql(FACILITY, json!({ "id": r.a.to_string() }))
            .await,
        "NOT_FOUND",
        "another tenant's facility",
    );
    let theirs = other_city.graphql(FACILITIES, json!({})).await;
    assert_eq!(theirs.ok()["facilities"]["totalCount"], 0);

    // Statistics: exact counts, zero keys left out.
    let admin_occupation = {
        let me = city.graphql("{ me { occupation } }", json!({})).await;
        str_of(&me.ok()["me"]["occupation"]).to_string()
    };
    let stats = city.graphql(STATISTICS, json!({})).await;
    let stats = &stats.ok()["tenantStatistics"];
    assert_eq!(
        counts(&stats["usersByFacility"]),
        BTreeMap::from([(r.a.to_string(), 4), (r.b.to_string(), 2)])
    );
    let mut occupations = BTreeMap::from([
        ("NURSE".to_string(), 3),
        ("PHARMACIST".to_string(), 1),
        ("CARE_MANAGER".to_string(), 2),
    ]);
    *occupations.entry(admin_occupation).or_insert(0) += 1;
    assert_eq!(counts(&stats["usersByOccupation"]), occupations);
    assert_eq!(
        counts(&stats["usersByStatus"]),
        BTreeMap::from([
            ("ACTIVE".to_string(), 5),
            ("LOCKED".to_string(), 1),
            ("SUSPENDED".to_string(), 1),
        ])
    );
    assert_eq!(
        counts(&stats["facilitiesByKind"]),
        BTreeMap::from([
            ("MEDICAL_INSTITUTION".to_string(), 1),
            ("CARE_PROVIDER".to_string(), 1),
        ])
    );
    assert_eq!(stats["roomsByStatus"], json!([]));
    for (who, client) in [("staff", &pharmacist), ("a facility admin", &head_a)] {
        expect_code(
            &client.graphql(STATISTICS, json!({})).await,
            "FORBIDDEN",
            &format!("statistics for {who}"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 8. the application lists
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn application_lists_are_scoped_by_role_and_newest_first() {
    let app = spawn().await;
    let admin = app.create_tenant("kita").await;
    let other_admin = app.create_tenant("minami").await;
    let a = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let b = app.create_facility(admin.tenant_id, "Kita Care").await;
    let head_a = app
        .create_user(&admin, "head-a", Role::FacilityAdmin, Some(a))
        .await;
    let nurse_a = app
        .create_user(&admin, "nurse-a", Role::Staff, Some(a))
        .await;
    let head_b = app
        .create_user(&admin, "head-b", Role::FacilityAdmin, Some(b))
        .await;
    let city = app.ready_session(&admin).await;
    let other_city = app.ready_session(&other_admin).await;
    let head_a_client = app.ready_session(&head_a).await;
    let nurse_client = app.ready_session(&nurse_a).await;
    let head_b_client = app.ready_session(&head_b).await;

    let anonymous_registration =
        registered(&app.client(), &registration("kita", "New Clinic")).await;
    let change_a = submit_change(
        &head_a_client,
        a,
        json!({ "facility": { "phone": "03-2222-3333" } }),
    )
    .await;
    let suspension_a = submit_suspension(&head_a_client, &[nurse_a.id], "異動", false).await;
    let change_b = submit_change(
        &head_b_client,
        b,
        json!({ "facility": { "phone": "03-4444-5555" } }),
    )
    .await;
    let nurse_registration =
        registered(&nurse_client, &registration("kita", "Nurse's Clinic")).await;
    let id_of = |v: &Value| str_of(&v["id"]).to_string();
    let r1 = id_of(&anonymous_registration);
    let ca = id_of(&change_a.ok()["submitChange"]);
    let sa = id_of(&suspension_a.ok()["submitSuspension"]);
    let cb = id_of(&change_b.ok()["submitChange"]);
    let r2 = id_of(&nurse_registration);

    let list = |client: &TestClient, vars: Value| {
        let client = client.clone();
        async move {
            let resp = client.graphql(APPLICATIONS, vars).await;
            let apps = resp.ok()["applications"].clone();
            (apps["totalCount"].as_i64().unwrap(), node_ids(&apps))
        }
    };
    assert_eq!(
        list(&city, json!({})).await,
        (
            5,
            vec![r2.clone(), cb.clone(), sa.clone(), ca.clone(), r1.clone()]
        ),
        "the city: all, newest first"
    );
    assert_eq!(
        list(&city, json!({ "k": "CHANGE" })).await,
        (2, vec![cb.clone(), ca.clone()])
    );
    assert_eq!(
        list(&city, json!({ "k": "REGISTRATION", "s": "SUBMITTED" })).await,
        (2, vec![r2.clone(), r1.clone()])
    );
    assert_eq!(
        list(&head_a_client, json!({})).await,
        (2, vec![sa.clone(), ca.clone()]),
        "A's admin: A's applications"
    );
    assert_eq!(
        list(&head_b_client, json!({})).await,
        (1, vec![cb.clone()]),
        "B's admin: B's applications"
    );
    assert_eq!(
        list(&nurse_client, json!({})).await,
        (1, vec![r2.clone()]),
        "staff: its own"
    );
    assert_eq!(list(&other_city, json!({})).await, (0, vec![]));

    // Pages.
    let resp = city.graphql(APPLICATIONS, json!({ "n": 2 })).await;
    let page = &resp.ok()["applications"];
    assert_eq!(page["totalCount"], 5);
    assert_eq!(node_ids(page), vec![r2.clone(), cb.clone()]);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    let resp = city
        .graphql(
            APPLICATIONS,
            json!({ "n": 2, "a": page["pageInfo"]["endCursor"] }),
        )
        .await;
    assert_eq!(
        node_ids(&resp.ok()["applications"]),
        vec![sa.clone(), ca.clone()]
    );
    for n in [0, 101] {
        expect_bad_input(
            &city.graphql(APPLICATIONS, json!({ "n": n })).await,
            "first",
            &format!("first: {n}"),
        );
    }

    // One application: in scope, out of scope, other tenant, unknown.
    let shown = head_a_client
        .graphql(APPLICATION, json!({ "id": sa }))
        .await;
    assert_eq!(shown.ok()["application"]["kind"], "SUSPENSION");
    let shown = city.graphql(APPLICATION, json!({ "id": r1 })).await;
    assert_eq!(shown.ok()["application"]["referenceNumber"], reference(1));
    for (what, client, id, code) in [
        ("A's admin, B's change", &head_a_client, &cb, "FORBIDDEN"),
        (
            "A's admin, a registration",
            &head_a_client,
            &r1,
            "FORBIDDEN",
        ),
        ("staff, its admin's change", &nurse_client, &ca, "FORBIDDEN"),
        ("another city", &other_city, &ca, "NOT_FOUND"),
    ] {
        expect_code(
            &client.graphql(APPLICATION, json!({ "id": id })).await,
            code,
            what,
        );
    }
    expect_code(
        &city
            .graphql(APPLICATION, json!({ "id": Uuid::new_v4().to_string() }))
            .await,
        "NOT_FOUND",
        "an unknown id",
    );
}

// ---------------------------------------------------------------------------------------------
// 9. audit
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn approving_a_registration_leaves_its_audit_events() {
    let app = spawn().await;
    let admin = app.create_tenant("kita").await;
    let city = app.ready_session(&admin).await;
    let tenant = admin.tenant_id;
    let approved = register_and_approve(
        &app,
        &city,
        &registration_with_staff("kita", "Audit Clinic", 3),
    )
    .await;
    let application_id = str_of(&approved.application["id"]).to_string();

    let submits = audit_events(&app, tenant, "application.submit").await;
    assert_eq!(submits.len(), 1, "{submits:?}");
    let submit = &submits[0];
    assert_eq!(submit.target_type.as_deref(), Some("application"));
    assert_eq!(submit.target_id.as_deref(), Some(application_id.as_str()));
    assert_eq!(submit.actor_id, None, "anonymous submission");
    assert!(submit.ip.is_some(), "the submitter's IP is recorded");

    let approvals = audit_events(&app, tenant, "application.approve").await;
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0].actor_id, Some(admin.id));
    assert_eq!(approvals[0].target_type.as_deref(), Some("application"));
    assert_eq!(
        approvals[0].target_id.as_deref(),
        Some(application_id.as_str())
    );

    let created = audit_events(&app, tenant, "facility.create").await;
    let created: Vec<_> = created
        .iter()
        .filter(|e| e.target_id.as_deref() == Some(approved.facility_id.to_string().as_str()))
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].target_type.as_deref(), Some("facility"));

    let users = audit_targets(&app, tenant, "user.create").await;
    let certificates = audit_targets(&app, tenant, "certificate.issue").await;
    for credential in &approved.issued {
        let user = str_of(&credential["user"]["id"]);
        let certificate = str_of(&credential["certificate"]["certificate"]["id"]);
        assert_eq!(
            users.get(user),
            Some(&1),
            "user.create for {user}: {users:?}"
        );
        assert_eq!(
            certificates.get(certificate),
            Some(&1),
            "certificate.issue for {certificate}: {certificates:?}"
        );
    }
    let user_events = audit_events(&app, tenant, "user.create").await;
    assert!(
        user_events
            .iter()
            .all(|e| e.target_type.as_deref() == Some("user"))
    );
    assert_eq!(
        user_events
            .iter()
            .filter(|e| e.actor_id == Some(admin.id))
            .count(),
        3,
        "one user.create per staff line, by the approver"
    );

    // Rejections and withdrawals too.
    let rejected = registered(&app.client(), &registration("kita", "Rejected Clinic")).await;
    review(&city, str_of(&rejected["id"]), false, Some("重複"))
        .await
        .ok();
    assert_eq!(
        audit_targets(&app, tenant, "application.reject")
            .await
            .get(str_of(&rejected["id"])),
        Some(&1)
    );
    let head = issued_person(&admin, &approved.issued[0]);
    let head_client = app.ready_session(&head).await;
    let change = submit_change(
        &head_client,
        approved.facility_id,
        json!({ "facility": { "name": "Audit Clinic 2" } }),
    )
    .await;
    let change_id = str_of(&change.ok()["submitChange"]["id"]).to_string();
    head_client
        .graphql(WITHDRAW, json!({ "id": change_id }))
        .await
        .ok();
    let withdrawals = audit_events(&app, tenant, "application.withdraw").await;
    assert_eq!(withdrawals.len(), 1);
    assert_eq!(withdrawals[0].actor_id, Some(head.id));
    assert_eq!(
        withdrawals[0].target_id.as_deref(),
        Some(change_id.as_str())
    );
    let verified = city
        .graphql("{ verifyAuditChain { intact } }", json!({}))
        .await;
    assert_eq!(verified.ok()["verifyAuditChain"]["intact"], true);
}
