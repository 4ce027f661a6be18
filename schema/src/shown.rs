//! What a response shows that a write can change, named as surrogate keys: each movie and
//! person it read (found or not: a movie added later must find the `null` it replaces), and
//! each list page whose membership or order a catalog change can move (a search partition, a
//! browse genre, the genre counts). Writes name the same keys (the gateway's `changes`
//! module), so HTTP caches (the gateway's response cache, the CDN by surrogate key) drop
//! exactly the responses a write made stale.
//!
//! The request's loaders record every id they are asked for ([`Shown`] lives in
//! [`crate::Loaders`]); root resolvers record the lists. The HTTP layer reads the keys once the
//! response is complete.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use marquee_store::{Genre, MovieId, PersonId, plan};

/// One surrogate key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// A movie (its record, credits or rating summary): `tt0000001`.
    Movie(MovieId),
    /// A person (their record or filmography): `nm0000001`.
    Person(PersonId),
    /// One title-search partition (an index prefix): `search:<prefix>`.
    Search(String),
    /// Browse pages of one genre code, or of any genre ([`plan::ANY_GENRE`]):
    /// `browse:<genre>` / `browse:any`.
    Browse(u8),
    /// The genre list with its counts: `genres`.
    Genres,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Movie(id) => write!(f, "{id}"),
            Key::Person(id) => write!(f, "{id}"),
            Key::Search(prefix) => write!(f, "search:{prefix}"),
            Key::Browse(code) => match Genre::from_code(*code) {
                Some(genre) => write!(f, "browse:{}", genre.name().to_ascii_lowercase()),
                None => f.write_str("browse:any"),
            },
            Key::Genres => f.write_str("genres"),
        }
    }
}

impl Key {
    /// The key written as `text` (the inverse of `Display`).
    pub fn parse(text: &str) -> Option<Key> {
        if let Some(prefix) = text.strip_prefix("search:") {
            return (!prefix.is_empty() && !prefix.contains(char::is_whitespace))
                .then(|| Key::Search(prefix.to_owned()));
        }
        if let Some(genre) = text.strip_prefix("browse:") {
            if genre == "any" {
                return Some(Key::Browse(plan::ANY_GENRE));
            }
            return Genre::from_name(genre).map(|g| Key::Browse(g.code()));
        }
        if text == "genres" {
            return Some(Key::Genres);
        }
        if text.starts_with("tt") {
            return text.parse().ok().map(Key::Movie);
        }
        text.parse().ok().map(Key::Person)
    }
}

/// The keys one response shows (a request's data; cloning shares it).
#[derive(Clone, Debug, Default)]
pub struct Shown(Arc<Mutex<BTreeSet<Key>>>);

impl Shown {
    pub(crate) fn add(&self, key: Key) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(key);
    }

    pub(crate) fn add_all(&self, keys: impl IntoIterator<Item = Key>) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend(keys);
    }

    /// The keys recorded, in order.
    pub fn keys(&self) -> Vec<Key> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_text() {
        let keys = [
            Key::Movie(MovieId(43)),
            Key::Person(PersonId(7)),
            Key::Search("wars".into()),
            Key::Browse(Genre::from_name("sci-fi").map(Genre::code).unwrap_or_default()),
            Key::Browse(plan::ANY_GENRE),
            Key::Genres,
        ];
        let texts: Vec<String> = keys.iter().map(ToString::to_string).collect();
        assert_eq!(texts, ["tt0000043", "nm0000007", "search:wars", "browse:sci-fi", "browse:any", "genres"]);
        for (key, text) in keys.iter().zip(&texts) {
            assert_eq!(Key::parse(text).as_ref(), Some(key));
        }
        for bad in ["", "search:", "browse:nope", "tt", "xx0000001", "ratings"] {
            assert_eq!(Key::parse(bad), None, "{bad}");
        }
    }
}
