//! Issue 20, the channels: every `renkei::channels::Channels` method sends to a real peer that
//! is not ours (tests/peers/): Web Push decrypted by `http_ece` with the subscription's private
//! key and its VAPID JWT verified; the push gateway's HMAC checked; mail received by aiosmtpd.
//! Runs on both databases (`RENKEI_TEST_DB=sqlite|postgres`).

use sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _, Set};
use serde_json::{Value, json};
use uuid::Uuid;

use entity::kinds::Role;
use renkei::channels::{Channels, Outbound, Outcome, gateway, targets, vapid};
use renkei::service::audit::Origin;
use renkei_tests::peers::{GatewayPeer, PushPeer, PushSubscription, SmtpOptions, SmtpPeer};
use renkei_tests::{Person, TestApp, TestOptions, spawn_app_with};

const VAPID_SUBJECT: &str = "mailto:ops@city.test";
const PUBLIC_URL: &str = "https://renkei.city.test";

async fn app_with(extra: Vec<(String, String)>) -> TestApp {
    let mut env = vec![
        (
            "RENKEI_VAPID_SUBJECT".to_string(),
            VAPID_SUBJECT.to_string(),
        ),
        ("RENKEI_PUBLIC_URL".into(), PUBLIC_URL.into()),
        ("RENKEI_PUSH_ALLOW_PRIVATE_ENDPOINTS".into(), "true".into()),
        ("RENKEI_PUSH_TIMEOUT_SECONDS".into(), "2".into()),
        ("RENKEI_SMTP_TIMEOUT_SECONDS".into(), "3".into()),
        (
            "RENKEI_PUSH_CA_FILE".into(),
            renkei_tests::peers::peer_tls()
                .ca_file
                .display()
                .to_string(),
        ),
    ];
    env.extend(extra);
    spawn_app_with(TestOptions {
        env,
        ..Default::default()
    })
    .await
}

fn channels(app: &TestApp) -> Channels {
    Channels::new(&app.state().config, app.state().master_key.clone()).unwrap()
}

fn outbound(p: &Person, kind: &str, urgent: bool) -> Outbound {
    Outbound {
        notification_id: Uuid::now_v7(),
        tenant_id: p.tenant_id,
        user_id: p.id,
        kind: kind.into(),
        room_id: Some(Uuid::now_v7()),
        event_id: Some(Uuid::now_v7()),
        urgent,
        unread_count: 3,
    }
}

async fn subscribe(app: &TestApp, p: &Person, sub: &PushSubscription) -> Uuid {
    targets::register_subscription(
        &app.db,
        &app.state().config.channels,
        p.tenant_id,
        p.id,
        targets::NewSubscription {
            endpoint: &sub.endpoint,
            p256dh: &sub.p256dh,
            auth: &sub.auth,
            device_label: Some("laptop"),
        },
        &Origin::default(),
    )
    .await
    .unwrap()
    .id
}

