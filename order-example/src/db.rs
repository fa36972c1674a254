//! Where the order system keeps its data, and the one module that tells SQLite from PostgreSQL.
//!
//! A [`Location`] comes from `--data-dir` or `--database-url` (docs/contract.md, "CLI") and opens
//! every part of the system: one SQLite file per part, or one schema per part in one PostgreSQL
//! database. Each open database is a [`Db`]. Statements are written once, with `$1`, `$2`, ...
//! placeholders (both databases read them), and run with [`sql`] on a [`Db`] or on the [`Tx`] of
//! an open transaction. The two databases differ only in how a pool is opened and how a write
//! transaction begins.

use std::path::PathBuf;

use axum::response::Response;
use saga_core::BoxFuture;
use saga_core::StepError;
use saga_core::http::SagaHeaders;
use saga_core::store::{self, Store, StoreError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::error::BoxDynError;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{
    Arguments, Connection, Database, Decode, Encode, FromRow, PgConnection, PgPool, Postgres,
    Sqlite, SqliteConnection, SqlitePool, Transaction, Type,
};

/// The environment variable `serve` and `seed` read the PostgreSQL URL from when neither
/// `--data-dir` nor `--database-url` is given.
pub const DATABASE_URL_VAR: &str = "DATABASE_URL";

/// Connections of a PostgreSQL pool (a service's or the engine's).
const PG_POOL_SIZE: u32 = 16;

/// Where the data lives: SQLite files in a directory, or a PostgreSQL database.
#[derive(Clone, Debug)]
pub enum Location {
    /// SQLite files in this directory: `{part}.db` each.
    Dir(PathBuf),
    /// A PostgreSQL database: one schema per part, each with its own pool.
    Url(String),
}

impl Location {
    /// The location the two exclusive flags name; without either, the PostgreSQL URL in
    /// [`DATABASE_URL_VAR`] when it is set, else SQLite in `./data`.
    pub fn from_flags(data_dir: Option<PathBuf>, url: Option<String>) -> anyhow::Result<Self> {
        match (data_dir, url) {
            (Some(_), Some(_)) => {
                anyhow::bail!("--data-dir and --database-url cannot be used together")
            }
            (_, Some(url)) => Ok(Location::Url(url)),
            (Some(dir), None) => Ok(Location::Dir(dir)),
            (None, None) => match std::env::var(DATABASE_URL_VAR) {
                Ok(url) if !url.is_empty() => Ok(Location::Url(url)),
                _ => Ok(Location::Dir(PathBuf::from("./data"))),
            },
        }
    }

    /// Names this location to a child `serve` or `seed`: `--data-dir DIR`, or the URL in the
    /// child's [`DATABASE_URL_VAR`], which other users of the machine cannot read as they can
    /// read a command line.
    pub fn pass_to(&self, command: &mut tokio::process::Command) {
        match self {
            Location::Dir(dir) => {
                command.arg("--data-dir").arg(dir);
            }
            Location::Url(url) => {
                command.env(DATABASE_URL_VAR, url);
            }
        }
    }

    /// Opens (creating if needed) a service's database: the SQLite file `file` or the
    /// PostgreSQL schema `schema`, with the service's migrations and the barrier table.
    /// Migrations are safe when several processes start at once (docs/contract.md, "Instance
    /// id").
    pub async fn open_service(
        &self,
        file: &str,
        schema: &str,
        mut migrator: Migrator,
    ) -> anyhow::Result<Db> {
        // Kept apart from the engine's and the barrier's migration tables.
        migrator.dangerous_set_table_name("_order_example_migrations");
        let db = match self {
            Location::Dir(dir) => {
                std::fs::create_dir_all(dir)?;
                // One connection: SQLite has a single writer, so writers queue in the pool
                // instead of sleeping on the file lock.
                let pool = store::sqlite::open_pool(&dir.join(file), true, 1).await?;
                migrator.run(&pool).await?;
                saga_core::barrier::migrate(&pool).await?;
                Db::Sqlite(pool)
            }
            Location::Url(url) => {
                let pool = store::postgres::open_pool(url, Some(schema), PG_POOL_SIZE).await?;
                migrator.run(&pool).await?;
                saga_core::barrier::migrate(&pool).await?;
                Db::Postgres(pool)
            }
        };
        Ok(db)
    }

    /// Opens the saga engine's store: `saga.db`, or the schema `saga`.
    pub async fn open_store(&self) -> Result<Store, StoreError> {
        match self {
            Location::Dir(dir) => {
                Store::sqlite(dir.join("saga.db"), store::sqlite::SqliteOptions::default()).await
            }
            Location::Url(url) => Store::postgres(url, Some("saga"), PG_POOL_SIZE).await,
        }
    }
}

/// One service's database.
#[derive(Clone, Debug)]
pub enum Db {
    /// A SQLite file.
    Sqlite(SqlitePool),
    /// A schema in a PostgreSQL database.
    Postgres(PgPool),
}

/// The connection of an open transaction, in either database: the barrier's, handed to a
/// participant's business code, or one of [`Db::transaction`].
pub enum Tx<'c> {
    /// On SQLite.
    Sqlite(&'c mut SqliteConnection),
    /// On PostgreSQL.
    Postgres(&'c mut PgConnection),
}

/// Business code run in a [`Tx`]: it may borrow the transaction, nothing else of its
/// environment (move owned values in).
pub type Work<'c, T, E> = BoxFuture<'c, Result<T, E>>;

impl Db {
    /// Whether the database answers (a health check): `SELECT 1` within `timeout`, a timeout
    /// reported as the pool's [`sqlx::Error::PoolTimedOut`]. A SQLite file has no server to
    /// lose, and its pool's one connection is busy most of the time under load: it is asked
    /// only when that connection is idle, and a busy one counts as an answer.
    pub async fn ping(&self, timeout: std::time::Duration) -> sqlx::Result<()> {
        let ping = async {
            match self {
                Db::Sqlite(pool) => match pool.try_acquire() {
                    Some(mut conn) => sql("SELECT 1").execute(Target::SqliteTx(&mut conn)).await,
                    None => Ok(0),
                },
                // A connection the server dropped (a restart) fails once and is closed: the
                // next try gets a fresh one.
                Db::Postgres(_) => match sql("SELECT 1").execute(self).await {
                    Err(_) => sql("SELECT 1").execute(self).await,
                    done => done,
                },
            }
        };
        match tokio::time::timeout(timeout, ping).await {
            Ok(done) => done.map(|_| ()),
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }

    /// Runs `business` inside the barrier of the step call `saga` on this database and answers
    /// with saga_core's reply for the outcome (see [`SagaHeaders::call`]).
    pub async fn call<T, F>(&self, saga: &SagaHeaders, business: F) -> Response
    where
        T: Serialize + DeserializeOwned + 'static,
        F: for<'c> FnOnce(Tx<'c>) -> Work<'c, T, StepError>,
    {
        match self {
            Db::Sqlite(pool) => {
                saga.call::<Sqlite, _, _, _>(pool, move |conn| business(Tx::Sqlite(conn)))
                    .await
            }
            Db::Postgres(pool) => {
                saga.call::<Postgres, _, _, _>(pool, move |conn| business(Tx::Postgres(conn)))
                    .await
            }
        }
    }

    /// Runs `work` in a transaction of its own, committed when it succeeds and rolled back when
    /// it fails. On SQLite the transaction takes the write lock at once (`BEGIN IMMEDIATE`), so
    /// that racing writers wait for each other instead of failing on the upgrade.
    pub async fn transaction<T, E, F>(&self, work: F) -> Result<T, E>
    where
        E: From<sqlx::Error>,
        F: for<'c> FnOnce(Tx<'c>) -> Work<'c, T, E>,
    {
        // A commit or rollback that failed (a full disk, a lost connection) can leave the
        // connection counting itself inside a transaction, and every later BEGIN on it would
        // fail: such a connection is closed, not pooled again.
        match self {
            Db::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                let tx = conn
                    .begin_with(sqlx::SqlStr::from_static("BEGIN IMMEDIATE"))
                    .await?;
                let done = commit_after(tx, move |conn| work(Tx::Sqlite(conn))).await;
                if conn.is_in_transaction() {
                    conn.close_on_drop();
                }
                done
            }
            Db::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                let tx = conn.begin().await?;
                let done = commit_after(tx, move |conn| work(Tx::Postgres(conn))).await;
                if conn.is_in_transaction() {
                    conn.close_on_drop();
                }
                done
            }
        }
    }
}

