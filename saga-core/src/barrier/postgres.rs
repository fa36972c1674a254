//! The barrier on PostgreSQL.

use std::time::Duration;

use sqlx::migrate::MigrateError;
use sqlx::{PgConnection, PgPool, Postgres};

use super::{BarrierDatabase, BarrierKey, MIGRATIONS_TABLE, sealed};
use crate::step::{BoxFuture, Op};

impl sealed::Sealed for Postgres {}

impl BarrierDatabase for Postgres {
    const BEGIN: &'static str = "BEGIN";

    fn insert_if_absent<'c>(
        conn: &'c mut PgConnection,
        key: &'c BarrierKey,
        op: Op,
        reason: Op,
        created_at_ms: i64,
    ) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
        Box::pin(async move {
            let done = sqlx::query(
                "INSERT INTO saga_barrier (gid, branch_id, op, barrier_id, reason, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
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
        conn: &'c mut PgConnection,
        key: &'c BarrierKey,
    ) -> BoxFuture<'c, Result<(String, Option<String>), sqlx::Error>> {
        Box::pin(async move {
            sqlx::query_as(
                "SELECT reason, reply FROM saga_barrier \
                 WHERE gid = $1 AND branch_id = $2 AND op = 'action' AND barrier_id = $3",
            )
            .bind(key.gid.as_str())
            .bind(key.branch.as_str())
            .bind(key.barrier_id.as_str())
            .fetch_one(conn)
            .await
        })
    }

    fn store_reply<'c>(
        conn: &'c mut PgConnection,
        key: &'c BarrierKey,
        reply: &'c str,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async move {
            sqlx::query(
                "UPDATE saga_barrier SET reply = $1 \
                 WHERE gid = $2 AND branch_id = $3 AND op = 'action' AND barrier_id = $4",
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
        pool: &PgPool,
        cutoff_ms: i64,
    ) -> BoxFuture<'_, Result<u64, sqlx::Error>> {
        Box::pin(async move {
            let done = sqlx::query("DELETE FROM saga_barrier WHERE created_at < $1")
                .bind(cutoff_ms)
                .execute(pool)
                .await?;
            Ok(done.rows_affected())
        })
    }

    fn run_migrations(pool: &PgPool) -> BoxFuture<'_, Result<(), MigrateError>> {
        Box::pin(async move {
            let mut migrator = sqlx::migrate!("./migrations/barrier/postgres");
            migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
            migrator.run(pool).await
        })
    }
}

/// Creates (or upgrades) the `saga_barrier` table in a PostgreSQL participant database; see
/// [`migrate`](super::migrate).
pub async fn migrate_postgres(pool: &PgPool) -> Result<(), MigrateError> {
    super::migrate(pool).await
}

/// Deletes PostgreSQL barrier rows older than `older_than`; see [`cleanup`](super::cleanup).
pub async fn cleanup_postgres(pool: &PgPool, older_than: Duration) -> Result<u64, sqlx::Error> {
    super::cleanup(pool, older_than).await
}
