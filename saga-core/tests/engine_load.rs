//! Load: 2,000 sagas submitted at once all reach a terminal status, none lost, on SQLite and
//! PostgreSQL.
#![cfg(all(feature = "sqlite", feature = "postgres"))]

#[macro_use]
mod engine_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use saga_core::{Engine, SagaStatus, StepError};

use engine_support::*;

on_both_stores!(
    two_thousand_concurrent_sagas_all_reach_a_terminal_status,
    one_engine_under_load_never_reclaims_the_sagas_it_drives,
);

const SAGAS: usize = 2_000;

/// Submits [`SAGAS`] sagas at once to one engine (every tenth one's pivot fails, so both
/// directions run) and waits until all are terminal.
async fn run_load(db: &Db) -> (Engine, Harness) {
    let h = Harness::with_action(|c| async move {
        if c.step == "c" && c.input == "fail" {
            Err(StepError::failure("declined"))
        } else {
            Ok(output_of(&c))
        }
    });
    let mut cfg = config("load");
    // Longer than the other tests' lease: the store's queue is long under this load.
    cfg.lease = Duration::from_secs(2);
    cfg.step_timeout = Duration::from_secs(10);
    let engine = engine(db.store().await, cfg, &h).await;

    let started = Instant::now();
    let mut submits = tokio::task::JoinSet::new();
    for i in 0..SAGAS {
        let engine = engine.clone();
        submits.spawn(async move {
            let input = if i % 10 == 0 { "fail" } else { "ok" };
            engine
                .submit::<Linear>(&format!("load-{i:04}"), &input.to_string())
                .await
        });
    }
    for submitted in submits.join_all().await {
        assert!(submitted.unwrap().created);
    }
    let submitted_in = started.elapsed();

    let store = engine.store().clone();
    eventually(90, "every saga is terminal", || async {
        let counts = store.count_by_status().await.unwrap();
        counts.iter().map(|(_, n)| n).sum::<i64>() == SAGAS as i64
            && counts.iter().all(|(s, _)| s.is_terminal())
    })
    .await;
    eprintln!(
        "{:?}: {SAGAS} sagas submitted in {submitted_in:?}, all terminal after {:?}",
        db.backend,
        started.elapsed()
    );
    (engine, h)
}

async fn two_thousand_concurrent_sagas_all_reach_a_terminal_status(backend: Backend) {
    let db = Db::new(backend);
    let (engine, h) = run_load(&db).await;

    let counts: BTreeMap<&str, i64> = engine
        .store()
        .count_by_status()
        .await
        .unwrap()
        .into_iter()
        .map(|(s, n)| (s.as_str(), n))
        .collect();
    assert_eq!(
        counts,
        BTreeMap::from([
            ("compensated", (SAGAS / 10) as i64),
            ("succeeded", (SAGAS - SAGAS / 10) as i64)
        ])
    );
    let listed: BTreeSet<String> = engine
        .list(None, 5_000)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.gid)
        .collect();
    let expected: BTreeSet<String> = (0..SAGAS).map(|i| format!("load-{i:04}")).collect();
    assert_eq!(listed, expected, "no saga lost, none invented");
    let compensated = engine
        .list(Some(SagaStatus::Compensated), 5_000)
        .await
        .unwrap();
    assert_eq!(compensated.len(), SAGAS / 10);
    assert!(
        compensated
            .iter()
            .all(|s| s.reason.as_deref() == Some("c: declined"))
    );

    // Every step that should have run did (at least once), and none that should not.
    let called: BTreeSet<(String, &str, &str)> = h
        .all()
        .into_iter()
        .map(|l| (l.call.gid, l.call.step, l.call.op.as_str()))
        .collect();
    assert_eq!(
        called.len(),
        (SAGAS - SAGAS / 10) * 4 + (SAGAS / 10) * (3 + 2)
    );
}

/// One engine alone on the store: no saga should be claimed twice (fence stays 1) and no step
/// called twice, however long the store's queue gets.
async fn one_engine_under_load_never_reclaims_the_sagas_it_drives(backend: Backend) {
    let db = Db::new(backend);
    let (engine, h) = run_load(&db).await;

    let mut reclaimed = Vec::new();
    for i in 0..SAGAS {
        let gid = format!("load-{i:04}");
        let record = engine.store().load(&gid).await.unwrap().unwrap();
        if record.fence > 1 {
            reclaimed.push((gid, record.fence));
        }
    }
    let mut calls: BTreeMap<(String, &str, &str), usize> = BTreeMap::new();
    for l in h.all() {
        *calls
            .entry((l.call.gid, l.call.step, l.call.op.as_str()))
            .or_default() += 1;
    }
    let repeated = calls.values().filter(|n| **n > 1).count();
    assert!(
        reclaimed.is_empty() && repeated == 0,
        "{} sagas re-claimed by their own engine (e.g. {:?}), {repeated} calls repeated",
        reclaimed.len(),
        &reclaimed[..reclaimed.len().min(5)]
    );
}
