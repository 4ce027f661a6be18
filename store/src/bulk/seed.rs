//! The deterministic demo catalog.
//!
//! Every movie and person is generated from its own RNG, seeded from the catalog seed and its
//! index, so the same seed always yields the same catalog, any entity can be regenerated on
//! its own, and nothing needs to be remembered between entities (memory stays flat at any
//! size). Shapes follow a real catalog: Zipf popularity over a random permutation of ids,
//! release years skewed to recent decades, weighted genres and languages, 5-30 cast credits
//! plus a crew, and credits drawn with a skew towards popular people, so a few people appear in
//! many movies and most in a handful.

use std::sync::mpsc;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

use super::words::*;
use super::{CatalogSink, Progress};
use crate::{
    CatalogStats, Credit, Date, Department, Genre, Movie, MovieId, MovieRecord, Person, PersonId,
    RatingSummary, StoreError,
};

/// What to generate.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SeedOptions {
    /// Number of movies (ids `tt0000001..`).
    pub movies: u64,
    /// Number of people (ids `nm0000001..`); defaults to 60% of the movie count.
    pub people: Option<u64>,
    /// The catalog seed: same seed, same catalog.
    pub seed: u64,
}

impl SeedOptions {
    /// The number of people that will be generated.
    pub fn people(&self) -> u64 {
        self.people.unwrap_or(self.movies * 3 / 5).max(20)
    }
}

/// The latest release year the generator produces.
pub const LATEST_YEAR: u16 = 2026;
/// The earliest release year the generator produces.
pub const EARLIEST_YEAR: u16 = 1900;

/// Department slots in every block of 20 consecutive person indexes; pools are sampled by
/// rank within a department, and rank maps back to an index arithmetically.
const SLOTS: usize = 20;
const ACTING_SLOTS: &[usize] = &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13];
const DIRECTING_SLOTS: &[usize] = &[14, 15];
const WRITING_SLOTS: &[usize] = &[16, 17];
const PRODUCTION_SLOTS: &[usize] = &[18];
const OTHER_SLOTS: &[usize] = &[19];
const OTHER_DEPARTMENTS: [Department; 4] =
    [Department::Sound, Department::Camera, Department::Editing, Department::Art];

