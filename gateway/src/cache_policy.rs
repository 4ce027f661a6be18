//! HTTP caching decisions for GraphQL responses, so CDNs and browsers can cache public catalog
//! reads. The max-age of a response is the minimum over the cache hints of the fields it
//! touched (async-graphql computes it from the schema's `cache_control` hints). A response that
//! touched a caller-specific field (`me`, `myRating`, mutations) is `private, no-store`. Only
//! GET responses without errors whose hints are all public are cacheable; everything else is
//! `no-store`. Cacheable responses carry a strong ETag over the exact body (bodies are
//! byte-stable: fields come out in query order) and answer a matching `If-None-Match` with 304.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use marquee_schema::SurrogateKey;
use sha2::{Digest, Sha256};

/// Staleness allowances added to every public response.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CachePolicy {
    /// Seconds a cache may serve a stale copy while it revalidates.
    pub stale_while_revalidate: u32,
    /// Seconds a cache may serve a stale copy when the origin fails.
    pub stale_if_error: u32,
}

/// What to do with one response.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Shared caches may keep it this many seconds.
    Public {
        /// Seconds.
        max_age: u32,
    },
    /// It depends on the caller (`me`, `myRating`, mutations): `private, no-store`.
    Private,
    /// Nobody may store it (POST, errors, or no max-age).
    NoStore,
}

/// Decides for a response of `method_is_get` with `has_errors` and async-graphql's merged hints.
pub fn decide(method_is_get: bool, has_errors: bool, hints: async_graphql::CacheControl) -> Decision {
    if !hints.public {
        return Decision::Private;
    }
    match u32::try_from(hints.max_age) {
        Ok(max_age) if method_is_get && !has_errors && hints.public && max_age > 0 => {
            Decision::Public { max_age }
        }
        _ => Decision::NoStore,
    }
}

/// What a request's own `Cache-Control` asks of caches.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `no-cache` (or `no-store`, or `max-age=0`): do not answer from a stored copy.
    pub no_cache: bool,
    /// `no-store`: do not store the response either.
    pub no_store: bool,
}

/// Reads the request's `Cache-Control` (and the legacy `Pragma: no-cache`).
pub fn request_directives(request: &HeaderMap) -> RequestDirectives {
    let mut directives = RequestDirectives::default();
    let values = request.get_all(header::CACHE_CONTROL).iter().chain(request.get_all(header::PRAGMA).iter());
    for value in values.filter_map(|v| v.to_str().ok()) {
        for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
            match directive.as_str() {
                "no-cache" | "max-age=0" => directives.no_cache = true,
                "no-store" => {
                    directives.no_cache = true;
                    directives.no_store = true;
                }
                _ => {}
            }
        }
    }
    directives
}

/// The strong ETag of `body` sent as `media_type`: the same bytes under another media type are
/// another representation, so another tag.
pub fn etag(media_type: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(media_type.as_bytes());
    hasher.update([0]);
    hasher.update(body);
    let digest = hasher.finalize();
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// Whether `If-None-Match` in `request` matches `etag` (weak comparison, as RFC 9110 asks).
pub fn not_modified(request: &HeaderMap, etag: &str) -> bool {
    request.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).any(|list| {
        list.split(',')
            .map(str::trim)
            .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
    })
}

/// Sets `Cache-Control` and (when public) `ETag` on `response` headers. (`Vary` is set on
/// every `/graphql` response by the route's media-type stage.)
pub fn apply(policy: CachePolicy, decision: Decision, etag: Option<&str>, headers: &mut HeaderMap) {
    match (decision, etag) {
        (Decision::Public { max_age }, Some(etag)) => {
            let value = format!(
                "public, max-age={max_age}, s-maxage={max_age}, stale-while-revalidate={}, stale-if-error={}",
                policy.stale_while_revalidate, policy.stale_if_error
            );
            if let (Ok(value), Ok(etag)) = (HeaderValue::from_str(&value), HeaderValue::from_str(etag)) {
                headers.insert(header::CACHE_CONTROL, value);
                headers.insert(header::ETAG, etag);
                return;
            }
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        (Decision::Private, _) => {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
        }
        _ => {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
}

/// Most surrogate keys one response names; a response showing more is named by [`ALL_KEYS`]
/// instead, which every purge names too.
pub const MAX_SURROGATE_KEYS: usize = 200;

/// The surrogate key of responses showing too much to name it all (it kept its first name,
/// from when keys named only ratings, so edges mid-upgrade purge the same responses).
pub const ALL_KEYS: &str = "ratings";

/// The surrogate keys of a public response showing `shown`: the keys the writes that change
/// what it shows purge (`marquee_schema::Shown`).
pub fn surrogate_keys(shown: &[SurrogateKey]) -> String {
    if shown.len() > MAX_SURROGATE_KEYS {
        return ALL_KEYS.to_owned();
    }
    shown.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
}

/// Names a public response's surrogate keys (nothing when it shows nothing a write changes):
/// `xkey` for Varnish's xkey module, `Surrogate-Key` for CDNs that purge by tag.
pub fn apply_surrogate_keys(decision: Decision, shown: &[SurrogateKey], headers: &mut HeaderMap) {
    if !matches!(decision, Decision::Public { .. }) || shown.is_empty() {
        return;
    }
    if let Ok(value) = HeaderValue::from_str(&surrogate_keys(shown)) {
        headers.insert(HeaderName::from_static("xkey"), value.clone());
        headers.insert(HeaderName::from_static("surrogate-key"), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints(public: bool, max_age: i32) -> async_graphql::CacheControl {
        async_graphql::CacheControl { public, max_age }
    }

    #[test]
    fn only_clean_public_gets_are_cacheable() {
        assert_eq!(decide(true, false, hints(true, 300)), Decision::Public { max_age: 300 });
        assert_eq!(decide(false, false, hints(true, 300)), Decision::NoStore);
        assert_eq!(decide(true, true, hints(true, 300)), Decision::NoStore);
        assert_eq!(decide(true, false, hints(false, 300)), Decision::Private);
        assert_eq!(decide(false, true, hints(false, 0)), Decision::Private, "private wins over everything");
        assert_eq!(decide(true, false, hints(true, 0)), Decision::NoStore);
        assert_eq!(decide(true, false, hints(true, -1)), Decision::NoStore);
    }

    #[test]
    fn request_directives_are_read_from_cache_control_and_pragma() {
        let mut headers = HeaderMap::new();
        assert_eq!(request_directives(&headers), RequestDirectives::default());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-stale, No-Cache"));
        assert_eq!(request_directives(&headers), RequestDirectives { no_cache: true, no_store: false });
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert_eq!(request_directives(&headers), RequestDirectives { no_cache: true, no_store: true });
        let mut pragma = HeaderMap::new();
        pragma.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        assert!(request_directives(&pragma).no_cache);
    }

    #[test]
    fn if_none_match_lists_and_weak_tags_match() {
        let tag = etag("application/json", b"body");
        let mut headers = HeaderMap::new();
        headers
            .insert(header::IF_NONE_MATCH, HeaderValue::from_str(&format!("\"x\", W/{tag}")).expect("ascii"));
        assert!(not_modified(&headers, &tag));
        assert!(!not_modified(&headers, &etag("application/json", b"other")));
        assert_ne!(etag("application/json", b"body"), etag("application/graphql-response+json", b"body"));
        assert!(!not_modified(&HeaderMap::new(), &tag));
    }
}
