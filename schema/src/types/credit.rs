//! Credits: a person's part in a movie, seen from either side.

use async_graphql::{Context, Enum, Object};
use marquee_store::{Credit, Department, MovieId, PersonId};

use super::{MovieObject, PersonObject};
use crate::context::loaders;

/// Department of a credit or a person (the store's `Department`, exposed as a GraphQL enum).
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(name = "Department", remote = "marquee_store::Department")]
pub(crate) enum DepartmentEnum {
    /// Cast.
    Acting,
    /// Directors.
    Directing,
    /// Writers.
    Writing,
    /// Producers.
    Production,
    /// Composers and sound.
    Sound,
    /// Cinematography.
    Camera,
    /// Editing.
    Editing,
    /// Production design.
    Art,
    /// Other crew.
    Crew,
}

/// A person's credit on a movie.
pub(crate) struct CreditObject {
    pub(crate) movie: MovieId,
    pub(crate) person: PersonId,
    pub(crate) department: Department,
    pub(crate) role: String,
    /// Position in the cast list (cast credits only).
    pub(crate) billing: Option<usize>,
}

impl CreditObject {
    /// A credit of `movie`, as listed on the movie (`billing` for cast credits).
    pub(crate) fn on_movie(movie: MovieId, credit: &Credit, billing: Option<usize>) -> CreditObject {
        CreditObject {
            movie,
            person: credit.person,
            department: credit.department,
            role: credit.role.clone(),
            billing,
        }
    }
}

/// A person's credit on a movie: a cast role or a crew job.
#[Object(name = "Credit")]
impl CreditObject {
    /// The movie.
    async fn movie(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<MovieObject>> {
        crate::error::resolve(
            async move { Ok(loaders(ctx)?.movies.load_one(self.movie).await?.map(MovieObject)) },
        )
        .await
    }

    /// The person (null if the catalog has no record of them).
    async fn person(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<PersonObject>> {
        crate::error::resolve(async move {
            Ok(loaders(ctx)?.people.load_one(self.person).await?.map(PersonObject))
        })
        .await
    }

    /// `ACTING` for cast credits.
    async fn department(&self) -> DepartmentEnum {
        self.department.into()
    }

    /// Character played (cast credits only).
    async fn character(&self) -> Option<&str> {
        (self.department == Department::Acting && !self.role.is_empty()).then_some(self.role.as_str())
    }

    /// Job done, e.g. `Director` (crew credits only).
    async fn job(&self) -> Option<&str> {
        (self.department != Department::Acting).then_some(self.role.as_str())
    }

    /// Position in the cast list, from 1 (cast credits on a movie only).
    async fn billing_order(&self) -> Option<i32> {
        self.billing.map(|b| b as i32 + 1)
    }
}
