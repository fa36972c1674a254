//! The HTTP contract of docs/contract.md on a healthy server: submit and its replies,
//! repeats, the saga view, listing, payOrder, operator actions, metrics, participant
//! endpoints and the command line.

use std::time::Duration;

use acceptance::server::run_cli;
use acceptance::{
    Checks, Order, Seeded, Server, ServerOptions, Storage, check_invariants, describe_saga,
    is_rfc3339_utc_millis, is_terminal, wait_all_terminal, wait_for,
};
use serde_json::{Value, json};

const SECOND: Duration = Duration::from_secs(1);
const DEFAULT_COUPONS: [i64; 5] = [101, 102, 103, 104, 105];

fn step<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("saga view has no step {name}: {view}"))
}

fn step_names(view: &Value) -> Vec<String> {
    view["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| s["name"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn submit_replies_202_running_and_wait_replies_200_with_the_terminal_status() {
    let server = Server::start(&Storage::sqlite(), ServerOptions::new());
    let api = server.api();
    let seeded = Seeded::capture(api, &[1, 2], &DEFAULT_COUPONS);
    let mut checks = Checks::new();

    let plain = Order::new("plain");
    let reply = api.submit(&plain);
    checks.status("submit without wait", &reply, &[202]);
    checks.check(reply.body == json!({"gid": "order-plain", "status": "running"}), || {
        format!("submit without wait: expected {{\"gid\":\"order-plain\",\"status\":\"running\"}}, got {reply}")
    });

    let with_coupon = Order::new("with-coupon").product(2, 2).coupon(101);
    let reply = api.submit_wait(&with_coupon, None);
    checks.status("submit ?wait=true (valid coupon)", &reply, &[200]);
    checks.check(
        reply.str("gid") == Some("order-with-coupon") && reply.str("status") == Some("succeeded"),
        || format!("submit ?wait=true: expected gid order-with-coupon succeeded, got {reply}"),
    );
    checks.check(reply.body.get("reason").is_some(), || {
        format!("submit ?wait=true: the reply has no \"reason\" key: {reply}")
    });

    let rollbacks = [
        (
            "foreign-coupon",
            Order::new("foreign-coupon").user(2).coupon(102),
        ),
        ("no-stock", Order::new("no-stock").product(1, 1000)),
        (
            "unknown-product",
            Order::new("unknown-product").product(999, 1),
        ),
    ];
    for (what, order) in &rollbacks {
        let reply = api.submit_wait(order, None);
        checks.status(&format!("submit ?wait=true ({what})"), &reply, &[200]);
        checks.check(
            reply.str("status") == Some("compensated")
                && reply.str("reason").is_some_and(|r| !r.is_empty()),
            || {
                format!(
                    "submit ?wait=true ({what}): expected compensated with a reason, got {reply}"
                )
            },
        );
    }

    let views = wait_all_terminal(api, &[plain.gid()], 10 * SECOND);
    checks.check(views[&plain.gid()]["status"] == "succeeded", || {
        format!(
            "order-plain: expected succeeded, got {}",
            describe_saga(&views[&plain.gid()])
        )
    });
    checks.finish();
    let mut orders = vec![plain, with_coupon];
    orders.extend(rollbacks.into_iter().map(|(_, order)| order));
    println!("{}", check_invariants(api, &seeded, &orders));
}

#[test]
fn wait_timeout_replies_202_while_running_and_pay_order_waits_for_submit_to_succeed() {
    let server = Server::start(
        &Storage::sqlite(),
        ServerOptions::new().fault("stock.deduct:delay_ms=2000"),
    );
    let api = server.api();
    let seeded = Seeded::capture(api, &[1], &[]);
    let mut checks = Checks::new();
    let order = Order::new("slow");

    let reply = api.submit_wait(&order, Some(200));
    checks.status(
        "submit ?wait=true&timeout_ms=200 on a saga that takes 2 s",
        &reply,
        &[202],
    );
    checks.check(reply.str("status") == Some("running"), || {
        format!("submit that timed out waiting: expected status running, got {reply}")
    });

    let reply = api.submit(&order);
    checks.status("repeat submit while running", &reply, &[202]);
    checks.check(
        reply.str("gid") == Some("order-slow")
            && matches!(reply.str("status"), Some("running" | "compensating")),
        || {
            format!(
                "repeat submit while running: expected gid order-slow, status running, got {reply}"
            )
        },
    );

    let reply = api.pay("slow", false);
    checks.status("payOrder while its SubmitOrder saga runs", &reply, &[409]);

    let reply = api.submit_wait(&order, Some(10_000));
    checks.status("repeat submit ?wait=true until done", &reply, &[200]);
    checks.check(reply.str("status") == Some("succeeded"), || {
        format!("repeat submit ?wait=true: expected succeeded, got {reply}")
    });
    checks.finish();
    check_invariants(api, &seeded, &[order]);
}

#[test]
fn repeated_submit_returns_the_same_saga_and_a_changed_body_conflicts() {
    let server = Server::start(&Storage::sqlite(), ServerOptions::new());
    let api = server.api();
    let seeded = Seeded::capture(api, &[2], &DEFAULT_COUPONS);
    let mut checks = Checks::new();
    let order = Order::new("repeat").product(2, 3).amount(250);

    let first = api.submit_wait(&order, None);
    checks.status("first submit ?wait=true", &first, &[200]);
    checks.check(first.str("status") == Some("succeeded"), || {
        format!("first submit: {first}")
    });

    let reordered =
        r#"{"amount_cents":250,"product_count":3,"product_id":2,"user_id":1,"order_id":"repeat"}"#;
    let with_null = concat!(
        r#"{"coupon_id":null,"order_id":"repeat","user_id":1,"product_id":2,"#,
        r#""product_count":3,"amount_cents":250}"#
    );
    for (what, body) in [
        (
            "repeat with keys reordered and coupon_id missing",
            reordered,
        ),
        ("repeat with an explicit null coupon_id", with_null),
    ] {
        let reply = api.post_raw("/api/busi/submitOrder", body);
        checks.status(what, &reply, &[200]);
        checks.check(
            reply.str("gid") == Some("order-repeat") && reply.str("status") == Some("succeeded"),
            || format!("{what}: expected the same terminal saga, got {reply}"),
        );
        let reply = api.post_raw("/api/busi/submitOrder?wait=true", body);
        checks.status(&format!("{what} (?wait=true)"), &reply, &[200]);
    }

    for (what, changed) in [
        ("a changed product_count", order.clone().product(2, 4)),
        ("a coupon added", order.clone().coupon(101)),
        ("a changed amount", order.clone().amount(251)),
    ] {
        let reply = api.submit(&changed);
        checks.status(&format!("repeat order_id with {what}"), &reply, &[409]);
    }
    checks.check(api.stock(2) == Some(197), || {
        format!(
            "stock of product 2 after one order of 3 and repeats: expected 197, got {:?}",
            api.stock(2)
        )
    });
    checks.finish();
    check_invariants(api, &seeded, &[order]);
}

#[test]
fn saga_view_lists_steps_with_attempts_errors_and_rfc3339_timestamps() {
    let server = Server::start(&Storage::sqlite(), ServerOptions::new());
    let api = server.api();
    let mut checks = Checks::new();
    let expected_steps = ["order_create", "stock_deduct", "coupon_use", "pay_create"];

    let ok = Order::new("view-ok").coupon(103);
    api.submit_wait(&ok, None);
    let view = api.saga(&ok.gid()).expect("saga of a submitted order");
    for key in [
        "gid",
        "saga",
        "status",
        "reason",
        "steps",
        "created_at",
        "updated_at",
    ] {
        checks.check(view.get(key).is_some(), || {
            format!("saga view has no \"{key}\": {view}")
        });
    }
    checks.check(
        view["gid"] == "order-view-ok" && view["status"] == "succeeded",
        || format!("saga view: expected gid order-view-ok succeeded: {view}"),
    );
    checks.check(view["saga"].as_str().is_some_and(|s| !s.is_empty()), || {
        format!("saga view: \"saga\" should name the saga: {view}")
    });
    checks.check(step_names(&view) == expected_steps, || {
        format!("saga view: steps should be {expected_steps:?} in order: {view}")
    });
    for name in expected_steps {
        let s = step(&view, name);
        checks.check(
            s["status"] == "succeeded"
                && s["attempts"] == 1
                && s["compensate_attempts"] == 0
                && s["last_error"].is_null(),
            || {
                format!(
                    "step {name} of a clean success: expected succeeded, attempts 1, \
                     compensate_attempts 0, last_error null: {s}"
                )
            },
        );
    }
    for key in ["created_at", "updated_at"] {
        let stamp = view[key].as_str().unwrap_or("");
        checks.check(is_rfc3339_utc_millis(stamp), || {
            format!(
                "saga view {key} {:?} is not RFC 3339 UTC with milliseconds",
                view[key]
            )
        });
    }
    checks.check(
        view["created_at"].as_str() <= view["updated_at"].as_str(),
        || format!("created_at after updated_at: {view}"),
    );

    let rolled_back = Order::new("view-rollback").user(2).coupon(104);
    api.submit_wait(&rolled_back, None);
    let view = api
        .saga(&rolled_back.gid())
        .expect("saga of a submitted order");
    checks.check(
        view["status"] == "compensated" && view["reason"].as_str().is_some_and(|r| !r.is_empty()),
        || format!("foreign coupon: expected compensated with a reason: {view}"),
    );
    for (name, status, compensated) in [
        ("order_create", "compensated", true),
        ("stock_deduct", "compensated", true),
        ("coupon_use", "compensated", true),
        ("pay_create", "skipped", false),
    ] {
        let s = step(&view, name);
        let undo_count_ok = if compensated {
            s["compensate_attempts"].as_u64().is_some_and(|n| n >= 1)
        } else {
            s["compensate_attempts"] == 0 && s["attempts"] == 0
        };
        checks.check(s["status"] == status && undo_count_ok, || {
            format!("after a coupon failure step {name} should be {status} (undo ran: {compensated}): {s}")
        });
    }
    checks.check(step(&view, "coupon_use")["last_error"].is_string(), || {
        format!(
            "the failed step coupon_use should keep its error: {}",
            step(&view, "coupon_use")
        )
    });
    drop(server);

    let faulty = Server::start(
        &Storage::sqlite(),
        ServerOptions::new().fault("stock.deduct:error"),
    );
    let order = Order::new("view-retried");
    let reply = faulty.api().submit_wait(&order, None);
    checks.check(reply.str("status") == Some("succeeded"), || {
        format!("one stock.deduct error is retried: expected succeeded, got {reply}")
    });
    let view = faulty
        .api()
        .saga(&order.gid())
        .expect("saga of a submitted order");
    let s = step(&view, "stock_deduct");
    checks.check(
        s["status"] == "succeeded"
            && s["attempts"] == 2
            && s["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        || {
            format!(
                "stock_deduct after one 500: expected succeeded, attempts 2, last_error kept: {s}"
            )
        },
    );
    checks.finish();
}

#[test]
fn listing_filters_by_status_limits_and_orders_newest_first() {
    let server = Server::start(&Storage::sqlite(), ServerOptions::new());
    let api = server.api();
    let mut checks = Checks::new();
    let a = Order::new("list-a");
    let b = Order::new("list-b").user(3).coupon(105);
    let c = Order::new("list-c").product(2, 1);
    for order in [&a, &b, &c] {
        api.submit_wait(order, None);
        std::thread::sleep(Duration::from_millis(5));
    }
    let gids = |query: &str| -> Option<Vec<String>> {
        let reply = api.sagas(query);
        (reply.status == 200).then(|| {
            reply.body["sagas"]
                .as_array()
                .map(|sagas| {
                    sagas
                        .iter()
                        .map(|s| s["gid"].as_str().unwrap_or("?").to_string())
                        .collect()
                })
                .unwrap_or_default()
        })
    };

    let all = api.sagas("");
    checks.status("GET /api/sagas", &all, &[200]);
    if let Some(first) = all.body["sagas"].as_array().and_then(|s| s.first()) {
        for key in [
            "gid",
            "saga",
            "status",
            "reason",
            "created_at",
            "updated_at",
        ] {
            checks.check(first.get(key).is_some(), || {
                format!("listing entry has no \"{key}\": {first}")
            });
        }
    }
    for (query, expected) in [
        ("", vec!["order-list-c", "order-list-b", "order-list-a"]),
        ("status=succeeded", vec!["order-list-c", "order-list-a"]),
        ("status=compensated", vec!["order-list-b"]),
        ("status=running", vec![]),
        ("status=stuck", vec![]),
        ("limit=1", vec!["order-list-c"]),
        (
            "limit=2&status=succeeded",
            vec!["order-list-c", "order-list-a"],
        ),
        (
            "limit=1000",
            vec!["order-list-c", "order-list-b", "order-list-a"],
        ),
        ("limit=2&unrelated=x", vec!["order-list-c", "order-list-b"]),
    ] {
        let got = gids(query);
        checks.check(got.as_ref().is_some_and(|g| *g == expected), || {
            format!("GET /api/sagas?{query}: expected {expected:?} (newest first), got {got:?}")
        });
    }
    for query in [
        "status=bogus",
        "status=",
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=-1",
    ] {
        let reply = api.sagas(query);
        checks.status(&format!("GET /api/sagas?{query}"), &reply, &[422]);
    }
    checks.finish();
}

#[test]
fn pay_order_captures_the_payment_as_pivot_then_marks_the_order_paid() {
    let server = Server::start(&Storage::sqlite(), ServerOptions::new());
    let api = server.api();
    let seeded = Seeded::capture(api, &[1], &DEFAULT_COUPONS);
    let mut checks = Checks::new();
    let order = Order::new("to-pay").amount(4_200);
    let other = Order::new("to-pay-later").amount(1_000);
    let cancelled = Order::new("to-pay-cancelled").user(2).coupon(101);
    for o in [&order, &other, &cancelled] {
        api.submit_wait(o, None);
    }

    let reply = api.pay("to-pay", true);
    checks.status("payOrder ?wait=true", &reply, &[200]);
    checks.check(
        reply.str("gid") == Some("pay-to-pay")
            && reply.str("status") == Some("succeeded")
            && reply.body.get("reason").is_some(),
        || {
            format!(
                "payOrder ?wait=true: expected gid pay-to-pay succeeded with a reason key, \
                 got {reply}"
            )
        },
    );
    if let Some(view) = api.saga("pay-to-pay") {
        checks.check(
            step_names(&view) == ["payment_capture", "order_mark_paid"],
            || format!("pay saga steps should be [payment_capture, order_mark_paid]: {view}"),
        );
        checks.check(
            view["status"] == "succeeded"
                && view["steps"]
                    .as_array()
                    .is_some_and(|s| s.iter().all(|s| s["status"] == "succeeded")),
            || format!("pay saga: expected every step succeeded: {view}"),
        );
    } else {
        checks.check(false, || {
            "GET /api/sagas/pay-to-pay is 404 after payOrder".into()
        });
    }
    checks.check(
        api.payment("to-pay") == Some(("paid".into(), 4_200)),
        || {
            format!(
                "payment after payOrder: expected paid 4200, got {:?}",
                api.payment("to-pay")
            )
        },
    );
    checks.check(
        api.order_status("to-pay").as_deref() == Some("paid"),
        || {
            format!(
                "order after payOrder: expected paid, got {:?}",
                api.order_status("to-pay")
            )
        },
    );

    let reply = api.pay("to-pay", false);
    checks.status("repeat payOrder", &reply, &[200]);
    checks.check(
        reply.str("gid") == Some("pay-to-pay") && reply.str("status") == Some("succeeded"),
        || format!("repeat payOrder: expected the same succeeded saga, got {reply}"),
    );

    let reply = api.pay("to-pay-later", false);
    checks.status("payOrder without wait", &reply, &[202]);
    checks.check(reply.body == json!({"gid": "pay-to-pay-later", "status": "running"}), || {
        format!("payOrder without wait: expected {{\"gid\":\"pay-to-pay-later\",\"status\":\"running\"}}, got {reply}")
    });
    let views = wait_all_terminal(api, &["pay-to-pay-later".to_string()], 10 * SECOND);
    checks.check(views["pay-to-pay-later"]["status"] == "succeeded", || {
        format!(
            "pay-to-pay-later: {}",
            describe_saga(&views["pay-to-pay-later"])
        )
    });

    checks.status(
        "payOrder for an unknown order",
        &api.pay("never-submitted", false),
        &[404],
    );
    checks.status(
        "payOrder for a compensated order",
        &api.pay("to-pay-cancelled", false),
        &[409],
    );
    checks.finish();
    check_invariants(api, &seeded, &[order, other, cancelled]);
}

#[test]
fn failed_capture_leaves_the_pay_saga_compensated_and_the_payment_pending() {
    let server = Server::start(
        &Storage::sqlite(),
        ServerOptions::new().fault("payment.capture:fail"),
    );
    let api = server.api();
    let mut checks = Checks::new();
    let order = Order::new("capture-fails").amount(700);
    api.submit_wait(&order, None);

    let reply = api.pay("capture-fails", true);
    checks.status("payOrder ?wait=true with a failing capture", &reply, &[200]);
    checks.check(
        reply.str("status") == Some("compensated")
            && reply.str("reason").is_some_and(|r| !r.is_empty()),
        || {
            format!(
                "payOrder with a failing capture: expected compensated with a reason, got {reply}"
            )
        },
    );
    if let Some(view) = api.saga("pay-capture-fails") {
        let s = step(&view, "payment_capture");
        checks.check(s["status"] == "failed", || {
            format!("a failed pivot shows failed: {s}")
        });
        let s = step(&view, "order_mark_paid");
        checks.check(s["status"] == "skipped", || {
            format!("a retriable step never started shows skipped: {s}")
        });
    }
    let reply = api.pay("capture-fails", false);
    checks.check(
        reply.status == 200 && reply.str("status") == Some("compensated"),
        || format!("repeat payOrder after a failed capture: expected 200 compensated, got {reply}"),
    );
    checks.check(
        api.payment("capture-fails") == Some(("pending".into(), 700)),
        || {
            format!(
                "payment after a failed capture: expected pending, got {:?}",
                api.payment("capture-fails")
            )
        },
    );
    checks.check(
        api.order_status("capture-fails").as_deref() == Some("created"),
        || {
            format!(
                "order after a failed capture: expected created, got {:?}",
                api.order_status("capture-fails")
            )
        },
    );
    checks.finish();
}

#[test]
fn operator_retry_and_compensate_follow_the_state_before_the_pivot() {
    let token = "operator-secret";
    let server = Server::start(
        &Storage::sqlite(),
        ServerOptions::new()
            .admin_token(token)
            .fault("stock.deduct:error:1000000")
            .fault("order.create_revert:error:3")
            .max_attempts(2)
            .retry_ms(100, 200)
            .saga_deadline_ms(120_000),
    );
    let api = server.api();
    let seeded = Seeded::capture(api, &[1], &[]);
    let mut checks = Checks::new();
    let order = Order::new("operated");
    api.submit(&order);

    wait_for(10 * SECOND, "stock_deduct to be retried", || {
        let view = api.saga(&order.gid())?;
        (view["status"] == "running" && step(&view, "stock_deduct")["attempts"].as_u64() >= Some(2))
            .then_some(())
    });
    checks.status(
        "retry on a running saga",
        &api.operator(&order.gid(), "retry", Some(token)),
        &[202],
    );
    checks.status(
        "compensate on a running saga before its pivot",
        &api.operator(&order.gid(), "compensate", Some(token)),
        &[202],
    );

    // The undo of order_create fails 3 times with a budget of 2: the saga parks as stuck.
    let views = wait_all_terminal(api, &[order.gid()], 20 * SECOND);
    let view = &views[&order.gid()];
    checks.check(
        view["status"] == "stuck"
            && view["reason"]
                .as_str()
                .is_some_and(|r| r.contains("order_create")),
        || {
            format!(
                "an undo out of attempts should park the saga as stuck, naming the step: {}",
                describe_saga(view)
            )
        },
    );
    let stuck = api.sagas("status=stuck");
    checks.check(
        stuck.body["sagas"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["gid"] == order.gid().as_str())),
        || format!("GET /api/sagas?status=stuck should list the stuck saga: {stuck}"),
    );
    checks.status(
        "compensate on a saga stuck while compensating",
        &api.operator(&order.gid(), "compensate", Some(token)),
        &[202],
    );
    let mut last = view.clone();
    for _ in 0..3 {
        if last["status"] == "compensated" {
            break;
        }
        checks.status(
            "retry on a stuck saga",
            &api.operator(&order.gid(), "retry", Some(token)),
            &[202, 409],
        );
        std::thread::sleep(Duration::from_millis(300));
        last = wait_all_terminal(api, &[order.gid()], 20 * SECOND)[&order.gid()].clone();
    }
    checks.check(last["status"] == "compensated", || {
        format!(
            "retry with a fresh budget should let the undo finish: {}",
            describe_saga(&last)
        )
    });
    checks.status(
        "retry on a compensated saga",
        &api.operator(&order.gid(), "retry", Some(token)),
        &[409],
    );
    checks.status(
        "compensate on a compensated saga",
        &api.operator(&order.gid(), "compensate", Some(token)),
        &[409],
    );
    checks.finish();
    check_invariants(api, &seeded, &[order]);
}

