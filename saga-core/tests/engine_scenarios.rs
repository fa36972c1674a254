//! The engine's behaviour (docs/semantics.md, "The state machine" and "The store"), each scenario run on SQLite
//! (`name::sqlite`) and PostgreSQL (`name::postgres`).
#![cfg(all(feature = "sqlite", feature = "postgres"))]

#[macro_use]
mod engine_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use saga_core::machine::{SagaState, StepState};
use saga_core::store::{AttemptOutcome, now_ms};
use saga_core::{
    DefinitionError, Engine, EngineConfig, EngineError, Op, Retry, Saga, SagaStatus, StepError,
    StepStatus,
};
use serde_json::json;
use tokio::sync::Notify;

use engine_support::*;

on_both_stores!(
    normal_saga_succeeds,
    business_failure_rolls_back_in_reverse_order,
    failed_first_step_is_undone_too,
    in_doubt_step_is_retried_then_succeeds,
    step_timeout_is_in_doubt_and_retried,
    failing_compensation_is_retried_until_it_succeeds,
    retries_back_off_exponentially_with_jitter_up_to_the_cap,
    saga_deadline_before_the_pivot_turns_to_compensation,
    duplicate_submit_is_a_no_op,
    concurrent_duplicate_submits_create_one_instance,
    conflicting_submit_errors_and_overwrites_nothing,
    concurrent_steps_run_concurrently_and_roll_back_in_reverse_dependency_order,
    retriable_step_out_of_attempts_is_stuck_until_an_operator_retries,
    compensation_out_of_attempts_is_stuck_until_an_operator_retries,
    compensation_resumed_by_an_operator_keeps_the_rollback_reason,
    operator_compensate_before_the_pivot_rolls_back,
    operator_compensate_after_the_pivot_is_refused,
    operator_retry_on_another_engine_wakes_the_saga_there,
    operator_compensate_on_another_engine_resumes_a_compensating_saga,
    unknown_definition_fingerprint_is_left_untouched,
    panicking_step_is_in_doubt_and_retried,
    invalid_definition_is_refused_when_the_engine_is_built,
    invalid_gid_is_refused_before_anything_is_stored,
);

const INPUT: &str = "order";

async fn normal_saga_succeeds(backend: Backend) {
    let db = Db::new(backend);
    let effects = db.effects().await;
    let h = Harness::effects(effects.clone());
    let engine = engine(db.store().await, config("e1"), &h).await;

    let submitted = engine
        .submit::<Linear>("ok-1", &INPUT.into())
        .await
        .unwrap();
    assert!(submitted.created);
    assert_eq!(submitted.status, SagaStatus::Running);
    let view = finish(&engine, "ok-1", 10).await;

    assert_status(&view, SagaStatus::Succeeded);
    assert_eq!(view.reason, None);
    assert_eq!(step_statuses(&view), ["succeeded"; 4]);
    for s in &view.steps {
        assert_eq!(s.attempts, 1, "{s:?}");
        assert_eq!(s.compensate_attempts, 0, "{s:?}");
        assert_eq!(s.last_error, None, "{s:?}");
        assert_eq!(s.output, Some(json!(format!("{}:ok-1", s.name))));
    }
    assert!(view.past_pivot);
    assert_eq!(h.order("ok-1", Op::Action), ["a", "b", "c", "d"]);
    assert!(h.calls_of("ok-1", Op::Compensate).is_empty());
    assert_eq!(
        effects.of("ok-1").await,
        effects_list(&[
            ("a", "action"),
            ("b", "action"),
            ("c", "action"),
            ("d", "action")
        ])
    );
    let attempts = engine.store().attempts("ok-1").await.unwrap();
    assert_eq!(attempts.len(), 4, "{attempts:#?}");
    assert!(
        attempts
            .iter()
            .all(|a| a.outcome == AttemptOutcome::Succeeded && a.fence == 1)
    );
    let record = engine.store().load("ok-1").await.unwrap().unwrap();
    assert_eq!(record.owner, None, "a finished saga keeps no lease");
}

