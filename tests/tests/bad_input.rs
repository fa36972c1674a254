//! Bad input: every refused request answers its contract status with a JSON
//! `{"error": "..."}` body, the process stays up, and nothing is created.

use acceptance::{Api, Checks, Order, Server, ServerOptions, Storage};
use serde_json::{Value, json};

const DEFAULT_COUPONS: [i64; 5] = [101, 102, 103, 104, 105];

/// A valid submitOrder body with `field` replaced (or removed when `value` is `None`).
fn with_field(field: &str, value: Option<Value>) -> String {
    let mut body = Order::new("bad").body();
    let map = body.as_object_mut().expect("an order body is an object");
    match value {
        Some(value) => {
            map.insert(field.to_string(), value);
        }
        None => {
            map.remove(field);
        }
    }
    body.to_string()
}

/// Asserts the untouched default data set: healthz 200, no saga, default stock and coupons.
fn assert_nothing_created(api: &Api, checks: &mut Checks, order_ids: &[&str]) {
    checks.check(matches!(api.healthz(), Ok(200)), || {
        format!(
            "the process should stay up: GET /healthz gave {:?}",
            api.healthz()
        )
    });
    let listing = api.sagas("");
    checks.check(
        listing.body["sagas"].as_array().is_some_and(Vec::is_empty),
        || format!("refused requests must create no saga: {listing}"),
    );
    checks.check(
        api.stock(1) == Some(100) && api.stock(2) == Some(200),
        || format!("stock changed: {:?} {:?}", api.stock(1), api.stock(2)),
    );
    for coupon in DEFAULT_COUPONS {
        checks.check(api.coupon(coupon) == Some((1, false)), || {
            format!("coupon {coupon} changed: {:?}", api.coupon(coupon))
        });
    }
    for id in order_ids {
        checks.check(
            api.order_status(id).is_none() && api.payment(id).is_none(),
            || format!("order {id} or its payment exists after a refused submit"),
        );
    }
}

