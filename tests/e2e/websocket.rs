use serde_json::json;

use renkei_tests::spawn_app;
use renkei_tests::ws::{connect_with_response, expect_json, send};

#[tokio::test]
async fn graphql_transport_ws_acknowledges_and_executes() {
    let app = spawn_app().await;
    let (mut ws, response) = connect_with_response(&app, None, None).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    send(&mut ws, json!({ "type": "connection_init", "payload": {} })).await;
    assert_eq!(
        expect_json(&mut ws, "connection_init").await["type"],
        "connection_ack"
    );
    send(
        &mut ws,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": "{ __typename }" } }),
    )
    .await;
    let next = expect_json(&mut ws, "the query's result").await;
    assert_eq!(next["type"], "next");
    assert_eq!(next["id"], "1");
    assert_eq!(next["payload"]["data"]["__typename"], "Query");
    assert_eq!(expect_json(&mut ws, "complete").await["type"], "complete");
}