#[test]
fn operator_compensate_is_refused_past_the_pivot_and_a_stuck_retriable_step_resumes_on_retry() {
    let token = "operator-secret";
    let server = Server::start(
        &Storage::sqlite(),
        ServerOptions::new()
            .admin_token(token)
            .fault("order.mark_paid:error:5")
            .max_attempts(3)
            .retry_ms(100, 200),
    );
    let api = server.api();
    let mut checks = Checks::new();
    let order = Order::new("pay-stuck").amount(900);
    api.submit_wait(&order, None);
    checks.status(
        "retry on a succeeded saga",
        &api.operator(&order.gid(), "retry", Some(token)),
        &[409],
    );
    checks.status(
        "compensate on a succeeded saga",
        &api.operator(&order.gid(), "compensate", Some(token)),
        &[409],
    );

    api.pay(&order.order_id, false);
    let pay_gid = order.pay_gid();
    wait_for(10 * SECOND, "payment_capture to succeed", || {
        let view = api.saga(&pay_gid)?;
        (step(&view, "payment_capture")["status"] == "succeeded").then_some(())
    });
    checks.status(
        "compensate past the pivot",
        &api.operator(&pay_gid, "compensate", Some(token)),
        &[409],
    );

    let views = wait_all_terminal(api, std::slice::from_ref(&pay_gid), 20 * SECOND);
    let view = &views[&pay_gid];
    checks.check(
        view["status"] == "stuck"
            && view["reason"]
                .as_str()
                .is_some_and(|r| r.contains("order_mark_paid")),
        || {
            format!(
                "a retriable step out of attempts should park the saga as stuck, \
                 naming the step: {}",
                describe_saga(view)
            )
        },
    );
    checks.status(
        "compensate on a saga stuck past its pivot",
        &api.operator(&pay_gid, "compensate", Some(token)),
        &[409],
    );
    checks.status(
        "retry on a stuck saga",
        &api.operator(&pay_gid, "retry", Some(token)),
        &[202],
    );
    let view = wait_for(20 * SECOND, "the pay saga to succeed after retry", || {
        let view = api.saga(&pay_gid)?;
        (view["status"] == "succeeded"
            || (view["status"] == "stuck"
                && step(&view, "order_mark_paid")["attempts"].as_u64() > Some(5)))
        .then_some(view)
    });
    checks.check(
        view["status"] == "succeeded" && step(&view, "order_mark_paid")["attempts"] == 6,
        || {
            format!(
                "after retry the stuck step should get a fresh budget \
                 (5 errors, then success on attempt 6): {}",
                describe_saga(&view)
            )
        },
    );
    checks.check(
        api.order_status(&order.order_id).as_deref() == Some("paid"),
        || {
            format!(
                "order after the pay saga: expected paid, got {:?}",
                api.order_status(&order.order_id)
            )
        },
    );
    checks.finish();
}

