//! The harness of `saga_core::testing` must find real bugs: each broken step implementation
//! below fails it with the schedule that exposes the bug, and the correct one passes the whole
//! matrix and random schedules.

use std::path::Path;

use saga_core::barrier::{self, Barrier};
use saga_core::store::sqlite::open_pool;
use saga_core::testing::{Entry, Fault, Harness, Injection, Report, World};
use saga_core::{Op, Retry, Saga, SagaStatus, StepContext, StepError};
use sqlx::SqlitePool;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Order {
    count: i64,
}

/// Take stock, then charge: the charge is the pivot.
#[derive(Saga)]
#[saga(input = Order)]
enum Reserve {
    #[compensate(put_back)]
    Take(i64),
    #[pivot]
    Charge,
}

/// What a step implementation gets wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    None,
    /// The action runs without a barrier: a duplicate applies twice.
    NoBarrier,
    /// The compensation runs without a barrier: a duplicate puts back twice.
    CompensationNotIdempotent,
    /// The compensation does nothing without the action's output.
    IgnoresLostOutput,
    /// The action counts a sale, which the compensation does not take back.
    ForgetsState,
}

struct Clerk {
    db: SqlitePool,
    bug: Bug,
}

const INITIAL_STOCK: i64 = 10;

async fn take(tx: &mut sqlx::SqliteConnection, count: i64) -> Result<i64, StepError> {
    let left: Option<i64> = sqlx::query_scalar(
        "UPDATE stock SET qty = qty - ?1, sold = sold + 1 WHERE qty >= ?1 RETURNING qty",
    )
    .bind(count)
    .fetch_optional(&mut *tx)
    .await?;
    left.ok_or_else(|| StepError::failure("out of stock"))
}

async fn put_back(tx: &mut sqlx::SqliteConnection, count: i64, bug: Bug) -> Result<(), Retry> {
    let sql = if bug == Bug::ForgetsState {
        "UPDATE stock SET qty = qty + ?1"
    } else {
        "UPDATE stock SET qty = qty + ?1, sold = sold - 1"
    };
    sqlx::query(sql).bind(count).execute(&mut *tx).await?;
    Ok(())
}

impl ReserveSteps for Clerk {
    async fn take(&self, ctx: &StepContext, order: &Order) -> Result<i64, StepError> {
        let count = order.count;
        if self.bug == Bug::NoBarrier {
            let mut conn = self.db.acquire().await?;
            return take(&mut conn, count).await;
        }
        Barrier::for_step(ctx)
            .action(&self.db, move |tx| Box::pin(take(tx, count)))
            .await?
            .into()
    }

    async fn put_back(
        &self,
        ctx: &StepContext,
        order: &Order,
        left: Option<i64>,
    ) -> Result<(), Retry> {
        let (count, bug) = (order.count, self.bug);
        if bug == Bug::IgnoresLostOutput && left.is_none() {
            return Ok(());
        }
        if bug == Bug::CompensationNotIdempotent {
            let mut conn = self.db.acquire().await?;
            return put_back(&mut conn, count, bug).await;
        }
        Barrier::for_step(ctx)
            .compensate(&self.db, move |tx| Box::pin(put_back(tx, count, bug)))
            .await?
            .into()
    }

    async fn charge(&self, ctx: &StepContext, order: &Order) -> Result<(), StepError> {
        let count = order.count;
        Barrier::for_step(ctx)
            .action(&self.db, move |tx| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO charge (count) VALUES (?1)")
                        .bind(count)
                        .execute(&mut *tx)
                        .await?;
                    Ok::<_, StepError>(())
                })
            })
            .await?
            .into()
    }
}

/// A shop database with one product, for the bug `B` (an index into [`BUGS`]).
struct Shop<const B: usize> {
    db: SqlitePool,
}

const BUGS: [Bug; 5] = [
    Bug::None,
    Bug::NoBarrier,
    Bug::CompensationNotIdempotent,
    Bug::IgnoresLostOutput,
    Bug::ForgetsState,
];

/// Stock left, sales counted, charges made.
type Counts = (i64, i64, i64);

impl<const B: usize> World for Shop<B> {
    type Steps = Clerk;
    type Snapshot = Counts;

