//! Import of the public IMDb dataset files (tab-separated, plain or gzipped):
//! `title.basics`, `title.ratings`, `title.principals` and `name.basics`.
//!
//! The import streams: `title.basics` and `title.principals` are merge-joined on `tconst`
//! (IMDb ships both sorted by it), so each movie is written with its credits without holding
//! either file in memory. Only ratings (one small row per title) and the credit count per
//! referenced person are kept in maps. Bad rows are skipped, counted and reported with their
//! line numbers; they never abort the import. Anything that does abort it (a missing file, a
//! wrong header, an I/O error) leaves the existing catalog untouched, because the sink
//! publishes only on success.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::{CatalogSink, Progress};
use crate::{
    CatalogStats, Credit, Department, Genre, Movie, MovieId, MovieRecord, Person, PersonId, RatingSummary,
    StoreError,
};

/// How many bad rows per file are listed individually (all are counted).
pub const LISTED_BAD_ROWS: usize = 20;

/// Title types imported as movies.
const MOVIE_TYPES: [&str; 2] = ["movie", "tvMovie"];

const BASICS_HEADER: &str =
    "tconst\ttitleType\tprimaryTitle\toriginalTitle\tisAdult\tstartYear\tendYear\truntimeMinutes\tgenres";
const RATINGS_HEADER: &str = "tconst\taverageRating\tnumVotes";
const PRINCIPALS_HEADER: &str = "tconst\tordering\tnconst\tcategory\tjob\tcharacters";
const NAMES_HEADER: &str = "nconst\tprimaryName\tbirthYear\tdeathYear\tprimaryProfession\tknownForTitles";

/// A skipped row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRow {
    /// 1-based line number in its file (the header is line 1).
    pub line: u64,
    /// What was wrong.
    pub reason: String,
}

/// What happened to one input file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileReport {
    /// File name.
    pub file: String,
    /// Data rows read (header excluded).
    pub rows: u64,
    /// Rows that contributed to the catalog.
    pub imported: u64,
    /// Well-formed rows that were not needed (not a movie, person without credits, ...).
    pub ignored: u64,
    /// Malformed rows, all counted.
    pub bad: u64,
    /// The first [`LISTED_BAD_ROWS`] malformed rows.
    pub bad_rows: Vec<BadRow>,
}

impl FileReport {
    fn bad(&mut self, line: u64, reason: impl Into<String>) {
        self.bad += 1;
        if self.bad_rows.len() < LISTED_BAD_ROWS {
            self.bad_rows.push(BadRow { line, reason: reason.into() });
        }
    }
}

/// The outcome of an import.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// What was written.
    pub stats: CatalogStats,
    /// Per input file, in reading order.
    pub files: Vec<FileReport>,
}

impl ImportReport {
    /// Malformed rows across all files.
    pub fn bad_rows(&self) -> u64 {
        self.files.iter().map(|f| f.bad).sum()
    }
}

impl fmt::Display for FileReport {
    /// Its counts on one line (rows that contributed called `applied_as`), then its listed bad
    /// rows, one per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let applied_as = if f.alternate() { "applied" } else { "imported" };
        writeln!(
            f,
            "  {}: {} rows, {} {applied_as}, {} ignored, {} bad",
            self.file, self.rows, self.imported, self.ignored, self.bad
        )?;
        for bad in &self.bad_rows {
            writeln!(f, "    line {}: {}", bad.line, bad.reason)?;
        }
        if self.bad > self.bad_rows.len() as u64 {
            writeln!(f, "    ... and {} more", self.bad - self.bad_rows.len() as u64)?;
        }
        Ok(())
    }
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "imported {} movies and {} people", self.stats.movies, self.stats.people)?;
        for file in &self.files {
            write!(f, "{file}")?;
        }
        Ok(())
    }
}