#[test]
fn metrics_endpoint_serves_prometheus_text() {
    let server = Server::start(&Storage::sqlite(), ServerOptions::new());
    let api = server.api();
    api.submit_wait(&Order::new("metered"), None);
    let reply = api.get("/metrics");
    let mut checks = Checks::new();
    checks.status("GET /metrics", &reply, &[200]);
    checks.check(
        reply
            .content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("text/plain")),
        || {
            format!(
                "GET /metrics content type should be text/plain, got {:?}",
                reply.content_type
            )
        },
    );
    let mut samples = 0;
    for line in reply.text.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with('#') {
            let ok = line.starts_with("# HELP ")
                || line.starts_with("# TYPE ")
                || !line.starts_with("# HELP") && !line.starts_with("# TYPE");
            checks.check(ok, || format!("bad metrics comment line: {line}"));
            continue;
        }
        samples += 1;
        checks.check(is_prometheus_sample(line), || {
            format!("not a Prometheus sample line: {line}")
        });
    }
    checks.check(samples > 0, || {
        format!("GET /metrics has no samples:\n{}", reply.text)
    });
    println!("/metrics: {samples} samples");
    checks.finish();
}

/// `name{label="v",...} value [timestamp]`.
fn is_prometheus_sample(line: &str) -> bool {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    let name_ok = !name.is_empty()
        && name.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        });
    let rest = &line[name_end..];
    let rest = if rest.starts_with('{') {
        match rest.rfind('}') {
            Some(end) => &rest[end + 1..],
            None => return false,
        }
    } else {
        rest
    };
    let mut fields = rest.split_whitespace();
    let value_ok = fields
        .next()
        .is_some_and(|v| v.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&v));
    let timestamp_ok = fields.next().is_none_or(|t| t.parse::<i64>().is_ok());
    name_ok && value_ok && timestamp_ok && fields.next().is_none()
}

