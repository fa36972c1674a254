//! The barrier on SQLite.

use std::time::Duration;

use sqlx::migrate::MigrateError;
use sqlx::{Sqlite, SqliteConnection, SqlitePool};

use super::{BarrierDatabase, BarrierKey, MIGRATIONS_TABLE, sealed};
use crate::step::{BoxFuture, Op};

impl sealed::Sealed for Sqlite {}

impl BarrierDatabase for Sqlite {
    const BEGIN: &'static str = "BEGIN IMMEDIATE";

    fn insert_if_absent<'c>(
        conn: &'c mut SqliteConnection,
        key: &'c BarrierKey,
        op: Op,
        reason: Op,
        created_at_ms: i64,
    ) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
        Box::pin(async move {
            let done = sqlx::query(
                "INSERT INTO saga_barrier (gid, branch_id, op, barrier_id, reason, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(key.gid.as_str())
            .bind(key.branch.as_str())
            .bind(op.as_str())
            .bind(key.barrier_id.as_str())
            .bind(reason.as_str())
            .bind(created_at_ms)
            .execute(conn)
            .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    fn action_row<'c>(
        conn: &'c mut SqliteConnection,
        key: &'c BarrierKey,
    ) -> BoxFuture<'c, Result<(String, Option<String>), sqlx::Error>> {
        Box::pin(async move {
            sqlx::query_as(
                "SELECT reason, reply FROM saga_barrier \
                 WHERE gid = ? AND branch_id = ? AND op = 'action' AND barrier_id = ?",
            )
            .bind(key.gid.as_str())
            .bind(key.branch.as_str())
            .bind(key.barrier_id.as_str())
            .fetch_one(conn)
            .await
        })
    }

    fn store_reply<'c>(
        conn: &'c mut SqliteConnection,
        key: &'c BarrierKey,
        reply: &'c str,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async move {
            sqlx::query(
                "UPDATE saga_barrier SET reply = ? \
                 WHERE gid = ? AND branch_id = ? AND op = 'action' AND barrier_id = ?",
            )
            .bind(reply)
            .bind(key.gid.as_str())
            .bind(key.branch.as_str())
            .bind(key.barrier_id.as_str())
            .execute(conn)
            .await?;
            Ok(())
        })
    }

    fn delete_created_before(
        pool: &SqlitePool,
        cutoff_ms: i64,
    ) -> BoxFuture<'_, Result<u64, sqlx::Error>> {
        Box::pin(async move {
            let done = sqlx::query("DELETE FROM saga_barrier WHERE created_at < ?")
                .bind(cutoff_ms)
                .execute(pool)
                .await?;
            Ok(done.rows_affected())
        })
    }

    fn run_migrations(pool: &SqlitePool) -> BoxFuture<'_, Result<(), MigrateError>> {
        Box::pin(async move {
            let mut migrator = sqlx::migrate!("./migrations/barrier/sqlite");
            migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
            migrator.run(pool).await
        })
    }
}

/// Creates (or upgrades) the `saga_barrier` table in an SQLite participant database; see
/// [`migrate`](super::migrate).
pub async fn migrate_sqlite(pool: &SqlitePool) -> Result<(), MigrateError> {
    super::migrate(pool).await
}

/// Deletes SQLite barrier rows older than `older_than`; see [`cleanup`](super::cleanup).
pub async fn cleanup_sqlite(pool: &SqlitePool, older_than: Duration) -> Result<u64, sqlx::Error> {
    super::cleanup(pool, older_than).await
}
