use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::json;

use renkei_tests::spawn_app;

/// SIGTERM semantics: stop accepting, but let a request that is already in flight finish.
#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_refuses_new_connections() {
    let mut app = spawn_app().await;
    let client = app.client();
    // Warm the connection so the in-flight request does not need a new handshake.
    assert_eq!(client.get("/healthz").await.status(), 200);

    // A request whose body arrives slowly is in flight while shutdown begins.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let body = json!({ "query": "{ __typename }" })
        .to_string()
        .into_bytes();
    let (head, tail) = body.split_at(5);
    tx.send(Ok(head.to_vec())).await.unwrap();
    let stream = tokio_stream_from(rx);
    let in_flight = tokio::spawn({
        let http = client.http.clone();
        let url = app.url("/graphql");
        async move {
            http.post(url)
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(stream))
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = app.begin_shutdown().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // New connections are refused once shutdown began.
    let fresh = app.client();
    assert!(fresh.http.get(app.url("/healthz")).send().await.is_err());

    tx.send(Ok(tail.to_vec())).await.unwrap();
    drop(tx);
    let resp = in_flight
        .await
        .unwrap()
        .expect("in-flight request completed");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["data"]["__typename"], "Query");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stopped within the grace period")
        .unwrap();
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).fuse()
}
