//! The one seam between the store and a database. [`Backend`] is what the store calls;
//! [`SqlBackend`] implements it once, over sqlx, for every [`Dialect`]. A dialect supplies
//! only its SQL (the `.sql` files of `sqlite/` and `postgres/`) and how many group-commit
//! writers it runs.

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{
    ColumnIndex, Connection, Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Type,
};

use super::StoreError;
use super::batch::BatchRow;
use super::record::{AttemptOutcome, AttemptRecord, InstanceRecord, ListQuery, SagaSummary};
use crate::machine::{Phase, SagaState, SagaStatus, StepState, StepStatus};
use crate::step::{BoxFuture, Op};
use crate::trace::TraceParent;

/// A row of `unknown_definitions.sql`: `(gid, saga, fingerprint)`.
pub(crate) type UnknownRow = (String, String, String);

/// The statements of one dialect, one per store operation.
pub(crate) struct Statements {
    /// One batch of the group-commit writer, reading five JSON arrays (see `BatchPlan`) and
    /// returning `(kind, gid, fence)` rows.
    pub batch: &'static str,
    /// An instance with its steps; binds the gid.
    pub load: &'static str,
    /// The finished calls of an instance; binds the gid.
    pub attempts: &'static str,
    /// The newest instances; binds the limit.
    pub list_all: &'static str,
    /// The newest instances of one status; binds the status and the limit.
    pub list_status: &'static str,
    /// A page of the newest instances matching a [`ListQuery`]; binds status, saga name and
    /// gid prefix (each `''` for any), the created_at and gid to start below, the limit.
    pub list_page: &'static str,
    /// Instances by status.
    pub count_by_status: &'static str,
    /// Unfinished, unleased instances of unknown definitions; binds fingerprints, now, limit.
    pub unknown_definitions: &'static str,
    /// Claims due instances; binds owner, lease end, now, limit, fingerprints.
    pub claim_due: &'static str,
    /// Takes back an owner's unfinished instances; binds owner, lease end, fingerprints.
    pub claim_own: &'static str,
    /// Takes one instance; binds owner, lease end, gid.
    pub claim_one: &'static str,
    /// Renews leases; binds lease end, owner, gids.
    pub renew: &'static str,
    /// An owner's expired leases; binds owner, now.
    pub own_expired: &'static str,
    /// Releases an owner's leases; binds owner.
    pub release_owner: &'static str,
    /// Deletes finished instances' steps, calls, then the instances; each binds the cutoff.
    pub cleanup: [&'static str; 3],
    /// What identifies the store's database (see [`Dialect::identity`]).
    pub identity: &'static str,
    /// A trivial query that tells whether the database answers.
    pub ping: &'static str,
}

/// The [`Statements`] of a dialect, read from the `.sql` files beside the module that invokes it
/// (`sqlite/`, `postgres/`): one file per statement, named after the field.
macro_rules! statements {
    () => {
        $crate::store::backend::Statements {
            batch: include_str!("batch.sql"),
            load: include_str!("load.sql"),
            attempts: include_str!("attempts.sql"),
            list_all: include_str!("list_all.sql"),
            list_status: include_str!("list_status.sql"),
            list_page: include_str!("list_page.sql"),
            count_by_status: include_str!("count_by_status.sql"),
            unknown_definitions: include_str!("unknown_definitions.sql"),
            claim_due: include_str!("claim_due.sql"),
            claim_own: include_str!("claim_own.sql"),
            claim_one: include_str!("claim_one.sql"),
            renew: include_str!("renew.sql"),
            own_expired: include_str!("own_expired.sql"),
            release_owner: include_str!("release_owner.sql"),
            cleanup: [
                include_str!("cleanup_steps.sql"),
                include_str!("cleanup_attempts.sql"),
                include_str!("cleanup_instances.sql"),
            ],
            identity: include_str!("identity.sql"),
            ping: include_str!("ping.sql"),
        }
    };
}
pub(crate) use statements;

/// A database the store runs on.
pub(crate) trait Dialect: Database {
    /// `sqlite` or `postgres`.
    const BACKEND_NAME: &'static str;
    /// Its statements.
    const SQL: Statements;
    /// Run on the batch's connection when the batch failed, if the failure can leave a
    /// transaction open (SQLite's batch is several statements).
    const AFTER_FAILED_BATCH: Option<&'static str>;
    /// Group-commit writers working side by side.
    const WRITERS: usize;
    /// Whether a ping that finds every read connection busy counts as an answer: a SQLite file
    /// has no server that can go away, and under load its few connections are rarely idle.
    const BUSY_ANSWERS_PING: bool;
    /// The rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;
    /// The store's identity from what [`Statements::identity`] returned.
    fn identity(found: String) -> Result<String, StoreError>;
    /// Takes the exclusive hold on engine id `id` on the store whose identity is `identity`;
    /// `None` when another engine holds it.
    fn hold_engine_id<'a>(
        pool: &'a Pool<Self>,
        identity: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<IdHold>, StoreError>>;
}

/// An exclusive hold on an engine id (see [`Backend::hold_engine_id`]): it lasts until this is
/// dropped. Holds a locked file or a database session.
pub(crate) struct IdHold {
    _held: Box<dyn Send + Sync>,
}

impl IdHold {
    /// A hold that lasts as long as `held` lives.
    pub fn new(held: impl Send + Sync + 'static) -> Self {
        IdHold {
            _held: Box::new(held),
        }
    }
}

/// The SHA-256 of an engine id, which its hold is named by (a lock file, an advisory lock key).
pub(crate) fn engine_id_digest(id: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"saga engine id\0")
        .chain_update(id.as_bytes())
        .finalize()
        .into()
}

