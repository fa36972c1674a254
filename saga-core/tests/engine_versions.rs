//! Deploying a changed saga (docs/semantics.md, "Deploying a changed saga"), on SQLite and
//! PostgreSQL: two versions of one saga side by side during a rolling deploy, and sagas of a
//! definition no engine knows, left untouched until one does.
#![cfg(all(feature = "sqlite", feature = "postgres"))]

#[macro_use]
mod engine_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_core::{Engine, EngineError, Retry, Saga, SagaStatus, StepContext, StepError};
use tokio::sync::Notify;

use engine_support::*;

on_both_stores!(
    a_rolling_deploy_drains_version_1_on_the_new_release_and_starts_version_2,
    sagas_of_an_unknown_definition_wait_untouched_until_an_engine_knows_it,
);

/// The release before: reserve, then pay.
#[derive(Saga)]
#[saga(input = u32, name = "checkout", version = 1)]
enum CheckoutV1 {
    #[compensate(release)]
    Reserve,
    #[pivot]
    Pay,
}

/// The new release: a fraud check between the two.
#[derive(Saga)]
#[saga(input = u32, name = "checkout", version = 2)]
enum CheckoutV2 {
    #[compensate(release)]
    Reserve,
    #[compensate(forget_check)]
    FraudCheck,
    #[pivot]
    Pay,
}

/// Records `(gid, step)` of every action; `pay` waits for `open` when `hold_pay` is set.
#[derive(Clone, Default)]
struct Shop {
    calls: Arc<Mutex<Vec<(String, &'static str)>>>,
    hold_pay: bool,
    open: Arc<Notify>,
}

impl Shop {
    fn holding() -> Shop {
        Shop {
            hold_pay: true,
            ..Shop::default()
        }
    }

    fn record(&self, ctx: &StepContext) {
        self.calls.lock().unwrap().push((ctx.gid.clone(), ctx.step));
    }

    /// The actions called per gid.
    fn calls(&self) -> BTreeMap<String, Vec<&'static str>> {
        let mut by_gid: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
        for (gid, step) in self.calls.lock().unwrap().iter() {
            by_gid.entry(gid.clone()).or_default().push(step);
        }
        by_gid
    }

    async fn pay(&self, ctx: &StepContext) -> Result<(), StepError> {
        self.record(ctx);
        if self.hold_pay {
            // Never answers: the saga stays in flight until this engine stops.
            self.open.notified().await;
        }
        Ok(())
    }
}

impl CheckoutV1Steps for Shop {
    async fn reserve(&self, ctx: &StepContext, _: &u32) -> Result<(), StepError> {
        self.record(ctx);
        Ok(())
    }
    async fn release(&self, _: &StepContext, _: &u32, _: Option<()>) -> Result<(), Retry> {
        Ok(())
    }
    async fn pay(&self, ctx: &StepContext, _: &u32) -> Result<(), StepError> {
        Shop::pay(self, ctx).await
    }
}

impl CheckoutV2Steps for Shop {
    async fn reserve(&self, ctx: &StepContext, _: &u32) -> Result<(), StepError> {
        self.record(ctx);
        Ok(())
    }
    async fn release(&self, _: &StepContext, _: &u32, _: Option<()>) -> Result<(), Retry> {
        Ok(())
    }
    async fn fraud_check(&self, ctx: &StepContext, _: &u32) -> Result<(), StepError> {
        self.record(ctx);
        Ok(())
    }
    async fn forget_check(&self, _: &StepContext, _: &u32, _: Option<()>) -> Result<(), Retry> {
        Ok(())
    }
    async fn pay(&self, ctx: &StepContext, _: &u32) -> Result<(), StepError> {
        Shop::pay(self, ctx).await
    }
}

/// The old release: version 1 only.
async fn release_1(db: &Db, shop: &Shop) -> Engine {
    Engine::builder(db.store().await)
        .config(config("release-1"))
        .register::<CheckoutV1, _>(shop.clone())
        .build()
        .await
        .expect("build release 1")
}

/// The new release: both versions.
async fn release_2(db: &Db, shop: &Shop) -> Engine {
    Engine::builder(db.store().await)
        .config(config("release-2"))
        .register::<CheckoutV1, _>(shop.clone())
        .register::<CheckoutV2, _>(shop.clone())
        .build()
        .await
        .expect("build release 2")
}