/// Writes the catalog described by `options` into `sink`, reporting progress.
pub fn seed(
    options: &SeedOptions,
    mut sink: Box<dyn CatalogSink>,
    progress: &mut dyn FnMut(Progress),
) -> Result<CatalogStats, StoreError> {
    if options.movies == 0 {
        return Err(StoreError::InvalidInput("--movies must be at least 1".into()));
    }
    let generator = Generator::new(options);
    progress(Progress::Phase { name: "people", total: generator.people });
    for index in 0..generator.people {
        sink.put_person(&generator.person(index))?;
        if index % 10_000 == 9_999 {
            progress(Progress::Advance { done: index + 1 });
        }
    }
    progress(Progress::Advance { done: generator.people });
    progress(Progress::Phase { name: "movies", total: options.movies });
    // Generation runs on its own thread, ahead of the writer by a bounded queue.
    let (tx, rx) = mpsc::sync_channel::<MovieRecord>(4096);
    let producer = {
        let generator = generator.clone();
        std::thread::Builder::new()
            .name("seed-generator".into())
            .spawn(move || {
                for index in 0..generator.movies {
                    if tx.send(generator.movie(index)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| StoreError::io("starting the generator thread", e))?
    };
    let mut written = 0u64;
    for record in rx {
        sink.put_movie(&record)?;
        written += 1;
        if written.is_multiple_of(10_000) {
            progress(Progress::Advance { done: written });
        }
    }
    producer.join().map_err(|_| StoreError::Backend("the generator thread panicked".into()))?;
    progress(Progress::Advance { done: written });
    progress(Progress::Phase { name: "indexes", total: 0 });
    sink.finish()
}

/// Generates entities by index. Cheap to clone and to share.
#[derive(Clone, Debug)]
pub struct Generator {
    seed: u64,
    movies: u64,
    people: u64,
    /// Multiplier that permutes movie indexes into popularity ranks (coprime with `movies`).
    stride: u64,
}

impl Generator {
    /// A generator for `options`.
    pub fn new(options: &SeedOptions) -> Generator {
        let movies = options.movies.max(1);
        let mut stride = 2_654_435_761 % movies;
        while stride == 0 || gcd(stride, movies) != 1 {
            stride += 1;
        }
        Generator { seed: options.seed, movies, people: options.people(), stride }
    }

    fn rng(&self, kind: u64, index: u64) -> Pcg64Mcg {
        Pcg64Mcg::seed_from_u64(splitmix(self.seed ^ splitmix(kind.wrapping_mul(0x9E37_79B9) ^ index)))
    }

    /// Popularity rank (0 = most popular) of the movie at `index`.
    pub fn popularity_rank(&self, index: u64) -> u64 {
        ((u128::from(index) * u128::from(self.stride)) % u128::from(self.movies)) as u64
    }

    /// The index of the movie with popularity rank `rank`.
    pub fn movie_at_rank(&self, rank: u64) -> u64 {
        // stride⁻¹ mod movies, by the extended Euclidean algorithm.
        let inverse = mod_inverse(self.stride, self.movies);
        ((u128::from(rank) * u128::from(inverse)) % u128::from(self.movies)) as u64
    }

    /// The person at `index` (id `index + 1`).
    pub fn person(&self, index: u64) -> Person {
        let mut rng = self.rng(1, index);
        let department = department_of(index);
        let first = pick(&mut rng, FIRST_NAMES);
        let last = pick(&mut rng, LAST_NAMES);
        let birth_year = 1900 + (105.0 * rng.random::<f64>().powf(0.7)) as u16;
        let death_year = (birth_year < 1950 && rng.random_bool(0.6))
            .then(|| (birth_year + 40 + rng.random_range(0..50)).min(LATEST_YEAR));
        let block_rank = index / SLOTS as u64;
        Person {
            id: PersonId(index + 1),
            name: format!("{first} {last}"),
            birth_year: rng.random_bool(0.9).then_some(birth_year),
            death_year,
            known_for_department: Some(department),
            popularity: (500.0 / ((block_rank + 1) as f64).powf(0.8)) as f32,
        }
    }

    /// The movie at `index` (id `index + 1`) with its credits.
    pub fn movie(&self, index: u64) -> MovieRecord {
        let mut rng = self.rng(2, index);
        let rank = self.popularity_rank(index);
        let popularity = (1000.0 / ((rank + 1) as f64).powf(0.8)) * rng.random_range(0.9..1.1);
        let year = LATEST_YEAR
            - ((f64::from(LATEST_YEAR - EARLIEST_YEAR) + 0.99) * rng.random::<f64>().powi(2)) as u16;
        let month = rng.random_range(1..=12);
        let release_date = Date::new(year, month, rng.random_range(1..=28));
        let (language, _, article) = weighted(&mut rng, LANGUAGES, |l| l.1);
        let title = title(&mut rng);
        let original_title =
            (*language != "en" && rng.random_bool(0.7)).then(|| format!("{article} {title}"));
        let genre_count = 1 + usize::from(rng.random_bool(0.55)) + usize::from(rng.random_bool(0.25));
        let mut genres: Vec<Genre> = Vec::with_capacity(genre_count);
        while genres.len() < genre_count {
            let (name, _) = weighted(&mut rng, GENRE_WEIGHTS, |g| g.1);
            if let Some(genre) = Genre::from_name(name)
                && !genres.contains(&genre)
            {
                genres.push(genre);
            }
        }
        let average = (6.3 + 1.3 * normal(&mut rng)).clamp(1.0, 10.0);
        let votes = (popularity * 40.0 * rng.random_range(0.5..1.5)) as u32;
        let movie = Movie {
            id: MovieId(index + 1),
            title,
            original_title,
            year: Some(year),
            release_date: rng.random_bool(0.85).then_some(release_date).flatten(),
            runtime_minutes: rng
                .random_bool(0.95)
                .then(|| (75.0 + 25.0 * normal(&mut rng).abs() + 20.0 * rng.random::<f64>()) as u16),
            genres,
            overview: Some(format!(
                "A {} {} must {} the {} before {}.",
                pick(&mut rng, ADJECTIVES).to_lowercase(),
                pick(&mut rng, ROLES),
                pick(&mut rng, VERBS),
                pick(&mut rng, NOUNS).to_lowercase(),
                pick(&mut rng, EVENTS)
            )),
            original_language: Some((*language).to_owned()),
            poster_path: rng
                .random_bool(0.9)
                .then(|| format!("/posters/{:x}.jpg", splitmix(index) & 0xFFFF_FFFF)),
            popularity: popularity as f32,
            rating: RatingSummary { average: (average * 10.0).round() as f32 / 10.0, count: votes },
        };
        let credits = self.credits(&mut rng, rank);
        MovieRecord { movie, credits }
    }

    fn credits(&self, rng: &mut Pcg64Mcg, rank: u64) -> Vec<Credit> {
        // Popular movies get bigger casts: the top 1% start at 15.
        let base = if rank * 100 < self.movies { 15 } else { 5 };
        let cast = base + ((30 - base) as f64 * rng.random::<f64>().powi(2)) as usize;
        let mut credits: Vec<Credit> = Vec::with_capacity(cast + 8);
        let add =
            |credits: &mut Vec<Credit>, rng: &mut Pcg64Mcg, slots: &[usize], department, role: String| {
                for _ in 0..4 {
                    let person = self.sample_person(rng, slots);
                    if !credits.iter().any(|c| c.person == person && c.department == department) {
                        credits.push(Credit { person, department, role });
                        return;
                    }
                }
            };
        for _ in 0..cast {
            let character = match rng.random_range(0..10) {
                0 => format!("The {}", pick(rng, ROLES)),
                1 => "Himself".to_owned(),
                2..=4 => format!("{} {}", pick(rng, FIRST_NAMES), pick(rng, LAST_NAMES)),
                _ => pick(rng, FIRST_NAMES).to_owned(),
            };
            add(&mut credits, rng, ACTING_SLOTS, Department::Acting, character);
        }
        add(&mut credits, rng, DIRECTING_SLOTS, Department::Directing, "Director".into());
        for _ in 0..rng.random_range(1..=2) {
            add(&mut credits, rng, WRITING_SLOTS, Department::Writing, "Screenplay".into());
        }
        if rng.random_bool(0.7) {
            add(&mut credits, rng, PRODUCTION_SLOTS, Department::Production, "Producer".into());
        }
        for (department, job, p) in [
            (Department::Sound, "Original Music Composer", 0.7),
            (Department::Camera, "Director of Photography", 0.6),
            (Department::Editing, "Editor", 0.5),
            (Department::Art, "Production Design", 0.3),
        ] {
            if rng.random_bool(p) {
                add(&mut credits, rng, OTHER_SLOTS, department, job.into());
            }
        }
        credits
    }

    /// A person from a department pool, skewed towards the popular end: rank = n·u^1.5.
    fn sample_person(&self, rng: &mut Pcg64Mcg, slots: &[usize]) -> PersonId {
        let blocks = self.people / SLOTS as u64;
        let tail = (self.people % SLOTS as u64) as usize;
        let pool = blocks * slots.len() as u64 + slots.iter().filter(|&&s| s < tail).count() as u64;
        let rank = ((pool as f64) * rng.random::<f64>().powf(1.5)) as u64;
        let rank = rank.min(pool.saturating_sub(1));
        let index =
            (rank / slots.len() as u64) * SLOTS as u64 + slots[(rank % slots.len() as u64) as usize] as u64;
        PersonId(index.min(self.people - 1) + 1)
    }
}

fn department_of(index: u64) -> Department {
    let slot = (index % SLOTS as u64) as usize;
    if ACTING_SLOTS.contains(&slot) {
        Department::Acting
    } else if DIRECTING_SLOTS.contains(&slot) {
        Department::Directing
    } else if WRITING_SLOTS.contains(&slot) {
        Department::Writing
    } else if PRODUCTION_SLOTS.contains(&slot) {
        Department::Production
    } else {
        OTHER_DEPARTMENTS[((index / SLOTS as u64) % 4) as usize]
    }
}

fn title(rng: &mut Pcg64Mcg) -> String {
    let adjective = pick(rng, ADJECTIVES);
    let noun = pick(rng, NOUNS);
    let other = pick(rng, NOUNS);
    let mut title = match rng.random_range(0..8) {
        0 => format!("The {adjective} {noun}"),
        1 => format!("{noun} of the {other}"),
        2 => format!("{}'s {noun}", pick(rng, FIRST_NAMES)),
        3 => format!("{adjective} {noun}"),
        4 => format!("The {noun}"),
        5 => format!("{noun} and {other}"),
        6 => format!("A {noun} in {}", pick(rng, LAST_NAMES)),
        _ => format!("{adjective} {other} {noun}"),
    };
    if rng.random_bool(0.06) {
        title.push_str(&format!(" {}", rng.random_range(2..=4)));
    }
    title
}

fn pick<'a>(rng: &mut Pcg64Mcg, list: &[&'a str]) -> &'a str {
    list[rng.random_range(0..list.len())]
}

