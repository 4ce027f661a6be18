//! Purging the region's CDN edges when ratings or the catalog change, so a partner's cached
//! persisted GET shows a new rating or a corrected title within seconds rather than after its
//! `s-maxage`.
//!
//! Public responses name what they show as surrogate keys (movies, people, list pages:
//! `marquee_schema::Shown`, `crate::cache_policy::apply_surrogate_keys`). When this gateway
//! applies a change for its region (its own write, or another region's it claimed from the
//! store's change log; see `crate::changes`), it sends `PURGE` with an `xkey-purge` header
//! naming the change's keys to every
//! URL of `[cdn] purge_urls` (Varnish's xkey module; each region purges its own edges). It
//! never delays the write: purges are sent in the background, retried a few times, sent
//! again a second later (for a response that read the old data and reached the edge after the
//! first), and counted (`cdn_purges_total{result}`); a purge that never gets through leaves the edge's
//! copy to its `s-maxage`. CDNs that cannot purge by tag (CloudFront) get no purge: their bound
//! is the response's `s-maxage` (docs/failover.md).

use std::sync::Arc;
use std::time::Duration;

use marquee_schema::SurrogateKey;
use prometheus::IntCounterVec;

use crate::cache_policy::{ALL_KEYS, MAX_SURROGATE_KEYS};
use crate::changes::Subscriber;
use crate::config::CdnConfig;

/// How many times a purge is sent before it is given up.
const ATTEMPTS: u32 = 4;

/// When a purge is sent again.
const REPEAT_AFTER: Duration = Duration::from_secs(1);

/// Sends one `PURGE` of `keys` to `url`, retried; whether the edge took it.
async fn purge(client: &reqwest::Client, url: &reqwest::Url, keys: &str) -> bool {
    let mut wait = Duration::from_millis(100);
    for attempt in 1..=ATTEMPTS {
        let sent = client
            .request(reqwest::Method::from_bytes(b"PURGE").expect("a method name"), url.clone())
            .header("xkey-purge", keys)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => return true,
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
    false
}

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

    /// The `xkey-purge` values for `changed`: their keys, and the key of responses showing too
    /// much to name it all.
    fn keys(changed: &[SurrogateKey]) -> Vec<String> {
        changed
            .chunks(MAX_SURROGATE_KEYS)
            .map(|chunk| {
                let mut keys: Vec<String> = chunk.iter().map(ToString::to_string).collect();
                keys.push(ALL_KEYS.to_owned());
                keys.join(" ")
            })
            .collect()
    }
}

impl Subscriber for EdgePurger {
    fn applied(&self, changed: &[SurrogateKey]) {
        if changed.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        for keys in EdgePurger::keys(changed) {
            for url in self.urls.iter() {
                let (client, url, keys, purges) =
                    (self.client.clone(), url.clone(), keys.clone(), self.purges.clone());
                runtime.spawn(async move {
                    // Sent again after `REPEAT_AFTER`: a request that read the old data before
                    // the change and reached the edge after the first purge is dropped too.
                    for round in 0..2 {
                        if round > 0 {
                            tokio::time::sleep(REPEAT_AFTER).await;
                        }
                        let label = if purge(&client, &url, &keys).await { "ok" } else { "failed" };
                        purges.with_label_values(&[label]).inc();
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_names_each_key_and_the_key_of_responses_showing_too_much() {
        use marquee_store::{MovieId, PersonId};
        let changed = [
            SurrogateKey::Movie(MovieId(43)),
            SurrogateKey::Person(PersonId(7)),
            SurrogateKey::Search("wars".into()),
        ];
        assert_eq!(EdgePurger::keys(&changed), ["tt0000043 nm0000007 search:wars ratings"]);
        let many: Vec<SurrogateKey> =
            (1..=MAX_SURROGATE_KEYS as u64 + 1).map(|id| SurrogateKey::Movie(MovieId(id))).collect();
        assert_eq!(EdgePurger::keys(&many).len(), 2);
    }
}