const IN_FLIGHT: usize = 5;

async fn a_rolling_deploy_drains_version_1_on_the_new_release_and_starts_version_2(
    backend: Backend,
) {
    let db = Db::new(backend);
    let old_shop = Shop::holding();
    let old = release_1(&db, &old_shop).await;
    for i in 0..IN_FLIGHT {
        old.submit::<CheckoutV1>(&format!("old-{i}"), &(i as u32))
            .await
            .unwrap();
    }
    eventually(10, "every old saga is paying on release 1", || async {
        old_shop
            .calls()
            .values()
            .filter(|c| c.contains(&"pay"))
            .count()
            == IN_FLIGHT
    })
    .await;

    // Release 2 starts next to release 1; it neither takes release 1's sagas nor blocks it.
    let new_shop = Shop::default();
    let new = release_2(&db, &new_shop).await;
    new.submit::<CheckoutV2>("new-1", &1).await.unwrap();
    let view = finish(&new, "new-1", 10).await;
    assert_status(&view, SagaStatus::Succeeded);
    assert!(
        matches!(
            new.submit::<CheckoutV1>("old-late", &9).await,
            Err(EngineError::Superseded {
                version: 1,
                newest: 2,
                ..
            })
        ),
        "new sagas start on the newest version"
    );
    assert!(
        new_shop.calls().keys().all(|gid| gid.starts_with("new-")),
        "release 2 took none of release 1's leased sagas: {:?}",
        new_shop.calls()
    );

    // Release 1 stops: release 2 finishes its sagas on version 1, with version 1's steps.
    old.shutdown().await;
    for i in 0..IN_FLIGHT {
        let gid = format!("old-{i}");
        let view = finish(&new, &gid, 20).await;
        assert_status(&view, SagaStatus::Succeeded);
        assert_eq!(
            step_statuses(&view).len(),
            2,
            "{gid} keeps version 1's steps"
        );
    }
    let calls = new_shop.calls();
    for i in 0..IN_FLIGHT {
        assert_eq!(
            calls[&format!("old-{i}")],
            ["pay"],
            "only the call in flight is made again, on version 1"
        );
    }
    assert_eq!(calls["new-1"], ["reserve", "fraud_check", "pay"]);
    new.shutdown().await;
}

async fn sagas_of_an_unknown_definition_wait_untouched_until_an_engine_knows_it(backend: Backend) {
    let db = Db::new(backend);
    let old_shop = Shop::holding();
    let old = release_1(&db, &old_shop).await;
    old.submit::<CheckoutV1>("old-1", &1).await.unwrap();
    eventually(10, "the saga is paying", || async {
        old_shop.calls().contains_key("old-1")
    })
    .await;
    old.shutdown().await;
    let before = db.store().await.load("old-1").await.unwrap().unwrap();

    // An engine that knows only version 2 leaves it alone, and says so.
    let v2_shop = Shop::default();
    let v2_only = Engine::builder(db.store().await)
        .config(config("release-2"))
        .register::<CheckoutV2, _>(v2_shop.clone())
        .build()
        .await
        .unwrap();
    let unknown = v2_only.unknown_definitions().await.unwrap();
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert_eq!(
        (
            unknown[0].saga.as_str(),
            unknown[0].instances,
            &unknown[0].gids
        ),
        ("checkout", 1, &vec!["old-1".to_string()])
    );
    assert_eq!(
        unknown[0].fingerprint,
        CheckoutV1::definition().fingerprint()
    );
    let listed = v2_only.list(None, 10).await.unwrap();
    let row = listed.iter().find(|s| s.gid == "old-1").unwrap();
    assert!(!v2_only.knows(&row.fingerprint));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = db.store().await.load("old-1").await.unwrap().unwrap();
    assert_eq!(after.state, before.state, "the saga is untouched");
    assert!(v2_shop.calls().is_empty());
    v2_only.shutdown().await;

    // An engine that knows version 1 takes it up.
    let resumed_shop = Shop::default();
    let resumed = release_2(&db, &resumed_shop).await;
    assert!(resumed.unknown_definitions().await.unwrap().is_empty());
    let view = finish(&resumed, "old-1", 20).await;
    assert_status(&view, SagaStatus::Succeeded);
    assert_eq!(resumed_shop.calls()["old-1"], ["pay"]);
    resumed.shutdown().await;
}
