//! The HTTP stage: routes, and the middleware every request passes through (media type for
//! `/graphql`, error shape, panic guard, tracing span, metrics, timeout) before it reaches a
//! handler; `/graphql` then passes the authentication (`crate::auth`) and rate-limit
//! (`crate::rate_limit`) stages, and its handlers hand the request to `crate::pipeline`.

pub mod graphiql;
mod graphql;
mod health;
mod metrics;
mod token;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{FromRef, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::state::AppState;
use crate::telemetry::{Metrics, traces};
use crate::{auth, error, rate_limit};

/// The gateway's router over `state`; with `graphiql_assets`, it serves GraphiQL's scripts
/// and stylesheet too (the page loads them from the gateway).
pub fn router(state: AppState, request_timeout: Duration, graphiql_assets: bool) -> Router {
    let router = if graphiql_assets { graphiql::assets() } else { Router::new() };
    router
        .route(
            "/graphql",
            get(graphql::get)
                .post(graphql::post)
                .fallback(graphql::method_not_allowed)
                // Outermost first: who is asking, then whether they may ask again.
                .route_layer(middleware::from_fn_with_state(state.rate_limit.clone(), rate_limit::rate_limit))
                .route_layer(middleware::from_fn_with_state(
                    auth::AuthStage::from_ref(&state),
                    auth::authenticate,
                )),
        )
        // The same GETs, on a path of their own that only reads: a CDN can fail it over between
        // regions (CloudFront's origin groups refuse a path that also takes POST).
        .route(
            READ_ROUTE,
            get(graphql::get)
                .fallback(graphql::read_method_not_allowed)
                .route_layer(middleware::from_fn_with_state(state.rate_limit.clone(), rate_limit::rate_limit))
                .route_layer(middleware::from_fn_with_state(
                    auth::AuthStage::from_ref(&state),
                    auth::authenticate,
                )),
        )
        .route(
            "/auth/anonymous",
            post(token::anonymous).fallback(token::anonymous_method_not_allowed).route_layer(
                middleware::from_fn_with_state(state.rate_limit.clone(), rate_limit::rate_limit),
            ),
        )
        .route("/.well-known/jwks.json", get(token::jwks))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .fallback(error::not_found)
        .layer(
            ServiceBuilder::new()
                // Outermost: the span sees the response as sent, a panic's 500 included.
                .layer(TraceLayer::new_for_http().make_span_with(request_span).on_response(responded))
                .layer(middleware::from_fn(graphql_media))
                .layer(middleware::from_fn(error::graphql_shaped))
                .layer(CatchPanicLayer::custom(error::panic_response))
                .layer(middleware::from_fn_with_state(state.metrics.clone(), track))
                .layer(middleware::from_fn_with_state(state.proxies.clone(), crate::client_addr::record))
                .layer(HandleErrorLayer::new(error::middleware_error))
                .timeout(request_timeout),
        )
        .with_state(state)
}

/// GraphQL over GET only: what a CDN may fail over between regions.
pub const READ_ROUTE: &str = "/graphql/read";

/// The media-type stage of `/graphql` (see `graphql::media`), outermost so it labels every
/// response of the route, the timeout's and the panic guard's included.
async fn graphql_media(request: Request, next: Next) -> Response {
    if matches!(request.uri().path(), "/graphql" | READ_ROUTE) {
        graphql::media(request, next).await
    } else {
        next.run(request).await
    }
}

/// The request's span: its route, method and path (never the query string, which holds GET
/// variables; for a known route only), the trace it continues (a W3C `traceparent` sent by the
/// client or the edge) and the trace id its log lines carry; [`responded`] adds the status.
/// Probes and scrapes get a span for their log lines that is never exported.
fn request_span(request: &Request) -> tracing::Span {
    let route = route(request);
    let path = if matches!(route, "unmatched" | "other") { "-" } else { request.uri().path() };
    let method = match *request.method() {
        Method::GET | Method::POST | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE => {
            request.method().as_str()
        }
        _ => "HTTP",
    };
    if matches!(route, "/healthz" | "/readyz" | "/metrics") {
        return tracing::info_span!(target: "probe", "request", method, path, route, status = tracing::field::Empty);
    }
    let span = tracing::info_span!(
        "request",
        otel.name = format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        method,
        path,
        route,
        status = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    if let Some(id) = traces::adopt(&span, traces::request_parent(request.headers())) {
        span.record("trace_id", tracing::field::display(id));
    }
    span
}

/// Records the status in the request's span (an error on a 5xx), then logs as tower-http does.
fn responded(response: &Response, latency: Duration, span: &tracing::Span) {
    span.record("status", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "error");
    }
    tower_http::trace::OnResponse::on_response(
        tower_http::trace::DefaultOnResponse::default(),
        response,
        latency,
        span,
    );
}

/// The matched route, from a fixed set (a metric label and a span name: what a client sends
/// cannot add new values).
fn route(request: &Request) -> &'static str {
    request.extensions().get::<MatchedPath>().map_or("unmatched", |p| match p.as_str() {
        "/graphql" => "/graphql",
        READ_ROUTE => READ_ROUTE,
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/auth/anonymous" => "/auth/anonymous",
        "/.well-known/jwks.json" => "/.well-known/jwks.json",
        p if p.starts_with(graphiql::ASSETS_ROUTE) => graphiql::ASSETS_ROUTE,
        _ => "other",
    })
}

/// Records `http_requests_total` and `http_request_duration_seconds` by matched route.
async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = route(&request);
    let start = Instant::now();
    let response = next.run(request).await;
    metrics.http_requests.with_label_values(&[route, response.status().as_str()]).inc();
    metrics.http_duration.with_label_values(&[route]).observe(start.elapsed().as_secs_f64());
    response
}
