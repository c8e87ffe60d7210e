//! Fresh, isolated databases for the conformance suite: a temp file for SQLite, a schema of
//! its own per test on PostgreSQL (through `search_path`), a database of its own per test
//! through PgBouncer (which drops the `options` startup parameter that sets `search_path`).

use sqlx::Connection;
use updraft_store::testing::{postgres_url, with_database, with_param};
use updraft_store::{DynStore, connect};

pub struct Harness {
    pub store: DynStore,
    url: String,
    dead_url: String,
    cleanup: Cleanup,
    _dir: Option<tempfile::TempDir>,
}

enum Cleanup {
    Nothing,
    DropSchema { admin_url: String, schema: String },
    DropDatabase { admin_url: String, db: String },
}

fn unique_name() -> String {
    format!("updraft_t_{}", uuid::Uuid::now_v7().simple())
}

/// Connects to the admin database, or explains why PostgreSQL tests cannot run: fatal in CI,
/// a printed notice otherwise.
async fn admin(url: &str, what: &str) -> Option<sqlx::PgConnection> {
    match sqlx::PgConnection::connect(url).await {
        Ok(c) => Some(c),
        Err(e) => {
            let msg = format!(
                "{what} tests need PostgreSQL at {url} (set UPDRAFT_TEST_POSTGRES_URL; \
                 scripts/postgres.sh starts the local one): {e}"
            );
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            eprintln!("SKIPPED: {msg}");
            None
        }
    }
}

impl Harness {
    pub async fn sqlite() -> Option<Harness> {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("updraft.db").display());
        let store = connect(&url).await.expect("open sqlite");
        Some(Harness {
            store,
            url,
            dead_url: format!(
                "sqlite://{}",
                dir.path().join("missing-dir").join("x.db").display()
            ),
            cleanup: Cleanup::Nothing,
            _dir: Some(dir),
        })
    }

    /// `sqlite::memory:`: one connection, so no second process can see it.
    pub async fn sqlite_memory() -> Option<Harness> {
        let url = "sqlite::memory:".to_string();
        let store = connect(&url).await.expect("open sqlite memory");
        Some(Harness {
            store,
            url,
            dead_url: "sqlite:///nonexistent-updraft-dir/x.db".into(),
            cleanup: Cleanup::Nothing,
            _dir: None,
        })
    }

    pub async fn postgres() -> Option<Harness> {
        let admin_url = postgres_url();
        let mut conn = admin(&admin_url, "postgres").await?;
        let schema = unique_name();
        sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .expect("create test schema");
        let url = with_param(&admin_url, &format!("options=-c%20search_path%3D{schema}"));
        let store = connect(&url).await.expect("connect to postgres");
        Some(Harness {
            store,
            url,
            dead_url: "postgres://postgres@127.0.0.1:1/test".into(),
            cleanup: Cleanup::DropSchema { admin_url, schema },
            _dir: None,
        })
    }

    /// Through PgBouncer in transaction pooling mode, when `UPDRAFT_TEST_PGBOUNCER_URL` is set
    /// (`scripts/pgbouncer.sh start` prints it). Needs a PgBouncer that routes any database
    /// name to the server (`* = host=...`), as the script configures.
    pub async fn pgbouncer() -> Option<Harness> {
        let Ok(bouncer_url) = std::env::var("UPDRAFT_TEST_PGBOUNCER_URL") else {
            eprintln!("SKIPPED: set UPDRAFT_TEST_PGBOUNCER_URL to run the suite through PgBouncer");
            return None;
        };
        let admin_url = postgres_url();
        let mut conn = admin(&admin_url, "pgbouncer").await?;
        let db = unique_name();
        sqlx::raw_sql(&format!("CREATE DATABASE {db}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let url = with_database(&bouncer_url, &db);
        let store = connect(&url).await.expect("connect through pgbouncer");
        Some(Harness {
            store,
            url,
            dead_url: "postgres://postgres@127.0.0.1:1/test".into(),
            cleanup: Cleanup::DropDatabase { admin_url, db },
            _dir: None,
        })
    }

    /// The store, migrated.
    pub async fn migrated(&self) -> &DynStore {
        self.store.migrate().await.expect("migrate");
        &self.store
    }

    /// A second, independent connection pool on the same database (another process).
    pub async fn another(&self) -> DynStore {
        connect(&self.url).await.expect("second connection")
    }

    /// Runs SQL text on a connection of its own, as an operator or an older binary would (not
    /// for `sqlite::memory:`, where another connection is another database).
    pub async fn raw_sql(&self, sql: &str) {
        if self.url.starts_with("sqlite:") {
            let mut c = sqlx::SqliteConnection::connect(&self.url)
                .await
                .expect("sqlite connection");
            sqlx::raw_sql(sql).execute(&mut c).await.expect("raw sql");
            c.close().await.expect("close sqlite connection");
        } else {
            let mut c = sqlx::PgConnection::connect(&self.url)
                .await
                .expect("postgres connection");
            sqlx::raw_sql(sql).execute(&mut c).await.expect("raw sql");
            c.close().await.expect("close postgres connection");
        }
    }

    pub fn dead_url(&self) -> &str {
        &self.dead_url
    }

    /// Drops what the test created; skipped when the test failed, to leave it for inspection.
    pub async fn finish(self) {
        match self.cleanup {
            Cleanup::Nothing => {}
            Cleanup::DropSchema { admin_url, schema } => {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
                        .execute(&mut c)
                        .await;
                }
            }
            Cleanup::DropDatabase { admin_url, db } => {
                drop(self.store);
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::raw_sql(&format!("DROP DATABASE {db} WITH (FORCE)"))
                        .execute(&mut c)
                        .await;
                }
            }
        }
    }
}
