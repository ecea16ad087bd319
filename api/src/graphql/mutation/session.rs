//! Login, logout, the caller's password and pledge.

use async_graphql::{Context, Object, Result};
use axum::http::header::SET_COOKIE;
use secrecy::{ExposeSecret as _, SecretString};

use crate::error::AppError;
use crate::graphql::context::ContextExt as _;
use crate::graphql::types::{LoginPayload, User, local};
use crate::http::SESSION_COOKIE;
use crate::service::audit::{self, Event};
use crate::service::{accounts, login};
use entity::kinds::AuditOutcome;

#[derive(Default)]
pub struct SessionMutation;

#[Object]
impl SessionMutation {
    /// Two factors: the client certificate on this connection (issued by the tenant's CA to
    /// this user) and the password. The session is bound to that certificate.
    async fn login(
        &self,
        ctx: &Context<'_>,
        tenant: String,
        login_id: String,
        password: String,
    ) -> Result<LoginPayload> {
        let state = ctx.state()?;
        let request = ctx.request()?;
        let password = SecretString::from(password);
        let outcome = login::login(
            state,
            login::LoginRequest {
                tenant_slug: tenant.trim(),
                login_id: login_id.trim(),
                password,
                peer: request.peer.as_ref(),
                ip: request.client_ip,
            },
        )
        .await;
        let success = match outcome {
            Ok(success) => success,
            Err(failure) => {
                tracing::info!(reason = failure.reason.as_str(), ip = %request.client_ip, "login failed");
                return Err(failure.error.into());
            }
        };
        // A token presented with this request belonged to an earlier login: rotate it out.
        if let Some(old) = &request.session_token {
            let old_hash = crate::auth::session::token_hash(old.expose_secret());
            state
                .sessions
                .revoke(&old_hash)
                .await
                .map_err(AppError::unavailable)?;
        }
        let tz = success
            .tenant
            .time_zone
            .parse()
            .unwrap_or(chrono_tz::Asia::Tokyo);
        let token = success.session.token.expose_secret().to_string();
        let max_age = state.config.session_absolute.as_secs();
        ctx.insert_http_header(
            SET_COOKIE,
            format!("{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}"),
        );
        Ok(LoginPayload {
            token,
            expires_at: local(success.session.record.absolute_expires_at, tz),
            must_change_password: success.user.must_change_password,
            must_accept_pledge: success.user.pledge_accepted_at.is_none(),
            user_model: success.user,
            tz,
        })
    }

    /// Ends this session.
    async fn logout(&self, ctx: &Context<'_>) -> Result<bool> {
        let caller = ctx.caller_before_password_change().await?;
        let state = ctx.state()?;
        state
            .sessions
            .revoke(&caller.session_hash)
            .await
            .map_err(AppError::unavailable)?;
        let event = Event::new(caller.tenant.id, "logout", AuditOutcome::Allowed)
            .by(&caller.origin(ctx.request()?));
        audit::record_now(&state.db, event).await?;
        ctx.insert_http_header(
            SET_COOKIE,
            format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
        );
        Ok(true)
    }

    /// Ends every session of the caller, on every device; returns how many.
    async fn logout_everywhere(&self, ctx: &Context<'_>) -> Result<i32> {
        let caller = ctx.caller_before_password_change().await?;
        let state = ctx.state()?;
        let ended = state
            .sessions
            .revoke_user(caller.user.id)
            .await
            .map_err(AppError::unavailable)?;
        let count = i32::try_from(ended.len()).unwrap_or(i32::MAX);
        accounts::record_session_revocations(
            state,
            &caller.user,
            &caller.origin(ctx.request()?),
            ended,
            "logout_everywhere",
        )
        .await?;
        Ok(count)
    }

    /// At least 8 characters from 3 of upper, lower, digit, symbol; not the login ID or name,
    /// not a common password, not one of the last 5.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> Result<bool> {
        let caller = ctx.caller_before_password_change().await?;
        let state = ctx.state()?;
        accounts::change_password(
            state,
            &caller.user,
            &caller.origin(ctx.request()?),
            SecretString::from(current_password),
            SecretString::from(new_password),
        )
        .await?;
        Ok(true)
    }

    /// Records the caller's personal-information pledge (form 6).
    async fn accept_pledge(&self, ctx: &Context<'_>) -> Result<User> {
        let caller = ctx.caller_before_pledge().await?;
        let state = ctx.state()?;
        let user =
            accounts::accept_pledge(state, &caller.user, &caller.origin(ctx.request()?)).await?;
        Ok(User::new(user, caller.tz()))
    }
}
