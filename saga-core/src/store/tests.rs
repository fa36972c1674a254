//! The store's shared behaviour, pinned on both dialects: what each write of a batch did,
//! conflicts between definitions, claims and leases, fencing, cleanup, and transient errors.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::json;

use super::sqlite::SqliteOptions;
use super::*;
use crate::machine::{Phase, StepState, StepStatus};
use crate::step::BoxFuture;
use crate::step::Op;
use crate::trace::TraceParent;

/// A store on a fresh SQLite file or a fresh PostgreSQL database, with what keeps it alive.
struct TestStore {
    store: Store,
    _dir: tempfile::TempDir,
    url: Option<String>,
}

#[derive(Clone, Copy, Debug)]
enum Dialect {
    Sqlite,
    Postgres,
}

async fn open(dialect: Dialect) -> TestStore {
    let dir = saga_testkit::temp_dir();
    match dialect {
        Dialect::Sqlite => TestStore {
            store: Store::sqlite(dir.path().join("saga.db"), SqliteOptions::default())
                .await
                .expect("open the SQLite store"),
            _dir: dir,
            url: None,
        },
        Dialect::Postgres => {
            let url = saga_testkit::postgres().fresh_database();
            TestStore {
                store: Store::postgres(&url, None, 8)
                    .await
                    .expect("open the PostgreSQL store"),
                _dir: dir,
                url: Some(url),
            }
        }
    }
}

/// Runs an async test body on each dialect.
macro_rules! on_both_dialects {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(super::Dialect::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(super::Dialect::Postgres).await
                }
            }
        )*
    };
}

on_both_dialects!(
    batches_keep_each_writes_outcome,
    a_gid_of_another_definition_is_a_conflict,
    claims_take_due_work_once_and_bump_the_fence,
    own_leases_are_taken_back_renewed_and_released,
    cleanup_deletes_only_old_finished_instances,
    pages_of_the_listing_filter_and_follow_the_cursor,
    the_trace_context_is_kept_and_an_older_store_upgrades_in_place,
    a_reachable_database_answers_the_ping,
);

fn new_instance(gid: &str, fingerprint: &str, steps: &[&str]) -> NewInstance {
    NewInstance {
        gid: gid.to_string(),
        saga: "batch".into(),
        fingerprint: fingerprint.into(),
        input: json!({ "gid": gid }),
        steps: steps.iter().map(|s| s.to_string()).collect(),
        states: steps.iter().map(|_| StepState::default()).collect(),
        deadline_at: None,
        owner: "engine-a".into(),
        lease_until: now_ms() + 60_000,
        now: now_ms(),
        traceparent: TraceParent::derived(gid),
    }
}

fn transition(gid: &str, fence: i64, label: &str) -> TransitionWrite {
    let done = StepState {
        status: StepStatus::Succeeded,
        attempts: 1,
        output: Some(json!(label)),
        ..StepState::default()
    };
    TransitionWrite {
        gid: gid.to_string(),
        fence,
        status: SagaStatus::Running,
        phase: Phase::Forward,
        reason: Some(label.to_string()),
        cause: None,
        next_wake_at: now_ms(),
        lease_until: now_ms() + 60_000,
        release: false,
        steps: vec![(0, done)],
        attempts: vec![AttemptRecord {
            gid: gid.to_string(),
            step: "a".into(),
            op: Op::Action,
            attempt: 1,
            owner: label.to_string(),
            fence,
            started_at: now_ms(),
            finished_at: now_ms(),
            outcome: AttemptOutcome::Succeeded,
            error: None,
        }],
        now: now_ms(),
    }
}

/// A transition that finishes (or parks) an instance and gives up its lease.
fn release(gid: &str, fence: i64, status: SagaStatus, next_wake_at: i64) -> TransitionWrite {
    TransitionWrite {
        release: true,
        status,
        next_wake_at,
        steps: Vec::new(),
        attempts: Vec::new(),
        ..transition(gid, fence, "released")
    }
}

