//! The one conformance suite for the `Store` trait. Every backend gets a catalog seeded from
//! the same deterministic generator and must answer every access path identically; the
//! expected answers are computed here from the generator itself, not from any backend.

mod suite;

use std::sync::Arc;

use marquee_store::DynStore;
use marquee_store::catalog::seed::{SeedOptions, seed};
use marquee_store::embedded::{CatalogBuilder, EmbeddedOptions, EmbeddedStore};

/// The catalog every backend is checked against.
pub(crate) const OPTIONS: SeedOptions = SeedOptions { movies: 3_000, people: Some(1_500), seed: 42 };

fn embedded() -> (tempfile::TempDir, DynStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let builder = CatalogBuilder::create(dir.path(), 64 << 20).expect("builder");
    seed(&OPTIONS, Box::new(builder), &mut |_| {}).expect("seed");
    let store = EmbeddedStore::open(dir.path(), &EmbeddedOptions::default()).expect("open");
    (dir, Arc::new(store))
}

macro_rules! conformance {
    ($backend:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $case() {
                    let (_guard, store) = super::$backend();
                    super::suite::$case(store).await;
                }
            )*
        }
    };
}

conformance!(embedded:
    movies_by_id_keep_order_and_nulls,
    people_by_id,
    credits_in_billing_order,
    filmography_pages_newest_first,
    search_is_case_and_accent_insensitive_and_ranked,
    search_pages_do_not_overlap,
    search_rejects_empty_and_oversized,
    browse_orders_and_filters,
    browse_pages_cover_everything_once,
    browse_rejects_bad_ranges,
    similar_shares_primary_genre,
    genres_count_every_movie,
    stats_and_ping,
    closed_store_refuses_calls,
    ratings_replace_and_totals_never_double_count,
    bad_writes_write_nothing,
    user_lists_page_newest_first_and_stay_private,
);
