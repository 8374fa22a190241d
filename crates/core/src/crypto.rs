//! Encryption of stored secrets (mailbox passwords, provider tokens) and hashing of API tokens.
//!
//! Secrets are sealed with XChaCha20-Poly1305 under the configured 32-byte key; each value gets a
//! random 24-byte nonce and is stored as `v1:` + base64(nonce ‖ ciphertext). API tokens are
//! random and long, so a plain SHA-256 is the right hash: no salt or slow KDF is needed, and the
//! lookup is by hash.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::error::CoreError;

const KEY_FILE: &str = "secret.key";
const SEALED_PREFIX: &str = "v1:";

/// The key that seals stored secrets.
#[derive(Clone)]
pub struct SecretKey(XChaCha20Poly1305);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Where the key came from, so start-up can warn about a generated one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Configured,
    DataDirFile { path: String, created: bool },
}

impl SecretKey {
    /// A new random key as base64, as printed by `herald keygen`.
    pub fn generate_base64() -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        STANDARD.encode(bytes)
    }

    pub fn from_base64(encoded: &str) -> Result<Self, CoreError> {
        let bytes = STANDARD.decode(encoded.trim()).map_err(|_| {
            CoreError::Config(
                "secret_key is not valid base64 (make one with `herald keygen`)".into(),
            )
        })?;
        if bytes.len() != 32 {
            return Err(CoreError::Config(format!(
                "secret_key must be 32 bytes, got {} (make one with `herald keygen`)",
                bytes.len()
            )));
        }
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
            .map_err(|_| CoreError::Config("secret_key has the wrong length".into()))?;
        Ok(SecretKey(cipher))
    }

    /// The configured key, or for the embedded setup a key kept in `data_dir/secret.key`
    /// (generated on first use).
    pub fn load_or_generate(
        configured: Option<&SecretString>,
        data_dir: &Path,
    ) -> Result<(Self, KeySource), CoreError> {
        if let Some(encoded) = configured {
            return Ok((
                Self::from_base64(encoded.expose_secret())?,
                KeySource::Configured,
            ));
        }
        let path = data_dir.join(KEY_FILE);
        let display = path.display().to_string();
        if path.exists() {
            let encoded = std::fs::read_to_string(&path)
                .map_err(|e| CoreError::Config(format!("cannot read {display}: {e}")))?;
            let key = Self::from_base64(&encoded)?;
            return Ok((
                key,
                KeySource::DataDirFile {
                    path: display,
                    created: false,
                },
            ));
        }
        std::fs::create_dir_all(data_dir)
            .map_err(|e| CoreError::Config(format!("cannot create {}: {e}", data_dir.display())))?;
        let encoded = Self::generate_base64();
        write_private_file(&path, &encoded)
            .map_err(|e| CoreError::Config(format!("cannot write {display}: {e}")))?;
        Ok((
            Self::from_base64(&encoded)?,
            KeySource::DataDirFile {
                path: display,
                created: true,
            },
        ))
    }

    pub fn seal(&self, plaintext: &str) -> Result<String, CoreError> {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .0
            .encrypt(XNonce::from_slice(&nonce), plaintext.as_bytes())
            .map_err(|_| CoreError::Decrypt)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(out)))
    }

    pub fn open(&self, sealed: &str) -> Result<SecretString, CoreError> {
        let encoded = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(CoreError::Decrypt)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| CoreError::Decrypt)?;
        if bytes.len() < 24 {
            return Err(CoreError::Decrypt);
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        let plain = self
            .0
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| CoreError::Decrypt)?;
        let text = String::from_utf8(plain).map_err(|_| CoreError::Decrypt)?;
        Ok(SecretString::from(text))
    }
}

#[cfg(unix)]
fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// Prefix of every API token, so leaked tokens are recognisable by secret scanners.
pub const TOKEN_PREFIX: &str = "hrld_";

/// A new random API token (shown once) and the hash stored for it.
pub fn new_api_token() -> (SecretString, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_api_token(&token);
    (SecretString::from(token), hash)
}

pub fn hash_api_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A stable digest of a request, to tell a retried request from a different one with the same
/// idempotency key.
pub fn request_digest(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secret_opens_with_the_same_key_only() {
        let key = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();
        let other = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();
        let sealed = key.seal("hunter2").unwrap();
        assert!(!sealed.contains("hunter2"));
        assert_eq!(key.open(&sealed).unwrap().expose_secret(), "hunter2");
        assert!(matches!(other.open(&sealed), Err(CoreError::Decrypt)));
        assert_ne!(key.seal("hunter2").unwrap(), sealed, "nonces must differ");
    }

    #[test]
    fn key_of_wrong_length_is_refused() {
        let err = SecretKey::from_base64(&STANDARD.encode([0u8; 16])).unwrap_err();
        assert!(err.to_string().contains("32 bytes"));
    }

    #[test]
    fn generated_key_is_kept_in_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let (first, source) = SecretKey::load_or_generate(None, dir.path()).unwrap();
        assert!(matches!(
            source,
            KeySource::DataDirFile { created: true, .. }
        ));
        let sealed = first.seal("x").unwrap();
        let (second, source) = SecretKey::load_or_generate(None, dir.path()).unwrap();
        assert!(matches!(
            source,
            KeySource::DataDirFile { created: false, .. }
        ));
        assert_eq!(second.open(&sealed).unwrap().expose_secret(), "x");
    }

    #[test]
    fn token_hash_is_stable_and_not_the_token() {
        let (token, hash) = new_api_token();
        assert!(token.expose_secret().starts_with(TOKEN_PREFIX));
        assert_eq!(hash, hash_api_token(token.expose_secret()));
        assert!(!hash.contains(token.expose_secret()));
    }
}