async fn batches_keep_each_writes_outcome(dialect: Dialect) {
    let db = open(dialect).await;
    let store = &db.store;
    let gids: Vec<String> = (0..40).map(|i| format!("batch-{i:02}")).collect();

    // Creations, identical duplicates of the first ten, and a duplicate of `batch-10` with
    // another definition, all in flight at once. Which of the two `batch-10` inserts wins
    // depends on the writers' interleaving; either may.
    let mut inserts = Vec::new();
    for gid in &gids {
        inserts.push(new_instance(gid, "fp-1", &["a", "b", "c"]));
    }
    for gid in &gids[..10] {
        inserts.push(new_instance(gid, "fp-1", &["a", "b", "c"]));
    }
    inserts.push(new_instance(&gids[10], "fp-2", &["x", "y", "z", "w"]));
    let outcomes = join_all(inserts.into_iter().map(|n| {
        let store = store.clone();
        async move {
            let fingerprint = n.fingerprint.clone();
            (
                n.gid.clone(),
                fingerprint,
                store.insert(n).await.expect("insert"),
            )
        }
    }))
    .await;
    for gid in &gids {
        let mine: Vec<_> = outcomes.iter().filter(|(g, _, _)| g == gid).collect();
        let winners: Vec<_> = mine
            .iter()
            .filter(|(_, _, o)| matches!(o, Inserted::Created))
            .collect();
        assert_eq!(winners.len(), 1, "{gid} is created exactly once: {mine:?}");
        let winner = winners[0].1.as_str();
        let record = store.load(gid).await.unwrap().expect("created");
        assert_eq!(
            record.fingerprint, winner,
            "{gid}: the instance is the winner's"
        );
        let steps: &[&str] = if winner == "fp-1" {
            &["a", "b", "c"]
        } else {
            &["x", "y", "z", "w"]
        };
        assert_eq!(
            record.step_names, steps,
            "{gid}: the steps come from the same insert"
        );
        assert_eq!(record.fence, 1);
        for (_, fingerprint, outcome) in &mine {
            match outcome {
                Inserted::Created => {}
                Inserted::Exists(existing) => {
                    assert_eq!(fingerprint, winner, "{gid}: a duplicate of the winner");
                    assert_eq!(existing.fingerprint, winner, "{gid}: it is told the winner");
                }
                Inserted::Conflict {
                    fingerprint: theirs,
                    ..
                } => {
                    assert_ne!(
                        fingerprint, winner,
                        "{gid}: a conflict is another definition"
                    );
                    assert_eq!(
                        theirs, winner,
                        "{gid}: the conflict names the existing definition"
                    );
                }
            }
        }
    }
    assert!(
        store.commits() < outcomes.len() as u64,
        "writes were grouped"
    );

    // Another owner takes the first twenty: their fence moves to 2.
    for gid in &gids[..20] {
        let fence = store
            .claim_one(gid, "engine-b", now_ms() + 60_000)
            .await
            .unwrap();
        assert_eq!(fence, Some(2));
    }
    // Stale writes (fence 1) of the first twenty race current ones of all forty.
    let mut writes = Vec::new();
    for gid in &gids[..20] {
        writes.push((true, transition(gid, 1, "stale")));
        writes.push((false, transition(gid, 2, "current")));
    }
    for gid in &gids[20..] {
        writes.push((false, transition(gid, 1, "current")));
    }
    let results = join_all(writes.into_iter().map(|(stale, w)| {
        let store = store.clone();
        async move { (stale, w.gid.clone(), store.write(w).await.expect("write")) }
    }))
    .await;
    for (stale, gid, applied) in &results {
        assert_eq!(
            *applied, !*stale,
            "{gid}: a stale write is refused, a current one applies"
        );
    }
    for gid in &gids {
        let record = store.load(gid).await.unwrap().unwrap();
        assert_eq!(record.state.reason.as_deref(), Some("current"), "{gid}");
        assert_eq!(
            record.state.steps[0].output,
            Some(json!("current")),
            "{gid}"
        );
        assert_eq!(record.state.steps[0].status, StepStatus::Succeeded);
        assert_eq!(record.state.steps[1].status, StepStatus::Pending);
        let attempts = store.attempts(gid).await.unwrap();
        let owners: Vec<&str> = attempts.iter().map(|a| a.owner.as_str()).collect();
        assert_eq!(
            owners,
            ["current"],
            "{gid}: only the applied write's call is recorded"
        );
        assert_eq!(attempts[0].op, Op::Action);
        assert_eq!(attempts[0].outcome, AttemptOutcome::Succeeded);
    }
}

