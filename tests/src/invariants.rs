//! Waiting for sagas to finish and checking the five invariants of docs/contract.md
//! through the HTTP contract only.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::Api;
use crate::load::par_map;
use crate::order::Order;

/// Saga statuses after which nothing happens without an operator: `succeeded`,
/// `compensated`, and `stuck` (parked).
pub const TERMINAL_STATUSES: [&str; 3] = ["succeeded", "compensated", "stuck"];

/// Threads used to fetch many resources at once.
const FETCH_THREADS: usize = 8;

/// The state the invariants are measured against, captured before any order was submitted:
/// the stock of each product and the owner and `used` flag of each coupon.
#[derive(Debug, Clone, Default)]
pub struct Seeded {
    /// Product id -> stock.
    pub stock: BTreeMap<i64, i64>,
    /// Coupon id -> (owner, used).
    pub coupons: BTreeMap<i64, (i64, bool)>,
}

impl Seeded {
    /// Reads `GET /api/stock/{id}` for each of `products` and `GET /api/coupons/{id}` for each
    /// of `coupons`. Panics when one does not exist. Every product and coupon that a
    /// succeeded order may touch must be captured, or [`check_invariants`] reports it.
    pub fn capture(api: &Api, products: &[i64], coupons: &[i64]) -> Seeded {
        let stock = products
            .iter()
            .map(|&p| {
                let stock = api.stock(p).unwrap_or_else(|| {
                    panic!("product {p} does not exist (GET /api/stock/{p} is 404)")
                });
                (p, stock)
            })
            .collect();
        let coupons = coupons
            .iter()
            .map(|&c| {
                let coupon = api.coupon(c).unwrap_or_else(|| {
                    panic!("coupon {c} does not exist (GET /api/coupons/{c} is 404)")
                });
                (c, coupon)
            })
            .collect();
        Seeded { stock, coupons }
    }
}

/// Polls `GET /api/sagas/{gid}` for every gid until each is terminal (see
/// [`TERMINAL_STATUSES`]) and returns the final views. Transport errors are retried (a server
/// may be restarting). Panics after `timeout` listing the sagas that are still not terminal.
pub fn wait_all_terminal(api: &Api, gids: &[String], timeout: Duration) -> BTreeMap<String, Value> {
    wait_all_terminal_while(api, gids, timeout, || Ok(()))
}

/// [`wait_all_terminal`] that also calls `healthy` between polls and panics with its error at
/// once (for example when the server process died) instead of waiting for the timeout.
pub fn wait_all_terminal_while(
    api: &Api,
    gids: &[String],
    timeout: Duration,
    mut healthy: impl FnMut() -> Result<(), String>,
) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + timeout;
    let mut done = BTreeMap::new();
    let mut pending: Vec<String> = gids
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut last_seen: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let views = par_map(&pending, FETCH_THREADS, |gid| api.try_saga(gid));
        let mut still = Vec::new();
        for (gid, view) in pending.into_iter().zip(views) {
            match view {
                Ok(Some(view)) if is_terminal(&view) => {
                    done.insert(gid, view);
                }
                Ok(Some(view)) => {
                    last_seen.insert(gid.clone(), describe_saga(&view));
                    still.push(gid);
                }
                Ok(None) => {
                    last_seen.insert(gid.clone(), "404 (no such saga)".into());
                    still.push(gid);
                }
                Err(e) => {
                    last_seen.insert(gid.clone(), e);
                    still.push(gid);
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            return done;
        }
        if let Err(e) = healthy() {
            panic!(
                "{} of {} sagas are not terminal and the server is unhealthy: {e}",
                pending.len(),
                gids.len()
            );
        }
        if Instant::now() >= deadline {
            let listing: Vec<String> = pending
                .iter()
                .take(20)
                .map(|gid| {
                    format!(
                        "  {gid}: {}",
                        last_seen.get(gid).map_or("?", String::as_str)
                    )
                })
                .collect();
            panic!(
                "{} of {} sagas are not terminal after {:?}:\n{}",
                pending.len(),
                gids.len(),
                timeout,
                listing.join("\n")
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Counts of a checked run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvariantSummary {
    /// Distinct orders checked.
    pub orders: usize,
    /// Orders whose saga succeeded.
    pub succeeded: usize,
    /// Orders whose saga was compensated.
    pub compensated: usize,
    /// Orders whose saga is stuck (a violation of invariant 5).
    pub stuck: usize,
}

impl fmt::Display for InvariantSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} orders: {} succeeded, {} compensated, {} stuck",
            self.orders, self.succeeded, self.compensated, self.stuck
        )
    }
}

/// What one order looks like through the API.
struct Observed {
    saga: Option<Value>,
    order: Option<String>,
    payment: Option<(String, i64)>,
}

