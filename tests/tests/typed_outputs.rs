//! Typed outputs over HTTP (docs/contract.md, "Additions to the contract"): a participant
//! action's body is its step's output, a duplicate answers the first call's body, also after
//! the process restarted, and the sagas carry the outputs from step to step.

use acceptance::{Backend, Checks, Order, Server, ServerOptions, Storage, backend_tests, wait_for};
use serde_json::{Value, json};

backend_tests!(
    duplicates_answer_the_first_calls_body_also_after_a_restart,
    sagas_carry_the_payment_id_from_step_to_step,
);

fn storage(backend: Backend) -> Storage {
    match backend {
        Backend::Sqlite => Storage::sqlite(),
        Backend::Postgres => Storage::postgres(),
    }
}

fn duplicates_answer_the_first_calls_body_also_after_a_restart(backend: Backend) {
    let mut server = Server::start(&storage(backend), ServerOptions::new());
    let mut checks = Checks::new();
    let body = Order::new("typed-1").product(1, 1).body();
    let call = |server: &Server, endpoint: &str, branch: &str| {
        server.api().participant(
            endpoint,
            &body,
            Some("manual-typed-1"),
            Some(branch),
            Some("action"),
        )
    };

    let order = call(&server, "orderCreate", "order_create");
    checks.status("orderCreate", &order, &[200]);
    checks.check(order.body == json!({"order_id": "typed-1"}), || {
        format!("orderCreate answers the order's key: {}", order.text)
    });
    let payment = call(&server, "payCreate", "pay_create");
    checks.status("payCreate", &payment, &[200]);
    let payment_id = payment.body["payment_id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    checks.check(
        payment.body["order_id"] == "typed-1"
            && payment_id.len() == 20
            && payment_id.starts_with("pay-"),
        || {
            format!(
                "payCreate answers the order and a payment id: {}",
                payment.text
            )
        },
    );

    let again = call(&server, "payCreate", "pay_create");
    checks.status("duplicate payCreate", &again, &[200]);
    checks.check(again.body == payment.body, || {
        format!(
            "a duplicate answers the first body: {} then {}",
            payment.text, again.text
        )
    });

    server.restart(ServerOptions::new());
    for (endpoint, branch, first) in [
        ("orderCreate", "order_create", &order),
        ("payCreate", "pay_create", &payment),
    ] {
        let after = call(&server, endpoint, branch);
        checks.status(&format!("{endpoint} after a restart"), &after, &[200]);
        checks.check(after.body == first.body, || {
            format!(
                "{endpoint} after a restart answers the first body: {} then {}",
                first.text, after.text
            )
        });
    }

    // The compensation cancels by the payment id the action answered; another id cancels
    // nothing. (A second saga's payCreate of the same order meets the same document.)
    let api = server.api();
    let second = api.participant(
        "payCreate",
        &body,
        Some("manual-typed-wrong"),
        Some("pay_create"),
        Some("action"),
    );
    checks.check(second.body == payment.body, || {
        format!("the same order keeps its payment document: {}", second.text)
    });
    let mut wrong = body.clone();
    wrong["payment_id"] = Value::from("pay-0000000000000000");
    let reply = api.participant(
        "payCreateRevert",
        &wrong,
        Some("manual-typed-wrong"),
        Some("pay_create"),
        Some("compensate"),
    );
    checks.status("payCreateRevert with another payment's id", &reply, &[200]);
    checks.check(
        api.payment("typed-1").is_some_and(|(s, _)| s == "pending"),
        || {
            format!(
                "another payment's id cancels nothing: {:?}",
                api.payment("typed-1")
            )
        },
    );
    let mut by_id = body.clone();
    by_id["payment_id"] = Value::from(payment_id.as_str());
    let reply = api.participant(
        "payCreateRevert",
        &by_id,
        Some("manual-typed-1"),
        Some("pay_create"),
        Some("compensate"),
    );
    checks.status("payCreateRevert by the payment id", &reply, &[200]);
    checks.check(
        api.payment("typed-1")
            .is_some_and(|(s, _)| s == "cancelled"),
        || {
            format!(
                "the payment is cancelled by its id: {:?}",
                api.payment("typed-1")
            )
        },
    );

    let mut malformed = body.clone();
    malformed["payment_id"] = Value::from("7");
    let reply = api.participant(
        "payCreateRevert",
        &malformed,
        Some("manual-typed-2"),
        Some("pay_create"),
        Some("compensate"),
    );
    checks.status(
        "payCreateRevert with a malformed payment id",
        &reply,
        &[422],
    );
    server.assert_no_panics();
    checks.finish();
}

fn sagas_carry_the_payment_id_from_step_to_step(backend: Backend) {
    let server = Server::start(&storage(backend), ServerOptions::new());
    let api = server.api();
    let mut checks = Checks::new();
    let submitted = api.submit_wait(&Order::new("typed-2").product(1, 2), None);
    checks.status("submitOrder?wait=true", &submitted, &[200]);
    let paid = api.pay("typed-2", true);
    checks.status("payOrder?wait=true", &paid, &[200]);
    checks.check(paid.body["status"] == "succeeded", || {
        format!("payOrder: {}", paid.text)
    });

    let order_saga = api.saga("order-typed-2").unwrap_or_default();
    let pay_saga = api.saga("pay-typed-2").unwrap_or_default();
    let output = |view: &Value, step: &str| -> Value {
        view["steps"]
            .as_array()
            .and_then(|steps| steps.iter().find(|s| s["name"] == step))
            .map(|s| s["output"].clone())
            .unwrap_or(Value::Null)
    };
    let created = output(&order_saga, "pay_create");
    let captured = output(&pay_saga, "payment_capture");
    checks.check(
        output(&order_saga, "order_create") == json!({"order_id": "typed-2"}),
        || format!("order_create's output in the view: {order_saga}"),
    );
    checks.check(
        created["payment_id"].is_string() && created == captured,
        || {
            format!(
                "the pay saga captures the payment the order saga created: {created} vs {captured}"
            )
        },
    );
    wait_for(
        std::time::Duration::from_secs(5),
        "the order is paid",
        || (api.order_status("typed-2").as_deref() == Some("paid")).then_some(()),
    );
    server.assert_no_panics();
    checks.finish();
}
