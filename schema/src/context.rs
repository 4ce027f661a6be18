//! What a resolver reads from its request's context: the store the schema was built over, the
//! request's loaders, the signed-in caller, and the page size it asked for. Every root and
//! object type takes these from here, so the types never import each other for them.

use async_graphql::Context;
use marquee_store::{MAX_PAGE, Store, StoreError, UserId};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::loaders::Loaders;

/// The store the schema was built over (for unbatched reads and writes; batched reads go
/// through the request's loaders).
pub(crate) fn store<'a>(ctx: &Context<'a>) -> &'a Store {
    ctx.data_unchecked::<Store>()
}

/// The request's loaders (attached by the HTTP layer).
pub(crate) fn loaders<'a>(ctx: &Context<'a>) -> Result<&'a Loaders, ApiError> {
    ctx.data::<Loaders>().map_err(|_| {
        ApiError::Store(std::sync::Arc::new(StoreError::Backend("request executed without loaders".into())))
    })
}

/// The signed-in caller's id, or `UNAUTHENTICATED`.
pub(crate) fn signed_in(ctx: &Context<'_>, what: &'static str) -> Result<UserId, ApiError> {
    let id = ctx.data_opt::<Caller>().and_then(Caller::user_id).ok_or(ApiError::Unauthenticated(what))?;
    Ok(UserId::new(id)?)
}

/// The signed-in editor's id: `UNAUTHENTICATED` without a user, `FORBIDDEN` for a user
/// without the editor role.
pub(crate) fn editor(ctx: &Context<'_>, what: &'static str) -> Result<String, ApiError> {
    match ctx.data_opt::<Caller>() {
        Some(Caller::User { id, editor: true }) => Ok(UserId::new(id.clone())?.as_str().to_owned()),
        Some(Caller::User { .. }) => Err(ApiError::Forbidden(what)),
        _ => Err(ApiError::Unauthenticated(what)),
    }
}

/// Validates a `first` argument.
pub(crate) fn page_size(first: i32) -> Result<usize, ApiError> {
    usize::try_from(first).ok().filter(|&n| n <= MAX_PAGE).ok_or_else(|| {
        ApiError::BadUserInput(format!("`first` must be between 0 and {MAX_PAGE}, got {first}"))
    })
}
