//! PostgreSQL restarted under load: two `serve` processes share one database while 2,000 orders
//! are submitted, and the server is stopped with `-m immediate` (every connection cut, as in a
//! crash) and started again, twice. Every process stays up, `/healthz` answers 503 while the
//! database is down and 200 once it is back, a submit in the outage answers 503 with
//! `Retry-After`, and afterwards every saga is terminal and the five invariants hold.
//!
//! This test stops the test process's PostgreSQL cluster: it lives in a file of its own, so
//! that no other test shares that cluster.

use std::thread;
use std::time::{Duration, Instant};

use acceptance::outage::HealthWatch;
use acceptance::{
    LoadControl, Order, OrderMix, Seeded, Server, ServerOptions, Storage, check_invariants,
    run_load, submit_until_accepted,
};
use saga_testkit::StopMode;

const ORDERS: usize = 2000;
const SUBMITTERS: usize = 16;
const RESTARTS: usize = 2;

/// How long the servers may take to notice the database is gone, and to notice it is back.
const NOTICE: Duration = Duration::from_secs(15);

#[test]
fn two_immediate_restarts_under_load_lose_nothing() {
    let started = Instant::now();
    let storage = Storage::postgres();
    let mut servers: Vec<Server> = (0..2)
        .map(|i| {
            Server::start(
                &storage,
                ServerOptions::new()
                    .instance_id(format!("pg-restart-{i}"))
                    .retry_ms(50, 1000),
            )
        })
        .collect();
    storage.seed(
        &[(3, 1_000_000)],
        &(201..=260).map(|c| (c, c % 3 + 1)).collect::<Vec<_>>(),
    );
    let coupons: Vec<i64> = (101..=105).chain(201..=260).collect();
    let seeded = Seeded::capture(servers[0].api(), &[1, 2, 3], &coupons);
    let mut orders = OrderMix::new("pgrestart", &[1, 2, 3, 3, 3, 3, 999])
        .with_coupons(&coupons, 0.3)
        .generate(ORDERS, &mut rand::rng());
    let watches: Vec<HealthWatch> = servers
        .iter()
        .map(|s| HealthWatch::start(s.api()))
        .collect();
    let apis: Vec<_> = servers.iter().map(|s| s.api().clone()).collect();
    let cluster = saga_testkit::postgres();

    let control = LoadControl::new();
    let mut outages = Vec::new();
    let mut refused_in_outage = Vec::new();
    let report = thread::scope(|scope| {
        let _stop = control.stop_on_drop();
        let load = scope.spawn(|| run_load(&orders, SUBMITTERS, &apis, &control));
        for restart in 1..=RESTARTS {
            control.wait_progress(ORDERS * restart / (RESTARTS + 1), Duration::from_secs(120));
            let at_progress = control.progress();
            let down_at = Instant::now();
            cluster.stop(StopMode::Immediate);
            for (i, watch) in watches.iter().enumerate() {
                assert!(
                    watch.wait_for(503, down_at, NOTICE).is_some(),
                    "server {i} still reports healthy {NOTICE:?} after PostgreSQL stopped\n{}",
                    servers[i].context()
                );
            }
            // A new submit while the store is unreachable: 503 with Retry-After, not a 500.
            let probe = Order::new(&format!("pgrestart-outage-{restart}"));
            let reply = apis[restart % 2]
                .try_submit(&probe)
                .unwrap_or_else(|e| panic!("submit in the outage got no reply: {e}"));
            assert_eq!(reply.status, 503, "submit in the outage: {reply}");
            assert!(reply.has_json_error(), "{reply}");
            assert!(reply.retry_after.is_some(), "no Retry-After: {reply}");
            refused_in_outage.push(probe);
            let up_at = Instant::now();
            cluster.start();
            let healthy: Vec<Duration> = watches
                .iter()
                .enumerate()
                .map(|(i, watch)| {
                    let at = watch
                        .wait_for(200, Instant::now(), NOTICE)
                        .unwrap_or_else(|| {
                            panic!(
                                "server {i} not healthy {NOTICE:?} after PostgreSQL started\n{}",
                                servers[i].context()
                            )
                        });
                    at.saturating_duration_since(up_at)
                })
                .collect();
            outages.push((at_progress, up_at - down_at, healthy));
        }
        load.join().expect("the load thread does not panic")
    });
    assert!(
        report.failures.is_empty(),
        "{} orders not accepted, first: {:?}\n{}\n{}",
        report.failures.len(),
        report.failures.first(),
        servers[0].context(),
        servers[1].context()
    );
    // The submits refused in the outages may be sent again: accepted now.
    for probe in &refused_in_outage {
        submit_until_accepted(&apis, 0, probe, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    orders.extend(refused_in_outage);

    let gids: Vec<String> = orders.iter().map(Order::gid).collect();
    let drained = Instant::now();
    servers[0].wait_all_terminal(&gids, Duration::from_secs(120));
    let drained_in = drained.elapsed();
    for (i, server) in servers.iter_mut().enumerate() {
        assert!(
            server.is_running(),
            "server {i} exited\n{}",
            server.context()
        );
    }
    let summary = check_invariants(servers[1].api(), &seeded, &orders);
    for (n, (at, down, healthy)) in outages.iter().enumerate() {
        println!(
            "postgres restart {}: at {at} of {ORDERS} orders accepted, down {down:.1?}, \
             healthy again {healthy:.1?} after the start",
            n + 1
        );
    }
    println!(
        "postgres restart: {} orders over 2 instances, {RESTARTS} immediate restarts, {} submit \
         retries, {summary}; all terminal {drained_in:.1?} after the load; in {:.1?}",
        orders.len(),
        report.retries,
        started.elapsed()
    );
    for watch in watches {
        let samples = watch.stop();
        assert!(
            samples
                .iter()
                .all(|s| s.status != Some(503) || s.error_body),
            "a 503 from /healthz without an error body"
        );
    }
    for server in &servers {
        server.assert_no_panics();
    }
}
