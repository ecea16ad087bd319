//! Login storm benchmark (issue 3, point 9): login p50/p99 with 20 concurrent logins, and the
//! p50/p99 of `{ me { id } }` from one logged-in user with and without such a storm running.
//! The storm may at most double `me`'s p99; the ratio is printed, never enforced (a benchmark
//! does not fail on timing).
//!
//! A real server is spawned in-process over TLS (the e2e harness), with
//! the server's default `RENKEI_PASSWORD_HASH_CONCURRENCY` (0 = one per CPU), as in production. Every login presents the user's client certificate and password.
//!
//! Run: `cargo bench -p renkei-tests --bench login` (release profile; `RENKEI_TEST_DB=postgres`
//! to run on PostgreSQL and Redis instead of SQLite and the in-process stores).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use entity::kinds::Role;
use renkei_tests::stats::{ms, summarize};
use renkei_tests::{Person, TestClient, TestOptions, spawn_app_with};
use serde_json::json;

/// Concurrent logins in the storm.
const STORM_USERS: usize = 20;
/// Sequential `me` requests per measurement.
const ME_REQUESTS: usize = 2000;
/// Unmeasured `me` requests before the baseline.
const ME_WARMUP: usize = 20;
/// The storm lasts at least this long (and until the `me` measurement under it is done).
const STORM_DURATION: Duration = Duration::from_secs(10);
/// How long the storm runs before `me` is measured under it.
const STORM_RAMP_UP: Duration = Duration::from_secs(1);
/// 0 = the server default (one per CPU).
const HASH_CONCURRENCY: &str = "0";

const LOGIN: &str = "mutation($t:String!,$l:String!,$p:String!){ login(tenant:$t, loginId:$l, password:$p){ token } }";
const ME: &str = "{ me { id } }";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

async fn me_latencies(client: &TestClient, n: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let resp = client.graphql(ME, json!({})).await;
        samples.push(started.elapsed());
        assert!(resp.ok()["me"]["id"].is_string(), "me: {}", resp.body);
    }
    samples
}

/// One storm worker: logs in with its own certificate and password until told to stop.
async fn login_loop(
    client: TestClient,
    person: Person,
    stop: Arc<AtomicBool>,
) -> (Vec<Duration>, usize) {
    let variables = json!({ "t": person.tenant, "l": person.login_id, "p": person.password });
    let mut samples = Vec::new();
    let mut failures = 0;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let resp = client.graphql(LOGIN, variables.clone()).await;
        let elapsed = started.elapsed();
        if resp.errors().is_empty() && resp.data()["login"]["token"].is_string() {
            samples.push(elapsed);
        } else {
            failures += 1;
            if failures == 1 {
                eprintln!("login of {} failed: {}", person.login_id, resp.body);
            }
        }
    }
    (samples, failures)
}

async fn run() {
    let mut app = spawn_app_with(TestOptions {
        env: vec![(
            "RENKEI_PASSWORD_HASH_CONCURRENCY".into(),
            HASH_CONCURRENCY.into(),
        )],
        ..Default::default()
    })
    .await;

    // Fixtures: one tenant, one facility, 20 STAFF for the storm and one who watches `me`.
    let admin = app.create_tenant("bench").await;
    let facility = app.create_facility(admin.tenant_id, "Bench Clinic").await;
    let mut storm = Vec::with_capacity(STORM_USERS);
    for i in 0..STORM_USERS {
        let person = app
            .create_user(&admin, &format!("storm{i:02}"), Role::Staff, Some(facility))
            .await;
        let client = app.client_for(&person);
        // Warm the TLS connection (handshake with the client certificate) outside the figures.
        let warm = client.graphql("{ __typename }", json!({})).await;
        assert!(warm.status.is_success(), "warm-up: {}", warm.body);
        storm.push((client, person));
    }
    let mut watcher = app
        .create_user(&admin, "watcher", Role::Staff, Some(facility))
        .await;
    let me_client = app.login_ready(&mut watcher).await;
    me_latencies(&me_client, ME_WARMUP).await;

    // Baseline: `me` on a quiet server.
    let baseline = summarize(me_latencies(&me_client, ME_REQUESTS).await);

    // The storm: 20 users logging in over and over, each on its own connection.
    let stop = Arc::new(AtomicBool::new(false));
    let storm_started = Instant::now();
    let workers: Vec<_> = storm
        .into_iter()
        .map(|(client, person)| tokio::spawn(login_loop(client, person, stop.clone())))
        .collect();
    tokio::time::sleep(STORM_RAMP_UP).await;
    let me_started = Instant::now();
    let under_storm = summarize(me_latencies(&me_client, ME_REQUESTS).await);
    let me_took = me_started.elapsed();
    if let Some(rest) = STORM_DURATION.checked_sub(storm_started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut login_samples = Vec::new();
    let mut failures = 0;
    for worker in workers {
        let (samples, failed) = worker.await.expect("storm worker");
        login_samples.extend(samples);
        failures += failed;
    }
    let storm_took = storm_started.elapsed();
    let logins = summarize(login_samples);

    let ratio = under_storm.p99.as_secs_f64() / baseline.p99.as_secs_f64();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let backend = match renkei_tests::backend() {
        renkei_tests::Backend::Sqlite => "SQLite, in-process stores",
        renkei_tests::Backend::Postgres => "PostgreSQL + Redis",
    };

    println!();
    println!("## Login storm: {STORM_USERS} concurrent logins, `{ME}` x {ME_REQUESTS} sequential");
    println!();
    println!(
        "Machine: {cpus} CPUs (nproc); {backend}; RENKEI_PASSWORD_HASH_CONCURRENCY={HASH_CONCURRENCY}; release build"
    );
    println!();
    println!("| measurement | requests | p50 | p99 | max |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| `me`, quiet | {} | {} | {} | {} |",
        baseline.count,
        ms(baseline.p50),
        ms(baseline.p99),
        ms(baseline.max)
    );
    println!(
        "| `me`, during storm | {} | {} | {} | {} |",
        under_storm.count,
        ms(under_storm.p50),
        ms(under_storm.p99),
        ms(under_storm.max)
    );
    println!(
        "| `login`, storm ({} failed) | {} | {} | {} | {} |",
        failures,
        logins.count,
        ms(logins.p50),
        ms(logins.p99),
        ms(logins.max)
    );
    println!();
    println!(
        "Storm: {} successful logins in {:.1} s = {:.1} logins/s; `me` under storm measured over {:.1} s, starting {:.0} s in.",
        logins.count,
        storm_took.as_secs_f64(),
        logins.count as f64 / storm_took.as_secs_f64(),
        me_took.as_secs_f64(),
        STORM_RAMP_UP.as_secs_f64()
    );
    println!(
        "`me` p99 during storm / quiet: {ratio:.2}x ({}: the storm may at most double it)",
        if ratio <= 2.0 { "OK, <= 2" } else { "OVER 2" }
    );
    println!();

    app.stop().await;
}
