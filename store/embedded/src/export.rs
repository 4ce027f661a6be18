//! Catalog export: the movies, people and credits of the current catalog as PostgreSQL `COPY`
//! text files, so the same catalog can be loaded into another system (the benchmark's
//! PostGraphile peer, an analytics database) without re-running the seeder or importer.
//!
//! The export reads one redb snapshot, so it is consistent even while nothing else holds the
//! files; it streams table by table in key order and never holds more than one record. Rating
//! summaries are the catalog's own (user ratings in `users.redb` are not part of a catalog).
//!
//! Files (tab-separated, `\N` for null, backslash escapes as `COPY ... FROM` reads them):
//! - `movie.tsv`: id, title, original_title, year, release_date, runtime_minutes, genres (a
//!   text[] literal), overview, original_language, poster_path, popularity, rating_average,
//!   rating_count;
//! - `person.tsv`: id, name, birth_year, death_year, known_for_department, popularity;
//! - `credit.tsv`: movie_id, billing_order (0-based: cast in billing order, then crew),
//!   person_id, department, role.

use crate::Db;
use std::fmt::Display;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable};

use super::tables::{CREDITS_BY_MOVIE, META, MOVIES, PEOPLE, decode};
use marquee_store::bulk::{ExportStats, Progress};
use marquee_store::{Credit, Department, Movie, Person, StoreError};

/// One `COPY` text-format file being written.
struct CopyFile {
    out: BufWriter<File>,
    path: String,
    first: bool,
}

impl CopyFile {
    fn create(dir: &Path, name: &str) -> Result<CopyFile, StoreError> {
        let path = dir.join(name);
        let file =
            File::create(&path).map_err(|e| StoreError::io(format!("creating {}", path.display()), e))?;
        Ok(CopyFile {
            out: BufWriter::with_capacity(1 << 20, file),
            path: path.display().to_string(),
            first: true,
        })
    }

    fn io(&self, e: std::io::Error) -> StoreError {
        StoreError::io(format!("writing {}", self.path), e)
    }

    fn separator(&mut self) -> Result<(), StoreError> {
        if !std::mem::replace(&mut self.first, false) {
            self.out.write_all(b"\t").map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    /// A text column, escaped for `COPY`.
    fn text(&mut self, value: &str) -> Result<&mut Self, StoreError> {
        self.separator()?;
        let mut escaped = Vec::with_capacity(value.len());
        escape_into(value, &mut escaped);
        self.out.write_all(&escaped).map_err(|e| self.io(e))?;
        Ok(self)
    }

    /// A column whose `Display` never needs escaping (numbers, ids, dates).
    fn plain(&mut self, value: impl Display) -> Result<&mut Self, StoreError> {
        self.separator()?;
        write!(self.out, "{value}").map_err(|e| self.io(e))?;
        Ok(self)
    }

    fn opt_text(&mut self, value: Option<&str>) -> Result<&mut Self, StoreError> {
        match value {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    fn opt_plain(&mut self, value: Option<impl Display>) -> Result<&mut Self, StoreError> {
        match value {
            Some(v) => self.plain(v),
            None => self.null(),
        }
    }

    fn null(&mut self) -> Result<&mut Self, StoreError> {
        self.separator()?;
        self.out.write_all(b"\\N").map_err(|e| self.io(e))?;
        Ok(self)
    }

    fn end_row(&mut self) -> Result<(), StoreError> {
        self.first = true;
        self.out.write_all(b"\n").map_err(|e| self.io(e))
    }

    fn finish(mut self) -> Result<(), StoreError> {
        self.out.flush().map_err(|e| self.io(e))?;
        let file = self.out.get_ref();
        file.sync_all().map_err(|e| StoreError::io(format!("syncing {}", self.path), e))
    }
}

/// Escapes `value` as one `COPY` text-format column.
fn escape_into(value: &str, out: &mut Vec<u8>) {
    for b in value.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            other => out.push(other),
        }
    }
}

/// A PostgreSQL array literal of `items`, each double-quoted.
fn array_literal<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut literal = String::from("{");
    for (i, item) in items.enumerate() {
        if i > 0 {
            literal.push(',');
        }
        literal.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                literal.push('\\');
            }
            literal.push(c);
        }
        literal.push('"');
    }
    literal.push('}');
    literal
}

