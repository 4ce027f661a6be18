//! What happens to a request inside the schema, around async-graphql's own validation and
//! execution, as one extension: parse (cached) → fill in variable defaults (refusing a missing
//! required one) → measure against the limits → validate (once per document and operation,
//! `revalidation`) → execute within a budget of resolved fields → put the response in query
//! order.
//!
//! The document is prepared before async-graphql sees it and handed over at its parse step,
//! so async-graphql's own recursion check — which re-walks a fragment at every spread — never
//! runs: the analysis replaces it. Variable defaults are added to the request's variables here
//! because async-graphql's `@skip`/`@include` handling reads only the variables sent.
//!
//! The budget counts every field and list item resolved. Once it is spent, everything not yet
//! resolved resolves to nothing at once, and the response becomes a single
//! `RESPONSE_TOO_LARGE` error: whatever the estimate missed ends early instead of building
//! hundreds of megabytes. One extension rather than several: async-graphql boxes a future per
//! extension for every field it resolves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextPrepareRequest,
    NextResolve, NextValidation, ResolveInfo,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, Response, ServerError, ServerResult, ValidationResult, Value, Variables};

use tracing::Instrument;

use crate::analysis::{Cost, measure, with_defaults};
use crate::parse_cache::{ParseCache, Parsed};
use crate::query_limits::{QueryLimits, Refusal, codes};
use crate::revalidation::variables_fit;
use crate::shape::Shape;

/// The document stage on its own: parse, add variable defaults, measure. The schema runs it
/// on every request; benchmarks and fuzzing drive it directly.
pub struct Analyzer {
    shape: Shape,
    limits: QueryLimits,
    parsed: ParseCache,
}

/// Query text whose parsed form is kept across requests.
const PARSE_CACHE_BYTES: u64 = 8 * 1024 * 1024;

impl Analyzer {
    /// An analyzer for Marquee's schema with `limits`.
    pub fn new(limits: QueryLimits) -> Analyzer {
        Analyzer { shape: Shape::of_marquee(), limits, parsed: ParseCache::new(PARSE_CACHE_BYTES) }
    }

    /// The limits it checks.
    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// Parses `query` (or finds it parsed already).
    pub fn parse(&self, query: &str) -> ServerResult<Arc<Parsed>> {
        self.parsed.parse(query)
    }

    /// Adds the defaults of the chosen operation's variables to `variables`, then measures
    /// `document` against the limits.
    pub fn measure(
        &self,
        document: &ExecutableDocument,
        operation_name: Option<&str>,
        variables: &mut Variables,
    ) -> ServerResult<Cost> {
        with_defaults(document, operation_name, variables)?;
        measure(document, &self.shape, variables, &self.limits).map_err(ServerError::from)
    }
}

/// Attach one to a request (`Request::data`) to learn whether its execution started. A
/// response whose request never got that far — it did not parse, was over a limit or failed
/// validation — is a request error: the GraphQL spec gives it no `data` entry, and
/// GraphQL-over-HTTP a 4xx status under its own media type. One that started has `data`, even
/// when a field error nulled all of it.
#[derive(Clone, Debug, Default)]
pub struct ExecutionStarted(Arc<AtomicBool>);

impl ExecutionStarted {
    /// Whether execution started.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Installs the pipeline on a schema (one instance per request).
pub(crate) struct Pipeline(pub(crate) Arc<Analyzer>);

impl ExtensionFactory for Pipeline {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RequestPipeline {
            analyzer: self.0.clone(),
            document: Mutex::new(None),
            operation_name: Mutex::new(None),
            resolved: AtomicU64::new(0),
            spent: AtomicBool::new(false),
        })
    }
}

struct RequestPipeline {
    analyzer: Arc<Analyzer>,
    /// The measured document and the variables it runs with (defaults added), from
    /// preparation until the response is completed.
    document: Mutex<Option<(Arc<Parsed>, Variables)>>,
    /// The request's `operationName`, from preparation until validation.
    operation_name: Mutex<Option<String>>,
    /// Fields and list items resolved so far.
    resolved: AtomicU64,
    /// Set once `resolved` passes the budget.
    spent: AtomicBool,
}

impl RequestPipeline {
    fn document(&self) -> Option<Arc<Parsed>> {
        self.document.lock().ok().and_then(|slot| slot.as_ref().map(|(d, _)| d.clone()))
    }

    fn take(&self) -> Option<(Arc<Parsed>, Variables)> {
        self.document.lock().ok().and_then(|mut slot| slot.take())
    }

    fn keep(&self, document: Arc<Parsed>, variables: &Variables) {
        if let Ok(mut slot) = self.document.lock() {
            *slot = Some((document, variables.clone()));
        }
    }
}

