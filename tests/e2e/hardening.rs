//! Issue 18, end to end: what an attacker, a fuzzer and a spec audit found. Each test pins one
//! point of the issue: login with another user's certificate, cross-site cookie requests,
//! control characters in arguments, error codes, headers, attachments of deleted notes, form 7
//! rooms, oversized bodies over HTTP/1.1 and database connections killed under a request.
//! Runs on both databases (`RENKEI_TEST_DB=sqlite|postgres`).

use serde_json::{Value, json};

use entity::kinds::Role;
use renkei_tests::{Gql, TestClient};

use crate::rooms::{Kita, room_with, yamada};

const LOGIN: &str = "mutation($t:String!,$l:String!,$p:String!){ login(tenant:$t, loginId:$l, password:$p){ token } }";
const SESSION_COOKIE: &str = "__Host-renkei_session";
const POST_NOTE: &str = "mutation($i:PostNoteInput!){ postNote(input:$i){ id body } }";
const UPLOAD: &str =
    "mutation($r:ID!,$file:Upload!){ uploadAttachment(roomId:$r, file:$file){ id } }";
const NOTES: &str = "query($id:ID!){ room(id:$id){ notes(first: 50){ totalCount } } }";

fn jpeg() -> Vec<u8> {
    let mut bytes = b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01".to_vec();
    bytes.resize(600, 0);
    bytes
}

async fn gql_of(resp: reqwest::Response) -> Gql {
    let status = resp.status();
    let text = resp.text().await.expect("a body");
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}), HTTP {status}: {text}"));
    Gql { status, body }
}

/// A JSON GraphQL POST with exactly these extra headers (no bearer token unless given).
async fn post_json(client: &TestClient, body: &Value, headers: &[(&str, &str)]) -> Gql {
    let mut req = client
        .http
        .post(format!("{}/graphql", client.base_url))
        .json(body);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    gql_of(req.send().await.expect("request sent")).await
}

