//! A concurrent branch reads its sibling, which may still be running.

use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum Travel {
    #[compensate(flight_cancel)]
    Flight(u32),
    #[compensate(hotel_cancel)]
    #[step(after(Flight))]
    Hotel(String),
    #[compensate(car_cancel)]
    #[step(after(Flight), reads(Hotel))]
    Car,
}

fn main() {}
