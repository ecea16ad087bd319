//! HTTP routes: GraphQL over HTTP and WebSocket, GraphiQL, health and readiness.

use std::time::Duration;

use async_graphql::http::{GraphiQLSource, MultipartOptions, WebSocketProtocols, WsMessage};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use secrecy::SecretString;
use serde_json::json;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::auth::tls::ConnectionInfo;
use crate::graphql::RenkeiSchema;
use crate::graphql::context::RequestContext;
use crate::graphql::loaders::Loaders;
use crate::state::AppState;

#[derive(Clone)]
pub struct HttpState {
    pub app: AppState,
    pub schema: RenkeiSchema,
    /// Set when SIGTERM arrives: `/readyz` answers 503 `draining` from then on.
    pub draining: std::sync::Arc<std::sync::atomic::AtomicBool>,
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
        .route("/attachments/{id}", get(crate::http_content::attachment))
        .route("/auth/oidc/{tenant}/start", get(crate::http_oidc::start))
        .route(
            "/auth/oidc/{tenant}/callback",
            get(crate::http_oidc::callback),
        )
        .route(
            "/fhir/rooms/{id}/Observation",
            get(crate::http_content::fhir_observations),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        // An API answer is never a page to frame, embed or render: GraphiQL's page brings its
        // own Content-Security-Policy, which this one does not replace.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        ))
        .with_state(state)
}

/// Read buffer of a WebSocket connection; longer messages still arrive, in more reads.
const WS_READ_BUFFER: usize = 4 * 1024;

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
    cookie(headers, SESSION_COOKIE).map(|value| SecretString::from(value.to_string()))
}

/// The value of the cookie `name` among the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

fn accepts(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| item.split(';').next().map(str::trim) == Some(media))
}

/// An HTTP-level refusal: code `BAD_REQUEST` with `status`.
fn problem(status: StatusCode, message: &str) -> Response {
    crate::error::AppError::bad_request(status, message).into_response()
}

async fn graphql_post(
    State(state): State<HttpState>,
    Extension(conn): Extension<ConnectionInfo>,
    headers: HeaderMap,
    body: Body,
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
    if !cookie_request_allowed(
        &headers,
        &state.app.config.allowed_origins,
        media == "multipart/form-data",
    ) {
        return cross_site_refused();
    }
    let parsed = match media.as_str() {
        "application/json" => {
            let bytes = match axum::body::to_bytes(body, state.app.config.max_body_bytes).await {
                Ok(bytes) => bytes,
                Err(_) => {
                    return problem(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!(
                            "the request body is larger than {} bytes",
                            state.app.config.max_body_bytes
                        ),
                    );
                }
            };
            async_graphql::http::receive_body(
                Some(content_type.as_str()),
                futures_util::io::Cursor::new(bytes),
                MultipartOptions::default(),
            )
            .await
        }
        // Uploads stream: the multipart parser cuts a file off once it passes the largest
        // attachment size (the type's own limit is checked as it is stored), and the whole
        // request once it passes that plus room for the other parts.
        "multipart/form-data" => {
            let file_limit = state.app.config.attachment_video_max_bytes;
            let request_limit = file_limit.saturating_add(MULTIPART_OVERHEAD_BYTES);
            let over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = over.clone();
            let mut seen: u64 = 0;
            let stream = futures_util::StreamExt::map(body.into_data_stream(), move |chunk| {
                let chunk = chunk.map_err(std::io::Error::other)?;
                seen = seen.saturating_add(chunk.len() as u64);
                if seen > request_limit {
                    flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    return Err(std::io::Error::other("request too large"));
                }
                Ok(chunk)
            });
            let parsed = async_graphql::http::receive_body(
                Some(content_type.as_str()),
                futures_util::TryStreamExt::into_async_read(stream),
                MultipartOptions::default()
                    .max_file_size(usize::try_from(file_limit).unwrap_or(usize::MAX))
                    .max_num_files(MAX_FILES_PER_REQUEST),
            )
            .await;
            if over.load(std::sync::atomic::Ordering::Relaxed)
                || matches!(
                    parsed,
                    Err(async_graphql::ParseRequestError::PayloadTooLarge)
                )
            {
                return file_too_large(file_limit);
            }
            parsed
        }
        _ => {
            return problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "POST /graphql takes application/json (or multipart/form-data for uploads)",
            );
        }
    };
    let request = match parsed {
        Ok(request) => request,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                &format!("malformed GraphQL request: {e}"),
            );
        }
    };
    let request = request
        .data(request_context(&state, &conn, &headers))
        .data(Loaders::new(&state.app.db));
    let response = state.schema.execute(request).await;
    graphql_response(
        &headers,
        response,
        state.app.config.graphql_max_response_bytes,
    )
}

