-- Web UI sessions signed out before their token expired: refused until `expires_at`, when the
-- token would be refused anyway (rows past it are deleted on the next sign-out).
CREATE TABLE IF NOT EXISTS revoked_session (
    session_id  TEXT PRIMARY KEY,
    expires_at  TEXT NOT NULL
);
