//! A trip booked as a saga over three in-process services, each with its own SQLite database:
//! flights, hotels and payments. The flight and the hotel are booked concurrently; the payment
//! is made for both, reading their outputs; a confirmation sends the payment's reference. Every
//! step and compensation runs inside the barrier of its service, so repeats apply once.
//!
//! `cargo run -p saga-core --example trip` books one trip that succeeds and one whose card is
//! declined (its flight and hotel are released again), and prints both.

use std::time::Duration;

use saga_core::barrier::{self, Barrier};
use saga_core::store::sqlite::{SqliteOptions, open_pool};
use saga_core::{Engine, Retry, Saga, SagaStatus, StepContext, StepError, Store, Waited};
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;

/// What the traveller asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trip {
    pub traveller: String,
    pub nights: i64,
    pub card: String,
}

/// A booked seat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seat {
    pub seat_id: i64,
    pub price_cents: i64,
}

/// A booked room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Room {
    pub room_id: i64,
    pub price_cents: i64,
}

/// A charge of the traveller's card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    pub charge_id: i64,
    pub total_cents: i64,
}

#[derive(Saga)]
#[saga(input = Trip)]
pub enum BookTrip {
    #[compensate(release_seat)]
    BookFlight(Seat),
    #[compensate(release_room)]
    #[step(after())]
    BookHotel(Room),
    #[pivot]
    #[step(after(BookFlight, BookHotel), reads(BookFlight, BookHotel))]
    Pay(Charge),
    #[retriable]
    #[step(reads(Pay))]
    Confirm,
}

/// The three services' databases.
#[derive(Clone)]
pub struct Services {
    pub flights: SqlitePool,
    pub hotels: SqlitePool,
    pub payments: SqlitePool,
}

impl BookTripSteps for Services {
    async fn book_flight(&self, ctx: &StepContext, trip: &Trip) -> Result<Seat, StepError> {
        let traveller = trip.traveller.clone();
        let seat = Barrier::for_step(ctx)
            .action(&self.flights, move |tx| {
                Box::pin(async move {
                    let seat: Option<(i64, i64)> = sqlx::query_as(
                        "UPDATE seats SET holder = ?1 \
                         WHERE seat_id = (SELECT MIN(seat_id) FROM seats WHERE holder IS NULL) \
                         RETURNING seat_id, price_cents",
                    )
                    .bind(traveller)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let (seat_id, price_cents) =
                        seat.ok_or_else(|| StepError::failure("the flight is full"))?;
                    Ok::<_, StepError>(Seat {
                        seat_id,
                        price_cents,
                    })
                })
            })
            .await?;
        seat.into()
    }

    async fn release_seat(
        &self,
        ctx: &StepContext,
        trip: &Trip,
        seat: Option<Seat>,
    ) -> Result<(), Retry> {
        // Without the seat (the booking failed or its reply was lost), release by traveller.
        let (seat_id, traveller) = (seat.map(|s| s.seat_id), trip.traveller.clone());
        Barrier::for_step(ctx)
            .compensate(&self.flights, move |tx| {
                Box::pin(async move {
                    sqlx::query("UPDATE seats SET holder = NULL WHERE seat_id = ?1 OR (?1 IS NULL AND holder = ?2)")
                        .bind(seat_id)
                        .bind(traveller)
                        .execute(&mut *tx)
                        .await?;
                    Ok::<_, Retry>(())
                })
            })
            .await?
            .into()
    }

    async fn book_hotel(&self, ctx: &StepContext, trip: &Trip) -> Result<Room, StepError> {
        let (traveller, nights) = (trip.traveller.clone(), trip.nights);
        let room = Barrier::for_step(ctx)
            .action(&self.hotels, move |tx| {
                Box::pin(async move {
                    let room_id: i64 = sqlx::query_scalar(
                        "INSERT INTO stays (guest, nights) VALUES (?1, ?2) RETURNING room_id",
                    )
                    .bind(traveller)
                    .bind(nights)
                    .fetch_one(&mut *tx)
                    .await?;
                    Ok::<_, StepError>(Room {
                        room_id,
                        price_cents: 9000 * nights,
                    })
                })
            })
            .await?;
        room.into()
    }