async fn a_gid_of_another_definition_is_a_conflict(dialect: Dialect) {
    let db = open(dialect).await;
    let store = &db.store;
    let first = store
        .insert(new_instance("g", "fp-1", &["a"]))
        .await
        .unwrap();
    assert!(matches!(first, Inserted::Created), "{first:?}");
    let again = store
        .insert(new_instance("g", "fp-1", &["a"]))
        .await
        .unwrap();
    let Inserted::Exists(existing) = again else {
        panic!("the same definition again is told it exists: {again:?}");
    };
    assert_eq!(
        (existing.gid.as_str(), existing.fingerprint.as_str()),
        ("g", "fp-1")
    );
    let is_conflict = |inserted: &Inserted| match inserted {
        Inserted::Conflict { saga, fingerprint } => {
            (saga.as_str(), fingerprint.as_str()) == ("batch", "fp-1")
        }
        _ => false,
    };
    let other_version = store
        .insert(new_instance("g", "fp-2", &["a"]))
        .await
        .unwrap();
    assert!(is_conflict(&other_version), "{other_version:?}");
    let other_saga = NewInstance {
        saga: "other".into(),
        ..new_instance("g", "fp-1", &["a"])
    };
    let other_saga = store.insert(other_saga).await.unwrap();
    assert!(is_conflict(&other_saga), "{other_saga:?}");
    let record = store.load("g").await.unwrap().unwrap();
    assert_eq!(
        (record.saga.as_str(), record.fingerprint.as_str()),
        ("batch", "fp-1")
    );
}

async fn claims_take_due_work_once_and_bump_the_fence(dialect: Dialect) {
    let db = open(dialect).await;
    let store = &db.store;
    let now = now_ms();
    let fps = ["fp-1".to_string()];
    for gid in ["due-1", "due-2", "later", "unknown"] {
        let fingerprint = if gid == "unknown" { "fp-9" } else { "fp-1" };
        store
            .insert(new_instance(gid, fingerprint, &["a"]))
            .await
            .unwrap();
        let wake = if gid == "later" {
            now + 60_000
        } else {
            now - 1
        };
        assert!(
            store
                .write(release(gid, 1, SagaStatus::Running, wake))
                .await
                .unwrap()
        );
    }
    // Claims look at the clock after the writes: a wake-up time already due stays as it was.
    let now = now_ms();
    let mut claimed = store
        .claim_due("engine-b", now + 60_000, now, 10, &fps)
        .await
        .unwrap();
    claimed.sort();
    assert_eq!(
        claimed,
        ["due-1", "due-2"],
        "due work of known definitions only"
    );
    let again = store
        .claim_due("engine-c", now + 60_000, now, 10, &fps)
        .await
        .unwrap();
    assert!(
        again.is_empty(),
        "a held lease is not claimed twice: {again:?}"
    );
    let record = store.load("due-1").await.unwrap().unwrap();
    assert_eq!(
        (record.owner.as_deref(), record.fence),
        (Some("engine-b"), 2)
    );

    // The old owner's write is stale now; the new owner's applies.
    assert!(!store.write(transition("due-1", 1, "old")).await.unwrap());
    assert!(store.write(transition("due-1", 2, "new")).await.unwrap());

    // An expired lease of another owner is claimed, with a new fence.
    let later = now + 120_000;
    let taken = store
        .claim_due("engine-c", later + 60_000, later, 1, &fps)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(store.load(&taken[0]).await.unwrap().unwrap().fence, 3);

    // A finished instance is never due.
    assert!(
        store
            .write(release("later", 1, SagaStatus::Succeeded, now))
            .await
            .unwrap()
    );
    let none = store
        .claim_due("engine-d", later + 60_000, later + 60_000, 10, &fps)
        .await
        .unwrap();
    assert!(!none.contains(&"later".to_string()), "{none:?}");
}

