//! The workload model: which requests a run sends, drawn from a seeded generator so the same
//! knobs give the same request sequence.
//!
//! Popularity is Zipf over the whole catalog (rank 1 is the hottest movie), mapped to ids by a
//! fixed permutation so the hot set is spread over the id space rather than being ids 1..k.
//! Requests are public reads (movie detail with cast, browse pages, title search, a person's
//! filmography), the signed-in user's own data (`me`), and writes (`rateMovie`,
//! `addToWatchlist`); user reads and writes always carry a user token, public reads carry one
//! with probability `signed_in`. Public reads go out as persisted-query GETs (what a CDN
//! forwards on a miss) with probability `persisted`, else as ad hoc POSTs; user reads and
//! writes are always POSTs.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use rand_pcg::Pcg64Mcg;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// One kind of request.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A movie page: details, cast with people, director.
    Movie,
    /// A page of a genre, by popularity or rating.
    Browse,
    /// Title search.
    Search,
    /// A person with their filmography.
    Person,
    /// The signed-in user's ratings and watchlist.
    Me,
    /// `rateMovie` or `addToWatchlist`.
    Write,
    /// The nested movie → cast → person query (peer comparison).
    Nested,
}

impl Op {
    /// Every kind, in report order.
    pub const ALL: [Op; 7] = [Op::Movie, Op::Browse, Op::Search, Op::Person, Op::Me, Op::Write, Op::Nested];

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Op::Movie => "movie",
            Op::Browse => "browse",
            Op::Search => "search",
            Op::Person => "person",
            Op::Me => "me",
            Op::Write => "write",
            Op::Nested => "nested",
        }
    }

    fn needs_user(self) -> bool {
        matches!(self, Op::Me | Op::Write)
    }
}

/// GraphQL documents, one per read kind (persisted by hash) plus the writes.
pub mod documents {
    /// Movie detail.
    pub const MOVIE: &str = "query MovieDetail($id: ID!) { movie(id: $id) { id title year genres runtimeMinutes \
        overview posterUrl rating { average count } cast(first: 10) { character person { id name } } \
        crew(job: \"Director\") { person { id name } } } }";
    /// A browse page.
    pub const BROWSE: &str = "query Browse($genre: String, $sort: MovieSort) { browse(genre: $genre, sort: $sort, \
        first: 20) { edges { node { id title year posterUrl rating { average } } } pageInfo { hasNextPage endCursor } } }";
    /// Title search.
    pub const SEARCH: &str =
        "query Search($q: String!) { search(query: $q, first: 10) { edges { node { id title year } } } }";
    /// A person page.
    pub const PERSON: &str = "query Person($id: ID!) { person(id: $id) { id name knownForDepartment \
        filmography(first: 10) { edges { node { movie { id title year } character job } } } } }";
    /// The user's own lists.
    pub const ME: &str = "query Me { me { id ratings(first: 10) { edges { node { score movie { id title } } } } \
        watchlist(first: 10) { edges { node { addedAt movie { id title } } } } } }";
    /// A rating.
    pub const RATE: &str =
        "mutation Rate($id: ID!, $score: Int!) { rateMovie(movieId: $id, score: $score) { score } }";
    /// A watchlist addition.
    pub const WATCH: &str = "mutation Watch($id: ID!) { addToWatchlist(movieId: $id) { addedAt } }";
    /// Movie → cast → person, the shape compared against peers.
    pub const NESTED: &str = "query Nested($id: ID!) { movie(id: $id) { id title year cast(first: 10) { character \
        person { id name birthYear } } } }";
    /// The same question in PostGraphile's dialect over the exported catalog (`bench/peer/`):
    /// the movie by primary key, its first ten credits in billing order whose department is
    /// Acting (the cast), and each credit's person through the foreign key.
    pub const POSTGRAPHILE_NESTED: &str = "query Nested($id: String!) { movieByRowId(rowId: $id) { rowId title year \
        creditsByMovieId(first: 10, condition: { department: \"Acting\" }, orderBy: PRIMARY_KEY_ASC) { nodes { \
        role personByPersonId { rowId name birthYear } } } } }";
}

