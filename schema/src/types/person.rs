//! The `Person` type.

use std::sync::Arc;

use async_graphql::{Context, ID, Object};
use marquee_store::{Department, FilmographyQuery, Page, Person};

use super::connection::{CreditEdge, PageInfo};
use super::{CreditConnection, CreditObject, DepartmentEnum};
use crate::context::{loaders, page_size};
use crate::cursor::{self, CursorKind};

/// A person in cast or crew.
pub(crate) struct PersonObject(pub(crate) Arc<Person>);

/// A person in cast or crew.
#[Object(name = "Person")]
impl PersonObject {
    /// Opaque id (IMDb-style, e.g. `nm0000151`).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// Display name.
    async fn name(&self) -> &str {
        &self.0.name
    }

    /// Year of birth.
    async fn birth_year(&self) -> Option<i32> {
        self.0.birth_year.map(i32::from)
    }

    /// Year of death.
    async fn death_year(&self) -> Option<i32> {
        self.0.death_year.map(i32::from)
    }

    /// What they are best known for.
    async fn known_for_department(&self) -> Option<DepartmentEnum> {
        self.0.known_for_department.map(Into::into)
    }

    /// Credits, newest movie first.
    async fn filmography(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<CreditConnection> {
        crate::error::resolve(async move {
            let first = page_size(first)?;
            let after = cursor::decode(CursorKind::Filmography, after.as_deref())?;
            let query = FilmographyQuery { person: self.0.id, first, after };
            let page =
                loaders(ctx)?.filmography.load_one(query).await?.unwrap_or_else(|| Arc::new(Page::default()));
            let cursors: Vec<String> =
                page.items.iter().map(|(p, _)| cursor::encode(CursorKind::Filmography, *p)).collect();
            let edges = page
                .items
                .iter()
                .zip(&cursors)
                .map(|((pos, entry), cursor)| CreditEdge {
                    cursor: cursor.clone(),
                    node: CreditObject {
                        movie: entry.movie,
                        person: self.0.id,
                        department: entry.department,
                        role: entry.role.clone(),
                        // The key's low byte is the credit's position on the movie: cast first.
                        billing: (entry.department == Department::Acting).then_some((pos.id & 0xFF) as usize),
                    },
                })
                .collect();
            Ok(CreditConnection { edges, page_info: PageInfo::new(&cursors, page.has_next) })
        })
        .await
    }
}