/// Imports the dataset in `dir` into `sink`.
pub fn import(
    dir: &Path,
    mut sink: Box<dyn CatalogSink>,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImportReport, StoreError> {
    let basics_path = find(dir, "title.basics")?;
    let names_path = find(dir, "name.basics")?;
    let principals_path = find(dir, "title.principals").ok();
    let ratings_path = find(dir, "title.ratings").ok();
    let mut report = ImportReport::default();

    let mut ratings = HashMap::new();
    if let Some(path) = &ratings_path {
        progress(Progress::Phase { name: "title.ratings", total: 0 });
        let mut file = TsvFile::open(path, RATINGS_HEADER)?;
        while let Some(line) = file.next_line()? {
            match parse_rating(line) {
                Ok((id, rating)) => {
                    ratings.insert(id, rating);
                    file.report.imported += 1;
                }
                Err(reason) => file.bad(reason),
            }
        }
        report.files.push(file.report);
    }

    progress(Progress::Phase { name: "title.basics + title.principals", total: 0 });
    let mut basics = TsvFile::open(&basics_path, BASICS_HEADER)?;
    let mut principals =
        principals_path.as_deref().map(|p| TsvFile::open(p, PRINCIPALS_HEADER)).transpose()?;
    let mut pending: Option<(MovieId, PrincipalRow)> = None;
    let mut last_principal = 0u64;
    let mut credit_counts: HashMap<u64, u32> = HashMap::new();
    let mut last_movie = 0u64;
    while let Some(line) = basics.next_line()? {
        let movie = match parse_basics(line) {
            Ok(Some(movie)) => movie,
            Ok(None) => {
                basics.report.ignored += 1;
                continue;
            }
            Err(reason) => {
                basics.bad(reason);
                continue;
            }
        };
        if movie.id.0 <= last_movie {
            basics.bad(format!(
                "{} is out of order or repeated; title.basics must be sorted by tconst",
                movie.id
            ));
            continue;
        }
        last_movie = movie.id.0;
        let mut movie = movie;
        if let Some(&(average, count)) = ratings.get(&movie.id.0) {
            movie.rating = RatingSummary { average, count };
            movie.popularity = (count as f32).sqrt();
        }
        // Merge-join: consume principals up to and including this movie.
        let mut rows: Vec<PrincipalRow> = Vec::new();
        if let Some(file) = principals.as_mut() {
            loop {
                let (id, row) = match pending.take() {
                    Some(p) => p,
                    None => match file.next_line()? {
                        None => break,
                        Some(line) => match parse_principal(line) {
                            Ok(p) if p.0.0 < last_principal => {
                                file.bad(format!(
                                    "{} is out of order; title.principals must be sorted by tconst",
                                    p.0
                                ));
                                continue;
                            }
                            Ok(p) => {
                                last_principal = p.0.0;
                                p
                            }
                            Err(reason) => {
                                file.bad(reason);
                                continue;
                            }
                        },
                    },
                };
                if id.0 < movie.id.0 {
                    file.report.ignored += 1;
                } else if id == movie.id {
                    file.report.imported += 1;
                    rows.push(row);
                } else {
                    pending = Some((id, row));
                    break;
                }
            }
        }
        rows.sort_by_key(|r| (r.credit.department != Department::Acting, r.ordering));
        let credits: Vec<Credit> = rows.into_iter().map(|r| r.credit).collect();
        let record = MovieRecord { movie, credits };
        // The rules every way into the catalog applies (deltas and editors too).
        if let Err(reason) = record.check() {
            basics.bad(format!("{}: {reason}", record.movie.id));
            continue;
        }
        for credit in &record.credits {
            *credit_counts.entry(credit.person.0).or_default() += 1;
        }
        sink.put_movie(&record)?;
        basics.report.imported += 1;
        if basics.report.imported % 10_000 == 0 {
            progress(Progress::Advance { done: basics.report.imported });
        }
    }
    progress(Progress::Advance { done: basics.report.imported });
    report.files.push(basics.report);
    if let Some(mut file) = principals {
        if pending.take().is_some() {
            file.report.ignored += 1;
        }
        while let Some(line) = file.next_line()? {
            match parse_principal(line) {
                Ok(_) => file.report.ignored += 1,
                Err(reason) => file.bad(reason),
            }
        }
        report.files.push(file.report);
    }

    progress(Progress::Phase { name: "name.basics", total: credit_counts.len() as u64 });
    let mut names = TsvFile::open(&names_path, NAMES_HEADER)?;
    while let Some(line) = names.next_line()? {
        match parse_name(line).and_then(|p| p.check().map(|()| p)) {
            Ok(mut person) => match credit_counts.remove(&person.id.0) {
                Some(credits) => {
                    person.popularity = credits as f32;
                    sink.put_person(&person)?;
                    names.report.imported += 1;
                }
                None => names.report.ignored += 1,
            },
            Err(reason) => names.bad(reason),
        }
    }
    progress(Progress::Advance { done: names.report.imported });
    report.files.push(names.report);
    if !credit_counts.is_empty() {
        tracing::warn!(
            people = credit_counts.len(),
            "credited people missing from name.basics; their credits stay but show no person"
        );
    }
    progress(Progress::Phase { name: "indexes", total: 0 });
    report.stats = sink.finish()?;
    Ok(report)
}

/// The file of a delta listing removed ids (`tt…` titles, `nm…` people), one per line.
pub const REMOVED_FILE: &str = "removed.tsv";
const REMOVED_HEADER: &str = "id";

/// A delta in IMDb's format, read whole (see [`read_delta`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Delta {
    /// Titles replaced whole, in id order: fields from `title.basics`, credits from the
    /// delta's `title.principals` rows of the title (none: no credits), rating from its
    /// `title.ratings` row (none: unrated). Person popularity is left at 0 (see `people`).
    pub movies: Vec<MovieRecord>,
    /// Titles whose `title.basics` row is no longer a movie (reclassified): removed if the
    /// catalog has them.
    pub not_movies: Vec<MovieId>,
    /// People replaced whole from `name.basics`; `popularity` is 0 here, for the applier to
    /// keep the stored one or count the delta's credits of a new person.
    pub people: Vec<Person>,
    /// Ids listed in `removed.tsv`.
    pub removed_movies: Vec<MovieId>,
    /// People listed in `removed.tsv`.
    pub removed_people: Vec<PersonId>,
    /// Rows read, skipped and why, per file.
    pub report: ImportReport,
}

