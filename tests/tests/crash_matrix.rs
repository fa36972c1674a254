//! Crash matrix: every participant fault point of SubmitOrder crossed with every kind of
//! failure (`crash_before_commit`, `crash_after_commit`, `error`). After the process dies (or
//! the saga finishes), a restart without the crash fault drives every saga to its expected
//! terminal status and all invariants hold.

use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use acceptance::{
    Backend, Order, Seeded, Server, ServerOptions, Storage, backend_tests, check_invariants,
    describe_saga, submit_until_accepted,
};

const POINTS: [&str; 8] = acceptance::SUBMIT_FAULT_POINTS;
const KINDS: [&str; 3] = ["crash_before_commit", "crash_after_commit", "error"];
const DEFAULT_COUPONS: [i64; 5] = [101, 102, 103, 104, 105];

/// The business faults a point needs to be reached, and two orders that reach it with their
/// expected final statuses. An undo runs only on a rollback, so the `*_revert` points use
/// orders that fail after (or at) the step: no stock for the undo of order_create, a foreign
/// coupon for the undo of stock_deduct, a failing payment for the undos of coupon_use and
/// pay_create.
fn scenario(point: &str, tag: &str) -> (Vec<String>, Vec<(Order, &'static str)>) {
    let a = Order::new(&format!("{tag}-a"));
    let b = Order::new(&format!("{tag}-b")).product(2, 2).amount(300);
    let payment_fails = vec!["payment.create:fail:1000".to_string()];
    match point {
        "order.create" | "stock.deduct" | "payment.create" => {
            (vec![], vec![(a, "succeeded"), (b.coupon(103), "succeeded")])
        }
        "coupon.use" => (
            vec![],
            vec![(a.coupon(101), "succeeded"), (b.coupon(102), "succeeded")],
        ),
        "order.create_revert" => (
            vec![],
            vec![(a.product(1, 1000), "compensated"), (b, "succeeded")],
        ),
        "stock.deduct_revert" => (
            vec![],
            vec![(a.user(2).coupon(101), "compensated"), (b, "succeeded")],
        ),
        "coupon.use_revert" => (
            payment_fails,
            vec![
                (a.coupon(101), "compensated"),
                (b.coupon(102), "compensated"),
            ],
        ),
        "payment.create_revert" => (payment_fails, vec![(a, "compensated"), (b, "compensated")]),
        other => panic!("no scenario for fault point {other}"),
    }
}

fn run_case(backend: Backend, point: &str, kind: &str) {
    let tag = format!("{}-{}", point.replace('.', "_"), kind);
    let (business, orders) = scenario(point, &tag);
    let mut healthy = ServerOptions::new().retry_ms(50, 1000);
    for spec in &business {
        healthy = healthy.fault(spec.clone());
    }
    let faulty = healthy.clone().fault(format!("{point}:{kind}"));

    let storage = Storage::new(backend);
    let mut server = Server::start(&storage, faulty);
    let seeded = Seeded::capture(server.api(), &[1, 2], &DEFAULT_COUPONS);
    for (order, _) in &orders {
        // A crash may cut the connection; the order is resubmitted after the restart.
        let _ = server.api().try_submit(order);
    }
    let gids: Vec<String> = orders.iter().map(|(o, _)| o.gid()).collect();
    if kind.starts_with("crash") {
        if server.wait_exit(Duration::from_secs(20)).is_none() {
            panic!(
                "--fault {point}:{kind} did not stop the process within 20 s\n{}",
                server.context()
            );
        }
    } else {
        server.wait_all_terminal(&gids, Duration::from_secs(30));
    }

    server.restart(healthy);
    for (order, _) in &orders {
        if let Err(e) = submit_until_accepted(
            std::slice::from_ref(server.api()),
            0,
            order,
            Duration::from_secs(10),
        ) {
            panic!("resubmitting after the restart: {e}\n{}", server.context());
        }
    }
    let views = server.wait_all_terminal(&gids, Duration::from_secs(30));
    let mut wrong = Vec::new();
    for (order, expected) in &orders {
        let view = &views[&order.gid()];
        if view["status"] != *expected {
            wrong.push(format!(
                "{} expected {expected}, got {}",
                order.gid(),
                describe_saga(view)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "wrong final status:\n  {}\n{}",
        wrong.join("\n  "),
        server.context()
    );
    let all: Vec<Order> = orders.into_iter().map(|(o, _)| o).collect();
    check_invariants(server.api(), &seeded, &all);
    server.assert_no_panics();
}

fn crash_matrix(backend: Backend) {
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut passed = 0;
    for point in POINTS {
        for kind in KINDS {
            let case_started = Instant::now();
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| run_case(backend, point, kind)));
            match outcome {
                Ok(()) => {
                    passed += 1;
                    println!(
                        "crash matrix {}: {point}:{kind} ok in {:.1?}",
                        backend.name(),
                        case_started.elapsed()
                    );
                }
                Err(payload) => {
                    let message = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".into());
                    println!("crash matrix {}: {point}:{kind} FAILED", backend.name());
                    failures.push(format!("{point}:{kind}: {message}"));
                }
            }
        }
    }
    println!(
        "crash matrix {}: {passed}/{} cases passed in {:.1?}",
        backend.name(),
        POINTS.len() * KINDS.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} crash matrix case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

backend_tests!(crash_matrix);
