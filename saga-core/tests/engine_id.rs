//! The default engine id (`EngineConfig::engine_id` left `None`), on SQLite and PostgreSQL:
//!
//! - engines built one after another on one store, in one process and directory, get the same
//!   id;
//! - while one lives, a second engine on the store gets another id (and a configured id is used
//!   as it is);
//! - an engine restarted after a crash takes its own running saga back at once, well before the
//!   lease it left would run out.
#![cfg(all(feature = "sqlite", feature = "postgres"))]

#[macro_use]
mod engine_support;

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use saga_core::{EngineConfig, SagaStatus};

use engine_support::*;

on_both_stores!(
    default_engine_id_is_the_same_for_engines_built_one_after_another,
    a_second_live_engine_on_the_store_gets_another_engine_id,
);

on_both_stores_sync!(restarted_engine_with_the_default_id_takes_its_saga_back_at_once);

/// The tests' short timings, with the default engine id.
fn default_id_config() -> EngineConfig {
    EngineConfig {
        engine_id: None,
        ..config("unused")
    }
}

async fn default_engine_id_is_the_same_for_engines_built_one_after_another(backend: Backend) {
    let db = Db::new(backend);
    let h = Harness::ok();
    let first = engine(db.store().await, default_id_config(), &h).await;
    let id = first.engine_id().to_string();
    assert_eq!(first.config().engine_id.as_deref(), Some(id.as_str()));
    first.submit::<Linear>("first", &"x".into()).await.unwrap();
    assert_status(&finish(&first, "first", 10).await, SagaStatus::Succeeded);
    first.shutdown().await;
    drop(first);

    let second = engine(db.store().await, default_id_config(), &h).await;
    assert_eq!(
        second.engine_id(),
        id,
        "the default id changed between two engines"
    );
    second.shutdown().await;
}

async fn a_second_live_engine_on_the_store_gets_another_engine_id(backend: Backend) {
    let db = Db::new(backend);
    let h = Harness::ok();
    let first = engine(db.store().await, default_id_config(), &h).await;
    let second = engine(db.store().await, default_id_config(), &h).await;
    assert_eq!(
        second.engine_id(),
        format!("{}-{}", first.engine_id(), std::process::id()),
        "the second engine falls back to the derived id and its process id"
    );

    // Both drive sagas, each under its own id.
    for (engine, gid) in [(&first, "on-first"), (&second, "on-second")] {
        engine.submit::<Linear>(gid, &"x".into()).await.unwrap();
        assert_status(&finish(engine, gid, 10).await, SagaStatus::Succeeded);
        let attempts = engine.store().attempts(gid).await.unwrap();
        assert!(!attempts.is_empty());
        assert!(
            attempts.iter().all(|a| a.owner == engine.engine_id()),
            "{attempts:#?}"
        );
    }

    // A configured id is used as it is, without a hold.
    let configured = engine(db.store().await, config("configured"), &h).await;
    assert_eq!(configured.engine_id(), "configured");

    for engine in [first, second, configured] {
        engine.shutdown().await;
    }
}

/// A lease far longer than the wait below: a saga that finishes within the wait was taken
/// back, not claimed once the lease ran out.
const LONG_LEASE: Duration = Duration::from_secs(30);

/// How long the restarted engine is given to finish the saga.
const WAIT: u64 = 10;

fn restarted_engine_with_the_default_id_takes_its_saga_back_at_once(backend: Backend) {
    let db = Db::new(backend);
    let gid = "restarted";
    let (reached_tx, reached_rx) = std_mpsc::channel();

    let crashed = runtime();
    let first_id = crashed.block_on(async {
        let h = Harness::with_action(move |c| {
            let reached = reached_tx.clone();
            async move {
                if c.step == "b" {
                    reached.send(()).unwrap();
                    std::future::pending::<()>().await;
                }
                Ok(output_of(&c))
            }
        });
        let mut cfg = default_id_config();
        cfg.lease = LONG_LEASE;
        cfg.step_timeout = Duration::from_secs(60);
        let engine = engine(db.store().await, cfg, &h).await;
        engine.submit::<Linear>(gid, &"x".into()).await.unwrap();
        engine.engine_id().to_string()
    });
    reached_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("step b was called");
    // The crash: the engine's tasks, its leases' renewal and its hold on the id are dropped.
    drop(crashed);

    let rt = runtime();
    rt.block_on(async {
        let store = db.store().await;
        let left = store.load(gid).await.unwrap().unwrap();
        assert_eq!(left.owner.as_deref(), Some(first_id.as_str()));
        assert!(!left.state.status.is_terminal());

        let mut cfg = default_id_config();
        cfg.lease = LONG_LEASE;
        let started = Instant::now();
        let h = Harness::ok();
        let engine = engine(store, cfg, &h).await;
        assert_eq!(engine.engine_id(), first_id, "the restart got another id");
        let view = finish(&engine, gid, WAIT).await;
        assert_status(&view, SagaStatus::Succeeded);
        assert!(
            started.elapsed() < LONG_LEASE / 2,
            "took {:?}: the lease was waited out",
            started.elapsed()
        );
        assert_eq!(h.order(gid, saga_core::Op::Action), ["b", "c", "d"]);
        engine.shutdown().await;
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