/// Runs `work` in `tx`, then commits it, or rolls it back when `work` fails.
async fn commit_after<DB, T, E, F>(mut tx: Transaction<'_, DB>, work: F) -> Result<T, E>
where
    DB: Database,
    E: From<sqlx::Error>,
    F: for<'c> FnOnce(&'c mut DB::Connection) -> Work<'c, T, E>,
{
    match work(&mut tx).await {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(e) => {
            // Now rather than on the connection's next use, so that its locks go at once; a
            // failed rollback leaves a broken connection, which the pool drops.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// A value that both databases can bind to a parameter.
pub trait Param:
    for<'q> Encode<'q, Sqlite> + Type<Sqlite> + for<'q> Encode<'q, Postgres> + Type<Postgres>
{
}

impl<T> Param for T where
    T: for<'q> Encode<'q, Sqlite> + Type<Sqlite> + for<'q> Encode<'q, Postgres> + Type<Postgres>
{
}

/// A column value that both databases can decode.
pub trait Scalar:
    for<'r> Decode<'r, Sqlite>
    + Type<Sqlite>
    + for<'r> Decode<'r, Postgres>
    + Type<Postgres>
    + Send
    + Unpin
{
}

impl<T> Scalar for T where
    T: for<'r> Decode<'r, Sqlite>
        + Type<Sqlite>
        + for<'r> Decode<'r, Postgres>
        + Type<Postgres>
        + Send
        + Unpin
{
}

/// A row (a tuple of columns) that both databases can decode.
pub trait Record:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

impl<T> Record for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

/// Where a [`Statement`] runs: a database's pool, or an open transaction.
pub enum Target<'e> {
    /// A connection of a SQLite pool, outside any transaction.
    SqlitePool(&'e SqlitePool),
    /// A SQLite transaction.
    SqliteTx(&'e mut SqliteConnection),
    /// A connection of a PostgreSQL pool, outside any transaction.
    PgPool(&'e PgPool),
    /// A PostgreSQL transaction.
    PgTx(&'e mut PgConnection),
}

impl<'e> From<&'e Db> for Target<'e> {
    fn from(db: &'e Db) -> Self {
        match db {
            Db::Sqlite(pool) => Target::SqlitePool(pool),
            Db::Postgres(pool) => Target::PgPool(pool),
        }
    }
}

impl<'e> From<&'e mut Tx<'_>> for Target<'e> {
    fn from(tx: &'e mut Tx<'_>) -> Self {
        match tx {
            Tx::Sqlite(conn) => Target::SqliteTx(conn),
            Tx::Postgres(conn) => Target::PgTx(conn),
        }
    }
}

/// A statement and its parameters, for either database. Build it with [`sql`].
pub struct Statement<'q> {
    text: &'static str,
    /// The values in order, encoded only for the database that runs the statement.
    params: Vec<Box<dyn Bind + 'q>>,
}

/// A bound value, encodable for either database.
trait Bind: Send {
    fn add_to_sqlite(&self, args: &mut SqliteArguments) -> Result<(), BoxDynError>;
    fn add_to_postgres(&self, args: &mut PgArguments) -> Result<(), BoxDynError>;
}

impl<T: Param + Send> Bind for T {
    fn add_to_sqlite(&self, args: &mut SqliteArguments) -> Result<(), BoxDynError> {
        args.add(self)
    }

    fn add_to_postgres(&self, args: &mut PgArguments) -> Result<(), BoxDynError> {
        args.add(self)
    }
}

/// The statement `text`, with `$1`, `$2`, ... placeholders; bind their values in order.
pub fn sql<'q>(text: &'static str) -> Statement<'q> {
    Statement {
        text,
        params: Vec::new(),
    }
}

impl<'q> Statement<'q> {
    /// Binds the next parameter.
    pub fn bind(mut self, value: impl Param + Send + 'q) -> Self {
        self.params.push(Box::new(value));
        self
    }

    /// The parameters encoded for SQLite.
    fn sqlite(&self) -> sqlx::Result<SqliteArguments> {
        let mut args = SqliteArguments::default();
        for param in &self.params {
            param
                .add_to_sqlite(&mut args)
                .map_err(sqlx::Error::Encode)?;
        }
        Ok(args)
    }

    /// The parameters encoded for PostgreSQL.
    fn postgres(&self) -> sqlx::Result<PgArguments> {
        let mut args = PgArguments::default();
        for param in &self.params {
            param
                .add_to_postgres(&mut args)
                .map_err(sqlx::Error::Encode)?;
        }
        Ok(args)
    }

    /// Runs the statement and returns how many rows it changed.
    pub async fn execute<'e>(self, target: impl Into<Target<'e>>) -> sqlx::Result<u64> {
        let text = self.text;
        let changed = match target.into() {
            Target::SqlitePool(pool) => sqlx::query_with(text, self.sqlite()?)
                .execute(pool)
                .await?
                .rows_affected(),
            Target::SqliteTx(conn) => sqlx::query_with(text, self.sqlite()?)
                .execute(conn)
                .await?
                .rows_affected(),
            Target::PgPool(pool) => sqlx::query_with(text, self.postgres()?)
                .execute(pool)
                .await?
                .rows_affected(),
            Target::PgTx(conn) => sqlx::query_with(text, self.postgres()?)
                .execute(conn)
                .await?
                .rows_affected(),
        };
        Ok(changed)
    }

    /// Runs the query and returns its first row, if any.
    pub async fn fetch_optional<'e, R: Record>(
        self,
        target: impl Into<Target<'e>>,
    ) -> sqlx::Result<Option<R>> {
        let text = self.text;
        match target.into() {
            Target::SqlitePool(pool) => {
                sqlx::query_as_with(text, self.sqlite()?)
                    .fetch_optional(pool)
                    .await
            }
            Target::SqliteTx(conn) => {
                sqlx::query_as_with(text, self.sqlite()?)
                    .fetch_optional(conn)
                    .await
            }
            Target::PgPool(pool) => {
                sqlx::query_as_with(text, self.postgres()?)
                    .fetch_optional(pool)
                    .await
            }
            Target::PgTx(conn) => {
                sqlx::query_as_with(text, self.postgres()?)
                    .fetch_optional(conn)
                    .await
            }
        }
    }

    /// Runs the query and returns the first column of its first row, if any.
    pub async fn fetch_optional_scalar<'e, T: Scalar>(
        self,
        target: impl Into<Target<'e>>,
    ) -> sqlx::Result<Option<T>> {
        let text = self.text;
        match target.into() {
            Target::SqlitePool(pool) => {
                sqlx::query_scalar_with(text, self.sqlite()?)
                    .fetch_optional(pool)
                    .await
            }
            Target::SqliteTx(conn) => {
                sqlx::query_scalar_with(text, self.sqlite()?)
                    .fetch_optional(conn)
                    .await
            }
            Target::PgPool(pool) => {
                sqlx::query_scalar_with(text, self.postgres()?)
                    .fetch_optional(pool)
                    .await
            }
            Target::PgTx(conn) => {
                sqlx::query_scalar_with(text, self.postgres()?)
                    .fetch_optional(conn)
                    .await
            }
        }
    }
}
