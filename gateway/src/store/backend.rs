//! Backend selection: the only file that names a concrete backend. `[store] backend` picks
//! one; serving opens it as a [`Store`], the bulk commands reach it through [`BulkLoad`].

use std::sync::Arc;

use marquee_store::bulk::BulkLoad;
use marquee_store::{Store, StoreError};
use marquee_store_embedded::{EmbeddedBulk, EmbeddedOptions, EmbeddedStore};
use marquee_store_scylla::{ScyllaBulk, ScyllaStore};
use tokio::runtime::Handle;

use crate::config::StoreConfig;

/// Embedded page cache for each of a catalog's files while bulk loading (3 GiB in all).
const EMBEDDED_LOAD_CACHE_BYTES: usize = 1 << 30;

/// Opens the configured backend for serving.
pub async fn open(config: &StoreConfig) -> Result<Store, StoreError> {
    match config {
        StoreConfig::Embedded(embedded) => {
            let options = EmbeddedOptions {
                cache_bytes: usize::try_from(embedded.cache_mib.bytes()).unwrap_or(usize::MAX),
                users_cache_bytes: usize::try_from(embedded.users_cache_mib.bytes()).unwrap_or(usize::MAX),
                inline_reads: embedded.inline_reads,
            };
            let data_dir = embedded.data_dir.clone();
            let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&data_dir, &options))
                .await
                .map_err(StoreError::backend)??;
            let store = Arc::new(store);
            // A load run beside the gateway publishes a new generation: serve it, no restart.
            EmbeddedStore::follow_generations(&store, embedded.catalog_poll_ms.get());
            Ok(Store::new(store))
        }
        StoreConfig::Scylla(options) => Ok(Store::new(Arc::new(ScyllaStore::open(options).await?))),
    }
}

/// Applies the configured backend's schema (`gateway migrate`); what it did, for the operator.
pub async fn migrate(config: &StoreConfig) -> Result<String, StoreError> {
    match config {
        StoreConfig::Embedded(embedded) => Ok(format!(
            "the embedded backend needs no migration ({} is created on first use)",
            embedded.data_dir.display()
        )),
        StoreConfig::Scylla(options) => {
            let report = marquee_store_scylla::migrate(options).await?;
            let mut text = format!(
                "keyspace {} on {} is at schema version {} (applied now: {:?}; already applied: {:?})",
                options.keyspace,
                report.engine,
                marquee_store_scylla::SCHEMA_VERSION,
                report.applied,
                report.already_applied
            );
            if let Some(change) = &report.replication_change {
                text.push_str(&format!("\nreplication changed: {change}"));
            }
            Ok(text)
        }
    }
}

/// Re-derives the rating totals of every change since `since_ms` (unix ms) (`gateway
/// reconcile`), or with `check` only compares those changed until `check`'s time with their
/// ratings; what it found, for the operator, and whether every total checked is exact.
pub async fn reconcile(
    config: &StoreConfig,
    since_ms: u64,
    check: Option<u64>,
) -> Result<(String, bool), StoreError> {
    match config {
        StoreConfig::Embedded(_) => Ok((
            "the embedded backend keeps rating totals exact in each write; nothing to reconcile".to_owned(),
            true,
        )),
        StoreConfig::Scylla(options) => {
            let store = ScyllaStore::open(options).await?;
            let at = format!("keyspace {}, data center {}", options.keyspace, options.local_dc);
            if let Some(until_ms) = check {
                let found = store.check_totals(since_ms, until_ms).await?;
                return Ok((
                    format!(
                        "{} of {} buckets of rating totals listed in {} seconds of the change log differ from \
                         their ratings ({at})",
                        found.inexact, found.buckets, found.slots
                    ),
                    found.inexact == 0,
                ));
            }
            let done = store.reconcile_since(since_ms).await?;
            Ok((
                format!(
                    "re-derived {} buckets of rating totals listed in {} seconds of the change log, {} of them wrong; \
                     wrote {} movies to the change log again, so every region's caches and edges drop them ({at})",
                    done.buckets, done.slots, done.fixed, done.told
                ),
                true,
            ))
        }
    }
}

/// Removes the catalog generations superseded more than `grace` ago (`gateway catalog gc`;
/// with `dry`, only says what it would remove); what it did, as one line per generation.
pub async fn collect_generations(
    config: &StoreConfig,
    grace: std::time::Duration,
    dry: bool,
) -> Result<String, StoreError> {
    match config {
        StoreConfig::Embedded(_) => {
            Ok("the embedded backend removes a replaced catalog itself when the new one is published"
                .to_owned())
        }
        StoreConfig::Scylla(options) => {
            let done = marquee_store_scylla::collect_generations(options, grace, dry).await?;
            let mut lines = Vec::new();
            let verb = if dry { "would remove" } else { "removed" };
            for id in &done.removed {
                lines.push(format!("generation {id}: {verb}"));
            }
            for (id, why) in &done.kept {
                lines.push(format!("generation {id}: kept ({why})"));
            }
            lines.push(format!(
                "{verb} {} generations ({} partitions) from keyspace {}; current generation {}",
                done.removed.len(),
                done.partitions,
                options.keyspace,
                done.current.map_or_else(|| "none".to_owned(), |id| id.to_string())
            ));
            Ok(lines.join("\n"))
        }
    }
}

/// The configured backend's bulk side (seed, import, export). Called on the runtime; the
/// returned object's calls block and belong on the blocking pool.
pub fn bulk(config: &StoreConfig) -> Box<dyn BulkLoad> {
    match config {
        StoreConfig::Embedded(embedded) => {
            Box::new(EmbeddedBulk::new(&embedded.data_dir, EMBEDDED_LOAD_CACHE_BYTES))
        }
        StoreConfig::Scylla(options) => Box::new(ScyllaBulk::new((**options).clone(), Handle::current())),
    }
}
