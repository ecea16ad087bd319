//! Issue 3, end to end over real TLS with real client certificates: the two-factor login and
//! its error codes, lockout and per-IP limits, sessions bound to the login certificate, idle and
//! absolute expiry, token rotation, password rules, the pledge, certificate issuance and
//! revocation (CRL, handshakes), proxy mode, a Redis outage, and the bootstrap credentials.
//!
//! Every test runs on both stores: in-process on `RENKEI_TEST_DB=sqlite` runs and Redis on
//! `RENKEI_TEST_DB=postgres` runs, except the few that force Redis and say so.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, SET_COOKIE};
use sea_orm::{ActiveModelTrait as _, EntityTrait as _, IntoActiveModel as _, Set};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use uuid::Uuid;

use entity::kinds::{AccountStatus, Role};
use renkei_tests::fixtures::{identity_from_pkcs12, pem_block};
use renkei_tests::proxy::TcpProxy;
use renkei_tests::{Gql, Person, TestApp, TestClient, TestOptions, spawn_app, spawn_app_with};

const LOGIN: &str = "mutation($t:String!,$l:String!,$p:String!){ login(tenant:$t, loginId:$l, password:$p){ token expiresAt mustChangePassword mustAcceptPledge user { id loginId role } } }";
const ME: &str = "{ me { id loginId mustChangePassword } }";
const TENANT: &str = "{ tenant { slug } }";
const CHANGE_PASSWORD: &str =
    "mutation($c:String!,$n:String!){ changePassword(currentPassword:$c, newPassword:$n) }";
const ISSUE: &str = "mutation($u:ID!,$d:String!,$e:Pkcs12Encoding){ issueCertificate(userId:$u, deviceLabel:$d, encoding:$e){ certificate { id serialNumber fingerprintSha256 deviceLabel status } pkcs12Base64 pkcs12Password } }";
const REVOKE: &str = "mutation($id:ID!,$r:String!){ revokeCertificate(id:$id, reason:$r){ id status revokedAt revocationReason } }";
const UNLOCK: &str = "mutation($id:ID!){ unlockUser(id:$id){ id status } }";
const RESET: &str = "mutation($id:ID!){ resetPassword(id:$id) }";
const USER_STATUS: &str = "query($id:ID!){ user(id:$id){ status } }";
const SESSION_COOKIE: &str = "__Host-renkei_session";

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

async fn attempt(client: &TestClient, tenant: &str, login_id: &str, password: &str) -> Gql {
    client
        .graphql(LOGIN, json!({ "t": tenant, "l": login_id, "p": password }))
        .await
}

/// A login with the person's own login ID and the given password, over `client`.
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

fn first_error(resp: &Gql) -> &Value {
    resp.errors()
        .first()
        .unwrap_or_else(|| panic!("expected an error, got {}", resp.body))
}

/// `extensions.retryAfterSeconds` of the first error, which must be there and positive.
fn retry_after(resp: &Gql) -> u64 {
    let secs = first_error(resp)["extensions"]["retryAfterSeconds"]
        .as_u64()
        .unwrap_or_else(|| panic!("no extensions.retryAfterSeconds in {}", resp.body));
    assert!(
        secs > 0,
        "retryAfterSeconds must be positive: {}",
        resp.body
    );
    secs
}

fn expect_bad_input(resp: &Gql, field: &str) {
    resp.expect_code("BAD_USER_INPUT");
    assert_eq!(
        resp.field(),
        Some(field),
        "extensions.field should name {field}: {}",
        resp.body
    );
}

/// A password every rule accepts (three classes and more, not common, no login ID or name).
fn strong_password() -> String {
    format!("Tq{}-8#Lw", &Uuid::new_v4().simple().to_string()[..10])
}

/// A session of someone past the initial password change and the pledge, for tests about
/// something else. The flags are set in the database rather than through the API (tested on its own
/// below): in a debug build each Argon2id run takes about half a second, and a real change
/// takes three.
async fn working_session(app: &TestApp, person: &Person) -> TestClient {
    mark_password_changed(app, person.id).await;
    mark_pledged(app, person.id).await;
    let client = session(app, person).await;
    let me = client.graphql(ME, json!({})).await;
    assert_eq!(me.ok()["me"]["mustChangePassword"], false, "{}", me.body);
    client
}

async fn mark_pledged(app: &TestApp, id: Uuid) {
    app.edit_user(id, |active| {
        active.pledge_accepted_at = Set(Some(chrono::Utc::now()));
    })
    .await;
}

async fn mark_password_changed(app: &TestApp, id: Uuid) {
    app.edit_user(id, |active| {
        active.must_change_password = Set(false);
    })
    .await;
}

async fn set_user_status(app: &TestApp, id: Uuid, status: AccountStatus) {
    app.edit_user(id, |active| {
        active.status = Set(status);
    })
    .await;
}

async fn set_facility_status(app: &TestApp, id: Uuid, status: AccountStatus) {
    let facility = entity::facility::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut active = facility.into_active_model();
    active.status = Set(status);
    active.update(&app.db).await.unwrap();
}

async fn certificate_status(app: &TestApp, id: Uuid) -> entity::kinds::CertificateStatus {
    entity::certificate::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
        .status
}

/// The DER of every `CERTIFICATE` PEM block in `text`, in order.
fn pem_certificates(text: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line == "-----BEGIN CERTIFICATE-----" {
            current = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            if let Some(b64) = current.take() {
                out.push(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap(),
                );
            }
        } else if let Some(b64) = current.as_mut() {
            b64.push_str(line);
        }
    }
    out
}

/// The first certificate (the leaf) of a PEM identity, as PEM.
fn leaf_pem(identity_pem: &[u8]) -> String {
    let text = std::str::from_utf8(identity_pem).unwrap();
    let der = pem_certificates(text)
        .into_iter()
        .next()
        .expect("the identity holds a certificate");
    pem_block("CERTIFICATE", &der)
}

/// What nginx's `$ssl_client_escaped_cert` does: percent-encode all but unreserved characters.
fn nginx_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            write!(out, "%{b:02X}").unwrap();
        }
    }
    out
}

/// A client sending fixed extra headers (the proxy's), optionally with its own TLS identity.
fn client_with_headers(
    app: &TestApp,
    identity_pem: Option<&[u8]>,
    headers: &[(&str, String)],
) -> TestClient {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&app.server_ca_pem).unwrap())
        .https_only(true)
        .default_headers(map)
        .timeout(Duration::from_secs(30));
    if let Some(pem) = identity_pem {
        builder = builder.identity(reqwest::Identity::from_pem(pem).unwrap());
    }
    TestClient {
        http: builder.build().unwrap(),
        base_url: app.base_url.clone(),
        token: None,
    }
}

