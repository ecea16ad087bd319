//! Issue 5: who may call which application and account mutation, as one table. Every mutation
//! of the issue is called by every kind of caller (anonymous with and without a certificate,
//! STAFF and FACILITY_ADMIN of facility A, FACILITY_ADMIN of facility B, the CITY_ADMIN, and the
//! CITY_ADMIN of another tenant) against targets in facility A made fresh for that one call, and
//! the answer must be the one the table names. The database is read before and after each call:
//! an allowed call must have changed its target, a refused one must have left it alone.
//!
//! Runs on both databases (`RENKEI_TEST_DB=sqlite|postgres`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, IntoActiveModel as _,
    PaginatorTrait as _, QueryFilter as _, Set,
};
use serde_json::{Value, json};
use uuid::Uuid;

use entity::kinds::{AccountStatus, Occupation, Role};
use renkei_tests::{Person, TestApp, TestClient, TestOptions, spawn_app_with};

const OK: &str = "ok";
const UNAUTH: &str = "UNAUTHENTICATED";
const FORBID: &str = "FORBIDDEN";
const NOT_FOUND: &str = "NOT_FOUND";

/// The callers, in the order of the table's columns.
const CALLERS: [&str; 7] = [
    "anonymous",
    "anonymous with a certificate",
    "STAFF of A",
    "FACILITY_ADMIN of A",
    "FACILITY_ADMIN of B",
    "CITY_ADMIN",
    "CITY_ADMIN of another tenant",
];
const CITY: usize = 5;

/// What each caller gets, per mutation. Rows run top to bottom; `suspendFacility` comes last
/// because its target for A's own people is facility A itself.
const TABLE: &[(&str, [&str; 7])] = &[
    ("submitRegistration", [OK, OK, OK, OK, OK, OK, OK]),
    (
        "submitChange",
        [UNAUTH, UNAUTH, FORBID, OK, FORBID, FORBID, NOT_FOUND],
    ),
    (
        "submitSuspension",
        [UNAUTH, UNAUTH, FORBID, OK, FORBID, FORBID, NOT_FOUND],
    ),
    (
        "withdrawApplication",
        [UNAUTH, UNAUTH, FORBID, OK, FORBID, FORBID, NOT_FOUND],
    ),
    (
        "reviewApplication",
        [UNAUTH, UNAUTH, FORBID, FORBID, FORBID, OK, NOT_FOUND],
    ),
    (
        "issueCertificate",
        [UNAUTH, UNAUTH, FORBID, OK, FORBID, OK, NOT_FOUND],
    ),
    (
        "revokeCertificate",
        [UNAUTH, UNAUTH, FORBID, OK, FORBID, OK, NOT_FOUND],
    ),
    (
        "suspendUser",
        [UNAUTH, UNAUTH, FORBID, FORBID, FORBID, OK, NOT_FOUND],
    ),
    (
        "reactivateUser",
        [UNAUTH, UNAUTH, FORBID, FORBID, FORBID, OK, NOT_FOUND],
    ),
    (
        "unlockUser",
        [UNAUTH, UNAUTH, FORBID, OK, FORBID, OK, NOT_FOUND],
    ),
    (
        "resetPassword",
        [UNAUTH, UNAUTH, FORBID, OK, FORBID, OK, NOT_FOUND],
    ),
    (
        "reactivateFacility",
        [UNAUTH, UNAUTH, FORBID, FORBID, FORBID, OK, NOT_FOUND],
    ),
    (
        "setFacilityAdminDelegation",
        [UNAUTH, UNAUTH, FORBID, FORBID, FORBID, OK, OK],
    ),
    (
        "suspendFacility",
        [UNAUTH, UNAUTH, FORBID, FORBID, FORBID, OK, NOT_FOUND],
    ),
];

const SUBMIT_REGISTRATION: &str =
    "mutation($i:RegistrationInput!){ submitRegistration(input:$i){ id status } }";
const SUBMIT_CHANGE: &str =
    "mutation($f:ID!,$p:JSON!){ submitChange(facilityId:$f, payload:$p){ id status } }";
const SUBMIT_SUSPENSION: &str = "mutation($u:[ID!]!,$r:String!,$w:Boolean!){ submitSuspension(userIds:$u, reason:$r, wholeFacility:$w){ id status } }";
const WITHDRAW: &str = "mutation($id:ID!){ withdrawApplication(id:$id){ id status } }";
const REVIEW: &str = "mutation($id:ID!,$a:Boolean!,$n:String){ reviewApplication(id:$id, approve:$a, note:$n){ application { id status } } }";
const ISSUE: &str = "mutation($u:ID!,$d:String!){ issueCertificate(userId:$u, deviceLabel:$d){ certificate { id } } }";
const REVOKE: &str =
    "mutation($id:ID!,$r:String!){ revokeCertificate(id:$id, reason:$r){ id status } }";