#[test]
fn invalid_submissions_are_refused_with_json_errors_and_create_nothing() {
    let server = Server::start(&Storage::sqlite(), ServerOptions::new());
    let api = server.api();
    let mut checks = Checks::new();
    let submit = "/api/busi/submitOrder";

    let malformed = [
        ("truncated JSON", "{\"order_id\": \"bad\", "),
        ("not JSON", "order_id=bad"),
        ("empty body", ""),
    ];
    for (what, body) in malformed {
        checks.status(
            &format!("submitOrder with {what}"),
            &api.post_raw(submit, body),
            &[400],
        );
    }

    let invalid: Vec<(String, String)> = vec![
        (
            "order_id as a number".into(),
            with_field("order_id", Some(json!(5))),
        ),
        (
            "user_id as a string".into(),
            with_field("user_id", Some(json!("1"))),
        ),
        (
            "product_count as a float".into(),
            with_field("product_count", Some(json!(1.5))),
        ),
        (
            "coupon_id as a string".into(),
            with_field("coupon_id", Some(json!("101"))),
        ),
        ("a JSON array body".into(), "[]".into()),
        ("missing order_id".into(), with_field("order_id", None)),
        ("missing user_id".into(), with_field("user_id", None)),
        ("missing product_id".into(), with_field("product_id", None)),
        (
            "missing product_count".into(),
            with_field("product_count", None),
        ),
        (
            "missing amount_cents".into(),
            with_field("amount_cents", None),
        ),
        ("user_id 0".into(), with_field("user_id", Some(json!(0)))),
        (
            "product_id -1".into(),
            with_field("product_id", Some(json!(-1))),
        ),
        (
            "product_count 0".into(),
            with_field("product_count", Some(json!(0))),
        ),
        (
            "product_count 1001".into(),
            with_field("product_count", Some(json!(1001))),
        ),
        (
            "amount_cents -1".into(),
            with_field("amount_cents", Some(json!(-1))),
        ),
        (
            "user_id beyond i64".into(),
            with_field("user_id", Some(json!(u64::MAX))),
        ),
        (
            "coupon_id 0".into(),
            with_field("coupon_id", Some(json!(0))),
        ),
        (
            "an unknown field".into(),
            with_field("note", Some(json!("hi"))),
        ),
        (
            "order_id of 65 characters".into(),
            with_field("order_id", Some(json!("a".repeat(65)))),
        ),
        (
            "an empty order_id".into(),
            with_field("order_id", Some(json!(""))),
        ),
        (
            "a non-ASCII order_id".into(),
            with_field("order_id", Some(json!("bestellung-ä"))),
        ),
        (
            "an order_id with a space".into(),
            with_field("order_id", Some(json!("a b"))),
        ),
        (
            "an order_id with a dot".into(),
            with_field("order_id", Some(json!("a.b"))),
        ),
    ];
    for (what, body) in &invalid {
        checks.status(
            &format!("submitOrder with {what}"),
            &api.post_raw(submit, body.as_str()),
            &[422],
        );
    }

    let valid = Order::new("bad").body().to_string();
    for query in [
        "?wait=true&timeout_ms=0",
        "?wait=true&timeout_ms=60001",
        "?timeout_ms=-5",
    ] {
        checks.status(
            &format!("submitOrder{query}"),
            &api.post_raw(&format!("{submit}{query}"), valid.as_str()),
            &[422],
        );
    }
    // The contract fixes 422 for an out-of-range timeout_ms; for unparsable query values it
    // only says they are refused.
    for query in ["?wait=maybe", "?wait=true&timeout_ms=abc"] {
        checks.status(
            &format!("submitOrder{query}"),
            &api.post_raw(&format!("{submit}{query}"), valid.as_str()),
            &[400, 422],
        );
    }

    let pay = "/api/busi/payOrder";
    checks.status(
        "payOrder with malformed JSON",
        &api.post_raw(pay, "{"),
        &[400],
    );
    checks.status(
        "payOrder without order_id",
        &api.post_raw(pay, "{}"),
        &[422],
    );
    checks.status(
        "payOrder with an unknown field",
        &api.post_raw(pay, r#"{"order_id":"bad","x":1}"#),
        &[422],
    );
    checks.status(
        "payOrder with a 65-character order_id",
        &api.post_json(pay, &json!({"order_id": "a".repeat(65)})),
        &[422],
    );

    assert_nothing_created(api, &mut checks, &["bad", "a", "bestellung-ä"]);
    checks.finish();
}

#[test]
fn oversized_bodies_are_refused_with_413() {
    let server = Server::start(&Storage::sqlite(), ServerOptions::new());
    let api = server.api();
    let mut checks = Checks::new();
    let padding = |size: usize| -> Vec<u8> {
        let mut body = concat!(
            r#"{"order_id":"big","user_id":1,"product_id":1,"product_count":1,"amount_cents":1,"#,
            r#""coupon_id":null,"pad":""#
        )
        .as_bytes()
        .to_vec();
        body.resize(size - 2, b'x');
        body.extend_from_slice(b"\"}");
        body
    };
    for (what, path, size) in [
        (
            "submitOrder with 65 KiB",
            "/api/busi/submitOrder",
            65 * 1024,
        ),
        (
            "submitOrder with 10 MB",
            "/api/busi/submitOrder",
            10 * 1024 * 1024,
        ),
        ("payOrder with 65 KiB", "/api/busi/payOrder", 65 * 1024),
    ] {
        // Read while writing: the server may answer 413 and close before the body is written.
        match api.post_oversized(path, &[("content-type", "application/json")], padding(size)) {
            Ok(reply) => {
                checks.status(what, &reply, &[413]);
            }
            Err(e) => {
                checks.check(false, || {
                    format!("{what}: expected a 413 reply, the connection failed: {e}")
                });
            }
        }
    }
    let headers = [
        ("content-type", "application/json"),
        ("saga-gid", "big-1"),
        ("saga-branch", "stock_deduct"),
        ("saga-op", "action"),
    ];
    match api.post_oversized("/api/busi/stockDeduct", &headers, padding(65 * 1024)) {
        Ok(reply) => {
            checks.status("stockDeduct with 65 KiB", &reply, &[413]);
        }
        Err(e) => {
            checks.check(false, || {
                format!("stockDeduct with 65 KiB: the connection failed: {e}")
            });
        }
    }
    assert_nothing_created(api, &mut checks, &["big"]);
    checks.finish();
}

#[test]
fn unknown_paths_methods_and_ids_reply_with_json_errors() {
    let server = Server::start(&Storage::sqlite(), ServerOptions::new());
    let api = server.api();
    let mut checks = Checks::new();
    let requests: [(&str, &str, u16); 24] = [
        ("GET", "/nope", 404),
        ("GET", "/api/nope", 404),
        ("POST", "/api/busi/nope", 404),
        ("GET", "/api/sagas/order-missing", 404),
        ("GET", "/api/stock/999", 404),
        ("GET", "/api/coupons/999", 404),
        ("GET", "/api/orders/missing", 404),
        ("GET", "/api/payments/missing", 404),
        ("GET", "/api/busi/submitOrder", 405),
        ("PUT", "/api/busi/submitOrder", 405),
        ("GET", "/api/busi/payOrder", 405),
        ("DELETE", "/api/stock/1", 405),
        ("POST", "/api/stock/1", 405),
        ("POST", "/healthz", 405),
        ("POST", "/metrics", 405),
        ("DELETE", "/api/sagas", 405),
        ("GET", "/api/sagas/order-missing/retry", 405),
        ("GET", "/api/busi/stockDeduct", 405),
        ("GET", "/api/stock/abc", 400),
        ("GET", "/api/stock/1.5", 400),
        ("GET", "/api/stock/99999999999999999999999", 400),
        ("GET", "/api/coupons/x101", 400),
        ("GET", "/api/coupons/", 404),
        ("PATCH", "/api/orders/x", 405),
    ];
    for (method, path, expected) in requests {
        let reply = api.request(method, path, &[], None);
        checks.status(&format!("{method} {path}"), &reply, &[expected]);
    }
    assert_nothing_created(api, &mut checks, &[]);
    checks.finish();
}

#[test]
fn operator_actions_are_forbidden_without_a_configured_token() {
    let server = Server::start(&Storage::sqlite(), ServerOptions::new());
    let api = server.api();
    let mut checks = Checks::new();
    let order = Order::new("no-token");
    api.submit_wait(&order, None);
    for action in ["retry", "compensate"] {
        for (what, token) in [
            ("without a token", None),
            ("with a bearer token", Some("anything")),
        ] {
            let reply = api.operator(&order.gid(), action, token);
            checks.status(
                &format!("{action} {what} when --admin-token is not set"),
                &reply,
                &[403],
            );
        }
        let reply = api.operator("order-unknown", action, None);
        checks.status(
            &format!("{action} on an unknown gid when --admin-token is not set"),
            &reply,
            &[403],
        );
    }
    checks.check(
        api.saga(&order.gid())
            .is_some_and(|v| v["status"] == "succeeded"),
        || "refused operator actions must not change the saga".into(),
    );
    checks.check(matches!(api.healthz(), Ok(200)), || {
        "the process should stay up".into()
    });
    checks.finish();
}

#[test]
fn operator_actions_need_the_right_bearer_token() {
    let server = Server::start(
        &Storage::sqlite(),
        ServerOptions::new().admin_token("right-token"),
    );
    let api = server.api();
    let mut checks = Checks::new();
    let order = Order::new("tokened");
    api.submit_wait(&order, None);
    for action in ["retry", "compensate"] {
        checks.status(
            &format!("{action} without Authorization"),
            &api.operator(&order.gid(), action, None),
            &[401],
        );
        checks.status(
            &format!("{action} with a wrong token"),
            &api.operator(&order.gid(), action, Some("wrong-token")),
            &[401],
        );
        checks.status(
            &format!("{action} with a wrong token on an unknown gid"),
            &api.operator("order-unknown", action, Some("wrong")),
            &[401],
        );
        let basic = api.request(
            "POST",
            &format!("/api/sagas/{}/{action}", order.gid()),
            &[("authorization", "Basic right-token")],
            None,
        );
        checks.status(&format!("{action} with a Basic scheme"), &basic, &[401]);
        checks.status(
            &format!("{action} on an unknown gid"),
            &api.operator("order-unknown", action, Some("right-token")),
            &[404],
        );
        checks.status(
            &format!("{action} on a succeeded saga"),
            &api.operator(&order.gid(), action, Some("right-token")),
            &[409],
        );
    }
    checks.check(matches!(api.healthz(), Ok(200)), || {
        "the process should stay up".into()
    });
    checks.finish();
}
