//! Issue 4, end to end: the audit trail. Logins, lockouts, sessions, passwords, certificates,
//! refusals and reads are recorded with who, when, from where and over which certificate; only
//! CITY_ADMINs of the tenant read them, newest first, page by page; each tenant's events form a
//! hash chain that `verifyAuditChain` checks, so an edit or a removal made directly in the
//! database is found and named; PostgreSQL refuses edits outright; read events survive bursts
//! and shutdown; concurrent writers (also on two instances) never fork the chain.
//!
//! Runs on both databases (`RENKEI_TEST_DB=sqlite|postgres`).

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait as _, EntityTrait as _,
    IntoActiveModel as _, QueryFilter as _, QueryOrder as _, Set,
};
use serde_json::{Value, json};
use uuid::Uuid;

use entity::audit_event;
use entity::kinds::{AuditOutcome, Role};
use renkei::auth::session::token_hash;
use renkei_tests::fixtures::identity_from_pkcs12;
use renkei_tests::{
    Backend, Gql, Person, TestApp, TestClient, TestOptions, backend, spawn_app, spawn_app_with,
};

const LOGIN: &str = "mutation($t:String!,$l:String!,$p:String!){ login(tenant:$t, loginId:$l, password:$p){ token user { id } } }";
const AUDIT: &str = "query($f:AuditFilter,$n:Int,$a:String){ auditEvents(filter:$f, first:$n, after:$a){ totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id at action outcome targetType targetId roomId ip certificateSerial sessionHash detail actor { id } } } } }";
const VERIFY: &str = "{ verifyAuditChain { verifiedEvents intact firstBrokenEventId } }";
const ROOM_REPORT: &str = "query($r:ID!){ roomAccessReport(roomId:$r){ id action actor { id } } }";
const USER: &str = "query($id:ID!){ user(id:$id){ id } }";
const ISSUE: &str = "mutation($u:ID!,$d:String!){ issueCertificate(userId:$u, deviceLabel:$d, encoding:MODERN){ certificate { id serialNumber } pkcs12Base64 pkcs12Password } }";
const REVOKE: &str =
    "mutation($id:ID!,$r:String!){ revokeCertificate(id:$id, reason:$r){ id status } }";
const CHANGE_PASSWORD: &str =
    "mutation($c:String!,$n:String!){ changePassword(currentPassword:$c, newPassword:$n) }";
const UNLOCK: &str = "mutation($id:ID!){ unlockUser(id:$id){ id status } }";
const RESET: &str = "mutation($id:ID!){ resetPassword(id:$id) }";
const LOCALHOST: &str = "127.0.0.1";

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

async fn spawn_with_env(pairs: &[(&str, &str)]) -> TestApp {
    spawn_app_with(TestOptions {
        env: env(pairs),
        ..Default::default()
    })
    .await
}

/// A tenant "kita" with its admin, a clinic and a STAFF member "sato".
async fn kita_with_staff(app: &TestApp) -> (Person, Person) {
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let staff = app
        .create_user(&admin, "sato", Role::Staff, Some(facility))
        .await;
    (admin, staff)
}

async fn attempt(client: &TestClient, tenant: &str, login_id: &str, password: &str) -> Gql {
    client
        .graphql(LOGIN, json!({ "t": tenant, "l": login_id, "p": password }))
        .await
}

async fn attempt_as(client: &TestClient, person: &Person, password: &str) -> Gql {
    attempt(client, &person.tenant, &person.login_id, password).await
}

fn token_of(resp: &Gql) -> String {
    resp.ok()["login"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {}", resp.body))
        .to_string()
}

/// Logs in with the person's certificate and current password; the client carries the token.
async fn session(app: &TestApp, person: &Person) -> TestClient {
    let client = app.client_for(person);
    let token = token_of(&attempt_as(&client, person, &person.password).await);
    client.with_token(token)
}

/// A session past the initial password change and the pledge. The flags is cleared in the database (a real
/// change is tested on its own below) because each Argon2id run takes a while.
async fn working_session(app: &TestApp, person: &Person) -> TestClient {
    app.edit_user(person.id, |active| {
        active.must_change_password = Set(false);
        active.pledge_accepted_at = Set(Some(chrono::Utc::now()));
    })
    .await;
    session(app, person).await
}

fn session_hash_of(client: &TestClient) -> String {
    token_hash(client.token.as_deref().expect("a logged-in client"))
}

/// A password every rule accepts.
fn strong_password() -> String {
    format!("Tq{}-8#Lw", &Uuid::new_v4().simple().to_string()[..10])
}

/// The certificate's serial as stored (hex), which the audit log must repeat.
async fn serial_of(app: &TestApp, certificate_id: Uuid) -> String {
    entity::certificate::Entity::find_by_id(certificate_id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
        .serial_hex
}

async fn audit_page(client: &TestClient, filter: Value, first: i64, after: Option<&str>) -> Gql {
    client
        .graphql(AUDIT, json!({ "f": filter, "n": first, "a": after }))
        .await
}

/// Every event matching `filter`, newest first, walking all pages of 500.
async fn events(client: &TestClient, filter: Value) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let resp = audit_page(client, filter.clone(), 500, after.as_deref()).await;
        let conn = &resp.ok()["auditEvents"];
        for edge in conn["edges"].as_array().unwrap() {
            out.push(edge["node"].clone());
        }
        if conn["pageInfo"]["hasNextPage"] != true {
            return out;
        }
        after = Some(conn["pageInfo"]["endCursor"].as_str().unwrap().to_string());
    }
}

/// `totalCount` of the events matching `filter`.
async fn total(client: &TestClient, filter: Value) -> u64 {
    let resp = audit_page(client, filter, 1, None).await;
    resp.ok()["auditEvents"]["totalCount"]
        .as_u64()
        .unwrap_or_else(|| panic!("no totalCount in {}", resp.body))
}

async fn verify(client: &TestClient) -> Value {
    let resp = client.graphql(VERIFY, json!({})).await;
    resp.ok()["verifyAuditChain"].clone()
}

fn with_action<'a>(events: &'a [Value], action: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["action"] == action).collect()
}

fn actor_of(event: &Value) -> Option<&str> {
    event["actor"]["id"].as_str()
}

fn id_of(event: &Value) -> &str {
    event["id"].as_str().unwrap()
}

fn at_of(event: &Value) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(event["at"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("`at` is not RFC 3339 ({e}): {event}"))
}

fn position(events: &[Value], id: &str) -> usize {
    events
        .iter()
        .position(|e| id_of(e) == id)
        .unwrap_or_else(|| panic!("event {id} not listed"))
}

/// `detail` is a JSON object (not a string holding JSON).
fn detail(event: &Value) -> &serde_json::Map<String, Value> {
    event["detail"]
        .as_object()
        .unwrap_or_else(|| panic!("detail is not a JSON object: {event}"))
}

/// The tenant's stored events, straight from the database: the changes chain (0), then the
/// reads chain (1), each in chain order.
async fn stored_events(app: &TestApp, tenant_id: Uuid) -> Vec<audit_event::Model> {
    audit_event::Entity::find()
        .filter(audit_event::Column::TenantId.eq(tenant_id))
        .order_by_asc(audit_event::Column::Chain)
        .order_by_asc(audit_event::Column::Seq)
        .all(&app.db)
        .await
        .unwrap()
}

