//! A throw-away database per test.

use std::str::FromStr;

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, Connection, PgConnection, PgPool,
};
use thryve_bridge::db;

/// The server under test reaches Postgres here: `DATABASE_URL` if set, else the local default.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database of its own for one test, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub options: PgConnectOptions,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> Self {
        let db = Self::unmigrated().await;
        db::migrate(&db.pool)
            .await
            .expect("migrations apply to a fresh database");
        db
    }

    pub async fn unmigrated() -> Self {
        let admin =
            PgConnectOptions::from_str(&admin_url()).expect("DATABASE_URL is a valid postgres URL");
        let mut conn = admin.connect().await.unwrap_or_else(|e| {
            panic!(
                "cannot reach Postgres at {} ({e}).\nStart one (`docker compose up -d db`, or \
                 `pg_ctlcluster <version> main start`) or set DATABASE_URL to a server where this \
                 user may CREATE DATABASE.",
                admin_url()
            )
        });
        let name = format!("thryve_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("the test user may create databases");
        conn.close().await.ok();
        let options = admin.database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .connect_with(options.clone())
            .await
            .expect("connect to the new test database");
        Self {
            name,
            options,
            pool,
        }
    }

    /// A connection string for this database, for a process or pool of the test's own.
    pub fn url(&self) -> String {
        self.options.to_url_lossy().to_string()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_as_admin(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// Runs `sql` as the cluster's admin from a `Drop`, failures ignored: drop runs outside any
/// guarantee of an async context, and a thread with its own runtime is safe anywhere.
pub fn drop_as_admin(sql: String) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            if let Ok(mut conn) = PgConnection::connect(&admin_url()).await {
                let _ = sqlx::query(&sql).execute(&mut conn).await;
            }
        });
    })
    .join();
}

/// A database migrated only up to (not including) migration `version`, as an installation of
/// an older release has it; `db::migrate` then applies the rest.
pub async fn migrated_before(version: i64) -> TestDb {
    let db = TestDb::unmigrated().await;
    let before: Vec<_> = db::MIGRATOR
        .iter()
        .filter(|m| m.version < version)
        .cloned()
        .collect();
    sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(before),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    }
    .run(&db.pool)
    .await
    .expect("the earlier migrations apply");
    db
}
