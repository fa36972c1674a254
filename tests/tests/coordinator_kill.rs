//! Coordinator crash: SIGKILL the whole process at random moments under a steady load and
//! restart it on the same data and instance id; afterwards every saga is terminal and every
//! invariant holds.

use std::thread;
use std::time::{Duration, Instant};

use acceptance::{
    Backend, LoadControl, OrderMix, Seeded, Server, ServerOptions, Storage, backend_tests,
    check_invariants, run_load,
};
use rand::Rng;

const ORDERS: usize = 500;
const KILLS: usize = 5;
const SUBMITTERS: usize = 4;

fn coordinator_sigkill_under_load_loses_no_saga(backend: Backend) {
    let started = Instant::now();
    let storage = Storage::new(backend);
    let extra_coupons: Vec<(i64, i64)> = (201..=240).map(|c| (c, c % 3 + 1)).collect();
    storage.seed(&[(3, 1_000_000)], &extra_coupons);
    let options = ServerOptions::new().retry_ms(50, 1000);
    let mut server = Server::start(&storage, options.clone());
    let coupons: Vec<i64> = (101..=105).chain(201..=240).collect();
    let seeded = Seeded::capture(server.api(), &[1, 2, 3], &coupons);
    let mut rng = rand::rng();
    let orders = OrderMix::new(&format!("kill-{}", backend.name()), &[1, 2, 3, 3, 3, 999])
        .with_coupons(&coupons, 0.3)
        .generate(ORDERS, &mut rng);

    let control = LoadControl::new();
    let apis = [server.api().clone()];
    let mut kills = 0;
    let report = thread::scope(|scope| {
        let _stop = control.stop_on_drop();
        let load = scope.spawn(|| run_load(&orders, SUBMITTERS, &apis, &control));
        for k in 1..=KILLS {
            let threshold = k * ORDERS / (KILLS + 1) + rng.random_range(0..ORDERS / 20);
            control.wait_progress(threshold, Duration::from_secs(120));
            thread::sleep(Duration::from_millis(rng.random_range(0..150)));
            server.kill();
            kills += 1;
            println!(
                "kill {kills} at {} of {ORDERS} orders accepted",
                control.progress()
            );
            thread::sleep(Duration::from_millis(rng.random_range(0..300)));
            server.restart(options.clone());
        }
        load.join().expect("the load thread does not panic")
    });
    assert!(
        report.failures.is_empty(),
        "{} orders were not accepted: {:?}\n{}",
        report.failures.len(),
        &report.failures[..report.failures.len().min(10)],
        server.context()
    );
    let gids: Vec<String> = orders.iter().map(|o| o.gid()).collect();
    server.wait_all_terminal(&gids, Duration::from_secs(60));
    let summary = check_invariants(server.api(), &seeded, &orders);
    println!(
        "coordinator kill {}: {} orders driven, {kills} SIGKILLs survived, {} submit retries, {summary}, in {:.1?}",
        backend.name(),
        report.accepted,
        report.retries,
        started.elapsed()
    );
    server.assert_no_panics();
}

backend_tests!(coordinator_sigkill_under_load_loses_no_saga);