const SUSPEND_USER: &str =
    "mutation($id:ID!,$r:String!){ suspendUser(id:$id, reason:$r){ id status } }";
const REACTIVATE_USER: &str = "mutation($id:ID!){ reactivateUser(id:$id){ id status } }";
const UNLOCK: &str = "mutation($id:ID!){ unlockUser(id:$id){ id status } }";
const RESET: &str = "mutation($id:ID!){ resetPassword(id:$id) }";
const SUSPEND_FACILITY: &str =
    "mutation($id:ID!,$r:String!){ suspendFacility(id:$id, reason:$r){ id status } }";
const REACTIVATE_FACILITY: &str = "mutation($id:ID!){ reactivateFacility(id:$id){ id status } }";
const SET_DELEGATION: &str =
    "mutation($e:Boolean!){ setFacilityAdminDelegation(enabled:$e){ facilityAdminDelegation } }";

/// The tenant, its facilities and the callers' sessions.
struct World {
    app: TestApp,
    admin: Person,
    a: Uuid,
    clients: Vec<TestClient>,
    next: AtomicUsize,
}

/// What a cell's call changes if it is allowed, read from the database.
enum Probe {
    /// Nothing to see (a setting set to the value it has).
    Nothing,
    /// How many applications the tenant has.
    Applications,
    Application(Uuid),
    CertificatesOf(Uuid),
    Certificate(Uuid),
    User(Uuid),
    Facility(Uuid),
}

struct Call {
    query: &'static str,
    vars: Value,
    probe: Probe,
}

impl World {
    async fn new() -> World {
        let app = spawn_app_with(TestOptions {
            env: vec![(
                "RENKEI_REGISTRATION_IP_MAX_SUBMISSIONS".into(),
                "10000".into(),
            )],
            ..Default::default()
        })
        .await;
        let admin = app.create_tenant("kita").await;
        let other_admin = app.create_tenant("minami").await;
        let a = app.create_facility(admin.tenant_id, "Kita Clinic").await;
        let b = app.create_facility(admin.tenant_id, "Kita Care").await;
        let staff_a = app
            .create_user(&admin, "staff-a", Role::Staff, Some(a))
            .await;
        let head_a = app
            .create_user(&admin, "head-a", Role::FacilityAdmin, Some(a))
            .await;
        let head_b = app
            .create_user(&admin, "head-b", Role::FacilityAdmin, Some(b))
            .await;
        let clients = vec![
            app.client(),
            app.client_for(&staff_a),
            app.ready_session(&staff_a).await,
            app.ready_session(&head_a).await,
            app.ready_session(&head_b).await,
            app.ready_session(&admin).await,
            app.ready_session(&other_admin).await,
        ];
        World {
            app,
            admin,
            a,
            clients,
            next: AtomicUsize::new(0),
        }
    }

    fn head_a(&self) -> &TestClient {
        &self.clients[3]
    }

