//! Concurrent branches with `after(...)`: two steps that start together and a join.

use saga_core::{Retry, Saga, StepContext, StepError};

#[derive(Saga)]
#[saga(input = ())]
enum Travel {
    #[compensate(flight_cancel)]
    Flight,
    #[compensate(hotel_cancel)]
    #[step(after())]
    Hotel,
    #[compensate(car_cancel)]
    #[step(after(Flight))]
    Car,
    #[pivot]
    #[step(after(Car, Hotel))]
    Confirm,
}

struct Agent;

impl TravelSteps for Agent {
    async fn flight(&self, _: &StepContext, _: &()) -> Result<(), StepError> { Ok(()) }
    async fn flight_cancel(&self, _: &StepContext, _: &(), _: Option<()>) -> Result<(), Retry> { Ok(()) }
    async fn hotel(&self, _: &StepContext, _: &()) -> Result<(), StepError> { Ok(()) }
    async fn hotel_cancel(&self, _: &StepContext, _: &(), _: Option<()>) -> Result<(), Retry> { Ok(()) }
    async fn car(&self, _: &StepContext, _: &()) -> Result<(), StepError> { Ok(()) }
    async fn car_cancel(&self, _: &StepContext, _: &(), _: Option<()>) -> Result<(), Retry> { Ok(()) }
    async fn confirm(&self, _: &StepContext, _: &()) -> Result<(), StepError> { Ok(()) }
}

fn main() {
    let def = Travel::definition();
    def.validate().unwrap();
    let after: Vec<&[usize]> = def.steps.iter().map(|s| s.after).collect();
    assert_eq!(after, [&[][..], &[], &[0], &[2, 1]]);
    assert_eq!(Travel::DIAGRAM, def.mermaid());
    let _ = Agent;
}
