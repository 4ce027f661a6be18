//! Stage 8: the HTTP response, with the cache headers `crate::cache_policy` decides — for an
//! executed operation, or for a response-cache hit answered exactly like the original.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::MediaType;
use super::execute::Executed;
use crate::cache_policy::{self, CachePolicy, Decision};
use crate::response_cache::Entry;

/// The response for `executed`; `get_headers` are a GET's request headers (for 304).
pub(super) fn executed(
    policy: CachePolicy,
    executed: Executed,
    media: MediaType,
    get_headers: Option<&HeaderMap>,
) -> Response {
    let status = if media == MediaType::GraphqlResponseJson && executed.request_error {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let unchanged = matches!((&executed.etag, get_headers), (Some(tag), Some(headers)) if cache_policy::not_modified(headers, tag));
    let mut http = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (status, executed.body).into_response()
    };
    if !unchanged {
        http.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(media.as_str()));
    }
    cache_policy::apply(policy, executed.decision, executed.etag.as_deref(), http.headers_mut());
    cache_policy::apply_surrogate_keys(executed.decision, &executed.shown, http.headers_mut());
    http
}

/// A response-cache hit, answered like the original (including 304) plus its `Age`.
pub(super) fn from_cache(
    policy: CachePolicy,
    entry: &Entry,
    media: MediaType,
    headers: &HeaderMap,
) -> Response {
    let unchanged = cache_policy::not_modified(headers, &entry.etag);
    let mut http = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut http = (StatusCode::OK, entry.body.clone()).into_response();
        http.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(media.as_str()));
        http
    };
    let decision = Decision::Public { max_age: entry.max_age };
    cache_policy::apply(policy, decision, Some(&entry.etag), http.headers_mut());
    cache_policy::apply_surrogate_keys(decision, &entry.shown, http.headers_mut());
    http.headers_mut().insert(header::AGE, HeaderValue::from(entry.stored_at.elapsed().as_secs()));
    http
}