/// A client without a TLS certificate that passes `cert_pem` the way nginx does.
fn proxied_client(app: &TestApp, cert_pem: &str, extra: &[(&str, String)]) -> TestClient {
    let mut headers = vec![("x-ssl-client-cert", nginx_escape(cert_pem))];
    headers.extend(extra.iter().cloned());
    client_with_headers(app, None, &headers)
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs a tool (openssl, python3) without a shell; `secret` goes in as the `RENKEI_TEST_PASS`
/// environment variable so it is never on a command line.
async fn run(program: &str, args: &[&str], secret: Option<&str>) -> Run {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    if let Some(secret) = secret {
        cmd.env("RENKEI_TEST_PASS", secret);
    }
    let out = cmd
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program} could not be run: {e}"));
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Opens a PKCS#12 file with `openssl pkcs12 -nodes`; returns its PEM output.
async fn openssl_open_pkcs12(path: &Path, password: &str) -> String {
    let out = run(
        "openssl",
        &[
            "pkcs12",
            "-in",
            path_str(path),
            "-passin",
            "env:RENKEI_TEST_PASS",
            "-nodes",
        ],
        Some(password),
    )
    .await;
    assert!(
        out.ok,
        "openssl pkcs12 could not open {}: {}",
        path.display(),
        out.stderr
    );
    assert!(
        out.stdout.contains("PRIVATE KEY-----"),
        "the bundle holds no private key: {}",
        out.stdout
    );
    out.stdout
}

/// `openssl pkcs12 -info` of a bundle: its MAC and encryption algorithms.
async fn openssl_pkcs12_info(path: &Path, password: &str) -> String {
    let out = run(
        "openssl",
        &[
            "pkcs12",
            "-in",
            path_str(path),
            "-passin",
            "env:RENKEI_TEST_PASS",
            "-info",
            "-nodes",
            "-nokeys",
            "-nocerts",
        ],
        Some(password),
    )
    .await;
    assert!(out.ok, "openssl pkcs12 -info failed: {}", out.stderr);
    format!("{}\n{}", out.stdout, out.stderr)
}

const PY_OPEN_PKCS12: &str = "\
import os, sys
from cryptography.hazmat.primitives.serialization import pkcs12
key, cert, extra = pkcs12.load_key_and_certificates(open(sys.argv[1], 'rb').read(), os.environ['RENKEI_TEST_PASS'].encode())
assert key is not None and cert is not None
print(cert.subject.rfc4514_string())
print(len(extra))
";

/// Every number after `Iteration` in openssl's `-info` output.
fn iterations(info: &str) -> Vec<u64> {
    info.split("Iteration")
        .skip(1)
        .filter_map(|rest| {
            rest.trim_start_matches([' ', ':'])
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .collect()
}

async fn get_bytes(client: &TestClient, path: &str) -> (reqwest::StatusCode, Vec<u8>) {
    let resp = client.get(path).await;
    let status = resp.status();
    (status, resp.bytes().await.unwrap().to_vec())
}

/// The tenant CA certificate (DER) as the public endpoint serves it.
async fn public_ca_der(app: &TestApp, tenant: &str) -> Vec<u8> {
    let (status, body) = get_bytes(&app.client(), &format!("/pki/{tenant}/ca.pem")).await;
    assert_eq!(status, 200);
    let certs = pem_certificates(std::str::from_utf8(&body).unwrap());
    assert_eq!(certs.len(), 1, "ca.pem holds exactly the CA certificate");
    certs.into_iter().next().unwrap()
}

/// POSTs a GraphQL request with raw reqwest (no token), optionally with a cookie header.
async fn post_raw(
    client: &TestClient,
    query: &str,
    variables: Value,
    cookie: Option<&str>,
) -> (Vec<String>, Value) {
    let mut req = client
        .http
        .post(format!("{}/graphql", client.base_url))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(cookie) = cookie {
        req = req.header(reqwest::header::COOKIE, cookie);
    }
    let resp = req.send().await.expect("request sent");
    let set_cookies = resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    (set_cookies, resp.json().await.unwrap())
}

/// The session cookie among `Set-Cookie` headers: its value and its attributes (lower-cased).
fn session_cookie(set_cookies: &[String]) -> (String, Vec<String>) {
    let cookie = set_cookies
        .iter()
        .find(|c| c.starts_with(&format!("{SESSION_COOKIE}=")))
        .unwrap_or_else(|| panic!("no {SESSION_COOKIE} cookie in {set_cookies:?}"));
    let mut parts = cookie.split(';').map(str::trim);
    let value = parts.next().unwrap().split_once('=').unwrap().1.to_string();
    let attrs = parts.map(str::to_ascii_lowercase).collect();
    (value, attrs)
}

/// Asserts the request never got an HTTP answer because the TLS handshake was refused: the
/// error chain carries the server's alert (`needle`), so a timeout or refused port cannot pass.
fn assert_tls_refused(result: Result<reqwest::Response, reqwest::Error>, needle: &str, what: &str) {
    match result {
        Ok(resp) => panic!(
            "{what} completed a handshake and got HTTP {}",
            resp.status()
        ),
        Err(e) => {
            let chain = format!("{e:?}");
            assert!(
                !e.is_timeout() && chain.contains(needle),
                "{what}: expected a TLS refusal ({needle}), got {chain}"
            );
        }
    }
}

fn code_of(body: &Value) -> Option<&str> {
    body["errors"][0]["extensions"]["code"].as_str()
}

// ---------------------------------------------------------------------------------------------
// 1. login codes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn login_needs_a_client_certificate_of_the_same_tenant() {
    let app = spawn_app().await;
    let kita = app.create_tenant("kita").await;
    let minami = app.create_tenant("minami").await;

    // No certificate: refused whatever the password, so the password alone tells nothing.
    for password in [kita.password.as_str(), "Wrong-password-1"] {
        attempt(&app.client(), "kita", "admin", password)
            .await
            .expect_code("CERTIFICATE_REQUIRED");
    }
    // minami's admin certificate (CN=admin too) with kita's admin password, logging in to kita.
    let minami_cert = app.client_for(&minami);
    attempt(&minami_cert, "kita", "admin", &kita.password)
        .await
        .expect_code("CERTIFICATE_REQUIRED");
    // Each certificate does log in to its own tenant.
    let own = attempt_as(&minami_cert, &minami, &minami.password).await;
    assert_eq!(own.ok()["login"]["user"]["loginId"], "admin");
    let own = attempt_as(&app.client_for(&kita), &kita, &kita.password).await;
    assert_eq!(own.ok()["login"]["user"]["id"], kita.id.to_string());
}

#[tokio::test]
async fn unknown_and_other_users_login_ids_get_the_same_answer_and_the_same_work() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let staff = app
        .create_user(&admin, "sato", Role::Staff, Some(facility))
        .await;
    // The admin's certificate names the admin: any other login ID, one nobody has or another
    // real account's with its right password, gets one answer.
    let client = app.client_for(&admin);
    let hasher = &app.state().hasher;
    for i in 0..3 {
        let before = hasher.verifications();
        let unknown = attempt(&client, "kita", &format!("nobody{i}"), &staff.password).await;
        let unknown_work = hasher.verifications() - before;
        let before = hasher.verifications();
        let other = attempt(&client, "kita", "sato", &staff.password).await;
        let other_work = hasher.verifications() - before;

        unknown.expect_code("CERTIFICATE_REQUIRED");
        other.expect_code("CERTIFICATE_REQUIRED");
        // Byte for byte the same response: message, extensions, everything.
        assert_eq!(unknown.body, other.body);
        // Both run one Argon2id verification (a dummy one), so the response time does not tell
        // which IDs exist or which passwords are right. Counted, not timed: timings under load vary.
        assert_eq!((unknown_work, other_work), (1, 1));
    }
    // The wrong password of the certificate's own user is UNAUTHENTICATED after the same work.
    let before = hasher.verifications();
    attempt_as(&client, &admin, "Wrong-password-9")
        .await
        .expect_code("UNAUTHENTICATED");
    assert_eq!(hasher.verifications() - before, 1);
    // The named account was never touched, and the admin's right password still works.
    attempt_as(&app.client_for(&staff), &staff, &staff.password)
        .await
        .ok();
    attempt_as(&client, &admin, &admin.password).await.ok();
}

#[tokio::test]
async fn another_users_certificate_cannot_log_in_even_with_the_right_password() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let staff = app
        .create_user(&admin, "sato", Role::Staff, Some(facility))
        .await;
    // The staff member's certificate with the admin's login ID and password.
    attempt(&app.client_for(&staff), "kita", "admin", &admin.password)
        .await
        .expect_code("CERTIFICATE_REQUIRED");
    // ... and the other way round.
    attempt(&app.client_for(&admin), "kita", "sato", &staff.password)
        .await
        .expect_code("CERTIFICATE_REQUIRED");
    // Each with their own certificate is fine.
    attempt_as(&app.client_for(&staff), &staff, &staff.password)
        .await
        .ok();
}

#[tokio::test]
async fn suspended_account_cannot_log_in_and_its_open_session_ends() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let staff = app
        .create_user(&admin, "sato", Role::Staff, Some(facility))
        .await;
    let open = session(&app, &staff).await;
    open.graphql(ME, json!({})).await.ok();

    set_user_status(&app, staff.id, AccountStatus::Suspended).await;
    attempt_as(&app.client_for(&staff), &staff, &staff.password)
        .await
        .expect_code("ACCOUNT_SUSPENDED");
    open.graphql(ME, json!({}))
        .await
        .expect_code("ACCOUNT_SUSPENDED");
    // The session is gone for good, not merely refused while suspended.
    set_user_status(&app, staff.id, AccountStatus::Active).await;
    open.graphql(ME, json!({}))
        .await
        .expect_code("UNAUTHENTICATED");
    attempt_as(&app.client_for(&staff), &staff, &staff.password)
        .await
        .ok();
}

#[tokio::test]
async fn staff_of_a_suspended_facility_cannot_log_in() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let staff = app
        .create_user(&admin, "sato", Role::Staff, Some(facility))
        .await;
    set_facility_status(&app, facility, AccountStatus::Suspended).await;
    attempt_as(&app.client_for(&staff), &staff, &staff.password)
        .await
        .expect_code("ACCOUNT_SUSPENDED");
    set_facility_status(&app, facility, AccountStatus::Active).await;
    attempt_as(&app.client_for(&staff), &staff, &staff.password)
        .await
        .ok();
}

#[tokio::test]
async fn open_session_of_staff_whose_facility_is_suspended_answers_account_suspended() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let staff = app
        .create_user(&admin, "sato", Role::Staff, Some(facility))
        .await;
    let open = session(&app, &staff).await;
    open.graphql(ME, json!({})).await.ok();
    set_facility_status(&app, facility, AccountStatus::Suspended).await;
    open.graphql(ME, json!({}))
        .await
        .expect_code("ACCOUNT_SUSPENDED");
}

// ---------------------------------------------------------------------------------------------
// 2. lockout
// ---------------------------------------------------------------------------------------------

/// Five wrong passwords; returns the response that reported the lock (the 5th or the 6th).
async fn lock_out(client: &TestClient, person: &Person) -> Gql {
    for i in 1..=4 {
        attempt_as(client, person, &format!("Wrong-password-{i}"))
            .await
            .expect_code("UNAUTHENTICATED");
    }
    let fifth = attempt_as(client, person, "Wrong-password-5").await;
    if fifth.code() == Some("ACCOUNT_LOCKED") {
        return fifth;
    }
    fifth.expect_code("UNAUTHENTICATED");
    let sixth = attempt_as(client, person, "Wrong-password-6").await;
    sixth.expect_code("ACCOUNT_LOCKED");
    sixth
}

