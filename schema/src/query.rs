//! The root `Query` type: entry points into the catalog.

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, Object};
use marquee_store::{BrowseQuery, Genre, MAX_PAGE, MovieId, MovieSort, Page, PersonId, SearchQuery, plan};

use crate::context::{loaders, page_size, signed_in, store};
use crate::cursor::{self, CursorKind};
use crate::error::ApiError;
use crate::shown::Key;
use crate::types::{GenreObject, MovieConnection, MovieObject, PersonObject, ViewerObject};
use crate::types::{MovieEdge, PageInfo};

// The store's `MovieSort` as a GraphQL enum: `remote` makes the compiler keep the two in step.
/// Orders for `browse`.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(name = "MovieSort", remote = "marquee_store::MovieSort")]
pub(crate) enum MovieSortEnum {
    /// Most popular first.
    Popularity,
    /// Best rated first (weighted by the number of ratings).
    Rating,
    /// Newest first.
    ReleaseDate,
}

/// The catalog's entry points.
pub struct Query;

fn parse_ids<T: std::str::FromStr<Err = marquee_store::StoreError>>(ids: &[ID]) -> Result<Vec<T>, ApiError> {
    if ids.len() > MAX_PAGE {
        return Err(ApiError::BadUserInput(format!("at most {MAX_PAGE} ids per request, got {}", ids.len())));
    }
    ids.iter().map(|id| id.parse::<T>().map_err(ApiError::from)).collect()
}

fn year(value: Option<i32>, name: &str) -> Result<Option<u16>, ApiError> {
    value
        .map(|y| {
            u16::try_from(y).ok().filter(|y| (1800..=2200).contains(y)).ok_or_else(|| {
                ApiError::BadUserInput(format!("`{name}` must be a year between 1800 and 2200, got {y}"))
            })
        })
        .transpose()
}

/// Resolves a page of movie ids into a connection with one batched movie load.
async fn movie_connection(
    ctx: &Context<'_>,
    kind: CursorKind,
    page: Page<MovieId>,
) -> Result<MovieConnection, ApiError> {
    let found = loaders(ctx)?.movies.load_many(page.items.iter().map(|(_, id)| *id)).await?;
    let mut cursors = Vec::with_capacity(page.items.len());
    let mut edges = Vec::with_capacity(page.items.len());
    for (pos, id) in &page.items {
        let cursor = cursor::encode(kind, *pos);
        cursors.push(cursor.clone());
        if let Some(movie) = found.get(id) {
            edges.push(MovieEdge { cursor, node: MovieObject(Arc::clone(movie)) });
        }
    }
    Ok(MovieConnection { edges, page_info: PageInfo::new(&cursors, page.has_next) })
}

#[Object]
impl Query {
    /// A movie by id, or null if there is none.
    #[graphql(cache_control(max_age = 3600))]
    async fn movie(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<MovieObject>> {
        crate::error::resolve(async move {
            let id: MovieId = id.parse()?;
            Ok(loaders(ctx)?.movies.load_one(id).await?.map(MovieObject))
        })
        .await
    }

    /// Movies by id, in the order asked, with null for unknown ids (at most 100).
    #[graphql(cache_control(max_age = 3600))]
    async fn movies(
        &self,
        ctx: &Context<'_>,
        ids: Vec<ID>,
    ) -> async_graphql::Result<Vec<Option<MovieObject>>> {
        crate::error::resolve(async move {
            let ids: Vec<MovieId> = parse_ids(&ids)?;
            let found = loaders(ctx)?.movies.load_many(ids.iter().copied()).await?;
            Ok(ids.iter().map(|id| found.get(id).cloned().map(MovieObject)).collect())
        })
        .await
    }

    /// A person by id, or null if there is none.
    #[graphql(cache_control(max_age = 3600))]
    async fn person(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<PersonObject>> {
        crate::error::resolve(async move {
            let id: PersonId = id.parse()?;
            Ok(loaders(ctx)?.people.load_one(id).await?.map(PersonObject))
        })
        .await
    }

    /// People by id, in the order asked, with null for unknown ids (at most 100).
    #[graphql(cache_control(max_age = 3600))]
    async fn people(
        &self,
        ctx: &Context<'_>,
        ids: Vec<ID>,
    ) -> async_graphql::Result<Vec<Option<PersonObject>>> {
        crate::error::resolve(async move {
            let ids: Vec<PersonId> = parse_ids(&ids)?;
            let found = loaders(ctx)?.people.load_many(ids.iter().copied()).await?;
            Ok(ids.iter().map(|id| found.get(id).cloned().map(PersonObject)).collect())
        })
        .await
    }

    /// Title search: every word typed must start a word of the title (case and accents
    /// ignored). Most popular first.
    #[graphql(cache_control(max_age = 300))]
    async fn search(
        &self,
        ctx: &Context<'_>,
        query: String,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<MovieConnection> {
        crate::error::resolve(async move {
            let first = page_size(first)?;
            if query.len() > 200 {
                return Err(ApiError::BadUserInput("`query` may be at most 200 characters".into()));
            }
            let after = cursor::decode(CursorKind::Search, after.as_deref())?;
            let query = SearchQuery { text: query, first, after };
            let page = store(ctx).catalog.search(&query).await?;
            // The partition the search read: a change that moves a movie into or out of it,
            // or within it, names it.
            if let Ok((_, prefix)) = plan::search_plan(&query) {
                loaders(ctx)?.shown.add(Key::Search(prefix));
            }
            movie_connection(ctx, CursorKind::Search, page).await
        })
        .await
    }

    /// Browse the catalog by genre and release years.
    #[allow(clippy::too_many_arguments)]
    #[graphql(cache_control(max_age = 300))]
    async fn browse(
        &self,
        ctx: &Context<'_>,
        genre: Option<String>,
        year_from: Option<i32>,
        year_to: Option<i32>,
        #[graphql(default_with = "MovieSortEnum::Popularity")] sort: MovieSortEnum,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<MovieConnection> {
        crate::error::resolve(async move {
            let first = page_size(first)?;
            let genre = genre
                .map(|name| {
                    Genre::from_name(&name).ok_or_else(|| {
                        ApiError::BadUserInput(format!(
                            "unknown genre `{}`; the `genres` query lists them",
                            name.chars().take(40).collect::<String>()
                        ))
                    })
                })
                .transpose()?;
            let sort = MovieSort::from(sort);
            let kind = CursorKind::Browse(sort.code());
            let after = cursor::decode(kind, after.as_deref())?;
            let query = BrowseQuery {
                genre,
                year_from: year(year_from, "yearFrom")?,
                year_to: year(year_to, "yearTo")?,
                sort,
                first,
                after,
            };
            let page = store(ctx).catalog.browse(&query).await?;
            loaders(ctx)?.shown.add(Key::Browse(genre.map_or(plan::ANY_GENRE, Genre::code)));
            movie_connection(ctx, kind, page).await
        })
        .await
    }

    /// The signed-in caller. Needs a user token (`UNAUTHENTICATED` otherwise); makes the
    /// response private.
    #[graphql(cache_control(private))]
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ViewerObject>> {
        crate::error::resolve(async move { Ok(Some(ViewerObject(signed_in(ctx, "`me`")?))) }).await
    }

    /// Every genre with its movie count.
    #[graphql(cache_control(max_age = 3600))]
    async fn genres(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<GenreObject>> {
        crate::error::resolve(async move {
            loaders(ctx)?.shown.add(Key::Genres);
            Ok(store(ctx).catalog.genres().await?.into_iter().map(GenreObject::from).collect())
        })
        .await
    }
}
