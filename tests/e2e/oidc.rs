//! Federated login of city staff against a real OpenID provider (`tests/oidc/provider.mjs`):
//! the provider replaces the password, never the certificate.

use reqwest::StatusCode;
use sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _, Set};
use serde_json::{Value, json};
use uuid::Uuid;

use entity::kinds::{AccountStatus, Role};
use renkei_tests::oidc::{
    Browser, IdpCa, IdpClient, TestIdp, audit_events, callback_url, detail, expect_failure_audit,
};
use renkei_tests::{Backend, Person, TestApp, TestOptions, spawn_app_with};

const SLUG: &str = "kita";

/// An app that trusts the provider's CA, a tenant with its CITY_ADMIN, and the provider set
/// as the tenant's (CITY_ADMIN only).
struct Setup {
    app: TestApp,
    idp: TestIdp,
    admin: Person,
    ca: IdpCa,
}

async fn setup_with(link_by_email: bool, env: Vec<(String, String)>) -> Setup {
    let ca = IdpCa::new();
    let mut all_env = ca.env();
    all_env.extend(env);
    let app = spawn_app_with(TestOptions {
        env: all_env,
        ..Default::default()
    })
    .await;
    let admin = app.create_tenant(SLUG).await;
    let idp = TestIdp::start(&ca, vec![IdpClient::renkei(&[&app], SLUG)]).await;
    idp.configure(&app, SLUG, link_by_email).await;
    Setup {
        app,
        idp,
        admin,
        ca,
    }
}

async fn setup() -> Setup {
    setup_with(false, Vec::new()).await
}

impl Setup {
    fn browser(&self, person: &Person) -> Browser {
        Browser::new(&self.app, &self.ca, Some(person))
    }

    /// Links `person` to `subject` as a CITY_ADMIN would (the GraphQL path has its own test).
    async fn link(&self, person: &Person, subject: &str) {
        link(&self.app, &self.idp, person, subject).await;
    }

    /// A second CITY_ADMIN of the tenant.
    async fn chief(&self) -> Person {
        self.app
            .create_user(&self.admin, "chief", Role::CityAdmin, None)
            .await
    }

    /// Checks the callback's redirect and the audit event of a refused login.
    async fn expect_refused(&self, landing: &renkei_tests::oidc::Landing, reason: &str) {
        landing.expect_error(reason);
        expect_failure_audit(&self.app, self.admin.tenant_id, &self.idp.issuer, reason).await;
    }

    async fn failures(&self) -> usize {
        audit_events(&self.app, self.admin.tenant_id, "login.failure")
            .await
            .len()
    }

    /// `{ me { id } }` with this session over this person's certificate.
    async fn me(&self, person: &Person, token: &str) -> renkei_tests::Gql {
        self.app
            .client_for(person)
            .with_token(token)
            .graphql("{ me { id } }", json!({}))
            .await
    }
}

/// Links `person` to `subject` at `idp` through the service, as a CITY_ADMIN would.
async fn link(app: &TestApp, idp: &TestIdp, person: &Person, subject: &str) {
    renkei::service::oidc::link(
        &app.db,
        &renkei::service::audit::Origin::default(),
        person.tenant_id,
        person.id,
        &idp.issuer,
        subject,
    )
    .await
    .expect("linked");
}

async fn error_body(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    (status, resp.json().await.expect("a JSON error body"))
}