/// Reads a delta: the IMDb files holding only the rows of what changed (every file optional
/// except that there must be at least one), plus [`REMOVED_FILE`]. A title named in the
/// delta's `title.basics` is replaced whole; a title with rows only in `title.principals` or
/// `title.ratings` is refused (its row, counted bad), since the delta would not say what the
/// rest of it is. Bad rows are skipped, counted and listed as in [`import`].
pub fn read_delta(dir: &Path) -> Result<Delta, StoreError> {
    let basics_path = find(dir, "title.basics").ok();
    let names_path = find(dir, "name.basics").ok();
    let principals_path = find(dir, "title.principals").ok();
    let ratings_path = find(dir, "title.ratings").ok();
    let removed_path = Some(dir.join(REMOVED_FILE)).filter(|p| p.is_file());
    if [&basics_path, &names_path, &principals_path, &ratings_path, &removed_path].iter().all(|p| p.is_none())
    {
        return Err(StoreError::InvalidInput(format!(
            "{} holds no delta: none of title.basics, title.principals, title.ratings, name.basics (.tsv or .tsv.gz) or {REMOVED_FILE}",
            dir.display()
        )));
    }
    let mut delta = Delta::default();
    let mut titles: std::collections::BTreeMap<MovieId, Movie> = std::collections::BTreeMap::new();
    let mut not_movies: std::collections::HashSet<MovieId> = std::collections::HashSet::new();
    if let Some(path) = &basics_path {
        let mut file = TsvFile::open(path, BASICS_HEADER)?;
        while let Some(line) = file.next_line()? {
            match parse_basics_row(line) {
                Ok((id, Some(movie))) => {
                    match (MovieRecord { movie: movie.clone(), credits: Vec::new() }).check() {
                        Ok(()) if titles.contains_key(&id) => file.bad(format!("{id} is listed twice")),
                        Ok(()) => {
                            titles.insert(id, movie);
                            file.report.imported += 1;
                        }
                        Err(reason) => file.bad(format!("{id}: {reason}")),
                    }
                }
                Ok((id, None)) => {
                    if not_movies.insert(id) {
                        delta.not_movies.push(id);
                    }
                    file.report.imported += 1;
                }
                Err(reason) => file.bad(reason),
            }
        }
        delta.report.files.push(file.report);
    }
    if let Some(path) = &ratings_path {
        let mut file = TsvFile::open(path, RATINGS_HEADER)?;
        while let Some(line) = file.next_line()? {
            match parse_rating(line) {
                Ok((id, (average, count))) => match titles.get_mut(&MovieId(id)) {
                    Some(movie) => {
                        movie.rating = RatingSummary { average, count };
                        movie.popularity = (count as f32).sqrt();
                        file.report.imported += 1;
                    }
                    // Votes of a title that is not a movie (an episode, a series): not ours.
                    None if not_movies.contains(&MovieId(id)) => file.report.ignored += 1,
                    None => file.bad(format!("{} has no row in the delta's title.basics", MovieId(id))),
                },
                Err(reason) => file.bad(reason),
            }
        }
        delta.report.files.push(file.report);
    }
    let mut credits: std::collections::BTreeMap<MovieId, Vec<PrincipalRow>> =
        std::collections::BTreeMap::new();
    if let Some(path) = &principals_path {
        let mut file = TsvFile::open(path, PRINCIPALS_HEADER)?;
        while let Some(line) = file.next_line()? {
            match parse_principal(line) {
                Ok((id, row)) if titles.contains_key(&id) => {
                    credits.entry(id).or_default().push(row);
                    file.report.imported += 1;
                }
                Ok((id, _)) if not_movies.contains(&id) => file.report.ignored += 1,
                Ok((id, _)) => file.bad(format!("{id} has no row in the delta's title.basics")),
                Err(reason) => file.bad(reason),
            }
        }
        delta.report.files.push(file.report);
    }
    for (id, movie) in titles {
        let mut rows = credits.remove(&id).unwrap_or_default();
        rows.sort_by_key(|r| (r.credit.department != Department::Acting, r.ordering));
        let record = MovieRecord { movie, credits: rows.into_iter().map(|r| r.credit).collect() };
        match record.check() {
            Ok(()) => delta.movies.push(record),
            // Its fields passed with its basics row: what is wrong is in its credits.
            Err(reason) => {
                if let Some(file) =
                    delta.report.files.iter_mut().find(|f| f.file.starts_with("title.principals"))
                {
                    file.bad(0, format!("{id}'s credits as a whole: {reason}"));
                }
            }
        }
    }
    if let Some(path) = &names_path {
        let mut file = TsvFile::open(path, NAMES_HEADER)?;
        let mut seen = std::collections::HashSet::new();
        while let Some(line) = file.next_line()? {
            match parse_name(line).and_then(|p| p.check().map(|()| p)) {
                Ok(person) if !seen.insert(person.id) => file.bad(format!("{} is listed twice", person.id)),
                Ok(person) => {
                    delta.people.push(person);
                    file.report.imported += 1;
                }
                Err(reason) => file.bad(reason),
            }
        }
        delta.report.files.push(file.report);
    }
    if let Some(path) = &removed_path {
        let mut file = TsvFile::open(path, REMOVED_HEADER)?;
        while let Some(line) = file.next_line()? {
            let id = line.trim().to_owned();
            if let Ok(movie) = id.parse::<MovieId>() {
                delta.removed_movies.push(movie);
                file.report.imported += 1;
            } else if let Ok(person) = id.parse::<PersonId>() {
                delta.removed_people.push(person);
                file.report.imported += 1;
            } else {
                file.bad(format!(
                    "`{}` is neither a title id nor a name id",
                    id.chars().take(40).collect::<String>()
                ));
            }
        }
        delta.report.files.push(file.report);
    }
    // A title both changed and removed is removed (and never shows in between); so is a
    // person.
    let removed: std::collections::HashSet<MovieId> = delta.removed_movies.iter().copied().collect();
    delta.movies.retain(|r| !removed.contains(&r.movie.id));
    delta.not_movies.retain(|id| !removed.contains(id));
    let gone: std::collections::HashSet<PersonId> = delta.removed_people.iter().copied().collect();
    delta.people.retain(|p| !gone.contains(&p.id));
    Ok(delta)
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf, StoreError> {
    for name in [format!("{stem}.tsv"), format!("{stem}.tsv.gz")] {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(StoreError::InvalidInput(format!("{} has no {stem}.tsv or {stem}.tsv.gz", dir.display())))
}

/// A TSV file read line by line, tracking line numbers and the file's report.
struct TsvFile {
    reader: Box<dyn BufRead>,
    path: PathBuf,
    line: String,
    number: u64,
    report: FileReport,
}

impl TsvFile {
    fn open(path: &Path, header: &str) -> Result<TsvFile, StoreError> {
        let file = File::open(path).map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
        let raw: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(flate2::read::MultiGzDecoder::new(file))
        } else {
            Box::new(file)
        };
        let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let mut tsv = TsvFile {
            reader: Box::new(BufReader::with_capacity(1 << 20, raw)),
            path: path.to_owned(),
            line: String::new(),
            number: 0,
            report: FileReport { file: name, ..FileReport::default() },
        };
        match tsv.read()? {
            Some(true) if tsv.line.trim_end_matches(['\r', '\n']) == header => Ok(tsv),
            _ => Err(StoreError::InvalidInput(format!(
                "{} does not start with the IMDb header `{}`",
                path.display(),
                header.replace('\t', "\\t")
            ))),
        }
    }

    /// Reads the next line into `self.line`; `Ok(None)` at the end, `Ok(Some(false))` for a
    /// line that is not UTF-8.
    fn read(&mut self) -> Result<Option<bool>, StoreError> {
        self.line.clear();
        let mut bytes = std::mem::take(&mut self.line).into_bytes();
        let n = self
            .reader
            .read_until(b'\n', &mut bytes)
            .map_err(|e| StoreError::io(format!("reading {}", self.path.display()), e))?;
        if n == 0 {
            return Ok(None);
        }
        self.number += 1;
        match String::from_utf8(bytes) {
            Ok(line) => {
                self.line = line;
                Ok(Some(true))
            }
            Err(_) => Ok(Some(false)),
        }
    }

    /// The next data line without its line ending; `None` at the end.
    fn next_line(&mut self) -> Result<Option<&str>, StoreError> {
        loop {
            let Some(utf8) = self.read()? else { return Ok(None) };
            self.report.rows += 1;
            if !utf8 {
                let number = self.number;
                self.report.bad(number, "not valid UTF-8");
                continue;
            }
            let line = self.line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                let number = self.number;
                self.report.bad(number, "empty line");
                continue;
            }
            return Ok(Some(self.line.trim_end_matches(['\r', '\n'])));
        }
    }

    fn bad(&mut self, reason: impl Into<String>) {
        let number = self.number;
        self.report.bad(number, reason);
    }
}

