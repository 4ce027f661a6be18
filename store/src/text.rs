//! Title normalisation for search: case-, accent- and punctuation-insensitive words, and the
//! prefixes under which a title is indexed.
//!
//! Titles are transliterated to ASCII (`deunicode`: "Amélie" → "amelie", "Ёлки" → "elki"),
//! lower-cased and split on anything that is not a letter or digit. The index stores each
//! distinct prefix of 1..=[`MAX_INDEXED_PREFIX`] characters of every word; a longer query word
//! is looked up by its first [`MAX_INDEXED_PREFIX`] characters and checked against the words
//! stored with each index entry.

/// Longest prefix stored in the search index.
pub const MAX_INDEXED_PREFIX: usize = 4;

/// Longest query word considered (anything longer cannot match a stored word anyway).
pub const MAX_WORD: usize = 64;

/// Normalised words of `text`, in order, duplicates kept.
pub fn words(text: &str) -> Vec<String> {
    deunicode::deunicode(text)
        .to_ascii_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w[..w.len().min(MAX_WORD)].to_owned())
        .collect()
}

/// The distinct index prefixes of a title, sorted.
pub fn index_prefixes(words: &[String]) -> Vec<String> {
    let mut prefixes: Vec<String> = words
        .iter()
        .flat_map(|w| (1..=w.len().min(MAX_INDEXED_PREFIX)).map(move |n| w[..n].to_owned()))
        .collect();
    prefixes.sort_unstable();
    prefixes.dedup();
    prefixes
}

/// The index prefix a query word is looked up by.
pub fn lookup_prefix(word: &str) -> &str {
    &word[..word.len().min(MAX_INDEXED_PREFIX)]
}

/// Whether every query word prefixes some title word (both normalised).
pub fn matches(query_words: &[String], title_words: &str) -> bool {
    query_words.iter().all(|q| title_words.split(' ').any(|t| t.starts_with(q.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_fold_case_accents_and_punctuation() {
        assert_eq!(
            words("Amélie: Le Fabuleux Destin d'AMÉLIE"),
            ["amelie", "le", "fabuleux", "destin", "d", "amelie"]
        );
        assert_eq!(words("  --  "), Vec::<String>::new());
        assert_eq!(words("WALL·E"), ["wall", "e"]);
    }

    #[test]
    fn prefixes_are_distinct_and_bounded() {
        let p = index_prefixes(&words("Star Stars"));
        assert_eq!(p, ["s", "st", "sta", "star"]);
        assert_eq!(lookup_prefix("starship"), "star");
    }

    #[test]
    fn matching_requires_every_query_word() {
        let title = words("The Empire Strikes Back").join(" ");
        assert!(matches(&words("emp str"), &title));
        assert!(!matches(&words("emp x"), &title));
        assert!(matches(&words("STRIKES"), &title));
    }
}
