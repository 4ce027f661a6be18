//! Editors' corrections: `updateMovie`, `updatePerson`, `removeMovie`. Each needs a token
//! whose `role` claim is `editor` (`FORBIDDEN` for any other signed-in caller,
//! `UNAUTHENTICATED` without one), patches the record as stored now (read from the backend,
//! not a cache, so two editors never undo each other through a stale copy), and applies it
//! through the store's catalog writes: validated as strictly as an import row, durable with
//! an audit record naming the editor before it returns, and dropped from every cache the
//! change made stale (the store stack's catalog-writes decorator, `gateway/src/store/`).

use std::sync::Arc;

use async_graphql::{Context, ID, InputObject, MaybeUndefined, Object};
use marquee_store::writes::Base;
use marquee_store::{
    CatalogChanges, Credit, Date, Department, Edit, Genre, MAX_CREDITS, MovieId, MovieRecord, Person,
    PersonId, Store, StoreError,
};

use crate::context::{editor, store};
use crate::error::ApiError;
use crate::types::{DepartmentEnum, MovieObject, PersonObject};

/// Changes to a movie. Fields left out keep their value; a nullable field set to `null` is
/// cleared.
#[derive(InputObject)]
pub(crate) struct MovieInput {
    /// Display title.
    title: Option<String>,
    /// Title in the original language.
    original_title: MaybeUndefined<String>,
    /// Release year.
    year: MaybeUndefined<i32>,
    /// Full release date, `YYYY-MM-DD` (in `year`).
    release_date: MaybeUndefined<String>,
    /// Runtime in minutes.
    runtime_minutes: MaybeUndefined<i32>,
    /// Genre names from the `genres` query, most important first (at most 3).
    genres: Option<Vec<String>>,
    /// A short synopsis.
    overview: MaybeUndefined<String>,
    /// ISO 639-1 code of the original language.
    original_language: MaybeUndefined<String>,
    /// Poster image path, relative to the image base URL.
    poster_path: MaybeUndefined<String>,
    /// The complete credits, cast in billing order first: replaces the movie's credits.
    credits: Option<Vec<CreditInput>>,
}

/// One credit of a movie.
#[derive(InputObject, Clone)]
pub(crate) struct CreditInput {
    /// Who (a person in the catalog).
    person_id: ID,
    /// `ACTING` for cast, anything else for crew.
    department: DepartmentEnum,
    /// The character played, or the job done.
    role: String,
}

/// Changes to a person. Fields left out keep their value; a nullable field set to `null` is
/// cleared.
#[derive(InputObject)]
pub(crate) struct PersonInput {
    /// Display name.
    name: Option<String>,
    /// Year of birth.
    birth_year: MaybeUndefined<i32>,
    /// Year of death.
    death_year: MaybeUndefined<i32>,
    /// What the person is best known for.
    known_for_department: MaybeUndefined<DepartmentEnum>,
}

/// Applies `patch` to `field`: absent keeps it, `null` clears it, a value replaces it.
fn patch<T, U>(
    field: &mut Option<T>,
    patch: MaybeUndefined<U>,
    convert: impl FnOnce(U) -> Result<T, ApiError>,
) -> Result<(), ApiError> {
    match patch {
        MaybeUndefined::Undefined => {}
        MaybeUndefined::Null => *field = None,
        MaybeUndefined::Value(value) => *field = Some(convert(value)?),
    }
    Ok(())
}

fn small(name: &'static str) -> impl Fn(i32) -> Result<u16, ApiError> {
    move |value| {
        u16::try_from(value)
            .map_err(|_| ApiError::BadUserInput(format!("`{name}` must be between 0 and 65535, got {value}")))
    }
}

fn date(text: String) -> Result<Date, ApiError> {
    let parts: Vec<&str> = text.split('-').collect();
    let parsed = match parts.as_slice() {
        [y, m, d] if y.len() == 4 && m.len() == 2 && d.len() == 2 => {
            match (y.parse::<u16>(), m.parse::<u8>(), d.parse::<u8>()) {
                (Ok(y), Ok(m), Ok(d)) => Date::new(y, m, d),
                _ => None,
            }
        }
        _ => None,
    };
    parsed.ok_or_else(|| {
        ApiError::BadUserInput(format!(
            "`releaseDate` must be a calendar date written YYYY-MM-DD, got `{}`",
            text.chars().take(40).collect::<String>()
        ))
    })
}

