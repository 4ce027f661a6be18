//! Purging the region's CDN edges when ratings change, so a partner's cached persisted GET
//! shows a new rating within seconds rather than after its `s-maxage`.
//!
//! Public responses name the movies whose rating they show as surrogate keys
//! (`crate::cache_policy::apply_surrogate_keys`). When this gateway applies a change for its
//! region (its own write, or another region's it claimed from the store's change log; see
//! `store::cached`), it sends `PURGE` with an `xkey-purge` header naming those movies to every
//! URL of `[cdn] purge_urls` (Varnish's xkey module; each region purges its own edges). It
//! never delays the write: purges are sent in the background, retried a few times, and
//! counted (`cdn_purges_total{result}`); a purge that never gets through leaves the edge's
//! copy to its `s-maxage`. CDNs that cannot purge by tag (CloudFront) get no purge: their bound
//! is the response's `s-maxage` (docs/failover.md).

use std::sync::Arc;
use std::time::Duration;

use marquee_store::MovieId;
use prometheus::IntCounterVec;

use crate::cache_policy::{ALL_RATINGS, MAX_SURROGATE_KEYS};
use crate::changes::Subscriber;
use crate::config::CdnConfig;

/// How many times a purge is sent before it is given up.
const ATTEMPTS: u32 = 4;

/// Sends the purges.
pub struct EdgePurger {
    client: reqwest::Client,
    urls: Arc<Vec<reqwest::Url>>,
    purges: IntCounterVec,
}

/// Why `[cdn]` is unusable.
#[derive(Debug, thiserror::Error)]
#[error("[cdn] {0}")]
pub struct CdnConfigError(String);

impl EdgePurger {
    /// A purger for `config`; `None` when it names no URL.
    pub fn new(config: &CdnConfig, purges: IntCounterVec) -> Result<Option<EdgePurger>, CdnConfigError> {
        if config.purge_urls.is_empty() {
            return Ok(None);
        }
        let urls = config
            .purge_urls
            .iter()
            .map(|url| {
                reqwest::Url::parse(url).map_err(|e| CdnConfigError(format!("purge URL {url:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client = reqwest::Client::builder()
            .timeout(config.purge_timeout_ms.get().max(Duration::from_millis(1)))
            .build()
            .map_err(|e| CdnConfigError(e.to_string()))?;
        Ok(Some(EdgePurger { client, urls: Arc::new(urls), purges }))
    }

    /// The `xkey-purge` value for `movies`: their keys, and the key of responses showing too
    /// many ratings to name them all.
    fn keys(movies: &[MovieId]) -> Vec<String> {
        movies
            .chunks(MAX_SURROGATE_KEYS)
            .map(|chunk| {
                let mut keys: Vec<String> = chunk.iter().map(ToString::to_string).collect();
                keys.push(ALL_RATINGS.to_owned());
                keys.join(" ")
            })
            .collect()
    }
}

impl Subscriber for EdgePurger {
    fn applied(&self, movies: &[MovieId]) {
        if movies.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        for keys in EdgePurger::keys(movies) {
            for url in self.urls.iter() {
                let (client, url, keys, purges) =
                    (self.client.clone(), url.clone(), keys.clone(), self.purges.clone());
                runtime.spawn(async move {
                    let mut wait = Duration::from_millis(100);
                    for attempt in 1..=ATTEMPTS {
                        let sent = client
                            .request(reqwest::Method::from_bytes(b"PURGE").expect("a method name"), url.clone())
                            .header("xkey-purge", &keys)
                            .send()
                            .await;
                        match sent {
                            Ok(response) if response.status().is_success() => {
                                purges.with_label_values(&["ok"]).inc();
                                return;
                            }
                            Ok(response) if attempt == ATTEMPTS => {
                                tracing::warn!(%url, status = %response.status(), "the CDN edge refused a purge");
                            }
                            Err(error) if attempt == ATTEMPTS => {
                                tracing::warn!(%url, %error, "a CDN edge purge did not get through");
                            }
                            _ => {}
                        }
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                    purges.with_label_values(&["failed"]).inc();
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_names_each_movie_and_the_key_of_responses_showing_too_many() {
        assert_eq!(EdgePurger::keys(&[MovieId(43), MovieId(7)]), ["tt0000043 tt0000007 ratings"]);
        let many: Vec<MovieId> = (1..=MAX_SURROGATE_KEYS as u64 + 1).map(MovieId).collect();
        assert_eq!(EdgePurger::keys(&many).len(), 2);
    }
}