#[tokio::test]
async fn a_linked_city_admin_logs_in_through_the_provider_over_their_certificate() {
    let s = setup().await;
    s.link(&s.admin, "kc-admin").await;
    s.idp
        .login_as("kc-admin", Some("admin@kita.example"), true)
        .await;
    let mut browser = s.browser(&s.admin);

    // What the start sends the browser to: the provider, with PKCE S256, state and nonce.
    let started = browser.start(&s.app, SLUG).await;
    assert_eq!(started.status(), StatusCode::SEE_OTHER);
    let location = reqwest::Url::parse(
        started
            .headers()
            .get(reqwest::header::LOCATION)
            .unwrap()
            .to_str()
            .unwrap(),
    )
    .unwrap();
    assert!(
        location
            .as_str()
            .starts_with(&format!("{}/auth?", s.idp.issuer)),
        "{location}"
    );
    let query: std::collections::HashMap<String, String> =
        location.query_pairs().into_owned().collect();
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["client_id"], "renkei");
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["redirect_uri"], callback_url(&s.app, SLUG));
    let mut scopes: Vec<&str> = query["scope"].split(' ').collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["email", "openid", "profile"]);
    assert!(!query["code_challenge"].is_empty() && !query["nonce"].is_empty());
    let cookie = started
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.starts_with(&format!("__Host-renkei_oidc={};", query["state"])),
        "{cookie}"
    );
    assert!(
        cookie.contains("SameSite=Lax") && cookie.contains("Secure"),
        "{cookie}"
    );

    // The whole flow.
    let landing = browser.log_in(&s.app, SLUG).await;
    let token = landing.expect_success();
    assert!(
        landing
            .set_cookies
            .iter()
            .any(|c| c.starts_with("__Host-renkei_session=") && c.contains("HttpOnly")),
        "{landing:?}"
    );
    let me = s.me(&s.admin, &token).await;
    assert_eq!(me.ok()["me"]["id"], s.admin.id.to_string());
    // The session is bound to the certificate the flow ran over.
    let chief = s.chief().await;
    s.me(&chief, &token).await.expect_code("UNAUTHENTICATED");

    let successes = audit_events(&s.app, s.admin.tenant_id, "login.success").await;
    assert_eq!(successes.len(), 1);
    let event = &successes[0];
    assert_eq!(event.actor_id, Some(s.admin.id));
    let d = detail(event);
    assert_eq!(d["method"], "oidc", "{d}");
    assert_eq!(d["issuer"], s.idp.issuer.as_str(), "{d}");
    assert_eq!(s.failures().await, 0);
}

/// Browsers speak HTTP/2 over TLS, where the host is the `:authority` pseudo-header, not a
/// `Host` header: the redirect URI must come out the same over both protocols.
#[tokio::test]
async fn start_builds_the_redirect_uri_over_http2_and_http1() {
    let s = setup().await;
    for (protocol, browser, version) in [
        (
            "HTTP/1.1",
            Browser::http1(&s.app, &s.ca, Some(&s.admin)),
            reqwest::Version::HTTP_11,
        ),
        ("HTTP/2", s.browser(&s.admin), reqwest::Version::HTTP_2),
    ] {
        let resp = browser.start(&s.app, SLUG).await;
        assert_eq!(resp.version(), version);
        let status = resp.status();
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| reqwest::Url::parse(l.to_str().ok()?).ok());
        let body = resp.text().await.unwrap();
        assert_eq!(status, StatusCode::SEE_OTHER, "{protocol}: {body}");
        let redirect_uri = location
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "redirect_uri")
            .map(|(_, v)| v.into_owned());
        assert_eq!(redirect_uri, Some(callback_url(&s.app, SLUG)), "{protocol}");
    }
}