impl MovieInput {
    /// `record` with these changes.
    fn apply_to(&self, mut record: MovieRecord) -> Result<MovieRecord, ApiError> {
        let movie = &mut record.movie;
        if let Some(title) = &self.title {
            movie.title.clone_from(title);
        }
        patch(&mut movie.original_title, self.original_title.clone(), Ok)?;
        patch(&mut movie.year, self.year, small("year"))?;
        patch(&mut movie.release_date, self.release_date.clone(), date)?;
        patch(&mut movie.runtime_minutes, self.runtime_minutes, small("runtimeMinutes"))?;
        if let Some(genres) = &self.genres {
            movie.genres = genres
                .iter()
                .map(|name| {
                    Genre::from_name(name).ok_or_else(|| {
                        ApiError::BadUserInput(format!(
                            "unknown genre `{}`; the `genres` query lists them",
                            name.chars().take(40).collect::<String>()
                        ))
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        patch(&mut movie.overview, self.overview.clone(), Ok)?;
        patch(&mut movie.original_language, self.original_language.clone(), Ok)?;
        patch(&mut movie.poster_path, self.poster_path.clone(), Ok)?;
        if let Some(credits) = &self.credits {
            let mut parsed: Vec<Credit> = credits
                .iter()
                .map(|c| {
                    Ok(Credit {
                        person: c.person_id.parse::<PersonId>()?,
                        department: Department::from(c.department),
                        role: c.role.clone(),
                    })
                })
                .collect::<Result<_, ApiError>>()?;
            // Cast first, each side in the order given (the stored order).
            parsed.sort_by_key(|c| !c.is_cast());
            record.credits = parsed;
        }
        Ok(record)
    }
}

impl PersonInput {
    /// `person` with these changes.
    fn apply_to(&self, mut person: Person) -> Result<Person, ApiError> {
        if let Some(name) = &self.name {
            person.name.clone_from(name);
        }
        patch(&mut person.birth_year, self.birth_year, small("birthYear"))?;
        patch(&mut person.death_year, self.death_year, small("deathYear"))?;
        patch(&mut person.known_for_department, self.known_for_department, |d| Ok(Department::from(d)))?;
        Ok(person)
    }
}

/// How many times an editor's change is derived again after another editor's went first.
const ATTEMPTS: u32 = 3;

/// Reads, patches and applies through `derive` (which returns the changes, based on what it
/// read, and the result), deriving again when another writer changed the record in between.
async fn patched<T, F, Fut>(store: &Store, edit: Edit, mut derive: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(CatalogChanges, T), ApiError>>,
{
    let mut attempt = 1;
    loop {
        let (changes, result) = derive().await?;
        match store.edits.apply(changes, edit.clone()).await {
            Ok(_) => return Ok(result),
            Err(StoreError::Conflict(_)) if attempt < ATTEMPTS => attempt += 1,
            Err(error) => return Err(error.into()),
        }
    }
}

fn not_found(kind: &'static str, id: impl ToString) -> ApiError {
    ApiError::from(StoreError::NotFound { kind, id: id.to_string() })
}

/// Editors' mutations (see the module docs).
#[derive(Default)]
pub(crate) struct EditorMutation;

#[Object]
impl EditorMutation {
    /// Corrects a movie (editors only). Returns the movie as stored now; every region's caches
    /// and edges drop their copies within seconds.
    #[graphql(cache_control(private))]
    async fn update_movie(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: MovieInput,
    ) -> async_graphql::Result<MovieObject> {
        crate::error::resolve(async move {
            let editor = editor(ctx, "`updateMovie`")?;
            let id: MovieId = id.parse()?;
            let store = store(ctx);
            if input.credits.as_ref().is_some_and(|c| c.len() > MAX_CREDITS) {
                return Err(ApiError::BadUserInput(format!("a movie lists at most {MAX_CREDITS} credits")));
            }
            let people: Vec<PersonId> = match &input.credits {
                Some(credits) => {
                    credits.iter().map(|c| c.person_id.parse::<PersonId>()).collect::<Result<_, _>>()?
                }
                None => Vec::new(),
            };
            if let Some(unknown) = store
                .catalog
                .people(&people)
                .await?
                .iter()
                .zip(&people)
                .find_map(|(found, id)| found.is_none().then_some(id))
            {
                return Err(ApiError::BadUserInput(format!(
                    "a credit names {unknown}, who is not in the catalog"
                )));
            }
            let edit = Edit { editor, action: "updateMovie".into() };
            let record = patched(store, edit, || async {
                let current = store
                    .edits
                    .records(&[id])
                    .await?
                    .pop()
                    .flatten()
                    .ok_or_else(|| not_found("movie", id))?;
                let record = input.apply_to(current.clone())?;
                let changes = CatalogChanges {
                    movies: vec![record.clone()],
                    based_on: vec![Base::Movie(id, Some(current))],
                    ..CatalogChanges::default()
                };
                Ok((changes, record))
            })
            .await?;
            Ok(MovieObject(Arc::new(record.movie)))
        })
        .await
    }

    /// Corrects a person (editors only). Returns the person as stored now.
    #[graphql(cache_control(private))]
    async fn update_person(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: PersonInput,
    ) -> async_graphql::Result<PersonObject> {
        crate::error::resolve(async move {
            let editor = editor(ctx, "`updatePerson`")?;
            let id: PersonId = id.parse()?;
            let store = store(ctx);
            let edit = Edit { editor, action: "updatePerson".into() };
            let person = patched(store, edit, || async {
                let current = store
                    .edits
                    .person_records(&[id])
                    .await?
                    .pop()
                    .flatten()
                    .ok_or_else(|| not_found("person", id))?;
                let person = input.apply_to(current.clone())?;
                let changes = CatalogChanges {
                    people: vec![person.clone()],
                    based_on: vec![Base::Person(id, Some(current))],
                    ..CatalogChanges::default()
                };
                Ok((changes, person))
            })
            .await?;
            Ok(PersonObject(Arc::new(person)))
        })
        .await
    }

    /// Removes a movie from the catalog (editors only): it leaves `movie`, `movies`, search,
    /// browse and filmographies; watchlists and ratings naming it show a null movie. False
    /// if there was no such movie.
    #[graphql(cache_control(private))]
    async fn remove_movie(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        crate::error::resolve(async move {
            let editor = editor(ctx, "`removeMovie`")?;
            let id: MovieId = id.parse()?;
            let changes = CatalogChanges { removed_movies: vec![id], ..CatalogChanges::default() };
            let applied =
                store(ctx).edits.apply(changes, Edit { editor, action: "removeMovie".into() }).await?;
            Ok(applied.removed_movies.contains(&id))
        })
        .await
    }
}