#[async_trait::async_trait]
impl Extension for RequestPipeline {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let mut request = next.run(ctx, request).await?;
        let analysis = tracing::debug_span!("analyze").entered();
        let document = self.analyzer.parse(&request.query)?;
        self.analyzer.measure(&document, request.operation_name.as_deref(), &mut request.variables)?;
        drop(analysis);
        self.keep(document, &request.variables);
        if let Ok(mut slot) = self.operation_name.lock() {
            slot.clone_from(&request.operation_name);
        }
        Ok(request)
    }

    async fn parse_query(
        &self,
        _ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        _next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        // Prepared above; a path that skipped preparation is measured here all the same.
        let document = match self.document() {
            Some(document) => document,
            None => {
                let document = self.analyzer.parse(query)?;
                measure(&document, &self.analyzer.shape, variables, &self.analyzer.limits)?;
                self.keep(document.clone(), variables);
                document
            }
        };
        // async-graphql edits its copy (it removes skipped selections).
        Ok(document.document().clone())
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let operation_name = self.operation_name.lock().ok().and_then(|mut slot| slot.take());
        let operation_name = operation_name.as_deref();
        // The check runs under the lock (no await in between), sparing a copy of the variables.
        let prepared = self.document.lock().ok().and_then(|slot| {
            slot.as_ref().map(|(document, variables)| {
                let known = document
                    .validated(operation_name)
                    .filter(|_| variables_fit(&ctx.schema_env.registry, document, operation_name, variables));
                (document.clone(), known)
            })
        });
        let Some((document, known)) = prepared else {
            return next.run(ctx).instrument(tracing::debug_span!("validate")).await;
        };
        if let Some(result) = known {
            return Ok(result);
        }
        let result = next.run(ctx).instrument(tracing::debug_span!("validate")).await?;
        document.set_validated(operation_name, result);
        Ok(result)
    }

    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        if self.resolved.fetch_add(1, Ordering::Relaxed) >= self.analyzer.limits.max_response_fields {
            self.spent.store(true, Ordering::Relaxed);
            // Not `None`: async-graphql expects a value for every list item.
            return Ok(Some(Value::Null));
        }
        next.run(ctx, info).await
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        if let Some(started) = ctx.data_opt::<ExecutionStarted>() {
            started.0.store(true, Ordering::Relaxed);
        }
        let mut response = next.run(ctx, operation_name).instrument(tracing::debug_span!("execute")).await;
        if self.spent.load(Ordering::Relaxed) {
            let limit = self.analyzer.limits.max_response_fields;
            return Response::from_errors(vec![ServerError::from(Refusal {
                code: codes::RESPONSE_TOO_LARGE,
                message: format!(
                    "the response grew past {limit} fields and was stopped; ask for fewer or smaller lists"
                ),
            })]);
        }
        if let Some((document, variables)) = self.take() {
            crate::completion::complete(
                &document,
                operation_name,
                &self.analyzer.shape,
                &variables,
                &response.errors,
                &mut response.data,
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use async_graphql::{EmptySubscription, Schema};
    use serde_json::json;

    use super::*;
    use crate::mutation::Mutation;
    use crate::query::Query;

    /// Counts the validations that reach async-graphql's rules (it sits after the pipeline).
    struct CountValidations(Arc<AtomicUsize>);

    impl ExtensionFactory for CountValidations {
        fn create(&self) -> Arc<dyn Extension> {
            Arc::new(CountValidations(self.0.clone()))
        }
    }

    #[async_trait::async_trait]
    impl Extension for CountValidations {
        async fn validation(
            &self,
            ctx: &ExtensionContext<'_>,
            next: NextValidation<'_>,
        ) -> Result<ValidationResult, Vec<ServerError>> {
            self.0.fetch_add(1, Ordering::Relaxed);
            next.run(ctx).await
        }
    }

    #[tokio::test]
    async fn an_operation_is_validated_once_and_bad_variables_always() {
        let validations = Arc::new(AtomicUsize::new(0));
        let schema = Schema::build(Query, Mutation::default(), EmptySubscription)
            .extension(Pipeline(Arc::new(Analyzer::new(QueryLimits::default()))))
            .extension(CountValidations(validations.clone()))
            .finish();
        let query = "query T($name: String!) { __type(name: $name) { name } }";
        let run = |variables: serde_json::Value| {
            schema.execute(Request::new(query).variables(Variables::from_json(variables)))
        };
        let count = || validations.load(Ordering::Relaxed);

        let first = run(json!({"name": "Movie"})).await;
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        assert_eq!(count(), 1);
        let again = run(json!({"name": "Person"})).await;
        assert!(again.errors.is_empty(), "{:?}", again.errors);
        assert_eq!(again.data.to_string(), r#"{__type: {name: "Person"}}"#);
        assert_eq!(count(), 1, "a validated operation with fitting variables skips the rules");

        let bad = run(json!({"name": 7})).await;
        assert_eq!(count(), 2, "a variable that does not fit goes through the rules");
        assert!(bad.errors[0].message.contains("Invalid value for argument"), "{:?}", bad.errors);
        let unnamed = run(json!({"name": null})).await;
        assert_eq!(count(), 3);
        assert!(!unnamed.errors.is_empty(), "null for a String! is refused");

        let other = schema.execute(Request::new("{ nope }")).await;
        assert!(!other.errors.is_empty());
        let other = schema.execute(Request::new("{ nope }")).await;
        assert!(!other.errors.is_empty(), "a document that failed validation is validated again");
        assert_eq!(count(), 5);
    }
}