/// The GraphQL schema a target speaks.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// Marquee's schema.
    #[default]
    Marquee,
    /// PostGraphile's generated schema over the exported catalog: only the nested query.
    PostGraphile,
}

/// The nested query's answer reduced to what both dialects return: title, year and the cast as
/// (character, person id, name, birth year). `None` when `body` is not a nested-query answer.
pub fn nested_answer(dialect: Dialect, body: &Value) -> Option<Value> {
    let (movie, cast, character, person, id) = match dialect {
        Dialect::Marquee => (&body["data"]["movie"], "/cast", "character", "person", "id"),
        Dialect::PostGraphile => {
            (&body["data"]["movieByRowId"], "/creditsByMovieId/nodes", "role", "personByPersonId", "rowId")
        }
    };
    let cast = movie.pointer(cast)?.as_array()?;
    let cast: Vec<Value> = cast
        .iter()
        .map(|c| json!([c[character], c[person][id], c[person]["name"], c[person]["birthYear"]]))
        .collect();
    Some(json!({ "id": movie[id], "title": movie["title"], "year": movie["year"], "cast": cast }))
}

const GENRES: [&str; 12] = [
    "Drama",
    "Comedy",
    "Action",
    "Thriller",
    "Romance",
    "Horror",
    "Crime",
    "Documentary",
    "Adventure",
    "Sci-Fi",
    "Family",
    "Mystery",
];
const SORTS: [&str; 3] = ["POPULARITY", "RATING", "RELEASE_DATE"];
const SEARCH_TERMS: [&str; 16] = [
    "silent", "last", "dark", "golden", "lost", "secret", "midnight", "iron", "glass", "wild", "the dark",
    "lost c", "bro", "eter", "frozen", "hidden",
];

/// Relative weights of the request kinds.
#[derive(Clone, Debug, Serialize)]
pub struct Mix(pub Vec<(Op, u32)>);

impl Mix {
    /// The spec's realistic mix: reads to writes 100:1.
    pub fn realistic() -> Mix {
        Mix(vec![
            (Op::Movie, 40),
            (Op::Browse, 15),
            (Op::Search, 15),
            (Op::Person, 15),
            (Op::Me, 15),
            (Op::Write, 1),
        ])
    }

    /// Parses `movie=40,browse=15,...`.
    pub fn parse(text: &str) -> Result<Mix, String> {
        let mut mix = Vec::new();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, weight) =
                part.split_once('=').ok_or_else(|| format!("`{part}` is not name=weight"))?;
            let op = Op::ALL
                .into_iter()
                .find(|op| op.name() == name.trim())
                .ok_or_else(|| format!("unknown request kind `{name}`"))?;
            let weight: u32 = weight.trim().parse().map_err(|_| format!("`{weight}` is not a weight"))?;
            mix.push((op, weight));
        }
        if mix.iter().map(|(_, w)| w).sum::<u32>() == 0 {
            return Err("the mix has no weight".into());
        }
        Ok(Mix(mix))
    }
}

/// The workload knobs.
#[derive(Clone, Debug, Serialize)]
pub struct Workload {
    /// Movies in the target's catalog (ids 1..=movies).
    pub movies: u64,
    /// People in the target's catalog.
    pub people: u64,
    /// Zipf exponent of popularity.
    pub zipf: f64,
    /// Request kinds and weights.
    pub mix: Mix,
    /// Share of public reads sent with a user token.
    pub signed_in: f64,
    /// Share of public reads sent as persisted GETs.
    pub persisted: f64,
    /// When set, every request is this one movie's detail as a persisted GET (the hot path).
    pub hot: bool,
    /// Generator seed.
    pub seed: u64,
}

/// HTTP method of a planned request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Method {
    /// A GET with the query string in `path`.
    Get,
    /// A POST with a JSON body.
    Post,
}

