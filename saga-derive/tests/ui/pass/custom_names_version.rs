//! `#[saga(name, version)]`, `#[step(name, timeout_ms, retry)]`, and the string spelling of
//! `#[compensate = "..."]`.
#![deny(missing_docs)]

use saga_core::{Retry, RetryOverride, Saga, StepContext, StepError};

/// A saga with explicit persisted names.
#[derive(Saga)]
#[saga(name = "ship_v2", version = 7, input = String)]
pub enum Ship {
    /// Packs the parcel.
    #[compensate = "unpack"]
    #[step(name = "pack_parcel", timeout_ms = 1500)]
    Pack,
    /// Hands it to the carrier.
    #[pivot]
    #[step(name = "hand_over", retry(max_attempts = 3, initial_ms = 10, max_ms = 10))]
    HandOver(u32),
}

struct Warehouse;

impl ShipSteps for Warehouse {
    async fn pack(&self, _: &StepContext, _: &String) -> Result<(), StepError> {
        Ok(())
    }
    async fn unpack(&self, _: &StepContext, _: &String, _: Option<()>) -> Result<(), Retry> {
        Ok(())
    }
    async fn hand_over(&self, _: &StepContext, _: &String) -> Result<u32, StepError> {
        Ok(1)
    }
}

fn main() {
    let def = Ship::definition();
    def.validate().unwrap();
    assert_eq!((def.name, def.version), ("ship_v2", 7));
    assert_eq!(def.steps[0].name, "pack_parcel");
    assert_eq!(def.steps[0].compensation, Some("unpack"));
    assert_eq!(def.steps[0].timeout_ms, Some(1500));
    assert_eq!(
        def.steps[1].retry,
        RetryOverride { max_attempts: Some(3), initial_ms: Some(10), max_ms: Some(10) }
    );
    let _ = Warehouse;
}
