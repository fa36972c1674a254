//! Chaos soak: random faults of every kind at a low rate on every fault point, plus crash
//! faults that kill the process (restarted each time), under a concurrent load. Afterwards
//! every saga is terminal and every invariant holds.
//!
//! `SOAK_ORDERS=N` sets the number of orders (default 2000). The fault schedules and the
//! orders come from one seed, printed at the start (and so shown when the test fails);
//! `SOAK_SEED=N` replays it. The moments of the crashes still depend on timing.

use std::thread;
use std::time::{Duration, Instant};

use acceptance::{
    Backend, LoadControl, OrderMix, Seeded, Server, ServerOptions, Storage, check_invariants,
    run_load,
};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

const POINTS: [&str; 8] = acceptance::SUBMIT_FAULT_POINTS;
const FORWARD: [&str; 4] = [
    "order.create",
    "stock.deduct",
    "coupon.use",
    "payment.create",
];
const REVERTS: [&str; 4] = [
    "order.create_revert",
    "stock.deduct_revert",
    "coupon.use_revert",
    "payment.create_revert",
];
const MAX_CRASHES: usize = 4;
const SUBMITTERS: usize = 16;

/// Low-rate faults everywhere: a few 500s and short delays on every point, a few business
/// failures forward and a few 409s on undos (a retry there).
fn background_faults(rng: &mut impl Rng) -> Vec<String> {
    let mut faults = Vec::new();
    for point in POINTS {
        faults.push(format!("{point}:error:{}", rng.random_range(1..=3)));
        faults.push(format!(
            "{point}:delay_ms={}:{}",
            rng.random_range(50..=200),
            rng.random_range(1..=5)
        ));
    }
    for point in FORWARD {
        faults.push(format!("{point}:fail:{}", rng.random_range(1..=5)));
    }
    for point in REVERTS.choose_multiple(rng, 2) {
        faults.push(format!("{point}:fail:{}", rng.random_range(1..=2)));
    }
    faults
}

/// Enough attempts for any one undo to outlast the faults: at most 3 errors and 2 refusals per
/// point and process, over at most `MAX_CRASHES + 2` processes.
const MAX_ATTEMPTS: u64 = 5 * (MAX_CRASHES as u64 + 2) + 10;

fn options(rng: &mut impl Rng, crash: bool) -> ServerOptions {
    let mut options = ServerOptions::new()
        .retry_ms(50, 1000)
        .max_attempts(MAX_ATTEMPTS);
    for spec in background_faults(rng) {
        options = options.fault(spec);
    }
    if crash {
        let point = POINTS.choose(rng).expect("points");
        let kind = ["crash_before_commit", "crash_after_commit"]
            .choose(rng)
            .expect("kinds");
        options = options.fault(format!("{point}:{kind}"));
    }
    options
}

fn chaos_soak(backend: Backend, default_orders: usize) {
    let started = Instant::now();
    let count = std::env::var("SOAK_ORDERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default_orders);
    let storage = Storage::new(backend);
    let extra_coupons: Vec<(i64, i64)> = (201..=300).map(|c| (c, c % 4 + 1)).collect();
    storage.seed(&[(3, 10_000_000), (4, 500)], &extra_coupons);
    let seed = std::env::var("SOAK_SEED")
        .ok()
        .map(|s| s.parse().expect("SOAK_SEED is a number"))
        .unwrap_or_else(rand::random::<u64>);
    println!(
        "chaos {}: seed {seed} (SOAK_SEED={seed} replays it)",
        backend.name()
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = Server::start(&storage, options(&mut rng, true));
    let coupons: Vec<i64> = (101..=105).chain(201..=300).collect();
    let seeded = Seeded::capture(server.api(), &[1, 2, 3, 4], &coupons);
    let orders = OrderMix::new(
        &format!("chaos-{}", backend.name()),
        &[1, 2, 3, 3, 3, 4, 999],
    )
    .with_coupons(&coupons, 0.3)
    .generate(count, &mut rng);

    let control = LoadControl::new();
    let apis = [server.api().clone()];
    let mut crashes = 0;
    let report = thread::scope(|scope| {
        let _stop = control.stop_on_drop();
        let load = scope.spawn(|| run_load(&orders, SUBMITTERS, &apis, &control));
        while !load.is_finished() {
            if !server.is_running() {
                // Only an injected crash may stop the process; anything else is a bug.
                let armed = server
                    .options()
                    .faults
                    .iter()
                    .any(|f| f.contains(":crash_"));
                assert!(
                    armed
                        && server.panics().is_empty()
                        && !server.stderr_tail(50).contains("overflowed its stack"),
                    "the process died without an injected crash\n{}",
                    server.context()
                );
                crashes += 1;
                println!(
                    "chaos: crash {crashes} at {} of {count} orders accepted",
                    control.progress()
                );
                server.restart(options(&mut rng, crashes < MAX_CRASHES));
            }
            thread::sleep(Duration::from_millis(50));
        }
        load.join().expect("the load thread does not panic")
    });
    assert!(
        report.failures.is_empty(),
        "{} orders not accepted, first: {:?}\n{}",
        report.failures.len(),
        report.failures.first(),
        server.context()
    );
    // A crash fault on an undo may still be pending: finish on a run without crash faults.
    server.restart(options(&mut rng, false));
    let gids: Vec<String> = orders.iter().map(|o| o.gid()).collect();
    server.wait_all_terminal(&gids, Duration::from_secs(120));
    let summary = check_invariants(server.api(), &seeded, &orders);
    println!(
        "chaos {}: {} orders driven with concurrency {SUBMITTERS}, {crashes} crashes survived, \
         {} submit retries, {summary}, in {:.1?}",
        backend.name(),
        report.accepted,
        report.retries,
        started.elapsed()
    );
    server.assert_no_panics();
}

#[test]
fn chaos_soak_with_random_faults_and_crashes_keeps_invariants_sqlite() {
    chaos_soak(Backend::Sqlite, 2000);
}
