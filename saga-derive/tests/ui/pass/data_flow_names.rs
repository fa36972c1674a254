//! Steps named like the methods' other parameters (`ctx`, `input`, `output`) can still be read.

use saga_core::{Retry, Saga, StepContext, StepError};

#[derive(Saga)]
#[saga(input = ())]
enum Odd {
    #[compensate(ctx_undo)]
    Ctx(u8),
    #[compensate(input_undo)]
    Input(u16),
    #[compensate(output_undo)]
    Output(u32),
    #[pivot]
    #[step(reads(Ctx, Input, Output))]
    Done,
}

struct Steps;

impl OddSteps for Steps {
    async fn ctx(&self, _: &StepContext, _: &()) -> Result<u8, StepError> { Ok(1) }
    async fn ctx_undo(&self, _: &StepContext, _: &(), _: Option<u8>) -> Result<(), Retry> { Ok(()) }
    async fn input(&self, _: &StepContext, _: &()) -> Result<u16, StepError> { Ok(2) }
    async fn input_undo(&self, _: &StepContext, _: &(), _: Option<u16>) -> Result<(), Retry> { Ok(()) }
    async fn output(&self, _: &StepContext, _: &()) -> Result<u32, StepError> { Ok(3) }
    async fn output_undo(&self, _: &StepContext, _: &(), _: Option<u32>) -> Result<(), Retry> { Ok(()) }
    async fn done(&self, _: &StepContext, _: &(), a: u8, b: u16, c: u32) -> Result<(), StepError> {
        assert_eq!((a, b, c), (1, 2, 3));
        Ok(())
    }
}

fn main() {
    Odd::definition().validate().unwrap();
    let _ = Steps;
}
