//! Fernet, byte-compatible with Python's `cryptography.fernet` (which Airflow uses for
//! `[core] fernet_key`): a token is URL-safe base64 of
//! `0x80 ‖ timestamp (u64 BE) ‖ IV (16) ‖ AES-128-CBC(PKCS7(plaintext)) ‖ HMAC-SHA256 (32)`,
//! where the HMAC covers everything before it. See <https://github.com/fernet/spec>.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE};
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;

use crate::{Error, KeyProblem};

type HmacSha256 = Hmac<Sha256>;
type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;
type Aes128CbcDec = cbc::Decryptor<aes::Aes128>;

const VERSION: u8 = 0x80;
const HEADER_LEN: usize = 1 + 8 + 16;
const MAC_LEN: usize = 32;
const BLOCK_LEN: usize = 16;

/// Python's `urlsafe_b64decode` insists on padding only when it is needed to make sense of the
/// input; accepting both forms costs nothing and lets hand-trimmed keys and tokens through.
const LENIENT_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Airflow's Fernet key format: 32 bytes, URL-safe base64 (44 characters). The first 16 bytes are
/// the HMAC signing key, the last 16 the AES encryption key.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl Key {
    /// A fresh key from the OS random number generator.
    pub fn generate() -> Key {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Key(bytes)
    }

    /// Parses one key. Surrounding whitespace is ignored, and the standard base64 alphabet
    /// (`+`, `/`) is accepted as well as the URL-safe one, as Python's `urlsafe_b64decode` does.
    pub fn parse(text: &str) -> Result<Key, Error> {
        Self::parse_inner(text).map_err(|reason| Error::InvalidKey { reason })
    }

    fn parse_inner(text: &str) -> Result<Key, KeyProblem> {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyProblem::Empty);
        }
        let normalized: String = text
            .chars()
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect();
        let bytes = LENIENT_URL_SAFE
            .decode(normalized)
            .map_err(|_| KeyProblem::NotBase64)?;
        let bytes: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyProblem::WrongLength(bytes.len()))?;
        Ok(Key(bytes))
    }

    /// The key in Airflow's format: URL-safe base64 with padding, 44 characters.
    pub fn to_base64(&self) -> String {
        URL_SAFE.encode(self.0)
    }

    fn signing_key(&self) -> &[u8] {
        &self.0[..16]
    }

    fn encryption_key(&self) -> &[u8] {
        &self.0[16..]
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(self.signing_key()).expect("hmac accepts keys of any length")
    }

    /// Builds the token for a given timestamp and IV; public callers get a fresh random IV and the
    /// current time from [`MultiFernet::encrypt`], tests pin both to check published vectors.
    pub(crate) fn encrypt_with(&self, timestamp: u64, iv: [u8; 16], plaintext: &[u8]) -> String {
        let ciphertext = Aes128CbcEnc::new(self.encryption_key().into(), &iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
        let mut data = Vec::with_capacity(HEADER_LEN + ciphertext.len() + MAC_LEN);
        data.push(VERSION);
        data.extend_from_slice(&timestamp.to_be_bytes());
        data.extend_from_slice(&iv);
        data.extend_from_slice(&ciphertext);
        let mut mac = self.mac();
        mac.update(&data);
        data.extend_from_slice(&mac.finalize().into_bytes());
        URL_SAFE.encode(data)
    }

    /// Checks the HMAC (in constant time) before touching the ciphertext.
    fn decrypt_data(&self, data: &[u8]) -> Result<Vec<u8>, Error> {
        let (signed, tag) = data.split_at(data.len() - MAC_LEN);
        let mut mac = self.mac();
        mac.update(signed);
        mac.verify_slice(tag).map_err(|_| Error::InvalidToken)?;
        let iv = &signed[9..HEADER_LEN];
        let ciphertext = &signed[HEADER_LEN..];
        Aes128CbcDec::new(self.encryption_key().into(), iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
            .map_err(|_| Error::InvalidToken)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material, even in debug output or panics.
        f.write_str("Key(..)")
    }
}

/// Decodes a token and checks its framing; returns `(timestamp, raw bytes)`.
fn unverified_token_data(token: &str) -> Result<(u64, Vec<u8>), Error> {
    let data = LENIENT_URL_SAFE
        .decode(token.trim())
        .map_err(|_| Error::InvalidToken)?;
    // Version, timestamp, IV, at least one cipher block, MAC; CBC output is whole blocks.
    if data.len() < HEADER_LEN + BLOCK_LEN + MAC_LEN
        || !(data.len() - HEADER_LEN - MAC_LEN).is_multiple_of(BLOCK_LEN)
        || data[0] != VERSION
    {
        return Err(Error::InvalidToken);
    }
    let timestamp = u64::from_be_bytes(data[1..9].try_into().expect("8 bytes"));
    Ok((timestamp, data))
}

/// Airflow's `[core] fernet_key`: comma-separated keys; the first encrypts, all decrypt.
#[derive(Clone)]
pub struct MultiFernet(Vec<Key>);

impl MultiFernet {
    /// Parses a comma-separated key list. An error names the bad key by its 1-based position and
    /// never includes the key text.
    pub fn from_config(keys: &str) -> Result<MultiFernet, Error> {
        if keys.trim().is_empty() {
            return Err(Error::NoKeys);
        }
        let parts: Vec<&str> = keys.split(',').collect();
        let count = parts.len();
        let keys = parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                Key::parse_inner(part).map_err(|reason| Error::InvalidKeyInList {
                    position: i + 1,
                    count,
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MultiFernet(keys))
    }

    /// Builds a key list directly, first key encrypting. Empty lists are rejected.
    pub fn new(keys: Vec<Key>) -> Result<MultiFernet, Error> {
        if keys.is_empty() {
            return Err(Error::NoKeys);
        }
        Ok(MultiFernet(keys))
    }

    /// The keys in order, first one encrypting.
    pub fn keys(&self) -> &[Key] {
        &self.0
    }

    fn primary(&self) -> &Key {
        &self.0[0]
    }

    /// Encrypts with the first key, stamping the current time and a random IV.
    pub fn encrypt(&self, plaintext: &[u8]) -> String {
        self.primary()
            .encrypt_with(now_unix(), random_iv(), plaintext)
    }

    /// Decrypts with whichever configured key made the token. Like Airflow (which passes no
    /// `ttl`), the token's age is not checked.
    pub fn decrypt(&self, token: &str) -> Result<Vec<u8>, Error> {
        let (_, data) = unverified_token_data(token)?;
        self.decrypt_data(&data)
    }

    fn decrypt_data(&self, data: &[u8]) -> Result<Vec<u8>, Error> {
        self.0
            .iter()
            .find_map(|key| key.decrypt_data(data).ok())
            .ok_or(Error::InvalidToken)
    }

    /// Decrypts with any key and re-encrypts with the first, keeping the token's original
    /// timestamp as Python's `MultiFernet.rotate` does (for `rotate-fernet-key`).
    pub fn rotate(&self, token: &str) -> Result<String, Error> {
        let (timestamp, data) = unverified_token_data(token)?;
        let plaintext = self.decrypt_data(&data)?;
        Ok(self
            .primary()
            .encrypt_with(timestamp, random_iv(), &plaintext))
    }
}

impl fmt::Debug for MultiFernet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiFernet")
            .field("keys", &self.0.len())
            .finish()
    }
}