fn fields<const N: usize>(line: &str) -> Result<[&str; N], String> {
    let parts: Vec<&str> = line.split('\t').collect();
    parts
        .try_into()
        .map_err(|parts: Vec<&str>| format!("expected {N} tab-separated fields, found {}", parts.len()))
}

fn null(field: &str) -> Option<&str> {
    (field != "\\N" && !field.is_empty()).then_some(field)
}

fn number<T: std::str::FromStr>(field: &str, name: &str) -> Result<Option<T>, String> {
    null(field).map(|v| v.parse().map_err(|_| format!("{name} `{v}` is not a number"))).transpose()
}

fn year(field: &str, name: &str) -> Result<Option<u16>, String> {
    match number::<u16>(field, name)? {
        Some(y) if !(1800..=2200).contains(&y) => Err(format!("{name} {y} is out of range")),
        y => Ok(y),
    }
}

/// A birth or death year: any year that has been (see [`crate::model::check_person_year`]).
fn person_year(field: &str, name: &str) -> Result<Option<u16>, String> {
    let year = number::<u16>(field, name)?;
    if let Some(y) = year {
        crate::model::check_person_year(name, y)?;
    }
    Ok(year)
}

fn parse_rating(line: &str) -> Result<(u64, (f32, u32)), String> {
    let [id, average, votes] = fields::<3>(line)?;
    let id: MovieId = id.parse().map_err(|_| format!("`{id}` is not a title id"))?;
    let average: f32 = number(average, "averageRating")?.ok_or("averageRating is missing")?;
    if !(0.0..=10.0).contains(&average) {
        return Err(format!("averageRating {average} is outside 0-10"));
    }
    let votes: u32 = number(votes, "numVotes")?.ok_or("numVotes is missing")?;
    Ok((id.0, (average, votes)))
}

