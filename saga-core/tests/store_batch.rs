//! The store's group commit: many writes of many sagas land in one batch statement. These
//! tests send writes concurrently so that batches mix creations, duplicates, conflicting
//! duplicates, current and stale transitions, and check each write's own outcome.

#[macro_use]
mod engine_support;

use engine_support::{Backend, Db};
use futures::future::join_all;
use saga_core::machine::{Phase, SagaStatus, StepState, StepStatus};
use saga_core::store::{AttemptRecord, Inserted, NewInstance, TransitionWrite, now_ms};
use serde_json::json;

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
            op: "action".into(),
            attempt: 1,
            owner: label.to_string(),
            fence,
            started_at: now_ms(),
            finished_at: now_ms(),
            outcome: "succeeded".into(),
            error: None,
        }],
        now: now_ms(),
    }
}

async fn batches_keep_each_writes_outcome(backend: Backend) {
    let db = Db::new(backend);
    let store = db.store().await;
    let gids: Vec<String> = (0..40).map(|i| format!("batch-{i:02}")).collect();

    // Creations, identical duplicates of the first ten, and a duplicate of `batch-10` with
    // another definition, all in flight at once.
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
        async move { (n.gid.clone(), store.insert(n).await.expect("insert")) }
    }))
    .await;
    for gid in &gids {
        let created = outcomes
            .iter()
            .filter(|(g, o)| g == gid && *o == Inserted::Created)
            .count();
        assert_eq!(created, 1, "{gid} is created exactly once");
        let record = store.load(gid).await.unwrap().expect("created");
        assert_eq!(
            record.step_names,
            ["a", "b", "c"],
            "{gid} keeps its own steps"
        );
        assert_eq!(record.fingerprint, "fp-1");
        assert_eq!(record.fence, 1);
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
        let owners: Vec<String> = store
            .attempts(gid)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.owner)
            .collect();
        assert_eq!(
            owners,
            ["current"],
            "{gid}: only the applied write's call is recorded"
        );
    }
}

on_both_stores!(batches_keep_each_writes_outcome);