/// (what, Saga-Gid, Saga-Branch, Saga-Op) of a refused participant call.
type BadHeaders<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);

#[test]
fn participant_endpoints_absorb_duplicates_null_compensations_and_late_actions() {
    let server = Server::start(&Storage::sqlite(), ServerOptions::new());
    let api = server.api();
    let mut checks = Checks::new();
    let body = Order::new("direct").product(2, 5).coupon(101).body();
    let call = |endpoint: &str, gid: &str, branch: &str, op: &str| {
        api.participant(endpoint, &body, Some(gid), Some(branch), Some(op))
    };

    let reply = call("stockDeduct", "manual-1", "stock_deduct", "action");
    checks.status("stockDeduct action", &reply, &[200, 201, 202, 204]);
    checks.check(api.stock(2) == Some(195), || {
        format!("stock after one deduction of 5: {:?}", api.stock(2))
    });
    let reply = call("stockDeduct", "manual-1", "stock_deduct", "action");
    checks.status(
        "duplicate stockDeduct action",
        &reply,
        &[200, 201, 202, 204],
    );
    checks.check(api.stock(2) == Some(195), || {
        format!(
            "a duplicate action must not deduct again: {:?}",
            api.stock(2)
        )
    });
    let reply = call(
        "stockDeductRevert",
        "manual-1",
        "stock_deduct",
        "compensate",
    );
    checks.status(
        "stockDeductRevert compensate",
        &reply,
        &[200, 201, 202, 204],
    );
    checks.check(api.stock(2) == Some(200), || {
        format!("the undo must add the stock back: {:?}", api.stock(2))
    });
    let reply = call(
        "stockDeductRevert",
        "manual-1",
        "stock_deduct",
        "compensate",
    );
    checks.status("duplicate stockDeductRevert", &reply, &[200, 201, 202, 204]);
    checks.check(api.stock(2) == Some(200), || {
        format!("a duplicate undo must not add again: {:?}", api.stock(2))
    });

    let reply = call(
        "stockDeductRevert",
        "manual-2",
        "stock_deduct",
        "compensate",
    );
    checks.status(
        "null compensation (undo before any action)",
        &reply,
        &[200, 201, 202, 204],
    );
    checks.check(api.stock(2) == Some(200), || {
        format!(
            "a null compensation must change nothing: {:?}",
            api.stock(2)
        )
    });
    let reply = call("stockDeduct", "manual-2", "stock_deduct", "action");
    checks.status("late action after its undo", &reply, &[409]);
    checks.check(api.stock(2) == Some(200), || {
        format!("a late action must change nothing: {:?}", api.stock(2))
    });

    let reply = call("couponUse", "manual-3", "coupon_use", "action");
    checks.status("couponUse action", &reply, &[200, 201, 202, 204]);
    checks.check(api.coupon(101) == Some((1, true)), || {
        format!("coupon after couponUse: {:?}", api.coupon(101))
    });
    let reply = call("couponUse", "manual-4", "coupon_use", "action");
    checks.status("couponUse of a used coupon (another gid)", &reply, &[409]);
    let reply = call("couponUseRevert", "manual-3", "coupon_use", "compensate");
    checks.status("couponUseRevert", &reply, &[200, 201, 202, 204]);
    checks.check(api.coupon(101) == Some((1, false)), || {
        format!("coupon after its undo: {:?}", api.coupon(101))
    });

    let reply = call("orderCreate", "manual-5", "order_create", "action");
    checks.status("orderCreate action", &reply, &[200, 201, 202, 204]);
    checks.check(
        api.order_status("direct").as_deref() == Some("created"),
        || format!("order after orderCreate: {:?}", api.order_status("direct")),
    );
    let reply = call(
        "orderCreateRevert",
        "manual-5",
        "order_create",
        "compensate",
    );
    checks.status("orderCreateRevert", &reply, &[200, 201, 202, 204]);
    checks.check(
        api.order_status("direct").as_deref() == Some("cancelled"),
        || format!("order after its undo: {:?}", api.order_status("direct")),
    );

    let reply = call("payCreate", "manual-6", "pay_create", "action");
    checks.status("payCreate action", &reply, &[200, 201, 202, 204]);
    checks.check(
        api.payment("direct").is_some_and(|(s, _)| s == "pending"),
        || format!("payment after payCreate: {:?}", api.payment("direct")),
    );
    let reply = call("payCreateRevert", "manual-6", "pay_create", "compensate");
    checks.status("payCreateRevert", &reply, &[200, 201, 202, 204]);
    checks.check(
        api.payment("direct").is_some_and(|(s, _)| s == "cancelled"),
        || format!("payment after its undo: {:?}", api.payment("direct")),
    );

    let long_gid = "g".repeat(129);
    let bad_headers: [BadHeaders; 9] = [
        ("no Saga-Gid", None, Some("stock_deduct"), Some("action")),
        ("no Saga-Branch", Some("manual-7"), None, Some("action")),
        ("no Saga-Op", Some("manual-7"), Some("stock_deduct"), None),
        (
            "Saga-Op bogus",
            Some("manual-7"),
            Some("stock_deduct"),
            Some("bogus"),
        ),
        (
            "Saga-Op compensate on the action endpoint",
            Some("manual-7"),
            Some("stock_deduct"),
            Some("compensate"),
        ),
        (
            "Saga-Branch of another endpoint",
            Some("manual-7"),
            Some("coupon_use"),
            Some("action"),
        ),
        (
            "Saga-Gid with a space",
            Some("bad gid"),
            Some("stock_deduct"),
            Some("action"),
        ),
        (
            "Saga-Gid of 129 characters",
            Some(long_gid.as_str()),
            Some("stock_deduct"),
            Some("action"),
        ),
        (
            "empty Saga-Gid",
            Some(""),
            Some("stock_deduct"),
            Some("action"),
        ),
    ];
    for (what, gid, branch, op) in bad_headers {
        let reply = api.participant("stockDeduct", &body, gid, branch, op);
        checks.status(&format!("stockDeduct with {what}"), &reply, &[400]);
    }
    let reply = api.participant(
        "stockDeductRevert",
        &body,
        Some("manual-7"),
        Some("stock_deduct"),
        Some("action"),
    );
    checks.status("stockDeductRevert with Saga-Op action", &reply, &[400]);
    checks.check(api.stock(2) == Some(200), || {
        format!(
            "refused participant calls must change nothing: {:?}",
            api.stock(2)
        )
    });
    let listing = api.sagas("");
    checks.check(
        listing.body["sagas"].as_array().is_some_and(Vec::is_empty),
        || format!("direct participant calls create no saga: {listing}"),
    );
    checks.finish();
}

