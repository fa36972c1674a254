//! The no-op sagas of the coordinator bench: 2, 4, 8 or 16 compensatable steps that do nothing,
//! so that what is measured is the engine's own cost per saga and per step. [`NoopSteps`]
//! implements them all; with a [`Probe`] it also notes each call, and can hold every action
//! open (the recovery bench's sagas in flight).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use saga_core::engine::EngineBuilder;
use saga_core::store::now_ms;
use saga_core::{Retry, Saga, StepContext, StepError};
use serde::{Deserialize, Serialize};

/// The step counts the bench has sagas for.
pub const STEP_COUNTS: [u32; 4] = [2, 4, 8, 16];

/// The input of a no-op saga.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Noop {
    /// The saga's number in the run.
    pub n: u64,
}

/// What a [`NoopSteps`] with a probe saw.
#[derive(Debug, Default)]
pub struct Probe {
    /// Whether every action waits forever instead of returning (the engine's step timeout
    /// ends it, or the process is killed).
    pub hold: bool,
    /// Actions called.
    pub calls: AtomicU64,
    /// When the first action was called, ms since the Unix epoch (0: none yet).
    pub first_call_ms: AtomicI64,
    /// The gids whose actions were called.
    gids: Mutex<HashSet<String>>,
}

impl Probe {
    /// A probe whose actions return at once (`hold` false) or never.
    pub fn new(hold: bool) -> Arc<Probe> {
        Arc::new(Probe {
            hold,
            ..Probe::default()
        })
    }

    /// Distinct sagas whose actions were called.
    pub fn sagas(&self) -> usize {
        self.gids.lock().map(|g| g.len()).unwrap_or(0)
    }

