//! Notifications (issue 20, point 7).
//!
//! 1. `postNote` latency in a room of 20 members with every channel on (19 notifications and
//!    their delivery rows written in the note's transaction) against the same with the tenant's
//!    channels all off (nothing written). Rounds alternate on / off on one server, so drift in
//!    the machine affects both alike. Target: p99 on ≤ 1.2 × p99 off.
//! 2. Sustained delivery over two instances: notes posted through both at a rate that makes
//!    `NOTIFICATIONS_PER_MINUTE` notifications, for `MINUTES`; the figure is how long after the
//!    last post every delivery row is finished (the backlog drained) and the rate achieved.
//!    The tenant has only the in-app channel on, so what is measured is the worker's own work
//!    (claims with SKIP LOCKED, send-time checks, the live event through Redis, conditional
//!    outcomes), not a push service's or an SMTP server's speed.
//!
//! Run: `cargo bench -p renkei-tests --bench notifications` (`RENKEI_TEST_DB=postgres` for
//! PostgreSQL and Redis). The figures are printed, never enforced.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use entity::kinds::Role;
use entity::notification_delivery::{self as delivery, DeliveryState};
use renkei_tests::stats::{ms, summarize};
use renkei_tests::{Person, TestApp, TestClient, TestOptions, spawn_app_with};

const MEMBERS: usize = 20;
const POSTS_PER_ROUND: usize = 200;
const ROUNDS: usize = 3;
const NOTIFICATIONS_PER_MINUTE: usize = 10_000;
const MINUTES: u64 = 1;

const OPEN_ROOM: &str = "mutation($p:PatientInput!,$c:ConsentInput!,$i:[ID!]!){ openRoom(patient:$p, consent:$c, inviteUserIds:$i){ id invitations { id invitee { id } } } }";
const ACCEPT: &str = "mutation($id:ID!){ acceptInvitation(id:$id){ id } }";
const POST: &str = "mutation($i:PostNoteInput!){ postNote(input:$i){ id } }";
const CHANNELS: &str =
    "mutation($i:NotificationChannelsInput!){ setTenantNotificationChannels(input:$i){ inApp } }";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(post_note_latency());
    runtime.block_on(sustained_delivery());
}

async fn session(app: &TestApp, person: &Person) -> TestClient {
    let new = app
        .state()
        .sessions
        .create(person.id, person.tenant_id, &person.fingerprint)
        .await
        .expect("session store");
    app.client_for(person)
        .with_token(new.token.expose_secret().to_string())
}

fn consent() -> Value {
    let day = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Tokyo)
        .date_naive()
        - chrono::Duration::days(30);
    json!({ "consenter": "PATIENT", "consenterName": "山田 太郎", "consentedOn": day.to_string() })
}

/// A tenant with a room of `MEMBERS` members (all with an e-mail address): the city's
/// session, the members' sessions on `app`, the room id.
async fn fixture(app: &TestApp) -> (TestClient, Vec<Person>, Vec<TestClient>, String) {
    let admin = app.create_tenant("bench").await;
    let city = app.ready_session(&admin).await;
    let facility = app.create_facility(admin.tenant_id, "Bench Clinic").await;
    let mut people = Vec::new();
    let mut clients = Vec::new();
    for i in 0..MEMBERS {
        let p = app
            .create_user_without_password(&admin, &format!("m{i:02}"), Role::Staff, Some(facility))
            .await;
        app.edit_user(p.id, |u| {
            u.email = sea_orm::Set(Some(format!("m{i:02}@bench.test")));
        })
        .await;
        clients.push(session(app, &p).await);
        people.push(p);
    }
    let ids: Vec<String> = people.iter().map(|p| p.id.to_string()).collect();
    let opened = city
        .graphql(
            OPEN_ROOM,
            json!({ "p": { "name": "山田 太郎", "nameKana": "ヤマダ タロウ", "birthDate": "1940-05-01", "sex": "MALE" }, "c": consent(), "i": ids }),
        )
        .await;
    let opened = opened.ok()["openRoom"].clone();
    let room = opened["id"].as_str().unwrap().to_string();
    for inv in opened["invitations"].as_array().unwrap() {
        let who = inv["invitee"]["id"].as_str().unwrap();
        let i = people.iter().position(|p| p.id.to_string() == who).unwrap();
        clients[i]
            .graphql(ACCEPT, json!({ "id": inv["id"] }))
            .await
            .ok();
    }
    (city, people, clients, room)
}

async fn set_channels(city: &TestClient, on: bool) {
    city.graphql(
        CHANNELS,
        json!({ "i": { "inApp": on, "webPush": on, "gateway": on, "email": on } }),
    )
    .await
    .ok();
}