/// What the store needs of a database. Object-safe, so that a [`super::Store`] holds one
/// without a type parameter.
pub(crate) trait Backend: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn name(&self) -> &'static str;
    /// Group-commit writers to run.
    fn writers(&self) -> usize;
    /// Runs one batch statement in one transaction.
    fn write_batch<'a>(
        &'a self,
        params: &'a [String; 5],
    ) -> BoxFuture<'a, Result<Vec<BatchRow>, sqlx::Error>>;
    /// An instance with its steps.
    fn load<'a>(
        &'a self,
        gid: &'a str,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>>;
    /// The finished calls of an instance, oldest first.
    fn attempts<'a>(
        &'a self,
        gid: &'a str,
    ) -> BoxFuture<'a, Result<Vec<AttemptRecord>, StoreError>>;
    /// The newest instances, of one status or all.
    fn list(
        &self,
        status: Option<SagaStatus>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>>;
    /// A page of the newest instances matching `query`.
    fn list_page<'a>(
        &'a self,
        query: &'a ListQuery,
    ) -> BoxFuture<'a, Result<Vec<SagaSummary>, StoreError>>;
    /// Instances by status.
    fn count_by_status(&self) -> BoxFuture<'_, Result<Vec<(SagaStatus, i64)>, StoreError>>;

    /// Up to `limit` unfinished instances no engine holds whose fingerprint is not among
    /// `fingerprints` (a JSON array), as `(gid, saga, fingerprint)`.
    fn unknown_definitions<'a>(
        &'a self,
        fingerprints: &'a str,
        now: i64,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<UnknownRow>, StoreError>>;
    /// Claims due instances of the given fingerprints (a JSON array); returns their gids.
    fn claim_due<'a>(
        &'a self,
        claim: Claim<'a>,
        now: i64,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;
    /// Takes back the owner's unfinished instances of the given fingerprints.
    fn claim_own<'a>(&'a self, claim: Claim<'a>) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;
    /// Takes one instance whatever its lease; returns its new fence.
    fn claim_one<'a>(
        &'a self,
        gid: &'a str,
        owner: &'a str,
        lease_until: i64,
    ) -> BoxFuture<'a, Result<Option<i64>, StoreError>>;
    /// Extends the owner's leases on the listed gids (a JSON array); returns how many.
    fn renew<'a>(
        &'a self,
        owner: &'a str,
        lease_until: i64,
        gids: &'a str,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// The owner's unfinished instances whose lease has expired.
    fn own_expired<'a>(
        &'a self,
        owner: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;
    /// Gives up every lease of the owner; returns how many.
    fn release_owner<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// Deletes finished instances last updated before `before`; returns how many.
    fn cleanup(&self, before: i64) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// What identifies the store's database: the SQLite file's canonical path, or
    /// `{database}/{schema}` as the PostgreSQL server names them.
    fn identity(&self) -> BoxFuture<'_, Result<String, StoreError>>;
    /// Runs the ping statement on a read connection.
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Takes an exclusive hold on engine id `id` that lasts as long as the returned value: on
    /// SQLite an OS lock on a file beside the store file, on PostgreSQL a session advisory lock
    /// on a connection of its own. `None` when another engine, of this process or another,
    /// holds it.
    fn hold_engine_id<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<IdHold>, StoreError>>;
}