/// One request to send.
#[derive(Clone, Debug)]
pub struct Planned {
    /// Its kind.
    pub op: Op,
    /// GET or POST.
    pub method: Method,
    /// Path and query string.
    pub path: String,
    /// POST body.
    pub body: Option<Vec<u8>>,
    /// Bearer token.
    pub token: Option<Arc<str>>,
}

/// SHA-256 hex of a document (its APQ hash).
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn document(op: Op) -> &'static str {
    match op {
        Op::Movie => documents::MOVIE,
        Op::Browse => documents::BROWSE,
        Op::Search => documents::SEARCH,
        Op::Person => documents::PERSON,
        Op::Me => documents::ME,
        Op::Nested => documents::NESTED,
        Op::Write => documents::RATE,
    }
}

/// The persisted-query GET path for `document` with `variables`.
pub fn persisted_get(document: &str, variables: &Value) -> String {
    let extensions = json!({ "persistedQuery": { "version": 1, "sha256Hash": sha256_hex(document) } });
    let query = [("extensions", extensions.to_string()), ("variables", variables.to_string())];
    let mut path = String::from("/graphql?");
    for (i, (k, v)) in query.iter().enumerate() {
        if i > 0 {
            path.push('&');
        }
        path.push_str(k);
        path.push('=');
        path.push_str(&percent_encode(v));
    }
    path
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The one request of the hot scenario: movie 1's detail as a persisted GET.
pub fn hot_path() -> String {
    persisted_get(documents::MOVIE, &json!({ "id": "tt0000001" }))
}

/// The requests that register every persisted document with a gateway (APQ: text and hash).
pub fn registrations() -> Vec<String> {
    [documents::MOVIE, documents::BROWSE, documents::SEARCH, documents::PERSON, documents::NESTED]
        .into_iter()
        .map(|doc| {
            let extensions = json!({ "persistedQuery": { "version": 1, "sha256Hash": sha256_hex(doc) } });
            format!(
                "/graphql?query={}&extensions={}",
                percent_encode(doc),
                percent_encode(&extensions.to_string())
            )
        })
        .collect()
}

/// Draws requests.
#[derive(Clone)]
pub struct Generator {
    workload: Workload,
    rng: Pcg64Mcg,
    movie_rank: Zipf<f64>,
    person_rank: Zipf<f64>,
    total_weight: u32,
    users: Vec<Arc<str>>,
    movie_stride: u64,
    person_stride: u64,
    dialect: Dialect,
}

/// A stride coprime to `n`, so `rank * stride mod n` permutes 0..n.
fn stride(n: u64) -> u64 {
    let mut s = (n as f64 * 0.618_033_988_7) as u64 | 1;
    while gcd(s, n) != 1 {
        s += 2;
    }
    s.max(1)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Generator {
    /// A generator for `workload`, with `users` tokens for signed-in requests.
    pub fn new(workload: Workload, users: Vec<Arc<str>>) -> Result<Generator, String> {
        if workload.movies == 0 || workload.people == 0 {
            return Err("the catalog size must be above 0".into());
        }
        let needs_users =
            workload.mix.0.iter().any(|(op, w)| *w > 0 && op.needs_user()) || workload.signed_in > 0.0;
        if needs_users && users.is_empty() && !workload.hot {
            return Err("this workload has signed-in requests but no user tokens".into());
        }
        let zipf = |n: u64| Zipf::new(n as f64, workload.zipf).map_err(|e| e.to_string());
        Ok(Generator {
            rng: Pcg64Mcg::seed_from_u64(workload.seed),
            movie_rank: zipf(workload.movies)?,
            person_rank: zipf(workload.people)?,
            total_weight: workload.mix.0.iter().map(|(_, w)| w).sum(),
            movie_stride: stride(workload.movies),
            person_stride: stride(workload.people),
            workload,
            users,
            dialect: Dialect::Marquee,
        })
    }

    /// This generator speaking `dialect`. Peers answer only the nested query, as ad hoc POSTs
    /// without tokens.
    pub fn for_dialect(mut self, dialect: Dialect) -> Result<Generator, String> {
        let only_nested = self.workload.mix.0.iter().all(|(op, w)| *w == 0 || *op == Op::Nested);
        if dialect != Dialect::Marquee && (self.workload.hot || !only_nested) {
            return Err("a peer target answers the nested scenario only (--scenario nested)".into());
        }
        self.dialect = dialect;
        Ok(self)
    }

    /// An independent generator for worker `stream` (same workload, its own random stream).
    pub fn fork(&self, stream: u64) -> Generator {
        let mut fork = self.clone();
        fork.rng =
            Pcg64Mcg::seed_from_u64(self.workload.seed ^ (stream + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        fork
    }

    /// The next movie id, drawn by popularity.
    pub fn movie_id(&mut self) -> String {
        let rank = self.movie_rank.sample(&mut self.rng) as u64 - 1;
        let id = (rank.wrapping_mul(self.movie_stride)) % self.workload.movies + 1;
        format!("tt{id:07}")
    }

    fn person_id(&mut self) -> String {
        let rank = self.person_rank.sample(&mut self.rng) as u64 - 1;
        let id = (rank.wrapping_mul(self.person_stride)) % self.workload.people + 1;
        format!("nm{id:07}")
    }

    fn user(&mut self) -> Option<Arc<str>> {
        if self.users.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..self.users.len());
        Some(Arc::clone(&self.users[i]))
    }

    fn pick(&mut self) -> Op {
        let mut n = self.rng.random_range(0..self.total_weight);
        for (op, w) in &self.workload.mix.0 {
            if n < *w {
                return *op;
            }
            n -= w;
        }
        Op::Movie
    }

    /// The next request.
    pub fn next_request(&mut self) -> Planned {
        if self.workload.hot {
            return Planned { op: Op::Movie, method: Method::Get, path: hot_path(), body: None, token: None };
        }
        let op = self.pick();
        if self.dialect == Dialect::PostGraphile {
            let body =
                json!({ "query": documents::POSTGRAPHILE_NESTED, "variables": { "id": self.movie_id() } });
            let body = body.to_string().into_bytes();
            return Planned {
                op,
                method: Method::Post,
                path: "/graphql".into(),
                body: Some(body),
                token: None,
            };
        }
        let (document, variables) = match op {
            Op::Movie | Op::Nested => (document(op), json!({ "id": self.movie_id() })),
            Op::Browse => {
                let genre = GENRES[self.rng.random_range(0..GENRES.len())];
                let sort = SORTS[self.rng.random_range(0..SORTS.len())];
                (document(op), json!({ "genre": genre, "sort": sort }))
            }
            Op::Search => {
                (document(op), json!({ "q": SEARCH_TERMS[self.rng.random_range(0..SEARCH_TERMS.len())] }))
            }
            Op::Person => (document(op), json!({ "id": self.person_id() })),
            Op::Me => (document(op), json!({})),
            Op::Write => {
                let id = self.movie_id();
                if self.rng.random_bool(0.5) {
                    (documents::RATE, json!({ "id": id, "score": self.rng.random_range(1..=10) }))
                } else {
                    (documents::WATCH, json!({ "id": id }))
                }
            }
        };
        let token = if op.needs_user() || self.rng.random_bool(self.workload.signed_in.clamp(0.0, 1.0)) {
            self.user()
        } else {
            None
        };
        // Only public reads are persisted GETs (what a CDN sees); user requests are POSTs.
        let persisted = !op.needs_user() && self.rng.random_bool(self.workload.persisted.clamp(0.0, 1.0));
        if persisted {
            Planned { op, method: Method::Get, path: persisted_get(document, &variables), body: None, token }
        } else {
            let body = json!({ "query": document, "variables": variables }).to_string().into_bytes();
            Planned { op, method: Method::Post, path: "/graphql".into(), body: Some(body), token }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(mix: Mix) -> Workload {
        Workload {
            movies: 1000,
            people: 600,
            zipf: 1.0,
            mix,
            signed_in: 0.2,
            persisted: 0.5,
            hot: false,
            seed: 7,
        }
    }

    #[test]
    fn the_mix_is_respected_and_reproducible() {
        let users = vec![Arc::<str>::from("t1"), Arc::from("t2")];
        let mut a = Generator::new(workload(Mix::realistic()), users.clone()).expect("generator");
        let mut b = Generator::new(workload(Mix::realistic()), users).expect("generator");
        let mut counts = std::collections::HashMap::new();
        for _ in 0..20_000 {
            let (x, y) = (a.next_request(), b.next_request());
            assert_eq!(x.path, y.path, "same seed, same requests");
            *counts.entry(x.op).or_insert(0u32) += 1;
            if x.op.needs_user() {
                assert!(x.token.is_some());
            }
            if x.op.needs_user() {
                assert_eq!(x.method, Method::Post, "user requests are never GETs");
            }
        }
        let writes = f64::from(counts[&Op::Write]) / 20_000.0;
        assert!((0.005..0.015).contains(&writes), "about 1 write per 100 reads: {writes}");
        let movies = f64::from(counts[&Op::Movie]) / 20_000.0;
        assert!((0.37..0.43).contains(&movies), "{movies}");
    }

    #[test]
    fn popularity_is_skewed_and_ids_stay_in_the_catalog() {
        let public = Workload { signed_in: 0.0, ..workload(Mix::parse("movie=1").expect("mix")) };
        let mut g = Generator::new(public, vec![]).expect("generator");
        let mut seen = std::collections::HashMap::new();
        for _ in 0..10_000 {
            let id = g.movie_id();
            let n: u64 = id[2..].parse().expect("number");
            assert!((1..=1000).contains(&n), "{id}");
            *seen.entry(id).or_insert(0u32) += 1;
        }
        let top = seen.values().max().copied().unwrap_or(0);
        assert!(top > 500, "the hottest movie gets a large share under Zipf(1): {top}");
        assert!(Mix::parse("movie=0").is_err());
        assert!(Mix::parse("nope=1").is_err());
    }

    #[test]
    fn a_peer_gets_the_nested_query_in_its_own_dialect() {
        let nested = Workload { signed_in: 0.0, ..workload(Mix::parse("nested=1").expect("mix")) };
        let mut peer = Generator::new(nested.clone(), vec![])
            .and_then(|g| g.for_dialect(Dialect::PostGraphile))
            .expect("nested only");
        let planned = peer.next_request();
        assert_eq!(planned.method, Method::Post);
        let body: Value = serde_json::from_slice(planned.body.as_deref().expect("a body")).expect("json");
        assert_eq!(body["query"], documents::POSTGRAPHILE_NESTED);
        assert!(body["variables"]["id"].as_str().is_some_and(|id| id.starts_with("tt")));
        let mixed = Generator::new(workload(Mix::realistic()), vec![Arc::from("t")]).expect("generator");
        assert!(mixed.for_dialect(Dialect::PostGraphile).is_err(), "peers answer the nested query only");
    }

    #[test]
    fn nested_answers_compare_across_dialects() {
        let ours = json!({ "data": { "movie": { "id": "tt0000001", "title": "A", "year": 1999,
            "cast": [{ "character": "Hero", "person": { "id": "nm0000001", "name": "P", "birthYear": null } }] } } });
        let theirs = json!({ "data": { "movieByRowId": { "rowId": "tt0000001", "title": "A", "year": 1999,
            "creditsByMovieId": { "nodes": [{ "role": "Hero",
                "personByPersonId": { "rowId": "nm0000001", "name": "P", "birthYear": null } }] } } } });
        let a = nested_answer(Dialect::Marquee, &ours).expect("an answer");
        assert_eq!(Some(a.clone()), nested_answer(Dialect::PostGraphile, &theirs));
        let mut other = theirs.clone();
        other["data"]["movieByRowId"]["creditsByMovieId"]["nodes"][0]["role"] = json!("Villain");
        assert_ne!(Some(a), nested_answer(Dialect::PostGraphile, &other));
        assert_eq!(nested_answer(Dialect::Marquee, &json!({ "data": { "movie": null } })), None);
    }
}