async fn subscription_count(app: &TestApp, p: &Person) -> u64 {
    entity::push_subscription::Entity::find()
        .filter(entity::push_subscription::Column::UserId.eq(p.id))
        .count(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn web_push_arrives_encrypted_for_the_subscription_and_vapid_signed() {
    let mut peer = PushPeer::start().await;
    let app = app_with(vec![]).await;
    let admin = app.create_tenant("wp-ok").await;
    let sub = peer.subscribe().await;
    subscribe(&app, &admin, &sub).await;
    let n = outbound(&admin, "NOTE_POSTED", true);

    assert_eq!(channels(&app).web_push(&app.db, &n).await, Outcome::Sent);

    let got = peer.wait_for_messages(&sub, 1).await;
    let m = &got[0];
    assert!(m.get("error").is_none(), "{m:#}");
    // Decrypted by http_ece with the browser's private key: ids, kind, urgency, count only.
    assert_eq!(
        m["payload"],
        json!({
            "notification_id": n.notification_id,
            "kind": "NOTE_POSTED",
            "room_id": n.room_id,
            "event_id": n.event_id,
            "urgent": true,
            "unread_count": 3,
        })
    );
    assert_eq!(m["vapid"]["problems"], json!([]), "{m:#}");
    assert_eq!(m["vapid"]["claims"]["aud"], json!(peer.origin()));
    assert_eq!(m["vapid"]["claims"]["sub"], json!(VAPID_SUBJECT));
    let key = vapid::public_key(&app.db, &app.state().master_key, admin.tenant_id)
        .await
        .unwrap();
    assert_eq!(m["vapid"]["k"], json!(key));
    assert_eq!(m["content_encoding"], json!("aes128gcm"));
    assert_eq!(m["urgency"], json!("high"));
    assert_eq!(m["ttl"], json!("86400"));
    assert_eq!(m["topic"], json!(n.notification_id.simple().to_string()));

    // Not urgent: normal urgency; the key pair stays the same.
    let n2 = outbound(&admin, "MENTION", false);
    assert_eq!(channels(&app).web_push(&app.db, &n2).await, Outcome::Sent);
    let got = peer.wait_for_messages(&sub, 2).await;
    assert_eq!(got[1]["urgency"], json!("normal"));
    assert_eq!(got[1]["vapid"]["k"], json!(key));
    assert_eq!(got[1]["payload"]["kind"], json!("MENTION"));
}

#[tokio::test]
async fn web_push_410_and_404_remove_the_subscription_others_still_receive() {
    let mut peer = PushPeer::start().await;
    let app = app_with(vec![]).await;
    let admin = app.create_tenant("wp-gone").await;
    let gone = peer.subscribe().await;
    let missing = peer.subscribe().await;
    let fine = peer.subscribe().await;
    for s in [&gone, &missing, &fine] {
        subscribe(&app, &admin, s).await;
    }
    peer.set_mode(Some(&gone), "gone").await;
    peer.set_mode(Some(&missing), "notfound").await;
    let n = outbound(&admin, "NOTE_POSTED", false);
    assert_eq!(channels(&app).web_push(&app.db, &n).await, Outcome::Sent);
    peer.wait_for_messages(&fine, 1).await;
    let left: Vec<String> = entity::push_subscription::Entity::find()
        .filter(entity::push_subscription::Column::UserId.eq(admin.id))
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.endpoint)
        .collect();
    assert_eq!(left, vec![fine.endpoint.clone()]);

    peer.set_mode(Some(&fine), "gone").await;
    assert_eq!(
        channels(&app)
            .web_push(&app.db, &outbound(&admin, "NOTE_POSTED", false))
            .await,
        Outcome::NoTarget
    );
    assert_eq!(subscription_count(&app, &admin).await, 0);
}

#[tokio::test]
async fn web_push_5xx_timeout_or_down_is_retry_and_keeps_the_subscription() {
    let mut peer = PushPeer::start().await;
    let app = app_with(vec![]).await;
    let admin = app.create_tenant("wp-retry").await;
    let sub = peer.subscribe().await;
    subscribe(&app, &admin, &sub).await;
    let ch = channels(&app);

    peer.set_mode(None, "error").await;
    let outcome = ch
        .web_push(&app.db, &outbound(&admin, "NOTE_POSTED", false))
        .await;
    assert!(
        matches!(&outcome, Outcome::Retry(r) if r.contains("500")),
        "{outcome:?}"
    );

    peer.set_mode(None, "hang").await;
    let outcome = ch
        .web_push(&app.db, &outbound(&admin, "NOTE_POSTED", false))
        .await;
    assert!(
        matches!(&outcome, Outcome::Retry(r) if r.contains("timed out")),
        "{outcome:?}"
    );

    peer.stop().await;
    let outcome = ch
        .web_push(&app.db, &outbound(&admin, "NOTE_POSTED", false))
        .await;
    assert!(matches!(&outcome, Outcome::Retry(_)), "{outcome:?}");
    // No endpoint (it holds the subscription's token) in any reason.
    if let Outcome::Retry(r) = &outcome {
        assert!(!r.contains("127.0.0.1") && !r.contains(&sub.id), "{r}");
    }
    assert_eq!(subscription_count(&app, &admin).await, 1);

    // Nobody subscribed: nothing to do.
    let other = app
        .create_user(&admin, "nosub", Role::CityAdmin, None)
        .await;
    assert_eq!(
        ch.web_push(&app.db, &outbound(&other, "NOTE_POSTED", false))
            .await,
        Outcome::NoTarget
    );
}

const GATEWAY_SECRET: &str = "0123456789abcdef0123456789abcdef-gw";

async fn pushkey(app: &TestApp, p: &Person, key: &str) {
    targets::register_pushkey(
        &app.db,
        p.tenant_id,
        p.id,
        targets::NewPushkey {
            app_id: "jp.city.renkei.ios",
            pushkey: key,
            device_label: Some("iPhone"),
        },
        &Origin::default(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn gateway_gets_a_signed_matrix_shaped_body_and_rejected_pushkeys_are_removed() {
    let mut peer = GatewayPeer::start(GATEWAY_SECRET).await;
    let app = app_with(vec![]).await;
    let admin = app.create_tenant("gw").await;
    let ch = channels(&app);
    // Not configured: nothing to do.
    pushkey(&app, &admin, "device-token-a").await;
    pushkey(&app, &admin, "device-token-b").await;
    let n = outbound(&admin, "NOTE_POSTED", true);
    assert_eq!(ch.gateway(&app.db, &n).await, Outcome::NoTarget);

    let url: reqwest::Url = peer.url().parse().unwrap();
    gateway::set(
        &app.db,
        &app.state().master_key,
        admin.tenant_id,
        &url,
        &GATEWAY_SECRET.to_string().into(),
    )
    .await
    .unwrap();
    assert_eq!(ch.gateway(&app.db, &n).await, Outcome::Sent);
    let got = peer.wait_for("one gateway POST", |r| !r.is_empty()).await;
    let r = &got[0];
    assert_eq!(r["signature_valid"], json!(true), "{r:#}");
    assert_eq!(r["path"], json!("/_matrix/push/v1/notify"));
    assert_eq!(r["content_type"], json!("application/json"));
    let note = &r["body"]["notification"];
    assert_eq!(note["event_id"], json!(n.event_id));
    assert_eq!(note["room_id"], json!(n.room_id));
    assert_eq!(note["type"], json!("NOTE_POSTED"));
    assert_eq!(note["prio"], json!("high"));
    assert_eq!(note["counts"], json!({"unread": 3}));
    assert_eq!(note["id"], json!(n.notification_id));
    let mut keys: Vec<&str> = note["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["app_id"], json!("jp.city.renkei.ios"));
            assert!(d["pushkey_ts"].as_i64().unwrap() > 1_700_000_000);
            d["pushkey"].as_str().unwrap()
        })
        .collect();
    keys.sort();
    assert_eq!(keys, ["device-token-a", "device-token-b"]);
    let mut fields: Vec<&String> = note.as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "counts", "devices", "event_id", "id", "prio", "room_id", "type"
        ]
    );

    // The gateway rejects one pushkey: it is removed, the other stays.
    peer.reject(&["device-token-a"]).await;
    assert_eq!(
        ch.gateway(&app.db, &outbound(&admin, "MENTION", false))
            .await,
        Outcome::Sent
    );
    let left: Vec<String> = targets::pushkeys_of(&app.db, admin.id)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.pushkey)
        .collect();
    assert_eq!(left, vec!["device-token-b".to_string()]);

    // 5xx and a hanging gateway are retried; a wrong secret (401) is not.
    peer.set_mode("error").await;
    let o = ch
        .gateway(&app.db, &outbound(&admin, "MENTION", false))
        .await;
    assert!(
        matches!(&o, Outcome::Retry(r) if r.contains("500")),
        "{o:?}"
    );
    peer.set_mode("hang").await;
    let o = ch
        .gateway(&app.db, &outbound(&admin, "MENTION", false))
        .await;
    assert!(
        matches!(&o, Outcome::Retry(r) if r.contains("timed out")),
        "{o:?}"
    );
    peer.set_mode("ok").await;
    gateway::set(
        &app.db,
        &app.state().master_key,
        admin.tenant_id,
        &url,
        &"another-secret-another-secret-another".to_string().into(),
    )
    .await
    .unwrap();
    let o = ch
        .gateway(&app.db, &outbound(&admin, "MENTION", false))
        .await;
    assert!(
        matches!(&o, Outcome::Failed(r) if r.contains("401")),
        "{o:?}"
    );
    let last = peer.received().last().cloned().unwrap();
    assert_eq!(last["signature_valid"], json!(false));
}