/// An upload as a multipart POST with exactly these extra headers.
async fn post_upload(client: &TestClient, room: &str, headers: &[(&str, &str)]) -> Gql {
    let boundary = "renkei-hardening-boundary";
    let operations = json!({ "query": UPLOAD, "variables": { "r": room, "file": null } });
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{operations}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{{\"0\":[\"variables.file\"]}}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"p.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&jpeg());
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut req = client
        .http
        .post(format!("{}/graphql", client.base_url))
        .header(
            reqwest::header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    gql_of(req.send().await.expect("request sent")).await
}

// ---------------------------------------------------------------------------------------------
// 1. login with another user's certificate
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_certificate_cannot_test_other_users_passwords() {
    let k = Kita::with_env(&[("RENKEI_LOGIN_IP_MAX_FAILURES", "4")]).await;
    let a = k.user("alice", Role::Staff, k.a).await;
    let b = k.user("bob", Role::Staff, k.a).await;
    let with_a = k.app.client_for(&a);
    let hasher = &k.app.state().hasher;

    let mut answers = Vec::new();
    for (what, login, password) in [
        (
            "B's right password",
            b.login_id.as_str(),
            b.password.as_str(),
        ),
        (
            "B's wrong password",
            b.login_id.as_str(),
            "Wrong-password-1!",
        ),
        ("an unknown login ID", "nobody", "Wrong-password-1!"),
    ] {
        let before = hasher.verifications();
        let resp = with_a
            .graphql(LOGIN, json!({ "t": "kita", "l": login, "p": password }))
            .await;
        assert_eq!(
            hasher.verifications(),
            before + 1,
            "{what}: one Argon2id verification, as for any login"
        );
        resp.expect_code("UNAUTHENTICATED");
        answers.push((what, resp.errors()[0].clone()));
    }
    for (what, error) in &answers[1..] {
        assert_eq!(error, &answers[0].1, "{what} answers like {}", answers[0].0);
    }
    // B's account is not touched by attempts with A's certificate.
    let bob = {
        use sea_orm::EntityTrait as _;
        entity::user::Entity::find_by_id(b.id)
            .one(&k.app.db)
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(bob.failed_login_count, 0);
    // The attempts count against the IP: the fourth failure is the last one allowed.
    let resp = with_a
        .graphql(
            LOGIN,
            json!({ "t": "kita", "l": b.login_id, "p": b.password }),
        )
        .await;
    resp.expect_code("UNAUTHENTICATED");
    let resp = with_a
        .graphql(
            LOGIN,
            json!({ "t": "kita", "l": b.login_id, "p": b.password }),
        )
        .await;
    resp.expect_code("RATE_LIMITED");
}

// ---------------------------------------------------------------------------------------------
// 2. cross-site requests with the session cookie
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn cookie_requests_must_come_from_an_allowed_origin() {
    let k = Kita::with_env(&[("RENKEI_PUBLIC_URL", "https://renkei.example.jp/base")]).await;
    let (doc, doc_c) = k.staff("doc", k.a).await;
    let room = room_with(&k.city, yamada(), &[(&doc, &doc_c)], &[]).await;
    let room_id = room["id"].as_str().unwrap().to_string();
    let token = doc_c.token.clone().unwrap();
    let cookie = format!("{SESSION_COOKIE}={token}");
    let device = k.app.client_for(&doc);
    let note = |body: &str| json!({ "query": POST_NOTE, "variables": { "i": { "roomId": room_id, "body": body } } });
    let allowed = "https://renkei.example.jp";
    let evil = "https://evil.example";

    // Refused: a foreign Origin, a cross-site fetch without Origin, a multipart without the
    // preflight header (even from the allowed origin).
    for (what, headers) in [
        (
            "foreign origin",
            vec![("cookie", cookie.as_str()), ("origin", evil)],
        ),
        (
            "the origin the request addressed",
            vec![("cookie", cookie.as_str()), ("origin", &*k.app.base_url)],
        ),
        (
            "cross-site without Origin",
            vec![
                ("cookie", cookie.as_str()),
                ("sec-fetch-site", "cross-site"),
            ],
        ),
        (
            "a look-alike origin",
            vec![
                ("cookie", cookie.as_str()),
                ("origin", "https://renkei.example.jp.evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
        ),
    ] {
        let resp = post_json(&device, &note(what), &headers).await;
        assert_eq!(resp.status, 403, "{what}: {}", resp.body);
        resp.expect_code("FORBIDDEN");
    }
    for (what, headers) in [
        (
            "multipart from a foreign origin",
            vec![
                ("cookie", cookie.as_str()),
                ("origin", evil),
                ("x-renkei-csrf", "1"),
            ],
        ),
        (
            "multipart without the header",
            vec![("cookie", cookie.as_str()), ("origin", allowed)],
        ),
        (
            "multipart without the header nor Origin",
            vec![("cookie", cookie.as_str())],
        ),
    ] {
        let resp = post_upload(&device, &room_id, &headers).await;
        assert_eq!(resp.status, 403, "{what}: {}", resp.body);
        resp.expect_code("FORBIDDEN");
    }
    // Nothing was posted or stored.
    let notes = doc_c.graphql(NOTES, json!({ "id": room_id })).await;
    assert_eq!(notes.ok()["room"]["notes"]["totalCount"], 0);
    assert_eq!(attachment_rows(&k).await, 0);
    // An attachment download by cookie from a cross-site page is refused too (HTTP 403).
    let resp = device
        .http
        .get(k.app.url(&format!("/attachments/{}", uuid::Uuid::new_v4())))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(gql_of(resp).await.code(), Some("FORBIDDEN"));

    // Allowed: the allowed origin, same-origin fetches, non-browser clients, and Bearer tokens
    // from anywhere.
    for (what, headers) in [
        (
            "allowed origin",
            vec![("cookie", cookie.as_str()), ("origin", allowed)],
        ),
        (
            "same-origin without Origin",
            vec![
                ("cookie", cookie.as_str()),
                ("sec-fetch-site", "same-origin"),
            ],
        ),
        (
            "no Origin (not a browser)",
            vec![("cookie", cookie.as_str())],
        ),
    ] {
        let resp = post_json(&device, &note(what), &headers).await;
        assert!(resp.errors().is_empty(), "{what}: {}", resp.body);
    }
    let bearer = format!("Bearer {token}");
    let resp = post_json(
        &device,
        &note("bearer"),
        &[("authorization", &bearer), ("origin", evil)],
    )
    .await;
    assert!(resp.errors().is_empty(), "bearer: {}", resp.body);
    let resp = post_upload(
        &device,
        &room_id,
        &[
            ("cookie", cookie.as_str()),
            ("origin", allowed),
            ("x-renkei-csrf", "1"),
        ],
    )
    .await;
    assert!(
        resp.errors().is_empty(),
        "multipart with the header: {}",
        resp.body
    );
    let resp = post_upload(
        &device,
        &room_id,
        &[
            ("cookie", cookie.as_str()),
            ("apollo-require-preflight", "true"),
        ],
    )
    .await;
    assert!(
        resp.errors().is_empty(),
        "multipart, Apollo's header: {}",
        resp.body
    );
    let resp = post_upload(
        &device,
        &room_id,
        &[("authorization", &bearer), ("origin", evil)],
    )
    .await;
    assert!(
        resp.errors().is_empty(),
        "multipart with a bearer token: {}",
        resp.body
    );
    let notes = doc_c.graphql(NOTES, json!({ "id": room_id })).await;
    assert_eq!(notes.ok()["room"]["notes"]["totalCount"], 4);
    assert_eq!(attachment_rows(&k).await, 3);
}

async fn attachment_rows(k: &Kita) -> u64 {
    use sea_orm::{EntityTrait as _, PaginatorTrait as _};
    entity::attachment::Entity::find()
        .count(&k.app.db)
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// 10. security headers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_api_answer_carries_the_security_headers() {
    let k = Kita::new().await;
    let client = k.app.client();
    let graphql = client
        .http
        .post(k.app.url("/graphql"))
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    let refused = client
        .http
        .post(k.app.url("/graphql"))
        .body("x")
        .send()
        .await
        .unwrap();
    let health = client.get("/healthz").await;
    let missing = client.get("/attachments/not-an-id").await;
    for (what, resp) in [
        ("graphql", graphql),
        ("refused", refused),
        ("healthz", health),
        ("attachment", missing),
    ] {
        let h = resp.headers();
        let get = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        assert_eq!(
            get("content-security-policy"),
            "default-src 'none'; frame-ancestors 'none'",
            "{what}"
        );
        assert_eq!(get("referrer-policy"), "no-referrer", "{what}");
        assert_eq!(get("x-frame-options"), "DENY", "{what}");
        assert_eq!(get("cross-origin-resource-policy"), "same-origin", "{what}");
    }
}
