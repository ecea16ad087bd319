use serde_json::json;

use renkei_tests::spawn_app;

const LOGIN: &str = "mutation($t:String!,$l:String!,$p:String!){ login(tenant:$t, loginId:$l, password:$p){ token mustChangePassword mustAcceptPledge expiresAt user { loginId role } } }";

#[tokio::test]
async fn certificate_and_password_log_in_and_the_session_is_bound_to_the_certificate() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let client = app.client_for(&admin);
    let resp = client
        .graphql(
            LOGIN,
            json!({ "t": "kita", "l": admin.login_id, "p": admin.password }),
        )
        .await;
    let login = &resp.ok()["login"];
    assert_eq!(login["mustChangePassword"], true);
    assert_eq!(login["user"]["role"], "CITY_ADMIN");
    assert!(login["expiresAt"].as_str().unwrap().ends_with("+09:00"));
    let token = login["token"].as_str().unwrap().to_string();

    let me = client
        .clone()
        .with_token(token.clone())
        .graphql("{ me { loginId } }", json!({}))
        .await;
    assert_eq!(me.ok()["me"]["loginId"], "admin");
    // Until the initial password is changed, everything else is refused.
    let tenant = client
        .clone()
        .with_token(token.clone())
        .graphql("{ tenant { slug } }", json!({}))
        .await;
    tenant.expect_code("PASSWORD_CHANGE_REQUIRED");

    // The same token without the certificate is worthless.
    let bare = app
        .client()
        .with_token(token.clone())
        .graphql("{ me { loginId } }", json!({}))
        .await;
    bare.expect_code("UNAUTHENTICATED");
    // ... and so is it with another user's certificate.
    let other = app.create_tenant("minami").await;
    let foreign = app
        .client_for(&other)
        .with_token(token)
        .graphql("{ me { loginId } }", json!({}))
        .await;
    foreign.expect_code("UNAUTHENTICATED");
}

#[tokio::test]
async fn password_alone_never_logs_in() {
    let app = spawn_app().await;
    let admin = app.create_tenant("kita").await;
    let resp = app
        .client()
        .graphql(
            LOGIN,
            json!({ "t": "kita", "l": admin.login_id, "p": admin.password }),
        )
        .await;
    resp.expect_code("CERTIFICATE_REQUIRED");
}

#[tokio::test]
async fn expired_certificates_are_marked_and_cannot_log_in() {
    use sea_orm::{ActiveModelTrait as _, EntityTrait as _, Set};
    let app = spawn_app().await;
    let mut admin = app.create_tenant("kita").await;
    let admin_client = app.login_ready(&mut admin).await;
    let facility = app.create_facility(admin.tenant_id, "Clinic").await;
    let nurse = app
        .create_user(&admin, "nurse1", entity::kinds::Role::Staff, Some(facility))
        .await;
    // The record says it ended yesterday (the X.509 itself is still valid, so TLS accepts it):
    // the application must refuse it on its own.
    let cert = entity::certificate::Entity::find_by_id(nurse.certificate_id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut active: entity::certificate::ActiveModel = cert.into();
    active.not_after = Set(chrono::Utc::now() - chrono::Duration::days(1));
    active.update(&app.db).await.unwrap();

    let marked = renkei::service::certificates::mark_expired(&app.db)
        .await
        .unwrap();
    assert_eq!(marked, 1);
    let listed = admin_client
        .graphql(
            "query($id:ID!){ user(id:$id){ certificates { id status } } }",
            json!({ "id": nurse.id.to_string() }),
        )
        .await;
    assert_eq!(listed.ok()["user"]["certificates"][0]["status"], "EXPIRED");
    let resp = app
        .client_for(&nurse)
        .graphql(
            LOGIN,
            json!({ "t": "kita", "l": nurse.login_id, "p": nurse.password }),
        )
        .await;
    resp.expect_code("CERTIFICATE_REQUIRED");
}
