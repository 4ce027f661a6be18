//! The GraphQL object types. Each wraps the store's model. Relations (a movie's cast, a
//! person's films, rating totals, the caller's own ratings) resolve through the request's
//! loaders, so they batch; only single paged reads of a user's lists call the store directly.

mod connection;
mod credit;
mod movie;
mod person;
mod user;

use async_graphql::Context;
use marquee_store::MAX_PAGE;

pub(crate) use connection::{CreditConnection, MovieConnection, MovieEdge, PageInfo};
pub(crate) use credit::{CreditObject, DepartmentEnum};
pub(crate) use movie::{GenreObject, MovieObject};
pub(crate) use person::PersonObject;
pub(crate) use user::{UserRatingObject, ViewerObject, WatchlistEntryObject};

use crate::error::ApiError;
use crate::loaders::Loaders;

/// Validates a `first` argument.
pub(crate) fn page_size(first: i32) -> Result<usize, ApiError> {
    usize::try_from(first).ok().filter(|&n| n <= MAX_PAGE).ok_or_else(|| {
        ApiError::BadUserInput(format!("`first` must be between 0 and {MAX_PAGE}, got {first}"))
    })
}

/// The request's loaders (attached by the HTTP layer).
pub(crate) fn loaders<'a>(ctx: &Context<'a>) -> Result<&'a Loaders, ApiError> {
    ctx.data::<Loaders>().map_err(|_| {
        ApiError::Store(std::sync::Arc::new(marquee_store::StoreError::Backend(
            "request executed without loaders".into(),
        )))
    })
}