/// Room for the `operations` and `map` parts of an upload request besides its file.
const MULTIPART_OVERHEAD_BYTES: u64 = 1024 * 1024;
const MAX_FILES_PER_REQUEST: usize = 10;

/// An upload past the largest allowed size: refused like any bad input, naming the file.
fn file_too_large(limit: u64) -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        Json(json!({ "errors": [{
            "message": format!("the file is larger than the limit of {limit} bytes"),
            "extensions": { "code": "BAD_USER_INPUT", "field": "file" },
        }] })),
    )
        .into_response()
}

/// GraphQL-over-HTTP: `application/graphql-response+json` when asked for (with 400 when the
/// request itself was invalid and nothing executed), else `application/json` and always 200.
fn graphql_response(
    headers: &HeaderMap,
    mut response: async_graphql::Response,
    max_bytes: usize,
) -> Response {
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
    // graphql-over-http: a request that never executed has no `data` at all.
    let serialised = if modern && request_error {
        serde_json::to_value(&response).and_then(|mut value| {
            if let Some(object) = value.as_object_mut() {
                object.remove("data");
            }
            serde_json::to_vec(&value)
        })
    } else {
        serde_json::to_vec(&response)
    };
    let body = match serialised {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "serialising a GraphQL response failed");
            return crate::error::AppError::internal(e).into_response();
        }
    };
    if body.len() > max_bytes {
        return problem(
            StatusCode::BAD_REQUEST,
            &format!(
                "the response would be larger than {max_bytes} bytes; ask for less (smaller pages, fewer fields)"
            ),
        );
    }
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
    upgrade: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&headers, &state.app.config.allowed_origins)
        || !cookie_request_allowed(&headers, &state.app.config.allowed_origins, false)
    {
        return cross_site_refused();
    }
    let Some(protocol) = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|list| {
            list.split(',')
                .find_map(|p| p.trim().parse::<WebSocketProtocols>().ok())
        })
    else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Protocol must name graphql-transport-ws (or graphql-ws)",
        );
    };
    let (peer, ip) = crate::auth::trust::client_identity(
        &conn,
        &headers,
        &state.app.config.trusted_proxies,
        &state.app.trust,
    );
    let cookie_token = session_token(&headers);
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        // Clients send little (subscribe, pong); tungstenite zeroes its read buffer (128 KiB by
        // default) on every poll, which was a third of the server's CPU at 500 subscribers.
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| async move {
            let app = state.app.clone();
            serve_ws(
                socket,
                state.schema.clone(),
                protocol,
                move |payload| async move {
                    ws_connection_data(&app, peer, ip, cookie_token, &payload).await
                },
            )
            .await;
        })
}

/// What a refused `connection_init` says; such a refusal closes with 4403 Forbidden, as the
/// graphql-transport-ws protocol has it (async-graphql would close with 1002).
const INIT_REFUSED: &str = "Forbidden";

/// Serves one WebSocket connection: async-graphql's protocol handling, with our close code for
/// a refused login.
async fn serve_ws<F, R>(
    socket: axum::extract::ws::WebSocket,
    schema: RenkeiSchema,
    protocol: WebSocketProtocols,
    on_init: F,
) where
    F: FnOnce(serde_json::Value) -> R + Send + 'static,
    R: std::future::Future<Output = async_graphql::Result<async_graphql::Data>> + Send + 'static,
{
    use axum::extract::ws::{CloseFrame, Message};
    use futures_util::{SinkExt as _, StreamExt as _};
    let (mut sink, stream) = socket.split();
    let input = stream
        .take_while(|msg| std::future::ready(msg.is_ok()))
        .filter_map(|msg| {
            std::future::ready(match msg {
                Ok(m @ (Message::Text(_) | Message::Binary(_))) => Some(m.into_data()),
                _ => None,
            })
        });
    let output = async_graphql::http::WebSocket::new(schema, input, protocol)
        .on_connection_init(on_init)
        .keepalive_timeout(Duration::from_secs(60))
        .map(|msg| match msg {
            WsMessage::Text(text) => Message::Text(text.into()),
            WsMessage::Close(code, reason) => {
                let code = if code == 1002 && reason.starts_with(INIT_REFUSED) {
                    4403
                } else {
                    code
                };
                Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                }))
            }
        });
    futures_util::pin_mut!(output);
    while let Some(message) = output.next().await {
        if sink.send(message).await.is_err() {
            break;
        }
    }
}