    async fn create(dir: &Path) -> Result<Self, String> {
        let db = open_pool(&dir.join("shop.db"), false, 2)
            .await
            .map_err(|e| e.to_string())?;
        barrier::migrate(&db).await.map_err(|e| e.to_string())?;
        sqlx::raw_sql(
            "CREATE TABLE stock (qty INTEGER NOT NULL, sold INTEGER NOT NULL);
             INSERT INTO stock VALUES (10, 0);
             CREATE TABLE charge (count INTEGER NOT NULL);",
        )
        .execute(&db)
        .await
        .map_err(|e| e.to_string())?;
        Ok(Shop { db })
    }

    fn steps(&self) -> Clerk {
        Clerk {
            db: self.db.clone(),
            bug: BUGS[B],
        }
    }

    async fn snapshot(&self) -> Result<Counts, String> {
        sqlx::query_as("SELECT qty, sold, (SELECT COUNT(*) FROM charge) FROM stock")
            .fetch_one(&self.db)
            .await
            .map_err(|e| e.to_string())
    }
}

const COUNT: i64 = 3;

/// Succeeded: the stock taken once, one sale, one charge. Compensated: as it was.
fn invariant(
    &(qty, sold, charges): &Counts,
    outcome: &saga_core::testing::Outcome,
) -> Result<(), String> {
    let expected = match outcome.status {
        SagaStatus::Succeeded => (INITIAL_STOCK - COUNT, 1, 1),
        SagaStatus::Compensated => (INITIAL_STOCK, 0, 0),
        status => return Err(format!("unexpected status {status}")),
    };
    if (qty, sold, charges) == expected {
        Ok(())
    } else {
        Err(format!(
            "{}: stock {qty}, sold {sold}, charges {charges}; expected {expected:?}",
            outcome.status
        ))
    }
}

async fn check<const B: usize>(random: u64) -> Report {
    Harness::<Reserve, Shop<B>>::new(Order { count: COUNT })
        .invariant(invariant)
        .random(random)
        .run()
        .await
}

fn fault(step: usize, op: Op, fault: Fault) -> Injection {
    Injection {
        step,
        name: Reserve::definition().steps[step].name,
        op,
        call: 1,
        fault,
    }
}

/// The failure of exactly `faults`, with its journal showing the injection and its violation
/// naming the invariant.
fn expect_failure(report: &Report, faults: &[Injection], broken: &str) {
    let Some(failure) = report.failure_of(faults) else {
        panic!(
            "the harness did not fail the schedule {faults:?}; failures: {:#?}",
            report
                .failures
                .iter()
                .map(|f| f.schedule.to_string())
                .collect::<Vec<_>>()
        );
    };
    println!("{failure}");
    for i in faults {
        let injected = Entry::Injected {
            step: i.name,
            op: i.op,
            call: i.call,
            fault: i.fault,
        };
        assert!(failure.saw(&injected), "{failure}");
    }
    assert!(
        failure.violations.iter().any(|v| v.contains(broken)),
        "expected a violation with {broken:?}:\n{failure}"
    );
}

#[tokio::test]
async fn correct_steps_pass_the_matrix_and_random_schedules() {
    let report = check::<0>(200).await;
    report.assert_ok();
    // The matrix holds every applicable fault of both steps and both crash points per
    // transition of both baseline runs.
    assert!(report.matrix > 20, "{report}");
    assert_eq!(report.random, 200);
}

#[tokio::test]
async fn an_action_without_a_barrier_applies_a_duplicate_twice() {
    let report = check::<1>(0).await;
    expect_failure(
        &report,
        &[fault(0, Op::Action, Fault::Duplicate)],
        "succeeded: stock 4, sold 2",
    );
}

#[tokio::test]
async fn a_compensation_that_is_not_idempotent_puts_back_twice() {
    let report = check::<2>(0).await;
    expect_failure(
        &report,
        &[
            fault(0, Op::Compensate, Fault::Duplicate),
            fault(1, Op::Action, Fault::BusinessFailure),
        ],
        "compensated: stock 13",
    );
}

#[tokio::test]
async fn a_compensation_that_ignores_a_lost_output_leaves_the_work_in_place() {
    let report = check::<3>(0).await;
    expect_failure(
        &report,
        &[fault(0, Op::Action, Fault::LostUntilDeadline)],
        "compensated: stock 7, sold 1",
    );
}

#[tokio::test]
async fn a_step_whose_compensation_forgets_state_it_changed_is_found() {
    let report = check::<4>(0).await;
    expect_failure(
        &report,
        &[fault(1, Op::Action, Fault::BusinessFailure)],
        "compensated: stock 10, sold 1",
    );
}