#[tokio::test]
async fn five_consecutive_wrong_passwords_lock_the_account_until_an_admin_unlocks_it() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let staff = app
        .create_user(&admin, "sato", Role::Staff, Some(facility))
        .await;
    let admin_client = working_session(&app, &admin).await;
    let client = app.client_for(&staff);

    // Four failures, then a success: the count starts over, so the next four are still plain
    // failures and only the fifth in a row locks.
    for i in 1..=4 {
        attempt_as(&client, &staff, &format!("Wrong-password-{i}"))
            .await
            .expect_code("UNAUTHENTICATED");
    }
    attempt_as(&client, &staff, &staff.password).await.ok();
    let locked = lock_out(&client, &staff).await;
    let secs = retry_after(&locked);
    assert!(
        secs <= 900,
        "default lockout is 15 minutes: {}",
        locked.body
    );

    // Now even the right password is refused, with the time left.
    let right = attempt_as(&client, &staff, &staff.password).await;
    right.expect_code("ACCOUNT_LOCKED");
    assert!(retry_after(&right) <= secs);
    let status = admin_client
        .graphql(USER_STATUS, json!({ "id": staff.id }))
        .await;
    assert_eq!(status.ok()["user"]["status"], "LOCKED");

    let unlocked = admin_client
        .graphql(UNLOCK, json!({ "id": staff.id }))
        .await;
    assert_eq!(unlocked.ok()["unlockUser"]["status"], "ACTIVE");
    attempt_as(&client, &staff, &staff.password).await.ok();
}

#[tokio::test]
async fn a_short_lockout_expires_by_itself() {
    let app = spawn_with_env(&[("RENKEI_LOCKOUT_SECONDS", "1")]).await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let staff = app
        .create_user(&admin, "sato", Role::Staff, Some(facility))
        .await;
    let admin_client = working_session(&app, &admin).await;
    let client = app.client_for(&staff);

    let locked = lock_out(&client, &staff).await;
    assert_eq!(retry_after(&locked), 1, "{}", locked.body);
    attempt_as(&client, &staff, &staff.password)
        .await
        .expect_code("ACCOUNT_LOCKED");

    tokio::time::sleep(Duration::from_millis(1300)).await;
    let status = admin_client
        .graphql(USER_STATUS, json!({ "id": staff.id }))
        .await;
    assert_eq!(status.ok()["user"]["status"], "ACTIVE");
    attempt_as(&client, &staff, &staff.password).await.ok();
}

// ---------------------------------------------------------------------------------------------
// 3. per-IP rate limit
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn failures_from_one_ip_are_rate_limited_even_for_correct_credentials() {
    let app = spawn_with_env(&[
        ("RENKEI_LOGIN_IP_MAX_FAILURES", "3"),
        ("RENKEI_LOGIN_IP_WINDOW_SECONDS", "6"),
        ("RENKEI_LOGIN_MAX_FAILURES", "100"),
    ])
    .await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let staff = app
        .create_user(&admin, "sato", Role::Staff, Some(facility))
        .await;
    let admin_session = session(&app, &admin).await;
    let client = app.client_for(&staff);

    for i in 1..=3 {
        attempt_as(&client, &staff, &format!("Wrong-password-{i}"))
            .await
            .expect_code("UNAUTHENTICATED");
    }
    let limited = attempt_as(&client, &staff, &staff.password).await;
    limited.expect_code("RATE_LIMITED");
    let secs = retry_after(&limited);
    assert!(secs <= 6, "{}", limited.body);
    // Per IP, not per account: another account from the same address waits too.
    attempt_as(&app.client_for(&admin), &admin, &admin.password)
        .await
        .expect_code("RATE_LIMITED");
    // Only logins are limited: an open session carries on.
    admin_session.graphql(ME, json!({})).await.ok();

    tokio::time::sleep(Duration::from_secs(secs) + Duration::from_millis(300)).await;
    attempt_as(&client, &staff, &staff.password).await.ok();
}

// ---------------------------------------------------------------------------------------------
// 4. session binding and the cookie
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn session_token_works_only_with_the_certificate_it_logged_in_with() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let other_tenant = app.create_tenant("minami").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let staff = app
        .create_user(&admin, "sato", Role::Staff, Some(facility))
        .await;
    let owner = session(&app, &staff).await;
    let token = owner.token.clone().unwrap();

    let intruders = [
        ("no certificate", app.client()),
        ("another user's certificate", app.client_for(&admin)),
        (
            "another tenant's certificate",
            app.client_for(&other_tenant),
        ),
    ];
    for (what, intruder) in intruders {
        let me = owner.graphql(ME, json!({})).await;
        assert_eq!(me.ok()["me"]["loginId"], "sato");
        let stolen = intruder
            .with_token(token.clone())
            .graphql(ME, json!({}))
            .await;
        assert_eq!(
            stolen.code(),
            Some("UNAUTHENTICATED"),
            "token with {what}: {}",
            stolen.body
        );
    }
    owner.graphql(ME, json!({})).await.ok();
}

#[tokio::test]
async fn session_cookie_is_secure_and_works_like_the_bearer_token() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let staff = app
        .create_user(&admin, "sato", Role::Staff, Some(facility))
        .await;
    let device = app.client_for(&staff);
    let vars = json!({ "t": "kita", "l": "sato", "p": staff.password });

    let (set_cookies, body) = post_raw(&device, LOGIN, vars.clone(), None).await;
    let token = body["data"]["login"]["token"].as_str().unwrap().to_string();
    let (value, attrs) = session_cookie(&set_cookies);
    assert_eq!(value, token, "the cookie carries the session token");
    for required in ["secure", "httponly", "samesite=strict", "path=/"] {
        assert!(
            attrs.iter().any(|a| a == required),
            "cookie lacks {required}: {set_cookies:?}"
        );
    }
    // The __Host- prefix forbids a Domain attribute (browsers drop such a cookie).
    assert!(
        !attrs.iter().any(|a| a.starts_with("domain=")),
        "{set_cookies:?}"
    );

    let cookie = format!("{SESSION_COOKIE}={value}");
    let (_, me) = post_raw(&device, ME, json!({}), Some(&cookie)).await;
    assert_eq!(me["data"]["me"]["loginId"], "sato", "{me}");
    // Bound to the certificate like the bearer token.
    let (_, bare) = post_raw(&app.client(), ME, json!({}), Some(&cookie)).await;
    assert_eq!(code_of(&bare), Some("UNAUTHENTICATED"), "{bare}");
    let (_, foreign) = post_raw(&app.client_for(&admin), ME, json!({}), Some(&cookie)).await;
    assert_eq!(code_of(&foreign), Some("UNAUTHENTICATED"), "{foreign}");

    // Logging in again with the cookie rotates it: the old cookie's session ends.
    let (set_cookies, body) = post_raw(&device, LOGIN, vars, Some(&cookie)).await;
    assert!(body["errors"].is_null(), "{body}");
    let (new_value, _) = session_cookie(&set_cookies);
    assert_ne!(new_value, value);
    let (_, old) = post_raw(&device, ME, json!({}), Some(&cookie)).await;
    assert_eq!(code_of(&old), Some("UNAUTHENTICATED"), "{old}");
    let new_cookie = format!("{SESSION_COOKIE}={new_value}");
    let (_, me) = post_raw(&device, ME, json!({}), Some(&new_cookie)).await;
    assert_eq!(me["data"]["me"]["loginId"], "sato", "{me}");

    // Logout by cookie ends the session and tells the browser to drop the cookie.
    let (set_cookies, body) =
        post_raw(&device, "mutation { logout }", json!({}), Some(&new_cookie)).await;
    assert_eq!(body["data"]["logout"], true, "{body}");
    let (cleared, attrs) = session_cookie(&set_cookies);
    assert!(
        cleared.is_empty()
            || attrs
                .iter()
                .any(|a| a == "max-age=0" || a.starts_with("expires=thu, 01 jan 1970")),
        "logout should clear the cookie: {set_cookies:?}"
    );
    let (_, after) = post_raw(&device, ME, json!({}), Some(&new_cookie)).await;
    assert_eq!(code_of(&after), Some("UNAUTHENTICATED"), "{after}");
}

// ---------------------------------------------------------------------------------------------
// 5. expiry
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn idle_sessions_expire_and_activity_slides_the_idle_timeout() {
    let app = spawn_with_env(&[("RENKEI_SESSION_IDLE_SECONDS", "1")]).await;
    let admin = app.create_tenant("kita").await;
    let idle = session(&app, &admin).await;
    let busy = session(&app, &admin).await;
    idle.graphql(ME, json!({})).await.ok();
    busy.graphql(ME, json!({})).await.ok();
    let started = Instant::now();
    // `busy` makes a request every 0.5 s for 2.5 s, well past the 1 s idle timeout.
    for step in 1..=5 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let me = busy.graphql(ME, json!({})).await;
        assert!(
            me.errors().is_empty(),
            "an active session died after {:?}: {}",
            started.elapsed(),
            me.body
        );
        if step == 3 {
            // 1.5 s without a request.
            idle.graphql(ME, json!({}))
                .await
                .expect_code("UNAUTHENTICATED");
        }
    }
}

