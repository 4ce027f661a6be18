//! The response-cache stage: whole public GET responses, so a hot persisted query (what a
//! CDN forwards on a miss, or what many clients ask at once) is answered without parsing,
//! executing or touching the store.
//!
//! Only responses the cache policy made public are stored, so nothing caller-specific can be
//! served to another caller; the key still carries the caller's access scope, so a future
//! scope-dependent field cannot leak across scopes either. Keys are the document hash, the
//! operation name, the variables in canonical form (keys sorted) and the response media type,
//! behind a version prefix. Entries live for the response's max-age, capped by
//! `response_cache.max_ttl_secs`, and the cache is bounded in bytes. It is a [`Tiered`] cache
//! held in this process only: the regional tier does not serve it (each gateway fills its
//! own). An entry is dropped once something it shows changes (a rating or a catalog edit taken
//! here, the region's bus, another region's write from the log): entries remember the
//! surrogate keys of what they show (`marquee_schema::Shown`), and the cache when each key
//! last changed. A request with
//! `Cache-Control: no-cache` (a browser's forced reload, a CDN revalidating) skips the lookup
//! and refreshes the entry; `no-store` also keeps the response out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use prometheus::IntCounterVec;
use serde_json::Value;

use marquee_schema::SurrogateKey;

use crate::cache::{Sizing, Tiered, Weigh};
use crate::changes::Subscriber;

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
    /// When the execution that produced it started: a change of something it shows at or
    /// after this moment may not be in it.
    pub as_of: Instant,
    /// The surrogate keys of what it shows.
    pub shown: Vec<SurrogateKey>,
}

/// Heap bytes of a key's text.
fn key_text(key: &SurrogateKey) -> usize {
    match key {
        SurrogateKey::Search(prefix) => prefix.len(),
        _ => 0,
    }
}

impl Weigh for Arc<Entry> {
    fn weight(&self) -> usize {
        self.body.len()
            + self.etag.len()
            + self.shown.iter().map(|k| std::mem::size_of::<SurrogateKey>() + key_text(k)).sum::<usize>()
    }
}

/// The response cache of one gateway.
pub struct ResponseCache {
    cache: Tiered<Arc<Entry>>,
    max_ttl: Duration,
    /// When each surrogate key last changed, for as long as an entry can live.
    changed: moka::sync::Cache<SurrogateKey, Instant>,
    /// When anything may last have changed (messages lost).
    all_changed: std::sync::Mutex<Option<Instant>>,
}

/// What identifies a response.
pub struct ResponseKey<'a> {
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

impl ResponseKey<'_> {
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
        ResponseCache {
            cache: Tiered::local(Sizing { name: "response", max_bytes, ttl: max_ttl, requests }),
            max_ttl,
            changed: moka::sync::Cache::builder().max_capacity(1_000_000).time_to_live(max_ttl).build(),
            all_changed: std::sync::Mutex::new(None),
        }
    }

    /// The stored response for `key` (from [`ResponseKey::render`]), counting a hit or a miss; an
    /// entry showing a rating that changed since is dropped (and counted `invalidated`).
    pub async fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let entry = self.cache.get(key).await?;
        let all = *self.all_changed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let stale = all.is_some_and(|at| at >= entry.as_of)
            || entry.shown.iter().any(|key| self.changed.get(key).is_some_and(|at| at >= entry.as_of));
        if stale {
            self.cache.invalidate([key]).await;
            return None;
        }
        Some(entry)
    }

    /// Drops every response stored so far (lazily, as each is next asked for): the backend now
    /// serves another catalog generation, and a response produced before may show the old one.
    pub fn catalog_switched(&self) {
        *self.all_changed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }

    /// Counts a lookup the client asked to skip (`Cache-Control: no-cache`).
    pub fn bypass(&self) {
        self.cache.bypass();
    }

    /// Stores a public response under the key `get` was asked for: produced by an execution
    /// that started `as_of` and showed `shown`.
    pub async fn put(&self, key: String, stored: Stored) {
        let Stored { body, etag, max_age, as_of, shown } = stored;
        let ttl = Duration::from_secs(u64::from(max_age)).min(self.max_ttl);
        let entry = Arc::new(Entry { body, etag, max_age, stored_at: Instant::now(), as_of, shown });
        self.cache.put(key.into(), entry, ttl).await;
    }
}

/// A response to store.
pub struct Stored {
    /// The exact body.
    pub body: Bytes,
    /// Its strong ETag.
    pub etag: String,
    /// Its max-age, in seconds.
    pub max_age: u32,
    /// When its execution started.
    pub as_of: Instant,
    /// The surrogate keys of what it shows.
    pub shown: Vec<SurrogateKey>,
}

impl Subscriber for ResponseCache {
    fn seen(&self, keys: &[SurrogateKey]) {
        let now = Instant::now();
        for key in keys {
            self.changed.insert(key.clone(), now);
        }
    }

    fn lost(&self) {
        self.catalog_switched();
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
            ResponseKey {
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