fn department_name(department: Department) -> &'static str {
    match department {
        Department::Acting => "Acting",
        Department::Directing => "Directing",
        Department::Writing => "Writing",
        Department::Production => "Production",
        Department::Sound => "Sound",
        Department::Camera => "Camera",
        Department::Editing => "Editing",
        Department::Art => "Art",
        Department::Crew => "Crew",
    }
}

/// Writes the catalog in `main` to `movie.tsv`, `person.tsv` and `credit.tsv` in `out_dir`.
pub(super) fn export(
    main: &redb::Database,
    out_dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<ExportStats, StoreError> {
    std::fs::create_dir_all(out_dir)
        .map_err(|e| StoreError::io(format!("creating {}", out_dir.display()), e))?;
    let txn = main.begin_read().db()?;
    let meta = txn.open_table(META).db()?;
    let count = |name: &str| -> Result<u64, StoreError> { Ok(meta.get(name).db()?.map_or(0, |v| v.value())) };
    let (movie_total, people_total) = (count("movies")?, count("people")?);
    let mut stats = ExportStats::default();

    progress(Progress::Phase { name: "people", total: people_total });
    let mut file = CopyFile::create(out_dir, "person.tsv")?;
    for row in txn.open_table(PEOPLE).db()?.iter().db()? {
        let (_, value) = row.db()?;
        let p: Person = decode("person", value.value())?;
        file.plain(p.id)?
            .text(&p.name)?
            .opt_plain(p.birth_year)?
            .opt_plain(p.death_year)?
            .opt_text(p.known_for_department.map(department_name))?
            .plain(p.popularity)?;
        file.end_row()?;
        stats.people += 1;
        if stats.people.is_multiple_of(100_000) {
            progress(Progress::Advance { done: stats.people });
        }
    }
    file.finish()?;

    progress(Progress::Phase { name: "movies", total: movie_total });
    let mut movies = CopyFile::create(out_dir, "movie.tsv")?;
    let mut credits = CopyFile::create(out_dir, "credit.tsv")?;
    let credit_table = txn.open_table(CREDITS_BY_MOVIE).db()?;
    for row in txn.open_table(MOVIES).db()?.iter().db()? {
        let (_, value) = row.db()?;
        let m: Movie = decode("movie", value.value())?;
        movies
            .plain(m.id)?
            .text(&m.title)?
            .opt_text(m.original_title.as_deref())?
            .opt_plain(m.year)?
            .opt_plain(m.release_date)?
            .opt_plain(m.runtime_minutes)?
            .text(&array_literal(m.genres.iter().map(|g| g.name())))?
            .opt_text(m.overview.as_deref())?
            .opt_text(m.original_language.as_deref())?
            .opt_text(m.poster_path.as_deref())?
            .plain(m.popularity)?
            .plain(m.rating.average)?
            .plain(m.rating.count)?;
        movies.end_row()?;
        let list: Vec<Credit> = match credit_table.get(m.id.0).db()? {
            Some(v) => decode("credits", v.value())?,
            None => Vec::new(),
        };
        for (order, credit) in list.iter().enumerate() {
            credits
                .plain(m.id)?
                .plain(order)?
                .plain(credit.person)?
                .text(department_name(credit.department))?
                .text(&credit.role)?;
            credits.end_row()?;
            stats.credits += 1;
        }
        stats.movies += 1;
        if stats.movies.is_multiple_of(100_000) {
            progress(Progress::Advance { done: stats.movies });
        }
    }
    movies.finish()?;
    credits.finish()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_the_characters_copy_reads_specially() {
        let mut out = Vec::new();
        escape_into("a\tb\\c\nd\re", &mut out);
        assert_eq!(out, b"a\\tb\\\\c\\nd\\re");
        assert_eq!(array_literal(["Drama", "Sci-Fi"].into_iter()), r#"{"Drama","Sci-Fi"}"#);
        assert_eq!(array_literal(["a\"b", "c\\d"].into_iter()), r#"{"a\"b","c\\d"}"#);
        assert_eq!(array_literal(std::iter::empty()), "{}");
    }
}