fn assert_intact(report: &Value) {
    assert_eq!(report["intact"], true, "{report}");
    assert!(report["firstBrokenEventId"].is_null(), "{report}");
}

fn assert_broken_at(report: &Value, id: Uuid, what: &str) {
    assert_eq!(report["intact"], false, "{what}: {report}");
    assert_eq!(
        report["firstBrokenEventId"],
        id.to_string(),
        "{what}: the report must name the altered event: {report}"
    );
}

/// The events the CITY_ADMIN `auditor` sees, checked as one: every one is well formed.
fn assert_well_formed(events: &[Value]) {
    for e in events {
        assert!(
            ["ALLOWED", "DENIED", "FAILED"].contains(&e["outcome"].as_str().unwrap()),
            "{e}"
        );
        assert!(!e["action"].as_str().unwrap().is_empty(), "{e}");
        detail(e);
        at_of(e);
    }
}

// ---------------------------------------------------------------------------------------------
// 1. logins
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn failed_and_successful_logins_are_audited_with_serial_and_ip() {
    let app = spawn_app().await;
    let (admin, staff) = kita_with_staff(&app).await;
    let auditor = working_session(&app, &admin).await;
    let device = app.client_for(&staff);

    attempt_as(&device, &staff, "Wrong-password-1")
        .await
        .expect_code("UNAUTHENTICATED");
    let token = token_of(&attempt_as(&device, &staff, &staff.password).await);

    // The serial the log must carry is the one the API shows for the certificate.
    let serial = serial_of(&app, staff.certificate_id).await;
    let listed = auditor
        .graphql(
            "query($id:ID!){ user(id:$id){ certificates { id serialNumber } } }",
            json!({ "id": staff.id }),
        )
        .await;
    assert_eq!(
        listed.ok()["user"]["certificates"][0]["serialNumber"],
        serial.as_str()
    );

    let mine = events(&auditor, json!({ "actorId": staff.id })).await;
    assert_eq!(
        mine.len(),
        2,
        "sato did exactly two things, a failed and a good login: {mine:#?}"
    );
    let failure = with_action(&mine, "login.failure");
    assert_eq!(failure.len(), 1, "{mine:#?}");
    let failure = failure[0];
    assert_eq!(failure["outcome"], "FAILED", "{failure}");
    assert_eq!(actor_of(failure), Some(staff.id.to_string().as_str()));
    assert_eq!(failure["certificateSerial"], serial.as_str(), "{failure}");
    assert_eq!(failure["ip"], LOCALHOST, "{failure}");
    assert_eq!(detail(failure)["reason"], "wrong_password", "{failure}");
    assert_eq!(detail(failure)["loginId"], "sato", "{failure}");
    assert!(
        failure["sessionHash"].is_null(),
        "a failed login has no session: {failure}"
    );
    let text = failure.to_string();
    assert!(
        !text.contains("Wrong-password-1"),
        "the attempted password must never be logged: {text}"
    );

    let success = with_action(&mine, "login.success");
    assert_eq!(success.len(), 1, "{mine:#?}");
    let success = success[0];
    assert_eq!(success["outcome"], "ALLOWED", "{success}");
    assert_eq!(actor_of(success), Some(staff.id.to_string().as_str()));
    assert_eq!(success["certificateSerial"], serial.as_str(), "{success}");
    assert_eq!(success["ip"], LOCALHOST, "{success}");
    assert_eq!(
        success["sessionHash"],
        token_hash(&token).as_str(),
        "login.success carries the hash of the new session's token: {success}"
    );
    assert_eq!(success["targetId"], staff.id.to_string(), "{success}");
    assert!(
        !success.to_string().contains(&token),
        "the token itself must never be logged"
    );

    // Newest first: the success is listed before the failure, and is not older.
    assert!(position(&mine, id_of(success)) < position(&mine, id_of(failure)));
    assert!(at_of(success) >= at_of(failure));
    let skew = (chrono::Utc::now() - at_of(success).to_utc())
        .num_seconds()
        .abs();
    assert!(skew < 60, "`at` is not now: {success}");

    // The admin's own login is there too, with the admin's own certificate.
    let everything = events(&auditor, json!({})).await;
    assert_well_formed(&everything);
    let admin_serial = serial_of(&app, admin.certificate_id).await;
    assert!(
        everything.iter().any(|e| e["action"] == "login.success"
            && actor_of(e) == Some(admin.id.to_string().as_str())
            && e["certificateSerial"] == admin_serial.as_str()),
        "{everything:#?}"
    );

    let report = verify(&auditor).await;
    assert_intact(&report);
    let verified = report["verifiedEvents"].as_u64().unwrap();
    assert!(
        verified >= everything.len() as u64,
        "verified {verified}, but {} events were listed before",
        everything.len()
    );
}

#[tokio::test]
async fn unknown_login_id_failure_has_no_actor() {
    let app = spawn_app().await;
    let (admin, staff) = kita_with_staff(&app).await;
    let auditor = working_session(&app, &admin).await;

    // The certificate names its user: another login ID, known or not, is CERTIFICATE_REQUIRED.
    attempt(&app.client_for(&staff), "kita", "nobody", "Some-password-1")
        .await
        .expect_code("CERTIFICATE_REQUIRED");
    // An unknown tenant has no log to file the attempt under: it is recorded nowhere.
    attempt(
        &app.client_for(&staff),
        "nowhere",
        "sato",
        "Some-password-1",
    )
    .await
    .expect_code("UNAUTHENTICATED");

    let failures = events(&auditor, json!({ "action": "login.failure" })).await;
    assert_eq!(failures.len(), 1, "{failures:#?}");
    let failure = &failures[0];
    assert!(
        failure["actor"].is_null(),
        "nobody is behind an unknown login ID: {failure}"
    );
    assert_eq!(failure["outcome"], "FAILED");
    assert_eq!(
        detail(failure)["reason"],
        "certificate_of_another_user",
        "{failure}"
    );
    assert_eq!(detail(failure)["loginId"], "nobody", "{failure}");
    assert_eq!(failure["ip"], LOCALHOST, "{failure}");
    // The certificate presented is known even when the login ID is not.
    assert_eq!(
        failure["certificateSerial"],
        serial_of(&app, staff.certificate_id).await.as_str(),
        "{failure}"
    );
    assert!(!failure.to_string().contains("Some-password-1"));
}

