//! Concurrent branches read what they wait on; the pivot reads every compensatable step, since
//! it starts only once all of them succeeded.

use saga_core::{Retry, Saga, StepContext, StepError};

#[derive(Saga)]
#[saga(input = ())]
enum Travel {
    #[compensate(flight_cancel)]
    Flight(u32),
    #[compensate(hotel_cancel)]
    #[step(after())]
    Hotel(String),
    #[compensate(car_cancel)]
    #[step(after(Flight), reads(Flight))]
    Car(u64),
    #[pivot]
    #[step(after(Car), reads(Hotel, Car, Flight))]
    Confirm,
    #[retriable]
    #[step(reads(Hotel))]
    Notify,
}

struct Agent;

impl TravelSteps for Agent {
    async fn flight(&self, _: &StepContext, _: &()) -> Result<u32, StepError> { Ok(1) }
    async fn flight_cancel(&self, _: &StepContext, _: &(), _: Option<u32>) -> Result<(), Retry> { Ok(()) }
    async fn hotel(&self, _: &StepContext, _: &()) -> Result<String, StepError> { Ok("h".into()) }
    async fn hotel_cancel(&self, _: &StepContext, _: &(), _: Option<String>) -> Result<(), Retry> { Ok(()) }
    async fn car(&self, _: &StepContext, _: &(), flight: u32) -> Result<u64, StepError> { Ok(flight.into()) }
    async fn car_cancel(&self, _: &StepContext, _: &(), _: Option<u64>, _flight: u32) -> Result<(), Retry> {
        Ok(())
    }
    async fn confirm(&self, _: &StepContext, _: &(), _: String, _: u64, _: u32) -> Result<(), StepError> {
        Ok(())
    }
    async fn notify(&self, _: &StepContext, _: &(), _hotel: String) -> Result<(), Retry> { Ok(()) }
}

fn main() {
    let def = Travel::definition();
    def.validate().unwrap();
    assert_eq!(def.steps[3].reads, &[1, 2, 0]);
    assert_eq!(Travel::DIAGRAM, def.mermaid());
    let _ = Agent;
}
