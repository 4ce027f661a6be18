//! The domain model every backend stores and every resolver reads.
//!
//! The types are plain data with `serde` derives: the embedded backend encodes them with
//! `postcard`, the ScyllaDB backend will map them onto CQL columns. Ids are numeric inside
//! Marquee (cheap to compare, sort and shard) and IMDb-style strings (`tt0000001`,
//! `nm0000001`) outside, so imported IMDb data keeps the ids people already know.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::StoreError;

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{:07}"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = StoreError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.strip_prefix($prefix)
                    .filter(|digits| !digits.is_empty() && digits.len() <= 12)
                    .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|digits| digits.parse().ok())
                    .map($name)
                    .ok_or_else(|| StoreError::InvalidId {
                        kind: stringify!($name),
                        value: s.chars().take(40).collect(),
                    })
            }
        }
    };
}

numeric_id!(
    /// A movie's id; written `tt` followed by at least seven digits.
    MovieId,
    "tt"
);
numeric_id!(
    /// A person's id; written `nm` followed by at least seven digits.
    PersonId,
    "nm"
);

/// The fixed genre list (IMDb's, so imports map one to one). Stored as the index into this list.
pub const GENRES: [&str; 28] = [
    "Action",
    "Adult",
    "Adventure",
    "Animation",
    "Biography",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Family",
    "Fantasy",
    "Film-Noir",
    "Game-Show",
    "History",
    "Horror",
    "Music",
    "Musical",
    "Mystery",
    "News",
    "Reality-TV",
    "Romance",
    "Sci-Fi",
    "Short",
    "Sport",
    "Talk-Show",
    "Thriller",
    "War",
    "Western",
];

/// A genre from [`GENRES`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Genre(u8);

impl Genre {
    /// Every genre, in list order.
    pub fn all() -> impl Iterator<Item = Genre> {
        (0..GENRES.len()).map(|i| Genre(i as u8))
    }

    /// The genre at `code` in [`GENRES`], if there is one.
    pub fn from_code(code: u8) -> Option<Genre> {
        (usize::from(code) < GENRES.len()).then_some(Genre(code))
    }

    /// Looks a genre up by name, ignoring ASCII case.
    pub fn from_name(name: &str) -> Option<Genre> {
        GENRES.iter().position(|g| g.eq_ignore_ascii_case(name)).map(|i| Genre(i as u8))
    }

    /// The stable numeric code (index into [`GENRES`]).
    pub fn code(self) -> u8 {
        self.0
    }

    /// The display name.
    pub fn name(self) -> &'static str {
        GENRES[usize::from(self.0)]
    }
}

/// A calendar date, validated on construction.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Date {
    /// Year, 1800..=2200.
    pub year: u16,
    /// Month, 1..=12.
    pub month: u8,
    /// Day of month, valid for the month and year.
    pub day: u8,
}

impl Date {
    /// A date if `year`, `month` and `day` form a real calendar day.
    pub fn new(year: u16, month: u8, day: u8) -> Option<Date> {
        let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        ((1800..=2200).contains(&year) && (1..=days).contains(&day)).then_some(Date { year, month, day })
    }

    /// `yyyymmdd` as one number, which sorts like the date.
    pub fn ordinal(self) -> u32 {
        u32::from(self.year) * 10_000 + u32::from(self.month) * 100 + u32::from(self.day)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// The public rating summary of a movie.
#[derive(Copy, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RatingSummary {
    /// Mean score on a 1-10 scale (0 when nobody rated).
    pub average: f32,
    /// Number of ratings.
    pub count: u32,
}

/// Marquee users' ratings of one movie, summed: what [`crate::UserData::rating_totals`] returns.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatingTotals {
    /// Sum of the users' scores.
    pub sum: u64,
    /// Number of users who rated.
    pub count: u64,
}

impl RatingSummary {
    /// The public summary: this (the catalog's votes, as loaded) with Marquee users' ratings
    /// added as further votes.
    #[must_use]
    pub fn with(self, users: RatingTotals) -> RatingSummary {
        if users.count == 0 {
            return self;
        }
        let base = u64::from(self.count);
        let all = base + users.count;
        let weighted = f64::from(self.average) * base as f64 + users.sum as f64;
        RatingSummary {
            average: (weighted / all as f64) as f32,
            count: u32::try_from(all).unwrap_or(u32::MAX),
        }
    }
}

/// A movie, as stored in the movies-by-id table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Movie {
    /// Primary key.
    pub id: MovieId,
    /// Display title.
    pub title: String,
    /// Title in the original language, when it differs from `title`.
    pub original_title: Option<String>,
    /// Release year.
    pub year: Option<u16>,
    /// Full release date, when known.
    pub release_date: Option<Date>,
    /// Runtime in minutes.
    pub runtime_minutes: Option<u16>,
    /// One to three genres, most important first.
    pub genres: Vec<Genre>,
    /// A short synopsis.
    pub overview: Option<String>,
    /// ISO 639-1 code of the original language.
    pub original_language: Option<String>,
    /// Poster image path, relative to the configured image base URL.
    pub poster_path: Option<String>,
    /// Popularity score (higher is more popular); drives search and browse ranking.
    pub popularity: f32,
    /// Public rating summary.
    pub rating: RatingSummary,
}

