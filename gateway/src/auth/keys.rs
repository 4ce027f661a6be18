//! The gateway's own Ed25519 signing keys: they sign anonymous tokens (and development user
//! tokens when enabled) and are published at `/.well-known/jwks.json`. Every gateway of a
//! deployment loads the same key files, so a token minted by one verifies on all of them. The
//! first key signs; the others only verify, which is how a key is rotated: add the new key
//! first, keep the old one listed until its last token has expired, then drop it.

use std::path::{Path, PathBuf};

use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;

use super::AuthSetupError;

/// PKCS#8 prefix of an Ed25519 private key (RFC 8410): followed by the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// One of the gateway's signing keys.
pub(crate) struct SigningKey {
    pub(crate) kid: String,
    encoding: EncodingKey,
    pub(crate) decoding: DecodingKey,
    jwk: Jwk,
}

impl SigningKey {
    fn from_pkcs8_der(der: &[u8], origin: &str) -> Result<SigningKey, AuthSetupError> {
        let bad = |e: jsonwebtoken::errors::Error| AuthSetupError::Key(format!("{origin}: {e}"));
        if der.len() != 48 || der[..16] != ED25519_PKCS8_PREFIX {
            return Err(AuthSetupError::Key(format!("{origin}: not an Ed25519 PKCS#8 private key")));
        }
        let encoding = EncodingKey::from_ed_der(der);
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::EdDSA).map_err(bad)?;
        let kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(bad)?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let decoding = DecodingKey::from_jwk(&jwk).map_err(bad)?;
        Ok(SigningKey { kid, encoding, decoding, jwk })
    }

    fn from_pem(pem: &str, origin: &str) -> Result<SigningKey, AuthSetupError> {
        let body: String = pem
            .lines()
            .map(str::trim)
            .skip_while(|l| *l != "-----BEGIN PRIVATE KEY-----")
            .skip(1)
            .take_while(|l| *l != "-----END PRIVATE KEY-----")
            .collect();
        let der = base64::engine::general_purpose::STANDARD.decode(body).map_err(|_| {
            AuthSetupError::Key(format!("{origin}: expected a PEM `PRIVATE KEY` block (PKCS#8 Ed25519)"))
        })?;
        SigningKey::from_pkcs8_der(&der, origin)
    }
}

/// A new Ed25519 private key as PKCS#8 PEM (what `gateway keygen` writes).
pub fn generate_pem() -> Result<String, AuthSetupError> {
    let mut der = ED25519_PKCS8_PREFIX.to_vec();
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| AuthSetupError::Key(format!("no randomness: {e}")))?;
    der.extend_from_slice(&seed);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    Ok(format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n"))
}

/// The gateway's signing keys; the first one signs.
pub(crate) struct OwnKeys {
    keys: Vec<SigningKey>,
    /// Whether the keys were generated at startup (tokens die with the process).
    pub(crate) ephemeral: bool,
}

impl OwnKeys {
    /// Loads PKCS#8 PEM Ed25519 keys from `paths`; with no paths, generates one for this
    /// process only.
    pub(crate) fn load(paths: &[PathBuf]) -> Result<OwnKeys, AuthSetupError> {
        if paths.is_empty() {
            let key = SigningKey::from_pem(&generate_pem()?, "generated key")?;
            return Ok(OwnKeys { keys: vec![key], ephemeral: true });
        }
        let keys = paths.iter().map(|p| load_file(p)).collect::<Result<Vec<_>, _>>()?;
        Ok(OwnKeys { keys, ephemeral: false })
    }

    /// The key with `kid`, if it is one of ours.
    pub(crate) fn find(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// The public halves, as published at `/.well-known/jwks.json`.
    pub(crate) fn jwks(&self) -> JwkSet {
        JwkSet { keys: self.keys.iter().map(|k| k.jwk.clone()).collect() }
    }

    /// Signs `claims` with the current key.
    pub(crate) fn sign<T: Serialize>(&self, claims: &T) -> Result<String, jsonwebtoken::errors::Error> {
        let key = &self.keys[0];
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding)
    }
}

fn load_file(path: &Path) -> Result<SigningKey, AuthSetupError> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| AuthSetupError::Key(format!("reading signing key {}: {e}", path.display())))?;
    SigningKey::from_pem(&pem, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_and_publish_their_kid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.pem"), dir.path().join("b.pem"));
        std::fs::write(&a, generate_pem().expect("key")).expect("write");
        std::fs::write(&b, generate_pem().expect("key")).expect("write");
        let keys = OwnKeys::load(&[a, b]).expect("keys load");
        let jwks = keys.jwks();
        assert_eq!(jwks.keys.len(), 2);
        let kids: Vec<_> = jwks.keys.iter().filter_map(|k| k.common.key_id.clone()).collect();
        assert_eq!(kids.len(), 2);
        assert_ne!(kids[0], kids[1]);
        assert!(keys.find(&kids[1]).is_some());
        assert!(keys.find("nope").is_none());
    }

    #[test]
    fn non_ed25519_material_is_refused() {
        assert!(
            SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "x")
                .is_err()
        );
        assert!(SigningKey::from_pem("hello", "x").is_err());
    }
}
