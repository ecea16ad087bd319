//! Issue 20, points 3 and 6, through the whole chain and the real peers (`renkei_tests::peers`):
//! `postNote` writes the outbox, the server's own worker claims the rows and the channels send
//! them to a Web Push endpoint that decrypts with the subscription's private key (http_ece) and
//! checks VAPID, and to an SMTP server (aiosmtpd). Nothing a patient could be recognised by is
//! in what they receive.
//!
//! Runs on both databases (`RENKEI_TEST_DB=sqlite|postgres`).

use serde_json::json;

use renkei_tests::peers::{PushPeer, SmtpPeer};

use crate::notifications::{Team, UPDATE_PREFS, post};
use crate::rooms::str_of;

const REGISTER: &str = "mutation($e:String!,$p:String!,$a:String!){ registerPushSubscription(endpoint:$e, p256dh:$p, auth:$a, deviceLabel:\"laptop\"){ id } }";

#[tokio::test]
async fn a_note_reaches_the_push_endpoint_decrypted_and_the_mail_server_without_patient_data() {
    let mut push = PushPeer::start().await;
    let smtp = SmtpPeer::start().await;
    let mut env: Vec<(String, String)> = push.env();
    env.extend(smtp.env());
    env.push(("RENKEI_VAPID_SUBJECT".into(), "mailto:ops@city.test".into()));
    env.push(("RENKEI_PUSH_ALLOW_PRIVATE_ENDPOINTS".into(), "true".into()));
    env.push((
        "RENKEI_NOTIFICATION_EMAIL_DIGEST_MINUTES".into(),
        "0".into(),
    ));
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let t = Team::new(&env_ref).await;
    t.k.app
        .edit_user(t.doc.id, |u| {
            u.email = sea_orm::Set(Some("doc@clinic.test".into()));
        })
        .await;
    t.doc_c
        .graphql(UPDATE_PREFS, json!({ "i": { "quietHoursEnabled": false } }))
        .await
        .ok();
    let sub = push.subscribe().await;
    t.doc_c
        .graphql(
            REGISTER,
            json!({ "e": sub.endpoint, "p": sub.p256dh, "a": sub.auth }),
        )
        .await
        .ok();

    let body = "山田さん 血圧 158/96 服薬確認お願いします";
    let note = post(
        &t.nurse_c,
        &t.room,
        json!({ "body": body, "mentionUserIds": [t.doc.id.to_string()] }),
    )
    .await;
    let note_id = str_of(&note["id"]).to_string();

    let messages = push
        .wait_for("the note's push", |r| {
            r.iter()
                .any(|m| m["payload"]["event_id"] == note_id.as_str())
        })
        .await;
    let m = messages
        .iter()
        .find(|m| m["payload"]["event_id"] == note_id.as_str())
        .unwrap_or_else(|| panic!("no push for the note: {messages:#?}"));
    assert!(m.get("error").is_none(), "{m:#}");
    assert_eq!(m["payload"]["kind"], "MENTION");
    assert_eq!(m["payload"]["room_id"], t.room.as_str());
    assert_eq!(m["vapid"]["problems"], json!([]), "{m:#}");

    let mails = smtp.wait_for_mails("doc@clinic.test", 1).await;
    let secrets = ["山田", "太郎", "ヤマダ", "山田 太. (1940)", body, "158/96"];
    for received in messages.iter().chain(&mails) {
        let text = received.to_string();
        for s in secrets {
            assert!(!text.contains(s), "{s:?} left in {text}");
        }
    }
    push.stop().await;
}
