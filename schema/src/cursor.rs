//! Opaque cursors: base64url of a versioned, field-tagged store position. The version lets the
//! encoding change without misreading old cursors; the tag stops a search cursor being replayed
//! against browse.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use marquee_store::Position;

use crate::error::ApiError;

const VERSION: u8 = 1;

/// Which ordered field a cursor belongs to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum CursorKind {
    Search,
    Browse(u8),
    Filmography,
    Ratings,
    Watchlist,
}

impl CursorKind {
    fn tag(self) -> u8 {
        match self {
            CursorKind::Search => 1,
            CursorKind::Browse(sort) => 0x10 | sort,
            CursorKind::Filmography => 2,
            CursorKind::Ratings => 3,
            CursorKind::Watchlist => 4,
        }
    }
}

pub(crate) fn encode(kind: CursorKind, pos: Position) -> String {
    let mut bytes = Vec::with_capacity(18);
    bytes.push(VERSION);
    bytes.push(kind.tag());
    bytes.extend_from_slice(&pos.key.to_be_bytes());
    bytes.extend_from_slice(&pos.id.to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn decode(kind: CursorKind, cursor: Option<&str>) -> Result<Option<Position>, ApiError> {
    let Some(cursor) = cursor else { return Ok(None) };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| ApiError::InvalidCursor)?;
    match bytes.as_slice() {
        [VERSION, tag, rest @ ..] if *tag == kind.tag() && rest.len() == 16 => {
            let (key, id) = rest.split_at(8);
            let key = u64::from_be_bytes(key.try_into().map_err(|_| ApiError::InvalidCursor)?);
            let id = u64::from_be_bytes(id.try_into().map_err(|_| ApiError::InvalidCursor)?);
            Ok(Some(Position { key, id }))
        }
        _ => Err(ApiError::InvalidCursor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_foreign_cursors() {
        let pos = Position { key: 42, id: 7 };
        let c = encode(CursorKind::Browse(2), pos);
        assert_eq!(decode(CursorKind::Browse(2), Some(&c)).expect("valid"), Some(pos));
        assert!(decode(CursorKind::Browse(1), Some(&c)).is_err());
        assert!(decode(CursorKind::Search, Some(&c)).is_err());
        assert!(decode(CursorKind::Search, Some("not base64!")).is_err());
        assert!(decode(CursorKind::Search, Some("")).is_err());
        assert_eq!(decode(CursorKind::Search, None).expect("none"), None);
    }
}