fn parse_basics(line: &str) -> Result<Option<Movie>, String> {
    parse_basics_row(line).map(|(_, movie)| movie)
}

/// A `title.basics` row: its id, and the movie (`None` for a title that is not a movie).
fn parse_basics_row(line: &str) -> Result<(MovieId, Option<Movie>), String> {
    let [id, kind, title, original, _adult, start, _end, runtime, genres] = fields::<9>(line)?;
    let id: MovieId = id.parse().map_err(|_| format!("`{id}` is not a title id"))?;
    if !MOVIE_TYPES.contains(&kind) {
        return Ok((id, None));
    }
    let title = null(title).ok_or("primaryTitle is missing")?.to_owned();
    let year = year(start, "startYear")?;
    let runtime_minutes = number::<u16>(runtime, "runtimeMinutes")?;
    let mut listed: Vec<Genre> = Vec::new();
    for name in null(genres).map(|g| g.split(',')).into_iter().flatten() {
        let genre = Genre::from_name(name).ok_or_else(|| format!("unknown genre `{name}`"))?;
        // Genre names match without case: a genre listed twice is listed once.
        if !listed.contains(&genre) {
            listed.push(genre);
        }
    }
    let genres = listed;
    let original_title = null(original).filter(|o| *o != title).map(str::to_owned);
    Ok((
        id,
        Some(Movie {
            id,
            title,
            original_title,
            year,
            release_date: None,
            runtime_minutes,
            genres,
            overview: None,
            original_language: None,
            poster_path: None,
            popularity: 0.0,
            rating: RatingSummary::default(),
        }),
    ))
}