// ---------------------------------------------------------------------------------------------
// 2. sessions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn logout_and_session_events_carry_the_session_hash() {
    let app = spawn_app().await;
    let (admin, staff) = kita_with_staff(&app).await;
    let auditor = working_session(&app, &admin).await;

    let first = session(&app, &staff).await;
    let first_hash = session_hash_of(&first);
    assert_eq!(
        first.graphql("mutation { logout }", json!({})).await.ok()["logout"],
        true
    );

    let second = session(&app, &staff).await;
    let third = session(&app, &staff).await;
    let ended = third
        .graphql("mutation { logoutEverywhere }", json!({}))
        .await;
    assert_eq!(ended.ok()["logoutEverywhere"], 2);

    let mine = events(&auditor, json!({ "actorId": staff.id })).await;
    let logins = with_action(&mine, "login.success");
    assert_eq!(logins.len(), 3, "{mine:#?}");
    let login_hashes: BTreeSet<&str> = logins
        .iter()
        .map(|e| e["sessionHash"].as_str().unwrap())
        .collect();
    assert_eq!(
        login_hashes,
        BTreeSet::from([
            first_hash.as_str(),
            session_hash_of(&second).as_str(),
            session_hash_of(&third).as_str()
        ])
    );

    let logouts = with_action(&mine, "logout");
    assert_eq!(logouts.len(), 1, "{mine:#?}");
    assert_eq!(logouts[0]["sessionHash"], first_hash.as_str());
    assert_eq!(logouts[0]["outcome"], "ALLOWED");
    assert_eq!(logouts[0]["ip"], LOCALHOST);
    // ... the same session the login opened, so the two give how long it lasted.
    let opened = logins
        .iter()
        .find(|e| e["sessionHash"] == first_hash.as_str())
        .unwrap();
    assert!(at_of(opened) <= at_of(logouts[0]));

    let revoked = with_action(&mine, "session.revoke");
    let revoked_hashes: BTreeSet<&str> = revoked
        .iter()
        .map(|e| e["sessionHash"].as_str().unwrap())
        .collect();
    assert_eq!(
        revoked.len(),
        2,
        "one session.revoke per session logoutEverywhere ended: {revoked:#?}"
    );
    assert_eq!(
        revoked_hashes,
        BTreeSet::from([
            session_hash_of(&second).as_str(),
            session_hash_of(&third).as_str()
        ]),
        "the session that had logged out already is not ended twice"
    );
    for event in &revoked {
        assert_eq!(detail(event)["reason"], "logout_everywhere", "{event}");
        assert_eq!(event["outcome"], "ALLOWED");
    }
}

#[tokio::test]
async fn expired_sessions_are_recorded_once() {
    let app = spawn_with_env(&[
        ("RENKEI_SESSION_IDLE_SECONDS", "1"),
        ("RENKEI_SESSION_EXPIRY_CHECK_SECONDS", "1"),
    ])
    .await;
    let (admin, staff) = kita_with_staff(&app).await;
    let idle = session(&app, &staff).await;
    let idle_hash = session_hash_of(&idle);
    let logged_out = session(&app, &staff).await;
    logged_out
        .graphql("mutation { logout }", json!({}))
        .await
        .ok();

    // The admin's session would idle out too: look at the log from fresh sessions.
    let mut expired = Vec::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let auditor = working_session(&app, &admin).await;
        expired = events(
            &auditor,
            json!({ "actorId": staff.id, "action": "session.expire" }),
        )
        .await;
        if !expired.is_empty() {
            // Give later sweeps the chance to (wrongly) record it again.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            let auditor = working_session(&app, &admin).await;
            expired = events(
                &auditor,
                json!({ "actorId": staff.id, "action": "session.expire" }),
            )
            .await;
            break;
        }
    }
    assert_eq!(
        expired.len(),
        1,
        "the idle session ends once; the logged-out one did not expire: {expired:#?}"
    );
    assert_eq!(expired[0]["sessionHash"], idle_hash.as_str());
    idle.graphql("{ me { id } }", json!({}))
        .await
        .expect_code("UNAUTHENTICATED");
}

// ---------------------------------------------------------------------------------------------
// 3. accounts
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn lockout_and_unlock_are_audited() {
    let app = spawn_app().await;
    let (admin, staff) = kita_with_staff(&app).await;
    let auditor = working_session(&app, &admin).await;
    let device = app.client_for(&staff);

    // The default threshold: five wrong passwords in a row lock the account.
    let mut attempts = 0;
    let mut locked_at = None;
    for i in 1..=6 {
        let resp = attempt_as(&device, &staff, &format!("Wrong-password-{i}")).await;
        attempts += 1;
        if resp.code() == Some("ACCOUNT_LOCKED") {
            locked_at = Some(i);
            break;
        }
        resp.expect_code("UNAUTHENTICATED");
    }
    let locked_at = locked_at.expect("the account locked");
    assert!(locked_at >= 5, "locked after {locked_at}");
    // Refused while locked, even with the right password: also recorded.
    attempt_as(&device, &staff, &staff.password)
        .await
        .expect_code("ACCOUNT_LOCKED");
    attempts += 1;

    let locks = events(&auditor, json!({ "action": "account.lock" })).await;
    assert_eq!(locks.len(), 1, "{locks:#?}");
    let lock = &locks[0];
    assert!(lock["actor"].is_null(), "the system locks, nobody: {lock}");
    assert_eq!(lock["targetId"], staff.id.to_string(), "{lock}");
    assert_eq!(lock["outcome"], "ALLOWED");
    assert_eq!(detail(lock)["reason"], "failed_logins", "{lock}");
    let until = detail(lock)["until"]
        .as_str()
        .unwrap_or_else(|| panic!("detail.until: {lock}"));
    let until = DateTime::parse_from_rfc3339(until).unwrap();
    let minutes = (until.to_utc() - at_of(lock).to_utc()).num_minutes();
    assert!(
        (14..=15).contains(&minutes),
        "default lockout is 15 minutes: {lock}"
    );

    let failures = events(
        &auditor,
        json!({ "actorId": staff.id, "action": "login.failure" }),
    )
    .await;
    assert_eq!(
        failures.len(),
        attempts,
        "every refused attempt is recorded: {failures:#?}"
    );
    // Oldest first: the first four were plain wrong passwords, the last was refused as locked.
    let oldest_first: Vec<&Value> = failures.iter().rev().collect();
    for f in &oldest_first[..4] {
        assert_eq!(detail(f)["reason"], "wrong_password", "{f}");
    }
    assert_eq!(
        detail(oldest_first.last().unwrap())["reason"],
        "locked",
        "{failures:#?}"
    );
    // The lock is recorded together with the failure that caused it: next to each other.
    let all = events(&auditor, json!({})).await;
    let lock_pos = position(&all, id_of(lock));
    let locking_failure = &oldest_first[locked_at - 1];
    assert_eq!(
        position(&all, id_of(locking_failure)).abs_diff(lock_pos),
        1,
        "{all:#?}"
    );

    let unlocked = auditor.graphql(UNLOCK, json!({ "id": staff.id })).await;
    assert_eq!(unlocked.ok()["unlockUser"]["status"], "ACTIVE");
    let unlocks = events(&auditor, json!({ "action": "account.unlock" })).await;
    assert_eq!(unlocks.len(), 1, "{unlocks:#?}");
    let unlock = &unlocks[0];
    assert_eq!(actor_of(unlock), Some(admin.id.to_string().as_str()));
    assert_eq!(unlock["targetId"], staff.id.to_string());
    assert_eq!(unlock["outcome"], "ALLOWED");
    assert_eq!(unlock["sessionHash"], session_hash_of(&auditor).as_str());
    assert_eq!(
        unlock["certificateSerial"],
        serial_of(&app, admin.certificate_id).await.as_str()
    );
    attempt_as(&device, &staff, &staff.password).await.ok();
}

