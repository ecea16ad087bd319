//! What every request passes before a resolver runs, and the codes of what fails there: the
//! input rule of [`super::input`], the cost of the query (every selected field counts, nested
//! connections multiply by their page size), and `extensions.code` on every error async-graphql
//! makes itself (parse, validation, argument coercion).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest, NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::registry::{MetaTypeName, Registry};
use async_graphql::{
    ErrorExtensionValues, Name, Pos, Response, ServerError, ServerResult, ValidationResult,
    Value as ConstValue, Variables,
};

use crate::service::page::{DEFAULT_PAGE, MAX_PAGE};

pub const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";

/// Guards the walk over fragments before validation has refused cycles.
const MAX_WALK_DEPTH: usize = 64;

pub struct RequestLimits {
    pub max_cost: usize,
}

impl ExtensionFactory for RequestLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RequestLimitsExtension {
            max_cost: self.max_cost,
            arguments: Mutex::default(),
        })
    }
}

/// One per request: where each argument is in the document, to name the field of an argument
/// that fails to coerce while executing.
struct RequestLimitsExtension {
    max_cost: usize,
    arguments: Mutex<HashMap<Pos, String>>,
}

fn set_code(err: &mut ServerError, code: &str) {
    let ext = err
        .extensions
        .get_or_insert_with(ErrorExtensionValues::default);
    if ext.get("code").is_none() {
        ext.set("code", code);
    }
}

fn has_code(err: &ServerError) -> bool {
    err.extensions
        .as_ref()
        .is_some_and(|e| e.get("code").is_some())
}

#[async_trait::async_trait]
impl Extension for RequestLimitsExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        let arguments = self.arguments.lock().map(|a| a.clone()).unwrap_or_default();
        for err in &mut response.errors {
            if has_code(err) {
                continue;
            }
            if err.path.is_empty() || err.message.starts_with("Variable ") {
                // Left over from preparing the request (an unknown or missing operation name)
                // or from the variables (one used but not defined or not given).
                set_code(err, VALIDATION_FAILED);
            } else if err.message.starts_with("Failed to parse")
                || err.message.starts_with("Invalid value")
            {
                // An argument (a date, a time, an enum …) that does not coerce to its type.
                let field = err
                    .locations
                    .iter()
                    .find_map(|pos| arguments.get(pos).cloned())
                    .unwrap_or_else(|| "input".to_string());
                set_code(err, "BAD_USER_INPUT");
                if let Some(ext) = err.extensions.as_mut() {
                    ext.set("field", field);
                }
            } else {
                tracing::error!(message = %err.message, "an error without a code reached the response");
                err.message = "internal error".into();
                set_code(err, "INTERNAL");
            }
        }
        response
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await.map_err(|mut err| {
            // The recursion-depth and directive counts are checked with the parse.
            let code =
                if err.message.contains("recursion depth") || err.message.contains("directives") {
                    VALIDATION_FAILED
                } else {
                    PARSE_FAILED
                };
            set_code(&mut err, code);
            err
        })?;
        super::input::check_document(&doc, variables)?;
        missing_variables(&doc, variables)?;
        if let Ok(mut arguments) = self.arguments.lock() {
            *arguments = argument_positions(&doc);
        }
        let cost = query_cost(&ctx.schema_env.registry, &doc, variables);
        if cost > self.max_cost {
            let mut err = ServerError::new(
                format!(
                    "the query costs more than the limit of {} (every selected field counts 1, times the page sizes of the connections around it)",
                    self.max_cost
                ),
                None,
            );
            set_code(&mut err, VALIDATION_FAILED);
            return Err(err);
        }
        Ok(doc)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|mut errors| {
            for err in &mut errors {
                set_code(err, VALIDATION_FAILED);
            }
            errors
        })
    }
}

/// A required variable without a value is a coercion failure of the request as a whole, refused
/// before anything runs (async-graphql would only notice it in the resolver that reads it).
fn missing_variables(doc: &ExecutableDocument, variables: &Variables) -> ServerResult<()> {
    let async_graphql::parser::types::DocumentOperations::Single(op) = &doc.operations else {
        return Ok(());
    };
    for var in &op.node.variable_definitions {
        let var = &var.node;
        let given = variables
            .get(&var.name.node)
            .is_some_and(|v| !matches!(v, ConstValue::Null));
        if !var.var_type.node.nullable && var.default_value.is_none() && !given {
            let mut err = ServerError::new(
                format!(
                    "variable ${} of type {} is required but was not given",
                    var.name.node, var.var_type.node
                ),
                Some(var.name.pos),
            );
            set_code(&mut err, VALIDATION_FAILED);
            return Err(err);
        }
    }
    Ok(())
}