struct PrincipalRow {
    ordering: u32,
    credit: Credit,
}

fn parse_principal(line: &str) -> Result<(MovieId, PrincipalRow), String> {
    let [id, ordering, person, category, job, characters] = fields::<6>(line)?;
    let id: MovieId = id.parse().map_err(|_| format!("`{id}` is not a title id"))?;
    let ordering: u32 = number(ordering, "ordering")?.ok_or("ordering is missing")?;
    let person: PersonId = person.parse().map_err(|_| format!("`{person}` is not a name id"))?;
    let job = null(job);
    let (department, default_job) = match category {
        "actor" | "actress" | "self" => (Department::Acting, ""),
        "director" => (Department::Directing, "Director"),
        "writer" => (Department::Writing, "Writer"),
        "producer" => (Department::Production, "Producer"),
        "composer" => (Department::Sound, "Original Music Composer"),
        "cinematographer" => (Department::Camera, "Director of Photography"),
        "editor" => (Department::Editing, "Editor"),
        "production_designer" => (Department::Art, "Production Design"),
        "" | "\\N" => return Err("category is missing".into()),
        other => (Department::Crew, other),
    };
    let role = if department == Department::Acting {
        null(characters).map(first_character).transpose()?.unwrap_or_default()
    } else {
        job_title(job.unwrap_or(default_job))
    };
    Ok((id, PrincipalRow { ordering, credit: Credit { person, department, role } }))
}

/// A crew job in the one casing clients see for every job, the one the catalog's own job
/// names use (`Director of Photography`): IMDb gives jobs in lower case (`executive
/// producer`, `screenplay by`) or only as a category (`casting_director`), so words are
/// capitalised, underscores become spaces and the small words after the first stay lower
/// case (`Based on the Novel by`).
fn job_title(job: &str) -> String {
    const SMALL: [&str; 12] = ["a", "an", "and", "as", "at", "by", "for", "from", "in", "of", "on", "the"];
    let mut title = String::with_capacity(job.len());
    for (i, word) in job.split(|c: char| c == '_' || c.is_whitespace()).filter(|w| !w.is_empty()).enumerate()
    {
        if i > 0 {
            title.push(' ');
        }
        let lower = word.to_lowercase();
        if i > 0 && SMALL.contains(&lower.as_str()) {
            title.push_str(&lower);
            continue;
        }
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            title.extend(first.to_uppercase());
            // The rest as given: `DJ`, `McCoy` and `3D` keep theirs.
            title.push_str(chars.as_str());
        }
    }
    title
}

