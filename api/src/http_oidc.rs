//! `GET /auth/oidc/{tenant}/start` and `GET /auth/oidc/{tenant}/callback`: federated login of
//! city staff (see [`crate::service::oidc`]). Both need the client certificate on the
//! connection. The callback ends in a redirect to `oidc_after_login_url`: with the session
//! cookie on success, with `?oidc_error=<reason>` otherwise; never with a secret in the URL.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;

use crate::auth::tls::ConnectionInfo;
use crate::error::AppError;
use crate::http::{HttpState, SESSION_COOKIE, cookie};
use crate::service::oidc::{self, Callback, FLOW_TTL};

/// Carries the flow's `state` from start to callback in this browser. `Lax`: the provider's
/// redirect back is a cross-site top-level GET.
pub const FLOW_COOKIE: &str = "__Host-renkei_oidc";

fn error_response(e: AppError) -> Response {
    e.into_response()
}

fn see_other(location: &str, cookies: &[String]) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `https://<public_url or host>/auth/oidc/<tenant>/callback`. The host is the `Host` header
/// (HTTP/1.1) or the request's `:authority` (HTTP/2, which has no `Host` header). A forged host
/// only yields a redirect URI the provider has not registered, so the provider refuses it.
fn redirect_uri(state: &HttpState, headers: &HeaderMap, uri: &Uri, slug: &str) -> Option<String> {
    let base = match &state.app.config.public_url {
        Some(url) => url.clone(),
        None => {
            let host = match headers.get(header::HOST) {
                Some(value) => value.to_str().ok()?,
                None => uri.authority()?.as_str(),
            };
            if host.is_empty() || host.contains(['/', '\\', '@', ' ']) {
                return None;
            }
            format!("https://{host}")
        }
    };
    Some(format!("{base}/auth/oidc/{slug}/callback"))
}

pub async fn start(
    State(state): State<HttpState>,
    Extension(conn): Extension<ConnectionInfo>,
    headers: HeaderMap,
    uri: Uri,
    Path(slug): Path<String>,
) -> Response {
    let app = &state.app;
    let (tenant, idp) = match oidc::tenant_with_idp(&app.db, &slug).await {
        Ok(found) => found,
        Err(e) => return error_response(e),
    };
    let (peer, _ip) = crate::auth::trust::client_identity(
        &conn,
        &headers,
        &app.config.trusted_proxies,
        &app.trust,
    );
    let redirect = redirect_uri(&state, &headers, &uri, &tenant.slug);
    match oidc::start(app, &tenant, &idp, peer.as_ref(), redirect).await {
        Ok(started) => see_other(
            &started.authorize_url,
            &[format!(
                "{FLOW_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
                started.state,
                FLOW_TTL.as_secs()
            )],
        ),
        Err(e) => error_response(e),
    }
}

/// `after` with `oidc_error=<reason>` appended to its query.
fn with_error(after: &str, reason: &str) -> String {
    let (base, fragment) = match after.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (after, None),
    };
    let joiner = if base.contains('?') { '&' } else { '?' };
    let mut url = format!("{base}{joiner}oidc_error={reason}");
    if let Some(f) = fragment {
        url.push('#');
        url.push_str(f);
    }
    url
}

pub async fn callback(
    State(state): State<HttpState>,
    Extension(conn): Extension<ConnectionInfo>,
    headers: HeaderMap,
    Path(slug): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let app = &state.app;
    let (tenant, idp) = match oidc::tenant_with_idp(&app.db, &slug).await {
        Ok(found) => found,
        Err(e) => return error_response(e),
    };
    let (peer, ip) = crate::auth::trust::client_identity(
        &conn,
        &headers,
        &app.config.trusted_proxies,
        &app.trust,
    );
    let callback = Callback {
        code: query.get("code").map(String::as_str),
        state: query.get("state").map(String::as_str),
        error: query.get("error").map(String::as_str),
        cookie_state: cookie(&headers, FLOW_COOKIE),
        peer: peer.as_ref(),
        ip,
    };
    let clear_flow = format!("{FLOW_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0");
    let after = &app.config.oidc_after_login_url;
    match oidc::finish(app, &tenant, &idp, callback).await {
        Ok(finished) => {
            tracing::info!(user = %finished.user.id, "federated login");
            let token = finished.session.token.expose_secret();
            let max_age = app.config.session_absolute.as_secs();
            see_other(
                after,
                &[
                    clear_flow,
                    format!(
                        "{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}"
                    ),
                ],
            )
        }
        Err(failure) => see_other(&with_error(after, failure.as_str()), &[clear_flow]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_appended_to_the_front_end_url() {
        assert_eq!(with_error("/", "bad_state"), "/?oidc_error=bad_state");
        assert_eq!(
            with_error("https://app.example.jp/login?x=1#top", "locked"),
            "https://app.example.jp/login?x=1&oidc_error=locked#top"
        );
    }

    #[test]
    fn the_flow_cookie_is_read_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-renkei_oidc=abc; b=2"),
        );
        assert_eq!(cookie(&headers, FLOW_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