async fn own_leases_are_taken_back_renewed_and_released(dialect: Dialect) {
    let db = open(dialect).await;
    let store = &db.store;
    let now = now_ms();
    let fps = ["fp-1".to_string()];
    store
        .insert(new_instance("mine", "fp-1", &["a"]))
        .await
        .unwrap();
    store
        .insert(new_instance("gone", "fp-1", &["a"]))
        .await
        .unwrap();
    assert!(
        store
            .write(release("gone", 1, SagaStatus::Succeeded, now))
            .await
            .unwrap()
    );

    assert!(store.own_expired("engine-a", now).await.unwrap().is_empty());
    let expired = store.own_expired("engine-a", now + 120_000).await.unwrap();
    assert_eq!(expired, ["mine"], "only unfinished instances hold leases");

    // A restarted engine with the same id takes its own instance back at once.
    assert_eq!(
        store
            .claim_own("engine-a", now + 60_000, &fps)
            .await
            .unwrap(),
        ["mine"]
    );
    assert_eq!(store.load("mine").await.unwrap().unwrap().fence, 2);
    assert!(
        store
            .claim_own("engine-a", now + 60_000, &[])
            .await
            .unwrap()
            .is_empty()
    );

    let gids = ["mine".to_string(), "gone".to_string()];
    assert_eq!(
        store
            .renew_leases("engine-a", now + 90_000, &gids)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.load("mine").await.unwrap().unwrap().lease_until,
        now + 90_000
    );
    assert_eq!(
        store
            .renew_leases("engine-z", now + 90_000, &gids)
            .await
            .unwrap(),
        0
    );

    assert_eq!(store.release_all("engine-a").await.unwrap(), 1);
    let record = store.load("mine").await.unwrap().unwrap();
    assert_eq!((record.owner, record.lease_until), (None, 0));
}

async fn cleanup_deletes_only_old_finished_instances(dialect: Dialect) {
    let db = open(dialect).await;
    let store = &db.store;
    let now = now_ms();
    for gid in ["done", "running"] {
        store
            .insert(new_instance(gid, "fp-1", &["a", "b"]))
            .await
            .unwrap();
    }
    assert!(store.write(transition("done", 1, "call")).await.unwrap());
    assert!(
        store
            .write(release("done", 1, SagaStatus::Compensated, now))
            .await
            .unwrap()
    );
    assert_eq!(
        store.cleanup_finished(now - 60_000).await.unwrap(),
        0,
        "too recent"
    );
    assert_eq!(store.cleanup_finished(now_ms() + 1).await.unwrap(), 1);
    assert!(store.load("done").await.unwrap().is_none());
    assert!(store.attempts("done").await.unwrap().is_empty());
    assert!(
        store.load("running").await.unwrap().is_some(),
        "unfinished instances stay"
    );
    let listed: Vec<String> = store
        .list(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.gid)
        .collect();
    assert_eq!(listed, ["running"]);
    let counts = store.count_by_status().await.unwrap();
    assert_eq!(counts, [(SagaStatus::Running, 1)]);
}

async fn pages_of_the_listing_filter_and_follow_the_cursor(dialect: Dialect) {
    let db = open(dialect).await;
    let store = &db.store;
    let base = now_ms() - 10_000;
    // Two share a creation time, so the gid orders them; `a-%` and `a_1` hold LIKE's wildcards.
    let rows = [
        ("a-1", "orders", 0),
        ("a-2", "orders", 1),
        ("b-1", "payments", 1),
        ("a-%", "orders", 2),
        ("a_1", "payments", 3),
    ];
    for (gid, saga, age) in rows {
        let new = NewInstance {
            saga: saga.into(),
            now: base + age,
            ..new_instance(gid, saga, &["a"])
        };
        assert!(matches!(
            store.insert(new).await.unwrap(),
            Inserted::Created
        ));
    }
    assert!(
        store
            .write(release("a-2", 1, SagaStatus::Stuck, base))
            .await
            .unwrap()
    );
    let gids = |page: Vec<SagaSummary>| page.into_iter().map(|s| s.gid).collect::<Vec<_>>();
    let all = store.list_page(&ListQuery::newest(10)).await.unwrap();
    assert_eq!(gids(all.clone()), ["a_1", "a-%", "b-1", "a-2", "a-1"]);

    let mut query = ListQuery::newest(2);
    let mut pages = Vec::new();
    loop {
        let page = store.list_page(&query).await.unwrap();
        let Some(last) = page.last() else { break };
        query.after = Some(ListCursor::after(last));
        pages.push(gids(page));
    }
    assert_eq!(pages, [vec!["a_1", "a-%"], vec!["b-1", "a-2"], vec!["a-1"]]);

    let prefix = |p: &str| ListQuery {
        gid_prefix: Some(p.into()),
        ..ListQuery::newest(10)
    };
    let found = store.list_page(&prefix("a-")).await.unwrap();
    assert_eq!(gids(found), ["a-%", "a-2", "a-1"]);
    let found = store.list_page(&prefix("a_")).await.unwrap();
    assert_eq!(gids(found), ["a_1"], "a prefix is literal, `_` included");
    let found = store.list_page(&prefix("a-%")).await.unwrap();
    assert_eq!(gids(found), ["a-%"]);

    let query = ListQuery {
        saga: Some("orders".into()),
        status: Some(SagaStatus::Running),
        ..ListQuery::newest(10)
    };
    assert_eq!(gids(store.list_page(&query).await.unwrap()), ["a-%", "a-1"]);
    let query = ListQuery {
        status: Some(SagaStatus::Stuck),
        ..ListQuery::newest(10)
    };
    assert_eq!(gids(store.list_page(&query).await.unwrap()), ["a-2"]);
}

