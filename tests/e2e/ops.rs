//! Operating the server: readiness while shutting down.

use std::time::{Duration, Instant};

use renkei_tests::{TestOptions, spawn_app_with};

/// From the moment the shutdown signal arrives `/readyz` answers 503 `draining`, while the
/// server keeps serving for `shutdown_drain_seconds`, then stops.
#[tokio::test]
async fn readyz_reports_draining_from_the_shutdown_signal_while_still_serving() {
    let mut app = spawn_app_with(TestOptions {
        env: vec![("RENKEI_SHUTDOWN_DRAIN_SECONDS".into(), "3".into())],
        ..TestOptions::default()
    })
    .await;
    let client = app.client();
    let ready = client.get("/readyz").await;
    assert_eq!(ready.status(), 200);

    let server = app.begin_shutdown().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        // A new client each time: new connections are still accepted while draining.
        let resp = app.client().get("/readyz").await;
        if resp.status() == 503 {
            break resp.json::<serde_json::Value>().await.unwrap();
        }
        assert!(Instant::now() < deadline, "/readyz never reported draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(body["failing"], serde_json::json!(["draining"]), "{body}");
    assert_eq!(app.client().get("/healthz").await.status(), 200);

    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("server stopped after draining")
        .unwrap();
}
