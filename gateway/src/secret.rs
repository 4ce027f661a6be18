//! A secret setting (a signing key, a password): carried through the configuration like any
//! other, but never shown. `gateway config`, logs and `Debug` print `<redacted>` in its
//! place, so a configuration can be printed or logged whole.

use serde::{Deserialize, Serialize};

/// A setting whose value must never be shown: `gateway config`, logs and `Debug` print
/// `<redacted>` in its place.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}
