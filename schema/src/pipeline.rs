//! What happens to a request inside the schema, around async-graphql's own validation and
//! execution, as one extension: parse (cached) → fill in variable defaults → measure against
//! the limits → validate and execute within a budget of resolved fields → put the response in
//! query order.
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
    NextResolve, ResolveInfo,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, Response, ServerError, ServerResult, Value, Variables};

use crate::analysis::{Cost, measure, with_defaults};
use crate::parse_cache::ParseCache;
use crate::query_limits::{QueryLimits, Refusal, codes};
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
    pub fn parse(&self, query: &str) -> ServerResult<Arc<ExecutableDocument>> {
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
        with_defaults(document, operation_name, variables);
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
            resolved: AtomicU64::new(0),
            spent: AtomicBool::new(false),
        })
    }
}

struct RequestPipeline {
    analyzer: Arc<Analyzer>,
    /// The measured document and the variables it runs with (defaults added), from
    /// preparation until the response is completed.
    document: Mutex<Option<(Arc<ExecutableDocument>, Variables)>>,
    /// Fields and list items resolved so far.
    resolved: AtomicU64,
    /// Set once `resolved` passes the budget.
    spent: AtomicBool,
}

impl RequestPipeline {
    fn document(&self) -> Option<Arc<ExecutableDocument>> {
        self.document.lock().ok().and_then(|slot| slot.as_ref().map(|(d, _)| d.clone()))
    }

    fn take(&self) -> Option<(Arc<ExecutableDocument>, Variables)> {
        self.document.lock().ok().and_then(|mut slot| slot.take())
    }

    fn keep(&self, document: Arc<ExecutableDocument>, variables: &Variables) {
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
        let document = self.analyzer.parse(&request.query)?;
        self.analyzer.measure(&document, request.operation_name.as_deref(), &mut request.variables)?;
        self.keep(document, &request.variables);
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
        Ok((*document).clone())
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
        let mut response = next.run(ctx, operation_name).await;
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
