//! Overload: an engine drives at most `max_in_flight` sagas at once. A new submit beyond it is
//! refused and creates nothing, a repeat of an existing saga is answered as usual, and the
//! poller claims no more than the room left; on SQLite and PostgreSQL.
#![cfg(all(feature = "sqlite", feature = "postgres"))]

#[macro_use]
mod engine_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use saga_core::store::now_ms;
use saga_core::{EngineError, SagaStatus};
use serde_json::json;
use tokio::sync::watch;

use engine_support::*;

on_both_stores!(
    a_full_engine_refuses_new_sagas_and_answers_repeats,
    the_poller_claims_no_more_than_the_room_left,
);

const LIMIT: usize = 3;

/// Every action of step `a` waits until the gate opens; the rest succeed at once. Counts the
/// calls of `a` that have started.
fn gated() -> (Harness, watch::Sender<bool>, Arc<AtomicUsize>) {
    let (open, gate) = watch::channel(false);
    let started = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    let h = Harness::with_action(move |c| {
        let mut gate = gate.clone();
        let counter = counter.clone();
        async move {
            if c.step == "a" {
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = gate.wait_for(|open| *open).await;
            }
            Ok(output_of(&c))
        }
    });
    (h, open, started)
}

fn limited(id: &str) -> saga_core::EngineConfig {
    let mut cfg = config(id);
    cfg.max_in_flight = LIMIT;
    // The gated calls must outlast the test's checks without timing out.
    cfg.step_timeout = Duration::from_secs(30);
    cfg.lease = Duration::from_secs(5);
    cfg
}

async fn a_full_engine_refuses_new_sagas_and_answers_repeats(backend: Backend) {
    let db = Db::new(backend);
    let (h, open, started) = gated();
    let engine = engine(db.store().await, limited("full"), &h).await;
    let input = "order".to_string();
    for i in 0..LIMIT {
        let s = engine
            .submit::<Linear>(&format!("g{i}"), &input)
            .await
            .unwrap();
        assert!(s.created);
    }
    eventually(10, "every admitted saga calls its first step", || async {
        started.load(Ordering::SeqCst) == LIMIT
    })
    .await;
    assert_eq!(engine.driving(), LIMIT);

    let refused = engine.submit::<Linear>("new", &input).await;
    assert!(
        matches!(refused, Err(EngineError::Overloaded { limit: LIMIT })),
        "{refused:?}"
    );
    assert!(refused.unwrap_err().is_retriable());
    assert!(
        engine.store().load("new").await.unwrap().is_none(),
        "a refused submit creates nothing"
    );
    let repeat = engine.submit::<Linear>("g0", &input).await.unwrap();
    assert!(!repeat.created);
    assert_eq!(repeat.status, SagaStatus::Running);
    let conflict = engine.submit::<Linear>("g0", &"other".to_string()).await;
    assert!(
        matches!(conflict, Err(EngineError::Conflict { what: "input", .. })),
        "{conflict:?}"
    );
    assert_eq!(
        started.load(Ordering::SeqCst),
        LIMIT,
        "nothing else started"
    );

    open.send(true).unwrap();
    for i in 0..LIMIT {
        assert_status(
            &finish(&engine, &format!("g{i}"), 10).await,
            SagaStatus::Succeeded,
        );
    }
    eventually(10, "the drivers have let their slots go", || async {
        engine.driving() == 0
    })
    .await;
    let again = engine.submit::<Linear>("new", &input).await.unwrap();
    assert!(
        again.created,
        "the same submit is accepted once there is room"
    );
    assert_status(&finish(&engine, "new", 10).await, SagaStatus::Succeeded);
    assert!(
        h.max_in_flight() <= LIMIT,
        "{} calls at once",
        h.max_in_flight()
    );
}

async fn the_poller_claims_no_more_than_the_room_left(backend: Backend) {
    let db = Db::new(backend);
    // Opening the store creates its tables.
    let store = db.store().await;
    let due = 10;
    let fingerprint = LINEAR.fingerprint();
    for i in 0..due {
        plant_instance(
            &db,
            &format!("due-{i}"),
            ("linear", &fingerprint),
            &json!("order"),
            &["a", "b", "c", "d"],
            now_ms(),
        )
        .await;
    }
    let (h, open, started) = gated();
    let engine = engine(store, limited("poller"), &h).await;
    eventually(10, "the poller fills the engine", || async {
        started.load(Ordering::SeqCst) == LIMIT
    })
    .await;
    // Several polls later the engine still drives only as many as it may.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(engine.driving() <= LIMIT, "{} driven", engine.driving());
    }
    assert_eq!(started.load(Ordering::SeqCst), LIMIT);
    let counts = engine.store().count_by_status().await.unwrap();
    assert_eq!(counts, vec![(SagaStatus::Running, due as i64)]);

    open.send(true).unwrap();
    for i in 0..due {
        assert_status(
            &finish(&engine, &format!("due-{i}"), 30).await,
            SagaStatus::Succeeded,
        );
    }
    assert!(
        h.max_in_flight() <= LIMIT,
        "{} calls at once",
        h.max_in_flight()
    );
}