async fn with_email(app: &TestApp, p: &Person, address: &str) {
    let address = address.to_string();
    app.edit_user(p.id, move |u| u.email = Set(Some(address)))
        .await;
}

fn assert_no_content(mail: &Value) {
    let raw = mail["raw"].as_str().unwrap();
    for secret in ["山田", "太郎", "血圧", "patient_name"] {
        assert!(!raw.contains(secret), "{secret} in {raw}");
    }
}

#[tokio::test]
async fn email_has_envelope_headers_and_a_text_with_the_link_only() {
    let smtp = SmtpPeer::start().await;
    let app = app_with(smtp.env()).await;
    let admin = app.create_tenant("mail").await;
    with_email(&app, &admin, "nurse@station.test").await;
    let ch = channels(&app);
    let n = outbound(&admin, "NOTE_POSTED", false);
    assert_eq!(
        ch.email(&app.db, admin.id, std::slice::from_ref(&n)).await,
        Outcome::Sent
    );
    let mails = smtp.wait_for_mails("nurse@station.test", 1).await;
    let m = &mails[0];
    assert_eq!(m["mail_from"], json!("renkei@city.test"));
    assert_eq!(m["rcpt_tos"], json!(["nurse@station.test"]));
    let h = &m["headers"];
    assert_eq!(h["from"], json!("Renkei <renkei@city.test>"));
    assert_eq!(h["to"], json!("nurse@station.test"));
    assert_eq!(h["subject"], json!("【Renkei】新しいお知らせがあります"));
    assert!(h["date"].as_str().is_some_and(|d| !d.is_empty()), "{h:#}");
    assert_eq!(
        h["message-id"],
        json!(format!("<{}@city.test>", n.notification_id))
    );
    assert_eq!(m["content_type"], json!("text/plain"));
    let text = m["text"].as_str().unwrap();
    assert!(
        text.contains("A new note in one of your patient rooms."),
        "{text}"
    );
    assert!(text.contains(&format!("{PUBLIC_URL}/")), "{text}");
    assert_no_content(m);

    // A user without an address has nothing to send to.
    let other = app
        .create_user(&admin, "nomail", Role::CityAdmin, None)
        .await;
    assert_eq!(ch.email(&app.db, other.id, &[n]).await, Outcome::NoTarget);
}

