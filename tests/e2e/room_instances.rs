//! Issue 6 on two instances of one deployment (same database, same Redis prefix): a member
//! removed from a room through instance A is refused on instance B within a second. The full
//! reload of B's enforcer is an hour away on purpose, so Redis pub/sub must carry the change.
//! Set up as `multi_instance` does (Redis on both backends).

use std::time::{Duration, Instant};

use serde_json::json;

use entity::kinds::Role;
use renkei_tests::{TestClient, TestOptions, spawn_app_with};

use crate::rooms::{
    ACCEPT, REMOVE_MEMBER, ROOM_PATIENT, expect_code, id_of, invitation_for, open_room, yamada,
};

/// Polls `room { patient { name } }` every 50 ms until it answers `want` ("ok" or a code);
/// returns how long that took, or None after `limit`.
async fn until_answer(
    client: &TestClient,
    room: &str,
    want: &str,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let resp = client.graphql(ROOM_PATIENT, json!({ "id": room })).await;
        let got = match resp.code() {
            Some(code) => code.to_string(),
            None if resp.errors().is_empty() => "ok".to_string(),
            None => panic!("an error without a code: {}", resp.body),
        };
        if got == want {
            return Some(started.elapsed());
        }
        assert!(
            got == "ok" || got == "FORBIDDEN",
            "unexpected answer while waiting for {want}: {}",
            resp.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test]
async fn a_member_removed_on_one_instance_is_refused_on_the_other_within_a_second() {
    // The safety-net reload is slow here on purpose: pub/sub must do the work.
    let slow_reload = vec![(
        "RENKEI_AUTHZ_RELOAD_SECONDS".to_string(),
        "3600".to_string(),
    )];
    let a = spawn_app_with(TestOptions {
        redis: Some(true),
        env: slow_reload.clone(),
        ..Default::default()
    })
    .await;
    let b = spawn_app_with(TestOptions {
        redis: Some(true),
        env: slow_reload,
        share_with: Some(a.shared_backends()),
        ..Default::default()
    })
    .await;
    let admin = a.create_tenant("kita").await;
    // B learns about the new tenant CA through pub/sub.
    let started = Instant::now();
    let mut trusted = false;
    while started.elapsed() < Duration::from_secs(2) {
        if b.client_for(&admin).get("/healthz").await.status() == 200 {
            trusted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(trusted, "B never trusted the new tenant's CA");
    let facility = a.create_facility(admin.tenant_id, "Kita Clinic").await;
    let doc = a
        .create_user(&admin, "doc", Role::Staff, Some(facility))
        .await;
    let nurse = a
        .create_user(&admin, "nurse", Role::Staff, Some(facility))
        .await;
    let city = a.ready_session(&admin).await;
    let doc_b = b.ready_session(&doc).await;
    let nurse_a = a.ready_session(&nurse).await;
    let nurse_b = b.login(&nurse).await;

    // The city opens the room on A; the doctor joins on B and reads the patient there.
    let room = open_room(&city, yamada(), &[&doc, &nurse]).await;
    let room_id = id_of(&room);
    let joined = doc_b
        .graphql(ACCEPT, json!({ "id": invitation_for(&room, &doc) }))
        .await;
    assert_eq!(joined.ok()["acceptInvitation"]["id"], room_id.as_str());
    let read = doc_b.graphql(ROOM_PATIENT, json!({ "id": room_id })).await;
    assert_eq!(read.ok()["room"]["patient"]["name"], "山田 太郎");

    // The city removes the doctor on A: B refuses within a second.
    let removed = city
        .graphql(
            REMOVE_MEMBER,
            json!({ "r": room_id, "u": doc.id.to_string(), "why": "担当交代" }),
        )
        .await;
    removed.ok();
    let took = until_answer(&doc_b, &room_id, "FORBIDDEN", Duration::from_secs(3))
        .await
        .expect("B kept answering the removed member for 3 seconds");
    assert!(
        took < Duration::from_secs(1),
        "B refused the removed member only after {took:?}"
    );
    // And keeps refusing.
    expect_code(
        &doc_b.graphql(ROOM_PATIENT, json!({ "id": room_id })).await,
        "FORBIDDEN",
        "the removed member on B, later",
    );

    // The other way round: the nurse joins on A and reads on B within a second too.
    let joined = nurse_a
        .graphql(ACCEPT, json!({ "id": invitation_for(&room, &nurse) }))
        .await;
    joined.ok();
    let took = until_answer(&nurse_b, &room_id, "ok", Duration::from_secs(3))
        .await
        .expect("B kept refusing a member who joined on A for 3 seconds");
    assert!(
        took < Duration::from_secs(1),
        "B let the new member in only after {took:?}"
    );
}
