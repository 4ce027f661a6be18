//! The GraphQL object types. Each wraps the store's model. Relations (a movie's cast, a
//! person's films, rating totals, the caller's own ratings) resolve through the request's
//! loaders, so they batch; only single paged reads of a user's lists call the store directly.

mod connection;
mod credit;
mod movie;
mod person;
mod user;

pub(crate) use connection::{CreditConnection, MovieConnection, MovieEdge, PageInfo};
pub(crate) use credit::{CreditObject, DepartmentEnum};
pub(crate) use movie::{GenreObject, MovieObject};
pub(crate) use person::PersonObject;
pub(crate) use user::{UserRatingObject, ViewerObject, WatchlistEntryObject};
