//! The trip example (`examples/trip.rs`) runs as a test: one trip booked, one rolled back, and
//! the three services' databases agree.

#[allow(dead_code)]
#[path = "../examples/trip.rs"]
mod trip;

use saga_core::SagaStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_is_booked_and_a_declined_one_is_released() {
    let dir = saga_testkit::temp_dir();
    let statuses = trip::run(dir.path()).await.unwrap();
    assert_eq!(statuses, [SagaStatus::Succeeded, SagaStatus::Compensated]);
    let services = trip::open(dir.path()).await.unwrap();
    let holders: Vec<Option<String>> =
        sqlx::query_scalar("SELECT holder FROM seats ORDER BY seat_id")
            .fetch_all(&services.flights)
            .await
            .unwrap();
    assert_eq!(holders, [Some("ada".to_string()), None]);
    let guests: Vec<String> = sqlx::query_scalar("SELECT guest FROM stays")
        .fetch_all(&services.hotels)
        .await
        .unwrap();
    assert_eq!(guests, ["ada"]);
    let charges: Vec<(String, i64)> = sqlx::query_as("SELECT card, total_cents FROM charges")
        .fetch_all(&services.payments)
        .await
        .unwrap();
    assert_eq!(charges, [("4111".to_string(), 20000 + 18000)]);
}