/// The first name in IMDb's `characters` field, a JSON array of strings (`["Andy Dufresne"]`).
fn first_character(field: &str) -> Result<String, String> {
    let inner = field
        .strip_prefix('[')
        .and_then(|f| f.strip_suffix(']'))
        .ok_or_else(|| format!("characters `{field}` is not a list"))?;
    let inner = inner.trim();
    let Some(rest) = inner.strip_prefix('"') else {
        return if inner.is_empty() {
            Ok(String::new())
        } else {
            Err(format!("characters `{field}` is not a list of strings"))
        };
    };
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Ok(out),
            '\\' => match chars.next() {
                Some('n') => out.push(' '),
                Some(escaped) => out.push(escaped),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(format!("characters `{field}` has an unterminated string"))
}

fn parse_name(line: &str) -> Result<Person, String> {
    let [id, name, birth, death, professions, _known_for] = fields::<6>(line)?;
    let id: PersonId = id.parse().map_err(|_| format!("`{id}` is not a name id"))?;
    let name = null(name).ok_or("primaryName is missing")?.to_owned();
    let birth_year = person_year(birth, "birthYear")?;
    let death_year = person_year(death, "deathYear")?;
    if let (Some(b), Some(d)) = (birth_year, death_year)
        && d < b
    {
        return Err(format!("deathYear {d} is before birthYear {b}"));
    }
    let known_for_department = null(professions).and_then(|p| {
        p.split(',').find_map(|p| match p {
            "actor" | "actress" | "self" => Some(Department::Acting),
            "director" => Some(Department::Directing),
            "writer" => Some(Department::Writing),
            "producer" => Some(Department::Production),
            "composer" | "music_department" | "sound_department" => Some(Department::Sound),
            "cinematographer" | "camera_department" => Some(Department::Camera),
            "editor" | "editorial_department" => Some(Department::Editing),
            "production_designer" | "art_director" | "art_department" => Some(Department::Art),
            _ => None,
        })
    });
    Ok(Person { id, name, birth_year, death_year, known_for_department, popularity: 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_field_is_parsed() {
        assert_eq!(first_character(r#"["Andy Dufresne"]"#).as_deref(), Ok("Andy Dufresne"));
        assert_eq!(
            first_character(r#"["Ellis Boyd \"Red\" Redding","Narrator"]"#).as_deref(),
            Ok("Ellis Boyd \"Red\" Redding")
        );
        assert_eq!(first_character("[]").as_deref(), Ok(""));
        assert!(first_character("Andy").is_err());
        assert!(first_character(r#"["open"#).is_err());
    }

    #[test]
    fn crew_jobs_come_in_one_casing() {
        let role = |line: &str| parse_principal(line).expect("valid").1.credit.role;
        assert_eq!(role("tt1\t1\tnm1\tdirector\t\\N\t\\N"), "Director");
        assert_eq!(role("tt1\t2\tnm2\tproducer\texecutive producer\t\\N"), "Executive Producer");
        assert_eq!(role("tt1\t3\tnm3\twriter\tbased on the novel by\t\\N"), "Based on the Novel by");
        assert_eq!(role("tt1\t4\tnm4\tcasting_director\t\\N\t\\N"), "Casting Director");
        assert_eq!(
            role("tt1\t5\tnm5\tcinematographer\tdirector of photography\t\\N"),
            "Director of Photography"
        );
        assert_eq!(role("tt1\t6\tnm6\tcomposer\t\\N\t\\N"), "Original Music Composer");
        assert_eq!(role("tt1\t7\tnm7\tproducer\tDJ  and 3D producer\t\\N"), "DJ and 3D Producer");
        assert_eq!(role("tt1\t8\tnm8\tactor\t\\N\t[\"Andy\"]"), "Andy", "a character keeps its own");
    }

    #[test]
    fn date_free_basics_rows_parse() {
        let movie = parse_basics(
            "tt0111161\tmovie\tThe Shawshank Redemption\tThe Shawshank Redemption\t0\t1994\t\\N\t142\tDrama",
        )
        .expect("valid")
        .expect("a movie");
        assert_eq!(movie.year, Some(1994));
        assert_eq!(movie.original_title, None);
        assert!(movie.release_date.is_none());
        assert!(parse_basics("tt1\ttvSeries\tX\tX\t0\t1994\t\\N\t\\N\tDrama").expect("valid").is_none());
        assert!(parse_basics("tt1\tmovie\tX\tX\t0\tabcd\t\\N\t\\N\tDrama").is_err());
        assert!(parse_basics("tt1\tmovie\tX").is_err());
    }
}