    async fn release_room(
        &self,
        ctx: &StepContext,
        trip: &Trip,
        room: Option<Room>,
    ) -> Result<(), Retry> {
        let (room_id, guest) = (room.map(|r| r.room_id), trip.traveller.clone());
        Barrier::for_step(ctx)
            .compensate(&self.hotels, move |tx| {
                Box::pin(async move {
                    sqlx::query(
                        "DELETE FROM stays WHERE room_id = ?1 OR (?1 IS NULL AND guest = ?2)",
                    )
                    .bind(room_id)
                    .bind(guest)
                    .execute(&mut *tx)
                    .await?;
                    Ok::<_, Retry>(())
                })
            })
            .await?
            .into()
    }

    async fn pay(
        &self,
        ctx: &StepContext,
        trip: &Trip,
        seat: Seat,
        room: Room,
    ) -> Result<Charge, StepError> {
        let card = trip.card.clone();
        let total_cents = seat.price_cents + room.price_cents;
        let charge = Barrier::for_step(ctx)
            .action(&self.payments, move |tx| {
                Box::pin(async move {
                    if card.starts_with("0000") {
                        return Err(StepError::failure("card declined"));
                    }
                    let charge_id: i64 =
                        sqlx::query_scalar(
                            "INSERT INTO charges (card, total_cents) VALUES (?1, ?2) RETURNING charge_id",
                        )
                            .bind(card)
                            .bind(total_cents)
                            .fetch_one(&mut *tx)
                            .await?;
                    Ok::<_, StepError>(Charge { charge_id, total_cents })
                })
            })
            .await?;
        charge.into()
    }

    async fn confirm(&self, ctx: &StepContext, trip: &Trip, charge: Charge) -> Result<(), Retry> {
        println!(
            "{}: {} booked, charge {} of {} cents",
            ctx.gid, trip.traveller, charge.charge_id, charge.total_cents
        );
        Ok(())
    }
}

/// Opens the three databases in `dir`, with their tables and barriers.
pub async fn open(dir: &std::path::Path) -> anyhow::Result<Services> {
    let open = |file: &str, schema: &'static str| {
        let path = dir.join(file);
        async move {
            let pool = open_pool(&path, true, 1).await?;
            barrier::migrate(&pool).await?;
            sqlx::raw_sql(schema).execute(&pool).await?;
            anyhow::Ok(pool)
        }
    };
    Ok(Services {
        flights: open(
            "flights.db",
            "CREATE TABLE IF NOT EXISTS seats (
                 seat_id INTEGER PRIMARY KEY, price_cents INTEGER NOT NULL, holder TEXT);
             INSERT OR IGNORE INTO seats VALUES (1, 20000, NULL), (2, 25000, NULL);",
        )
        .await?,
        hotels: open(
            "hotels.db",
            "CREATE TABLE IF NOT EXISTS stays (
                 room_id INTEGER PRIMARY KEY, guest TEXT NOT NULL, nights INTEGER NOT NULL);",
        )
        .await?,
        payments: open(
            "payments.db",
            "CREATE TABLE IF NOT EXISTS charges (
                 charge_id INTEGER PRIMARY KEY, card TEXT NOT NULL, total_cents INTEGER NOT NULL);",
        )
        .await?,
    })
}

/// Books two trips in `dir` and returns their final status.
pub async fn run(dir: &std::path::Path) -> anyhow::Result<Vec<SagaStatus>> {
    let services = open(dir).await?;
    let store = Store::sqlite(dir.join("saga.db"), SqliteOptions::default()).await?;
    let engine = Engine::builder(store)
        .register::<BookTrip, _>(services)
        .build()
        .await?;
    let mut statuses = Vec::new();
    for (gid, card) in [("trip-ada", "4111"), ("trip-bob", "0000")] {
        let trip = Trip {
            traveller: gid.replace("trip-", ""),
            nights: 2,
            card: card.into(),
        };
        let view = match engine
            .submit_and_wait::<BookTrip>(gid, &trip, Duration::from_secs(10))
            .await?
        {
            Waited::Terminal(view) => view,
            Waited::TimedOut(view) => anyhow::bail!("{gid} is still {} after 10 s", view.status),
        };
        let outputs = view.outputs::<BookTrip>()?;
        println!(
            "{gid}: {} ({:?}), seat {:?}, charge {:?}",
            view.status, view.reason, outputs.book_flight, outputs.pay
        );
        statuses.push(view.status);
    }
    engine.shutdown().await;
    Ok(statuses)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    run(dir.path()).await?;
    Ok(())
}
