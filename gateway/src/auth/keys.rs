//! The gateway's own Ed25519 signing keys: they sign anonymous tokens (and development user
//! tokens when enabled) and are published at `/.well-known/jwks.json`. Every gateway of a
//! deployment loads the same keys (key files, or one secret holding every key as PEM text in
//! `auth.signing_keys`), so a token minted by one verifies on all of them. The first key signs;
//! the others only verify, which is how a key is rotated without rejecting a live token: add
//! the new key second (verify only) everywhere, then move it first (it signs), keep the old
//! one listed until its last token has expired, then drop it.

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

    /// Every `PRIVATE KEY` block of `pem`, in order (at least one).
    fn from_pem(pem: &str, origin: &str) -> Result<Vec<SigningKey>, AuthSetupError> {
        let bad_block =
            || AuthSetupError::Key(format!("{origin}: expected PEM `PRIVATE KEY` blocks (PKCS#8 Ed25519)"));
        let mut keys = Vec::new();
        let mut lines = pem.lines().map(str::trim).filter(|l| !l.is_empty());
        while let Some(line) = lines.next() {
            if line != "-----BEGIN PRIVATE KEY-----" {
                return Err(bad_block());
            }
            let mut body = String::new();
            let mut closed = false;
            for line in lines.by_ref() {
                if line == "-----END PRIVATE KEY-----" {
                    closed = true;
                    break;
                }
                body.push_str(line);
            }
            if !closed {
                return Err(bad_block());
            }
            let der = base64::engine::general_purpose::STANDARD.decode(body).map_err(|_| bad_block())?;
            let origin = format!("{origin}, key {}", keys.len() + 1);
            keys.push(SigningKey::from_pkcs8_der(&der, &origin)?);
        }
        if keys.is_empty() {
            return Err(bad_block());
        }
        Ok(keys)
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
    /// Loads PKCS#8 PEM Ed25519 keys from `pem` (the text of one or more keys) or from
    /// `paths`, in order; with neither, generates one for this process only.
    pub(crate) fn load(pem: Option<&str>, paths: &[PathBuf]) -> Result<OwnKeys, AuthSetupError> {
        let keys = match (pem, paths) {
            (Some(_), [_, ..]) => {
                return Err(AuthSetupError::Key(
                    "set auth.signing_keys or auth.signing_key_files, not both".into(),
                ));
            }
            (Some(pem), []) => SigningKey::from_pem(pem, "auth.signing_keys")?,
            (None, []) => {
                let keys = SigningKey::from_pem(&generate_pem()?, "generated key")?;
                return Ok(OwnKeys { keys, ephemeral: true });
            }
            (None, paths) => {
                let mut keys = Vec::new();
                for path in paths {
                    keys.extend(load_file(path)?);
                }
                keys
            }
        };
        let mut kids: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
        kids.sort_unstable();
        if kids.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err(AuthSetupError::Key("the same signing key is listed twice".into()));
        }
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

fn load_file(path: &Path) -> Result<Vec<SigningKey>, AuthSetupError> {
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
        let keys = OwnKeys::load(None, &[a, b]).expect("keys load");
        let jwks = keys.jwks();
        assert_eq!(jwks.keys.len(), 2);
        let kids: Vec<_> = jwks.keys.iter().filter_map(|k| k.common.key_id.clone()).collect();
        assert_eq!(kids.len(), 2);
        assert_ne!(kids[0], kids[1]);
        assert!(keys.find(&kids[1]).is_some());
        assert!(keys.find("nope").is_none());
    }

    #[test]
    fn one_text_holds_every_key_in_order_and_the_first_signs() {
        let (first, second) = (generate_pem().expect("key"), generate_pem().expect("key"));
        let keys = OwnKeys::load(Some(&format!("{first}\n{second}")), &[]).expect("keys load");
        assert!(!keys.ephemeral);
        let kids: Vec<String> = keys.jwks().keys.iter().filter_map(|k| k.common.key_id.clone()).collect();
        let alone = OwnKeys::load(Some(&first), &[]).expect("one key");
        let first_kid = alone.jwks().keys[0].common.key_id.clone().expect("kid");
        assert_eq!(kids.len(), 2);
        assert_eq!(kids[0], first_kid, "the first key of the text signs");
        let token = keys.sign(&serde_json::json!({ "sub": "x" })).expect("sign");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.kid.as_deref(), Some(first_kid.as_str()));

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.pem");
        std::fs::write(&file, &first).expect("write");
        assert!(OwnKeys::load(Some(&second), &[file]).is_err(), "text and files at once are refused");
        assert!(OwnKeys::load(Some(&format!("{first}{first}")), &[]).is_err(), "a key listed twice");
        assert!(OwnKeys::load(Some(""), &[]).is_err(), "an empty secret is no key");
        assert!(OwnKeys::load(Some(&first[..first.len() - 10]), &[]).is_err(), "a cut-off block");
        assert!(OwnKeys::load(Some(&format!("{first}garbage\n")), &[]).is_err(), "text after a key");
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
