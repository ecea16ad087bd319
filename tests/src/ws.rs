//! A graphql-transport-ws client for tests and benchmarks: `wss://…/graphql/ws` over TLS with
//! the client certificate a session is bound to (rustls with the ring provider, trusting only
//! the test server's CA), `connection_init` with a bearer token, `subscribe`, and reading
//! protocol messages with a deadline (server pings are answered and skipped).
//!
//! One copy shared by `tests/e2e/room_live.rs`, `tests/e2e/websocket.rs` and
//! `tests/benches/room_content.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::{Person, TestApp, TestClient};

/// A client WebSocket over TLS.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The server's answer to the upgrade request.
pub type UpgradeResponse = tungstenite::handshake::client::Response;

/// How long [`expect_json`] and [`live`] wait for a message they expect.
pub const WAIT: Duration = Duration::from_secs(5);
/// Time for a fresh subscription to be set up on the server before events are caused
/// (see [`subscribe_settled`]).
pub const SETTLE: Duration = Duration::from_millis(500);

/// Opens `wss://…/graphql/ws` of `app`, presenting `who`'s certificate (if any) and an `Origin`
/// header (if any), asking for the `graphql-transport-ws` subprotocol. The error is
/// tungstenite's: an HTTP refusal of the upgrade is `Error::Http`.
pub async fn connect(
    app: &TestApp,
    who: Option<&Person>,
    origin: Option<&str>,
) -> Result<Ws, tungstenite::Error> {
    connect_with_response(app, who, origin)
        .await
        .map(|(ws, _)| ws)
}

/// [`connect`], also returning the server's upgrade response (its headers, e.g. the chosen
/// `sec-websocket-protocol`).
pub async fn connect_with_response(
    app: &TestApp,
    who: Option<&Person>,
    origin: Option<&str>,
) -> Result<(Ws, UpgradeResponse), tungstenite::Error> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&app.server_ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match who {
        Some(person) => {
            let chain = CertificateDer::pem_slice_iter(&person.identity_pem)
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(&person.identity_pem).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let mut request = format!("wss://127.0.0.1:{}/graphql/ws", app.addr.port())
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(client_config()),
        false,
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(config))),
    )
    .await
}

/// Read buffer of a client connection. tungstenite's default (128 KiB) is zeroed up to its
/// capacity on every read attempt, including those that find nothing to read: with hundreds of
/// connections in one process (the room content benchmark), that memset was half of the
/// clients' CPU time (perf). Protocol messages here are a few hundred bytes; larger ones still arrive
/// whole, over several reads.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;

fn client_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES)
}

/// A protocol message, or the end of the connection.
#[derive(Debug)]
pub enum Frame {
    Json(Value),
    /// The socket closed, with the close code if a close frame came.
    Closed(Option<u16>),
}

/// Sends one protocol message as a text frame.
pub async fn send(ws: &mut Ws, message: Value) {
    ws.send(Message::text(message.to_string())).await.unwrap();
}

/// The next protocol message within `within` (pings are answered and skipped), or None.
pub async fn recv(ws: &mut Ws, within: Duration) -> Option<Frame> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = match tokio::time::timeout(left, ws.next()).await {
            Err(_) => return None,
            Ok(None) => return Some(Frame::Closed(None)),
            Ok(Some(Err(_))) => return Some(Frame::Closed(None)),
            Ok(Some(Ok(msg))) => msg,
        };
        match msg {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] == "ping" {
                    send(ws, json!({ "type": "pong" })).await;
                    continue;
                }
                return Some(Frame::Json(value));
            }
            Message::Close(frame) => return Some(Frame::Closed(frame.map(|f| u16::from(f.code)))),
            _ => continue,
        }
    }
}

/// The next protocol message; panics if none comes within [`WAIT`].
pub async fn expect_json(ws: &mut Ws, what: &str) -> Value {
    match recv(ws, WAIT).await {
        Some(Frame::Json(value)) => value,
        other => panic!("{what}: expected a message within {WAIT:?}, got {other:?}"),
    }
}

/// A connection of `who` (its certificate) authenticated with `token` in `connection_init`,
/// acknowledged; panics otherwise.
pub async fn live(app: &TestApp, who: &Person, token: &str) -> Ws {
    let mut ws = connect(app, Some(who), None).await.unwrap();
    send(
        &mut ws,
        json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }),
    )
    .await;
    let ack = expect_json(&mut ws, "connection_init").await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    ws
}

/// The session token of a logged-in client.
pub fn token_of(client: &TestClient) -> String {
    client.token.clone().expect("a session")
}

/// Starts subscription `id` with this document and variables.
pub async fn subscribe(ws: &mut Ws, id: &str, query: &str, variables: Value) {
    send(
        ws,
        json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } }),
    )
    .await;
}

/// [`subscribe`], then [`SETTLE`] for the server to set it up.
pub async fn subscribe_settled(ws: &mut Ws, id: &str, query: &str, variables: Value) {
    subscribe(ws, id, query, variables).await;
    tokio::time::sleep(SETTLE).await;
}

/// The data field `field` of the next `next` message for subscription `id` (no errors allowed);
/// panics with `what` otherwise.
pub async fn next_event(ws: &mut Ws, id: &str, field: &str, what: &str) -> Value {
    let msg = expect_json(ws, what).await;
    assert_eq!(msg["type"], "next", "{what}: {msg}");
    assert_eq!(msg["id"], id, "{what}: {msg}");
    assert!(
        msg["payload"]["errors"].is_null(),
        "{what}: errors in {msg}"
    );
    msg["payload"]["data"][field].clone()
}