#[tokio::test]
async fn email_digest_is_one_mail_listing_every_item() {
    let smtp = SmtpPeer::start().await;
    let app = app_with(smtp.env()).await;
    let admin = app.create_tenant("digest").await;
    with_email(&app, &admin, "doctor@clinic.test").await;
    let items = vec![
        outbound(&admin, "NOTE_POSTED", false),
        outbound(&admin, "MENTION", true),
        outbound(&admin, "INVITATION", false),
    ];
    assert_eq!(
        channels(&app).email(&app.db, admin.id, &items).await,
        Outcome::Sent
    );
    let mails = smtp.wait_for_mails("doctor@clinic.test", 1).await;
    assert_eq!(smtp.received().len(), 1, "a digest is one mail");
    let m = &mails[0];
    assert_eq!(
        m["headers"]["subject"],
        json!("【Renkei・至急を含む】新しいお知らせが3件あります")
    );
    let text = m["text"].as_str().unwrap();
    assert!(text.contains("3 new notifications"), "{text}");
    assert!(text.contains("A new note in one of your patient rooms."));
    assert!(text.contains("You were mentioned"));
    assert!(text.contains("You were invited"));
    assert!(text.contains("URGENT"));
    assert!(
        m["headers"]["message-id"]
            .as_str()
            .unwrap()
            .starts_with("<digest.")
    );
    assert_no_content(m);
}

