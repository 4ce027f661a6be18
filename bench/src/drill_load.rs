//! The failover drill's load and report (`cargo xtask drill` runs the rig's events around it).
//!
//! Clients in every region's subnet send steady open-loop load through geo-DNS, the region's
//! CDN edge, its load balancer and its gateways: anonymous movie reads (POST, never cached at
//! the edge), a partner's persisted GETs of a hot set of movies (cached at the edge), and
//! signed-in ratings. Each client sends from its own address and keeps its connections for
//! `reconnect_every` (a connection's lifetime: new connections resolve the API's name again,
//! within the DNS TTL), so when geo-DNS moves a region's clients, they follow at that pace.
//!
//! Every request is recorded with when it was due, its client's region, the region whose edge
//! answered (the peer address), its outcome and latency, and, for a rating, what was written;
//! the report turns them into a per-second series per client region, with the events marked,
//! and the figures of each phase of the drill.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::Serialize;

use crate::dns::{ClientRoute, RegionResolver};

/// One region's clients.
#[derive(Clone, Debug)]
pub struct ClientRegion {
    /// The region's name.
    pub name: String,
    /// Its edge's address (to tell which region answered).
    pub edge: IpAddr,
    /// The clients' source addresses, one client each.
    pub clients: Vec<IpAddr>,
}

/// What the drill sends.
#[derive(Clone, Debug)]
pub struct DrillLoad {
    /// The API's URL, e.g. `http://api.marquee.test:18080`.
    pub api: String,
    /// The geo-DNS server the clients ask.
    pub dns: SocketAddr,
    /// Every region's clients.
    pub regions: Vec<ClientRegion>,
    /// Requests per second each client sends (open loop).
    pub rate_per_client: f64,
    /// How long the load runs.
    pub duration: Duration,
    /// How long a client keeps its connections before opening new ones.
    pub reconnect_every: Duration,
    /// Per mille of requests that are ratings (signed in).
    pub writes_per_mille: u32,
    /// Per mille of requests that are a partner's persisted GETs (the rest are movie reads).
    pub persisted_per_mille: u32,
    /// The catalog's movies (ids `tt0000001`...).
    pub movies: u64,
    /// The persisted operation partners call (`id`), taking `$id`.
    pub persisted_id: String,
    /// Signed-in users and their tokens; each rating is one user's first and only rating of
    /// its movie, so the score it wrote is the one to find afterwards.
    pub users: Vec<(String, String)>,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// What a request was.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `{ movie { title rating } }` over POST.
    Read,
    /// A partner's persisted GET.
    Persisted,
    /// `rateMovie`, signed in.
    Write,
}

/// A rating the API acknowledged.
#[derive(Clone, Debug, Serialize)]
pub struct Written {
    /// The user.
    pub user: String,
    /// The movie's id.
    pub movie: String,
    /// The score.
    pub score: u8,
}

/// One request.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// When it was due, in milliseconds since the load started.
    pub due_ms: u64,
    /// The client's region (index into `DrillLoad::regions`).
    pub client: usize,
    /// The region whose edge answered, if any did.
    pub served_by: Option<usize>,
    /// What it was.
    pub kind: Kind,
    /// `ok`, or why not (`503`, `transport`, `timeout`, `graphql_errors`).
    pub outcome: String,
    /// From when it was due to its answer, in microseconds.
    pub latency_us: u64,
    /// The edge's `X-Cache` (`HIT`, `MISS`, `PASS`).
    pub cache: Option<String>,
    /// The rating, when the API acknowledged one.
    pub written: Option<Written>,
}

/// Sends the drill's load until `load.duration` has passed; every request's sample.
pub async fn run(load: &DrillLoad) -> Vec<Sample> {
    run_into(load, Arc::new(Mutex::new(Vec::new()))).await
}