/// Checks the five invariants for `orders` (every order submitted to this data set; repeats
/// of one order are fine) against `seeded`, and returns the counts and every violation found:
///
/// 1. per product: seeded stock = current stock + `product_count` summed over succeeded orders;
/// 2. a coupon is used exactly when one succeeded order holds it (its owner);
/// 3. a payment is `pending` or `paid`, with the order's amount, exactly for succeeded orders;
/// 4. an order is `created` or `paid` exactly when its saga succeeded; compensated ones are
///    `cancelled` or absent;
/// 5. every order has exactly one saga (also checked against the listing when it holds
///    fewer than 1000 sagas) and it is `succeeded` or `compensated`.
pub fn invariant_violations(
    api: &Api,
    seeded: &Seeded,
    orders: &[Order],
) -> (InvariantSummary, Vec<String>) {
    let mut violations = Vec::new();
    let mut distinct: BTreeMap<&str, &Order> = BTreeMap::new();
    for order in orders {
        if let Some(previous) = distinct.insert(&order.order_id, order) {
            assert_eq!(
                previous, order,
                "the test submitted two different bodies for order {}",
                order.order_id
            );
        }
    }
    let list: Vec<&Order> = distinct.values().copied().collect();
    let observed = par_map(&list, FETCH_THREADS, |order| Observed {
        saga: api.saga(&order.gid()),
        order: api.order_status(&order.order_id),
        payment: api.payment(&order.order_id),
    });

    let mut summary = InvariantSummary {
        orders: list.len(),
        ..InvariantSummary::default()
    };
    let mut sold: BTreeMap<i64, i64> = BTreeMap::new();
    let mut holders: BTreeMap<i64, Vec<&Order>> = BTreeMap::new();
    for (order, seen) in list.iter().zip(&observed) {
        let id = &order.order_id;
        let status = seen
            .saga
            .as_ref()
            .and_then(|s| s["status"].as_str())
            .unwrap_or("");
        match (&seen.saga, status) {
            (None, _) => violations.push(format!(
                "inv5: order {id} has no saga ({} is 404)",
                order.gid()
            )),
            (Some(_), "succeeded") => summary.succeeded += 1,
            (Some(_), "compensated") => summary.compensated += 1,
            (Some(view), "stuck") => {
                summary.stuck += 1;
                violations.push(format!(
                    "inv5: saga {} is stuck: {}",
                    order.gid(),
                    describe_saga(view)
                ));
            }
            (Some(view), _) => violations.push(format!(
                "inv5: saga {} is not terminal: {}",
                order.gid(),
                describe_saga(view)
            )),
        }
        let order_status = seen.order.as_deref();
        let payment = seen.payment.as_ref().map(|(s, a)| (s.as_str(), *a));
        match status {
            "succeeded" => {
                *sold.entry(order.product_id).or_default() += order.product_count;
                if let Some(coupon) = order.coupon_id {
                    holders.entry(coupon).or_default().push(order);
                }
                if !matches!(order_status, Some("created" | "paid")) {
                    violations.push(format!(
                        "inv4: order {id} succeeded but its order is {order_status:?} (expected created or paid)"
                    ));
                }
                match payment {
                    Some(("pending" | "paid", amount)) if amount == order.amount_cents => {}
                    other => violations.push(format!(
                        "inv3: order {id} succeeded but its payment is {other:?} \
                         (expected pending or paid with {} cents)",
                        order.amount_cents
                    )),
                }
            }
            "compensated" => {
                if !matches!(order_status, None | Some("cancelled")) {
                    violations.push(format!(
                        "inv4: order {id} was compensated but its order is {order_status:?} \
                         (expected cancelled or absent)"
                    ));
                }
                if !matches!(payment, None | Some(("cancelled", _))) {
                    violations.push(format!(
                        "inv3: order {id} was compensated but its payment is {payment:?} (expected cancelled or absent)"
                    ));
                }
            }
            _ => {}
        }
    }

    for (&product, &count) in &sold {
        if !seeded.stock.contains_key(&product) {
            violations.push(format!(
                "inv1: {count} items of product {product} were sold but its stock was not captured in Seeded"
            ));
        }
    }
    let stocks = par_map(
        &seeded
            .stock
            .iter()
            .map(|(&p, &s)| (p, s))
            .collect::<Vec<_>>(),
        FETCH_THREADS,
        |&(product, seeded_stock)| (product, seeded_stock, api.stock(product)),
    );
    for (product, seeded_stock, current) in stocks {
        let sold = sold.get(&product).copied().unwrap_or(0);
        match current {
            Some(current) if current + sold == seeded_stock => {}
            Some(current) => violations.push(format!(
                "inv1: product {product}: seeded {seeded_stock}, now {current}, \
                 succeeded orders hold {sold} (off by {})",
                seeded_stock - current - sold
            )),
            None => violations.push(format!(
                "inv1: product {product} vanished (GET /api/stock/{product} is 404)"
            )),
        }
    }

    for (&coupon, holding) in &holders {
        if !seeded.coupons.contains_key(&coupon) {
            violations.push(format!(
                "inv2: coupon {coupon} is held by succeeded order(s) but was not captured in Seeded"
            ));
        }
        if holding.len() > 1 {
            let ids: Vec<&str> = holding.iter().map(|o| o.order_id.as_str()).collect();
            violations.push(format!(
                "inv2: coupon {coupon} is held by {} succeeded orders: {ids:?}",
                ids.len()
            ));
        }
    }
    let coupons = par_map(
        &seeded
            .coupons
            .iter()
            .map(|(&c, &s)| (c, s))
            .collect::<Vec<_>>(),
        FETCH_THREADS,
        |&(coupon, seeded_state)| (coupon, seeded_state, api.coupon(coupon)),
    );
    for (coupon, (owner, was_used), current) in coupons {
        let holding = holders.get(&coupon).map_or(&[][..], Vec::as_slice);
        if was_used && !holding.is_empty() {
            violations.push(format!(
                "inv2: coupon {coupon} was used before the run but succeeded order {} holds it",
                holding[0].order_id
            ));
        }
        for order in holding {
            if order.user_id != owner {
                violations.push(format!(
                    "inv2: coupon {coupon} of user {owner} is held by succeeded order {} of user {}",
                    order.order_id, order.user_id
                ));
            }
        }
        let expected_used = was_used || !holding.is_empty();
        match current {
            Some((_, used)) if used == expected_used => {}
            Some((_, used)) => violations.push(format!(
                "inv2: coupon {coupon} is used={used} but {} succeeded order(s) hold it \
                 (used before the run: {was_used})",
                holding.len()
            )),
            None => violations.push(format!(
                "inv2: coupon {coupon} vanished (GET /api/coupons/{coupon} is 404)"
            )),
        }
    }

    let listing = api.sagas("limit=1000");
    match listing.body["sagas"].as_array() {
        Some(sagas) if listing.status == 200 && sagas.len() < 1000 => {
            let mut listed = BTreeSet::new();
            for saga in sagas {
                let Some(gid) = saga["gid"].as_str() else {
                    violations.push(format!("listing entry without a gid: {saga}"));
                    continue;
                };
                if !gid.starts_with("order-") {
                    continue;
                }
                if !listed.insert(gid.to_string()) {
                    violations.push(format!("inv5: saga {gid} is listed twice"));
                }
                let order_id = &gid["order-".len()..];
                if !distinct.contains_key(order_id) {
                    violations.push(format!(
                        "inv5: saga {gid} exists but order {order_id} was never submitted"
                    ));
                }
            }
            for order in &list {
                if !listed.contains(&order.gid()) {
                    violations.push(format!(
                        "inv5: saga {} is missing from GET /api/sagas?limit=1000",
                        order.gid()
                    ));
                }
            }
        }
        Some(_) if listing.status == 200 => {}
        _ => violations.push(format!(
            "GET /api/sagas?limit=1000 did not answer a listing: {listing}"
        )),
    }

    (summary, violations)
}

