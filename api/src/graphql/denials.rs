//! Every FORBIDDEN answer is an audit event (`authz.denied`), whichever resolver refused: the
//! schema extension looks at the finished response, so no refusal can be forgotten.

use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery,
};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{PathSegment, Response, ServerResult, Value, Variables};

use entity::kinds::AuditOutcome;

use crate::graphql::context::RequestContext;
use crate::service::audit::Event;
use crate::state::AppState;

pub struct AuditDenials;

impl ExtensionFactory for AuditDenials {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AuditDenialsExtension::default())
    }
}

/// One per request: remembers the operation's type between parsing and execution.
#[derive(Default)]
struct AuditDenialsExtension {
    operation: Mutex<Option<OperationType>>,
}

fn root_name(ty: Option<OperationType>) -> &'static str {
    match ty {
        Some(OperationType::Mutation) => "Mutation",
        Some(OperationType::Subscription) => "Subscription",
        _ => "Query",
    }
}

fn path_string(path: &[PathSegment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            PathSegment::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            PathSegment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

#[async_trait::async_trait]
impl Extension for AuditDenialsExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let ty = match &document.operations {
            DocumentOperations::Single(op) => Some(op.node.ty),
            // Several operations: the one executed is only known by name later; the first
            // mutation wins the label if any, which is the conservative reading.
            DocumentOperations::Multiple(ops) => ops
                .values()
                .map(|op| op.node.ty)
                .find(|t| *t == OperationType::Mutation)
                .or(Some(OperationType::Query)),
        };
        if let Ok(mut slot) = self.operation.lock() {
            *slot = ty;
        }
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let response = next.run(ctx, operation_name).await;
        let denied: Vec<String> = response
            .errors
            .iter()
            .filter(|e| {
                e.extensions
                    .as_ref()
                    .and_then(|x| x.get("code"))
                    .is_some_and(|c| matches!(c, Value::String(s) if s == "FORBIDDEN"))
            })
            .map(|e| path_string(&e.path))
            .collect();
        if denied.is_empty() {
            return response;
        }
        let (Some(state), Some(request)) =
            (ctx.data_opt::<AppState>(), ctx.data_opt::<RequestContext>())
        else {
            return response;
        };
        // FORBIDDEN comes only after authentication, so the caller is known.
        let Some(caller) = request.resolved_caller() else {
            tracing::error!("FORBIDDEN without a resolved caller; denial not audited");
            return response;
        };
        let root = root_name(self.operation.lock().ok().and_then(|g| *g));
        let origin = caller.origin(request);
        for path in denied {
            let mut event = Event::new(caller.tenant.id, "authz.denied", AuditOutcome::Denied)
                .by(&origin)
                .target("field", format!("{root}{path}"));
            if let Some(room) = request.noted_room() {
                event = event.room(room);
            }
            if let Err(e) = state.audit.read(event).await {
                tracing::error!(error = ?e, "audit: could not record a denial");
            }
        }
        response
    }
}
