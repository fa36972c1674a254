//! Duplicates and races: repeated submits apply once, one coupon has one holder, and stock
//! is never oversold. Also the hang case: an action that arrives after its undo changes
//! nothing.

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use acceptance::{
    Backend, LoadControl, Order, Seeded, Server, ServerOptions, Storage, backend_tests,
    check_invariants, describe_saga, run_load, wait_all_terminal,
};

fn identical_submits_racing_make_one_saga_and_one_effect(backend: Backend) {
    let server = Server::start(&Storage::new(backend), ServerOptions::new());
    let api = server.api();
    let seeded = Seeded::capture(api, &[2], &[101]);
    let order = Order::new("same-twenty")
        .product(2, 7)
        .coupon(101)
        .amount(1234);
    let barrier = Barrier::new(20);
    let replies: Vec<_> = thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    api.submit(&order)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a submitter does not panic"))
            .collect()
    });
    let bad: Vec<String> = replies
        .iter()
        .filter(|r| !matches!(r.status, 200 | 202) || r.str("gid") != Some("order-same-twenty"))
        .map(|r| r.to_string())
        .collect();
    assert!(
        bad.is_empty(),
        "20 identical concurrent submits: every reply should be 200/202 with gid order-same-twenty; got {bad:?}"
    );
    let views = wait_all_terminal(api, &[order.gid()], Duration::from_secs(30));
    assert_eq!(
        views[&order.gid()]["status"],
        "succeeded",
        "{}",
        describe_saga(&views[&order.gid()])
    );
    let summary = check_invariants(api, &seeded, &[order]);
    assert_eq!(api.stock(2), Some(193), "one effect: stock 200 - 7");
    println!("identical submits {}: 20 sent, {summary}", backend.name());
    server.assert_no_panics();
}

fn orders_racing_for_one_coupon_leave_exactly_one_holder(backend: Backend) {
    let server = Server::start(&Storage::new(backend), ServerOptions::new());
    let api = server.api();
    let seeded = Seeded::capture(api, &[2], &[104]);
    let orders: Vec<Order> = (0..20)
        .map(|i| {
            Order::new(&format!("coupon-race-{i}"))
                .product(2, 1)
                .coupon(104)
        })
        .collect();
    let barrier = Barrier::new(orders.len());
    thread::scope(|scope| {
        for order in &orders {
            let barrier = &barrier;
            scope.spawn(move || {
                barrier.wait();
                let reply = api.submit(order);
                assert!(
                    matches!(reply.status, 200 | 202),
                    "submit {}: {reply}",
                    order.order_id
                );
            });
        }
    });
    let gids: Vec<String> = orders.iter().map(|o| o.gid()).collect();
    wait_all_terminal(api, &gids, Duration::from_secs(30));
    let summary = check_invariants(api, &seeded, &orders);
    assert_eq!(
        summary.succeeded, 1,
        "exactly one of 20 orders racing for coupon 104 should succeed: {summary}"
    );
    assert_eq!(api.coupon(104), Some((1, true)));
    println!("coupon race {}: {summary}", backend.name());
    server.assert_no_panics();
}

fn orders_beyond_stock_sell_exactly_the_stock(backend: Backend) {
    let storage = Storage::new(backend);
    storage.seed(&[(3, 100)], &[]);
    let server = Server::start(&storage, ServerOptions::new());
    let api = server.api();
    let seeded = Seeded::capture(api, &[3], &[]);
    assert_eq!(seeded.stock[&3], 100, "seed --stock 3=100");
    let orders: Vec<Order> = (0..300)
        .map(|i| Order::new(&format!("stock-race-{i}")).product(3, 1))
        .collect();
    let started = Instant::now();
    let control = LoadControl::new();
    let report = run_load(&orders, 16, std::slice::from_ref(api), &control);
    assert!(
        report.failures.is_empty(),
        "{} submits not accepted, first: {:?}\n{}",
        report.failures.len(),
        report.failures.first(),
        server.context()
    );
    let gids: Vec<String> = orders.iter().map(|o| o.gid()).collect();
    let views = wait_all_terminal(api, &gids, Duration::from_secs(60));
    let summary = check_invariants(api, &seeded, &orders);
    // Only a lack of stock may roll an order back here; list any other reason.
    let other_reasons: Vec<String> = views
        .values()
        .filter(|v| v["status"] == "compensated")
        .filter(|v| {
            !v["reason"]
                .as_str()
                .unwrap_or("")
                .contains("insufficient stock")
        })
        .map(describe_saga)
        .take(5)
        .collect();
    assert_eq!(
        summary.succeeded,
        100,
        "300 orders of 1 on a stock of 100: exactly 100 should succeed: {summary}; \
         compensated for another reason than stock: {other_reasons:#?}\n{}",
        server.context()
    );
    assert_eq!(api.stock(3), Some(0));
    println!(
        "stock race {}: {summary} in {:.1?}",
        backend.name(),
        started.elapsed()
    );
    server.assert_no_panics();
}

fn delayed_deduction_past_the_deadline_is_compensated_and_never_applies(backend: Backend) {
    let server = Server::start(
        &Storage::new(backend),
        ServerOptions::new()
            .fault("stock.deduct:delay_ms=3000:10")
            .step_timeout_ms(500)
            .saga_deadline_ms(1000)
            .retry_ms(100, 200),
    );
    let api = server.api();
    let seeded = Seeded::capture(api, &[2], &[]);
    let order = Order::new("hung").product(2, 9);
    let started = Instant::now();
    let reply = api.submit_wait(&order, Some(15_000));
    assert_eq!(
        reply.status,
        200,
        "submit ?wait=true: {reply}\n{}",
        server.context()
    );
    assert_eq!(
        reply.str("status"),
        Some("compensated"),
        "a saga past its deadline before the pivot is compensated: {reply}"
    );
    let compensated_after = started.elapsed();
    let view = api.saga(&order.gid()).expect("the saga exists");
    assert_eq!(view["steps"][1]["name"], "stock_deduct");
    assert_eq!(
        view["steps"][1]["status"],
        "compensated",
        "a null compensation shows compensated: {}",
        describe_saga(&view)
    );
    // Let every delayed action arrive after its undo.
    thread::sleep(Duration::from_millis(4_500));
    assert_eq!(
        api.stock(2),
        Some(200),
        "a late action after its undo must change nothing\n{}",
        server.context()
    );
    let summary = check_invariants(api, &seeded, &[order]);
    println!(
        "hang {}: compensated after {compensated_after:.1?}; {summary}",
        backend.name()
    );
    server.assert_no_panics();
}

backend_tests!(
    identical_submits_racing_make_one_saga_and_one_effect,
    orders_racing_for_one_coupon_leave_exactly_one_holder,
    orders_beyond_stock_sell_exactly_the_stock,
    delayed_deduction_past_the_deadline_is_compensated_and_never_applies,
);
