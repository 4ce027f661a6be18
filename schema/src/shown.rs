//! What a response shows that writes can change: the movies whose public rating summary it
//! contains. The catalog itself changes only with a new load; ratings change with every
//! write, so these are the entities a write must find again in HTTP caches (the gateway's
//! response cache, the CDN's surrogate keys). Resolvers record into the request's
//! [`ShownRatings`]; the HTTP layer reads it once the response is complete.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use marquee_store::MovieId;

/// The movies whose rating summary one response shows (a request's data; cloning shares it).
#[derive(Clone, Debug, Default)]
pub struct ShownRatings(Arc<Mutex<BTreeSet<MovieId>>>);

impl ShownRatings {
    pub(crate) fn add(&self, movie: MovieId) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(movie);
    }

    /// The movies recorded, in id order.
    pub fn movies(&self) -> Vec<MovieId> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().copied().collect()
    }
}
