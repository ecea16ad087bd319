//! Cost of auditing a read (issue 4, point 7): throughput of an audited read, `user(id:)` by a
//! CITY_ADMIN, against the same read with read auditing switched off
//! (`RENKEI_AUDIT_READ_EVENTS=false`, refused in production). Target: under 10 % overhead.
//!
//! A real server in-process over TLS; `CONCURRENCY` clients on one logged-in session send the
//! read back to back for `ROUND` each round; rounds alternate on / off so drift in the machine
//! affects both alike. The figure is printed, never enforced.
//!
//! Run: `cargo bench -p renkei-tests --bench audit` (`RENKEI_TEST_DB=postgres` for PostgreSQL
//! and Redis).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use entity::kinds::Role;
use renkei_tests::{TestOptions, spawn_app_with};
use serde_json::json;

const CONCURRENCY: usize = 8;
const ROUND: Duration = Duration::from_secs(4);
const ROUNDS: usize = 3;
const READ: &str = "query($id: ID!){ user(id: $id){ id loginId } }";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

/// Requests per second of one round against a server with read auditing `on` or off.
async fn round(audited: bool) -> (f64, u64) {
    let mut app = spawn_app_with(TestOptions {
        env: vec![(
            "RENKEI_AUDIT_READ_EVENTS".into(),
            if audited { "true" } else { "false" }.into(),
        )],
        ..Default::default()
    })
    .await;
    let mut admin = app.create_tenant("bench").await;
    let facility = app.create_facility(admin.tenant_id, "Bench Clinic").await;
    let target = app
        .create_user(&admin, "target", Role::Staff, Some(facility))
        .await;
    let client = app.login_ready(&mut admin).await;
    let variables = json!({ "id": target.id.to_string() });
    // Warm-up: connections, caches, prepared statements.
    for _ in 0..50 {
        assert!(client.graphql(READ, variables.clone()).await.ok()["user"]["id"].is_string());
    }
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let client = client.clone();
            let variables = variables.clone();
            tokio::spawn(async move {
                let mut done = 0_u64;
                while started.elapsed() < ROUND {
                    let resp = client.graphql(READ, variables.clone()).await;
                    assert!(resp.ok()["user"]["id"].is_string(), "{}", resp.body);
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    // Every audited read has its event once the buffer is flushed (checked, not assumed).
    let events = client
        .graphql(
            "{ auditEvents(filter: {action: \"user.read\"}, first: 1) { totalCount } }",
            json!({}),
        )
        .await;
    let recorded = events.ok()["auditEvents"]["totalCount"].as_u64().unwrap();
    app.stop().await;
    (rate, recorded)
}

async fn run() {
    let mut on = Vec::new();
    let mut off = Vec::new();
    for _ in 0..ROUNDS {
        let (rate, recorded) = round(true).await;
        assert!(recorded >= 50, "audited round recorded {recorded} reads");
        on.push(rate);
        let (rate, recorded) = round(false).await;
        assert_eq!(recorded, 0, "reads were recorded with auditing off");
        off.push(rate);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (on_median, off_median) = (median(&mut on), median(&mut off));
    let overhead = (1.0 - on_median / off_median) * 100.0;
    let backend = match renkei_tests::backend() {
        renkei_tests::Backend::Sqlite => "SQLite, in-process stores",
        renkei_tests::Backend::Postgres => "PostgreSQL + Redis",
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "## Audited read: `user(id:)` x {CONCURRENCY} concurrent clients, {ROUNDS} rounds of {ROUND:?} each way"
    );
    println!();
    println!("Machine: {cpus} CPUs; {backend}; release build");
    println!();
    println!("| read auditing | rounds (req/s) | median req/s |");
    println!("|---|---|---:|");
    let list = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("| on | {} | {on_median:.0} |", list(&on));
    println!("| off | {} | {off_median:.0} |", list(&off));
    println!();
    println!(
        "Overhead of auditing reads: {overhead:.1} % ({}: target below 10 %)",
        if overhead < 10.0 { "OK" } else { "OVER" }
    );
}