    fn note(&self, gid: &str) {
        let now = now_ms();
        let _ = self
            .first_call_ms
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        if let Ok(mut gids) = self.gids.lock() {
            gids.insert(gid.to_string());
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

/// The steps of every no-op saga: each action returns at once (or, with a holding probe,
/// never), each compensation returns at once.
#[derive(Debug, Clone, Default)]
pub struct NoopSteps {
    probe: Option<Arc<Probe>>,
}

impl NoopSteps {
    /// Steps that note their calls in `probe`.
    pub fn probed(probe: Arc<Probe>) -> NoopSteps {
        NoopSteps { probe: Some(probe) }
    }

    async fn action(&self, ctx: &StepContext) -> Result<(), StepError> {
        if let Some(probe) = &self.probe {
            probe.note(&ctx.gid);
            if probe.hold {
                std::future::pending::<()>().await;
            }
        }
        Ok(())
    }
}

/// A no-op saga named `$name` with one compensatable step per `$step` (action `$action`,
/// compensation `$compensation`), and its implementation by [`NoopSteps`].
macro_rules! noop_saga {
    ($saga:ident, $steps_trait:ident, $name:literal, $($step:ident $action:ident $compensation:ident),+) => {
        #[doc = concat!("The no-op saga `", $name, "`.")]
        #[derive(Saga)]
        #[saga(input = Noop, name = $name)]
        pub enum $saga {
            $(
                #[doc = concat!("Step `", stringify!($action), "`.")]
                #[compensate($compensation)]
                $step,
            )+
        }

        impl $steps_trait for NoopSteps {
            $(
                async fn $action(&self, ctx: &StepContext, _: &Noop) -> Result<(), StepError> {
                    self.action(ctx).await
                }
                async fn $compensation(
                    &self,
                    _: &StepContext,
                    _: &Noop,
                    _: Option<()>,
                ) -> Result<(), Retry> {
                    Ok(())
                }
            )+
        }
    };
}

noop_saga!(Noop2, Noop2Steps, "noop_2",
    Step01 step01 step01_compensation, Step02 step02 step02_compensation);
noop_saga!(Noop4, Noop4Steps, "noop_4",
    Step01 step01 step01_compensation, Step02 step02 step02_compensation,
    Step03 step03 step03_compensation, Step04 step04 step04_compensation);
noop_saga!(Noop8, Noop8Steps, "noop_8",
    Step01 step01 step01_compensation, Step02 step02 step02_compensation,
    Step03 step03 step03_compensation, Step04 step04 step04_compensation,
    Step05 step05 step05_compensation, Step06 step06 step06_compensation,
    Step07 step07 step07_compensation, Step08 step08 step08_compensation);
noop_saga!(Noop16, Noop16Steps, "noop_16",
    Step01 step01 step01_compensation, Step02 step02 step02_compensation,
    Step03 step03 step03_compensation, Step04 step04 step04_compensation,
    Step05 step05 step05_compensation, Step06 step06 step06_compensation,
    Step07 step07 step07_compensation, Step08 step08 step08_compensation,
    Step09 step09 step09_compensation, Step10 step10 step10_compensation,
    Step11 step11 step11_compensation, Step12 step12 step12_compensation,
    Step13 step13 step13_compensation, Step14 step14 step14_compensation,
    Step15 step15 step15_compensation, Step16 step16 step16_compensation);

/// One of the no-op sagas, by its step count: registers it and submits it without naming its
/// type at every call site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoopSaga {
    /// [`Noop2`].
    Two,
    /// [`Noop4`].
    Four,
    /// [`Noop8`].
    Eight,
    /// [`Noop16`].
    Sixteen,
}

impl NoopSaga {
    /// The saga of `steps` steps, one of [`STEP_COUNTS`].
    pub fn with_steps(steps: u32) -> Option<NoopSaga> {
        match steps {
            2 => Some(NoopSaga::Two),
            4 => Some(NoopSaga::Four),
            8 => Some(NoopSaga::Eight),
            16 => Some(NoopSaga::Sixteen),
            _ => None,
        }
    }

    /// Its steps.
    pub fn steps(self) -> u32 {
        match self {
            NoopSaga::Two => 2,
            NoopSaga::Four => 4,
            NoopSaga::Eight => 8,
            NoopSaga::Sixteen => 16,
        }
    }

    /// `builder` with this saga registered on `steps`.
    pub fn register(self, builder: EngineBuilder, steps: NoopSteps) -> EngineBuilder {
        match self {
            NoopSaga::Two => builder.register::<Noop2, _>(steps),
            NoopSaga::Four => builder.register::<Noop4, _>(steps),
            NoopSaga::Eight => builder.register::<Noop8, _>(steps),
            NoopSaga::Sixteen => builder.register::<Noop16, _>(steps),
        }
    }

    /// Submits saga number `n` as `gid` and waits up to `timeout` for it to be terminal.
    pub async fn submit_and_wait(
        self,
        engine: &saga_core::engine::Engine,
        gid: &str,
        n: u64,
        timeout: std::time::Duration,
    ) -> Result<saga_core::Waited, saga_core::engine::EngineError> {
        let input = Noop { n };
        match self {
            NoopSaga::Two => engine.submit_and_wait::<Noop2>(gid, &input, timeout).await,
            NoopSaga::Four => engine.submit_and_wait::<Noop4>(gid, &input, timeout).await,
            NoopSaga::Eight => engine.submit_and_wait::<Noop8>(gid, &input, timeout).await,
            NoopSaga::Sixteen => engine.submit_and_wait::<Noop16>(gid, &input, timeout).await,
        }
    }

    /// Submits saga number `n` as `gid`, returning once it is durable.
    pub async fn submit(
        self,
        engine: &saga_core::engine::Engine,
        gid: &str,
        n: u64,
    ) -> Result<(), saga_core::engine::EngineError> {
        let input = Noop { n };
        match self {
            NoopSaga::Two => engine.submit::<Noop2>(gid, &input).await.map(drop),
            NoopSaga::Four => engine.submit::<Noop4>(gid, &input).await.map(drop),
            NoopSaga::Eight => engine.submit::<Noop8>(gid, &input).await.map(drop),
            NoopSaga::Sixteen => engine.submit::<Noop16>(gid, &input).await.map(drop),
        }
    }
}

/// Parses `--steps`: a comma-separated list of step counts, each one of [`STEP_COUNTS`], no
/// repeats, in the order given.
pub fn parse_step_counts(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let n: u32 = part
            .parse()
            .map_err(|_| format!("`{part}` is not a step count (expected a list like 2,4,8,16)"))?;
        if NoopSaga::with_steps(n).is_none() {
            return Err(format!(
                "no no-op saga of {n} steps; the bench has sagas of {}",
                STEP_COUNTS.map(|c| c.to_string()).join(", ")
            ));
        }
        if out.contains(&n) {
            return Err(format!("{n} steps is listed twice in `{s}`"));
        }
        out.push(n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_saga_has_the_steps_its_name_says() {
        for steps in STEP_COUNTS {
            let saga = NoopSaga::with_steps(steps).unwrap();
            assert_eq!(saga.steps(), steps);
        }
        assert_eq!(Noop2::definition().name, "noop_2");
        assert_eq!(Noop16::definition().name, "noop_16");
        assert_eq!(Noop2::definition().steps.len(), 2);
        assert_eq!(Noop4::definition().steps.len(), 4);
        assert_eq!(Noop8::definition().steps.len(), 8);
        assert_eq!(Noop16::definition().steps.len(), 16);
        assert_eq!(NoopSaga::with_steps(3), None);
    }

    #[test]
    fn step_counts_parse_in_order_and_bad_ones_are_named() {
        assert_eq!(parse_step_counts("2,4,8,16"), Ok(vec![2, 4, 8, 16]));
        assert_eq!(parse_step_counts(" 16 , 2"), Ok(vec![16, 2]));
        assert_eq!(parse_step_counts("4"), Ok(vec![4]));
        assert!(parse_step_counts("3").unwrap_err().contains("2, 4, 8, 16"));
        assert!(parse_step_counts("4,x").unwrap_err().contains("`x`"));
        assert!(parse_step_counts("4,4").unwrap_err().contains("twice"));
        assert!(parse_step_counts("").is_err());
    }
}