/// Who claims and for which definitions.
#[derive(Clone, Copy)]
pub(crate) struct Claim<'a> {
    /// The claiming engine's id.
    pub owner: &'a str,
    /// The lease end it takes.
    pub lease_until: i64,
    /// The fingerprints it knows, as a JSON array.
    pub fingerprints: &'a str,
}

/// The store's statements on one database, over sqlx. Reads go to `read`, writes to
/// `write`; on PostgreSQL both are the same pool, on SQLite the single writer has its own.
pub(crate) struct SqlBackend<D: Database> {
    write: Pool<D>,
    read: Pool<D>,
}

impl<D: Database> SqlBackend<D> {
    /// A backend over a write pool and a read pool (may be clones of one pool).
    pub fn new(write: Pool<D>, read: Pool<D>) -> Self {
        SqlBackend { write, read }
    }
}

// What sqlx must offer for a database so that the store's code runs on it: executing on a
// connection, binding text and integers, decoding text and integers by column name.
impl<D> Backend for SqlBackend<D>
where
    D: Dialect,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    D::Arguments: IntoArguments<D>,
    for<'q> &'q str: Encode<'q, D> + Type<D>,
    for<'q> i64: Encode<'q, D> + Decode<'q, D> + Type<D>,
    for<'r> String: Decode<'r, D> + Type<D>,
    for<'n> &'n str: ColumnIndex<D::Row>,
    usize: ColumnIndex<D::Row>,
{
    fn name(&self) -> &'static str {
        D::BACKEND_NAME
    }

    fn writers(&self) -> usize {
        D::WRITERS
    }

    fn write_batch<'a>(
        &'a self,
        params: &'a [String; 5],
    ) -> BoxFuture<'a, Result<Vec<BatchRow>, sqlx::Error>> {
        Box::pin(async move {
            let mut conn = self.write.acquire().await?;
            let mut query = sqlx::query_as::<D, BatchRow>(D::SQL.batch);
            for p in params {
                query = query.bind(p.as_str());
            }
            match query.fetch_all(&mut *conn).await {
                Ok(rows) => Ok(rows),
                Err(e) => {
                    if let Some(sql) = D::AFTER_FAILED_BATCH {
                        // The connection goes back to the pool: leave no transaction open on it.
                        let _ = sqlx::query::<D>(sql).execute(&mut *conn).await;
                    }
                    Err(e)
                }
            }
        })
    }

    fn load<'a>(
        &'a self,
        gid: &'a str,
    ) -> BoxFuture<'a, Result<Option<InstanceRecord>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query_as::<D, InstanceStepRow>(D::SQL.load)
                .bind(gid)
                .fetch_all(&self.read)
                .await?;
            instance_record(gid, rows)
        })
    }

    fn attempts<'a>(
        &'a self,
        gid: &'a str,
    ) -> BoxFuture<'a, Result<Vec<AttemptRecord>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query_as::<D, AttemptRow>(D::SQL.attempts)
                .bind(gid)
                .fetch_all(&self.read)
                .await?;
            rows.into_iter().map(AttemptRow::record).collect()
        })
    }

    fn list(
        &self,
        status: Option<SagaStatus>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        Box::pin(async move {
            let query = match status {
                Some(s) => sqlx::query_as::<D, SummaryRow>(D::SQL.list_status).bind(s.as_str()),
                None => sqlx::query_as::<D, SummaryRow>(D::SQL.list_all),
            };
            let rows = query.bind(i64::from(limit)).fetch_all(&self.read).await?;
            rows.into_iter().map(SummaryRow::summary).collect()
        })
    }

    fn list_page<'a>(
        &'a self,
        query: &'a ListQuery,
    ) -> BoxFuture<'a, Result<Vec<SagaSummary>, StoreError>> {
        Box::pin(async move {
            let (created_at, gid) = match &query.after {
                Some(c) => (c.created_at, c.gid.as_str()),
                None => (i64::MAX, ""),
            };
            let rows = sqlx::query_as::<D, SummaryRow>(D::SQL.list_page)
                .bind(query.status.map_or("", SagaStatus::as_str))
                .bind(query.saga.as_deref().unwrap_or(""))
                .bind(query.gid_prefix.as_deref().unwrap_or(""))
                .bind(created_at)
                .bind(gid)
                .bind(i64::from(query.limit))
                .fetch_all(&self.read)
                .await?;
            rows.into_iter().map(SummaryRow::summary).collect()
        })
    }

    fn unknown_definitions<'a>(
        &'a self,
        fingerprints: &'a str,
        now: i64,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<(String, String, String)>, StoreError>> {
        Box::pin(async move {
            Ok(
                sqlx::query_as::<D, (String, String, String)>(D::SQL.unknown_definitions)
                    .bind(fingerprints)
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(&self.read)
                    .await?,
            )
        })
    }

    fn count_by_status(&self) -> BoxFuture<'_, Result<Vec<(SagaStatus, i64)>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query_as::<D, (String, i64)>(D::SQL.count_by_status)
                .fetch_all(&self.read)
                .await?;
            rows.into_iter()
                .map(|(status, count)| Ok((parse_status("", &status)?, count)))
                .collect()
        })
    }

    fn claim_due<'a>(
        &'a self,
        claim: Claim<'a>,
        now: i64,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            Ok(sqlx::query_scalar::<D, String>(D::SQL.claim_due)
                .bind(claim.owner)
                .bind(claim.lease_until)
                .bind(now)
                .bind(i64::from(limit))
                .bind(claim.fingerprints)
                .fetch_all(&self.write)
                .await?)
        })
    }

    fn claim_own<'a>(&'a self, claim: Claim<'a>) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            Ok(sqlx::query_scalar::<D, String>(D::SQL.claim_own)
                .bind(claim.owner)
                .bind(claim.lease_until)
                .bind(claim.fingerprints)
                .fetch_all(&self.write)
                .await?)
        })
    }

    fn claim_one<'a>(
        &'a self,
        gid: &'a str,
        owner: &'a str,
        lease_until: i64,
    ) -> BoxFuture<'a, Result<Option<i64>, StoreError>> {
        Box::pin(async move {
            Ok(sqlx::query_scalar::<D, i64>(D::SQL.claim_one)
                .bind(owner)
                .bind(lease_until)
                .bind(gid)
                .fetch_optional(&self.write)
                .await?)
        })
    }

    fn renew<'a>(
        &'a self,
        owner: &'a str,
        lease_until: i64,
        gids: &'a str,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let done = sqlx::query::<D>(D::SQL.renew)
                .bind(lease_until)
                .bind(owner)
                .bind(gids)
                .execute(&self.write)
                .await?;
            Ok(D::rows_affected(&done))
        })
    }

    fn own_expired<'a>(
        &'a self,
        owner: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            Ok(sqlx::query_scalar::<D, String>(D::SQL.own_expired)
                .bind(owner)
                .bind(now)
                .fetch_all(&self.write)
                .await?)
        })
    }

    fn release_owner<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let done = sqlx::query::<D>(D::SQL.release_owner)
                .bind(owner)
                .execute(&self.write)
                .await?;
            Ok(D::rows_affected(&done))
        })
    }

    fn cleanup(&self, before: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut conn = self.write.acquire().await?;
            let deleted = async {
                let mut tx = conn.begin().await?;
                let mut deleted = 0;
                for sql in D::SQL.cleanup {
                    let done = sqlx::query::<D>(sql).bind(before).execute(&mut *tx).await?;
                    // The last statement deletes the instances themselves.
                    deleted = D::rows_affected(&done);
                }
                tx.commit().await?;
                Ok::<_, StoreError>(deleted)
            }
            .await;
            // A failed commit (a full disk) can leave the connection counting itself inside a
            // transaction: close it rather than hand it to the writer.
            if conn.is_in_transaction() {
                conn.close_on_drop();
            }
            deleted
        })
    }

    fn identity(&self) -> BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(async move {
            let found = sqlx::query_scalar::<D, String>(D::SQL.identity)
                .fetch_one(&self.read)
                .await?;
            D::identity(found)
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if D::BUSY_ANSWERS_PING {
                let Some(mut conn) = self.read.try_acquire() else {
                    return Ok(());
                };
                sqlx::query::<D>(D::SQL.ping).execute(&mut *conn).await?;
            } else {
                sqlx::query::<D>(D::SQL.ping).execute(&self.read).await?;
            }
            Ok(())
        })
    }

    fn hold_engine_id<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<IdHold>, StoreError>> {
        Box::pin(async move {
            let identity = self.identity().await?;
            D::hold_engine_id(&self.write, &identity, id).await
        })
    }
}

