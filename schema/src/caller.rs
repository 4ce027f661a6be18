//! Who is asking. The HTTP stage verifies the bearer token and attaches a [`Caller`] to every
//! request; resolvers read it to decide whether user-specific fields may resolve. Public catalog
//! fields never look at it, which is what keeps their responses shareable by caches.

/// The verified identity behind one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No token at all: public catalog only, rate-limited by client address.
    Anonymous,
    /// An anonymous token issued by a gateway (`anon:<uuid>`): public catalog only, with its own
    /// rate-limit bucket, and charged to the address that minted it as well.
    Guest {
        /// The token subject, `anon:<uuid>`.
        subject: String,
        /// The client address the token was issued to (tokens from before addresses were
        /// recorded have none).
        issued_to: Option<String>,
    },
    /// A signed-in user.
    User {
        /// The user's id (the token subject).
        id: String,
        /// Whether the token's `role` claim is `editor`: may correct the catalog.
        editor: bool,
    },
}

impl Caller {
    /// The signed-in user's id, if any.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Caller::User { id, .. } => Some(id),
            Caller::Anonymous | Caller::Guest { .. } => None,
        }
    }
}
