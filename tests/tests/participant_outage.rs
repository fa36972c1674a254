//! A participant's database goes away under load, on PostgreSQL: the stock service's
//! connections are cut (`pg_terminate_backend`), then its table is locked for a few seconds so
//! that every stock call hangs, then its connections are cut again and the lock let go. The
//! stock endpoints answer 503 or time out, the sagas retry them, `/healthz` answers 503 while
//! the stock database cannot be reached and 200 afterwards, the process stays up, and every
//! saga ends terminal with the five invariants holding.

use std::thread;
use std::time::{Duration, Instant};

use acceptance::outage::HealthWatch;
use acceptance::psql::psql;
use acceptance::{
    LoadControl, Order, OrderMix, Seeded, Server, ServerOptions, Storage, check_invariants,
    run_load,
};

const ORDERS: usize = 1500;
const SUBMITTERS: usize = 24;

/// How long the stock table stays locked.
const LOCKED: Duration = Duration::from_secs(6);

/// Cuts every connection of the stock service's pool; returns how many were cut.
fn terminate_stock_connections(url: &str) -> usize {
    psql(
        url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'stock'",
    )
    .first()
    .and_then(|n| n.parse().ok())
    .unwrap_or(0)
}

#[test]
fn a_participant_database_that_goes_away_is_retried_until_it_returns() {
    let started = Instant::now();
    let storage = Storage::postgres();
    let url = storage
        .database_url()
        .expect("PostgreSQL storage")
        .to_string();
    let mut server = Server::start(
        &storage,
        ServerOptions::new()
            .instance_id("participant-outage")
            .retry_ms(50, 1000),
    );
    storage.seed(
        &[(3, 1_000_000)],
        &(201..=260).map(|c| (c, c % 3 + 1)).collect::<Vec<_>>(),
    );
    let coupons: Vec<i64> = (101..=105).chain(201..=260).collect();
    let seeded = Seeded::capture(server.api(), &[1, 2, 3], &coupons);
    let orders = OrderMix::new("stockout", &[1, 2, 3, 3, 3, 3, 999])
        .with_coupons(&coupons, 0.3)
        .generate(ORDERS, &mut rand::rng());
    let watch = HealthWatch::start(server.api());
    let apis = [server.api().clone()];

    let control = LoadControl::new();
    let (report, cut, recovered_in) = thread::scope(|scope| {
        let _stop = control.stop_on_drop();
        let load = scope.spawn(|| run_load(&orders, SUBMITTERS, &apis, &control));
        control.wait_progress(ORDERS / 4, Duration::from_secs(120));
        let mut cut = terminate_stock_connections(&url);
        // Hold the stock table: every stock call waits on the lock, the pool runs dry.
        let lock_url = url.clone();
        let lock = scope.spawn(move || {
            psql(
                &lock_url,
                &format!(
                    "BEGIN; LOCK TABLE stock.stock IN ACCESS EXCLUSIVE MODE; \
                     SELECT pg_sleep({}); COMMIT",
                    LOCKED.as_secs()
                ),
            )
        });
        let locked_at = Instant::now();
        assert!(
            watch.wait_for(503, locked_at, LOCKED).is_some(),
            "/healthz kept answering 200 while the stock database could not be reached\n{}",
            server.context()
        );
        lock.join().expect("the lock session ends");
        cut += terminate_stock_connections(&url);
        let released = Instant::now();
        let healthy = watch
            .wait_for(200, released, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("not healthy again after the lock\n{}", server.context()));
        let report = load.join().expect("the load thread does not panic");
        (report, cut, healthy.saturating_duration_since(released))
    });
    assert!(
        report.failures.is_empty(),
        "{} orders not accepted, first: {:?}\n{}",
        report.failures.len(),
        report.failures.first(),
        server.context()
    );
    let gids: Vec<String> = orders.iter().map(Order::gid).collect();
    server.wait_all_terminal(&gids, Duration::from_secs(120));
    assert!(
        server.is_running(),
        "the server exited\n{}",
        server.context()
    );
    let summary = check_invariants(server.api(), &seeded, &orders);
    let samples = watch.stop();
    let unhealthy = samples.iter().filter(|s| s.status == Some(503)).count();
    assert!(
        samples
            .iter()
            .all(|s| s.status != Some(503) || s.error_body)
    );
    println!(
        "participant outage: {} orders, {cut} stock connections cut, stock table locked for \
         {LOCKED:?}, /healthz 503 {unhealthy} times, healthy {recovered_in:.1?} after the lock, \
         {} submit retries, {summary}, in {:.1?}",
        report.accepted,
        report.retries,
        started.elapsed()
    );
    server.assert_no_panics();
}
