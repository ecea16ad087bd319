//! Review of the audit trail by the city (CITY_ADMIN): events, a room's access report, and
//! the chain check. Every review is itself recorded (`audit.read`).

use async_graphql::{Context, ID, InputObject, Json, Object, Result, SimpleObject};
use chrono::{DateTime, FixedOffset, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

use entity::audit_event;
use entity::kinds::AuditOutcome;

use crate::authz::{self, AuditReader};
use crate::error::AppError;
use crate::graphql::context::{Caller, ContextExt as _};
use crate::graphql::types::{PageInfo, User, local};
use crate::service::audit::{self, Event, Filter};

#[derive(Default)]
pub struct AuditQuery;

#[derive(InputObject, Default)]
pub struct AuditFilter {
    pub actor_id: Option<ID>,
    pub room_id: Option<ID>,
    /// Exact action, or a prefix ending in `*` (`login.*`).
    pub action: Option<String>,
    /// Inclusive.
    pub from: Option<DateTime<FixedOffset>>,
    /// Exclusive.
    pub to: Option<DateTime<FixedOffset>>,
}

pub struct AuditEvent {
    model: audit_event::Model,
    tz: Tz,
}

#[Object]
impl AuditEvent {
    async fn id(&self) -> ID {
        ID(self.model.id.to_string())
    }
    /// Server time of the event (UTC clock, shown with the tenant's offset).
    async fn at(&self) -> DateTime<FixedOffset> {
        local(self.model.at, self.tz)
    }
    /// Null for anonymous and system events (failed login with an unknown id, lockout).
    async fn actor(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        User::by_id(ctx, self.model.actor_id, self.tz).await
    }
    async fn action(&self) -> &str {
        &self.model.action
    }
    async fn target_type(&self) -> Option<&str> {
        self.model.target_type.as_deref()
    }
    async fn target_id(&self) -> Option<&str> {
        self.model.target_id.as_deref()
    }
    async fn room_id(&self) -> Option<ID> {
        self.model.room_id.map(|id| ID(id.to_string()))
    }
    /// ALLOWED | DENIED | FAILED
    async fn outcome(&self) -> &'static str {
        audit::outcome_str(self.model.outcome)
    }
    async fn ip(&self) -> Option<&str> {
        self.model.ip.as_deref()
    }
    /// Serial (hex) of the client certificate the request came over.
    async fn certificate_serial(&self) -> Option<&str> {
        self.model.certificate_serial.as_deref()
    }
    /// SHA-256 of the session token: pairs a login with its logout or expiry (access duration).
    async fn session_hash(&self) -> Option<&str> {
        self.model.session_hash.as_deref()
    }
    /// Small structured facts (reason, serial, counts); never secrets or clinical text.
    async fn detail(&self) -> Json<serde_json::Value> {
        Json(serde_json::from_str(&self.model.detail).unwrap_or(serde_json::Value::Null))
    }
}

#[derive(SimpleObject)]
pub struct AuditEventEdge {
    cursor: String,
    node: AuditEvent,
}

#[derive(SimpleObject)]
pub struct AuditEventConnection {
    edges: Vec<AuditEventEdge>,
    page_info: PageInfo,
    total_count: i32,
}

#[derive(SimpleObject)]
pub struct AuditChainReport {
    verified_events: i32,
    intact: bool,
    first_broken_event_id: Option<ID>,
}

fn parse_filter_id(id: Option<&ID>, field: &str) -> Result<Option<Uuid>, AppError> {
    id.map(|id| Uuid::parse_str(id.as_str()).map_err(|_| AppError::bad_input(field, "not an id")))
        .transpose()
}

fn utc(at: Option<DateTime<FixedOffset>>) -> Option<DateTime<Utc>> {
    at.map(|a| a.with_timezone(&Utc))
}

/// The capability, or FORBIDDEN (which the schema's audit extension records as `authz.denied`).
async fn reader<'a>(ctx: &'a Context<'_>) -> Result<(&'a Caller, AuditReader)> {
    let caller = ctx.caller().await?;
    let reader = authz::audit_reader(&caller.user)?;
    Ok((caller, reader))
}

