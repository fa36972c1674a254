//! The PostgreSQL store: several engine processes share one database. Claims take due
//! instances with `FOR UPDATE SKIP LOCKED`, so engines never wait on each other's rows.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult};
use sqlx::{ConnectOptions, Connection, PgPool, Postgres};

use super::StoreError;
use super::backend::{Dialect, IdHold, Statements, engine_id_digest, statements};
use crate::step::BoxFuture;

impl Dialect for Postgres {
    const BACKEND_NAME: &'static str = "postgres";
    const SQL: Statements = statements!();
    // The batch is one statement: a failure rolls its implicit transaction back.
    const AFTER_FAILED_BATCH: Option<&'static str> = None;
    // A batch is one statement, but its round trip and WAL flush leave the server idle in
    // between: two writers overlap them (measured: one writer ~950 sagas/s, two ~1,300, three
    // or six no better).
    const WRITERS: usize = 2;
    // A server: every connection busy may as well be every connection stuck.
    const BUSY_ANSWERS_PING: bool = false;

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    fn identity(found: String) -> Result<String, StoreError> {
        Ok(found)
    }

    // A session advisory lock on a connection of its own, opened like the pool's but outside
    // it: the server lets the lock go when the session ends, also when the process dies.
    fn hold_engine_id<'a>(
        pool: &'a PgPool,
        _identity: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<IdHold>, StoreError>> {
        Box::pin(async move {
            let mut session = pool.connect_options().connect().await?;
            let digest = engine_id_digest(id);
            let key = i64::from_be_bytes(digest[..8].try_into().unwrap_or_default());
            let held: bool = sqlx::query_scalar(HOLD_ENGINE_ID)
                .bind(key)
                .fetch_one(&mut session)
                .await?;
            if held {
                Ok(Some(IdHold::new(std::sync::Mutex::new(session))))
            } else {
                let _ = session.close().await;
                Ok(None)
            }
        })
    }
}

/// How long a statement waits for a connection of a pool: long enough to queue behind a busy
/// pool, short enough that a server that is down is reported within seconds (sqlx keeps trying
/// to connect until then) instead of after its default of 30 s.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Takes the session's hold on an engine id's key.
const HOLD_ENGINE_ID: &str = include_str!("hold_engine_id.sql");

/// Opens a pool of `max` connections to `url`. With `schema`, every connection's `search_path`
/// is set to that schema (created if missing), so several services can share one database, and
/// its `application_name` too, so that the server's `pg_stat_activity` tells the pools apart. A
/// statement waits at most 5 s for a connection (see [`StoreError::is_unavailable`]).
pub async fn open_pool(url: &str, schema: Option<&str>, max: u32) -> Result<PgPool, StoreError> {
    open_pool_with(url, schema, max, &[]).await
}

/// The saga store's pool: [`open_pool`] with generic plans kept to index lookups and nested
/// loops. Every store statement touches a few rows by key; the batch statement joins JSON
/// rows (estimated at 100) to the tables, and a plan chosen while the tables were small (a
/// sequential scan with a hash join) would otherwise stay cached as they grow.
pub(crate) async fn open_store_pool(
    url: &str,
    schema: Option<&str>,
    max: u32,
) -> Result<PgPool, StoreError> {
    let planner = [
        // Plan each prepared statement once: planning the batch statement costs more than
        // running it.
        ("plan_cache_mode", "force_generic_plan"),
        ("enable_seqscan", "off"),
        ("enable_hashjoin", "off"),
        ("enable_mergejoin", "off"),
    ];
    open_pool_with(url, schema, max, &planner).await
}

async fn open_pool_with(
    url: &str,
    schema: Option<&str>,
    max: u32,
    settings: &[(&str, &str)],
) -> Result<PgPool, StoreError> {
    let mut options = PgConnectOptions::from_str(url).map_err(StoreError::Database)?;
    if let Some(schema) = schema {
        if !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || schema.is_empty()
        {
            return Err(StoreError::Config(format!(
                "schema name `{schema}` must be non-empty ASCII letters, digits or `_`"
            )));
        }
        // Create the schema once with a plain connection; CREATE SCHEMA IF NOT EXISTS can race
        // between processes, so a unique violation here means another process won.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(StoreError::Database)?;
        let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&pool)
            .await
        {
            let duplicate = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "23505" || c == "42P06");
            if !duplicate {
                return Err(StoreError::Database(e));
            }
        }
        pool.close().await;
        options = options
            .options([("search_path", schema)])
            .application_name(schema);
    }
    options = options.options(settings.iter().copied());
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // No ping before each use: a broken connection fails its statement, which is retried,
        // and a round trip saved on every acquire is most of a short statement's cost.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(StoreError::Database)
}

/// The store's embedded migrations, recorded in the library's own `_saga_migrations` table.
pub(crate) fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations/store/postgres");
    migrator.dangerous_set_table_name("_saga_migrations");
    migrator
}