/// Holds an exclusive lock on `saga_instance` from another session for `hold`, so that the
/// store's writes time out on their lock (a transient error) meanwhile.
/// An instance as an engine of the version before the `traceparent` column inserts it.
const OLD_INSERT: &str = "INSERT INTO saga_instance (gid, saga, fingerprint, input, status, phase, \
    reason, deadline_at, next_wake_at, owner, lease_until, fence, created_at, updated_at) \
    VALUES ('GID', 'batch', 'fp', '{}', 'running', 'forward', NULL, NULL, 0, NULL, 0, 1, 0, 0)";

async fn the_trace_context_is_kept_and_an_older_store_upgrades_in_place(dialect: Dialect) {
    let dir = saga_testkit::temp_dir();
    let (folder, last_old, url) = match dialect {
        Dialect::Sqlite => ("sqlite", 2, None),
        Dialect::Postgres => (
            "postgres",
            3,
            Some(saga_testkit::postgres().fresh_database()),
        ),
    };
    // The migrations an older version ran: copies of the files before the new one.
    let old = dir.path().join("old-migrations");
    std::fs::create_dir(&old).unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations/store")
        .join(folder);
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let version: i64 = name[..4].parse().unwrap();
        if version <= last_old {
            std::fs::copy(&path, old.join(&name)).unwrap();
        }
    }
    let mut migrator = sqlx::migrate::Migrator::new(old.as_path()).await.unwrap();
    migrator.dangerous_set_table_name("_saga_migrations");
    let sqlite_path = dir.path().join("saga.db");
    // The older engine's connection stays open across the upgrade: it keeps working.
    let insert_old = |gid: &str| OLD_INSERT.replace("GID", gid);
    let older: Box<dyn Fn(String) -> BoxFuture<'static, ()>> = match dialect {
        Dialect::Sqlite => {
            let pool = sqlite::open_pool(&sqlite_path, true, 1).await.unwrap();
            migrator.run(&pool).await.unwrap();
            Box::new(move |sql| {
                let pool = pool.clone();
                Box::pin(async move {
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&pool)
                        .await
                        .unwrap();
                })
            })
        }
        Dialect::Postgres => {
            let pool = postgres::open_pool(url.as_deref().unwrap(), None, 1)
                .await
                .unwrap();
            migrator.run(&pool).await.unwrap();
            Box::new(move |sql| {
                let pool = pool.clone();
                Box::pin(async move {
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&pool)
                        .await
                        .unwrap();
                })
            })
        }
    };
    older(insert_old("before")).await;

    // The new version opens the store: the column is added in place.
    let store = match dialect {
        Dialect::Sqlite => Store::sqlite(&sqlite_path, SqliteOptions::default()).await,
        Dialect::Postgres => Store::postgres(url.as_deref().unwrap(), None, 4).await,
    }
    .expect("open and upgrade the older store");
    let before = store
        .load("before")
        .await
        .unwrap()
        .expect("the older instance");
    assert_eq!((before.traceparent, before.fence), (None, 1));
    older(insert_old("during")).await;
    assert_eq!(
        store.load("during").await.unwrap().unwrap().traceparent,
        None
    );

    // A new instance keeps its trace context, written by the insert that creates it.
    let parent: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        .parse()
        .unwrap();
    let mut new = new_instance("traced", "fp-traced", &["a"]);
    new.traceparent = parent;
    assert!(matches!(
        store.insert(new).await.unwrap(),
        Inserted::Created
    ));
    let commits = store.commits();
    let traced = store.load("traced").await.unwrap().unwrap();
    assert_eq!(traced.traceparent, Some(parent));
    // A repeat of the submit keeps the first trace.
    let mut again = new_instance("traced", "fp-traced", &["a"]);
    again.traceparent = TraceParent::derived("other");
    let Inserted::Exists(existing) = store.insert(again).await.unwrap() else {
        panic!("the repeat should find the instance");
    };
    assert_eq!(existing.traceparent, Some(parent));
    assert_eq!(store.commits(), commits + 1);
}

