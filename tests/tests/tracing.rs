//! One trace per saga (docs/contract.md, "Additions to the contract": Tracing), through the
//! spans `serve --otlp-endpoint` exports to an OTLP/HTTP receiver in this process.
//!
//! A submitOrder with a `traceparent` header has one step call refused once (so it is retried)
//! and its process SIGKILLed while a later step's call is held; the restarted process finishes
//! the saga. Every span of the saga, in either process, is in the caller's trace: the submit,
//! the driver, each step call (the retry and the call after the restart included) and, on the
//! participant side, each endpoint and barrier call under the step call that reached it, so
//! every step call carried a `traceparent` with the saga's trace id. A payOrder continues its
//! own request's trace the same way.

use std::time::Duration;

use acceptance::otlp::describe;
use acceptance::{
    Backend, Order, OtlpReceiver, ReceivedSpan, Server, ServerOptions, Storage, backend_tests,
};

backend_tests!(one_trace_per_saga);

/// A fresh caller trace context: `(traceparent, trace id, parent span id)`.
fn caller_trace() -> (String, String, String) {
    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let span_id = format!("{:016x}", rand::random::<u64>() | 1);
    (format!("00-{trace_id}-{span_id}-01"), trace_id, span_id)
}

/// Every option of the run, with the exporter pointed at `receiver` and exporting quickly.
fn traced(receiver: &OtlpReceiver, options: ServerOptions) -> ServerOptions {
    options
        .otlp_endpoint(receiver.url())
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .retry_ms(50, 200)
}

fn of_gid<'a>(spans: &'a [ReceivedSpan], gid: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.attr("gid") == Some(gid))
        .collect()
}

fn step_call<'a>(spans: &[&'a ReceivedSpan], step: &str, attempt: u32) -> Option<&'a ReceivedSpan> {
    let attempt = attempt.to_string();
    spans.iter().copied().find(|s| {
        s.name == "saga.step"
            && s.attr("step") == Some(step)
            && s.attr("op") == Some("action")
            && s.attr("attempt") == Some(attempt.as_str())
    })
}

fn children<'a>(
    spans: &[&'a ReceivedSpan],
    parent: &ReceivedSpan,
    name: &str,
) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .copied()
        .filter(|s| s.name == name && s.parent_span_id == parent.span_id)
        .collect()
}

/// Whether the span of a driver of `gid` has arrived (it ends after the saga's other spans).
fn driver_ended(spans: &[ReceivedSpan], gid: &str) -> bool {
    of_gid(spans, gid).iter().any(|s| s.name == "saga")
}