#[test]
fn command_line_rejects_conflicting_storage_and_bad_fault_specs() {
    let dir = saga_testkit::temp_dir();
    let data_dir = dir.path().to_str().expect("a UTF-8 temp path").to_string();
    let port = acceptance::server::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut checks = Checks::new();
    let both = [
        "serve",
        "--listen",
        &listen,
        "--data-dir",
        &data_dir,
        "--database-url",
        "postgres://postgres@127.0.0.1:1/none",
    ];
    let (status, _, stderr) = run_cli(&both, 15 * SECOND);
    checks.check(status.is_some_and(|s| !s.success()), || {
        format!("serve with --data-dir and --database-url should fail at start; got {status:?}, stderr: {stderr}")
    });
    for spec in [
        "nope.create:error",
        "stock.deduct:explode",
        "stock.deduct:error:abc",
        "stock.deduct:delay_ms=x",
        "stock.deduct",
        "stock.deduct:error:1:2",
    ] {
        let args = [
            "serve",
            "--listen",
            &listen,
            "--data-dir",
            &data_dir,
            "--fault",
            spec,
        ];
        let (status, stdout, stderr) = run_cli(&args, 15 * SECOND);
        checks.check(status.is_some_and(|s| !s.success()), || {
            format!("serve --fault {spec} should stop at start; got {status:?}")
        });
        checks.check(stderr.contains(spec) || stdout.contains(spec), || {
            format!("serve --fault {spec}: the message should name the spec; stderr: {stderr}")
        });
    }
    checks.finish();
}