/// A row of `load.sql`: the instance's columns and one step's (NULL without steps).
#[derive(FromRow)]
struct InstanceStepRow {
    gid: String,
    saga: String,
    fingerprint: String,
    input: String,
    saga_status: String,
    phase: String,
    reason: Option<String>,
    cause: Option<String>,
    deadline_at: Option<i64>,
    next_wake_at: i64,
    owner: Option<String>,
    lease_until: i64,
    fence: i64,
    created_at: i64,
    updated_at: i64,
    traceparent: Option<String>,
    idx: Option<i64>,
    name: Option<String>,
    status: Option<String>,
    attempts: Option<i64>,
    compensate_attempts: Option<i64>,
    attempts_base: Option<i64>,
    compensate_attempts_base: Option<i64>,
    output: Option<String>,
    last_error: Option<String>,
}

fn instance_record(
    gid: &str,
    rows: Vec<InstanceStepRow>,
) -> Result<Option<InstanceRecord>, StoreError> {
    let mut step_names = Vec::with_capacity(rows.len());
    let mut steps = Vec::with_capacity(rows.len());
    for row in rows.iter().filter(|r| r.idx.is_some()) {
        let count = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
        step_names.push(row.name.clone().unwrap_or_default());
        steps.push(StepState {
            status: parse_step_status(gid, row.status.as_deref().unwrap_or(""))?,
            attempts: count(row.attempts),
            compensate_attempts: count(row.compensate_attempts),
            attempts_base: count(row.attempts_base),
            compensate_attempts_base: count(row.compensate_attempts_base),
            output: row
                .output
                .as_deref()
                .map(|o| parse_json(gid, o))
                .transpose()?,
            last_error: row.last_error.clone(),
            in_flight: false,
        });
    }
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    Ok(Some(InstanceRecord {
        input: parse_json(gid, &row.input)?,
        state: SagaState {
            status: parse_status(gid, &row.saga_status)?,
            phase: parse_phase(gid, &row.phase)?,
            reason: row.reason,
            cause: row.cause,
            steps,
        },
        gid: row.gid,
        saga: row.saga,
        fingerprint: row.fingerprint,
        step_names,
        deadline_at: row.deadline_at,
        next_wake_at: row.next_wake_at,
        owner: row.owner,
        lease_until: row.lease_until,
        fence: row.fence,
        created_at: row.created_at,
        updated_at: row.updated_at,
        // A trace context is for diagnostics only: one that does not parse is left out.
        traceparent: row
            .traceparent
            .as_deref()
            .and_then(|t| TraceParent::parse(t).ok()),
    }))
}