/// Behind a load balancer: the redirect URI is `public_url`'s, whatever the `Host`, and the
/// browser lands on `oidc_after_login_url`.
#[tokio::test]
async fn behind_a_public_url_the_redirect_uri_and_landing_page_are_the_configured_ones() {
    const PUBLIC: &str = "https://renkei.kita.example";
    const AFTER: &str = "https://app.kita.example/login?from=oidc";
    let ca = IdpCa::new();
    let mut env = ca.env();
    env.push(("RENKEI_PUBLIC_URL".into(), PUBLIC.into()));
    env.push(("RENKEI_OIDC_AFTER_LOGIN_URL".into(), AFTER.into()));
    let app = spawn_app_with(TestOptions {
        env,
        ..Default::default()
    })
    .await;
    let admin = app.create_tenant(SLUG).await;
    let public_callback = format!("{PUBLIC}/auth/oidc/{SLUG}/callback");
    let idp = TestIdp::start(
        &ca,
        vec![IdpClient {
            client_id: "renkei".into(),
            client_secret: "public-url-secret".into(),
            redirect_uris: vec![public_callback.clone()],
        }],
    )
    .await;
    idp.configure(&app, SLUG, false).await;
    link(&app, &idp, &admin, "kc-admin").await;
    idp.login_as("kc-admin", None, false).await;

    let mut browser = Browser::new(&app, &ca, Some(&admin));
    let flow = browser.begin(&app, SLUG).await;
    assert!(
        flow.callback_url
            .starts_with(&format!("{public_callback}?")),
        "{}",
        flow.callback_url
    );
    // The load balancer forwards the callback to the server.
    let landing = browser.callback(&flow.on(&app)).await;
    assert_eq!(landing.status, StatusCode::SEE_OTHER);
    assert_eq!(landing.location, AFTER);
    let token = landing.session_token().expect("a session cookie");
    let me = app
        .client_for(&admin)
        .with_token(&token)
        .graphql("{ me { id } }", json!({}))
        .await;
    assert_eq!(me.ok()["me"]["id"], admin.id.to_string());

    // A failure lands on the same page, with the reason added to its query.
    let mut flow = browser.begin(&app, SLUG).await;
    flow.cookie = None;
    let landing = browser.callback(&flow.on(&app)).await;
    assert_eq!(landing.status, StatusCode::SEE_OTHER);
    assert_eq!(landing.location, format!("{AFTER}&oidc_error=bad_state"));
    assert_eq!(landing.session_token(), None);
}