#[tokio::test]
async fn absolute_lifetime_ends_even_an_active_session() {
    let app = spawn_with_env(&[
        ("RENKEI_SESSION_ABSOLUTE_SECONDS", "2"),
        ("RENKEI_SESSION_IDLE_SECONDS", "60"),
    ])
    .await;
    let admin = app.create_tenant("kita").await;
    let client = app.client_for(&admin);
    let before = chrono::Utc::now();
    let login = attempt_as(&client, &admin, &admin.password).await;
    let after = chrono::Utc::now();
    let logged_in = Instant::now();
    let expires_at = login.ok()["login"]["expiresAt"].as_str().unwrap();
    assert!(expires_at.ends_with("+09:00"), "{expires_at}");
    let expires_at = chrono::DateTime::parse_from_rfc3339(expires_at).unwrap();
    // 2 s after the session was created, somewhere during the login request (a second of slack
    // below for a server that renders whole seconds).
    assert!(
        expires_at >= before + chrono::Duration::seconds(1)
            && expires_at <= after + chrono::Duration::milliseconds(2500),
        "expiresAt {expires_at} should be 2 s after the login ({before} .. {after})"
    );
    let client = client.with_token(token_of(&login));
    while logged_in.elapsed() < Duration::from_millis(1500) {
        client.graphql(ME, json!({})).await.ok();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(logged_in.elapsed())).await;
    client
        .graphql(ME, json!({}))
        .await
        .expect_code("UNAUTHENTICATED");
}

// ---------------------------------------------------------------------------------------------
// 6. token rotation, logout
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_login_gets_a_new_token_and_the_token_it_carried_ends() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let device = app.client_for(&admin);
    let first = token_of(&attempt_as(&device, &admin, &admin.password).await);
    let second = token_of(&attempt_as(&device, &admin, &admin.password).await);
    assert_ne!(first, second);
    assert!(
        first.len() >= 43,
        "a 256-bit token needs 43+ characters: {first}"
    );
    for token in [&first, &second] {
        device
            .clone()
            .with_token(token.clone())
            .graphql(ME, json!({}))
            .await
            .ok();
    }

    // A login that presents the second token ends it and starts a third.
    let rotated = attempt_as(
        &device.clone().with_token(second.clone()),
        &admin,
        &admin.password,
    )
    .await;
    let third = token_of(&rotated);
    assert!(third != first && third != second);
    device
        .clone()
        .with_token(second)
        .graphql(ME, json!({}))
        .await
        .expect_code("UNAUTHENTICATED");
    device
        .clone()
        .with_token(third)
        .graphql(ME, json!({}))
        .await
        .ok();
    // A session that was not presented is untouched.
    device
        .clone()
        .with_token(first)
        .graphql(ME, json!({}))
        .await
        .ok();
}

#[tokio::test]
async fn logout_ends_only_this_session() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let this = session(&app, &admin).await;
    let other = session(&app, &admin).await;

    let out = this.graphql("mutation { logout }", json!({})).await;
    assert_eq!(out.ok()["logout"], true);
    this.graphql(ME, json!({}))
        .await
        .expect_code("UNAUTHENTICATED");
    other.graphql(ME, json!({})).await.ok();
    this.graphql("mutation { logout }", json!({}))
        .await
        .expect_code("UNAUTHENTICATED");
    app.client_for(&admin)
        .graphql("mutation { logout }", json!({}))
        .await
        .expect_code("UNAUTHENTICATED");
}

#[tokio::test]
async fn logout_everywhere_ends_every_session_of_the_caller_on_every_device() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let staff = app
        .create_user(&admin, "sato", Role::Staff, Some(facility))
        .await;
    let admin_client = working_session(&app, &admin).await;
    // A second device of the same person.
    let issued = admin_client
        .graphql(
            ISSUE,
            json!({ "u": staff.id, "d": "tablet", "e": "MODERN" }),
        )
        .await;
    let issued = &issued.ok()["issueCertificate"];
    let tablet_identity = identity_from_pkcs12(
        &base64::engine::general_purpose::STANDARD
            .decode(issued["pkcs12Base64"].as_str().unwrap())
            .unwrap(),
        issued["pkcs12Password"].as_str().unwrap(),
    );

    let phone_a = working_session(&app, &staff).await;
    let phone_b = session(&app, &staff).await;
    let tablet = app.client_with_identity(&tablet_identity);
    let tablet = tablet.clone().with_token(token_of(
        &attempt_as(&tablet, &staff, &staff.password).await,
    ));
    for client in [&phone_a, &phone_b, &tablet] {
        client.graphql(ME, json!({})).await.ok();
    }

    let ended = phone_b
        .graphql("mutation { logoutEverywhere }", json!({}))
        .await;
    assert_eq!(ended.ok()["logoutEverywhere"], 3);
    for client in [&phone_a, &phone_b, &tablet] {
        client
            .graphql(ME, json!({}))
            .await
            .expect_code("UNAUTHENTICATED");
    }
    // Someone else's session is not the caller's to end.
    admin_client.graphql(ME, json!({})).await.ok();
}

// ---------------------------------------------------------------------------------------------
// 7. passwords
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn initial_password_gates_everything_but_me_change_password_and_logout() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let staff = app
        .create_user(&admin, "sato", Role::Staff, Some(facility))
        .await;
    // The initial password is random, 16 characters, and must be changed.
    assert_eq!(admin.password.chars().count(), 16, "{}", admin.password);
    let device = app.client_for(&admin);
    let login = attempt_as(&device, &admin, &admin.password).await;
    assert_eq!(login.ok()["login"]["mustChangePassword"], true);
    let client = device.clone().with_token(token_of(&login));

    let me = client.graphql(ME, json!({})).await;
    assert_eq!(me.ok()["me"]["mustChangePassword"], true);
    let gated: [(&str, Value); 6] = [
        (TENANT, json!({})),
        (
            "query($id:ID!){ user(id:$id){ id } }",
            json!({ "id": staff.id }),
        ),
        ("mutation { acceptPledge { id } }", json!({})),
        (ISSUE, json!({ "u": staff.id, "d": "phone", "e": "MODERN" })),
        (UNLOCK, json!({ "id": staff.id })),
        (RESET, json!({ "id": staff.id })),
    ];
    for (query, vars) in gated {
        let resp = client.graphql(query, vars).await;
        assert_eq!(
            resp.code(),
            Some("PASSWORD_CHANGE_REQUIRED"),
            "{query}: {}",
            resp.body
        );
    }
    // logout is allowed (shown on a second session, which it ends).
    let second = session(&app, &admin).await;
    let out = second.graphql("mutation { logout }", json!({})).await;
    assert_eq!(out.ok()["logout"], true);

    let new_password = strong_password();
    let changed = client
        .graphql(
            CHANGE_PASSWORD,
            json!({ "c": admin.password, "n": new_password }),
        )
        .await;
    assert_eq!(changed.ok()["changePassword"], true);
    let me = client.graphql(ME, json!({})).await;
    assert_eq!(me.ok()["me"]["mustChangePassword"], false);
    let tenant = client.graphql(TENANT, json!({})).await;
    assert_eq!(tenant.ok()["tenant"]["slug"], "kita");
    // The old password is gone, the new one logs in without the flag.
    attempt_as(&device, &admin, &admin.password)
        .await
        .expect_code("UNAUTHENTICATED");
    let again = attempt_as(&device, &admin, &new_password).await;
    assert_eq!(again.ok()["login"]["mustChangePassword"], false);
}

#[tokio::test]
async fn change_password_refuses_weak_and_guessable_passwords() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    // Display name "tanaka Person" (fixture): login ID "tanaka", name parts "tanaka", "Person".
    let staff = app
        .create_user(&admin, "tanaka", Role::Staff, Some(facility))
        .await;
    let client = session(&app, &staff).await;

    let refused = [
        ("too short", "Ab1!xyz"),
        ("two classes only", "zqxjvkwpmnbt4829"),
        ("contains the login ID", "Zx8!TANAKA#Lw"),
        ("contains the name", "Zx8!person#Lw"),
        ("common", "Password123!"),
        ("the current one", staff.password.as_str()),
    ];
    let mut messages = BTreeSet::new();
    for (why, candidate) in refused {
        let resp = client
            .graphql(
                CHANGE_PASSWORD,
                json!({ "c": staff.password, "n": candidate }),
            )
            .await;
        assert_eq!(resp.code(), Some("BAD_USER_INPUT"), "{why}: {}", resp.body);
        assert_eq!(resp.field(), Some("newPassword"), "{why}: {}", resp.body);
        let message = first_error(&resp)["message"].as_str().unwrap().to_string();
        assert!(
            !message.contains(candidate),
            "{why}: the message repeats the password"
        );
        messages.insert(message);
    }
    assert_eq!(
        messages.len(),
        6,
        "each rule should explain itself: {messages:?}"
    );

    let wrong_current = client
        .graphql(
            CHANGE_PASSWORD,
            json!({ "c": "Not-the-current-1", "n": strong_password() }),
        )
        .await;
    expect_bad_input(&wrong_current, "currentPassword");

    // Nothing changed: still the initial password, still to be changed.
    let me = client.graphql(ME, json!({})).await;
    assert_eq!(me.ok()["me"]["mustChangePassword"], true);
    let good = strong_password();
    let changed = client
        .graphql(CHANGE_PASSWORD, json!({ "c": staff.password, "n": good }))
        .await;
    assert_eq!(changed.ok()["changePassword"], true);
    assert_eq!(
        client.graphql(ME, json!({})).await.ok()["me"]["mustChangePassword"],
        false
    );
    assert_eq!(
        client.graphql(TENANT, json!({})).await.ok()["tenant"]["slug"],
        "kita"
    );
}