/// A row of `attempts.sql`.
#[derive(FromRow)]
struct AttemptRow {
    gid: String,
    step: String,
    op: String,
    attempt: i64,
    owner: String,
    fence: i64,
    started_at: i64,
    finished_at: i64,
    outcome: String,
    error: Option<String>,
}

impl AttemptRow {
    fn record(self) -> Result<AttemptRecord, StoreError> {
        let op = Op::parse(&self.op)
            .ok_or_else(|| corrupt(&self.gid, format!("unknown op `{}`", self.op)))?;
        let outcome = AttemptOutcome::parse(&self.outcome).ok_or_else(|| {
            corrupt(
                &self.gid,
                format!("unknown call outcome `{}`", self.outcome),
            )
        })?;
        Ok(AttemptRecord {
            gid: self.gid,
            step: self.step,
            op,
            attempt: self.attempt,
            owner: self.owner,
            fence: self.fence,
            started_at: self.started_at,
            finished_at: self.finished_at,
            outcome,
            error: self.error,
        })
    }
}

/// A row of `list_all.sql`, `list_status.sql` and `list_page.sql`.
#[derive(FromRow)]
struct SummaryRow {
    gid: String,
    saga: String,
    fingerprint: String,
    status: String,
    reason: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl SummaryRow {
    fn summary(self) -> Result<SagaSummary, StoreError> {
        Ok(SagaSummary {
            status: parse_status(&self.gid, &self.status)?,
            gid: self.gid,
            saga: self.saga,
            fingerprint: self.fingerprint,
            reason: self.reason,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

fn corrupt(gid: &str, what: String) -> StoreError {
    StoreError::Corrupt {
        gid: gid.to_string(),
        what,
    }
}

fn parse_status(gid: &str, s: &str) -> Result<SagaStatus, StoreError> {
    SagaStatus::parse(s).ok_or_else(|| corrupt(gid, format!("unknown saga status `{s}`")))
}

fn parse_step_status(gid: &str, s: &str) -> Result<StepStatus, StoreError> {
    StepStatus::parse(s).ok_or_else(|| corrupt(gid, format!("unknown step status `{s}`")))
}

fn parse_phase(gid: &str, s: &str) -> Result<Phase, StoreError> {
    Phase::parse(s).ok_or_else(|| corrupt(gid, format!("unknown phase `{s}`")))
}

fn parse_json(gid: &str, s: &str) -> Result<Value, StoreError> {
    serde_json::from_str(s).map_err(|e| corrupt(gid, format!("invalid JSON: {e}")))
}