#[tokio::test]
async fn email_over_starttls_with_login() {
    let smtp = SmtpPeer::start_with(SmtpOptions {
        starttls: true,
        auth: Some(("renkei".into(), "mail-pass".into())),
    })
    .await;
    let app = app_with(smtp.env()).await;
    let admin = app.create_tenant("tls-mail").await;
    with_email(&app, &admin, "care@office.test").await;
    let n = outbound(&admin, "NOTE_POSTED", true);
    assert_eq!(
        channels(&app).email(&app.db, admin.id, &[n]).await,
        Outcome::Sent
    );
    let mails = smtp.wait_for_mails("care@office.test", 1).await;
    assert_eq!(mails[0]["tls"], json!(true));
    assert_eq!(mails[0]["authenticated"], json!(true));
    assert_eq!(
        mails[0]["headers"]["subject"],
        json!("【Renkei・至急】新しいお知らせがあります")
    );
}

#[tokio::test]
async fn smtp_down_or_tempfail_is_retry_and_the_mail_goes_out_once_it_is_back() {
    let mut smtp = SmtpPeer::start().await;
    let app = app_with(smtp.env()).await;
    let admin = app.create_tenant("mail-down").await;
    with_email(&app, &admin, "nurse@down.test").await;
    let ch = channels(&app);
    let n = outbound(&admin, "NOTE_POSTED", false);

    smtp.stop().await;
    let o = ch.email(&app.db, admin.id, std::slice::from_ref(&n)).await;
    assert!(matches!(o, Outcome::Retry(_)), "{o:?}");

    smtp.restart().await;
    smtp.set_mode("tempfail").await;
    let o = ch.email(&app.db, admin.id, std::slice::from_ref(&n)).await;
    assert!(
        matches!(&o, Outcome::Retry(r) if r.contains("451")),
        "{o:?}"
    );
    if let Outcome::Retry(r) = &o {
        assert!(!r.contains("nurse@"), "{r}");
    }

    smtp.set_mode("ok").await;
    assert_eq!(ch.email(&app.db, admin.id, &[n]).await, Outcome::Sent);
    smtp.wait_for_mails("nurse@down.test", 1).await;
}

// ---------------------------------------------------------------------------------------------
// GraphQL: subscriptions and devices, each user's own
// ---------------------------------------------------------------------------------------------

const REGISTER: &str = "mutation($e:String!,$p:String!,$a:String!,$l:String){ registerPushSubscription(endpoint:$e, p256dh:$p, auth:$a, deviceLabel:$l){ id endpointOrigin deviceLabel createdAt lastSuccessAt } }";
const MINE: &str = "{ myPushSubscriptions { id endpointOrigin deviceLabel } }";
const REMOVE: &str = "mutation($id:ID!){ removePushSubscription(id:$id) }";
const VAPID_KEY: &str = "{ vapidPublicKey }";
const REGISTER_DEVICE: &str = "mutation($a:String!,$k:String!){ registerPushDevice(appId:$a, pushkey:$k, deviceLabel:\"phone\"){ id appId deviceLabel } }";
const MY_DEVICES: &str = "{ myPushDevices { id appId } }";
const REMOVE_DEVICE: &str = "mutation($id:ID!){ removePushDevice(id:$id) }";