#[tokio::test]
async fn recent_passwords_cannot_be_reused() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let client = session(&app, &admin).await;
    // The initial password p0, then four changes: the last five are p4 (current) .. p0.
    let mut history = vec![admin.password.clone()];
    for _ in 0..4 {
        let next = strong_password();
        let changed = client
            .graphql(
                CHANGE_PASSWORD,
                json!({ "c": history.last().unwrap(), "n": next }),
            )
            .await;
        assert_eq!(changed.ok()["changePassword"], true, "{}", changed.body);
        history.push(next);
    }
    let current = &history[4];
    // The current one, and the oldest of the last five (the initial one, four changes ago).
    for (why, old) in [("current", &history[4]), ("fifth most recent", &history[0])] {
        let resp = client
            .graphql(CHANGE_PASSWORD, json!({ "c": current, "n": old }))
            .await;
        assert_eq!(resp.code(), Some("BAD_USER_INPUT"), "{why}: {}", resp.body);
        assert_eq!(resp.field(), Some("newPassword"), "{why}: {}", resp.body);
    }
}

#[tokio::test]
async fn reset_password_gives_a_one_time_password_and_ends_the_users_sessions() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let staff = app
        .create_user(&admin, "sato", Role::Staff, Some(facility))
        .await;
    let admin_client = working_session(&app, &admin).await;
    let staff_client = working_session(&app, &staff).await;

    let reset = admin_client.graphql(RESET, json!({ "id": staff.id })).await;
    let one_time = reset.ok()["resetPassword"].as_str().unwrap().to_string();
    assert_eq!(one_time.chars().count(), 16, "{one_time}");
    assert_ne!(one_time, staff.password);

    staff_client
        .graphql(ME, json!({}))
        .await
        .expect_code("UNAUTHENTICATED");
    let device = app.client_for(&staff);
    attempt_as(&device, &staff, &staff.password)
        .await
        .expect_code("UNAUTHENTICATED");
    let login = attempt_as(&device, &staff, &one_time).await;
    assert_eq!(login.ok()["login"]["mustChangePassword"], true);
    let client = device.with_token(token_of(&login));
    client
        .graphql(TENANT, json!({}))
        .await
        .expect_code("PASSWORD_CHANGE_REQUIRED");
    let changed = client
        .graphql(
            CHANGE_PASSWORD,
            json!({ "c": one_time, "n": strong_password() }),
        )
        .await;
    assert_eq!(changed.ok()["changePassword"], true);
    client.graphql(TENANT, json!({})).await.ok();
}

// ---------------------------------------------------------------------------------------------
// 8. pledge
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn accept_pledge_records_when_in_the_tenants_time_zone() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    mark_password_changed(&app, admin.id).await;
    let login = attempt_as(&app.client_for(&admin), &admin, &admin.password).await;
    assert_eq!(login.ok()["login"]["mustAcceptPledge"], true);
    let client = app.client_for(&admin).with_token(token_of(&login));
    let me = client
        .graphql("{ me { pledgeAcceptedAt } }", json!({}))
        .await;
    assert!(me.ok()["me"]["pledgeAcceptedAt"].is_null());

    let accepted = client
        .graphql(
            "mutation { acceptPledge { id pledgeAcceptedAt } }",
            json!({}),
        )
        .await;
    let at = accepted.ok()["acceptPledge"]["pledgeAcceptedAt"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(at.ends_with("+09:00"), "{at}");
    let parsed = chrono::DateTime::parse_from_rfc3339(&at).unwrap();
    let skew = chrono::Utc::now()
        .signed_duration_since(parsed)
        .num_seconds()
        .abs();
    assert!(skew < 60, "pledgeAcceptedAt {at} is not now");
    let me = client
        .graphql("{ me { pledgeAcceptedAt } }", json!({}))
        .await;
    assert_eq!(me.ok()["me"]["pledgeAcceptedAt"], at.as_str());
    let stored = entity::user::Entity::find_by_id(admin.id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored.pledge_version.is_some(),
        "the pledge version is recorded"
    );
    let login = attempt_as(&app.client_for(&admin), &admin, &admin.password).await;
    assert_eq!(login.ok()["login"]["mustAcceptPledge"], false);
}

