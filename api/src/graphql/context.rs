//! What a resolver knows about the request: the connection it came over, the credentials it
//! carried, and (once resolved) the logged-in caller.

use std::net::IpAddr;

use async_graphql::Context;
use secrecy::{ExposeSecret as _, SecretString};

use entity::kinds::{AccountStatus, AuditOutcome};
use entity::{tenant, user};

use crate::auth::trust::PeerCertificate;
use crate::error::{AppError, AppResult};
use crate::service::audit::{self, Event, Origin};
use crate::state::AppState;

/// Per-request facts, put into the GraphQL request data by the HTTP and WebSocket handlers.
pub struct RequestContext {
    /// The verified client certificate (from our TLS handshake, or a trusted proxy's header).
    pub peer: Option<PeerCertificate>,
    pub client_ip: IpAddr,
    /// `Authorization: Bearer …`, or the session cookie.
    pub session_token: Option<SecretString>,
    caller: tokio::sync::OnceCell<Caller>,
    /// A WebSocket connection: its operations run long after the login was checked, so each
    /// asks the session store again whether the session is still alive.
    long_lived: bool,
    /// The room this request asked about, for the audit of a refusal.
    room: std::sync::Mutex<Option<uuid::Uuid>>,
}

impl RequestContext {
    pub fn new(
        peer: Option<PeerCertificate>,
        client_ip: IpAddr,
        session_token: Option<SecretString>,
    ) -> Self {
        RequestContext {
            peer,
            client_ip,
            session_token,
            caller: tokio::sync::OnceCell::new(),
            long_lived: false,
            room: std::sync::Mutex::new(None),
        }
    }

    /// The context of a WebSocket connection (see `long_lived`).
    pub fn long_lived(mut self) -> Self {
        self.long_lived = true;
        self
    }

    /// Remembers the room a resolver is about to check access to.
    pub fn note_room(&self, id: uuid::Uuid) {
        if let Ok(mut slot) = self.room.lock() {
            *slot = Some(id);
        }
    }

    /// The room last named by a resolver of this request, if any.
    pub fn noted_room(&self) -> Option<uuid::Uuid> {
        self.room.lock().ok().and_then(|slot| *slot)
    }

    /// The caller, if a resolver of this request has already authenticated it.
    pub fn resolved_caller(&self) -> Option<&Caller> {
        self.caller.get()
    }
}

/// The logged-in user behind a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: user::Model,
    pub tenant: tenant::Model,
    /// SHA-256 of the session token: what the audit log and session store know it by.
    pub session_hash: String,
    pub peer: PeerCertificate,
    /// The session was opened by federated login: the provider stands in for the password.
    pub federated: bool,
}

impl Caller {
    /// Who the audit log says did it: this user, over this session and certificate, from `ip`.
    pub fn origin(&self, request: &RequestContext) -> Origin {
        Origin {
            actor_id: Some(self.user.id),
            session_hash: Some(self.session_hash.clone()),
            ip: Some(request.client_ip.to_string()),
            certificate_serial: Some(self.peer.serial_hex.clone()),
        }
    }

    pub fn tz(&self) -> chrono_tz::Tz {
        self.tenant
            .time_zone
            .parse()
            .unwrap_or(chrono_tz::Asia::Tokyo)
    }
}

pub trait ContextExt {
    fn state(&self) -> AppResult<&AppState>;
    fn request(&self) -> AppResult<&RequestContext>;
    /// The caller, ready for work: refused with PASSWORD_CHANGE_REQUIRED until the initial
    /// password is changed, then with PLEDGE_REQUIRED until the pledge (form 6) is accepted.
    fn caller(&self) -> impl std::future::Future<Output = AppResult<&Caller>> + Send;
    /// The caller once the password is changed, pledge or not: `acceptPledge`, `tenant`.
    fn caller_before_pledge(&self) -> impl std::future::Future<Output = AppResult<&Caller>> + Send;
    /// The caller even before the password change: only `me`, `changePassword`, `logout`.
    fn caller_before_password_change(
        &self,
    ) -> impl std::future::Future<Output = AppResult<&Caller>> + Send;
}

impl ContextExt for Context<'_> {
    fn state(&self) -> AppResult<&AppState> {
        self.data::<AppState>()
            .map_err(|_| AppError::internal(anyhow::anyhow!("AppState missing from schema data")))
    }

    fn request(&self) -> AppResult<&RequestContext> {
        self.data::<RequestContext>().map_err(|_| {
            AppError::internal(anyhow::anyhow!("RequestContext missing from request data"))
        })
    }

    async fn caller(&self) -> AppResult<&Caller> {
        let caller = self.caller_before_pledge().await?;
        if caller.user.pledge_accepted_at.is_none() {
            return Err(AppError::PledgeRequired);
        }
        Ok(caller)
    }

    async fn caller_before_pledge(&self) -> AppResult<&Caller> {
        let caller = self.caller_before_password_change().await?;
        // A federated session never used the Renkei password, so it is not held up by it.
        if caller.user.must_change_password && !caller.federated {
            return Err(AppError::PasswordChangeRequired);
        }
        Ok(caller)
    }

    async fn caller_before_password_change(&self) -> AppResult<&Caller> {
        let state = self.state()?;
        let request = self.request()?;
        let caller = request
            .caller
            .get_or_try_init(|| authenticate(state, request))
            .await?;
        if request.long_lived {
            let alive = state
                .sessions
                .alive(std::slice::from_ref(&caller.session_hash))
                .await
                .map_err(AppError::unavailable)?;
            if alive.first() != Some(&true) {
                return Err(AppError::Unauthenticated);
            }
        }
        Ok(caller)
    }
}

/// The logged-in caller of a request: the session its token names, bound to the certificate
/// the connection carries, of an account (and facility) that is not suspended.
pub async fn authenticate(state: &AppState, request: &RequestContext) -> AppResult<Caller> {
    let token = request
        .session_token
        .as_ref()
        .ok_or(AppError::Unauthenticated)?;
    let (session_hash, record) =
        crate::service::login::resume(state, token.expose_secret(), request.peer.as_ref()).await?;
    let user = crate::service::users::by_id(&state.db, record.user_id)
        .await?
        .ok_or(AppError::Unauthenticated)?;
    // Suspending a facility suspends its people, also mid-session.
    let facility_suspended = match user.facility_id {
        Some(id) => crate::service::users::facility(&state.db, id)
            .await?
            .is_some_and(|f| f.status == AccountStatus::Suspended),
        None => false,
    };
    if user.status == AccountStatus::Suspended || facility_suspended {
        let ended = state
            .sessions
            .revoke(&session_hash)
            .await
            .map_err(AppError::unavailable)?;
        if ended.is_some() {
            let event = Event::new(user.tenant_id, "session.revoke", AuditOutcome::Allowed)
                .actor(Some(user.id))
                .session(session_hash)
                .target("user", user.id)
                .detail("reason", "account_suspended");
            audit::record_now(&state.db, event).await?;
        }
        return Err(AppError::AccountSuspended);
    }
    let tenant = crate::service::users::tenant_of(&state.db, &user).await?;
    let peer = request.peer.clone().ok_or(AppError::Unauthenticated)?;
    Ok(Caller {
        user,
        tenant,
        session_hash,
        peer,
        federated: record.federated,
    })
}
