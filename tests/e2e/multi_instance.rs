use std::time::{Duration, Instant};

use serde_json::json;

use renkei_tests::{TestOptions, spawn_app_with};

/// Two instances of one deployment (same database, same Redis prefix, same master key): a
/// certificate revoked through A can no longer open a TLS connection to B within a second, and
/// its session is gone on both.
#[tokio::test]
async fn revocation_on_one_instance_takes_effect_on_the_other() {
    // The safety-net refresh is slow here on purpose: pub/sub must do the work.
    let slow_refresh = vec![(
        "RENKEI_TRUST_REFRESH_SECONDS".to_string(),
        "3600".to_string(),
    )];
    let a = spawn_app_with(TestOptions {
        redis: Some(true),
        env: slow_refresh.clone(),
        ..Default::default()
    })
    .await;
    let b = spawn_app_with(TestOptions {
        redis: Some(true),
        env: slow_refresh,
        share_with: Some(a.shared_backends()),
        ..Default::default()
    })
    .await;
    let mut admin = a.create_tenant("kita").await;
    // B learns about the new tenant CA through pub/sub too.
    let mut admin_on_b = None;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        let probe = b.client_for(&admin).get("/healthz").await;
        if probe.status() == 200 {
            admin_on_b = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admin_on_b.is_some());
    let admin_client = a.login_ready(&mut admin).await;
    let facility = a.create_facility(admin.tenant_id, "Clinic").await;
    let nurse = a
        .create_user(&admin, "nurse1", entity::kinds::Role::Staff, Some(facility))
        .await;

    // The nurse logs in on B; the session works on A too (shared store).
    let nurse_b = b.login(&nurse).await;
    assert_eq!(
        nurse_b.graphql("{ me { loginId } }", json!({})).await.ok()["me"]["loginId"],
        "nurse1"
    );
    let token = nurse_b.token.clone().unwrap();
    let nurse_a = a.client_for(&nurse).with_token(token);
    nurse_a.graphql("{ me { loginId } }", json!({})).await.ok();

    let revoked = admin_client
        .graphql(
            "mutation($id:ID!){ revokeCertificate(id:$id, reason:\"device lost\"){ status } }",
            json!({ "id": nurse.certificate_id.to_string() }),
        )
        .await;
    assert_eq!(revoked.ok()["revokeCertificate"]["status"], "REVOKED");
    let revoked_at = Instant::now();

    // The session bound to it is gone everywhere at once.
    nurse_b
        .graphql("{ me { loginId } }", json!({}))
        .await
        .expect_code("UNAUTHENTICATED");

    // New TLS connections to B with that certificate are refused within a second.
    let mut refused_after = None;
    while revoked_at.elapsed() < Duration::from_secs(3) {
        let fresh = b.client_for(&nurse);
        if fresh.http.get(b.url("/healthz")).send().await.is_err() {
            refused_after = Some(revoked_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = refused_after.expect("B refused the revoked certificate");
    assert!(after < Duration::from_secs(1), "took {after:?}");
    // Other certificates still work on B.
    assert_eq!(b.client_for(&admin).get("/healthz").await.status(), 200);
}