#[tokio::test]
async fn certificate_issue_and_revoke_are_audited() {
    let app = spawn_app().await;
    let (admin, staff) = kita_with_staff(&app).await;
    let auditor = working_session(&app, &admin).await;
    let admin_serial = serial_of(&app, admin.certificate_id).await;

    let issued = auditor
        .graphql(ISSUE, json!({ "u": staff.id, "d": "tablet" }))
        .await;
    let issued = &issued.ok()["issueCertificate"];
    let cert_id = issued["certificate"]["id"].as_str().unwrap().to_string();
    let new_serial = issued["certificate"]["serialNumber"]
        .as_str()
        .unwrap()
        .to_string();
    let tablet_identity = identity_from_pkcs12(
        &base64_decode(issued["pkcs12Base64"].as_str().unwrap()),
        issued["pkcs12Password"].as_str().unwrap(),
    );

    let issues = events(&auditor, json!({ "action": "certificate.issue" })).await;
    let issues: Vec<&Value> = issues
        .iter()
        .filter(|e| e["targetId"] == cert_id.as_str())
        .collect();
    assert_eq!(issues.len(), 1, "{issues:#?}");
    let issue = issues[0];
    assert_eq!(actor_of(issue), Some(admin.id.to_string().as_str()));
    assert_eq!(issue["outcome"], "ALLOWED");
    assert_eq!(issue["targetType"], "certificate", "{issue}");
    assert_eq!(issue["targetId"], cert_id.as_str(), "{issue}");
    assert_eq!(
        issue["certificateSerial"],
        admin_serial.as_str(),
        "the serial of the certificate the request came over: {issue}"
    );
    assert_eq!(detail(issue)["serial"], new_serial.as_str(), "{issue}");
    assert_eq!(detail(issue)["userId"], staff.id.to_string(), "{issue}");
    assert_eq!(issue["sessionHash"], session_hash_of(&auditor).as_str());
    let text = issue.to_string();
    assert!(
        !text.contains(issued["pkcs12Password"].as_str().unwrap()),
        "the bundle password must never be logged"
    );

    // The staff member logs in with the new certificate; revoking it ends that session.
    let tablet = app.client_with_identity(&tablet_identity);
    let tablet = tablet.clone().with_token(token_of(
        &attempt_as(&tablet, &staff, &staff.password).await,
    ));
    let tablet_hash = session_hash_of(&tablet);
    let tablet_login = events(
        &auditor,
        json!({ "actorId": staff.id, "action": "login.success" }),
    )
    .await;
    assert_eq!(tablet_login.len(), 1);
    assert_eq!(tablet_login[0]["certificateSerial"], new_serial.as_str());

    let revoked = auditor
        .graphql(REVOKE, json!({ "id": cert_id, "r": "lost" }))
        .await;
    assert_eq!(revoked.ok()["revokeCertificate"]["status"], "REVOKED");
    let revokes = events(&auditor, json!({ "action": "certificate.revoke" })).await;
    assert_eq!(revokes.len(), 1, "{revokes:#?}");
    let revoke = &revokes[0];
    assert_eq!(actor_of(revoke), Some(admin.id.to_string().as_str()));
    assert_eq!(revoke["outcome"], "ALLOWED");
    assert_eq!(revoke["targetType"], "certificate");
    assert_eq!(revoke["targetId"], cert_id.as_str());
    assert_eq!(revoke["certificateSerial"], admin_serial.as_str());
    assert_eq!(detail(revoke)["serial"], new_serial.as_str(), "{revoke}");

    let ended = events(&auditor, json!({ "action": "session.revoke" })).await;
    let ended: Vec<&Value> = ended
        .iter()
        .filter(|e| e["sessionHash"] == tablet_hash.as_str())
        .collect();
    assert_eq!(ended.len(), 1, "the tablet session's end is recorded once");
    assert_eq!(detail(ended[0])["reason"], "certificate_revoked");
    tablet
        .graphql("{ me { id } }", json!({}))
        .await
        .expect_code("UNAUTHENTICATED");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

#[tokio::test]
async fn password_change_is_audited() {
    let app = spawn_app().await;
    let (admin, staff) = kita_with_staff(&app).await;
    let auditor = working_session(&app, &admin).await;
    // The initial password must be changed: a session that may do only that.
    let client = session(&app, &staff).await;

    let wrong = client
        .graphql(
            CHANGE_PASSWORD,
            json!({ "c": "Not-the-current-1", "n": strong_password() }),
        )
        .await;
    wrong.expect_code("BAD_USER_INPUT");
    let new_password = strong_password();
    let changed = client
        .graphql(
            CHANGE_PASSWORD,
            json!({ "c": staff.password, "n": new_password }),
        )
        .await;
    assert_eq!(changed.ok()["changePassword"], true);

    let changes = events(&auditor, json!({ "action": "password.change" })).await;
    assert_eq!(changes.len(), 2, "{changes:#?}");
    // Newest first: the success, then the failure.
    let (ok, failed) = (&changes[0], &changes[1]);
    assert_eq!(ok["outcome"], "ALLOWED", "{ok}");
    assert_eq!(failed["outcome"], "FAILED", "{failed}");
    for e in [ok, failed] {
        assert_eq!(actor_of(e), Some(staff.id.to_string().as_str()), "{e}");
        assert_eq!(e["targetId"], staff.id.to_string(), "{e}");
        assert_eq!(e["sessionHash"], session_hash_of(&client).as_str(), "{e}");
        assert_eq!(e["ip"], LOCALHOST);
        let text = e.to_string();
        assert!(
            !text.contains(&new_password) && !text.contains(&staff.password),
            "passwords must never be logged: {text}"
        );
    }

    let reset = auditor.graphql(RESET, json!({ "id": staff.id })).await;
    let one_time = reset.ok()["resetPassword"].as_str().unwrap().to_string();
    let resets = events(&auditor, json!({ "action": "password.reset" })).await;
    assert_eq!(resets.len(), 1, "{resets:#?}");
    assert_eq!(actor_of(&resets[0]), Some(admin.id.to_string().as_str()));
    assert_eq!(resets[0]["targetId"], staff.id.to_string());
    assert_eq!(resets[0]["outcome"], "ALLOWED");
    assert!(!resets[0].to_string().contains(&one_time));
}

// ---------------------------------------------------------------------------------------------
// 4. who may read the log
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn non_admin_gets_forbidden_and_the_refusal_is_audited() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let staff = app
        .create_user(&admin, "sato", Role::Staff, Some(facility))
        .await;
    let head = app
        .create_user(&admin, "yamada", Role::FacilityAdmin, Some(facility))
        .await;
    let staff_client = working_session(&app, &staff).await;
    let head_client = working_session(&app, &head).await;
    let room = Uuid::new_v4();

    let refused: [(&str, Value, &str); 3] = [
        (AUDIT, json!({ "n": 10 }), "Query.auditEvents"),
        (ROOM_REPORT, json!({ "r": room }), "Query.roomAccessReport"),
        (VERIFY, json!({}), "Query.verifyAuditChain"),
    ];
    for (query, vars, field) in &refused {
        let resp = staff_client.graphql(query, vars.clone()).await;
        assert_eq!(
            resp.code(),
            Some("FORBIDDEN"),
            "STAFF {field}: {}",
            resp.body
        );
        assert!(
            resp.data().is_null()
                || resp
                    .data()
                    .as_object()
                    .is_none_or(|d| d.values().all(Value::is_null)),
            "nothing of {field} leaks: {}",
            resp.body
        );
    }
    // A FACILITY_ADMIN is not an auditor either.
    head_client
        .graphql(AUDIT, json!({ "n": 10 }))
        .await
        .expect_code("FORBIDDEN");
    // Not logged in at all: no session, no audit log.
    app.client_for(&staff)
        .graphql(VERIFY, json!({}))
        .await
        .expect_code("UNAUTHENTICATED");

    let auditor = working_session(&app, &admin).await;
    // The CITY_ADMIN may ask, but of a room its tenant does not have there is no report.
    auditor
        .graphql(ROOM_REPORT, json!({ "r": room }))
        .await
        .expect_code("NOT_FOUND");

    let denied = events(&auditor, json!({ "action": "authz.denied" })).await;
    let by_staff: Vec<&Value> = denied
        .iter()
        .filter(|e| actor_of(e) == Some(staff.id.to_string().as_str()))
        .collect();
    assert_eq!(by_staff.len(), 3, "{denied:#?}");
    let targets: BTreeSet<&str> = by_staff
        .iter()
        .map(|e| e["targetId"].as_str().unwrap())
        .collect();
    assert_eq!(
        targets,
        refused.iter().map(|(_, _, field)| *field).collect()
    );
    let staff_serial = serial_of(&app, staff.certificate_id).await;
    for e in &by_staff {
        assert_eq!(e["outcome"], "DENIED", "{e}");
        assert_eq!(e["targetType"], "field", "{e}");
        assert_eq!(e["sessionHash"], session_hash_of(&staff_client).as_str());
        assert_eq!(e["certificateSerial"], staff_serial.as_str());
        assert_eq!(e["ip"], LOCALHOST);
    }
    let by_head: Vec<&Value> = denied
        .iter()
        .filter(|e| actor_of(e) == Some(head.id.to_string().as_str()))
        .collect();
    assert_eq!(by_head.len(), 1, "{denied:#?}");
    assert_eq!(by_head[0]["targetId"], "Query.auditEvents");
    assert_eq!(denied.len(), 4, "{denied:#?}");

    // The auditor's own reading is recorded as well.
    let reads = events(&auditor, json!({ "action": "audit.read" })).await;
    assert!(!reads.is_empty());
    for e in &reads {
        assert_eq!(actor_of(e), Some(admin.id.to_string().as_str()), "{e}");
        assert_eq!(e["outcome"], "ALLOWED");
    }
}