/// Step `c` (the pivot) fails for a business reason: `b` then `a` are undone.
async fn business_failure_rolls_back_in_reverse_order(backend: Backend) {
    let db = Db::new(backend);
    let effects = db.effects().await;
    let h = {
        let effects = effects.clone();
        let undo_effects = effects.clone();
        Harness::new(
            move |c| {
                let effects = effects.clone();
                async move {
                    if c.step == "c" {
                        return Err(StepError::failure("card declined"));
                    }
                    let _ = effects.apply(&c.gid, c.step, Op::Action).await.unwrap();
                    Ok(output_of(&c))
                }
            },
            move |c| {
                let effects = undo_effects.clone();
                async move {
                    let _ = effects.apply(&c.gid, c.step, Op::Compensate).await.unwrap();
                    Ok(())
                }
            },
        )
    };
    let engine = engine(db.store().await, config("e1"), &h).await;

    engine
        .submit::<Linear>("fail-c", &INPUT.into())
        .await
        .unwrap();
    let view = finish(&engine, "fail-c", 10).await;

    assert_status(&view, SagaStatus::Compensated);
    assert_eq!(view.reason.as_deref(), Some("c: card declined"));
    assert_eq!(
        step_statuses(&view),
        ["compensated", "compensated", "failed", "skipped"]
    );
    assert_eq!(view.steps[2].last_error.as_deref(), Some("card declined"));
    assert_eq!(h.order("fail-c", Op::Action), ["a", "b", "c"]);
    assert_eq!(h.order("fail-c", Op::Compensate), ["b", "a"]);
    // Each undo ran after the previous one had finished.
    let undos = h.calls_of("fail-c", Op::Compensate);
    assert!(undos[0].finished.unwrap() <= undos[1].started);
    // Undos receive their step's output.
    assert_eq!(undos[0].call.output, Some(json!("b:fail-c")));
    assert_eq!(undos[1].call.output, Some(json!("a:fail-c")));
    assert_eq!(
        effects.of("fail-c").await,
        effects_list(&[
            ("a", "action"),
            ("a", "compensate"),
            ("b", "action"),
            ("b", "compensate")
        ])
    );
}

/// A compensatable step that fails is undone as well (with no output), then its predecessors.
async fn failed_first_step_is_undone_too(backend: Backend) {
    let db = Db::new(backend);
    let h = Harness::with_action(|c| async move {
        if c.step == "b" {
            Err(StepError::failure("out of stock"))
        } else {
            Ok(output_of(&c))
        }
    });
    let engine = engine(db.store().await, config("e1"), &h).await;

    engine
        .submit::<Linear>("fail-b", &INPUT.into())
        .await
        .unwrap();
    let view = finish(&engine, "fail-b", 10).await;

    assert_status(&view, SagaStatus::Compensated);
    assert_eq!(view.reason.as_deref(), Some("b: out of stock"));
    assert_eq!(
        step_statuses(&view),
        ["compensated", "compensated", "skipped", "skipped"]
    );
    assert_eq!(h.order("fail-b", Op::Compensate), ["b", "a"]);
    let undos = h.calls_of("fail-b", Op::Compensate);
    assert_eq!(undos[0].call.output, None, "a failed step has no output");
    assert_eq!(undos[1].call.output, Some(json!("a:fail-b")));
    assert!(!view.past_pivot);
}

async fn in_doubt_step_is_retried_then_succeeds(backend: Backend) {
    let db = Db::new(backend);
    let h = Harness::with_action(|c| async move {
        if c.step == "b" && c.attempt < 3 {
            Err(StepError::retry(format!("busy {}", c.attempt)))
        } else {
            Ok(output_of(&c))
        }
    });
    let engine = engine(db.store().await, config("e1"), &h).await;

    engine
        .submit::<Linear>("flaky", &INPUT.into())
        .await
        .unwrap();
    let view = finish(&engine, "flaky", 10).await;

    assert_status(&view, SagaStatus::Succeeded);
    assert_eq!(view.steps[1].attempts, 3);
    assert_eq!(view.steps[1].last_error.as_deref(), Some("busy 2"));
    assert_eq!(view.steps[0].attempts, 1);
    assert_eq!(h.count("flaky", "b", Op::Action), 3);
    let attempts: Vec<_> = h
        .calls_of("flaky", Op::Action)
        .iter()
        .filter(|l| l.call.step == "b")
        .map(|l| l.call.attempt)
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
    let recorded: Vec<_> = engine
        .store()
        .attempts("flaky")
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.step == "b")
        .map(|a| (a.attempt, a.outcome, a.error))
        .collect();
    assert_eq!(
        recorded,
        [
            (1, AttemptOutcome::InDoubt, Some("busy 1".into())),
            (2, AttemptOutcome::InDoubt, Some("busy 2".into())),
            (3, AttemptOutcome::Succeeded, None),
        ]
    );
}