/// [`run`], adding each sample to `samples` as its answer arrives (so a caller can read what
/// was acknowledged so far while the load runs); every sample, in order, at the end.
pub async fn run_into(load: &DrillLoad, samples: Arc<Mutex<Vec<Sample>>>) -> Vec<Sample> {
    let started = Instant::now();
    let sequence = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut clients = Vec::new();
    for (region, clients_of) in load.regions.iter().enumerate() {
        for (i, source) in clients_of.clients.iter().enumerate() {
            let client = Client {
                load: load.clone(),
                region,
                source: *source,
                index: i,
                samples: samples.clone(),
                sequence: sequence.clone(),
                started,
            };
            clients.push(tokio::spawn(client.run()));
        }
    }
    for client in clients {
        let _ = client.await;
    }
    let mut samples = std::mem::take(&mut *samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    samples.sort_by_key(|s| s.due_ms);
    samples
}

/// One simulated client.
struct Client {
    load: DrillLoad,
    region: usize,
    source: IpAddr,
    index: usize,
    samples: Arc<Mutex<Vec<Sample>>>,
    sequence: Arc<std::sync::atomic::AtomicU64>,
    started: Instant,
}

impl Client {
    async fn run(self) {
        let this = Arc::new(self);
        let route = ClientRoute { dns: this.load.dns, source: this.source };
        // One resolver for the client's whole life: its answers are kept for their TTL.
        let resolver = RegionResolver::new(&route);
        let connect = || {
            reqwest::Client::builder()
                .no_proxy()
                .tcp_nodelay(true)
                .dns_resolver(resolver.clone())
                .local_address(this.source)
                .timeout(this.load.timeout)
                .build()
                .unwrap_or_default()
        };
        let mut http = connect();
        let mut connected = Instant::now();
        let interval = Duration::from_secs_f64(1.0 / this.load.rate_per_client.max(0.1));
        // Spread the clients' first requests over one interval.
        let offset = interval.mul_f64((this.index as f64 * 0.37).fract());
        let total = (this.load.duration.as_secs_f64() * this.load.rate_per_client).floor() as u64;
        let mut inflight = Vec::new();
        for i in 0..total {
            let due = offset + interval.mul_f64(i as f64);
            tokio::time::sleep_until((this.started + due).into()).await;
            if connected.elapsed() >= this.load.reconnect_every {
                http = connect();
                connected = Instant::now();
            }
            let n = this.sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (http, this) = (http.clone(), this.clone());
            inflight.push(tokio::spawn(async move { this.send(&http, n, due).await }));
            inflight.retain(|task| !task.is_finished());
        }
        for task in inflight {
            let _ = task.await;
        }
    }

    async fn send(&self, http: &reqwest::Client, n: u64, due: Duration) {
        let load = &self.load;
        let pick = (n.wrapping_mul(2_654_435_761) >> 7) % 1000;
        let kind = if pick < u64::from(load.writes_per_mille) && !load.users.is_empty() {
            Kind::Write
        } else if pick < u64::from(load.writes_per_mille + load.persisted_per_mille) {
            Kind::Persisted
        } else {
            Kind::Read
        };
        let url = format!("{}/graphql", load.api);
        let mut written = None;
        let request = match kind {
            Kind::Read => {
                let movie = format!("tt{:07}", 1 + (n.wrapping_mul(7_919) % load.movies));
                let query = format!(r#"{{ movie(id: "{movie}") {{ title rating {{ average }} }} }}"#);
                http.post(&url).json(&serde_json::json!({ "query": query }))
            }
            Kind::Persisted => {
                // A hot set: the edge answers most of these.
                let movie = format!("tt{:07}", 1 + (n % 200));
                let variables = serde_json::json!({ "id": movie }).to_string();
                http.get(&url).query(&[("id", load.persisted_id.as_str()), ("variables", variables.as_str())])
            }
            Kind::Write => {
                // The n-th request overall: user n % U rates the movie n / U, once.
                let users = load.users.len() as u64;
                let (user, token) = &load.users[(n % users) as usize];
                let movie = format!("tt{:07}", 1 + ((n / users) % load.movies));
                let score = 1 + (n % 10) as u8;
                written = Some(Written { user: user.clone(), movie: movie.clone(), score });
                let query =
                    format!(r#"mutation {{ rateMovie(movieId: "{movie}", score: {score}) {{ score }} }}"#);
                http.post(&url).bearer_auth(token).json(&serde_json::json!({ "query": query }))
            }
        };
        let result = request.send().await;
        let (outcome, served_by, cache) = match result {
            Ok(response) => {
                let served_by = response
                    .remote_addr()
                    .and_then(|peer| load.regions.iter().position(|r| r.edge == peer.ip()));
                let cache =
                    response.headers().get("x-cache").and_then(|v| v.to_str().ok()).map(str::to_owned);
                let status = response.status().as_u16();
                let outcome = match response.bytes().await {
                    Ok(body) if status == 200 && !body.windows(9).any(|w| w == b"\"errors\":") => {
                        "ok".to_owned()
                    }
                    Ok(_) if status == 200 => "graphql_errors".to_owned(),
                    Ok(_) => status.to_string(),
                    Err(e) if e.is_timeout() => "timeout".to_owned(),
                    Err(_) => "transport".to_owned(),
                };
                (outcome, served_by, cache)
            }
            Err(e) if e.is_timeout() => ("timeout".to_owned(), None, None),
            Err(_) => ("transport".to_owned(), None, None),
        };
        if outcome != "ok" {
            written = None;
        }
        let latency = (self.started + due).elapsed();
        let sample = Sample {
            due_ms: due.as_millis() as u64,
            client: self.region,
            served_by,
            kind,
            outcome,
            latency_us: latency.as_micros() as u64,
            cache,
            written,
        };
        self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(sample);
    }
}

/// Something the drill did, and when (milliseconds since the load started).
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// When it started.
    pub at_ms: u64,
    /// When the step that caused it returned (the apply, the kill, the restart).
    pub done_ms: u64,
    /// A short label for the plots.
    pub label: String,
    /// What it was.
    pub what: String,
}

/// One second of one client region.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Second {
    /// Seconds since the load started.
    pub second: u64,
    /// Requests due in this second that succeeded.
    pub ok: u64,
    /// Requests due in this second that failed.
    pub errors: u64,
    /// 99th-percentile latency of its requests (ms), failed ones included.
    pub p99_ms: f64,
    /// Requests answered by each region's edge.
    pub served_by: BTreeMap<String, u64>,
    /// Requests the edge answered from its cache.
    pub edge_hits: u64,
}

/// The per-second series of each client region.
pub fn seconds(load: &DrillLoad, samples: &[Sample]) -> BTreeMap<String, Vec<Second>> {
    let last = samples.iter().map(|s| s.due_ms / 1000).max().unwrap_or(0);
    let mut out = BTreeMap::new();
    for (index, region) in load.regions.iter().enumerate() {
        let mut series: Vec<(Second, Histogram<u64>)> = (0..=last)
            .map(|second| {
                (
                    Second { second, ..Second::default() },
                    Histogram::new_with_bounds(1, 120_000_000, 3).expect("bounds"),
                )
            })
            .collect();
        for sample in samples.iter().filter(|s| s.client == index) {
            let (second, histogram) = &mut series[(sample.due_ms / 1000) as usize];
            if sample.outcome == "ok" {
                second.ok += 1;
            } else {
                second.errors += 1;
            }
            let _ = histogram.record(sample.latency_us.clamp(1, 120_000_000));
            if let Some(by) = sample.served_by {
                *second.served_by.entry(load.regions[by].name.clone()).or_insert(0) += 1;
            }
            if sample.cache.as_deref() == Some("HIT") {
                second.edge_hits += 1;
            }
        }
        let series = series
            .into_iter()
            .map(|(mut second, histogram)| {
                second.p99_ms = histogram.value_at_quantile(0.99) as f64 / 1000.0;
                second
            })
            .collect();
        out.insert(region.name.clone(), series);
    }
    out
}

/// Draws the drill: per client region, successful requests, failed requests and p99 latency
/// per second, and the share answered by another region's edge, with the events marked.
pub fn plot(path: &Path, series: &BTreeMap<String, Vec<Second>>, events: &[Event]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 1100)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let panels = root.split_evenly((4, 1));
    let seconds = series.values().map(Vec::len).max().unwrap_or(1).max(1) as f64;
    type Value = fn(&Second, &str) -> f64;
    let views: [(&str, &str, Value); 4] = [
        ("successful requests per second", "req/s", |s, _| s.ok as f64),
        ("failed requests per second", "req/s", |s, _| s.errors as f64),
        ("p99 latency (all requests)", "ms", |s, _| s.p99_ms),
        ("share answered by another region's edge", "%", |s, own| {
            let total: u64 = s.served_by.values().sum();
            let other: u64 =
                s.served_by.iter().filter(|(name, _)| name.as_str() != own).map(|(_, n)| *n).sum();
            if total == 0 { 0.0 } else { 100.0 * other as f64 / total as f64 }
        }),
    ];
    let colours = [BLUE, RED, GREEN, MAGENTA];
    for (panel, (title, unit, value)) in panels.iter().zip(views) {
        let top = series
            .iter()
            .flat_map(|(name, points)| points.iter().map(move |s| value(s, name)))
            .fold(0.0_f64, f64::max)
            .max(1.0)
            * 1.15;
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..seconds, 0f64..top)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart.configure_mesh().x_desc("seconds").y_desc(unit).draw().map_err(|e| anyhow::anyhow!("{e}"))?;
        for event in events {
            let x = event.at_ms as f64 / 1000.0;
            chart
                .draw_series(DashedLineSeries::new(vec![(x, 0.0), (x, top)], 3, 3, BLACK.stroke_width(1)))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    event.label.clone(),
                    (x + 0.3, top * 0.93),
                    ("sans-serif", 12).into_font(),
                )))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        for (i, (name, points)) in series.iter().enumerate() {
            let colour = colours[i % colours.len()];
            let line: Vec<(f64, f64)> =
                points.iter().map(|s| (s.second as f64 + 0.5, value(s, name))).collect();
            chart
                .draw_series(LineSeries::new(line, colour.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(format!("{name} clients"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