#[tokio::test]
async fn auditors_see_only_their_tenant() {
    let app = spawn_app().await;
    let (kita_admin, kita_staff) = kita_with_staff(&app).await;
    let minami_admin = app.create_tenant("minami").await;
    let kita = working_session(&app, &kita_admin).await;
    attempt_as(
        &app.client_for(&kita_staff),
        &kita_staff,
        "Wrong-password-1",
    )
    .await
    .expect_code("UNAUTHENTICATED");
    for _ in 0..5 {
        kita.graphql(USER, json!({ "id": kita_staff.id }))
            .await
            .ok();
    }
    let minami = working_session(&app, &minami_admin).await;

    let kita_events = events(&kita, json!({})).await;
    let minami_events = events(&minami, json!({})).await;
    assert!(kita_events.len() >= 7, "{kita_events:#?}");
    // minami sees its own admin's login ...
    assert!(
        minami_events.iter().any(|e| e["action"] == "login.success"
            && actor_of(e) == Some(minami_admin.id.to_string().as_str())),
        "{minami_events:#?}"
    );
    // ... and nothing of kita's.
    let kita_ids: HashSet<&str> = kita_events.iter().map(id_of).collect();
    let kita_people = [kita_admin.id.to_string(), kita_staff.id.to_string()];
    for e in &minami_events {
        assert!(!kita_ids.contains(id_of(e)), "kita's event in minami: {e}");
        if let Some(actor) = actor_of(e) {
            assert!(!kita_people.iter().any(|p| p == actor), "{e}");
        }
        assert!(
            !kita_people.iter().any(|p| e["targetId"] == p.as_str()),
            "{e}"
        );
    }
    let kita_failures = with_action(&kita_events, "login.failure");
    assert_eq!(kita_failures.len(), 1);
    assert!(with_action(&minami_events, "login.failure").is_empty());
    // The other way round as well.
    let minami_ids: HashSet<&str> = minami_events.iter().map(id_of).collect();
    let kita_now = events(&kita, json!({})).await;
    assert!(kita_now.iter().all(|e| !minami_ids.contains(id_of(e))));

    // Filtering by someone of another tenant finds nothing.
    let foreign = audit_page(&minami, json!({ "actorId": kita_staff.id }), 50, None).await;
    if foreign.errors().is_empty() {
        assert_eq!(foreign.data()["auditEvents"]["totalCount"], 0);
        assert_eq!(foreign.data()["auditEvents"]["edges"], json!([]));
    } else {
        foreign.expect_code("NOT_FOUND");
    }
    // Each chain is the tenant's own: minami's verifies fewer events than kita's holds.
    let minami_report = verify(&minami).await;
    assert_intact(&minami_report);
    assert!(
        minami_report["verifiedEvents"].as_u64().unwrap() < kita_now.len() as u64,
        "{minami_report} vs {} kita events",
        kita_now.len()
    );
}

// ---------------------------------------------------------------------------------------------
// 5. the chain
// ---------------------------------------------------------------------------------------------