/// The timestamp recorded in a token made now (seconds since the Unix epoch).
fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random_iv() -> [u8; 16] {
    let mut iv = [0u8; 16];
    OsRng.fill_bytes(&mut iv);
    iv
}

/// Reads the timestamp a token claims, without checking it (for tests of `rotate`).
#[cfg(test)]
fn token_timestamp(token: &str) -> u64 {
    unverified_token_data(token).unwrap().0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_KEY: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
    const SPEC_TOKEN: &str = "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==";
    const SPEC_TIME: u64 = 499_162_800;
    const SPEC_IV: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

    fn key(n: u8) -> Key {
        Key([n; 32])
    }

    #[test]
    fn spec_vector_encrypts_to_published_token() {
        let key = Key::parse(SPEC_KEY).unwrap();
        assert_eq!(key.encrypt_with(SPEC_TIME, SPEC_IV, b"hello"), SPEC_TOKEN);
    }

    #[test]
    fn spec_vector_decrypts() {
        let fernet = MultiFernet::from_config(SPEC_KEY).unwrap();
        assert_eq!(fernet.decrypt(SPEC_TOKEN).unwrap(), b"hello");
    }

    #[test]
    fn key_round_trips_through_base64() {
        let key = Key::parse(SPEC_KEY).unwrap();
        assert_eq!(key.to_base64(), SPEC_KEY);
        let generated = Key::generate();
        let text = generated.to_base64();
        assert_eq!(text.len(), 44);
        assert_eq!(Key::parse(&text).unwrap().0, generated.0);
        assert_ne!(Key::generate().0, generated.0);
    }

    #[test]
    fn key_parse_is_lenient_like_python() {
        let expected = Key::parse(SPEC_KEY).unwrap().0;
        // Missing padding, surrounding whitespace, standard alphabet.
        assert_eq!(
            Key::parse(SPEC_KEY.trim_end_matches('=')).unwrap().0,
            expected
        );
        assert_eq!(Key::parse(&format!("  {SPEC_KEY}\n")).unwrap().0, expected);
        let standard = SPEC_KEY.replace('-', "+").replace('_', "/");
        assert_eq!(Key::parse(&standard).unwrap().0, expected);
    }

    #[test]
    fn bad_keys_are_rejected_without_echoing_them() {
        let err = Key::parse("").unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidKey {
                reason: KeyProblem::Empty
            }
        ));
        let err = Key::parse("not base64 at all!").unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidKey {
                reason: KeyProblem::NotBase64
            }
        ));
        let short = URL_SAFE.encode([7u8; 16]);
        let err = Key::parse(&short).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidKey {
                reason: KeyProblem::WrongLength(16)
            }
        ));
        assert!(!err.to_string().contains(&short));
    }

    #[test]
    fn from_config_names_bad_key_by_position() {
        let bad = URL_SAFE.encode([9u8; 31]);
        let config = format!("{SPEC_KEY},{bad},{SPEC_KEY}");
        let err = MultiFernet::from_config(&config).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidKeyInList {
                position: 2,
                count: 3,
                reason: KeyProblem::WrongLength(31)
            }
        ));
        let message = err.to_string();
        assert!(message.contains("key 2 of 3"), "{message}");
        assert!(
            !message.contains(&bad) && !message.contains(SPEC_KEY),
            "{message}"
        );

        let err = MultiFernet::from_config(&format!("{SPEC_KEY},")).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidKeyInList {
                position: 2,
                count: 2,
                reason: KeyProblem::Empty
            }
        ));
        assert!(matches!(MultiFernet::from_config("  "), Err(Error::NoKeys)));
        assert!(matches!(MultiFernet::new(vec![]), Err(Error::NoKeys)));
    }

    #[test]
    fn from_config_accepts_spaces_around_keys() {
        let a = key(1).to_base64();
        let b = key(2).to_base64();
        let fernet = MultiFernet::from_config(&format!(" {a} , {b} ")).unwrap();
        assert_eq!(fernet.keys().len(), 2);
        assert_eq!(fernet.keys()[0].0, key(1).0);
        assert_eq!(fernet.keys()[1].0, key(2).0);
    }

    #[test]
    fn round_trip_including_empty_and_block_sized_plaintexts() {
        let fernet = MultiFernet::new(vec![key(1)]).unwrap();
        for plaintext in [
            &b""[..],
            b"x",
            &[0u8; 16],
            &[255u8; 1000],
            "pässwörd".as_bytes(),
        ] {
            let token = fernet.encrypt(plaintext);
            assert_eq!(fernet.decrypt(&token).unwrap(), plaintext);
        }
        // Random IVs: equal plaintexts give different tokens.
        assert_ne!(fernet.encrypt(b"same"), fernet.encrypt(b"same"));
    }

    #[test]
    fn first_key_encrypts_and_every_key_decrypts() {
        let old = MultiFernet::new(vec![key(1)]).unwrap();
        let both = MultiFernet::new(vec![key(2), key(1)]).unwrap();
        let new_only = MultiFernet::new(vec![key(2)]).unwrap();

        let old_token = old.encrypt(b"old secret");
        assert_eq!(both.decrypt(&old_token).unwrap(), b"old secret");
        assert!(matches!(
            new_only.decrypt(&old_token),
            Err(Error::InvalidToken)
        ));

        let new_token = both.encrypt(b"new secret");
        assert_eq!(new_only.decrypt(&new_token).unwrap(), b"new secret");
        assert!(matches!(old.decrypt(&new_token), Err(Error::InvalidToken)));
    }

    #[test]
    fn rotate_reencrypts_with_first_key_and_keeps_timestamp() {
        let old_key = Key::parse(SPEC_KEY).unwrap();
        let both = MultiFernet::new(vec![key(2), old_key]).unwrap();
        let rotated = both.rotate(SPEC_TOKEN).unwrap();
        assert_eq!(token_timestamp(&rotated), SPEC_TIME);
        let new_only = MultiFernet::new(vec![key(2)]).unwrap();
        assert_eq!(new_only.decrypt(&rotated).unwrap(), b"hello");
        assert!(matches!(
            new_only.rotate(SPEC_TOKEN),
            Err(Error::InvalidToken)
        ));
    }

    #[test]
    fn tampered_and_malformed_tokens_are_rejected() {
        let fernet = MultiFernet::from_config(SPEC_KEY).unwrap();
        let raw = URL_SAFE.decode(SPEC_TOKEN).unwrap();
        // Flipping any single byte (version, timestamp, IV, ciphertext or MAC) must fail.
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            assert!(
                matches!(
                    fernet.decrypt(&URL_SAFE.encode(&bad)),
                    Err(Error::InvalidToken)
                ),
                "byte {i} flipped"
            );
        }
        let truncated = URL_SAFE.encode(&raw[..raw.len() - 1]);
        let one_block_short = URL_SAFE.encode(&raw[..HEADER_LEN + MAC_LEN]);
        for token in ["", "gA==", "not a token!", &truncated, &one_block_short] {
            assert!(
                matches!(fernet.decrypt(token), Err(Error::InvalidToken)),
                "{token}"
            );
        }
    }

    #[test]
    fn debug_output_hides_keys() {
        let fernet = MultiFernet::from_config(SPEC_KEY).unwrap();
        let shown = format!("{fernet:?} {:?}", fernet.keys()[0]);
        assert!(
            !shown.contains(SPEC_KEY) && !shown.contains("cw_0x"),
            "{shown}"
        );
        assert!(shown.contains("keys: 1"), "{shown}");
    }
}