fn one_trace_per_saga(backend: Backend) {
    let receiver = OtlpReceiver::start();
    let storage = Storage::new(backend);
    let first_run = ServerOptions::new()
        .fault("coupon.use:error:1")
        .fault("payment.create:delay_ms=20000:1");
    let mut server = Server::start(&storage, traced(&receiver, first_run));
    let order = Order::new(&format!("trace-{}", backend.name())).coupon(101);
    let gid = order.gid();
    let (traceparent, trace_id, caller_span) = caller_trace();
    let body = order.body().to_string().into_bytes();
    let headers = [
        ("content-type", "application/json"),
        ("traceparent", traceparent.as_str()),
    ];
    let reply = server
        .api()
        .request("POST", "/api/busi/submitOrder", &headers, Some(body));
    assert_eq!(reply.status, 202, "submitOrder: {reply}");

    // The first process calls the coupon twice (the first call is refused), then holds the
    // payment's call: it dies there, mid-saga.
    receiver.wait_for(
        "the retried coupon_use call",
        Duration::from_secs(30),
        |spans| {
            step_call(&of_gid(spans, &gid), "coupon_use", 2)
                .is_some_and(|s| s.attr("outcome") == Some("succeeded"))
        },
    );
    acceptance::wait_for(
        Duration::from_secs(10),
        "coupon_use recorded as succeeded",
        || {
            server.api().saga(&gid).filter(|view| {
                view["steps"][2]["status"] == "succeeded" && view["status"] == "running"
            })
        },
    );
    server.kill();
    server.restart(traced(&receiver, ServerOptions::new()));
    let views = server.wait_all_terminal(std::slice::from_ref(&gid), Duration::from_secs(60));
    assert_eq!(views[&gid]["status"], "succeeded", "{}", server.context());

    // The driver's span ends last, once the saga has finished: the others came before it.
    let spans = receiver.wait_for(
        "the span of the driver after the restart",
        Duration::from_secs(30),
        |spans| driver_ended(spans, &gid),
    );
    let saga = of_gid(&spans, &gid);
    let listing = describe(&saga.iter().map(|s| (*s).clone()).collect::<Vec<_>>());
    for span in &saga {
        assert_eq!(
            span.trace_id, trace_id,
            "every span of the saga is in the caller's trace:\n{listing}"
        );
        assert_eq!(span.service, "order-example", "{listing}");
    }

    // The submit continues the caller's span; each driver continues the submit.
    let submits: Vec<_> = saga.iter().filter(|s| s.name == "saga.submit").collect();
    assert_eq!(submits.len(), 1, "one submit:\n{listing}");
    let submit = submits[0];
    assert_eq!(submit.parent_span_id, caller_span, "{listing}");
    let drivers: Vec<_> = saga.iter().filter(|s| s.name == "saga").collect();
    assert!(
        !drivers.is_empty(),
        "the restarted process's driver:\n{listing}"
    );
    for driver in &drivers {
        assert_eq!(driver.parent_span_id, submit.span_id, "{listing}");
    }
    let recovered = drivers
        .iter()
        .find(|d| d.attr("fence") == Some("2"))
        .unwrap_or_else(|| panic!("the driver after the restart holds fence 2:\n{listing}"));

    // Each step call, the retry and the call after the restart included.
    let expected = [
        ("order_create", 1, "succeeded"),
        ("stock_deduct", 1, "succeeded"),
        ("coupon_use", 1, "in_doubt"),
        ("coupon_use", 2, "succeeded"),
        ("pay_create", 2, "succeeded"),
    ];
    for (step, attempt, outcome) in expected {
        let call = step_call(&saga, step, attempt)
            .unwrap_or_else(|| panic!("no call of {step}, attempt {attempt}:\n{listing}"));
        assert_eq!(
            call.attr("outcome"),
            Some(outcome),
            "{step} {attempt}:\n{listing}"
        );
        assert!(!call.parent_span_id.is_empty(), "{listing}");
        // The participant continued the call's traceparent: its endpoint's span is the call's
        // child, and the barrier's decision is under it.
        let endpoints = children(&saga, call, "participant");
        assert_eq!(
            endpoints.len(),
            1,
            "{step} {attempt}: the participant's span:\n{listing}"
        );
        let barriers = children(&saga, endpoints[0], "saga.barrier");
        if outcome == "succeeded" {
            assert_eq!(
                barriers.len(),
                1,
                "{step} {attempt}: its barrier call:\n{listing}"
            );
            assert_eq!(
                (
                    barriers[0].attr("step"),
                    barriers[0].attr("op"),
                    barriers[0].attr("outcome")
                ),
                (Some(step), Some("action"), Some("ran")),
                "{listing}"
            );
        } else {
            // The refused call never reached its barrier.
            assert!(barriers.is_empty(), "{listing}");
        }
    }
    let after_restart = step_call(&saga, "pay_create", 2).unwrap();
    assert_eq!(after_restart.parent_span_id, recovered.span_id, "{listing}");

    // payOrder continues its own request's trace.
    let (pay_parent, pay_trace, pay_caller) = caller_trace();
    let body = serde_json::json!({ "order_id": order.order_id }).to_string();
    let headers = [
        ("content-type", "application/json"),
        ("traceparent", pay_parent.as_str()),
    ];
    let reply = server.api().request(
        "POST",
        "/api/busi/payOrder?wait=true",
        &headers,
        Some(body.into_bytes()),
    );
    assert_eq!(
        (reply.status, reply.str("status")),
        (200, Some("succeeded")),
        "{reply}"
    );
    let pay_gid = format!("pay-{}", order.order_id);
    let spans = receiver.wait_for("the pay saga's driver", Duration::from_secs(30), |spans| {
        driver_ended(spans, &pay_gid)
    });
    let pay = of_gid(&spans, &pay_gid);
    let listing = describe(&pay.iter().map(|s| (*s).clone()).collect::<Vec<_>>());
    assert!(pay.iter().all(|s| s.trace_id == pay_trace), "{listing}");
    let submit = pay
        .iter()
        .find(|s| s.name == "saga.submit")
        .expect("the pay saga's submit");
    assert_eq!(submit.parent_span_id, pay_caller, "{listing}");
    assert!(step_call(&pay, "payment_capture", 1).is_some(), "{listing}");
    server.assert_no_panics();
}