async fn allow_tampering(app: &TestApp) {
    if backend() == Backend::Postgres {
        app.db
            .execute_unprepared("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn tampering_is_detected_and_names_the_event() {
    let app = spawn_app().await;
    let (admin, staff) = kita_with_staff(&app).await;
    let auditor = working_session(&app, &admin).await;
    let device = app.client_for(&staff);
    for i in 1..=3 {
        attempt_as(&device, &staff, &format!("Wrong-password-{i}"))
            .await
            .expect_code("UNAUTHENTICATED");
    }
    attempt_as(&device, &staff, &staff.password).await.ok();
    auditor.graphql(USER, json!({ "id": staff.id })).await.ok();
    assert_intact(&verify(&auditor).await);

    let stored = stored_events(&app, admin.tenant_id).await;
    // The second of sato's failed logins: in the middle of the chain.
    let failures: Vec<&audit_event::Model> = stored
        .iter()
        .filter(|e| e.action == "login.failure")
        .collect();
    assert_eq!(failures.len(), 3);
    let victim = failures[1].clone();
    let last_change = stored.iter().filter(|e| e.chain == 0).map(|e| e.seq).max();
    assert_eq!(victim.chain, 0, "a failed login is in the changes chain");
    assert!(victim.seq > 1 && Some(victim.seq) < last_change);

    allow_tampering(&app).await;
    type Edit = Box<dyn Fn(&mut audit_event::ActiveModel)>;
    let victim_at = victim.at;
    let edits: Vec<(&str, Edit)> = vec![
        ("ip", Box::new(|m| m.ip = Set(Some("10.6.6.6".into())))),
        (
            "action",
            Box::new(|m| m.action = Set("login.success".into())),
        ),
        (
            "outcome",
            Box::new(|m| m.outcome = Set(AuditOutcome::Allowed)),
        ),
        (
            "detail",
            Box::new(|m| m.detail = Set(r#"{"loginId":"sato","reason":"locked"}"#.into())),
        ),
        ("actor", Box::new(|m| m.actor_id = Set(None))),
        (
            "at",
            Box::new(move |m| m.at = Set(victim_at - chrono::Duration::hours(3))),
        ),
        (
            "certificate serial",
            Box::new(|m| m.certificate_serial = Set(Some("1234abcd".into()))),
        ),
        (
            "target",
            Box::new(|m| m.target_id = Set(Some("forged".into()))),
        ),
        ("hash", Box::new(|m| m.hash = Set("0".repeat(64)))),
    ];
    for (what, edit) in &edits {
        let mut active = victim.clone().into_active_model();
        edit(&mut active);
        active.update(&app.db).await.unwrap();
        assert_broken_at(&verify(&auditor).await, victim.id, what);
        // Put back exactly as it was: the chain checks out again.
        let mut restore = victim.clone().into_active_model();
        restore.ip = Set(victim.ip.clone());
        restore.action = Set(victim.action.clone());
        restore.outcome = Set(victim.outcome);
        restore.detail = Set(victim.detail.clone());
        restore.actor_id = Set(victim.actor_id);
        restore.at = Set(victim.at);
        restore.certificate_serial = Set(victim.certificate_serial.clone());
        restore.target_id = Set(victim.target_id.clone());
        restore.hash = Set(victim.hash.clone());
        restore.update(&app.db).await.unwrap();
        assert_intact(&verify(&auditor).await);
    }

    // Removing an event from the middle breaks the chain at the event that followed it.
    let stored = stored_events(&app, admin.tenant_id).await;
    let gone = stored
        .iter()
        .position(|e| e.id == victim.id)
        .expect("victim still stored");
    let next = stored[gone + 1].id;
    audit_event::Entity::delete_by_id(victim.id)
        .exec(&app.db)
        .await
        .unwrap();
    assert_broken_at(&verify(&auditor).await, next, "a removed event");
    // Still broken a moment later: the damage does not heal as new events arrive.
    auditor.graphql(USER, json!({ "id": staff.id })).await.ok();
    assert_broken_at(&verify(&auditor).await, next, "a removed event, later");
}

#[tokio::test]
async fn postgres_refuses_update_and_delete_of_audit_rows() {
    if backend() != Backend::Postgres {
        // SQLite has no triggers for this; the hash chain catches edits there
        // (tampering_is_detected_and_names_the_event runs on both databases).
        return;
    }
    let app = spawn_app().await;
    let (admin, staff) = kita_with_staff(&app).await;
    let auditor = working_session(&app, &admin).await;
    attempt_as(&app.client_for(&staff), &staff, "Wrong-password-1")
        .await
        .expect_code("UNAUTHENTICATED");
    let before = stored_events(&app, admin.tenant_id).await;
    assert!(before.len() >= 2);

    for sql in [
        "UPDATE audit_event SET ip = '10.6.6.6'".to_string(),
        format!(
            "UPDATE audit_event SET detail = '{{}}' WHERE id = '{}'",
            before[0].id
        ),
        format!("DELETE FROM audit_event WHERE id = '{}'", before[0].id),
        "DELETE FROM audit_event".to_string(),
        "TRUNCATE audit_event".to_string(),
    ] {
        let result = app.db.execute_unprepared(&sql).await;
        assert!(result.is_err(), "PostgreSQL accepted `{sql}`");
    }
    let after = stored_events(&app, admin.tenant_id).await;
    assert!(after.len() >= before.len());
    assert_eq!(&after[..before.len()], &before[..], "a row changed");
    assert_intact(&verify(&auditor).await);
}

// ---------------------------------------------------------------------------------------------
// 6. read events under load and across shutdown
// ---------------------------------------------------------------------------------------------

/// `n` concurrent `user(id:)` reads by `client`, all of which must succeed.
async fn read_burst(client: &TestClient, id: Uuid, n: usize) {
    let results = futures_util::future::join_all(
        (0..n).map(|_| async { client.graphql(USER, json!({ "id": id })).await }),
    )
    .await;
    for resp in &results {
        assert_eq!(resp.ok()["user"]["id"], id.to_string());
    }
}

#[tokio::test]
async fn every_read_of_a_burst_is_audited() {
    let app = spawn_app().await;
    let (admin, staff) = kita_with_staff(&app).await;
    let auditor = working_session(&app, &admin).await;
    read_burst(&auditor, staff.id, 200).await;

    let page = audit_page(&auditor, json!({ "action": "user.read" }), 500, None).await;
    let conn = &page.ok()["auditEvents"];
    assert_eq!(conn["totalCount"], 200, "not one read may be missing");
    let edges = conn["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 200);
    let ids: HashSet<&str> = edges.iter().map(|e| id_of(&e["node"])).collect();
    assert_eq!(ids.len(), 200);
    for edge in edges {
        let e = &edge["node"];
        assert_eq!(actor_of(e), Some(admin.id.to_string().as_str()), "{e}");
        assert_eq!(e["targetId"], staff.id.to_string(), "{e}");
        assert_eq!(e["outcome"], "ALLOWED");
        assert_eq!(e["sessionHash"], session_hash_of(&auditor).as_str());
    }
    assert_intact(&verify(&auditor).await);
}

#[tokio::test]
async fn buffered_read_events_are_written_before_shutdown_ends() {
    let mut first = spawn_app().await;
    let (mut admin, staff) = kita_with_staff(&first).await;
    let auditor = first.login_ready(&mut admin).await;
    read_burst(&auditor, staff.id, 200).await;
    // No audit query in between: the events may all still be waiting in the buffer.
    first.stop().await;

    let second = spawn_app_with(TestOptions {
        share_with: Some(first.shared_backends()),
        ..Default::default()
    })
    .await;
    let auditor = second.login(&admin).await;
    assert_eq!(
        total(&auditor, json!({ "action": "user.read" })).await,
        200,
        "read events were lost in the shutdown"
    );
    assert_intact(&verify(&auditor).await);
}

#[tokio::test]
async fn concurrent_writers_never_fork_the_chain() {
    let settings = [
        ("RENKEI_LOGIN_MAX_FAILURES", "100"),
        ("RENKEI_LOGIN_IP_MAX_FAILURES", "1000"),
    ];
    let mut app = spawn_with_env(&settings).await;
    // On PostgreSQL a second instance of the same deployment writes at the same time.
    let mut other = if backend() == Backend::Postgres {
        Some(
            spawn_app_with(TestOptions {
                env: env(&settings),
                share_with: Some(app.shared_backends()),
                ..Default::default()
            })
            .await,
        )
    } else {
        None
    };
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let mut staff = Vec::new();
    for i in 0..4 {
        staff.push(
            app.create_user(&admin, &format!("nurse{i}"), Role::Staff, Some(facility))
                .await,
        );
    }
    let auditor = working_session(&app, &admin).await;
    let reader = staff[0].id;

    // 20 failed logins (change events, each in its own transaction) and 40 reads (buffered,
    // batched), all at once, spread over both instances when there are two.
    let mut failures = Vec::new();
    for (i, person) in staff.iter().cycle().take(20).enumerate() {
        let client = match (&other, i % 2) {
            (Some(other), 1) => other.client_for(person),
            _ => app.client_for(person),
        };
        let person = person.clone();
        failures.push(
            async move { attempt_as(&client, &person, &format!("Wrong-password-{i}")).await },
        );
    }
    let reads = async { read_burst(&auditor, reader, 40).await };
    let (failed, ()) = tokio::join!(futures_util::future::join_all(failures), reads);
    for resp in &failed {
        resp.expect_code("UNAUTHENTICATED");
    }

    assert_eq!(
        total(&auditor, json!({ "action": "login.failure" })).await,
        20
    );
    assert_eq!(total(&auditor, json!({ "action": "user.read" })).await, 40);
    let report = verify(&auditor).await;
    assert_intact(&report);
    let verified = report["verifiedEvents"].as_u64().unwrap();
    assert!(verified >= 60, "{report}");

    // Once nothing writes any more: in each chain one unbroken sequence 1..n, its tip
    // recorded as the chain's head. Failed logins are changes, reads are reads.
    if let Some(other) = other.as_mut() {
        other.stop().await;
    }
    app.stop().await;
    let stored = stored_events(&app, admin.tenant_id).await;
    for chain in [0_i16, 1] {
        let events: Vec<&audit_event::Model> = stored.iter().filter(|e| e.chain == chain).collect();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        let expected: Vec<i64> = (1..=i64::try_from(events.len()).unwrap()).collect();
        assert_eq!(seqs, expected, "chain {chain} has gaps or forks");
        let head = entity::audit_chain::Entity::find_by_id((admin.tenant_id, chain))
            .one(&app.db)
            .await
            .unwrap()
            .expect("the tenant has a head for each chain");
        let last = events.last().unwrap();
        assert_eq!(
            (head.seq, head.hash.as_str()),
            (last.seq, last.hash.as_str())
        );
        // Events are in time order along each chain.
        assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
    }
    let in_chain = |chain: i16, action: &str| {
        stored
            .iter()
            .filter(|e| e.chain == chain && e.action == action)
            .count()
    };
    assert_eq!(in_chain(0, "login.failure"), 20);
    assert_eq!(in_chain(1, "user.read"), 40);
    let hashes: HashSet<&str> = stored.iter().map(|e| e.hash.as_str()).collect();
    assert_eq!(hashes.len(), stored.len(), "two events share a hash");
    // Nothing was written after the check but, at most, the check's own audit.read: the
    // verifier walked every event there was.
    let stored_count = stored.len() as u64;
    assert!(
        verified == stored_count || verified + 1 == stored_count,
        "verified {verified}, but {stored_count} events are stored"
    );
}

/// `chain` (0 changes, 1 reads) of the tenant's stored events.
fn of_chain(stored: &[audit_event::Model], chain: i16) -> Vec<&audit_event::Model> {
    stored.iter().filter(|e| e.chain == chain).collect()
}

#[tokio::test]
async fn read_events_have_a_chain_of_their_own_and_it_is_verified_too() {
    let app = spawn_app().await;
    let (admin, staff) = kita_with_staff(&app).await;
    let auditor = working_session(&app, &admin).await;
    attempt_as(&app.client_for(&staff), &staff, "Wrong-password-1")
        .await
        .expect_code("UNAUTHENTICATED");
    read_burst(&auditor, staff.id, 6).await;
    assert_intact(&verify(&auditor).await);
    app.state().audit.flush().await;

    // Reads, buffered, are the reads chain; logins and what changed are the changes chain.
    let stored = stored_events(&app, admin.tenant_id).await;
    let (changes, reads) = (of_chain(&stored, 0), of_chain(&stored, 1));
    assert!(changes.iter().any(|e| e.action == "login.failure"));
    assert!(changes.iter().all(|e| e.action != "user.read"));
    let user_reads: Vec<&&audit_event::Model> =
        reads.iter().filter(|e| e.action == "user.read").collect();
    assert_eq!(user_reads.len(), 6, "{reads:?}");
    assert!(reads.iter().all(|e| !e.action.starts_with("login.")));
    for chain in [&changes, &reads] {
        let seqs: Vec<i64> = chain.iter().map(|e| e.seq).collect();
        let expected: Vec<i64> = (1..=i64::try_from(chain.len()).unwrap()).collect();
        assert_eq!(seqs, expected);
    }

    // An edit in the reads chain is found and named like one in the changes chain.
    allow_tampering(&app).await;
    let victim = (*user_reads[2]).clone();
    let mut edited = victim.clone().into_active_model();
    edited.target_id = Set(Some(admin.id.to_string()));
    edited.update(&app.db).await.unwrap();
    assert_broken_at(&verify(&auditor).await, victim.id, "a read event's target");
    let mut restore = victim.clone().into_active_model();
    restore.target_id = Set(victim.target_id.clone());
    restore.update(&app.db).await.unwrap();
    assert_intact(&verify(&auditor).await);

    // The same event moved into the changes chain (where its seq is free) breaks both: a gap
    // in the reads chain, and an event the changes chain's hashes do not cover.
    app.state().audit.flush().await;
    let free_seq = of_chain(&stored_events(&app, admin.tenant_id).await, 0)
        .last()
        .map_or(1, |e| e.seq + 1);
    let mut moved = victim.clone().into_active_model();
    moved.chain = Set(0);
    moved.seq = Set(free_seq);
    moved.update(&app.db).await.unwrap();
    let report = verify(&auditor).await;
    assert_broken_at(
        &report,
        victim.id,
        "a read event moved to the changes chain",
    );
}

#[tokio::test]
async fn a_purge_cuts_both_chains_and_both_still_verify() {
    let app = spawn_app().await;
    let (admin, staff) = kita_with_staff(&app).await;
    let auditor = working_session(&app, &admin).await;
    let device = app.client_for(&staff);
    let activity = |round: usize| {
        let (auditor, device, staff) = (&auditor, &device, &staff);
        async move {
            attempt_as(device, staff, &format!("Wrong-password-{round}"))
                .await
                .expect_code("UNAUTHENTICATED");
            read_burst(auditor, staff.id, 3).await;
        }
    };
    activity(1).await;
    app.state().audit.flush().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    activity(2).await;
    app.state().audit.flush().await;
    let before = stored_events(&app, admin.tenant_id).await;
    let old: Vec<&audit_event::Model> = before.iter().filter(|e| e.at < cut).collect();
    assert!(old.iter().any(|e| e.chain == 0) && old.iter().any(|e| e.chain == 1));

    let purged =
        renkei::service::audit::purge(&app.db, &app.state().master_key, admin.tenant_id, cut)
            .await
            .unwrap();
    assert_eq!(purged.removed, old.len() as u64);
    let chains: Vec<i16> = purged.checkpoints.iter().map(|(c, _)| c.id()).collect();
    assert_eq!(chains, [0, 1], "one signed checkpoint per chain");
    for (chain, seq) in &purged.checkpoints {
        let last_old = old
            .iter()
            .filter(|e| e.chain == chain.id())
            .map(|e| e.seq)
            .max();
        assert_eq!(Some(*seq), last_old, "{chain:?}");
    }
    // Exactly the newer events are left, untouched, in both chains.
    let after = stored_events(&app, admin.tenant_id).await;
    let kept: Vec<&audit_event::Model> = before.iter().filter(|e| e.at >= cut).collect();
    assert_eq!(after.iter().collect::<Vec<_>>(), kept);
    assert_intact(&verify(&auditor).await);

    // Both chains go on after their checkpoints; a second purge of everything leaves them
    // verifiable, and new events after that too.
    activity(3).await;
    assert_intact(&verify(&auditor).await);
    app.state().audit.flush().await;
    let everything = renkei::service::audit::purge(
        &app.db,
        &app.state().master_key,
        admin.tenant_id,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert!(everything.removed > 0);
    assert!(stored_events(&app, admin.tenant_id).await.is_empty());
    activity(4).await;
    let report = verify(&auditor).await;
    assert_intact(&report);
    assert!(report["verifiedEvents"].as_u64().unwrap() >= 4, "{report}");
}

// ---------------------------------------------------------------------------------------------
// 7. paging and filters
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn paging_is_relay_newest_first() {
    let app = spawn_app().await;
    let (admin, staff) = kita_with_staff(&app).await;
    let auditor = working_session(&app, &admin).await;
    let device = app.client_for(&staff);
    for i in 1..=3 {
        attempt_as(&device, &staff, &format!("Wrong-password-{i}"))
            .await
            .expect_code("UNAUTHENTICATED");
        auditor.graphql(USER, json!({ "id": staff.id })).await.ok();
    }
    attempt_as(&device, &staff, &staff.password).await.ok();
    for _ in 0..4 {
        auditor.graphql(USER, json!({ "id": staff.id })).await.ok();
    }

    // One page holding everything, as a reference.
    let snapshot = events(&auditor, json!({})).await;
    assert!(snapshot.len() >= 12, "{}", snapshot.len());

    // Walk four at a time.
    let mut walked: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let resp = audit_page(&auditor, json!({}), 4, after.as_deref()).await;
        let conn = &resp.ok()["auditEvents"];
        let edges = conn["edges"].as_array().unwrap();
        pages += 1;
        assert!(edges.len() <= 4);
        for edge in edges {
            assert!(edge["cursor"].as_str().is_some_and(|c| !c.is_empty()));
            walked.push(edge["node"].clone());
        }
        let info = &conn["pageInfo"];
        if info["hasNextPage"] == true {
            assert_eq!(edges.len(), 4, "a page short of `first` must be the last");
            assert_eq!(
                info["endCursor"], edges[3]["cursor"],
                "endCursor is the last edge's"
            );
            after = Some(info["endCursor"].as_str().unwrap().to_string());
        } else {
            break;
        }
        assert!(pages < 100, "paging does not end");
    }
    assert!(pages >= 3);
    let ids: HashSet<&str> = walked.iter().map(id_of).collect();
    assert_eq!(ids.len(), walked.len(), "an event was listed twice");
    // Events recorded while walking (the walk's own audit.read) can only come first; the rest
    // is exactly the reference, in the same order: no gaps.
    let extra = walked.len() - snapshot.len();
    let walked_ids: Vec<&str> = walked.iter().map(id_of).collect();
    let snapshot_ids: Vec<&str> = snapshot.iter().map(id_of).collect();
    assert_eq!(&walked_ids[extra..], &snapshot_ids[..]);
    assert!(walked[..extra].iter().all(|e| e["action"] == "audit.read"));
    assert!(
        walked.windows(2).all(|w| at_of(&w[0]) >= at_of(&w[1])),
        "not newest first"
    );

    for first in [0, -1, 501] {
        let resp = audit_page(&auditor, json!({}), first, None).await;
        resp.expect_code("BAD_USER_INPUT");
        assert_eq!(resp.field(), Some("first"), "{}", resp.body);
    }
    let resp = audit_page(&auditor, json!({}), 10, Some("not-a-cursor")).await;
    resp.expect_code("BAD_USER_INPUT");
    assert_eq!(resp.field(), Some("after"), "{}", resp.body);
    // 500 is the largest page.
    audit_page(&auditor, json!({}), 500, None).await.ok();

    // Action prefix.
    let logins = events(&auditor, json!({ "action": "login.*" })).await;
    let expected: Vec<&Value> = snapshot
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("login."))
        .collect();
    assert_eq!(logins.len(), expected.len());
    assert_eq!(logins.iter().collect::<Vec<_>>(), expected);
    // 3 failures and a success of sato's, and the admin's login.
    assert_eq!(logins.len(), 5, "{logins:#?}");
    assert_eq!(
        total(&auditor, json!({ "action": "login.*" })).await,
        5,
        "totalCount counts the filtered events"
    );
    // Exact action: no prefix matching without the star.
    assert_eq!(total(&auditor, json!({ "action": "login" })).await, 0);

    // Actor.
    let sato = events(&auditor, json!({ "actorId": staff.id })).await;
    let expected: Vec<&Value> = snapshot
        .iter()
        .filter(|e| actor_of(e) == Some(staff.id.to_string().as_str()))
        .collect();
    assert_eq!(sato.iter().collect::<Vec<_>>(), expected);
    assert_eq!(sato.len(), 4);

    // Time: `from` inclusive, `to` exclusive, at one event's exact time.
    let pivot = with_action(&snapshot, "login.failure")[1].clone();
    let pivot_at = at_of(&pivot);
    let before = events(&auditor, json!({ "to": pivot["at"] })).await;
    let expected: Vec<&Value> = snapshot.iter().filter(|e| at_of(e) < pivot_at).collect();
    assert_eq!(before.iter().collect::<Vec<_>>(), expected);
    assert!(!before.iter().any(|e| id_of(e) == id_of(&pivot)));
    let since = events(&auditor, json!({ "from": pivot["at"] })).await;
    assert!(since.iter().all(|e| at_of(e) >= pivot_at));
    assert!(since.iter().any(|e| id_of(e) == id_of(&pivot)));
    let snapshot_since: Vec<&str> = snapshot
        .iter()
        .filter(|e| at_of(e) >= pivot_at)
        .map(id_of)
        .collect();
    let since_ids: Vec<&str> = since.iter().map(id_of).collect();
    assert!(since_ids.ends_with(&snapshot_since));
    assert_eq!(before.len() + snapshot_since.len(), snapshot.len());
    // Both at once, with the actor: sato's events from the pivot on, and a window with none.
    let window = events(
        &auditor,
        json!({ "actorId": staff.id, "from": pivot["at"], "to": sato[0]["at"] }),
    )
    .await;
    assert!(window.iter().any(|e| id_of(e) == id_of(&pivot)));
    assert!(!window.iter().any(|e| id_of(e) == id_of(&sato[0])));
    let empty = events(&auditor, json!({ "from": pivot["at"], "to": pivot["at"] })).await;
    assert!(empty.is_empty());
}
