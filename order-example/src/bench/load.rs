//! End-to-end load: N orders at concurrency C over HTTP, as sagas (`submitOrder?wait=true`) or
//! through the no-saga baseline endpoints of `direct.rs`, driven by this client as a naive
//! coordinator.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use reqwest::StatusCode;
use serde_json::Value;

use super::measure::{Latencies, Outcomes};
use crate::model::OrderRequest;

/// How an order is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One `POST /api/busi/submitOrder?wait=true`: the saga engine coordinates.
    Saga,
    /// Four `POST /api/direct/*` calls in order, the reverts on a business failure.
    Direct,
}

impl Mode {
    /// `saga` or `direct`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Saga => "saga",
            Mode::Direct => "direct",
        }
    }
}

/// What the orders of a load look like.
#[derive(Debug, Clone)]
pub struct OrderShape {
    /// Unique per run, so that order ids (and gids) never repeat.
    pub prefix: String,
    /// Product ordered (one unit each).
    pub product: i64,
    /// First coupon id: order `i` uses coupon `first + i`; `None`: no coupon.
    pub first_coupon: Option<i64>,
}

impl OrderShape {
    fn order(&self, i: u64) -> OrderRequest {
        OrderRequest {
            order_id: format!("{}-{i}", self.prefix),
            user_id: 1,
            product_id: self.product,
            product_count: 1,
            amount_cents: 1999,
            coupon_id: self.first_coupon.map(|c| c + i as i64),
        }
    }
}

/// A finished load.
pub struct Load {
    /// Wall time from the first request to the last reply.
    pub elapsed: Duration,
    /// Latency of each order.
    pub latencies: Latencies,
    /// How the orders ended.
    pub outcomes: Outcomes,
    /// The first few unexpected replies, to show the user.
    pub errors: Vec<String>,
}

/// Sends `orders` orders to `base_url`, `concurrency` at a time.
pub async fn run(
    client: &reqwest::Client,
    base_url: &str,
    mode: Mode,
    shape: &OrderShape,
    orders: u64,
    concurrency: usize,
    bar: &ProgressBar,
) -> Load {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let (client, base, shape, next, bar) = (
            client.clone(),
            base_url.to_string(),
            shape.clone(),
            next.clone(),
            bar.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Latencies::new();
            let mut outcomes = Outcomes::default();
            let mut errors = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= orders {
                    break;
                }
                let order = shape.order(i);
                let t = Instant::now();
                let end = match mode {
                    Mode::Saga => saga_order(&client, &base, &order).await,
                    Mode::Direct => direct_order(&client, &base, &order).await,
                };
                latencies.record(t.elapsed());
                match end {
                    End::Succeeded => outcomes.succeeded += 1,
                    End::Compensated => outcomes.compensated += 1,
                    End::Stuck => outcomes.stuck += 1,
                    End::Unfinished => outcomes.unfinished += 1,
                    End::Error(e) => {
                        outcomes.errors += 1;
                        if errors.len() < 3 {
                            errors.push(e);
                        }
                    }
                }
                bar.inc(1);
            }
            (latencies, outcomes, errors)
        }));
    }
    let mut load = Load {
        elapsed: Duration::ZERO,
        latencies: Latencies::new(),
        outcomes: Outcomes::default(),
        errors: Vec::new(),
    };
    for w in workers {
        match w.await {
            Ok((l, o, e)) => {
                load.latencies.merge(&l);
                load.outcomes.merge(&o);
                load.errors.extend(e);
            }
            Err(e) => load.errors.push(format!("a load worker failed: {e}")),
        }
    }
    load.elapsed = started.elapsed();
    load.errors.truncate(5);
    load
}

/// How one order ended.
enum End {
    Succeeded,
    Compensated,
    Stuck,
    Unfinished,
    Error(String),
}

async fn saga_order(client: &reqwest::Client, base: &str, order: &OrderRequest) -> End {
    let url = format!("{base}/api/busi/submitOrder?wait=true&timeout_ms=60000");
    let reply = match client.post(url).json(order).send().await {
        Ok(r) => r,
        Err(e) => return End::Error(format!("submitOrder: {e}")),
    };
    let status = reply.status();
    let body: Value = reply.json().await.unwrap_or(Value::Null);
    match (status, body["status"].as_str()) {
        (StatusCode::OK, Some("succeeded")) => End::Succeeded,
        (StatusCode::OK, Some("compensated")) => End::Compensated,
        (StatusCode::OK, Some("stuck")) => End::Stuck,
        (StatusCode::ACCEPTED, _) => End::Unfinished,
        _ => End::Error(format!("submitOrder: {status} {body}")),
    }
}

/// The four steps as `(action, revert)` baseline paths, in order.
const DIRECT_STEPS: [(&str, &str); 4] = [
    ("/api/direct/orderCreate", "/api/direct/orderCreateRevert"),
    ("/api/direct/stockDeduct", "/api/direct/stockDeductRevert"),
    ("/api/direct/couponUse", "/api/direct/couponUseRevert"),
    ("/api/direct/payCreate", "/api/direct/payCreateRevert"),
];

/// A naive coordinator: the actions in order; on a business failure (409) the reverts of the
/// steps already done, newest first. No retries, no log: an error leaves what it leaves.
async fn direct_order(client: &reqwest::Client, base: &str, order: &OrderRequest) -> End {
    for (done, (action, _)) in DIRECT_STEPS.iter().enumerate() {
        match client
            .post(format!("{base}{action}"))
            .json(order)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
            }
            Ok(r) if r.status() == StatusCode::CONFLICT => {
                let _ = r.bytes().await;
                for (_, revert) in DIRECT_STEPS[..done].iter().rev() {
                    match client
                        .post(format!("{base}{revert}"))
                        .json(order)
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                        }
                        Ok(r) => return End::Error(format!("{revert}: {}", r.status())),
                        Err(e) => return End::Error(format!("{revert}: {e}")),
                    }
                }
                return End::Compensated;
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                return End::Error(format!("{action}: {status} {body}"));
            }
            Err(e) => return End::Error(format!("{action}: {e}")),
        }
    }
    End::Succeeded
}

/// The saga store's `(commits, writes)` so far, from the server's `/metrics`
/// (`saga_store_batch_size`: one sample per group commit, its sum the writes); zeros before the
/// first commit. `None` if `/metrics` does not answer.
pub async fn store_counters(client: &reqwest::Client, base_url: &str) -> Option<(u64, u64)> {
    let reply = client
        .get(format!("{base_url}/metrics"))
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?;
    let text = reply.text().await.ok()?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    Some((
        value("saga_store_batch_size_count"),
        value("saga_store_batch_size_sum"),
    ))
}

/// The stock of `product` as the server reports it.
pub async fn stock(client: &reqwest::Client, base_url: &str, product: i64) -> anyhow::Result<i64> {
    let reply: Value = client
        .get(format!("{base_url}/api/stock/{product}"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    reply["stock"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("unexpected stock reply: {reply}"))
}
