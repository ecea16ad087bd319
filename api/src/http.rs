//! HTTP routes: GraphQL over HTTP and WebSocket, GraphiQL, health and readiness.

use std::time::Duration;

use async_graphql::http::{GraphiQLSource, MultipartOptions};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use secrecy::SecretString;
use serde_json::json;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::auth::tls::ConnectionInfo;
use crate::graphql::RenkeiSchema;
use crate::graphql::context::RequestContext;
use crate::state::AppState;

#[derive(Clone)]
pub struct HttpState {
    pub app: AppState,
    pub schema: RenkeiSchema,
}

pub const SESSION_COOKIE: &str = "__Host-renkei_session";
const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

pub fn router(state: HttpState) -> Router {
    let body_limit = state.app.config.max_body_bytes;
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/graphql/ws", get(graphql_ws))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/pki/{tenant}/ca.pem", get(pki_ca))
        .route("/pki/{tenant}/crl", get(pki_crl))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .with_state(state)
}

/// The session token a request carries: the bearer header wins over the cookie.
pub fn session_token(headers: &HeaderMap) -> Option<SecretString> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if let Some(token) = bearer {
        return Some(SecretString::from(token.to_string()));
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| SecretString::from(value.to_string()))
}

fn accepts(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| item.split(';').next().map(str::trim) == Some(media))
}

fn problem(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(
            json!({ "errors": [{ "message": message, "extensions": { "code": "BAD_REQUEST" } }] }),
        ),
    )
        .into_response()
}

async fn graphql_post(
    State(state): State<HttpState>,
    Extension(conn): Extension<ConnectionInfo>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if media != "application/json" && media != "multipart/form-data" {
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "POST /graphql takes application/json (or multipart/form-data for uploads)",
        );
    }
    let reader = futures_util::io::Cursor::new(body);
    let request = match async_graphql::http::receive_body(
        Some(content_type.as_str()),
        reader,
        MultipartOptions::default(),
    )
    .await
    {
        Ok(request) => request,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                &format!("malformed GraphQL request: {e}"),
            );
        }
    };
    let request = request.data(request_context(&state, &conn, &headers));
    let response = state.schema.execute(request).await;
    graphql_response(&headers, response)
}

/// GraphQL-over-HTTP: `application/graphql-response+json` when asked for (with 400 when the
/// request itself was invalid and nothing executed), else `application/json` and always 200.
fn graphql_response(headers: &HeaderMap, mut response: async_graphql::Response) -> Response {
    let modern = accepts(headers, GRAPHQL_RESPONSE_JSON);
    // Parse and validation errors have no path; execution errors always do.
    let request_error = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let status = if modern && request_error {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    // Headers set by resolvers (Set-Cookie) are not part of the JSON body.
    let http_headers = std::mem::take(&mut response.http_headers);
    let body = match serde_json::to_vec(&response) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "serialising a GraphQL response failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let content_type = if modern {
        GRAPHQL_RESPONSE_JSON
    } else {
        "application/json"
    };
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    out.headers_mut().extend(http_headers);
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    out.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    out
}

async fn graphql_get(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    if accepts(&headers, "text/html") && !state.app.config.is_production() {
        return Html(
            GraphiQLSource::build()
                .endpoint("/graphql")
                .subscription_endpoint("/graphql/ws")
                .title("Renkei GraphiQL")
                .finish(),
        )
        .into_response();
    }
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST")],
        "GraphQL operations use POST /graphql",
    )
        .into_response()
}

async fn graphql_ws(
    State(state): State<HttpState>,
    Extension(conn): Extension<ConnectionInfo>,
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let context = request_context(&state, &conn, &headers);
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            let mut data = async_graphql::Data::default();
            data.insert(context);
            GraphQLWebSocket::new(socket, state.schema.clone(), protocol)
                .with_data(data)
                .keepalive_timeout(Duration::from_secs(60))
                .serve()
        })
}

/// Who is asking: the verified client certificate and address (see `auth::trust`), and the
/// session token it carries.
fn request_context(
    state: &HttpState,
    conn: &ConnectionInfo,
    headers: &HeaderMap,
) -> RequestContext {
    let (peer, ip) = crate::auth::trust::client_identity(
        conn,
        headers,
        &state.app.config.trusted_proxies,
        &state.app.trust,
    );
    RequestContext::new(peer, ip, session_token(headers))
}

/// Public: a tenant's CA certificate, for devices and relying parties.
async fn pki_ca(State(state): State<HttpState>, Path(tenant): Path<String>) -> Response {
    match crate::service::tenants::ca_and_crl(&state.app.db, &tenant).await {
        Ok(Some(ca)) => (
            [(header::CONTENT_TYPE, "application/x-pem-file")],
            ca.cert_pem,
        )
            .into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => unavailable(e),
    }
}

/// Public: a tenant's current CRL (DER).
async fn pki_crl(State(state): State<HttpState>, Path(tenant): Path<String>) -> Response {
    match crate::service::tenants::ca_and_crl(&state.app.db, &tenant).await {
        Ok(Some(ca)) => (
            [
                (header::CONTENT_TYPE, "application/pkix-crl"),
                (header::CACHE_CONTROL, "max-age=60"),
            ],
            ca.crl_der,
        )
            .into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => unavailable(e),
    }
}

fn unavailable(e: crate::error::AppError) -> Response {
    let status = match e {
        crate::error::AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let _ = e.into_graphql(); // logs the cause
    status.into_response()
}

async fn healthz() -> Response {
    (StatusCode::OK, Json(json!({ "status": "alive" }))).into_response()
}

const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// 200 when the database and (if configured) Redis answer; 503 naming those that do not.
async fn readyz(State(state): State<HttpState>) -> Response {
    let app = &state.app;
    let db_ok = matches!(
        tokio::time::timeout(READY_CHECK_TIMEOUT, app.db.ping()).await,
        Ok(Ok(()))
    );
    let redis_ok = match &app.redis {
        None => true,
        Some(redis) => matches!(
            tokio::time::timeout(READY_CHECK_TIMEOUT, redis.ping()).await,
            Ok(Ok(()))
        ),
    };
    let mut failing = Vec::new();
    if !db_ok {
        failing.push("database");
    }
    if !redis_ok {
        failing.push("redis");
    }
    if failing.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response()
    } else {
        tracing::warn!(?failing, "not ready");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "failing": failing })),
        )
            .into_response()
    }
}
