//! The root `Mutation` type: a signed-in user's ratings and watchlist, and editors'
//! corrections to the catalog (`crate::editing`). Every mutation needs a user token, validates its input before writing, and returns only after the store has made
//! the write durable and the caches in front of it have dropped what it changed (the store
//! stack's user-data decorator does that, `gateway/src/store/`). Mutations run over POST only
//! (the HTTP stage refuses them over GET).

use async_graphql::{Context, ID, MergedObject, Object};
use marquee_store::{MovieId, SCORES};

use crate::context::{signed_in, store};
use crate::editing::EditorMutation;
use crate::error::ApiError;
use crate::types::{UserRatingObject, WatchlistEntryObject};

/// Every mutation: a signed-in user's own writes, and editors' corrections.
#[derive(MergedObject, Default)]
pub struct Mutation(UserMutation, EditorMutation);

/// A signed-in user's writes.
#[derive(Default)]
pub(crate) struct UserMutation;

#[Object]
impl UserMutation {
    /// Rates a movie 1-10. Rating it again replaces the earlier score (it is never counted
    /// twice). The movie's public rating summary follows within its cache lifetime.
    #[graphql(cache_control(private))]
    async fn rate_movie(
        &self,
        ctx: &Context<'_>,
        movie_id: ID,
        score: i32,
    ) -> async_graphql::Result<UserRatingObject> {
        crate::error::resolve(async move {
            let user = signed_in(ctx, "`rateMovie`")?;
            let movie: MovieId = movie_id.parse()?;
            let score = u8::try_from(score).ok().filter(|s| SCORES.contains(s)).ok_or_else(|| {
                ApiError::BadUserInput(format!(
                    "`score` must be {} to {}, got {score}",
                    SCORES.start(),
                    SCORES.end()
                ))
            })?;
            Ok(UserRatingObject(store(ctx).users.rate(&user, movie, score).await?))
        })
        .await
    }

    /// Removes the caller's rating of a movie; false if there was none.
    #[graphql(cache_control(private))]
    async fn delete_rating(&self, ctx: &Context<'_>, movie_id: ID) -> async_graphql::Result<bool> {
        crate::error::resolve(async move {
            let user = signed_in(ctx, "`deleteRating`")?;
            let movie: MovieId = movie_id.parse()?;
            Ok(store(ctx).users.delete_rating(&user, movie).await?)
        })
        .await
    }

    /// Adds a movie to the caller's watchlist (adding it again keeps the original entry).
    #[graphql(cache_control(private))]
    async fn add_to_watchlist(
        &self,
        ctx: &Context<'_>,
        movie_id: ID,
    ) -> async_graphql::Result<WatchlistEntryObject> {
        crate::error::resolve(async move {
            let user = signed_in(ctx, "`addToWatchlist`")?;
            let movie: MovieId = movie_id.parse()?;
            Ok(WatchlistEntryObject(store(ctx).users.add_to_watchlist(&user, movie).await?))
        })
        .await
    }

    /// Removes a movie from the caller's watchlist; false if it was not there.
    #[graphql(cache_control(private))]
    async fn remove_from_watchlist(&self, ctx: &Context<'_>, movie_id: ID) -> async_graphql::Result<bool> {
        crate::error::resolve(async move {
            let user = signed_in(ctx, "`removeFromWatchlist`")?;
            let movie: MovieId = movie_id.parse()?;
            Ok(store(ctx).users.remove_from_watchlist(&user, movie).await?)
        })
        .await
    }
}
