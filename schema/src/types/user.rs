//! What a signed-in user owns: their ratings and watchlist, reached through `me` and
//! `Movie.myRating`. Every field here depends on the caller, so the fields that lead here are
//! marked private and a response touching them is never stored by a shared cache.

use std::time::{Duration, UNIX_EPOCH};

use async_graphql::{Context, ID, Object, SimpleObject};
use marquee_store::{MovieId, Page, Rating, UserId, UserPage, WatchlistEntry};

use super::{MovieObject, PageInfo};
use crate::context::{loaders, page_size, store};
use crate::cursor::{self, CursorKind};
use crate::error::ApiError;

/// RFC 3339 UTC timestamp of `ms` since the epoch.
fn timestamp(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

async fn movie(ctx: &Context<'_>, id: MovieId) -> Result<Option<MovieObject>, ApiError> {
    Ok(loaders(ctx)?.movies.load_one(id).await?.map(MovieObject))
}

/// A user's rating of a movie.
pub(crate) struct UserRatingObject(pub(crate) Rating);

/// A signed-in user's rating of a movie.
#[Object(name = "Rating")]
impl UserRatingObject {
    /// The rated movie's id.
    async fn movie_id(&self) -> ID {
        ID(self.0.movie.to_string())
    }

    /// The rated movie.
    async fn movie(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<MovieObject>> {
        crate::error::resolve(movie(ctx, self.0.movie)).await
    }

    /// 1 to 10.
    async fn score(&self) -> i32 {
        i32::from(self.0.score)
    }

    /// When it was given or last changed (RFC 3339, UTC).
    async fn rated_at(&self) -> String {
        timestamp(self.0.rated_at_ms)
    }
}

/// A movie on a user's watchlist.
pub(crate) struct WatchlistEntryObject(pub(crate) WatchlistEntry);

/// A movie on the signed-in user's watchlist.
#[Object(name = "WatchlistEntry")]
impl WatchlistEntryObject {
    /// The movie's id.
    async fn movie_id(&self) -> ID {
        ID(self.0.movie.to_string())
    }

    /// The movie.
    async fn movie(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<MovieObject>> {
        crate::error::resolve(movie(ctx, self.0.movie)).await
    }

    /// When it was added (RFC 3339, UTC).
    async fn added_at(&self) -> String {
        timestamp(self.0.added_at_ms)
    }
}

/// A rating in a page.
#[derive(SimpleObject)]
pub(crate) struct RatingEdge {
    /// Resume after this edge.
    cursor: String,
    /// The rating.
    node: UserRatingObject,
}

/// A page of the user's ratings, most recent first.
#[derive(SimpleObject)]
pub(crate) struct RatingConnection {
    /// Ratings with their cursors.
    edges: Vec<RatingEdge>,
    /// Page position.
    page_info: PageInfo,
}

/// A watchlist entry in a page.
#[derive(SimpleObject)]
pub(crate) struct WatchlistEdge {
    /// Resume after this edge.
    cursor: String,
    /// The entry.
    node: WatchlistEntryObject,
}

/// A page of the user's watchlist, most recently added first.
#[derive(SimpleObject)]
pub(crate) struct WatchlistConnection {
    /// Entries with their cursors.
    edges: Vec<WatchlistEdge>,
    /// Page position.
    page_info: PageInfo,
}

/// The signed-in caller.
pub(crate) struct ViewerObject(pub(crate) UserId);

fn user_page(kind: CursorKind, first: i32, after: Option<&str>) -> Result<UserPage, ApiError> {
    let first = page_size(first)?;
    if first == 0 {
        return Err(ApiError::BadUserInput("`first` must be at least 1".into()));
    }
    Ok(UserPage { first, after: cursor::decode(kind, after)? })
}

fn edges<T, E>(kind: CursorKind, page: Page<T>, edge: impl Fn(String, T) -> E) -> (Vec<E>, PageInfo) {
    let cursors: Vec<String> = page.items.iter().map(|(pos, _)| cursor::encode(kind, *pos)).collect();
    let info = PageInfo::new(&cursors, page.has_next);
    (cursors.into_iter().zip(page.items).map(|(c, (_, item))| edge(c, item)).collect(), info)
}

/// The signed-in user.
#[Object(name = "Viewer")]
impl ViewerObject {
    /// The user's id (their token's subject).
    async fn id(&self) -> ID {
        ID(self.0.as_str().to_owned())
    }

    /// The user's ratings, most recent first.
    async fn ratings(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<RatingConnection> {
        crate::error::resolve(async move {
            let page = user_page(CursorKind::Ratings, first, after.as_deref())?;
            let page = store(ctx).users.ratings_page(&self.0, page).await?;
            let (edges, page_info) = edges(CursorKind::Ratings, page, |cursor, r| RatingEdge {
                cursor,
                node: UserRatingObject(r),
            });
            Ok(RatingConnection { edges, page_info })
        })
        .await
    }

    /// The user's watchlist, most recently added first.
    async fn watchlist(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<WatchlistConnection> {
        crate::error::resolve(async move {
            let page = user_page(CursorKind::Watchlist, first, after.as_deref())?;
            let page = store(ctx).users.watchlist_page(&self.0, page).await?;
            let (edges, page_info) = edges(CursorKind::Watchlist, page, |cursor, e| WatchlistEdge {
                cursor,
                node: WatchlistEntryObject(e),
            });
            Ok(WatchlistConnection { edges, page_info })
        })
        .await
    }
}
