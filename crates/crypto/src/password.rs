//! Password hashing for user accounts: argon2id in PHC string form
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), verified in constant time.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand_core::{OsRng, RngCore};

/// Hashes with argon2id and the crate's default cost (19 MiB, 2 passes, 1 lane: OWASP's
/// recommendation, tens of milliseconds per login) and a fresh random salt.
pub fn hash(password: &str) -> String {
    hash_with(&Argon2::default(), password)
}

fn hash_with(hasher: &Argon2<'_>, password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    hasher
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with valid parameters and a generated salt cannot fail")
        .to_string()
}

/// Whether `password` matches the PHC string `phc`. The algorithm, version and cost are read
/// from `phc`, so hashes made with older parameters keep working. Anything that is not an argon2
/// PHC string, including an empty one, gives `false`.
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

const GENERATED_LEN: usize = 20;
/// Letters and digits only: URL-safe, and nothing a shell, a JSON string or a double-click
/// selection treats specially (no leading `-` that looks like a flag).
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A random password for generated admin accounts: 20 letters and digits (about 119 bits).
pub fn generate() -> String {
    let mut out = String::with_capacity(GENERATED_LEN);
    let mut buf = [0u8; 32];
    while out.len() < GENERATED_LEN {
        OsRng.fill_bytes(&mut buf);
        // Rejection sampling keeps every character equally likely: 248 = 4 × 62.
        for &byte in &buf {
            if byte < 248 && out.len() < GENERATED_LEN {
                out.push(char::from(ALPHABET[usize::from(byte) % ALPHABET.len()]));
            }
        }
    }
    out
}

/// Argon2id with the smallest memory cost, so tests in unoptimised builds stay quick.
#[cfg(test)]
fn light_hasher() -> Argon2<'static> {
    use argon2::{Algorithm, Params, Version};
    let params = Params::new(Params::MIN_M_COST.max(64), 1, 1, None).expect("valid argon2 params");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_hash_is_argon2id_and_verifies() {
        let phc = hash("correct horse battery staple");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify("correct horse battery staple", &phc));
        assert!(!verify("correct horse battery stapl", &phc));
    }

    #[test]
    fn wrong_password_is_rejected() {
        let phc = hash_with(&light_hasher(), "s3cret");
        assert!(verify("s3cret", &phc));
        for wrong in ["", "S3cret", "s3cret ", "s3cre"] {
            assert!(!verify(wrong, &phc), "{wrong:?}");
        }
    }

    #[test]
    fn equal_passwords_get_different_salts() {
        let a = hash_with(&light_hasher(), "same");
        let b = hash_with(&light_hasher(), "same");
        assert_ne!(a, b);
        let salt = |phc: &str| PasswordHash::new(phc).unwrap().salt.unwrap().to_string();
        assert_ne!(salt(&a), salt(&b));
        assert!(verify("same", &a) && verify("same", &b));
    }

    #[test]
    fn unicode_and_empty_passwords_round_trip() {
        for password in ["", "pässwörd ✓", "with\nnewline"] {
            let phc = hash_with(&light_hasher(), password);
            assert!(verify(password, &phc), "{password:?}");
        }
    }

    #[test]
    fn garbage_phc_strings_are_false() {
        let good = hash_with(&light_hasher(), "pw");
        let truncated = &good[..good.len() - 4];
        let wrong_algorithm = good.replacen("argon2id", "scrypt", 1);
        for phc in [
            "",
            "pw",
            "$argon2id$",
            "$argon2id$v=19$m=notanumber,t=2,p=1$c2FsdHNhbHQ$aGFzaA",
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
            truncated,
            &wrong_algorithm,
        ] {
            assert!(!verify("pw", phc), "{phc:?}");
        }
        assert!(verify("pw", &good));
    }

    #[test]
    fn generated_passwords_are_alphanumeric_and_distinct() {
        let a = generate();
        let b = generate();
        assert_eq!(a.len(), GENERATED_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
        let phc = hash_with(&light_hasher(), &a);
        assert!(verify(&a, &phc));
    }
}