async fn step_timeout_is_in_doubt_and_retried(backend: Backend) {
    let db = Db::new(backend);
    let h = Harness::with_action(|c| async move {
        if c.step == "a" && c.attempt == 1 {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        Ok(output_of(&c))
    });
    let mut cfg = config("e1");
    cfg.step_timeout = Duration::from_millis(200);
    let engine = engine(db.store().await, cfg, &h).await;

    engine
        .submit::<Linear>("slow", &INPUT.into())
        .await
        .unwrap();
    let view = finish(&engine, "slow", 10).await;

    assert_status(&view, SagaStatus::Succeeded);
    assert_eq!(view.steps[0].attempts, 2);
    assert_eq!(
        view.steps[0].last_error.as_deref(),
        Some("timed out after 200 ms")
    );
    let first = &h.calls_of("slow", Op::Action)[0];
    let ran_for = first.finished.unwrap() - first.started;
    assert!(
        ran_for < Duration::from_secs(2),
        "the timed-out call was abandoned after {ran_for:?}"
    );
}

async fn failing_compensation_is_retried_until_it_succeeds(backend: Backend) {
    let db = Db::new(backend);
    let h = Harness::new(
        |c| async move {
            if c.step == "c" {
                Err(StepError::failure("declined"))
            } else {
                Ok(output_of(&c))
            }
        },
        |c| async move {
            if c.step == "a" && c.attempt < 3 {
                Err(Retry::new(format!("undo busy {}", c.attempt)))
            } else {
                Ok(())
            }
        },
    );
    let engine = engine(db.store().await, config("e1"), &h).await;

    engine
        .submit::<Linear>("undo-flaky", &INPUT.into())
        .await
        .unwrap();
    let view = finish(&engine, "undo-flaky", 10).await;

    assert_status(&view, SagaStatus::Compensated);
    assert_eq!(view.reason.as_deref(), Some("c: declined"));
    assert_eq!(view.steps[0].status, StepStatus::Compensated);
    assert_eq!(view.steps[0].compensate_attempts, 3);
    assert_eq!(view.steps[0].attempts, 1);
    assert_eq!(view.steps[0].last_error.as_deref(), Some("undo busy 2"));
    assert_eq!(view.steps[1].compensate_attempts, 1);
    assert_eq!(h.order("undo-flaky", Op::Compensate), ["b", "a", "a", "a"]);
}

/// Attempt `n + 1` starts the n-th backoff delay after attempt `n` ended: exponential from
/// `retry_initial`, capped at `retry_max`, with equal jitter (within `[exp / 2, exp]`).
async fn retries_back_off_exponentially_with_jitter_up_to_the_cap(backend: Backend) {
    const INITIAL: u64 = 40;
    const MAX: u64 = 160;
    const FAILURES: u32 = 6;
    let db = Db::new(backend);
    let h = Harness::with_action(|c| async move {
        if c.step == "a" && c.attempt <= FAILURES {
            Err(StepError::retry("busy"))
        } else {
            Ok(output_of(&c))
        }
    });
    let mut cfg = config("e1");
    cfg.retry_initial = Duration::from_millis(INITIAL);
    cfg.retry_max = Duration::from_millis(MAX);
    cfg.max_attempts = 20;
    let engine = engine(db.store().await, cfg, &h).await;

    engine
        .submit::<Linear>("backoff", &INPUT.into())
        .await
        .unwrap();
    let view = finish(&engine, "backoff", 20).await;
    assert_status(&view, SagaStatus::Succeeded);
    assert_eq!(view.steps[0].attempts, FAILURES + 1);

    let calls: Vec<_> = h
        .calls_of("backoff", Op::Action)
        .into_iter()
        .filter(|l| l.call.step == "a")
        .collect();
    assert_eq!(calls.len() as u32, FAILURES + 1);
    // Scheduling and the store's commit add a little; a loaded machine adds more.
    let slack = Duration::from_millis(120);
    let mut gaps = Vec::new();
    for n in 1..calls.len() {
        let gap = calls[n].started - calls[n - 1].finished.unwrap();
        let exp = (INITIAL << (n - 1)).min(MAX);
        gaps.push(gap);
        assert!(
            gap + Duration::from_millis(2) >= Duration::from_millis(exp / 2),
            "delay {n} was {gap:?}, below {} ms; gaps {gaps:?}",
            exp / 2
        );
        assert!(
            gap <= Duration::from_millis(exp) + slack,
            "delay {n} was {gap:?}, above {exp} ms (+ slack); gaps {gaps:?}"
        );
    }
    // Capped: the last delays are not 320 and 640 ms.
    let total: Duration = gaps.iter().sum();
    assert!(
        total < Duration::from_millis(40 + 80 + 160 * 4) + slack * 3,
        "total backoff {total:?}: {gaps:?}"
    );
    // The store's attempt records agree.
    let recorded = engine.store().attempts("backoff").await.unwrap();
    let a: Vec<_> = recorded.iter().filter(|r| r.step == "a").collect();
    assert_eq!(a.len() as u32, FAILURES + 1);
    for n in 1..a.len() {
        let exp = (INITIAL << (n - 1)).min(MAX) as i64;
        let gap = a[n].started_at - a[n - 1].finished_at;
        assert!(
            gap >= exp / 2 - 2,
            "recorded delay {n}: {gap} ms < {}",
            exp / 2
        );
    }
}

/// Step `b` keeps asking for a retry; the deadline passes before the pivot, so the saga turns
/// to compensation: `b` (in doubt, no output) and `a` are undone.
async fn saga_deadline_before_the_pivot_turns_to_compensation(backend: Backend) {
    let db = Db::new(backend);
    let h = Harness::with_action(|c| async move {
        if c.step == "b" {
            Err(StepError::retry("participant down"))
        } else {
            Ok(output_of(&c))
        }
    });
    let mut cfg = config("e1");
    cfg.saga_deadline = Some(Duration::from_millis(400));
    cfg.max_attempts = 1000;
    let engine = engine(db.store().await, cfg, &h).await;

    let started = Instant::now();
    engine
        .submit::<Linear>("late", &INPUT.into())
        .await
        .unwrap();
    let view = finish(&engine, "late", 10).await;
    let took = started.elapsed();

    assert_status(&view, SagaStatus::Compensated);
    assert_eq!(view.reason.as_deref(), Some("saga deadline passed"));
    assert!(
        took >= Duration::from_millis(400),
        "finished after {took:?}"
    );
    assert!(took < Duration::from_secs(3), "finished after {took:?}");
    assert_eq!(
        step_statuses(&view),
        ["compensated", "compensated", "skipped", "skipped"]
    );
    assert!(view.steps[1].attempts >= 2, "{:?}", view.steps[1]);
    assert_eq!(
        view.steps[1].last_error.as_deref(),
        Some("participant down")
    );
    assert_eq!(h.order("late", Op::Compensate), ["b", "a"]);
    let undos = h.calls_of("late", Op::Compensate);
    assert_eq!(undos[0].call.output, None, "b's outcome is in doubt");
    assert_eq!(undos[1].call.output, Some(json!("a:late")));
    assert!(h.count("late", "c", Op::Action) == 0);
}

async fn duplicate_submit_is_a_no_op(backend: Backend) {
    let db = Db::new(backend);
    let effects = db.effects().await;
    let h = Harness::effects(effects.clone());
    let engine = engine(db.store().await, config("e1"), &h).await;

    let first = engine.submit::<Linear>("dup", &INPUT.into()).await.unwrap();
    assert!(first.created);
    let while_running = engine.submit::<Linear>("dup", &INPUT.into()).await.unwrap();
    assert!(!while_running.created);
    let view = finish(&engine, "dup", 10).await;
    assert_status(&view, SagaStatus::Succeeded);
    let after = engine.submit::<Linear>("dup", &INPUT.into()).await.unwrap();
    assert!(!after.created);
    assert_eq!(after.status, SagaStatus::Succeeded);
    assert_eq!(after.reason, None);

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.order("dup", Op::Action), ["a", "b", "c", "d"]);
    assert_eq!(effects.of("dup").await.len(), 4);
    assert_eq!(engine.list(None, 10).await.unwrap().len(), 1);
    let again = finish(&engine, "dup", 1).await;
    assert_eq!(
        again.updated_at, view.updated_at,
        "the repeat changed nothing"
    );
}

