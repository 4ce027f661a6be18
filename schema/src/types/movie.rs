//! The `Movie` and `Genre` types.

use std::sync::Arc;

use async_graphql::{Context, ID, Object, SimpleObject};
use marquee_store::{Credit, GenreCount, Movie, SimilarQuery};

use super::{CreditObject, UserRatingObject};
use crate::context::{loaders, page_size};
use crate::error::ApiError;
use crate::settings::SchemaConfig;

// Users' ratings reach it eventually: at once on the gateway that took the rating, within
// the invalidation bus's delivery on the region's other gateways and the change log's follow
// interval in other regions (plus the backend's own lag), and in HTTP caches as soon as they
// are purged by the movie's surrogate key (`crate::shown`), or else within the response's
// `max-age` (ARCHITECTURE.md, "Consistency").
/// A movie's public rating summary: the catalog's votes plus Marquee users' ratings.
#[derive(SimpleObject)]
pub(crate) struct RatingSummary {
    /// Mean score, 1-10; null when nobody has rated the movie (neither the catalog's voters
    /// nor Marquee's users): an unrated movie has no average, not a score of 0.
    average: Option<f64>,
    /// Number of ratings.
    count: i32,
    /// The vote-weighted rating `browse(sort: RATING)` orders by: the average pulled towards
    /// 6.0 as if by 100 more votes, so a few high scores cannot top the list. The order is the
    /// catalog's as loaded; Marquee users' ratings since then move this value, not the order.
    weighted: f64,
}

/// A genre with the number of movies listing it.
#[derive(SimpleObject)]
#[graphql(name = "Genre")]
pub(crate) struct GenreObject {
    /// Genre name, as accepted by `browse(genre:)`.
    name: String,
    /// Movies listing this genre.
    movie_count: i32,
}

impl From<GenreCount> for GenreObject {
    fn from(g: GenreCount) -> Self {
        GenreObject {
            name: g.genre.name().to_owned(),
            movie_count: i32::try_from(g.movies).unwrap_or(i32::MAX),
        }
    }
}

/// A movie.
pub(crate) struct MovieObject(pub(crate) Arc<Movie>);

impl MovieObject {
    /// Every credit of the movie, cast and crew, in billing order (one batched read).
    async fn credits(&self, ctx: &Context<'_>) -> Result<Arc<Vec<Credit>>, ApiError> {
        Ok(loaders(ctx)?.credits.load_one(self.0.id).await?.unwrap_or_default())
    }
}

/// A movie.
#[Object(name = "Movie")]
impl MovieObject {
    /// Opaque id (IMDb-style, e.g. `tt0111161`).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// Display title.
    async fn title(&self) -> &str {
        &self.0.title
    }

    /// Title in the original language, when it differs.
    async fn original_title(&self) -> Option<&str> {
        self.0.original_title.as_deref()
    }

    /// Release year.
    async fn year(&self) -> Option<i32> {
        self.0.year.map(i32::from)
    }

    /// Release date, `YYYY-MM-DD`.
    async fn release_date(&self) -> Option<String> {
        self.0.release_date.map(|d| d.to_string())
    }

    /// Runtime in minutes.
    async fn runtime_minutes(&self) -> Option<i32> {
        self.0.runtime_minutes.map(i32::from)
    }

    /// Genre names, most important first.
    async fn genres(&self) -> Vec<&'static str> {
        self.0.genres.iter().map(|g| g.name()).collect()
    }

    /// Short synopsis.
    async fn overview(&self) -> Option<&str> {
        self.0.overview.as_deref()
    }

    /// ISO 639-1 code of the original language.
    async fn original_language(&self) -> Option<&str> {
        self.0.original_language.as_deref()
    }

    /// Absolute poster URL.
    async fn poster_url(&self, ctx: &Context<'_>) -> Option<String> {
        let base = ctx.data_opt::<SchemaConfig>().map_or("", |c| c.image_base_url.trim_end_matches('/'));
        self.0.poster_path.as_ref().map(|p| format!("{base}{p}"))
    }

    /// Popularity score; higher is more popular.
    async fn popularity(&self) -> f64 {
        f64::from(self.0.popularity)
    }

    /// Public rating summary.
    async fn rating(&self, ctx: &Context<'_>) -> async_graphql::Result<RatingSummary> {
        crate::error::resolve(async move {
            let users = loaders(ctx)?.rating_totals.load_one(self.0.id).await?.unwrap_or_default();
            let summary = self.0.rating.with(users);
            Ok(RatingSummary {
                average: (summary.count > 0).then(|| (f64::from(summary.average) * 10.0).round() / 10.0),
                count: i32::try_from(summary.count).unwrap_or(i32::MAX),
                weighted: (f64::from(marquee_store::keys::weighted_rating(summary.average, summary.count))
                    * 100.0)
                    .round()
                    / 100.0,
            })
        })
        .await
    }

    /// The signed-in caller's own rating of this movie (null if they have not rated it).
    /// Needs a user token; makes the response private.
    #[graphql(cache_control(private))]
    async fn my_rating(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<UserRatingObject>> {
        crate::error::resolve(async move {
            let loader = loaders(ctx)?.my_ratings.as_ref().ok_or(ApiError::Unauthenticated("`myRating`"))?;
            Ok(loader.load_one(self.0.id).await?.map(UserRatingObject))
        })
        .await
    }

    /// Cast in billing order.
    async fn cast(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 10)] first: i32,
    ) -> async_graphql::Result<Vec<CreditObject>> {
        crate::error::resolve(async move {
            let first = page_size(first)?;
            Ok(self
                .credits(ctx)
                .await?
                .iter()
                .filter(|c| c.is_cast())
                .take(first)
                .enumerate()
                .map(|(i, c)| CreditObject::on_movie(self.0.id, c, Some(i)))
                .collect())
        })
        .await
    }

    /// Crew, optionally only those with `job` (case-insensitive, e.g. `Director`).
    async fn crew(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        job: Option<String>,
    ) -> async_graphql::Result<Vec<CreditObject>> {
        crate::error::resolve(async move {
            let first = page_size(first)?;
            Ok(self
                .credits(ctx)
                .await?
                .iter()
                .filter(|c| !c.is_cast())
                .filter(|c| job.as_deref().is_none_or(|j| c.role.eq_ignore_ascii_case(j)))
                .take(first)
                .map(|c| CreditObject::on_movie(self.0.id, c, None))
                .collect())
        })
        .await
    }

    /// Movies like this one: same primary genre, released around the same time, close in
    /// popularity.
    async fn similar(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 5)] first: i32,
    ) -> async_graphql::Result<Vec<MovieObject>> {
        crate::error::resolve(async move {
            let first = page_size(first)?;
            let loaders = loaders(ctx)?;
            // Drawn from its primary genre's browse partitions: a change that moves a row
            // there names them, and so reaches this list too.
            if let Some(genre) = self.0.genres.first() {
                loaders.shown.add(crate::shown::Key::Browse(genre.code()));
            }
            let ids =
                loaders.similar.load_one(SimilarQuery { movie: self.0.id, first }).await?.unwrap_or_default();
            let found = loaders.movies.load_many(ids.iter().copied()).await?;
            Ok(ids.iter().filter_map(|id| found.get(id).cloned().map(MovieObject)).collect())
        })
        .await
    }
}