#[test]
fn fresh_data_set_is_seeded_and_seed_sets_explicit_values() {
    let fresh = Server::start(&Storage::sqlite(), ServerOptions::new());
    let mut checks = Checks::new();
    let api = fresh.api();
    checks.check(
        api.stock(1) == Some(100) && api.stock(2) == Some(200),
        || {
            format!(
                "default seed: expected stock 100 and 200, got {:?} {:?}",
                api.stock(1),
                api.stock(2)
            )
        },
    );
    for coupon in DEFAULT_COUPONS {
        checks.check(api.coupon(coupon) == Some((1, false)), || {
            format!(
                "default seed: coupon {coupon} should belong to user 1, unused: {:?}",
                api.coupon(coupon)
            )
        });
    }
    drop(fresh);

    let storage = Storage::sqlite();
    storage.seed(&[(3, 7), (4, 5)], &[(201, 9)]);
    let server = Server::start(&storage, ServerOptions::new());
    let api = server.api();
    checks.check(api.stock(3) == Some(7) && api.stock(4) == Some(5), || {
        format!(
            "seed --stock 3=7 --stock 4=5: got {:?} {:?}",
            api.stock(3),
            api.stock(4)
        )
    });
    checks.check(api.coupon(201) == Some((9, false)), || {
        format!("seed --coupon 201:9: got {:?}", api.coupon(201))
    });
    checks.check(api.stock(1) == Some(100), || {
        format!(
            "seed keeps the default data set: stock 1 is {:?}",
            api.stock(1)
        )
    });
    let views = [Order::new("seeded").user(9).product(3, 7).coupon(201)];
    let reply = api.submit_wait(&views[0], None);
    checks.check(reply.str("status") == Some("succeeded"), || {
        format!("order on seeded values: {reply}")
    });
    checks.check(api.stock(3) == Some(0), || {
        format!("stock 3 after buying all 7: {:?}", api.stock(3))
    });
    checks.finish();
    assert!(
        views
            .iter()
            .all(|o| is_terminal(&api.saga(&o.gid()).unwrap_or_default()))
    );
}