// ---------------------------------------------------------------------------------------------
// 9. certificates
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn issued_pkcs12_bundles_open_with_openssl_and_python_carry_the_ca_and_log_in() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let staff = app
        .create_user(&admin, "sato", Role::Staff, Some(facility))
        .await;
    let admin_client = working_session(&app, &admin).await;
    let ca_der = public_ca_der(&app, "kita").await;
    let dir = tempfile::tempdir().unwrap();
    let mut issued_ids = Vec::new();

    for encoding in ["MODERN", "LEGACY"] {
        let label = format!("{} phone", encoding.to_lowercase());
        let resp = admin_client
            .graphql(ISSUE, json!({ "u": staff.id, "d": label, "e": encoding }))
            .await;
        let issued = &resp.ok()["issueCertificate"];
        let certificate = &issued["certificate"];
        assert_eq!(certificate["status"], "ACTIVE");
        assert_eq!(certificate["deviceLabel"], label.as_str());
        let password = issued["pkcs12Password"].as_str().unwrap();
        assert!(password.chars().count() >= 16, "{encoding}: {password}");
        let der = base64::engine::general_purpose::STANDARD
            .decode(issued["pkcs12Base64"].as_str().unwrap())
            .unwrap();
        let path = dir.path().join(format!("{encoding}.p12"));
        std::fs::write(&path, &der).unwrap();

        // openssl opens it and finds key, client certificate and the tenant CA.
        let pem = openssl_open_pkcs12(&path, password).await;
        let certs = pem_certificates(&pem);
        assert!(
            certs.contains(&ca_der),
            "{encoding}: the CA is not in the bundle"
        );
        let leaf = certs
            .iter()
            .find(|c| **c != ca_der)
            .unwrap_or_else(|| panic!("{encoding}: no client certificate in the bundle"));
        let leaf_path = dir.path().join(format!("{encoding}.crt"));
        std::fs::write(&leaf_path, pem_block("CERTIFICATE", leaf)).unwrap();
        let x509 = run(
            "openssl",
            &[
                "x509",
                "-in",
                path_str(&leaf_path),
                "-noout",
                "-serial",
                "-fingerprint",
                "-sha256",
                "-subject",
                "-ext",
                "extendedKeyUsage",
            ],
            None,
        )
        .await;
        assert!(x509.ok, "{}", x509.stderr);
        let serial = certificate["serialNumber"].as_str().unwrap();
        assert_eq!(
            serial,
            serial.to_lowercase(),
            "serialNumber is lowercase hex"
        );
        assert!(
            x509.stdout
                .contains(&format!("serial={}", serial.to_uppercase())),
            "{encoding}: serialNumber {serial} is not the certificate's: {}",
            x509.stdout
        );
        let fingerprint = certificate["fingerprintSha256"].as_str().unwrap();
        let colon_hex: String = x509
            .stdout
            .lines()
            .find_map(|l| {
                l.split_once("Fingerprint=")
                    .map(|(_, f)| f.replace(':', ""))
            })
            .unwrap();
        assert_eq!(fingerprint, colon_hex.to_lowercase(), "{encoding}");
        assert!(
            x509.stdout.contains("CN = sato") && x509.stdout.contains("O = kita"),
            "{encoding}: subject should be CN=login ID, O=tenant: {}",
            x509.stdout
        );
        assert!(
            x509.stdout.contains("TLS Web Client Authentication"),
            "{encoding}: EKU clientAuth missing: {}",
            x509.stdout
        );

        // The encryption profile is the one asked for.
        let info = openssl_pkcs12_info(&path, password).await;
        if encoding == "MODERN" {
            assert!(info.contains("AES-256-CBC"), "{info}");
            assert!(info.contains("MAC: sha256"), "{info}");
        } else {
            assert!(info.contains("pbeWithSHA1And3-KeyTripleDES-CBC"), "{info}");
            assert!(info.contains("MAC: sha1"), "{info}");
            let iterations = iterations(&info);
            assert!(
                !iterations.is_empty() && iterations.iter().all(|n| *n >= 2048),
                "legacy needs >= 2048 iterations: {info}"
            );
        }

        // Python's cryptography reads it too (what the product's own tooling is checked with).
        let py = run(
            "python3",
            &["-c", PY_OPEN_PKCS12, path_str(&path)],
            Some(password),
        )
        .await;
        assert!(py.ok, "{encoding}: python cryptography: {}", py.stderr);
        let mut lines = py.stdout.lines();
        let subject = lines.next().unwrap_or_default();
        assert!(subject.contains("CN=sato"), "{encoding}: {subject}");
        assert_eq!(lines.next(), Some("1"), "{encoding}: the CA chain");

        // And the bundle is a working device certificate.
        let identity = identity_from_pkcs12(&der, password);
        let device = app.client_with_identity(&identity);
        let login = attempt_as(&device, &staff, &staff.password).await;
        assert_eq!(login.ok()["login"]["user"]["loginId"], "sato");
        issued_ids.push(certificate["id"].as_str().unwrap().to_string());
    }

    // The owner sees both next to the fixture's original certificate.
    let owner = session(&app, &staff).await;
    let me = owner
        .graphql(
            "{ me { certificates { id deviceLabel status serialNumber } } }",
            json!({}),
        )
        .await;
    let listed: Vec<&str> = me.ok()["me"]["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 3, "{}", me.body);
    for id in &issued_ids {
        assert!(listed.contains(&id.as_str()), "{id} missing: {}", me.body);
    }
    assert!(listed.contains(&staff.certificate_id.to_string().as_str()));

    // The CA key is sealed at rest, never stored as plain PEM.
    let ca = entity::tenant_ca::Entity::find_by_id(admin.tenant_id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(!ca.key_sealed.0.contains("PRIVATE KEY"));
}

#[tokio::test]
async fn only_city_admins_and_the_users_own_facility_admin_manage_its_certificates() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let other_admin = app.create_tenant("minami").await;
    let clinic = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let station = app.create_facility(admin.tenant_id, "Kita Station").await;
    let head = app
        .create_user(&admin, "yamada", Role::FacilityAdmin, Some(clinic))
        .await;
    let colleague = app
        .create_user(&admin, "kimura", Role::Staff, Some(clinic))
        .await;
    let clinic_staff = app
        .create_user(&admin, "sato", Role::Staff, Some(clinic))
        .await;
    let station_staff = app
        .create_user(&admin, "ito", Role::Staff, Some(station))
        .await;
    let head_client = working_session(&app, &head).await;
    let colleague_client = working_session(&app, &colleague).await;
    let other_client = working_session(&app, &other_admin).await;
    let issue = |user: &Person| json!({ "u": user.id, "d": "phone", "e": "MODERN" });
    let revoke = |user: &Person| json!({ "id": user.certificate_id, "r": "lost" });

    // STAFF: neither issue nor revoke, nor unlock or reset, even in its own facility.
    for (query, vars) in [
        (ISSUE, issue(&clinic_staff)),
        (REVOKE, revoke(&clinic_staff)),
        (UNLOCK, json!({ "id": clinic_staff.id })),
        (RESET, json!({ "id": clinic_staff.id })),
    ] {
        let resp = colleague_client.graphql(query, vars).await;
        assert_eq!(
            resp.code(),
            Some("FORBIDDEN"),
            "STAFF {query}: {}",
            resp.body
        );
    }
    // ... nor see a colleague's certificates.
    colleague_client
        .graphql(
            "query($id:ID!){ user(id:$id){ certificates { id } } }",
            json!({ "id": clinic_staff.id }),
        )
        .await
        .expect_code("FORBIDDEN");

    // FACILITY_ADMIN: its own facility's staff, yes.
    let issued = head_client.graphql(ISSUE, issue(&clinic_staff)).await;
    let new_id = issued.ok()["issueCertificate"]["certificate"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = head_client
        .graphql(
            "query($id:ID!){ user(id:$id){ certificates { id } } }",
            json!({ "id": clinic_staff.id }),
        )
        .await;
    assert_eq!(
        listed.ok()["user"]["certificates"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let revoked = head_client
        .graphql(REVOKE, json!({ "id": new_id, "r": "replaced" }))
        .await;
    assert_eq!(revoked.ok()["revokeCertificate"]["status"], "REVOKED");
    // ... another facility's, or the city admin's, no.
    for (what, query, vars) in [
        ("issue for another facility", ISSUE, issue(&station_staff)),
        (
            "revoke for another facility",
            REVOKE,
            revoke(&station_staff),
        ),
        ("issue for the city admin", ISSUE, issue(&admin)),
    ] {
        let resp = head_client.graphql(query, vars).await;
        assert_eq!(resp.code(), Some("FORBIDDEN"), "{what}: {}", resp.body);
    }

    // Another tenant's admin: kita's ids do not exist for it.
    for (query, vars) in [
        (ISSUE, issue(&clinic_staff)),
        (REVOKE, revoke(&clinic_staff)),
        (UNLOCK, json!({ "id": clinic_staff.id })),
        (RESET, json!({ "id": clinic_staff.id })),
    ] {
        let resp = other_client.graphql(query, vars).await;
        assert_eq!(
            resp.code(),
            Some("NOT_FOUND"),
            "other tenant {query}: {}",
            resp.body
        );
    }

    // None of the refused attempts touched anything.
    for person in [&clinic_staff, &station_staff, &admin] {
        assert_eq!(
            certificate_status(&app, person.certificate_id).await,
            entity::kinds::CertificateStatus::Active
        );
    }
    attempt_as(
        &app.client_for(&clinic_staff),
        &clinic_staff,
        &clinic_staff.password,
    )
    .await
    .ok();
}

// ---------------------------------------------------------------------------------------------
// 10. revocation
// ---------------------------------------------------------------------------------------------

async fn openssl_crl_text(app: &TestApp, tenant: &str, dir: &Path) -> String {
    let (status, der) = get_bytes(&app.client(), &format!("/pki/{tenant}/crl")).await;
    assert_eq!(status, 200);
    let crl_path = dir.join(format!("{tenant}-{}.crl", Uuid::new_v4().simple()));
    std::fs::write(&crl_path, der).unwrap();
    let ca_path = dir.join(format!("{tenant}-ca.pem"));
    std::fs::write(
        &ca_path,
        pem_block("CERTIFICATE", &public_ca_der(app, tenant).await),
    )
    .unwrap();
    let text = run(
        "openssl",
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            path_str(&crl_path),
            "-noout",
            "-text",
        ],
        None,
    )
    .await;
    assert!(text.ok, "openssl crl: {}", text.stderr);
    // Signed by the tenant CA.
    let verify = run(
        "openssl",
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            path_str(&crl_path),
            "-CAfile",
            path_str(&ca_path),
            "-noout",
        ],
        None,
    )
    .await;
    assert!(
        verify.ok && format!("{}{}", verify.stdout, verify.stderr).contains("verify OK"),
        "the CRL does not verify against the tenant CA: {} {}",
        verify.stdout,
        verify.stderr
    );
    text.stdout
}

#[tokio::test]
async fn revoking_a_certificate_ends_its_sessions_refuses_new_handshakes_and_lists_it_in_the_crl() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let staff = app
        .create_user(&admin, "sato", Role::Staff, Some(facility))
        .await;
    let admin_client = working_session(&app, &admin).await;
    let dir = tempfile::tempdir().unwrap();

    let before = openssl_crl_text(&app, "kita", dir.path()).await;
    assert!(before.contains("No Revoked Certificates"), "{before}");

    // The staff member has a phone (fixture certificate) and a tablet, each with a session.
    let issued = admin_client
        .graphql(
            ISSUE,
            json!({ "u": staff.id, "d": "tablet", "e": "MODERN" }),
        )
        .await;
    let issued = &issued.ok()["issueCertificate"];
    let tablet_identity = identity_from_pkcs12(
        &base64::engine::general_purpose::STANDARD
            .decode(issued["pkcs12Base64"].as_str().unwrap())
            .unwrap(),
        issued["pkcs12Password"].as_str().unwrap(),
    );
    let phone = session(&app, &staff).await;
    let tablet_device = app.client_with_identity(&tablet_identity);
    let tablet = tablet_device.clone().with_token(token_of(
        &attempt_as(&tablet_device, &staff, &staff.password).await,
    ));
    phone.graphql(ME, json!({})).await.ok();
    tablet.graphql(ME, json!({})).await.ok();

    let serial = {
        let me = phone
            .graphql("{ me { certificates { id serialNumber } } }", json!({}))
            .await;
        me.ok()["me"]["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == staff.certificate_id.to_string())
            .unwrap()["serialNumber"]
            .as_str()
            .unwrap()
            .to_string()
    };

    let revoked = admin_client
        .graphql(
            REVOKE,
            json!({ "id": staff.certificate_id, "r": "phone lost" }),
        )
        .await;
    let revoked = &revoked.ok()["revokeCertificate"];
    assert_eq!(revoked["status"], "REVOKED");
    assert_eq!(revoked["revocationReason"], "phone lost");
    assert!(revoked["revokedAt"].as_str().unwrap().ends_with("+09:00"));

    // (a) The phone's session ends at once, even over its still-open connection.
    phone
        .graphql(ME, json!({}))
        .await
        .expect_code("UNAUTHENTICATED");
    // Only sessions bound to that certificate: the tablet carries on and sees the revocation.
    let me = tablet
        .graphql("{ me { certificates { id status } } }", json!({}))
        .await;
    let phone_cert = me.ok()["me"]["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == staff.certificate_id.to_string())
        .cloned()
        .unwrap();
    assert_eq!(phone_cert["status"], "REVOKED");

    // (b) A new TLS handshake with the revoked certificate fails; without one, the server answers.
    let fresh = app.client_for(&staff);
    let refused = fresh
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "query": LOGIN, "variables": { "t": "kita", "l": "sato", "p": staff.password } }))
        .send()
        .await;
    assert_tls_refused(refused, "CertificateRevoked", "a revoked certificate");
    let health = app.client().get("/healthz").await;
    assert_eq!(health.status(), 200);
    // A fresh connection with the tablet's certificate is fine.
    let fresh_tablet = app
        .client_with_identity(&tablet_identity)
        .with_token(tablet.token.clone().unwrap());
    fresh_tablet.graphql(ME, json!({})).await.ok();

    // (c) The CRL lists the serial (openssl prints it upper-case).
    let after = openssl_crl_text(&app, "kita", dir.path()).await;
    assert!(
        after.contains(&format!("Serial Number: {}", serial.to_uppercase())),
        "serial {serial} not in the CRL: {after}"
    );

    // Twice is a conflict; an unknown id is not found.
    admin_client
        .graphql(REVOKE, json!({ "id": staff.certificate_id, "r": "again" }))
        .await
        .expect_code("CONFLICT");
    admin_client
        .graphql(REVOKE, json!({ "id": Uuid::new_v4(), "r": "nothing" }))
        .await
        .expect_code("NOT_FOUND");
}