/// The department a person works in, or is best known for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Department {
    /// Cast.
    Acting,
    /// Directors.
    Directing,
    /// Writers.
    Writing,
    /// Producers.
    Production,
    /// Composers and sound.
    Sound,
    /// Cinematographers.
    Camera,
    /// Editors.
    Editing,
    /// Production design.
    Art,
    /// Everyone else.
    Crew,
}

impl Department {
    /// Every department.
    pub const ALL: [Department; 9] = [
        Department::Acting,
        Department::Directing,
        Department::Writing,
        Department::Production,
        Department::Sound,
        Department::Camera,
        Department::Editing,
        Department::Art,
        Department::Crew,
    ];
}

/// A person (cast or crew), as stored in the people-by-id table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Person {
    /// Primary key.
    pub id: PersonId,
    /// Display name.
    pub name: String,
    /// Year of birth.
    pub birth_year: Option<u16>,
    /// Year of death.
    pub death_year: Option<u16>,
    /// What the person is best known for.
    pub known_for_department: Option<Department>,
    /// Popularity score (higher is more popular).
    pub popularity: f32,
}

/// One credit of a movie, as stored in the credits-by-movie table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Credit {
    /// Who.
    pub person: PersonId,
    /// `Acting` for cast credits, anything else for crew.
    pub department: Department,
    /// The character played (cast) or the job done (crew), e.g. `Director`.
    pub role: String,
}

impl Credit {
    /// Whether this is a cast credit (as opposed to crew).
    pub fn is_cast(&self) -> bool {
        self.department == Department::Acting
    }
}

/// One credit in a person's filmography, as stored in the credits-by-person table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FilmographyEntry {
    /// The movie.
    pub movie: MovieId,
    /// Department of this credit.
    pub department: Department,
    /// Character or job.
    pub role: String,
    /// Release year of the movie (denormalised: it orders the filmography).
    pub year: Option<u16>,
}

/// A genre with its number of movies.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct GenreCount {
    /// The genre.
    pub genre: Genre,
    /// Movies that list it.
    pub movies: u64,
}

/// A complete movie with its credits, the unit the seeder and importer write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MovieRecord {
    /// The movie.
    pub movie: Movie,
    /// Cast in billing order, then crew.
    pub credits: Vec<Credit>,
}

/// Longest title, name, character or job, in characters.
pub const MAX_NAME_CHARS: usize = 500;
/// Longest synopsis, in characters.
pub const MAX_OVERVIEW_CHARS: usize = 10_000;
/// Most genres a movie lists.
pub const MAX_GENRES: usize = 3;
/// Most credits a movie lists.
pub const MAX_CREDITS: usize = 2_000;
/// Release years a movie may have (the first films to today's announced slate, with room).
pub const MOVIE_YEARS: std::ops::RangeInclusive<u16> = 1800..=2200;

/// The current calendar year (UTC), by the system clock.
pub fn current_year() -> u16 {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    // Days to a civil year (Howard Hinnant's algorithm, years only).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let year = yoe + era * 400 + u64::from(mp >= 10);
    u16::try_from(year).unwrap_or(u16::MAX)
}

/// Refuses a person's birth or death year that cannot be: after this year, or year 0 (a
/// birth year is otherwise valid back to antiquity: writers and composers of centuries ago
/// are credited on new films).
pub fn check_person_year(what: &str, year: u16) -> Result<(), String> {
    let now = current_year();
    if year == 0 || year > now {
        return Err(format!("{what} {year} is not a year that has been (1 to {now})"));
    }
    Ok(())
}

/// Refuses empty, over-long or control-character text.
fn check_text(what: &str, text: &str, max: usize) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err(format!("{what} is empty"));
    }
    check_optional_text(what, text, max)
}

fn check_optional_text(what: &str, text: &str, max: usize) -> Result<(), String> {
    if text.chars().count() > max {
        return Err(format!("{what} is longer than {max} characters"));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{what} holds a control character"));
    }
    Ok(())
}