/// Records that the city looked at the audit trail (about one room, for the access report).
async fn record_review(
    ctx: &Context<'_>,
    caller: &Caller,
    what: &'static str,
    room: Option<Uuid>,
    detail: (&str, serde_json::Value),
) -> Result<()> {
    let state = ctx.state()?;
    let mut event = Event::new(caller.tenant.id, "audit.read", AuditOutcome::Allowed)
        .by(&caller.origin(ctx.request()?))
        .detail("query", what)
        .detail(detail.0, detail.1);
    if let Some(room) = room {
        event = event.room(room);
    }
    state.audit.read(event).await?;
    Ok(())
}

#[Object]
impl AuditQuery {
    /// The tenant's audit events, newest first (CITY_ADMIN).
    async fn audit_events(
        &self,
        ctx: &Context<'_>,
        filter: Option<AuditFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<AuditEventConnection> {
        let (caller, reader) = reader(ctx).await?;
        let state = ctx.state()?;
        let filter = filter.unwrap_or_default();
        let service_filter = Filter {
            actor_id: parse_filter_id(filter.actor_id.as_ref(), "filter.actorId")?,
            room_id: parse_filter_id(filter.room_id.as_ref(), "filter.roomId")?,
            action: filter.action.filter(|a| !a.is_empty()),
            from: utc(filter.from),
            to: utc(filter.to),
        };
        // Absent means a page of 50; out-of-range values are refused by the service.
        let first = u64::try_from(first.unwrap_or(50)).unwrap_or(0);
        // Read events of this instance that are still buffered belong in the answer.
        state.audit.flush().await;
        let page = audit::list(&state.db, reader, &service_filter, first, after.as_deref()).await?;
        record_review(
            ctx,
            caller,
            "auditEvents",
            None,
            ("returned", page.events.len().into()),
        )
        .await?;
        let tz = caller.tz();
        let edges: Vec<AuditEventEdge> = page
            .events
            .into_iter()
            .map(|(cursor, model)| AuditEventEdge {
                cursor,
                node: AuditEvent { model, tz },
            })
            .collect();
        Ok(AuditEventConnection {
            page_info: PageInfo {
                has_next_page: page.has_next,
                has_previous_page: after.is_some(),
                start_cursor: edges.first().map(|e| e.cursor.clone()),
                end_cursor: edges.last().map(|e| e.cursor.clone()),
            },
            edges,
            total_count: i32::try_from(page.total).unwrap_or(i32::MAX),
        })
    }

    /// Every access to one patient's room, oldest first, for a disclosure request by the
    /// patient (CITY_ADMIN).
    async fn room_access_report(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
        from: Option<DateTime<FixedOffset>>,
        to: Option<DateTime<FixedOffset>>,
    ) -> Result<Vec<AuditEvent>> {
        let (caller, reader) = reader(ctx).await?;
        let state = ctx.state()?;
        let room = Uuid::parse_str(room_id.as_str()).map_err(|_| AppError::NotFound)?;
        ctx.request()?.note_room(room);
        // Another tenant's room, or none: NOT_FOUND, not an empty report.
        crate::service::rooms::in_tenant(&state.db, reader.tenant_id, room).await?;
        state.audit.flush().await;
        let events = audit::room_events(&state.db, reader, room, utc(from), utc(to)).await?;
        record_review(
            ctx,
            caller,
            "roomAccessReport",
            Some(room),
            ("returned", events.len().into()),
        )
        .await?;
        let tz = caller.tz();
        Ok(events
            .into_iter()
            .map(|model| AuditEvent { model, tz })
            .collect())
    }

    /// Walks the tenant's hash chain and names the first event that does not check out
    /// (CITY_ADMIN).
    async fn verify_audit_chain(&self, ctx: &Context<'_>) -> Result<AuditChainReport> {
        let (caller, reader) = reader(ctx).await?;
        let state = ctx.state()?;
        state.audit.flush().await;
        let report = audit::verify_chain(&state.db, reader.tenant_id).await?;
        if let Some(problem) = &report.problem {
            tracing::error!(tenant = %reader.tenant_id, problem, "audit chain is broken");
        }
        record_review(
            ctx,
            caller,
            "verifyAuditChain",
            None,
            ("intact", report.intact.into()),
        )
        .await?;
        Ok(AuditChainReport {
            verified_events: i32::try_from(report.verified_events).unwrap_or(i32::MAX),
            intact: report.intact,
            first_broken_event_id: report.first_broken.map(|id| ID(id.to_string())),
        })
    }
}