#[tokio::test]
async fn registered_subscription_is_validated_and_receives_pushes() {
    let mut peer = PushPeer::start().await;
    let app = app_with(vec![]).await;
    let mut admin = app.create_tenant("gql-push").await;
    let client = app.login_ready(&mut admin).await;
    let key = client.graphql(VAPID_KEY, json!({})).await.ok()["vapidPublicKey"]
        .as_str()
        .unwrap()
        .to_string();
    let raw =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &key).unwrap();
    assert_eq!((raw.len(), raw[0]), (65, 4), "uncompressed P-256 point");
    // The same key on every call.
    assert_eq!(
        client.graphql(VAPID_KEY, json!({})).await.ok()["vapidPublicKey"],
        json!(key)
    );

    let sub = peer.subscribe().await;
    let good = json!({"e": sub.endpoint, "p": sub.p256dh, "a": sub.auth, "l": "laptop"});
    let bad_point = {
        let mut bytes = base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &sub.p256dh,
        )
        .unwrap();
        bytes[64] ^= 1;
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
    };
    let cases = [
        (
            "e",
            json!(sub.endpoint.replace("https://", "http://")),
            "endpoint",
        ),
        ("e", json!("not a url"), "endpoint"),
        ("e", json!("https://user:pw@push.example/x"), "endpoint"),
        ("p", json!(bad_point), "p256dh"),
        ("p", json!("AAAA"), "p256dh"),
        ("p", json!("!!!notbase64!!!"), "p256dh"),
        ("a", json!("AAAAAAAAAAAAAAAAAAAAAA__"), "auth"),
        ("a", json!("c2hvcnQ"), "auth"),
        ("l", json!("x".repeat(101)), "deviceLabel"),
    ];
    for (var, value, field) in cases {
        let mut vars = good.clone();
        vars[var] = value.clone();
        let r = client.graphql(REGISTER, vars).await;
        r.expect_code("BAD_USER_INPUT");
        assert_eq!(r.field(), Some(field), "{var}={value}");
    }
    assert_eq!(
        client.graphql(MINE, json!({})).await.ok()["myPushSubscriptions"],
        json!([])
    );

    let r = client.graphql(REGISTER, good.clone()).await;
    let created = r.ok()["registerPushSubscription"].clone();
    assert_eq!(created["endpointOrigin"], json!(peer.origin()));
    assert_eq!(created["deviceLabel"], json!("laptop"));
    // Registering the same endpoint again replaces it.
    client.graphql(REGISTER, good).await.ok();
    let mine = client.graphql(MINE, json!({})).await.ok()["myPushSubscriptions"].clone();
    assert_eq!(mine.as_array().unwrap().len(), 1);

    let n = outbound(&admin, "NOTE_POSTED", false);
    assert_eq!(channels(&app).web_push(&app.db, &n).await, Outcome::Sent);
    let got = peer.wait_for_messages(&sub, 1).await;
    assert_eq!(got[0]["vapid"]["k"], json!(key));
    assert_eq!(
        got[0]["payload"]["notification_id"],
        json!(n.notification_id)
    );

    // An endpoint inside the server's network is refused unless the setting allows it.
    let strict = spawn_app_with(TestOptions::default()).await;
    let mut strict_admin = strict.create_tenant("strict-push").await;
    let strict_client = strict.login_ready(&mut strict_admin).await;
    let r = strict_client
        .graphql(
            REGISTER,
            json!({"e": sub.endpoint, "p": sub.p256dh, "a": sub.auth}),
        )
        .await;
    r.expect_code("BAD_USER_INPUT");
    assert_eq!(r.field(), Some("endpoint"));
}

