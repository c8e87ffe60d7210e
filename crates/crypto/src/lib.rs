//! Cryptography for the API server and CLI: Airflow-compatible Fernet encryption of secrets at rest,
//! HS256 JWT bearer tokens, and argon2id password hashes.
//!
//! Pure functions over bytes and strings: no IO and no async. The only ambient inputs are the OS
//! random number generator (keys, IVs, salts) and, for [`fernet::MultiFernet::encrypt`], the wall
//! clock, because a Fernet token records when it was made; JWT verification takes `now` as a
//! parameter so callers and tests control time.

pub mod fernet;
pub mod jwt;
pub mod password;
pub mod task_token;

/// What went wrong. Messages never contain key material, tokens or passwords.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("fernet key is not valid: {reason}")]
    InvalidKey { reason: KeyProblem },
    #[error("fernet key {position} of {count} in the key list is not valid: {reason}")]
    InvalidKeyInList {
        /// 1-based position in the comma-separated list.
        position: usize,
        count: usize,
        reason: KeyProblem,
    },
    #[error(
        "no fernet key configured: expected one or more comma-separated keys, each 32 bytes in url-safe base64"
    )]
    NoKeys,
    #[error("fernet token is not valid: it is malformed, or was not made with any configured key")]
    InvalidToken,
    #[error("jwt is malformed: {0}")]
    MalformedJwt(&'static str),
    #[error("jwt algorithm is not allowed: only HS256 is accepted")]
    UnsupportedAlgorithm,
    #[error("jwt signature is not valid")]
    BadSignature,
    #[error("jwt has expired")]
    Expired,
    #[error("jwt is not valid yet (its nbf claim is in the future)")]
    NotYetValid,
}

/// Why a Fernet key was rejected (never includes the key itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    #[error("it is empty; expected 32 bytes in url-safe base64 (44 characters)")]
    Empty,
    #[error("it is not url-safe base64; expected 32 bytes in url-safe base64 (44 characters)")]
    NotBase64,
    #[error("it decodes to {0} bytes; expected 32 bytes in url-safe base64 (44 characters)")]
    WrongLength(usize),
}

/// HMAC-SHA256 of `message` under `secret`, as unpadded url-safe base64: for values the server
/// derives from its secret and checks later (the web UI's CSRF tokens).
pub fn keyed_digest(secret: &[u8], message: &[u8]) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(message);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Whether `digest` is [`keyed_digest`] of `message` under `secret`, compared in constant time.
pub fn verify_keyed_digest(secret: &[u8], message: &[u8], digest: &str) -> bool {
    use base64::Engine as _;
    use hmac::Mac as _;
    let Ok(tag) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(digest) else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(message);
    mac.verify_slice(&tag).is_ok()
}

#[cfg(test)]
mod keyed_digest_tests {
    use super::*;

    #[test]
    fn a_digest_verifies_only_for_its_secret_and_message() {
        let d = keyed_digest(b"secret", b"session-1");
        assert!(verify_keyed_digest(b"secret", b"session-1", &d));
        assert!(!verify_keyed_digest(b"secret", b"session-2", &d));
        assert!(!verify_keyed_digest(b"other", b"session-1", &d));
        assert!(!verify_keyed_digest(b"secret", b"session-1", "not base64!"));
        assert!(!verify_keyed_digest(b"secret", b"session-1", ""));
    }
}
