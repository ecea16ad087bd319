use renkei_tests::proxy::TcpProxy;
use renkei_tests::{Backend, TestOptions, backend, spawn_app, spawn_app_with};

#[tokio::test]
async fn healthz_and_readyz_answer_200() {
    let app = spawn_app().await;
    let client = app.client();
    let alive = client.get("/healthz").await;
    assert_eq!(alive.status(), 200);
    let ready = client.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn readyz_names_redis_when_it_stops_answering_and_recovers() {
    let mut proxy = TcpProxy::start(resolve(&renkei_tests::redis_url(), "redis://")).await;
    let app = spawn_app_with(TestOptions {
        redis_url: Some(format!("redis://{}", proxy.addr)),
        env: vec![("RENKEI_REDIS_TIMEOUT_SECONDS".into(), "1".into())],
        ..Default::default()
    })
    .await;
    let client = app.client();
    assert_eq!(client.get("/readyz").await.status(), 200);

    proxy.cut().await;
    let resp = client.get("/readyz").await;
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["failing"], serde_json::json!(["redis"]));
    // Liveness does not depend on backing services.
    assert_eq!(client.get("/healthz").await.status(), 200);

    proxy.restore().await;
    let mut recovered = false;
    for _ in 0..50 {
        if client.get("/readyz").await.status() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(recovered, "readiness did not recover after Redis came back");
}

#[tokio::test]
async fn readyz_names_the_database_when_it_stops_answering() {
    if backend() != Backend::Postgres {
        // SQLite is a file in the data dir: it cannot become unreachable.
        return;
    }
    let app = spawn_app().await; // creates the per-test database
    let mut proxy = TcpProxy::start(resolve(&renkei_tests::pg_admin_url(), "postgres://")).await;
    let db_name = app.database_url.rsplit('/').next().unwrap().to_string();
    let proxied = format!("postgres://postgres@{}/{}", proxy.addr, db_name);
    let app2 = spawn_app_with(TestOptions {
        database_url: Some(proxied),
        redis: Some(false),
        env: vec![("RENKEI_DATABASE_CONNECT_TIMEOUT_SECONDS".into(), "1".into())],
        ..Default::default()
    })
    .await;
    let client = app2.client();
    assert_eq!(client.get("/readyz").await.status(), 200);
    proxy.cut().await;
    let resp = client.get("/readyz").await;
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["failing"], serde_json::json!(["database"]));
    drop(app2);
}

/// host:port of a service URL such as `redis://127.0.0.1:6379/0`.
fn resolve(url: &str, scheme: &str) -> std::net::SocketAddr {
    use std::net::ToSocketAddrs as _;
    let rest = url.trim_start_matches(scheme);
    let rest = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    let hostport = rest.split(['/', '?']).next().unwrap();
    hostport.to_socket_addrs().unwrap().next().unwrap()
}