async fn concurrent_duplicate_submits_create_one_instance(backend: Backend) {
    let db = Db::new(backend);
    let effects = db.effects().await;
    let h = Harness::effects(effects.clone());
    let engine = engine(db.store().await, config("e1"), &h).await;

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let engine = engine.clone();
        tasks.spawn(async move { engine.submit::<Linear>("race", &INPUT.into()).await });
    }
    let created = tasks
        .join_all()
        .await
        .into_iter()
        .map(|r| r.unwrap().created)
        .filter(|c| *c)
        .count();
    assert_eq!(created, 1);
    let view = finish(&engine, "race", 10).await;
    assert_status(&view, SagaStatus::Succeeded);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.order("race", Op::Action), ["a", "b", "c", "d"]);
    assert_eq!(effects.of("race").await.len(), 4);
}

async fn conflicting_submit_errors_and_overwrites_nothing(backend: Backend) {
    let db = Db::new(backend);
    let h = Harness::ok();
    let engine = engine(db.store().await, config("e1"), &h).await;

    engine
        .submit::<Linear>("conflict", &"first".into())
        .await
        .unwrap();
    let view = finish(&engine, "conflict", 10).await;

    match engine.submit::<Linear>("conflict", &"second".into()).await {
        Err(EngineError::Conflict { gid, what }) => {
            assert_eq!(gid, "conflict");
            assert_eq!(what, "input");
        }
        other => panic!("expected a conflict on the input, got {other:?}"),
    }
    match engine.submit::<Fork>("conflict", &"first".into()).await {
        Err(EngineError::Conflict { what, .. }) => assert_eq!(what, "saga"),
        other => panic!("expected a conflict on the saga, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let record = engine.store().load("conflict").await.unwrap().unwrap();
    assert_eq!(record.input, json!("first"));
    assert_eq!(record.saga, "linear");
    let now = finish(&engine, "conflict", 1).await;
    assert_eq!(now, view, "nothing was overwritten");
    assert!(
        h.calls_of("conflict", Op::Action)
            .iter()
            .all(|l| l.call.input == "first")
    );
    assert_eq!(h.calls("conflict").len(), 4);
}

/// In `fork`, `b` and `c` both wait only on `a`: they are in flight at the same moment. When
/// the pivot `d` fails, both are undone before `a`.
async fn concurrent_steps_run_concurrently_and_roll_back_in_reverse_dependency_order(
    backend: Backend,
) {
    let db = Db::new(backend);
    let both_started = Arc::new(tokio::sync::Barrier::new(2));
    let h = Harness::new(
        move |c| {
            let both_started = both_started.clone();
            async move {
                match c.step {
                    // Each branch waits until the other one has started.
                    "b" | "c" => {
                        tokio::time::timeout(Duration::from_secs(3), both_started.wait())
                            .await
                            .map_err(|_| StepError::retry("the other branch never started"))?;
                        Ok(output_of(&c))
                    }
                    "d" => Err(StepError::failure("pivot says no")),
                    _ => Ok(output_of(&c)),
                }
            }
        },
        |c| async move {
            if c.step != "a" {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(())
        },
    );
    let mut cfg = config("e1");
    cfg.step_timeout = Duration::from_secs(5);
    let engine = engine(db.store().await, cfg, &h).await;

    engine.submit::<Fork>("fork", &INPUT.into()).await.unwrap();
    let view = finish(&engine, "fork", 10).await;

    assert_status(&view, SagaStatus::Compensated);
    assert_eq!(view.reason.as_deref(), Some("d: pivot says no"));
    assert_eq!(
        step_statuses(&view),
        ["compensated", "compensated", "compensated", "failed"]
    );
    assert_eq!(view.steps[1].attempts, 1, "b ran once, concurrently with c");
    assert_eq!(view.steps[2].attempts, 1, "c ran once, concurrently with b");
    assert!(h.max_in_flight() >= 2);
    let actions = h.calls_of("fork", Op::Action);
    assert_eq!(actions[0].call.step, "a");
    assert!(actions[0].finished.unwrap() <= actions[1].started);

    let undos = h.calls_of("fork", Op::Compensate);
    let order: Vec<_> = undos.iter().map(|l| l.call.step).collect();
    assert_eq!(order.len(), 3, "{order:?}");
    assert_eq!(order[2], "a", "a is undone last: {order:?}");
    let mut branches = order[..2].to_vec();
    branches.sort();
    assert_eq!(branches, ["b", "c"]);
    let a_undo = &undos[2];
    for branch in &undos[..2] {
        assert!(
            branch.finished.unwrap() <= a_undo.started,
            "a's undo started before {}'s undo finished",
            branch.call.step
        );
    }
    // The two branch undos do not wait on each other.
    assert!(undos[1].started < undos[0].finished.unwrap());
}

async fn retriable_step_out_of_attempts_is_stuck_until_an_operator_retries(backend: Backend) {
    let db = Db::new(backend);
    let healthy = Arc::new(AtomicBool::new(false));
    let h = {
        let healthy = healthy.clone();
        Harness::with_action(move |c| {
            let healthy = healthy.load(Ordering::SeqCst);
            async move {
                if c.step == "d" && !healthy {
                    Err(StepError::retry("ledger offline"))
                } else {
                    Ok(output_of(&c))
                }
            }
        })
    };
    let mut cfg = config("e1");
    cfg.max_attempts = 3;
    let engine = engine(db.store().await, cfg, &h).await;

    engine
        .submit::<Linear>("stuck-d", &INPUT.into())
        .await
        .unwrap();
    let view = finish(&engine, "stuck-d", 10).await;

    assert_status(&view, SagaStatus::Stuck);
    let reason = view.reason.clone().unwrap();
    assert!(reason.contains('d') && reason.starts_with("d "), "{reason}");
    assert!(reason.contains("ledger offline"), "{reason}");
    assert_eq!(view.steps[3].attempts, 3);
    assert_eq!(view.steps[3].status, StepStatus::Pending);
    assert_eq!(h.count("stuck-d", "d", Op::Action), 3);
    let stuck = engine.list(Some(SagaStatus::Stuck), 10).await.unwrap();
    assert_eq!(stuck.len(), 1);
    assert_eq!(stuck[0].gid, "stuck-d");
    // Parked: nothing more happens on its own.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.count("stuck-d", "d", Op::Action), 3);
    assert!(matches!(
        engine.compensate("stuck-d").await,
        Err(EngineError::PastPivot { gid }) if gid == "stuck-d"
    ));

    healthy.store(true, Ordering::SeqCst);
    engine.retry("stuck-d").await.unwrap();
    left_status(&engine, "stuck-d", SagaStatus::Stuck, 5).await;
    let view = finish(&engine, "stuck-d", 10).await;
    assert_status(&view, SagaStatus::Succeeded);
    assert_eq!(view.reason, None);
    assert_eq!(view.steps[3].attempts, 4);
    assert_eq!(view.steps[3].last_error.as_deref(), Some("ledger offline"));
    assert_eq!(
        h.count("stuck-d", "c", Op::Action),
        1,
        "the pivot is not repeated"
    );
}

async fn compensation_out_of_attempts_is_stuck_until_an_operator_retries(backend: Backend) {
    let db = Db::new(backend);
    let healthy = Arc::new(AtomicBool::new(false));
    let h = {
        let healthy = healthy.clone();
        Harness::new(
            |c| async move {
                if c.step == "c" {
                    Err(StepError::failure("declined"))
                } else {
                    Ok(output_of(&c))
                }
            },
            move |c| {
                let healthy = healthy.load(Ordering::SeqCst);
                async move {
                    if c.step == "b" && !healthy {
                        Err(Retry::new("refund service down"))
                    } else {
                        Ok(())
                    }
                }
            },
        )
    };
    let mut cfg = config("e1");
    cfg.max_attempts = 3;
    let engine = engine(db.store().await, cfg, &h).await;

    engine
        .submit::<Linear>("stuck-undo", &INPUT.into())
        .await
        .unwrap();
    let view = finish(&engine, "stuck-undo", 10).await;

    assert_status(&view, SagaStatus::Stuck);
    let reason = view.reason.clone().unwrap();
    assert!(reason.starts_with("b compensation"), "{reason}");
    assert!(reason.contains("refund service down"), "{reason}");
    assert_eq!(view.steps[1].compensate_attempts, 3);
    assert_eq!(h.order("stuck-undo", Op::Compensate), ["b", "b", "b"]);
    assert_eq!(
        h.count("stuck-undo", "a", Op::Compensate),
        0,
        "a waits for b"
    );

    healthy.store(true, Ordering::SeqCst);
    engine.retry("stuck-undo").await.unwrap();
    left_status(&engine, "stuck-undo", SagaStatus::Stuck, 5).await;
    let view = finish(&engine, "stuck-undo", 10).await;
    assert_status(&view, SagaStatus::Compensated);
    assert_eq!(
        step_statuses(&view),
        ["compensated", "compensated", "failed", "skipped"]
    );
    assert_eq!(view.steps[1].compensate_attempts, 4);
    assert_eq!(
        h.order("stuck-undo", Op::Compensate),
        ["b", "b", "b", "b", "a"]
    );
}

/// Once the undo that was stuck succeeds, the compensated saga says why it was rolled back
/// (the business failure), not why it was parked.
async fn compensation_resumed_by_an_operator_keeps_the_rollback_reason(backend: Backend) {
    let db = Db::new(backend);
    let healthy = Arc::new(AtomicBool::new(false));
    let h = {
        let healthy = healthy.clone();
        Harness::new(
            |c| async move {
                if c.step == "c" {
                    Err(StepError::failure("declined"))
                } else {
                    Ok(output_of(&c))
                }
            },
            move |c| {
                let healthy = healthy.load(Ordering::SeqCst);
                async move {
                    if c.step == "b" && !healthy {
                        Err(Retry::new("refund service down"))
                    } else {
                        Ok(())
                    }
                }
            },
        )
    };
    let mut cfg = config("e1");
    cfg.max_attempts = 2;
    let engine = engine(db.store().await, cfg, &h).await;

    engine
        .submit::<Linear>("reason", &INPUT.into())
        .await
        .unwrap();
    let view = finish(&engine, "reason", 10).await;
    assert_status(&view, SagaStatus::Stuck);
    healthy.store(true, Ordering::SeqCst);
    engine.retry("reason").await.unwrap();
    left_status(&engine, "reason", SagaStatus::Stuck, 5).await;
    let view = finish(&engine, "reason", 10).await;
    assert_status(&view, SagaStatus::Compensated);
    assert_eq!(view.reason.as_deref(), Some("c: declined"));
}

/// An operator's retry reaches an engine that does not drive the saga (another process, or
/// this one after a restart): that engine takes the saga over and calls its steps at once,
/// instead of waiting out the backoff it was left with.
async fn operator_retry_on_another_engine_wakes_the_saga_there(backend: Backend) {
    let db = Db::new(backend);
    let healthy = Arc::new(AtomicBool::new(false));
    let h = {
        let healthy = healthy.clone();
        Harness::with_action(move |c| {
            let healthy = healthy.load(Ordering::SeqCst);
            async move {
                if c.step == "b" && !healthy {
                    Err(StepError::retry("payment service down"))
                } else {
                    Ok(output_of(&c))
                }
            }
        })
    };
    // A backoff far longer than the test: only the operator's retry can bring `b` back.
    let mut slow = config("e1");
    (slow.retry_initial, slow.retry_max) = (Duration::from_secs(600), Duration::from_secs(600));
    slow.max_attempts = 1000;
    let first = engine(db.store().await, slow.clone(), &h).await;
    first
        .submit::<Linear>("woken", &INPUT.into())
        .await
        .unwrap();
    eventually(10, "b was called once", || async {
        h.count("woken", "b", Op::Action) == 1
    })
    .await;
    first.shutdown().await;

    healthy.store(true, Ordering::SeqCst);
    let second = engine(
        db.store().await,
        EngineConfig {
            engine_id: Some("e2".into()),
            ..slow
        },
        &h,
    )
    .await;
    second.retry("woken").await.unwrap();
    let view = finish(&second, "woken", 10).await;
    assert_status(&view, SagaStatus::Succeeded);
    assert_eq!(
        h.count("woken", "b", Op::Action),
        2,
        "woken once, called once more"
    );
}

/// A saga already compensating, its compensation of `b` waiting out a long backoff, is asked to
/// compensate on an engine that does not drive it: that engine takes it over and carries on with
/// the compensations (asking again to compensate changes nothing, so it must dispatch them itself).
async fn operator_compensate_on_another_engine_resumes_a_compensating_saga(backend: Backend) {
    let db = Db::new(backend);
    let healthy = Arc::new(AtomicBool::new(false));
    let h = {
        let healthy = healthy.clone();
        Harness::new(
            move |c| async move {
                if c.step == "c" {
                    return Err(StepError::failure("card declined"));
                }
                Ok(output_of(&c))
            },
            move |c| {
                let healthy = healthy.load(Ordering::SeqCst);
                async move {
                    if c.step == "b" && !healthy {
                        Err(Retry::new("stock service down"))
                    } else {
                        Ok(())
                    }
                }
            },
        )
    };
    // A backoff far longer than the test: only the operator can bring the compensation back.
    let mut slow = config("e1");
    (slow.retry_initial, slow.retry_max) = (Duration::from_secs(600), Duration::from_secs(600));
    slow.max_attempts = 1000;
    let first = engine(db.store().await, slow.clone(), &h).await;
    first
        .submit::<Linear>("resumed", &INPUT.into())
        .await
        .unwrap();
    eventually(10, "b's compensation was called once", || async {
        h.count("resumed", "b", Op::Compensate) == 1
    })
    .await;
    first.shutdown().await;
    let stored = first.status("resumed").await.unwrap().unwrap();
    assert_status(&stored, SagaStatus::Compensating);

    healthy.store(true, Ordering::SeqCst);
    let second = engine(
        db.store().await,
        EngineConfig {
            engine_id: Some("e2".into()),
            ..slow
        },
        &h,
    )
    .await;
    second.compensate("resumed").await.unwrap();
    let view = finish(&second, "resumed", 10).await;
    assert_status(&view, SagaStatus::Compensated);
    assert_eq!(h.count("resumed", "b", Op::Compensate), 2);
    assert_eq!(h.count("resumed", "a", Op::Compensate), 1);
}

async fn operator_compensate_before_the_pivot_rolls_back(backend: Backend) {
    let db = Db::new(backend);
    let h = Harness::with_action(|c| async move {
        if c.step == "b" {
            Err(StepError::retry("try later"))
        } else {
            Ok(output_of(&c))
        }
    });
    let mut cfg = config("e1");
    cfg.max_attempts = 1000;
    let engine = engine(db.store().await, cfg, &h).await;

    engine
        .submit::<Linear>("op-comp", &INPUT.into())
        .await
        .unwrap();
    eventually(5, "b is retried", || async {
        h.count("op-comp", "b", Op::Action) >= 2
    })
    .await;
    let view = engine.status("op-comp").await.unwrap().unwrap();
    assert_status(&view, SagaStatus::Running);
    assert!(!view.past_pivot);

    engine.compensate("op-comp").await.unwrap();
    let view = finish(&engine, "op-comp", 10).await;
    assert_status(&view, SagaStatus::Compensated);
    assert_eq!(
        view.reason.as_deref(),
        Some("compensation requested by an operator")
    );
    assert_eq!(
        step_statuses(&view),
        ["compensated", "compensated", "skipped", "skipped"]
    );
    assert_eq!(h.order("op-comp", Op::Compensate), ["b", "a"]);
    let b_calls = h.count("op-comp", "b", Op::Action);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        h.count("op-comp", "b", Op::Action),
        b_calls,
        "b is no longer retried"
    );

    assert!(matches!(
        engine.compensate("op-comp").await,
        Err(EngineError::Finished {
            status: SagaStatus::Compensated,
            ..
        })
    ));
    assert!(matches!(
        engine.retry("op-comp").await,
        Err(EngineError::Finished {
            status: SagaStatus::Compensated,
            ..
        })
    ));
    assert!(matches!(
        engine.compensate("no-such-gid").await,
        Err(EngineError::NotFound(_))
    ));
}

async fn operator_compensate_after_the_pivot_is_refused(backend: Backend) {
    let db = Db::new(backend);
    let release = Arc::new(Notify::new());
    let h = {
        let release = release.clone();
        Harness::with_action(move |c| {
            let release = release.clone();
            async move {
                if c.step == "d" {
                    release.notified().await;
                }
                Ok(output_of(&c))
            }
        })
    };
    let mut cfg = config("e1");
    cfg.step_timeout = Duration::from_secs(10);
    let engine = engine(db.store().await, cfg, &h).await;

    engine
        .submit::<Linear>("op-late", &INPUT.into())
        .await
        .unwrap();
    eventually(5, "d is running", || async {
        h.count("op-late", "d", Op::Action) == 1
    })
    .await;
    let view = engine.status("op-late").await.unwrap().unwrap();
    assert_status(&view, SagaStatus::Running);
    assert!(view.past_pivot);

    match engine.compensate("op-late").await {
        Err(e @ EngineError::PastPivot { .. }) => assert!(e.to_string().contains("pivot"), "{e}"),
        other => panic!("compensate after the pivot must be refused, got {other:?}"),
    }
    release.notify_one();
    let view = finish(&engine, "op-late", 10).await;
    assert_status(&view, SagaStatus::Succeeded);
    assert!(h.calls_of("op-late", Op::Compensate).is_empty());
    match engine.compensate("op-late").await {
        Err(e @ EngineError::Finished { .. }) => assert!(e.to_string().contains("finished"), "{e}"),
        other => panic!("compensate of a finished saga must be refused, got {other:?}"),
    }
}

/// A saga whose definition this engine does not know (another version) is not driven: its
/// state and steps stay as they were, operator actions are refused, and an engine that knows
/// the definition finishes it later.
async fn unknown_definition_fingerprint_is_left_untouched(backend: Backend) {
    let db = Db::new(backend);
    let store = db.store().await;
    let gid = "other-version";
    let states = vec![StepState::default(); LINEAR_V2.len()];
    let now = now_ms();
    let steps: Vec<&str> = LINEAR_V2.steps.iter().map(|s| s.name).collect();
    let fingerprint = LinearV2::definition().fingerprint();
    plant_instance(
        &db,
        gid,
        ("linear", &fingerprint),
        &json!(INPUT),
        &steps,
        now,
    )
    .await;
    assert_ne!(
        LinearV2::definition().fingerprint(),
        Linear::definition().fingerprint()
    );

    let h = Harness::ok();
    let v1 = engine(db.store().await, config("v1-only"), &h).await;
    // Ten poll intervals: plenty of chances to claim it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let record = store.load(gid).await.unwrap().unwrap();
    assert_eq!(
        record.state,
        SagaState {
            status: SagaStatus::Running,
            phase: saga_core::machine::Phase::Forward,
            reason: None,
            cause: None,
            steps: states,
        }
    );
    assert_eq!(record.fingerprint, LinearV2::definition().fingerprint());
    assert_eq!(record.fence, 1, "never claimed");
    assert_eq!(record.owner.as_deref(), Some("crashed-engine"));
    assert_eq!(record.lease_until, 0);
    assert_eq!((record.created_at, record.updated_at), (now, now));
    assert!(h.all().is_empty(), "no step of the unknown saga was called");
    assert!(store.attempts(gid).await.unwrap().is_empty());
    assert!(matches!(
        v1.retry(gid).await,
        Err(EngineError::UnknownDefinition { .. })
    ));
    assert!(matches!(
        v1.compensate(gid).await,
        Err(EngineError::UnknownDefinition { .. })
    ));
    assert_eq!(v1.driving(), 0);
    v1.shutdown().await;

    let h2 = Harness::ok();
    let v2 = Engine::builder(db.store().await)
        .config(config("v2"))
        .register::<LinearV2, _>(h2.clone())
        .build()
        .await
        .unwrap();
    let view = finish(&v2, gid, 10).await;
    assert_status(&view, SagaStatus::Succeeded);
    assert_eq!(h2.order(gid, Op::Action), ["a", "b", "c", "d"]);
}

async fn panicking_step_is_in_doubt_and_retried(backend: Backend) {
    let db = Db::new(backend);
    let panics = Arc::new(AtomicU32::new(0));
    let h = {
        let panics = panics.clone();
        Harness::with_action(move |c| {
            let panics = panics.clone();
            async move {
                if c.step == "b" && c.attempt == 1 {
                    panics.fetch_add(1, Ordering::SeqCst);
                    panic!("boom in b");
                }
                Ok(output_of(&c))
            }
        })
    };
    let engine = engine(db.store().await, config("e1"), &h).await;

    engine
        .submit::<Linear>("panic", &INPUT.into())
        .await
        .unwrap();
    let view = finish(&engine, "panic", 10).await;

    assert_status(&view, SagaStatus::Succeeded);
    assert_eq!(panics.load(Ordering::SeqCst), 1);
    assert_eq!(view.steps[1].attempts, 2);
    assert_eq!(
        view.steps[1].last_error.as_deref(),
        Some("step panicked: boom in b")
    );
    let recorded = engine.store().attempts("panic").await.unwrap();
    assert!(
        recorded
            .iter()
            .any(|a| a.step == "b" && a.attempt == 1 && a.outcome == AttemptOutcome::InDoubt)
    );
}

async fn invalid_definition_is_refused_when_the_engine_is_built(backend: Backend) {
    let db = Db::new(backend);
    let built = Engine::builder(db.store().await)
        .config(config("e1"))
        .register::<Linear, _>(Harness::ok())
        .register::<Broken, _>(Harness::ok())
        .build()
        .await;
    let Err(e) = built else {
        panic!("an engine with a definition of two pivots must not start");
    };
    assert!(
        matches!(
            &e,
            EngineError::InvalidDefinition {
                saga: "broken",
                problem: DefinitionError::SecondPivot("q"),
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "saga `broken` has an invalid definition: step `q` is a second pivot; a saga has at most one"
    );
    let source = std::error::Error::source(&e).expect("the definition error is the source");
    assert!(source.downcast_ref::<DefinitionError>().is_some());
}

async fn invalid_gid_is_refused_before_anything_is_stored(backend: Backend) {
    let db = Db::new(backend);
    let h = Harness::ok();
    let engine = engine(db.store().await, config("e1"), &h).await;

    let too_long = "g".repeat(saga_core::MAX_GID_LEN + 1);
    for gid in ["", "order 1", "order/1", too_long.as_str()] {
        assert!(
            matches!(
                engine.submit::<Linear>(gid, &INPUT.into()).await,
                Err(EngineError::InvalidGid(_))
            ),
            "{gid:?}"
        );
    }
    assert!(engine.list(None, 10).await.unwrap().is_empty());
    assert!(h.all().is_empty());
}