/// [`invariant_violations`], panicking with every violation (the first 50) when there is any.
/// Returns the counts otherwise.
pub fn check_invariants(api: &Api, seeded: &Seeded, orders: &[Order]) -> InvariantSummary {
    let (summary, violations) = invariant_violations(api, seeded, orders);
    if !violations.is_empty() {
        let shown: Vec<&str> = violations.iter().take(50).map(String::as_str).collect();
        panic!(
            "{} invariant violation(s) over {summary}:\n  {}",
            violations.len(),
            shown.join("\n  ")
        );
    }
    summary
}

/// Whether a saga view's status is one of [`TERMINAL_STATUSES`].
pub fn is_terminal(view: &Value) -> bool {
    view["status"]
        .as_str()
        .is_some_and(|s| TERMINAL_STATUSES.contains(&s))
}

/// A one-line description of a saga view: status, reason and each step's status and attempts.
pub fn describe_saga(view: &Value) -> String {
    let steps: Vec<String> = view["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| {
                    format!(
                        "{}={}({}/{}{})",
                        s["name"].as_str().unwrap_or("?"),
                        s["status"].as_str().unwrap_or("?"),
                        s["attempts"],
                        s["compensate_attempts"],
                        s["last_error"]
                            .as_str()
                            .map(|e| format!(", last_error: {e}"))
                            .unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "status={} reason={} steps=[{}]",
        view["status"],
        view["reason"],
        steps.join(", ")
    )
}

/// Polls `probe` every 50 ms until it returns `Some`, and returns that; panics with `what`
/// after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}
