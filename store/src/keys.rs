//! Sort keys for the ordered access paths, shared by every backend.
//!
//! Every order Marquee serves is stored ascending, with descending orders ("most popular
//! first", "newest first") stored as inverted numbers. CQL clustering order and the embedded B-trees
//! then agree, and no backend relies on `DESC` scans (which the CQL test server ignores).

use crate::model::{Date, Movie};

const SCALE: f32 = 1000.0;

/// Popularity quantised to three decimals, saturating.
fn quantise(value: f32) -> u32 {
    if value.is_finite() && value > 0.0 { (value * SCALE).min(u32::MAX as f32) as u32 } else { 0 }
}

/// Ascending key for "most popular first".
pub fn popularity(popularity: f32) -> u64 {
    u64::from(u32::MAX - quantise(popularity))
}

/// The prior used by [`weighted_rating`]: votes needed before a movie's own average dominates.
pub const RATING_PRIOR_VOTES: f32 = 100.0;
/// The prior mean used by [`weighted_rating`].
pub const RATING_PRIOR_MEAN: f32 = 6.0;

/// Bayesian average (IMDb's top-list formula): a 10/10 from two voters does not outrank a
/// classic with a million votes.
pub fn weighted_rating(average: f32, count: u32) -> f32 {
    let votes = count as f32;
    (votes * average + RATING_PRIOR_VOTES * RATING_PRIOR_MEAN) / (votes + RATING_PRIOR_VOTES)
}

/// Ascending key for "best rated first"; ties go to the more popular movie.
pub fn rating(movie: &Movie) -> u64 {
    let weighted = quantise(weighted_rating(movie.rating.average, movie.rating.count) * 100.0);
    (u64::from(u32::MAX - weighted) << 32) | popularity(movie.popularity)
}

/// Ascending key for "newest first"; undated movies come last.
pub fn release(movie: &Movie) -> u64 {
    let ordinal = match (movie.release_date, movie.year) {
        (Some(date), _) => date.ordinal(),
        (None, Some(year)) => Date::new(year, 12, 31).map_or(0, Date::ordinal),
        (None, None) => 0,
    };
    (u64::from(u32::MAX - ordinal) << 32) | popularity(movie.popularity)
}

/// Ascending key for a filmography: newest movie first, then most popular.
pub fn filmography(year: Option<u16>, movie_popularity: f32) -> u64 {
    (u64::from(u16::MAX - year.unwrap_or(0)) << 32) | popularity(movie_popularity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descending_orders_become_ascending_keys() {
        assert!(popularity(50.0) < popularity(10.0));
        assert!(popularity(0.0) > popularity(0.001));
        assert_eq!(popularity(f32::NAN), popularity(0.0));
        assert!(filmography(Some(2020), 1.0) < filmography(Some(1990), 99.0));
        assert!(filmography(Some(2020), 9.0) < filmography(Some(2020), 1.0));
        assert!(filmography(None, 1.0) > filmography(Some(1900), 1.0));
    }

    #[test]
    fn few_votes_do_not_top_the_rating_order() {
        assert!(weighted_rating(10.0, 2) < weighted_rating(8.5, 1_000_000));
        assert!((weighted_rating(7.0, 0) - RATING_PRIOR_MEAN).abs() < f32::EPSILON);
    }
}
