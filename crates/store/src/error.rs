use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// The database could not be reached or answered with an error.
    #[error("database error: {0}")]
    Database(String),
    /// The schema is missing or older than this binary; run `updraft db migrate`.
    #[error("database schema is not migrated: {0} (run `updraft db migrate`)")]
    NotMigrated(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A uniqueness rule was violated (run id or logical date taken, ...).
    #[error("{0}")]
    Conflict(String),
    /// A batch touched rows that changed since they were read; the runs (row ids) to reload.
    #[error("stale write: runs {0:?} changed underneath the scheduler")]
    Stale(Vec<i64>),
    /// A request the store refuses (illegal transition, deleting default_pool, ...).
    #[error("{0}")]
    Invalid(String),
}

impl From<updraft_core::IllegalTransition> for Error {
    fn from(e: updraft_core::IllegalTransition) -> Self {
        Error::Invalid(e.to_string())
    }
}