#[tokio::test]
async fn a_user_sees_and_removes_only_its_own_subscriptions_and_devices() {
    let mut peer = PushPeer::start().await;
    let app = app_with(vec![]).await;
    let mut admin = app.create_tenant("gql-own").await;
    let mut other = app
        .create_user(&admin, "other", Role::CityAdmin, None)
        .await;
    let mine = app.login_ready(&mut admin).await;
    let theirs = app.login_ready(&mut other).await;
    let s1 = peer.subscribe().await;
    let s2 = peer.subscribe().await;
    let my_id = mine
        .graphql(
            REGISTER,
            json!({"e": s1.endpoint, "p": s1.p256dh, "a": s1.auth}),
        )
        .await
        .ok()["registerPushSubscription"]["id"]
        .clone();
    let their_id = theirs
        .graphql(
            REGISTER,
            json!({"e": s2.endpoint, "p": s2.p256dh, "a": s2.auth}),
        )
        .await
        .ok()["registerPushSubscription"]["id"]
        .clone();
    let ids = |v: &Value, key: &str| -> Vec<Value> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].clone())
            .collect()
    };
    assert_eq!(
        ids(
            mine.graphql(MINE, json!({})).await.ok(),
            "myPushSubscriptions"
        ),
        vec![my_id.clone()]
    );
    assert_eq!(
        ids(
            theirs.graphql(MINE, json!({})).await.ok(),
            "myPushSubscriptions"
        ),
        vec![their_id.clone()]
    );

    // Someone else's: NOT_FOUND, and it stays.
    mine.graphql(REMOVE, json!({"id": their_id}))
        .await
        .expect_code("NOT_FOUND");
    assert_eq!(
        ids(
            theirs.graphql(MINE, json!({})).await.ok(),
            "myPushSubscriptions"
        ),
        vec![their_id.clone()]
    );
    assert_eq!(
        mine.graphql(REMOVE, json!({"id": my_id})).await.ok()["removePushSubscription"],
        json!(true)
    );
    assert_eq!(subscription_count(&app, &admin).await, 0);
    assert_eq!(subscription_count(&app, &other).await, 1);

    // Devices the same way.
    let dev = theirs
        .graphql(
            REGISTER_DEVICE,
            json!({"a": "jp.city.renkei.android", "k": "fcm-token-1"}),
        )
        .await
        .ok()["registerPushDevice"]["id"]
        .clone();
    theirs
        .graphql(
            REGISTER_DEVICE,
            json!({"a": "jp.city.renkei.android", "k": "has space"}),
        )
        .await
        .expect_code("BAD_USER_INPUT");
    assert_eq!(
        ids(
            mine.graphql(MY_DEVICES, json!({})).await.ok(),
            "myPushDevices"
        ),
        Vec::<Value>::new()
    );
    mine.graphql(REMOVE_DEVICE, json!({"id": dev}))
        .await
        .expect_code("NOT_FOUND");
    assert_eq!(
        ids(
            theirs.graphql(MY_DEVICES, json!({})).await.ok(),
            "myPushDevices"
        ),
        vec![dev.clone()]
    );
    assert_eq!(
        theirs.graphql(REMOVE_DEVICE, json!({"id": dev})).await.ok()["removePushDevice"],
        json!(true)
    );

    // Registration and removal are audited.
    let actions: Vec<String> = entity::audit_event::Entity::find()
        .filter(entity::audit_event::Column::TenantId.eq(admin.tenant_id))
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .filter(|a| a.starts_with("push."))
        .collect();
    for a in [
        "push.subscribe",
        "push.unsubscribe",
        "push.pushkey.register",
        "push.pushkey.remove",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }

    // Without a login nothing is answered.
    let anonymous = app.client_for(&admin);
    for q in [VAPID_KEY, MINE, MY_DEVICES] {
        anonymous
            .graphql(q, json!({}))
            .await
            .expect_code("UNAUTHENTICATED");
    }
    anonymous
        .graphql(
            REGISTER,
            json!({"e": s1.endpoint, "p": s1.p256dh, "a": s1.auth}),
        )
        .await
        .expect_code("UNAUTHENTICATED");
    anonymous
        .graphql(REMOVE, json!({"id": their_id}))
        .await
        .expect_code("UNAUTHENTICATED");
    assert_eq!(subscription_count(&app, &other).await, 1);
}