fn weighted<'a, T>(rng: &mut Pcg64Mcg, list: &'a [T], weight: impl Fn(&T) -> u32) -> &'a T {
    let total: u32 = list.iter().map(&weight).sum();
    let mut roll = rng.random_range(0..total);
    for item in list {
        let w = weight(item);
        if roll < w {
            return item;
        }
        roll -= w;
    }
    &list[list.len() - 1]
}

/// A standard normal sample (Box-Muller).
fn normal(rng: &mut Pcg64Mcg) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn mod_inverse(a: u64, m: u64) -> u64 {
    if m == 1 {
        return 0;
    }
    let (mut old_r, mut r) = (i128::from(a), i128::from(m));
    let (mut old_s, mut s) = (1i128, 0i128);
    while r != 0 {
        let q = old_r / r;
        (old_r, r) = (r, old_r - q * r);
        (old_s, s) = (s, old_s - q * s);
    }
    old_s.rem_euclid(i128::from(m)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator(movies: u64) -> Generator {
        Generator::new(&SeedOptions { movies, people: None, seed: 7 })
    }

    #[test]
    fn same_seed_same_catalog() {
        let a = generator(1000);
        let b = generator(1000);
        assert_eq!(a.movie(17), b.movie(17));
        assert_eq!(a.person(3), b.person(3));
        let c = Generator::new(&SeedOptions { movies: 1000, people: None, seed: 8 });
        assert_ne!(a.movie(17).movie.title, c.movie(17).movie.title);
    }

    #[test]
    fn popularity_ranks_are_a_permutation() {
        let g = generator(1009);
        let mut ranks: Vec<u64> = (0..1009).map(|i| g.popularity_rank(i)).collect();
        for i in 0..1009 {
            assert_eq!(g.movie_at_rank(g.popularity_rank(i)), i);
        }
        ranks.sort_unstable();
        assert_eq!(ranks, (0..1009).collect::<Vec<_>>());
    }

    #[test]
    fn movies_have_realistic_shape() {
        let g = generator(2000);
        for i in 0..2000 {
            let r = g.movie(i);
            let cast = r.credits.iter().filter(|c| c.is_cast()).count();
            assert!((4..=30).contains(&cast), "cast of {cast}");
            assert!(r.credits.iter().any(|c| c.role == "Director"));
            assert!((1..=3).contains(&r.movie.genres.len()));
            let year = r.movie.year.expect("year");
            assert!((EARLIEST_YEAR..=LATEST_YEAR).contains(&year));
            assert!(r.credits.iter().all(|c| c.person.0 >= 1 && c.person.0 <= g.people));
        }
        let recent = (0..2000).filter(|&i| g.movie(i).movie.year >= Some(1990)).count();
        assert!(recent > 1000, "years should skew recent: {recent} of 2000 since 1990");
    }

    #[test]
    fn a_few_people_appear_in_many_movies() {
        let g = generator(5000);
        let mut counts = std::collections::HashMap::<PersonId, usize>::new();
        for i in 0..5000 {
            for c in g.movie(i).credits {
                *counts.entry(c.person).or_default() += 1;
            }
        }
        let mut sorted: Vec<usize> = counts.into_values().collect();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let median = sorted[sorted.len() / 2];
        assert!(sorted[0] > 10 * median.max(1), "top {} vs median {median}", sorted[0]);
    }
}
