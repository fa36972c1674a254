//! Typed data flow through the engine (docs/semantics.md, "Outputs"), on SQLite and PostgreSQL:
//! a derived saga whose steps read earlier outputs (`#[step(reads(..))]`), driven across a
//! crash. The engine that finishes each saga has a fresh handler and a fresh runtime, so every
//! value a step or a compensation receives after the crash comes from the store, not from memory.
#![cfg(all(feature = "sqlite", feature = "postgres"))]

#[macro_use]
mod engine_support;

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use saga_core::{Engine, Retry, Saga, SagaStatus, StepContext, StepError};
use serde::{Deserialize, Serialize};

use engine_support::*;

on_both_stores_sync!(
    outputs_reach_later_steps_across_a_crash,
    compensations_get_their_own_output_and_what_they_read_across_a_crash,
    the_compensation_of_a_step_in_doubt_gets_none_and_its_reads,
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FlightId {
    code: String,
    seat: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HotelRef(String);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CarId(u64);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Receipt {
    total_cents: i64,
    lines: Vec<String>,
}

/// What the trip asks for: `fail_pay` makes the pivot refuse, `car_in_doubt` makes the car's
/// action never answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Trip {
    fail_pay: bool,
    car_in_doubt: bool,
}

/// A flight and a hotel booked concurrently, a car that needs both, a payment that reads the
/// flight and the car, and a notification that reads the receipt and the hotel.
#[derive(Saga)]
#[saga(input = Trip)]
enum Booking {
    #[compensate(flight_cancel)]
    Flight(FlightId),
    #[compensate(hotel_cancel)]
    #[step(after())]
    Hotel(HotelRef),
    #[compensate(car_cancel)]
    #[step(after(Flight, Hotel), reads(Flight, Hotel), retry(max_attempts = 2))]
    Car(CarId),
    #[pivot]
    #[step(reads(Flight, Car))]
    Pay(Receipt),
    #[retriable]
    #[step(reads(Pay, Hotel))]
    Notify,
}

/// Makes fresh values on every call (so that a value seen after the crash can only have come
/// from the store) and records what every call received.
#[derive(Clone)]
struct Agency {
    calls: Arc<Mutex<Vec<String>>>,
    /// When set, the car's action reports here and then never answers: the crash point.
    block_car: Option<std_mpsc::Sender<()>>,
}

fn fresh() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

impl Agency {
    fn new(block_car: Option<std_mpsc::Sender<()>>) -> Agency {
        Agency {
            calls: Arc::default(),
            block_car,
        }
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl BookingSteps for Agency {
    async fn flight(&self, _: &StepContext, _: &Trip) -> Result<FlightId, StepError> {
        let id = FlightId {
            code: format!("FL-{}", fresh()),
            seat: (fresh() % 200) as u32,
        };
        self.record(format!("flight -> {id:?}"));
        Ok(id)
    }

    async fn flight_cancel(
        &self,
        _: &StepContext,
        _: &Trip,
        output: Option<FlightId>,
    ) -> Result<(), Retry> {
        self.record(format!("flight_cancel({output:?})"));
        Ok(())
    }

    async fn hotel(&self, _: &StepContext, _: &Trip) -> Result<HotelRef, StepError> {
        let hotel = HotelRef(format!("H-{}", fresh()));
        self.record(format!("hotel -> {hotel:?}"));
        Ok(hotel)
    }

    async fn hotel_cancel(
        &self,
        _: &StepContext,
        _: &Trip,
        output: Option<HotelRef>,
    ) -> Result<(), Retry> {
        self.record(format!("hotel_cancel({output:?})"));
        Ok(())
    }

    async fn car(
        &self,
        _: &StepContext,
        trip: &Trip,
        flight: FlightId,
        hotel: HotelRef,
    ) -> Result<CarId, StepError> {
        self.record(format!("car({flight:?}, {hotel:?})"));
        if let Some(reached) = &self.block_car {
            reached.send(()).unwrap();
            std::future::pending::<()>().await;
        }
        if trip.car_in_doubt {
            return Err(StepError::retry("the car rental does not answer"));
        }
        let car = CarId(fresh());
        self.record(format!("car -> {car:?}"));
        Ok(car)
    }

    async fn car_cancel(
        &self,
        _: &StepContext,
        _: &Trip,
        output: Option<CarId>,
        flight: FlightId,
        hotel: HotelRef,
    ) -> Result<(), Retry> {
        self.record(format!("car_cancel({output:?}, {flight:?}, {hotel:?})"));
        Ok(())
    }

    async fn pay(
        &self,
        _: &StepContext,
        trip: &Trip,
        flight: FlightId,
        car: CarId,
    ) -> Result<Receipt, StepError> {
        self.record(format!("pay({flight:?}, {car:?})"));
        if trip.fail_pay {
            return Err(StepError::failure("card declined"));
        }
        let receipt = Receipt {
            total_cents: 1000 + (fresh() % 1000) as i64,
            lines: vec![flight.code, format!("car {}", car.0)],
        };
        self.record(format!("pay -> {receipt:?}"));
        Ok(receipt)
    }

    async fn notify(
        &self,
        _: &StepContext,
        _: &Trip,
        receipt: Receipt,
        hotel: HotelRef,
    ) -> Result<(), Retry> {
        self.record(format!("notify({receipt:?}, {hotel:?})"));
        Ok(())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn booking_engine(db: &Db, agency: &Agency) -> Engine {
    let mut cfg = config("data-flow-engine");
    cfg.step_timeout = Duration::from_secs(60);
    Engine::builder(db.store().await)
        .config(cfg)
        .register::<Booking, _>(agency.clone())
        .build()
        .await
        .expect("build the engine")
}

/// The value after `prefix` in the one call that starts with it.
fn produced(calls: &[String], prefix: &str) -> String {
    let found: Vec<&String> = calls.iter().filter(|c| c.starts_with(prefix)).collect();
    assert_eq!(found.len(), 1, "one call `{prefix}..` in {calls:#?}");
    found[0][prefix.len()..].to_string()
}

/// Runs the saga until the car's action is in flight, then drops the whole engine runtime.
/// Returns the flight and hotel the first run produced.
fn crash_at_the_car(db: &Db, gid: &str, trip: &Trip) -> (String, String) {
    let (reached_tx, reached_rx) = std_mpsc::channel();
    let before = Agency::new(Some(reached_tx));
    let crashed = runtime();
    crashed.block_on(async {
        let engine = booking_engine(db, &before).await;
        engine.submit::<Booking>(gid, trip).await.unwrap();
    });
    reached_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the car's action is called");
    drop(crashed);
    let calls = before.calls();
    (
        produced(&calls, "flight -> "),
        produced(&calls, "hotel -> "),
    )
}

fn outputs_reach_later_steps_across_a_crash(backend: Backend) {
    let db = Db::new(backend);
    let trip = Trip {
        fail_pay: false,
        car_in_doubt: false,
    };
    let (flight, hotel) = crash_at_the_car(&db, "trip-1", &trip);

    let after = Agency::new(None);
    runtime().block_on(async {
        let engine = booking_engine(&db, &after).await;
        let view = finish(&engine, "trip-1", 20).await;
        assert_status(&view, SagaStatus::Succeeded);
    });
    let calls = after.calls();
    let car = produced(&calls, "car -> ");
    let receipt = produced(&calls, "pay -> ");
    assert_eq!(
        calls,
        [
            format!("car({flight}, {hotel})"),
            format!("car -> {car}"),
            format!("pay({flight}, {car})"),
            format!("pay -> {receipt}"),
            format!("notify({receipt}, {hotel})"),
        ],
        "the steps after the crash receive the outputs the first run persisted"
    );
}

fn compensations_get_their_own_output_and_what_they_read_across_a_crash(backend: Backend) {
    let db = Db::new(backend);
    let trip = Trip {
        fail_pay: true,
        car_in_doubt: false,
    };
    let (flight, hotel) = crash_at_the_car(&db, "trip-2", &trip);

    let after = Agency::new(None);
    runtime().block_on(async {
        let engine = booking_engine(&db, &after).await;
        let view = finish(&engine, "trip-2", 20).await;
        assert_status(&view, SagaStatus::Compensated);
    });
    let calls = after.calls();
    let car = produced(&calls, "car -> ");
    assert_eq!(
        calls[..3],
        [
            format!("car({flight}, {hotel})"),
            format!("car -> {car}"),
            format!("pay({flight}, {car})"),
        ]
    );
    // The car is compensated first, with its own output and the two it read; the flight and the
    // hotel, which ran concurrently, are compensated after it in either order.
    assert_eq!(
        calls[3],
        format!("car_cancel(Some({car}), {flight}, {hotel})")
    );
    let mut rest = calls[4..].to_vec();
    rest.sort();
    assert_eq!(
        rest,
        [
            format!("flight_cancel(Some({flight}))"),
            format!("hotel_cancel(Some({hotel}))"),
        ]
    );
}

fn the_compensation_of_a_step_in_doubt_gets_none_and_its_reads(backend: Backend) {
    let db = Db::new(backend);
    let trip = Trip {
        fail_pay: false,
        car_in_doubt: true,
    };
    let (flight, hotel) = crash_at_the_car(&db, "trip-3", &trip);

    let after = Agency::new(None);
    runtime().block_on(async {
        let engine = booking_engine(&db, &after).await;
        let view = finish(&engine, "trip-3", 20).await;
        assert_status(&view, SagaStatus::Compensated);
    });
    let calls = after.calls();
    // The car's second and last attempt stays in doubt, so the saga turns back; the car's compensation
    // cannot know whether a car was booked (`None`) but does get the flight and the hotel.
    assert_eq!(calls[0], format!("car({flight}, {hotel})"));
    assert_eq!(calls[1], format!("car_cancel(None, {flight}, {hotel})"));
    let mut rest = calls[2..].to_vec();
    rest.sort();
    assert_eq!(
        rest,
        [
            format!("flight_cancel(Some({flight}))"),
            format!("hotel_cancel(Some({hotel}))"),
        ]
    );
}

on_both_stores_sync!(a_view_decodes_outputs_through_the_saga_type);

fn a_view_decodes_outputs_through_the_saga_type(backend: Backend) {
    let db = Db::new(backend);
    let agency = Agency::new(None);
    let trip = Trip {
        fail_pay: false,
        car_in_doubt: false,
    };
    runtime().block_on(async {
        let engine = booking_engine(&db, &agency).await;
        engine.submit::<Booking>("trip-4", &trip).await.unwrap();
        let view = finish(&engine, "trip-4", 20).await;
        let outputs = view.outputs::<Booking>().unwrap();
        let calls = agency.calls();
        assert_eq!(
            format!("{:?}", outputs.flight.unwrap()),
            produced(&calls, "flight -> ")
        );
        assert_eq!(
            format!("{:?}", outputs.pay.unwrap()),
            produced(&calls, "pay -> ")
        );
        assert!(outputs.hotel.is_some() && outputs.car.is_some());
        // A view read as another saga is refused.
        let mut other = view.clone();
        other.saga = "pay_order".into();
        assert!(matches!(
            other.outputs::<Booking>(),
            Err(saga_core::OutputsError::OtherSaga { .. })
        ));
        let mut broken = view.clone();
        broken.steps[0].output = Some(serde_json::json!("not a flight"));
        assert!(matches!(
            broken.outputs::<Booking>(),
            Err(saga_core::OutputsError::Decode { step: "flight", .. })
        ));
    });
}
