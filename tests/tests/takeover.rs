//! Multi-instance takeover on PostgreSQL: three `serve` processes share one database; one is
//! SIGKILLed mid-load; the others finish its sagas once its leases expire, every invariant
//! holds, and no step call ever ran in two processes at once.

use std::thread;
use std::time::{Duration, Instant};

use acceptance::psql::{psql, schema_of};
use acceptance::{
    LoadControl, OrderMix, Seeded, Server, ServerOptions, Storage, check_invariants, run_load,
};

const ORDERS: usize = 1000;
const SUBMITTERS: usize = 6;

#[test]
fn killed_instance_sagas_are_finished_by_the_others_without_overlapping_calls() {
    let started = Instant::now();
    let storage = Storage::postgres();
    let url = storage
        .database_url()
        .expect("PostgreSQL storage")
        .to_string();
    // Three instances start at the same moment on a fresh database: migrations and seeding
    // must be safe under that race.
    let mut servers: Vec<Server> = thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let storage = &storage;
                let name = format!("takeover-{i}");
                thread::Builder::new()
                    .name(name)
                    .spawn_scoped(scope, move || {
                        Server::start(
                            storage,
                            ServerOptions::new()
                                .instance_id(format!("takeover-{i}"))
                                .lease_ms(2000)
                                .retry_ms(50, 1000),
                        )
                    })
                    .expect("spawn a starter thread")
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a server starts"))
            .collect()
    });
    storage.seed(
        &[(3, 1_000_000)],
        &(201..=260).map(|c| (c, c % 3 + 1)).collect::<Vec<_>>(),
    );
    let coupons: Vec<i64> = (101..=105).chain(201..=260).collect();
    let seeded = Seeded::capture(servers[1].api(), &[1, 2, 3], &coupons);
    let orders = OrderMix::new("takeover", &[1, 2, 3, 3, 3, 3, 999])
        .with_coupons(&coupons, 0.3)
        .generate(ORDERS, &mut rand::rng());

    let apis: Vec<_> = servers.iter().map(|s| s.api().clone()).collect();
    let control = LoadControl::new();
    let (report, killed_at) = thread::scope(|scope| {
        let _stop = control.stop_on_drop();
        let load = scope.spawn(|| run_load(&orders, SUBMITTERS, &apis, &control));
        control.wait_progress(ORDERS * 2 / 5, Duration::from_secs(120));
        let killed_at = control.progress();
        servers[0].kill();
        (
            load.join().expect("the load thread does not panic"),
            killed_at,
        )
    });
    println!("takeover: instance takeover-0 SIGKILLed at {killed_at} of {ORDERS} orders accepted");
    assert!(
        report.failures.is_empty(),
        "{} orders not accepted, first: {:?}\n{}\n{}",
        report.failures.len(),
        report.failures.first(),
        servers[1].context(),
        servers[2].context()
    );

    let gids: Vec<String> = orders.iter().map(|o| o.gid()).collect();
    servers[1].wait_all_terminal(&gids, Duration::from_secs(90));
    let summary = check_invariants(servers[2].api(), &seeded, &orders);

    let schema = schema_of(&url, "saga_attempt").expect("the engine's saga_attempt table exists");
    let table = format!("{schema}.saga_attempt");
    let per_owner = psql(
        &url,
        &format!("SELECT owner, count(*) FROM {table} GROUP BY owner ORDER BY owner"),
    );
    let taken_over = psql(
        &url,
        &format!(
            "SELECT count(*) FROM (SELECT gid FROM {table} GROUP BY gid HAVING count(DISTINCT owner) > 1) t"
        ),
    );
    let overlaps = psql(
        &url,
        &format!(
            "SELECT a.gid, a.step, a.op, a.owner, a.started_at, a.finished_at, b.owner, b.started_at, b.finished_at \
             FROM {table} a JOIN {table} b ON a.gid = b.gid AND a.step = b.step AND a.op = b.op \
             AND a.owner < b.owner AND a.started_at < b.finished_at AND b.started_at < a.finished_at \
             ORDER BY a.gid LIMIT 20"
        ),
    );
    println!(
        "takeover: {} orders driven over 3 instances, 1 SIGKILL, {} submit retries, {summary}; \
         attempts per owner {per_owner:?}; sagas with calls from several owners: {taken_over:?}; in {:.1?}",
        report.accepted,
        report.retries,
        started.elapsed()
    );
    assert!(
        overlaps.is_empty(),
        "calls of the same (gid, step, op) by different owners overlapped in time \
         (gid|step|op|owner|started|finished|owner|started|finished):\n  {}",
        overlaps.join("\n  ")
    );
    for server in &servers {
        server.assert_no_panics();
    }
}
