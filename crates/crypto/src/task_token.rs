//! Task-try tokens for the Task Execution API: an HS256 JWT ([`crate::jwt`]) whose subject is one
//! task instance and whose `try_number` claim names one try of it, with the audience Airflow's
//! task tokens carry (`urn:airflow.apache.org:task`). A token of a user (the REST API's) has no
//! such audience and is refused here, and a task token names no user, so neither kind is
//! accepted where the other is expected.

use serde_json::{Value, json};

/// The `aud` claim of every task token (Airflow's `[execution_api] jwt_audience`).
pub const AUDIENCE: &str = "urn:airflow.apache.org:task";

/// What a valid task token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The task instance id (`sub`), as text.
    pub ti_id: String,
    pub try_number: u32,
    /// Issued at and expiry, seconds since the epoch.
    pub iat: i64,
    pub exp: i64,
}

impl Claims {
    /// Whether a response should carry a fresh token: less than a fifth of the lifetime (at
    /// least 30 seconds) is left, the rule of Airflow's token-refresh middleware.
    pub fn needs_refresh(&self, now_unix: i64) -> bool {
        let lifetime = (self.exp - self.iat).max(0);
        let margin = (lifetime / 5).max(30);
        self.exp - now_unix < margin
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Jwt(#[from] crate::Error),
    #[error("token is not a task token: {0}")]
    NotATaskToken(&'static str),
}

/// Signs a token for try `try_number` of task instance `ti_id`, valid for `lifetime_secs` from
/// `now_unix`.
pub fn issue(
    secret: &[u8],
    ti_id: &str,
    try_number: u32,
    lifetime_secs: i64,
    now_unix: i64,
) -> String {
    let claims = json!({
        "sub": ti_id,
        "try_number": try_number,
        "aud": AUDIENCE,
        "scope": "execution",
        "iat": now_unix,
        "nbf": now_unix,
        "exp": now_unix + lifetime_secs.max(1),
    });
    crate::jwt::sign(&claims, secret)
}

/// A fresh token with the same subject and try and the same lifetime as `claims`.
pub fn reissue(secret: &[u8], claims: &Claims, now_unix: i64) -> String {
    issue(
        secret,
        &claims.ti_id,
        claims.try_number,
        claims.exp - claims.iat,
        now_unix,
    )
}

/// Verifies signature, expiry and audience, and reads the subject and try.
pub fn verify(token: &str, secret: &[u8], now_unix: i64) -> Result<Claims, Error> {
    let claims = crate::jwt::verify(token, secret, now_unix)?;
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == AUDIENCE,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(AUDIENCE)),
        _ => false,
    };
    if !aud_ok {
        return Err(Error::NotATaskToken(
            "its audience is not the task audience",
        ));
    }
    let ti_id = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or(Error::NotATaskToken("it has no subject"))?
        .to_string();
    let try_number = claims
        .get("try_number")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or(Error::NotATaskToken("it names no try"))?;
    let exp = claims.get("exp").and_then(Value::as_f64).unwrap_or(0.0) as i64;
    let iat = claims
        .get("iat")
        .and_then(Value::as_f64)
        .map_or(exp, |v| v as i64);
    Ok(Claims {
        ti_id,
        try_number,
        iat,
        exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret-of-reasonable-length";
    const NOW: i64 = 1_700_000_000;

    #[test]
    fn a_token_names_its_try_and_expires() {
        let t = issue(SECRET, "ti-1", 3, 600, NOW);
        let c = verify(&t, SECRET, NOW + 10).unwrap();
        assert_eq!(c.ti_id, "ti-1");
        assert_eq!(c.try_number, 3);
        assert_eq!(c.exp - c.iat, 600);
        assert!(matches!(
            verify(&t, SECRET, NOW + 600),
            Err(Error::Jwt(crate::Error::Expired))
        ));
        assert!(matches!(
            verify(&t, b"another-secret-of-some-length!!", NOW),
            Err(Error::Jwt(crate::Error::BadSignature))
        ));
    }

    #[test]
    fn a_user_token_is_not_a_task_token() {
        let user = crate::jwt::sign(
            &json!({"sub": "admin", "role": "admin", "iat": NOW, "exp": NOW + 60}),
            SECRET,
        );
        assert!(matches!(
            verify(&user, SECRET, NOW),
            Err(Error::NotATaskToken(_))
        ));
        let no_try = crate::jwt::sign(
            &json!({"sub": "ti", "aud": AUDIENCE, "iat": NOW, "exp": NOW + 60}),
            SECRET,
        );
        assert!(matches!(
            verify(&no_try, SECRET, NOW),
            Err(Error::NotATaskToken(_))
        ));
    }

    #[test]
    fn refresh_when_a_fifth_or_thirty_seconds_are_left() {
        let c = verify(&issue(SECRET, "ti", 1, 600, NOW), SECRET, NOW).unwrap();
        assert!(!c.needs_refresh(NOW + 479));
        assert!(c.needs_refresh(NOW + 481));
        // short lifetimes refresh in their last 30 seconds
        let c = verify(&issue(SECRET, "ti", 1, 100, NOW), SECRET, NOW).unwrap();
        assert!(!c.needs_refresh(NOW + 69));
        assert!(c.needs_refresh(NOW + 71));
        let fresh = verify(&reissue(SECRET, &c, NOW + 90), SECRET, NOW + 90).unwrap();
        assert_eq!(fresh.exp, NOW + 190);
        assert_eq!(fresh.try_number, 1);
    }
}
