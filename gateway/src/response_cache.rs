//! The response-cache stage: whole public GET responses, so a hot persisted query (what a
//! CDN forwards on a miss, or what many clients ask at once) is answered without parsing,
//! executing or touching the store.
//!
//! Only responses the cache policy made public are stored, so nothing caller-specific can be
//! served to another caller; the key still carries the caller's access scope, so a future
//! scope-dependent field cannot leak across scopes either. Keys are the document hash, the
//! operation name, the variables in canonical form (keys sorted) and the response media type,
//! behind a version prefix. Entries live for the response's max-age, capped by
//! `response_cache.max_ttl_secs`, and the cache is bounded in bytes. It is a [`Cache`], so the
//! regional tier will serve it too. A request with
//! `Cache-Control: no-cache` (a browser's forced reload, a CDN revalidating) skips the lookup
//! and refreshes the entry; `no-store` also keeps the response out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use prometheus::IntCounterVec;
use serde_json::Value;

use crate::cache::{Cache, Weigh};

/// Bumped when the key or entry shape changes.
const KEY_VERSION: &str = "r1";

/// A stored response.
#[derive(Debug)]
pub struct Entry {
    /// The exact body.
    pub body: Bytes,
    /// Its strong ETag.
    pub etag: String,
    /// Its max-age, in seconds.
    pub max_age: u32,
    /// When it was stored (for `Age`).
    pub stored_at: Instant,
}

impl Weigh for Arc<Entry> {
    fn weight(&self) -> usize {
        self.body.len() + self.etag.len()
    }
}

/// The response cache of one gateway.
pub struct ResponseCache {
    cache: Cache<Arc<Entry>>,
    max_ttl: Duration,
}

/// What identifies a response.
pub struct CacheKey<'a> {
    /// Access scope of the caller (`public`, `user`).
    pub scope: &'a str,
    /// Response media type.
    pub media: &'a str,
    /// SHA-256 of the document.
    pub document_hash: &'a str,
    /// Selected operation.
    pub operation_name: Option<&'a str>,
    /// Variables, if any.
    pub variables: Option<&'a Value>,
}

impl CacheKey<'_> {
    /// The key as stored.
    pub fn render(&self) -> String {
        let mut key = format!(
            "{KEY_VERSION}|{}|{}|{}|{}|",
            self.scope,
            self.media,
            self.document_hash,
            self.operation_name.unwrap_or("")
        );
        if let Some(variables) = self.variables {
            canonical(variables, &mut key);
        }
        key
    }
}

/// Appends `value` as JSON with object keys sorted, so `{"a":1,"b":2}` and `{"b":2,"a":1}` are
/// one key.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

impl ResponseCache {
    /// A cache of at most `max_bytes`, entries living at most `max_ttl`, counting into
    /// `requests` (`cache_requests_total{cache="response",tier="l1",result}`).
    pub fn new(max_bytes: u64, max_ttl: Duration, requests: IntCounterVec) -> ResponseCache {
        ResponseCache { cache: Cache::new("response", max_bytes, requests), max_ttl }
    }

    /// The stored response for `key` (from [`CacheKey::render`]), counting a hit or a miss.
    pub async fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.cache.get(key).await
    }

    /// Counts a lookup the client asked to skip (`Cache-Control: no-cache`).
    pub fn bypass(&self) {
        self.cache.bypass();
    }

    /// Stores a public response under the key `get` was asked for.
    pub async fn put(&self, key: String, body: Bytes, etag: String, max_age: u32) {
        let ttl = Duration::from_secs(u64::from(max_age)).min(self.max_ttl);
        let entry = Arc::new(Entry { body, etag, max_age, stored_at: Instant::now() });
        self.cache.put(key, entry, ttl).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn variable_order_does_not_split_keys() {
        let (a, b) = (
            json!({ "a": 1, "b": { "y": [1, 2], "x": null } }),
            json!({ "b": { "x": null, "y": [1, 2] }, "a": 1 }),
        );
        let key = |v| {
            CacheKey {
                scope: "public",
                media: "json",
                document_hash: "h",
                operation_name: None,
                variables: Some(v),
            }
            .render()
        };
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&json!({ "a": 2 })));
    }
}