/// The data of one WebSocket connection: the credentials of `connection_init` (payload
/// `{"authorization": "Bearer <token>"}`, else the upgrade request's cookie) over the
/// connection's certificate. A token that does not log in refuses the connection; none at all
/// gives an anonymous connection (operations that need a login answer UNAUTHENTICATED).
async fn ws_connection_data(
    app: &AppState,
    peer: Option<crate::auth::trust::PeerCertificate>,
    ip: std::net::IpAddr,
    cookie_token: Option<SecretString>,
    payload: &serde_json::Value,
) -> async_graphql::Result<async_graphql::Data> {
    let bearer = payload
        .get("authorization")
        .or_else(|| payload.get("Authorization"))
        .and_then(|v| v.as_str())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_string())
        .filter(|t| !t.is_empty())
        .map(SecretString::from);
    let token = bearer.or(cookie_token);
    let has_token = token.is_some();
    let context = RequestContext::new(peer, ip, token).long_lived();
    if has_token {
        crate::graphql::context::authenticate(app, &context)
            .await
            .map_err(|e| async_graphql::Error::new(format!("{INIT_REFUSED}: {}", e.message())))?;
    }
    let mut data = async_graphql::Data::default();
    data.insert(context);
    data.insert(app.live_loaders.clone());
    Ok(data)
}

/// Browsers send `Origin` on WebSocket upgrades: it must be one of `allowed_origins` (the
/// request's own `Host` proves nothing, an attacker's page names its own). Native apps send none.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    allowed.contains(&origin)
}

/// The non-simple header a multipart request authenticated by cookie must carry (either name),
/// so that a browser sends it cross-site only after a CORS preflight, which this API never grants.
pub const CSRF_HEADERS: [&str; 2] = ["x-renkei-csrf", "apollo-require-preflight"];

/// Whether the request's session comes from the cookie (a browser sends it by itself), not
/// from an `Authorization: Bearer` header (which a page can only set for its own origin).
fn authenticated_by_cookie(headers: &HeaderMap) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer ") && !v["Bearer ".len()..].trim().is_empty());
    !bearer && cookie(headers, SESSION_COOKIE).is_some()
}

/// Cross-site request forgery: a request authenticated by the session cookie must come from
/// one of `allowed_origins`. `Origin` decides when sent; without it, `Sec-Fetch-Site` (sent by
/// browsers, not settable by pages) must say `same-origin` or `none` when present. Requests
/// without the cookie (Bearer tokens, native apps) pass unchanged.
pub fn cookie_request_allowed(headers: &HeaderMap, allowed: &[String], multipart: bool) -> bool {
    if !authenticated_by_cookie(headers) {
        return true;
    }
    if multipart
        && !CSRF_HEADERS
            .iter()
            .any(|name| headers.get(*name).is_some_and(|v| !v.is_empty()))
    {
        return false;
    }
    if headers.get(header::ORIGIN).is_some() {
        return origin_allowed(headers, allowed);
    }
    match headers.get("sec-fetch-site").map(|v| v.to_str()) {
        None => true,
        Some(Ok(site)) => matches!(site.trim(), "same-origin" | "none"),
        Some(Err(_)) => false,
    }
}

/// The refusal of a cross-site cookie request: HTTP 403, code FORBIDDEN.
pub fn cross_site_refused() -> Response {
    crate::error::AppError::Forbidden.into_response()
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
    e.into_response()
}

async fn healthz() -> Response {
    (StatusCode::OK, Json(json!({ "status": "alive" }))).into_response()
}

const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// 200 when the database and (if configured) Redis answer and shutdown has not begun; 503
/// naming what fails.
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
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        failing.push("draining");
    }
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