#[tokio::test]
async fn start_needs_a_certificate_of_the_tenant_and_a_tenant_with_a_provider() {
    let s = setup().await;
    let (status, body) =
        error_body(Browser::new(&s.app, &s.ca, None).start(&s.app, SLUG).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "CERTIFICATE_REQUIRED",
        "{body}"
    );

    // A certificate of another tenant is not one of this tenant's.
    let other = s.app.create_tenant("minami").await;
    let (status, body) = error_body(s.browser(&other).start(&s.app, SLUG).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "CERTIFICATE_REQUIRED",
        "{body}"
    );

    for (person, slug) in [(&s.admin, "nowhere"), (&other, "minami")] {
        // An unknown tenant, and a tenant without a provider.
        let (status, body) = error_body(s.browser(person).start(&s.app, slug).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{slug}: {body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "NOT_FOUND",
            "{slug}: {body}"
        );
    }
}

#[tokio::test]
async fn the_state_ties_the_callback_to_this_browser_and_works_once() {
    let s = setup().await;
    s.link(&s.admin, "kc-admin").await;
    s.idp.login_as("kc-admin", None, false).await;
    let mut browser = s.browser(&s.admin);

    let flow = browser.begin(&s.app, SLUG).await;
    let tampered = flow.with_param("state", "forged-state");
    assert_ne!(tampered.callback_url, flow.callback_url);
    s.expect_refused(&browser.callback(&tampered).await, "bad_state")
        .await;

    let mut flow = browser.begin(&s.app, SLUG).await;
    flow.cookie = None;
    s.expect_refused(&browser.callback(&flow).await, "bad_state")
        .await;

    // The cookie of another flow of the same browser does not fit either.
    let first = browser.begin(&s.app, SLUG).await;
    let mut second = browser.begin(&s.app, SLUG).await;
    second.cookie.clone_from(&first.cookie);
    s.expect_refused(&browser.callback(&second).await, "bad_state")
        .await;

    // A good callback works once.
    let flow = browser.begin(&s.app, SLUG).await;
    let token = browser.callback(&flow).await.expect_success();
    s.me(&s.admin, &token).await.ok();
    s.expect_refused(&browser.callback(&flow).await, "bad_state")
        .await;
    assert_eq!(s.failures().await, 4);
}

#[tokio::test]
async fn a_replayed_code_is_refused_by_the_provider() {
    let s = setup().await;
    s.link(&s.admin, "kc-admin").await;
    s.idp.login_as("kc-admin", None, false).await;
    let mut browser = s.browser(&s.admin);
    let used = browser.begin(&s.app, SLUG).await;
    browser.callback(&used).await.expect_success();

    // A fresh flow (its own state, cookie and PKCE verifier) carrying the old code.
    let fresh = browser.begin(&s.app, SLUG).await;
    let old_code = used.param("code").unwrap();
    assert_ne!(fresh.param("code").unwrap(), old_code);
    let replay = fresh.with_param("code", &old_code);
    s.expect_refused(&browser.callback(&replay).await, "code_rejected")
        .await;
}

#[tokio::test]
async fn a_refusal_at_the_provider_is_an_idp_error() {
    let s = setup().await;
    s.link(&s.admin, "kc-admin").await;
    s.idp.refuse_logins("access_denied").await;
    let mut browser = s.browser(&s.admin);
    let flow = browser.begin(&s.app, SLUG).await;
    assert_eq!(flow.param("error").as_deref(), Some("access_denied"));
    assert_eq!(flow.param("code"), None);
    s.expect_refused(&browser.callback(&flow).await, "idp_error")
        .await;
}

#[tokio::test]
async fn spoiled_id_tokens_are_refused_each_with_its_reason() {
    let s = setup().await;
    s.link(&s.admin, "kc-admin").await;
    s.idp.login_as("kc-admin", None, false).await;
    let mut browser = s.browser(&s.admin);
    for (mode, reason) in [
        ("wrong_audience", "wrong_audience"),
        ("expired", "expired_token"),
        ("bad_nonce", "bad_nonce"),
        ("wrong_issuer", "wrong_issuer"),
        ("bad_signature", "bad_token"),
    ] {
        s.idp.tamper(Some(mode)).await;
        let landing = browser.log_in(&s.app, SLUG).await;
        assert_eq!(
            landing.error().as_deref(),
            Some(reason),
            "{mode}: {landing:?}"
        );
        s.expect_refused(&landing, reason).await;
    }
    assert_eq!(s.failures().await, 5);
    // The same login with the provider's own tokens goes through.
    s.idp.tamper(None).await;
    browser.log_in(&s.app, SLUG).await.expect_success();
}

#[tokio::test]
async fn an_unlinked_subject_is_refused_and_audited_with_its_subject_for_linking() {
    let s = setup().await;
    s.idp
        .login_as("kc-stranger", Some("admin@kita.example"), true)
        .await;
    let landing = s.browser(&s.admin).log_in(&s.app, SLUG).await;
    s.expect_refused(&landing, "unlinked_subject").await;
    let event =
        expect_failure_audit(&s.app, s.admin.tenant_id, &s.idp.issuer, "unlinked_subject").await;
    assert_eq!(detail(&event)["subject"], "kc-stranger");
    // Whose certificate it was, so the admin links the right person.
    let serial = entity::certificate::Entity::find_by_id(s.admin.certificate_id)
        .one(&s.app.db)
        .await
        .unwrap()
        .unwrap()
        .serial_hex;
    assert_eq!(event.certificate_serial.as_deref(), Some(serial.as_str()));
}

#[tokio::test]
async fn the_certificate_must_be_the_linked_users_from_start_to_callback() {
    let s = setup().await;
    let chief = s.chief().await;
    s.link(&s.admin, "kc-admin").await;
    s.idp.login_as("kc-admin", None, false).await;

    // (a) Started over the admin's certificate, finished over the chief's.
    let flow = s.browser(&s.admin).begin(&s.app, SLUG).await;
    let landing = s.browser(&chief).callback(&flow).await;
    s.expect_refused(&landing, "certificate_mismatch").await;

    // ... or over none.
    let flow = s.browser(&s.admin).begin(&s.app, SLUG).await;
    let landing = Browser::new(&s.app, &s.ca, None).callback(&flow).await;
    s.expect_refused(&landing, "no_certificate").await;

    // (b) The whole flow over the chief's certificate, but the subject is the admin's.
    let landing = s.browser(&chief).log_in(&s.app, SLUG).await;
    s.expect_refused(&landing, "certificate_mismatch").await;
    let event = expect_failure_audit(
        &s.app,
        s.admin.tenant_id,
        &s.idp.issuer,
        "certificate_mismatch",
    )
    .await;
    assert_eq!(event.actor_id, Some(s.admin.id));

    assert!(
        audit_events(&s.app, s.admin.tenant_id, "login.success")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn roles_suspension_and_locks_are_checked_as_for_password_logins() {
    let s = setup().await;
    let facility = s.app.create_facility(s.admin.tenant_id, "Clinic").await;
    let nurse = s
        .app
        .create_user(&s.admin, "nurse1", Role::Staff, Some(facility))
        .await;
    let chief = s.chief().await;
    // The nurse was linked while STAFF were allowed; the operator has narrowed it since.
    s.idp
        .configure_roles(&s.app, SLUG, vec![Role::CityAdmin, Role::Staff], false)
        .await;
    s.link(&nurse, "kc-nurse").await;
    s.idp.configure(&s.app, SLUG, false).await;
    s.link(&chief, "kc-chief").await;

    s.idp.login_as("kc-nurse", None, false).await;
    let landing = s.browser(&nurse).log_in(&s.app, SLUG).await;
    s.expect_refused(&landing, "role_not_allowed").await;

    s.idp.login_as("kc-chief", None, false).await;
    s.app
        .edit_user(chief.id, |u| {
            u.status = Set(AccountStatus::Suspended);
            u.suspension_reason = Set(Some("on leave".into()));
        })
        .await;
    let landing = s.browser(&chief).log_in(&s.app, SLUG).await;
    s.expect_refused(&landing, "suspended").await;

    s.app
        .edit_user(chief.id, |u| {
            u.status = Set(AccountStatus::Locked);
            u.suspension_reason = Set(None);
            u.locked_until = Set(Some(chrono::Utc::now() + chrono::Duration::hours(1)));
        })
        .await;
    let landing = s.browser(&chief).log_in(&s.app, SLUG).await;
    s.expect_refused(&landing, "locked").await;
    let event = expect_failure_audit(&s.app, s.admin.tenant_id, &s.idp.issuer, "locked").await;
    assert_eq!(event.actor_id, Some(chief.id));

    // Active again, the same login goes through.
    s.app
        .edit_user(chief.id, |u| {
            u.status = Set(AccountStatus::Active);
            u.locked_until = Set(None);
        })
        .await;
    let token = s
        .browser(&chief)
        .log_in(&s.app, SLUG)
        .await
        .expect_success();
    assert_eq!(
        s.me(&chief, &token).await.ok()["me"]["id"],
        chief.id.to_string()
    );
}

async fn set_email(app: &TestApp, id: Uuid, email: &str) {
    app.edit_user(id, |u| u.email = Set(Some(email.into())))
        .await;
}

#[tokio::test]
async fn email_linking_links_a_verified_address_once_and_then_the_link_is_used() {
    let s = setup_with(true, Vec::new()).await;
    let chief = s.chief().await;
    set_email(&s.app, chief.id, "chief@kita.example").await;
    s.idp
        .login_as("kc-chief", Some("Chief@Kita.Example"), true)
        .await;

    // Still only over that user's certificate: no link for someone else's browser.
    let landing = s.browser(&s.admin).log_in(&s.app, SLUG).await;
    s.expect_refused(&landing, "certificate_mismatch").await;
    assert!(
        audit_events(&s.app, s.admin.tenant_id, "identity.link")
            .await
            .is_empty()
    );

    let token = s
        .browser(&chief)
        .log_in(&s.app, SLUG)
        .await
        .expect_success();
    let mine = s
        .app
        .client_for(&chief)
        .with_token(&token)
        .graphql(
            "{ me { id externalIdentities { issuer subject method } } }",
            json!({}),
        )
        .await;
    let me = &mine.ok()["me"];
    assert_eq!(me["id"], chief.id.to_string());
    assert_eq!(
        me["externalIdentities"],
        json!([{ "issuer": s.idp.issuer, "subject": "kc-chief", "method": "EMAIL" }])
    );
    let links = audit_events(&s.app, s.admin.tenant_id, "identity.link").await;
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].target_id, Some(chief.id.to_string()));
    assert_eq!(detail(&links[0])["method"], "EMAIL");

    // The next login goes through the link, whatever the token says about e-mail.
    s.idp.login_as("kc-chief", None, false).await;
    let token = s
        .browser(&chief)
        .log_in(&s.app, SLUG)
        .await
        .expect_success();
    assert_eq!(
        s.me(&chief, &token).await.ok()["me"]["id"],
        chief.id.to_string()
    );
    assert_eq!(
        audit_events(&s.app, s.admin.tenant_id, "identity.link")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn email_linking_needs_the_option_a_verified_address_and_one_owner_of_it() {
    let s = setup().await;
    let chief = s.chief().await;
    set_email(&s.app, chief.id, "chief@kita.example").await;
    s.idp
        .login_as("kc-chief", Some("chief@kita.example"), true)
        .await;
    let landing = s.browser(&chief).log_in(&s.app, SLUG).await;
    s.expect_refused(&landing, "unlinked_subject").await;

    // Linking by e-mail on, but the provider does not vouch for the address.
    s.idp.configure(&s.app, SLUG, true).await;
    s.idp
        .login_as("kc-chief", Some("chief@kita.example"), false)
        .await;
    let landing = s.browser(&chief).log_in(&s.app, SLUG).await;
    s.expect_refused(&landing, "unlinked_subject").await;

    // A verified address that two users share picks neither.
    let facility = s.app.create_facility(s.admin.tenant_id, "Clinic").await;
    let twin = s
        .app
        .create_user(&s.admin, "twin", Role::Staff, Some(facility))
        .await;
    set_email(&s.app, twin.id, "CHIEF@kita.example").await;
    s.idp
        .login_as("kc-chief", Some("chief@kita.example"), true)
        .await;
    let landing = s.browser(&chief).log_in(&s.app, SLUG).await;
    s.expect_refused(&landing, "unlinked_subject").await;
    let links = entity::external_identity::Entity::find()
        .filter(entity::external_identity::Column::UserId.eq(chief.id))
        .count(&s.app.db)
        .await
        .unwrap();
    assert_eq!(links, 0);

    // Once the address is the chief's alone, the same login links: the refusals above were
    // for what they test.
    set_email(&s.app, twin.id, "twin@kita.example").await;
    let token = s
        .browser(&chief)
        .log_in(&s.app, SLUG)
        .await
        .expect_success();
    assert_eq!(
        s.me(&chief, &token).await.ok()["me"]["id"],
        chief.id.to_string()
    );
}

const LINK: &str = "mutation($u:ID!,$i:String!,$s:String!){ linkExternalIdentity(userId:$u, issuer:$i, subject:$s){ id issuer subject method linkedAt } }";
const UNLINK: &str = "mutation($u:ID!,$i:String!){ unlinkExternalIdentity(userId:$u, issuer:$i) }";

#[tokio::test]
async fn city_admins_link_and_unlink_accounts_through_graphql() {
    let s = setup().await;
    let admin = s.app.ready_session(&s.admin).await;
    let chief = s.chief().await;
    let facility = s.app.create_facility(s.admin.tenant_id, "Clinic").await;
    let nurse = s
        .app
        .create_user(&s.admin, "nurse1", Role::Staff, Some(facility))
        .await;
    let issuer = s.idp.issuer.as_str();

    let linked = admin
        .graphql(
            LINK,
            json!({ "u": chief.id.to_string(), "i": issuer, "s": "kc-chief" }),
        )
        .await;
    let link = &linked.ok()["linkExternalIdentity"];
    assert_eq!(link["issuer"], issuer);
    assert_eq!(link["subject"], "kc-chief");
    assert_eq!(link["method"], "ADMIN");
    assert!(link["linkedAt"].as_str().unwrap().ends_with("+09:00"));

    let listed = admin
        .graphql(
            "query($id:ID!){ user(id:$id){ externalIdentities { id subject method } } }",
            json!({ "id": chief.id.to_string() }),
        )
        .await;
    assert_eq!(
        listed.ok()["user"]["externalIdentities"],
        json!([{ "id": link["id"], "subject": "kc-chief", "method": "ADMIN" }])
    );

    // One subject per user, one user per subject.
    admin
        .graphql(
            LINK,
            json!({ "u": chief.id.to_string(), "i": issuer, "s": "kc-chief-2" }),
        )
        .await
        .expect_code("CONFLICT");
    admin
        .graphql(
            LINK,
            json!({ "u": s.admin.id.to_string(), "i": issuer, "s": "kc-chief" }),
        )
        .await
        .expect_code("CONFLICT");
    // Only the tenant's provider, only allowed roles.
    let foreign = admin
        .graphql(
            LINK,
            json!({ "u": s.admin.id.to_string(), "i": "https://elsewhere.example", "s": "x" }),
        )
        .await;
    foreign.expect_code("BAD_USER_INPUT");
    assert_eq!(foreign.field(), Some("issuer"));
    let staff = admin
        .graphql(
            LINK,
            json!({ "u": nurse.id.to_string(), "i": issuer, "s": "kc-nurse" }),
        )
        .await;
    staff.expect_code("BAD_USER_INPUT");
    assert_eq!(staff.field(), Some("userId"));
    // Only a CITY_ADMIN links.
    let nurse_client = s.app.ready_session(&nurse).await;
    nurse_client
        .graphql(
            LINK,
            json!({ "u": nurse.id.to_string(), "i": issuer, "s": "kc-nurse" }),
        )
        .await
        .expect_code("FORBIDDEN");
    nurse_client
        .graphql(UNLINK, json!({ "u": chief.id.to_string(), "i": issuer }))
        .await
        .expect_code("FORBIDDEN");

    // The link logs the chief in.
    s.idp.login_as("kc-chief", None, false).await;
    s.browser(&chief)
        .log_in(&s.app, SLUG)
        .await
        .expect_success();

    let unlinked = admin
        .graphql(UNLINK, json!({ "u": chief.id.to_string(), "i": issuer }))
        .await;
    assert_eq!(unlinked.ok()["unlinkExternalIdentity"], true);
    admin
        .graphql(UNLINK, json!({ "u": chief.id.to_string(), "i": issuer }))
        .await
        .expect_code("NOT_FOUND");
    let listed = admin
        .graphql(
            "query($id:ID!){ user(id:$id){ externalIdentities { id } } }",
            json!({ "id": chief.id.to_string() }),
        )
        .await;
    assert_eq!(listed.ok()["user"]["externalIdentities"], json!([]));
    assert_eq!(
        audit_events(&s.app, s.admin.tenant_id, "identity.link")
            .await
            .len(),
        1
    );
    assert_eq!(
        audit_events(&s.app, s.admin.tenant_id, "identity.unlink")
            .await
            .len(),
        1
    );

    let landing = s.browser(&chief).log_in(&s.app, SLUG).await;
    s.expect_refused(&landing, "unlinked_subject").await;
}

#[tokio::test]
async fn failed_federated_logins_count_against_the_ip_limit() {
    let s = setup_with(
        false,
        vec![("RENKEI_LOGIN_IP_MAX_FAILURES".into(), "2".into())],
    )
    .await;
    s.link(&s.admin, "kc-admin").await;
    s.idp.login_as("kc-admin", None, false).await;
    let mut browser = s.browser(&s.admin);
    for _ in 0..2 {
        let mut flow = browser.begin(&s.app, SLUG).await;
        flow.cookie = None;
        s.expect_refused(&browser.callback(&flow).await, "bad_state")
            .await;
    }
    // A good flow now is refused before anything is looked at.
    let landing = browser.log_in(&s.app, SLUG).await;
    s.expect_refused(&landing, "rate_limited").await;
}

/// Start on one instance, callback on another: the pending flow is in the shared session
/// store (Redis). PostgreSQL runs only: SQLite runs use in-process stores.
#[tokio::test]
async fn a_flow_started_on_one_instance_finishes_on_another() {
    if renkei_tests::backend() != Backend::Postgres {
        return;
    }
    let ca = IdpCa::new();
    let one = spawn_app_with(TestOptions {
        redis: Some(true),
        env: ca.env(),
        ..Default::default()
    })
    .await;
    // The tenant (and its CA) exists before the second instance loads its trust.
    let admin = one.create_tenant(SLUG).await;
    let two = spawn_app_with(TestOptions {
        redis: Some(true),
        env: ca.env(),
        share_with: Some(one.shared_backends()),
        ..Default::default()
    })
    .await;
    let idp = TestIdp::start(&ca, vec![IdpClient::renkei(&[&one, &two], SLUG)]).await;
    idp.configure(&one, SLUG, false).await;
    link(&one, &idp, &admin, "kc-admin").await;
    idp.login_as("kc-admin", None, false).await;

    let mut browser = Browser::new(&one, &ca, Some(&admin));
    let flow = browser.begin(&one, SLUG).await;
    let elsewhere = flow.on(&two);
    assert!(elsewhere.callback_url.starts_with(&two.base_url));
    let landing = browser.callback(&elsewhere).await;
    let token = landing.expect_success();
    for app in [&one, &two] {
        let me = app
            .client_for(&admin)
            .with_token(&token)
            .graphql("{ me { id } }", json!({}))
            .await;
        assert_eq!(me.ok()["me"]["id"], admin.id.to_string());
    }
    // Used once, on any instance.
    let again = browser.callback(&flow).await;
    again.expect_error("bad_state");
}

/// A federated user never used the Renkei password, so its "change the initial password" rule
/// does not hold a federated session up; the pledge still comes first. A password login of the
/// same account is still held up until the password is changed.
#[tokio::test]
async fn a_federated_session_is_not_held_up_by_the_unused_initial_password() {
    let s = setup().await;
    s.link(&s.admin, "kc-fresh").await;
    s.idp.login_as("kc-fresh", None, false).await;
    let token = s
        .browser(&s.admin)
        .log_in(&s.app, SLUG)
        .await
        .expect_success();
    let client = s.app.client_for(&s.admin).with_token(&token);

    // Fresh from `create_tenant`: initial password not changed, pledge not accepted.
    client
        .graphql("{ myInvitations { id } }", json!({}))
        .await
        .expect_code("PLEDGE_REQUIRED");
    let pledged = client
        .graphql("mutation { acceptPledge { id } }", json!({}))
        .await;
    assert_eq!(pledged.ok()["acceptPledge"]["id"], s.admin.id.to_string());
    let invitations = client.graphql("{ myInvitations { id } }", json!({})).await;
    assert_eq!(invitations.ok()["myInvitations"], json!([]));

    // The same account over a password login still has to change the initial password.
    let password = s.app.login(&s.admin).await;
    password
        .graphql("{ myInvitations { id } }", json!({}))
        .await
        .expect_code("PASSWORD_CHANGE_REQUIRED");
}