/// Position of each argument's value in the document -> the argument's name.
fn argument_positions(doc: &ExecutableDocument) -> HashMap<Pos, String> {
    fn walk(set: &SelectionSet, out: &mut HashMap<Pos, String>) {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    for (name, value) in &field.node.arguments {
                        out.insert(value.pos, name.node.to_string());
                    }
                    walk(&field.node.selection_set.node, out);
                }
                Selection::InlineFragment(f) => walk(&f.node.selection_set.node, out),
                Selection::FragmentSpread(_) => {}
            }
        }
    }
    let mut out = HashMap::new();
    for (_, operation) in doc.operations.iter() {
        walk(&operation.node.selection_set.node, &mut out);
    }
    for fragment in doc.fragments.values() {
        walk(&fragment.node.selection_set.node, &mut out);
    }
    out
}

/// The cost of the largest operation of the document: every selected field (aliases and
/// `__typename` included) counts 1, times the page size (`first`/`last`, default 20, at most
/// 100) of every connection it is inside.
pub fn query_cost(registry: &Registry, doc: &ExecutableDocument, variables: &Variables) -> usize {
    let walker = CostWalker {
        registry,
        doc,
        variables,
    };
    doc.operations
        .iter()
        .map(|(_, op)| {
            let root = match op.node.ty {
                async_graphql::parser::types::OperationType::Query => {
                    Some(registry.query_type.as_str())
                }
                async_graphql::parser::types::OperationType::Mutation => {
                    registry.mutation_type.as_deref()
                }
                async_graphql::parser::types::OperationType::Subscription => {
                    registry.subscription_type.as_deref()
                }
            };
            walker.cost(&op.node.selection_set.node, root, 1, 0)
        })
        .max()
        .unwrap_or(0)
}

struct CostWalker<'a> {
    registry: &'a Registry,
    doc: &'a ExecutableDocument,
    variables: &'a Variables,
}

impl CostWalker<'_> {
    fn cost(
        &self,
        set: &SelectionSet,
        parent: Option<&str>,
        multiplier: usize,
        depth: usize,
    ) -> usize {
        if depth > MAX_WALK_DEPTH {
            return usize::MAX;
        }
        let mut total: usize = 0;
        for item in &set.items {
            let cost = match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let meta = parent
                        .and_then(|p| self.registry.types.get(p))
                        .and_then(|t| t.field_by_name(field.name.node.as_str()));
                    let child_type = meta.map(|f| MetaTypeName::concrete_typename(&f.ty));
                    let own = multiplier;
                    if field.selection_set.node.items.is_empty() {
                        own
                    } else {
                        // A connection (a field taking `first`/`last`) multiplies what is
                        // selected inside it by its page size: the larger of `first` and
                        // `last`, default 20; out-of-range sizes (refused by the resolver)
                        // cost the largest page.
                        let paged = meta.is_some_and(|f| {
                            f.args.contains_key("first") || f.args.contains_key("last")
                        });
                        let mut factor = 1;
                        if paged {
                            factor = DEFAULT_PAGE as usize;
                            let given: Vec<usize> = field
                                .arguments
                                .iter()
                                .filter(|(n, _)| matches!(n.node.as_str(), "first" | "last"))
                                .filter_map(|(_, v)| {
                                    let Ok(v) =
                                        v.node.clone().into_const_with(|n| self.variable(n));
                                    match v {
                                        ConstValue::Number(n) => Some(
                                            n.as_u64()
                                                .and_then(|n| usize::try_from(n).ok())
                                                .map_or(MAX_PAGE as usize, |n| {
                                                    n.clamp(1, MAX_PAGE as usize)
                                                }),
                                        ),
                                        _ => None,
                                    }
                                })
                                .collect();
                            if let Some(max) = given.into_iter().max() {
                                factor = max;
                            }
                        }
                        own.saturating_add(self.cost(
                            &field.selection_set.node,
                            child_type,
                            multiplier.saturating_mul(factor),
                            depth + 1,
                        ))
                    }
                }
                Selection::InlineFragment(fragment) => {
                    let on = fragment
                        .node
                        .type_condition
                        .as_ref()
                        .map(|c| c.node.on.node.as_str())
                        .or(parent);
                    self.cost(&fragment.node.selection_set.node, on, multiplier, depth + 1)
                }
                Selection::FragmentSpread(spread) => {
                    match self.doc.fragments.get(&spread.node.fragment_name.node) {
                        Some(fragment) => self.cost(
                            &fragment.node.selection_set.node,
                            Some(fragment.node.type_condition.node.on.node.as_str()),
                            multiplier,
                            depth + 1,
                        ),
                        None => 0,
                    }
                }
            };
            total = total.saturating_add(cost);
        }
        total
    }

    fn variable(&self, name: Name) -> Result<ConstValue, std::convert::Infallible> {
        Ok(self
            .variables
            .get(&name)
            .cloned()
            .unwrap_or(ConstValue::Null))
    }
}
