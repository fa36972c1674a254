//! `--prefill N`: a store that already holds N finished sagas, as a store in service does,
//! before a coordinator run. One real saga runs through the engine first (the template); the
//! other N - 1 are copies of its rows (instance, steps, finished calls), each with its own gid,
//! input and times, made by the bulk SQL beside this module in chunks of [`CHUNK`] sagas per
//! transaction. So every row is one a finished saga leaves, written by the engine's own code,
//! and the prefill stays fast (some 10 to 30 s for 1,000,000 sagas of four steps on two cores).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use saga_core::Waited;
use saga_core::machine::SagaStatus;
use saga_core::store;
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};

use super::child::{DataSet, STORE_FILE, STORE_SCHEMA};
use super::measure;
use super::noop::NoopSaga;
use crate::db::Location;

/// Sagas copied per transaction.
pub const CHUNK: u64 = 50_000;

/// The bulk statements of one dialect, each run once per chunk.
struct Statements {
    instances: &'static str,
    steps: &'static str,
    attempts: &'static str,
    settle: &'static str,
}

const SQLITE: Statements = Statements {
    instances: include_str!("prefill/sqlite/instances.sql"),
    steps: include_str!("prefill/sqlite/steps.sql"),
    attempts: include_str!("prefill/sqlite/attempts.sql"),
    settle: include_str!("prefill/sqlite/settle.sql"),
};

const POSTGRES: Statements = Statements {
    instances: include_str!("prefill/postgres/instances.sql"),
    steps: include_str!("prefill/postgres/steps.sql"),
    attempts: include_str!("prefill/postgres/attempts.sql"),
    settle: include_str!("prefill/postgres/settle.sql"),
};

/// The gids of a prefill: `{prefix}-prefill-{n}`, n from 0 (the template) to `sagas - 1`.
pub fn gid_prefix(prefix: &str) -> String {
    format!("{prefix}-prefill")
}

/// The chunks of copies 1 to `sagas - 1` (0 is the template), `CHUNK` at most each, as
/// inclusive `(first, last)` numbers.
pub fn chunks(sagas: u64, chunk: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut first = 1;
    while first < sagas {
        let last = (first + chunk.max(1) - 1).min(sagas - 1);
        out.push((first, last));
        first = last + 1;
    }
    out
}

/// Puts `sagas` finished sagas of `saga` into the store of `data` (which must hold none of
/// this prefix yet); returns how long it took.
pub async fn run(
    data: &DataSet,
    saga: NoopSaga,
    prefix: &str,
    sagas: u64,
) -> anyhow::Result<Duration> {
    run_in_chunks(data, saga, prefix, sagas, CHUNK).await
}

/// [`run`], `chunk` sagas per transaction.
async fn run_in_chunks(
    data: &DataSet,
    saga: NoopSaga,
    prefix: &str,
    sagas: u64,
    chunk: u64,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let gids = gid_prefix(prefix);
    let template = format!("{gids}-0");
    run_template(data, saga, prefix, &template).await?;
    let bar = measure::progress(sagas, &format!("prefill {}", saga.steps()));
    bar.inc(1);
    match data.location() {
        Location::Dir(dir) => {
            let pool = store::sqlite::open_pool(&dir.join(STORE_FILE), true, 1).await?;
            copy(&pool, &SQLITE, &gids, &template, (sagas, chunk), &bar).await?;
            pool.close().await;
        }
        Location::Url(url) => {
            let pool = store::postgres::open_pool(&url, Some(STORE_SCHEMA), 1).await?;
            copy(&pool, &POSTGRES, &gids, &template, (sagas, chunk), &bar).await?;
            pool.close().await;
        }
    }
    bar.finish_and_clear();
    Ok(started.elapsed())
}

/// Runs the template saga through an engine on the store, to its end.
async fn run_template(
    data: &DataSet,
    saga: NoopSaga,
    prefix: &str,
    template: &str,
) -> anyhow::Result<()> {
    let engine = super::coordinator::start_engine(data, saga, prefix).await?;
    let waited = saga
        .submit_and_wait(&engine, template, 0, Duration::from_secs(60))
        .await;
    engine.shutdown().await;
    match waited.context("running the prefill's template saga")? {
        Waited::Terminal(view) if view.status == SagaStatus::Succeeded => Ok(()),
        Waited::Terminal(view) | Waited::TimedOut(view) => {
            bail!("the prefill's template saga ended {}", view.status)
        }
    }
}