async fn lock_instances_for(url: &str, hold: Duration) -> tokio::task::JoinHandle<()> {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE saga_instance IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .expect("lock");
    tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        tx.commit().await.expect("unlock");
    })
}

/// A store whose statements give up on a lock after 50 ms with `lock_not_available`.
/// Holds one instance `g` (fence 1); its database stays alive with the returned `TestStore`.
async fn impatient_store() -> (TestStore, Store) {
    let db = open(Dialect::Postgres).await;
    let url = format!(
        "{}?options=-c%20lock_timeout%3D50ms",
        db.url.as_deref().unwrap()
    );
    let store = Store::postgres(&url, None, 4).await.expect("open");
    store
        .insert(new_instance("g", "fp-1", &["a"]))
        .await
        .unwrap();
    (db, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_write_error_is_retried() {
    let (db, store) = impatient_store().await;
    let hold = Duration::from_millis(300);
    let unlock = lock_instances_for(db.url.as_deref().unwrap(), hold).await;
    let started = Instant::now();
    assert!(
        store
            .write(transition("g", 1, "after the lock"))
            .await
            .expect("retried until it applied")
    );
    assert!(started.elapsed() >= hold, "the write waited for the lock");
    unlock.await.unwrap();
    let record = store.load("g").await.unwrap().unwrap();
    assert_eq!(record.state.reason.as_deref(), Some("after the lock"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_stays_refused_reports_a_transient_error_with_its_code() {
    let (db, store) = impatient_store().await;
    let unlock = lock_instances_for(db.url.as_deref().unwrap(), Duration::from_secs(8)).await;
    let error = store
        .write(transition("g", 1, "refused"))
        .await
        .expect_err("the lock outlasts the retries");
    assert!(error.is_transient(), "{error}");
    let StoreError::Database(sqlx::Error::Database(e)) = &error else {
        panic!("a database error, not {error:?}");
    };
    assert_eq!(
        e.code().as_deref(),
        Some("55P03"),
        "lock_not_available is kept"
    );
    unlock.abort();
}

async fn a_reachable_database_answers_the_ping(dialect: Dialect) {
    let db = open(dialect).await;
    db.store
        .ping(Duration::from_secs(1))
        .await
        .expect("the database answers");
}

#[test]
fn errors_of_an_unreachable_database_are_unavailable_and_transient() {
    let refused = || {
        StoreError::Database(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))
    };
    let unavailable = [
        refused(),
        StoreError::Database(sqlx::Error::PoolTimedOut),
        StoreError::Batch(Arc::new(refused())),
    ];
    for e in &unavailable {
        assert!(e.is_unavailable(), "{e:?}");
        assert!(e.is_transient(), "{e:?}");
    }
    for code in ["08006", "57P01", "57P03", "53100", "13", "10", "778", "14"] {
        assert!(unavailable_code(code), "{code}");
    }
    for code in ["23505", "42P01", "40001", "5", "1", "19"] {
        assert!(!unavailable_code(code), "{code}");
    }
    let config = StoreError::Config("bad".into());
    assert!(!config.is_unavailable() && !config.is_transient());
}