async fn post(client: &TestClient, room: &str, n: usize) -> Duration {
    let started = Instant::now();
    let resp = client
        .graphql(
            POST,
            json!({ "i": { "roomId": room, "body": format!("定期訪問 {n}") } }),
        )
        .await;
    assert!(resp.ok()["postNote"]["id"].is_string(), "{}", resp.body);
    started.elapsed()
}

async fn post_note_latency() {
    let mut app = spawn_app_with(TestOptions::default()).await;
    let (city, _people, clients, room) = fixture(&app).await;
    for n in 0..50 {
        post(&clients[0], &room, n).await;
    }
    let mut on = Vec::new();
    let mut off = Vec::new();
    for round in 0..ROUNDS * 2 {
        let channels_on = round % 2 == 0;
        set_channels(&city, channels_on).await;
        for n in 0..POSTS_PER_ROUND {
            let took = post(&clients[n % MEMBERS], &room, n).await;
            if channels_on { &mut on } else { &mut off }.push(took);
        }
    }
    let rows = delivery::Entity::find().count(&app.db).await.unwrap();
    let on = summarize(on);
    let off = summarize(off);
    println!(
        "postNote, room of {MEMBERS} ({:?}): notifications on p50 {} p99 {} | off p50 {} p99 {} | p99 ratio {:.2} (target ≤ 1.20); {rows} delivery rows written",
        renkei_tests::backend(),
        ms(on.p50),
        ms(on.p99),
        ms(off.p50),
        ms(off.p99),
        on.p99.as_secs_f64() / off.p99.as_secs_f64(),
    );
    app.stop().await;
}

async fn sustained_delivery() {
    let pool = vec![(
        "RENKEI_DATABASE_MAX_CONNECTIONS".to_string(),
        "20".to_string(),
    )];
    let a = spawn_app_with(TestOptions {
        redis: Some(true),
        env: pool.clone(),
        ..Default::default()
    })
    .await;
    let b = spawn_app_with(TestOptions {
        redis: Some(true),
        env: pool,
        share_with: Some(a.shared_backends()),
        ..Default::default()
    })
    .await;
    let (city, people, clients_a, room) = fixture(&a).await;
    city.graphql(
        CHANNELS,
        json!({ "i": { "inApp": true, "webPush": false, "gateway": false, "email": false } }),
    )
    .await
    .ok();
    let mut clients_b = Vec::new();
    for (p, c) in people.iter().zip(&clients_a) {
        // Sessions are shared through Redis: the same token works on B.
        let started = Instant::now();
        while b.client_for(p).get("/healthz").await.status() != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "B never trusted the CA"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        clients_b.push(b.client_for(p).with_token(c.token.clone().unwrap()));
    }
    let per_post = MEMBERS - 1;
    let posts = NOTIFICATIONS_PER_MINUTE * MINUTES as usize / per_post;
    let gap = Duration::from_secs(60 * MINUTES) / posts as u32;
    let before = delivery::Entity::find().count(&a.db).await.unwrap();
    let started = Instant::now();
    let clients_a = &clients_a;
    let clients_b = &clients_b;
    let room = room.as_str();
    let latencies: Vec<(Duration, usize)> = futures_util::stream::iter(0..posts)
        .map(|n| async move {
            // An open-loop schedule: post n goes out at n × gap, whatever the others do.
            tokio::time::sleep_until((started + gap * n as u32).into()).await;
            let clients = if n % 2 == 0 { clients_a } else { clients_b };
            let took = post(&clients[n % MEMBERS], room, n).await;
            (took, n)
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let posted = started.elapsed();
    let latency = summarize(latencies.iter().map(|(d, _)| *d).collect());
    let written = delivery::Entity::find().count(&a.db).await.unwrap() - before;
    loop {
        let open = delivery::Entity::find()
            .filter(delivery::Column::State.is_in([DeliveryState::Pending, DeliveryState::Sending]))
            .count(&a.db)
            .await
            .unwrap();
        if open == 0 {
            break;
        }
        assert!(
            started.elapsed() < posted + Duration::from_secs(600),
            "{open} deliveries still open 10 minutes after the last post"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = started.elapsed();
    let notifications = posts * per_post;
    println!(
        "sustained delivery, two instances ({:?}): {notifications} notifications ({written} delivery rows) posted over {:.1} s (postNote p50 {} p99 {}); backlog drained {:.1} s after the last post; {:.0} notifications/min end to end",
        renkei_tests::backend(),
        posted.as_secs_f64(),
        ms(latency.p50),
        ms(latency.p99),
        (drained - posted).as_secs_f64(),
        notifications as f64 / drained.as_secs_f64() * 60.0,
    );
}