/// Copies the template saga `sagas - 1` times, `chunk` copies a transaction, with the
/// dialect's `sql`.
async fn copy<DB>(
    pool: &Pool<DB>,
    sql: &Statements,
    gids: &str,
    template: &str,
    (sagas, chunk): (u64, u64),
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()>
where
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'p> &'p Pool<DB>: Executor<'p, Database = DB>,
{
    let last = sagas as i64;
    for (first, end) in chunks(sagas, chunk) {
        let mut tx = pool.begin().await?;
        for statement in [sql.instances, sql.steps, sql.attempts] {
            sqlx::query(statement)
                .bind(first as i64)
                .bind(end as i64)
                .bind(gids)
                .bind(template)
                .bind(last)
                .execute(&mut *tx)
                .await
                .context("copying the template saga")?;
        }
        tx.commit().await?;
        bar.inc(end - first + 1);
    }
    pool.execute(sql.settle).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use saga_core::store::AttemptRecord;

    /// Prefills `sagas` of `saga` and checks that every copy is the template's rows with its
    /// own gid, input and times, and that the engine reads them as finished sagas.
    async fn every_copy_is_a_finished_saga(data: DataSet, saga: NoopSaga, sagas: u64) {
        let prefix = "t";
        // Chunks of 5: several transactions, the last one short.
        run_in_chunks(&data, saga, prefix, sagas, 5).await.unwrap();
        let store = data.location().open_store().await.unwrap();
        let counts = store.count_by_status().await.unwrap();
        assert_eq!(counts, vec![(SagaStatus::Succeeded, sagas as i64)]);
        let gids = gid_prefix(prefix);
        let template = store.load(&format!("{gids}-0")).await.unwrap().unwrap();
        let template_attempts = store.attempts(&template.gid).await.unwrap();
        assert_eq!(template.state.steps.len(), saga.steps() as usize);
        assert_eq!(template_attempts.len(), saga.steps() as usize);
        let strip =
            |a: &AttemptRecord| (a.step.clone(), a.op, a.attempt, a.owner.clone(), a.outcome);
        for n in 1..sagas {
            let gid = format!("{gids}-{n}");
            let copy = store.load(&gid).await.unwrap().unwrap();
            assert_eq!(copy.saga, template.saga);
            assert_eq!(copy.fingerprint, template.fingerprint);
            assert_eq!(copy.state, template.state);
            assert_eq!(copy.step_names, template.step_names);
            assert_eq!(copy.input, serde_json::json!({ "n": n }));
            assert_eq!(copy.owner, template.owner);
            let before = (sagas - n) as i64;
            assert_eq!(copy.created_at, template.created_at - before);
            assert_eq!(copy.updated_at, template.updated_at - before);
            let attempts = store.attempts(&gid).await.unwrap();
            assert_eq!(
                attempts.iter().map(strip).collect::<Vec<_>>(),
                template_attempts.iter().map(strip).collect::<Vec<_>>()
            );
            for (a, t) in attempts.iter().zip(&template_attempts) {
                assert_eq!(a.started_at, t.started_at - before);
                assert_eq!(a.finished_at, t.finished_at - before);
            }
        }
        assert!(
            store
                .load(&format!("{gids}-{sagas}"))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_sqlite_prefill_copies_the_template_saga() {
        let data = DataSet::Dir(saga_testkit::temp_dir());
        every_copy_is_a_finished_saga(data, NoopSaga::Four, 23).await;
    }

    #[tokio::test]
    async fn a_postgres_prefill_copies_the_template_saga() {
        let url = saga_testkit::postgres().fresh_database();
        let data = DataSet::Postgres {
            admin_url: url.clone(),
            name: String::new(),
            url,
        };
        every_copy_is_a_finished_saga(data, NoopSaga::Two, 17).await;
    }

    #[test]
    fn chunks_cover_every_copy_once() {
        assert_eq!(chunks(0, 10), vec![]);
        assert_eq!(chunks(1, 10), vec![]);
        assert_eq!(chunks(2, 10), vec![(1, 1)]);
        assert_eq!(chunks(21, 10), vec![(1, 10), (11, 20)]);
        assert_eq!(chunks(23, 10), vec![(1, 10), (11, 20), (21, 22)]);
        assert_eq!(chunks(3, 0), vec![(1, 1), (2, 2)]);
    }
}
