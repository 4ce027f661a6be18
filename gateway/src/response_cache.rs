//! The in-process response cache: whole public GET responses, so a hot persisted query (what a
//! CDN forwards on a miss, or what many clients ask at once) is answered without parsing,
//! executing or touching the store.
//!
//! Only responses the cache policy made public are stored, so nothing caller-specific can be
//! served to another caller; the key still carries the caller's access scope, so a future
//! scope-dependent field cannot leak across scopes either. Keys are the document hash, the
//! operation name, the variables in canonical form (keys sorted) and the response media type,
//! behind a version prefix. Entries live for the response's max-age, capped by
//! `response_cache.max_ttl_secs`, and the cache is bounded in bytes. A request with
//! `Cache-Control: no-cache` (a browser's forced reload, a CDN revalidating) skips the lookup
//! and refreshes the entry; `no-store` also keeps the response out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use moka::Expiry;
use prometheus::IntCounterVec;
use serde_json::Value;

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
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<String, Arc<Entry>> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, entry: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// The cache of one gateway.
pub struct ResponseCache {
    cache: moka::sync::Cache<String, Arc<Entry>>,
    max_ttl: Duration,
    requests: IntCounterVec,
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
    /// `requests` (`cache_requests_total{tier,result}`).
    pub fn new(max_bytes: u64, max_ttl: Duration, requests: IntCounterVec) -> ResponseCache {
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, e: &Arc<Entry>| {
                u32::try_from(k.len() + e.body.len() + 64).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        ResponseCache { cache, max_ttl, requests }
    }

    /// The stored response for `key` (from [`CacheKey::render`]), counting a hit or a miss.
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let found = self.cache.get(key);
        let result = if found.is_some() { "hit" } else { "miss" };
        self.requests.with_label_values(&["response", result]).inc();
        found
    }

    /// Counts a lookup the client asked to skip (`Cache-Control: no-cache`).
    pub fn bypass(&self) {
        self.requests.with_label_values(&["response", "bypass"]).inc();
    }

    /// Stores a public response under the key `get` returned.
    pub fn put(&self, key: String, body: Bytes, etag: String, max_age: u32) {
        let ttl = Duration::from_secs(u64::from(max_age)).min(self.max_ttl);
        if ttl.is_zero() {
            return;
        }
        self.cache.insert(key, Arc::new(Entry { body, etag, max_age, stored_at: Instant::now(), ttl }));
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
