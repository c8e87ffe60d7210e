//! Fresh, isolated databases for tests of crates that use the store (feature `testing`):
//! a temp file for SQLite, a schema of its own per test on PostgreSQL.
//!
//! PostgreSQL is found at `UPDRAFT_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`; `scripts/postgres.sh` starts it). When it cannot be
//! reached, [`TestDb::new`] panics in CI (`CI` set) and otherwise prints a notice and returns
//! `None`, so the test returns early.

use crate::{DynStore, connect};
use sqlx::Connection;

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    /// PostgreSQL through PgBouncer in transaction pooling mode, when
    /// `UPDRAFT_TEST_PGBOUNCER_URL` is set (`scripts/pgbouncer.sh start` prints it).
    PgBouncer,
}

pub struct TestDb {
    pub store: DynStore,
    url: String,
    schema: Option<(String, String)>,
    database: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

/// The PostgreSQL server tests use.
pub fn postgres_url() -> String {
    std::env::var("UPDRAFT_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

/// Adds a query parameter to a URL.
pub fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

/// Replaces the database name of a postgres URL.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

impl TestDb {
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => Some(Self::sqlite().await),
            Backend::Postgres => Self::postgres().await,
            Backend::PgBouncer => Self::pgbouncer().await,
        }
    }

    /// A database of its own behind PgBouncer (which cannot carry a per-connection
    /// `search_path`). `None` with a notice when `UPDRAFT_TEST_PGBOUNCER_URL` is unset.
    pub async fn pgbouncer() -> Option<TestDb> {
        let Ok(bouncer_url) = std::env::var("UPDRAFT_TEST_PGBOUNCER_URL") else {
            eprintln!("SKIPPED: set UPDRAFT_TEST_PGBOUNCER_URL to run this test through PgBouncer");
            return None;
        };
        let admin_url = postgres_url();
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("pgbouncer tests need PostgreSQL at {admin_url}: {e}"));
        let db = format!("updraft_t_{}", uuid::Uuid::now_v7().simple());
        sqlx::raw_sql(&format!("CREATE DATABASE {db}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let url = with_database(&bouncer_url, &db);
        let store = connect(&url).await.expect("connect through pgbouncer");
        Some(TestDb {
            store,
            url,
            schema: None,
            database: Some((admin_url, db)),
            _dir: None,
        })
    }

    /// The database name, for PgBouncer's admin commands.
    pub fn database_name(&self) -> Option<&str> {
        self.database.as_ref().map(|(_, db)| db.as_str())
    }

    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("updraft.db").display());
        let store = connect(&url).await.expect("open sqlite");
        TestDb {
            store,
            url,
            schema: None,
            database: None,
            _dir: Some(dir),
        }
    }

    pub async fn postgres() -> Option<TestDb> {
        let admin_url = postgres_url();
        let mut conn = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(c) => c,
            Err(e) => {
                let msg = format!(
                    "postgres tests need PostgreSQL at {admin_url} (set UPDRAFT_TEST_POSTGRES_URL; \
                     scripts/postgres.sh starts the local one): {e}"
                );
                if std::env::var_os("CI").is_some() {
                    panic!("{msg}");
                }
                eprintln!("SKIPPED: {msg}");
                return None;
            }
        };
        let schema = format!("updraft_t_{}", uuid::Uuid::now_v7().simple());
        sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .expect("create test schema");
        let url = with_param(&admin_url, &format!("options=-c%20search_path%3D{schema}"));
        let store = connect(&url).await.expect("connect to postgres");
        Some(TestDb {
            store,
            url,
            schema: Some((admin_url, schema)),
            database: None,
            _dir: None,
        })
    }

    /// The URL of this database, for a second connection or another process.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops what the test created. Not called when a test fails, which leaves the database
    /// for inspection.
    pub async fn finish(self) {
        if let Some((admin_url, db)) = &self.database {
            let (admin_url, db) = (admin_url.clone(), db.clone());
            drop(self.store);
            if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url).await {
                let _ = sqlx::raw_sql(&format!("DROP DATABASE {db} WITH (FORCE)"))
                    .execute(&mut c)
                    .await;
            }
            return;
        }
        if let Some((admin_url, schema)) = self.schema {
            drop(self.store);
            if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url).await {
                let _ = sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
                    .execute(&mut c)
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:6432/test", "x"),
            "postgres://u@h:6432/x"
        );
        assert_eq!(
            with_database("postgres://u@h:6432/test?sslmode=disable", "x"),
            "postgres://u@h:6432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