    /// A STAFF member of facility A made straight in the database (no password: targets never
    /// log in, and Argon2id is slow in a debug build).
    async fn fresh_user(&self, status: AccountStatus) -> Uuid {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let now = chrono::Utc::now();
        let locked = status == AccountStatus::Locked;
        let user =
            entity::user::ActiveModel {
                id: Set(Uuid::now_v7()),
                tenant_id: Set(self.admin.tenant_id),
                facility_id: Set(Some(self.a)),
                login_id: Set(format!("target-{n}")),
                display_name: Set(format!("Target {n}")),
                display_name_kana: Set(None),
                email: Set(None),
                occupation: Set(Occupation::Nurse),
                role: Set(Role::Staff),
                status: Set(status),
                password_hash: Set(None),
                must_change_password: Set(true),
                password_changed_at: Set(None),
                pledge_accepted_at: Set(None),
                pledge_version: Set(None),
                failed_login_count: Set(if locked { 5 } else { 0 }),
                locked_until: Set(locked.then(|| now + chrono::Duration::hours(1))),
                suspension_reason: Set(
                    (status == AccountStatus::Suspended).then(|| "test".to_string())
                ),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(&self.app.db)
            .await
            .unwrap();
        user.id
    }

    /// A certificate of a fresh user of facility A, issued as the fixtures issue them.
    async fn fresh_certificate(&self) -> Uuid {
        let user_id = self.fresh_user(AccountStatus::Active).await;
        let user = entity::user::Entity::find_by_id(user_id)
            .one(&self.app.db)
            .await
            .unwrap()
            .unwrap();
        let tenant = renkei::service::users::tenant_of(&self.app.db, &user)
            .await
            .unwrap();
        let issuance = renkei::service::certificates::issue(
            &self.app.db,
            &self.app.state().master_key,
            &tenant,
            &user,
            "phone",
            None,
            &renkei::service::audit::Origin::default(),
        )
        .await
        .unwrap();
        issuance.certificate.id
    }

    /// A change application of facility A filed by A's admin.
    async fn fresh_application(&self) -> Uuid {
        let resp = self
            .head_a()
            .graphql(
                SUBMIT_CHANGE,
                json!({ "f": self.a.to_string(), "p": { "facility": { "phone": "03-7777-8888" } } }),
            )
            .await;
        Uuid::parse_str(resp.ok()["submitChange"]["id"].as_str().unwrap()).unwrap()
    }

    /// A facility of the tenant, in the given status, with no one in it.
    async fn fresh_facility(&self, status: AccountStatus) -> Uuid {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = self
            .app
            .create_facility(self.admin.tenant_id, &format!("Target Facility {n}"))
            .await;
        if status != AccountStatus::Active {
            let facility = entity::facility::Entity::find_by_id(id)
                .one(&self.app.db)
                .await
                .unwrap()
                .unwrap();
            let mut active = facility.into_active_model();
            active.status = Set(status);
            active.update(&self.app.db).await.unwrap();
        }
        id
    }

    /// The call of one cell, with its targets made for it.
    async fn prepare(&self, mutation: &str, caller: usize) -> Call {
        let call = |query, vars, probe| Call { query, vars, probe };
        match mutation {
            "submitRegistration" => {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                call(
                    SUBMIT_REGISTRATION,
                    json!({ "i": registration(&format!("Applicant Clinic {n}")) }),
                    Probe::Applications,
                )
            }
            "submitChange" => call(
                SUBMIT_CHANGE,
                json!({ "f": self.a.to_string(), "p": { "facility": { "phone": "03-3333-4444" } } }),
                Probe::Applications,
            ),
            "submitSuspension" => {
                let user = self.fresh_user(AccountStatus::Active).await;
                call(
                    SUBMIT_SUSPENSION,
                    json!({ "u": [user.to_string()], "r": "退職", "w": false }),
                    Probe::Applications,
                )
            }
            "withdrawApplication" => {
                let id = self.fresh_application().await;
                call(
                    WITHDRAW,
                    json!({ "id": id.to_string() }),
                    Probe::Application(id),
                )
            }
            "reviewApplication" => {
                let id = self.fresh_application().await;
                call(
                    REVIEW,
                    json!({ "id": id.to_string(), "a": true, "n": null }),
                    Probe::Application(id),
                )
            }
            "issueCertificate" => {
                let user = self.fresh_user(AccountStatus::Active).await;
                call(
                    ISSUE,
                    json!({ "u": user.to_string(), "d": "tablet" }),
                    Probe::CertificatesOf(user),
                )
            }
            "revokeCertificate" => {
                let certificate = self.fresh_certificate().await;
                call(
                    REVOKE,
                    json!({ "id": certificate.to_string(), "r": "lost" }),
                    Probe::Certificate(certificate),
                )
            }
            "suspendUser" => {
                let user = self.fresh_user(AccountStatus::Active).await;
                call(
                    SUSPEND_USER,
                    json!({ "id": user.to_string(), "r": "退職" }),
                    Probe::User(user),
                )
            }
            "reactivateUser" => {
                let user = self.fresh_user(AccountStatus::Suspended).await;
                call(
                    REACTIVATE_USER,
                    json!({ "id": user.to_string() }),
                    Probe::User(user),
                )
            }
            "unlockUser" => {
                let user = self.fresh_user(AccountStatus::Locked).await;
                call(UNLOCK, json!({ "id": user.to_string() }), Probe::User(user))
            }
            "resetPassword" => {
                let user = self.fresh_user(AccountStatus::Active).await;
                call(RESET, json!({ "id": user.to_string() }), Probe::User(user))
            }
            "reactivateFacility" => {
                let facility = self.fresh_facility(AccountStatus::Suspended).await;
                call(
                    REACTIVATE_FACILITY,
                    json!({ "id": facility.to_string() }),
                    Probe::Facility(facility),
                )
            }
            "setFacilityAdminDelegation" => {
                call(SET_DELEGATION, json!({ "e": true }), Probe::Nothing)
            }
            "suspendFacility" => {
                // A's own people are refused on A itself; the city suspends a facility of its
                // own so that A's sessions live on.
                let facility = if caller == CITY {
                    self.fresh_facility(AccountStatus::Active).await
                } else {
                    self.a
                };
                call(
                    SUSPEND_FACILITY,
                    json!({ "id": facility.to_string(), "r": "休止" }),
                    Probe::Facility(facility),
                )
            }
            other => panic!("no cell setup for {other}"),
        }
    }

    /// The probed state, as text to compare before and after.
    async fn snapshot(&self, probe: &Probe) -> String {
        let db = &self.app.db;
        match probe {
            Probe::Nothing => String::new(),
            Probe::Applications => entity::application::Entity::find()
                .filter(entity::application::Column::TenantId.eq(self.admin.tenant_id))
                .count(db)
                .await
                .unwrap()
                .to_string(),
            Probe::Application(id) => {
                let row = entity::application::Entity::find_by_id(*id)
                    .one(db)
                    .await
                    .unwrap()
                    .unwrap();
                format!("{:?}", row.status)
            }
            Probe::CertificatesOf(user) => entity::certificate::Entity::find()
                .filter(entity::certificate::Column::UserId.eq(*user))
                .count(db)
                .await
                .unwrap()
                .to_string(),
            Probe::Certificate(id) => {
                let row = entity::certificate::Entity::find_by_id(*id)
                    .one(db)
                    .await
                    .unwrap()
                    .unwrap();
                format!("{:?}", row.status)
            }
            Probe::User(id) => {
                let row = entity::user::Entity::find_by_id(*id)
                    .one(db)
                    .await
                    .unwrap()
                    .unwrap();
                format!("{:?} hash={:?}", row.status, row.password_hash.map(|h| h.0))
            }
            Probe::Facility(id) => {
                let row = entity::facility::Entity::find_by_id(*id)
                    .one(db)
                    .await
                    .unwrap()
                    .unwrap();
                format!("{:?}", row.status)
            }
        }
    }
}

fn registration(name: &str) -> Value {
    json!({
        "tenant": "kita",
        "facility": {
            "kind": "CARE_PROVIDER",
            "name": name,
            "address": "北区中央1-2-3",
            "phone": "03-1234-5678",
            "representativeName": "佐藤 次郎",
        },
        "staff": [
            { "displayName": "佐藤 次郎", "occupation": "CARE_MANAGER", "facilityAdmin": true },
        ],
        "representativePledgeAccepted": true,
        "contactEmail": "office@applicant.example.jp",
    })
}

#[tokio::test]
async fn every_account_mutation_answers_every_caller_as_the_table_says() {
    let world = World::new().await;
    let mut wrong = Vec::new();
    let mut grid = String::new();
    for (mutation, expected) in TABLE {
        write!(grid, "{mutation:<28}").unwrap();
        for (caller, want) in expected.iter().enumerate() {
            let call = world.prepare(mutation, caller).await;
            let before = world.snapshot(&call.probe).await;
            let resp = world.clients[caller].graphql(call.query, call.vars).await;
            let after = world.snapshot(&call.probe).await;
            let got = match resp.code() {
                Some(code) => code.to_string(),
                None if resp.errors().is_empty() && !resp.data()[*mutation].is_null() => {
                    OK.to_string()
                }
                None => format!("error without a code: {}", resp.body),
            };
            write!(grid, " {got:<16}").unwrap();
            let who = CALLERS[caller];
            if got != *want {
                wrong.push(format!(
                    "{mutation} by {who}: expected {want}, got {got}: {}",
                    resp.body
                ));
                continue;
            }
            let changed = before != after;
            let is_probed = !matches!(call.probe, Probe::Nothing);
            if is_probed && *want == OK && !changed {
                wrong.push(format!(
                    "{mutation} by {who}: answered ok but its target did not change ({before})"
                ));
            }
            if is_probed && *want != OK && changed {
                wrong.push(format!(
                    "{mutation} by {who}: refused with {got} but its target changed ({before} -> {after})"
                ));
            }
        }
        grid.push('\n');
    }
    assert!(
        wrong.is_empty(),
        "{} unexpected cell(s):\n{}\n\nobserved (columns: {}):\n{grid}",
        wrong.len(),
        wrong.join("\n"),
        CALLERS.join(" | ")
    );
}