#[tokio::test]
async fn a_self_made_certificate_with_a_tenant_cas_names_fails_the_handshake() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    // Same CA name (CN "Renkei kita CA", O "kita city") and same subject, different key.
    let forged_ca = renkei::auth::pki::generate_tenant_ca("kita", "kita city").unwrap();
    let forged =
        renkei::auth::pki::issue_client_certificate(&forged_ca, "kita", "admin", 30).unwrap();
    let identity = format!(
        "{}{}",
        forged.cert_pem,
        pem_block("PRIVATE KEY", forged.key_der().expose_secret())
    );
    let forger = app.client_with_identity(identity.as_bytes());
    let result = forger
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "query": LOGIN, "variables": { "t": "kita", "l": "admin", "p": admin.password } }))
        .send()
        .await;
    // rustls on the server rejects the signature and says so with a fatal alert.
    assert_tls_refused(
        result,
        "received fatal alert",
        "a look-alike CA's certificate",
    );
}

// ---------------------------------------------------------------------------------------------
// 11. proxy mode
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_trusted_proxys_certificate_header_logs_in_and_binds_the_session() {
    let app = spawn_with_env(&[("RENKEI_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let staff = app
        .create_user(&admin, "sato", Role::Staff, Some(facility))
        .await;
    let staff_pem = leaf_pem(&staff.identity_pem);
    let admin_pem = leaf_pem(&admin.identity_pem);

    let via_proxy = proxied_client(&app, &staff_pem, &[]);
    let login = attempt_as(&via_proxy, &staff, &staff.password).await;
    assert_eq!(login.ok()["login"]["user"]["loginId"], "sato");
    let token = token_of(&login);
    let me = via_proxy
        .clone()
        .with_token(token.clone())
        .graphql(ME, json!({}))
        .await;
    assert_eq!(me.ok()["me"]["loginId"], "sato");
    // The session is bound to the certificate the proxy reported.
    app.client()
        .with_token(token.clone())
        .graphql(ME, json!({}))
        .await
        .expect_code("UNAUTHENTICATED");
    proxied_client(&app, &admin_pem, &[])
        .with_token(token.clone())
        .graphql(ME, json!({}))
        .await
        .expect_code("UNAUTHENTICATED");

    // A look-alike certificate (same CA names, other key) in the header is refused.
    let forged_ca = renkei::auth::pki::generate_tenant_ca("kita", "kita city").unwrap();
    let forged =
        renkei::auth::pki::issue_client_certificate(&forged_ca, "kita", "sato", 30).unwrap();
    attempt_as(
        &proxied_client(&app, &forged.cert_pem, &[]),
        &staff,
        &staff.password,
    )
    .await
    .expect_code("CERTIFICATE_REQUIRED");
    // So is garbage.
    let garbage = client_with_headers(
        &app,
        None,
        &[("x-ssl-client-cert", "not%20a%20certificate".into())],
    );
    attempt_as(&garbage, &staff, &staff.password)
        .await
        .expect_code("CERTIFICATE_REQUIRED");

    // A revoked certificate in the header is refused too (the CRL applies to headers).
    mark_password_changed(&app, admin.id).await;
    mark_pledged(&app, admin.id).await;
    let admin_client = proxied_client(&app, &admin_pem, &[]);
    let first = attempt_as(&admin_client, &admin, &admin.password).await;
    let admin_client = admin_client.with_token(token_of(&first));
    let revoked = admin_client
        .graphql(REVOKE, json!({ "id": staff.certificate_id, "r": "lost" }))
        .await;
    assert_eq!(revoked.ok()["revokeCertificate"]["status"], "REVOKED");
    via_proxy
        .clone()
        .with_token(token)
        .graphql(ME, json!({}))
        .await
        .expect_code("UNAUTHENTICATED");
    attempt_as(&via_proxy, &staff, &staff.password)
        .await
        .expect_code("CERTIFICATE_REQUIRED");
}

#[tokio::test]
async fn a_trusted_proxys_forwarded_address_keys_the_login_rate_limit() {
    let app = spawn_with_env(&[
        ("RENKEI_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("RENKEI_LOGIN_IP_MAX_FAILURES", "2"),
        ("RENKEI_LOGIN_MAX_FAILURES", "100"),
    ])
    .await;
    let admin = app.create_tenant("kita").await;
    let pem = leaf_pem(&admin.identity_pem);
    // Failures reported via X-Forwarded-For: the last hop (the proxy's) counts, not what the
    // client put in front of it.
    for i in 1..=2 {
        let client = proxied_client(
            &app,
            &pem,
            &[("x-forwarded-for", format!("198.51.100.{i}, 203.0.113.7"))],
        );
        attempt_as(&client, &admin, "Wrong-password-1")
            .await
            .expect_code("UNAUTHENTICATED");
    }
    let same = proxied_client(&app, &pem, &[("x-real-ip", "203.0.113.7".into())]);
    attempt_as(&same, &admin, &admin.password)
        .await
        .expect_code("RATE_LIMITED");
    // Another client behind the same proxy is not punished for it.
    let other = proxied_client(&app, &pem, &[("x-real-ip", "203.0.113.8".into())]);
    attempt_as(&other, &admin, &admin.password).await.ok();
}

#[tokio::test]
async fn proxy_headers_from_an_untrusted_address_are_ignored() {
    let app = spawn_with_env(&[
        ("RENKEI_TRUSTED_PROXIES", "10.9.9.9/32"),
        ("RENKEI_LOGIN_IP_MAX_FAILURES", "2"),
    ])
    .await;
    let admin = app.create_tenant("kita").await;
    let facility = app.create_facility(admin.tenant_id, "Kita Clinic").await;
    let staff = app
        .create_user(&admin, "sato", Role::Staff, Some(facility))
        .await;
    let staff_header = nginx_escape(&leaf_pem(&staff.identity_pem));

    // The TLS certificate decides, whatever the header says.
    let admin_with_header = client_with_headers(
        &app,
        Some(&admin.identity_pem),
        &[("x-ssl-client-cert", staff_header)],
    );
    let login = attempt_as(&admin_with_header, &admin, &admin.password).await;
    assert_eq!(login.ok()["login"]["user"]["loginId"], "admin");
    // A token with only the header (no TLS certificate) is worthless.
    let staff_login = attempt_as(&app.client_for(&staff), &staff, &staff.password).await;
    proxied_client(&app, &leaf_pem(&staff.identity_pem), &[])
        .with_token(token_of(&staff_login))
        .graphql(ME, json!({}))
        .await
        .expect_code("UNAUTHENTICATED");

    // Header only: no certificate at all.
    attempt_as(
        &proxied_client(&app, &leaf_pem(&staff.identity_pem), &[]),
        &staff,
        &staff.password,
    )
    .await
    .expect_code("CERTIFICATE_REQUIRED");
    // The admin's own certificate and the staff member's header and password: not the staff member.
    attempt_as(&admin_with_header, &staff, &staff.password)
        .await
        .expect_code("CERTIFICATE_REQUIRED");
    // Those were two failures from 127.0.0.1; claiming other addresses does not escape the limit.
    let spoofing = client_with_headers(
        &app,
        Some(&admin.identity_pem),
        &[
            ("x-forwarded-for", "203.0.113.99".into()),
            ("x-real-ip", "203.0.113.99".into()),
        ],
    );
    let limited = attempt_as(&spoofing, &admin, &admin.password).await;
    limited.expect_code("RATE_LIMITED");
    retry_after(&limited);
}

// ---------------------------------------------------------------------------------------------
// 12. Redis: outage and what it stores
// ---------------------------------------------------------------------------------------------

/// `redis://[userinfo@]host[:port][/db]` → (userinfo, host:port, db path).
fn split_redis_url(url: &str) -> (String, String, String) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    let (userinfo, host) = authority
        .rsplit_once('@')
        .map_or(("", authority), |(u, h)| (u, h));
    let host = if host.ends_with(']') || !host.contains(':') {
        format!("{host}:6379")
    } else {
        host.to_string()
    };
    (userinfo.to_string(), host, path.to_string())
}

async fn redis_socket_addr() -> std::net::SocketAddr {
    let (_, host, _) = split_redis_url(&renkei_tests::redis_url());
    tokio::net::lookup_host(host.as_str())
        .await
        .unwrap()
        .next()
        .unwrap()
}

#[tokio::test]
async fn redis_outage_fails_closed_and_sessions_resume_when_it_returns() {
    let mut proxy = TcpProxy::start(redis_socket_addr().await).await;
    let (userinfo, _, path) = split_redis_url(&renkei_tests::redis_url());
    let at = if userinfo.is_empty() { "" } else { "@" };
    let app = spawn_app_with(TestOptions {
        redis_url: Some(format!("redis://{userinfo}{at}{}{path}", proxy.addr)),
        env: env(&[("RENKEI_REDIS_TIMEOUT_SECONDS", "1")]),
        ..Default::default()
    })
    .await;
    assert!(app.uses_redis);
    let admin = app.create_tenant("kita").await;
    let client = session(&app, &admin).await;
    client.graphql(ME, json!({})).await.ok();

    proxy.cut().await;
    let cut_at = Instant::now();
    client
        .graphql(ME, json!({}))
        .await
        .expect_code("UNAVAILABLE");
    // No login either: a session that cannot be recorded is not handed out.
    attempt_as(&app.client_for(&admin), &admin, &admin.password)
        .await
        .expect_code("UNAVAILABLE");
    assert!(
        cut_at.elapsed() < Duration::from_secs(10),
        "a dead Redis must fail fast, took {:?}",
        cut_at.elapsed()
    );

    proxy.restore().await;
    let restored = Instant::now();
    loop {
        let me = client.graphql(ME, json!({})).await;
        if me.errors().is_empty() {
            assert_eq!(me.ok()["me"]["loginId"], "admin");
            break;
        }
        me.expect_code("UNAVAILABLE");
        assert!(
            restored.elapsed() < Duration::from_secs(15),
            "service did not resume after Redis returned: {}",
            me.body
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    attempt_as(&app.client_for(&admin), &admin, &admin.password)
        .await
        .ok();
}

type RedisConn = tokio::io::BufReader<tokio::net::TcpStream>;

async fn redis_command(conn: &mut RedisConn, args: &[&str]) -> Value {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        write!(request, "${}\r\n{arg}\r\n", arg.len()).unwrap();
    }
    conn.get_mut().write_all(request.as_bytes()).await.unwrap();
    read_reply(conn).await
}

/// A RESP2 reply as JSON: strings, integers, null, arrays; an error reply panics.
fn read_reply(conn: &mut RedisConn) -> std::pin::Pin<Box<dyn Future<Output = Value> + Send + '_>> {
    Box::pin(async move {
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Value::String(rest.to_string()),
            "-" => panic!("redis: {rest}"),
            ":" => json!(rest.parse::<i64>().unwrap()),
            "$" => match usize::try_from(rest.parse::<i64>().unwrap()) {
                Err(_) => Value::Null,
                Ok(len) => {
                    let mut buf = vec![0; len + 2];
                    conn.read_exact(&mut buf).await.unwrap();
                    buf.truncate(len);
                    Value::String(String::from_utf8_lossy(&buf).into_owned())
                }
            },
            "*" => match usize::try_from(rest.parse::<i64>().unwrap()) {
                Err(_) => Value::Null,
                Ok(n) => {
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(read_reply(conn).await);
                    }
                    Value::Array(items)
                }
            },
            other => panic!("unexpected redis reply type {other}: {line}"),
        }
    })
}

#[tokio::test]
async fn redis_keeps_only_the_token_hash_with_the_certificate_binding_and_an_idle_ttl() {
    let app = spawn_app_with(TestOptions {
        redis: Some(true),
        ..Default::default()
    })
    .await;
    let admin = app.create_tenant("kita").await;
    let client = session(&app, &admin).await;
    client.graphql(ME, json!({})).await.ok();
    let token = client.token.clone().unwrap();
    let hash = renkei::auth::session::token_hash(&token);
    assert_eq!(hash.len(), 64);

    let (userinfo, _, path) = split_redis_url(&renkei_tests::redis_url());
    let stream = tokio::net::TcpStream::connect(redis_socket_addr().await)
        .await
        .unwrap();
    let mut conn = tokio::io::BufReader::new(stream);
    if !userinfo.is_empty() {
        let args: Vec<&str> = match userinfo.split_once(':') {
            Some(("", pw)) => vec!["AUTH", pw],
            Some((user, pw)) => vec!["AUTH", user, pw],
            None => vec!["AUTH", userinfo.as_str()],
        };
        redis_command(&mut conn, &args).await;
    }
    let db = path.trim_start_matches('/');
    if !db.is_empty() {
        redis_command(&mut conn, &["SELECT", db]).await;
    }

    let pattern = format!("{}*", app.redis_prefix);
    let keys = redis_command(&mut conn, &["KEYS", &pattern]).await;
    let keys: Vec<String> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let mut dump = String::new();
    for key in &keys {
        let kind = redis_command(&mut conn, &["TYPE", key]).await;
        let value = match kind.as_str().unwrap() {
            "hash" => redis_command(&mut conn, &["HGETALL", key]).await,
            "set" => redis_command(&mut conn, &["SMEMBERS", key]).await,
            "string" => redis_command(&mut conn, &["GET", key]).await,
            "list" => redis_command(&mut conn, &["LRANGE", key, "0", "-1"]).await,
            "zset" => redis_command(&mut conn, &["ZRANGE", key, "0", "-1"]).await,
            other => json!(other),
        };
        writeln!(dump, "{key} = {value}").unwrap();
    }
    assert!(!dump.contains(&token), "the raw token is in Redis:\n{dump}");
    let session_key = keys
        .iter()
        .find(|k| k.contains(&hash))
        .unwrap_or_else(|| panic!("no key holds the token's SHA-256:\n{dump}"));
    assert!(
        dump.contains(&admin.fingerprint),
        "the session does not record its certificate:\n{dump}"
    );
    let ttl = redis_command(&mut conn, &["PTTL", session_key]).await;
    let ttl = ttl.as_i64().unwrap();
    assert!(
        ttl > 0 && ttl <= 1800 * 1000,
        "the session key should expire with the idle timeout, PTTL {ttl}"
    );
}

// ---------------------------------------------------------------------------------------------
// 13. bootstrap
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bootstrap_writes_private_credentials_that_log_in_as_the_demo_admin() {
    use std::os::unix::fs::PermissionsExt as _;
    let app = spawn_with_env(&[("RENKEI_BOOTSTRAP", "true")]).await;
    let dir = app.data_dir.join("bootstrap");
    let path = dir.join("credentials.json");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "credentials.json mode {mode:o}");
    let text = std::fs::read_to_string(&path).unwrap();
    let creds: Value = serde_json::from_str(&text).unwrap();
    let keys: BTreeSet<&str> = creds
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "caCertPath",
            "loginId",
            "password",
            "pkcs12Password",
            "pkcs12Path",
            "tenant"
        ])
    );
    assert_eq!(creds["tenant"], "demo");
    assert_eq!(creds["loginId"], "admin");
    assert_eq!(
        creds["pkcs12Path"], "admin.p12",
        "relative to the bootstrap folder"
    );
    let password = creds["password"].as_str().unwrap();
    assert_eq!(
        password.chars().count(),
        16,
        "a random 16-character initial password"
    );
    let p12_password = creds["pkcs12Password"].as_str().unwrap();
    assert!(p12_password.chars().count() >= 16);

    let p12_path = dir.join(creds["pkcs12Path"].as_str().unwrap());
    let p12_mode = std::fs::metadata(&p12_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(p12_mode, 0o600, "admin.p12 mode {p12_mode:o}");
    let pem = openssl_open_pkcs12(&p12_path, p12_password).await;
    let ca_file = std::fs::read_to_string(dir.join(creds["caCertPath"].as_str().unwrap())).unwrap();
    let ca_der = public_ca_der(&app, "demo").await;
    assert_eq!(pem_certificates(&ca_file), vec![ca_der.clone()]);
    assert!(pem_certificates(&pem).contains(&ca_der));

    let p12 = std::fs::read(&p12_path).unwrap();
    let device = app.client_with_identity(&identity_from_pkcs12(&p12, p12_password));
    let login = attempt(&device, "demo", "admin", password).await;
    let login = &login.ok()["login"];
    assert_eq!(login["user"]["role"], "CITY_ADMIN");
    assert_eq!(login["mustChangePassword"], true);

    // Starting again on the same (no longer empty) database changes nothing.
    let again = spawn_app_with(TestOptions {
        env: env(&[("RENKEI_BOOTSTRAP", "true")]),
        share_with: Some(app.shared_backends()),
        ..Default::default()
    })
    .await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    drop(again);
}