impl MovieRecord {
    /// What makes a record unfit for the catalog, if anything: the rules every way in (import,
    /// delta, editor) applies, so the catalog holds one shape whatever wrote it.
    pub fn check(&self) -> Result<(), String> {
        let m = &self.movie;
        check_text("the title", &m.title, MAX_NAME_CHARS)?;
        if let Some(original) = &m.original_title {
            check_text("the original title", original, MAX_NAME_CHARS)?;
        }
        if let Some(year) = m.year
            && !MOVIE_YEARS.contains(&year)
        {
            return Err(format!("the year {year} is outside {}-{}", MOVIE_YEARS.start(), MOVIE_YEARS.end()));
        }
        if let Some(date) = m.release_date
            && m.year != Some(date.year)
        {
            return Err(format!("the release date {date} is not in the year {:?}", m.year));
        }
        if m.runtime_minutes == Some(0) {
            return Err("the runtime is 0 minutes".into());
        }
        if m.genres.len() > MAX_GENRES {
            return Err(format!("{} genres listed, at most {MAX_GENRES}", m.genres.len()));
        }
        if (1..m.genres.len()).any(|i| m.genres[..i].contains(&m.genres[i])) {
            return Err("a genre is listed twice".into());
        }
        if let Some(overview) = &m.overview {
            check_optional_text("the overview", &overview.replace(['\n', '\t'], " "), MAX_OVERVIEW_CHARS)?;
        }
        if let Some(language) = &m.original_language
            && !(language.len() == 2 && language.bytes().all(|b| b.is_ascii_lowercase()))
        {
            return Err(format!("the original language `{language}` is not an ISO 639-1 code"));
        }
        if let Some(poster) = &m.poster_path {
            check_text("the poster path", poster, MAX_NAME_CHARS)?;
        }
        if !(m.popularity.is_finite() && m.popularity >= 0.0) {
            return Err(format!("the popularity {} is not a non-negative number", m.popularity));
        }
        if !(m.rating.average.is_finite() && (0.0..=10.0).contains(&m.rating.average)) {
            return Err(format!("the average rating {} is outside 0-10", m.rating.average));
        }
        if self.credits.len() > MAX_CREDITS {
            return Err(format!("{} credits listed, at most {MAX_CREDITS}", self.credits.len()));
        }
        for credit in &self.credits {
            check_optional_text("a credit's role", &credit.role, MAX_NAME_CHARS)?;
        }
        Ok(())
    }
}

impl Person {
    /// What makes a person unfit for the catalog, if anything (see [`MovieRecord::check`]).
    pub fn check(&self) -> Result<(), String> {
        check_text("the name", &self.name, MAX_NAME_CHARS)?;
        if let Some(birth) = self.birth_year {
            check_person_year("the birth year", birth)?;
        }
        if let Some(death) = self.death_year {
            check_person_year("the death year", death)?;
        }
        if let (Some(birth), Some(death)) = (self.birth_year, self.death_year)
            && death < birth
        {
            return Err(format!("the death year {death} is before the birth year {birth}"));
        }
        if !(self.popularity.is_finite() && self.popularity >= 0.0) {
            return Err(format!("the popularity {} is not a non-negative number", self.popularity));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let id: MovieId = "tt0111161".parse().expect("valid id");
        assert_eq!(id, MovieId(111_161));
        assert_eq!(id.to_string(), "tt0111161");
        assert_eq!(MovieId(12_345_678).to_string(), "tt12345678");
        for bad in ["", "tt", "nm0000001", "tt12a", "tt-1", "tt99999999999999999999"] {
            assert!(bad.parse::<MovieId>().is_err(), "{bad} should be rejected");
        }
        assert_eq!("nm0000151".parse::<PersonId>().expect("valid"), PersonId(151));
    }

    #[test]
    fn dates_are_validated() {
        assert!(Date::new(2024, 2, 29).is_some());
        assert!(Date::new(2023, 2, 29).is_none());
        assert!(Date::new(2023, 13, 1).is_none());
        assert_eq!(Date::new(1999, 12, 31).map(|d| d.to_string()).as_deref(), Some("1999-12-31"));
    }

    #[test]
    fn the_current_year_is_the_calendar_year() {
        let year = current_year();
        assert!((2026..2200).contains(&year), "{year}");
        assert!(check_person_year("born", 1564).is_ok(), "Shakespeare is creditable");
        assert!(check_person_year("born", 0).is_err());
        assert!(check_person_year("born", year + 1).is_err());
    }

    #[test]
    fn genres_by_name_ignore_case() {
        assert_eq!(Genre::from_name("sci-fi").map(Genre::name), Some("Sci-Fi"));
        assert!(Genre::from_name("Nope").is_none());
        assert_eq!(Genre::all().count(), GENRES.len());
    }
}

/// A signed-in user's id: the subject of their token, 1 to 256 bytes of printable text.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(String);

impl UserId {
    /// Validates `id`.
    pub fn new(id: impl Into<String>) -> Result<UserId, StoreError> {
        let id = id.into();
        if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
            return Err(StoreError::InvalidInput("a user id is 1 to 256 printable characters".into()));
        }
        Ok(UserId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lowest and highest score a user may give.
pub const SCORES: std::ops::RangeInclusive<u8> = 1..=10;

/// One user's rating of one movie.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rating {
    /// The movie.
    pub movie: MovieId,
    /// 1 to 10.
    pub score: u8,
    /// When it was (last) given, in milliseconds since the Unix epoch.
    pub rated_at_ms: u64,
}

/// One movie on a user's watchlist.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchlistEntry {
    /// The movie.
    pub movie: MovieId,
    /// When it was added, in milliseconds since the Unix epoch.
    pub added_at_ms: u64,
}
